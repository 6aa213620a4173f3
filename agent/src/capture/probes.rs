//! Loading the embedded probes, attaching them, and steering their filter.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, SockHash},
    programs::{
        CgroupAttachMode, RawTracePoint, SkMsg, SockOps, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use seam_common::{Config, Probe, STATS_LEN, mode, stat};

use super::{tls, tracefs};

/// The TLS uprobe programs (attached later, per library file).
const UPROBES: &[&str] = &[
    "tls_write",
    "tls_write_ex",
    "tls_read",
    "tls_read_ex",
    "tls_handshake",
    "tls_free",
    tls::RETURN_PROGRAM,
    "go_tls_write",
    "go_tls_read",
    "go_tls_ret",
];

/// The probe object built by `agent/build.rs`.
static PROBES_ELF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seam-probes"));

/// Every tracepoint program: (program, category, event).
pub(crate) const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("enter_read", "syscalls", "sys_enter_read"),
    ("exit_read", "syscalls", "sys_exit_read"),
    ("enter_write", "syscalls", "sys_enter_write"),
    ("exit_write", "syscalls", "sys_exit_write"),
    ("enter_readv", "syscalls", "sys_enter_readv"),
    ("exit_readv", "syscalls", "sys_exit_readv"),
    ("enter_writev", "syscalls", "sys_enter_writev"),
    ("exit_writev", "syscalls", "sys_exit_writev"),
    ("enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("enter_sendto", "syscalls", "sys_enter_sendto"),
    ("exit_sendto", "syscalls", "sys_exit_sendto"),
    ("enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("enter_sendfile", "syscalls", "sys_enter_sendfile64"),
    ("exit_sendfile", "syscalls", "sys_exit_sendfile64"),
    ("enter_fsync", "syscalls", "sys_enter_fsync"),
    ("exit_fsync", "syscalls", "sys_exit_fsync"),
    ("enter_fdatasync", "syscalls", "sys_enter_fdatasync"),
    ("exit_fdatasync", "syscalls", "sys_exit_fdatasync"),
    ("enter_pread", "syscalls", "sys_enter_pread64"),
    ("exit_pread", "syscalls", "sys_exit_pread64"),
    ("enter_pwrite", "syscalls", "sys_enter_pwrite64"),
    ("exit_pwrite", "syscalls", "sys_exit_pwrite64"),
    ("sched_switch", "sched", "sched_switch"),
    ("enter_openat", "syscalls", "sys_enter_openat"),
    ("exit_openat", "syscalls", "sys_exit_openat"),
    ("sock_send_length", "sock", "sock_send_length"),
    ("sock_recv_length", "sock", "sock_recv_length"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("process_fork", "sched", "sched_process_fork"),
    ("process_exec", "sched", "sched_process_exec"),
    ("process_exit", "sched", "sched_process_exit"),
];

/// Programs of [`TRACEPOINTS`] that are raw tracepoints: they take the
/// tracepoint's arguments, so the kernel fills no perf record for them. For
/// hooks that fire for every process of the node, whatever it is traced.
const RAW_TRACEPOINTS: &[&str] = &["sched_switch"];

/// Programs of [`TRACEPOINTS`] that only watch serving threads' file I/O and
/// time off the CPU: with gaps turned off they are not attached at all.
const GAP_PROGRAMS: &[&str] = &[
    "enter_fsync",
    "exit_fsync",
    "enter_fdatasync",
    "exit_fdatasync",
    "enter_pread",
    "exit_pread",
    "enter_pwrite",
    "exit_pwrite",
    "sched_switch",
    "enter_openat",
    "exit_openat",
];

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "tracefs is not mounted, so tracepoints cannot be attached; mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs,
    #[error(
        "the kernel refused to load the probes ({0}); seam needs root (or CAP_BPF + \
         CAP_PERFMON), Linux >= 6.3 with BTF at /sys/kernel/btf/vmlinux"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the probe object has no program `{0}` (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the probe object has no map `{0}` (build mismatch)")]
    MissingMap(&'static str),
    #[error("loading program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "attaching to tracepoint {category}:{event} failed ({source}); this kernel may \
         lack it (the sock:sock_*_length tracepoints need Linux >= 6.3)"
    )]
    Attach {
        category: &'static str,
        event: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> CaptureError {
    move |source| CaptureError::Map { name, source }
}

/// Which processes the probes report on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every process but the agent.
    #[default]
    All,
    /// Processes chosen by pid, executable name or listening port, plus their
    /// descendants.
    Allowlist {
        pids: Vec<u32>,
        exe_names: Vec<String>,
        ports: Vec<u16>,
    },
}

/// Handles on the filter maps, to change the traced set while running.
pub struct Selector {
    pids: HashMap<MapData, u32, u8>,
    comms: HashMap<MapData, [u8; 16], u8>,
    excluded: HashMap<MapData, u32, u8>,
    cgroups: HashMap<MapData, u64, u8>,
    ports: HashMap<MapData, u16, u8>,
    config: Array<MapData, Config>,
    agent_tgid: u32,
}

impl Selector {
    pub fn trace_pid(&mut self, pid: u32) -> Result<(), CaptureError> {
        if pid == self.agent_tgid {
            return Ok(());
        }
        self.pids.insert(pid, 1, 0).map_err(map_err("TRACED_PIDS"))
    }

    /// Stops tracing `pid`, whichever the mode: removed from the allowlist,
    /// added to the exclusions that apply when everything is traced.
    pub fn untrace_pid(&mut self, pid: u32) -> Result<(), CaptureError> {
        // Absent keys are fine: the probes remove exited processes themselves.
        let _ = self.pids.remove(&pid);
        self.excluded
            .insert(pid, 1, 0)
            .map_err(map_err("EXCLUDED_PIDS"))
    }

    /// Processes that exec a program of this name are traced by the probes
    /// at once. Names are compared as the kernel keeps them: their first 15
    /// bytes.
    pub fn trace_comm(&mut self, name: &str) -> Result<(), CaptureError> {
        let mut comm = [0u8; 16];
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        comm[..n].copy_from_slice(&bytes[..n]);
        self.comms
            .insert(comm, 1, 0)
            .map_err(map_err("TRACED_COMMS"))
    }

    pub fn trace_port(&mut self, port: u16) -> Result<(), CaptureError> {
        self.ports
            .insert(port, 1, 0)
            .map_err(map_err("TRACED_PORTS"))
    }

    pub fn trace_cgroup(&mut self, id: u64) -> Result<(), CaptureError> {
        // The probes look cgroups up from now on (before the first is
        // there, so none is missed); the flag stays set.
        let mut config = self.config.get(&0, 0).map_err(map_err("CONFIG"))?;
        if config.by_cgroup == 0 {
            config.by_cgroup = 1;
            self.config.set(0, config, 0).map_err(map_err("CONFIG"))?;
        }
        self.cgroups
            .insert(id, 1, 0)
            .map_err(map_err("TRACED_CGROUPS"))
    }

    pub fn untrace_cgroup(&mut self, id: u64) {
        let _ = self.cgroups.remove(&id);
    }

    /// Whether the probes may trace `pid` (and so report its exit): always
    /// when everything is traced or containers are selected by cgroup,
    /// else only if the allowlist has it. An untraced process's exit is
    /// never reported, so nothing may be kept for it.
    pub fn may_trace(&self, pid: u32) -> bool {
        let allowlist = self
            .config
            .get(&0, 0)
            .is_ok_and(|c| c.mode == seam_common::mode::ALLOWLIST);
        !allowlist || self.pids.get(&pid, 0).is_ok() || self.cgroups.keys().next().is_some()
    }

    /// Tgids in the allowlist now.
    pub fn traced_pids(&self) -> Vec<u32> {
        self.pids.keys().filter_map(Result::ok).collect()
    }

    /// Switches mode (see `seam_common::mode`).
    pub fn set_mode(&mut self, new_mode: u32) -> Result<(), CaptureError> {
        let mut config = self.config.get(&0, 0).map_err(map_err("CONFIG"))?;
        config.mode = new_mode;
        self.config.set(0, config, 0).map_err(map_err("CONFIG"))
    }
}

/// Per-probe counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// (probe, emitted, lost, read_failed)
    pub per_probe: Vec<(Probe, u64, u64, u64)>,
}

impl ProbeStats {
    pub fn lost(&self) -> u64 {
        self.per_probe.iter().map(|p| p.2).sum()
    }

    pub fn emitted(&self) -> u64 {
        self.per_probe.iter().map(|p| p.1).sum()
    }
}

/// The loaded probes. Dropping this detaches every program and frees every
/// map: nothing is pinned, so nothing outlives the agent.
pub struct Probes {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
    tracefs: PathBuf,
    sockhash: Option<SockHash<MapData, u64>>,
}

impl Probes {
    /// Loads (verifies) every program; attaches nothing yet.
    pub fn load(ring_buffer_bytes: u32) -> Result<Self, CaptureError> {
        let tracefs = tracefs::mount_point().ok_or(CaptureError::NoTracefs)?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(PROBES_ELF)
            .map_err(CaptureError::Load)?;
        for (name, _, _) in TRACEPOINTS {
            let program = ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram(name))?;
            let loaded = if RAW_TRACEPOINTS.contains(name) {
                <&mut RawTracePoint>::try_from(program).and_then(|p| p.load())
            } else {
                <&mut TracePoint>::try_from(program).and_then(|p| p.load())
            };
            loaded.map_err(|source| CaptureError::Program { name, source })?;
        }
        for name in UPROBES {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram(name))?
                .try_into()
                .map_err(|source| CaptureError::Program { name, source })?;
            program
                .load()
                .map_err(|source| CaptureError::Program { name, source })?;
        }
        let stats = PerCpuArray::try_from(
            ebpf.take_map("STATS")
                .ok_or(CaptureError::MissingMap("STATS"))?,
        )
        .map_err(map_err("STATS"))?;
        Ok(Self {
            ebpf,
            stats,
            tracefs,
            sockhash: None,
        })
    }

    /// Writes the filter, then attaches every program. Returns the selector
    /// for later changes.
    /// `gap_threshold_ns`: report file I/O and off-CPU waits of serving
    /// threads at least this long (`None`: do not watch them).
    pub fn start(
        &mut self,
        selection: &Selection,
        agent_tgid: u32,
        gap_threshold_ns: Option<u64>,
    ) -> Result<Selector, CaptureError> {
        let mut selector = Selector {
            pids: HashMap::try_from(self.take("TRACED_PIDS")?).map_err(map_err("TRACED_PIDS"))?,
            excluded: HashMap::try_from(self.take("EXCLUDED_PIDS")?)
                .map_err(map_err("EXCLUDED_PIDS"))?,
            comms: HashMap::try_from(self.take("TRACED_COMMS")?)
                .map_err(map_err("TRACED_COMMS"))?,
            cgroups: HashMap::try_from(self.take("TRACED_CGROUPS")?)
                .map_err(map_err("TRACED_CGROUPS"))?,
            ports: HashMap::try_from(self.take("TRACED_PORTS")?)
                .map_err(map_err("TRACED_PORTS"))?,
            config: Array::try_from(self.take("CONFIG")?).map_err(map_err("CONFIG"))?,
            agent_tgid,
        };
        let fork_offset = tracefs::fork_child_pid_offset(&self.tracefs).unwrap_or(0);
        let probe_mode = match selection {
            Selection::All => mode::ALL,
            Selection::Allowlist {
                pids,
                ports,
                exe_names,
            } => {
                for pid in pids {
                    selector.trace_pid(*pid)?;
                }
                for name in exe_names {
                    selector.trace_comm(name)?;
                }
                for port in ports {
                    selector.trace_port(*port)?;
                }
                mode::ALLOWLIST
            }
        };
        selector
            .config
            .set(
                0,
                Config {
                    mode: probe_mode,
                    agent_tgid,
                    fork_child_pid_offset: fork_offset,
                    gaps: u32::from(gap_threshold_ns.is_some()),
                    io_threshold_ns: gap_threshold_ns.unwrap_or(u64::MAX),
                    inject: 0,
                    by_cgroup: 0,
                    sample_threshold: 0,
                },
                0,
            )
            .map_err(map_err("CONFIG"))?;
        for (name, category, event) in TRACEPOINTS {
            if gap_threshold_ns.is_none() && GAP_PROGRAMS.contains(name) {
                continue;
            }
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram(name))?;
            let attached = if RAW_TRACEPOINTS.contains(name) {
                <&mut RawTracePoint>::try_from(program).and_then(|p| p.attach(event).map(drop))
            } else {
                <&mut TracePoint>::try_from(program)
                    .and_then(|p| p.attach(category, event).map(drop))
            };
            attached.map_err(|source| CaptureError::Attach {
                category,
                event,
                source,
            })?;
        }
        Ok(selector)
    }

    /// Hooks the TLS functions of one library or executable, for every
    /// process that maps it. Returns how many functions were hooked.
    pub fn attach_tls(&mut self, candidate: &tls::Candidate) -> Result<usize, String> {
        let mut hooked = 0;
        for hook in &candidate.hooks {
            let programs: &[&str] = match hook.ret {
                true => &[hook.program, tls::RETURN_PROGRAM],
                false => &[hook.program],
            };
            for program in programs {
                let p: &mut UProbe = self
                    .ebpf
                    .program_mut(program)
                    .ok_or_else(|| format!("no program {program}"))?
                    .try_into()
                    .map_err(|e| format!("{program}: {e}"))?;
                p.attach(
                    UProbeAttachLocation::AbsoluteOffset(hook.file_offset),
                    &candidate.path,
                    UProbeScope::AllProcesses,
                )
                .map_err(|e| format!("{} in {}: {e}", hook.symbol, candidate.path.display()))?;
            }
            hooked += 1;
        }
        Ok(hooked)
    }

    /// Turns on `traceparent` injection: the `sk_msg` program on the
    /// sockhash, `sock_ops` on the cgroup2 tree at `cgroup2` (every socket
    /// of the host passes there; only traced processes' client sockets join
    /// the sockhash). `sample_threshold` is the root sampler's rejection
    /// threshold for traces the probes start. On error nothing is changed
    /// and the caller carries on without injection.
    pub fn enable_injection(
        &mut self,
        selector: &mut Selector,
        cgroup2: &Path,
        sample_threshold: u64,
    ) -> Result<(), String> {
        let sockhash: SockHash<MapData, u64> = SockHash::try_from(
            self.take("SOCKHASH")
                .map_err(|e| format!("probe object: {e}"))?,
        )
        .map_err(|e| format!("sockhash: {e}"))?;
        let msg: &mut SkMsg = self
            .ebpf
            .program_mut("inject_msg")
            .ok_or("the probe object has no inject_msg program")?
            .try_into()
            .map_err(|e| format!("inject_msg: {e}"))?;
        msg.load()
            .map_err(|e| format!("loading the sk_msg program: {e}"))?;
        msg.attach(sockhash.fd())
            .map_err(|e| format!("attaching sk_msg to the sockhash: {e}"))?;
        let cgroup = std::fs::File::open(cgroup2)
            .map_err(|e| format!("opening cgroup2 root {}: {e}", cgroup2.display()))?;
        let ops: &mut SockOps = self
            .ebpf
            .program_mut("inject_sockops")
            .ok_or("the probe object has no inject_sockops program")?
            .try_into()
            .map_err(|e| format!("inject_sockops: {e}"))?;
        ops.load()
            .map_err(|e| format!("loading the sock_ops program: {e}"))?;
        // Through a BPF link (Linux 5.7+) the attachment coexists with other
        // programs on the cgroup whatever the mode; the kernel refuses the
        // multi flag on link creation.
        ops.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| format!("attaching sock_ops to {}: {e}", cgroup2.display()))?;
        // The map stays open through the program attached to it.
        self.sockhash = Some(sockhash);
        let mut config = selector.config.get(&0, 0).map_err(|e| e.to_string())?;
        config.inject = 1;
        config.sample_threshold = sample_threshold;
        selector.config.set(0, config, 0).map_err(|e| e.to_string())
    }

    fn take(&mut self, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
        self.ebpf
            .take_map(name)
            .ok_or(CaptureError::MissingMap(name))
    }

    /// The ring buffer, for the reader.
    pub fn ring(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        RingBuf::try_from(self.take("EVENTS")?).map_err(map_err("EVENTS"))
    }

    /// Counters of every probe, summed over CPUs.
    pub fn stats(&self) -> ProbeStats {
        let value = |i: u32| -> u64 {
            self.stats
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        debug_assert_eq!(STATS_LEN, Probe::COUNT * stat::COUNT);
        ProbeStats {
            per_probe: Probe::ALL
                .iter()
                .map(|p| {
                    let base = *p as u32 * stat::COUNT;
                    (
                        *p,
                        value(base + stat::EMITTED),
                        value(base + stat::LOST),
                        value(base + stat::READ_FAILED),
                    )
                })
                .collect(),
        }
    }
}
