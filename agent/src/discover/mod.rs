//! What seam learns from /proc: processes (service names, resources) and
//! sockets that predate the agent.
pub mod k8s;
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

/// Parent pid from `/proc/PID/stat` (the field after the parenthesised comm,
/// which may itself contain spaces and parentheses).
pub fn parent_pid(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every living descendant of `roots` (not the roots themselves).
pub fn descendants(proc_root: &Path, roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids(proc_root)
        .into_iter()
        .filter_map(|pid| Some((pid, parent_pid(proc_root, pid)?)))
        .collect();
    let mut found: Vec<u32> = Vec::new();
    let mut frontier: Vec<u32> = roots.to_vec();
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parents {
            if *parent == p && !found.contains(child) && !roots.contains(child) {
                found.push(*child);
                frontier.push(*child);
            }
        }
    }
    found
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

    #[test]
    fn finds_children_and_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = descendants(Path::new("/proc"), &[me]);
            if found.len() >= 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(found.contains(&child.id()), "{found:?}");
        let grandchild = found
            .iter()
            .find(|p| parent_pid(Path::new("/proc"), **p) == Some(child.id()));
        assert!(grandchild.is_some(), "{found:?}");
        assert_eq!(parent_pid(Path::new("/proc"), child.id()), Some(me));
        let _ = child.kill();
        let _ = child.wait();
        if let Some(g) = grandchild {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(*g as i32, libc::SIGKILL) };
        }
    }
}
