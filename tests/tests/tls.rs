//! HTTPS: spans from the plaintext the TLS libraries handle, the same as for
//! plain HTTP but with `url.scheme=https`, and never anything from the
//! ciphertext on the wire.
use std::{
    io::{BufRead as _, Write as _},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use seam_tests::{
    agent::Agent,
    otlp::{Kind, Receiver},
    procs::{Proc, apps_dir, curl, free_port, gunicorn_with, scratch_dir, wait_port},
    serial,
    servers::Nginx,
    spans::SpanView,
};

/// A self-signed certificate and key for localhost.
fn certificate() -> (PathBuf, PathBuf) {
    let dir = scratch_dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() {
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (cert, key)
}

/// nginx over TLS with a small answer and a 1 MiB file.
fn tls_nginx() -> Nginx {
    let (cert, key) = certificate();
    let www = scratch_dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("big.bin"), vec![b'z'; 1 << 20]).unwrap();
    Nginx::start(&format!(
        "  listen 127.0.0.1:{{port}} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  keepalive_requests 1000;\n  location /small {{ return 200 \"small\\n\"; }}\n  location /missing {{ return 404; }}\n  location /big.bin {{ root {}; }}\n",
        cert.display(),
        key.display(),
        www.display()
    ))
}

fn names(spans: &[SpanView]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {} {:?}",
                s.service(),
                s.kind(),
                s.span.name,
                s.attr("url.scheme")
            )
        })
        .collect()
}

fn paired(spans: &[SpanView], server_service: &str, client_service: &str, path: &str) -> usize {
    let servers: Vec<&SpanView> = spans
        .iter()
        .filter(|s| {
            s.is_server()
                && s.service() == server_service
                && s.attr("url.path").as_deref() == Some(path)
        })
        .collect();
    for s in &servers {
        assert_eq!(s.attr("url.scheme").as_deref(), Some("https"), "{path}");
        let parent = spans
            .iter()
            .find(|c| c.span_id() == s.parent_id())
            .unwrap_or_else(|| {
                panic!(
                    "{path}: the server span's parent {:?} is none of {:#?}",
                    s.parent_id(),
                    names(spans)
                )
            });
        assert!(parent.is_client() && parent.service() == client_service);
        assert_eq!(parent.attr("url.scheme").as_deref(), Some("https"));
        assert_eq!(parent.attr("url.path").as_deref(), Some(path));
        assert!(parent.span.start_time_unix_nano <= s.span.start_time_unix_nano);
        assert!(parent.span.end_time_unix_nano >= s.span.end_time_unix_nano);
    }
    servers.len()
}

/// curl (OpenSSL) → nginx (OpenSSL): single requests, 50 on one keep-alive
/// connection, and 1 MiB bodies; nothing from the ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_to_nginx_over_https() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let nginx = tls_nginx();
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        nginx.port.to_string(),
        "--exe-name".into(),
        "curl".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    let url = |p: &str| format!("https://127.0.0.1:{}{p}", nginx.port);

    assert_eq!(curl(&["-k", &url("/small")]), (200, "small\n".to_string()));
    assert_eq!(curl(&["-k", &url("/missing")]).0, 404);
    let mut keep_alive: Vec<String> = vec!["-sk".into()];
    for _ in 0..50 {
        keep_alive.extend([url("/small"), "-o".into(), "/dev/null".into()]);
    }
    let out = Command::new("curl").args(&keep_alive).output().unwrap();
    assert!(out.status.success());
    for _ in 0..3 {
        assert_eq!(curl(&["-k", &url("/big.bin"), "-o", "/dev/null"]).0, 200);
    }
    let spans = receiver.settle(2 * 55, Duration::from_secs(30)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 2 * 55, "{:#?}\n{}", names(&spans), agent.log());
    assert_eq!(paired(&spans, "nginx", "curl", "/small"), 51);
    assert_eq!(paired(&spans, "nginx", "curl", "/missing"), 1);
    assert_eq!(paired(&spans, "nginx", "curl", "/big.bin"), 3);
    // The 50 keep-alive requests went over one connection.
    let ports: std::collections::HashSet<i64> = spans
        .iter()
        .filter(|s| s.is_server() && s.attr("url.path").as_deref() == Some("/small"))
        .filter_map(|s| s.int("client.port"))
        .collect();
    assert_eq!(
        ports.len(),
        2,
        "one connection for the single request, one for the 50"
    );
    for s in spans
        .iter()
        .filter(|s| s.attr("url.path").as_deref() == Some("/big.bin"))
    {
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert_eq!(s.int("http.response.body.size"), Some(1 << 20));
    }
    let missing = spans
        .iter()
        .find(|s| s.is_client() && s.attr("url.path").as_deref() == Some("/missing"))
        .unwrap();
    assert!(missing.is_error());
}

/// wget uses GnuTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_gnutls_to_nginx() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let nginx = tls_nginx();
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        nginx.port.to_string(),
        "--exe-name".into(),
        "wget".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    for _ in 0..2 {
        let out = Command::new("wget")
            .args(["-q", "--no-check-certificate", "-O", "/dev/null"])
            .arg(format!("https://127.0.0.1:{}/small", nginx.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let spans = receiver.settle(4, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 4, "{:#?}", names(&spans));
    assert_eq!(paired(&spans, "nginx", "wget", "/small"), 2);
}

/// requests → gunicorn, both Python: a server started before the agent and
/// one after it, a client started after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_to_gunicorn_over_https() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let (cert, key) = certificate();
    let tls_opts = |port: u16| -> (u16, Vec<String>) {
        (
            port,
            vec![
                "-w".into(),
                "1".into(),
                "--certfile".into(),
                cert.display().to_string(),
                "--keyfile".into(),
                key.display().to_string(),
            ],
        )
    };
    let (before_port, opts) = tls_opts(free_port());
    let opts_ref: Vec<&str> = opts.iter().map(String::as_str).collect();
    let _before = gunicorn_with(&apps_dir("basic"), "basic", before_port, &opts_ref, &[]);
    let after_port = free_port();
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        format!("{before_port},{after_port}"),
        "--exe-name".into(),
        "requests_client.py".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    let _after = gunicorn_with(&apps_dir("basic"), "basic", after_port, &opts_ref, &[]);

    let mut cmd = Command::new("python3");
    cmd.arg(apps_dir("tls").join("requests_client.py"));
    let (_client, mut to, mut from) = Proc::spawn_interactive("requests_client.py", cmd);
    for port in [before_port, after_port, before_port] {
        writeln!(to, "https://127.0.0.1:{port}/ok").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "200 2");
    }
    let spans = receiver.settle(6, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 6, "{:#?}", names(&spans));
    assert_eq!(paired(&spans, "basic", "requests_client", "/ok"), 3);
}

/// Node.js (OpenSSL inside the node executable): a keep-alive connection
/// opened before the agent started is traced from the next request on, and
/// a node server started after the agent is hooked at its exec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_https_server_and_client() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let (cert, key) = certificate();
    let node_server = |port: u16| {
        let mut cmd = Command::new("node");
        cmd.arg(apps_dir("tls").join("node_server.js"))
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key);
        let p = Proc::spawn("node-server", cmd);
        assert!(wait_port(port, Duration::from_secs(20)), "{}", p.log());
        p
    };
    let early = free_port();
    let _early_server = node_server(early);
    let mut cmd = Command::new("node");
    cmd.arg(apps_dir("tls").join("node_client.js"))
        .arg(early.to_string());
    let (client, mut to, mut from) = Proc::spawn_interactive("node-client", cmd);
    let mut ask = |path: &str, want: &str| {
        writeln!(to, "{path}").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want, "{path}");
    };
    // Opens the TLS connection before the agent exists.
    ask("/warmup", "200");

    let late = free_port();
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        format!("{early},{late}"),
        "--pid".into(),
        client.pid().to_string(),
        "--exe-name".into(),
        "curl".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    ask("/one", "200");
    ask("/missing", "404");
    ask("/short", "200");
    // The server has closed that connection by now; the client opens
    // another, on the thread whose last read was the old one's end.
    std::thread::sleep(Duration::from_millis(600));
    ask("/again", "200");
    let _late_server = node_server(late);
    assert_eq!(
        curl(&["-k", &format!("https://127.0.0.1:{late}/late")]).0,
        200
    );

    let spans = receiver.settle(10, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 10, "{:#?}", names(&spans));
    assert_eq!(paired(&spans, "node_server", "node_client", "/one"), 1);
    assert_eq!(paired(&spans, "node_server", "node_client", "/missing"), 1);
    assert_eq!(paired(&spans, "node_server", "node_client", "/short"), 1);
    assert_eq!(paired(&spans, "node_server", "node_client", "/again"), 1);
    assert_eq!(paired(&spans, "node_server", "curl", "/late"), 1);
    assert!(
        spans
            .iter()
            .all(|s| s.attr("url.path").as_deref() != Some("/warmup"))
    );
}

/// Builds the Go HTTPS program of tests/apps/gotls (standard library only)
/// as `name`, stripped or not.
fn build_go(name: &str, stripped: bool) -> PathBuf {
    let out = scratch_dir().join(name);
    let mut cmd = Command::new("go");
    cmd.arg("build").arg("-o").arg(&out);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    let built = cmd
        .arg(".")
        .current_dir(apps_dir("gotls"))
        .env("GOCACHE", scratch_dir().join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go runs");
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

async fn wait_hooked(agent: &Agent, file: &str) {
    for _ in 0..100 {
        if agent
            .log()
            .lines()
            .any(|l| l.contains("TLS: hooked") && l.contains(file))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{file} was not hooked:\n{}", agent.log());
}

/// Go's crypto/tls: a server with a symbol table and a stripped client
/// (symbols from .gopclntab), both started after the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_https_server_and_stripped_client() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let (cert, key) = certificate();
    let server_bin = build_go("gotls-server", false);
    let client_bin = build_go("gotls-client", true);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--exe-name".into(), "gotls-server,gotls-client".into()]);
    let mut agent = Agent::start(&args, &[]);
    let port = free_port();
    let mut serve = Command::new(&server_bin);
    serve
        .arg("serve")
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key);
    let server = Proc::spawn("gotls-server", serve);
    assert!(wait_port(port, Duration::from_secs(20)), "{}", server.log());
    wait_hooked(&agent, "gotls-server").await;
    let mut client_cmd = Command::new(&client_bin);
    client_cmd.arg("client").arg(port.to_string());
    let (_client, mut to, mut from) = Proc::spawn_interactive("gotls-client", client_cmd);
    wait_hooked(&agent, "gotls-client").await;
    for (path, want) in [("/one", "200"), ("/two", "200"), ("/missing", "404")] {
        writeln!(to, "{path}").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want);
    }
    let spans = receiver.settle(6, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 6, "{:#?}", names(&spans));
    for path in ["/one", "/two", "/missing"] {
        assert_eq!(
            paired(&spans, "gotls-server", "gotls-client", path),
            1,
            "{path}"
        );
    }
    let missing = spans
        .iter()
        .find(|s| s.is_client() && s.attr("url.path").as_deref() == Some("/missing"))
        .unwrap();
    assert!(missing.is_error());
    assert_eq!(missing.int("http.response.status_code"), Some(404));
}
