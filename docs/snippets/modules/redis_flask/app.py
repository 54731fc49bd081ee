# app.py
from flask import Flask, request

from events import events

app = Flask(__name__)


@app.post("/signup")
def signup():
    events.enqueue({"event": "signup", "email_domain": request.form["email"].split("@")[-1]})
    return "", 204
