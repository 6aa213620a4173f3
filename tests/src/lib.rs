//! Harness for seam's end-to-end tests: an OTLP receiver that keeps every
//! request it gets, the agent as a child process, and real servers and
//! clients started from the tests. Tests hold [`serial`] so that only one
//! agent runs at a time.
pub mod agent;
pub mod checkout;
pub mod k8s;
pub mod netns;
pub mod otlp;
pub mod procs;
pub mod servers;
pub mod slowfs;
pub mod spans;

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Held for a whole test: probes and servers of two tests must not mix.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}
