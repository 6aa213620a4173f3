//! HTTP span attributes per the stable OpenTelemetry HTTP semantic
//! conventions (https://opentelemetry.io/docs/specs/semconv/http/http-spans/).
use std::net::{IpAddr, SocketAddr};

use crate::{
    conn::ConnMeta,
    policy::{
        redact::{RedactConfig, Redactor},
        route::{RouteConfig, Router, known_method, span_name},
    },
    protocol::{Exchange, Role, headers::Headers, http1, http2, postgres, redis},
    span::{Attributes, SpanKind, Status, Value},
};

/// What policy does to a span's attributes before anything else sees them:
/// secrets and personal data are redacted, paths become routes.
pub struct Shaper {
    redactor: Redactor,
    router: Router,
}

impl Shaper {
    pub fn new(redact: &RedactConfig, routes: &RouteConfig) -> Result<Self, String> {
        Ok(Self {
            redactor: Redactor::new(redact)?,
            router: Router::new(routes)?,
        })
    }

    pub fn routes_overflowed(&self) -> u64 {
        self.router.overflowed()
    }
}

impl Default for Shaper {
    fn default() -> Self {
        Self::new(&RedactConfig::default(), &RouteConfig::default()).expect("defaults are valid")
    }
}

/// Splits a request target into path and query (without `?`). Absolute-form
/// targets (proxies) lose their scheme and authority.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let without_fragment = target.split('#').next().unwrap_or(target);
    let path_and_query = match without_fragment.find("://") {
        Some(i) => {
            let rest = &without_fragment[i + 3..];
            rest.find('/').map_or("/", |p| &rest[p..])
        }
        None => without_fragment,
    };
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    }
}

/// `host[:port]` of a Host header (IPv6 literals keep their brackets out).
pub fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[')
        && let Some((ip, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (ip.to_string(), port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), Some(port)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    }
}

/// An address as text. IPv4 is written digit by digit: through `Display`
/// it was a few percent of the agent's time, twice per span.
fn ip_string(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// Name, kind, attributes and status of the span for one exchange.
pub fn span_for(
    conn: &ConnMeta,
    x: &Exchange,
    shaper: &mut Shaper,
) -> (String, SpanKind, Attributes, Status) {
    match x {
        Exchange::Http(x) => http_span(conn, x, shaper),
        Exchange::Http2(x) if x.request.grpc => grpc_span(conn, x),
        Exchange::Http2(x) => http_span(conn, &as_http1(x), shaper),
        Exchange::Postgres(x) => postgres_span(conn, x),
        Exchange::Redis(x) => redis_span(conn, x),
    }
}

/// An HTTP/2 exchange in the HTTP/1 shape, so both get the same
/// attributes (`:authority` stands in for `Host`).
fn as_http1(x: &http2::H2Exchange) -> http1::Exchange {
    let mut headers: Headers = x.request.headers.iter().map(|(k, v)| (k, v)).collect();
    if let Some(a) = &x.request.authority {
        headers.push("host", a);
    }
    http1::Exchange {
        seq: x.seq,
        request: http1::RequestHead {
            method: x
                .request
                .method
                .clone()
                .unwrap_or_else(|| "_OTHER".to_string()),
            target: x.request.path.clone().unwrap_or_default(),
            version: "2",
            headers,
        }
        .into(),
        response: http1::ResponseHead {
            status: x.status.unwrap_or(0),
            version: "2",
            headers: x.response_headers.iter().map(|(k, v)| (k, v)).collect(),
        },
        request_start: x.request_start,
        request_end: x.request_end,
        response_start: x.response_start,
        response_end: x.response_end,
        request_body_len: x.request_body_len,
        response_body_len: x.response_body_len,
        end_inferred: false,
    }
}

/// `server.address`/`server.port` and `network.peer.*` of a connection: the
/// peer for clients, the local end for servers.
fn set_endpoints(a: &mut Attributes, conn: &ConnMeta) {
    let Some(e) = conn.endpoints else {
        return;
    };
    a.set("network.peer.address", ip_string(e.peer.ip()));
    a.set("network.peer.port", e.peer.port() as i64);
    let server = match conn.role {
        Role::Client => e.peer,
        Role::Server => e.local,
    };
    a.set("server.address", ip_string(server.ip()));
    a.set("server.port", server.port() as i64);
    if conn.role == Role::Server {
        a.set("client.address", ip_string(e.peer.ip()));
        a.set("client.port", e.peer.port() as i64);
    }
}

fn kind_of(conn: &ConnMeta) -> SpanKind {
    match conn.role {
        Role::Client => SpanKind::Client,
        Role::Server => SpanKind::Server,
    }
}

/// gRPC status codes a server reports as its own error (semconv: the rest
/// are the caller's problem).
const GRPC_SERVER_ERRORS: &[u32] = &[2, 4, 12, 13, 14, 15];

/// A gRPC call (https://opentelemetry.io/docs/specs/semconv/rpc/grpc/).
fn grpc_span(conn: &ConnMeta, x: &http2::H2Exchange) -> (String, SpanKind, Attributes, Status) {
    let mut a = Attributes::with_capacity(32);
    a.set("rpc.system", "grpc");
    let path = x.request.path.clone().unwrap_or_default();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .map(|(s, m)| (s.to_string(), m.to_string()))
        .unwrap_or_default();
    if !service.is_empty() {
        a.set("rpc.service", service.as_str());
        a.set("rpc.method", method.as_str());
    }
    set_endpoints(&mut a, conn);
    a.set("network.protocol.name", "http");
    a.set("network.protocol.version", "2");
    a.set("network.transport", "tcp");
    // A reset stream has no status; CANCELLED is what gRPC makes of it.
    let code = x.grpc_status.or(x.reset.map(|_| 1));
    if let Some(code) = code {
        a.set("rpc.grpc.status_code", code as i64);
    }
    if x.request.incomplete_headers || x.incomplete_headers {
        a.set("seam.headers_incomplete", true);
    }
    let error = match (conn.role, code) {
        (_, None) => true,
        (Role::Server, Some(c)) => GRPC_SERVER_ERRORS.contains(&c),
        (Role::Client, Some(c)) => c != 0,
    };
    if error {
        a.set(
            "error.type",
            code.map_or("unknown".to_string(), |c| c.to_string()),
        );
    }
    let name = if service.is_empty() {
        "grpc".to_string()
    } else {
        format!("{service}/{method}")
    };
    (
        name,
        kind_of(conn),
        a,
        if error { Status::Error } else { Status::Unset },
    )
}

/// A PostgreSQL query (https://opentelemetry.io/docs/specs/semconv/database/postgresql/).
fn postgres_span(
    conn: &ConnMeta,
    x: &postgres::PgExchange,
) -> (String, SpanKind, Attributes, Status) {
    let mut a = Attributes::with_capacity(32);
    a.set("db.system.name", "postgresql");
    if let Some(ns) = &x.query.namespace {
        a.set("db.namespace", ns.as_str());
    }
    if let Some(op) = &x.query.operation {
        a.set("db.operation.name", op.as_str());
    }
    if !x.query.text.is_empty() {
        a.set("db.query.text", x.query.text.as_str());
    }
    if let Some(rows) = x.rows {
        a.set("db.response.returned_rows", rows as i64);
    }
    set_endpoints(&mut a, conn);
    a.set("network.transport", "tcp");
    let status = match &x.error {
        Some(e) => {
            a.set("db.response.status_code", e.code.as_str());
            a.set("error.type", e.code.as_str());
            Status::Error
        }
        None => Status::Unset,
    };
    let name = match (&x.query.operation, &x.query.namespace) {
        (Some(op), Some(ns)) => format!("{op} {ns}"),
        (Some(op), None) => op.clone(),
        (None, Some(ns)) => ns.clone(),
        (None, None) => "postgresql".to_string(),
    };
    (name, kind_of(conn), a, status)
}

/// A Redis command (https://opentelemetry.io/docs/specs/semconv/database/redis/);
/// argument values are never kept.
fn redis_span(conn: &ConnMeta, x: &redis::RedisExchange) -> (String, SpanKind, Attributes, Status) {
    let mut a = Attributes::with_capacity(32);
    a.set("db.system.name", "redis");
    a.set("db.operation.name", x.command.name.as_str());
    if let Some(db) = x.command.database {
        a.set("db.namespace", db.to_string());
    }
    set_endpoints(&mut a, conn);
    a.set("network.transport", "tcp");
    let status = match &x.error {
        Some(e) => {
            a.set("error.type", e.as_str());
            Status::Error
        }
        None => Status::Unset,
    };
    (x.command.name.clone(), kind_of(conn), a, status)
}

/// An HTTP exchange's span.
pub fn http_span(
    conn: &ConnMeta,
    x: &http1::Exchange,
    shaper: &mut Shaper,
) -> (String, SpanKind, Attributes, Status) {
    // Fixed keys are pushed, each once; only allowlisted headers can repeat.
    let mut a = Attributes::with_capacity(32);
    let scheme = if conn.tls { "https" } else { "http" };
    match known_method(&x.request.method) {
        Some(m) => a.push("http.request.method", Value::word(m)),
        None => {
            a.push("http.request.method", Value::word("_OTHER"));
            a.push("http.request.method_original", x.request.method.as_str());
        }
    }
    let status = x.response.status;
    a.push("http.response.status_code", status as i64);
    let (raw_path, query) = split_target(&x.request.target);
    let route = shaper
        .router
        .route(conn.process.service_name.as_str(), raw_path);
    let path = shaper.redactor.path(raw_path);
    let query = query.map(|q| shaper.redactor.query(q));
    for (k, v) in shaper
        .redactor
        .request_headers(&x.request.headers)
        .into_iter()
        .chain(shaper.redactor.response_headers(&x.response.headers))
    {
        a.set(k, v);
    }
    a.push("url.scheme", Value::word(scheme));
    a.push("network.protocol.name", Value::word("http"));
    a.push("network.protocol.version", Value::word(x.request.version));
    a.push("network.transport", Value::word("tcp"));
    if let Some(ua) = x.request.header("user-agent") {
        a.push("user_agent.original", ua);
    }
    if x.request_body_len > 0 {
        a.push("http.request.body.size", x.request_body_len as i64);
    }
    a.push("http.response.body.size", x.response_body_len as i64);

    let host = x.request.header("host").map(split_host);
    let (local, peer): (Option<SocketAddr>, Option<SocketAddr>) = match conn.endpoints {
        Some(e) => (Some(e.local), Some(e.peer)),
        None => (None, None),
    };
    // Each address is formatted once, however many attributes carry it.
    let peer_ip = peer.map(|p| ip_string(p.ip()));
    let local_ip = local.map(|l| ip_string(l.ip()));
    if let (Some(peer), Some(ip)) = (peer, &peer_ip) {
        a.push("network.peer.address", ip.as_str());
        a.push("network.peer.port", peer.port() as i64);
    }
    if let (Some(local), Some(ip)) = (local, &local_ip) {
        a.push("network.local.address", ip.as_str());
        a.push("network.local.port", local.port() as i64);
    }

    let name = span_name(&x.request.method, Some(&route));
    let (kind, error) = match conn.role {
        Role::Server => {
            match (host, local) {
                (Some((h, p)), local) => {
                    a.push("server.address", h);
                    if let Some(port) = p.or(local.map(|l| l.port())) {
                        a.push("server.port", port as i64);
                    }
                }
                (None, Some(local)) => {
                    a.push("server.address", local_ip.unwrap_or_default());
                    a.push("server.port", local.port() as i64);
                }
                (None, None) => {}
            }
            if let (Some(peer), Some(ip)) = (peer, peer_ip) {
                a.push("client.address", ip);
                a.push("client.port", peer.port() as i64);
            }
            a.push("url.path", path);
            if let Some(q) = query {
                a.push("url.query", q);
            }
            a.push("http.route", route);
            (SpanKind::Server, status >= 500)
        }
        Role::Client => {
            let (server_host, server_port) = match (host, peer) {
                (Some((h, p)), peer) => (Some(h), p.or(peer.map(|p| p.port()))),
                (None, Some(peer)) => (peer_ip, Some(peer.port())),
                (None, None) => (None, None),
            };
            if let Some(h) = &server_host {
                let default_port = if conn.tls { 443 } else { 80 };
                let authority = match server_port {
                    Some(p) if p != default_port => format_authority(h, Some(p)),
                    _ => format_authority(h, None),
                };
                let mut full = format!("{scheme}://{authority}{path}");
                if let Some(q) = &query {
                    full.push('?');
                    full.push_str(q);
                }
                a.push("url.full", full);
            }
            if let Some(h) = server_host {
                a.push("server.address", h);
            }
            if let Some(p) = server_port {
                a.push("server.port", p as i64);
            }
            a.push("url.path", path);
            if let Some(q) = query {
                a.push("url.query", q);
            }
            a.push("url.template", route);
            (SpanKind::Client, status >= 400)
        }
    };
    let status_code = if error {
        a.push("error.type", status.to_string());
        Status::Error
    } else {
        Status::Unset
    };
    (name, kind, a, status_code)
}

fn format_authority(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        discover::{process::ProcessTable, sockets::Endpoints},
        protocol::{
            Timing,
            http1::{RequestHead, ResponseHead},
        },
    };

    fn exchange(
        method: &str,
        target: &str,
        status: u16,
        headers: &[(&str, &str)],
    ) -> http1::Exchange {
        http1::Exchange {
            seq: 0,
            request: RequestHead::for_test(method, target, headers).into(),
            response: ResponseHead {
                status,
                version: "1.1",
                headers: Default::default(),
            },
            request_start: Timing::default(),
            request_end: Timing::default(),
            response_start: Timing::default(),
            response_end: Timing::default(),
            request_body_len: 0,
            response_body_len: 12,
            end_inferred: false,
        }
    }

    fn conn(role: Role) -> ConnMeta {
        ConnMeta {
            sock: 1,
            pid: 1,
            process: ProcessTable::new("/nonexistent").get(1, Some("x")),
            role,
            endpoints: Some(Endpoints {
                local: "127.0.0.1:8001".parse().unwrap(),
                peer: "127.0.0.1:45678".parse().unwrap(),
            }),
            tls: false,
        }
    }

    fn s(a: &Attributes, k: &str) -> String {
        a.get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "<none>".into())
    }

    #[test]
    fn server_span_attributes() {
        let x = exchange(
            "GET",
            "/check?item=123",
            503,
            &[
                ("Host", "inventory:8001"),
                ("User-Agent", "python-requests/2"),
            ],
        );
        let (name, kind, a, status) = http_span(&conn(Role::Server), &x, &mut Shaper::default());
        assert_eq!(name, "GET /check");
        assert_eq!(s(&a, "http.route"), "/check");
        assert_eq!(kind, SpanKind::Server);
        assert_eq!(status, Status::Error);
        assert_eq!(s(&a, "http.request.method"), "GET");
        assert_eq!(s(&a, "url.path"), "/check");
        assert_eq!(s(&a, "url.query"), "item=REDACTED");
        assert_eq!(s(&a, "url.scheme"), "http");
        assert_eq!(s(&a, "http.response.status_code"), "503");
        assert_eq!(s(&a, "server.address"), "inventory");
        assert_eq!(s(&a, "server.port"), "8001");
        assert_eq!(s(&a, "client.address"), "127.0.0.1");
        assert_eq!(s(&a, "client.port"), "45678");
        assert_eq!(s(&a, "network.peer.port"), "45678");
        assert_eq!(s(&a, "network.protocol.version"), "1.1");
        assert_eq!(s(&a, "user_agent.original"), "python-requests/2");
        assert_eq!(s(&a, "error.type"), "503");
        assert_eq!(s(&a, "url.full"), "<none>");
    }

    #[test]
    fn client_span_attributes() {
        let x = exchange("POST", "/charge", 404, &[("Host", "127.0.0.1:8002")]);
        let mut c = conn(Role::Client);
        c.endpoints = Some(Endpoints {
            local: "127.0.0.1:45678".parse().unwrap(),
            peer: "127.0.0.1:8002".parse().unwrap(),
        });
        let (name, kind, a, status) = http_span(&c, &x, &mut Shaper::default());
        assert_eq!(
            (name.as_str(), kind, status),
            ("POST /charge", SpanKind::Client, Status::Error)
        );
        assert_eq!(s(&a, "server.address"), "127.0.0.1");
        assert_eq!(s(&a, "server.port"), "8002");
        assert_eq!(s(&a, "url.full"), "http://127.0.0.1:8002/charge");
        assert_eq!(s(&a, "network.local.port"), "45678");
        assert_eq!(s(&a, "client.address"), "<none>");
        // 4xx is not a server error.
        let (_, _, _, server_status) = http_span(&conn(Role::Server), &x, &mut Shaper::default());
        assert_eq!(server_status, Status::Unset);
    }

    #[test]
    fn other_methods_and_targets() {
        let x = exchange("PURGE", "http://cache:8080/a/b?c=d#frag", 200, &[]);
        let (name, _, a, _) = http_span(&conn(Role::Client), &x, &mut Shaper::default());
        assert_eq!(name, "HTTP /a/b");
        assert_eq!(s(&a, "http.request.method"), "_OTHER");
        assert_eq!(s(&a, "http.request.method_original"), "PURGE");
        assert_eq!(s(&a, "url.path"), "/a/b");
        assert_eq!(s(&a, "url.full"), "http://127.0.0.1:45678/a/b?c=REDACTED");
        assert_eq!(split_host("[::1]:8080"), ("::1".to_string(), Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com".to_string(), None));
        assert_eq!(split_host("::1"), ("::1".to_string(), None));
        assert_eq!(split_target("*"), ("*", None));
    }

    #[test]
    fn addresses_are_written_like_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "100.9.99.109",
            "::1",
            "fe80::1:2",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
