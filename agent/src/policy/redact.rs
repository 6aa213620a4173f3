//! Redaction by default: what leaves the host must not carry credentials or
//! obvious personal data unless the operator asked for it.
//!
//! * **Headers** are exported only when allowlisted (case-insensitively), as
//!   `http.request.header.<name>` / `http.response.header.<name>` with the
//!   name lower-cased, per the HTTP semantic conventions. `Authorization`,
//!   `Proxy-Authorization`, `Cookie` and `Set-Cookie` are never exported, even
//!   when allowlisted. Repeated headers are joined with `", "` (the HTTP list
//!   combination) because a span attribute here holds one string.
//! * **Query strings** keep their keys and order but every value becomes
//!   `REDACTED`; a key without `=` stays as it is. With `keep_query_values`
//!   the values are kept, except those of the keys the URL semantic
//!   conventions single out (`AWSAccessKeyId`, `Signature`, `sig`,
//!   `X-Goog-Signature`). Either way, keys and kept values are also scrubbed
//!   with the sensitive patterns below.
//! * **Paths** are scrubbed segment by segment with the `path_patterns`
//!   regexes: every match becomes `REDACTED`. A segment is also checked after
//!   percent-decoding; if only its decoded form matches (`jane%40example.com`),
//!   the whole segment becomes `REDACTED`, since the matched span cannot be
//!   mapped back onto the encoded text reliably. A pattern never sees `/`.
//! * **Luhn.** A pattern with a capture group named `luhn` only counts as a
//!   match when that group holds 13–19 digits (other characters ignored) that
//!   pass the Luhn checksum and are not part of a longer digit run. The
//!   default card pattern uses it so order numbers and timestamps survive.
//! * **`url.full`** gets path and query scrubbing, its fragment is treated like
//!   a query (OAuth implicit flows put tokens there), and userinfo becomes
//!   `REDACTED:REDACTED` (or `REDACTED` without a password), as the URL
//!   semantic conventions ask.
use std::borrow::Cow;

use regex::Regex;

use crate::protocol::headers::Headers;

pub const REDACTED: &str = "REDACTED";

/// Headers that carry credentials and are never exported.
pub const NEVER_EXPORTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Query keys whose values are redacted even with `keep_query_values`
/// (semantic conventions, `url.query`).
const SENSITIVE_QUERY_KEYS: &[&str] = &["awsaccesskeyid", "signature", "sig", "x-goog-signature"];

/// E-mail addresses: a local part, `@`, and a dotted domain name.
pub const EMAIL_PATTERN: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+";
/// Payment card numbers: 13–19 digits, optionally grouped by spaces or
/// dashes; the `luhn` group makes the Luhn check apply.
pub const CARD_PATTERN: &str = r"(?P<luhn>[0-9](?:[ \-]?[0-9]){12,18})";

#[derive(Clone, Debug, PartialEq)]
pub struct RedactConfig {
    /// Header names to export; empty exports none.
    pub header_allowlist: Vec<String>,
    pub keep_query_values: bool,
    /// Regexes whose matches are replaced in paths (and kept query parts).
    pub path_patterns: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            header_allowlist: Vec::new(),
            keep_query_values: false,
            path_patterns: default_path_patterns(),
        }
    }
}

pub fn default_path_patterns() -> Vec<String> {
    vec![EMAIL_PATTERN.to_string(), CARD_PATTERN.to_string()]
}

struct Pattern {
    re: Regex,
    luhn: Option<usize>,
}

impl Pattern {
    /// Byte ranges of accepted matches in `text`.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(group) = self.luhn else {
            return self
                .re
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect();
        };
        self.re
            .captures_iter(text)
            .filter_map(|c| {
                let whole = c.get(0)?;
                let digits = c.get(group)?;
                let before = text[..digits.start()].chars().next_back();
                let after = text[digits.end()..].chars().next();
                let isolated = !before.is_some_and(|c| c.is_ascii_digit())
                    && !after.is_some_and(|c| c.is_ascii_digit());
                (isolated && luhn_valid(digits.as_str())).then_some((whole.start(), whole.end()))
            })
            .collect()
    }
}

/// Luhn checksum over the ASCII digits of `s`, which must number 13–19.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

pub struct Redactor {
    allow: Vec<String>,
    keep_query_values: bool,
    patterns: Vec<Pattern>,
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Result<Redactor, String> {
        let patterns = cfg
            .path_patterns
            .iter()
            .map(|p| {
                let re = Regex::new(p).map_err(|e| format!("invalid path pattern {p:?}: {e}"))?;
                let luhn = re.capture_names().position(|n| n == Some("luhn"));
                Ok(Pattern { re, luhn })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let allow = cfg
            .header_allowlist
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty() && !NEVER_EXPORTED_HEADERS.contains(&h.as_str()))
            .collect();
        Ok(Redactor {
            allow,
            keep_query_values: cfg.keep_query_values,
            patterns,
        })
    }

    /// `text` with every pattern match replaced; if only the percent-decoded
    /// form matches, all of it is replaced. Text without a match (nearly
    /// all) is handed back as it is.
    fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text.is_empty() || self.patterns.is_empty() {
            return Cow::Borrowed(text);
        }
        // A yes/no search is far cheaper than collecting match positions.
        let mut ranges: Vec<(usize, usize)> = if self.patterns.iter().any(|p| p.re.is_match(text)) {
            self.patterns.iter().flat_map(|p| p.matches(text)).collect()
        } else {
            Vec::new()
        };
        if ranges.is_empty() {
            if text.contains('%') {
                let decoded = percent_decode(text);
                if decoded != text
                    && self
                        .patterns
                        .iter()
                        .any(|p| !p.matches(&decoded).is_empty())
                {
                    return Cow::Borrowed(REDACTED);
                }
            }
            return Cow::Borrowed(text);
        }
        // Several patterns may overlap; replace their union once.
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (start, end) in ranges {
            if end <= pos {
                continue;
            }
            if start >= pos {
                out.push_str(&text[pos..start]);
                out.push_str(REDACTED);
            }
            pos = end;
        }
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    }

    /// Scrubs a query string (without its `?`).
    pub fn query(&self, q: &str) -> String {
        let mut out = String::with_capacity(q.len());
        for (i, part) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match part.split_once('=') {
                None => out.push_str(&self.scrub(part)),
                Some((key, value)) => {
                    out.push_str(&self.scrub(key));
                    out.push('=');
                    if !self.keep_query_values || is_sensitive_query_key(key) {
                        out.push_str(REDACTED);
                    } else {
                        out.push_str(&self.scrub(value));
                    }
                }
            }
        }
        out
    }

    /// Scrubs a path. Anything from a `?` on is treated as a query, in case a
    /// raw request target is passed.
    pub fn path(&self, path: &str) -> String {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut out = String::with_capacity(path.len());
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&self.scrub(seg));
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(&self.query(q));
        }
        out
    }

    fn headers_with_prefix(&self, prefix: &str, headers: &Headers) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        // Nothing is exported without an allowlist (the default).
        if self.allow.is_empty() {
            return out;
        }
        for (name, value) in headers.iter() {
            let name = name.trim().to_ascii_lowercase();
            if NEVER_EXPORTED_HEADERS.contains(&name.as_str()) || !self.allow.contains(&name) {
                continue;
            }
            let key = format!("{prefix}{name}");
            let value = self.scrub(value.trim()).into_owned();
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => {
                    v.push_str(", ");
                    v.push_str(&value);
                }
                None => out.push((key, value)),
            }
        }
        out
    }

    /// Allowlisted request headers as `http.request.header.<name>` attributes.
    pub fn request_headers(&self, headers: &Headers) -> Vec<(String, String)> {
        self.headers_with_prefix("http.request.header.", headers)
    }

    /// Allowlisted response headers as `http.response.header.<name>` attributes.
    pub fn response_headers(&self, headers: &Headers) -> Vec<(String, String)> {
        self.headers_with_prefix("http.response.header.", headers)
    }

    /// Scrubs an absolute (or scheme-relative) URL for `url.full`. Text that
    /// is not a URL is scrubbed as a path.
    pub fn url_full(&self, full: &str) -> String {
        let (rest, fragment) = match full.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (full, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (prefix, authority, path) = split_authority(rest);
        let mut out = String::with_capacity(full.len());
        out.push_str(prefix);
        if let Some(authority) = authority {
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    out.push_str(if userinfo.contains(':') {
                        "REDACTED:REDACTED"
                    } else {
                        REDACTED
                    });
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
        }
        out.push_str(&self.path(path));
        if let Some(q) = query {
            out.push('?');
            out.push_str(&self.query(q));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(&self.query(f));
        }
        out
    }
}

fn is_sensitive_query_key(key: &str) -> bool {
    let key = percent_decode(key);
    SENSITIVE_QUERY_KEYS
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

/// Splits `scheme://authority/path` (or `//authority/path`) into the part up
/// to and including `//`, the authority, and the path.
fn split_authority(url: &str) -> (&str, Option<&str>, &str) {
    let after_scheme = match url.find("://") {
        Some(i)
            if i > 0
                && url[..i].starts_with(|c: char| c.is_ascii_alphabetic())
                && url[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            i + 3
        }
        _ if url.starts_with("//") => 2,
        _ => return ("", None, url),
    };
    let rest = &url[after_scheme..];
    let end = rest.find('/').unwrap_or(rest.len());
    (&url[..after_scheme], Some(&rest[..end]), &rest[end..])
}

/// Percent-decodes `s`, leaving malformed escapes as they are and replacing
/// invalid UTF-8.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&RedactConfig::default()).unwrap()
    }

    fn with(cfg: RedactConfig) -> Redactor {
        Redactor::new(&cfg).unwrap()
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn luhn() {
        for good in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005",
            "6011111111111117",
            "4222222222222",
        ] {
            assert!(luhn_valid(good), "{good}");
        }
        for bad in ["4111111111111112", "1234567812345678", "411111111111", "0"] {
            assert!(!luhn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn query_values_are_redacted() {
        let r = redactor();
        let cases = [
            ("a=1&b=&c", "a=REDACTED&b=REDACTED&c"),
            ("", ""),
            ("q=rust", "q=REDACTED"),
            // `=` inside a value belongs to the value.
            ("token=abc=def==&x=1", "token=REDACTED&x=REDACTED"),
            // Repeated keys stay repeated, in order.
            ("id=1&id=2&id=3", "id=REDACTED&id=REDACTED&id=REDACTED"),
            // Percent-encoded keys are kept as they are.
            (
                "na%20me=J%C3%B6rg&x%3Dy=1",
                "na%20me=REDACTED&x%3Dy=REDACTED",
            ),
            ("flag&&=v&", "flag&&=REDACTED&"),
            ("a=1;b=2", "a=REDACTED"),
        ];
        for (input, want) in cases {
            assert_eq!(r.query(input), want, "{input}");
        }
    }

    #[test]
    fn kept_query_values_are_still_scrubbed() {
        let r = with(RedactConfig {
            keep_query_values: true,
            ..RedactConfig::default()
        });
        assert_eq!(r.query("page=2&sort=name"), "page=2&sort=name");
        assert_eq!(
            r.query("AWSAccessKeyId=AKIA&Signature=abc&sig=x&X-Goog-Signature=y&Expires=1"),
            "AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED\
             &Expires=1"
        );
        assert_eq!(r.query("SIG=x"), "SIG=REDACTED");
        assert_eq!(r.query("email=jane@example.com"), "email=REDACTED");
        assert_eq!(r.query("email=jane%40example.com"), "email=REDACTED");
        assert_eq!(r.query("card=4111-1111-1111-1111&n=2"), "card=REDACTED&n=2");
        assert_eq!(
            r.query("to=x&cc=a@b.io,c@d.io"),
            "to=x&cc=REDACTED,REDACTED"
        );
        // A valueless key that is itself personal data is scrubbed too.
        assert_eq!(r.query("jane@example.com"), "REDACTED");
    }

    #[test]
    fn emails_in_paths() {
        let r = redactor();
        let cases = [
            ("/users/jane.doe@example.com", "/users/REDACTED"),
            (
                "/users/jane.doe@example.com/orders",
                "/users/REDACTED/orders",
            ),
            ("/u/JANE+tag@Mail.Example.CO.UK/x", "/u/REDACTED/x"),
            ("/users/jane%40example.com", "/users/REDACTED"),
            ("/mailto:jane@example.com", "/mailto:REDACTED"),
            // Not e-mail addresses.
            ("/users/@handle", "/users/@handle"),
            ("/pkg/@scope/name", "/pkg/@scope/name"),
            ("/v1/a@b", "/v1/a@b"),
        ];
        for (input, want) in cases {
            assert_eq!(r.path(input), want, "{input}");
        }
    }

    #[test]
    fn card_numbers_in_paths() {
        let r = redactor();
        let cases = [
            ("/cards/4111111111111111", "/cards/REDACTED"),
            (
                "/cards/4111-1111-1111-1111/charge",
                "/cards/REDACTED/charge",
            ),
            ("/cards/4111%201111%201111%201111", "/cards/REDACTED"),
            ("/pay/card-5500000000000004", "/pay/card-REDACTED"),
            ("/amex/378282246310005", "/amex/REDACTED"),
            // Luhn-invalid: an order number, kept.
            ("/orders/4111111111111112", "/orders/4111111111111112"),
            // Too short, and too long (part of a longer digit run).
            ("/orders/411111111111", "/orders/411111111111"),
            (
                "/ids/41111111111111110000000",
                "/ids/41111111111111110000000",
            ),
            // A millisecond timestamp is 13 digits; most fail Luhn.
            ("/t/1700000000001", "/t/1700000000001"),
            ("/", "/"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(r.path(input), want, "{input}");
        }
    }

    #[test]
    fn custom_patterns() {
        let r = with(RedactConfig {
            path_patterns: vec![r"^tok_[A-Za-z0-9]+$".into(), r"\d{3}-\d{2}-\d{4}".into()],
            ..RedactConfig::default()
        });
        assert_eq!(r.path("/t/tok_abc123/x"), "/t/REDACTED/x");
        assert_eq!(r.path("/ssn/123-45-6789"), "/ssn/REDACTED");
        // Defaults are replaced, not extended.
        assert_eq!(r.path("/u/jane@example.com"), "/u/jane@example.com");
        // Patterns never span segments.
        let r = with(RedactConfig {
            path_patterns: vec!["a/b".into()],
            ..RedactConfig::default()
        });
        assert_eq!(r.path("/a/b"), "/a/b");
    }

    #[test]
    fn overlapping_patterns_replace_once() {
        let r = with(RedactConfig {
            path_patterns: vec!["abc".into(), "bcd".into(), "x".into()],
            ..RedactConfig::default()
        });
        assert_eq!(r.path("/abcde/x"), "/REDACTEDe/REDACTED");
    }

    #[test]
    fn bad_regex_names_the_pattern() {
        let err = Redactor::new(&RedactConfig {
            path_patterns: vec!["ok".into(), "(unclosed".into()],
            ..RedactConfig::default()
        })
        .err()
        .unwrap();
        assert!(err.contains("\"(unclosed\""), "{err}");
    }

    #[test]
    fn path_with_query_is_split() {
        let r = redactor();
        assert_eq!(r.path("/a/jane@x.io?t=1"), "/a/REDACTED?t=REDACTED");
    }

    #[test]
    fn headers_need_the_allowlist() {
        let r = redactor();
        let h = Headers::from(vec![("User-Agent", "curl"), ("Accept", "*/*")]);
        assert!(r.request_headers(&h).is_empty());
        assert!(r.response_headers(&h).is_empty());

        let r = with(RedactConfig {
            header_allowlist: vec!["user-agent".into(), " X-Request-ID ".into()],
            ..RedactConfig::default()
        });
        let h = Headers::from(vec![
            ("USER-AGENT", "curl/8"),
            ("x-request-id", "abc"),
            ("Accept", "*/*"),
            ("X-Request-Id", "def"),
        ]);
        assert_eq!(
            r.request_headers(&h),
            hdrs(&[
                ("http.request.header.user-agent", "curl/8"),
                ("http.request.header.x-request-id", "abc, def"),
            ])
        );
        assert_eq!(
            r.response_headers(&h)[0],
            (
                "http.response.header.user-agent".to_string(),
                "curl/8".to_string()
            )
        );
    }

    #[test]
    fn credential_headers_are_never_exported() {
        let names = [
            "Authorization",
            "authorization",
            "AUTHORIZATION",
            "AuThOrIzAtIoN",
            "Proxy-Authorization",
            "proxy-authorization",
            "PROXY-AUTHORIZATION",
            "Cookie",
            "cookie",
            "COOKIE",
            "Set-Cookie",
            "set-cookie",
            "SET-COOKIE",
            " Set-Cookie ",
        ];
        let r = with(RedactConfig {
            header_allowlist: names
                .iter()
                .map(|n| n.to_string())
                .chain(["x-ok".into()])
                .collect(),
            ..RedactConfig::default()
        });
        let h: Headers = names
            .iter()
            .map(|n| (*n, "secret"))
            .chain([("X-OK", "fine")])
            .collect();
        assert_eq!(
            r.request_headers(&h),
            hdrs(&[("http.request.header.x-ok", "fine")])
        );
        assert_eq!(
            r.response_headers(&h),
            hdrs(&[("http.response.header.x-ok", "fine")])
        );
    }

    #[test]
    fn allowlisted_header_values_are_scrubbed() {
        let r = with(RedactConfig {
            header_allowlist: vec!["from".into()],
            ..RedactConfig::default()
        });
        assert_eq!(
            r.request_headers(&Headers::from(vec![("From", "jane@example.com")])),
            hdrs(&[("http.request.header.from", "REDACTED")])
        );
    }

    #[test]
    fn full_urls() {
        let r = redactor();
        let cases = [
            (
                "https://user:pass@www.example.com/",
                "https://REDACTED:REDACTED@www.example.com/",
            ),
            ("http://user@host:8080/x", "http://REDACTED@host:8080/x"),
            (
                "http://a:b@c@host/users/jane@example.com?q=1&flag#frag",
                "http://REDACTED:REDACTED@host/users/REDACTED?q=REDACTED&flag#frag",
            ),
            (
                "https://app.example/cb#access_token=xyz&state=1",
                "https://app.example/cb#access_token=REDACTED&state=REDACTED",
            ),
            ("https://example.com", "https://example.com"),
            ("https://example.com?x=1", "https://example.com?x=REDACTED"),
            ("//localhost/a?b=c", "//localhost/a?b=REDACTED"),
            ("/relative/path?x=y", "/relative/path?x=REDACTED"),
            (
                "http://[::1]:80/cards/4111111111111111",
                "http://[::1]:80/cards/REDACTED",
            ),
            // The @ in the path is not userinfo.
            ("http://host/u/@me", "http://host/u/@me"),
        ];
        for (input, want) in cases {
            assert_eq!(r.url_full(input), want, "{input}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2"), "a@b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }
}
