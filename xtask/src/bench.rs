//! `cargo xtask bench`: what seam costs the programs it traces.
//!
//! Each scenario runs under each mode back to back, in rounds that alternate
//! the order of the modes, and the report gives medians over the rounds:
//!
//! - scenarios: `nginx` (a small static file over keep-alive plaintext,
//!   `sendfile on`, one worker), `nginx-tls` (the same over TLS 1.3 with a
//!   self-signed certificate made at bench time), `chain` (the checkout chain
//!   of tests/apps/checkout: order → inventory, payment, shipping, Flask
//!   under gunicorn with 2 workers each);
//! - modes: `baseline` (no tracing), `seam` (the agent, exporting OTLP to a
//!   counting receiver in this process), and for the chain `otel-sdk` (the
//!   OpenTelemetry Python SDK's auto-instrumentation, exporting to the same
//!   receiver);
//! - loads: wrk at maximum throughput, then fixed rates from the built-in
//!   constant-rate generator ([`loadgen`]). Rates above 80% of the
//!   scenario's baseline maximum are skipped, and the report says so.
//!
//! A fresh agent is started for every load, so its CPU time, peak RSS,
//! ring-buffer losses and span count belong to that load alone.
//!
//! `--quick` is the CI variant: one round of short loads at one low rate,
//! with the debug agent `cargo xtask test` already built, and it fails unless
//! every mode ran and seam delivered exactly one span per nginx request and
//! seven per chain request at that rate. It checks no timings.
mod loadgen;
mod receiver;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    cmd::{self, root},
    setup, tasks,
};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Short CI run: one round, 3 s loads, one low fixed rate, the debug
    /// agent; fails unless every mode ran and seam's span counts are exact.
    #[arg(long)]
    quick: bool,
    /// Rounds of every scenario × mode × load (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds per load (default 10; 3 with --quick).
    #[arg(long)]
    secs: Option<u64>,
    /// Only these scenarios: nginx, nginx-tls, chain.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
}

/// Set when `cargo xtask bench` re-runs itself from a release build: the
/// agent binary to measure.
const AGENT_ENV: &str = "SEAM_BENCH_AGENT";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    #[default]
    Baseline,
    Seam,
    Sdk,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Seam => "seam",
            Mode::Sdk => "otel-sdk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Load {
    Max,
    Rate(u32),
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Max => "max".into(),
            Load::Rate(r) => format!("{r}/s"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nginx,
    NginxTls,
    Chain,
}

struct Scenario {
    kind: Kind,
    name: &'static str,
    modes: Vec<Mode>,
    /// Spans a fully traced request yields.
    spans_per_request: u64,
    wrk_connections: u32,
    gen_connections: usize,
    rates: Vec<u32>,
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let nginx_rates = if quick { vec![200] } else { vec![1000, 5000] };
    let chain_rates = if quick {
        vec![20]
    } else {
        vec![50, 1000, 5000]
    };
    vec![
        Scenario {
            kind: Kind::Nginx,
            name: "nginx",
            modes: vec![Mode::Baseline, Mode::Seam],
            spans_per_request: 1,
            wrk_connections: 16,
            gen_connections: 32,
            rates: nginx_rates.clone(),
        },
        Scenario {
            kind: Kind::NginxTls,
            name: "nginx-tls",
            modes: vec![Mode::Baseline, Mode::Seam],
            spans_per_request: 1,
            wrk_connections: 16,
            gen_connections: 32,
            rates: nginx_rates,
        },
        Scenario {
            kind: Kind::Chain,
            name: "chain",
            modes: vec![Mode::Baseline, Mode::Seam, Mode::Sdk],
            // order server + 3 order clients + 3 downstream servers.
            spans_per_request: 7,
            wrk_connections: 8,
            gen_connections: 8,
            rates: chain_rates,
        },
    ]
}

/// A process (and its children) in its own process group, output to a log
/// file; the group is stopped when dropped.
struct Group {
    name: String,
    child: Child,
    log: PathBuf,
    done: bool,
}

impl Group {
    fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> anyhow::Result<Group> {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cmd::show(cmd)))?;
        Ok(Group {
            name: name.to_string(),
            child,
            log,
            done: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        !self.done && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM to the group, SIGKILL after `timeout`; whether the leader
    /// exited successfully on its own.
    fn stop(&mut self, timeout: Duration) -> bool {
        if self.done {
            return true;
        }
        self.done = true;
        let pgid = self.child.id() as i32;
        // SAFETY: signalling the process group this harness created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        let mut clean = false;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                clean = status.success();
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; leftover members (workers) go too.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        clean
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

fn wait_port(port: u16, group: &mut Group) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !group.running() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    bail!("{} does not listen on {port}:\n{}", group.name, group.log())
}

/// `GET path` on a loopback port; the body.
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP response from port {port}"))?;
    Ok(body.to_string())
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / clock_ticks())
}

/// CPU seconds of every live process in these process groups.
fn group_cpu_seconds(pgids: &[u32]) -> f64 {
    let mut total = 0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid)
            && f.get(2).is_some_and(|g| pgids.contains(&(*g as u32)))
        {
            total += f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
        }
    }
    total as f64 / clock_ticks()
}

/// (idle, total) clock ticks of all CPUs so far; idle includes iowait.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(cpu_line: &str) -> Option<(u64, u64)> {
    let mut fields = cpu_line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 8).then(|| (v[3] + v[4], v.iter().sum()))
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Other seam agents running now (another engineer's tests): noise.
fn other_agents(own: Option<u32>) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) != own
            && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "seam")
        {
            pids.push(pid);
        }
    }
    pids
}

/// Sum of the series `metric` in a Prometheus text exposition.
fn prom_sum(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What is shared by every run.
struct Ctx {
    dir: PathBuf,
    agent_bin: PathBuf,
    receiver: receiver::Receiver,
    tls: Arc<rustls::ClientConfig>,
    cert: PathBuf,
    key: PathBuf,
    load_secs: u64,
    quick: bool,
}

/// The servers of one scenario in one mode.
struct Servers {
    groups: Vec<Group>,
    /// Ports the agent is told to trace.
    ports: Vec<u16>,
    target: loadgen::Target,
    url: String,
}

impl Servers {
    fn pgids(&self) -> Vec<u32> {
        self.groups.iter().map(Group::pid).collect()
    }
}

fn nginx_conf(prefix: &Path, port: u16, tls: Option<(&Path, &Path)>) -> String {
    let p = prefix.display();
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port};"),
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.3;",
            cert.display(),
            key.display()
        ),
    };
    format!(
        "daemon off;
master_process on;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type text/html;
    server {{
        {listen}
        root {p}/www;
        location / {{ }}
    }}
}}
"
    )
}

/// A static page of 256 bytes.
fn page() -> String {
    let mut s = String::from("<!doctype html><title>seam bench</title><p>");
    while s.len() < 252 {
        s.push('x');
    }
    s.push_str("</p>");
    s
}

fn start_servers(ctx: &Ctx, scn: &Scenario, mode: Mode) -> anyhow::Result<Servers> {
    match scn.kind {
        Kind::Nginx | Kind::NginxTls => {
            let tls = scn.kind == Kind::NginxTls;
            let prefix = ctx.dir.join(scn.name);
            fs::create_dir_all(prefix.join("www"))?;
            fs::create_dir_all(prefix.join("tmp"))?;
            fs::write(prefix.join("www/index.html"), page())?;
            let port = free_port()?;
            let conf = prefix.join("nginx.conf");
            fs::write(
                &conf,
                nginx_conf(&prefix, port, tls.then_some((&*ctx.cert, &*ctx.key))),
            )?;
            let mut g = Group::spawn(
                &format!("{}-nginx", scn.name),
                Command::new("nginx")
                    .arg("-p")
                    .arg(&prefix)
                    .arg("-c")
                    .arg(&conf),
                &ctx.dir,
            )?;
            wait_port(port, &mut g)?;
            let scheme = if tls { "https" } else { "http" };
            Ok(Servers {
                groups: vec![g],
                ports: vec![port],
                target: loadgen::Target {
                    port,
                    path: "/index.html".into(),
                    tls: tls.then(|| ctx.tls.clone()),
                },
                url: format!("{scheme}://127.0.0.1:{port}/index.html"),
            })
        }
        Kind::Chain => {
            let ports = free_ports(4)?;
            let (order, inventory, payment, shipping) = (ports[0], ports[1], ports[2], ports[3]);
            let dir = root().join("tests/apps/checkout");
            let mut groups = Vec::new();
            for (module, port) in [
                ("inventory", inventory),
                ("payment", payment),
                ("shipping", shipping),
                ("order", order),
            ] {
                let mut c = if mode == Mode::Sdk {
                    let mut c = Command::new("opentelemetry-instrument");
                    c.arg("python3")
                        .env("OTEL_SERVICE_NAME", module)
                        .env("OTEL_TRACES_EXPORTER", "otlp_proto_http")
                        .env(
                            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                            format!("{}/v1/traces", ctx.receiver.endpoint()),
                        )
                        .env("OTEL_METRICS_EXPORTER", "none")
                        .env("OTEL_LOGS_EXPORTER", "none")
                        // seam's default batch delay, for like-for-like export.
                        .env("OTEL_BSP_SCHEDULE_DELAY", "1000");
                    c
                } else {
                    Command::new("python3")
                };
                for (k, _) in std::env::vars() {
                    if k.starts_with("OTEL_") {
                        c.env_remove(k);
                    }
                }
                c.args(["-m", "gunicorn", "-w", "2", "-b"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--chdir")
                    .arg(&dir)
                    .arg(format!("{module}:app"));
                if module == "order" {
                    c.env("INVENTORY_URL", format!("http://127.0.0.1:{inventory}"))
                        .env("PAYMENT_URL", format!("http://127.0.0.1:{payment}"))
                        .env("SHIPPING_URL", format!("http://127.0.0.1:{shipping}"));
                }
                let mut g =
                    Group::spawn(&format!("chain-{}-{module}", mode.name()), &mut c, &ctx.dir)?;
                wait_port(port, &mut g)?;
                groups.push(g);
            }
            Ok(Servers {
                groups,
                ports: ports.clone(),
                target: loadgen::Target {
                    port: order,
                    path: "/api/order".into(),
                    tls: None,
                },
                url: format!("http://127.0.0.1:{order}/api/order"),
            })
        }
    }
}

/// A running agent.
struct Agent {
    group: Group,
    metrics_port: u16,
}

impl Agent {
    fn start(ctx: &Ctx, ports: &[u16], tag: &str) -> anyhow::Result<Agent> {
        let metrics_port = free_port()?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut c = Command::new(&ctx.agent_bin);
        c.args(["--port", &ports.join(",")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--otlp-endpoint", &ctx.receiver.endpoint()])
            .args(["--otlp-protocol", "http/protobuf"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k == "SEAM_LOG" {
                c.env_remove(k);
            }
        }
        let mut group = Group::spawn(&format!("seam-{tag}"), &mut c, &ctx.dir)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !group.log().contains(" tracing ") {
            if !group.running() || Instant::now() > deadline {
                bail!("seam did not start:\n{}", group.log());
            }
            sleep(Duration::from_millis(50));
        }
        Ok(Agent {
            group,
            metrics_port,
        })
    }

    fn lost(&self) -> Option<u64> {
        http_get(self.metrics_port, "/metrics")
            .ok()
            .map(|m| prom_sum(&m, "seam_probe_events_lost_total"))
    }
}

/// One load's measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    scenario: &'static str,
    mode: Mode,
    load: Option<Load>,
    round: u32,
    ok: u64,
    errors: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    elapsed_s: f64,
    app_cpu_s: f64,
    /// Share of all CPUs' time spent idle during the load, in percent.
    idle_pct: Option<f64>,
    agent_cpu_s: Option<f64>,
    agent_rss_kib: Option<u64>,
    lost: Option<u64>,
    spans: Option<u64>,
    spans_expected: Option<u64>,
    server_spans: Option<u64>,
    client_spans: Option<u64>,
    other_agents: usize,
    error: Option<String>,
}

/// Runs wrk at full speed; parses its report.
fn wrk(url: &str, connections: u32, secs: u64) -> anyhow::Result<loadgen::Outcome> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .args(["--latency", "--timeout", "10s", url])
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}");
    }
    parse_wrk(&text).ok_or_else(|| anyhow!("cannot read wrk's report:\n{text}"))
}

fn wrk_duration_us(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Option<loadgen::Outcome> {
    let mut out = loadgen::Outcome::default();
    let (mut requests, mut secs, mut bad) = (None, None, 0u64);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => out.p50_us = wrk_duration_us(v)?,
            ["99%", v] => out.p99_us = wrk_duration_us(v)?,
            [n, "requests", "in", t, ..] => {
                requests = n.parse::<u64>().ok();
                secs = wrk_duration_us(t.trim_end_matches(','));
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => bad += n.parse::<u64>().ok()?,
            ["Socket", "errors:", ..] => {
                bad += line
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    let requests = requests?;
    out.ok = requests.saturating_sub(bad);
    out.errors = bad;
    out.elapsed = Duration::from_secs_f64(secs? / 1e6);
    Some(out)
}

/// Waits until the receiver's count has not moved for `quiet` and at least
/// `min` has passed; the count then.
fn settle(ctx: &Ctx, quiet: Duration, min: Duration) -> receiver::Counts {
    let start = Instant::now();
    let mut last = ctx.receiver.counts();
    let mut changed = Instant::now();
    loop {
        sleep(Duration::from_millis(100));
        let now = ctx.receiver.counts();
        if now != last {
            last = now;
            changed = Instant::now();
        }
        if (changed.elapsed() >= quiet && start.elapsed() >= min)
            || start.elapsed() > Duration::from_secs(90)
        {
            return last;
        }
    }
}

fn run_load(
    ctx: &Ctx,
    scn: &Scenario,
    servers: &Servers,
    load: Load,
) -> anyhow::Result<loadgen::Outcome> {
    let secs = ctx.load_secs;
    match load {
        Load::Max => wrk(&servers.url, scn.wrk_connections, secs),
        Load::Rate(r) => Ok(loadgen::run(
            &servers.target,
            r,
            Duration::from_secs(secs),
            scn.gen_connections,
        )),
    }
}

/// Runs one load in one mode and measures it.
fn measure(
    ctx: &Ctx,
    scn: &Scenario,
    mode: Mode,
    servers: &Servers,
    load: Load,
    round: u32,
) -> Sample {
    let mut s = Sample {
        scenario: scn.name,
        mode,
        load: Some(load),
        round,
        ..Sample::default()
    };
    if let Err(e) = measure_into(ctx, scn, mode, servers, load, &mut s) {
        s.error = Some(format!("{e:#}"));
    }
    s
}

fn measure_into(
    ctx: &Ctx,
    scn: &Scenario,
    mode: Mode,
    servers: &Servers,
    load: Load,
    s: &mut Sample,
) -> anyhow::Result<()> {
    let tag = format!(
        "{}-{}-r{}",
        scn.name,
        load.label().replace('/', ""),
        s.round
    );
    let mut agent = match mode {
        Mode::Seam => Some(Agent::start(ctx, &servers.ports, &tag)?),
        _ => None,
    };
    sleep(Duration::from_millis(300));
    s.other_agents = other_agents(agent.as_ref().map(|a| a.group.pid())).len();
    let pgids = servers.pgids();
    let app0 = group_cpu_seconds(&pgids);
    let agent0 = agent.as_ref().and_then(|a| cpu_seconds(a.group.pid()));
    let spans0 = ctx.receiver.counts();
    let ticks0 = machine_ticks();
    let out = run_load(ctx, scn, servers, load)?;
    s.idle_pct = machine_ticks()
        .zip(ticks0)
        .filter(|(b, a)| b.1 > a.1)
        .map(|(b, a)| (b.0 - a.0) as f64 / (b.1 - a.1) as f64 * 100.0);
    // Spans are exported in batches each second, and the agent refreshes
    // its probe counters every 2 s.
    let spans1 = match mode {
        Mode::Baseline => {
            sleep(Duration::from_millis(500));
            spans0
        }
        _ => settle(
            ctx,
            Duration::from_millis(2000),
            Duration::from_millis(2600),
        ),
    };
    s.app_cpu_s = group_cpu_seconds(&pgids) - app0;
    s.ok = out.ok;
    s.errors = out.errors;
    s.elapsed_s = out.elapsed.as_secs_f64();
    s.rps = out.ok as f64 / s.elapsed_s.max(1e-9);
    s.p50_us = out.p50_us;
    s.p99_us = out.p99_us;
    if mode != Mode::Baseline {
        s.spans = Some(spans1.spans - spans0.spans);
        s.server_spans = Some(spans1.server - spans0.server);
        s.client_spans = Some(spans1.client - spans0.client);
        s.spans_expected = Some(out.ok * scn.spans_per_request);
    }
    if let Some(a) = agent.as_mut() {
        if !a.group.running() {
            bail!(
                "seam stopped during the load (a signal from outside?):\n{}",
                a.group.log()
            );
        }
        let pid = a.group.pid();
        s.agent_cpu_s = cpu_seconds(pid).zip(agent0).map(|(b, a)| b - a);
        s.agent_rss_kib = peak_rss_kib(pid);
        s.lost = a.lost();
        if !a.group.stop(Duration::from_secs(20)) {
            bail!("seam did not exit cleanly:\n{}", a.group.log());
        }
    }
    Ok(())
}

/// Every scenario × mode × load, `rounds` times.
fn run_rounds(ctx: &Ctx, scns: &[Scenario], rounds: u32) -> (Vec<Sample>, Vec<String>) {
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    // Rates each scenario reaches, decided from its first baseline maximum.
    let mut rates: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for round in 0..rounds {
        for scn in scns {
            let n = scn.modes.len();
            let order: Vec<Mode> = (0..n)
                .map(|i| scn.modes[(i + round as usize) % n])
                .collect();
            for mode in order {
                eprintln!(
                    "== round {}/{rounds}: {} / {}",
                    round + 1,
                    scn.name,
                    mode.name()
                );
                let servers = match start_servers(ctx, scn, mode) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("   failed: {e:#}");
                        samples.push(Sample {
                            scenario: scn.name,
                            mode,
                            round,
                            error: Some(format!("{e:#}")),
                            ..Sample::default()
                        });
                        continue;
                    }
                };
                warm_up(ctx, scn, mode, &servers);
                let mut loads = vec![Load::Max];
                if let Some(r) = rates.get(scn.name) {
                    loads.extend(r.iter().map(|&r| Load::Rate(r)));
                }
                let mut i = 0;
                while i < loads.len() {
                    let load = loads[i];
                    i += 1;
                    let s = measure(ctx, scn, mode, &servers, load, round);
                    eprintln!("   {}", one_line(&s));
                    if load == Load::Max
                        && mode == Mode::Baseline
                        && s.error.is_none()
                        && !rates.contains_key(scn.name)
                    {
                        let (keep, skip): (Vec<u32>, Vec<u32>) = scn
                            .rates
                            .iter()
                            .partition(|&&r| f64::from(r) <= 0.8 * s.rps);
                        if !skip.is_empty() {
                            let note = format!(
                                "{}: skipped {} req/s: above 80% of its baseline maximum ({:.0} req/s)",
                                scn.name,
                                skip.iter()
                                    .map(u32::to_string)
                                    .collect::<Vec<_>>()
                                    .join(" and "),
                                s.rps
                            );
                            eprintln!("   {note}");
                            notes.push(note);
                        }
                        loads.extend(keep.iter().map(|&r| Load::Rate(r)));
                        rates.insert(scn.name, keep);
                    }
                    samples.push(s);
                    sleep(Duration::from_millis(500));
                }
                drop(servers);
            }
        }
    }
    (samples, notes)
}

/// A few unmeasured requests so that lazy initialisation is not measured;
/// the SDK's spans of them are waited out.
fn warm_up(ctx: &Ctx, scn: &Scenario, mode: Mode, servers: &Servers) {
    let rate = match scn.kind {
        Kind::Chain => 20,
        _ => 200,
    };
    let _ = loadgen::run(&servers.target, rate, Duration::from_secs(1), 2);
    if mode == Mode::Sdk {
        settle(ctx, Duration::from_millis(2000), Duration::ZERO);
    }
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us.abs() >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

fn fmt_delta_us(us: f64) -> String {
    if !us.is_finite() {
        return "-".into();
    }
    let sign = if us >= 0.0 { "+" } else { "-" };
    format!("{sign}{}", fmt_us(us.abs()))
}

fn one_line(s: &Sample) -> String {
    if let Some(e) = &s.error {
        return format!(
            "{} failed: {}",
            s.load.map(Load::label).unwrap_or_default(),
            e.lines().next().unwrap_or_default()
        );
    }
    let mut line = format!(
        "{:>7}: {:>9.0} req/s  p50 {:>8}  p99 {:>8}  ok {} errors {}",
        s.load.map(Load::label).unwrap_or_default(),
        s.rps,
        fmt_us(s.p50_us),
        fmt_us(s.p99_us),
        s.ok,
        s.errors
    );
    if let (Some(got), Some(want)) = (s.spans, s.spans_expected) {
        let _ = write!(line, "  spans {got}/{want}");
    }
    if let Some(cpu) = s.agent_cpu_s {
        let _ = write!(line, "  agent cpu {cpu:.2}s");
    }
    if let Some(lost) = s.lost {
        let _ = write!(line, "  lost {lost}");
    }
    if s.other_agents > 0 {
        let _ = write!(line, "  ({} other seam agents running)", s.other_agents);
    }
    line
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians over the rounds of one scenario × mode × load.
#[derive(Debug)]
struct Row {
    scenario: &'static str,
    mode: Mode,
    load: Load,
    runs: usize,
    rps: f64,
    rps_ratio: f64,
    p50_us: f64,
    p99_us: f64,
    dp50_us: f64,
    dp99_us: f64,
    agent_ms_per_1k: f64,
    agent_pct_core: f64,
    app_ms_per_1k: f64,
    idle_pct: f64,
    agent_rss_mib: f64,
    lost: Option<u64>,
    spans: Option<u64>,
    spans_expected: Option<u64>,
    errors: u64,
}

fn summarize(scns: &[Scenario], samples: &[Sample]) -> Vec<Row> {
    let mut groups: BTreeMap<(usize, Mode, Load), Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.error.is_none()) {
        let Some(load) = s.load else { continue };
        let si = scns.iter().position(|x| x.name == s.scenario).unwrap_or(0);
        groups.entry((si, s.mode, load)).or_default().push(s);
    }
    let med = |v: &[&Sample], f: &dyn Fn(&Sample) -> Option<f64>| {
        median(v.iter().filter_map(|s| f(s)).collect())
    };
    let mut rows = Vec::new();
    for ((si, mode, load), v) in &groups {
        let per_1k = |cpu: f64, s: &Sample| cpu / (s.ok.max(1) as f64) * 1e6;
        let sum = |f: &dyn Fn(&Sample) -> Option<u64>| -> Option<u64> {
            v.iter().map(|s| f(s)).sum::<Option<u64>>()
        };
        rows.push(Row {
            scenario: scns[*si].name,
            mode: *mode,
            load: *load,
            runs: v.len(),
            rps: med(v, &|s| Some(s.rps)),
            rps_ratio: f64::NAN,
            p50_us: med(v, &|s| Some(s.p50_us)),
            p99_us: med(v, &|s| Some(s.p99_us)),
            dp50_us: f64::NAN,
            dp99_us: f64::NAN,
            agent_ms_per_1k: med(v, &|s| s.agent_cpu_s.map(|c| per_1k(c, s))),
            agent_pct_core: med(v, &|s| s.agent_cpu_s.map(|c| c / s.elapsed_s * 100.0)),
            app_ms_per_1k: med(v, &|s| Some(per_1k(s.app_cpu_s, s))),
            idle_pct: med(v, &|s| s.idle_pct),
            agent_rss_mib: med(v, &|s| s.agent_rss_kib.map(|k| k as f64 / 1024.0)),
            lost: sum(&|s| s.lost),
            spans: sum(&|s| s.spans),
            spans_expected: sum(&|s| s.spans_expected),
            errors: v.iter().map(|s| s.errors).sum(),
        });
    }
    let base: Vec<(&str, Load, f64, f64, f64)> = rows
        .iter()
        .filter(|r| r.mode == Mode::Baseline)
        .map(|r| (r.scenario, r.load, r.rps, r.p50_us, r.p99_us))
        .collect();
    for r in &mut rows {
        if let Some(b) = base.iter().find(|b| b.0 == r.scenario && b.1 == r.load) {
            r.rps_ratio = r.rps / b.2;
            r.dp50_us = r.p50_us - b.3;
            r.dp99_us = r.p99_us - b.4;
        }
    }
    rows
}

fn opt_f(v: f64, f: impl Fn(f64) -> String) -> String {
    if v.is_finite() { f(v) } else { "-".into() }
}

fn markdown(rows: &[Row], notes: &[String]) -> String {
    let mut md = String::new();
    md.push_str(
        "| scenario | mode | load | req/s | vs base | p50 | Δp50 | p99 | Δp99 | agent CPU ms/1k req | agent % core | app CPU ms/1k req | CPUs idle | agent peak RSS | ring-buffer lost | spans received/expected |\n",
    );
    md.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let base = r.mode == Mode::Baseline;
        let spans = match (r.spans, r.spans_expected) {
            (Some(got), Some(want)) if want > 0 => {
                format!("{got}/{want} ({:.1}%)", got as f64 / want as f64 * 100.0)
            }
            (Some(got), Some(want)) => format!("{got}/{want}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.mode.name(),
            r.load.label(),
            opt_f(r.rps, |v| format!("{v:.0}")),
            if base {
                "1".into()
            } else {
                opt_f(r.rps_ratio, |v| format!("{v:.3}"))
            },
            fmt_us(r.p50_us),
            if base {
                "".into()
            } else {
                fmt_delta_us(r.dp50_us)
            },
            fmt_us(r.p99_us),
            if base {
                "".into()
            } else {
                fmt_delta_us(r.dp99_us)
            },
            opt_f(r.agent_ms_per_1k, |v| format!("{v:.1}")),
            opt_f(r.agent_pct_core, |v| format!("{v:.1}%")),
            opt_f(r.app_ms_per_1k, |v| format!("{v:.1}")),
            opt_f(r.idle_pct, |v| format!("{v:.0}%")),
            opt_f(r.agent_rss_mib, |v| format!("{v:.1} MiB")),
            r.lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            spans,
        );
    }
    md.push_str(
        "\nMedians over the rounds; spans and losses are totals over the rounds. \
         `max`: wrk, 1 thread, closed loop; `N/s`: constant rate, latency from each request's \
         scheduled time. CPU per 1,000 requests is utime+stime from /proc; app CPU is every \
         process of the traced servers (it includes the probes, which run in the traced \
         processes' syscalls). CPUs idle: share of all CPUs' time idle during the load \
         (/proc/stat), which shows when the load generator, servers and agent do not fill \
         the machine. wrk stops with requests in flight that the servers still \
         answer, so at `max` spans can exceed requests × spans per request by up to its \
         connections × spans per request. nginx-tls expects one span per request too: a \
         seam that cannot read TLS plaintext sees only ciphertext there and makes none.\n",
    );
    for n in notes {
        let _ = writeln!(md, "\n- {n}");
    }
    md
}

fn sample_json(s: &Sample) -> Value {
    json!({
        "scenario": s.scenario,
        "mode": s.mode.name(),
        "load": s.load.map(Load::label),
        "round": s.round,
        "requests_ok": s.ok,
        "errors": s.errors,
        "elapsed_s": s.elapsed_s,
        "req_per_s": s.rps,
        "p50_us": finite(s.p50_us),
        "p99_us": finite(s.p99_us),
        "app_cpu_s": s.app_cpu_s,
        "cpus_idle_pct": s.idle_pct,
        "agent_cpu_s": s.agent_cpu_s,
        "agent_peak_rss_kib": s.agent_rss_kib,
        "ring_buffer_lost": s.lost,
        "spans": s.spans,
        "spans_expected": s.spans_expected,
        "server_spans": s.server_spans,
        "client_spans": s.client_spans,
        "other_seam_agents": s.other_agents,
        "error": s.error,
    })
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

fn row_json(r: &Row) -> Value {
    json!({
        "scenario": r.scenario,
        "mode": r.mode.name(),
        "load": r.load.label(),
        "runs": r.runs,
        "req_per_s": finite(r.rps),
        "req_per_s_vs_baseline": finite(r.rps_ratio),
        "p50_us": finite(r.p50_us),
        "p99_us": finite(r.p99_us),
        "p50_delta_us": finite(r.dp50_us),
        "p99_delta_us": finite(r.dp99_us),
        "agent_cpu_ms_per_1k_requests": finite(r.agent_ms_per_1k),
        "agent_cpu_pct_of_one_core": finite(r.agent_pct_core),
        "app_cpu_ms_per_1k_requests": finite(r.app_ms_per_1k),
        "cpus_idle_pct": finite(r.idle_pct),
        "agent_peak_rss_mib": finite(r.agent_rss_mib),
        "ring_buffer_lost": r.lost,
        "spans": r.spans,
        "spans_expected": r.spans_expected,
        "errors": r.errors,
    })
}

/// What the machine is, for the report.
fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    let out = |c: &mut Command| {
        c.output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_default()
    };
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory": mem,
        "kernel": out(Command::new("uname").args(["-srm"])),
        "os": fs::read_to_string("/etc/os-release").unwrap_or_default().lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())),
        "nginx": out(Command::new("nginx").arg("-v")),
        "wrk": out(Command::new("wrk").arg("-v")),
        "python": out(Command::new("python3").arg("--version")),
    })
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The harness checks of `--quick`: every mode ran and its machine-wide idle
/// share was read; at the low fixed rate seam delivered exactly the spans the
/// requests make (nginx and chain).
fn checks(scns: &[Scenario], samples: &[Sample]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for scn in scns {
        for &mode in &scn.modes {
            let ran = samples.iter().any(|s| {
                s.scenario == scn.name
                    && s.mode == mode
                    && s.error.is_none()
                    && s.ok > 0
                    && s.idle_pct.is_some_and(|p| (0.0..=100.0).contains(&p))
            });
            out.push((format!("{} / {} ran", scn.name, mode.name()), ran));
        }
        if matches!(scn.kind, Kind::Nginx | Kind::Chain) {
            let Some(&low) = scn.rates.iter().min() else {
                continue;
            };
            let runs: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    s.scenario == scn.name
                        && s.mode == Mode::Seam
                        && s.load == Some(Load::Rate(low))
                })
                .collect();
            let exact = !runs.is_empty()
                && runs.iter().all(|s| {
                    s.error.is_none()
                        && s.errors == 0
                        && s.ok > 0
                        && s.spans == Some(s.ok * scn.spans_per_request)
                });
            let detail: Vec<String> = runs
                .iter()
                .map(|s| {
                    format!(
                        "{} requests ({} failed), {} spans",
                        s.ok,
                        s.errors,
                        s.spans.unwrap_or(0)
                    )
                })
                .collect();
            out.push((
                format!(
                    "{} / seam at {low}/s: spans = requests × {} ({})",
                    scn.name,
                    scn.spans_per_request,
                    if detail.is_empty() {
                        "did not run".into()
                    } else {
                        detail.join("; ")
                    }
                ),
                exact,
            ));
        }
    }
    out
}

fn self_signed_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    cmd::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    Ok((cert, key))
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let agent_bin = match std::env::var_os(AGENT_ENV) {
        Some(bin) => PathBuf::from(bin),
        None => {
            setup::ensure(setup::Tier::Agent)?;
            if opts.quick {
                // The debug build `cargo xtask test` made: no release build in CI.
                tasks::build(false)?
            } else {
                let bin = tasks::build(true)?;
                // The load generator and receiver run optimised too.
                cmd::run(Command::new("cargo").current_dir(root()).args([
                    "build",
                    "--release",
                    "-p",
                    "xtask",
                ]))?;
                tasks::become_root()?;
                let xtask = root().join("target/release/xtask");
                let err = Command::new(&xtask)
                    .args(std::env::args_os().skip(1))
                    .env(AGENT_ENV, &bin)
                    .exec();
                return Err(err).with_context(|| format!("running {}", xtask.display()));
            }
        }
    };
    tasks::become_root()?;
    tasks::mount_kernel_fs()?;
    let _machine = cmd::machine_lock()?;
    for tool in ["nginx", "wrk", "openssl", "opentelemetry-instrument"] {
        if !cmd::has(tool) {
            bail!("`{tool}` is not installed; run `cargo xtask setup`");
        }
    }

    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = std::env::temp_dir().join("seam-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let (cert, key) = self_signed_cert(&dir)?;
    let ctx = Ctx {
        dir: dir.clone(),
        agent_bin: agent_bin.clone(),
        receiver: receiver::Receiver::start()?,
        tls: loadgen::insecure_tls()?,
        cert,
        key,
        load_secs: opts.secs.unwrap_or(if opts.quick { 3 } else { 10 }),
        quick: opts.quick,
    };
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    let mut scns = scenarios(opts.quick);
    if !opts.scenarios.is_empty() {
        scns.retain(|s| opts.scenarios.iter().any(|n| n == s.name));
        if scns.is_empty() {
            bail!("no such scenario; there are nginx, nginx-tls and chain");
        }
    }
    eprintln!(
        "bench: agent {}, {rounds} round(s) of {} s loads, logs in {}",
        agent_bin.display(),
        ctx.load_secs,
        dir.display()
    );
    let others = other_agents(None);
    if !others.is_empty() {
        eprintln!("bench: warning: other seam agents are running (pids {others:?}); expect noise");
    }

    let clock = Instant::now();
    let (samples, notes) = run_rounds(&ctx, &scns, rounds);
    let rows = summarize(&scns, &samples);
    let checks = checks(&scns, &samples);
    let md = markdown(&rows, &notes);
    println!("\n{md}");

    let stamp = utc(started);
    let command = format!(
        "cargo xtask bench {}",
        std::env::args().skip(2).collect::<Vec<_>>().join(" ")
    );
    let report = json!({
        "started": stamp,
        "command": command.trim(),
        "agent": agent_bin.display().to_string(),
        "quick": ctx.quick,
        "rounds": rounds,
        "load_seconds": ctx.load_secs,
        "wall_seconds": clock.elapsed().as_secs_f64(),
        "machine": machine(),
        "notes": notes,
        "checks": checks.iter().map(|(what, ok)| json!({"check": what, "ok": ok})).collect::<Vec<_>>(),
        "summary": rows.iter().map(row_json).collect::<Vec<_>>(),
        "samples": samples.iter().map(sample_json).collect::<Vec<_>>(),
    });
    let out_dir = root().join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let name = stamp.replace([':', '-'], "");
    let json_text = serde_json::to_string_pretty(&report)? + "\n";
    let md_text = format!(
        "# seam bench {stamp}\n\n`{}` on {}\n\n{md}",
        command.trim(),
        report["machine"]["kernel"].as_str().unwrap_or_default()
    );
    for (file, text) in [
        (format!("{name}.json"), &json_text),
        (format!("{name}.md"), &md_text),
        ("latest.json".to_string(), &json_text),
        ("latest.md".to_string(), &md_text),
    ] {
        fs::write(out_dir.join(file), text)?;
    }
    eprintln!(
        "bench: wrote {} and latest.{{json,md}} in {} ({:.0} s)",
        name,
        out_dir.display(),
        clock.elapsed().as_secs_f64()
    );

    let mut failed = 0;
    for (what, ok) in &checks {
        eprintln!("{} {what}", if *ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 && opts.quick {
        bail!(
            "{failed} harness check(s) failed; logs in {}",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let text = "Running 3s test @ http://127.0.0.1:1/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.38us  102.11us   5.12ms   91.23%
    Req/Sec    70.12k     2.01k   73.40k    70.00%
  Latency Distribution
     50%  198.00us
     75%  231.00us
     90%  280.00us
     99%    1.02ms
  209321 requests in 3.00s, 98.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  69773.67
Transfer/sec:     32.71MB
";
        let o = parse_wrk(text).unwrap();
        assert_eq!(o.p50_us, 198.0);
        assert_eq!(o.p99_us, 1020.0);
        assert_eq!(o.errors, 7);
        assert_eq!(o.ok, 209_314);
        assert_eq!(o.elapsed, Duration::from_secs(3));
    }

    #[test]
    fn machine_ticks_count_iowait_as_idle() {
        assert_eq!(
            parse_machine_ticks("cpu  100 5 50 800 20 3 2 0 0 0"),
            Some((820, 980))
        );
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8 0 0"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 3"), None);
    }

    #[test]
    fn prometheus_sums_label_sets() {
        let text = "# HELP seam_probe_events_lost_total x
seam_probe_events_lost_total{probe=\"a\"} 3
seam_probe_events_lost_total{probe=\"b\"} 4
seam_probe_events_lost_totally 100
";
        assert_eq!(prom_sum(text, "seam_probe_events_lost_total"), 7);
    }

    #[test]
    fn medians_and_dates() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
