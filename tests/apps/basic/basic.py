"""A small Flask app for end-to-end tests: fixed answers, chosen status
codes, slow and large responses, and an echo of the request body size."""
import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/ok")
def ok():
    return "ok"


@app.route("/status/<int:code>")
def status(code):
    return Response("status", status=code)


@app.route("/slow")
def slow():
    time.sleep(int(request.args.get("ms", "100")) / 1000)
    return "slow"


@app.route("/big")
def big():
    return Response(b"x" * int(request.args.get("bytes", "1048576")), mimetype="application/octet-stream")


@app.route("/echo", methods=["POST", "PUT"])
def echo():
    return {"received": len(request.get_data())}


@app.route("/login", methods=["POST"])
def login():
    resp = Response("welcome")
    resp.set_cookie("session", "SETCOOKIE-SECRET-31")
    return resp
