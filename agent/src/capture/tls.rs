//! Finding TLS libraries and attaching the TLS probes to them.
//!
//! A uprobe attaches to a file (its inode), not to a process, so each
//! distinct library or executable is attached once and covers every process
//! that maps it — also processes that start later or `dlopen` it later
//! (Python loads libssl with its `_ssl` module). Candidates come from the
//! standard library directories at start-up, from what running processes
//! map and execute (through /proc/PID/root, so containers' own copies count),
//! and from each new executable the probes report.
use std::{
    collections::{HashMap, HashSet},
    fs,
    ops::Range,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::tls_site::{self, Wrapper};

/// Which functions of which library the TLS probes hook, as (symbol, entry
/// program); every one also gets the shared return program.
pub const OPENSSL: &[(&str, &str)] = &[
    ("SSL_write", "tls_write"),
    ("SSL_read", "tls_read"),
    ("SSL_write_ex", "tls_write_ex"),
    ("SSL_read_ex", "tls_read_ex"),
    ("SSL_do_handshake", "tls_handshake"),
    ("SSL_connect", "tls_handshake"),
    ("SSL_accept", "tls_handshake"),
    ("SSL_free", "tls_free"),
];
pub const GNUTLS: &[(&str, &str)] = &[
    ("gnutls_record_send", "tls_write"),
    ("gnutls_record_recv", "tls_read"),
    ("gnutls_handshake", "tls_handshake"),
    ("gnutls_deinit", "tls_free"),
];

/// OpenSSL wrappers hooked at the internal function they call when that
/// saves a single step (tls_site.rs): (wrapper, callee, how it passes its
/// arguments).
const OPENSSL_INNER: &[(&str, &str, Wrapper)] = &[
    ("SSL_read", "ssl_read_internal", Wrapper::Plain),
    ("SSL_read_ex", "ssl_read_internal", Wrapper::Ex),
    ("SSL_write", "ssl_write_internal", Wrapper::Plain),
    ("SSL_write_ex", "ssl_write_internal", Wrapper::Ex),
];

/// One function to hook: where in the file, and with which program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub symbol: &'static str,
    pub program: &'static str,
    /// Offset of the function's first instruction in the file.
    pub file_offset: u64,
    /// Also hook its return.
    pub ret: bool,
}
pub const RETURN_PROGRAM: &str = "tls_return";

/// A file the TLS probes can hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Path to open it by (through /proc/PID/root for other mount namespaces).
    pub path: PathBuf,
    pub hooks: Vec<Hook>,
    pub library: &'static str,
    /// Hooked functions whose probed instruction the kernel single-steps
    /// (x86-64): each call costs a debug trap, a VM exit on AMD hosts.
    pub single_stepped: Vec<&'static str>,
}

/// Which hooks a file defines (not merely imports).
pub fn hooks_in(path: &Path) -> Result<Candidate, String> {
    let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: read-only mapping of an executable or library; a concurrent
    // truncation (an upgrade) can at worst fail the parse.
    let data =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    let file =
        object::File::parse(&*data).map_err(|e| format!("{}: not ELF: {e}", path.display()))?;
    // Symbol addresses are virtual; uprobes want file offsets, through the
    // section that holds each function.
    let mut defined: HashMap<&str, (u64, Range<u64>)> = HashMap::new();
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        if !sym.is_definition() || sym.address() == 0 {
            continue;
        }
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Some((file_start, file_size)) = section.file_range() else {
            continue;
        };
        defined.insert(
            name,
            (
                sym.address() - section.address() + file_start,
                file_start..file_start + file_size,
            ),
        );
    }
    let x86_64 = file.architecture() == object::Architecture::X86_64;
    for (library, table) in [("openssl", OPENSSL), ("gnutls", GNUTLS)] {
        let mut hooks: Vec<Hook> = Vec::new();
        for (symbol, program) in table {
            let Some((entry, text)) = defined.get(symbol) else {
                continue;
            };
            let mut hook = Hook {
                symbol,
                program,
                file_offset: *entry,
                ret: *program != "tls_free",
            };
            if library == "openssl"
                && x86_64
                && let Some((inner, wrapper)) = OPENSSL_INNER
                    .iter()
                    .find(|i| i.0 == *symbol)
                    .map(|i| (i.1, i.2))
                && let Some(offset) = tls_site::openssl_inner(&data, text.clone(), *entry, wrapper)
            {
                hook = Hook {
                    symbol: inner,
                    program: if *program == "tls_read" || *program == "tls_read_ex" {
                        "tls_read_ex"
                    } else {
                        "tls_write_ex"
                    },
                    file_offset: offset,
                    ret: true,
                };
            }
            // Both wrappers of one internal function are one hook.
            if !hooks.contains(&hook) {
                hooks.push(hook);
            }
        }
        // The read and write functions are the minimum.
        if hooks
            .iter()
            .filter(|h| h.program.starts_with("tls_read") || h.program.starts_with("tls_write"))
            .count()
            >= 2
        {
            let single_stepped = match x86_64 {
                true => tls_site::single_stepped(&data, &hooks),
                false => Vec::new(),
            };
            return Ok(Candidate {
                path: path.to_path_buf(),
                hooks,
                library,
                single_stepped,
            });
        }
    }
    Err(format!(
        "{}: defines no TLS functions seam hooks",
        path.display()
    ))
}

/// Library file names worth opening.
pub fn is_tls_library_name(name: &str) -> bool {
    name.starts_with("libssl.so") || name.starts_with("libgnutls.so")
}

/// Directories where a system's shared libraries live.
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Tracks which files are hooked, so each is attached once.
#[derive(Debug, Default)]
pub struct TlsFinder {
    /// (device, inode) of files already considered.
    seen: HashSet<(u64, u64)>,
    /// Executables found not to define TLS functions, by (device, inode).
    pub attached: Vec<Candidate>,
    pub failures: HashMap<String, String>,
}

impl TlsFinder {
    /// The file behind `path`, if not considered yet (marks it considered).
    fn first_time(&mut self, path: &Path) -> bool {
        match fs::metadata(path) {
            Ok(m) => self.seen.insert((m.dev(), m.ino())),
            Err(_) => false,
        }
    }

    /// TLS libraries in the standard directories.
    pub fn scan_library_dirs(&mut self, root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in LIBRARY_DIRS {
            let Ok(entries) = fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if is_tls_library_name(&name.to_string_lossy()) {
                    let p = e.path();
                    if self.first_time(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// What process `pid` maps and executes that was not considered yet.
    pub fn scan_process(&mut self, proc_root: &Path, pid: u32) -> Vec<PathBuf> {
        let dir = proc_root.join(pid.to_string());
        let root = dir.join("root");
        let mut out = Vec::new();
        if let Ok(exe) = fs::read_link(dir.join("exe")) {
            let exe = root.join(exe.strip_prefix("/").unwrap_or(&exe));
            if self.first_time(&exe) {
                out.push(exe);
            }
        }
        if let Ok(maps) = fs::read_to_string(dir.join("maps")) {
            for line in maps.lines() {
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                let name = path.rsplit('/').next().unwrap_or(path);
                if !is_tls_library_name(name) {
                    continue;
                }
                let p = root.join(path.trim_start_matches('/'));
                if self.first_time(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_tls_library_name("libssl.so.3"));
        assert!(is_tls_library_name("libgnutls.so.30"));
        assert!(!is_tls_library_name("libcrypto.so.3"));
        assert!(!is_tls_library_name("libsslx.txt"));
    }

    #[test]
    fn system_libssl_defines_the_hooks() {
        let mut f = TlsFinder::default();
        let libs = f.scan_library_dirs(Path::new("/"));
        let ssl = libs
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so"))
            })
            // Found once per file: as libssl.so.3 or its libssl.so link,
            // whichever the directory lists first.
            .expect("libssl.so.3 on this machine");
        let c = hooks_in(ssl).unwrap();
        assert_eq!(c.library, "openssl");
        // Debian's libssl.so.3 starts SSL_read and SSL_write with a
        // `sub` (single-stepped): both wrappers of each direction are
        // hooked once, at the internal function they call.
        let names: Vec<&str> = c.hooks.iter().map(|h| h.symbol).collect();
        assert_eq!(
            names,
            [
                "ssl_write_internal",
                "ssl_read_internal",
                "SSL_do_handshake",
                "SSL_connect",
                "SSL_accept",
                "SSL_free"
            ]
        );
        let data = fs::read(ssl).unwrap();
        for h in &c.hooks[..2] {
            assert!(h.program.ends_with("_ex") && h.ret, "{h:?}");
            let at = h.file_offset as usize;
            assert!(tls_site::emulated(&data[at..at + 2]), "{h:?}");
        }
        assert!(c.hooks.iter().all(|h| h.file_offset > 0));
        // What is left single-stepped runs once per connection.
        for name in &c.single_stepped {
            assert!(
                ["SSL_connect", "SSL_accept", "SSL_free"].contains(name),
                "{name}"
            );
        }
        // Scanning again finds nothing new: each file is considered once.
        assert!(f.scan_library_dirs(Path::new("/")).is_empty());
        assert!(hooks_in(Path::new("/bin/sh")).is_err());
    }
}
