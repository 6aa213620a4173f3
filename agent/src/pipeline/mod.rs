//! Wires the stages together and runs them until a signal arrives.
//!
//! capture (ring buffer reader) → conn (connections, protocols) → stitch
//! (ids, parents, gaps, redaction, routes) → policy (RED metrics, sampling)
//! run in one task, one drain at a time ([`stages`]); the bounded queue to
//! export never blocks: spans that do not fit are dropped and counted.
mod stages;

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::SignalKind,
    sync::{mpsc, oneshot},
};

use crate::{
    capture::{self, ProbeStats, Probes, Selection, reader::Ring, tls},
    clock::Clock,
    config::AgentConfig,
    conn::{ConnConfig, ConnTracker},
    discover::{
        self,
        k8s::{self, K8sUpdate},
        sockets,
    },
    export::{self, Output},
    metrics::{
        self, Counters,
        serve::{Observed, StatusFigures},
        status_line::{self, StatusLine},
    },
    policy::tail::TailSampler,
    preflight::{self, Feature},
    span::Span,
    stitch::{Stitcher, attrs::Shaper},
};
use stages::{Outlets, Stages};

const PROC: &str = "/proc";

/// Runs the agent until SIGINT or SIGTERM. Checks the machine first: what
/// the agent cannot work without stops it before anything is loaded; what
/// it can do without is turned off with one log line each.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let report = preflight::run(&config.disabled_features);
    if let Some(message) = report.fatal_message() {
        anyhow::bail!(message);
    }
    let tls_on = match report.usable(Feature::Uprobes) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("TLS plaintext capture off ({why}); plaintext traffic is still traced");
            false
        }
    };
    let inject = config.inject_traceparent && {
        let why: Vec<String> = [Feature::SkMsg, Feature::SockOps, Feature::Cgroup2]
            .into_iter()
            .filter_map(|f| report.usable(f).err())
            .collect();
        if !why.is_empty() {
            tracing::warn!(
                "traceparent injection off ({}); tracing carries on without it",
                why.join("; ")
            );
        }
        why.is_empty()
    };
    let counters = Arc::new(Counters::default());
    let observed = Arc::new(Observed::new(counters.clone()));
    let agent_pid = std::process::id();
    let proc_root = Path::new(PROC);
    let shaper = Shaper::new(&config.redact, &config.routes).map_err(anyhow::Error::msg)?;

    let _endpoint = match config.metrics_listen {
        Some(addr) => match metrics::serve::serve(addr, observed.clone()).await {
            Ok((bound, task)) => {
                tracing::info!("serving /metrics, /healthz, /readyz and /status on http://{bound}");
                Some(AbortOnDrop(task))
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "metrics endpoint disabled: cannot listen");
                None
            }
        },
        None => None,
    };

    let mut probes = Probes::load(config.ring_buffer_bytes)?;
    let selection = resolve_selection(&config.selection, proc_root);
    let mut selector = probes.start(&selection, agent_pid, config.stitch.gap_threshold_ns)?;
    if inject {
        let enabled = crate::discover::k8s::cgroup::find_cgroup2_mount()
            .ok_or_else(|| "no cgroup2 file system is mounted".to_string())
            .and_then(|root| {
                probes.enable_injection(
                    &mut selector,
                    &root,
                    config.stitch.sampler.root_threshold(),
                )
            });
        match enabled {
            Ok(()) => tracing::info!("traceparent injection on for outgoing plaintext HTTP/1"),
            Err(e) => {
                tracing::warn!("traceparent injection unavailable, carrying on without it: {e}")
            }
        }
    }
    // After attaching, so that every connection is either in this scan or
    // seen by the probes from its handshake.
    let scan = sockets::scan(proc_root, agent_pid);
    if let Selection::Allowlist { ports, .. } = &config.selection {
        for port in ports {
            for pid in scan.listeners.get(port).into_iter().flatten() {
                selector.trace_pid(*pid)?;
            }
        }
    }
    exclude_local_backend(&config.output, &scan, &mut selector);

    let traced_pids = selector.traced_pids();
    let preexisting = scan.connections.len();
    let (span_tx, span_rx) = mpsc::channel::<Vec<Span>>(1024);
    let (console_tx, console_rx) = mpsc::channel::<Vec<Span>>(1024);

    let exe_names = match &config.selection {
        Selection::Allowlist { exe_names, .. } => exe_names.clone(),
        Selection::All => Vec::new(),
    };
    let mut tracker = ConnTracker::new(
        ConnConfig {
            exe_names,
            ..ConnConfig::default()
        },
        scan.connections,
        Some(selector),
        counters.clone(),
    );
    let (k8s_tx, k8s_rx) = mpsc::channel::<K8sUpdate>(256);
    let (_k8s_task, k8s_rx) = match &config.k8s {
        Some(k) => {
            if let Some(mount) = k8s::find_cgroup2_mount() {
                tracker.enable_k8s(mount);
            }
            tracing::info!(
                node = k.node_name.as_str(),
                label = k.label_key.as_str(),
                "Kubernetes mode: tracing pods of this node that opt in by label"
            );
            let k = k.clone();
            let task = AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = k8s::run(k, k8s_tx).await {
                    tracing::error!(error = %e, "Kubernetes discovery stopped");
                }
            }));
            (Some(task), Some(k8s_rx))
        }
        None => (None, None),
    };
    // New executables (and the libraries their loader maps right after) are
    // checked for TLS functions shortly after exec.
    let (exec_tx, mut exec_rx) = mpsc::channel::<u32>(1024);
    let (scan_tx, mut scan_rx) = mpsc::channel::<u32>(1024);
    let stages = Stages::new(
        tracker,
        Stitcher::new(config.stitch.clone(), Clock::new(), shaper),
        config.tail.clone().map(TailSampler::new),
        Outlets {
            spans: span_tx,
            console: config.console_too.then_some(console_tx),
            exec: exec_tx,
        },
        observed.clone(),
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    let ring = Ring::new(probes.ring()?);
    let mut pipeline = tokio::spawn(stages::run(ring, stages, k8s_rx, stop_rx));

    let export_task = tokio::spawn(export::run(
        span_rx,
        config.output.clone(),
        config.batch.clone(),
        counters.clone(),
        Duration::from_secs(5),
    ));
    let console_task = tokio::spawn(export::run(
        console_rx,
        Output::Console(config.console_format),
        config.batch.clone(),
        Arc::new(Counters::default()),
        Duration::ZERO,
    ));

    let mut tls_finder = tls::TlsFinder::default();
    if tls_on {
        let mut found = tls_finder.scan_library_dirs(Path::new("/"));
        for pid in discover::all_pids(proc_root) {
            if pid != agent_pid {
                found.extend(tls_finder.scan_process(proc_root, pid));
            }
        }
        hook_tls(&mut probes, &mut tls_finder, found, &observed);
    }
    // Said once everything is attached and running: traffic is traced now.
    describe_start(&config, &traced_pids, preexisting);
    let _metrics_export = match (&config.output, config.metrics_export_interval) {
        (Output::Otlp(settings), Some(every)) => {
            let client = export::otlp::OtlpClient::new(settings).map_err(anyhow::Error::msg)?;
            Some(AbortOnDrop(tokio::spawn(export::otlp_metrics::run(
                client,
                observed.clone(),
                every,
                Clock::new(),
            ))))
        }
        _ => None,
    };
    observed.ready.store(true, Relaxed);
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    let mut last_lost = 0u64;
    let mut last_report = Instant::now();
    let mut pipeline_result = None;
    let mut status = config.status_line.then(StatusLine::default);
    let stop = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            r = &mut pipeline => {
                pipeline_result = Some(r);
                break "the ring buffer reader stopped";
            }
            Some(pid) = exec_rx.recv(), if tls_on => {
                let scan_tx = scan_tx.clone();
                tokio::spawn(async move {
                    for wait in [50, 450, 2000] {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        if scan_tx.send(pid).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Some(pid) = scan_rx.recv() => {
                let found = tls_finder.scan_process(proc_root, pid);
                hook_tls(&mut probes, &mut tls_finder, found, &observed);
            }
            _ = refresh.tick() => {
                let stats = probes.stats();
                if last_report.elapsed() >= Duration::from_secs(10) {
                    last_lost = report_losses(&stats, last_lost, &counters);
                    last_report = Instant::now();
                }
                *observed.probes.lock().expect("not poisoned") = stats;
                if let Some(status) = status.as_mut() {
                    status.refresh(&StatusFigures::of(&observed));
                }
            }
        }
    };
    status_line::clear();
    observed.ready.store(false, Relaxed);
    tracing::info!(
        signal = stop,
        "stopping: detaching probes and flushing spans"
    );
    let final_stats = probes.stats();
    // Dropping the probes detaches every program; nothing was pinned.
    drop(probes);
    let result = match pipeline_result {
        Some(r) => r,
        None => {
            let _ = stop_tx.send(());
            pipeline.await
        }
    };
    match result.context("pipeline")? {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "reading the ring buffer failed"),
    }
    if let Err(e) = export_task.await.context("export stage")? {
        tracing::error!(error = %e, "export stage failed");
    }
    let _ = console_task.await;
    summary(&final_stats, &counters);
    Ok(())
}

/// Hooks the TLS functions of each file that defines them; files that do
/// not (most executables) are skipped quietly.
fn hook_tls(
    probes: &mut Probes,
    finder: &mut tls::TlsFinder,
    paths: Vec<std::path::PathBuf>,
    observed: &Observed,
) {
    for path in paths {
        let Ok(candidate) = tls::hooks_in(&path).or_else(|_| capture::gotls::go_hooks_in(&path))
        else {
            continue;
        };
        match probes.attach_tls(&candidate) {
            Ok(n) => {
                tracing::info!(
                    library = candidate.library,
                    path = %candidate.path.display(),
                    functions = n,
                    single_stepped = ?candidate.single_stepped,
                    "TLS: hooked"
                );
                finder.attached.push(candidate);
                observed.tls_attached.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "TLS: could not hook");
                finder.failures.insert(path.display().to_string(), e);
                observed.tls_failures.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pids for names and ports, found in /proc now; later ones are added as
/// they exec (names) or listen (ports, by the probes).
fn resolve_selection(selection: &Selection, proc_root: &Path) -> Selection {
    match selection {
        Selection::All => Selection::All,
        Selection::Allowlist {
            pids,
            exe_names,
            ports,
        } => {
            let mut all = pids.clone();
            if !exe_names.is_empty() {
                all.extend(discover::pids_named(proc_root, exe_names));
            }
            // Children forked later are added by the probes; those forked
            // already (pre-fork servers' workers) are added here.
            all.extend(discover::descendants(proc_root, &all));
            all.sort_unstable();
            all.dedup();
            Selection::Allowlist {
                pids: all,
                exe_names: exe_names.clone(),
                ports: ports.clone(),
            }
        }
    }
}

/// Tracing the collector seam exports to would trace seam's own exports.
fn exclude_local_backend(
    output: &Output,
    scan: &sockets::SocketScan,
    selector: &mut capture::Selector,
) {
    let Output::Otlp(settings) = output else {
        return;
    };
    let Ok(uri) = settings.url.parse::<http::Uri>() else {
        return;
    };
    let local = matches!(
        uri.host(),
        Some("localhost" | "127.0.0.1" | "::1" | "[::1]")
    );
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    if !local {
        return;
    }
    for pid in scan.listeners.get(&port).into_iter().flatten() {
        match selector.untrace_pid(*pid) {
            Ok(()) => tracing::info!(pid, port, "not tracing the local OTLP backend"),
            Err(e) => {
                tracing::warn!(pid, error = %e, "could not exclude the local OTLP backend")
            }
        }
    }
}

fn describe_start(config: &AgentConfig, traced_pids: &[u32], preexisting: usize) {
    let what = match &config.selection {
        Selection::All => "every process except seam".to_string(),
        Selection::Allowlist { .. } => format!("processes {traced_pids:?} and their children"),
    };
    let to = match &config.output {
        Output::Console(_) => "the console".to_string(),
        Output::Otlp(s) => format!("{} ({})", s.url, s.protocol.as_str()),
    };
    tracing::info!(
        "seam {} tracing {what}; spans go to {to}; sampler {}; {preexisting} existing connections found",
        env!("CARGO_PKG_VERSION"),
        config.stitch.sampler.description(),
    );
}

fn report_losses(stats: &ProbeStats, last_lost: u64, counters: &Counters) -> u64 {
    let lost = stats.lost();
    if lost > last_lost {
        let per: Vec<String> = stats
            .per_probe
            .iter()
            .filter(|p| p.2 > 0)
            .map(|p| format!("{}={}", p.0.name(), p.2))
            .collect();
        tracing::warn!(
            lost = lost - last_lost,
            total = lost,
            per_probe = per.join(","),
            connections_resynced = metrics::get(&counters.loss_resyncs),
            "ring buffer full: events lost (raise --ring-buffer-mib)"
        );
    }
    tracing::debug!(counters = ?counters.snapshot(), "pipeline");
    lost
}

fn summary(stats: &ProbeStats, counters: &Counters) {
    tracing::info!(
        events = stats.emitted(),
        lost = stats.lost(),
        requests = metrics::get(&counters.requests_seen),
        spans_exported = metrics::get(&counters.spans_exported),
        spans_dropped = metrics::spans_dropped(counters),
        "seam stopped"
    );
}
