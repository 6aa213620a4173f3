//! Facts the probes need from tracefs.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::discover::mounts;

/// Where tracefs is mounted, if anywhere.
pub fn mount_point() -> Option<PathBuf> {
    mounts::find("tracefs").or_else(|| {
        mounts::find("debugfs")
            .map(|d| d.join("tracing"))
            .filter(|p| p.join("events").is_dir())
    })
}

/// Byte offset of `field` in a tracepoint `format` file.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.parse().ok())
    })
}

/// Offset of `child_pid` in this kernel's `sched_process_fork` record (it
/// moved when the comm fields became dynamic strings).
pub fn fork_child_pid_offset(tracefs: &Path) -> Option<u32> {
    let format = fs::read_to_string(tracefs.join("events/sched/sched_process_fork/format")).ok()?;
    field_offset(&format, "child_pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_old_and_new_fork_formats() {
        let new = "name: sched_process_fork\nformat:\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(new, "child_pid"), Some(20));
        assert_eq!(field_offset(old, "child_pid"), Some(44));
        assert_eq!(field_offset(old, "parent_pid"), Some(24));
        assert_eq!(field_offset(old, "nope"), None);
    }
}
