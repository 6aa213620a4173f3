"""A client that keeps one HTTP/1.1 connection open: each line on stdin is a
number of GET requests to send on it; it answers `done <status>`."""
import sys

import requests

session = requests.Session()
url = sys.argv[1]
for line in sys.stdin:
    status = 0
    for _ in range(int(line.strip() or "1")):
        status = session.get(url, timeout=10).status_code
    print(f"done {status}", flush=True)
