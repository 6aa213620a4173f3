//! The Redis (RESP2/RESP3) parser fed an arbitrary script of transfers; the checks are
//! those of `seam_fuzz::wire::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam::protocol::redis::RedisConn;

fuzz_target!(|input: &[u8]| {
    seam_fuzz::wire::check(input, RedisConn::new());
});
