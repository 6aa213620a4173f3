"""Shipping service of the checkout example."""
from flask import Flask

app = Flask(__name__)


@app.route("/schedule", methods=["POST"])
def schedule():
    return {"scheduled": True}
