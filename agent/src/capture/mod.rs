//! Loading the kernel probes, choosing what they trace, and reading what they
//! report.
pub mod decode;
pub mod gotls;
pub mod probes;
pub mod reader;
pub mod tls;
pub mod tls_site;
pub mod tracefs;

pub use decode::{CloseInfo, DataEvent, Event, IoInfo, IoKind, KernelCtx};
pub use probes::{CaptureError, ProbeStats, Probes, Selection, Selector};
