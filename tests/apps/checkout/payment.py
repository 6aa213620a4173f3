"""Payment service of the checkout example."""
from flask import Flask, request

app = Flask(__name__)


@app.route("/charge", methods=["POST"])
def charge():
    return {"charged": request.get_json()["amount"]}
