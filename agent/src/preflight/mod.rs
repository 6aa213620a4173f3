//! What this machine offers the agent: `seam check` prints it, and the agent
//! runs the same checks at start-up, refusing to start without what it
//! cannot work without and turning off, one log line each, what it can do
//! without. [`machine`] asks the kernel; [`render`] prints the table.
pub mod machine;
pub mod render;

use std::path::{Path, PathBuf};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::{capture::tracefs, discover::mounts};
use machine::{Access, cap};

/// Oldest kernel with everything the probes attach to (sock:sock_send_length
/// and sock_recv_length appeared in 6.3).
pub const MIN_KERNEL: (u32, u32) = (6, 3);

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Hook families an operator may turn off (`--disable-feature`); the agent
/// then behaves exactly as on a machine without them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
pub enum Feature {
    /// no TLS plaintext capture (OpenSSL, GnuTLS, Go crypto/tls)
    #[value(name = "uprobes")]
    #[serde(rename = "uprobes")]
    Uprobes,
    /// no traceparent injection
    #[value(name = "sk_msg")]
    #[serde(rename = "sk_msg")]
    SkMsg,
    /// no traceparent injection
    #[value(name = "sock_ops")]
    #[serde(rename = "sock_ops")]
    SockOps,
    /// no traceparent injection, no Kubernetes mode
    #[value(name = "cgroup2")]
    #[serde(rename = "cgroup2")]
    Cgroup2,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Uprobes => "uprobes",
            Feature::SkMsg => "sk_msg",
            Feature::SockOps => "sock_ops",
            Feature::Cgroup2 => "cgroup2",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Found,
    Missing,
    /// Turned off with `--disable-feature`.
    Disabled,
    /// Could not be checked (usually: not allowed to look).
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Found => "found",
            Status::Missing => "missing",
            Status::Disabled => "disabled",
            Status::Unknown => "unknown",
        }
    }
}

/// How much the agent depends on a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The agent does not start without it.
    Required,
    /// The agent starts without it and does less.
    Optional,
    /// seam does not use it; shown because operators ask.
    NotNeeded,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Required => "required",
            Need::Optional => "optional",
            Need::NotNeeded => "not needed",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// Where or what was found, or why it was not.
    pub detail: String,
    /// What the agent cannot do without it.
    pub without: &'static str,
    /// How to get it (empty when found).
    pub fix: String,
    pub need: Need,
    pub feature: Option<Feature>,
}

impl Check {
    fn new(name: &'static str, need: Need, without: &'static str) -> Self {
        Self {
            name,
            status: Status::Unknown,
            detail: String::new(),
            without,
            fix: String::new(),
            need,
            feature: None,
        }
    }

    fn found(mut self, detail: impl Into<String>) -> Self {
        self.status = Status::Found;
        self.detail = detail.into();
        self
    }

    fn missing(mut self, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        self.status = Status::Missing;
        self.detail = detail.into();
        self.fix = fix.into();
        self
    }

    fn unknown(mut self, detail: impl Into<String>) -> Self {
        self.status = Status::Unknown;
        self.detail = detail.into();
        self
    }

    /// Whether this row stops the agent from starting.
    pub fn is_fatal(&self) -> bool {
        self.need == Need::Required && self.status == Status::Missing
    }
}

/// Every check, in the order they are printed.
#[derive(Clone, Debug)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn fatal(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.is_fatal())
    }

    /// One sentence naming everything that stops the agent, with fixes.
    pub fn fatal_message(&self) -> Option<String> {
        let parts: Vec<String> = self
            .fatal()
            .map(|c| format!("{} missing ({}); fix: {}", c.name, c.detail, c.fix))
            .collect();
        (!parts.is_empty()).then(|| format!("cannot start: {}", parts.join("; ")))
    }

    /// `Err(why)` when `feature` is missing or turned off. Unknown counts as
    /// usable: the agent tries, and says so if the kernel refuses.
    pub fn usable(&self, feature: Feature) -> Result<(), String> {
        match self.checks.iter().find(|c| c.feature == Some(feature)) {
            Some(c) if c.status == Status::Disabled => Err(c.detail.clone()),
            Some(c) if c.status == Status::Missing => {
                Err(format!("{} missing: {}", c.name, c.detail))
            }
            _ => Ok(()),
        }
    }

    /// The agent can start (perhaps doing less).
    pub fn can_run(&self) -> bool {
        self.fatal().next().is_none()
    }
}

/// Runs every check against this machine; `disabled` features are reported
/// as turned off and not probed.
pub fn run(disabled: &[Feature]) -> Report {
    let tracefs_mount = tracefs::mount_point();
    let mut checks = vec![
        kernel(),
        btf(),
        capabilities(),
        proc_fs(),
        tracefs_check(tracefs_mount.as_deref()),
    ];
    for (category, name, without) in [
        ("syscalls", "syscall tracepoints", "cannot start"),
        ("sched", "sched tracepoints", "cannot start"),
        ("sock", "sock tracepoints", "cannot start"),
    ] {
        checks.push(tracepoints(
            tracefs_mount.as_deref(),
            category,
            name,
            without,
        ));
    }
    checks.push(ring_buffer());
    checks.push(uprobes(tracefs_mount.as_deref()));
    checks.push(sk_msg());
    checks.push(sock_ops());
    checks.push(cgroup2());
    checks.push(kprobes(tracefs_mount.as_deref()));
    checks.push(bpffs());
    checks.push(lockdown());
    for c in &mut checks {
        if let Some(f) = c.feature
            && disabled.contains(&f)
        {
            c.status = Status::Disabled;
            c.detail = format!("turned off by --disable-feature {}", f.name());
            c.fix = format!("drop --disable-feature {}", f.name());
        }
    }
    Report { checks }
}

/// An error and its causes, `: `-separated (aya's syscall errors keep the
/// errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn kernel() -> Check {
    let c = Check::new("kernel >= 6.3", Need::Required, "cannot start");
    let Some(release) = machine::kernel_release() else {
        return c.unknown("uname failed");
    };
    match machine::parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => c.found(release),
        Some(_) => c.missing(release, "boot Linux 6.3 or later"),
        None => c.unknown(format!("cannot read release {release:?}")),
    }
}

fn btf() -> Check {
    let c = Check::new("BTF", Need::Required, "cannot start");
    let path = Path::new(BTF_PATH);
    match machine::access(path) {
        Access::Absent => c.missing(
            format!("no {BTF_PATH}"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
        _ => match machine::btf(path) {
            Ok(size) => c.found(format!("{BTF_PATH} ({} KiB)", size / 1024)),
            Err(e) => c.unknown(e),
        },
    }
}

fn capabilities() -> Check {
    let c = Check::new("capabilities", Need::Required, "cannot start");
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return c.unknown(format!("/proc/self/status: {e}")),
    };
    let Some(eff) = machine::parse_cap_eff(&status) else {
        return c.unknown("no CapEff in /proc/self/status");
    };
    let missing = machine::missing_caps(eff);
    let net_admin = eff & (1 << cap::NET_ADMIN) != 0 || eff & (1 << cap::SYS_ADMIN) != 0;
    if missing.is_empty() {
        let mut held: Vec<&str> = [
            cap::BPF,
            cap::PERFMON,
            cap::SYS_PTRACE,
            cap::DAC_READ_SEARCH,
        ]
        .into_iter()
        .filter(|c| eff & (1 << c) != 0)
        .map(cap::name)
        .collect();
        if eff & (1 << cap::SYS_ADMIN) != 0 {
            held.push("CAP_SYS_ADMIN");
        }
        let extra = if net_admin {
            ""
        } else {
            "; no CAP_NET_ADMIN: no traceparent injection"
        };
        c.found(format!("CapEff={eff:016x}: {}{extra}", held.join(" ")))
    } else {
        let names: Vec<&str> = missing.iter().map(|c| cap::name(*c)).collect();
        c.missing(
            format!("{} not in CapEff={eff:016x}", names.join(", ")),
            "run as root, or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH \
             (`setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep seam`, or the \
             pod's securityContext.capabilities.add)",
        )
    }
}

fn proc_fs() -> Check {
    let c = Check::new("/proc", Need::Required, "cannot start");
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => {
            let n = text.lines().count();
            c.found(format!("/proc/self/mountinfo: {n} mounts"))
        }
        Err(e) => c.missing(
            format!("/proc/self/mountinfo: {e}"),
            "mount -t proc proc /proc (in a container: share the host's /proc)",
        ),
    }
}

const MOUNT_TRACEFS: &str = "mount -t tracefs nodev /sys/kernel/tracing";

fn tracefs_check(mount: Option<&Path>) -> Check {
    let c = Check::new("tracefs", Need::Required, "cannot start");
    match mount {
        Some(m) => c.found(m.display().to_string()),
        // Said once, by the /proc row, rather than as a wrong fix here.
        None if std::fs::metadata("/proc/self/mountinfo").is_err() => {
            c.unknown("/proc/self/mountinfo cannot be read")
        }
        None => c.missing(
            "no tracefs (or debugfs/tracing) in /proc/self/mountinfo",
            MOUNT_TRACEFS,
        ),
    }
}

fn tracepoints(
    mount: Option<&Path>,
    category: &str,
    name: &'static str,
    without: &'static str,
) -> Check {
    let c = Check::new(name, Need::Required, without);
    let Some(mount) = mount else {
        return c.unknown("tracefs is not mounted");
    };
    let dir = mount.join("events").join(category);
    let mut missing = Vec::new();
    let mut n = 0;
    for (_, cat, event) in crate::capture::probes::TRACEPOINTS {
        if *cat != category {
            continue;
        }
        n += 1;
        match machine::access(&dir.join(event).join("id")) {
            Access::Present => {}
            Access::Absent => missing.push(*event),
            Access::Denied => {
                return c.unknown(format!("{}: permission denied", dir.display()));
            }
        }
    }
    if missing.is_empty() {
        c.found(format!("{n} events in {}", dir.display()))
    } else {
        let fix = if category == "syscalls" {
            "boot a kernel with CONFIG_FTRACE_SYSCALLS=y"
        } else {
            "boot Linux 6.3 or later"
        };
        c.missing(format!("{category}:{}", missing.join(",")), fix)
    }
}

fn ring_buffer() -> Check {
    let c = Check::new("ring buffer map", Need::Required, "cannot start");
    match is_map_supported(MapType::RingBuf) {
        Ok(true) => c.found("BPF_MAP_TYPE_RINGBUF created"),
        Ok(false) => c.missing("BPF_MAP_TYPE_RINGBUF refused", "boot Linux 6.3 or later"),
        Err(e) => c.unknown(format!("cannot probe: {}", chain(&e))),
    }
}

fn uprobes(tracefs: Option<&Path>) -> Check {
    let mut c = Check::new("uprobes", Need::Optional, "TLS plaintext (OpenSSL, Go)");
    c.feature = Some(Feature::Uprobes);
    let events = tracefs
        .map(|t| t.join("uprobe_events"))
        .filter(|p| machine::access(p) == Access::Present);
    match machine::pmu_type("uprobe") {
        Ok(pmu) => c.found(match events {
            Some(e) => format!("PMU type {pmu}; {}", e.display()),
            None => format!("PMU type {pmu}"),
        }),
        Err(e) => c.missing(e, "boot a kernel built with CONFIG_UPROBE_EVENTS=y"),
    }
}

fn program(
    c: Check,
    kind: ProgramType,
    label: &str,
    fix: &str,
    extra: Option<(MapType, &str)>,
) -> Check {
    match is_program_supported(kind) {
        Ok(true) => match extra {
            Some((map, map_label)) => match is_map_supported(map) {
                Ok(true) => c.found(format!("{label} program loaded; {map_label} created")),
                Ok(false) => c.missing(format!("{map_label} refused"), fix),
                Err(e) => c.unknown(format!("cannot probe {map_label}: {}", chain(&e))),
            },
            None => c.found(format!("{label} program loaded")),
        },
        Ok(false) => c.missing(format!("{label} programs refused"), fix),
        Err(e) => c.unknown(format!("cannot probe: {}", chain(&e))),
    }
}

fn sk_msg() -> Check {
    let mut c = Check::new("sk_msg", Need::Optional, "traceparent injection");
    c.feature = Some(Feature::SkMsg);
    program(
        c,
        ProgramType::SkMsg,
        "BPF_PROG_TYPE_SK_MSG",
        "boot a kernel with CONFIG_BPF_STREAM_PARSER=y",
        Some((MapType::SockHash, "BPF_MAP_TYPE_SOCKHASH")),
    )
}

fn sock_ops() -> Check {
    let mut c = Check::new("sock_ops", Need::Optional, "traceparent injection");
    c.feature = Some(Feature::SockOps);
    program(
        c,
        ProgramType::SockOps,
        "BPF_PROG_TYPE_SOCK_OPS",
        "boot a kernel with CONFIG_CGROUP_BPF=y",
        None,
    )
}

fn cgroup2() -> Check {
    let mut c = Check::new(
        "cgroup2",
        Need::Optional,
        "traceparent injection, Kubernetes mode",
    );
    c.feature = Some(Feature::Cgroup2);
    match crate::discover::k8s::find_cgroup2_mount() {
        Some(path) => c.found(path.display().to_string()),
        None => c.missing(
            "no cgroup2 in /proc/self/mountinfo",
            "mount -t cgroup2 none /sys/fs/cgroup (or /sys/fs/cgroup/unified on cgroup v1 hosts)",
        ),
    }
}

fn kprobes(tracefs: Option<&Path>) -> Check {
    let c = Check::new(
        "kprobes",
        Need::NotNeeded,
        "nothing (seam uses tracepoints)",
    );
    let events: Option<PathBuf> = tracefs
        .map(|t| t.join("kprobe_events"))
        .filter(|p| machine::access(p) == Access::Present);
    match (machine::pmu_type("kprobe"), events) {
        (Ok(pmu), Some(e)) => c.found(format!("PMU type {pmu}; {}", e.display())),
        (Ok(pmu), None) => c.found(format!("PMU type {pmu}")),
        (Err(_), Some(e)) => c.found(e.display().to_string()),
        (Err(_), None) => c.missing("no kprobe PMU, no kprobe_events", "not needed"),
    }
}

fn bpffs() -> Check {
    let c = Check::new("bpffs", Need::NotNeeded, "nothing (seam pins nothing)");
    match mounts::find("bpf") {
        Some(p) => c.found(p.display().to_string()),
        None => c.missing("no bpf file system in /proc/self/mountinfo", "not needed"),
    }
}

fn lockdown() -> Check {
    let c = Check::new(
        "lockdown",
        Need::Required,
        "cannot start if `confidentiality`",
    );
    let path = "/sys/kernel/security/lockdown";
    match std::fs::read_to_string(path) {
        Ok(text) => match machine::parse_lockdown(&text) {
            Some("confidentiality") => c.missing(
                "confidentiality",
                "boot with lockdown=integrity or lockdown=none",
            ),
            // `integrity` refuses only bpf_probe_write_user, which seam
            // does not use.
            Some(mode) => c.found(format!("{mode} ({path})")),
            None => c.unknown(format!("{path}: cannot parse {:?}", text.trim())),
        },
        Err(_) if mounts::find("securityfs").is_none() => {
            let mut c = c.unknown("securityfs is not mounted");
            c.fix = "to see it: mount -t securityfs securityfs /sys/kernel/security".into();
            c
        }
        Err(_) => c.found(format!(
            "none (no {path}: the lockdown LSM is not built in)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &'static str, status: Status, need: Need, feature: Option<Feature>) -> Check {
        let mut c = Check::new(name, need, "x");
        c.status = status;
        c.detail = "d".into();
        c.fix = "f".into();
        c.feature = feature;
        c
    }

    #[test]
    fn only_missing_required_rows_are_fatal() {
        let report = Report {
            checks: vec![
                row("BTF", Status::Found, Need::Required, None),
                row("tracefs", Status::Missing, Need::Required, None),
                row(
                    "uprobes",
                    Status::Missing,
                    Need::Optional,
                    Some(Feature::Uprobes),
                ),
                row(
                    "sk_msg",
                    Status::Disabled,
                    Need::Optional,
                    Some(Feature::SkMsg),
                ),
                row(
                    "sock_ops",
                    Status::Unknown,
                    Need::Optional,
                    Some(Feature::SockOps),
                ),
                row("kprobes", Status::Missing, Need::NotNeeded, None),
            ],
        };
        assert!(!report.can_run());
        assert_eq!(
            report.fatal_message().unwrap(),
            "cannot start: tracefs missing (d); fix: f"
        );
        assert!(report.usable(Feature::Uprobes).is_err());
        assert_eq!(report.usable(Feature::SkMsg), Err("d".to_string()));
        assert!(report.usable(Feature::SockOps).is_ok());
        assert!(report.usable(Feature::Cgroup2).is_ok());
    }
}
