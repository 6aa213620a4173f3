"""Notification service of the checkout example: queueing an e-mail takes a
while, and the order service waits for it."""
import time

from flask import Flask

app = Flask(__name__)


@app.route("/notify", methods=["POST"])
def notify():
    time.sleep(0.2)
    return {"queued": True}
