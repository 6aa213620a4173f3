"""A thread-per-request HTTP server that calls a downstream service while it
serves each request, the way a service in the middle of a chain does.

Usage: relay.py HOST PORT DOWNSTREAM_PORT  (downstream on 127.0.0.1)
"""
import http.client
import http.server
import sys


class Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        down = http.client.HTTPConnection("127.0.0.1", int(sys.argv[3]), timeout=10)
        down.request("GET", "/down")
        status = down.getresponse().status
        down.close()
        body = f"downstream {status}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Relay)
print("listening", flush=True)
server.serve_forever()
