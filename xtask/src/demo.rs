//! `cargo xtask demo`: the checkout example of the tracing guides under seam.
//! Order calls inventory, payment and shipping one after another, writes a
//! log line synchronously to a file system whose writes take 400 ms (a FUSE
//! mount standing in for the guides' slow NFS), then notifies a service that
//! takes 200 ms. seam prints each order as a waterfall where the log write is
//! its own span and the gaps are named.
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

pub fn run(requests: u32) -> anyhow::Result<()> {
    setup::ensure()?;
    let seam = tasks::build(true)?;
    tasks::become_root()?;
    tasks::mount_kernel_fs()?;
    let _machine = cmd::machine_lock()?;
    let apps = root().join("tests/apps");
    let work = PathBuf::from("/tmp/seam-demo");
    let logs = work.join("logs");
    fs::create_dir_all(&logs)?;
    let mut guard = Guard(Vec::new());

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
    eprintln!("+ {} --port {}", seam.display(), port_list.join(","));
    let mut agent = Command::new(&seam)
        .args(["--port", &port_list.join(",")])
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
    for i in 0..requests {
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
    drop(guard);
    if is_mounted(&logs) {
        let _ = Command::new("fusermount").arg("-u").arg(&logs).status();
    }
    Ok(())
}
