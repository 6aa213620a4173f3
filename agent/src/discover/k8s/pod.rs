//! The little of a Pod that seam keeps: the node's pods are held in memory
//! for as long as they exist, so only what decides tracing and names the
//! containers is copied out of the API object.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::{
    cgroup::ContainerId,
    meta::{APP_NAME_LABEL, APP_VERSION_LABEL, ContainerKind, SERVICE_NAME_ANNOTATION},
};

/// The pod's controller (its owner reference with `controller: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// A container the kubelet reports as running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub name: String,
    pub kind: ContainerKind,
    pub id: ContainerId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub service_name_annotation: Option<String>,
    pub owner: Option<Owner>,
    pub containers: Vec<RunningContainer>,
}

impl PodInfo {
    /// `None` for a pod without a uid or name (not a real API object).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let owner = meta.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .map(|r| Owner {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                })
        });
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            for (statuses, kind) in [
                (&status.init_container_statuses, ContainerKind::Init),
                (&status.container_statuses, ContainerKind::Regular),
                (
                    &status.ephemeral_container_statuses,
                    ContainerKind::Ephemeral,
                ),
            ] {
                for s in statuses.iter().flatten() {
                    if let Some(c) = running(s, kind) {
                        containers.push(c);
                    }
                }
            }
        }
        Some(Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            service_name_annotation: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(SERVICE_NAME_ANNOTATION).cloned()),
            owner,
            containers,
        })
    }

    pub fn app_name(&self) -> Option<&str> {
        self.labels.get(APP_NAME_LABEL).map(String::as_str)
    }

    pub fn app_version(&self) -> Option<&str> {
        self.labels.get(APP_VERSION_LABEL).map(String::as_str)
    }
}

fn running(s: &ContainerStatus, kind: ContainerKind) -> Option<RunningContainer> {
    s.state.as_ref()?.running.as_ref()?;
    Some(RunningContainer {
        name: s.name.clone(),
        kind,
        id: ContainerId::parse(s.container_id.as_deref()?)?,
    })
}
