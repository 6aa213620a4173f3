//! The first thing every process-context probe asks: is this process traced?
//! Untraced processes leave after one array lookup (and one hash lookup in
//! allowlist mode, two once containers are selected by cgroup).
use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};
use seam_common::mode;

use crate::maps::{CONFIG, EXCLUDED_PIDS, TRACED_CGROUPS, TRACED_PIDS};

/// The current mode, or `mode::OFF` before the agent configured the probes.
#[inline(always)]
pub fn current_mode() -> u32 {
    CONFIG.get(0).map_or(mode::OFF, |c| c.mode)
}

/// Whether the current task's process is traced.
#[inline(always)]
pub fn is_traced() -> bool {
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match config.mode {
        // SAFETY: read-only lookup of a plain value.
        mode::ALL => tgid != config.agent_tgid && unsafe { EXCLUDED_PIDS.get(&tgid) }.is_none(),
        mode::ALLOWLIST => {
            // SAFETY: read-only lookups of plain values.
            unsafe {
                TRACED_PIDS.get(&tgid).is_some()
                    || (config.by_cgroup != 0
                        && TRACED_CGROUPS.get(&bpf_get_current_cgroup_id()).is_some())
            }
        }
        _ => false,
    }
}
