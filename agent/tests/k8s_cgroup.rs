//! Container → cgroup id against the machine's real cgroup2 hierarchy (found
//! from /proc/self/mountinfo): every kubelet/runtime layout, the fallback
//! scan, ids checked against the kernel's own cgroup id (the file handle
//! `name_to_handle_at` returns on cgroup2) and a real process moved into a
//! container's cgroup. Needs root; the trees are removed, leaves first, even
//! when a test fails.
mod support;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command},
};

use seam::discover::k8s::{
    self as k8s, CgroupLocator, ContainerId, K8sUpdate, cgroup::cgroup_id, cgroup::subtree_ids,
    find_cgroup2_mount,
};
use support::{CgroupDirs, Harness, PodFx, Res, hex_id, namespace};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the real-cgroup tests need root (they create cgroups)"
    );
}

/// The kernel's cgroup id of a cgroup2 directory: on cgroup2 the file handle
/// is the 64-bit cgroup id (what bpf_get_current_cgroup_id() returns).
fn kernel_cgroup_id(path: &Path) -> u64 {
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; 64],
    }
    let mut h = Handle {
        handle_bytes: 64,
        handle_type: 0,
        f_handle: [0; 64],
    };
    let mut mount_id: libc::c_int = 0;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `h` is a file_handle header followed by 64 bytes of room, as
    // handle_bytes says; `c` is NUL-terminated.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&raw mut h).cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    assert_eq!(h.handle_bytes, 8);
    u64::from_ne_bytes(h.f_handle[..8].try_into().unwrap())
}

/// A child process killed and reaped on drop (before its cgroup is removed).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mount_is_found_from_mountinfo() {
    let mount = find_cgroup2_mount().expect("cgroup2 mount");
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(text.contains(&format!(" {} ", mount.display())));
    assert!(mount.join("cgroup.procs").exists());
}

#[test]
fn every_layout_maps_to_the_kernels_cgroup_id() {
    require_root();
    let cg = CgroupDirs::real(
        &k8s::find_cgroup2_mount().expect("cgroup2 mount"),
        "layouts",
    );
    let uid = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    let u_ = uid.replace('-', "_");
    let cases: Vec<(String, String)> = vec![
        (
            format!("containerd://{}", hex_id(1)),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice/cri-containerd-{}.scope",
                hex_id(1)
            ),
        ),
        (
            format!("cri-o://{}", hex_id(2)),
            format!(
                "kubepods.slice/kubepods-pod{u_}.slice/crio-{}.scope",
                hex_id(2)
            ),
        ),
        (
            format!("docker://{}", hex_id(3)),
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice/docker-{}.scope",
                hex_id(3)
            ),
        ),
        (
            format!("containerd://{}", hex_id(4)),
            format!("kubepods/besteffort/pod{uid}/{}", hex_id(4)),
        ),
        (
            format!("docker://{}", hex_id(5)),
            format!("kubepods/pod{uid}/{}", hex_id(5)),
        ),
        (
            format!("cri-o://{}", hex_id(6)),
            format!("kubepods/burstable/pod{uid}/crio-{}", hex_id(6)),
        ),
        // kind / a kubelet --cgroup-root: found by the scan.
        (
            format!("containerd://{}", hex_id(7)),
            format!(
                "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u_}.slice/cri-containerd-{}.scope",
                hex_id(7)
            ),
        ),
        (
            format!("cri-o://{}", hex_id(8)),
            format!(
                "custom/kubepods/burstable/pod{uid}/crio-{}.scope",
                hex_id(8)
            ),
        ),
    ];
    // Decoys the lookups must not take: CRI-O's monitor cgroups.
    cg.mkdir(format!(
        "kubepods.slice/kubepods-pod{u_}.slice/crio-conmon-{}.scope",
        hex_id(2)
    ));
    cg.mkdir(format!(
        "custom/kubepods/burstable/pod{uid}/crio-conmon-{}.scope",
        hex_id(8)
    ));
    for (_, rel) in &cases {
        cg.mkdir(rel);
    }
    let locator = CgroupLocator::new(&cg.root);
    for (raw, rel) in &cases {
        let c = ContainerId::parse(raw).unwrap();
        let found = locator.locate(uid, &c);
        assert_eq!(found.as_deref(), Some(cg.root.join(rel).as_path()), "{raw}");
        let dir = found.unwrap();
        let id = cgroup_id(&dir).unwrap();
        assert_eq!(id, fs::metadata(&dir).unwrap().ino());
        assert_eq!(
            id,
            kernel_cgroup_id(&dir),
            "{raw}: inode is the kernel's cgroup id"
        );
    }
    // A container that made its own sub-cgroup: both are traced.
    let first = cg.root.join(&cases[0].1);
    let (nested, nested_ino) = cg.mkdir(first.join("init.scope"));
    assert_eq!(
        subtree_ids(&first).unwrap(),
        vec![cgroup_id(&first).unwrap(), nested_ino]
    );
    assert_eq!(nested_ino, kernel_cgroup_id(&nested));
    // An unknown container: nothing, after a bounded scan.
    let missing = ContainerId::parse(&format!("containerd://{}", hex_id(99))).unwrap();
    assert_eq!(locator.locate(uid, &missing), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_in_a_pods_cgroup_is_traced_by_its_cgroup_id() {
    require_root();
    let mut h = Harness::with_cgroups(CgroupDirs::real(
        &k8s::find_cgroup2_mount().expect("cgroup2 mount"),
        "e2e",
    ))
    .await;
    let pod = PodFx::new("shop", "web-0", 71)
        .label("seam.dev/trace", "enabled")
        .owned_by("StatefulSet", "web");
    let (dir, ino) = h
        .cgroups
        .systemd_containerd("burstable", &pod.uid, &pod.containers[0].id);
    // A real process in the container's cgroup, as the runtime would put it.
    let child = Proc(Command::new("sleep").arg("60").spawn().unwrap());
    let pid = child.0.id();
    fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    let cgroup_line = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .expect("a cgroup v2 line");
    let rel = dir.strip_prefix(find_cgroup2_mount().unwrap()).unwrap();
    assert!(
        cgroup_line.ends_with(&format!("/{}", rel.display())),
        "{cgroup_line} vs {}",
        rel.display()
    );
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.procs")).unwrap().trim(),
        pid.to_string()
    );

    h.api.apply(Res::Namespaces, namespace("shop", &[]));
    h.api.apply(Res::Pods, pod.json());
    h.run(h.config());
    let (id, meta) = h.next_trace().await;
    assert_eq!(id, ino);
    assert_eq!(id, kernel_cgroup_id(&dir));
    assert_eq!(meta.workload.statefulset.as_deref(), Some("web"));
    assert_eq!(meta.service_name, "web");

    // The pod goes away: untraced.
    h.api.delete(Res::Pods, "shop", "web-0");
    assert_eq!(h.next().await, K8sUpdate::Untrace { cgroup_id: ino });
    drop(child);
}
