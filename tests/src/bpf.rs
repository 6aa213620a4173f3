//! The machine's BPF objects as `bpftool` lists them, to tell what an agent
//! created and whether it is all gone after the agent stopped.
use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

/// Ids of every loaded program, map and link, every cgroup attachment
/// (`cgroup path|program id|attach type`) and every file under /sys/fs/bpf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfObjects {
    pub progs: BTreeSet<u64>,
    pub maps: BTreeSet<u64>,
    pub links: BTreeSet<u64>,
    pub cgroup_attachments: BTreeSet<String>,
    pub pins: BTreeSet<String>,
}

fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {text}"))
}

fn ids(v: &Value) -> BTreeSet<u64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("id")?.as_u64())
        .collect()
}

fn files(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.insert(path.display().to_string());
        }
    }
}

impl BpfObjects {
    pub fn snapshot() -> BpfObjects {
        let mut cgroup_attachments = BTreeSet::new();
        for group in bpftool(&["cgroup", "tree"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let path = group.get("cgroup").and_then(Value::as_str).unwrap_or("?");
            for p in group
                .get("programs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                cgroup_attachments.insert(format!(
                    "{path}|{}|{}",
                    p.get("id").and_then(Value::as_u64).unwrap_or(0),
                    p.get("attach_type").and_then(Value::as_str).unwrap_or("?")
                ));
            }
        }
        let mut pins = BTreeSet::new();
        files(Path::new("/sys/fs/bpf"), &mut pins);
        BpfObjects {
            progs: ids(&bpftool(&["prog", "show"])),
            maps: ids(&bpftool(&["map", "show"])),
            links: ids(&bpftool(&["link", "show"])),
            cgroup_attachments,
            pins,
        }
    }

    /// What `self` has that `before` had not.
    pub fn minus(&self, before: &BpfObjects) -> BpfObjects {
        BpfObjects {
            progs: self.progs.difference(&before.progs).copied().collect(),
            maps: self.maps.difference(&before.maps).copied().collect(),
            links: self.links.difference(&before.links).copied().collect(),
            cgroup_attachments: self
                .cgroup_attachments
                .difference(&before.cgroup_attachments)
                .cloned()
                .collect(),
            pins: self.pins.difference(&before.pins).cloned().collect(),
        }
    }

    /// What `self` and `other` both have.
    pub fn common(&self, other: &BpfObjects) -> BpfObjects {
        BpfObjects {
            progs: self.progs.intersection(&other.progs).copied().collect(),
            maps: self.maps.intersection(&other.maps).copied().collect(),
            links: self.links.intersection(&other.links).copied().collect(),
            cgroup_attachments: self
                .cgroup_attachments
                .intersection(&other.cgroup_attachments)
                .cloned()
                .collect(),
            pins: self.pins.intersection(&other.pins).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts() == [0; 5]
    }

    /// (programs, maps, links, cgroup attachments, pins).
    pub fn counts(&self) -> [usize; 5] {
        [
            self.progs.len(),
            self.maps.len(),
            self.links.len(),
            self.cgroup_attachments.len(),
            self.pins.len(),
        ]
    }
}

/// Every program attached through a BPF link: (program name, link type),
/// e.g. `("sched_switch", "raw_tracepoint")`, `("exit_read", "perf_event")`.
pub fn linked_programs() -> BTreeSet<(String, String)> {
    let names: std::collections::HashMap<u64, String> = bpftool(&["prog", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get("id")?.as_u64()?, p.get("name")?.as_str()?.to_string())))
        .collect();
    bpftool(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = names.get(&l.get("prog_id")?.as_u64()?)?;
            Some((name.clone(), l.get("type")?.as_str()?.to_string()))
        })
        .collect()
}
