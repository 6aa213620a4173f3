//! Where a TLS hook goes so that the kernel emulates the probed instruction
//! instead of single-stepping it.
//!
//! A uprobe puts a breakpoint over an instruction. When it is hit, x86-64
//! Linux either emulates the instruction (a push of a register, a nop, a
//! relative call or jump) or runs a copy of it with the trap flag set: a
//! single step, one more exception. Hypervisors on AMD intercept every debug
//! exception, so in such VMs the single step is a VM exit. Measured on this
//! project's 2-vCPU AMD VM with nginx over TLS at 1,000 requests/s: a probe
//! on `SSL_read`'s first instruction (`sub $0x18,%rsp` in Debian's
//! libssl.so.3) cost nginx ~27 µs per call, ~80 µs per request, while the
//! same probes on the `push %r13` that starts the function `SSL_read` calls
//! cost it ~3 µs per call (README → Performance).
//!
//! OpenSSL's `SSL_read(ssl, buf, num)` and `SSL_read_ex(ssl, buf, num,
//! &count)` both call an internal `ssl_read_internal(ssl, buf, num,
//! &count)` first (likewise for writes); that callee's entry can carry the
//! `_ex` programs (count through the fourth argument) for both wrappers.
//! The callee is found by decoding the wrapper, and used only when the
//! wrapper visibly passes its arguments on unchanged, so a differently
//! built library keeps the plain entry hooks.
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess,
    Register,
};

/// Whether Linux on x86-64 runs the instruction at the start of `code`
/// without a single step (arch/x86/kernel/uprobes.c: `branch_setup_xol_ops`
/// and, since 5.18, `push_setup_xol_ops`, which takes only the `41` REX
/// prefix). Prefixed forms the kernel would also take are answered `false`,
/// which only costs speed.
pub fn emulated(code: &[u8]) -> bool {
    matches!(
        code,
        [0x50..=0x57, ..]
            | [0x41, 0x50..=0x57, ..]
            | [0x90, ..]
            | [0xe8 | 0xe9 | 0xeb, ..]
            | [0x70..=0x7f, ..]
            | [0x0f, 0x80..=0x8f, ..]
    )
}

/// The functions (once each) of `hooks` whose probed instruction in `data`
/// is not [`emulated`].
pub fn single_stepped(data: &[u8], hooks: &[super::tls::Hook]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for h in hooks {
        let code = data.get(h.file_offset as usize..).unwrap_or_default();
        if !emulated(code) && !out.contains(&h.symbol) {
            out.push(h.symbol);
        }
    }
    out
}

/// How a wrapper passes its arguments to the internal function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapper {
    /// `SSL_read(ssl, buf, num)`: the count pointer is a local of its own.
    Plain,
    /// `SSL_read_ex(ssl, buf, num, count)`: passed through.
    Ex,
}

/// What a function does before its first call.
#[derive(Debug, Default)]
struct FirstCall {
    /// Target, in the same address space as the decoding.
    target: u64,
    rdi_written: bool,
    rsi_written: bool,
    rcx_written: bool,
    /// The last write of rcx made it a stack address (`mov %rsp,%rcx`,
    /// `lea d(%rsp),%rcx`).
    rcx_stack: bool,
}

/// The first direct call on the straight path from `ip` (conditional
/// branches are taken to fall through: in these wrappers they lead to error
/// paths). `None` if the path returns, jumps away, makes an indirect call
/// or does not decode within `code`.
fn first_call(code: &[u8], ip: u64) -> Option<FirstCall> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut seen = FirstCall::default();
    for insn in decoder.iter().take(32) {
        if insn.is_invalid() {
            return None;
        }
        match insn.flow_control() {
            FlowControl::Next | FlowControl::ConditionalBranch => {}
            FlowControl::Call if insn.code() == Code::Call_rel32_64 => {
                seen.target = insn.near_branch64();
                return Some(seen);
            }
            _ => return None,
        }
        for used in info.info(&insn).used_registers() {
            let written = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if !written {
                continue;
            }
            match used.register().full_register() {
                Register::RDI => seen.rdi_written = true,
                Register::RSI => seen.rsi_written = true,
                Register::RCX => {
                    seen.rcx_written = true;
                    seen.rcx_stack = match insn.mnemonic() {
                        Mnemonic::Mov => insn.op1_register() == Register::RSP,
                        Mnemonic::Lea => {
                            insn.memory_base() == Register::RSP
                                && insn.memory_index() == Register::None
                        }
                        _ => false,
                    };
                }
                _ => {}
            }
        }
    }
    None
}

/// The file offset of the internal function the wrapper at `entry` calls
/// with (ssl, buf, num, count pointer), if hooking it avoids a single step:
/// the wrapper's own first instruction is not emulated, the callee's is,
/// and the callee lies in `text` (the file range of the wrapper's section).
pub fn openssl_inner(
    data: &[u8],
    text: std::ops::Range<u64>,
    entry: u64,
    wrapper: Wrapper,
) -> Option<u64> {
    let code_at = |off: u64| -> Option<&[u8]> {
        if !text.contains(&off) {
            return None;
        }
        let end = text.end.min(off + 128).min(data.len() as u64);
        data.get(off as usize..end as usize)
    };
    let code = code_at(entry)?;
    if emulated(code) {
        return None;
    }
    let call = first_call(code, entry)?;
    let passes = match wrapper {
        Wrapper::Plain => !call.rdi_written && !call.rsi_written && call.rcx_stack,
        Wrapper::Ex => !call.rdi_written && !call.rsi_written && !call.rcx_written,
    };
    if !passes || call.target == entry {
        return None;
    }
    emulated(code_at(call.target)?).then_some(call.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SSL_read` of Debian 12's libssl.so.3 (OpenSSL 3.0), at file offset
    /// 0x35430; its first call goes to 0x35290.
    const SSL_READ: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, // mov %fs:0x28,%rax
        0x48, 0x89, 0x44, 0x24, 0x08, // mov %rax,0x8(%rsp)
        0x31, 0xc0, // xor %eax,%eax
        0x85, 0xd2, // test %edx,%edx
        0x78, 0x2f, // js (error path)
        0x48, 0x89, 0xe1, // mov %rsp,%rcx
        0x48, 0x63, 0xd2, // movslq %edx,%rdx
        0xe8, 0x3d, 0xfe, 0xff, 0xff, // call 0x35290
        0x85, 0xc0, // test %eax,%eax
    ];
    /// `SSL_read_ex` of the same library, at 0x354c0.
    const SSL_READ_EX: &[u8] = &[
        0x48, 0x83, 0xec, 0x08, // sub $0x8,%rsp
        0xe8, 0xc7, 0xfd, 0xff, 0xff, // call 0x35290
        0x31, 0xd2, // xor %edx,%edx
    ];
    /// `ssl_read_internal`'s first instructions.
    const INNER: &[u8] = &[0x41, 0x55, 0x41, 0x54, 0x55, 0x53];

    /// A fake file: the three functions at their offsets in libssl.so.3.
    fn image(plain: &[u8], ex: &[u8]) -> Vec<u8> {
        let mut data = vec![0xccu8; 0x36000];
        data[0x35290..0x35290 + INNER.len()].copy_from_slice(INNER);
        data[0x35430..0x35430 + plain.len()].copy_from_slice(plain);
        data[0x354c0..0x354c0 + ex.len()].copy_from_slice(ex);
        data
    }

    #[test]
    fn kernel_emulated_instructions() {
        assert!(emulated(&[0x55])); // push %rbp
        assert!(emulated(&[0x41, 0x57])); // push %r15
        assert!(emulated(&[0xe8, 0, 0, 0, 0]));
        assert!(emulated(&[0x0f, 0x84, 0, 0, 0, 0])); // je rel32
        assert!(!emulated(&[0x48, 0x83, 0xec, 0x18])); // sub $0x18,%rsp
        assert!(!emulated(&[0xf3, 0x0f, 0x1e, 0xfa])); // endbr64
        assert!(!emulated(&[0x48, 0x50])); // REX.W push: not taken
        assert!(!emulated(&[]));
    }

    #[test]
    fn both_wrappers_lead_to_the_internal_function() {
        let data = image(SSL_READ, SSL_READ_EX);
        let text = 0x1000..0x36000;
        assert_eq!(
            openssl_inner(&data, text.clone(), 0x35430, Wrapper::Plain),
            Some(0x35290)
        );
        assert_eq!(
            openssl_inner(&data, text, 0x354c0, Wrapper::Ex),
            Some(0x35290)
        );
    }

    #[test]
    fn anything_else_keeps_the_entry() {
        let text = 0x1000..0x36000;
        // The count pointer is not a stack address (OpenSSL 3.2's
        // `ssl_write_internal(s, buf, num, 0, &written)` passes flags there).
        let mut plain = SSL_READ.to_vec();
        plain[24..27].copy_from_slice(&[0x31, 0xc9, 0x90]); // xor %ecx,%ecx; nop
        let data = image(&plain, SSL_READ_EX);
        assert_eq!(
            openssl_inner(&data, text.clone(), 0x35430, Wrapper::Plain),
            None
        );
        // An _ex wrapper that does not pass its count pointer through.
        let data = image(
            SSL_READ,
            &[0x48, 0x89, 0xe1, 0xe8, 0xc8, 0xfd, 0xff, 0xff], // mov %rsp,%rcx; call 0x35290
        );
        assert_eq!(
            openssl_inner(&data, text.clone(), 0x354c0, Wrapper::Ex),
            None
        );
        // A wrapper that already starts with an emulated instruction.
        let mut pushes = vec![0x55];
        pushes.extend_from_slice(SSL_READ_EX);
        let data = image(SSL_READ, &pushes);
        assert_eq!(
            openssl_inner(&data, text.clone(), 0x354c0, Wrapper::Ex),
            None
        );
        // A callee whose first instruction is single-stepped anyway.
        let mut data = image(SSL_READ, SSL_READ_EX);
        data[0x35290..0x35294].copy_from_slice(&[0x48, 0x83, 0xec, 0x18]);
        assert_eq!(
            openssl_inner(&data, text.clone(), 0x354c0, Wrapper::Ex),
            None
        );
        // A callee outside the section.
        let data = image(SSL_READ, SSL_READ_EX);
        assert_eq!(
            openssl_inner(&data, 0x35400..0x36000, 0x354c0, Wrapper::Ex),
            None
        );
        // Returning before any call.
        let data = image(&[0x48, 0x83, 0xec, 0x08, 0xc3], SSL_READ_EX);
        assert_eq!(openssl_inner(&data, text, 0x35430, Wrapper::Plain), None);
    }
}
