//! Real processes for tests: each in its own process group, output kept in a
//! log file, the whole group stopped when the handle is dropped.
use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A directory for this test process's logs and files.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seam-tests-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    done: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` in a new process group, stdout and stderr to a log file.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = scratch_dir().join(format!("{name}-{}.log", unique()));
        let file = fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
            done: None,
        }
    }

    /// Like [`Proc::spawn`], with the child's stdin and stdout as pipes for
    /// a test that talks to it line by line.
    pub fn spawn_interactive(
        name: &str,
        mut cmd: Command,
    ) -> (
        Proc,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    ) {
        let log = scratch_dir().join(format!("{name}-{}.log", unique()));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        (
            Proc {
                name: name.to_string(),
                child,
                log,
                done: None,
            },
            stdin,
            stdout,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        if self.done.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.done = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Sends `signal` to the process group and waits up to `timeout` for the
    /// leader; kills the group if it is still there.
    pub fn stop_with(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.done {
            return s;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-pgid, signal) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.done = Some(status);
                // Leftover group members (workers) go too.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return status;
            }
            if Instant::now() >= deadline {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let status = self.child.wait().unwrap();
                self.done = Some(status);
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM, Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Test applications shipped in tests/apps.
pub fn apps_dir(name: &str) -> PathBuf {
    crate::root().join("tests").join("apps").join(name)
}

/// A Flask app under gunicorn (sync workers) on 127.0.0.1:`port`.
pub fn gunicorn(dir: &Path, module: &str, port: u16, workers: u32, env: &[(&str, String)]) -> Proc {
    gunicorn_with(dir, module, port, &["-w", &workers.to_string()], env)
}

/// A Flask app under gunicorn with extra gunicorn options.
pub fn gunicorn_with(
    dir: &Path,
    module: &str,
    port: u16,
    options: &[&str],
    env: &[(&str, String)],
) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "gunicorn", "-b"])
        .arg(format!("127.0.0.1:{port}"))
        .args(options)
        .arg("--chdir")
        .arg(dir)
        .arg(format!("{module}:app"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("OTEL_SERVICE_NAME");
    let mut p = Proc::spawn(module, cmd);
    if !wait_port(port, Duration::from_secs(20)) {
        p.stop();
        panic!("gunicorn {module} did not listen on {port}:\n{}", p.log());
    }
    p
}

/// Runs curl; returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Resident set size of `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
