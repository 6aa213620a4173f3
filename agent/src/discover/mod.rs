//! What seam learns from /proc: processes (service names, resources) and
//! sockets that predate the agent.
pub mod mounts;
pub mod process;
pub mod sockets;

use std::{fs, path::Path};

/// Names a process answers to for `--exe-name`: its `comm`, its executable's
/// file name, and the file names of its first two arguments (interpreter and
/// script: `python3 app.py`, `/usr/local/bin/gunicorn`).
pub fn process_names(proc_root: &Path, pid: u32) -> Vec<String> {
    let dir = proc_root.join(pid.to_string());
    let mut names = Vec::new();
    if let Ok(comm) = fs::read_to_string(dir.join("comm")) {
        names.push(comm.trim_end().to_string());
    }
    if let Ok(exe) = fs::read_link(dir.join("exe"))
        && let Some(name) = exe.file_name()
    {
        names.push(name.to_string_lossy().to_string());
    }
    if let Ok(raw) = fs::read(dir.join("cmdline")) {
        for arg in raw.split(|b| *b == 0).filter(|a| !a.is_empty()).take(2) {
            let arg = String::from_utf8_lossy(arg);
            names.push(arg.rsplit('/').next().unwrap_or(&arg).to_string());
        }
    }
    names.dedup();
    names
}

/// Every pid under `proc_root`.
pub fn all_pids(proc_root: &Path) -> Vec<u32> {
    fs::read_dir(proc_root)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids whose [`process_names`] include one of `names`.
pub fn pids_named(proc_root: &Path, names: &[String]) -> Vec<u32> {
    all_pids(proc_root)
        .into_iter()
        .filter(|pid| {
            process_names(proc_root, *pid)
                .iter()
                .any(|n| names.iter().any(|want| want == n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_binary_by_name() {
        let me = std::process::id();
        let names = process_names(Path::new("/proc"), me);
        assert!(!names.is_empty());
        let found = pids_named(Path::new("/proc"), &names[..1]);
        assert!(found.contains(&me));
        assert!(pids_named(Path::new("/proc"), &["no-such-program-xyz".into()]).is_empty());
    }
}
