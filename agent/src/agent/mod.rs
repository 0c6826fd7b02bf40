//! `sysfence agent`: the node daemon. Binds policies to the workloads their selectors
//! match, now and as workloads appear (discovery and binding live in
//! [`crate::workload`]), answers the runtime wrapper on its socket, reloads changed
//! policy files without a window, serves its API and metrics, and logs violations as
//! JSON lines.
//!
//! The probe is pinned (see [`crate::probe::pins`]): when the agent stops, even by
//! SIGKILL, enforcement goes on, and the next agent adopts it.

mod answers;
mod holds;
mod kills;
mod reload;
mod sandboxes;
mod telemetry;
mod watches;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use probe_common::ViolationEvent;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracing::{info, warn};

use crate::{
    api::{self, server::Access},
    cgroup,
    event::Violation,
    metrics,
    policy::{self, CompiledPolicy},
    probe::{self, Probe, ProbeOptions, pins},
    workload::{self, Binder, IndexOptions},
};
use reload::{DenyState, compile_slots, spawn_policy_watcher, try_enable_deny};
use telemetry::Telemetry;
use watches::Watch;

pub struct AgentOptions {
    pub policies: PathBuf,
    /// `--sets DIR`: where includes are looked for besides the policy directory.
    pub sets: Option<PathBuf>,
    /// Full rescan of the cgroup tree, as a safety net under inotify.
    pub rescan_every: Duration,
    /// The runtime socket `sysfence wrap` asks to bind containers at `start`.
    pub runtime_socket: PathBuf,
    /// Uids besides root that may use the runtime socket.
    pub runtime_socket_uids: Vec<u32>,
    /// CRI sockets; `None`: the usual containerd and CRI-O sockets that exist.
    pub cri_sockets: Option<Vec<PathBuf>>,
    /// Runtime state roots besides the default ones.
    pub runtime_roots: Vec<PathBuf>,
    /// Violation events per (workload, syscall) per second, limited in the kernel.
    pub events_per_second: u32,
    /// Violation events per workload per second (its budget), limited in the kernel.
    pub workload_events_per_second: u32,
    /// Pin root (`None`: an unpinned probe that goes with the agent).
    pub pin_root: Option<PathBuf>,
    /// The local API socket.
    pub api_socket: PathBuf,
    /// Uids besides root that may use the API socket.
    pub api_socket_uids: Vec<u32>,
    /// The policy for containers whose identity cannot be established and that no
    /// policy could select.
    pub default_policy: Option<String>,
    /// Serve Prometheus metrics and /healthz here.
    pub metrics: Option<SocketAddr>,
    /// Hold the first exec in a new cgroup below the hold roots until it is looked at
    /// (`--no-start-hold` turns it off).
    pub start_hold: bool,
}

/// Quiet time after a change in the policy directory before reloading (editors and
/// kubelet write in several steps).
const RELOAD_SETTLE: Duration = Duration::from_millis(5);

/// `sysfence agent --uninstall`: remove everything pinned under `root`.
pub fn uninstall(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    pins::remove_tree(root)
}

struct Agent {
    options: AgentOptions,
    probe: Probe,
    workloads: Binder,
    deny: DenyState,
    /// The self-protection hooks attached, or why not.
    guards: Result<usize, String>,
    telemetry: Telemetry,
    /// When the first event of a policy directory change not yet applied arrived.
    change_seen: Option<Instant>,
    /// Rescans that failed (logged, retried).
    rescan_failures: u64,
    /// Processes the probe said it held, not yet released: tgid → when (boot ns).
    holds_seen: HashMap<u32, u64>,
    /// runsc containers: the pipes of their Sentry logs.
    sandboxes: sandboxes::Sandboxes,
}

pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let loaded = policy::load_paths(
        std::slice::from_ref(&options.policies),
        options.sets.as_deref(),
    );
    loaded.log_sources();
    let (policies, warnings) = loaded.into_result()?;
    for w in &warnings {
        warn!(event = "policy_warning", file = %w.file, line = w.line, column = w.column, message = %w.message);
    }
    if policies.is_empty() {
        warn!(event = "no_policies", dir = %options.policies.display(), "no SyscallPolicy found: nothing will be policed");
    }

    let probe_options = ProbeOptions {
        max_slots: workload::table::slots_needed(policies.len()),
        attach: true,
        ..ProbeOptions::default()
    };
    let mut probe = match &options.pin_root {
        Some(root) => Probe::load_pinned(probe_options, root)?,
        None => Probe::load(probe_options)?,
    };
    if probe.adopted() {
        info!(
            event = "adopted",
            pin_dir = %probe.pin_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            bindings = probe.bindings().count(),
            programs = %serde_json::to_string(probe.attachments()).unwrap_or_default(),
            "took over the pinned probe: enforcement never stopped"
        );
    }
    let deny = if policies.iter().any(CompiledPolicy::wants_deny) {
        try_enable_deny(&mut probe)
    } else {
        Err("not asked for".to_string())
    };
    let guards = match probe.enable_guards(std::process::id()) {
        Ok(n) => {
            info!(
                event = "self_protection",
                hooks = n,
                "policed tasks may not signal the agent or write bpffs"
            );
            Ok(n)
        }
        Err(e) => {
            warn!(event = "self_protection_unavailable", reason = %format!("{e:#}"), "the baselines' syscall denials (bpf, ptrace, perf_event_open, process_vm_*) remain");
            Err(format!("{e:#}"))
        }
    };
    probe.settle();
    probe.set_event_rate(
        options.events_per_second,
        options.workload_events_per_second,
    )?;
    let slots = compile_slots(policies, &deny);

    let root = cgroup::v2_root()?;
    let mut workloads = Binder::new(
        IndexOptions {
            cgroup_root: root.clone(),
            cri_sockets: options.cri_sockets.clone(),
            runtime_roots: options.runtime_roots.clone(),
        },
        slots,
        &mut probe,
    )?;
    workloads.set_default_policy(options.default_policy.clone())?;
    // Processes held while no agent ran have exec'd: the rescan binds their containers.
    workloads.note_execd(probe.held().into_iter().map(|(tgid, _)| tgid));
    workloads.rescan(&mut probe).await?;
    if probe.adopted() {
        let stale = workloads.finish_adoption(&mut probe)?;
        info!(
            event = "adoption_finished",
            bound = workloads.bound_count(),
            stale_bindings_removed = stale
        );
    }
    let retired = probe.retire_stale_layouts()?;
    if !retired.is_empty() {
        info!(
            event = "migrated",
            removed_pins = retired.len(),
            "the probe of an earlier layout was replaced once this one policed every workload"
        );
    }
    for link in probe.retire_unwanted_links()? {
        info!(event = "link_removed", link = %link.display());
    }

    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    workloads.spawn_watcher(wake_tx)?;
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    spawn_policy_watcher(&options.policies, options.sets.as_deref(), reload_tx)?;
    // Without its socket the agent still binds what it discovers; `sysfence wrap`
    // then refuses to start containers (unless --fail-open), which makes it visible.
    let (_idle, idle_requests) = mpsc::channel(1);
    let mut requests = match workload::socket::serve_with(workload::socket::SocketOptions {
        allowed_uids: options.runtime_socket_uids.clone(),
        ..workload::socket::SocketOptions::new(&options.runtime_socket)
    }) {
        Ok(rx) => rx,
        Err(e) => {
            warn!(event = "runtime_socket_unavailable", socket = %options.runtime_socket.display(), error = %format!("{e:#}"), "containers are bound on discovery only, after they started");
            idle_requests
        }
    };
    let mut api_requests = api::server::serve(
        &options.api_socket,
        Access {
            uids: options.api_socket_uids.clone(),
        },
    )?;
    let (_idle_asks, idle_asks) = mpsc::channel(1);
    let mut asks = match options.metrics {
        Some(addr) => {
            let (tx, rx) = mpsc::channel(4);
            let local = metrics::serve(addr, tx).await?;
            info!(event = "metrics", address = %local, "GET /metrics, /healthz");
            rx
        }
        None => idle_asks,
    };

    // gVisor: the trace sink every runsc sandbox the wrapper starts reports to, and the
    // Sentry-log pipes of the containers whose policy gVisor enforces.
    let gvisor_dir = options
        .runtime_socket
        .parent()
        .unwrap_or(Path::new("/run/sysfence"))
        .join("gvisor");
    let (refusals_tx, mut refusals) = mpsc::channel(1024);
    let mut attach_config = None;
    let mut sandbox_points = match start_gvisor_sink(&gvisor_dir) {
        Ok((handle, session, attach)) => {
            workloads.set_trace_config(Some(session));
            attach_config = Some(attach);
            Some(handle)
        }
        Err(e) => {
            warn!(event = "gvisor_trace_unavailable", dir = %gvisor_dir.display(), error = %format!("{e:#}"), "runsc applications are still policed inside their sandboxes; the agent does not see their syscalls");
            None
        }
    };

    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(probe.take_violations()?) }
        .map_err(|e| anyhow::anyhow!("polling the violation ring buffer: {e}"))?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut rescan = tokio::time::interval(options.rescan_every);
    // The ring buffer's wakeup can be lost (the kernel wakes the reader only when it
    // has caught up, and the reader's position store can pass the producer's check):
    // a periodic drain bounds how long an event can wait for the next one.
    let mut drain = tokio::time::interval(Duration::from_millis(100));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A watch gets its first frame when it asks; then one per second.
    let mut watch_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let now = SystemTime::now();
    let mut agent = Agent {
        options,
        probe,
        workloads,
        deny,
        guards,
        change_seen: None,
        rescan_failures: 0,
        telemetry: Telemetry::new(now),
        holds_seen: HashMap::new(),
        sandboxes: sandboxes::Sandboxes::new(gvisor_dir, refusals_tx, attach_config),
    };
    // Processes held while no agent ran: look, then let them go.
    agent.settle_holds();
    // runsc sandboxes an earlier agent followed: their pipes and trace sessions again.
    agent.resume_sandboxes();
    let mut watches: Vec<Watch> = Vec::new();
    let mut reload_at: Option<tokio::time::Instant> = None;
    // Freed slots are zeroed once their quarantine ends, so that the next reload finds
    // clean ones and writes one map entry per slot.
    let mut scrub_at: Option<tokio::time::Instant> = None;
    info!(event = "started", cgroup_root = %root.display(), runtime_socket = %agent.options.runtime_socket.display(), api_socket = %agent.options.api_socket.display(), bound = agent.workloads.bound_count(), pinned = agent.probe.pin_dir().is_some(), adopted = agent.probe.adopted());

    let stop = loop {
        let reload_sleep = sleep_until(reload_at);
        let scrub_sleep = sleep_until(scrub_at);
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = probe::decode_violation(&item) {
                        agent.on_violation(&event);
                    }
                }
                guard.clear_ready();
                if agent.holds_waiting() {
                    agent.rescan().await;
                }
            }
            _ = drain.tick() => {
                drain_ring(&mut ring, &mut agent);
                if agent.holds_waiting() {
                    agent.rescan().await;
                }
            }
            // Events first: a workload the rescan finds gone still names them.
            Some(()) = wake_rx.recv() => {
                drain_ring(&mut ring, &mut agent);
                agent.rescan().await;
            }
            _ = rescan.tick() => {
                drain_ring(&mut ring, &mut agent);
                agent.rescan().await;
                if let Err(e) = agent.workloads.scrub_free_slots(&mut agent.probe) {
                    warn!(event = "scrub_failed", error = %format!("{e:#}"), "retried on the next rescan");
                }
            }
            Some(pending) = requests.recv() => {
                let sandbox = match &pending.request {
                    workload::socket::Request::Sandbox(s) => Some(s.clone()),
                    _ => None,
                };
                let mut answer = agent.workloads.handle(&mut agent.probe, pending.request).await;
                if let Some(s) = sandbox {
                    agent.follow_sandbox(s, &mut answer);
                }
                let _ = pending.reply.send(answer);
            }
            Some((id, refusal)) = refusals.recv() => agent.on_refusal(&id, refusal),
            Some(point) = next_point(&mut sandbox_points) => agent.on_sandbox_event(point),
            Some(()) = reload_rx.recv() => {
                reload_at = Some(tokio::time::Instant::now() + RELOAD_SETTLE);
                agent.change_seen.get_or_insert_with(Instant::now);
            }
            _ = hup.recv() => {
                info!(event = "reload_requested", signal = "SIGHUP");
                reload_at = Some(tokio::time::Instant::now());
            }
            _ = reload_sleep => {
                reload_at = None;
                agent.reload().await;
                scrub_at = Some(tokio::time::Instant::now() + workload::slots::QUARANTINE + Duration::from_millis(10));
            }
            _ = scrub_sleep => {
                scrub_at = None;
                if let Err(e) = agent.workloads.scrub_free_slots(&mut agent.probe) {
                    warn!(event = "scrub_failed", error = %format!("{e:#}"), "retried on the next rescan");
                }
            }
            Some(req) = api_requests.recv() => {
                if let Some(w) = agent.api(req) {
                    watches.push(w);
                }
            }
            _ = watch_tick.tick(), if !watches.is_empty() => {
                let (ended, live): (Vec<Watch>, Vec<Watch>) =
                    watches.drain(..).partition(|w| w.reply.is_closed());
                for w in &ended {
                    agent.watch_end(w);
                }
                watches = live;
                for w in &mut watches {
                    let frame = agent.watch_frame(w);
                    let _ = w.reply.try_send(frame);
                }
            }
            Some(ask) = asks.recv() => match ask {
                metrics::Ask::Snapshot(tx) => {
                    // Events first: their counts and the kernel's pending ones add up.
                    drain_ring(&mut ring, &mut agent);
                    let _ = tx.send(agent.snapshot());
                }
                metrics::Ask::Health(tx) => { let _ = tx.send(()); }
            },
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    let stats = agent.probe.stats()?;
    info!(
        event = "stopping",
        signal = stop,
        events_dropped = stats.events_dropped,
        events_suppressed = stats.events_suppressed,
        kill_failed = stats.kill_failed
    );
    let _ = std::fs::remove_file(&agent.options.runtime_socket);
    let _ = std::fs::remove_file(&agent.options.api_socket);
    match agent.probe.pin_dir() {
        Some(dir) => info!(
            event = "stopped",
            pinned = %dir.display(),
            bound = agent.workloads.bound_count(),
            "enforcement stays pinned; a restarted agent adopts it (`sysfence agent --uninstall` removes it)"
        ),
        None => {
            agent.workloads.unbind_all(&mut agent.probe)?;
            info!(event = "stopped");
        }
    }
    Ok(())
}

/// Listen for runsc sandboxes' trace points in `dir` (`trace.sock`), and write the
/// session they are to start with (`session.json`, for `--pod-init-config`) and the
/// same session for `runsc trace create` (`attach.json`: a restarted agent attaches it
/// to the sandboxes it resumes). A session naming a point this runsc lacks would leave
/// its sandboxes untraced: checked against `runsc trace metadata` when runsc is
/// installed.
fn start_gvisor_sink(dir: &Path) -> anyhow::Result<(crate::gvisor::SinkHandle, PathBuf, PathBuf)> {
    use crate::gvisor::{Session, Sink, session, sink};
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("trace.sock");
    let handle = Sink::bind(&socket)
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", socket.display()))?
        .serve(sink::DEFAULT_CAPACITY);
    let s = Session::new(&socket).retries(session::FLOOD_RETRIES);
    if let Ok(supported) = session::query_supported_points(Path::new("runsc")) {
        let missing = session::missing_points(&s.pod_init_config(), &supported);
        if !missing.is_empty() {
            anyhow::bail!(
                "this runsc lacks {} trace points the session needs (first: {}): its sandboxes would run untraced",
                missing.len(),
                missing[0]
            );
        }
    }
    let config = dir.join("session.json");
    s.write_pod_init_config(&config)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", config.display()))?;
    let attach = dir.join("attach.json");
    s.write_trace_session(&attach)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", attach.display()))?;
    Ok((handle, config, attach))
}

/// The next trace point of a sandbox, or never when there is no sink.
async fn next_point(
    sink: &mut Option<crate::gvisor::SinkHandle>,
) -> Option<crate::gvisor::SandboxEvent> {
    match sink {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleep until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Read every violation event waiting in the ring buffer.
fn drain_ring(ring: &mut AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>, agent: &mut Agent) {
    while let Some(item) = ring.get_mut().next() {
        if let Some(event) = probe::decode_violation(&item) {
            agent.on_violation(&event);
        }
    }
}

impl Agent {
    /// Bring the bindings in line with the system. A failure is logged and retried on
    /// the next rescan, never fatal: a workload that could make a rescan fail must not
    /// be able to restart the agent at a moment of its choosing.
    async fn rescan(&mut self) {
        let held = self.probe.held().into_iter().map(|(tgid, _)| tgid);
        self.workloads.note_execd(held);
        if let Err(e) = self.workloads.rescan(&mut self.probe).await {
            self.rescan_failures += 1;
            warn!(event = "rescan_failed", error = %format!("{e:#}"), failures = self.rescan_failures, "bindings in force stay; retried on the next rescan");
            return;
        }
        let index = self.workloads.index();
        let live = |id| index.get(id).is_some();
        self.telemetry.prune(&live);
        if let Err(e) = self.probe.forget_event_state(&live) {
            warn!(event = "prune_failed", error = %format!("{e:#}"), "kept the kernel's event state of gone workloads; the LRU maps evict it in time");
        }
        self.sweep_doomed();
        self.settle_holds();
        self.forget_gone_sandboxes();
    }

    /// One event from the ring buffer: decoded once, enriched once, then logged and
    /// kept for the API and the metrics as the same record.
    fn on_violation(&mut self, event: &ViolationEvent) {
        if event.flags & probe_common::EVENT_HOLD != 0 {
            self.holds_seen.insert(event.tgid, event.boot_ns);
            return;
        }
        let mut v = Violation::from_event(event);
        v.enrich(
            self.workloads.describe(event.cgroup_id),
            self.workloads.policy_of_slot(event.slot),
        );
        v.log();
        if v.workload_killed {
            self.kill_workload(event.cgroup_id);
        }
        if let Some((pid, level)) = crate::undo::killed_attach(event) {
            let dir = self.workloads.index().dir_of(event.cgroup_id);
            crate::undo::resume_stopped(
                crate::undo::host_pids(pid, level, dir.as_deref()),
                format!("ptrace by pid {} of {}", event.tgid, v.workload.cgroup),
            );
        }
        self.telemetry.record_violation(v);
    }
}
