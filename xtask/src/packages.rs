//! Debian packages the tests and benchmarks need, installed by xtask when missing.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Whether `pkg` is installed.
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// Run apt-get non-interactively; its output goes to stderr.
pub fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: apt-get {}", args.join(" "));
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get")?;
    let _ = std::io::stderr().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    if !out.status.success() {
        let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("E:"))
            .map(str::to_string)
            .collect();
        bail!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            out.status,
            errors.join(" / ")
        );
    }
    Ok(())
}

/// Install those of `pkgs` that are missing; on failure, `apt-get update` once and retry.
pub fn ensure(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    if let Err(first) = apt_get(&args) {
        eprintln!("xtask: {first:#}; running apt-get update and retrying");
        apt_get(&["update"])?;
        apt_get(&args)?;
    }
    Ok(())
}
