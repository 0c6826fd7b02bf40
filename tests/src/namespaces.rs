//! What the namespace tests share (`tests/args.rs` on the host, `tests/lsm.rs` in the
//! VMs): the flags they ask for, what the clone verbs of `sf-syscalls` leave behind,
//! and Docker's default seccomp profile imported as sysfence imports it.

use std::path::Path;

/// CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS.
pub const NEW_USER_NET_UTS: &str = "0x54000000";

/// Docker's default seccomp profile, as Debian 12 ships it (tests/fixtures/README.md).
pub const DOCKER_DEFAULT_SECCOMP: &str = include_str!("../fixtures/docker-default-seccomp.json");

/// The user namespace of every child a clone verb's marker recorded, one per line.
pub fn children_namespaces(marker: &Path) -> Vec<String> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The test process's own user namespace, as the clone verbs' children write theirs.
pub fn own_user_namespace() -> String {
    std::fs::read_link("/proc/self/ns/user")
        .unwrap()
        .display()
        .to_string()
}

/// Docker's default profile through `sysfence policy import-seccomp`, in `dir`: the
/// imported policy's YAML (audit mode, as the import writes it).
pub fn import_docker_default(dir: &Path) -> String {
    let profile = dir.join("docker-default-seccomp.json");
    std::fs::write(&profile, DOCKER_DEFAULT_SECCOMP).unwrap();
    let imported = dir.join("docker.yaml");
    let out = crate::sysfence()
        .args(["policy", "import-seccomp"])
        .arg(&profile)
        .arg("-o")
        .arg(&imported)
        .output()
        .unwrap();
    let (_, stderr) = crate::text(&out);
    assert!(out.status.success(), "import-seccomp: {stderr}");
    std::fs::read_to_string(&imported).unwrap()
}
