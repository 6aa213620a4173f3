//! Harness for seam's end-to-end tests: an OTLP receiver that keeps every
//! request it gets, the agent as a child process, and real servers and
//! clients started from the tests. Tests hold [`serial`] so that only one
//! agent runs at a time on the machine, even across test binaries and
//! checkouts.
pub mod agent;
pub mod bpf;
pub mod checkout;
pub mod k8s;
pub mod netns;
pub mod otlp;
pub mod phoenix;
pub mod pki;
pub mod procs;
pub mod servers;
pub mod slowfs;
pub mod spans;

use std::{fs::File, os::fd::AsRawFd as _};

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Machine-wide: test binaries run one after another, but two checkouts (or
/// a benchmark) may run at once, and their agents would trace each other's
/// processes.
const LOCK_FILE: &str = "/tmp/seam-e2e.lock";

/// Held for a whole test: probes and servers of two tests must not mix.
pub struct Serial {
    _in_process: MutexGuard<'static, ()>,
    /// flock'd; released when closed.
    _machine: File,
}

/// Waits for the test lock (in this process, then on the machine).
pub async fn serial() -> Serial {
    let guard = SERIAL.lock().await;
    let file = tokio::task::spawn_blocking(|| {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("opening {LOCK_FILE}: {e}"));
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {LOCK_FILE}: {}",
            std::io::Error::last_os_error()
        );
        file
    })
    .await
    .expect("lock task");
    Serial {
        _in_process: guard,
        _machine: file,
    }
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}
