//! `sysfence agent`: the node daemon. Binds policies to the workloads their selectors
//! match, now and as workloads appear (discovery and binding live in
//! [`crate::workload`]), answers the runtime wrapper on its socket, and logs violations
//! as JSON lines.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracing::{info, warn};

use crate::{
    cgroup,
    policy::{self, CompiledPolicy},
    probe::{self, Probe, ProbeOptions},
    workload::{self, Manager, ManagerOptions},
};

pub struct AgentOptions {
    pub policies: PathBuf,
    /// Full rescan of the cgroup tree, as a safety net under inotify.
    pub rescan_every: Duration,
    /// The runtime socket `sysfence wrap` asks to bind containers at `start`.
    pub runtime_socket: PathBuf,
    /// CRI sockets; `None`: the usual containerd and CRI-O sockets that exist.
    pub cri_sockets: Option<Vec<PathBuf>>,
    /// Runtime state roots besides the default ones.
    pub runtime_roots: Vec<PathBuf>,
    /// Violation events per (workload, syscall) per second, limited in the kernel.
    pub events_per_second: u32,
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

    let mut probe = Probe::load(ProbeOptions {
        max_slots: workload::manager::slots_needed(policies.len()),
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
    let mut slots = Vec::new();
    for policy in policies {
        let enforcement = policy.enforcement(deny.as_ref().map(|_| ()).map_err(String::as_str));
        if let Some(note) = &enforcement.degraded {
            warn!(event = "degraded", policy = %policy.name, "{note}");
        }
        slots.push((policy, enforcement.slot));
    }

    let root = cgroup::v2_root()?;
    let mut workloads = Manager::new(
        ManagerOptions {
            cgroup_root: root.clone(),
            cri_sockets: options.cri_sockets,
            runtime_roots: options.runtime_roots,
        },
        slots,
        &mut probe,
    )?;
    workloads.rescan(&mut probe).await?;
    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    workloads.spawn_watcher(wake_tx)?;
    // Without its socket the agent still binds what it discovers; `sysfence wrap`
    // then refuses to start containers (unless --fail-open), which makes it visible.
    let (_idle, idle_requests) = mpsc::channel(1);
    let mut requests = match workload::socket::serve(&options.runtime_socket) {
        Ok(rx) => rx,
        Err(e) => {
            warn!(event = "runtime_socket_unavailable", socket = %options.runtime_socket.display(), error = %format!("{e:#}"), "containers are bound on discovery only, after they started");
            idle_requests
        }
    };

    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(probe.take_violations()?) }
        .map_err(|e| anyhow::anyhow!("polling the violation ring buffer: {e}"))?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut rescan = tokio::time::interval(options.rescan_every);
    // The ring buffer's wakeup can be lost (the kernel wakes the reader only when it
    // has caught up, and the reader's position store can pass the producer's check):
    // a periodic drain bounds how long an event can wait for the next one.
    let mut drain = tokio::time::interval(Duration::from_millis(100));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    info!(event = "started", cgroup_root = %root.display(), runtime_socket = %options.runtime_socket.display(), bound = workloads.bound_count());

    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = probe::decode_violation(&item) {
                        workloads.log_violation(&event);
                    }
                }
                guard.clear_ready();
            }
            _ = drain.tick() => {
                while let Some(item) = ring.get_mut().next() {
                    if let Some(event) = probe::decode_violation(&item) {
                        workloads.log_violation(&event);
                    }
                }
            }
            Some(()) = wake_rx.recv() => workloads.rescan(&mut probe).await?,
            _ = rescan.tick() => workloads.rescan(&mut probe).await?,
            Some(pending) = requests.recv() => {
                let answer = workloads.handle(&mut probe, pending.request).await;
                let _ = pending.reply.send(answer);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    let stats = probe.stats()?;
    info!(
        event = "stopping",
        signal = stop,
        events_dropped = stats.events_dropped,
        events_suppressed = stats.events_suppressed,
        kill_failed = stats.kill_failed
    );
    workloads.unbind_all(&mut probe)?;
    let _ = std::fs::remove_file(&options.runtime_socket);
    drop(probe);
    info!(event = "stopped");
    Ok(())
}
