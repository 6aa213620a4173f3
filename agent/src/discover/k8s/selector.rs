//! Kubernetes label selectors in their string form (`a=b,c!=d,e in (x,y),!f`),
//! parsed and matched locally: the pod watch cannot filter by label, since a
//! namespace label can opt in pods that carry none.
use std::{collections::BTreeMap, fmt, str::FromStr};

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    /// `key` — the label is present.
    Exists(String),
    /// `!key` — the label is absent.
    NotExists(String),
    /// `key=v`, `key==v`, `key in (v1,v2)` — present with one of the values.
    In(String, Vec<String>),
    /// `key!=v`, `key notin (v1,v2)` — absent, or present with none of the values.
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// A parsed label selector; every requirement must hold. The empty selector
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    text: String,
}

/// Why a selector string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SelectorError {
            selector: s.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(s).map_err(fail)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(fail("empty requirement".into()));
            }
            requirements.push(parse_requirement(part).map_err(fail)?);
        }
        Ok(Self {
            requirements,
            text: s.trim().to_string(),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => {
                if depth > 0 {
                    return Err("nested parentheses".into());
                }
                depth += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ')'".to_string())?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            check_key(key.trim())?,
            vec![check_value(value.trim())?],
        ));
    }
    if let Some((key, value)) = part.split_once('=') {
        // `==` is the same as `=`.
        let value = value.strip_prefix('=').unwrap_or(value);
        return Ok(Requirement::In(
            check_key(key.trim())?,
            vec![check_value(value.trim())?],
        ));
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let rest = part[open + 1..].trim_end();
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("{part:?}: text after ')'"))?;
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{part:?}: expected `key in (...)` or `key notin (...)`"))?;
        let values = inner
            .split(',')
            .map(|v| check_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if values.iter().all(String::is_empty) && inner.trim().is_empty() {
            return Err(format!("{part:?}: empty value set"));
        }
        let key = check_key(key.trim())?;
        return match op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!("{part:?}: unknown operator {other:?}")),
        };
    }
    Ok(Requirement::Exists(check_key(part)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending
/// alphanumeric.
pub fn check_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid label key prefix in {key:?}"));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_string())
}

fn check_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap()
    }

    #[test]
    fn equality_and_inequality() {
        let s = sel("app=web, tier != db");
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("tier", "front")])));
        assert_eq!(sel("app==web"), {
            let mut s = sel("app=web");
            s.text = "app==web".into();
            s
        });
    }

    #[test]
    fn set_based_and_existence() {
        let s = sel("env in (prod, staging),!canary,team,zone notin (a,b)");
        assert!(s.matches(&labels(&[("env", "prod"), ("team", "x")])));
        assert!(s.matches(&labels(&[("env", "staging"), ("team", "x"), ("zone", "c")])));
        assert!(!s.matches(&labels(&[("env", "dev"), ("team", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("team", "x"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("team", "x"), ("zone", "a")])));
    }

    #[test]
    fn prefixed_keys_and_empty_values() {
        let s = sel("app.kubernetes.io/name=shop,example.com/flag=");
        assert!(s.matches(&labels(&[
            ("app.kubernetes.io/name", "shop"),
            ("example.com/flag", "")
        ])));
        assert!(!s.matches(&labels(&[("app.kubernetes.io/name", "shop")])));
    }

    #[test]
    fn empty_matches_all() {
        let s = sel("  ");
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_are_refused() {
        for bad in [
            "a=b,,c",
            "env in (a,b",
            "env in a,b)",
            "env within (a)",
            "-bad=x",
            "a=b c",
            "UPPER.example/x=y",
            "env in ()",
            "x=(y)",
        ] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?} parsed");
        }
    }
}
