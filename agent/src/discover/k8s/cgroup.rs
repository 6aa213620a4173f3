//! From a container id to the cgroup v2 ids the kernel probes filter on.
//!
//! `bpf_get_current_cgroup_id()` is the inode number of the task's cgroup
//! directory in the cgroup2 hierarchy, so a container's id is found by
//! locating its directory under the cgroup2 mount and taking its inode. The
//! directory is named by the kubelet's cgroup driver and the runtime:
//!
//! | driver  | pod directory                                                           | container directory                                   |
//! |---------|-------------------------------------------------------------------------|-------------------------------------------------------|
//! | systemd | `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice`    | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//! | cgroupfs| `kubepods/<qos>/pod<uid>`                                               | `<id>` (containerd, docker), `crio-<id>` (CRI-O)      |
//!
//! Guaranteed pods have no QoS level (`kubepods.slice/kubepods-pod<uid_>.slice`,
//! `kubepods/pod<uid>`). The QoS class is not trusted: every candidate is
//! tried, and when none exists (a kubelet `--cgroup-root`, kind's nesting) a
//! bounded breadth-first scan looks for a directory named after the id.
use std::{
    collections::VecDeque,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Directories the fallback scan reads before giving up.
pub const SCAN_MAX_DIRS: usize = 20_000;
/// Depth below the cgroup2 root the fallback scan descends to.
pub const SCAN_MAX_DEPTH: usize = 8;
/// Cgroups below a container's own directory that are traced with it (a
/// container that makes its own sub-cgroups, e.g. one running systemd).
pub const MAX_NESTED: usize = 64;

/// `status.containerStatuses[].containerID`, split into runtime and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerId {
    /// `containerd`, `cri-o`, `docker`, ... as the kubelet reports it.
    pub runtime: String,
    /// The runtime's id (64 hex digits for the common runtimes).
    pub id: String,
}

impl ContainerId {
    /// Parses `containerd://<id>`; `None` for an empty or malformed value.
    /// The id must be path-safe since it names a directory.
    pub fn parse(raw: &str) -> Option<Self> {
        let (runtime, id) = raw.split_once("://")?;
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (ok && !runtime.is_empty()).then(|| Self {
            runtime: runtime.to_string(),
            id: id.to_string(),
        })
    }

    /// Container directory names, the reported runtime's first.
    fn dir_names(&self) -> Vec<String> {
        let id = &self.id;
        let mut names = match self.runtime.as_str() {
            "containerd" => vec![format!("cri-containerd-{id}.scope"), id.clone()],
            "cri-o" => vec![format!("crio-{id}.scope"), format!("crio-{id}")],
            "docker" => vec![format!("docker-{id}.scope"), id.clone()],
            _ => vec![],
        };
        for n in [
            format!("cri-containerd-{id}.scope"),
            format!("crio-{id}.scope"),
            format!("docker-{id}.scope"),
            format!("crio-{id}"),
            id.clone(),
        ] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

/// The cgroup2 mount to use from `/proc/self/mountinfo` text.
///
/// In a pod, the runtime mounts a namespaced cgroup2 view at /sys/fs/cgroup
/// and the DaemonSet's hostPath mount of the host's /sys/fs/cgroup may lie
/// over it (or sit elsewhere). Among cgroup2 mounts, the visible one at each
/// mount point is the last listed; of those, the one whose root reaches
/// furthest up (`/../..` is shown for a root outside our cgroup namespace)
/// sees the host's whole hierarchy; ties go to the last listed.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let mut fields = left.split(' ');
        let (Some(root), Some(point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        mounts.retain(|(_, p)| *p != point);
        mounts.push((unescape(root), point));
    }
    let reach = |root: &str| root.split('/').filter(|c| *c == "..").count();
    let mut best: Option<&(String, PathBuf)> = None;
    for m in &mounts {
        if best.is_none_or(|b| reach(&m.0) >= reach(&b.0)) {
            best = Some(m);
        }
    }
    best.map(|(_, p)| p.clone())
}

/// The cgroup2 mount of this process, from `/proc/self/mountinfo`.
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'))).ok()
            });
        if b[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup id of a cgroup2 directory: its inode number.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// Finds containers' cgroup directories under one cgroup2 root.
#[derive(Clone, Debug)]
pub struct CgroupLocator {
    root: PathBuf,
    max_scan_dirs: usize,
}

impl CgroupLocator {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_scan_dirs: SCAN_MAX_DIRS,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pod directories the kubelet may have made, relative to the root.
    pub fn pod_dir_candidates(pod_uid: &str) -> Vec<PathBuf> {
        let underscored = pod_uid.replace('-', "_");
        let mut dirs = Vec::new();
        for qos in ["burstable", "besteffort"] {
            dirs.push(
                PathBuf::from("kubepods.slice")
                    .join(format!("kubepods-{qos}.slice"))
                    .join(format!("kubepods-{qos}-pod{underscored}.slice")),
            );
        }
        dirs.push(PathBuf::from("kubepods.slice").join(format!("kubepods-pod{underscored}.slice")));
        for qos in ["burstable", "besteffort"] {
            dirs.push(
                PathBuf::from("kubepods")
                    .join(qos)
                    .join(format!("pod{pod_uid}")),
            );
        }
        dirs.push(PathBuf::from("kubepods").join(format!("pod{pod_uid}")));
        dirs
    }

    /// Every path tried before the scan, relative to the root.
    pub fn candidates(pod_uid: &str, container: &ContainerId) -> Vec<PathBuf> {
        let names = container.dir_names();
        Self::pod_dir_candidates(pod_uid)
            .into_iter()
            .flat_map(|pod| names.iter().map(move |n| pod.join(n)))
            .collect()
    }

    /// The container's cgroup directory: a known layout, else the scan.
    pub fn locate(&self, pod_uid: &str, container: &ContainerId) -> Option<PathBuf> {
        let names = container.dir_names();
        for pod in Self::pod_dir_candidates(pod_uid) {
            let pod = self.root.join(pod);
            if !pod.is_dir() {
                continue;
            }
            for n in &names {
                let dir = pod.join(n);
                if dir.is_dir() {
                    return Some(dir);
                }
            }
        }
        self.scan(container)
    }

    /// Breadth-first search for a directory named after the container, with
    /// `kubepods` subtrees first; bounded in directories read and depth.
    fn scan(&self, container: &ContainerId) -> Option<PathBuf> {
        let names = container.dir_names();
        let mut queue: VecDeque<(PathBuf, usize)> = VecDeque::from([(self.root.clone(), 0)]);
        let mut read = 0;
        let mut fuzzy: Option<PathBuf> = None;
        while let Some((dir, depth)) = queue.pop_front() {
            if read >= self.max_scan_dirs {
                break;
            }
            read += 1;
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if names.iter().any(|n| *n == name) {
                    return Some(entry.path());
                }
                // `crio-conmon-<id>.scope` holds CRI-O's monitor, not the container.
                if fuzzy.is_none() && name.contains(&container.id) && !name.contains("conmon") {
                    fuzzy = Some(entry.path());
                }
                if depth + 1 < SCAN_MAX_DEPTH {
                    if name.contains("kubepods") {
                        queue.push_front((entry.path(), depth + 1));
                    } else {
                        queue.push_back((entry.path(), depth + 1));
                    }
                }
            }
        }
        fuzzy
    }
}

/// Cgroup ids of `dir` and of the directories below it (at most
/// [`MAX_NESTED`] of those), `dir`'s first.
pub fn subtree_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = vec![cgroup_id(dir)?];
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if ids.len() > MAX_NESTED {
                return Ok(ids);
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Ok(id) = cgroup_id(&entry.path()) {
                    ids.push(id);
                }
                if depth < 4 {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn container_ids() {
        let c = ContainerId::parse(&format!("containerd://{HEX}")).unwrap();
        assert_eq!((c.runtime.as_str(), c.id.as_str()), ("containerd", HEX));
        assert_eq!(
            ContainerId::parse("cri-o://abc").unwrap().runtime,
            "cri-o".to_string()
        );
        assert!(ContainerId::parse("").is_none());
        assert!(ContainerId::parse("containerd://").is_none());
        assert!(ContainerId::parse("docker://../../etc").is_none());
        assert!(ContainerId::parse("no-scheme").is_none());
    }

    #[test]
    fn candidate_layouts() {
        let c = ContainerId::parse(&format!("cri-o://{HEX}")).unwrap();
        let uid = "1a2b3c4d-0000-1111-2222-333344445555";
        let all: Vec<String> = CgroupLocator::candidates(uid, &c)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            all[0],
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_0000_1111_2222_333344445555.slice/crio-{HEX}.scope"
            )
        );
        for want in [
            format!(
                "kubepods.slice/kubepods-pod1a2b3c4d_0000_1111_2222_333344445555.slice/crio-{HEX}.scope"
            ),
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice/cri-containerd-{HEX}.scope"
            ),
            format!("kubepods/burstable/pod{uid}/{HEX}"),
            format!("kubepods/besteffort/pod{uid}/crio-{HEX}"),
            format!("kubepods/pod{uid}/docker-{HEX}.scope"),
        ] {
            assert!(all.contains(&want), "missing {want}");
        }
    }

    #[test]
    fn mount_choice() {
        // Host view: the hybrid layout of this very machine.
        let host = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount(host), Some("/sys/fs/cgroup/unified".into()));
        // In a pod: the runtime's namespaced mount, then the hostPath mount over it.
        let shadowed = "\
600 590 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
610 600 0:30 /../../.. /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount(shadowed), Some("/sys/fs/cgroup".into()));
        // The host's hierarchy at its own path wins over the namespaced view.
        let beside = "\
600 590 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
611 590 0:30 /../../.. /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount(beside), Some("/host/sys/fs/cgroup".into()));
        let escaped = "1 0 0:1 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(escaped), Some("/mnt/cg two".into()));
        assert_eq!(cgroup2_mount("1 0 0:1 / /x rw - tmpfs t rw\n"), None);
    }
}
