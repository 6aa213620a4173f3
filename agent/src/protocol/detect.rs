//! Choosing a connection's protocol from its first bytes, never from its
//! port. Until the bytes decide, the connection has no parser; once decided,
//! the parser gets the connection from that transfer on (the HTTP/1 parser
//! keeps its own short lookahead for starts split across transfers).
//!
//! Connection starts are recognised first (HTTP/2 preface, PostgreSQL
//! startup, a Redis command, an HTTP/1 message); for connections older than
//! the agent, plausible mid-stream HTTP/2 frames and PostgreSQL frontend
//! messages are accepted too.
use super::{Parser, http1, http2, postgres, redis};

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    /// HTTP/2 from its connection preface.
    Http2,
    /// HTTP/2 frames of a connection that started before the agent.
    Http2MidStream,
    Postgres,
    Redis,
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
    if http2::looks_like_preface(data) {
        return Detected::Http2;
    }
    if postgres::looks_like_startup(data) {
        return Detected::Postgres;
    }
    if redis::looks_like_command(data) {
        return Detected::Redis;
    }
    if http1::could_start_message(data) {
        return Detected::Http1;
    }
    if http2::looks_like_frames(data) {
        return Detected::Http2MidStream;
    }
    if postgres::looks_like_frontend(data) {
        return Detected::Postgres;
    }
    Detected::Unknown
}

/// A parser for a detected protocol.
pub fn parser_for(detected: Detected) -> Option<Box<dyn Parser>> {
    match detected {
        Detected::Http1 => Some(Box::new(http1::Http1Conn::new())),
        Detected::Http2 => Some(Box::new(http2::H2Conn::new())),
        Detected::Http2MidStream => Some(Box::new(http2::H2Conn::joined_mid_stream())),
        Detected::Postgres => Some(Box::new(postgres::PgConn::new())),
        Detected::Redis => Some(Box::new(redis::RedisConn::new())),
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
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Detected::Http2);
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n"), Detected::Redis);
        // SSLRequest, then a protocol 3.0 StartupMessage.
        assert_eq!(
            detect(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]),
            Detected::Postgres
        );
        let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0app\0database\0shop\0\0");
        let n = startup.len() as u32;
        startup[..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(detect(&startup), Detected::Postgres);
        assert_eq!(detect(b"\x17\x03\x03\x00\x20"), Detected::Unknown);
        assert_eq!(detect(b""), Detected::Unknown);
    }
}
