"""The testing page's tests of the Flask app: ``python docs/snippets/test_shop.py``.

It runs pytest on itself, with the ``receiver`` fixture of batchdispatch's
pytest plugin, and exits with pytest's status.
"""

# [start test-shop]
# test_shop.py
import pytest

from shop import create_app, events


@pytest.fixture
def app(receiver, monkeypatch):
    # Before create_app(): init_app reads the URL once.
    monkeypatch.setenv("FLASK_BATCHDISPATCH_URL", receiver.url)
    app = create_app()
    yield app
    with app.app_context():
        events.shutdown(timeout=5)  # no worker thread outlives the test


def test_signup_ships_one_event(app, receiver):
    response = app.test_client().post("/signup")
    assert response.status_code == 204
    with app.app_context():
        assert events.flush(timeout=5)  # a sync point: the batch was answered
    assert receiver.items == [{"event": "signup"}]


def test_events_survive_a_receiver_hiccup(app, receiver):
    receiver.respond(503)  # the first POST fails; the sink's urllib3 retry sends it again
    app.test_client().post("/signup")
    with app.app_context():
        assert events.flush(timeout=5)
    assert [r.status for r in receiver.requests] == [503, 200]
    assert receiver.items == [{"event": "signup"}]
# [end test-shop]


if __name__ == "__main__":  # pytest runs this file, in an interpreter of its own
    import subprocess
    import sys

    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]))
