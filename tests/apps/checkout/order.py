"""Order service of the checkout example: per order it calls inventory,
payment and shipping, one after another, over plain HTTP with requests."""
import os

import requests
from flask import Flask

app = Flask(__name__)
INVENTORY = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
PAYMENT = os.environ.get("PAYMENT_URL", "http://127.0.0.1:8002")
SHIPPING = os.environ.get("SHIPPING_URL", "http://127.0.0.1:8003")


@app.route("/api/order")
def create_order():
    stock = requests.get(f"{INVENTORY}/check?item=123", timeout=10).json()
    if not stock["available"]:
        return {"error": "Out of stock"}, 400
    requests.post(f"{PAYMENT}/charge", json={"amount": 99.99}, timeout=10).json()
    requests.post(f"{SHIPPING}/schedule", timeout=10).json()
    return {"order_id": 12345, "status": "confirmed"}
