//! The agent's own figures: start to programs attached, binding 1,000 workloads, RSS,
//! a violation flood, and policy changes to maps written.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use serde::Serialize;

use super::{Env, cgroup_v2_root, median, parse_number};

#[derive(Serialize)]
pub(super) struct AgentFigures {
    pub(super) start_to_attached_ms: f64,
    pub(super) rss_kib_1000_workloads: u64,
    pub(super) bind_1000_workloads_ms: f64,
    pub(super) flood_calls: u64,
    pub(super) flood_calls_per_sec: f64,
    pub(super) flood_events_logged: u64,
    pub(super) flood_events_dropped: u64,
    pub(super) flood_agent_cpu_percent: f64,
    pub(super) flood_agent_rss_kib: u64,
    /// Policy file renamed into place to the reload's log line, median.
    pub(super) reload_end_to_end_us: f64,
    /// The agent's own figure: first inotify event to the last map write, median.
    pub(super) reload_agent_us: f64,
    pub(super) reload_count: usize,
    /// A change of the policy bound to 1,000 workloads.
    pub(super) reload_1000_rebound: u64,
    pub(super) reload_1000_us: f64,
}

/// Policy changes timed by `agent_figures`.
pub(super) const RELOADS: usize = 21;

pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The agent, with its stdout lines counted in the background. It pins its probe and
/// listens in places of its own; the pins are removed when it is dropped.
pub(super) struct AgentRun {
    pub(super) child: Child,
    pub(super) lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub(super) sysfence: PathBuf,
    pub(super) pin_path: PathBuf,
}

impl AgentRun {
    pub(super) fn start(env: &Env, policies: &Path) -> anyhow::Result<AgentRun> {
        let pin_path = PathBuf::from(format!("/sys/fs/bpf/sysfence-bench-{}", std::process::id()));
        let run = policies.with_extension("run");
        std::fs::create_dir_all(&run)?;
        let mut child = Command::new(&env.sysfence)
            .args(["agent", "--no-cri", "--rescan-every", "1", "--policies"])
            .arg(policies)
            .arg("--pin-path")
            .arg(&pin_path)
            .arg("--api-socket")
            .arg(run.join("api.sock"))
            .arg("--runtime-socket")
            .arg(run.join("runtime.sock"))
            .env("SYSFENCE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(l);
            }
        });
        Ok(AgentRun {
            child,
            lines,
            sysfence: env.sysfence.clone(),
            pin_path,
        })
    }

    /// The JSON lines holding `needle`.
    pub(super) fn json_lines(&self, needle: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub(super) fn count(&self, needle: &str) -> u64 {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count() as u64
    }

    pub(super) fn wait_for(&self, needle: &str, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count(needle) < n {
            if Instant::now() > deadline {
                bail!(
                    "agent logged {} of {n} `{needle}` lines",
                    self.count(needle)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    pub(super) fn stop(mut self) -> Vec<String> {
        // SAFETY: signalling the agent started above.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().expect("lock").clone()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new(&self.sysfence)
            .args(["agent", "--uninstall", "--pin-path"])
            .arg(&self.pin_path)
            .output();
    }
}

pub(super) fn write_policy(
    dir: &Path,
    name: &str,
    selector: &str,
    mode: &str,
    deny: &str,
) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(dir.join(format!("{name}.yaml")))?;
    write!(
        f,
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: \"{selector}\"\n  mode: {mode}\n  include: [runtime-default]\n  deny: [{deny}]\n"
    )?;
    Ok(())
}

pub(super) fn agent_figures(env: &Env) -> anyhow::Result<AgentFigures> {
    let cg_root = cgroup_v2_root().ok_or_else(|| anyhow!("no cgroup v2 hierarchy mounted"))?;
    let base = cg_root.join(format!("sysfence-bench-{}", std::process::id()));
    let policies = env
        .root
        .join(format!("target/bench/policies-{}", std::process::id()));
    std::fs::create_dir_all(&policies)?;
    let name = base
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    write_policy(
        &policies,
        "bench-many",
        &format!("{name}/w*"),
        "enforce",
        "mount",
    )?;
    write_policy(
        &policies,
        "bench-flood",
        &format!("{name}/flood"),
        "audit",
        "getppid",
    )?;
    std::fs::create_dir_all(base.join("flood"))?;
    let cleanup = || {
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
        let _ = std::fs::remove_dir_all(&policies);
    };
    let result = (|| -> anyhow::Result<AgentFigures> {
        let started = Instant::now();
        let agent = AgentRun::start(env, &policies)?;
        agent.wait_for("\"started\"", 1, Duration::from_secs(30))?;
        let start_to_attached_ms = started.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        for i in 0..1000 {
            std::fs::create_dir(base.join(format!("w{i}")))?;
        }
        // `flood` is bound at start; the 1000 come on top.
        agent.wait_for("\"bound\"", 1001, Duration::from_secs(60))?;
        let bind_1000_workloads_ms = t.elapsed().as_secs_f64() * 1e3;
        let pid = agent.child.id();
        let rss_kib_1000_workloads = rss_kib(pid);

        let calls: u64 = 1_000_000;
        let ticks0 = cpu_ticks(pid);
        let t = Instant::now();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" loop-denied {calls}",
                base.join("flood").display()
            ))
            .arg(&env.workload)
            .output()?;
        let flood_calls_per_sec = parse_number(&out.stdout)?;
        // Let the agent drain what is in the ring buffer.
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = t.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid) - ticks0;
        // SAFETY: sysconf is always safe.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let flood_agent_cpu_percent = ticks as f64 / hz / elapsed * 100.0;
        let flood_agent_rss_kib = rss_kib(pid);

        // Policy change to enforcement: the flood policy's deny list flips (`uname` is in
        // runtime-default, so each version is new content:
        // a fresh slot, its workload switched), written beside the directory and renamed
        // in, as kubelet and editors do. End to end is from the rename to the log line
        // (polled every 0.2 ms); the agent's own figure runs from the inotify event to
        // the last map write.
        let staging = policies.with_extension("staging");
        std::fs::create_dir_all(&staging)?;
        let mut end_to_end_us = Vec::new();
        for i in 0..RELOADS {
            let deny = if i % 2 == 0 {
                "getppid, uname"
            } else {
                "getppid"
            };
            write_policy(
                &staging,
                "bench-flood",
                &format!("{name}/flood"),
                "audit",
                deny,
            )?;
            let before = agent.count("\"policies_reloaded\"");
            let t = Instant::now();
            std::fs::rename(
                staging.join("bench-flood.yaml"),
                policies.join("bench-flood.yaml"),
            )?;
            let deadline = t + Duration::from_secs(10);
            while agent.count("\"policies_reloaded\"") <= before {
                if Instant::now() > deadline {
                    bail!("reload {i} never logged");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            end_to_end_us.push(t.elapsed().as_secs_f64() * 1e6);
            // One change at a time, as people and kubelet make them: the agent zeroes
            // the slots it freed once their quarantine ends (250 ms), off the reload path.
            std::thread::sleep(Duration::from_millis(400));
        }
        let reloads = agent.json_lines("\"policies_reloaded\"");
        if reloads.iter().any(|v| v["result"] != "applied") {
            bail!("a policy change was not applied: {reloads:?}");
        }
        let agent_us: Vec<f64> = reloads
            .iter()
            .filter(|v| v["result"] == "applied")
            .filter_map(|v| v["change_to_applied_us"].as_f64())
            .collect();
        // The 1,000-workload policy changed: 1,000 bindings switched.
        write_policy(
            &staging,
            "bench-many",
            &format!("{name}/w*"),
            "enforce",
            "mount, uname",
        )?;
        let before = agent.count("\"policies_reloaded\"");
        std::fs::rename(
            staging.join("bench-many.yaml"),
            policies.join("bench-many.yaml"),
        )?;
        agent.wait_for("\"policies_reloaded\"", before + 1, Duration::from_secs(30))?;
        let many = agent.json_lines("\"policies_reloaded\"");
        let many = many.last().expect("one reload");
        let reload_1000_rebound = many["rebound"].as_u64().unwrap_or(0);
        let reload_1000_us = many["change_to_applied_us"].as_f64().unwrap_or(f64::NAN);
        let _ = std::fs::remove_dir_all(&staging);
        let lines = agent.stop();
        let flood_events_logged =
            lines.iter().filter(|l| l.contains("\"violation\"")).count() as u64;
        let flood_events_dropped = lines
            .iter()
            .find(|l| l.contains("\"stopping\""))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["events_dropped"].as_u64())
            .unwrap_or(0);
        Ok(AgentFigures {
            start_to_attached_ms,
            rss_kib_1000_workloads,
            bind_1000_workloads_ms,
            flood_calls: calls,
            flood_calls_per_sec,
            flood_events_logged,
            flood_events_dropped,
            flood_agent_cpu_percent,
            flood_agent_rss_kib,
            reload_end_to_end_us: median(&end_to_end_us),
            reload_agent_us: median(&agent_us),
            reload_count: agent_us.len(),
            reload_1000_rebound,
            reload_1000_us,
        })
    })();
    cleanup();
    result
}
