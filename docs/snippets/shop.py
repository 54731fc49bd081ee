"""The Flask page's app factory: ``python docs/snippets/shop.py``.

docs/flask.rst shows its region; test_shop.py imports it as the reader's
``shop`` module. Run alone, it serves one request against a local receiver
and prints what arrived (shop.out).
"""

# [start setup]
from flask import Flask

from batchdispatch.contrib.flask import BatchDispatch

events = BatchDispatch()


def create_app():
    app = Flask(__name__)
    app.config.from_prefixed_env()        # FLASK_BATCHDISPATCH_URL=... in the environment
    app.config.setdefault("BATCHDISPATCH_URL", "https://events.example.com/ingest")
    events.init_app(app)

    @app.post("/signup")
    def signup():
        events.enqueue({"event": "signup"})
        return "", 204

    return app
# [end setup]


if __name__ == "__main__":
    import os

    from batchdispatch.testing import Receiver

    with Receiver() as receiver:
        os.environ["FLASK_BATCHDISPATCH_URL"] = receiver.url
        app = create_app()
        print(f"POST /signup: {app.test_client().post('/signup').status_code}")
        with app.app_context():
            assert events.flush(timeout=5)
            print(f"the receiver got {receiver.items}")
            assert events.shutdown(timeout=5)
