"""HTTP/1 server for the injection test: records every byte each connection
delivers, exactly as received, and answers each request it can frame.

Usage: recorder.py HOST PORT OUT_DIR

For each connection, OUT_DIR/<client port>.raw holds the raw stream once the
connection closes. Requests are framed by Content-Length or chunked encoding,
pipelined ones included; a connection whose first bytes are not a request
method is opaque: read to EOF, answered with "bye".
"""
import os
import socket
import sys
import threading

METHODS = (b"GET ", b"POST", b"PUT ", b"DELE", b"HEAD", b"PATC", b"OPTI")


def parse_request(buf):
    """Length of the first complete request in buf, or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[: end + 4]
    rest = end + 4
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return rest + length if len(buf) >= rest + length else None
    at = rest
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(buf[at:eol].split(b";")[0], 16)
        at = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", at)
            if trailer_end < 0:
                return None
            # No trailers are sent by the test client.
            return trailer_end + 2
        if len(buf) < at + size + 2:
            return None
        at += size + 2


def serve(conn, peer_port, out_dir):
    raw = bytearray()
    pending = bytearray()
    opaque = None
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            raw += data
            if opaque is None and len(raw) >= 4:
                opaque = bytes(raw[:4]) not in METHODS
            if opaque:
                continue
            pending += data
            while True:
                n = parse_request(bytes(pending))
                if n is None:
                    break
                del pending[:n]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if opaque:
            try:
                conn.sendall(b"bye")
            except OSError:
                pass
    path = os.path.join(out_dir, f"{peer_port}.raw")
    with open(path + ".tmp", "wb") as f:
        f.write(raw)
    os.rename(path + ".tmp", path)


def main():
    host, port, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    print("listening", flush=True)
    while True:
        conn, peer = srv.accept()
        threading.Thread(target=serve, args=(conn, peer[1], out_dir), daemon=True).start()


if __name__ == "__main__":
    main()
