//! The event loop: two watches (this node's pods, all namespaces' metadata),
//! lookups run beside it, and the tracker's differences sent to the agent.
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Config, ResourceExt as _,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    ApiSource, K8sConfig, K8sError, K8sUpdate,
    cgroup::{CgroupLocator, ContainerId, subtree_ids},
    owners,
    pod::PodInfo,
    selector::{LabelSelector, check_key},
    tracker::{OwnerKey, Policy, Tracker, Work},
};

/// How often pending cgroup lookups are retried (each on its own backoff).
const TICK: Duration = Duration::from_secs(1);
/// How often located cgroup directories are re-read (a vanished one means
/// the container stopped; new sub-cgroups are picked up).
const REFRESH: Duration = Duration::from_secs(10);

/// Results of the work run beside the loop.
enum Done {
    Owner(OwnerKey, Option<String>),
    Located(ContainerId, Option<(PathBuf, Vec<u64>)>),
    Refreshed(Vec<(ContainerId, Option<Vec<u64>>)>),
}

/// A watched collection: the live contents, and the buffer a relist fills
/// before it replaces them in one step (so a relist is never seen half done).
struct Synced<T> {
    relist: Option<HashMap<String, T>>,
    synced: bool,
}

impl<T> Synced<T> {
    fn new() -> Self {
        Self {
            relist: None,
            synced: false,
        }
    }

    /// Applies one watcher event to `live`; true when `live` changed.
    fn apply<K>(
        &mut self,
        live: &mut HashMap<String, T>,
        event: watcher::Event<K>,
        convert: impl Fn(&K) -> Option<(String, T)>,
        key_of: impl Fn(&K) -> Option<String>,
    ) -> bool
    where
        T: PartialEq,
    {
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(obj) => {
                if let (Some(buf), Some((k, v))) = (self.relist.as_mut(), convert(&obj)) {
                    buf.insert(k, v);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    *live = buf;
                }
                self.synced = true;
                true
            }
            watcher::Event::Apply(obj) => match convert(&obj) {
                Some((k, v)) => {
                    let changed = live.get(&k) != Some(&v);
                    live.insert(k, v);
                    changed
                }
                None => false,
            },
            watcher::Event::Delete(obj) => key_of(&obj).is_some_and(|k| live.remove(&k).is_some()),
        }
    }
}

fn pod_entry(pod: &Pod) -> Option<(String, PodInfo)> {
    let info = PodInfo::from_pod(pod)?;
    Some((info.uid.clone(), info))
}

fn pod_key(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

async fn client(api: &ApiSource) -> Result<Client, K8sError> {
    let config = match api {
        ApiSource::InCluster => Config::incluster().map_err(K8sError::InCluster)?,
        ApiSource::Kubeconfig => Config::infer().await.map_err(K8sError::Kubeconfig)?,
        ApiSource::Url(url) => Config::new(url.parse().map_err(|e| K8sError::Url {
            url: url.clone(),
            reason: format!("{e}"),
        })?),
    };
    Client::try_from(config).map_err(K8sError::Client)
}

/// Watches the API and sends the traced set's changes on `tx` until `tx` is
/// closed (then returns `Ok`). Errors are returned only for a configuration
/// that cannot work; API failures are logged and retried.
pub async fn run(cfg: K8sConfig, tx: mpsc::Sender<K8sUpdate>) -> Result<(), K8sError> {
    check_key(&cfg.label_key).map_err(|reason| K8sError::LabelKey {
        key: cfg.label_key.clone(),
        reason,
    })?;
    let selector: Option<LabelSelector> = cfg
        .label_selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .transpose()?;
    match std::fs::metadata(&cfg.cgroup2_root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(K8sError::Cgroup2Root {
                path: cfg.cgroup2_root.clone(),
                source: std::io::Error::other("not a directory"),
            });
        }
        Err(source) => {
            return Err(K8sError::Cgroup2Root {
                path: cfg.cgroup2_root.clone(),
                source,
            });
        }
    }
    let client = client(&cfg.api).await?;
    let locator = CgroupLocator::new(cfg.cgroup2_root.clone());
    let mut tracker = Tracker::new(
        Policy {
            label_key: cfg.label_key.clone(),
            selector,
        },
        cfg.node_name.clone(),
    );
    tracing::info!(
        node = %cfg.node_name,
        label = %cfg.label_key,
        selector = cfg.label_selector.as_deref().unwrap_or(""),
        cgroup2 = %cfg.cgroup2_root.display(),
        "watching this node's pods"
    );

    let pod_watch = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut pods = watcher(Api::<Pod>::all(client.clone()), pod_watch)
        .default_backoff()
        .boxed();
    // Metadata only: the labels are all that is needed of a namespace.
    let mut namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut pod_sync = Synced::new();
    let mut ns_sync = Synced::new();
    let mut jobs: JoinSet<Done> = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.tick().await;
    let mut reported_sync = false;

    loop {
        let changed = tokio::select! {
            () = tx.closed() => return Ok(()),
            event = pods.next() => match event {
                Some(Ok(event)) => pod_sync.apply(&mut tracker.pods, event, pod_entry, pod_key),
                Some(Err(e)) => { log_watch_error("pods", &e); false }
                None => return Ok(()),
            },
            event = namespaces.next() => match event {
                Some(Ok(event)) => {
                    let key = tracker.policy().label_key.clone();
                    let entry = |ns: &PartialObjectMeta<Namespace>| {
                        Some((ns.name_any(), ns.labels().get(&key).cloned()))
                    };
                    ns_sync.apply(&mut tracker.namespaces, event, entry, |ns| Some(ns.name_any()))
                }
                Some(Err(e)) => { log_watch_error("namespaces", &e); false }
                None => return Ok(()),
            },
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                match done {
                    Ok(Done::Owner(key, parent)) => tracker.owner_resolved(&key, parent),
                    Ok(Done::Located(container, found)) => {
                        if found.is_none() {
                            tracing::warn!(
                                "no cgroup directory for container {}://{} under {}",
                                container.runtime, container.id, cfg.cgroup2_root.display()
                            );
                        }
                        tracker.cgroup_located(&container, found, Instant::now());
                    }
                    Ok(Done::Refreshed(all)) => {
                        for (container, ids) in all {
                            tracker.cgroup_refreshed(&container, ids);
                        }
                    }
                    Err(e) => tracing::warn!("k8s lookup task failed: {e}"),
                }
                true
            }
            _ = tick.tick() => true,
            _ = refresh.tick() => {
                let located = tracker.located();
                if !located.is_empty() {
                    jobs.spawn_blocking(move || {
                        Done::Refreshed(
                            located
                                .into_iter()
                                .map(|(c, dir)| {
                                    let ids = subtree_ids(&dir).ok();
                                    (c, ids)
                                })
                                .collect(),
                        )
                    });
                }
                false
            }
        };
        if !(changed && pod_sync.synced && ns_sync.synced) {
            continue;
        }
        if !reported_sync {
            reported_sync = true;
            tracing::info!(
                pods = tracker.pods.len(),
                namespaces = tracker.namespaces.len(),
                "kubernetes state synced"
            );
        }
        let (updates, work) = tracker.reconcile(Instant::now());
        for w in work {
            match w {
                Work::Owner { key, hint } => {
                    let client = client.clone();
                    jobs.spawn(async move {
                        let parent = owners::lookup(client, &key, hint.as_deref()).await;
                        Done::Owner(key, parent)
                    });
                }
                Work::Locate { pod_uid, container } => {
                    let locator = locator.clone();
                    jobs.spawn_blocking(move || {
                        let found = locator.locate(&pod_uid, &container).and_then(|dir| {
                            let ids = subtree_ids(&dir).ok()?;
                            Some((dir, ids))
                        });
                        Done::Located(container, found)
                    });
                }
            }
        }
        for update in updates {
            match &update {
                K8sUpdate::Trace { cgroup_id, meta } => tracing::info!(
                    cgroup_id,
                    pod = %format!("{}/{}", meta.namespace, meta.pod_name),
                    container = %meta.container_name,
                    service = %meta.service_name,
                    "tracing container"
                ),
                K8sUpdate::Untrace { cgroup_id } => {
                    tracing::info!(cgroup_id, "no longer tracing cgroup")
                }
            }
            if tx.send(update).await.is_err() {
                return Ok(());
            }
        }
    }
}

fn log_watch_error(what: &str, e: &watcher::Error) {
    match e {
        watcher::Error::WatchError(status) if status.code == 410 => {
            tracing::info!("{what} watch expired (410 Gone); relisting")
        }
        other => tracing::warn!("{what} watch: {other}; retrying with backoff"),
    }
}
