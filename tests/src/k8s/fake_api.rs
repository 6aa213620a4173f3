//! A fake Kubernetes API server: list, get and watch for pods, namespaces,
//! ReplicaSets and Jobs, in the JSON shapes and with the semantics a real
//! kube-apiserver has:
//!
//! - lists carry `kind: <Kind>List` and `metadata.resourceVersion`; items
//!   carry no kind (as the real server sends them);
//! - `?watch=true&resourceVersion=N` streams newline-delimited events after N
//!   (`ADDED`/`MODIFIED`/`DELETED`), `BOOKMARK`s when `allowWatchBookmarks`,
//!   ends after `timeoutSeconds`, and answers a compacted `N` with an `ERROR`
//!   event carrying a 410 `Expired` Status;
//! - `fieldSelector` on `spec.nodeName`, `metadata.name`,
//!   `metadata.namespace` (`=`, `==`, `!=`), including the ADDED/DELETED an
//!   object's move into or out of a watch's selection produces;
//! - `Accept: application/json;as=PartialObjectMetadata[List]` (metadata-only
//!   requests) answered as `meta.k8s.io/v1` PartialObjectMetadata;
//! - 404 / 400 / 500 as `Status` objects.
//!
//! The test controls it: apply/delete objects, drop every watch connection,
//! compact history (forcing 410 on resume), fail the next lists.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State as AxState,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::Response,
};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Pods,
    Namespaces,
    ReplicaSets,
    Jobs,
}

impl Res {
    fn kind(self) -> &'static str {
        match self {
            Res::Pods => "Pod",
            Res::Namespaces => "Namespace",
            Res::ReplicaSets => "ReplicaSet",
            Res::Jobs => "Job",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Res::Pods | Res::Namespaces => "v1",
            Res::ReplicaSets => "apps/v1",
            Res::Jobs => "batch/v1",
        }
    }
    fn namespaced(self) -> bool {
        self != Res::Namespaces
    }
    fn from_path(group_prefix: &str, plural: &str) -> Option<Self> {
        match (group_prefix, plural) {
            ("/api/v1", "pods") => Some(Res::Pods),
            ("/api/v1", "namespaces") => Some(Res::Namespaces),
            ("/apis/apps/v1", "replicasets") => Some(Res::ReplicaSets),
            ("/apis/batch/v1", "jobs") => Some(Res::Jobs),
            _ => None,
        }
    }
}

type Key = (Res, String, String);

struct Event {
    rv: u64,
    res: Res,
    etype: &'static str,
    old: Option<Value>,
    new: Value,
}

#[derive(Default)]
pub struct State {
    rv: u64,
    /// Watches resuming from a resourceVersion below this get 410.
    compacted: u64,
    drop_epoch: u64,
    expire_epoch: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Event>,
    fail_lists: HashMap<Res, u32>,
    requests: Vec<String>,
    uid_seq: u64,
}

impl State {
    /// Creates or replaces an object (as `kubectl apply` would), stamping
    /// resourceVersion, uid and creationTimestamp.
    pub fn apply(&mut self, res: Res, mut obj: Value) {
        self.rv += 1;
        let rv = self.rv;
        let (ns, name) = names(res, &obj);
        let key = (res, ns, name);
        let old = self.objects.get(&key).cloned();
        {
            let meta = obj["metadata"]
                .as_object_mut()
                .expect("object has metadata");
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            if !meta.contains_key("uid") {
                let uid = match &old {
                    Some(o) => o["metadata"]["uid"].clone(),
                    None => {
                        self.uid_seq += 1;
                        json!(format!("00000000-0000-4000-8000-{:012x}", self.uid_seq))
                    }
                };
                meta.insert("uid".into(), uid);
            }
            meta.entry("creationTimestamp")
                .or_insert(json!("2026-01-01T00:00:00Z"));
        }
        obj["kind"] = json!(res.kind());
        obj["apiVersion"] = json!(res.api_version());
        self.objects.insert(key, obj.clone());
        self.log.push(Event {
            rv,
            res,
            etype: if old.is_some() { "MODIFIED" } else { "ADDED" },
            old,
            new: obj,
        });
    }

    pub fn delete(&mut self, res: Res, ns: &str, name: &str) {
        let key = (res, ns.to_string(), name.to_string());
        let Some(mut obj) = self.objects.remove(&key) else {
            panic!("delete of missing {res:?} {ns}/{name}");
        };
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(Event {
            rv: self.rv,
            res,
            etype: "DELETED",
            old: None,
            new: obj,
        });
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(res, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every watch connection is cut mid-stream (a TCP-level failure).
    pub fn drop_watches(&mut self) {
        self.drop_epoch += 1;
    }

    /// History up to now is compacted: watches resuming from an older
    /// resourceVersion get 410 Gone. Open watches get the ERROR event.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.expire_epoch += 1;
    }

    /// The next `n` lists of `res` answer 500.
    pub fn fail_lists(&mut self, res: Res, n: u32) {
        self.fail_lists.insert(res, n);
    }
}

fn names(res: Res, obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    let ns = if res.namespaced() {
        meta["namespace"]
            .as_str()
            .expect("namespaced object has a namespace")
            .to_string()
    } else {
        String::new()
    };
    (
        ns,
        meta["name"]
            .as_str()
            .expect("object has a name")
            .to_string(),
    )
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
}

impl FakeApi {
    pub async fn start() -> Self {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { shared, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the server's state in one step, then wakes the watches.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.shared.state.lock().unwrap());
        self.shared.changed.send_modify(|g| *g += 1);
        r
    }

    pub fn apply(&self, res: Res, obj: Value) {
        self.with(|s| s.apply(res, obj));
    }

    pub fn delete(&self, res: Res, ns: &str, name: &str) {
        self.with(|s| s.delete(res, ns, name));
    }

    /// Requests received so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// How many list (not watch) requests `path` got.
    pub fn lists_of(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.strip_prefix("GET ")
                    .is_some_and(|p| p.split('?').next() == Some(path) && !p.contains("watch=true"))
            })
            .count()
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Self(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).expect("bad percent escape");
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A parsed `fieldSelector`.
struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    fn parse(s: Option<&str>) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector {part:?}"));
            };
            if !matches!(
                field,
                "spec.nodeName" | "metadata.name" | "metadata.namespace"
            ) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, value.to_string()));
        }
        Ok(Self(reqs))
    }

    fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = match field.as_str() {
                "spec.nodeName" => obj["spec"]["nodeName"].as_str().unwrap_or(""),
                "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or(""),
                _ => obj["metadata"]["namespace"].as_str().unwrap_or(""),
            };
            (got == want) == *eq
        })
    }
}

/// What one request selects.
struct Selection {
    res: Res,
    namespace: Option<String>,
    fields: FieldSelector,
    meta_only: bool,
}

impl Selection {
    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.fields.matches(obj)
    }

    /// The object as this request sees it.
    fn render(&self, obj: &Value, in_list: bool) -> Value {
        if self.meta_only {
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            })
        } else if in_list {
            let mut o = obj.clone();
            let m = o.as_object_mut().unwrap();
            m.remove("kind");
            m.remove("apiVersion");
            o
        } else {
            obj.clone()
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn error(code: u16, reason: &str, message: &str) -> Response {
    json_response(code, &status(code, reason, message))
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    shared.state.lock().unwrap().requests.push(format!(
        "{method} {path}{}",
        uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    ));
    if method != Method::GET {
        return error(405, "MethodNotAllowed", "the fake serves GET only");
    }
    let query = Query::parse(uri.query());
    let meta_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    // /api/v1/... or /apis/<group>/<version>/...
    let (prefix, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("/api/v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/apps/v1/") {
        ("/apis/apps/v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/batch/v1/") {
        ("/apis/batch/v1", rest)
    } else {
        return error(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    // (resource, namespace, name)
    let parsed = match segs[..] {
        [plural] => Res::from_path(prefix, plural).map(|r| (r, None, None)),
        ["namespaces", name] if prefix == "/api/v1" => {
            Some((Res::Namespaces, None, Some(name.to_string())))
        }
        ["namespaces", ns, plural] => Res::from_path(prefix, plural)
            .filter(|r| r.namespaced())
            .map(|r| (r, Some(ns.to_string()), None)),
        ["namespaces", ns, plural, name] => Res::from_path(prefix, plural)
            .filter(|r| r.namespaced())
            .map(|r| (r, Some(ns.to_string()), Some(name.to_string()))),
        _ => None,
    };
    let Some((res, namespace, name)) = parsed else {
        return error(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    if query.get("labelSelector").is_some() {
        return error(
            400,
            "BadRequest",
            "the fake does not implement labelSelector",
        );
    }
    let fields = match FieldSelector::parse(query.get("fieldSelector")) {
        Ok(f) => f,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let sel = Selection {
        res,
        namespace,
        fields,
        meta_only,
    };

    if let Some(name) = name {
        let state = shared.state.lock().unwrap();
        let ns = sel.namespace.clone().unwrap_or_default();
        return match state.get(res, &ns, &name) {
            Some(obj) => json_response(200, &sel.render(&obj, false)),
            None => error(
                404,
                "NotFound",
                &format!("{}s \"{name}\" not found", res.kind().to_lowercase()),
            ),
        };
    }

    if matches!(query.get("watch"), Some("true" | "1")) {
        return start_watch(shared, sel, &query);
    }

    let mut state = shared.state.lock().unwrap();
    if let Some(n) = state.fail_lists.get_mut(&res)
        && *n > 0
    {
        *n -= 1;
        return error(500, "InternalError", "etcdserver: request timed out");
    }
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((r, _, _), obj)| *r == res && sel.matches(obj))
        .map(|(_, obj)| sel.render(obj, true))
        .collect();
    let (kind, api_version) = if meta_only {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
    } else {
        (format!("{}List", res.kind()), res.api_version())
    };
    json_response(
        200,
        &json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": state.rv.to_string()},
            "items": items,
        }),
    )
}

struct Watch {
    shared: Arc<Shared>,
    sel: Selection,
    cursor: u64,
    changed: watch::Receiver<u64>,
    drop_epoch: u64,
    expire_epoch: u64,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    pending: VecDeque<Value>,
    finished: bool,
}

fn start_watch(shared: Arc<Shared>, sel: Selection, query: &Query) -> Response {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let bookmarks = query.get("allowWatchBookmarks") == Some("true");
    let mut pending = VecDeque::new();
    let (cursor, drop_epoch, expire_epoch, finished) = {
        let state = shared.state.lock().unwrap();
        match query.get("resourceVersion") {
            None | Some("" | "0") => {
                // No version: synthetic ADDED for what exists, then changes.
                for ((r, _, _), obj) in &state.objects {
                    if *r == sel.res && sel.matches(obj) {
                        pending
                            .push_back(json!({"type": "ADDED", "object": sel.render(obj, false)}));
                    }
                }
                (state.rv, state.drop_epoch, state.expire_epoch, false)
            }
            Some(v) => {
                let Ok(from) = v.parse::<u64>() else {
                    return error(400, "BadRequest", &format!("invalid resourceVersion {v:?}"));
                };
                if from < state.compacted {
                    pending.push_back(expired(from, state.compacted));
                    (from, state.drop_epoch, state.expire_epoch, true)
                } else {
                    (from, state.drop_epoch, state.expire_epoch, false)
                }
            }
        }
    };
    let w = Watch {
        changed: shared.changed.subscribe(),
        shared,
        sel,
        cursor,
        drop_epoch,
        expire_epoch,
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        bookmarks,
        pending,
        finished,
    };
    let stream = futures::stream::unfold(w, next_chunk);
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn expired(from: u64, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": status(410, "Expired", &format!("too old resource version: {from} ({oldest})")),
    })
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

async fn next_chunk(mut w: Watch) -> Option<(Result<Bytes, std::io::Error>, Watch)> {
    loop {
        if let Some(v) = w.pending.pop_front() {
            return Some((Ok(line(&v)), w));
        }
        if w.finished {
            return None;
        }
        {
            let state = w.shared.state.lock().unwrap();
            if state.drop_epoch != w.drop_epoch {
                drop(state);
                w.finished = true;
                return Some((Err(std::io::Error::other("connection cut by test")), w));
            }
            if state.expire_epoch != w.expire_epoch {
                w.pending.push_back(expired(w.cursor, state.compacted));
                w.finished = true;
                continue;
            }
            let start = state.log.partition_point(|e| e.rv <= w.cursor);
            for e in &state.log[start..] {
                if e.res != w.sel.res {
                    continue;
                }
                let before = e.old.as_ref().is_some_and(|o| w.sel.matches(o));
                let after = w.sel.matches(&e.new);
                let etype = match (e.etype, before, after) {
                    ("DELETED", _, true) => "DELETED",
                    ("ADDED", _, true) => "ADDED",
                    ("MODIFIED", true, true) => "MODIFIED",
                    ("MODIFIED", false, true) => "ADDED",
                    ("MODIFIED", true, false) => "DELETED",
                    _ => continue,
                };
                w.pending
                    .push_back(json!({"type": etype, "object": w.sel.render(&e.new, false)}));
            }
            w.cursor = state.rv;
        }
        if !w.pending.is_empty() {
            continue;
        }
        tokio::select! {
            _ = w.changed.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(300)), if w.bookmarks => {
                let mut bm = json!({
                    "kind": w.sel.res.kind(),
                    "apiVersion": w.sel.res.api_version(),
                    "metadata": {"resourceVersion": w.cursor.to_string()},
                });
                if w.sel.meta_only {
                    bm["kind"] = json!("PartialObjectMetadata");
                    bm["apiVersion"] = json!("meta.k8s.io/v1");
                }
                w.pending.push_back(json!({"type": "BOOKMARK", "object": bm}));
            }
            () = tokio::time::sleep_until(w.deadline) => w.finished = true,
        }
    }
}
