# app.py
from flask import Flask

from events import events

app = Flask(__name__)


@app.post("/orders/<int:order_id>/paid")
def paid(order_id):
    events.enqueue({"event": "order.paid", "order": order_id})
    return "", 204
