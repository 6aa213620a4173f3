//! `k8s::run` against the fake API server: opt-in rules, runtime relabels,
//! container lifecycle, owners, the label selector, and resync after
//! dropped connections and 410 Gone.
mod support;

use std::{collections::BTreeMap, time::Duration};

use seam::{
    discover::k8s::{ContainerKind, K8sError, K8sUpdate},
    span::Value,
};
use support::{Ctr, Harness, NODE, PodFx, Res, job, namespace, replicaset};

const KEY: &str = "seam.dev/trace";
const QUIET: Duration = Duration::from_millis(1500);

fn by_id(updates: Vec<K8sUpdate>) -> BTreeMap<u64, K8sUpdate> {
    updates
        .into_iter()
        .map(|u| match &u {
            K8sUpdate::Trace { cgroup_id, .. } | K8sUpdate::Untrace { cgroup_id } => {
                (*cgroup_id, u)
            }
        })
        .collect()
}

fn traced_ids(updates: &[K8sUpdate]) -> Vec<u64> {
    let mut v: Vec<u64> = updates
        .iter()
        .filter_map(|u| match u {
            K8sUpdate::Trace { cgroup_id, .. } => Some(*cgroup_id),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v
}

fn untraced_ids(updates: &[K8sUpdate]) -> Vec<u64> {
    let mut v: Vec<u64> = updates
        .iter()
        .filter_map(|u| match u {
            K8sUpdate::Untrace { cgroup_id } => Some(*cgroup_id),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_pod_is_traced_with_its_metadata() {
    let mut h = Harness::new().await;
    h.api.apply(Res::Namespaces, namespace("shop", &[]));
    h.api.apply(
        Res::ReplicaSets,
        replicaset("shop", "web-5d8f9c", Some("web")),
    );
    let web = PodFx::new("shop", "web-5d8f9c-x7k2p", 1)
        .label(KEY, "enabled")
        .label("pod-template-hash", "5d8f9c")
        .owned_by("ReplicaSet", "web-5d8f9c");
    let plain = PodFx::new("shop", "cart-0", 2);
    let elsewhere = PodFx::new("shop", "web-other", 3)
        .label(KEY, "enabled")
        .on_node("node-b");
    let (_, web_id) = h
        .cgroups
        .systemd_containerd("burstable", &web.uid, &web.containers[0].id);
    h.cgroups
        .systemd_containerd("besteffort", &plain.uid, &plain.containers[0].id);
    h.cgroups
        .systemd_containerd("besteffort", &elsewhere.uid, &elsewhere.containers[0].id);
    for p in [&web, &plain, &elsewhere] {
        h.api.apply(Res::Pods, p.json());
    }
    h.run(h.config());

    let (id, meta) = h.next_trace().await;
    assert_eq!(id, web_id);
    assert_eq!(meta.namespace, "shop");
    assert_eq!(meta.pod_name, "web-5d8f9c-x7k2p");
    assert_eq!(meta.pod_uid, web.uid);
    assert_eq!(meta.container_name, "app");
    assert_eq!(meta.container_kind, ContainerKind::Regular);
    assert_eq!(meta.container_id, web.containers[0].id);
    assert_eq!(meta.container_runtime, "containerd");
    assert_eq!(meta.node_name, NODE);
    assert_eq!(meta.workload.deployment.as_deref(), Some("web"));
    assert_eq!(meta.workload.replicaset.as_deref(), Some("web-5d8f9c"));
    assert_eq!(meta.service_name, "web");
    let attrs = meta.resource_attributes();
    let get = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);
    assert_eq!(get("service.name").as_deref(), Some("web"));
    assert_eq!(get("service.namespace").as_deref(), Some("shop"));
    assert_eq!(get("k8s.deployment.name").as_deref(), Some("web"));
    assert_eq!(get("k8s.replicaset.name").as_deref(), Some("web-5d8f9c"));
    assert_eq!(get("k8s.pod.name").as_deref(), Some("web-5d8f9c-x7k2p"));
    assert_eq!(get("k8s.container.name").as_deref(), Some("app"));
    assert_eq!(get("k8s.node.name").as_deref(), Some(NODE));
    assert_eq!(get("container.id"), Some(web.containers[0].id.clone()));
    // Neither the unlabelled pod nor the other node's pod.
    h.quiet(QUIET).await;

    let reqs = h.api.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-a")
            && !r.contains("watch=true")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("watch=true")
            && r.contains("allowWatchBookmarks=true")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r == "GET /apis/apps/v1/namespaces/shop/replicasets/web-5d8f9c"),
        "{reqs:#?}"
    );
    // Only the node's pods are ever asked for; no ReplicaSet is listed.
    assert!(!reqs.iter().any(|r| r.starts_with("GET /api/v1/pods")
        && !r.contains("fieldSelector=spec.nodeName%3Dnode-a")));
    assert!(!reqs.iter().any(|r| r.contains("/replicasets?")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_opt_in_pod_opt_out_and_runtime_relabels() {
    let mut h = Harness::new().await;
    h.api
        .apply(Res::Namespaces, namespace("team", &[(KEY, "enabled")]));
    let p1 = PodFx::new("team", "one", 11);
    let p2 = PodFx::new("team", "two", 12).label(KEY, "disabled");
    let p3 = PodFx::new("team", "three", 13)
        .label("app.kubernetes.io/name", "cart")
        .annotate("resource.opentelemetry.io/service.name", "checkout-svc");
    let mut ids = Vec::new();
    for p in [&p1, &p2, &p3] {
        ids.push(
            h.cgroups
                .systemd_containerd("burstable", &p.uid, &p.containers[0].id)
                .1,
        );
        h.api.apply(Res::Pods, p.json());
    }
    h.run(h.config());

    let first = by_id(h.take(2).await);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        sorted(vec![ids[0], ids[2]])
    );
    let K8sUpdate::Trace { meta, .. } = &first[&ids[2]] else {
        panic!()
    };
    assert_eq!(meta.service_name, "checkout-svc", "annotation wins");
    let K8sUpdate::Trace { meta, .. } = &first[&ids[0]] else {
        panic!()
    };
    assert_eq!(meta.service_name, "app", "container name as last resort");
    h.quiet(QUIET).await;

    // The namespace opts out: its pods go.
    h.api.apply(Res::Namespaces, namespace("team", &[]));
    let u = h.take(2).await;
    assert_eq!(untraced_ids(&u), sorted(vec![ids[0], ids[2]]));
    // The pod that was disabled opts in on its own.
    h.api
        .apply(Res::Pods, p2.clone().label(KEY, "enabled").json());
    assert_eq!(h.next_trace().await.0, ids[1]);
    // ... and out again.
    h.api.apply(Res::Pods, p2.clone().unlabel(KEY).json());
    assert_eq!(h.next_untrace().await, ids[1]);
    h.quiet(QUIET).await;
    // The namespace opts back in: all three, the unlabelled `two` too.
    h.api
        .apply(Res::Namespaces, namespace("team", &[(KEY, "enabled")]));
    let u = h.take(3).await;
    assert_eq!(traced_ids(&u), sorted(ids.clone()));
    // The app label changes: the service name follows (Trace again, same id).
    h.api.apply(
        Res::Pods,
        p1.clone().label("app.kubernetes.io/name", "renamed").json(),
    );
    let (id, meta) = h.next_trace().await;
    assert_eq!((id, meta.service_name.as_str()), (ids[0], "renamed"));
    h.quiet(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_lifecycle_and_pod_deletion() {
    let mut h = Harness::new().await;
    h.api.apply(Res::Namespaces, namespace("jobs", &[]));
    let mut pod = PodFx::new("jobs", "worker", 21).label(KEY, "enabled");
    pod.containers.push(Ctr::new("sidecar", 22));
    let mut done_init = Ctr::new("setup", 23);
    done_init.running = false;
    pod.init = vec![done_init];
    pod.ephemeral = vec![Ctr::new("debugger", 24)];
    let mut starting = PodFx::new("jobs", "starting", 25).label(KEY, "enabled");
    starting.init = vec![Ctr::new("migrate", 26)];
    starting.containers = vec![Ctr::waiting("app")];

    let dir =
        |h: &Harness, uid: &str, c: &Ctr| h.cgroups.systemd_containerd("burstable", uid, &c.id).1;
    let app = dir(&h, &pod.uid, &pod.containers[0]);
    let sidecar = dir(&h, &pod.uid, &pod.containers[1]);
    let _init = dir(&h, &pod.uid, &pod.init[0]);
    let debugger = dir(&h, &pod.uid, &pod.ephemeral[0]);
    let migrate = dir(&h, &starting.uid, &starting.init[0]);
    h.api.apply(Res::Pods, pod.json());
    h.api.apply(Res::Pods, starting.json());
    h.run(h.config());

    let u = by_id(h.take(4).await);
    assert_eq!(
        u.keys().copied().collect::<Vec<_>>(),
        sorted(vec![app, sidecar, debugger, migrate])
    );
    let kind = |id: u64| match &u[&id] {
        K8sUpdate::Trace { meta, .. } => (meta.container_name.clone(), meta.container_kind),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        kind(debugger),
        ("debugger".into(), ContainerKind::Ephemeral)
    );
    assert_eq!(kind(migrate), ("migrate".into(), ContainerKind::Init));
    h.quiet(QUIET).await;

    // The sidecar exits.
    pod.containers[1].running = false;
    h.api.apply(Res::Pods, pod.json());
    assert_eq!(h.next_untrace().await, sidecar);
    // The app restarts as a new container.
    pod.containers[0] = Ctr::new("app", 27);
    let app2 = dir(&h, &pod.uid, &pod.containers[0]);
    h.api.apply(Res::Pods, pod.json());
    assert_eq!(h.next_untrace().await, app);
    assert_eq!(h.next_trace().await.0, app2);
    // The init container finishes and the app starts.
    starting.init[0].running = false;
    starting.containers = vec![Ctr::new("app", 28)];
    let started = dir(&h, &starting.uid, &starting.containers[0]);
    h.api.apply(Res::Pods, starting.json());
    assert_eq!(h.next_untrace().await, migrate);
    assert_eq!(h.next_trace().await.0, started);
    // The pod is deleted.
    h.api.delete(Res::Pods, "jobs", "worker");
    let u = h.take(2).await;
    assert_eq!(untraced_ids(&u), sorted(vec![app2, debugger]));
    h.quiet(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_after_dropped_connections_and_410() {
    let mut h = Harness::new().await;
    h.api
        .apply(Res::Namespaces, namespace("prod", &[(KEY, "enabled")]));
    let pods: Vec<PodFx> = (0..3)
        .map(|i| PodFx::new("prod", &format!("p{i}"), 31 + i))
        .collect();
    let mut ids = Vec::new();
    for p in &pods {
        ids.push(
            h.cgroups
                .systemd_containerd("besteffort", &p.uid, &p.containers[0].id)
                .1,
        );
        h.api.apply(Res::Pods, p.json());
    }
    h.run(h.config());
    assert_eq!(traced_ids(&h.take(3).await), sorted(ids.clone()));
    assert_eq!(h.api.lists_of("/api/v1/pods"), 1);

    // Connections cut: the watches resume where they were, no relist.
    h.api.with(|s| s.drop_watches());
    h.quiet(Duration::from_millis(2500)).await;
    assert_eq!(h.api.lists_of("/api/v1/pods"), 1);
    // A change after the reconnect arrives.
    h.api
        .apply(Res::Pods, pods[2].clone().label(KEY, "disabled").json());
    assert_eq!(h.next_untrace().await, ids[2]);

    // History compacted under an open watch: ERROR 410, relist, and the
    // relist changes nothing.
    h.api.with(|s| s.compact());
    h.quiet_until("both relists", |h| {
        h.api.lists_of("/api/v1/pods") >= 2 && h.api.lists_of("/api/v1/namespaces") >= 2
    })
    .await;
    h.quiet(QUIET).await;
    assert_eq!(h.api.lists_of("/api/v1/pods"), 2);
    assert_eq!(h.api.lists_of("/api/v1/namespaces"), 2);

    // Cut while things change, history compacted meanwhile, and the first
    // relist fails: the diff after the relist is exactly what changed.
    let newcomer = PodFx::new("prod", "p9", 39);
    let new_id = h
        .cgroups
        .systemd_containerd("besteffort", &newcomer.uid, &newcomer.containers[0].id)
        .1;
    h.api.with(|s| {
        s.drop_watches();
        s.delete(Res::Pods, "prod", "p0");
        s.apply(Res::Pods, newcomer.json());
        s.compact();
        s.fail_lists(Res::Pods, 1);
    });
    let u = h.take(2).await;
    assert_eq!(untraced_ids(&u), vec![ids[0]]);
    assert_eq!(traced_ids(&u), vec![new_id]);
    h.quiet(QUIET).await;
    assert!(
        h.api.lists_of("/api/v1/pods") >= 4,
        "{:#?}",
        h.api.requests()
    );
    // p1 was never untraced, and the state is intact: relabel p1 off.
    h.api
        .apply(Res::Pods, pods[1].clone().label(KEY, "disabled").json());
    assert_eq!(h.next_untrace().await, ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_owners() {
    let mut h = Harness::new().await;
    h.api
        .apply(Res::Namespaces, namespace("apps", &[(KEY, "enabled")]));
    h.api.apply(
        Res::ReplicaSets,
        replicaset("apps", "web-5d8f9c", Some("web")),
    );
    h.api
        .apply(Res::ReplicaSets, replicaset("apps", "bare-abc12", None));
    h.api
        .apply(Res::Jobs, job("apps", "report-29000000", Some("report")));
    h.api.apply(Res::Jobs, job("apps", "adhoc", None));
    let pods = [
        PodFx::new("apps", "web-5d8f9c-aaaaa", 41)
            .label("pod-template-hash", "5d8f9c")
            .owned_by("ReplicaSet", "web-5d8f9c"),
        PodFx::new("apps", "bare-abc12-bbbbb", 42).owned_by("ReplicaSet", "bare-abc12"),
        // Its ReplicaSet cannot be read (404): the name tells.
        PodFx::new("apps", "api-7c6b5-ccccc", 43)
            .label("pod-template-hash", "7c6b5")
            .owned_by("ReplicaSet", "api-7c6b5"),
        PodFx::new("apps", "db-0", 44).owned_by("StatefulSet", "db"),
        PodFx::new("apps", "agent-x", 45).owned_by("DaemonSet", "agent"),
        PodFx::new("apps", "report-29000000-ddddd", 46).owned_by("Job", "report-29000000"),
        PodFx::new("apps", "adhoc-eeeee", 47).owned_by("Job", "adhoc"),
        PodFx::new("apps", "static-node-a", 48).owned_by("Node", NODE),
    ];
    let mut ids = Vec::new();
    for p in &pods {
        ids.push(
            h.cgroups
                .systemd_containerd("burstable", &p.uid, &p.containers[0].id)
                .1,
        );
        h.api.apply(Res::Pods, p.json());
    }
    h.run(h.config());
    let u = by_id(h.take(pods.len()).await);
    let meta = |i: usize| match &u[&ids[i]] {
        K8sUpdate::Trace { meta, .. } => meta.clone(),
        other => panic!("{other:?}"),
    };
    let w = |i: usize| {
        let m = meta(i);
        let w = &m.workload;
        (
            [
                w.deployment.clone(),
                w.replicaset.clone(),
                w.statefulset.clone(),
                w.daemonset.clone(),
                w.job.clone(),
                w.cronjob.clone(),
            ],
            m.service_name.clone(),
        )
    };
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        w(0),
        (
            [s("web"), s("web-5d8f9c"), None, None, None, None],
            "web".into()
        )
    );
    assert_eq!(
        w(1),
        (
            [None, s("bare-abc12"), None, None, None, None],
            "bare-abc12".into()
        )
    );
    assert_eq!(
        w(2),
        (
            [s("api"), s("api-7c6b5"), None, None, None, None],
            "api".into()
        )
    );
    assert_eq!(w(3), ([None, None, s("db"), None, None, None], "db".into()));
    assert_eq!(
        w(4),
        ([None, None, None, s("agent"), None, None], "agent".into())
    );
    assert_eq!(
        w(5),
        (
            [None, None, None, None, s("report-29000000"), s("report")],
            "report".into()
        )
    );
    assert_eq!(
        w(6),
        ([None, None, None, None, s("adhoc"), None], "adhoc".into())
    );
    assert_eq!(w(7), ([None, None, None, None, None, None], "app".into()));
    let attrs = meta(5).resource_attributes();
    assert_eq!(
        attrs.get("k8s.cronjob.name").and_then(Value::as_str),
        Some("report")
    );
    assert_eq!(
        attrs.get("k8s.job.name").and_then(Value::as_str),
        Some("report-29000000")
    );
    // Each owner read once, metadata only.
    let reqs = h.api.requests();
    let reads = |p: &str| reqs.iter().filter(|r| r.as_str() == p).count();
    assert_eq!(
        reads("GET /apis/apps/v1/namespaces/apps/replicasets/web-5d8f9c"),
        1
    );
    assert_eq!(
        reads("GET /apis/batch/v1/namespaces/apps/jobs/report-29000000"),
        1
    );
    assert_eq!(
        reads("GET /apis/apps/v1/namespaces/apps/replicasets/api-7c6b5"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_and_custom_label_key() {
    const MY_KEY: &str = "example.com/observe";
    let mut h = Harness::new().await;
    h.api
        .apply(Res::Namespaces, namespace("web", &[(MY_KEY, "enabled")]));
    h.api
        .apply(Res::Namespaces, namespace("other", &[(KEY, "enabled")]));
    let pods = [
        PodFx::new("web", "front", 51).label("tier", "web"),
        PodFx::new("web", "db", 52).label("tier", "db"),
        PodFx::new("web", "canary", 53)
            .label("tier", "api")
            .label("canary", "true"),
        PodFx::new("other", "wrong-key", 54)
            .label("tier", "web")
            .label(KEY, "enabled"),
    ];
    let mut ids = Vec::new();
    for p in &pods {
        ids.push(
            h.cgroups
                .systemd_containerd("burstable", &p.uid, &p.containers[0].id)
                .1,
        );
        h.api.apply(Res::Pods, p.json());
    }
    let mut cfg = h.config();
    cfg.label_key = MY_KEY.into();
    cfg.label_selector = Some("tier in (web, api),!canary".into());
    h.run(cfg);
    assert_eq!(h.next_trace().await.0, ids[0]);
    h.quiet(QUIET).await;
    h.api
        .apply(Res::Pods, pods[1].clone().label("tier", "web").json());
    assert_eq!(h.next_trace().await.0, ids[1]);
    h.api
        .apply(Res::Pods, pods[2].clone().unlabel("canary").json());
    assert_eq!(h.next_trace().await.0, ids[2]);
    h.api
        .apply(Res::Pods, pods[0].clone().label("canary", "1").json());
    assert_eq!(h.next_untrace().await, ids[0]);
    h.quiet(QUIET).await;
}

#[tokio::test]
async fn unusable_configuration_is_an_error() {
    let h = Harness::new().await;
    let run = |cfg| async {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        seam::discover::k8s::run(cfg, tx).await
    };
    let mut cfg = h.config();
    cfg.label_selector = Some("tier in (web".into());
    assert!(matches!(run(cfg).await, Err(K8sError::Selector(_))));
    let mut cfg = h.config();
    cfg.label_key = "Bad Key".into();
    assert!(matches!(run(cfg).await, Err(K8sError::LabelKey { .. })));
    let mut cfg = h.config();
    cfg.cgroup2_root = "/nonexistent/cgroup".into();
    assert!(matches!(run(cfg).await, Err(K8sError::Cgroup2Root { .. })));
    let mut cfg = h.config();
    cfg.api = seam::discover::k8s::ApiSource::Url("not a url".into());
    assert!(matches!(run(cfg).await, Err(K8sError::Url { .. })));
    // An https API (as in-cluster) gets a rustls client with the ring
    // provider, without a process-wide provider being installed first.
    let tls = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    assert!(kube::Client::try_from(tls).is_ok());
    let env = |k: &str| (k == "NODE_NAME").then(|| "n1".to_string());
    let from_env = seam::discover::k8s::K8sConfig::from_env(&env).unwrap();
    assert_eq!(from_env.node_name, "n1");
    assert!(from_env.cgroup2_root.is_absolute());
    assert!(matches!(
        seam::discover::k8s::K8sConfig::from_env(&|_| None),
        Err(K8sError::NoNodeName)
    ));
}

/// The fake itself, through kube's client: field selection on lists and
/// watches (a pod moving out of the selection is DELETED for that watch),
/// 404 Status for a missing object, and 410 for a compacted version.
#[tokio::test]
async fn fake_api_speaks_the_protocol() {
    use futures::{StreamExt as _, TryStreamExt as _};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, WatchEvent, WatchParams};

    let h = Harness::new().await;
    h.api.apply(Res::Pods, PodFx::new("ns", "here", 61).json());
    h.api.apply(
        Res::Pods,
        PodFx::new("ns", "there", 62).on_node("node-b").json(),
    );
    let client = kube::Client::try_from(kube::Config::new(h.api.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::all(client.clone());
    let all = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let mine = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].metadata.name.as_deref(), Some("here"));
    let rv = mine.metadata.resource_version.clone().unwrap();

    let wp = WatchParams::default()
        .fields("spec.nodeName=node-a")
        .timeout(5);
    let mut events = pods.watch(&wp, &rv).await.unwrap().boxed();
    // "here" moves out of the selection, "there" moves in.
    h.api.apply(
        Res::Pods,
        PodFx::new("ns", "here", 61).on_node("node-c").json(),
    );
    h.api.apply(Res::Pods, PodFx::new("ns", "there", 62).json());
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Deleted(p) => seen.push(("DELETED", p.metadata.name.unwrap())),
            WatchEvent::Added(p) => seen.push(("ADDED", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        [("DELETED", "here".into()), ("ADDED", "there".into())]
    );

    let err = pods.get("nope").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    h.api.with(|s| s.compact());
    let mut stale = pods.watch(&wp, &rv).await.unwrap().boxed();
    match stale.next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }
}
