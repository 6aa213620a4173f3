//! seam's kernel side. Syscall tracepoints capture the first bytes of each
//! socket transfer of traced processes; `sock:*` tracepoints tie each transfer
//! to its TCP connection without kprobes; `sched:*` tracepoints follow process
//! lifetimes. Everything reaches the agent through one ring buffer.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod ctx;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod filter;
#[cfg(target_arch = "bpf")]
mod gaps;
#[cfg(target_arch = "bpf")]
mod go_tls;
#[cfg(target_arch = "bpf")]
mod inject;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs whose panic paths survive
    // optimisation, so this is never reached at run time.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The kernel only grants `bpf_probe_read_user` and friends to GPL programs.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (clippy, `cargo test --workspace`) see an empty program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
