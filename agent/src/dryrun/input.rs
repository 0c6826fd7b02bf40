//! What a dry-run report is made from: the agent's JSON-lines log (or its API's events
//! answer, which carries the same violation objects), or a recording.

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::watch::{
    api::EventsAnswer,
    snapshot::{Identity, SyscallKey, parse_rfc3339_ms},
};

/// One violation as the agent logs it (`"event":"violation"`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ViolationLine {
    /// tracing's RFC 3339 time.
    pub timestamp: String,
    pub policy: String,
    pub monitor_only: bool,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub exe: String,
    pub abi: String,
    /// As the log writes it: `ptrace`, or `mount (i386)` for other ABIs.
    pub syscall: String,
    pub nr: i64,
    pub outcome: String,
    pub runtime: String,
    pub container_id: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub image: String,
    pub hook: String,
    pub via_io_uring: bool,
    /// Events of the same workload and syscall the kernel's rate limit held back since
    /// the previous one: this line stands for `1 + suppressed` calls.
    pub suppressed: u64,
}

impl ViolationLine {
    pub fn key(&self) -> SyscallKey {
        let suffix = format!(" ({})", self.abi);
        let name = self
            .syscall
            .strip_suffix(&suffix)
            .unwrap_or(&self.syscall)
            .to_string();
        SyscallKey {
            abi: if self.abi.is_empty() {
                "unknown".into()
            } else {
                self.abi.clone()
            },
            name,
        }
    }

    /// The calls this line stands for.
    pub fn calls(&self) -> u64 {
        1 + self.suppressed
    }

    pub fn time_ms(&self) -> Option<u64> {
        parse_rfc3339_ms(&self.timestamp)
    }

    pub fn identity(&self) -> Identity {
        Identity {
            cgroup_id: self.cgroup_id,
            cgroup: self.cgroup.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
            container_id: self.container_id.clone(),
            image: self.image.clone(),
            runtime: self.runtime.clone(),
            ..Identity::default()
        }
    }
}

/// A workload bound to a policy, and when (the agent's `"event":"bound"` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub identity: Identity,
    pub policy: String,
    /// The mode applied (`monitor` for a sandboxed workload applied monitor-only).
    pub mode: String,
    pub since_ms: Option<u64>,
    /// Unbound at (the workload went away, or the agent stopped).
    pub until_ms: Option<u64>,
}

/// Audit evidence: bindings, violations, and the time the evidence covers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditEvidence {
    /// Where it came from, for the report's header.
    pub source: String,
    pub bindings: Vec<Binding>,
    pub violations: Vec<ViolationLine>,
    /// First and last time the evidence covers (log lines, or the API's window).
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Lines that were not JSON objects (a text log mixed in): counted, not fatal.
    pub skipped_lines: usize,
}

/// Parse the agent's JSON-lines log. Errors name the file and line.
pub fn parse_agent_log(path: &Path, text: &str) -> anyhow::Result<AuditEvidence> {
    let mut ev = AuditEvidence {
        source: format!("agent log {}", path.display()),
        ..AuditEvidence::default()
    };
    let mut any_json = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            ev.skipped_lines += 1;
            continue;
        };
        if !value.is_object() {
            ev.skipped_lines += 1;
            continue;
        }
        any_json = true;
        let at = || format!("{}:{}", path.display(), i + 1);
        // Other lines are read leniently: only violations must have the full shape.
        let field = |k: &str| {
            value
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let cgroup_id = value.get("cgroup_id").and_then(|v| v.as_u64()).unwrap_or(0);
        let t = parse_rfc3339_ms(&field("timestamp"));
        if let Some(t) = t {
            ev.from_ms = Some(ev.from_ms.map_or(t, |f| f.min(t)));
            ev.to_ms = Some(ev.to_ms.map_or(t, |f| f.max(t)));
        }
        match field("event").as_str() {
            "violation" => {
                let v: ViolationLine = serde_json::from_value(value.clone())
                    .with_context(|| format!("{}: malformed violation line", at()))?;
                ev.violations.push(v);
            }
            "bound" => {
                // A rebind (policy reload) closes the previous binding of the cgroup.
                for b in ev.bindings.iter_mut().rev() {
                    if b.identity.cgroup_id == cgroup_id && b.until_ms.is_none() {
                        b.until_ms = t;
                        break;
                    }
                }
                ev.bindings.push(Binding {
                    identity: Identity {
                        cgroup_id,
                        cgroup: field("cgroup"),
                        namespace: field("namespace"),
                        pod: field("pod"),
                        container: field("container"),
                        container_id: field("container_id"),
                        image: field("image"),
                        runtime: field("runtime"),
                        ..Identity::default()
                    },
                    policy: field("policy"),
                    mode: field("mode"),
                    since_ms: t,
                    until_ms: None,
                });
            }
            "unbound" => {
                for b in ev.bindings.iter_mut().rev() {
                    if b.identity.cgroup_id == cgroup_id && b.until_ms.is_none() {
                        b.until_ms = t;
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    if !any_json {
        anyhow::bail!(
            "{}: no JSON log line found: run the agent with `--log-format json` (the default) \
             and give its stdout",
            path.display()
        );
    }
    Ok(ev)
}

/// Evidence from the agent API's events answer; the window ends now.
pub fn from_events_answer(api: &Path, answer: EventsAnswer, now_ms: u64) -> AuditEvidence {
    AuditEvidence {
        source: format!("agent API {}", api.display()),
        bindings: answer
            .workloads
            .into_iter()
            .map(|w| Binding {
                identity: w.identity,
                policy: w.policy,
                mode: w.mode,
                since_ms: w.bound_ms.or(Some(answer.since_ms)),
                until_ms: None,
            })
            .collect(),
        violations: answer.violations,
        from_ms: Some(answer.since_ms),
        to_ms: Some(now_ms),
        skipped_lines: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"timestamp":"2026-11-29T00:00:00.000000Z","level":"INFO","event":"policy_loaded","policy":"web","mode":"audit"}
{"timestamp":"2026-11-29T00:00:01.000000Z","level":"INFO","event":"bound","policy":"web","mode":"audit","cgroup":"sysfence-test/a","cgroup_id":11,"via":"discovery","runtime":"","sandboxed":false,"container_id":"","container":"","pod":"","namespace":"","image":"","note":""}
{"timestamp":"2026-11-29T00:00:02.500000Z","level":"WARN","event":"violation","policy":"web","monitor_only":false,"cgroup":"sysfence-test/a","cgroup_id":11,"pid":100,"tid":100,"comm":"sf-syscalls","abi":"i386","syscall":"mount (i386)","nr":21,"outcome":"audited","runtime":"","sandboxed":false,"container_id":"","container":"","pod":"","namespace":"","image":"","hook":"","via_io_uring":false,"suppressed":0}
not json at all
{"timestamp":"2026-11-29T00:00:03.000000Z","level":"INFO","event":"unbound","policy":"web","cgroup":"sysfence-test/a","cgroup_id":11}
"#;

    #[test]
    fn log_gives_bindings_violations_and_window() {
        let ev = parse_agent_log(Path::new("agent.log"), LOG).unwrap();
        assert_eq!(ev.bindings.len(), 1);
        let b = &ev.bindings[0];
        assert_eq!(b.mode, "audit");
        assert_eq!(b.until_ms.unwrap() - b.since_ms.unwrap(), 2000);
        assert_eq!(ev.violations.len(), 1);
        assert_eq!(ev.violations[0].key(), SyscallKey::new("i386", "mount"));
        assert_eq!(ev.skipped_lines, 1);
        assert_eq!(ev.to_ms.unwrap() - ev.from_ms.unwrap(), 3000);
    }

    #[test]
    fn a_text_log_is_refused_with_its_name() {
        let e = parse_agent_log(Path::new("x.log"), "INFO started\n").unwrap_err();
        assert!(format!("{e:#}").contains("x.log"), "{e:#}");
    }

    #[test]
    fn a_malformed_violation_names_file_and_line() {
        let text = "{\"event\":\"violation\",\"pid\":\"not a number\"}\n";
        let e = parse_agent_log(Path::new("a.log"), text).unwrap_err();
        assert!(format!("{e:#}").contains("a.log:1"), "{e:#}");
    }
}
