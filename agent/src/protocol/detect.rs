//! Choosing a connection's protocol from its first bytes. Until the bytes
//! decide, the connection has no parser; once decided, the parser gets the
//! connection from its first transfer on (the HTTP/1 parser keeps its own
//! short lookahead for starts split across transfers).
use super::{Parser, http1};

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    /// TLS records: ciphertext, never parsed (the TLS probes see plaintext).
    Tls,
    /// Not (yet) recognised.
    Unknown,
}

/// Classifies a transfer's first bytes.
pub fn detect(data: &[u8]) -> Detected {
    if data.len() >= 3 && data[0] == 0x16 && data[1] == 0x03 && data[2] <= 0x04 {
        return Detected::Tls;
    }
    if http1::could_start_message(data) {
        return Detected::Http1;
    }
    Detected::Unknown
}

/// A parser for a detected protocol.
pub fn parser_for(detected: Detected) -> Option<Box<dyn Parser>> {
    match detected {
        Detected::Http1 => Some(Box::new(http1::Http1Conn::new())),
        Detected::Tls | Detected::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Http1);
        assert_eq!(detect(b"HTTP/1.1 200 OK\r\n"), Detected::Http1);
        assert_eq!(detect(b"PO"), Detected::Http1);
        assert_eq!(detect(&[0x16, 0x03, 0x01, 0x00, 0xa5]), Detected::Tls);
        assert_eq!(
            detect(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Detected::Unknown
        );
        assert_eq!(detect(b""), Detected::Unknown);
    }
}
