//! What seam knows about a traced container, as OpenTelemetry resource
//! attributes (semantic conventions `k8s.*`, `container.*`, `service.*`).
use crate::span::{Attributes, Resource};

/// Pod annotation naming the service (OpenTelemetry's convention).
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// Well-known label naming the application.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Well-known label carrying the application's version.
pub const APP_VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The workload controllers a pod belongs to, from its owner references
/// (a ReplicaSet's Deployment and a Job's CronJob are looked up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub deployment: Option<String>,
    pub replicaset: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

impl Workload {
    /// The top-level workload's name, for the service name: the controller a
    /// person manages (Deployment over ReplicaSet, CronJob over Job).
    pub fn name(&self) -> Option<&str> {
        [
            &self.deployment,
            &self.replicaset,
            &self.statefulset,
            &self.daemonset,
            &self.cronjob,
            &self.job,
        ]
        .into_iter()
        .find_map(|n| n.as_deref())
    }
}

/// Which kind of container in the pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

/// One traced container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    pub container_kind: ContainerKind,
    /// The runtime's id, without the `containerd://` prefix.
    pub container_id: String,
    /// `containerd`, `cri-o`, `docker`, ...
    pub container_runtime: String,
    pub node_name: String,
    pub workload: Workload,
    /// The service name from Kubernetes metadata. The agent puts a name from
    /// the process environment (`OTEL_SERVICE_NAME`, `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) before this one.
    pub service_name: String,
    /// The pod's `app.kubernetes.io/version` label, if any.
    pub service_version: Option<String>,
}

impl ContainerMeta {
    /// Resource attributes for spans from this container.
    pub fn resource_attributes(&self) -> Attributes {
        let mut a = Attributes::default();
        a.set("service.name", self.service_name.as_str());
        a.set("service.namespace", self.namespace.as_str());
        if let Some(v) = &self.service_version {
            a.set("service.version", v.as_str());
        }
        a.set("k8s.namespace.name", self.namespace.as_str());
        a.set("k8s.pod.name", self.pod_name.as_str());
        a.set("k8s.pod.uid", self.pod_uid.as_str());
        a.set("k8s.container.name", self.container_name.as_str());
        a.set("k8s.node.name", self.node_name.as_str());
        let w = &self.workload;
        for (key, value) in [
            ("k8s.deployment.name", &w.deployment),
            ("k8s.replicaset.name", &w.replicaset),
            ("k8s.statefulset.name", &w.statefulset),
            ("k8s.daemonset.name", &w.daemonset),
            ("k8s.job.name", &w.job),
            ("k8s.cronjob.name", &w.cronjob),
        ] {
            if let Some(v) = value {
                a.set(key, v.as_str());
            }
        }
        a.set("container.id", self.container_id.as_str());
        a.set("container.runtime.name", self.container_runtime.as_str());
        a
    }

    pub fn resource(&self) -> Resource {
        Resource {
            attributes: self.resource_attributes(),
        }
    }
}

/// The service name from Kubernetes metadata, by precedence: the
/// `resource.opentelemetry.io/service.name` annotation, the
/// `app.kubernetes.io/name` label, the workload's name, the container's name.
/// (The process environment goes before all of these; the agent applies it.)
pub fn service_name(
    annotation: Option<&str>,
    app_name_label: Option<&str>,
    workload: &Workload,
    container_name: &str,
) -> String {
    [annotation, app_name_label, workload.name()]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or(container_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    #[test]
    fn service_name_precedence() {
        let w = Workload {
            deployment: Some("checkout".into()),
            replicaset: Some("checkout-7d9f".into()),
            ..Default::default()
        };
        assert_eq!(service_name(Some("svc"), Some("app"), &w, "c"), "svc");
        assert_eq!(service_name(None, Some("app"), &w, "c"), "app");
        assert_eq!(service_name(Some(""), None, &w, "c"), "checkout");
        assert_eq!(service_name(None, None, &Workload::default(), "c"), "c");
        let cron = Workload {
            job: Some("report-29000000".into()),
            cronjob: Some("report".into()),
            ..Default::default()
        };
        assert_eq!(service_name(None, None, &cron, "c"), "report");
        let bare_rs = Workload {
            replicaset: Some("rs".into()),
            ..Default::default()
        };
        assert_eq!(service_name(None, None, &bare_rs, "c"), "rs");
    }

    #[test]
    fn attributes() {
        let m = ContainerMeta {
            namespace: "shop".into(),
            pod_name: "web-1".into(),
            pod_uid: "u-1".into(),
            container_name: "app".into(),
            container_kind: ContainerKind::Regular,
            container_id: "abc".into(),
            container_runtime: "containerd".into(),
            node_name: "node-a".into(),
            workload: Workload {
                statefulset: Some("web".into()),
                ..Default::default()
            },
            service_name: "web".into(),
            service_version: Some("1.2".into()),
        };
        let a = m.resource_attributes();
        let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(s("service.name").as_deref(), Some("web"));
        assert_eq!(s("service.namespace").as_deref(), Some("shop"));
        assert_eq!(s("service.version").as_deref(), Some("1.2"));
        assert_eq!(s("k8s.statefulset.name").as_deref(), Some("web"));
        assert_eq!(s("k8s.pod.uid").as_deref(), Some("u-1"));
        assert_eq!(s("k8s.node.name").as_deref(), Some("node-a"));
        assert_eq!(s("container.id").as_deref(), Some("abc"));
        assert_eq!(s("k8s.deployment.name"), None);
        assert_eq!(m.resource().service_name(), "web");
    }
}
