//! Container start latency: `runc run` of a busybox container whose entrypoint is
//! `/bin/true`, timed from the call to its return (create, start, the entrypoint, the
//! delete), in three setups, rounds interleaved, one agent running throughout:
//! - plain: no policy selects the container and no hold root is above it (the probe is
//!   attached; nothing else happens);
//! - wrapped: through `sysfence wrap`, which has the agent bind it at `start`;
//! - discovery with the hold: plain `runc run` below the directory a selector names; the
//!   probe holds the entrypoint at its exec until the agent has found and bound it.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

use super::{Env, cgroup_v2_root, median};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartSetup {
    Plain,
    Wrapped,
    DiscoveryWithHold,
}

impl StartSetup {
    const ALL: [StartSetup; 3] = [
        StartSetup::Plain,
        StartSetup::Wrapped,
        StartSetup::DiscoveryWithHold,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StartSetup::Plain => "plain `runc run` (not selected, not below a hold root)",
            StartSetup::Wrapped => "`sysfence wrap -- run` (bound at start)",
            StartSetup::DiscoveryWithHold => "plain `runc run`, discovery with the hold",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            StartSetup::Plain => "plain",
            StartSetup::Wrapped => "wrapped",
            StartSetup::DiscoveryWithHold => "held",
        }
    }
}

#[derive(Serialize)]
pub struct StartRow {
    pub setup: StartSetup,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub samples_ms: Vec<f64>,
}

#[derive(Serialize)]
pub struct StartFigures {
    pub runs: usize,
    pub rows: Vec<StartRow>,
    /// Holds the agent released with the container bound, of the held runs.
    pub held_and_bound: usize,
}

/// What the bench made: removed on drop, even when a step fails.
struct Scene {
    dir: PathBuf,
    cgroups: Vec<PathBuf>,
    pin_path: PathBuf,
    agent: Option<Child>,
    sysfence: PathBuf,
}

impl Drop for Scene {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // SAFETY: plain kill(2) of the agent this bench started.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
        let _ = Command::new(&self.sysfence)
            .args(["agent", "--uninstall", "--pin-path"])
            .arg(&self.pin_path)
            .stdout(Stdio::null())
            .status();
        for cg in &self.cgroups {
            if let Ok(entries) = fs::read_dir(cg) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
            let _ = fs::remove_dir(cg);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("{name} is not installed (Debian package {name})"))
}

/// A busybox bundle whose process is `/bin/true`, its cgroup set per run.
fn write_bundle(bundle: &Path, runc: &Path) -> anyhow::Result<Value> {
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("busybox-static is not installed"))?;
    fs::copy(busybox, rootfs.join("bin/busybox"))?;
    let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"));
    let _ = fs::remove_file(bundle.join("config.json"));
    let out = Command::new(runc)
        .arg("spec")
        .current_dir(bundle)
        .output()?;
    if !out.status.success() {
        bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json"))?)?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = Value::Bool(false);
    Ok(config)
}

pub fn run(env: &Env, runs: usize) -> anyhow::Result<StartFigures> {
    let runc = which("runc")?;
    let cgroot = cgroup_v2_root().ok_or_else(|| anyhow!("no cgroup v2 mount"))?;
    let pid = std::process::id();
    let selected = format!("sysfence-bench-start-{pid}");
    let plain = format!("sysfence-bench-plain-{pid}");
    let mut scene = Scene {
        dir: std::env::temp_dir().join(format!("sysfence-bench-start-{pid}")),
        cgroups: vec![cgroot.join(&selected), cgroot.join(&plain)],
        pin_path: PathBuf::from(format!("/sys/fs/bpf/sysfence-bench-start-{pid}")),
        agent: None,
        sysfence: env.sysfence.clone(),
    };
    for cg in &scene.cgroups {
        fs::create_dir_all(cg).with_context(|| format!("creating {}", cg.display()))?;
    }
    let dir = scene.dir.clone();
    let policies = dir.join("policies");
    fs::create_dir_all(&policies)?;
    fs::write(
        policies.join("start.yaml"),
        format!(
            "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: bench-start\nspec:\n  selector:\n    cgroupPath: \"{selected}/c-*\"\n  mode: enforce\n  include: [runtime-default]\n"
        ),
    )?;
    let state = dir.join("runc-root");
    let socket = dir.join("runtime.sock");
    let wrapper = dir.join("sysfence-runc");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} wrap --socket {} --runtime {} -- \"$@\"\n",
            env.sysfence.display(),
            socket.display(),
            runc.display()
        ),
    )?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    let bundle = dir.join("bundle");
    let mut config = write_bundle(&bundle, &runc)?;

    let mut agent = Command::new(&env.sysfence)
        .args(["agent", "--no-cri", "--rescan-every", "2", "--policies"])
        .arg(&policies)
        .arg("--runtime-socket")
        .arg(&socket)
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .arg("--pin-path")
        .arg(&scene.pin_path)
        .arg("--runtime-root")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let stdout = agent.stdout.take().expect("piped");
    scene.agent = Some(agent);
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().expect("lines").push(v);
            }
        }
    });
    let seen = |event: &str| {
        lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|v| v["event"] == event)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen("started") == 0 {
        if Instant::now() > deadline {
            bail!("the agent did not start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); StartSetup::ALL.len()];
    for round in 0..runs {
        eprint!("\rxtask: bench start latency {}/{runs}", round + 1);
        for (k, setup) in StartSetup::ALL.into_iter().enumerate() {
            let id = format!("{}-{round}", setup.tag());
            let parent = if setup == StartSetup::Plain {
                &plain
            } else {
                &selected
            };
            config["linux"]["cgroupsPath"] = Value::String(format!("/{parent}/c-{id}"));
            fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
            let program = if setup == StartSetup::Wrapped {
                &wrapper
            } else {
                &runc
            };
            let t = Instant::now();
            let out = Command::new(program)
                .arg("--root")
                .arg(&state)
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id)
                .stdin(Stdio::null())
                .output()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if !out.status.success() {
                bail!(
                    "{}: runc run {id}: {}: {}",
                    setup.label(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            samples[k].push(ms);
        }
    }
    eprintln!();
    std::thread::sleep(Duration::from_millis(500));
    let held_and_bound = lines
        .lock()
        .expect("lines")
        .iter()
        .filter(|v| v["event"] == "hold_released" && v["policy"] == "bench-start")
        .count();
    drop(scene);
    let rows = StartSetup::ALL
        .into_iter()
        .zip(samples)
        .map(|(setup, s)| {
            let mut sorted = s.clone();
            sorted.sort_by(f64::total_cmp);
            let p90 = sorted[((sorted.len() - 1) as f64 * 0.9).round() as usize];
            StartRow {
                setup,
                median_ms: median(&s),
                p90_ms: p90,
                samples_ms: s,
            }
        })
        .collect();
    Ok(StartFigures {
        runs,
        rows,
        held_and_bound,
    })
}
