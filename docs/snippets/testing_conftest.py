"""The testing page's conftest.py that names the fixtures: ``python docs/snippets/testing_conftest.py``.

It runs pytest on itself with the plugin turned off, so the fixtures it
uses come from the import below.
"""

# [start conftest]
from batchdispatch.testing import receiver, recording_sink  # noqa: F401

# [end conftest]


def test_the_imported_fixtures_work(receiver, recording_sink):  # noqa: F811
    recording_sink([{"event": "signup"}])
    assert recording_sink.items == [{"event": "signup"}]
    assert receiver.url.startswith("http://127.0.0.1:")


if __name__ == "__main__":  # pytest runs this file, in an interpreter of its own
    import subprocess
    import sys

    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-p", "no:batchdispatch", __file__]))
