//! The HTTP/2 (frames, HPACK, gRPC trailers) parser fed an arbitrary script of transfers; the checks are
//! those of `seam_fuzz::wire::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam::protocol::http2::H2Conn;

fuzz_target!(|input: &[u8]| {
    seam_fuzz::wire::check(input, H2Conn::new());
});
