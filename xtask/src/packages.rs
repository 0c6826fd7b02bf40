//! Debian packages that the build and the tests need, installed with apt-get when
//! missing (as root; otherwise the command to run is printed).
//!
//! - build: `protobuf-compiler` (k8s-cri's build script runs `protoc` for the CRI API);
//! - tests: the container runtimes the integration tests drive (runc, crun, gVisor's
//!   runsc, containerd) and `busybox-static`, from which they build root filesystems
//!   and images (no registry is used), `strace` (the independent count of
//!   tests/tests/adopt.rs) and `chromium` (renders the HTML dry-run report headless).

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// One need, met by the first installable of several package names (Debian has named
/// some packages differently over time: gVisor is `runsc`, elsewhere `gvisor`).
struct Need {
    what: &'static str,
    packages: &'static [&'static str],
    /// A program that, when on PATH, meets the need without the package.
    program: Option<&'static str>,
}

const BUILD: &[Need] = &[
    Need {
        what: "protoc, for the CRI API bindings (k8s-cri)",
        packages: &["protobuf-compiler"],
        program: Some("protoc"),
    },
    Need {
        what: "libseccomp, which the bench workloads link (the peer sysfence is compared with)",
        packages: &["libseccomp-dev"],
        program: None,
    },
    Need {
        what: "pkg-config, to find libseccomp",
        packages: &["pkg-config"],
        program: Some("pkg-config"),
    },
];

const TEST: &[Need] = &[
    Need {
        what: "runc",
        packages: &["runc"],
        program: None,
    },
    Need {
        what: "crun",
        packages: &["crun"],
        program: None,
    },
    Need {
        what: "gVisor's runsc",
        packages: &["runsc", "gvisor"],
        program: None,
    },
    Need {
        what: "containerd and ctr",
        packages: &["containerd"],
        program: None,
    },
    Need {
        what: "busybox-static, for root filesystems and images",
        packages: &["busybox-static"],
        program: None,
    },
    Need {
        what: "strace, the independent tracer whose counts `watch` and `record` are checked against",
        packages: &["strace"],
        program: Some("strace"),
    },
    Need {
        what: "chromium, to render the HTML dry-run report headless",
        packages: &["chromium"],
        program: Some("chromium"),
    },
];

pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Whether apt knows a candidate version of `pkg`.
fn has_candidate(pkg: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .is_some_and(|c| c.trim() != "(none)")
            })
        })
}

pub fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Install what the build needs, and what the tests need when `for_tests`.
pub fn ensure(for_tests: bool) -> anyhow::Result<()> {
    let needs: Vec<&Need> = BUILD
        .iter()
        .chain(if for_tests { TEST } else { &[] })
        .filter(|n| !n.packages.iter().any(|p| installed(p)) && !n.program.is_some_and(on_path))
        .collect();
    if needs.is_empty() {
        return Ok(());
    }
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        let names: Vec<&str> = needs.iter().map(|n| n.packages[0]).collect();
        let msg = format!(
            "missing Debian packages: {} (run `apt-get install {}` as root)",
            needs.iter().map(|n| n.what).collect::<Vec<_>>().join("; "),
            names.join(" ")
        );
        if needs.iter().any(|n| BUILD.iter().any(|b| b.what == n.what)) {
            bail!("{msg}");
        }
        eprintln!("xtask: warning: {msg}; the tests that need them will say so");
        return Ok(());
    }
    let mut updated = false;
    let mut chosen = Vec::new();
    for n in &needs {
        let mut pick = n.packages.iter().find(|p| has_candidate(p));
        if pick.is_none() && !updated {
            apt_get(&["update"])?;
            updated = true;
            pick = n.packages.iter().find(|p| has_candidate(p));
        }
        match pick {
            Some(p) => chosen.push(*p),
            None => bail!(
                "no installable package for {}: none of {} has a candidate in the apt sources",
                n.what,
                n.packages.join(", ")
            ),
        }
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&chosen);
    if apt_get(&args).is_err() && !updated {
        apt_get(&["update"])?;
        apt_get(&args)?;
    }
    Ok(())
}

/// Install those of `pkgs` that are missing; on failure, `apt-get update` once and retry.
pub fn install(pkgs: &[&str]) -> anyhow::Result<()> {
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
