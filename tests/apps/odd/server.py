"""An HTTP server for the unusual cases: HTTP/1.0 bodies ended by close,
Expect: 100-continue, WebSocket upgrades and CONNECT tunnels (both echo the
bytes that follow), on a dual-stack TCP socket (IPv6 and IPv4-mapped) and on a
Unix socket. Prints "ready" once both listen.

usage: server.py PORT UNIX_PATH
"""
import os
import socket
import sys
import threading


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return (method, target, version, headers), rest


def echo(conn, rest):
    if rest:
        conn.sendall(rest)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        conn.sendall(chunk)


def serve(conn):
    buf = b""
    with conn:
        while True:
            req, buf = read_head(conn, buf)
            if req is None:
                return
            method, target, version, headers = req
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                return echo(conn, buf)
            if headers.get("upgrade", "").lower() == "websocket":
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                )
                return echo(conn, buf)
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            body = target.encode()
            if version == "HTTP/1.0":
                # No length: the body ends when the connection does.
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
                return
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )


def accept_loop(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main():
    port, unix_path = int(sys.argv[1]), sys.argv[2]
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("::", port))
    tcp.listen(64)
    if os.path.exists(unix_path):
        os.unlink(unix_path)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen(64)
    threading.Thread(target=accept_loop, args=(unix,), daemon=True).start()
    print("ready", flush=True)
    accept_loop(tcp)


main()
