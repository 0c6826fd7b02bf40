//! The real workload: nginx serving a small static file from a runc container, loaded
//! by `wrk` on loopback; requests per second and p99 latency with nothing attached,
//! with sysfence attached and the container unpoliced, and with the container policed
//! in enforce mode (rounds interleaved, medians).
//!
//! The container is built from the host's own nginx (Debian's package) and the
//! libraries `ldd` lists, with a generated configuration (`daemon off`, master and one
//! worker, `access_log off`). It shares the host's network namespace and listens on
//! 127.0.0.1 only, so the traffic stays on loopback. Its policy is learned first: one
//! run in monitor mode through the bench's own probe, then `runtime-default` plus
//! every syscall counted, so that enforce mode never kills nginx; the policed rounds
//! check that nothing was counted as a violation.
//!
//! Requests per second and latency swing with whatever else the machine runs. The CPU
//! time the container's cgroup used per request (`cpu.stat`) does much less: it is what
//! policing adds to nginx itself, and is reported beside them.

use std::{
    collections::BTreeSet,
    fs,
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Env, Held, median};
use crate::packages;

/// The static file nginx serves (15 bytes, as in the platform notes).
const BODY: &str = "hello, fence!\n\n";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NginxSetup {
    Nothing,
    Unpoliced,
    PolicedEnforce,
}

impl NginxSetup {
    pub const ALL: [NginxSetup; 3] = [
        NginxSetup::Nothing,
        NginxSetup::Unpoliced,
        NginxSetup::PolicedEnforce,
    ];

    pub fn label(self) -> &'static str {
        match self {
            NginxSetup::Nothing => "nothing attached",
            NginxSetup::Unpoliced => "sysfence attached, container not policed",
            NginxSetup::PolicedEnforce => "sysfence, container policed (enforce)",
        }
    }
}

#[derive(Serialize)]
pub struct NginxRow {
    pub setup: NginxSetup,
    pub rps_samples: Vec<f64>,
    pub p99_us_samples: Vec<f64>,
    pub rps_median: f64,
    pub p99_us_median: f64,
    /// CPU time of the container's cgroup per request served, in µs.
    pub cpu_us_per_request_samples: Vec<f64>,
    pub cpu_us_per_request_median: f64,
}

#[derive(Serialize)]
pub struct NginxFigures {
    pub rounds: usize,
    pub seconds_per_sample: u64,
    pub wrk: String,
    pub nginx_version: String,
    pub rows: Vec<NginxRow>,
    /// (unpoliced - policed) / unpoliced, of the median requests per second, in %.
    pub throughput_loss_percent: f64,
    /// policed p99 / unpoliced p99, medians.
    pub p99_ratio: f64,
    /// (policed - unpoliced) / unpoliced, of the median CPU time per request, in %.
    pub cpu_per_request_increase_percent: f64,
    /// Syscalls of the container per request, in the learning run (monitor mode counts
    /// every call; `enforce` counts only violations).
    pub syscalls_per_request: f64,
    /// Syscalls counted in the learning run that `runtime-default` does not allow.
    pub learned_beyond_runtime_default: Vec<String>,
    /// Distinct syscalls counted in the learning run.
    pub learned_syscalls: usize,
    /// Syscalls judged violations over all policed rounds (exact counts): must be 0.
    pub policed_violations: u64,
    /// Requests served over all policed rounds.
    pub policed_requests: u64,
}

#[derive(Clone, Copy)]
pub struct NginxArgs {
    pub rounds: usize,
    pub seconds: u64,
    pub connections: u32,
}

/// A runc container running nginx, deleted (with its directory) on drop.
struct Container {
    dir: PathBuf,
    runc: PathBuf,
    id: String,
    /// The container's cgroup, relative to the cgroup v2 root.
    cgroup: String,
    port: u16,
    created: bool,
}

impl Container {
    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(self.dir.join("runc"));
        c
    }

    fn create(&mut self) -> anyhow::Result<()> {
        let log = fs::File::create(self.dir.join("nginx.log"))?;
        let status = self
            .runc()
            .args(["create", "--bundle"])
            .arg(self.dir.join("bundle"))
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("runc create")?;
        if !status.success() {
            bail!("runc create failed ({status}): {}", self.log_tail());
        }
        self.created = true;
        Ok(())
    }

    fn start(&self) -> anyhow::Result<()> {
        let status = self.runc().args(["start", &self.id]).status()?;
        if !status.success() {
            bail!("runc start failed ({status})");
        }
        // Up when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not come up: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn running(&self) -> bool {
        self.runc()
            .args(["state", &self.id])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .is_some_and(|v| v["status"] == "running")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("nginx.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.created {
            let _ = self
                .runc()
                .args(["delete", "--force", &self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The shared objects `ldd` lists for `binary` (the loader included).
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    if !out.status.success() {
        bail!("ldd {} failed", binary.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn copy_into(rootfs: &Path, file: &Path) -> anyhow::Result<()> {
    let dest = rootfs.join(file.strip_prefix("/")?);
    fs::create_dir_all(dest.parent().expect("parent"))?;
    fs::copy(file, &dest).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// Root filesystem and config.json of the nginx container.
fn write_bundle(
    dir: &Path,
    runc: &Path,
    nginx: &Path,
    port: u16,
    cgroup: &str,
) -> anyhow::Result<()> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    copy_into(&rootfs, nginx)?;
    for lib in libraries(nginx)? {
        copy_into(&rootfs, &lib)?;
    }
    for d in ["etc", "www", "tmp", "proc", "dev", "sys"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(rootfs.join("www/index.html"), BODY)?;
    fs::write(
        rootfs.join("etc/nginx.conf"),
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser nobody nogroup;\n\
             pid /tmp/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  default_type text/plain;\n\
             client_body_temp_path /tmp/body;\n  proxy_temp_path /tmp/proxy;\n\
             fastcgi_temp_path /tmp/fastcgi;\n  uwsgi_temp_path /tmp/uwsgi;\n\
             scgi_temp_path /tmp/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root /www; location / {{ }} }}\n}}\n"
        ),
    )?;

    let out = Command::new(runc)
        .arg("spec")
        .current_dir(&bundle)
        .output()
        .context("runc spec")?;
    if !out.status.success() {
        bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
    }
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path)?)?;
    let process = config["process"].as_object_mut().expect("process");
    // Raising rlimits needs CAP_SYS_RESOURCE, which the CI host lacks.
    process.remove("rlimits");
    process.insert("terminal".into(), json!(false));
    process.insert(
        "args".into(),
        json!([
            nginx.to_str().expect("utf-8"),
            "-e",
            "stderr",
            "-p",
            "/",
            "-c",
            "/etc/nginx.conf"
        ]),
    );
    // The master switches its worker to nobody and chowns its temp directories.
    if let Some(caps) = process
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                for cap in ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE"] {
                    if !list.iter().any(|c| c == cap) {
                        list.push(json!(cap));
                    }
                }
            }
        }
    }
    config["root"]["readonly"] = json!(false);
    config["linux"]["cgroupsPath"] = json!(format!("/{cgroup}"));
    // The host's network namespace: nginx listens on the host's loopback.
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// The CPU time a cgroup (relative to the cgroup v2 root) has used, in µs.
fn cgroup_cpu_usec(cgroup: &str) -> anyhow::Result<u64> {
    let root = super::cgroup_v2_root().ok_or_else(|| anyhow!("no cgroup v2 hierarchy"))?;
    let path = root.join(cgroup).join("cpu.stat");
    let text = fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
        .ok_or_else(|| anyhow!("no usage_usec in {}", path.display()))
}

/// One wrk run: (requests per second, p99 latency in µs, requests).
fn wrk(port: u16, args: NginxArgs) -> anyhow::Result<(f64, f64, u64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", args.connections),
            &format!("-d{}s", args.seconds),
            "--latency",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(l) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw errors: {}", l.trim());
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_latency_us(v.trim()))
        .ok_or_else(|| anyhow!("no 99% latency in wrk output: {text}"))?;
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())
        .ok_or_else(|| anyhow!("no request count in wrk output: {text}"))?;
    Ok((rps, p99, requests))
}

/// wrk's `1.05ms`, `285.00us`, `1.20s` as µs.
fn parse_latency_us(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// `count ABI NAME N VERDICT` lines of a released hold: (name, n, verdict).
fn counts(lines: &[String]) -> Vec<(String, String, u64, bool)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut f = l.strip_prefix("count ")?.split_whitespace();
            let abi = f.next()?.to_string();
            let name = f.next()?.to_string();
            let n = f.next()?.parse().ok()?;
            let violation = f.next()? == "violation";
            Some((abi, name, n, violation))
        })
        .collect()
}

fn write_policy(
    path: &Path,
    name: &str,
    mode: &str,
    allow: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    fs::write(
        path,
        format!(
            "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\n\
             spec:\n  mode: {mode}\n  include: [runtime-default]\n  allow: [{}]\n",
            allow.join(", ")
        ),
    )?;
    Ok(())
}

/// A program on PATH, or in the sbin directories a root shell's PATH may lack.
fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found after installing it"))
}

pub fn run(env: &Env, args: NginxArgs) -> anyhow::Result<NginxFigures> {
    packages::install(&["nginx", "wrk", "runc"])?;
    let nginx = which("nginx")?;
    let runc = which("runc")?;
    let version = Command::new(&nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let pid = std::process::id();
    let dir = env.root.join(format!("target/bench/nginx-{pid}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("runc"))?;
    let port = free_port()?;
    let cgroup = format!("sysfence-bench-nginx-{pid}");
    let mut c = Container {
        dir: dir.clone(),
        runc: runc.clone(),
        id: format!("sysfence-bench-nginx-{pid}"),
        cgroup: cgroup.clone(),
        port,
        created: false,
    };
    write_bundle(&dir, &runc, &nginx, port, &cgroup)?;

    // Learn: bound in monitor mode from before the entrypoint runs, loaded by wrk.
    let learn_policy = dir.join("learn.yaml");
    write_policy(
        &learn_policy,
        "bench-nginx-learn",
        "monitor",
        &BTreeSet::new(),
    )?;
    c.create()?;
    let held = Held::start(
        env,
        &[
            "idle",
            "--policy",
            learn_policy.to_str().expect("utf-8"),
            "--workloads",
            "0",
            "--bind",
            &c.cgroup,
        ],
    )?;
    c.start()?;
    let (_, _, learn_requests) = wrk(port, NginxArgs { seconds: 2, ..args })?;
    let learned = counts(&held.finish()?);
    if learned.is_empty() {
        bail!("the learning run counted no syscall of the nginx container");
    }
    let mut allow = BTreeSet::new();
    let mut beyond = BTreeSet::new();
    for (abi, name, _, violation) in &learned {
        if abi != "x86_64" || name.starts_with('#') {
            bail!("nginx made a {abi} syscall {name}: not learnable by name");
        }
        allow.insert(name.clone());
        if *violation {
            beyond.insert(name.clone());
        }
    }
    let policy = dir.join("nginx.yaml");
    write_policy(&policy, "bench-nginx", "enforce", &allow)?;

    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); NginxSetup::ALL.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); NginxSetup::ALL.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); NginxSetup::ALL.len()];
    let mut violations = 0;
    let mut policed_requests = 0;
    for round in 0..args.rounds {
        eprint!("\rxtask: bench nginx round {}/{}", round + 1, args.rounds);
        for (i, setup) in NginxSetup::ALL.into_iter().enumerate() {
            let held = match setup {
                NginxSetup::Nothing => None,
                NginxSetup::Unpoliced => Some(Held::start(
                    env,
                    &[
                        "idle",
                        "--policy",
                        policy.to_str().expect("utf-8"),
                        "--workloads",
                        "1",
                    ],
                )?),
                NginxSetup::PolicedEnforce => Some(Held::start(
                    env,
                    &[
                        "idle",
                        "--policy",
                        policy.to_str().expect("utf-8"),
                        "--workloads",
                        "0",
                        "--bind",
                        &c.cgroup,
                    ],
                )?),
            };
            let usec = cgroup_cpu_usec(&c.cgroup)?;
            let (r, p, requests) = wrk(port, args)?;
            let usec = cgroup_cpu_usec(&c.cgroup)? - usec;
            cpu[i].push(usec as f64 / requests.max(1) as f64);
            if let Some(held) = held {
                let lines = held.finish()?;
                if setup == NginxSetup::PolicedEnforce {
                    policed_requests += requests;
                    for (_, _, n, violation) in counts(&lines) {
                        if violation {
                            violations += n;
                        }
                    }
                }
            }
            if !c.running() {
                bail!(
                    "the nginx container died ({}): {}",
                    setup.label(),
                    c.log_tail()
                );
            }
            rps[i].push(r);
            p99[i].push(p);
        }
    }
    eprintln!();
    if violations > 0 {
        bail!("the policed nginx counted {violations} violations: the learned policy is short");
    }
    let rows: Vec<NginxRow> = NginxSetup::ALL
        .into_iter()
        .enumerate()
        .map(|(i, setup)| NginxRow {
            setup,
            rps_median: median(&rps[i]),
            p99_us_median: median(&p99[i]),
            rps_samples: rps[i].clone(),
            p99_us_samples: p99[i].clone(),
            cpu_us_per_request_median: median(&cpu[i]),
            cpu_us_per_request_samples: cpu[i].clone(),
        })
        .collect();
    let unpoliced = &rows[1];
    let policed = &rows[2];
    Ok(NginxFigures {
        rounds: args.rounds,
        seconds_per_sample: args.seconds,
        wrk: format!(
            "wrk -t1 -c{} -d{}s --latency",
            args.connections, args.seconds
        ),
        nginx_version: version,
        throughput_loss_percent: (unpoliced.rps_median - policed.rps_median) / unpoliced.rps_median
            * 100.0,
        p99_ratio: policed.p99_us_median / unpoliced.p99_us_median,
        cpu_per_request_increase_percent: (policed.cpu_us_per_request_median
            - unpoliced.cpu_us_per_request_median)
            / unpoliced.cpu_us_per_request_median
            * 100.0,
        syscalls_per_request: learned.iter().map(|(_, _, n, _)| n).sum::<u64>() as f64
            / learn_requests.max(1) as f64,
        learned_beyond_runtime_default: beyond.into_iter().collect(),
        learned_syscalls: allow.len(),
        policed_violations: violations,
        policed_requests,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_parse() {
        assert_eq!(parse_latency_us("285.00us"), Some(285.0));
        assert_eq!(parse_latency_us("1.05ms"), Some(1050.0));
        assert_eq!(parse_latency_us("1.20s"), Some(1.2e6));
        assert_eq!(parse_latency_us("n/a"), None);
    }
}
