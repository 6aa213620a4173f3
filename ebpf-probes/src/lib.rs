//! Empty on purpose: the probes are the `seam-probes` binary of this package.
//! This library target only exists so that `agent` can name the package as a
//! build dependency and be rebuilt when the probes change.
#![no_std]
