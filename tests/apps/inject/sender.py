"""HTTP/1 client for the injection test: sends each scenario on its own
connection, exactly as written here, and records what it sent.

Usage: sender.py HOST PORT OUT_DIR

Prints "ready" and waits for a line on stdin (so the agent can start tracing
it before it connects). For each scenario, OUT_DIR/<name>.sent holds the bytes
written and OUT_DIR/<name>.port the connection's local port; "done" is
printed at the end.
"""
import os
import socket
import sys
import time


def request(method, path, body=b"", extra=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n".encode() + extra
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()
    return head + body


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent = bytearray()
        self.inbox = b""

    def send(self, data, pause=0.0):
        self.sock.sendall(data)
        self.sent += data
        if pause:
            # Separate messages: the kernel sees each write on its own.
            time.sleep(pause)

    def responses(self, n):
        """Reads n fixed "ok" responses."""
        one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        while len(self.inbox) < n * len(one):
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed early")
            self.inbox += data
        assert self.inbox[: n * len(one)] == one * n, self.inbox[:200]
        self.inbox = self.inbox[n * len(one):]

    def close(self, out_dir, name):
        port = self.sock.getsockname()[1]
        self.sock.close()
        with open(os.path.join(out_dir, name + ".sent"), "wb") as f:
            f.write(self.sent)
        with open(os.path.join(out_dir, name + ".port"), "w") as f:
            f.write(str(port))


def simple(c):
    c.send(request("GET", "/simple"))
    c.responses(1)


def split_body(c):
    body = bytes(range(256)) * 12
    msg = request("POST", "/split-body", body)
    head_len = msg.index(b"\r\n\r\n") + 4
    c.send(msg[:head_len], 0.05)
    c.send(msg[head_len : head_len + 1000], 0.05)
    c.send(msg[head_len + 1000 : head_len + 2000], 0.05)
    c.send(msg[head_len + 2000 :])
    c.responses(1)


def split_head(c):
    msg = request("GET", "/split-head")
    c.send(msg[:20], 0.05)
    c.send(msg[20:])
    c.responses(1)
    c.send(request("GET", "/after-split-head"))
    c.responses(1)


def chunked(c):
    c.send(
        b"POST /chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n",
        0.05,
    )
    c.send(b"5\r\nhello\r\n", 0.05)
    c.send(b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n", 0.05)
    c.send(b"0\r\n\r\n")
    c.responses(1)
    c.send(request("GET", "/after-chunked"))
    c.responses(1)


def keepalive(c):
    for i in range(300):
        body = (b"item=%d;" % i) * (i % 7)
        c.send(request("POST" if body else "GET", "/ka", body))
        c.responses(1)


def pipelined(c):
    c.send(request("GET", "/pipe1") + request("POST", "/pipe2", b"x" * 10) + request("GET", "/pipe3"))
    c.responses(3)
    c.send(request("GET", "/pipe4"))
    c.responses(1)


def existing(c):
    tp = b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    c.send(request("GET", "/existing", extra=tp))
    c.responses(1)
    c.send(request("GET", "/after-existing"))
    c.responses(1)


def non_http(c):
    c.send(b"\x16\x03\x01\x00\x05hello-binary\x00\xff", 0.05)
    c.send(request("GET", "/looks-like-http"))
    c.sock.shutdown(socket.SHUT_WR)
    while c.sock.recv(65536):
        pass


def large(c):
    body = bytes((i * 7) % 251 for i in range(1 << 20))
    c.send(request("POST", "/large", body))
    c.responses(1)
    c.send(request("GET", "/after-large"))
    c.responses(1)


SCENARIOS = [simple, split_body, split_head, chunked, keepalive, pipelined, existing, non_http, large]


def main():
    host, port, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    sys.stdin.readline()
    for scenario in SCENARIOS:
        c = Conn(host, port)
        scenario(c)
        c.close(out_dir, scenario.__name__)
    print("done", flush=True)


if __name__ == "__main__":
    main()
