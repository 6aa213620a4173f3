//! Application protocols parsed from connection byte streams. Each protocol is
//! a module that turns transfers into message boundaries; the connection and
//! span machinery around them is shared.
pub mod http1;

/// Which way bytes moved, from the traced process's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process sent them.
    Egress,
    /// The process received them.
    Ingress,
}

impl Direction {
    pub fn opposite(self) -> Self {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
}

/// When a transfer's syscall (or TLS call) began and returned, in
/// `CLOCK_MONOTONIC` nanoseconds as the probes read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub enter_ns: u64,
    pub exit_ns: u64,
}

/// Which end of a connection a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It connected (and sends requests).
    Client,
    /// It accepted (and answers requests).
    Server,
}
