//! Policies applied to spans between capture and export: which traces are
//! kept (head and tail sampling), what personal data is scrubbed, how paths
//! collapse into low-cardinality routes, and the configuration file that
//! drives all of them.
pub mod config;
pub mod redact;
pub mod route;
pub mod sampler;
pub mod tail;
