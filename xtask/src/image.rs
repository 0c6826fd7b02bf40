//! `cargo xtask image`: the container image of `deploy/Containerfile`, built offline.
//!
//! 1. `sysfence` built statically against glibc (`-C target-feature=+crt-static` for
//!    `x86_64-unknown-linux-gnu`; musl would need a rustup target this host cannot
//!    download), and checked to be static: no ELF interpreter, and `file`/`ldd` agree.
//! 2. `podman build --pull=never` from `scratch` (Debian's podman, installed if missing).
//! 3. The image's binary runs `--version`, through `podman run` if the host lets a
//!    container start, and in any case taken out of the image (`podman create` +
//!    `podman cp`), compared byte for byte with the built binary and run on the host.
//!
//! Images and containers it creates are removed, also on failure, unless `--keep`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::toolchain::Tools;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(clap::Args, Default)]
pub struct ImageArgs {
    /// Keep the image, as localhost/sysfence:VERSION (by default it is removed).
    #[arg(long)]
    pub keep: bool,
}

/// Removes what the run created, however it ends.
struct Cleanup {
    image: Option<String>,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = quiet(podman().args(["rm", "--force", "--ignore", name]));
        }
        if let Some(image) = &self.image {
            match quiet(podman().args(["rmi", "--force", "--ignore", image])) {
                Ok(_) => eprintln!("xtask: image: removed {image}"),
                Err(e) => eprintln!("xtask: image: could not remove {image}: {e:#}"),
            }
        }
    }
}

fn podman() -> Command {
    Command::new("podman")
}

/// Run, capture; error with stderr when it fails. Returns trimmed stdout.
fn quiet(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(root: &Path, tools: &Tools, args: &ImageArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_podman()?;

    // 1. The static binary.
    let t = Instant::now();
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" -C target-feature=+crt-static");
    crate::run_step(
        "static build (glibc, +crt-static)",
        crate::cargo(tools)
            .args(["build", "--release", "--target", TARGET])
            .args(["-p", "sysfence", "--bin", "sysfence"])
            .env("RUSTFLAGS", flags.trim()),
    )?;
    let build_secs = t.elapsed().as_secs_f64();
    let bin = crate::target_dir(root)
        .join(TARGET)
        .join("release")
        .join("sysfence");
    check_static(&bin)?;
    let bin_size = std::fs::metadata(&bin)?.len();

    // 2. The image.
    let context = crate::target_dir(root).join("image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    std::fs::copy(&bin, context.join("sysfence"))
        .with_context(|| format!("copying {} into the build context", bin.display()))?;
    let tag = if args.keep {
        format!("localhost/sysfence:{VERSION}")
    } else {
        format!("localhost/sysfence:{VERSION}-xtask-{}", std::process::id())
    };
    let mut cleanup = Cleanup {
        image: (!args.keep).then(|| tag.clone()),
        containers: Vec::new(),
    };
    let t = Instant::now();
    crate::run_step(
        &format!("podman build {tag} (offline, FROM scratch)"),
        podman()
            // No intermediate images: removing the tag then leaves nothing behind.
            .args(["build", "--pull=never", "--network=none", "--layers=false"])
            .arg(format!("--build-arg=VERSION={VERSION}"))
            .arg("--file")
            .arg(root.join("deploy/Containerfile"))
            .args(["--tag", &tag])
            .arg(&context),
    )?;
    let image_secs = t.elapsed().as_secs_f64();
    let image_size: u64 =
        quiet(podman().args(["image", "inspect", "--format", "{{.Size}}", &tag]))?
            .parse()
            .context("podman image inspect: size")?;

    // 3. `--version`, in a container if the host allows one, and from the image's file.
    let expected = format!("sysfence {VERSION}");
    let ran_in_container = run_in_container(&tag, &expected, &mut cleanup.containers);
    let extracted = crate::target_dir(root).join("image-extracted-sysfence");
    let name = format!("sysfence-xtask-cp-{}", std::process::id());
    cleanup.containers.push(name.clone());
    quiet(podman().args(["create", "--name", &name, &tag]))?;
    let _ = std::fs::remove_file(&extracted);
    quiet(
        podman()
            .args(["cp", &format!("{name}:/usr/local/bin/sysfence")])
            .arg(&extracted),
    )?;
    quiet(podman().args(["rm", "--force", &name]))?;
    if std::fs::read(&extracted)? != std::fs::read(&bin)? {
        bail!(
            "the image's /usr/local/bin/sysfence differs from {}",
            bin.display()
        );
    }
    let host_version = quiet(Command::new(&extracted).arg("--version"))?;
    if host_version != expected {
        bail!("the image's binary, run on the host, printed `{host_version}`, not `{expected}`");
    }

    eprintln!("xtask: image {tag}:");
    eprintln!(
        "xtask:   static build {build_secs:.0} s, binary {:.1} MB",
        bin_size as f64 / 1e6
    );
    eprintln!(
        "xtask:   podman build {image_secs:.1} s, image {:.1} MB",
        image_size as f64 / 1e6
    );
    match &ran_in_container {
        Ok(how) => eprintln!("xtask:   --version in a container ({how}): `{expected}`"),
        Err(why) => eprintln!("xtask:   no container could start here: {why:#}"),
    }
    eprintln!(
        "xtask:   --version of the binary copied out of the image (podman create + cp), \
         identical to the build, run on the host: `{host_version}`"
    );
    eprintln!("xtask:   total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `podman run IMAGE --version`. podman asks the OCI runtime for RLIMIT_NOFILE and
/// RLIMIT_NPROC values above the host's; raising a limit needs CAP_SYS_RESOURCE, which
/// the CI host does not give even to root (and podman 4.3 sets them with `--ulimit
/// host` too), so the limits are set lower, which needs no privilege. crun refuses
/// hybrid cgroup hosts: runc is tried next.
fn run_in_container(
    tag: &str,
    expected: &str,
    containers: &mut Vec<String>,
) -> anyhow::Result<String> {
    let mut runtimes = vec![None];
    if Path::new("/usr/sbin/runc").exists() {
        runtimes.push(Some("/usr/sbin/runc"));
    }
    let mut errors = Vec::new();
    for (i, runtime) in runtimes.into_iter().enumerate() {
        let name = format!("sysfence-xtask-run-{}-{i}", std::process::id());
        containers.push(name.clone());
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--name", &name, "--network=none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        if let Some(r) = runtime {
            cmd.args(["--runtime", r]);
        }
        cmd.args([tag, "--version"]);
        let how = format!(
            "podman run --runtime {} --ulimit nofile=1024:1024 --ulimit nproc=1024:1024",
            runtime.unwrap_or("<default>")
        );
        match quiet(&mut cmd) {
            Ok(out) if out == expected && errors.is_empty() => return Ok(how),
            Ok(out) if out == expected => {
                return Ok(format!("{how}, after: {}", errors.join("; ")));
            }
            Ok(out) => bail!("{how} printed `{out}`, not `{expected}`"),
            Err(e) => errors.push(format!("{how}: {e:#}")),
        }
    }
    bail!("{}", errors.join("; "))
}

/// Static: no ELF interpreter (PT_INTERP), and `file` and `ldd` say so.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let elf = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interpreter(&elf)? {
        bail!(
            "{} has an ELF interpreter: it is dynamically linked",
            bin.display()
        );
    }
    let file = quiet(Command::new("file").arg("-b").arg(bin));
    match &file {
        Ok(text) if text.contains("statically linked") || text.contains("static-pie linked") => {
            eprintln!("xtask: file: {text}");
        }
        Ok(text) => bail!("`file` does not call {} static: {text}", bin.display()),
        Err(e) => eprintln!("xtask: `file` unavailable ({e:#}); the ELF check passed"),
    }
    // glibc's ldd prints "statically linked" (exit 0) or "not a dynamic executable" (1).
    let ldd = Command::new("ldd").arg(bin).output();
    match ldd {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let text = text.trim();
            if !(text.contains("statically linked") || text.contains("not a dynamic executable")) {
                bail!("ldd lists libraries for {}: {text}", bin.display());
            }
            eprintln!("xtask: ldd: {text}");
        }
        Err(e) => eprintln!("xtask: `ldd` unavailable ({e}); the ELF check passed"),
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .try_fold(false, |found, at| {
            let header = elf
                .get(at..at + 4)
                .context("program header table out of the file")?;
            let kind = u32::from_le_bytes(header.try_into().expect("4 bytes"));
            Ok(found || kind == PT_INTERP)
        })
}

fn ensure_podman() -> anyhow::Result<()> {
    if quiet(podman().arg("--version")).is_ok() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("podman is missing: install Debian's `podman` package (needs root)");
    }
    crate::packages::install(&["podman"])?;
    quiet(podman().arg("--version")).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_found() {
        // A minimal ELF64 header with one program header of type PT_INTERP.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(has_interpreter(&elf).unwrap());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(!has_interpreter(&elf).unwrap());
        assert!(has_interpreter(b"not an elf").is_err());
    }
}
