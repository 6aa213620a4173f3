"""A client that sends GET requests until its stdin closes, alternately on
one keep-alive connection and on a new connection each, a few milliseconds
apart. It says `ready` once the first request succeeded, and at the end
`sent <n> failed <m>`; each failure is logged to stderr."""
import sys
import threading
import time

import requests

url = sys.argv[1]
stop = threading.Event()


def wait_for_eof():
    sys.stdin.read()
    stop.set()


threading.Thread(target=wait_for_eof, daemon=True).start()
session = requests.Session()
sent = failed = 0
while not stop.is_set():
    sent += 1
    try:
        get = session.get if sent % 2 else requests.get
        r = get(f"{url}?n={sent}", timeout=10)
        if r.status_code != 200 or r.text != "ok":
            failed += 1
            print(f"request {sent}: {r.status_code} {r.text[:80]!r}", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 - every failure counts
        failed += 1
        print(f"request {sent}: {e}", file=sys.stderr, flush=True)
    if sent == 1:
        print("ready", flush=True)
    time.sleep(0.005)
print(f"sent {sent} failed {failed}", flush=True)
