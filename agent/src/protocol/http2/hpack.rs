//! HPACK (RFC 7541) decoding for a passive observer.
//!
//! Unlike an endpoint, an observer may start in the middle of a connection or
//! miss part of a header block, after which the dynamic table is not fully
//! known. The table is therefore kept as "the newest entries we know about":
//!
//! * Every insertion goes to the front of the real table (dynamic index 0 =
//!   HPACK index 62), and eviction only ever removes the oldest entries. As
//!   long as we see every insertion made after some point, the entries we
//!   recorded since then sit at exactly the same indices in the real table.
//! * What we cannot know after a loss is what lies behind them, and whether
//!   the real table evicted more or less than we did. Both cases are benign:
//!   the real table and ours are then both a prefix of the same newest-first
//!   history, so an index below our length that the encoder may legally use
//!   names the same entry in both; an index past our length is reported as
//!   unknown (never guessed) unless the table is known to be complete.
//! * A block that was not fully seen may have inserted entries we did not
//!   see, shifting every index by an unknown amount, so the table is cleared
//!   (and its size limit forgotten, since a size update may have been lost).
//!   Entries that the visible part of such a block inserted are dropped too:
//!   their position is no longer known.
//! * A literal with incremental indexing whose *name* is an unknown index
//!   still occupies a slot: it is recorded with an unknown name so that later
//!   indices stay aligned. Its size is then only known as a lower bound, which
//!   errs towards evicting less than the real table: that keeps the prefix
//!   property and only retains entries the encoder can no longer reference.

use std::collections::VecDeque;

/// Upper bound on the dynamic table we keep, whatever the peers negotiated.
pub(super) const TABLE_CAP: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE before any SETTINGS frame (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Per-entry overhead counted by RFC 7541 §4.1.
const ENTRY_OVERHEAD: usize = 32;
/// Integers in header blocks never legitimately need more than this; larger
/// encodings are treated as garbage rather than risking overflow.
const MAX_INT: usize = 1 << 28;

/// Result of decoding one header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Decoded {
    /// Fields whose name and value are known, in block order.
    pub fields: Vec<(String, String)>,
    /// Some fields were skipped (unknown index, output cap) or the block was
    /// cut or malformed: fields may be missing.
    pub incomplete: bool,
}

#[derive(Debug)]
struct Entry {
    /// `None` when the entry was inserted with a name we could not resolve.
    name: Option<Box<[u8]>>,
    value: Box<[u8]>,
}

impl Entry {
    /// Exact size, or a lower bound when the name is unknown.
    fn size(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len()) + self.value.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    /// The representation runs past the end of the available bytes.
    Short,
    /// The bytes are not valid HPACK (or refer past a fully known table).
    Malformed,
}

enum Repr {
    Field(Vec<u8>, Vec<u8>),
    /// A field whose name cannot be resolved against the known table.
    Unknown,
    SizeUpdate,
}

/// What an index refers to.
enum Lookup {
    Known(Vec<u8>, Vec<u8>),
    /// Past the known entries, or an entry inserted under an unknown name.
    Unknown,
}

/// One direction's decoding context.
#[derive(Debug)]
pub(super) struct Decoder {
    /// Newest first.
    entries: VecDeque<Entry>,
    size: usize,
    /// `entries` is the whole dynamic table (every insertion and eviction
    /// was observed); an index past it is then a decoding error.
    complete: bool,
    /// Table size limit in force, when known.
    max_size: Option<usize>,
    /// Latest SETTINGS_HEADER_TABLE_SIZE from the decoding endpoint: an upper
    /// bound on what the encoder may use.
    settings_limit: Option<usize>,
}

impl Decoder {
    /// State at the start of a connection.
    pub(super) fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            complete: true,
            max_size: Some(DEFAULT_TABLE_SIZE),
            settings_limit: None,
        }
    }

    /// State when the history of the connection is unknown.
    pub(super) fn unknown() -> Self {
        let mut d = Self::new();
        d.invalidate();
        d
    }

    /// Forgets everything learnt about the dynamic table: header blocks were
    /// (or may have been) missed.
    pub(super) fn invalidate(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.complete = false;
        self.max_size = None;
    }

    #[cfg(test)]
    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    #[cfg(test)]
    pub(super) fn table_size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub(super) fn table_len(&self) -> usize {
        self.entries.len()
    }

    /// The decoding endpoint advertised SETTINGS_HEADER_TABLE_SIZE. The
    /// encoder only changes its table size through a size update in a header
    /// block (RFC 7541 §4.2) and a SETTINGS frame races with blocks already in
    /// flight, so this only bounds guesses made while the size is unknown.
    pub(super) fn set_settings_limit(&mut self, limit: u32) {
        self.settings_limit = Some(usize::try_from(limit).unwrap_or(usize::MAX));
    }

    /// Decodes one complete header block, or the captured prefix of one when
    /// `truncated`. `max_list` caps the output (name + value + 32 per field,
    /// as for SETTINGS_MAX_HEADER_LIST_SIZE) so that indexed references to
    /// large entries cannot inflate memory; decoding goes on past the cap to
    /// keep the table in step.
    pub(super) fn decode(&mut self, block: &[u8], truncated: bool, max_list: usize) -> Decoded {
        let mut out = Decoded {
            fields: Vec::new(),
            incomplete: truncated,
        };
        let mut list_size = 0usize;
        let mut pos = 0usize;
        while pos < block.len() {
            match self.representation(block, &mut pos) {
                Ok(Repr::Field(name, value)) => {
                    let field_size = name.len() + value.len() + ENTRY_OVERHEAD;
                    if list_size + field_size > max_list {
                        out.incomplete = true;
                    } else {
                        list_size += field_size;
                        out.fields.push((lossy(name), lossy(value)));
                    }
                }
                Ok(Repr::SizeUpdate) => {}
                Ok(Repr::Unknown) => out.incomplete = true,
                Err(Error::Short) if truncated => break,
                Err(Error::Short | Error::Malformed) => {
                    out.incomplete = true;
                    self.invalidate();
                    break;
                }
            }
        }
        if truncated {
            self.invalidate();
        }
        out
    }

    /// Decodes the representation at `*pos` (RFC 7541 §6). `*pos` is only
    /// meaningful on success.
    fn representation(&mut self, block: &[u8], pos: &mut usize) -> Result<Repr, Error> {
        let first = block[*pos];
        if first & 0x80 != 0 {
            let index = integer(block, pos, 7)?;
            return Ok(match self.lookup(index)? {
                Lookup::Known(name, value) => Repr::Field(name, value),
                Lookup::Unknown => Repr::Unknown,
            });
        }
        if first & 0xe0 == 0x20 {
            let size = integer(block, pos, 5)?;
            self.max_size = Some(size);
            self.evict(0);
            return Ok(Repr::SizeUpdate);
        }
        // Literal forms: with incremental indexing (01xxxxxx, 6-bit index),
        // without indexing (0000xxxx) and never indexed (0001xxxx).
        let indexing = first & 0xc0 == 0x40;
        let index = integer(block, pos, if indexing { 6 } else { 4 })?;
        let name = if index == 0 {
            Some(string(block, pos)?)
        } else {
            match self.lookup(index)? {
                Lookup::Known(name, _) => Some(name),
                Lookup::Unknown => None,
            }
        };
        let value = string(block, pos)?;
        if indexing {
            self.insert(Entry {
                name: name.as_deref().map(Box::from),
                value: Box::from(value.as_slice()),
            });
        }
        Ok(match name {
            Some(name) => Repr::Field(name, value),
            None => Repr::Unknown,
        })
    }

    fn lookup(&self, index: usize) -> Result<Lookup, Error> {
        if index == 0 {
            return Err(Error::Malformed);
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok(Lookup::Known(
                name.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
            ));
        }
        let dynamic = index - 1 - STATIC_TABLE.len();
        match self.entries.get(dynamic) {
            Some(Entry {
                name: Some(name),
                value,
            }) => Ok(Lookup::Known(name.to_vec(), value.to_vec())),
            Some(Entry { name: None, .. }) => Ok(Lookup::Unknown),
            None if self.complete => Err(Error::Malformed),
            None => Ok(Lookup::Unknown),
        }
    }

    /// The size limit to evict against, and whether it is exactly the
    /// encoder's (so that evicting against it keeps the table complete).
    fn limit(&self) -> (usize, bool) {
        match self.max_size {
            Some(max) if max <= TABLE_CAP => (max, true),
            Some(_) => (TABLE_CAP, false),
            None => (
                self.settings_limit.unwrap_or(TABLE_CAP).min(TABLE_CAP),
                false,
            ),
        }
    }

    /// Evicts oldest entries until `incoming` more bytes fit (RFC 7541 §4.4).
    fn evict(&mut self, incoming: usize) {
        let (limit, exact) = self.limit();
        while self.size + incoming > limit {
            let Some(old) = self.entries.pop_back() else {
                break;
            };
            self.size -= old.size();
            if !exact {
                // The real table may still hold this entry.
                self.complete = false;
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        let (limit, exact) = self.limit();
        if size > limit {
            // RFC 7541 §4.4: an oversized entry empties the table. Past our
            // cap the real table may instead have kept it.
            self.entries.clear();
            self.size = 0;
            if !exact {
                self.complete = false;
            }
            return;
        }
        self.evict(size);
        self.size += size;
        self.entries.push_front(entry);
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Prefix integer (RFC 7541 §5.1) starting in the low `prefix` bits of
/// `block[*pos]`.
fn integer(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, Error> {
    let mask = (1usize << prefix) - 1;
    let mut p = *pos;
    let first = usize::from(*block.get(p).ok_or(Error::Short)?) & mask;
    p += 1;
    if first < mask {
        *pos = p;
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0u32;
    loop {
        let byte = *block.get(p).ok_or(Error::Short)?;
        p += 1;
        if shift > 28 {
            return Err(Error::Malformed);
        }
        value += usize::from(byte & 0x7f) << shift;
        if value > MAX_INT {
            return Err(Error::Malformed);
        }
        if byte & 0x80 == 0 {
            *pos = p;
            return Ok(value);
        }
        shift += 7;
    }
}

/// String literal (RFC 7541 §5.2).
fn string(block: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
    let huffman = block.get(*pos).ok_or(Error::Short)? & 0x80 != 0;
    let mut p = *pos;
    let len = integer(block, &mut p, 7)?;
    let end = p.checked_add(len).ok_or(Error::Malformed)?;
    let raw = block.get(p..end).ok_or(Error::Short)?;
    let out = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    *pos = end;
    Ok(out)
}

/// Bit lengths of the Huffman code of RFC 7541 Appendix B for symbols 0..=255
/// and EOS (256). The code is canonical (codes of one length are consecutive
/// and ordered by symbol, shorter codes first), so the lengths determine it.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];
const MAX_CODE_LEN: usize = 30;
const EOS: u16 = 256;

/// Canonical decoding tables, per code length: the first code, how many
/// codes there are, and where their symbols start in `symbols`.
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    offset: [u16; MAX_CODE_LEN + 1],
    /// Symbols ordered by (code length, symbol).
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut t = Canonical {
        first: [0; MAX_CODE_LEN + 1],
        count: [0; MAX_CODE_LEN + 1],
        offset: [0; MAX_CODE_LEN + 1],
        symbols: [0; 257],
    };
    let mut code = 0u32;
    let mut next = 0usize;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        t.first[len] = code;
        t.offset[len] = next as u16;
        let mut sym = 0;
        while sym < HUFFMAN_LENGTHS.len() {
            if HUFFMAN_LENGTHS[sym] as usize == len {
                t.symbols[next] = sym as u16;
                next += 1;
                t.count[len] += 1;
            }
            sym += 1;
        }
        code = (code + t.count[len]) << 1;
        len += 1;
    }
    t
}

static HUFFMAN: Canonical = canonical();

fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, Error> {
    // Huffman never expands by more than 8/5.
    let mut out = Vec::with_capacity(raw.len() * 8 / 5 + 1);
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in raw {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_CODE_LEN {
                return Err(Error::Malformed);
            }
            let rank = code.wrapping_sub(HUFFMAN.first[len]);
            if rank < HUFFMAN.count[len] {
                let sym = HUFFMAN.symbols[usize::from(HUFFMAN.offset[len]) + rank as usize];
                if sym == EOS {
                    return Err(Error::Malformed);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(Error::Malformed);
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn complete(list: &[(&str, &str)]) -> Decoded {
        Decoded {
            fields: fields(list),
            incomplete: false,
        }
    }

    fn decode(d: &mut Decoder, hex: &str) -> Decoded {
        d.decode(&unhex(hex), false, usize::MAX)
    }

    /// Code and length of `sym` in the canonical tables.
    fn code_of(sym: u16) -> (u32, usize) {
        let len = usize::from(HUFFMAN_LENGTHS[usize::from(sym)]);
        let start = usize::from(HUFFMAN.offset[len]);
        let rank = HUFFMAN.symbols[start..start + HUFFMAN.count[len] as usize]
            .iter()
            .position(|&s| s == sym)
            .unwrap();
        (HUFFMAN.first[len] + rank as u32, len)
    }

    #[test]
    fn huffman_table_matches_rfc_appendix_b() {
        // Spot checks across lengths, straight from RFC 7541 Appendix B.
        let rfc = [
            (0u16, 0x1ff8u32, 13usize),
            (1, 0x7fffd8, 23),
            (10, 0x3ffffffc, 30),
            (22, 0x3ffffffe, 30),
            (b' '.into(), 0x14, 6),
            (b'0'.into(), 0x0, 5),
            (b':'.into(), 0x5c, 7),
            (b'a'.into(), 0x3, 5),
            (b'z'.into(), 0x7b, 7),
            (b'~'.into(), 0x1ffd, 13),
            (127, 0xffffffc, 28),
            (128, 0xfffe6, 20),
            (200, 0x3ffffe2, 26),
            (255, 0x3ffffee, 26),
            (EOS, 0x3fffffff, 30),
        ];
        for (sym, code, len) in rfc {
            assert_eq!(code_of(sym), (code, len), "symbol {sym}");
        }
        // A complete prefix code: the Kraft sum is exactly 1.
        let kraft: u64 = HUFFMAN_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn huffman_round_trips_every_symbol() {
        for sym in 0u16..256 {
            // Encode "<sym>" then pad with ones to a byte boundary.
            let (code, len) = code_of(sym);
            let pad = (8 - len % 8) % 8;
            let bits = (u64::from(code) << pad) | ((1u64 << pad) - 1);
            let nbytes = (len + pad) / 8;
            let raw: Vec<u8> = (0..nbytes).rev().map(|i| (bits >> (8 * i)) as u8).collect();
            assert_eq!(huffman_decode(&raw), Ok(vec![sym as u8]), "symbol {sym}");
        }
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // "a" (00011) padded with zeros instead of ones.
        assert_eq!(huffman_decode(&[0b0001_1000]), Err(Error::Malformed));
        // A whole byte of padding.
        assert_eq!(huffman_decode(&[0b0001_1111, 0xff]), Err(Error::Malformed));
        // EOS spelled out.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc]),
            Err(Error::Malformed)
        );
        assert_eq!(huffman_decode(&[]), Ok(vec![]));
    }

    #[test]
    fn rfc_c2_single_representations() {
        let mut d = Decoder::new();
        // C.2.1: literal with indexing.
        let got = decode(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(got, complete(&[("custom-key", "custom-header")]));
        assert_eq!((d.table_len(), d.table_size()), (1, 55));
        // C.2.2: literal without indexing.
        let mut d = Decoder::new();
        let got = decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(got, complete(&[(":path", "/sample/path")]));
        assert_eq!(d.table_len(), 0);
        // C.2.3: never indexed.
        let got = decode(&mut d, "1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(got, complete(&[("password", "secret")]));
        assert_eq!(d.table_len(), 0);
        // C.2.4: indexed.
        assert_eq!(decode(&mut d, "82"), complete(&[(":method", "GET")]));
    }

    #[test]
    fn rfc_c3_c4_request_sequences() {
        let plain = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let huffman = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        let want = [
            (complete(&base), 1, 57),
            (
                complete(&[
                    base[0],
                    base[1],
                    base[2],
                    base[3],
                    ("cache-control", "no-cache"),
                ]),
                2,
                110,
            ),
            (
                complete(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value"),
                ]),
                3,
                164,
            ),
        ];
        for blocks in [plain, huffman] {
            let mut d = Decoder::new();
            for (block, (fields, len, size)) in blocks.iter().zip(&want) {
                assert_eq!(&decode(&mut d, block), fields);
                assert_eq!((d.table_len(), d.table_size()), (*len, *size));
            }
        }
    }

    #[test]
    fn rfc_c5_c6_responses_with_eviction() {
        let plain = [
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        ];
        let huffman = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let location = "https://www.example.com";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        let want = [
            (
                complete(&[
                    (":status", "302"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", location),
                ]),
                4,
                222,
            ),
            (
                complete(&[
                    (":status", "307"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", location),
                ]),
                4,
                222,
            ),
            (
                complete(&[
                    (":status", "200"),
                    ("cache-control", "private"),
                    ("date", date2),
                    ("location", location),
                    ("content-encoding", "gzip"),
                    ("set-cookie", cookie),
                ]),
                3,
                215,
            ),
        ];
        for blocks in [plain, huffman] {
            let mut d = Decoder::new();
            // The examples run with a 256-byte table: a size update to 256.
            assert_eq!(decode(&mut d, "3fe101"), complete(&[]));
            for (block, (fields, len, size)) in blocks.iter().zip(&want) {
                assert_eq!(&decode(&mut d, block), fields);
                assert_eq!((d.table_len(), d.table_size()), (*len, *size));
            }
            assert!(d.is_complete());
        }
    }

    #[test]
    fn size_update_evicts_and_oversized_entry_empties() {
        let mut d = Decoder::new();
        decode(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(decode(&mut d, "20 82"), complete(&[(":method", "GET")]));
        assert_eq!(d.table_len(), 0);
        // Still exact: index 62 is now an error, not an unknown.
        let got = decode(&mut d, "be");
        assert!(got.incomplete && got.fields.is_empty());
        assert!(!d.is_complete());

        let mut d = Decoder::new();
        decode(&mut d, "3f11"); // size 48
        decode(&mut d, "4001 6101 62"); // a: b, 34 bytes
        assert_eq!(d.table_len(), 1);
        decode(&mut d, "4001 6302 6464"); // c: dd, 35 bytes: evicts a: b
        assert_eq!((d.table_len(), d.table_size()), (1, 35));
        decode(&mut d, "4001 6510 31323334353637383930313233343536"); // 49 > 48
        assert_eq!(d.table_len(), 0);
        assert!(d.is_complete());
    }

    #[test]
    fn unknown_table_decodes_static_and_literals_only() {
        let mut d = Decoder::unknown();
        // :method GET, :path literal, index 62 (unknown), literal new name.
        let got = decode(&mut d, "82 0402 2f61 be 0001 7801 79");
        assert_eq!(
            got,
            Decoded {
                fields: fields(&[(":method", "GET"), (":path", "/a"), ("x", "y")]),
                incomplete: true,
            }
        );
        // Literal with indexing under an unknown name, then under a new name.
        let got = decode(&mut d, "7f07 0176 4001 6e01 77");
        assert_eq!(
            got,
            Decoded {
                fields: fields(&[("n", "w")]),
                incomplete: true,
            }
        );
        // 62 = n: w (inserted after the loss, so its place is known), 63 =
        // the unnamed entry, 64 = older than anything we saw.
        let got = decode(&mut d, "be bf c0");
        assert_eq!(
            got,
            Decoded {
                fields: fields(&[("n", "w")]),
                incomplete: true,
            }
        );
        assert_eq!(decode(&mut d, "be"), complete(&[("n", "w")]));
    }

    #[test]
    fn cut_block_forgets_the_table() {
        let mut d = Decoder::new();
        let block = unhex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d 4001 6101 62");
        // Cut inside the second literal: the first insertion is visible, the
        // second may or may not have happened.
        let got = d.decode(&block[..block.len() - 2], true, usize::MAX);
        assert_eq!(
            got,
            Decoded {
                fields: fields(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com")
                ]),
                incomplete: true,
            }
        );
        assert!(!d.is_complete());
        assert_eq!(d.table_len(), 0);
        let got = decode(&mut d, "be");
        assert!(got.incomplete && got.fields.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let mut d = if round % 2 == 0 {
                Decoder::new()
            } else {
                Decoder::unknown()
            };
            let len = round % 64;
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = d.decode(&block, round % 3 == 0, 4096);
        }
        let mut d = Decoder::new();
        let got = d.decode(&unhex("ff ff ff ff ff ff ff ff ff ff ff 7f"), false, 4096);
        assert!(got.incomplete);
    }

    #[test]
    fn output_cap_keeps_the_table_in_step() {
        let mut d = Decoder::new();
        let got = d.decode(&unhex("4001 6101 62 4001 6301 64"), false, 40);
        assert_eq!(
            got,
            Decoded {
                fields: fields(&[("a", "b")]),
                incomplete: true,
            }
        );
        assert_eq!(decode(&mut d, "be"), complete(&[("c", "d")]));
    }
}
