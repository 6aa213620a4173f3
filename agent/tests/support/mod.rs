//! A harness around `k8s::run` against the fake API server of seam-tests.
#![allow(dead_code)]
use std::time::Duration;

use seam::discover::k8s::{self, ApiSource, K8sConfig, K8sError, K8sUpdate};
pub use seam_tests::k8s::*;
use tokio::{sync::mpsc, task::JoinHandle};

/// `k8s::run` against a fake API server, with its update channel.
pub struct Harness {
    pub api: FakeApi,
    pub cgroups: CgroupDirs,
    pub rx: mpsc::Receiver<K8sUpdate>,
    pub task: Option<JoinHandle<Result<(), K8sError>>>,
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEAM_TEST_LOG")
                .unwrap_or_else(|_| "seam=debug,warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_cgroups(CgroupDirs::temp()).await
    }

    pub async fn with_cgroups(cgroups: CgroupDirs) -> Self {
        init_logging();
        let (_, rx) = mpsc::channel(1);
        Self {
            api: FakeApi::start().await,
            cgroups,
            rx,
            task: None,
        }
    }

    pub fn config(&self) -> K8sConfig {
        K8sConfig {
            node_name: NODE.into(),
            label_key: k8s::DEFAULT_LABEL_KEY.into(),
            label_selector: None,
            cgroup2_root: self.cgroups.root.clone(),
            api: ApiSource::Url(self.api.url()),
        }
    }

    pub fn run(&mut self, cfg: K8sConfig) {
        let (tx, rx) = mpsc::channel(64);
        self.rx = rx;
        self.task = Some(tokio::spawn(k8s::run(cfg, tx)));
    }

    /// The next update, within 20 s (a few watch-error backoffs).
    pub async fn next(&mut self) -> K8sUpdate {
        match tokio::time::timeout(Duration::from_secs(20), self.rx.recv()).await {
            Ok(Some(u)) => u,
            Ok(None) => panic!("k8s::run ended: {:?}", self.task.take().unwrap().await),
            Err(_) => panic!("no update within 20 s"),
        }
    }

    /// The next `n` updates.
    pub async fn take(&mut self, n: usize) -> Vec<K8sUpdate> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.next().await);
        }
        v
    }

    /// The next update, which must be a Trace; returns (id, meta).
    pub async fn next_trace(&mut self) -> (u64, std::sync::Arc<k8s::ContainerMeta>) {
        match self.next().await {
            K8sUpdate::Trace { cgroup_id, meta } => (cgroup_id, meta),
            other => panic!("expected Trace, got {other:?}"),
        }
    }

    pub async fn next_untrace(&mut self) -> u64 {
        match self.next().await {
            K8sUpdate::Untrace { cgroup_id } => cgroup_id,
            other => panic!("expected Untrace, got {other:?}"),
        }
    }

    /// Waits up to 20 s (a few watch-error backoffs, which are jittered)
    /// for `done` to hold, asserting that no update arrives meanwhile.
    pub async fn quiet_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            if tokio::time::Instant::now() >= deadline {
                panic!("not within 20 s: {what}");
            }
            if let Ok(u) = tokio::time::timeout(Duration::from_millis(50), self.rx.recv()).await {
                panic!("expected no update while waiting for {what}, got {u:?}");
            }
        }
    }

    /// Asserts no update arrives for `d`.
    pub async fn quiet(&mut self, d: Duration) {
        if let Ok(u) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("expected no update, got {u:?}");
        }
    }
}
