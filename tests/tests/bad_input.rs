//! Bad input on a traced HTTP port: binary junk, a truncated request, a
//! 64 KiB header, then a good request — the agent keeps running, makes no
//! span from the bad bytes, and traces the good request. And unusual but
//! valid HTTP (HTTP/1.0, Expect: 100-continue, WebSocket, CONNECT, IPv6 and
//! IPv4-mapped addresses, a Unix socket): one span per real request.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use seam_tests::{
    agent::Agent,
    otlp::{Kind, Receiver},
    procs::{apps_dir, curl, free_port, gunicorn},
    serial,
};

/// Sends `bytes` on a new connection, reads whatever comes back until the
/// server closes or goes quiet, then closes.
fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // The server may close early on junk; what matters is what was sent.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_truncated_and_oversized_requests_make_no_spans() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let _app = gunicorn(&apps_dir("basic"), "basic", port, 1, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".to_string(), port.to_string()]);
    let mut agent = Agent::start(&args, &[]);

    let junk: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    send_raw(port, &junk);
    send_raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    send_raw(port, b"GET /trunc HTTP/1.1\r\nHost: x\r\nX-Half: ab");
    let mut huge = b"GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let reply = send_raw(port, &huge);
    assert!(
        reply.starts_with(b"HTTP/1.1 4") || reply.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    send_raw(port, b"GET /bad HTTP/9.9\r\nHost: x\r\n\r\n");
    assert!(agent.running(), "agent died on bad input:\n{}", agent.log());

    let (status, body) = curl(&[&format!("http://127.0.0.1:{port}/ok")]);
    assert_eq!((status, body.as_str()), (200, "ok"));

    let spans = receiver.settle(1, Duration::from_secs(20)).await;
    let names: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{:?} {:?} {:?}",
                s.kind(),
                s.attr("url.path"),
                s.int("http.response.status_code")
            )
        })
        .collect();
    assert_eq!(spans.len(), 1, "exactly the good request: {names:?}");
    let s = &spans[0];
    assert!(s.is_server());
    assert_eq!(s.attr("url.path").as_deref(), Some("/ok"));
    assert_eq!(s.int("http.response.status_code"), Some(200));
    assert_eq!(s.service(), "basic");

    let status = agent.stop();
    assert!(
        status.success(),
        "seam exited with {status}:\n{}",
        agent.log()
    );
}

/// Sends `bytes` over `stream`, then reads until the server closes or goes
/// quiet for half a second.
fn exchange(mut s: impl std::io::Read + std::io::Write, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return reply,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

fn tcp(addr: &str, port: u16) -> TcpStream {
    let s = TcpStream::connect((addr, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Unusual but valid HTTP: HTTP/1.0 with a body ended by close,
/// `Expect: 100-continue`, a WebSocket upgrade and a CONNECT tunnel (whose
/// later bytes look like HTTP but are not), over IPv6 and IPv4-mapped
/// addresses; and HTTP over a Unix socket, which is not TCP and is ignored.
/// Exactly one span per real request, with its own attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_http_gives_one_span_per_request() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let unix_path = seam_tests::procs::scratch_dir().join("odd.sock");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(apps_dir("odd").join("server.py"))
        .arg(port.to_string())
        .arg(&unix_path);
    let (_server, _to, mut from) = seam_tests::procs::Proc::spawn_interactive("odd", cmd);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut from, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".to_string(), port.to_string()]);
    let mut agent = Agent::start(&args, &[]);

    let r = exchange(tcp("::1", port), b"GET /v6 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.ends_with(b"/v6"), "{:?}", String::from_utf8_lossy(&r));
    let r = exchange(
        tcp("127.0.0.1", port),
        b"GET /mapped HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.ends_with(b"/mapped"));
    let r = exchange(tcp("127.0.0.1", port), b"GET /old HTTP/1.0\r\n\r\n");
    assert!(r.starts_with(b"HTTP/1.0 200") && r.ends_with(b"/old"));
    // The client waits for 100 Continue before the body, as curl does.
    let mut s = tcp("127.0.0.1", port);
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut cont = [0u8; 25];
    s.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    let r = exchange(s, b"hello");
    assert!(r.ends_with(b"/upload"), "{:?}", String::from_utf8_lossy(&r));
    let mut s = tcp("127.0.0.1", port);
    let r = exchange(
        &mut s,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(r.starts_with(b"HTTP/1.1 101"));
    let r = exchange(
        &mut s,
        b"\x81\x05hello GET /in-websocket HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.ends_with(b"HTTP/1.1\r\nHost: x\r\n\r\n"), "echoed");
    drop(s);
    let mut s = tcp("127.0.0.1", port);
    let r = exchange(
        &mut s,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert!(r.starts_with(b"HTTP/1.1 200"));
    exchange(&mut s, b"GET /in-tunnel HTTP/1.1\r\nHost: x\r\n\r\n");
    drop(s);
    let unix = std::os::unix::net::UnixStream::connect(&unix_path).unwrap();
    unix.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let r = exchange(unix, b"GET /unix HTTP/1.0\r\n\r\n");
    assert!(r.ends_with(b"/unix"));

    let spans = receiver.settle(6, Duration::from_secs(20)).await;
    let mut got: Vec<(String, String, i64, String, String)> = spans
        .iter()
        .map(|s| {
            assert!(s.is_server(), "{s:?}");
            (
                s.attr("http.request.method").unwrap_or_default(),
                s.attr("url.path").unwrap_or_default(),
                s.int("http.response.status_code").unwrap_or(0),
                s.attr("network.protocol.version").unwrap_or_default(),
                s.attr("network.peer.address").unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    let want = |m: &str, p: &str, st: i64, v: &str, peer: &str| {
        (
            m.to_string(),
            p.to_string(),
            st,
            v.to_string(),
            peer.to_string(),
        )
    };
    let mut expected = vec![
        want("GET", "/v6", 200, "1.1", "::1"),
        want("GET", "/mapped", 200, "1.1", "127.0.0.1"),
        want("GET", "/old", 200, "1.0", "127.0.0.1"),
        want("POST", "/upload", 200, "1.1", "127.0.0.1"),
        want("GET", "/ws", 101, "1.1", "127.0.0.1"),
        // The authority-form target of CONNECT stands as the path.
        want("CONNECT", "example.com:443", 200, "1.1", "127.0.0.1"),
    ];
    expected.sort();
    assert_eq!(got, expected, "{}", agent.log());
    assert!(agent.stop().success());
}
