//! Two network namespaces joined by a veth pair: traffic between them
//! crosses a real link (not loopback), as between two hosts.
use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct NetPair {
    pub client_ns: String,
    pub server_ns: String,
    pub client_addr: String,
    pub server_addr: String,
}

impl NetPair {
    /// Creates `seam<pid>c` and `seam<pid>s` with 10.213.<n>.1 and .2.
    pub fn create() -> NetPair {
        let id = std::process::id();
        let pair = NetPair {
            client_ns: format!("seam{id}c"),
            server_ns: format!("seam{id}s"),
            client_addr: format!("10.213.{}.1", id % 250),
            server_addr: format!("10.213.{}.2", id % 250),
        };
        pair.remove();
        ip(&["netns", "add", &pair.client_ns]);
        ip(&["netns", "add", &pair.server_ns]);
        let (c, s) = (format!("v{}c", id % 100_000), format!("v{}s", id % 100_000));
        ip(&["link", "add", &c, "type", "veth", "peer", "name", &s]);
        for (dev, ns, addr) in [
            (&c, &pair.client_ns, &pair.client_addr),
            (&s, &pair.server_ns, &pair.server_addr),
        ] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// `cmd` run inside namespace `ns` (`ip netns exec` execs it, so the
    /// child's pid is the program's).
    pub fn command(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    fn remove(&self) {
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        self.remove();
    }
}
