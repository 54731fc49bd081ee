"""The pytest plugin: installing batchdispatch gives every test session its fixtures.

Each test runs pytest in a subprocess on a tiny test file with no conftest.py,
so what it proves is the pytest11 entry point of the installed package.
"""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]

USES_THE_FIXTURES = """
    import json
    import urllib.request

    from batchdispatch import BackgroundDispatcher

    def test_receiver(receiver):
        body = json.dumps([1, 2]).encode()
        request = urllib.request.Request(receiver.url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert receiver.items == [1, 2]

    def test_recording_sink(recording_sink):
        dispatcher = BackgroundDispatcher(recording_sink, delay=0.01)
        dispatcher.enqueue("x")
        assert dispatcher.shutdown(timeout=10)
        assert recording_sink.items == ["x"]
"""


@pytest.fixture(autouse=True)
def _installed() -> None:
    """The entry point exists only in an installed package (tox installs it)."""
    try:
        points = importlib.metadata.distribution("batchdispatch").entry_points
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("batchdispatch is not installed: its pytest11 entry point does not exist")
    names = {(p.group, p.name, p.value) for p in points}
    assert ("pytest11", "batchdispatch", "batchdispatch._pytest_plugin") in names, (
        "the installed metadata has no pytest11 entry point: reinstall with pip install -e ."
    )


def test_the_fixtures_need_no_conftest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_THE_FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_the_receiver_fixture_closes_its_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading

        def _receivers():
            return [t for t in threading.enumerate() if t.name.startswith("batchdispatch-receiver")]

        def test_one(receiver):
            assert _receivers()

        def test_after():
            assert _receivers() == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_disabling_the_plugin_takes_the_fixtures_away(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_THE_FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:batchdispatch", "-p", "no:randomly")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'receiver' not found*"])


def test_a_conftest_can_import_the_fixtures_instead(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from batchdispatch.testing import receiver, recording_sink  # noqa: F401")
    pytester.makepyfile(USES_THE_FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:batchdispatch", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_a_local_fixture_of_the_same_name_wins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def receiver():
            return "mine"
        """
    )
    pytester.makepyfile("def test_mine(receiver):\n    assert receiver == 'mine'\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
