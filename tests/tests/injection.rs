//! `--inject-traceparent` end to end: a client and a server in two network
//! namespaces joined by a veth pair, both traced, same-host tuple linking
//! off, so the server span can join the client's trace only through the
//! header the probes wrote. Every byte the server received is compared with
//! what the client sent: identical but for the inserted header lines.
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{BufRead as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use seam_tests::{
    agent::Agent,
    netns::NetPair,
    otlp::{Kind, Receiver},
    procs::{Proc, apps_dir, scratch_dir},
    serial,
    spans::SpanView,
};

/// Headers the probes must have inserted, per scenario of `sender.py`.
const EXPECTED: &[(&str, usize)] = &[
    ("simple", 1),
    // Head in one write, body in three: framed.
    ("split_body", 1),
    // Head split across writes: left alone, and the connection with it.
    ("split_head", 0),
    // The chunked request's head is whole; after its body nothing is.
    ("chunked", 1),
    ("keepalive", 300),
    // The first of three pipelined requests; then hands off.
    ("pipelined", 1),
    // The request with its own traceparent is left alone, the next is not.
    ("existing", 1),
    ("non_http", 0),
    // A 1 MiB body across many messages, then the next request.
    ("large", 2),
];

const HEADER: &[u8] = b"traceparent: 00-";
/// `traceparent: 00-` + 32 + `-` + 16 + `-` + 2 + CRLF.
const HEADER_LEN: usize = 70;

/// Removes header lines inserted right after a request line; returns the
/// rest and the (trace id, span id, flags) of each removed header. (A
/// request line may follow a body on the same line of bytes, so this looks
/// for the end of a request line, not for line starts.)
fn strip_injected(received: &[u8]) -> (Vec<u8>, Vec<(String, String, String)>) {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    let mut out = Vec::with_capacity(received.len());
    let mut found = Vec::new();
    let mut i = 0;
    while i < received.len() {
        if received[i..].starts_with(LINE_END) {
            out.extend_from_slice(LINE_END);
            i += LINE_END.len();
            let rest = &received[i..];
            if rest.starts_with(HEADER)
                && rest.len() >= HEADER_LEN
                && &rest[HEADER_LEN - 2..HEADER_LEN] == b"\r\n"
            {
                let value = String::from_utf8_lossy(&rest[16..HEADER_LEN - 2]);
                let parts: Vec<&str> = value.split('-').collect();
                assert_eq!(parts.len(), 3, "malformed inserted header {value}");
                found.push((parts[0].into(), parts[1].into(), parts[2].into()));
                i += HEADER_LEN;
            }
            continue;
        }
        out.push(received[i]);
        i += 1;
    }
    (out, found)
}

fn wait_for(path: &Path, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(bytes) = fs::read(path) {
            return bytes;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn strip_finds_only_headers_after_request_lines() {
    let own = b"GET /a HTTP/1.1\r\nHost: x\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    let (rest, found) = strip_injected(own);
    assert_eq!((rest.as_slice(), found.len()), (&own[..], 0));
    let injected = b"GET /a HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nHost: x\r\n\r\n";
    let (rest, found) = strip_injected(injected);
    assert_eq!(rest, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    // After a body, with no line break between.
    let mut stream = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nab".to_vec();
    stream.extend_from_slice(injected);
    let (rest, found2) = strip_injected(&stream);
    assert_eq!(
        rest,
        b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    assert_eq!(found2.len(), 1);
    assert_eq!(
        found,
        vec![(
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into(),
            "01".into()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_headers_join_traces_across_hosts_and_keep_bytes_exact() {
    let _serial = serial().await;
    let net = NetPair::create();
    let dir = scratch_dir().join(format!("inject-{}", std::process::id()));
    let (sent_dir, recv_dir) = (dir.join("sent"), dir.join("received"));
    fs::create_dir_all(&sent_dir).unwrap();
    fs::create_dir_all(&recv_dir).unwrap();
    let port = "8080";

    let mut cmd = NetPair::command(&net.server_ns, "python3");
    cmd.arg(apps_dir("inject").join("recorder.py"))
        .args([&net.server_addr, port])
        .arg(&recv_dir);
    let server = Proc::spawn("recorder", cmd);
    let mut cmd = NetPair::command(&net.client_ns, "python3");
    cmd.arg(apps_dir("inject").join("sender.py"))
        .args([&net.server_addr, port])
        .arg(&sent_dir);
    let (mut client, mut go, mut lines) = Proc::spawn_interactive("sender", cmd);
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "sender: {}", client.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("listening") {
        assert!(Instant::now() < deadline, "recorder: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let receiver = Receiver::start(Kind::Grpc).await;
    let mut args = Agent::otlp_args(&receiver);
    for pid in [server.pid(), client.pid()] {
        args.extend(["--pid".to_string(), pid.to_string()]);
    }
    args.extend(["--inject-traceparent".into(), "--no-tuple-linking".into()]);
    let mut agent = Agent::start(&args, &[]);
    assert!(
        agent.log().contains("traceparent injection on"),
        "{}",
        agent.log()
    );

    writeln!(go, "go").unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done", "sender: {}", client.log());

    // Byte-exact: what arrived is what was sent, plus the inserted lines.
    let mut injected: HashMap<&str, Vec<(String, String, String)>> = HashMap::new();
    for (scenario, want) in EXPECTED {
        let sent = fs::read(sent_dir.join(format!("{scenario}.sent"))).unwrap();
        let local_port = fs::read_to_string(sent_dir.join(format!("{scenario}.port"))).unwrap();
        let received = wait_for(
            &recv_dir.join(format!("{}.raw", local_port.trim())),
            Duration::from_secs(10),
        );
        let (rest, found) = strip_injected(&received);
        assert!(
            rest == sent,
            "{scenario}: bytes differ beyond inserted headers ({} sent, {} received, {} after \
             removing {} headers)",
            sent.len(),
            received.len(),
            rest.len(),
            found.len()
        );
        assert_eq!(found.len(), *want, "{scenario}: inserted headers");
        injected.insert(scenario, found);
    }

    // keepalive: 300 exchanges → 300 client and 300 server spans, each pair
    // in one trace, the server a child of exactly the client span whose ids
    // went on the wire. simple: the same for one request. The wait also
    // covers the /existing server span checked below: it can come in a
    // later export batch than the last of these.
    let expected_spans = 2 * (300 + 1);
    let is_existing_server =
        |s: &SpanView| s.is_server() && s.attr("url.path").as_deref() == Some("/existing");
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            s.iter()
                .filter(|s| matches!(s.attr("url.path").as_deref(), Some("/ka" | "/simple")))
                .count()
                >= expected_spans
                && s.iter().any(is_existing_server)
        })
        .await;
    assert!(agent.stop().success(), "{}", agent.log());
    client.stop();
    for (path, scenario) in [("/ka", "keepalive"), ("/simple", "simple")] {
        let of = |server: bool| -> Vec<&SpanView> {
            spans
                .iter()
                .filter(|s| s.attr("url.path").as_deref() == Some(path))
                .filter(|s| s.is_server() == server && (server || s.is_client()))
                .collect()
        };
        let (clients, servers) = (of(false), of(true));
        let n = injected[scenario].len();
        assert_eq!((clients.len(), servers.len()), (n, n), "{path} spans");
        let wire: HashSet<(String, String)> = injected[scenario]
            .iter()
            .map(|(t, s, flags)| {
                assert_eq!(flags, "01", "sampled by the default sampler");
                (t.clone(), s.clone())
            })
            .collect();
        let client_ids: HashSet<(String, String)> = clients
            .iter()
            .map(|c| {
                assert_eq!(
                    c.parent_id(),
                    "",
                    "a client with no server request is a root"
                );
                (c.trace_id(), c.span_id())
            })
            .collect();
        assert_eq!(
            client_ids, wire,
            "{path}: exported client spans are the ones on the wire"
        );
        let server_parents: HashSet<(String, String)> = servers
            .iter()
            .map(|s| (s.trace_id(), s.parent_id()))
            .collect();
        assert_eq!(
            server_parents, wire,
            "{path}: each server span is its client's child"
        );
    }
    // The pre-existing header was left as the client wrote it and the server
    // joined that trace.
    let existing = spans
        .iter()
        .find(|s| is_existing_server(s))
        .expect("server span of /existing");
    assert_eq!(
        (existing.trace_id(), existing.parent_id()),
        (
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into()
        )
    );
    drop(server);
    drop(net);
}

/// The relay (port 8081) in the server namespace, calling the recorder
/// (8082) while it serves, which keeps each request it receives in `dir`.
fn start_relay(net: &NetPair, dir: &std::path::Path) -> (Proc, Proc) {
    fs::create_dir_all(dir).unwrap();
    let mut cmd = NetPair::command(&net.server_ns, "python3");
    cmd.arg(apps_dir("inject").join("recorder.py"))
        .args(["127.0.0.1", RELAY_DOWN_PORT])
        .arg(dir);
    let downstream = Proc::spawn("recorder", cmd);
    let mut cmd = NetPair::command(&net.server_ns, "python3");
    cmd.arg(apps_dir("inject").join("relay.py")).args([
        &net.server_addr,
        RELAY_PORT,
        RELAY_DOWN_PORT,
    ]);
    let relay = Proc::spawn("relay", cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(relay.log().contains("listening") && downstream.log().contains("listening")) {
        assert!(
            Instant::now() < deadline,
            "{}{}",
            relay.log(),
            downstream.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (relay, downstream)
}

const RELAY_PORT: &str = "8081";
const RELAY_DOWN_PORT: &str = "8082";

/// seam tracing the relay and the recorder (and curl), injecting.
fn relay_agent(receiver: &Receiver, relay: &Proc, downstream: &Proc) -> Agent {
    let mut args = Agent::otlp_args(receiver);
    for pid in [relay.pid(), downstream.pid()] {
        args.extend(["--pid".to_string(), pid.to_string()]);
    }
    args.extend([
        "--exe-name".into(),
        "curl".into(),
        "--inject-traceparent".into(),
        "--no-tuple-linking".into(),
    ]);
    Agent::start(&args, &[])
}

/// The traceparents the recorder received, as (trace, parent, flags).
fn recorded(dir: &std::path::Path) -> Vec<(String, String, String)> {
    let mut received: Vec<(String, String, String)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "raw"))
        .flat_map(|e| strip_injected(&fs::read(e.path()).unwrap()).1)
        .collect();
    received.sort();
    received
}

/// A service in the middle: the request it sends while serving one carries
/// the served request's trace, decided in the kernel at send time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_while_serving_continue_the_served_trace() {
    let _serial = serial().await;
    let net = NetPair::create();
    let dir = scratch_dir().join(format!("relay-{}", std::process::id()));
    let (relay, downstream) = start_relay(&net, &dir);
    let receiver = Receiver::start(Kind::Grpc).await;
    let mut agent = relay_agent(&receiver, &relay, &downstream);
    // Two requests on one connection: the relay serves both on one thread,
    // so the second finds that thread's entry from the first, answered.
    let url = format!("http://{}:{RELAY_PORT}/up", net.server_addr);
    let out = NetPair::command(&net.client_ns, "curl")
        .args(["-s", "--max-time", "10", &url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "downstream 200\ndownstream 200\n"
    );

    let spans = receiver.settle(8, Duration::from_secs(30)).await;
    assert!(agent.stop().success(), "{}", agent.log());
    assert_eq!(spans.len(), 8, "{spans:#?}");
    let mut traces: HashMap<String, Vec<&SpanView>> = HashMap::new();
    for s in &spans {
        traces.entry(s.trace_id()).or_default().push(s);
    }
    assert_eq!(traces.len(), 2, "{spans:#?}");
    // What the downstream service received, per request, names the relay's
    // client span of the same trace.
    let received = recorded(&dir);
    let mut want = Vec::new();
    for trace in traces.values() {
        let find = |path: &str, server: bool| -> &SpanView {
            trace
                .iter()
                .find(|s| s.attr("url.path").as_deref() == Some(path) && s.is_server() == server)
                .unwrap_or_else(|| panic!("{path} server={server} in {trace:#?}"))
        };
        let (curl, up) = (find("/up", false), find("/up", true));
        let (call, down) = (find("/down", false), find("/down", true));
        assert_eq!(curl.parent_id(), "");
        assert_eq!(up.parent_id(), curl.span_id());
        assert_eq!(call.parent_id(), up.span_id());
        assert_eq!(down.parent_id(), call.span_id());
        want.push((curl.trace_id(), call.span_id(), "01".to_string()));
    }
    want.sort();
    assert_eq!(received, want);
    drop((relay, downstream, net));
}

/// A request head that reaches the service in two reads, its `traceparent`
/// in the second: the span, and the request sent while serving it, still
/// continue the caller's trace (the probes decide once the head is whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_split_over_reads_keeps_the_callers_trace() {
    let _serial = serial().await;
    let net = NetPair::create();
    let dir = scratch_dir().join(format!("relay-split-{}", std::process::id()));
    let (relay, downstream) = start_relay(&net, &dir);
    let receiver = Receiver::start(Kind::Grpc).await;
    let mut agent = relay_agent(&receiver, &relay, &downstream);
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    // Not traced (not curl): the caller is another host's service.
    let client = format!(
        r#"
import socket, time
s = socket.create_connection(("{addr}", {RELAY_PORT}))
s.sendall(b"GET /up HTTP/1.1\r\nHost: relay\r\n")
time.sleep(0.3)
s.sendall(b"traceparent: 00-{trace}-{parent}-01\r\n\r\n")
got = b""
while not got.endswith(b"downstream 200\n"):
    more = s.recv(4096)
    if not more:
        break
    got += more
print(got.decode().split("\r\n\r\n")[-1], end="")
"#,
        addr = net.server_addr
    );
    let out = NetPair::command(&net.client_ns, "python3")
        .args(["-c", &client])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "downstream 200\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spans = receiver.settle(3, Duration::from_secs(30)).await;
    assert!(agent.stop().success(), "{}", agent.log());
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let find = |path: &str, server: bool| -> &SpanView {
        spans
            .iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path) && s.is_server() == server)
            .unwrap_or_else(|| panic!("{path} server={server} in {spans:#?}"))
    };
    let (up, call, down) = (find("/up", true), find("/down", false), find("/down", true));
    for s in [up, call, down] {
        assert_eq!(s.trace_id(), trace, "{spans:#?}");
    }
    assert_eq!(up.parent_id(), parent);
    assert_eq!(call.parent_id(), up.span_id());
    assert_eq!(down.parent_id(), call.span_id());
    assert_eq!(
        recorded(&dir),
        vec![(trace.to_string(), call.span_id(), "01".to_string())]
    );
    drop((relay, downstream, net));
}
