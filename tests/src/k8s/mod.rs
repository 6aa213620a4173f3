//! Kubernetes for tests without a cluster: a fake API server speaking the
//! real list/watch protocol, realistic object fixtures, and cgroup directory
//! trees laid out like the kubelet's.
pub mod fake_api;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{Value, json};

pub use fake_api::{FakeApi, Res};

pub const NODE: &str = "node-a";

/// A 64-hex-digit container id, distinct per `n`.
pub fn hex_id(n: u64) -> String {
    format!("{:016x}", 0x5ea0_0000_0000_0000u64 | n).repeat(4)
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

pub fn replicaset(ns: &str, name: &str, deployment: Option<&str>) -> Value {
    let owners: Vec<Value> = deployment
        .map(|d| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": d,
                   "uid": "d0000000-0000-4000-8000-000000000001",
                   "controller": true, "blockOwnerDeletion": true})
        })
        .into_iter()
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owners,
                     "labels": {"pod-template-hash": name.rsplit('-').next().unwrap()}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"replicas": 1, "readyReplicas": 1},
    })
}

pub fn job(ns: &str, name: &str, cronjob: Option<&str>) -> Value {
    let owners: Vec<Value> = cronjob
        .map(|c| {
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": c,
                   "uid": "c0000000-0000-4000-8000-000000000001",
                   "controller": true, "blockOwnerDeletion": true})
        })
        .into_iter()
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owners},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "job", "image": "busybox"}]}}},
        "status": {"active": 1},
    })
}

#[derive(Clone, Debug)]
pub struct Ctr {
    pub name: String,
    pub runtime: String,
    /// Empty while the container has not been created (waiting).
    pub id: String,
    pub running: bool,
}

impl Ctr {
    pub fn new(name: &str, n: u64) -> Self {
        Self {
            name: name.into(),
            runtime: "containerd".into(),
            id: hex_id(n),
            running: true,
        }
    }

    /// Not created yet (`waiting`, no containerID).
    pub fn waiting(name: &str) -> Self {
        Self {
            name: name.into(),
            runtime: "containerd".into(),
            id: String::new(),
            running: false,
        }
    }

    fn status(&self) -> Value {
        if self.id.is_empty() {
            return json!({
                "name": self.name, "image": "nginx:1.27", "imageID": "", "ready": false,
                "started": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {},
            });
        }
        let state = if self.running {
            json!({"running": {"startedAt": "2026-01-01T00:00:05Z"}})
        } else {
            json!({"terminated": {"exitCode": 0, "reason": "Completed",
                   "startedAt": "2026-01-01T00:00:05Z", "finishedAt": "2026-01-01T00:01:00Z",
                   "containerID": format!("{}://{}", self.runtime, self.id)}})
        };
        json!({
            "name": self.name,
            "image": "docker.io/library/nginx:1.27",
            "imageID": "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "containerID": format!("{}://{}", self.runtime, self.id),
            "ready": self.running,
            "started": self.running,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        })
    }
}

/// A Pod as the API server returns it once it runs.
#[derive(Clone, Debug)]
pub struct PodFx {
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub owner: Option<(String, String)>,
    pub containers: Vec<Ctr>,
    pub init: Vec<Ctr>,
    pub ephemeral: Vec<Ctr>,
}

impl PodFx {
    pub fn new(ns: &str, name: &str, n: u64) -> Self {
        Self {
            ns: ns.into(),
            name: name.into(),
            uid: format!("a1b2c3d4-0000-4000-8000-{n:012x}"),
            node: NODE.into(),
            labels: vec![],
            annotations: vec![],
            owner: None,
            containers: vec![Ctr::new("app", n)],
            init: vec![],
            ephemeral: vec![],
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.retain(|(key, _)| key != k);
        self.labels.push((k.into(), v.into()));
        self
    }

    pub fn unlabel(mut self, k: &str) -> Self {
        self.labels.retain(|(key, _)| key != k);
        self
    }

    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.annotations.push((k.into(), v.into()));
        self
    }

    pub fn owned_by(mut self, kind: &str, name: &str) -> Self {
        self.owner = Some((kind.into(), name.into()));
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = node.into();
        self
    }

    pub fn json(&self) -> Value {
        let map = |pairs: &[(String, String)]| -> Value {
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let owners: Vec<Value> = self
            .owner
            .iter()
            .map(|(kind, name)| {
                let api_version = match kind.as_str() {
                    "Job" => "batch/v1",
                    _ => "apps/v1",
                };
                json!({"apiVersion": api_version, "kind": kind, "name": name,
                       "uid": "e0000000-0000-4000-8000-000000000001",
                       "controller": true, "blockOwnerDeletion": true})
            })
            .collect();
        let spec_ctr = |c: &Ctr| json!({"name": c.name, "image": "nginx:1.27", "resources": {}});
        let mut spec = json!({
            "nodeName": self.node,
            "containers": self.containers.iter().map(spec_ctr).collect::<Vec<_>>(),
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "schedulerName": "default-scheduler",
        });
        let mut status = json!({
            "phase": "Running",
            "qosClass": "BestEffort",
            "hostIP": "192.0.2.10",
            "podIP": "198.51.100.7",
            "startTime": "2026-01-01T00:00:01Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": self.containers.iter().map(Ctr::status).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            spec["initContainers"] = self.init.iter().map(spec_ctr).collect();
            status["initContainerStatuses"] = self.init.iter().map(Ctr::status).collect();
        }
        if !self.ephemeral.is_empty() {
            spec["ephemeralContainers"] = self.ephemeral.iter().map(spec_ctr).collect();
            status["ephemeralContainerStatuses"] = self.ephemeral.iter().map(Ctr::status).collect();
        }
        json!({
            "metadata": {
                "name": self.name,
                "namespace": self.ns,
                "uid": self.uid,
                "labels": map(&self.labels),
                "annotations": map(&self.annotations),
                "ownerReferences": owners,
                "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1"}],
            },
            "spec": spec,
            "status": status,
        })
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A directory tree laid out like the kubelet's cgroups (on any file
/// system: the ids are inode numbers either way). Removed on drop.
pub struct CgroupDirs {
    pub root: PathBuf,
    real_cgroup: bool,
}

impl CgroupDirs {
    /// Under the system temporary directory.
    pub fn temp() -> Self {
        let root = std::env::temp_dir().join(format!(
            "seam-k8s-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&root).unwrap();
        Self {
            root,
            real_cgroup: false,
        }
    }

    /// Under the real cgroup2 mount `mount` (needs root).
    pub fn real(mount: &Path, name: &str) -> Self {
        let root = mount.join(format!("seam-test-{}-{name}", std::process::id()));
        if root.exists() {
            remove_tree(&root);
        }
        fs::create_dir(&root).unwrap_or_else(|e| {
            panic!(
                "creating {} failed ({e}); these tests need root and a writable cgroup2 mount",
                root.display()
            )
        });
        Self {
            root,
            real_cgroup: true,
        }
    }

    /// Creates `rel` (and its parents); returns the full path and its inode.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> (PathBuf, u64) {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap();
        let ino = fs::metadata(&p).unwrap().ino();
        (p, ino)
    }

    /// The systemd-driver directory of a containerd container.
    pub fn systemd_containerd(&self, qos: &str, pod_uid: &str, id: &str) -> (PathBuf, u64) {
        let u = pod_uid.replace('-', "_");
        self.mkdir(format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice/cri-containerd-{id}.scope"
        ))
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        if self.real_cgroup {
            remove_tree(&self.root);
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Removes a cgroup tree: rmdir from the leaves up (cgroupfs has no
/// unlinkable files), retrying briefly while exiting tasks leave.
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    eprintln!("warning: could not remove {}", dir.display());
}

/// The cgroup2 mount this process sees (the unified hierarchy on hybrid
/// hosts), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?;
            (right.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .expect("a cgroup2 mount")
}

/// Moves a process (all its threads) into a cgroup directory.
pub fn move_into(dir: &Path, pid: u32) {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
}
