//! What seam knows of a traced process, read once from /proc: its service
//! name and the resource its spans carry.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::k8s::ContainerMeta;
use crate::span::{Attributes, Resource};

/// A traced process.
#[derive(Debug)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe_name: String,
    pub service_name: String,
    pub resource: Arc<Resource>,
}

/// Reads and caches process information under a /proc root.
#[derive(Debug)]
pub struct ProcessTable {
    proc_root: PathBuf,
    host_name: String,
    cache: crate::FastMap<u32, Arc<ProcessInfo>>,
    /// Kubernetes containers by cgroup v2 id, with the cgroup2 mount that
    /// /proc/PID/cgroup paths are relative to.
    containers: HashMap<u64, Arc<ContainerMeta>>,
    cgroup2_mount: Option<PathBuf>,
    /// Cached pids found gone from /proc at the last [`Self::prune_exited`].
    gone: std::collections::HashSet<u32>,
}

impl ProcessTable {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            host_name: host_name(),
            cache: Default::default(),
            containers: HashMap::new(),
            cgroup2_mount: None,
            gone: Default::default(),
        }
    }

    /// Enables Kubernetes metadata for processes in known containers.
    pub fn with_cgroup2_mount(mut self, mount: PathBuf) -> Self {
        self.cgroup2_mount = Some(mount);
        self
    }

    /// A container's metadata arrived or changed: its processes are read
    /// again.
    pub fn set_container(&mut self, cgroup_id: u64, meta: Arc<ContainerMeta>) {
        self.containers.insert(cgroup_id, meta);
        self.cache.clear();
    }

    pub fn remove_container(&mut self, cgroup_id: u64) {
        if self.containers.remove(&cgroup_id).is_some() {
            self.cache.clear();
        }
    }

    /// The cgroup v2 id of a process: the inode of its unified-hierarchy
    /// directory (`0::/path` in /proc/PID/cgroup).
    fn cgroup_id(&self, pid: u32) -> Option<u64> {
        let mount = self.cgroup2_mount.as_ref()?;
        let text = fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let meta = fs::metadata(mount.join(path.trim_start_matches('/'))).ok()?;
        Some(std::os::unix::fs::MetadataExt::ino(&meta))
    }

    /// The process `pid`, read from /proc the first time. A process that is
    /// already gone is described by `comm` alone.
    pub fn get(&mut self, pid: u32, comm: Option<&str>) -> Arc<ProcessInfo> {
        if let Some(info) = self.cache.get(&pid) {
            return info.clone();
        }
        let info = Arc::new(self.read(pid, comm));
        self.cache.insert(pid, info.clone());
        info
    }

    /// Forgets `pid` (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.cache.remove(&pid);
    }

    /// Forgets processes that exited without the agent hearing of it (their
    /// exit record was lost to a full ring buffer). A pid must be missing
    /// from /proc at two calls in a row: transfers still queued for a
    /// process that just exited keep its description meanwhile.
    pub fn prune_exited(&mut self) -> usize {
        let missing: std::collections::HashSet<u32> = self
            .cache
            .keys()
            .copied()
            .filter(|pid| !self.proc_root.join(pid.to_string()).exists())
            .collect();
        let before = self.cache.len();
        self.cache
            .retain(|pid, _| !(missing.contains(pid) && self.gone.contains(pid)));
        self.gone = missing;
        before - self.cache.len()
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn read(&self, pid: u32, comm: Option<&str>) -> ProcessInfo {
        let dir = self.proc_root.join(pid.to_string());
        let exe_path = fs::read_link(dir.join("exe")).ok();
        let comm = fs::read_to_string(dir.join("comm"))
            .map(|s| s.trim_end().to_string())
            .ok()
            .or_else(|| comm.map(str::to_string))
            .unwrap_or_default();
        let exe_name = exe_path
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_else(|| comm.clone());
        let cmdline: Vec<String> = fs::read(dir.join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let env = fs::read(dir.join("environ"))
            .map(|raw| otel_env(&raw))
            .unwrap_or_default();

        let mut resource_attrs = env
            .resource_attributes
            .as_deref()
            .map(parse_resource_attributes)
            .unwrap_or_default();
        let container = if self.containers.is_empty() {
            None
        } else {
            self.cgroup_id(pid).and_then(|id| self.containers.get(&id))
        };
        // The process's own settings first, then Kubernetes, then guessing.
        let service_name = env
            .service_name
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                resource_attrs
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .or_else(|| container.map(|c| c.service_name.clone()))
            .unwrap_or_else(|| derive_service_name(&exe_name, &cmdline));
        resource_attrs.retain(|(k, _)| k != "service.name");

        let mut attributes = Attributes::default();
        attributes.set("service.name", service_name.as_str());
        if let Some(c) = container {
            for (k, v) in c.resource_attributes().iter() {
                if k != "service.name" {
                    attributes.set(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in resource_attrs {
            attributes.set(k, v);
        }
        attributes.set("process.pid", pid as i64);
        attributes.set("process.executable.name", exe_name.as_str());
        if let Some(path) = &exe_path {
            attributes.set("process.executable.path", path.to_string_lossy().as_ref());
        }
        attributes.set("host.name", self.host_name.as_str());
        attributes.set("telemetry.sdk.name", "seam");
        attributes.set("telemetry.sdk.language", "rust");
        attributes.set("telemetry.sdk.version", env!("CARGO_PKG_VERSION"));
        attributes.set("telemetry.distro.name", "seam-ebpf");

        ProcessInfo {
            pid,
            exe_name,
            service_name,
            resource: Arc::new(Resource { attributes }),
        }
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The only variables seam keeps from a process environment; everything else
/// (which may hold secrets) is dropped while parsing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OtelEnv {
    pub service_name: Option<String>,
    pub resource_attributes: Option<String>,
}

/// Picks `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` out of a raw
/// NUL-separated environment block.
pub fn otel_env(raw: &[u8]) -> OtelEnv {
    let mut env = OtelEnv::default();
    for var in raw.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
            env.service_name = Some(String::from_utf8_lossy(v).trim().to_string());
        } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            env.resource_attributes = Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    env
}

/// `key1=value1,key2=value2` with percent-encoded values, as the OTel SDK
/// specification defines `OTEL_RESOURCE_ATTRIBUTES`. Malformed pairs are skipped.
pub fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_string(), percent_decode(v.trim())?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Programs that host an application named by their arguments.
const PY_LAUNCHERS: &[&str] = &[
    "gunicorn",
    "uvicorn",
    "hypercorn",
    "daphne",
    "waitress-serve",
    "celery",
    "flask",
    "opentelemetry-instrument",
];

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn strip_ext<'a>(name: &'a str, exts: &[&str]) -> &'a str {
    exts.iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(name)
}

/// A service name for a process that did not set `OTEL_SERVICE_NAME`: the
/// application it runs rather than its interpreter, when that can be told
/// from the command line (`python3 app.py` → `app`, `gunicorn inventory:app`
/// → `inventory`, `java -jar orders.jar` → `orders`, `node server.js` →
/// `server`); otherwise the executable's name.
pub fn derive_service_name(exe_name: &str, cmdline: &[String]) -> String {
    // gunicorn with setproctitle: "gunicorn: worker [inventory:app]".
    if let Some(first) = cmdline.first()
        && let Some(rest) = first.strip_prefix("gunicorn: ")
        && let (Some(a), Some(b)) = (rest.find('['), rest.rfind(']'))
        && a < b
    {
        return app_module(&rest[a + 1..b])
            .unwrap_or("gunicorn")
            .to_string();
    }
    let prog = cmdline.first().map(|s| base(s)).unwrap_or(exe_name);
    // A zombie or a kernel thread has an empty command line.
    let args = cmdline.get(1..).unwrap_or(&[]);
    let name = if is_python(prog) || is_python(exe_name) {
        python_app(args)
    } else if PY_LAUNCHERS.contains(&prog) {
        launcher_app(prog, args)
    } else if prog == "node" || exe_name == "node" {
        args.iter()
            .find(|a| !a.starts_with('-'))
            .map(|s| strip_ext(base(s), &[".js", ".mjs", ".cjs", ".ts"]).to_string())
    } else if prog == "java" || exe_name == "java" {
        java_app(args)
    } else {
        None
    };
    name.filter(|n| !n.is_empty())
        .unwrap_or_else(|| exe_name.to_string())
}

fn is_python(name: &str) -> bool {
    name.starts_with("python")
}

fn python_app(args: &[String]) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-m" => {
                let module = args.get(i + 1)?;
                let last = module.rsplit('.').next().unwrap_or(module);
                if PY_LAUNCHERS.contains(&last) || last == "__main__" {
                    return launcher_app(last, &args[i + 2..]);
                }
                return Some(last.to_string());
            }
            "-c" => return None,
            "-W" | "-X" | "-Q" => i += 2,
            _ if a.starts_with('-') => i += 1,
            script => {
                let name = strip_ext(base(script), &[".py", ".pyz"]);
                if PY_LAUNCHERS.contains(&name) {
                    return launcher_app(name, &args[i + 1..]);
                }
                return Some(name.to_string());
            }
        }
    }
    None
}

fn launcher_app(launcher: &str, args: &[String]) -> Option<String> {
    if launcher == "opentelemetry-instrument" {
        // Skip its own options, then name whatever it runs.
        let rest: Vec<String> = args
            .iter()
            .skip_while(|a| a.starts_with('-') || a.contains('='))
            .cloned()
            .collect();
        let prog = rest.first()?;
        return Some(derive_service_name(base(prog), &rest));
    }
    args.iter()
        .filter(|a| !a.starts_with('-'))
        .find_map(|a| app_module(a))
        .map(str::to_string)
        .or_else(|| Some(launcher.to_string()))
}

/// `package.module:attr` → the application's own name: the first package,
/// unless the spec is a single module.
fn app_module(spec: &str) -> Option<&str> {
    let (module, attr) = spec.split_once(':')?;
    let ident_start = |s: &str| s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if !ident_start(module) || !ident_start(attr) {
        return None;
    }
    let valid = module
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    valid.then(|| module.split('.').next().unwrap_or(module))
}

fn java_app(args: &[String]) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "-jar" {
            return args
                .get(i + 1)
                .map(|j| strip_ext(base(j), &[".jar"]).to_string());
        }
        if a == "-cp" || a == "-classpath" || a == "--class-path" || a == "-p" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        return Some(a.rsplit('.').next().unwrap_or(a).to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_processes_are_pruned_after_two_checks() {
        let root = std::env::temp_dir().join(format!("seam-proc-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("10")).unwrap();
        fs::create_dir_all(root.join("11")).unwrap();
        let mut table = ProcessTable::new(&root);
        table.get(10, Some("curl"));
        table.get(11, Some("nginx"));
        assert_eq!(table.prune_exited(), 0);
        fs::remove_dir(root.join("10")).unwrap();
        // Gone once: kept, transfers may still be queued for it.
        assert_eq!(table.prune_exited(), 0);
        assert_eq!(table.len(), 2);
        assert_eq!(table.prune_exited(), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(11, None).exe_name, "nginx");
        fs::remove_dir_all(&root).unwrap();
    }

    fn derive(exe: &str, cmd: &str) -> String {
        let args: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        derive_service_name(exe, &args)
    }

    /// Zombies and kernel threads have no command line; the fuzzer found
    /// the agent indexing past it.
    #[test]
    fn empty_command_line_gives_the_executable_name() {
        for exe in ["node", "java", "gunicorn", "python3.11", "nginx"] {
            assert_eq!(derive_service_name(exe, &[]), exe);
        }
    }

    #[test]
    fn service_names_from_command_lines() {
        let table = [
            ("python3.11", "/usr/bin/python3 app.py", "app"),
            (
                "python3.11",
                "python3 -u /srv/orders/server.py --port 80",
                "server",
            ),
            ("python3.11", "python3 -m http.server 8000", "server"),
            (
                "python3.11",
                "/usr/bin/python3 /usr/local/bin/gunicorn -b 127.0.0.1:8001 -w 2 inventory:app",
                "inventory",
            ),
            (
                "python3.11",
                "python3 -m gunicorn --workers 2 shop.wsgi:application",
                "shop",
            ),
            (
                "python3.11",
                "python3 -m uvicorn main:app --port 9000",
                "main",
            ),
            (
                "python3.11",
                "python3 /usr/local/bin/opentelemetry-instrument python3 shipping.py",
                "shipping",
            ),
            ("python3.11", "python3 -c print(1)", "python3.11"),
            ("node", "node /srv/api/server.js", "server"),
            ("java", "java -Xmx1g -jar /opt/orders-1.2.jar", "orders-1.2"),
            (
                "java",
                "java -cp a.jar:b.jar com.example.Checkout",
                "Checkout",
            ),
            ("nginx", "nginx: worker process", "nginx"),
            ("curl", "curl -s http://x/", "curl"),
        ];
        for (exe, cmd, want) in table {
            assert_eq!(derive(exe, cmd), want, "{cmd}");
        }
        // setproctitle rewrites the whole command line as one string.
        assert_eq!(
            derive_service_name(
                "python3.11",
                &["gunicorn: worker [payment:app]".to_string()]
            ),
            "payment"
        );
    }

    #[test]
    fn otel_env_keeps_only_otel_variables() {
        let raw = b"PATH=/bin\0OTEL_SERVICE_NAME=orders\0AWS_SECRET=x\0OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,team=core\0";
        let env = otel_env(raw);
        assert_eq!(env.service_name.as_deref(), Some("orders"));
        assert_eq!(
            env.resource_attributes.as_deref(),
            Some("deployment.environment=prod,team=core")
        );
    }

    #[test]
    fn resource_attributes_are_percent_decoded() {
        assert_eq!(
            parse_resource_attributes("a=1, b = x%20y ,bad,=v,c=%E2%9C%93,d=%zz"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x y".to_string()),
                ("c".to_string(), "✓".to_string()),
            ]
        );
    }

    #[test]
    fn reads_this_process() {
        let mut table = ProcessTable::new("/proc");
        let me = table.get(std::process::id(), None);
        assert_eq!(me.pid, std::process::id());
        assert!(!me.service_name.is_empty());
        let attrs = &me.resource.attributes;
        assert_eq!(
            attrs.get("process.pid").and_then(|v| v.as_int()),
            Some(std::process::id() as i64)
        );
        assert_eq!(
            attrs.get("telemetry.sdk.name").and_then(|v| v.as_str()),
            Some("seam")
        );
        assert!(Arc::ptr_eq(&me, &table.get(std::process::id(), None)));
        table.forget(std::process::id());
        assert!(table.is_empty());
    }

    #[test]
    fn vanished_process_falls_back_to_comm() {
        let mut table = ProcessTable::new("/nonexistent-proc");
        let p = table.get(42, Some("curl"));
        assert_eq!(p.service_name, "curl");
        assert_eq!(p.exe_name, "curl");
    }
}
