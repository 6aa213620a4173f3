//! The header fields of one HTTP/1 head, kept in one string: a head of ten
//! fields costs two allocations instead of twenty-one, which is most of what
//! parsing a head used to allocate.
use std::fmt;

/// Header fields in arrival order. Names keep their case; values are
/// trimmed and decoded lossily as UTF-8.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: String,
    /// Per field: where its name ends in `text` and where its value ends
    /// (each field starts where the previous one ended).
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// Room for `fields` fields of `bytes` bytes in all.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Headers {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len() as u32;
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len() as u32));
    }

    /// Appends a field as it came off the wire.
    pub fn push_raw(&mut self, name: &str, value: &[u8]) {
        self.push(name, String::from_utf8_lossy(value).trim());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (n, v) = (name_end as usize, value_end as usize);
            let field = (&self.text[start..n], &self.text[n..v]);
            start = v;
            field
        })
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Self {
        let mut h = Headers::default();
        for (n, v) in fields {
            h.push(n.as_ref(), v.as_ref());
        }
        h
    }
}

impl<N: AsRef<str>, V: AsRef<str>> From<Vec<(N, V)>> for Headers {
    fn from(fields: Vec<(N, V)>) -> Self {
        fields.into_iter().collect()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_in_order() {
        let mut h = Headers::with_capacity(3, 64);
        h.push("Host", "api:8080");
        h.push_raw("X-Empty", b"  ");
        h.push_raw("Content-Length", b" 12 ");
        h.push("host", "second");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                ("Host", "api:8080"),
                ("X-Empty", ""),
                ("Content-Length", "12"),
                ("host", "second")
            ]
        );
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("HOST"), Some("api:8080"));
        assert_eq!(h.get("x-empty"), Some(""));
        assert_eq!(h.get("missing"), None);
        assert_eq!(
            format!("{h:?}"),
            r#"[("Host", "api:8080"), ("X-Empty", ""), ("Content-Length", "12"), ("host", "second")]"#
        );
        let same: Headers = vec![
            ("Host", "api:8080"),
            ("X-Empty", ""),
            ("Content-Length", "12"),
            ("host", "second"),
        ]
        .into();
        assert_eq!(h, same);
        assert!(Headers::default().is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut h = Headers::default();
        h.push_raw("X-Bin", b"a\xffb");
        assert_eq!(h.get("x-bin"), Some("a\u{fffd}b"));
    }
}
