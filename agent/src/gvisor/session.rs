//! The trace session that streams a sandbox's syscalls to a [`super::Sink`].
//!
//! runsc takes it in two forms: the file of `runsc --pod-init-config FILE` (the session
//! exists from the sandbox's boot: nothing runs untraced), as
//! `{"trace_session": {...}}` ([`Session::pod_init_config`]), or the bare session of
//! `runsc trace create --config FILE SANDBOX` ([`Session::trace_session`]).
//!
//! The session asks for:
//! - `syscall/sysno/N/enter` and `syscall/sysno/N/exit` for every N in
//!   [`raw_syscall_numbers`]: enter, to see every attempt with its arguments; exit, to
//!   see its result and errno;
//! - `container/start` (a container's init, with its runsc container id) and
//!   `sentry/task_exit` (with the exit status: a seccomp kill shows as signal 31);
//! - on each, the context fields [`CONTEXT_FIELDS`].
//!
//! Beware: Debian's runsc 20221219 does not refuse a session that names a point it does
//! not know. It logs `unable to configure event session: point ... not found`, connects
//! to the sink, does the handshake, runs the container, and sends nothing at all. Check
//! a session against `runsc trace metadata` ([`missing_points`]) before relying on it.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write as _},
    ops::RangeInclusive,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use syscalls::x86_64::Sysno;

/// The only session name runsc 20221219 accepts.
pub const SESSION_NAME: &str = "Default";

/// The context fields asked for on every point: who (container, thread, thread group)
/// and when. `group_id` is gVisor's name for the thread group id.
pub const CONTEXT_FIELDS: [&str; 4] = ["container_id", "thread_id", "group_id", "time"];

/// The non-syscall points of the session.
pub const LIFECYCLE_POINTS: [&str; 2] = ["container/start", "sentry/task_exit"];

/// The last x86_64 syscall number for which gVisor registers raw points: its amd64
/// metadata loops `for i := 0; i <= 441; i++ { addRawSyscallPoint(i) }`, and
/// `runsc trace metadata` of Debian's 20221219 lists exactly `syscall/sysno/0..=441`.
/// Numbers past it (442 `mount_setattr` and later: `landlock_*`, `memfd_secret`,
/// `futex_waitv`, `cachestat`, `mseal`, ...) have no point in that runsc, and naming one
/// silently disables the whole session: they are left out, so their calls go unseen.
pub const LAST_RAW_SYSNO: u32 = 441;

/// The retries sysfence's sessions give the Sentry on a full socket (about 10 s of
/// backoff) before it drops a point: a sandbox that floods the sink slows itself.
pub const FLOOD_RETRIES: u32 = 1000;

/// The syscall numbers the session traces: from the first to the last of the
/// `syscalls` crate's x86_64 table (the kernel's `syscall_64.tbl`), cut at
/// [`LAST_RAW_SYSNO`]. The table's holes (335..=423 on x86_64) stay in: gVisor has
/// points for them, and a call to an unassigned number is worth seeing too.
pub fn raw_syscall_numbers() -> RangeInclusive<u32> {
    let first = u32::try_from(Sysno::first().id()).unwrap_or(0);
    let last = u32::try_from(Sysno::last().id()).unwrap_or(0);
    first..=last.min(LAST_RAW_SYSNO)
}

/// Every point name of the session, lifecycle points first.
pub fn point_names() -> Vec<String> {
    let syscalls = raw_syscall_numbers()
        .flat_map(|nr| ["enter", "exit"].map(|phase| format!("syscall/sysno/{nr}/{phase}")));
    LIFECYCLE_POINTS
        .iter()
        .map(|p| p.to_string())
        .chain(syscalls)
        .collect()
}

/// A trace session for a sink listening at `endpoint`.
#[derive(Clone, Debug)]
pub struct Session {
    endpoint: PathBuf,
    ignore_setup_error: bool,
    retries: u32,
}

impl Session {
    /// A session for the sink at `endpoint`, failing closed: runsc refuses to start the
    /// sandbox when it cannot connect to the sink; the Sentry drops a point at once when
    /// the socket is full (no retries).
    pub fn new(endpoint: &Path) -> Session {
        Session {
            endpoint: endpoint.to_path_buf(),
            ignore_setup_error: false,
            retries: 0,
        }
    }

    /// Start the sandbox even when the sink cannot be reached (it then runs untraced).
    pub fn ignore_setup_error(mut self, ignore: bool) -> Session {
        self.ignore_setup_error = ignore;
        self
    }

    /// How many times the Sentry retries a write to a full socket (sleeping with
    /// exponential backoff from 25 µs to 10 ms) before it drops the point: the
    /// workload's thread waits meanwhile, so a slow sink slows the workload instead of
    /// losing its syscalls.
    pub fn retries(mut self, retries: u32) -> Session {
        self.retries = retries;
        self
    }

    /// The sink's endpoint.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// The session object (`runsc trace create --config`).
    pub fn trace_session(&self) -> Value {
        let points: Vec<Value> = point_names()
            .into_iter()
            .map(|name| json!({ "name": name, "context_fields": CONTEXT_FIELDS }))
            .collect();
        json!({
            "name": SESSION_NAME,
            "points": points,
            "sinks": [self.sink()],
        })
    }

    /// The remote sink's entry.
    fn sink(&self) -> Value {
        let mut config = json!({ "endpoint": self.endpoint.to_string_lossy() });
        if self.retries > 0 {
            config["retries"] = json!(self.retries);
        }
        json!({
            "name": "remote",
            "config": config,
            "ignore_setup_error": self.ignore_setup_error,
        })
    }

    /// The `--pod-init-config` document: `{"trace_session": ...}`.
    pub fn pod_init_config(&self) -> Value {
        json!({ "trace_session": self.trace_session() })
    }

    /// Write [`Session::pod_init_config`] to `path`, mode 0600, replacing it whole (a
    /// temporary file beside it, renamed over it): runsc never reads half a file.
    pub fn write_pod_init_config(&self, path: &Path) -> io::Result<()> {
        write_private(path, &serde_json::to_vec(&self.pod_init_config())?)
    }

    /// Write [`Self::trace_session`] to `path` (0600, atomically): the config of `runsc
    /// trace create --config`.
    pub fn write_trace_session(&self, path: &Path) -> io::Result<()> {
        write_private(path, &serde_json::to_vec(&self.trace_session())?)
    }
}

/// Write `bytes` to `path` through a 0600 temporary file in the same directory.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older file of that name keeps its mode through `create`: set it.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The point names `runsc trace metadata` lists (its lines `Name: POINT, ...`).
pub fn supported_points(metadata: &str) -> BTreeSet<String> {
    metadata
        .lines()
        .filter_map(|line| line.strip_prefix("Name: "))
        .filter_map(|rest| rest.split(',').next())
        .filter(|name| name.contains('/'))
        .map(str::to_string)
        .collect()
}

/// Run `RUNSC trace metadata` and return [`supported_points`].
pub fn query_supported_points(runsc: &Path) -> io::Result<BTreeSet<String>> {
    let out = Command::new(runsc).args(["trace", "metadata"]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} trace metadata: {}: {}",
            runsc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(supported_points(&String::from_utf8_lossy(&out.stdout)))
}

/// The points of `session` (a [`Session::trace_session`] or
/// [`Session::pod_init_config`] value) that are not in `supported`: empty when runsc
/// will accept it.
pub fn missing_points(session: &Value, supported: &BTreeSet<String>) -> Vec<String> {
    let session = session.get("trace_session").unwrap_or(session);
    session["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|name| !supported.contains(*name))
        .map(str::to_string)
        .collect()
}
