//! The one way a test starts `sysfence agent`: [`Agent::builder`] (or [`Agent::start`]).
//! Each agent pins its probe in a directory of its own and has its own API and runtime
//! sockets, so tests never meet each other's (or a production agent's) state; its
//! output is collected for [`Agent::wait_line`] and [`Agent::wait_for_log`]; dropping
//! it kills the process and removes its pins (`sysfence agent --uninstall`).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{metrics, process::Collected, sysfence, wait_for};

/// How long an agent may take to start (load, attach, bind what exists) or to exit
/// when it refuses to start: 30 s, and 120 s in the VMs of `cargo xtask vm-test`, where
/// one host thread runs both vCPUs of the guest (TCG) and a test's busy loops share
/// them with the verifier.
fn start_timeout() -> Duration {
    Duration::from_secs(if crate::oci::in_sysfence_vm() {
        120
    } else {
        30
    })
}

static AGENTS: AtomicU32 = AtomicU32::new(0);

/// Paths of the `n`th agent of this test process: pins, API socket, runtime socket.
fn own_paths() -> (PathBuf, PathBuf, PathBuf) {
    let n = AGENTS.fetch_add(1, Ordering::SeqCst);
    let tag = format!("{}-{n}", std::process::id());
    (
        PathBuf::from(format!("/sys/fs/bpf/sysfence-test-{tag}")),
        std::env::temp_dir().join(format!("sysfence-test-api-{tag}.sock")),
        std::env::temp_dir().join(format!("sysfence-test-runtime-{tag}.sock")),
    )
}

/// `sysfence --uninstall --pin-path PINS`; says on stderr when it fails.
fn uninstall(pin_path: &Path) {
    let out = sysfence()
        .args(["agent", "--uninstall", "--pin-path"])
        .arg(pin_path)
        .output();
    if let Ok(o) = &out
        && !o.status.success()
    {
        eprintln!(
            "removing the test agent's pins in {} failed: {}",
            pin_path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The sockets of an agent: runtime (and whether the kit chose it) and API.
struct Sockets {
    runtime: PathBuf,
    api: PathBuf,
    own_runtime: bool,
}

/// Options of a test agent: `sysfence agent --rescan-every 0.5 --policies DIR
/// --runtime-socket S --api-socket A --pin-path P` plus the flags asked for. Sockets
/// and pins default to paths of the agent's own.
pub struct AgentBuilder {
    policies: PathBuf,
    runtime_socket: Option<PathBuf>,
    api: Option<PathBuf>,
    pin_path: Option<PathBuf>,
    flags: Vec<OsString>,
}

impl AgentBuilder {
    /// The runtime socket (`--runtime-socket`), which `sysfence wrap` talks to.
    pub fn runtime_socket(mut self, path: &Path) -> Self {
        self.runtime_socket = Some(path.to_path_buf());
        self
    }

    /// The API socket (`--api-socket`) of `status`, `watch`, `report`.
    pub fn api_socket(mut self, path: &Path) -> Self {
        self.api = Some(path.to_path_buf());
        self
    }

    /// Where the probe is pinned (`--pin-path`); removed when the agent is dropped.
    pub fn pin_path(mut self, path: &Path) -> Self {
        self.pin_path = Some(path.to_path_buf());
        self
    }

    /// No CRI client (`--no-cri`).
    pub fn no_cri(self) -> Self {
        self.flags(&["--no-cri"])
    }

    /// Serve metrics on a port of the kernel's choosing (`--metrics 127.0.0.1:0`); see
    /// [`Agent::metrics_addr`].
    pub fn metrics(self) -> Self {
        self.flags(&["--metrics", "127.0.0.1:0"])
    }

    /// The cgroup root of a runtime's state (`--runtime-root`).
    pub fn runtime_root(self, root: &Path) -> Self {
        self.flag("--runtime-root").flag(root)
    }

    /// One more argument.
    pub fn flag(mut self, arg: impl Into<OsString>) -> Self {
        self.flags.push(arg.into());
        self
    }

    /// More arguments.
    pub fn flags(mut self, args: &[&str]) -> Self {
        self.flags.extend(args.iter().map(Into::into));
        self
    }

    fn into_parts(self) -> (Vec<OsString>, Sockets, PathBuf) {
        let (own_pins, own_api, own_runtime) = own_paths();
        let own_socket = self.runtime_socket.is_none();
        let socket = self.runtime_socket.unwrap_or(own_runtime);
        let api = self.api.unwrap_or(own_api);
        let pin_path = self.pin_path.unwrap_or(own_pins);
        let mut args: Vec<OsString> = ["agent", "--rescan-every", "0.5", "--policies"]
            .iter()
            .map(Into::into)
            .collect();
        args.push(self.policies.into());
        for (flag, value) in [
            ("--runtime-socket", &socket),
            ("--api-socket", &api),
            ("--pin-path", &pin_path),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args.extend(self.flags);
        let sockets = Sockets {
            runtime: socket,
            api,
            own_runtime: own_socket,
        };
        (args, sockets, pin_path)
    }

    /// Start the agent and wait until it logs `started`.
    pub fn start(self) -> Agent {
        let (args, sockets, pin_path) = self.into_parts();
        Agent::spawn(args, sockets, pin_path)
    }

    /// Run an agent that is expected to refuse to start: wait (30 s at most) for it to
    /// exit, remove whatever it pinned, and return its exit status and output.
    pub fn run_to_exit(self) -> Output {
        let (args, sockets, pin_path) = self.into_parts();
        let mut cmd = sysfence();
        cmd.args(&args);
        let out = Collected::start(cmd).wait_exit(start_timeout());
        let _ = std::fs::remove_file(&sockets.api);
        if sockets.own_runtime {
            let _ = std::fs::remove_file(&sockets.runtime);
        }
        uninstall(&pin_path);
        out
    }
}

/// The agent, with its runtime socket; its stdout and stderr lines are collected.
/// Each test's agent pins its probe in a directory of its own and has its own API
/// socket; the pins are removed when the `Agent` is dropped (a later agent may adopt
/// them meanwhile: see [`Agent::restart_after_sigkill_with`]).
pub struct Agent {
    process: Collected,
    pub socket: PathBuf,
    pub api: PathBuf,
    pub pin_path: PathBuf,
    args: Vec<OsString>,
    /// The runtime socket is one of the kit's paths (removed on drop).
    own_socket: bool,
}

impl Agent {
    /// An agent on the policies in `policies`; see [`AgentBuilder`].
    pub fn builder(policies: &Path) -> AgentBuilder {
        AgentBuilder {
            policies: policies.to_path_buf(),
            runtime_socket: None,
            api: None,
            pin_path: None,
            flags: Vec::new(),
        }
    }

    /// Start an agent on `policies` with runtime socket `socket` and `extra` flags, and
    /// wait until it logs `started`.
    pub fn start(policies: &Path, socket: &Path, extra: &[&str]) -> Agent {
        Agent::builder(policies)
            .runtime_socket(socket)
            .flags(extra)
            .start()
    }

    /// SIGKILL this agent (its pins stay: enforcement goes on), run `while_down`, and
    /// start another with the same arguments, which adopts the pins. Returns the new
    /// agent and the old one's log.
    pub fn restart_after_sigkill_with(mut self, while_down: impl FnOnce()) -> (Agent, String) {
        self.process.signal_and_wait(libc::SIGKILL);
        while_down();
        let old_log = self.log();
        let args = std::mem::take(&mut self.args);
        let sockets = Sockets {
            runtime: self.socket.clone(),
            api: self.api.clone(),
            own_runtime: self.own_socket,
        };
        let pin_path = self.pin_path.clone();
        // The new agent owns the pins and the sockets now.
        self.pin_path = PathBuf::new();
        self.own_socket = false;
        drop(self);
        (Self::spawn(args, sockets, pin_path), old_log)
    }

    /// SIGKILL this agent and start another on the same pins, at once.
    pub fn kill9_and_restart(self) -> (Agent, String) {
        self.restart_after_sigkill_with(|| {})
    }

    fn spawn(args: Vec<OsString>, sockets: Sockets, pin_path: PathBuf) -> Agent {
        let mut cmd = sysfence();
        cmd.args(&args);
        let agent = Agent {
            process: Collected::start(cmd),
            socket: sockets.runtime,
            api: sockets.api,
            pin_path,
            args,
            own_socket: sockets.own_runtime,
        };
        agent.wait_line_for("started", start_timeout(), |v| v["event"] == "started");
        agent
    }

    /// PID of the agent process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// One request on the agent's API socket, its first answer line.
    pub fn api(&self, request: &Value) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.api).expect("agent API socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("API answer {line:?}: {e}"))
    }

    /// `{"op":"status"}` through the API.
    pub fn status(&self) -> Value {
        self.api(&json!({"op": "status"}))
    }

    /// Every JSON line so far.
    pub fn events(&self) -> Vec<Value> {
        self.process.json_lines()
    }

    /// The first JSON line so far that `pred` accepts (not waiting).
    pub fn find_line(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.process.find_json(pred)
    }

    /// How many JSON lines so far `pred` accepts.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.process.count_json(pred)
    }

    /// Every line so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The lines of stdout alone (the JSON event log).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout_lines()
    }

    /// Wait up to 30 s for a JSON line that `pred` accepts; panics with the last lines
    /// of the log if none comes.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_line_for(what, Duration::from_secs(30), pred)
    }

    /// [`Agent::wait_line`] with another timeout.
    pub fn wait_line_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.process
            .wait_json_for(&format!("{what} in the agent's log"), timeout, pred)
    }

    /// Wait up to 30 s for a log line (JSON or not) containing `needle`; the log so far.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.process.wait_for_line("a line of the agent", needle)
    }

    /// Wait up to `timeout` until `pred` accepts at least `n` JSON lines.
    pub fn wait_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        wait_for(timeout, || (self.count(&pred) >= n).then_some(())).unwrap_or_else(|| {
            panic!(
                "fewer than {n} {what} in {timeout:?}:\n{}",
                self.process.tail()
            )
        });
    }

    /// Wait (10 s) until the agent has logged `n` bindings.
    pub fn wait_bound(&self, n: usize) {
        self.wait_count("workloads bound", n, Duration::from_secs(10), |v| {
            v["event"] == "bound"
        });
    }

    /// Wait (30 s) for the binding of the cgroup `cgroup` (relative to the cgroup root).
    pub fn wait_bound_to(&self, cgroup: &str) -> Value {
        self.wait_line(&format!("the binding of {cgroup}"), |v| {
            v["event"] == "bound" && v["cgroup"] == cgroup
        })
    }

    /// The address the agent serves metrics on (started with [`AgentBuilder::metrics`]).
    pub fn metrics_addr(&self) -> String {
        let v = self.wait_line("the metrics address", |v| v["event"] == "metrics");
        v["address"].as_str().expect("address").to_string()
    }

    /// `GET /metrics`, parsed strictly: samples by `name{labels}`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        metrics::scrape(&self.metrics_addr())
    }

    /// Ask the agent for `WORKLOADS` as read back from the kernel, and its own view.
    pub fn workloads(&self) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("agent socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"{\"op\":\"workloads\"}\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let v: Value = serde_json::from_str(&text).expect("JSON answer");
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    /// SIGTERM, wait, and return the exit code; the log stays readable, and the pins
    /// are removed when the `Agent` is dropped.
    pub fn terminate(&mut self) -> i32 {
        self.process
            .signal_and_wait(libc::SIGTERM)
            .code()
            .unwrap_or(-1)
    }

    /// SIGTERM and wait, leaving the pins for the caller to remove (`--uninstall`).
    pub fn stop_keeping_pins(mut self) -> (i32, String) {
        self.pin_path = PathBuf::new();
        self.stop()
    }

    /// SIGTERM, wait, and return the exit code and the whole log.
    pub fn stop(mut self) -> (i32, String) {
        let code = self.terminate();
        (code, self.log())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_file(&self.api);
        if self.own_socket {
            let _ = std::fs::remove_file(&self.socket);
        }
        if !self.pin_path.as_os_str().is_empty() {
            uninstall(&self.pin_path);
        }
    }
}
