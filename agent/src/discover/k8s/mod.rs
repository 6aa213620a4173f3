//! Kubernetes discovery: which containers on this node are traced, their
//! cgroup v2 ids (what the kernel probes filter on) and their resource
//! attributes.
//!
//! Pods opt in with the label `seam.dev/trace: "enabled"`, or by living in a
//! namespace that carries it; a pod labelled `"disabled"` stays out even
//! then. An optional label selector narrows the set further. [`run`] watches
//! this node's pods (field selector `spec.nodeName`), every namespace's
//! metadata, and reads the few ReplicaSets and Jobs that own traced pods, and
//! sends [`K8sUpdate`]s as the traced set changes. Watch failures are retried
//! with backoff and an expired watch (410 Gone) relists; a relist is diffed
//! against what was already reported, so nothing is untraced that still
//! qualifies.
pub mod cgroup;
pub mod meta;
mod owners;
pub mod pod;
pub mod selector;
pub mod tracker;
mod watch;

use std::{path::PathBuf, sync::Arc};

pub use cgroup::{CgroupLocator, ContainerId, cgroup2_mount, find_cgroup2_mount};
pub use meta::{ContainerKind, ContainerMeta, Workload};
pub use selector::{LabelSelector, SelectorError};
pub use watch::run;

/// Default opt-in label key.
pub const DEFAULT_LABEL_KEY: &str = "seam.dev/trace";

/// A change to the set of traced cgroups.
#[derive(Clone, Debug, PartialEq)]
pub enum K8sUpdate {
    /// Trace this cgroup, with these attributes. Sent again for a cgroup
    /// already traced when its metadata changed (replace, don't add).
    Trace {
        cgroup_id: u64,
        meta: Arc<ContainerMeta>,
    },
    /// Stop tracing this cgroup.
    Untrace { cgroup_id: u64 },
}

/// Where the API server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// The pod's service account (KUBERNETES_SERVICE_HOST/PORT, token, CA).
    InCluster,
    /// A kubeconfig (KUBECONFIG, ~/.kube/config), else in-cluster: for
    /// running seam on a node outside a pod.
    Kubeconfig,
    /// A plain URL without credentials (tests, `kubectl proxy`).
    Url(String),
}

#[derive(Clone, Debug)]
pub struct K8sConfig {
    /// This node's name (`spec.nodeName` of its pods), from NODE_NAME.
    pub node_name: String,
    /// The opt-in label key.
    pub label_key: String,
    /// Extra label selector the pods must match as well.
    pub label_selector: Option<String>,
    /// Mount point of the cgroup2 hierarchy whose directories' inodes are
    /// the ids the probes see.
    pub cgroup2_root: PathBuf,
    pub api: ApiSource,
}

impl K8sConfig {
    /// In-cluster defaults: NODE_NAME from `get_env`, the cgroup2 mount from
    /// /proc/self/mountinfo, the default label key, no selector.
    pub fn from_env(get_env: &dyn Fn(&str) -> Option<String>) -> Result<Self, K8sError> {
        let node_name = get_env("NODE_NAME")
            .filter(|n| !n.trim().is_empty())
            .ok_or(K8sError::NoNodeName)?;
        Ok(Self {
            node_name,
            label_key: DEFAULT_LABEL_KEY.to_string(),
            label_selector: None,
            cgroup2_root: find_cgroup2_mount().ok_or(K8sError::NoCgroup2)?,
            api: ApiSource::InCluster,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "NODE_NAME is not set; set it from the downward API (fieldRef: spec.nodeName) \
         so seam watches only this node's pods"
    )]
    NoNodeName,
    #[error(
        "no cgroup2 mount in /proc/self/mountinfo; Kubernetes tracing needs the cgroup v2 \
         hierarchy (unified or hybrid) mounted, e.g. the host's /sys/fs/cgroup"
    )]
    NoCgroup2,
    #[error("cgroup2 root {path}: {source}")]
    Cgroup2Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("label key {key:?}: {reason}")]
    LabelKey { key: String, reason: String },
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("Kubernetes configuration: {0}")]
    Kubeconfig(#[source] kube::config::InferConfigError),
    #[error("Kubernetes API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}
