//! `seam check` against this machine, checked independently by the test;
//! the agent turning features off (`--disable-feature`) and still tracing;
//! start-up refused for real missing conditions (no capabilities, no
//! tracefs, no BTF, no /proc, an old kernel) with one clear line and
//! nothing loaded; the lockdown mode read when securityfs is there; the
//! live status line only on a terminal.
use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use seam_tests::{
    agent::{Agent, http_get, seam_bin},
    otlp::{Kind, Receiver},
    procs::{apps_dir, free_port, gunicorn},
    serial,
};
use serde_json::Value;

/// Mount points of `fstype`, read here without the agent's parser.
fn mounts_of(fstype: &str) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == fstype).then(|| PathBuf::from(point))
        })
        .collect()
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k == "SEAM_CONFIG" || k == "SEAM_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ids of the BPF programs loaded on the machine now.
fn bpf_programs() -> BTreeSet<u64> {
    let (code, out, err) = run(Command::new("bpftool").args(["prog", "show", "--json"]));
    assert_eq!(code, 0, "bpftool: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

fn row<'a>(report: &'a Value, feature: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["feature"] == feature)
        .unwrap_or_else(|| panic!("no row {feature} in {report}"))
}

fn status(report: &Value, feature: &str) -> String {
    row(report, feature)["status"].as_str().unwrap().to_string()
}

fn detail(report: &Value, feature: &str) -> String {
    row(report, feature)["detail"].as_str().unwrap().to_string()
}

/// Lines of the agent's stderr that are log lines or the status line (the
/// status line is drawn after a carriage return, so split on both).
fn lines(text: &str) -> Vec<&str> {
    text.split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_what_this_machine_has() {
    let _serial = serial().await;
    let (code, out, err) = run(Command::new(seam_bin()).args(["check", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["can_run"], true, "{report}");

    // Each answer against what the test finds by itself.
    let tracefs = mounts_of("tracefs");
    let tracefs = tracefs
        .first()
        .expect("tracefs is mounted on the test machine");
    assert_eq!(status(&report, "tracefs"), "found");
    assert_eq!(detail(&report, "tracefs"), tracefs.display().to_string());

    let kprobes = tracefs.join("kprobe_events").exists()
        || Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert!(!kprobes, "this machine was expected to lack kprobes");
    assert_eq!(status(&report, "kprobes"), "missing");
    assert_eq!(row(&report, "kprobes")["need"], "not needed");

    assert!(Path::new("/sys/bus/event_source/devices/uprobe/type").exists());
    assert_eq!(status(&report, "uprobes"), "found");
    assert!(
        detail(&report, "uprobes").contains(&tracefs.join("uprobe_events").display().to_string()),
        "{report}"
    );

    let cgroup2 = mounts_of("cgroup2");
    assert_eq!(cgroup2.len(), 1, "{cgroup2:?}");
    assert_eq!(status(&report, "cgroup2"), "found");
    assert_eq!(detail(&report, "cgroup2"), cgroup2[0].display().to_string());

    assert!(fs::metadata("/sys/kernel/btf/vmlinux").unwrap().len() > 0);
    assert_eq!(status(&report, "BTF"), "found");
    assert!(detail(&report, "BTF").starts_with("/sys/kernel/btf/vmlinux "));

    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(detail(&report, "kernel >= 6.3"), release.trim());
    for feature in [
        "kernel >= 6.3",
        "capabilities",
        "/proc",
        "syscall tracepoints",
        "sched tracepoints",
        "sock tracepoints",
        "ring buffer map",
        "sk_msg",
        "sock_ops",
    ] {
        assert_eq!(status(&report, feature), "found", "{feature}: {report}");
    }
    assert_eq!(
        status(&report, "bpffs"),
        if mounts_of("bpf").is_empty() {
            "missing"
        } else {
            "found"
        }
    );

    // The table: one row per check, then the verdict.
    let (code, table, _) = run(Command::new(seam_bin()).arg("check"));
    assert_eq!(code, 0);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("FEATURE") && rows[0].contains("WITHOUT IT"),
        "{table}"
    );
    let n = report["checks"].as_array().unwrap().len();
    assert_eq!(
        rows[n + 2],
        "seam can run here with every feature",
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("kprobes ") && r.contains(" missing ")),
        "{table}"
    );

    // A feature turned off is reported so, and seam still runs.
    let (code, out, _) =
        run(Command::new(seam_bin()).args(["check", "--json", "--disable-feature", "uprobes"]));
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status(&report, "uprobes"), "disabled");
    assert_eq!(report["verdict"], "seam can run here, without: uprobes");
}

/// `--disable-feature sk_msg` with `--inject-traceparent`: one line says
/// injection is off and why; plaintext HTTP is traced as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_sk_msg_turns_injection_off_once_and_tracing_goes_on() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Http).await;
    let port = free_port();
    let app = gunicorn(&apps_dir("basic"), "basic", port, 1, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--pid".into(),
        app.pid().to_string(),
        "--disable-feature".into(),
        "sk_msg".into(),
        "--inject-traceparent".into(),
        // File I/O of the worker (imports on first request) would add
        // spans of its own.
        "--no-gaps".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    let ready = Instant::now();
    for _ in 0..3 {
        assert_eq!(http_get(port, "/ok").map(|r| r.0), Some(200));
    }
    let spans = receiver.settle(3, Duration::from_secs(20)).await;
    let ok: Vec<_> = spans
        .iter()
        .filter(|s| s.attr("url.path").as_deref() == Some("/ok"))
        .collect();
    assert_eq!(ok.len(), 3, "{spans:?}");
    assert!(ok.iter().all(|s| s.is_server() && s.service() == "basic"));
    let all: Vec<String> = spans
        .iter()
        .map(|s| format!("{} {:?} {:?}", s.service(), s.kind(), s.attr("url.path")))
        .collect();
    assert_eq!(spans.len(), 3, "{all:?}");

    let (_, body) = agent.get("/status");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["spans_exported"], 3, "{body}");
    // Past two refreshes of the status line, which a file never gets.
    past_two_refreshes(ready);
    assert!(agent.stop().success());
    let log = agent.log();
    let injection: Vec<&str> = lines(&log)
        .into_iter()
        .filter(|l| l.contains("traceparent injection"))
        .collect();
    assert_eq!(injection.len(), 1, "{log}");
    assert!(
        injection[0].contains("WARN")
            && injection[0].contains("traceparent injection off")
            && injection[0].contains("--disable-feature sk_msg"),
        "{}",
        injection[0]
    );
    assert!(
        !log.contains("status: "),
        "status line in a log file:\n{log}"
    );
}

/// Without capabilities the agent says which it lacks, in one line, and
/// loads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_capabilities_start_fails_in_one_line() {
    let _serial = serial().await;
    let before = bpf_programs();
    let (code, _, line) = start_refused(
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(seam_bin())
            .args(["--metrics-listen", "none"]),
    );
    assert_refused(
        code,
        &line,
        &[
            "capabilities missing",
            "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH",
            "CapEff=0000000000000000",
            "run as root",
        ],
        &before,
    );
}

/// In a mount namespace without tracefs (nor debugfs) the agent names
/// tracefs and the command that mounts it, and does not mount it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracefs_start_fails_naming_the_mount_command() {
    let _serial = serial().await;
    let before = bpf_programs();
    // Deepest mounts first (tracefs may sit under debugfs).
    let script = r#"
        for m in $(grep -E ' - (tracefs|debugfs) ' /proc/self/mountinfo | cut -d' ' -f5 | sort -r); do
            umount "$m" || exit 90
        done
        grep -qE ' - (tracefs|debugfs) ' /proc/self/mountinfo || echo ready
        exec "$0" --metrics-listen none
    "#;
    let (code, line) = start_in_mount_namespace(script, "tracefs still mounted in the namespace");
    assert_refused(
        code,
        &line,
        &[
            "tracefs missing",
            "mount -t tracefs nodev /sys/kernel/tracing",
        ],
        &before,
    );
    assert!(!mounts_of("tracefs").is_empty(), "the host lost tracefs");
}

/// Runs the agent as `sh -c script` does (`"$0"` is the agent) in a private
/// mount namespace; its exit code and the one line it must print.
fn start_in_mount_namespace(script: &str, setup_note: &str) -> (i32, String) {
    let (code, out, line) = start_refused(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .arg(seam_bin()),
    );
    assert_eq!(out.trim(), "ready", "{setup_note}: {line}");
    (code, line)
}

/// Runs a command that starts the agent and must make it print exactly one
/// line on stderr: its exit code, stdout and that line.
fn start_refused(cmd: &mut Command) -> (i32, String, String) {
    let (code, out, err) = run(cmd);
    let err_lines = lines(&err);
    assert_eq!(err_lines.len(), 1, "{out}{err}");
    (code, out, err_lines[0].to_string())
}

fn assert_refused(code: i32, line: &str, needles: &[&str], before: &BTreeSet<u64>) {
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("ERROR") && line.contains("cannot start"),
        "{line}"
    );
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    let new: Vec<u64> = bpf_programs().difference(before).copied().collect();
    assert!(new.is_empty(), "programs loaded: {new:?}");
}

/// Without kernel BTF (an empty directory over /sys/kernel/btf) the agent
/// names BTF and the kernel option that provides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_btf_start_fails_naming_the_kernel_option() {
    let _serial = serial().await;
    let before = bpf_programs();
    let script = r#"
        mount -t tmpfs none /sys/kernel/btf || exit 90
        test -e /sys/kernel/btf/vmlinux || echo ready
        exec "$0" --metrics-listen none
    "#;
    let (code, line) = start_in_mount_namespace(script, "BTF still visible");
    assert_refused(
        code,
        &line,
        &[
            "BTF missing",
            "no /sys/kernel/btf/vmlinux",
            "CONFIG_DEBUG_INFO_BTF=y",
        ],
        &before,
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "the host lost BTF"
    );
}

/// Without a readable /proc (an empty tmpfs over it) the agent names /proc
/// and how to mount it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_proc_start_fails_naming_proc() {
    let _serial = serial().await;
    let before = bpf_programs();
    let script = r#"
        mount -t tmpfs none /proc || exit 90
        test -e /proc/self || echo ready
        exec "$0" --metrics-listen none
    "#;
    let (code, line) = start_in_mount_namespace(script, "/proc still mounted");
    assert_refused(
        code,
        &line,
        &[
            "/proc missing",
            "/proc/self/mountinfo",
            "mount -t proc proc /proc",
        ],
        &before,
    );
    // The only cause named: tracefs cannot be looked for without /proc.
    assert!(!line.contains("tracefs"), "{line}");
}

/// On a kernel older than 6.3 (here: the 2.6 release string the UNAME26
/// personality reports, `setarch --uname-2.6`) the agent names the kernel
/// it found and the one it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_old_kernel_start_fails_naming_the_version() {
    let _serial = serial().await;
    let before = bpf_programs();
    let (_, release, _) =
        run(Command::new("setarch").args([std::env::consts::ARCH, "--uname-2.6", "uname", "-r"]));
    assert!(release.starts_with("2.6."), "{release}");
    let (code, _, line) = start_refused(
        Command::new("setarch")
            .args([std::env::consts::ARCH, "--uname-2.6"])
            .arg(seam_bin())
            .args(["--metrics-listen", "none"]),
    );
    assert_refused(
        code,
        &line,
        &[
            "kernel >= 6.3 missing",
            release.trim(),
            "boot Linux 6.3 or later",
        ],
        &before,
    );
}

/// With securityfs mounted the lockdown row shows the machine's real mode
/// (integrity here, which seam can run under).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_lockdown_mode_when_securityfs_is_mounted() {
    let script = r#"
        grep -q ' - securityfs ' /proc/self/mountinfo \
            || mount -t securityfs securityfs /sys/kernel/security || exit 90
        cat /sys/kernel/security/lockdown >&2
        exec "$0" check --json
    "#;
    let (code, out, err) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(seam_bin()));
    assert_eq!(code, 0, "{out}{err}");
    let mode = err
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no lockdown mode in {err:?}"))
        .to_string();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status(&report, "lockdown"), "found", "{report}");
    assert_eq!(
        detail(&report, "lockdown"),
        format!("{mode} (/sys/kernel/security/lockdown)")
    );
}

/// An agent child whose stderr is captured (pty or pipe) by a reader thread.
struct Captured {
    child: Child,
    text: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    ready: Instant,
}

impl Captured {
    /// Starts seam tracing nothing in particular (one unused port), TLS
    /// off to start fast. `stderr` is a pty slave or a pipe.
    fn start(extra: &[&str], stderr: Stderr) -> Captured {
        let metrics_port = free_port();
        let mut cmd = Command::new(seam_bin());
        cmd.args(["--port", &free_port().to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--disable-feature", "uprobes"])
            .args(extra)
            .env("SEAM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        let text = Arc::new(Mutex::new(Vec::new()));
        let (child, reader): (Child, Box<dyn std::io::Read + Send>) = match stderr {
            Stderr::Pty => {
                let (master, slave) = open_pty();
                cmd.stderr(Stdio::from(slave));
                let child = cmd.spawn().unwrap();
                // Our copy of the slave went with `cmd`.
                drop(cmd);
                (child, Box::new(fs::File::from(master)))
            }
            Stderr::Pipe => {
                cmd.stderr(Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                let pipe = child.stderr.take().unwrap();
                (child, Box::new(pipe))
            }
        };
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            // A pty reads EIO once the child is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut c = Captured {
            child,
            text,
            reader: Some(reader),
            ready: Instant::now(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(metrics_port, "/readyz").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline && c.child.try_wait().unwrap().is_none(),
                "seam did not start: {}",
                c.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c.ready = Instant::now();
        c
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// SIGTERM; true if it exited cleanly. Everything it wrote has been
    /// read when this returns.
    fn stop(&mut self) -> bool {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let ok = self.child.wait().unwrap().success();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        ok
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Stderr {
    Pty,
    Pipe,
}

fn open_pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // Not inherited by other children started meanwhile: a stray copy of
    // the slave would keep the terminal open after its agent exits.
    for fd in [master, slave] {
        // SAFETY: setting a flag on a descriptor we own.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
            0
        );
    }
    // SAFETY: both are open and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

const STATUS: &str = "status: ";

/// Waits until an agent ready at `ready` has had two refreshes of the
/// status line (the first as it becomes ready, then every 2 s), so that the
/// absence of the line means something.
fn past_two_refreshes(ready: Instant) {
    let until = ready + Duration::from_millis(2500);
    if let Some(left) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_line_only_on_a_terminal() {
    let _serial = serial().await;
    // Three agents at once (they trace nothing, so they cannot see each
    // other): on a terminal, on a terminal with --no-status, on a pipe.
    let [mut agent, no_status, pipe] = std::thread::scope(|scope| {
        [
            scope.spawn(|| Captured::start(&[], Stderr::Pty)),
            scope.spawn(|| Captured::start(&["--no-status"], Stderr::Pty)),
            scope.spawn(|| Captured::start(&[], Stderr::Pipe)),
        ]
        .map(|h| h.join().unwrap())
    });

    // On a terminal: drawn, with the /status figures.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.text().contains(STATUS) {
        assert!(
            Instant::now() < deadline,
            "no status line:\n{}",
            agent.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop());
    let text = agent.text();
    let status = lines(&text)
        .into_iter()
        .find(|l| l.contains(STATUS))
        .unwrap()
        .to_string();
    // `status: processes traced N, requests/s R, spans exported N, dropped N`
    let status = status.trim_start_matches("\x1b[2K");
    let fields: Vec<(&str, &str)> = status
        .strip_prefix(STATUS)
        .unwrap_or_else(|| panic!("{status:?}"))
        .split(", ")
        .filter_map(|f| f.rsplit_once(' '))
        .collect();
    let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "processes traced",
            "requests/s",
            "spans exported",
            "dropped"
        ],
        "{status:?}"
    );
    assert!(fields[0].1.parse::<u64>().is_ok(), "{status:?}");
    // Nothing traced listens on the port it was given: nothing to export.
    assert_eq!(fields[1].1, "0.0", "{status:?}");
    assert_eq!(fields[2].1, "0", "{status:?}");
    assert_eq!(fields[3].1, "0", "{status:?}");
    // Log lines after it start on a cleared line, not after the status.
    assert!(
        text.contains("\r\x1b[2K") && lines(&text).iter().any(|l| l.contains("seam stopped")),
        "{text:?}"
    );

    // On a terminal with --no-status, and on a pipe: never.
    past_two_refreshes(no_status.ready.max(pipe.ready));
    for (mut agent, what) in [(no_status, "--no-status"), (pipe, "pipe")] {
        assert!(agent.stop());
        let text = agent.text();
        assert!(text.contains("seam stopped"), "{what}: {text}");
        assert!(!text.contains(STATUS), "{what}: {text}");
    }
}
