//! Low-cardinality routes (`http.route`) and span names for HTTP spans seen
//! on the wire, where no framework tells us the route template.
//!
//! # Route templates (configured)
//!
//! A template is an absolute path whose segments are one of:
//!
//! * a literal, matched exactly (case-sensitive): `users`;
//! * `{name}` (letters, digits, `_`), matching exactly one non-empty segment;
//! * `*`, only as the last segment, matching whatever follows, including
//!   nothing: `/static/*` matches `/static`, `/static/` and `/static/a/b.css`.
//!
//! A single trailing `/` is ignored on both sides when matching. Templates are
//! tried in the order given and the first match wins; the route is the
//! template text itself.
//!
//! # Inferred routes
//!
//! Otherwise each path segment that looks like an identifier becomes `{id}`:
//!
//! * all digits (`42`, `2024`);
//! * UUIDs in any case;
//! * hex strings of 16+ characters, or of 7+ that mix digits and letters
//!   (`a1b2c3d`, a short commit hash) — hex-letter-only words such as
//!   `deadbeef`, `cafe` or `facade` are left alone;
//! * e-mail addresses (also when percent-encoded);
//! * JWTs (three base64url parts, the first starting `eyJ`);
//! * tokens of 16+ base64url characters with few vowels (under 30 % of the
//!   letters; words and camelCase names typically run at 35 % or more)
//!   that either mix upper and lower case (and contain a digit, or are 20+
//!   long) or are at least a quarter digits — random API keys, Stripe-style
//!   `cus_…` ids, Kubernetes generated pod names;
//! * "digit-heavy" segments: 5+ digits making up at least 40 % of the
//!   letters and digits (`INV-2024-000123`, `2024-05-01`, `10.0.0.1`,
//!   `sha256:…`), which leaves `x86_64`, `v1.2.3` and `iphone-15` alone.
//!
//! File names keep their extension (`{id}.png`), and id-like dot-separated
//! parts of a name are replaced on their own (`main.{id}.js` for hashed
//! assets). Words (`users`, `v1`, `api`, `healthz`) and empty segments are
//! kept, as is a trailing slash. Identifiers that look like words (user names,
//! repository names, slugs) cannot be told apart and stay: configure a
//! template for those.
//!
//! # Cardinality cap
//!
//! Each service may produce at most `max_routes_per_service` distinct inferred
//! routes; past that, unseen ones become `/*` and are counted by
//! [`Router::overflowed`]. Configured templates are bounded by the
//! configuration and do not count.
//!
//! # Semantic conventions
//!
//! The HTTP conventions say `http.route` must not be filled from the raw path
//! when the framework does not provide a route. [`RouteSource`] tells the
//! caller whether a route came from a configured template or was inferred, so
//! the integrator can decide where an inferred one goes (span name only, or
//! `http.route` as an explicit product choice).
use std::borrow::Cow;

use crate::{FastMap, FastSet, policy::redact::percent_decode};

pub const ID_PLACEHOLDER: &str = "{id}";
pub const OVERFLOW_ROUTE: &str = "/*";

#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Templates such as `/users/{id}/orders` or `/static/*`.
    pub patterns: Vec<String>,
    pub max_routes_per_service: usize,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            patterns: Vec::new(),
            max_routes_per_service: 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource {
    /// A configured template matched.
    Configured,
    /// Built by the identifier heuristics.
    Inferred,
    /// The service's route budget was spent; the route is `/*`.
    Overflow,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: String,
    pub source: RouteSource,
}

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Literal(String),
    Param,
    Rest,
}

#[derive(Clone, Debug)]
struct Template {
    text: String,
    segs: Vec<Seg>,
}

/// The path's segments with the leading `/` and one trailing `/` removed.
fn segments(path: &str) -> Vec<&str> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        Vec::new()
    } else {
        inner.split('/').collect()
    }
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err(format!("route pattern {text:?} must start with '/'"));
        }
        let parts = segments(text);
        let last = parts.len().saturating_sub(1);
        let segs = parts
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                if p == "*" {
                    if i == last {
                        Ok(Seg::Rest)
                    } else {
                        Err(format!(
                            "route pattern {text:?}: '*' is only allowed as the last segment"
                        ))
                    }
                } else if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    Ok(Seg::Param)
                } else if p.contains(['{', '}', '*']) {
                    Err(format!(
                        "route pattern {text:?}: segment {p:?} is neither a literal, \
                         a {{name}} parameter nor a final '*'"
                    ))
                } else {
                    Ok(Seg::Literal(p.to_string()))
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Template {
            text: text.to_string(),
            segs,
        })
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut rest = path.iter();
        for seg in &self.segs {
            match seg {
                Seg::Rest => return true,
                Seg::Literal(l) => {
                    if rest.next() != Some(&l.as_str()) {
                        return false;
                    }
                }
                Seg::Param => {
                    if rest.next().is_none_or(|s| s.is_empty()) {
                        return false;
                    }
                }
            }
        }
        rest.next().is_none()
    }
}

/// Checks that every template parses; the configuration loader uses this to
/// report errors at load time.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    Template::parse(pattern).map(|_| ())
}

pub struct Router {
    templates: Vec<Template>,
    max_routes: usize,
    seen: FastMap<String, FastSet<String>>,
    overflowed: u64,
}

impl Router {
    pub fn new(cfg: &RouteConfig) -> Result<Router, String> {
        let templates = cfg
            .patterns
            .iter()
            .map(|p| Template::parse(p))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Router {
            templates,
            max_routes: cfg.max_routes_per_service,
            seen: FastMap::default(),
            overflowed: 0,
        })
    }

    /// The route for `path` (a path, request target or absolute URL) served
    /// or called by `service`.
    pub fn route(&mut self, service: &str, path: &str) -> String {
        self.route_match(service, path).route
    }

    /// Like [`Router::route`], also saying where the route came from.
    pub fn route_match(&mut self, service: &str, path: &str) -> RouteMatch {
        let path = normalize_path(path);
        if path != "*" && !self.templates.is_empty() {
            let segs = segments(path);
            if let Some(t) = self.templates.iter().find(|t| t.matches(&segs)) {
                return RouteMatch {
                    route: t.text.clone(),
                    source: RouteSource::Configured,
                };
            }
        }
        let inferred = infer_route(path);
        // Looked up before inserting: no key allocation once a service is known.
        if !self.seen.contains_key(service) {
            self.seen.insert(service.to_string(), FastSet::default());
        }
        let known = self.seen.get_mut(service).expect("inserted above");
        if known.contains(&inferred) {
            return RouteMatch {
                route: inferred,
                source: RouteSource::Inferred,
            };
        }
        if known.len() < self.max_routes {
            known.insert(inferred.clone());
            return RouteMatch {
                route: inferred,
                source: RouteSource::Inferred,
            };
        }
        self.overflowed += 1;
        RouteMatch {
            route: OVERFLOW_ROUTE.to_string(),
            source: RouteSource::Overflow,
        }
    }

    /// Requests whose route was replaced by `/*` because of the cap.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Distinct inferred routes recorded for `service`.
    pub fn route_count(&self, service: &str) -> usize {
        self.seen.get(service).map_or(0, FastSet::len)
    }
}

/// The path part of a path, request target or absolute URL: no scheme,
/// authority, query or fragment; empty becomes `/`.
fn normalize_path(target: &str) -> &str {
    let mut p = target.split(['?', '#']).next().unwrap_or("");
    if !p.starts_with('/')
        && let Some(i) = p.find("://")
    {
        let after = &p[i + 3..];
        p = after.find('/').map_or("/", |j| &after[j..]);
    }
    if p.is_empty() { "/" } else { p }
}

/// The inferred route of a path, without templates or the cap.
pub fn infer_route(path: &str) -> String {
    let path = normalize_path(path);
    if path == "*" || path == "/" {
        return path.to_string();
    }
    path.split('/')
        .map(segment_route)
        .collect::<Vec<_>>()
        .join("/")
}

fn segment_route(seg: &str) -> Cow<'_, str> {
    if seg.is_empty() {
        return Cow::Borrowed(seg);
    }
    let decoded: Cow<'_, str> = if seg.contains('%') {
        Cow::Owned(percent_decode(seg))
    } else {
        Cow::Borrowed(seg)
    };
    let s = decoded.as_ref();
    if is_distinct_id(s) {
        return Cow::Borrowed(ID_PLACEHOLDER);
    }
    if let Some((stem, ext)) = split_extension(s)
        && is_id(stem)
    {
        return Cow::Owned(format!("{ID_PLACEHOLDER}.{ext}"));
    }
    // After the extension check, so `12345.csv.gz` keeps its extension.
    if is_digit_heavy(s) {
        return Cow::Borrowed(ID_PLACEHOLDER);
    }
    if s.contains('.') && s.split('.').any(is_strong_id) {
        let parts: Vec<&str> = s
            .split('.')
            .map(|p| if is_strong_id(p) { ID_PLACEHOLDER } else { p })
            .collect();
        return Cow::Owned(parts.join("."));
    }
    Cow::Borrowed(seg)
}

/// Splits off up to two trailing file extensions (`.png`, `.tar.gz`).
fn split_extension(s: &str) -> Option<(&str, &str)> {
    let mut cut = None;
    let mut end = s.len();
    for _ in 0..2 {
        let Some(dot) = s[..end].rfind('.') else {
            break;
        };
        if !is_extension(&s[dot + 1..end]) {
            break;
        }
        cut = Some(dot);
        end = dot;
    }
    match cut {
        Some(dot) if dot > 0 => Some((&s[..dot], &s[dot + 1..])),
        _ => None,
    }
}

fn is_extension(ext: &str) -> bool {
    (1..=6).contains(&ext.len())
        && ext.starts_with(|c: char| c.is_ascii_alphabetic())
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Identifier shapes that hold whatever surrounds them.
fn is_distinct_id(s: &str) -> bool {
    is_all_digits(s) || is_uuid(s) || is_hex_id(s) || is_email(s) || is_jwt(s) || is_token(s)
}

fn is_id(s: &str) -> bool {
    is_distinct_id(s) || is_digit_heavy(s)
}

/// Identifiers distinctive enough to replace inside a dotted file name,
/// where bare numbers are usually versions.
fn is_strong_id(s: &str) -> bool {
    is_uuid(s) || is_hex_id(s) || is_token(s)
}

fn is_all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_hex_id(s: &str) -> bool {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let digits = s.bytes().any(|b| b.is_ascii_digit());
    let letters = s.bytes().any(|b| b.is_ascii_alphabetic());
    s.len() >= 16 || (s.len() >= 7 && digits && letters)
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain
                    .split_once('.')
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        }
        None => false,
    }
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

fn is_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && !parts[1].is_empty()
        && parts.iter().all(|p| is_base64url(p))
}

fn is_token(s: &str) -> bool {
    if s.len() < 16 || !is_base64url(s) {
        return false;
    }
    let (mut upper, mut lower, mut digits, mut vowels) = (0usize, 0usize, 0usize, 0usize);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' => upper += 1,
            b'a'..=b'z' => lower += 1,
            b'0'..=b'9' => digits += 1,
            _ => {}
        }
        if matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u') {
            vowels += 1;
        }
    }
    let letters = upper + lower;
    // Compared as integers: vowels / letters < 0.3.
    if letters == 0 || vowels * 10 >= letters * 3 {
        return false;
    }
    let mixed_case = upper > 0 && lower > 0 && (digits > 0 || s.len() >= 20);
    let digit_rich = digits * 4 >= letters + digits;
    mixed_case || digit_rich
}

fn is_digit_heavy(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let alnum = s.bytes().filter(u8::is_ascii_alphanumeric).count();
    digits >= 5 && digits * 10 >= alnum * 4
}

const KNOWN_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// The program's own copy of a standard HTTP method, `None` for any other
/// (semconv reports those as `_OTHER`); static, so attributes need not own it.
pub fn known_method(method: &str) -> Option<&'static str> {
    KNOWN_METHODS.iter().copied().find(|&m| m == method)
}

/// The span name the HTTP semantic conventions ask for: `{method} {target}`
/// when a low-cardinality target (route) is known, `{method}` otherwise, with
/// `HTTP` standing in for methods outside the standard set.
pub fn span_name(method: &str, route: Option<&str>) -> String {
    let method = known_method(method).unwrap_or("HTTP");
    match route {
        Some(r) if !r.is_empty() => format!("{method} {r}"),
        _ => method.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inferred_routes_of_real_world_paths() {
        let table: &[(&str, &str)] = &[
            // Edge cases.
            ("", "/"),
            ("/", "/"),
            ("*", "*"),
            ("//double//slash", "//double//slash"),
            ("/search?q=jane@example.com", "/search"),
            ("/page#section-2", "/page"),
            ("http://example.com/users/7?x=1", "/users/{id}"),
            ("https://example.com", "/"),
            // Plain words stay.
            ("/healthz", "/healthz"),
            ("/metrics", "/metrics"),
            ("/graphql", "/graphql"),
            ("/api/v1/users", "/api/v1/users"),
            ("/API/V1/Users", "/API/V1/Users"),
            ("/api/v2/search", "/api/v2/search"),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/oauth2/authorize", "/oauth2/authorize"),
            (
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration",
            ),
            ("/products/iphone-15-pro-max", "/products/iphone-15-pro-max"),
            ("/files/deadbeef", "/files/deadbeef"),
            ("/menu/facade/cafe", "/menu/facade/cafe"),
            ("/caf%C3%A9/menu", "/caf%C3%A9/menu"),
            // REST ids.
            ("/api/v1/users/123", "/api/v1/users/{id}"),
            (
                "/api/v1/users/123/orders/456",
                "/api/v1/users/{id}/orders/{id}",
            ),
            ("/api/users/42/", "/api/users/{id}/"),
            ("/api/1/items", "/api/{id}/items"),
            ("/users/550e8400-e29b-41d4-a716-446655440000", "/users/{id}"),
            (
                "/users/550E8400-E29B-41D4-A716-446655440000/",
                "/users/{id}/",
            ),
            ("/posts/507f1f77bcf86cd799439011", "/posts/{id}"),
            ("/u/8f14e45fceea167a5a36dedd4bea2543", "/u/{id}"),
            ("/orders/INV-2024-000123", "/orders/{id}"),
            ("/archive/2024-05-01", "/archive/{id}"),
            ("/track/1Z999AA10123456784", "/track/{id}"),
            ("/v1/customers/cus_NffrFeUfNV2Hib", "/v1/customers/{id}"),
            (
                "/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa/confirm",
                "/v1/payment_intents/{id}/confirm",
            ),
            ("/users/john.doe@example.com", "/users/{id}"),
            (
                "/users/john.doe%40example.com/settings",
                "/users/{id}/settings",
            ),
            (
                "/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "/reset/{id}",
            ),
            ("/share/dGhpcyBpcyBhIHNlY3JldCB0b2tlbg", "/share/{id}"),
            ("/ipv4/10.0.0.1", "/ipv4/{id}"),
            // GitHub-like.
            (
                "/repos/octocat/Hello-World/issues/1347",
                "/repos/octocat/Hello-World/issues/{id}",
            ),
            (
                "/rust-lang/rust/pull/12345/files",
                "/rust-lang/rust/pull/{id}/files",
            ),
            (
                "/rust-lang/rust/commit/a1b2c3d",
                "/rust-lang/rust/commit/{id}",
            ),
            (
                "/repos/o/r/commits/3f2a9b1c4d5e6f708192a3b4c5d6e7f809123456",
                "/repos/o/r/commits/{id}",
            ),
            (
                "/rust-lang/rust/blob/master/src/main.rs",
                "/rust-lang/rust/blob/master/src/main.rs",
            ),
            // S3-like object keys.
            (
                "/my-bucket/uploads/3f2a9b1c4d5e6f70.png",
                "/my-bucket/uploads/{id}.png",
            ),
            (
                "/bucket/550e8400-e29b-41d4-a716-446655440000.jpg",
                "/bucket/{id}.jpg",
            ),
            (
                "/bucket/photos/2024/05/IMG_1234.JPG",
                "/bucket/photos/{id}/{id}/IMG_1234.JPG",
            ),
            (
                "/bucket/exports/12345.csv.gz",
                "/bucket/exports/{id}.csv.gz",
            ),
            ("/bucket/exports/98765.csv", "/bucket/exports/{id}.csv"),
            // Kubernetes API.
            (
                "/api/v1/namespaces/default/pods",
                "/api/v1/namespaces/default/pods",
            ),
            (
                "/api/v1/namespaces/default/pods/nginx-7c5ddbdf54-x8f9k/log",
                "/api/v1/namespaces/default/pods/{id}/log",
            ),
            (
                "/api/v1/namespaces/kube-system/pods/coredns-5d78c9869d-abcde",
                "/api/v1/namespaces/kube-system/pods/{id}",
            ),
            (
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
            ),
            // Static assets and downloads.
            ("/favicon.ico", "/favicon.ico"),
            ("/static/css/app.css", "/static/css/app.css"),
            ("/static/js/main.3f2a9b1c.js", "/static/js/main.{id}.js"),
            (
                "/assets/vendor.a1b2c3d4e5f6a7b8.chunk.js",
                "/assets/vendor.{id}.chunk.js",
            ),
            (
                "/download/app-linux-x86_64.tar.gz",
                "/download/app-linux-x86_64.tar.gz",
            ),
            (
                "/centos/7/os/x86_64/Packages/",
                "/centos/{id}/os/x86_64/Packages/",
            ),
            (
                "/v2/library/nginx/manifests/1.25.3",
                "/v2/library/nginx/manifests/1.25.3",
            ),
            (
                "/v2/library/nginx/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "/v2/library/nginx/blobs/{id}",
            ),
            // Tokens vs. camelCase and slugs.
            ("/api/getAllUsersV2Paginated", "/api/getAllUsersV2Paginated"),
            (
                "/api/ThisIsAVeryLongCamelCaseName",
                "/api/ThisIsAVeryLongCamelCaseName",
            ),
            (
                "/blog/how-to-write-rust-code-in-2024",
                "/blog/how-to-write-rust-code-in-2024",
            ),
            (
                "/pkg/python3-pip-installer-2024",
                "/pkg/python3-pip-installer-2024",
            ),
            ("/invite/Xk9mQ2pLr7TzWb4N", "/invite/{id}"),
        ];
        assert!(table.len() >= 40);
        let mut failures = vec![];
        for (path, want) in table {
            let got = infer_route(path);
            if got != *want {
                failures.push(format!("{path:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    fn router(patterns: &[&str], max: usize) -> Router {
        Router::new(&RouteConfig {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            max_routes_per_service: max,
        })
        .unwrap()
    }

    #[test]
    fn configured_templates_win_in_order() {
        let mut r = router(
            &[
                "/users/{id}/orders",
                "/users/me",
                "/users/{user}",
                "/static/*",
                "/repos/{owner}/{repo}/pulls/{number}",
                "/",
            ],
            10,
        );
        let cases = [
            ("/users/42/orders", "/users/{id}/orders"),
            ("/users/abc/orders/", "/users/{id}/orders"),
            ("/users/me", "/users/me"),
            ("/users/jane", "/users/{user}"),
            ("/static", "/static/*"),
            ("/static/", "/static/*"),
            ("/static/css/site.css", "/static/*"),
            (
                "/repos/octocat/hello/pulls/7",
                "/repos/{owner}/{repo}/pulls/{number}",
            ),
            ("/", "/"),
            ("", "/"),
            ("/users/42/orders?page=2", "/users/{id}/orders"),
        ];
        for (path, want) in cases {
            let m = r.route_match("svc", path);
            assert_eq!(m.route, want, "{path}");
            assert_eq!(m.source, RouteSource::Configured, "{path}");
        }
        // No template matches: heuristics.
        let m = r.route_match("svc", "/users/42/orders/7");
        assert_eq!(m.route, "/users/{id}/orders/{id}");
        assert_eq!(m.source, RouteSource::Inferred);
        // `{name}` needs a non-empty segment.
        assert_eq!(r.route("svc", "/users//orders"), "/users//orders");
        // Literals are case-sensitive.
        assert_eq!(
            r.route_match("svc", "/Users/me").source,
            RouteSource::Inferred
        );
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            "users/{id}",
            "/a/*/b",
            "/a/{",
            "/a/{}",
            "/a/{x-y}",
            "/a/b*",
            "/a/{x}y",
        ] {
            let err = Router::new(&RouteConfig {
                patterns: vec![bad.to_string()],
                ..RouteConfig::default()
            })
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(validate_pattern("/a/{x_1}/*").is_ok());
    }

    #[test]
    fn routes_per_service_are_capped() {
        let mut r = router(&["/static/*"], 3);
        assert_eq!(r.route("a", "/one"), "/one");
        assert_eq!(r.route("a", "/two/1"), "/two/{id}");
        assert_eq!(r.route("a", "/two/2"), "/two/{id}");
        assert_eq!(r.route("a", "/three"), "/three");
        assert_eq!(r.route_count("a"), 3);
        let m = r.route_match("a", "/four");
        assert_eq!(m.route, "/*");
        assert_eq!(m.source, RouteSource::Overflow);
        assert_eq!(r.route("a", "/five"), "/*");
        assert_eq!(r.overflowed(), 2);
        // Known routes keep working once the cap is reached.
        assert_eq!(r.route("a", "/two/3"), "/two/{id}");
        assert_eq!(r.route("a", "/one"), "/one");
        assert_eq!(r.overflowed(), 2);
        // A trailing slash makes a different route.
        assert_eq!(r.route("a", "/one/"), "/*");
        assert_eq!(r.overflowed(), 3);
        // Templates do not count against the cap.
        assert_eq!(r.route("a", "/static/x.js"), "/static/*");
        // Each service has its own budget.
        assert_eq!(r.route("b", "/four"), "/four");
        assert_eq!(r.overflowed(), 3);
    }

    #[test]
    fn zero_cap_overflows_everything_inferred() {
        let mut r = router(&[], 0);
        assert_eq!(r.route("a", "/x"), "/*");
        assert_eq!(r.overflowed(), 1);
    }

    #[test]
    fn span_names() {
        assert_eq!(span_name("GET", Some("/users/{id}")), "GET /users/{id}");
        assert_eq!(span_name("POST", None), "POST");
        assert_eq!(span_name("PROPFIND", Some("/dav")), "HTTP /dav");
        assert_eq!(span_name("get", None), "HTTP");
        assert_eq!(span_name("GET", Some("")), "GET");
    }
}
