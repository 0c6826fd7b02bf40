//! The client side of the agent's local API, used by `watch` and `report`.
//!
//! Contract: a unix socket (default [`DEFAULT_API_SOCKET`]), newline-delimited JSON.
//! The client writes one request line; the server answers with JSON lines.
//!
//! - `{"op":"watch","namespace":..,"pod":..,"container":..,"cgroup":..}` (absent or
//!   `null` filters match everything) → one line per second:
//!   `{"t_ms":<unix ms>,"workloads":[{"cgroup_id":u64,"cgroup":"path","namespace":"",
//!   "pod":"","container":"","container_id":"","policy":"name","mode":"audit",
//!   "counts":{"x86_64:read":123,"i386:mount":1},"violations":{"x86_64:ptrace":2}}]}`,
//!   counts and violations CUMULATIVE since the watch began.
//! - `{"op":"events"}` → one line `{"since_ms":..,"workloads":[{identity..,"policy",
//!   "mode","bound_ms"}],"violations":[<violation objects as in the agent's log>]}`.
//!
//! The parsing here is the contract's reference: the server's tests can feed their
//! output to [`parse_watch_line`] and [`parse_events_answer`].

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use serde_json::json;

use super::snapshot::{Counts, Filters, Snapshot, WorkloadCounts, WorkloadRef};
use crate::event::Violation;

pub const DEFAULT_API_SOCKET: &str = "/run/sysfence/api.sock";

/// The request line of a watch (without the newline).
pub fn watch_request(filters: &Filters) -> String {
    json!({
        "op": "watch",
        "namespace": filters.namespace,
        "pod": filters.pod,
        "container": filters.container,
        "cgroup": filters.cgroup,
    })
    .to_string()
}

/// The request line of the events query.
pub fn events_request() -> String {
    json!({"op": "events"}).to_string()
}

#[derive(Debug, Deserialize)]
struct WatchFrame {
    t_ms: u64,
    #[serde(default)]
    workloads: Vec<FrameWorkload>,
    /// A server may answer a request it cannot serve with `{"error": ...}`.
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FrameWorkload {
    #[serde(flatten)]
    identity: WorkloadRef,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    counts: Counts,
    #[serde(default)]
    violations: Counts,
}

/// One line of a watch answer, as a snapshot.
pub fn parse_watch_line(line: &str) -> anyhow::Result<Snapshot> {
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("agent API: not JSON: {line:.120}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(anyhow!("agent API: {e}"));
    }
    let frame: WatchFrame = serde_json::from_value(v)
        .with_context(|| format!("agent API: unexpected watch line: {line:.120}"))?;
    if let Some(e) = frame.error {
        return Err(anyhow!("agent API: {e}"));
    }
    Ok(Snapshot {
        t_ms: frame.t_ms,
        workloads: frame
            .workloads
            .into_iter()
            .map(|w| WorkloadCounts {
                identity: w.identity,
                policy: w.policy.filter(|p| !p.is_empty()),
                mode: w.mode.filter(|m| !m.is_empty()),
                counts: w.counts,
                violations: w.violations,
                gone: false,
            })
            .collect(),
    })
}

/// A workload as the events answer lists it: bound to `policy` in `mode` since `bound_ms`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BoundWorkload {
    #[serde(flatten)]
    pub identity: WorkloadRef,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub bound_ms: Option<u64>,
}

/// The answer to `{"op":"events"}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct EventsAnswer {
    pub since_ms: u64,
    #[serde(default)]
    pub workloads: Vec<BoundWorkload>,
    #[serde(default)]
    pub violations: Vec<Violation>,
}

pub fn parse_events_answer(line: &str) -> anyhow::Result<EventsAnswer> {
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("agent API: not JSON: {line:.120}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(anyhow!("agent API: {e}"));
    }
    serde_json::from_value(v)
        .with_context(|| format!("agent API: unexpected events answer: {line:.120}"))
}

/// An open connection to the agent's API.
pub struct ApiClient {
    pub path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl ApiClient {
    /// Connect and send one request line. Fails when the socket is missing or refuses.
    pub fn request(path: &Path, request: &str, timeout: Duration) -> anyhow::Result<ApiClient> {
        let mut stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to the agent API at {}", path.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .with_context(|| format!("writing to {}", path.display()))?;
        Ok(ApiClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// The next answer line; `None` when the server closed the connection.
    pub fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("reading from the agent API at {}", self.path.display()))?;
        Ok((n > 0).then(|| line.trim_end().to_string()))
    }
}

/// Ask the agent for its audit events.
pub fn fetch_events(path: &Path) -> anyhow::Result<EventsAnswer> {
    let mut client = ApiClient::request(path, &events_request(), Duration::from_secs(10))?;
    let line = client.next_line()?.ok_or_else(|| {
        anyhow!(
            "the agent API at {} closed without answering",
            path.display()
        )
    })?;
    parse_events_answer(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::snapshot::SyscallKey;

    #[test]
    fn watch_request_names_the_filters() {
        let f = Filters {
            namespace: Some("shop".into()),
            ..Filters::default()
        };
        let v: serde_json::Value = serde_json::from_str(&watch_request(&f)).unwrap();
        assert_eq!(v["op"], "watch");
        assert_eq!(v["namespace"], "shop");
        assert!(v["pod"].is_null());
        assert_eq!(events_request(), r#"{"op":"events"}"#);
    }

    #[test]
    fn parses_the_contract_watch_line() {
        let line = r#"{"t_ms":1764374400000,"workloads":[{"cgroup_id":4242,"cgroup":"kubepods/burstable/pod1/cri-containerd-abc","namespace":"shop","pod":"web-1","container":"nginx","container_id":"abc","policy":"web","mode":"audit","counts":{"x86_64:read":123,"i386:mount":1},"violations":{"x86_64:ptrace":2}}]}"#;
        let s = parse_watch_line(line).unwrap();
        assert_eq!(s.t_ms, 1_764_374_400_000);
        let w = &s.workloads[0];
        assert_eq!(w.identity.cgroup_id, 4242);
        assert_eq!(w.identity.pod, "web-1");
        assert_eq!(w.identity.container_id, "abc");
        assert_eq!(w.policy.as_deref(), Some("web"));
        assert_eq!(w.mode.as_deref(), Some("audit"));
        assert_eq!(w.counts[&SyscallKey::new("x86_64", "read")], 123);
        assert_eq!(w.counts[&SyscallKey::new("i386", "mount")], 1);
        assert_eq!(w.violations[&SyscallKey::new("x86_64", "ptrace")], 2);
    }

    #[test]
    fn watch_line_tolerates_missing_optional_fields_and_reports_errors() {
        let s =
            parse_watch_line(r#"{"t_ms":1,"workloads":[{"cgroup_id":1,"counts":{}}]}"#).unwrap();
        assert_eq!(s.workloads[0].policy, None);
        assert!(parse_watch_line(r#"{"error":"unknown op"}"#).is_err());
        assert!(parse_watch_line("not json").is_err());
        assert!(
            parse_watch_line(r#"{"t_ms":1,"workloads":[{"cgroup_id":1,"counts":{"read":1}}]}"#)
                .is_err(),
            "a key without its ABI is refused"
        );
    }

    #[test]
    fn parses_the_contract_events_answer() {
        let line = r#"{"since_ms":1764374400000,"workloads":[{"cgroup_id":4242,"cgroup":"kubepods/pod1/c1","namespace":"shop","pod":"web-1","container":"nginx","container_id":"abc","policy":"web","mode":"audit","bound_ms":1764374401000}],"violations":[{"timestamp":"2025-11-29T00:00:05.123456Z","level":"WARN","event":"violation","policy":"web","monitor_only":false,"cgroup":"kubepods/pod1/c1","cgroup_id":4242,"pid":17,"tid":18,"comm":"nginx","exe":"/usr/sbin/nginx","abi":"x86_64","syscall":"ptrace","nr":101,"outcome":"audited","runtime":"runc","sandboxed":false,"container_id":"abc","container":"nginx","pod":"web-1","namespace":"shop","image":"nginx:1.25","hook":"","via_io_uring":false,"suppressed":3}]}"#;
        let a = parse_events_answer(line).unwrap();
        assert_eq!(a.since_ms, 1_764_374_400_000);
        assert_eq!(a.workloads[0].policy, "web");
        assert_eq!(a.workloads[0].bound_ms, Some(1_764_374_401_000));
        let v = &a.violations[0];
        assert_eq!(v.key(), SyscallKey::new("x86_64", "ptrace"));
        assert_eq!(
            v.calls(),
            4,
            "one event stands for itself and the suppressed ones"
        );
        assert_eq!(v.exe, "/usr/sbin/nginx");
        assert_eq!(v.time_ms(), Some(1_764_374_405_123));
    }
}
