//! Kubernetes mode end to end without a cluster: a fake API server speaking
//! the real list/watch protocol, real HTTP servers placed in a real cgroup v2
//! hierarchy laid out like the kubelet's (systemd driver, containerd), the
//! real probes filtering on cgroup ids, and spans in an OTLP receiver.
use std::{process::Command, time::Duration};

use seam_tests::{
    agent::Agent,
    k8s::{CgroupDirs, FakeApi, NODE, PodFx, Res, cgroup2_mount, move_into, namespace, replicaset},
    otlp::{Kind, Receiver},
    procs::{Proc, curl, free_port, scratch_dir, wait_port},
    serial,
    spans::SpanView,
};

const KEY: &str = "seam.dev/trace";

fn http_server(name: &str) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(scratch_dir());
    let p = Proc::spawn(name, cmd);
    assert!(wait_port(port, Duration::from_secs(10)), "{}", p.log());
    (p, port)
}

fn get(port: u16) {
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/")]).0, 200);
}

fn from_port(spans: &[SpanView], port: u16) -> Vec<&SpanView> {
    spans
        .iter()
        .filter(|s| s.int("server.port") == Some(port as i64))
        .collect()
}

async fn traced_cgroups(agent: &Agent, want: u64) {
    for _ in 0..100 {
        let text = agent.get("/metrics").1;
        if text
            .lines()
            .any(|l| l == format!("seam_traced_cgroups {want}"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "seam_traced_cgroups never reached {want}:\n{}",
        agent.get("/metrics").1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_pods_are_traced_with_their_metadata() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let api = FakeApi::start().await;
    let cgroups = CgroupDirs::real(&cgroup2_mount(), "agent-e2e");

    // Pod a (labelled, owned by a Deployment) and pod b (not labelled).
    api.apply(Res::Namespaces, namespace("shop", &[]));
    api.apply(
        Res::ReplicaSets,
        replicaset("shop", "web-7d9f8", Some("web")),
    );
    let a = PodFx::new("shop", "web-7d9f8-abcde", 1)
        .label(KEY, "enabled")
        .label("app.kubernetes.io/name", "storefront")
        .owned_by("ReplicaSet", "web-7d9f8");
    let b = PodFx::new("shop", "batch-1", 2);
    api.apply(Res::Pods, a.json());
    api.apply(Res::Pods, b.json());
    let (dir_a, _) = cgroups.systemd_containerd("besteffort", &a.uid, &a.containers[0].id);
    let (dir_b, _) = cgroups.systemd_containerd("besteffort", &b.uid, &b.containers[0].id);
    let (server_a, port_a) = http_server("pod-a");
    let (server_b, port_b) = http_server("pod-b");
    move_into(&dir_a, server_a.pid());
    move_into(&dir_b, server_b.pid());

    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--k8s".to_string(),
        "--k8s-api-url".into(),
        api.url(),
        "--k8s-cgroup-root".into(),
        cgroups.root.display().to_string(),
    ]);
    let mut agent = Agent::start(&args, &[("NODE_NAME", NODE)]);
    traced_cgroups(&agent, 1).await;

    get(port_a);
    get(port_b);
    let spans = receiver.settle(1, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 1, "only the labelled pod is traced");
    let s = &spans[0];
    assert!(s.is_server());
    assert_eq!(s.int("server.port"), Some(port_a as i64));
    for (key, want) in [
        ("service.name", "storefront"),
        ("service.namespace", "shop"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-7d9f8-abcde"),
        ("k8s.pod.uid", a.uid.as_str()),
        ("k8s.container.name", "app"),
        ("k8s.node.name", NODE),
        ("k8s.deployment.name", "web"),
        ("k8s.replicaset.name", "web-7d9f8"),
        ("container.id", a.containers[0].id.as_str()),
    ] {
        assert_eq!(s.resource_attr(key).as_deref(), Some(want), "{key}");
    }

    // Relabelling at runtime: b opts in, a opts out.
    api.apply(Res::Pods, b.clone().label(KEY, "enabled").json());
    traced_cgroups(&agent, 2).await;
    api.apply(Res::Pods, a.clone().label(KEY, "disabled").json());
    traced_cgroups(&agent, 1).await;
    get(port_a);
    get(port_b);
    let spans = receiver.settle(2, Duration::from_secs(20)).await;
    assert_eq!(from_port(&spans, port_a).len(), 1, "a stopped being traced");
    let b_spans = from_port(&spans, port_b);
    assert_eq!(b_spans.len(), 1, "b started being traced");
    assert_eq!(
        b_spans[0].resource_attr("k8s.pod.name").as_deref(),
        Some("batch-1")
    );
    // No owner, no app label: the container's name.
    assert_eq!(b_spans[0].service(), "app");

    // Deleting the pod removes its cgroup from the kernel filter.
    api.delete(Res::Pods, "shop", "batch-1");
    traced_cgroups(&agent, 0).await;
    get(port_b);
    let spans = receiver.settle(2, Duration::from_secs(5)).await;
    assert_eq!(spans.len(), 2, "nothing traced after the delete");
    assert!(agent.stop().success());
    drop(server_a);
    drop(server_b);
}
