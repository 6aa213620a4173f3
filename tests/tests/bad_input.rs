//! Bad input on a traced HTTP port: binary junk, a truncated request, a
//! 64 KiB header, then a good request. The agent keeps running, makes no span
//! from the bad bytes, and traces the good request.
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
