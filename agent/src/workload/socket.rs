//! The agent's runtime socket, and `sysfence wrap`, the OCI runtime wrapper that uses it
//! to bind a container before its entrypoint runs (see the module doc of
//! [`crate::workload`]).
//!
//! Protocol: one JSON object per line each way, one request per connection.
//!
//! - `{"op":"start","runtime":"runc","runtime_path":"/usr/sbin/runc","root":"/run/runc","id":"ID","sent_ns":N}`
//!   → `{"ok":true,"policy":"web"|null,"cgroup":"…","cgroup_id":N,"mode":"enforce","start_to_bound_us":N}`
//!   or `{"ok":false,"error":"…"}`. `sent_ns` is `CLOCK_MONOTONIC` when the wrapper
//!   started.
//! - `{"op":"workloads"}` → `{"ok":true,"kernel":[cgroup ids in WORKLOADS],"bound":[…],"workloads":[…]}`:
//!   the kernel map's keys as read back from the kernel, and the agent's view.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sysfence/runtime.sock";

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between the wrapper and the agent.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain libc call with a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A runtime is about to start a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartRequest {
    /// The runtime's name (its binary's base name: runc, crun, runsc, ...).
    pub runtime: String,
    pub runtime_path: Option<PathBuf>,
    /// The runtime's `--root`, if given.
    pub root: Option<PathBuf>,
    pub id: String,
    /// `CLOCK_MONOTONIC` when the wrapper started.
    pub sent_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Start(StartRequest),
    Workloads,
}

/// A request and where its answer goes.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Value>,
}

/// Listen on `path` (replacing a stale socket; mode 0600); each request arrives on the
/// returned channel, to be answered by the agent's main loop.
pub fn serve(path: &Path) -> anyhow::Result<mpsc::Receiver<Pending>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "runtime socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(64 * 1024);
                let answer = match reader.read_line(&mut line).await {
                    Ok(_) => match serde_json::from_str::<Request>(&line) {
                        Ok(request) => {
                            let (reply, answer) = oneshot::channel();
                            if tx.send(Pending { request, reply }).await.is_err() {
                                json!({"ok": false, "error": "the agent is stopping"})
                            } else {
                                answer.await.unwrap_or_else(
                                    |_| json!({"ok": false, "error": "the agent dropped the request"}),
                                )
                            }
                        }
                        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                    },
                    Err(e) => json!({"ok": false, "error": format!("reading the request: {e}")}),
                };
                let mut text = answer.to_string();
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            });
        }
    });
    Ok(rx)
}

/// Send one request to the agent and wait for its answer (blocking; for the wrapper
/// and tests).
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> anyhow::Result<Value> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to the sysfence agent at {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("waiting for the agent's answer (limit {timeout:?})"))?;
    if line.is_empty() {
        bail!("the agent closed the connection without an answer");
    }
    Ok(serde_json::from_str(&line)?)
}

pub struct WrapOptions {
    pub runtime: PathBuf,
    pub socket: PathBuf,
    pub fail_open: bool,
    pub timeout: Duration,
    pub args: Vec<OsString>,
}

/// Global flags of runc, crun, runsc and youki that take a value in the next argument.
const VALUE_FLAGS: &[&str] = &[
    "root",
    "log",
    "log-format",
    "criu",
    "rootless",
    "cgroup-manager",
    "debug-log",
    "debug-log-format",
    "panic-log",
    "platform",
    "network",
    "file-access",
    "overlay2",
    "log-fd",
    "debug-log-fd",
    "panic-log-fd",
    "systemd-cgroup-path",
];

/// The runtime command line, as far as the wrapper cares: the subcommand, its last
/// positional argument (the container id for `start`), and `--root`.
#[derive(Debug, PartialEq, Eq)]
pub struct RuntimeArgs {
    pub subcommand: Option<String>,
    pub id: Option<String>,
    pub root: Option<PathBuf>,
}

pub fn parse_runtime_args(args: &[OsString]) -> RuntimeArgs {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut root = None;
    let mut subcommand = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let takes_value = VALUE_FLAGS.contains(&name);
            let value = match inline {
                Some(v) => Some(v),
                None if takes_value => {
                    i += 1;
                    args.get(i).cloned()
                }
                None => None,
            };
            if name == "root"
                && let Some(v) = value
            {
                root = Some(PathBuf::from(v));
            }
            i += 1;
            continue;
        }
        subcommand = Some(a.clone());
        break;
    }
    let id = subcommand.as_ref().and_then(|_| {
        args[i + 1..]
            .iter()
            .rev()
            .find(|a| !a.starts_with('-'))
            .cloned()
    });
    RuntimeArgs {
        subcommand,
        id,
        root,
    }
}

/// `sysfence wrap`: pass the command to the real runtime; for `start`, have the agent
/// bind the container first. Returns only on error (otherwise it execs the runtime).
pub fn wrap(options: WrapOptions) -> anyhow::Result<std::convert::Infallible> {
    let sent_ns = monotonic_ns();
    let parsed = parse_runtime_args(&options.args);
    if parsed.subcommand.as_deref() == Some("start") {
        let id = parsed
            .id
            .clone()
            .ok_or_else(|| anyhow!("`start` without a container id"))?;
        let runtime_name = options
            .runtime
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let request = Request::Start(StartRequest {
            runtime: runtime_name,
            runtime_path: Some(options.runtime.clone()),
            root: parsed.root.clone(),
            id: id.clone(),
            sent_ns,
        });
        let answer = call(&options.socket, &request, options.timeout).and_then(|a| {
            if a["ok"] == true {
                Ok(a)
            } else {
                Err(anyhow!(
                    "{}",
                    a["error"].as_str().unwrap_or("the agent refused")
                ))
            }
        });
        if let Err(e) = answer {
            if options.fail_open {
                eprintln!("sysfence: warning: container {id} starts unpoliced: {e:#}");
            } else {
                bail!(
                    "refusing to start container {id} before sysfence has bound it: {e:#} \
                     (`sysfence wrap --fail-open` starts it unpoliced instead)"
                );
            }
        }
    }
    let err = std::process::Command::new(&options.runtime)
        .args(&options.args)
        .exec();
    Err(anyhow!("executing {}: {err}", options.runtime.display()))
}
