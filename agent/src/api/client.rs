//! The client side of the agent's API, used by `status`, `watch` and `report`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::protocol::{EventsAnswer, Request, WatchFrame};

/// An open connection to the agent's API.
pub struct ApiClient {
    pub path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl ApiClient {
    /// Connect and send one request. Fails when the socket is missing or refuses.
    pub fn request(path: &Path, request: &Request, timeout: Duration) -> anyhow::Result<ApiClient> {
        let mut stream = UnixStream::connect(path).map_err(|e| {
            anyhow!(
                "no agent answers on {} ({e}): is `sysfence agent` running (as root, with \
                 `--api-socket` at that path)?",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream
            .write_all(format!("{}\n", request.to_line()).as_bytes())
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

    /// The next answer, which must be there.
    fn answer(&mut self) -> anyhow::Result<String> {
        self.next_line()?.ok_or_else(|| {
            anyhow!(
                "the agent on {} closed the connection without an answer",
                self.path.display()
            )
        })
    }
}

/// The agent's refusal, if the line is one.
fn refusal(v: &Value) -> Option<String> {
    let error = v.get("error")?.as_str()?;
    Some(format!("the agent refused: {error}"))
}

/// Ask the agent for its status (`sysfence status`).
pub fn status(path: &Path, timeout: Duration) -> anyhow::Result<Value> {
    let line = ApiClient::request(path, &Request::Status, timeout)?.answer()?;
    let v: Value = serde_json::from_str(&line).context("the agent's answer is not JSON")?;
    if let Some(e) = refusal(&v) {
        bail!(e);
    }
    Ok(v)
}

/// Ask the agent for its audit events.
pub fn fetch_events(path: &Path) -> anyhow::Result<EventsAnswer> {
    let line = ApiClient::request(path, &Request::Events, Duration::from_secs(10))?.answer()?;
    parse_events_answer(&line)
}

/// One line of a watch answer.
pub fn parse_watch_line(line: &str) -> anyhow::Result<WatchFrame> {
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("agent API: not JSON: {line:.120}"))?;
    if let Some(e) = refusal(&v) {
        bail!("agent API: {e}");
    }
    serde_json::from_value(v)
        .with_context(|| format!("agent API: unexpected watch line: {line:.120}"))
}

/// The answer to `{"op":"events"}`.
pub fn parse_events_answer(line: &str) -> anyhow::Result<EventsAnswer> {
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("agent API: not JSON: {line:.120}"))?;
    if let Some(e) = refusal(&v) {
        bail!("agent API: {e}");
    }
    serde_json::from_value(v)
        .with_context(|| format!("agent API: unexpected events answer: {line:.120}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SyscallKey;

    #[test]
    fn parses_the_contract_watch_line() {
        let line = r#"{"t_ms":1764374400000,"workloads":[{"cgroup_id":4242,"cgroup":"kubepods/burstable/pod1/cri-containerd-abc","namespace":"shop","pod":"web-1","container":"nginx","container_id":"abc","policy":"web","mode":"audit","counts":{"x86_64:read":123,"i386:mount":1},"violations":{"x86_64:ptrace":2}}]}"#;
        let s = parse_watch_line(line).unwrap();
        assert_eq!(s.t_ms, 1_764_374_400_000);
        let w = &s.workloads[0];
        assert_eq!(w.binding.workload.cgroup_id, 4242);
        assert_eq!(w.binding.workload.pod, "web-1");
        assert_eq!(w.binding.workload.container_id, "abc");
        assert_eq!(w.binding.policy, "web");
        assert_eq!(w.binding.mode, "audit");
        assert_eq!(w.counts[&SyscallKey::new("x86_64", "read")], 123);
        assert_eq!(w.counts[&SyscallKey::new("i386", "mount")], 1);
        assert_eq!(w.violations[&SyscallKey::new("x86_64", "ptrace")], 2);
    }

    #[test]
    fn watch_line_tolerates_missing_optional_fields_and_reports_errors() {
        let s =
            parse_watch_line(r#"{"t_ms":1,"workloads":[{"cgroup_id":1,"counts":{}}]}"#).unwrap();
        assert_eq!(s.workloads[0].binding.policy, "");
        assert!(parse_watch_line(r#"{"ok":false,"error":"unknown op"}"#).is_err());
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
        assert_eq!(v.workload.pod, "web-1");
        assert_eq!(v.time_ms(), Some(1_764_374_405_123));
    }
}
