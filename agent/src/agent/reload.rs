//! Policy changes: the policy directory watched, reloaded without a window, and the
//! enforcement each policy gets on this kernel.

use std::{
    path::Path,
    time::{Instant, SystemTime},
};

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Agent;
use crate::{
    clock::unix_ms,
    policy::{self, CompiledPolicy},
    probe::Probe,
};

/// Whether deny (BPF LSM) is attached: `Ok` or why not.
pub type DenyState = Result<(), String>;

pub fn compile_slots(
    policies: Vec<CompiledPolicy>,
    deny: &DenyState,
) -> Vec<(CompiledPolicy, probe_common::PolicySlot)> {
    policies
        .into_iter()
        .map(|policy| {
            let enforcement = policy.enforcement(deny.as_ref().map(|_| ()).map_err(String::as_str));
            if let Some(note) = &enforcement.degraded {
                warn!(event = "degraded", policy = %policy.name, "{note}");
            }
            (policy, enforcement.slot)
        })
        .collect()
}

pub fn try_enable_deny(probe: &mut Probe) -> DenyState {
    match probe.enable_deny() {
        Ok(support) => {
            info!(
                event = "deny_path",
                hooks = support.hooks.len(),
                unavailable = support.unavailable.len()
            );
            Ok(())
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

impl Agent {
    /// Reload the policy directory; on any error the policies in force stay.
    pub(super) async fn reload(&mut self) {
        let t0 = Instant::now();
        if self.change_seen.is_none() {
            // SIGHUP: count from now.
            self.change_seen = Some(t0);
        }
        let dir = self.options.policies.clone();
        let loaded = policy::load_paths(std::slice::from_ref(&dir), self.options.sets.as_deref());
        loaded.log_sources();
        let (policies, warnings) = match loaded.into_result() {
            Ok(ok) => ok,
            Err(rejected) => {
                for d in rejected
                    .0
                    .iter()
                    .filter(|d| d.severity == policy::Severity::Error)
                {
                    warn!(event = "policy_rejected", file = %d.file, line = d.line, column = d.column, message = %d.message, help = d.help.as_deref().unwrap_or(""));
                }
                self.telemetry.count_reload("rejected");
                self.telemetry.last_reload = json!({
                    "result": "rejected",
                    "t_ms": unix_ms(SystemTime::now()),
                    "errors": rejected.0.iter().filter(|d| d.severity == policy::Severity::Error).map(|d| d.to_string()).collect::<Vec<_>>(),
                });
                warn!(event = "reload_rejected", dir = %dir.display(), "policies in force are kept");
                self.change_seen = None;
                return;
            }
        };
        for w in &warnings {
            warn!(event = "policy_warning", file = %w.file, line = w.line, column = w.column, message = %w.message);
        }
        if policies.iter().any(CompiledPolicy::wants_deny) && self.deny.is_err() {
            self.deny = try_enable_deny(&mut self.probe);
            self.probe.settle();
        }
        let slots = compile_slots(policies, &self.deny);
        let compile_us = t0.elapsed().as_micros() as u64;
        let t_apply = Instant::now();
        let change_seen = self.change_seen.take();
        match self.workloads.reload(&mut self.probe, slots).await {
            Ok(summary) => {
                if let Err(e) = self
                    .workloads
                    .set_default_policy(self.options.default_policy.clone())
                {
                    warn!(event = "default_policy_missing", error = %format!("{e:#}"), "containers of unknown identity that no policy could select stay unbound");
                    let _ = self.workloads.set_default_policy(None);
                }
                let took_us = t0.elapsed().as_micros() as u64;
                let apply_us = t_apply.elapsed().as_micros() as u64;
                // From the first inotify event of the change to the last map write.
                let change_to_applied_us = change_seen.map(|t| t.elapsed().as_micros() as u64);
                let result = if summary.is_noop() {
                    "unchanged"
                } else {
                    "applied"
                };
                self.telemetry.count_reload(result);
                self.telemetry.last_reload_success = SystemTime::now();
                self.telemetry.last_reload = json!({
                    "result": result,
                    "t_ms": unix_ms(SystemTime::now()),
                    "took_us": took_us,
                    "summary": summary,
                });
                info!(
                    event = "policies_reloaded",
                    result,
                    added = %summary.added.join(","),
                    changed = %summary.changed.join(","),
                    removed = %summary.removed.join(","),
                    unchanged = summary.unchanged.len(),
                    rebound = summary.rebound,
                    took_us,
                    compile_us,
                    apply_us,
                    change_to_applied_us,
                );
            }
            Err(e) => {
                self.telemetry.count_reload("failed");
                self.telemetry.last_reload = json!({"result": "failed", "t_ms": unix_ms(SystemTime::now()), "error": format!("{e:#}")});
                warn!(event = "reload_failed", error = %format!("{e:#}"), "policies in force are kept");
            }
        }
    }
}

/// Watch the policy directory (and its subdirectories, including kubelet's `..data`
/// swap): each change sends a reload request.
pub fn spawn_policy_watcher(
    dir: &Path,
    sets: Option<&Path>,
    reload: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init().context("inotify_init")?;
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB;
    // The directories the loader's bounded walk reads (kubelet's ..data is not one: the
    // swap shows in `dir`), and --sets.
    let dirs = policy::sources::watched_dirs(dir, sets)
        .with_context(|| format!("reading policy directory {}", dir.display()))?;
    for d in &dirs {
        inotify
            .watches()
            .add(d, mask)
            .with_context(|| format!("watching {}", d.display()))?;
    }
    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(events) = inotify.read_events_blocking(&mut buf) {
                if events.count() > 0
                    && let Err(mpsc::error::TrySendError::Closed(())) = reload.try_send(())
                {
                    break;
                }
            }
        })
        .context("starting the policy watcher")?;
    Ok(())
}
