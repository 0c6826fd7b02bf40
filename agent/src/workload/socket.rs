//! The agent's runtime socket, which `sysfence wrap` ([`super::wrap`]) asks to bind a
//! container before its entrypoint runs (see the module doc of [`crate::workload`]).
//!
//! Protocol: one JSON object per line each way, one request per connection.
//!
//! - `{"op":"start","runtime":"runc","runtime_path":"/usr/sbin/runc","root":"/run/runc","id":"ID","sent_ns":N}`
//!   → `{"ok":true,"policy":"web"|null,"cgroup":"…","cgroup_id":N,"mode":"enforce","start_to_bound_us":N}`
//!   or `{"ok":false,"error":"…"}`. `sent_ns` is `CLOCK_MONOTONIC` when the wrapper
//!   started.
//! - `{"op":"sandbox","runtime":"runsc","id":"ID","bundle":"/abs/bundle"}`, before
//!   `create` of a runsc container → `{"ok":true,"policy":"web"|null,"mode":"enforce",
//!   "seccomp":{…}|null,"trace_config":"/run/sysfence/gvisor-trace.json"|null}`: the
//!   profile to install as `linux.seccomp` (see [`super::sandbox`]) and the trace
//!   session runsc is to start with (`--pod-init-config`).
//! - `{"op":"workloads"}` → `{"ok":true,"kernel":[cgroup ids in WORKLOADS],"bound":[…],"workloads":[…]}`:
//!   the kernel map's keys as read back from the kernel, and the agent's view.
//!
//! Who may ask, and what ([`serve_with`], [`SocketOptions`]): the peer's uid, from
//! `SO_PEERCRED`, must be root or one given (`--runtime-socket-uid`), whatever the
//! socket file's mode; a request is one line of at most [`MAX_LINE`] bytes, sent within
//! [`READ_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once. A `start` names a
//! container by a runc-style id (never a path) and its `root` and `runtime_path`, if
//! any, are absolute without `.` or `..` components. Anything else is answered
//! `{"ok":false,"error":…}` here and never reaches the agent's main loop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
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
    /// The binary the wrapper runs. Informational only: the agent never executes a
    /// path a client sends (it reads state itself, or runs a runtime it knows by name
    /// from its own PATH).
    pub runtime_path: Option<PathBuf>,
    /// The runtime's `--root`, if given.
    pub root: Option<PathBuf>,
    pub id: String,
    /// `CLOCK_MONOTONIC` when the wrapper started.
    pub sent_ns: u64,
}

/// A runtime that runs the application in a sandbox of its own (runsc) is about to
/// create container `id` from `bundle`: which policy applies to the application
/// inside, as an OCI seccomp profile to install (see [`super::sandbox`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxRequest {
    /// The runtime's name (its binary's base name).
    pub runtime: String,
    pub id: String,
    /// The bundle, absolute: the agent reads its `config.json`.
    pub bundle: PathBuf,
    /// The runtime's `--root`, if given (the agent's `runsc kill` needs it).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

impl SandboxRequest {
    /// Refuse what no runtime sends: an id that is a path, a relative or `..` bundle.
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.id)?;
        validate_runtime_name(&self.runtime)?;
        if let Some(p) = &self.root {
            validate_path("root", p)?;
        }
        validate_path("bundle", &self.bundle)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Start(StartRequest),
    Sandbox(SandboxRequest),
    Workloads,
}

/// A request and where its answer goes.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Value>,
}

/// Longest request line accepted (the newline not counted).
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once; more are refused at once with a reason.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest container id accepted (runc, containerd, CRI-O and Docker use 64 hex digits).
pub const MAX_ID_LEN: usize = 256;
/// Longest path accepted in a request (`root`, `runtime_path`).
pub const MAX_PATH_LEN: usize = 4096;

/// Who may talk to the runtime socket, and how much each connection may ask.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    pub path: PathBuf,
    /// Peers admitted besides root (uid 0), by uid (`--runtime-socket-uid`).
    pub allowed_uids: Vec<u32>,
    pub max_line: usize,
    pub max_connections: usize,
    pub read_timeout: Duration,
}

impl SocketOptions {
    /// Root only, with the default limits.
    pub fn new(path: &Path) -> SocketOptions {
        SocketOptions {
            path: path.to_path_buf(),
            allowed_uids: Vec::new(),
            max_line: MAX_LINE,
            max_connections: MAX_CONNECTIONS,
            read_timeout: READ_TIMEOUT,
        }
    }
}

/// Whether a peer of this uid may use the socket: root, or a uid given.
pub fn peer_allowed(uid: u32, allowed: &[u32]) -> bool {
    uid == 0 || allowed.contains(&uid)
}

/// A container id as runc accepts it (`^[\w+-\.]+$`, which is `[A-Za-z0-9_+,.-]`, and
/// not `.` or `..`), at most [`MAX_ID_LEN`] bytes: never a path of its own.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty container id".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "container id of {} bytes (at most {MAX_ID_LEN})",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("container id `{id}` names a directory"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | ',' | '-' | '.')))
    {
        return Err(format!(
            "container id {id:?} has {c:?}: ids are letters, digits and `_+,.-` (runc's rule)"
        ));
    }
    Ok(())
}

/// A runtime's name as the wrapper sends it: its binary's base name.
pub fn validate_runtime_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "runtime name of {} bytes (1 to 64: the binary's base name)",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        return Err(format!(
            "runtime name {name:?} is not a binary's base name (letters, digits, `_+-.`)"
        ));
    }
    Ok(())
}

/// A path in a request: absolute, without `.` or `..` components, bounded.
pub fn validate_path(what: &str, path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > MAX_PATH_LEN {
        return Err(format!(
            "{what} of {} bytes (at most {MAX_PATH_LEN})",
            bytes.len()
        ));
    }
    if bytes.contains(&0) {
        return Err(format!("{what} {} contains a NUL byte", path.display()));
    }
    if !path.is_absolute() {
        return Err(format!("{what} {} is not absolute", path.display()));
    }
    // Byte-wise: `Path::components` hides inner `.` components.
    if bytes.split(|&b| b == b'/').any(|c| c == b"." || c == b"..") {
        return Err(format!(
            "{what} {} has `.` or `..` components",
            path.display()
        ));
    }
    Ok(())
}

impl StartRequest {
    /// Refuse what no runtime sends: an id that is a path, a relative or `..` path.
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.id)?;
        validate_runtime_name(&self.runtime)?;
        if let Some(p) = &self.root {
            validate_path("root", p)?;
        }
        if let Some(p) = &self.runtime_path {
            validate_path("runtime_path", p)?;
        }
        Ok(())
    }
}

/// Why a request line was not read.
#[derive(Debug)]
pub enum LineError {
    /// No newline within the limit.
    TooLong(usize),
    Empty,
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong(max) => write!(f, "request line longer than {max} bytes"),
            LineError::Empty => write!(f, "empty request"),
            LineError::Io(e) => write!(f, "reading the request: {e}"),
        }
    }
}

/// One request line of at most `max` bytes (without its newline; a line ended by the
/// client's end of stream counts too). Never buffers more than `max + 1` bytes.
pub async fn read_line_bounded<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    max: usize,
) -> Result<Vec<u8>, LineError> {
    let mut buf = Vec::new();
    let mut reader = tokio::io::BufReader::new(read).take(max as u64 + 1);
    reader
        .read_until(b'\n', &mut buf)
        .await
        .map_err(LineError::Io)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        return Err(LineError::TooLong(max));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(LineError::Empty);
    }
    Ok(buf)
}

/// Parse and check one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let request: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    match &request {
        Request::Start(s) => s.validate().map_err(|e| format!("refused: {e}"))?,
        Request::Sandbox(s) => s.validate().map_err(|e| format!("refused: {e}"))?,
        Request::Workloads => {}
    }
    Ok(request)
}

fn refusal(error: &str) -> Vec<u8> {
    let mut text = json!({"ok": false, "error": error}).to_string();
    text.push('\n');
    text.into_bytes()
}

/// Listen on `path` (replacing a stale socket; mode 0600), root only, with the default
/// limits; see [`serve_with`].
pub fn serve(path: &Path) -> anyhow::Result<mpsc::Receiver<Pending>> {
    serve_with(SocketOptions::new(path))
}

/// Listen on `options.path` (replacing a stale socket; mode 0600); each request arrives
/// on the returned channel, to be answered by the agent's main loop. A peer that is not
/// root nor an allowed uid (`SO_PEERCRED`), a connection past `max_connections`, a line
/// past `max_line` or later than `read_timeout`, an id or path that no runtime would
/// send: each is answered `{"ok":false,"error":…}` here and never reaches the agent.
pub fn serve_with(options: SocketOptions) -> anyhow::Result<mpsc::Receiver<Pending>> {
    let path = options.path.as_path();
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
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    tokio::spawn(async move {
        let mut refused = RefusalLog::default();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "runtime socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Refusals are written without waiting: the socket's buffer is empty.
            let uid = stream.peer_cred().map(|c| c.uid());
            match uid {
                Ok(uid) if peer_allowed(uid, &options.allowed_uids) => {}
                Ok(uid) => {
                    refused.note(&format!("peer uid {uid}"));
                    let _ = stream.try_write(&refusal(&format!(
                        "peer uid {uid} may not use the runtime socket (root only; the agent's \
                         `--runtime-socket-uid {uid}` admits it)"
                    )));
                    continue;
                }
                Err(e) => {
                    refused.note("peer without credentials");
                    let _ = stream.try_write(&refusal(&format!(
                        "the peer's credentials are unknown ({e})"
                    )));
                    continue;
                }
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused.note("too many connections");
                let _ = stream.try_write(&refusal(&format!(
                    "too many connections ({} at once): try again",
                    options.max_connections
                )));
                continue;
            };
            let tx = tx.clone();
            let (max_line, read_timeout) = (options.max_line, options.read_timeout);
            tokio::spawn(async move {
                let _slot = slot;
                let (read, mut write) = stream.into_split();
                let line = tokio::time::timeout(read_timeout, read_line_bounded(read, max_line))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LineError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no request line within {read_timeout:?}"),
                        )))
                    });
                let answer = match line
                    .map_err(|e| e.to_string())
                    .and_then(|l| parse_request(&l))
                {
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
                    Err(e) => json!({"ok": false, "error": e}),
                };
                let mut text = answer.to_string();
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            });
        }
    });
    Ok(rx)
}

/// Refused connections, logged at most once per 10 s with their count (a flood of
/// them must not flood the log).
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    fn note(&mut self, why: &str) {
        self.since += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            warn!(
                event = "runtime_socket_refused",
                reason = why,
                refused = self.since,
                "runtime socket: connection refused"
            );
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::io::FromRawFd as _;

    use super::*;

    #[test]
    fn ids_are_runc_ids_never_paths() {
        for good in [
            "a",
            "4e0a3f1c9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
            "web-1",
            "a_b.c+d,e",
            "...",
        ] {
            assert_eq!(validate_id(good), Ok(()), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "a b", "a\0b", "é", "a\n",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_id(&"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(validate_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn paths_are_absolute_without_dot_components() {
        for good in [
            "/run/runc",
            "/usr/sbin/runc",
            "/run/containerd/runc/k8s.io",
            "/a/.b",
        ] {
            assert_eq!(validate_path("root", Path::new(good)), Ok(()), "{good}");
        }
        for bad in [
            "run/runc",
            "",
            "/run/../tmp",
            "/run/./runc",
            "/run/runc/.",
            "/run/runc/..",
            "./runc",
        ] {
            assert!(
                validate_path("root", Path::new(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(validate_path("root", Path::new(&long)).is_err());
    }

    #[test]
    fn a_start_with_a_path_for_an_id_is_refused_before_the_agent_sees_it() {
        let line = |id: &str, root: &str, runtime: &str| {
            json!({"op": "start", "runtime": runtime, "runtime_path": "/usr/sbin/runc",
                   "root": root, "id": id, "sent_ns": 1})
            .to_string()
        };
        assert!(parse_request(line("web-1", "/run/runc", "runc").as_bytes()).is_ok());
        for (id, root, runtime) in [
            ("../../etc", "/run/runc", "runc"),
            ("a/b", "/run/runc", "runc"),
            ("..", "/run/runc", "runc"),
            ("web-1", "/run/runc/../../tmp", "runc"),
            ("web-1", "tmp", "runc"),
            ("web-1", "/run/runc", "../runc"),
            ("web-1", "/run/runc", "/usr/sbin/runc"),
        ] {
            let e = parse_request(line(id, root, runtime).as_bytes()).unwrap_err();
            assert!(e.starts_with("refused: "), "{e}");
        }
        assert!(parse_request(br#"{"op":"workloads"}"#).is_ok());
        assert!(parse_request(br#"{"op":"nothing"}"#).is_err());
    }

    #[test]
    fn peers_are_root_or_an_allowed_uid() {
        assert!(peer_allowed(0, &[]));
        assert!(!peer_allowed(65534, &[]));
        assert!(peer_allowed(65534, &[1000, 65534]));
        assert!(!peer_allowed(1000, &[65534]));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let ok = read_line_bounded(&b"{\"op\":\"workloads\"}\nrest"[..], 64)
            .await
            .unwrap();
        assert_eq!(ok, b"{\"op\":\"workloads\"}");
        // Exactly the limit, then the newline: accepted; one more byte: refused.
        let exact = [vec![b'x'; 16], b"\n".to_vec()].concat();
        assert_eq!(read_line_bounded(&exact[..], 16).await.unwrap().len(), 16);
        let over = [vec![b'x'; 17], b"\n".to_vec()].concat();
        assert!(matches!(
            read_line_bounded(&over[..], 16).await,
            Err(LineError::TooLong(16))
        ));
        // A line ended by the end of the stream counts; nothing at all does not.
        assert_eq!(read_line_bounded(&b"abc"[..], 16).await.unwrap(), b"abc");
        assert!(matches!(
            read_line_bounded(&b""[..], 16).await,
            Err(LineError::Empty)
        ));
        assert!(matches!(
            read_line_bounded(&b"  \n"[..], 16).await,
            Err(LineError::Empty)
        ));
    }

    async fn ask(path: &Path, line: &[u8]) -> Value {
        let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
        // A client may be refused (and hung up on) before it has written everything.
        let _ = s.write_all(line).await;
        let mut text = String::new();
        tokio::io::BufReader::new(s)
            .read_line(&mut text)
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[tokio::test]
    async fn the_socket_refuses_long_lines_bad_ids_slow_clients_and_a_crowd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.sock");
        // SAFETY: plain libc call.
        let me = unsafe { libc::geteuid() };
        let mut options = SocketOptions::new(&path);
        options.allowed_uids = vec![me];
        options.max_line = 1024;
        options.max_connections = 2;
        options.read_timeout = Duration::from_millis(300);
        let mut rx = serve_with(options).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The agent's side: answer every request that gets through.
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let _ = seen_tx.send(p.request);
                let _ = p.reply.send(json!({"ok": true}));
            }
        });
        let v = ask(&path, b"{\"op\":\"workloads\"}\n").await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(seen.recv().await, Some(Request::Workloads));

        let long = format!(
            "{{\"op\":\"workloads\",\"pad\":\"{}\"}}\n",
            "x".repeat(4096)
        );
        let v = ask(&path, long.as_bytes()).await;
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("longer than 1024"),
            "{v}"
        );

        let bad = json!({"op": "start", "runtime": "runc", "root": "/run/runc", "id": "../x", "sent_ns": 0});
        let v = ask(&path, format!("{bad}\n").as_bytes()).await;
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().unwrap().contains("container id"), "{v}");

        // Two silent clients hold both slots: a third is refused at once; once the
        // silent ones time out, the socket serves again.
        let idle1 = tokio::net::UnixStream::connect(&path).await.unwrap();
        let idle2 = tokio::net::UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v = ask(&path, b"{\"op\":\"workloads\"}\n").await;
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("too many connections"),
            "{v}"
        );
        let mut text = String::new();
        tokio::io::BufReader::new(idle1)
            .read_line(&mut text)
            .await
            .unwrap();
        assert!(text.contains("no request line within"), "{text}");
        drop(idle2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let v = ask(&path, b"{\"op\":\"workloads\"}\n").await;
        assert_eq!(v["ok"], true, "{v}");
        // Nothing refused ever reached the agent.
        assert_eq!(seen.recv().await, Some(Request::Workloads));
        assert!(seen.try_recv().is_err());
    }

    /// As uid 65534 in a forked child (when root), or as this non-root user: one
    /// request on `path`; the raw answer.
    fn ask_as_nobody(path: &Path) -> String {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
            s.write_all(b"{\"op\":\"workloads\"}\n").unwrap();
            let mut text = String::new();
            BufReader::new(s).read_line(&mut text).unwrap();
            return text;
        }
        use std::os::unix::ffi::OsStrExt as _;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut pipe = [0i32; 2];
        // SAFETY: between fork and _exit the child makes raw syscalls only, on
        // buffers it owns.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let child = libc::fork();
            if child == 0 {
                libc::close(pipe[0]);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    libc::_exit(2);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                // An answer that never comes (the request got through) fails, not hangs.
                let limit = libc::timeval {
                    tv_sec: 5,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const limit).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (i, b) in c_path.as_bytes().iter().enumerate() {
                    addr.sun_path[i] = *b as libc::c_char;
                }
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                    libc::_exit(3);
                }
                let req = b"{\"op\":\"workloads\"}\n";
                libc::write(fd, req.as_ptr().cast(), req.len());
                let mut buf = [0u8; 512];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n > 0 {
                    libc::write(pipe[1], buf.as_ptr().cast(), n as usize);
                }
                libc::_exit(0);
            }
            libc::close(pipe[1]);
            let mut out = Vec::new();
            let mut f = std::fs::File::from_raw_fd(pipe[0]);
            std::io::Read::read_to_end(&mut f, &mut out).unwrap();
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
            assert_eq!(libc::WEXITSTATUS(status), 0, "the child as nobody failed");
            String::from_utf8_lossy(&out).into_owned()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_peer_not_allowed_is_refused_by_uid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("runtime.sock");
        let mut rx = serve_with(SocketOptions::new(&path)).unwrap();
        // Even with a socket anyone may open, the peer's uid decides.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let p = path.clone();
        let text = tokio::task::spawn_blocking(move || ask_as_nobody(&p))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().unwrap().contains("may not use"), "{v}");
        assert!(
            rx.try_recv().is_err(),
            "a refused request reached the agent"
        );
    }
}
