//! Ring-buffer record decoding: `capture::decode::decode` on arbitrary bytes,
//! a batch of records sharing one payload arena as the reader does.
//!
//! Input: records, each preceded by its length (u16, little-endian; the last
//! one takes what is left).
//!
//! Checked: no panic; a decoded `Data` event's payload is exactly the
//! `captured` bytes after its header, and stays so after later records were
//! decoded into the same arena; a well-formed data or close record (long
//! enough, known kind) is never rejected; decoded fields match the header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use seam::capture::{Event, decode::decode};
use seam_common::{CloseEvent, DataHeader, kind, read_record};

fn records(mut input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let Some((len, rest)) = input.split_first_chunk::<2>() else {
            out.push(input);
            break;
        };
        let n = (u16::from_le_bytes(*len) as usize).min(rest.len());
        out.push(&rest[..n]);
        input = &rest[n..];
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let mut arena = BytesMut::new();
    let mut kept = Vec::new();
    for record in records(input) {
        let event = decode(record, &mut arena);
        let k: Option<u32> = read_record(record);
        match k {
            Some(kind::DATA) => {
                if let Some(h) = read_record::<DataHeader>(record) {
                    let start = size_of::<DataHeader>();
                    let whole = record.len() - start >= h.captured as usize;
                    assert_eq!(event.is_some(), whole, "data record of {}", record.len());
                }
            }
            Some(kind::CLOSE) => {
                assert_eq!(
                    event.is_some(),
                    record.len() >= size_of::<CloseEvent>(),
                    "close record of {}",
                    record.len()
                );
            }
            _ => {}
        }
        if let Some(Event::Data(d)) = event {
            let h: DataHeader = read_record(record).expect("decoded, so long enough");
            assert_eq!(d.payload.len(), h.captured as usize);
            assert_eq!(d.len, h.len);
            assert_eq!((d.sock, d.pid, d.tid, d.fd), (h.sock, h.pid, h.tid, h.fd));
            assert_eq!(
                (d.timing.enter_ns, d.timing.exit_ns),
                (h.ts_enter_ns, h.ts_exit_ns)
            );
            kept.push((d.payload, record));
        }
    }
    for (payload, record) in kept {
        let start = size_of::<DataHeader>();
        assert_eq!(&payload[..], &record[start..start + payload.len()]);
    }
});
