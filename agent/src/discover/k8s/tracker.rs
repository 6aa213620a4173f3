//! The decision core, free of I/O: from the node's pods, the namespaces'
//! opt-in labels, resolved owners and located cgroups to the set of traced
//! cgroups, applied as differences so that a relist changes nothing that did
//! not change.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    K8sUpdate,
    cgroup::ContainerId,
    meta::{ContainerMeta, Workload, service_name},
    pod::PodInfo,
    selector::LabelSelector,
};

/// Label value that opts a pod (or every pod of a namespace) in.
pub const ENABLED: &str = "enabled";
/// Pod label value that opts a pod out, even in an enabled namespace.
pub const DISABLED: &str = "disabled";

/// Who is traced.
#[derive(Clone, Debug)]
pub struct Policy {
    pub label_key: String,
    pub selector: Option<LabelSelector>,
}

impl Policy {
    /// The pod's own label decides; without one, its namespace's; and the
    /// extra selector, when set, must match the pod's labels as well.
    pub fn wants(&self, pod: &PodInfo, namespace_value: Option<&str>) -> bool {
        let opted_in = match pod.labels.get(&self.label_key).map(String::as_str) {
            Some(ENABLED) => true,
            Some(DISABLED) => false,
            _ => namespace_value == Some(ENABLED),
        };
        opted_in
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&pod.labels))
    }
}

/// A controller whose own owner is looked up: a ReplicaSet's Deployment, a
/// Job's CronJob.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    pub namespace: String,
    pub kind: ParentLookup,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParentLookup {
    /// apps/v1 ReplicaSet → Deployment.
    ReplicaSet,
    /// batch/v1 Job → CronJob.
    Job,
}

/// Work for the I/O side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Find the owner's controller; `hint` is the pod's `pod-template-hash`
    /// label, for the name-based fallback.
    Owner { key: OwnerKey, hint: Option<String> },
    /// Find the container's cgroup directory.
    Locate {
        pod_uid: String,
        container: ContainerId,
    },
}

#[derive(Clone, Debug)]
enum OwnerState {
    Pending,
    Resolved(Option<String>),
}

#[derive(Clone, Debug)]
enum CgroupState {
    /// A lookup is under way; `attempts` failed before it.
    Pending {
        attempts: u32,
    },
    Found {
        dir: PathBuf,
        ids: Vec<u64>,
    },
    Missing {
        attempts: u32,
        retry_at: Instant,
    },
}

/// Retry delay after `attempts` failed lookups of a cgroup: 1 s doubling to
/// 2 min. A running container's cgroup exists before the kubelet reports it
/// running, so a miss is an anomaly (a wrong cgroup2 root, an unknown
/// layout) and each retry may scan the hierarchy.
fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1 << attempts.saturating_sub(1).min(7)).min(Duration::from_secs(120))
}

pub struct Tracker {
    policy: Policy,
    node_name: String,
    /// This node's pods, by uid.
    pub pods: HashMap<String, PodInfo>,
    /// Every namespace, by name, with the value of its opt-in label.
    pub namespaces: HashMap<String, Option<String>>,
    owners: HashMap<OwnerKey, OwnerState>,
    cgroups: HashMap<ContainerId, CgroupState>,
    applied: HashMap<u64, Arc<ContainerMeta>>,
}

impl Tracker {
    pub fn new(policy: Policy, node_name: String) -> Self {
        Self {
            policy,
            node_name,
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            owners: HashMap::new(),
            cgroups: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The traced set as last reported.
    pub fn applied(&self) -> &HashMap<u64, Arc<ContainerMeta>> {
        &self.applied
    }

    pub fn owner_resolved(&mut self, key: &OwnerKey, parent: Option<String>) {
        if let Some(state) = self.owners.get_mut(key) {
            *state = OwnerState::Resolved(parent);
        }
    }

    /// The result of a [`Work::Locate`]: the directory and its subtree's ids.
    pub fn cgroup_located(
        &mut self,
        container: &ContainerId,
        found: Option<(PathBuf, Vec<u64>)>,
        now: Instant,
    ) {
        let Some(state) = self.cgroups.get_mut(container) else {
            return;
        };
        let CgroupState::Pending { attempts } = *state else {
            return;
        };
        *state = match found {
            Some((dir, ids)) if !ids.is_empty() => CgroupState::Found { dir, ids },
            _ => CgroupState::Missing {
                attempts: attempts + 1,
                retry_at: now + retry_delay(attempts + 1),
            },
        };
    }

    /// Located directories, to re-read their subtrees.
    pub fn located(&self) -> Vec<(ContainerId, PathBuf)> {
        self.cgroups
            .iter()
            .filter_map(|(c, s)| match s {
                CgroupState::Found { dir, .. } => Some((c.clone(), dir.clone())),
                _ => None,
            })
            .collect()
    }

    /// A re-read of a located directory: its current ids, or `None` when it
    /// is gone (the container stopped), which forgets it.
    pub fn cgroup_refreshed(&mut self, container: &ContainerId, ids: Option<Vec<u64>>) {
        match ids {
            Some(new) if !new.is_empty() => {
                if let Some(CgroupState::Found { ids, .. }) = self.cgroups.get_mut(container) {
                    *ids = new;
                }
            }
            _ => {
                self.cgroups.remove(container);
            }
        }
    }

    /// Computes the traced set, returns the updates that move the agent from
    /// the last reported set to it, and the lookups still needed.
    pub fn reconcile(&mut self, now: Instant) -> (Vec<K8sUpdate>, Vec<Work>) {
        let mut work = Vec::new();
        let mut desired: HashMap<u64, Arc<ContainerMeta>> = HashMap::new();
        let mut live_owners = HashSet::new();
        let mut live_containers = HashSet::new();
        let Tracker {
            policy,
            node_name,
            pods,
            namespaces,
            owners,
            cgroups,
            applied,
        } = self;
        let mut uids: Vec<&String> = pods.keys().collect();
        uids.sort();
        for uid in uids {
            let pod = &pods[uid];
            if pod.containers.is_empty()
                || (!pod.node_name.is_empty() && pod.node_name != *node_name)
            {
                continue;
            }
            let ns_value = namespaces.get(&pod.namespace).and_then(Option::as_deref);
            if !policy.wants(pod, ns_value) {
                continue;
            }
            let Some(workload) = workload(owners, pod, &mut live_owners, &mut work) else {
                continue;
            };
            for c in &pod.containers {
                live_containers.insert(c.id.clone());
                let ids = match cgroups.get(&c.id) {
                    Some(CgroupState::Found { ids, .. }) => ids,
                    Some(CgroupState::Pending { .. }) => continue,
                    Some(CgroupState::Missing { retry_at, .. }) if now < *retry_at => continue,
                    state => {
                        let attempts = match state {
                            Some(CgroupState::Missing { attempts, .. }) => *attempts,
                            _ => 0,
                        };
                        cgroups.insert(c.id.clone(), CgroupState::Pending { attempts });
                        work.push(Work::Locate {
                            pod_uid: pod.uid.clone(),
                            container: c.id.clone(),
                        });
                        continue;
                    }
                };
                let meta = ContainerMeta {
                    namespace: pod.namespace.clone(),
                    pod_name: pod.name.clone(),
                    pod_uid: pod.uid.clone(),
                    container_name: c.name.clone(),
                    container_kind: c.kind,
                    container_id: c.id.id.clone(),
                    container_runtime: c.id.runtime.clone(),
                    node_name: node_name.clone(),
                    service_name: service_name(
                        pod.service_name_annotation.as_deref(),
                        pod.app_name(),
                        &workload,
                        &c.name,
                    ),
                    service_version: pod.app_version().map(str::to_string),
                    workload: workload.clone(),
                };
                let first = ids[0];
                let meta = match applied.get(&first) {
                    Some(old) if **old == meta => old.clone(),
                    _ => Arc::new(meta),
                };
                for id in ids {
                    desired.insert(*id, meta.clone());
                }
            }
        }
        owners.retain(|k, _| live_owners.contains(k));
        cgroups.retain(|k, _| live_containers.contains(k));

        let mut untrace: Vec<u64> = applied
            .keys()
            .filter(|id| !desired.contains_key(id))
            .copied()
            .collect();
        untrace.sort_unstable();
        let mut trace: Vec<(u64, Arc<ContainerMeta>)> = desired
            .iter()
            .filter(|(id, meta)| applied.get(id).is_none_or(|old| **old != ***meta))
            .map(|(id, meta)| (*id, meta.clone()))
            .collect();
        trace.sort_unstable_by_key(|(id, _)| *id);
        let updates = untrace
            .into_iter()
            .map(|cgroup_id| K8sUpdate::Untrace { cgroup_id })
            .chain(
                trace
                    .into_iter()
                    .map(|(cgroup_id, meta)| K8sUpdate::Trace { cgroup_id, meta }),
            )
            .collect();
        *applied = desired;
        (updates, work)
    }
}

/// The pod's workload names; `None` while a lookup is pending.
fn workload(
    owners: &mut HashMap<OwnerKey, OwnerState>,
    pod: &PodInfo,
    live: &mut HashSet<OwnerKey>,
    work: &mut Vec<Work>,
) -> Option<Workload> {
    let mut w = Workload::default();
    let Some(owner) = &pod.owner else {
        return Some(w);
    };
    let lookup = match owner.kind.as_str() {
        "ReplicaSet" => {
            w.replicaset = Some(owner.name.clone());
            ParentLookup::ReplicaSet
        }
        "Job" => {
            w.job = Some(owner.name.clone());
            ParentLookup::Job
        }
        "StatefulSet" => {
            w.statefulset = Some(owner.name.clone());
            return Some(w);
        }
        "DaemonSet" => {
            w.daemonset = Some(owner.name.clone());
            return Some(w);
        }
        _ => return Some(w),
    };
    let key = OwnerKey {
        namespace: pod.namespace.clone(),
        kind: lookup,
        name: owner.name.clone(),
    };
    live.insert(key.clone());
    let parent = match owners.get(&key) {
        Some(OwnerState::Resolved(parent)) => parent.clone(),
        Some(OwnerState::Pending) => return None,
        None => {
            owners.insert(key.clone(), OwnerState::Pending);
            work.push(Work::Owner {
                key,
                hint: pod.labels.get("pod-template-hash").cloned(),
            });
            return None;
        }
    };
    match lookup {
        ParentLookup::ReplicaSet => w.deployment = parent,
        ParentLookup::Job => w.cronjob = parent,
    }
    Some(w)
}

/// The Deployment of a ReplicaSet named `<deployment>-<pod-template-hash>`,
/// for when the ReplicaSet cannot be read.
pub fn deployment_from_name(replicaset: &str, pod_template_hash: Option<&str>) -> Option<String> {
    let hash = pod_template_hash?;
    let prefix = replicaset.strip_suffix(hash)?.strip_suffix('-')?;
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// The CronJob of a Job named `<cronjob>-<scheduled minutes since the epoch>`,
/// for when the Job cannot be read.
pub fn cronjob_from_name(job: &str) -> Option<String> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (!prefix.is_empty() && suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit()))
        .then(|| prefix.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::discover::k8s::{meta::ContainerKind, pod::Owner, pod::RunningContainer};

    fn pod(uid: &str, ns: &str, labels: &[(&str, &str)], ids: &[&str]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            node_name: "node-a".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            service_name_annotation: None,
            owner: None,
            containers: ids
                .iter()
                .map(|id| RunningContainer {
                    name: format!("c-{id}"),
                    kind: ContainerKind::Regular,
                    id: ContainerId {
                        runtime: "containerd".into(),
                        id: id.to_string(),
                    },
                })
                .collect(),
        }
    }

    fn tracker(selector: Option<&str>) -> Tracker {
        Tracker::new(
            Policy {
                label_key: "seam.dev/trace".into(),
                selector: selector.map(|s| s.parse().unwrap()),
            },
            "node-a".into(),
        )
    }

    /// Runs reconcile and answers every cgroup lookup with id = the
    /// container id's number, until nothing is pending.
    fn settle(t: &mut Tracker) -> Vec<K8sUpdate> {
        let now = Instant::now();
        let mut all = Vec::new();
        for _ in 0..4 {
            let (updates, work) = t.reconcile(now);
            all.extend(updates);
            if work.is_empty() {
                break;
            }
            for w in work {
                match w {
                    Work::Locate { container, .. } => {
                        let id: u64 = container.id.parse().unwrap();
                        t.cgroup_located(&container, Some((PathBuf::from("/x"), vec![id])), now);
                    }
                    Work::Owner { key, hint } => {
                        let parent = deployment_from_name(&key.name, hint.as_deref());
                        t.owner_resolved(&key, parent);
                    }
                }
            }
        }
        all
    }

    fn traced(updates: &[K8sUpdate]) -> Vec<u64> {
        updates
            .iter()
            .filter_map(|u| match u {
                K8sUpdate::Trace { cgroup_id, .. } => Some(*cgroup_id),
                _ => None,
            })
            .collect()
    }

    fn untraced(updates: &[K8sUpdate]) -> Vec<u64> {
        updates
            .iter()
            .filter_map(|u| match u {
                K8sUpdate::Untrace { cgroup_id } => Some(*cgroup_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn opt_in_rules() {
        let mut t = tracker(None);
        t.namespaces.insert("on".into(), Some("enabled".into()));
        t.namespaces.insert("off".into(), None);
        let key = "seam.dev/trace";
        t.pods
            .insert("1".into(), pod("1", "off", &[(key, "enabled")], &["1"]));
        t.pods.insert("2".into(), pod("2", "off", &[], &["2"]));
        t.pods.insert("3".into(), pod("3", "on", &[], &["3"]));
        t.pods
            .insert("4".into(), pod("4", "on", &[(key, "disabled")], &["4"]));
        t.pods
            .insert("5".into(), pod("5", "on", &[(key, "maybe")], &["5"]));
        let mut other = pod("6", "on", &[], &["6"]);
        other.node_name = "node-b".into();
        t.pods.insert("6".into(), other);
        let u = settle(&mut t);
        assert_eq!(traced(&u), vec![1, 3, 5]);
        assert!(untraced(&u).is_empty());
        // Nothing changed: nothing to say.
        assert!(settle(&mut t).is_empty());
        // The namespace is switched off: its pods go, the labelled one stays.
        t.namespaces.insert("on".into(), None);
        let u = settle(&mut t);
        assert_eq!(untraced(&u), vec![3, 5]);
        assert!(traced(&u).is_empty());
    }

    #[test]
    fn selector_narrows() {
        let mut t = tracker(Some("tier in (web),!canary"));
        t.namespaces.insert("ns".into(), Some("enabled".into()));
        t.pods
            .insert("1".into(), pod("1", "ns", &[("tier", "web")], &["1"]));
        t.pods
            .insert("2".into(), pod("2", "ns", &[("tier", "db")], &["2"]));
        t.pods.insert(
            "3".into(),
            pod("3", "ns", &[("tier", "web"), ("canary", "1")], &["3"]),
        );
        assert_eq!(traced(&settle(&mut t)), vec![1]);
    }

    #[test]
    fn relist_with_same_content_is_silent_and_changes_are_diffs() {
        let mut t = tracker(None);
        t.namespaces.insert("ns".into(), Some("enabled".into()));
        t.pods.insert("1".into(), pod("1", "ns", &[], &["1", "2"]));
        t.pods.insert("3".into(), pod("3", "ns", &[], &["3"]));
        assert_eq!(traced(&settle(&mut t)), vec![1, 2, 3]);
        // A relist that replaces the store with equal content.
        let pods = t.pods.clone();
        t.pods = pods;
        assert!(settle(&mut t).is_empty());
        // Container 2 restarted with a new id; pod 3 deleted.
        t.pods.insert("1".into(), pod("1", "ns", &[], &["1", "22"]));
        t.pods.remove("3");
        let u = settle(&mut t);
        assert_eq!(untraced(&u), vec![2, 3]);
        assert_eq!(traced(&u), vec![22]);
        // A label change that changes the service name re-sends the meta.
        t.pods.insert(
            "1".into(),
            pod(
                "1",
                "ns",
                &[("app.kubernetes.io/name", "shop")],
                &["1", "22"],
            ),
        );
        let u = settle(&mut t);
        assert_eq!(traced(&u), vec![1, 22]);
        match &u[0] {
            K8sUpdate::Trace { meta, .. } => assert_eq!(meta.service_name, "shop"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn owners_are_looked_up_before_tracing() {
        let mut t = tracker(None);
        t.namespaces.insert("ns".into(), Some("enabled".into()));
        let mut p = pod("1", "ns", &[("pod-template-hash", "5d8f9c")], &["1"]);
        p.owner = Some(Owner {
            kind: "ReplicaSet".into(),
            name: "web-5d8f9c".into(),
        });
        t.pods.insert("1".into(), p);
        let (updates, work) = t.reconcile(Instant::now());
        assert!(updates.is_empty());
        assert!(matches!(&work[..], [Work::Owner { key, hint }]
            if key.name == "web-5d8f9c" && hint.as_deref() == Some("5d8f9c")));
        let Work::Owner { key, hint } = &work[0] else {
            unreachable!()
        };
        t.owner_resolved(key, deployment_from_name(&key.name, hint.as_deref()));
        let u = settle(&mut t);
        match &u[..] {
            [K8sUpdate::Trace { meta, .. }] => {
                assert_eq!(meta.workload.deployment.as_deref(), Some("web"));
                assert_eq!(meta.workload.replicaset.as_deref(), Some("web-5d8f9c"));
                assert_eq!(meta.service_name, "web");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_cgroups_are_retried_with_backoff() {
        let mut t = tracker(None);
        t.namespaces.insert("ns".into(), Some("enabled".into()));
        t.pods.insert("1".into(), pod("1", "ns", &[], &["1"]));
        let now = Instant::now();
        let (_, work) = t.reconcile(now);
        assert_eq!(work.len(), 1);
        let c = ContainerId {
            runtime: "containerd".into(),
            id: "1".into(),
        };
        t.cgroup_located(&c, None, now);
        assert!(t.reconcile(now).1.is_empty(), "retried too soon");
        let (_, work) = t.reconcile(now + Duration::from_millis(1100));
        assert_eq!(work.len(), 1);
        assert!(
            t.reconcile(now + Duration::from_millis(1200)).1.is_empty(),
            "in flight"
        );
        // The second failure waits twice as long.
        let then = now + Duration::from_millis(1200);
        t.cgroup_located(&c, None, then);
        assert!(t.reconcile(then + Duration::from_millis(1500)).1.is_empty());
        assert_eq!(t.reconcile(then + Duration::from_millis(2100)).1.len(), 1);
        t.cgroup_located(&c, Some(("/x".into(), vec![9])), now);
        assert_eq!(traced(&t.reconcile(now).0), vec![9]);
        // The directory vanished: forgotten, looked up again, then untraced.
        t.cgroup_refreshed(&c, None);
        let (u, work) = t.reconcile(now);
        assert_eq!(untraced(&u), vec![9]);
        assert_eq!(work.len(), 1);
    }

    #[test]
    fn name_fallbacks() {
        assert_eq!(
            deployment_from_name("web-5d8f9c", Some("5d8f9c")).as_deref(),
            Some("web")
        );
        assert_eq!(deployment_from_name("web-5d8f9c", Some("zzz")), None);
        assert_eq!(deployment_from_name("web-5d8f9c", None), None);
        assert_eq!(
            cronjob_from_name("nightly-report-29123456").as_deref(),
            Some("nightly-report")
        );
        assert_eq!(cronjob_from_name("migrate-v2"), None);
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(20), Duration::from_secs(120));
    }
}
