//! What a dry-run report is made from: the agent's JSON-lines log (or its API's events
//! answer, which carries the same violation objects), or a recording.

use std::path::Path;

use anyhow::Context as _;

use crate::{api::protocol::EventsAnswer, model::WorkloadRef};
use crate::{clock::parse_rfc3339_ms, event::Violation};

/// A workload bound to a policy, and when (the agent's `"event":"bound"` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSpan {
    pub identity: WorkloadRef,
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
    pub bindings: Vec<BindingSpan>,
    pub violations: Vec<Violation>,
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
                let v: Violation = serde_json::from_value(value.clone())
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
                ev.bindings.push(BindingSpan {
                    identity: WorkloadRef {
                        cgroup_id,
                        cgroup: field("cgroup"),
                        namespace: field("namespace"),
                        pod: field("pod"),
                        container: field("container"),
                        container_id: field("container_id"),
                        image: field("image"),
                        runtime: field("runtime"),
                        ..WorkloadRef::default()
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
            .map(|w| BindingSpan {
                identity: w.workload,
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
    use crate::model::SyscallKey;

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
