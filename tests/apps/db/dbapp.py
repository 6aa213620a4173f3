"""An HTTP service that uses PostgreSQL (psycopg 3) and Redis (redis-py):
its database calls must appear as client spans under its server spans."""
import os

import psycopg
import redis
from flask import Flask

app = Flask(__name__)
PG = os.environ.get("PG_DSN", "")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))


@app.route("/pg")
def pg():
    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute("SELECT id, name FROM items WHERE name = 'widget' AND id = 42").fetchone()
    return {"row": list(row)}


@app.route("/pg-error")
def pg_error():
    try:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute("SELECT * FROM missing_table WHERE secret = 'SQL-SECRET-1'")
    except psycopg.errors.UndefinedTable:
        return {"error": "missing table"}, 500
    return {"error": None}


@app.route("/redis")
def cache():
    r = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    r.set("greeting", "REDIS-SECRET-VALUE")
    value = r.get("greeting")
    pipe = r.pipeline(transaction=False)
    pipe.incr("counter")
    pipe.incr("counter")
    pipe.execute()
    r.close()
    return {"value": len(value)}
