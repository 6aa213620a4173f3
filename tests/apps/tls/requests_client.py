"""HTTPS client with requests and one keep-alive session: each stdin line is
a URL to GET; prints the status code. Python loads libssl lazily."""
import sys
import warnings

import requests

warnings.filterwarnings("ignore")
session = requests.Session()
for line in sys.stdin:
    r = session.get(line.strip(), verify=False, timeout=10)
    print(r.status_code, len(r.content), flush=True)
