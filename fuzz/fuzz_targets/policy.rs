//! Policy functions fed with what traced programs send: the redactor's
//! `query`, `path`, `url_full` and `request_headers`, and the router's
//! `route` and `infer_route`.
//!
//! Input: one byte of settings (bit 0: keep query values), then text whose
//! first line is the query, path or URL, and whose lines of the form
//! `name: value` are request headers; every line is also routed.
//!
//! Checked: no panic; a redacted query keeps its parts, and each value is
//! `REDACTED` unless values are kept (then the values of signature keys
//! still are); a redacted path keeps its segments, and a segment that is an
//! e-mail address or a card number never survives; `url_full` redacts
//! userinfo and query and fragment values; exported headers are allowlisted,
//! lower-case, never credentials, and not repeated; routes are at most four
//! times as long as the path, keep its segments (when nothing is
//! percent-encoded) with numeric ones as `{id}`, and come from a template, the
//! inference or the overflow route, within the route budget.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use seam::protocol::headers::Headers;
use seam::policy::{
    redact::{REDACTED, RedactConfig, Redactor, percent_decode},
    route::{OVERFLOW_ROUTE, RouteConfig, RouteSource, Router, infer_route},
};

const SIGNATURE_KEYS: [&str; 4] = ["awsaccesskeyid", "signature", "sig", "x-goog-signature"];
const TEMPLATES: [&str; 3] = ["/users/{id}", "/static/*", "/a/{x}/b/"];
const MAX_ROUTES: usize = 8;
const ALLOW: [&str; 5] = [
    "user-agent",
    "x-request-id",
    "authorization",
    "cookie",
    "from",
];

/// The redacted form of query `q` is `out`.
fn check_query(q: &str, out: &str, keep_values: bool) {
    let parts: Vec<&str> = q.split('&').collect();
    let got: Vec<&str> = out.split('&').collect();
    assert_eq!(parts.len(), got.len(), "{q:?} -> {out:?}");
    for (part, got) in parts.iter().zip(got) {
        match part.split_once('=') {
            None => assert!(!got.contains('='), "{part:?} -> {got:?}"),
            Some((key, _)) => {
                let (_, value) = got.split_once('=').expect("a value stays a value");
                let signature = SIGNATURE_KEYS
                    .iter()
                    .any(|k| percent_decode(key).eq_ignore_ascii_case(k));
                if !keep_values || signature {
                    assert_eq!(value, REDACTED, "{part:?} -> {got:?}");
                }
            }
        }
    }
}

fn check_path(r: &Redactor, p: &str, keep_values: bool) {
    let out = r.path(p);
    let (path, query) = p.split_once('?').map_or((p, None), |(a, b)| (a, Some(b)));
    let (out_path, out_query) = out
        .split_once('?')
        .map_or((out.as_str(), None), |(a, b)| (a, Some(b)));
    assert_eq!(
        path.split('/').count(),
        out_path.split('/').count(),
        "{p:?} -> {out:?}"
    );
    assert_eq!(query.is_some(), out_query.is_some());
    if let (Some(q), Some(o)) = (query, out_query) {
        check_query(q, o, keep_values);
    }
    if query.is_none() {
        for secret in [
            "jane.doe@example.com",
            "4111-1111-1111-1111",
            "5500000000000004",
        ] {
            let out = r.path(&format!("{p}/{secret}"));
            assert!(out.ends_with("/REDACTED"), "{p:?}/{secret} -> {out:?}");
        }
    }
}

fn check_url(r: &Redactor, u: &str, keep_values: bool) {
    let out = r.url_full(u);
    let (rest, fragment) = u.split_once('#').map_or((u, None), |(a, b)| (a, Some(b)));
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (out_rest, out_fragment) = out
        .split_once('#')
        .map_or((out.as_str(), None), |(a, b)| (a, Some(b)));
    let (out_rest, out_query) = out_rest
        .split_once('?')
        .map_or((out_rest, None), |(a, b)| (a, Some(b)));
    assert_eq!(
        fragment.is_some(),
        out_fragment.is_some(),
        "{u:?} -> {out:?}"
    );
    assert_eq!(query.is_some(), out_query.is_some(), "{u:?} -> {out:?}");
    if let (Some(f), Some(o)) = (fragment, out_fragment) {
        check_query(f, o, keep_values);
    }
    if let (Some(q), Some(o)) = (query, out_query) {
        check_query(q, o, keep_values);
    }
    for scheme in ["http://", "https://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            let authority = after.split('/').next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                let hidden = if userinfo.contains(':') {
                    "REDACTED:REDACTED@"
                } else {
                    "REDACTED@"
                };
                assert!(
                    out_rest[scheme.len()..].starts_with(hidden),
                    "{u:?} -> {out:?}"
                );
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&settings, text)) = input.split_first() else {
        return;
    };
    let keep_values = settings & 1 != 0;
    // Compiling the patterns is slow; build the two redactors once.
    static REDACTORS: OnceLock<[Redactor; 2]> = OnceLock::new();
    let r = &REDACTORS.get_or_init(|| {
        [false, true].map(|keep| {
            Redactor::new(&RedactConfig {
                header_allowlist: ALLOW.map(String::from).to_vec(),
                keep_query_values: keep,
                ..RedactConfig::default()
            })
            .expect("default patterns compile")
        })
    })[usize::from(keep_values)];
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.split('\n').collect();
    let first = lines[0];

    check_query(first, &r.query(first), keep_values);
    check_path(r, first, keep_values);
    check_url(r, first, keep_values);

    let headers: Headers = lines.iter().filter_map(|l| l.split_once(':')).collect();
    let exported = r.request_headers(&headers);
    assert!(exported.len() <= headers.len());
    for (i, (k, _)) in exported.iter().enumerate() {
        let name = k
            .strip_prefix("http.request.header.")
            .expect("attribute prefix");
        assert!(ALLOW.contains(&name), "{name:?} exported");
        assert!(
            name != "authorization" && name != "cookie",
            "{name:?} exported"
        );
        assert!(
            exported[..i].iter().all(|(other, _)| other != k),
            "{k} twice"
        );
    }

    let mut router = Router::new(&RouteConfig {
        patterns: TEMPLATES.map(String::from).to_vec(),
        max_routes_per_service: MAX_ROUTES,
    })
    .expect("templates are valid");
    for line in &lines {
        let inferred = infer_route(line);
        assert!(
            inferred.len() <= 4 * line.len() + 1,
            "{line:?} -> {inferred:?}"
        );
        let path = line.split(['?', '#']).next().unwrap_or("");
        if path.starts_with('/') && path.len() > 1 && !path.contains('%') {
            let segs: Vec<&str> = path.split('/').collect();
            let got: Vec<&str> = inferred.split('/').collect();
            assert_eq!(segs.len(), got.len(), "{line:?} -> {inferred:?}");
            for (seg, got) in segs.iter().zip(&got) {
                if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                    assert_eq!(*got, "{id}", "{line:?} -> {inferred:?}");
                }
            }
        }
        let m = router.route_match("svc", line);
        match m.source {
            RouteSource::Configured => assert!(TEMPLATES.contains(&m.route.as_str())),
            RouteSource::Inferred => assert_eq!(m.route, inferred),
            RouteSource::Overflow => assert_eq!(m.route, OVERFLOW_ROUTE),
        }
        assert!(router.route_count("svc") <= MAX_ROUTES);
    }
});
