//! A constant-rate HTTP/1.1 load generator (the role of wrk2, which Debian
//! does not package). Request `i` is due at `t0 + i / rate`; each of N
//! keep-alive connections takes the next due request, sleeps until its time,
//! sends it and reads the response. Latency is measured from the time the
//! request was due, not from when it was sent, so a slow response that holds
//! up later requests is charged to all of them (no coordinated omission).
//!
//! Blocking threads with `nanosleep` and a 1 µs timer slack rather than an
//! async runtime: tokio's timer wheel has a 1 ms resolution, which would add
//! up to a millisecond of schedule jitter to latencies of ~100 µs.
use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub path: String,
    /// TLS without certificate verification (as wrk does).
    pub tls: Option<Arc<ClientConfig>>,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Requests whose response arrived with a 2xx status.
    pub ok: u64,
    /// Requests that failed (I/O error, non-2xx) or were never sent because
    /// the run fell more than the grace period behind its schedule.
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Accepts any server certificate: the benchmark's own self-signed one.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client configuration that trusts any certificate.
pub fn insecure_tls() -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn connect(target: &Target) -> io::Result<Stream> {
    let tcp = TcpStream::connect(("127.0.0.1", target.port))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(match &target.tls {
        None => Stream::Plain(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost").expect("valid name");
            let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
            Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    })
}

/// Reads one response; returns (status, whether the server closes).
fn read_response(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(io::Error::other)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    let (mut len, mut close) = (None, head.starts_with("HTTP/1.0"));
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err(io::Error::other("chunked responses are not supported"));
            }
        }
    }
    match len {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        // No length: the body runs to the close.
        None => {
            while stream.read(&mut chunk)? > 0 {}
            close = true;
        }
    }
    Ok((status, close))
}

fn set_timer_slack_1us() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };
}

/// Sends `rate` requests per second for `duration` over `connections`
/// keep-alive connections (reopened when the server closes one).
pub fn run(target: &Target, rate: u32, duration: Duration, connections: usize) -> Outcome {
    let interval_ns = 1e9 / f64::from(rate.max(1));
    let total = (duration.as_secs_f64() * f64::from(rate)).round() as u64;
    let grace = Duration::from_secs(5);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(50);
    let request = Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: seam-bench\r\nAccept: */*\r\n\r\n",
            target.path, target.port
        )
        .into_bytes(),
    );
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (next, request, target) = (next.clone(), request.clone(), target.clone());
            thread::spawn(move || {
                set_timer_slack_1us();
                let mut lat_us: Vec<u32> = Vec::new();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut conn: Option<Stream> = None;
                let mut buf = Vec::with_capacity(16 * 1024);
                let end = t0 + duration + grace;
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = t0 + Duration::from_nanos((i as f64 * interval_ns) as u64);
                    let now = Instant::now();
                    if now > end {
                        errors += 1;
                        continue;
                    }
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let result = (|| {
                        if conn.is_none() {
                            conn = Some(connect(&target)?);
                        }
                        let s = conn.as_mut().expect("connected");
                        s.write_all(&request)?;
                        s.flush()?;
                        read_response(s, &mut buf)
                    })();
                    match result {
                        Ok((status, close)) => {
                            if (200..300).contains(&status) {
                                ok += 1;
                                let us = due.elapsed().as_micros();
                                lat_us.push(us.min(u128::from(u32::MAX)) as u32);
                            } else {
                                errors += 1;
                            }
                            if close {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                if let Some(Stream::Plain(s)) = &conn {
                    let _ = s.shutdown(Shutdown::Both);
                }
                (ok, errors, lat_us)
            })
        })
        .collect();
    let mut out = Outcome::default();
    let mut all = Vec::new();
    for w in workers {
        let (ok, errors, lat) = w.join().expect("load thread");
        out.ok += ok;
        out.errors += errors;
        all.extend(lat);
    }
    out.elapsed = t0.elapsed();
    all.sort_unstable();
    out.p50_us = percentile(&all, 0.50);
    out.p99_us = percentile(&all, 0.99);
    out
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn paces_requests_at_the_rate() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicU64::new(0));
        let s = served.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..i + 4);
                            s.fetch_add(1, Relaxed);
                            let _ =
                                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                });
            }
        });
        let target = Target {
            port,
            path: "/".into(),
            tls: None,
        };
        let out = run(&target, 200, Duration::from_millis(500), 4);
        assert_eq!(out.ok, 100);
        assert_eq!(out.errors, 0);
        assert_eq!(served.load(Relaxed), 100);
        // 100 requests paced over 0.5 s: the last is due at 495 ms.
        assert!(
            out.elapsed >= Duration::from_millis(495),
            "{:?}",
            out.elapsed
        );
        assert!(out.p50_us.is_finite());
    }
}
