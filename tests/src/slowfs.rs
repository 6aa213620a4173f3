//! The slow FUSE file system of tests/apps/slowfs, mounted for a test.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::procs::{Proc, apps_dir};

/// Mounted while alive; unmounted when dropped.
pub struct SlowFs {
    pub dir: PathBuf,
    proc: Proc,
}

fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some(dir.to_string_lossy().as_ref()))
    })
}

impl SlowFs {
    /// Mounts at `dir` a file system whose every write takes `delay_ms`.
    pub fn mount(dir: &Path, delay_ms: u32) -> SlowFs {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(apps_dir("slowfs").join("slowfs.py"))
            .arg(dir)
            .args(["--delay-ms", &delay_ms.to_string()]);
        let mut proc = Proc::spawn("slowfs", cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mounted(dir) {
            if Instant::now() > deadline || !proc.running() {
                panic!("slowfs did not mount at {}:\n{}", dir.display(), proc.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        SlowFs {
            dir: dir.to_path_buf(),
            proc,
        }
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.dir).status();
        self.proc.stop();
    }
}
