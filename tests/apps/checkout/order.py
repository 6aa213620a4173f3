"""Order service of the checkout example: per order it calls inventory,
payment and shipping, one after another, over plain HTTP with requests.

With ORDER_LOG set it also writes a log line to that file synchronously, and
with NOTIFY_URL set it sends a notification synchronously: the two hidden
costs of the tracing guides' "where's the other 2,690 ms?" story."""
import os
import time

import requests
from flask import Flask

app = Flask(__name__)
INVENTORY = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
PAYMENT = os.environ.get("PAYMENT_URL", "http://127.0.0.1:8002")
SHIPPING = os.environ.get("SHIPPING_URL", "http://127.0.0.1:8003")
ORDER_LOG = os.environ.get("ORDER_LOG")
NOTIFY = os.environ.get("NOTIFY_URL")


@app.route("/api/order")
def create_order():
    stock = requests.get(f"{INVENTORY}/check?item=123", timeout=10).json()
    if not stock["available"]:
        return {"error": "Out of stock"}, 400
    requests.post(f"{PAYMENT}/charge", json={"amount": 99.99}, timeout=10).json()
    requests.post(f"{SHIPPING}/schedule", timeout=10).json()
    if ORDER_LOG:
        with open(ORDER_LOG, "a") as log:
            log.write(f"{time.time():.3f} order 12345 confirmed\n")
            log.flush()
    if NOTIFY:
        requests.post(f"{NOTIFY}/notify", json={"order_id": 12345}, timeout=10)
    return {"order_id": 12345, "status": "confirmed"}
