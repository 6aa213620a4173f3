//! Go binaries: where `crypto/tls.(*Conn).Read` and `Write` are, and where
//! they return. Symbols come from `.symtab`, or from `.gopclntab` (which Go
//! keeps in stripped binaries, since its runtime needs it). Return
//! instructions are found by decoding the functions' machine code, because
//! the TLS probes must not use return probes on goroutine stacks.
use std::{collections::HashMap, fs, path::Path};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::tls::{Candidate, Hook};

pub const WRITE: &str = "crypto/tls.(*Conn).Write";
pub const READ: &str = "crypto/tls.(*Conn).Read";

/// A function: virtual address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    pub address: u64,
    pub size: u64,
}

/// Functions named in a Go 1.18+ `.gopclntab` (magic 0xfffffff0, 0xfffffff1).
pub fn pclntab_funcs(tab: &[u8], wanted: &[&str]) -> Result<HashMap<String, Func>, String> {
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(tab.get(o..o + 4)?.try_into().ok()?)) };
    let magic = u32_at(0).ok_or("pclntab too short")?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(format!("pclntab magic {magic:#x}: Go older than 1.18"));
    }
    let ptr = *tab.get(7).ok_or("pclntab too short")? as usize;
    if ptr != 8 {
        return Err(format!("pclntab pointer size {ptr}: only 64-bit binaries"));
    }
    let word = |i: usize| -> Option<u64> {
        let o = 8 + i * 8;
        Some(u64::from_le_bytes(tab.get(o..o + 8)?.try_into().ok()?))
    };
    let bad = || "pclntab header truncated".to_string();
    let nfunc = word(0).ok_or_else(bad)? as usize;
    let text_start = word(2).ok_or_else(bad)?;
    let funcname = word(3).ok_or_else(bad)? as usize;
    let pcln = word(7).ok_or_else(bad)? as usize;
    let entry = |i: usize| -> Option<(u32, u32)> {
        let o = pcln + i * 8;
        Some((u32_at(o)?, u32_at(o + 4)?))
    };
    let name_at = |off: usize| -> Option<&str> {
        let start = funcname.checked_add(off)?;
        let rest = tab.get(start..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    };
    let mut found = HashMap::new();
    for i in 0..nfunc {
        let (entry_off, func_off) = entry(i).ok_or("functab truncated")?;
        let Some(name_off) = u32_at(pcln + func_off as usize + 4) else {
            continue;
        };
        let Some(name) = name_at(name_off as usize) else {
            continue;
        };
        if wanted.contains(&name) {
            let (next, _) = entry(i + 1).ok_or("functab truncated")?;
            found.insert(
                name.to_string(),
                Func {
                    address: text_start + entry_off as u64,
                    size: (next.saturating_sub(entry_off)) as u64,
                },
            );
        }
    }
    Ok(found)
}

/// Offsets (from the function's start) of its return instructions.
pub fn return_offsets(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut out = Vec::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            break;
        }
        if insn.mnemonic() == Mnemonic::Ret {
            out.push(insn.ip() - address);
        }
    }
    out
}

/// The Go TLS hooks of an executable, or why there are none.
pub fn go_hooks_in(path: &Path) -> Result<Candidate, String> {
    let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: read-only mapping; a concurrent truncation fails the parse.
    let data =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    let elf =
        object::File::parse(&*data).map_err(|e| format!("{}: not ELF: {e}", path.display()))?;
    let pclntab = elf.section_by_name(".gopclntab");
    if pclntab.is_none() && elf.section_by_name(".go.buildinfo").is_none() {
        return Err(format!("{}: not a Go binary", path.display()));
    }
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(format!(
            "{}: Go TLS hooks support amd64 only",
            path.display()
        ));
    }
    let wanted = [WRITE, READ];
    let mut funcs: HashMap<String, Func> = elf
        .symbols()
        .filter_map(|s| {
            let name = s.name().ok()?;
            wanted.contains(&name).then(|| {
                (
                    name.to_string(),
                    Func {
                        address: s.address(),
                        size: s.size(),
                    },
                )
            })
        })
        .collect();
    if funcs.len() < 2 {
        let tab = pclntab
            .ok_or_else(|| format!("{}: stripped and without .gopclntab", path.display()))?
            .data()
            .map_err(|e| format!("{}: .gopclntab: {e}", path.display()))?;
        funcs = pclntab_funcs(tab, &wanted).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if funcs.len() < 2 {
        return Err(format!(
            "{}: no crypto/tls in this Go binary",
            path.display()
        ));
    }
    let text = elf
        .section_by_name(".text")
        .ok_or_else(|| format!("{}: no .text", path.display()))?;
    let (text_file_off, _) = text.file_range().ok_or("no .text bytes")?;
    let text_data = text.data().map_err(|e| e.to_string())?;
    let file_offset = |vaddr: u64| vaddr - text.address() + text_file_off;
    let mut hooks = Vec::new();
    for (name, program) in [(WRITE, "go_tls_write"), (READ, "go_tls_read")] {
        let f = funcs[name];
        let start = (f.address - text.address()) as usize;
        let code = text_data
            .get(start..start + f.size as usize)
            .ok_or_else(|| format!("{name} lies outside .text"))?;
        let rets = return_offsets(code, f.address);
        if rets.is_empty() {
            return Err(format!(
                "{}: no return instruction found in {name}",
                path.display()
            ));
        }
        hooks.push(Hook {
            symbol: name,
            program,
            file_offset: file_offset(f.address),
            ret: false,
        });
        for r in rets {
            hooks.push(Hook {
                symbol: name,
                program: "go_tls_ret",
                file_offset: file_offset(f.address + r),
                ret: false,
            });
        }
    }
    Ok(Candidate {
        path: path.to_path_buf(),
        single_stepped: super::tls_site::single_stepped(&data, &hooks),
        hooks,
        library: "go",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_returns_not_bytes_that_look_like_them() {
        // mov eax, 0xc3c3c3c3 ; ret ; nop ; ret 8
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x90, 0xc2, 0x08, 0x00];
        assert_eq!(return_offsets(&code, 0x1000), vec![5, 7]);
    }

    #[test]
    fn pclntab_rejects_old_or_foreign_tables() {
        assert!(pclntab_funcs(&[0xfa, 0xff, 0xff, 0xff, 0, 0, 1, 8], &[WRITE]).is_err());
        assert!(pclntab_funcs(&[1, 2, 3], &[WRITE]).is_err());
        assert!(
            go_hooks_in(Path::new("/bin/sh"))
                .unwrap_err()
                .contains("not a Go binary")
        );
    }
}
