//! `cargo xtask demo`: the checkout example of the tracing guides under seam.
//! Order calls inventory, payment and shipping one after another, writes a
//! log line synchronously to a file system whose writes take 400 ms (a FUSE
//! mount standing in for the guides' slow NFS), then notifies a service that
//! takes 200 ms. seam prints each order as a waterfall where the log write is
//! its own span and the gaps are named.
//!
//! `--backend phoenix` also starts Arize Phoenix (installed by `cargo xtask
//! setup`), exports the spans to it over OTLP/HTTP and prints the URL
//! of a trace in its UI; `--screenshot` saves that page as a PNG with
//! headless chromium.
use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, root},
    setup, tasks,
};

/// Where the demo sends its spans besides the console.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Backend {
    /// Arize Phoenix, started by the demo.
    Phoenix,
}

#[derive(clap::Args)]
pub struct Options {
    /// Orders to place.
    #[arg(long, default_value_t = 3)]
    pub requests: u32,
    /// Also export the spans to this backend and print a trace's URL in it.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// With --backend: stop once the URL is printed (for scripts) instead of
    /// keeping the backend up until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// With --backend: save the trace's page as a PNG (headless chromium).
    #[arg(long, value_name = "FILE")]
    pub screenshot: Option<PathBuf>,
    /// With --backend phoenix: the port of its UI and OTLP/HTTP endpoint.
    #[arg(long, default_value_t = 6006)]
    pub phoenix_port: u16,
}

/// The Phoenix project the demo's spans are filed under (by the
/// `x-project-name` header of each OTLP/HTTP request).
const PROJECT: &str = "seam-demo";

/// Children killed (whole process group) when dropped.
struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            // SAFETY: signalling process groups this task created.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let file = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0);
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

fn is_mounted(dir: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some(dir.to_string_lossy().as_ref()))
    })
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.backend.is_none() && (opts.once || opts.screenshot.is_some()) {
        bail!("--once and --screenshot go with --backend");
    }
    setup::ensure(match (&opts.backend, &opts.screenshot) {
        (_, Some(_)) => setup::Tier::All,
        (Some(_), None) => setup::Tier::Tests,
        (None, None) => setup::Tier::Agent,
    })?;
    let seam = tasks::build(true)?;
    tasks::become_root()?;
    tasks::mount_kernel_fs()?;
    let _machine = cmd::machine_lock()?;
    let apps = root().join("tests/apps");
    let work = PathBuf::from("/tmp/seam-demo");
    let logs = work.join("logs");
    fs::create_dir_all(&logs)?;
    let mut guard = Guard(Vec::new());
    // Phoenix starts slowly; it comes up while the services do.
    let phoenix = match opts.backend {
        Some(Backend::Phoenix) => Some(start_phoenix(&work, opts.phoenix_port, &mut guard)?),
        None => None,
    };

    if !is_mounted(&logs) {
        guard.0.push(spawn(
            Command::new("python3")
                .arg(apps.join("slowfs/slowfs.py"))
                .arg(&logs)
                .args(["--delay-ms", "400"]),
            &work.join("slowfs.log"),
        )?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&logs) {
            if Instant::now() > deadline {
                bail!(
                    "the slow file system did not mount; see {}",
                    work.join("slowfs.log").display()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    let names = ["inventory", "payment", "shipping", "notification", "order"];
    let mut ports = Vec::new();
    for _ in names {
        ports.push(free_port()?);
    }
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    for (i, name) in names.iter().enumerate() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "gunicorn", "-w", "1", "-b"])
            .arg(format!("127.0.0.1:{}", ports[i]))
            .arg("--chdir")
            .arg(apps.join("checkout"))
            .arg(format!("{name}:app"));
        if *name == "order" {
            cmd.env("INVENTORY_URL", url(0))
                .env("PAYMENT_URL", url(1))
                .env("SHIPPING_URL", url(2))
                .env("NOTIFY_URL", url(3))
                .env("ORDER_LOG", logs.join("orders.log"));
        }
        guard
            .0
            .push(spawn(&mut cmd, &work.join(format!("{name}.log")))?);
        wait_port(ports[i])?;
    }

    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut agent = Command::new(&seam);
    agent.args(["--port", &port_list.join(",")]);
    if let Some(port) = phoenix {
        wait_phoenix(port, &work)?;
        agent
            .args(["--otlp-endpoint", &format!("http://127.0.0.1:{port}")])
            .args(["--otlp-protocol", "http/protobuf", "--console"])
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("x-project-name={PROJECT}"),
            );
    }
    eprintln!("+ {}", crate::cmd::show(&agent));
    let mut agent = agent
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting seam")?;
    // The agent says when its probes are attached.
    let stderr = agent.stderr.take().expect("piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut ready = Some(ready_tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if line.contains(" tracing ")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .context("seam did not start")?;

    let order = format!("{}/api/order", url(4));
    for i in 0..opts.requests {
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &order])
            .output()?;
        eprintln!(
            "order {}: HTTP {} in {:.0} ms",
            i + 1,
            String::from_utf8_lossy(&status.stdout),
            started.elapsed().as_secs_f64() * 1000.0
        );
        sleep(Duration::from_millis(500));
    }
    sleep(Duration::from_secs(2));
    // SAFETY: signalling the agent this task started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait()?;
    let shown = match phoenix {
        Some(port) => show_in_phoenix(port, opts),
        None => Ok(()),
    };
    drop(guard);
    if is_mounted(&logs) {
        let _ = Command::new("fusermount").arg("-u").arg(&logs).status();
    }
    shown
}

/// Starts `phoenix serve` on `port` with a fresh working directory (so the
/// demo's traces are the only ones) and a free gRPC port.
fn start_phoenix(work: &Path, port: u16, guard: &mut Guard) -> anyhow::Result<u16> {
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        bail!("port {port} is taken; pick another with --phoenix-port");
    }
    let dir = work.join("phoenix");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(setup::phoenix_bin());
    cmd.arg("serve")
        .env("PHOENIX_WORKING_DIR", &dir)
        .env("PHOENIX_HOST", "127.0.0.1")
        .env("PHOENIX_PORT", port.to_string())
        .env("PHOENIX_GRPC_PORT", free_port()?.to_string())
        .env("PHOENIX_TELEMETRY_ENABLED", "false");
    eprintln!(
        "+ {} (log: {})",
        crate::cmd::show(&cmd),
        work.join("phoenix.log").display()
    );
    guard.0.push(spawn(&mut cmd, &work.join("phoenix.log"))?);
    Ok(port)
}

fn wait_phoenix(port: u16, work: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
        if Instant::now() > deadline {
            bail!(
                "Phoenix did not start; see {}",
                work.join("phoenix.log").display()
            );
        }
        sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The trace id of the last order Phoenix holds, once it has all of them.
fn last_order_trace(port: u16, orders: u32) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let roots: Vec<String> = http_get(
            port,
            &format!(
                "/v1/projects/{PROJECT}/spans?limit=1000&parent_id=null&sort=start_time&order=desc"
            ),
        )
        .filter(|(s, _)| *s == 200)
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| {
            Some(
                v["data"]
                    .as_array()?
                    .iter()
                    .filter(|s| s["name"] == "GET /api/order")
                    .filter_map(|s| s["context"]["trace_id"].as_str().map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_default();
        if roots.len() >= orders as usize {
            return Ok(roots[0].clone());
        }
        if Instant::now() > deadline {
            bail!("Phoenix holds {} of {orders} orders", roots.len());
        }
        sleep(Duration::from_millis(500));
    }
}

fn show_in_phoenix(port: u16, opts: &Options) -> anyhow::Result<()> {
    let trace = last_order_trace(port, opts.requests)?;
    // Phoenix redirects this to the trace's page in its project.
    let url = format!("http://127.0.0.1:{port}/redirects/traces/{trace}");
    println!("Phoenix project: http://127.0.0.1:{port}/redirects/projects/{PROJECT}");
    println!("Last order in Phoenix: {url}");
    if let Some(png) = &opts.screenshot {
        screenshot(&url, png)?;
        println!("Screenshot: {}", png.display());
    }
    if !opts.once {
        println!("Phoenix keeps running; Ctrl-C stops it.");
        wait_for_interrupt();
    }
    Ok(())
}

/// The page at `url` as a PNG, after its scripts have had time to render.
fn screenshot(url: &str, png: &Path) -> anyhow::Result<()> {
    let png = std::path::absolute(png)?;
    if let Some(dir) = png.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::cmd::run(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1600,1000",
                "--virtual-time-budget=15000",
            ])
            .arg(format!("--screenshot={}", png.display()))
            .arg(url),
    )
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Blocks until SIGINT or SIGTERM, so that the caller's guards stop what
/// it started instead of the signal killing this process outright.
fn wait_for_interrupt() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        sleep(Duration::from_millis(200));
    }
}
