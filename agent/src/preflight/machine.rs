//! Facts about this machine, each found by asking the kernel (reading its
//! files, creating a map, loading a trivial program), never inferred from
//! the version number alone. The parsers are separate so they can be tested
//! with other machines' text.
use std::{
    fs,
    io::{ErrorKind, Read as _},
    path::{Path, PathBuf},
};

/// Capability numbers from linux/capability.h.
pub mod cap {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const NET_ADMIN: u32 = 12;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;

    pub fn name(cap: u32) -> &'static str {
        match cap {
            DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
            NET_ADMIN => "CAP_NET_ADMIN",
            SYS_PTRACE => "CAP_SYS_PTRACE",
            SYS_ADMIN => "CAP_SYS_ADMIN",
            PERFMON => "CAP_PERFMON",
            BPF => "CAP_BPF",
            _ => "CAP_?",
        }
    }
}

/// The effective capability set from `/proc/self/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let hex = l.strip_prefix("CapEff:")?.trim();
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Capabilities the agent needs that `cap_eff` lacks. CAP_SYS_ADMIN stands
/// in for CAP_BPF and CAP_PERFMON, as it does in the kernel.
pub fn missing_caps(cap_eff: u64) -> Vec<u32> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    let admin = has(cap::SYS_ADMIN);
    let mut missing = Vec::new();
    for c in [cap::BPF, cap::PERFMON] {
        if !has(c) && !admin {
            missing.push(c);
        }
    }
    for c in [cap::SYS_PTRACE, cap::DAC_READ_SEARCH] {
        if !has(c) {
            missing.push(c);
        }
    }
    missing
}

/// `major.minor` of a kernel release such as `6.18.44-fc-v445`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release string (uname -r).
pub fn kernel_release() -> Option<String> {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// The selected lockdown mode in `none [integrity] confidentiality`.
pub fn parse_lockdown(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// What reading a file or directory told us.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Present,
    Absent,
    /// It may exist, but this user may not look.
    Denied,
}

pub fn access(path: &Path) -> Access {
    match fs::metadata(path) {
        Ok(_) => Access::Present,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Access::Denied,
        Err(_) => Access::Absent,
    }
}

/// Whether `/sys/kernel/btf/vmlinux` starts with the BTF magic; its size.
pub fn btf(path: &Path) -> Result<u64, String> {
    let mut file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if u16::from_le_bytes(magic) != 0xeb9f {
        return Err(format!("{} is not BTF (bad magic)", path.display()));
    }
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

/// The PMU type number perf_event_open needs for dynamic `kind` probes
/// (`kprobe`, `uprobe`), as attaching reads it.
pub fn pmu_type(kind: &str) -> Result<u32, String> {
    let path = PathBuf::from(format!("/sys/bus/event_source/devices/{kind}/type"));
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a number", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let status = "Name:\tseam\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let eff = parse_cap_eff(status).unwrap();
        assert!(missing_caps(eff).is_empty());
        assert_eq!(
            missing_caps(0),
            vec![
                cap::BPF,
                cap::PERFMON,
                cap::SYS_PTRACE,
                cap::DAC_READ_SEARCH
            ]
        );
        // CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON, not the others.
        assert_eq!(
            missing_caps(1 << cap::SYS_ADMIN),
            vec![cap::SYS_PTRACE, cap::DAC_READ_SEARCH]
        );
        let exact = (1 << cap::BPF)
            | (1 << cap::PERFMON)
            | (1 << cap::SYS_PTRACE)
            | (1 << cap::DAC_READ_SEARCH);
        assert!(missing_caps(exact).is_empty());
    }

    #[test]
    fn releases_and_lockdown() {
        assert_eq!(parse_release("6.18.44-fc-v445"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.3"), Some((6, 3)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(parse_lockdown(""), None);
    }
}
