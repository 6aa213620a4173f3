//! Where the kernel file systems seam needs are mounted, from
//! `/proc/self/mountinfo` (never assumed: cgroup2 is at /sys/fs/cgroup on most
//! nodes and at /sys/fs/cgroup/unified on hybrid ones).
use std::{fs, path::PathBuf};

/// Mount points of file systems of type `fstype`, in mount order.
pub fn mounts_of(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            (right.split(' ').next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// First mount of `fstype` seen by this process.
pub fn find(fstype: &str) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts_of(&text, fstype).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
35 30 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
40 22 0:12 / /sys/kernel/tracing rw - tracefs nodev rw
41 22 0:13 / /mnt/with\\040space rw - tracefs nodev rw
";

    #[test]
    fn finds_hybrid_cgroup2_and_tracefs() {
        assert_eq!(
            mounts_of(SAMPLE, "cgroup2"),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            mounts_of(SAMPLE, "tracefs"),
            vec![
                PathBuf::from("/sys/kernel/tracing"),
                PathBuf::from("/mnt/with space")
            ]
        );
        assert!(mounts_of(SAMPLE, "bpf").is_empty());
    }
}
