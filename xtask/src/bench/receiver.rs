//! A tiny OTLP/HTTP receiver (`POST /v1/traces`, protobuf) that counts the
//! spans it is sent and keeps nothing else. It walks the protobuf wire format
//! instead of decoding messages, so it costs next to no CPU on a machine that
//! is busy running the benchmark.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread,
};

/// Totals since the receiver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub spans: u64,
    pub server: u64,
    pub client: u64,
    /// Export requests that could not be read as OTLP protobuf.
    pub bad: u64,
}

#[derive(Default)]
struct Shared {
    spans: AtomicU64,
    server: AtomicU64,
    client: AtomicU64,
    bad: AtomicU64,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on a free loopback port; serves until the process exits.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::Builder::new()
            .name("otlp-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let s = s.clone();
                    let _ = thread::Builder::new()
                        .name("otlp-conn".into())
                        .spawn(move || serve(stream, &s));
                }
            })?;
        Ok(Self { port, shared })
    }

    /// The base URL (`/v1/traces` is appended for HTTP/protobuf).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            spans: self.shared.spans.load(Relaxed),
            server: self.shared.server.load(Relaxed),
            client: self.shared.client.load(Relaxed),
            bad: self.shared.bad.load(Relaxed),
        }
    }
}

/// Serves one keep-alive connection: request heads, Content-Length bodies.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut rd = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = None;
        let mut close = false;
        let mut encoded = false;
        loop {
            line.clear();
            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse::<usize>().ok(),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    "content-encoding" => encoded = !v.eq_ignore_ascii_case("identity"),
                    _ => {}
                }
            }
        }
        let Some(len) = len else {
            let _ = out.write_all(
                b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        body.resize(len, 0);
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        if path.ends_with("/v1/traces") {
            match (!encoded).then(|| count_spans(&body)).flatten() {
                Some(c) => {
                    shared.spans.fetch_add(c.spans, Relaxed);
                    shared.server.fetch_add(c.server, Relaxed);
                    shared.client.fetch_add(c.client, Relaxed);
                }
                None => {
                    shared.bad.fetch_add(1, Relaxed);
                }
            }
        }
        // An empty Export*ServiceResponse encodes to zero bytes.
        let resp: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        };
        if out.write_all(resp).is_err() || close {
            return;
        }
    }
}

/// One protobuf field: its number and, for the wire types seam's and the
/// SDK's messages use, its value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, or `None` at malformed input.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut at)?),
            1 => {
                at = at.checked_add(8).filter(|&e| e <= buf.len())?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|&e| e <= buf.len())?;
                let bytes = &buf[at..end];
                at = end;
                Field::Bytes(bytes)
            }
            5 => {
                at = at.checked_add(4).filter(|&e| e <= buf.len())?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

/// The embedded messages in field `no` of `buf`.
fn messages(buf: &[u8], no: u64) -> Option<Vec<&[u8]>> {
    Some(
        fields(buf)?
            .into_iter()
            .filter_map(|(n, f)| match f {
                Field::Bytes(b) if n == no => Some(b),
                _ => None,
            })
            .collect(),
    )
}

/// Spans in an `ExportTraceServiceRequest`: resource_spans (1) →
/// scope_spans (2) → spans (2), each span's kind in field 6.
pub fn count_spans(body: &[u8]) -> Option<Counts> {
    let mut c = Counts::default();
    for rs in messages(body, 1)? {
        for ss in messages(rs, 2)? {
            for span in messages(ss, 2)? {
                c.spans += 1;
                let kind = fields(span)?.into_iter().find_map(|(n, f)| match f {
                    Field::Varint(v) if n == 6 => Some(v),
                    _ => None,
                });
                match kind {
                    Some(2) => c.server += 1,
                    Some(3) => c.client += 1,
                    _ => {}
                }
            }
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(no: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((no << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn counts_spans_by_kind() {
        // span: name (5) = "x", kind (6) = 2 (server) / 3 (client).
        let server = [0x2a, 1, b'x', 0x30, 2];
        let client = [0x30, 3, 0x29, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut scope = len_field(1, b"");
        scope.extend(len_field(2, &server));
        scope.extend(len_field(2, &client));
        let mut rs = len_field(1, b"");
        rs.extend(len_field(2, &scope));
        rs.extend(len_field(2, &scope));
        let req = [len_field(1, &rs), len_field(1, &rs)].concat();
        assert_eq!(
            count_spans(&req),
            Some(Counts {
                spans: 8,
                server: 4,
                client: 4,
                bad: 0
            })
        );
        assert_eq!(count_spans(&[]), Some(Counts::default()));
        assert_eq!(count_spans(&[0x0a, 5, 1]), None);
    }
}
