//! TCP sockets that existed before the probes were attached. Their handshakes
//! were never seen, so their addresses come from /proc once at start-up:
//! `/proc/PID/fd` gives socket inodes, `/proc/PID/net/tcp{,6}` (one read per
//! network namespace) gives each inode's addresses and state.
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// The addresses of a connection from its own socket's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// What the start-up scan found.
#[derive(Debug, Default)]
pub struct SocketScan {
    /// Established connections by (pid, fd).
    pub connections: HashMap<(u32, i32), Endpoints>,
    /// Listening ports and the processes that hold them.
    pub listeners: HashMap<u16, Vec<u32>>,
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let local = parse_addr(f.next()?)?;
            let peer = parse_addr(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let inode = f.nth(5)?.parse().ok()?;
            Some(TcpRow {
                local,
                peer,
                state,
                inode,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6); the kernel prints
/// each 32-bit word of the address in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, word) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                word.copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(canonical(ip), port))
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn socket_inode(link: &Path) -> Option<u64> {
    let target = fs::read_link(link).ok()?;
    let s = target.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn pids(proc_root: &Path) -> Vec<u32> {
    fs::read_dir(proc_root)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// TCP rows of the network namespace `pid` lives in, by inode.
fn tcp_rows_of(proc_root: &Path, pid: u32) -> HashMap<u64, TcpRow> {
    let mut rows = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let path = proc_root.join(pid.to_string()).join("net").join(table);
        if let Ok(text) = fs::read_to_string(path) {
            for row in parse_tcp_table(&text) {
                rows.insert(row.inode, row);
            }
        }
    }
    rows
}

/// Scans every process under `proc_root`, skipping `skip_pid` (the agent).
pub fn scan(proc_root: &Path, skip_pid: u32) -> SocketScan {
    let mut scan = SocketScan::default();
    let mut netns_rows: HashMap<u64, HashMap<u64, TcpRow>> = HashMap::new();
    for pid in pids(proc_root) {
        if pid == skip_pid {
            continue;
        }
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut sockets = Vec::new();
        for entry in fds.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(inode) = socket_inode(&entry.path()) {
                sockets.push((fd, inode));
            }
        }
        if sockets.is_empty() {
            continue;
        }
        let netns = fs::metadata(dir.join("ns/net"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let rows = netns_rows
            .entry(netns)
            .or_insert_with(|| tcp_rows_of(proc_root, pid));
        for (fd, inode) in sockets {
            let Some(row) = rows.get(&inode) else {
                continue;
            };
            match row.state {
                TCP_ESTABLISHED => {
                    scan.connections.insert(
                        (pid, fd),
                        Endpoints {
                            local: row.local,
                            peer: row.peer,
                        },
                    );
                }
                TCP_LISTEN => {
                    let holders = scan.listeners.entry(row.local.port()).or_default();
                    if !holders.contains(&pid) {
                        holders.push(pid);
                    }
                }
                _ => {}
            }
        }
    }
    scan
}

/// Addresses of one socket fd, looked up on demand (a connection the
/// start-up scan missed).
pub fn resolve(proc_root: &Path, pid: u32, fd: i32) -> Option<Endpoints> {
    let link = proc_root
        .join(pid.to_string())
        .join("fd")
        .join(fd.to_string());
    let inode = socket_inode(&link)?;
    let row = tcp_rows_of(proc_root, pid).remove(&inode)?;
    Some(Endpoints {
        local: row.local,
        peer: row.peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn parses_ipv4_and_ipv6_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        let rows = parse_tcp_table(v4);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[0].inode, 4242);
        assert_eq!(rows[1].peer, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(rows[1].state, TCP_ESTABLISHED);

        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 0 10 -1\n   1: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 20 4 0 10 -1\n";
        let rows = parse_tcp_table(v6);
        assert_eq!(rows[0].local, "[::1]:8080".parse().unwrap());
        assert_eq!(rows[0].peer, "[::1]:50000".parse().unwrap());
        // IPv4-mapped addresses of dual-stack sockets read as IPv4.
        assert_eq!(rows[1].local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(rows[1].peer, "127.0.0.1:40000".parse().unwrap());
    }

    #[test]
    fn scan_finds_own_live_connection_and_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let me = std::process::id();
        let scan = scan(Path::new("/proc"), 0);
        let got = scan.connections.get(&(me, client.as_raw_fd())).copied();
        assert_eq!(
            got,
            Some(Endpoints {
                local: client.local_addr().unwrap(),
                peer: addr
            })
        );
        assert_eq!(
            scan.connections
                .get(&(me, server.as_raw_fd()))
                .map(|e| e.peer),
            Some(client.local_addr().unwrap())
        );
        assert!(
            scan.listeners
                .get(&addr.port())
                .is_some_and(|p| p.contains(&me))
        );
        assert_eq!(resolve(Path::new("/proc"), me, client.as_raw_fd()), got);
        // The agent's own sockets are skipped.
        let skipped = super::scan(Path::new("/proc"), me);
        assert!(!skipped.connections.contains_key(&(me, client.as_raw_fd())));
    }
}
