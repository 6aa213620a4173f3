//! A ReplicaSet's Deployment and a Job's CronJob, read on demand.
//!
//! Only the owners of traced pods on this node are read (one metadata-only
//! GET each, cached while a pod refers to it), instead of every node
//! watching every ReplicaSet in the cluster. When the read fails (no RBAC,
//! gone, time-out) the name is derived from Kubernetes' naming scheme.
use std::time::Duration;

use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job};
use kube::{Api, Client};

use super::tracker::{OwnerKey, ParentLookup, cronjob_from_name, deployment_from_name};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller of `key`: a Deployment's name for a ReplicaSet, a
/// CronJob's for a Job; `None` when it has none.
pub async fn lookup(client: Client, key: &OwnerKey, hint: Option<&str>) -> Option<String> {
    let ns = key.namespace.as_str();
    let want = match key.kind {
        ParentLookup::ReplicaSet => "Deployment",
        ParentLookup::Job => "CronJob",
    };
    let read = async {
        match key.kind {
            ParentLookup::ReplicaSet => Api::<ReplicaSet>::namespaced(client, ns)
                .get_metadata(&key.name)
                .await
                .map(|m| m.metadata),
            ParentLookup::Job => Api::<Job>::namespaced(client, ns)
                .get_metadata(&key.name)
                .await
                .map(|m| m.metadata),
        }
    };
    let fallback = || match key.kind {
        ParentLookup::ReplicaSet => deployment_from_name(&key.name, hint),
        ParentLookup::Job => cronjob_from_name(&key.name),
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
        Ok(Ok(meta)) => meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.controller == Some(true) && r.kind == want)
            .map(|r| r.name),
        Ok(Err(e)) => {
            let parent = fallback();
            tracing::warn!(
                "reading {:?} {}/{}: {e}; using {parent:?} from its name",
                key.kind,
                key.namespace,
                key.name
            );
            parent
        }
        Err(_) => {
            let parent = fallback();
            tracing::warn!(
                "reading {:?} {}/{} timed out; using {parent:?} from its name",
                key.kind,
                key.namespace,
                key.name
            );
            parent
        }
    }
}
