//! `sysfence agent`: the node daemon. Binds policies to the cgroups their selectors
//! match, now and as cgroups appear, and logs violations as JSON lines.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use glob::{MatchOptions, Pattern};
use probe_common::{Outcome, index_to_syscall};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracing::{info, warn};

use crate::{
    cgroup,
    policy::{self, CompiledPolicy},
    probe::{self, Probe, ProbeOptions},
    syscall_table,
};

pub struct AgentOptions {
    pub policies: PathBuf,
    /// Full rescan of the cgroup tree, as a safety net under inotify.
    pub rescan_every: Duration,
    /// Violation events per (workload, syscall) per second, limited in the kernel.
    pub events_per_second: u32,
}

/// A policy in a slot, with its selector compiled.
struct Placed {
    policy: CompiledPolicy,
    pattern: Option<Pattern>,
}

/// What is bound now: cgroup id → (slot, path relative to the v2 root).
#[derive(Default)]
struct Bindings {
    bound: HashMap<u64, (u32, String)>,
}

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Bindings {
    /// Bring the kernel's bindings in line with the cgroup tree: bind new matches,
    /// unbind cgroups that are gone. Existing bindings are not touched.
    fn rescan(&mut self, probe: &mut Probe, root: &Path, placed: &[Placed]) -> anyhow::Result<()> {
        let mut want: HashMap<u64, (u32, String)> = HashMap::new();
        for (rel, abs) in cgroup::walk(root) {
            let Some(slot) = placed.iter().position(|p| {
                p.pattern
                    .as_ref()
                    .is_some_and(|pat| pat.matches_with(&rel, MATCH))
            }) else {
                continue;
            };
            let Ok(id) = cgroup::id_of(&abs) else {
                continue;
            };
            want.insert(id, (slot as u32, rel));
        }
        for (id, (slot, rel)) in &want {
            if self.bound.get(id).map(|b| b.0) != Some(*slot) {
                probe.bind(*id, *slot)?;
                info!(event = "bound", policy = %placed[*slot as usize].policy.name, cgroup = %rel, cgroup_id = id);
            }
        }
        for (id, (slot, rel)) in &self.bound {
            if !want.contains_key(id) {
                probe.unbind(*id)?;
                info!(event = "unbound", policy = %placed[*slot as usize].policy.name, cgroup = %rel, cgroup_id = id);
            }
        }
        self.bound = want;
        let levels = self.bound.values().fold(0u32, |acc, (_, rel)| {
            acc | 1u32.checked_shl(cgroup::level(rel)).unwrap_or(0)
        });
        probe.set_ancestor_levels(levels)?;
        Ok(())
    }
}

/// Watch the cgroup tree for new and removed cgroups; each change sends one wake-up.
fn spawn_watcher(root: PathBuf, wake: mpsc::Sender<()>) -> anyhow::Result<()> {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init().context("inotify_init")?;
    let mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR;
    let mut watches = inotify.watches();
    watches
        .add(&root, mask)
        .with_context(|| format!("watching {}", root.display()))?;
    for (_, abs) in cgroup::walk(&root) {
        let _ = watches.add(&abs, mask);
    }
    std::thread::Builder::new()
        .name("cgroup-watch".into())
        .spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                if let Err(e) = inotify.read_events_blocking(&mut buffer) {
                    warn!(error = %e, "cgroup watch stopped; relying on periodic rescans");
                    return;
                }
                // New directories need watches of their own; adding one twice is harmless.
                let mut w = inotify.watches();
                for (_, abs) in cgroup::walk(&root) {
                    let _ = w.add(&abs, mask);
                }
                if wake.blocking_send(()).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let files = policy::expand_paths(std::slice::from_ref(&options.policies))
        .with_context(|| format!("reading policy directory {}", options.policies.display()))?;
    let (policies, warnings) = policy::load_files(&files).into_result()?;
    for w in &warnings {
        warn!(event = "policy_warning", file = %w.file, line = w.line, column = w.column, message = %w.message);
    }
    if policies.is_empty() {
        warn!(event = "no_policies", dir = %options.policies.display(), "no SyscallPolicy found: nothing will be policed");
    }

    let max_slots = (policies.len() as u32).max(1) * 2;
    let mut probe = Probe::load(ProbeOptions {
        max_slots,
        attach: true,
    })?;
    let deny = if policies.iter().any(CompiledPolicy::wants_deny) {
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
    } else {
        Err("not asked for".to_string())
    };
    probe.settle();
    probe.set_event_rate(options.events_per_second)?;
    let mut placed = Vec::new();
    for (slot, policy) in policies.into_iter().enumerate() {
        let enforcement = policy.enforcement(deny.as_ref().map(|_| ()).map_err(String::as_str));
        if let Some(note) = &enforcement.degraded {
            warn!(event = "degraded", policy = %policy.name, "{note}");
        }
        probe.fill_slot(slot as u32, &enforcement.slot)?;
        info!(
            event = "policy_loaded",
            policy = %policy.name,
            file = %policy.file.display(),
            mode = policy.mode.as_str(),
            selector = policy.cgroup_path.as_deref().unwrap_or("-"),
            slot,
            allowed = policy.allowed_names.len()
        );
        let pattern = policy
            .cgroup_path
            .as_deref()
            .and_then(|p| Pattern::new(p).ok());
        if pattern.is_none() {
            warn!(event = "no_selector", policy = %policy.name, "policy has no spec.selector.cgroupPath: it binds nothing");
        }
        placed.push(Placed { policy, pattern });
    }

    let root = cgroup::v2_root()?;
    let mut bindings = Bindings::default();
    bindings.rescan(&mut probe, &root, &placed)?;
    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    spawn_watcher(root.clone(), wake_tx)?;

    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(probe.take_violations()?) }
        .map_err(|e| anyhow::anyhow!("polling the violation ring buffer: {e}"))?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut rescan = tokio::time::interval(options.rescan_every);
    info!(event = "started", cgroup_root = %root.display(), policies = placed.len(), bound = bindings.bound.len());

    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = probe::decode_violation(&item) {
                        log_violation(&event, &placed, &bindings);
                    }
                }
                guard.clear_ready();
            }
            Some(()) = wake_rx.recv() => bindings.rescan(&mut probe, &root, &placed)?,
            _ = rescan.tick() => bindings.rescan(&mut probe, &root, &placed)?,
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    let stats = probe.stats()?;
    info!(
        event = "stopping",
        signal = stop,
        events_dropped = stats.events_dropped,
        kill_failed = stats.kill_failed
    );
    for id in bindings.bound.keys() {
        probe.unbind(*id)?;
    }
    drop(probe);
    info!(event = "stopped");
    Ok(())
}

fn log_violation(event: &probe_common::ViolationEvent, placed: &[Placed], bindings: &Bindings) {
    let (abi, name) = syscall_table::describe_index(event.index);
    let policy = placed
        .get(event.slot as usize)
        .map_or("?", |p| p.policy.name.as_str());
    let cgroup = bindings
        .bound
        .get(&event.cgroup_id)
        .map_or("", |(_, rel)| rel.as_str());
    let outcome = Outcome::from_u32(event.outcome).map_or("unknown", |o| o.name());
    warn!(
        event = "violation",
        policy,
        cgroup,
        cgroup_id = event.cgroup_id,
        pid = event.tgid,
        tid = event.pid,
        comm = %probe::comm_str(&event.comm),
        abi = abi.map_or("unknown", |a| a.name()),
        syscall = %syscall_table::label(abi, &name),
        nr = index_to_syscall(event.index).map(|(_, nr)| nr as i64).unwrap_or(event.id),
        outcome,
        suppressed = event.suppressed,
    );
}
