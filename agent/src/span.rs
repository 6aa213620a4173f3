//! The spans seam produces, independent of how they are exported.
use std::sync::Arc;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Internal,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
            SpanKind::Internal => "INTERNAL",
        }
    }
}

/// A string attribute value: fixed words ("http", "tcp", methods...) are
/// static and cost no allocation; the rest own their text.
pub type Text = std::borrow::Cow<'static, str>;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Text),
    Int(i64),
    Bool(bool),
    F64(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::F64(x) => write!(f, "{x}"),
        }
    }
}

impl Value {
    /// A value that is one of the program's own words: no allocation.
    pub const fn word(s: &'static str) -> Value {
        Value::Str(Text::Borrowed(s))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(Text::Owned(s.to_string()))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Text::Owned(s))
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// An attribute key: the semantic-convention names are static strings,
/// so only keys made at run time (header names...) own memory.
pub type Key = std::borrow::Cow<'static, str>;

/// Ordered key/value attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(Key, Value)>);

impl Attributes {
    /// Room for `n` attributes: an HTTP span has about 25, and growing the
    /// list one by one reallocated it five times.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Appends an attribute whose key the caller knows is not there yet:
    /// a span's fixed keys are each written once, and looking for each among
    /// the ones before was a tenth of building an HTTP span.
    pub fn push(&mut self, key: &'static str, value: impl Into<Value>) {
        debug_assert!(self.get(key).is_none(), "{key} set twice");
        self.0.push((Key::Borrowed(key), value.into()));
    }

    pub fn set(&mut self, key: impl Into<Key>, value: impl Into<Value>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Key, Value)> {
        self.0.iter()
    }
}

/// The entity that produced spans: a traced process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Attributes,
}

impl Resource {
    pub fn service_name(&self) -> &str {
        self.attributes
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or("unknown_service")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Error,
}

#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// W3C `tracestate` carried in from the parent, if any.
    pub trace_state: String,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Attributes,
    pub status: Status,
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
