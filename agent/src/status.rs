//! `sysfence status`: what the running agent says about itself, readable.

use std::{fmt::Write as _, path::Path, time::Duration};

use serde_json::Value;

use crate::api;

/// Ask the agent and print its status; `Ok(false)` when the agent reports trouble
/// (a rejected reload, dropped events, failed kills).
pub fn print(socket: &Path, as_json: bool) -> anyhow::Result<bool> {
    let v = api::client::status(socket, Duration::from_secs(10))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v));
    }
    Ok(healthy(&v))
}

fn healthy(v: &Value) -> bool {
    let stats = &v["probe"]["stats"];
    v["last_reload"]["result"] != "rejected"
        && v["last_reload"]["result"] != "failed"
        && stats["events_dropped"].as_u64().unwrap_or(0) == 0
        && stats["kill_failed"].as_u64().unwrap_or(0) == 0
}

/// The status as text.
pub fn render(v: &Value) -> String {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = String::new();
    let probe = &v["probe"];
    let _ = writeln!(
        out,
        "agent      {} (pid {}), version {}",
        if healthy(v) { "healthy" } else { "DEGRADED" },
        v["pid"],
        s(&v["version"])
    );
    let _ = writeln!(
        out,
        "probe      {}, layout v{}, {}; deny: {}",
        match probe["pinned"].as_str() {
            Some(p) => format!("pinned at {p}"),
            None => "not pinned (ends with the agent)".to_string(),
        },
        probe["layout"],
        if probe["adopted"] == true {
            "adopted from the previous agent"
        } else {
            "loaded by this agent"
        },
        s(&probe["deny"])
    );
    let _ = writeln!(
        out,
        "guard      {}",
        match probe["self_protection"].as_str() {
            Some(s) if s.ends_with("attached") =>
                format!("{s}: policed tasks may not signal the agent or write bpffs"),
            Some(s) => format!("off: {s}"),
            None => "unknown".to_string(),
        }
    );
    let stats = &probe["stats"];
    let _ = writeln!(
        out,
        "events     {} dropped, {} suppressed by the rate limits ({} by workload budgets), {} kills failed",
        stats["events_dropped"],
        stats["events_suppressed"],
        stats["events_held"].as_u64().unwrap_or(0),
        stats["kill_failed"]
    );
    // A line per probe count that is not zero, with the ones that failed, if any.
    for (label, key, what, failed_key, failed) in [
        (
            "follow",
            "strays",
            "processes left their workload's cgroup and are still judged by its policy",
            "stray_failed",
            "could not be followed (the mover was killed)",
        ),
        (
            "exec",
            "setups",
            "runtime setup processes joined policed containers, judged from their exec on",
            "setup_failed",
            "could not be recorded and were judged at once",
        ),
        (
            "hold",
            "holds",
            "execs in new cgroups waited until the agent had looked",
            "hold_failed",
            "could not be held and ran at once",
        ),
    ] {
        let n = stats[key].as_u64().unwrap_or(0);
        if n > 0 {
            let _ = writeln!(
                out,
                "{label:<10} {n} {what}{}",
                match stats[failed_key].as_u64().unwrap_or(0) {
                    0 => String::new(),
                    f => format!("; {f} {failed}"),
                }
            );
        }
    }
    let reload = &v["last_reload"];
    let _ = write!(out, "reload     last: {}", s(&reload["result"]));
    if let Some(errors) = reload["errors"].as_array() {
        let _ = write!(out, " (policies in force kept)");
        for e in errors {
            let _ = write!(
                out,
                "\n             {}",
                s(e).replace('\n', "\n             ")
            );
        }
    }
    if let Some(e) = reload["error"].as_str() {
        let _ = write!(out, ": {e}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "slots      {} of {} in use",
        probe["slots_used"], probe["slots"]
    );
    let policies = v["policies"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\nPOLICY               MODE      BOUND  ALLOWED  FILE");
    for p in &policies {
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>5}  {:>7}  {}",
            s(&p["name"]),
            s(&p["mode"]),
            s(&p["bound"]),
            s(&p["allowed"]),
            s(&p["file"])
        );
    }
    let workloads = v["workloads"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\nWORKLOAD                                           POLICY               MODE      RUNTIME"
    );
    if workloads.is_empty() {
        let _ = writeln!(out, "(none bound)");
    }
    for w in &workloads {
        let name = workload_name(w);
        let _ = writeln!(
            out,
            "{:<50} {:<20} {:<9} {}",
            name,
            s(&w["policy"]),
            s(&w["mode"]),
            s(&w["runtime"])
        );
    }
    let budgets = v["event_budgets"].as_array().cloned().unwrap_or_default();
    if !budgets.is_empty() {
        let _ = writeln!(
            out,
            "\nEVENTS HELD OR LOST, PER WORKLOAD (held: past its budget, counted; dropped: lost)\n\
             WORKLOAD                                                 HELD    DROPPED"
        );
        for b in &budgets {
            let _ = writeln!(
                out,
                "{:<50} {:>10} {:>10}",
                workload_name(&b["workload"]),
                s(&b["held"]),
                s(&b["dropped"])
            );
        }
    }
    out
}

/// `namespace/pod/container` when known, else the cgroup path (else its id).
fn workload_name(w: &Value) -> String {
    match (
        w["namespace"].as_str(),
        w["pod"].as_str(),
        w["container"].as_str(),
    ) {
        (Some(ns), Some(pod), Some(c)) if !pod.is_empty() => format!("{ns}/{pod}/{c}"),
        _ => match w["cgroup"].as_str() {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => format!("cgroup id {}", w["cgroup_id"]),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rejected_reload_is_degraded_and_says_why() {
        let v = json!({
            "pid": 7, "version": "0.1.0",
            "probe": {"pinned": "/sys/fs/bpf/sysfence/v1", "adopted": true, "layout": 1,
                      "deny": "not asked for", "slots_used": 4, "slots": 20,
                      "stats": {"events_dropped": 0, "events_suppressed": 3, "kill_failed": 0}},
            "last_reload": {"result": "rejected", "errors": ["web.yaml:4:3: error: unknown syscall `reed`"]},
            "policies": [{"name": "web", "mode": "enforce", "bound": 2, "allowed": 120, "file": "web.yaml"}],
            "workloads": [{"cgroup": "a/b", "namespace": "", "pod": "", "container": "", "policy": "web", "mode": "enforce", "runtime": "runc"}],
            "event_budgets": [{"workload": {"cgroup_id": 9, "cgroup": "a/flood", "namespace": "", "pod": "", "container": ""}, "held": 4242, "dropped": 0}],
        });
        assert!(!healthy(&v));
        let text = render(&v);
        assert!(text.starts_with("agent      DEGRADED (pid 7)"), "{text}");
        assert!(text.contains("adopted from the previous agent"), "{text}");
        assert!(
            text.contains("web.yaml:4:3: error: unknown syscall `reed`"),
            "{text}"
        );
        assert!(
            text.contains("web                  enforce       2      120  web.yaml"),
            "{text}"
        );
        assert!(text.contains("a/b"), "{text}");
        assert!(
            text.contains(
                "a/flood                                                  4242          0"
            ),
            "{text}"
        );
    }
}
