"""Inventory service of the checkout example."""
from flask import Flask, request

app = Flask(__name__)


@app.route("/check")
def check():
    return {"item": request.args.get("item"), "available": True}
