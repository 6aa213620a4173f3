//! Wires the stages together and runs them until a signal arrives.
//!
//! capture (ring buffer reader) → conn (connections, protocols) → stitch
//! (ids, parents, gaps, redaction, routes) → policy (RED metrics, sampling)
//! → export. Each arrow is a bounded channel. The first three block when
//! full, so overload turns into ring buffer losses the kernel counts per
//! probe; the ones into export never block: spans that do not fit are
//! dropped and counted.
use std::{
    path::Path,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{signal::unix::SignalKind, sync::mpsc};

use crate::{
    capture::{self, Event, ProbeStats, Probes, Selection, tls},
    clock::Clock,
    config::AgentConfig,
    conn::reorder::Reorder,
    conn::{ConnConfig, ConnTracker, Record},
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
    let (event_tx, mut event_rx) = mpsc::channel::<Vec<Event>>(256);
    let (record_tx, mut record_rx) = mpsc::channel::<Vec<Record>>(256);
    let (policy_tx, mut policy_rx) = mpsc::channel::<Vec<Span>>(256);
    let (span_tx, span_rx) = mpsc::channel::<Vec<Span>>(1024);
    let (console_tx, console_rx) = mpsc::channel::<Vec<Span>>(1024);

    let ring = probes.ring()?;
    let mut reader = tokio::spawn(capture::reader::run(ring, event_tx, counters.clone()));

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
    let (k8s_tx, mut k8s_rx) = mpsc::channel::<K8sUpdate>(256);
    let _k8s_task = match &config.k8s {
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
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = k8s::run(k, k8s_tx).await {
                    tracing::error!(error = %e, "Kubernetes discovery stopped");
                }
            })))
        }
        None => {
            drop(k8s_tx);
            None
        }
    };
    // New executables (and the libraries their loader maps right after) are
    // checked for TLS functions shortly after exec.
    let (exec_tx, mut exec_rx) = mpsc::channel::<u32>(1024);
    let (scan_tx, mut scan_rx) = mpsc::channel::<u32>(1024);
    let conn_observed = observed.clone();
    let conn_task = tokio::spawn(async move {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut drain = tokio::time::interval(Duration::from_millis(5));
        let mut reorder = Reorder::default();
        let mut out = Vec::new();
        let mut k8s_open = true;
        loop {
            tokio::select! {
                batch = event_rx.recv() => match batch {
                    Some(batch) => {
                        for event in batch {
                            if let Event::Exec { pid, .. } = &event {
                                let _ = exec_tx.try_send(*pid);
                            }
                            reorder.push(event);
                        }
                        reorder.release(Clock::monotonic_now(), |e| tracker.handle(e, &mut out));
                    }
                    None => {
                        reorder.flush(|e| tracker.handle(e, &mut out));
                        let _ = record_tx.send(std::mem::take(&mut out)).await;
                        break;
                    }
                },
                _ = drain.tick(), if !reorder.is_empty() => {
                    reorder.release(Clock::monotonic_now(), |e| tracker.handle(e, &mut out));
                }
                update = k8s_rx.recv(), if k8s_open => match update {
                    Some(update) => {
                        tracker.apply_k8s(update);
                        conn_observed.traced_cgroups.store(tracker.traced_cgroups() as u64, Relaxed);
                    }
                    None => k8s_open = false,
                },
                _ = sweep.tick() => {
                    tracker.sweep(Clock::monotonic_now(), &mut out);
                    conn_observed.traced_processes.store(tracker.processes() as u64, Relaxed);
                }
            }
            if !out.is_empty() && record_tx.send(std::mem::take(&mut out)).await.is_err() {
                break;
            }
        }
    });

    let stitch_config = config.stitch.clone();
    let stitch_observed = observed.clone();
    let stitch_task = tokio::spawn(async move {
        let mut stitcher = Stitcher::new(stitch_config, Clock::new(), shaper);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut spans = Vec::new();
        loop {
            tokio::select! {
                records = record_rx.recv() => match records {
                    Some(records) => for r in records {
                        stitcher.push(r);
                    },
                    None => break,
                },
                _ = tick.tick() => {}
            }
            stitcher.release(Clock::monotonic_now(), &mut spans);
            if !spans.is_empty() && policy_tx.send(std::mem::take(&mut spans)).await.is_err() {
                return;
            }
            stitch_observed
                .routes_overflowed
                .store(stitcher.routes_overflowed(), Relaxed);
        }
        stitcher.flush(&mut spans);
        if !spans.is_empty() {
            let _ = policy_tx.send(spans).await;
        }
    });

    let policy_counters = counters.clone();
    let policy_observed = observed.clone();
    let console_too = config.console_too;
    let tail_config = config.tail.clone();
    let policy_task = tokio::spawn(async move {
        let mut tail = tail_config.map(TailSampler::new);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // The exporter takes spans as fast as they come; this only fills
        // if it is starved of CPU. Such drops are said like the exporter's.
        let mut drops = export::drops::DropLog::new(export::sender::DROP_LOG_EVERY);
        let mut send = |spans: Vec<Span>| {
            if spans.is_empty() {
                return;
            }
            let n = spans.len() as u64;
            if console_too {
                let _ = console_tx.try_send(spans.clone());
            }
            if span_tx.try_send(spans).is_err() {
                metrics::add(&policy_counters.spans_dropped_queue_full, n);
                let line = drops.note(
                    export::drops::Reason::QueueFull,
                    n,
                    Some("the exporter is not keeping up"),
                    Instant::now(),
                );
                if let Some(line) = line {
                    tracing::warn!("{line}");
                }
            }
        };
        let mut kept = Vec::new();
        loop {
            tokio::select! {
                batch = policy_rx.recv() => match batch {
                    Some(spans) => {
                        let mut red = policy_observed.red.lock().expect("not poisoned");
                        for s in &spans {
                            red.record(s);
                        }
                        drop(red);
                        metrics::add(&policy_counters.spans_created, spans.len() as u64);
                        for s in spans {
                            if s.flags & 1 == 0 {
                                metrics::inc(&policy_counters.spans_unsampled);
                            } else if let Some(t) = tail.as_mut() {
                                t.push(s, Instant::now());
                            } else {
                                kept.push(s);
                            }
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            if let Some(t) = tail.as_mut() {
                t.poll(Instant::now(), &mut kept);
                *policy_observed.tail.lock().expect("not poisoned") = Some(t.stats());
            }
            send(std::mem::take(&mut kept));
        }
        if let Some(t) = tail.as_mut() {
            t.flush(&mut kept);
        }
        send(kept);
        if let Some(line) = drops.flush(Instant::now()) {
            tracing::warn!("{line}");
        }
    });

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
    let mut reader_result = None;
    let mut status = config.status_line.then(StatusLine::default);
    let stop = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            r = &mut reader => {
                reader_result = Some(r);
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
    match reader_result {
        None => {
            reader.abort();
            let _ = reader.await;
        }
        Some(Ok(Err(e))) => tracing::error!(error = %e, "reading the ring buffer failed"),
        Some(_) => {}
    }
    conn_task.await.context("connection stage")?;
    stitch_task.await.context("stitch stage")?;
    policy_task.await.context("policy stage")?;
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
