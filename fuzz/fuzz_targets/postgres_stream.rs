//! The PostgreSQL (startup, simple and extended query) parser fed an arbitrary script of transfers; the checks are
//! those of `seam_fuzz::wire::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam::protocol::postgres::PgConn;

fuzz_target!(|input: &[u8]| {
    seam_fuzz::wire::check(input, PgConn::new());
});
