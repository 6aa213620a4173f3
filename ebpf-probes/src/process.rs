//! Process lifetimes from `sched:*` tracepoints: children of traced processes
//! are traced from their first instruction (gunicorn forks its workers), and
//! the agent hears of exec and exit so pid reuse never mislabels a span.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use seam_common::{COMM_LEN, Probe, ProcEvent, kind, mode, proc_op};

use crate::{
    emit::output,
    filter::{current_mode, is_traced},
    maps::{CONFIG, SERVING, TRACED_COMMS, TRACED_PIDS},
};

#[inline(always)]
fn report(op: u32, pid: u32) {
    let mut comm = [0u8; COMM_LEN];
    if let Ok(c) = bpf_get_current_comm() {
        comm = c;
    }
    let event = ProcEvent {
        kind: kind::PROC,
        op,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid,
        _pad: 0,
        comm,
    };
    output(Probe::Process, &event);
}

/// `sched:sched_process_fork` (any kernel): in allowlist mode a traced parent's
/// child is traced too. The child pid's offset differs between kernels, so the
/// agent reads it from the format file into `Config::fork_child_pid_offset`.
#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    if config.mode != mode::ALLOWLIST || !is_traced() {
        return 0;
    }
    let offset = config.fork_child_pid_offset as usize;
    if offset == 0 || offset > 64 {
        return 0;
    }
    // A variable offset needs a helper read: direct context loads must be constant.
    // SAFETY: offset bounded above, inside the record.
    let Ok(child) = (unsafe { ctx.read_at::<u32>(offset) }) else {
        return 0;
    };
    let _ = TRACED_PIDS.insert(&child, &1, 0);
    0
}

/// `sched:sched_process_exec` (any kernel): every exec is reported (they are
/// rare) so the agent can match `--exe-name` and refresh service names.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let current = current_mode();
    if current == mode::OFF {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Selected by name: traced from its first instruction, not from whenever
    // the agent hears of it (a short-lived client would be gone by then).
    if current == mode::ALLOWLIST
        && let Ok(comm) = bpf_get_current_comm()
        // SAFETY: read-only lookup.
        && unsafe { TRACED_COMMS.get(&comm) }.is_some()
    {
        let _ = TRACED_PIDS.insert(&tgid, &1, 0);
    }
    report(proc_op::EXEC, tgid);
    0
}

/// `sched:sched_process_exit` (any kernel): a thread leaving. For a
/// process's main thread the agent frees what it kept for the pid. With an
/// allowlist every exit is reported, because every exec is, and the agent
/// reads each exec'ing process before it knows whether it will be traced.
#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A thread that dies while serving a request must not leave an off-CPU
    // entry at its last switch: `sched_switch` keys them by task pointer, and
    // the next task given this task_struct would inherit the wait.
    if let Some(s) = SERVING.get_ptr_mut(&pid_tgid) {
        // SAFETY: map value pointer valid for this program run.
        unsafe { (*s).sock = 0 };
    }
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid != tid {
        return 0;
    }
    let current = current_mode();
    let traced = is_traced();
    if current == mode::ALLOWLIST {
        if traced {
            let _ = TRACED_PIDS.remove(&tgid);
        }
    } else if !traced {
        return 0;
    }
    report(proc_op::EXIT, tgid);
    0
}
