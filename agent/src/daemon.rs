//! `sysfence agent`: the node daemon. Binds policies to the workloads their selectors
//! match, now and as workloads appear (discovery and binding live in
//! [`crate::workload`]), answers the runtime wrapper on its socket, reloads changed
//! policy files without a window, serves its API and metrics, and logs violations as
//! JSON lines.
//!
//! The probe is pinned (see [`crate::probe::pins`]): when the agent stops, even by
//! SIGKILL, enforcement goes on, and the next agent adopts it.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use probe_common::{ViolationEvent, index_to_syscall};
use serde_json::{Value, json};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracing::{info, warn};

use crate::{
    api, cgroup,
    metrics::{self, Snapshot, ViolationKey},
    policy::{self, CompiledPolicy},
    probe::{self, Probe, ProbeOptions, pins},
    syscall_table,
    watch::snapshot::{Filters, SyscallKey, unix_ms},
    workload::{self, Manager, ManagerOptions},
};

pub struct AgentOptions {
    pub policies: PathBuf,
    /// `--sets DIR`: where includes are looked for besides the policy directory.
    pub sets: Option<PathBuf>,
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
    /// Pin root (`None`: an unpinned probe that goes with the agent).
    pub pin_root: Option<PathBuf>,
    /// The local API socket.
    pub api_socket: PathBuf,
    /// Serve Prometheus metrics and /healthz here.
    pub metrics: Option<SocketAddr>,
}

/// Violation records kept for `sysfence report` (the newest).
const RECENT_VIOLATIONS: usize = 10_000;
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

/// Whether deny (BPF LSM) is attached: `Ok` or why not.
type DenyState = Result<(), String>;

fn compile_slots(
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

fn try_enable_deny(probe: &mut Probe) -> DenyState {
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

/// What the agent keeps for its API and metrics.
struct Telemetry {
    started: SystemTime,
    recent: VecDeque<Value>,
    violations: BTreeMap<ViolationKey, u64>,
    /// The key of the last event per (cgroup id, syscall index), to name violations
    /// the rate limit holds back, and the highest total exported per key (a counter
    /// never goes back, even when a scrape falls between the kernel sending an event
    /// and the agent reading it).
    by_rate_key: std::collections::HashMap<(u64, u32), ViolationKey>,
    /// The sequence number of the last record per (cgroup id, syscall index).
    last_record: std::collections::HashMap<(u64, u32), u64>,
    next_seq: u64,
    /// Violations per workload (cgroup id) and `abi:syscall`, for watches.
    watch_violations: std::collections::HashMap<u64, BTreeMap<String, u64>>,
    exported: std::cell::RefCell<BTreeMap<ViolationKey, u64>>,
    reloads: BTreeMap<String, u64>,
    last_reload_success: SystemTime,
    last_reload: Value,
}

impl Telemetry {
    fn record_violation(&mut self, event: &ViolationEvent, v: Value) {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let key = ViolationKey {
            policy: s("policy"),
            namespace: s("namespace"),
            pod: s("pod"),
            container: s("container"),
            cgroup: s("cgroup"),
            abi: s("abi"),
            syscall: s("syscall"),
            outcome: s("outcome"),
        };
        *self.violations.entry(key.clone()).or_default() +=
            1 + v["suppressed"].as_u64().unwrap_or(0);
        self.by_rate_key.insert((event.cgroup_id, event.index), key);
        *self
            .watch_violations
            .entry(event.cgroup_id)
            .or_default()
            .entry(SyscallKey::of_index(event.index).to_string())
            .or_default() += 1 + u64::from(event.suppressed);
        let mut v = v;
        let now = unix_ms(SystemTime::now());
        v["t_ms"] = json!(now);
        v["timestamp"] = json!(crate::watch::snapshot::iso_ms(now));
        self.next_seq += 1;
        v["seq"] = json!(self.next_seq);
        self.last_record
            .insert((event.cgroup_id, event.index), self.next_seq);
        self.recent.push_back(v);
        if self.recent.len() > RECENT_VIOLATIONS {
            self.recent.pop_front();
        }
    }

    fn count_reload(&mut self, result: &str) {
        *self.reloads.entry(result.to_string()).or_default() += 1;
    }
}

struct Agent {
    options: AgentOptions,
    probe: Probe,
    workloads: Manager,
    deny: DenyState,
    /// The self-protection hooks attached, or why not.
    guards: Result<usize, String>,
    telemetry: Telemetry,
    /// When the first event of a policy directory change not yet applied arrived.
    change_seen: Option<Instant>,
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
        max_slots: workload::manager::slots_needed(policies.len()),
        attach: true,
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
    probe.set_event_rate(options.events_per_second)?;
    let slots = compile_slots(policies, &deny);

    let root = cgroup::v2_root()?;
    let mut workloads = Manager::new(
        ManagerOptions {
            cgroup_root: root.clone(),
            cri_sockets: options.cri_sockets.clone(),
            runtime_roots: options.runtime_roots.clone(),
        },
        slots,
        &mut probe,
    )?;
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
    let mut requests = match workload::socket::serve(&options.runtime_socket) {
        Ok(rx) => rx,
        Err(e) => {
            warn!(event = "runtime_socket_unavailable", socket = %options.runtime_socket.display(), error = %format!("{e:#}"), "containers are bound on discovery only, after they started");
            idle_requests
        }
    };
    let mut api_requests = api::serve(&options.api_socket)?;
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
        telemetry: Telemetry {
            started: now,
            recent: VecDeque::new(),
            violations: BTreeMap::new(),
            by_rate_key: std::collections::HashMap::new(),
            watch_violations: std::collections::HashMap::new(),
            last_record: std::collections::HashMap::new(),
            next_seq: 0,
            exported: std::cell::RefCell::new(BTreeMap::new()),
            reloads: BTreeMap::new(),
            last_reload_success: now,
            last_reload: json!({"result": "initial", "t_ms": unix_ms(now)}),
        },
    };
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
            }
            _ = drain.tick() => drain_ring(&mut ring, &mut agent),
            // Events first: a workload the rescan finds gone still names them.
            Some(()) = wake_rx.recv() => {
                drain_ring(&mut ring, &mut agent);
                agent.workloads.rescan(&mut agent.probe).await?;
            }
            _ = rescan.tick() => {
                drain_ring(&mut ring, &mut agent);
                agent.workloads.rescan(&mut agent.probe).await?;
                agent.workloads.scrub_free_slots(&mut agent.probe)?;
            }
            Some(pending) = requests.recv() => {
                let answer = agent.workloads.handle(&mut agent.probe, pending.request).await;
                let _ = pending.reply.send(answer);
            }
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
                agent.workloads.scrub_free_slots(&mut agent.probe)?;
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

/// A `watch` client: its filter, the workloads it looks at (each counted in a slot
/// of its own meanwhile), and their counts when it began looking.
struct Watch {
    filter: Value,
    reply: mpsc::Sender<Value>,
    baseline: std::collections::HashMap<u64, BTreeMap<u32, u64>>,
    /// Violations per workload when the watch began looking at it.
    violations_before: std::collections::HashMap<u64, BTreeMap<String, u64>>,
}

impl Agent {
    fn on_violation(&mut self, event: &ViolationEvent) {
        let record = self.workloads.log_violation(event);
        self.telemetry.record_violation(event, record);
    }

    /// Reload the policy directory; on any error the policies in force stay.
    async fn reload(&mut self) {
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

    /// Answer an API request; a `watch` becomes a [`Watch`] fed every second.
    fn api(&mut self, req: api::ApiRequest) -> Option<Watch> {
        let op = req.request["op"].as_str().unwrap_or("").to_string();
        let answer = match op.as_str() {
            "status" => self.status(),
            "events" => json!({
                "ok": true,
                "since_ms": unix_ms(self.telemetry.started),
                "workloads": self.workloads.bound_rows(),
                "violations": self.recent_violations(),
            }),
            "watch" => {
                let mut w = Watch {
                    filter: req.request.clone(),
                    reply: req.reply.clone(),
                    baseline: std::collections::HashMap::new(),
                    violations_before: std::collections::HashMap::new(),
                };
                let frame = self.watch_frame(&mut w);
                let _ = req.reply.try_send(frame);
                return Some(w);
            }
            other => {
                json!({"ok": false, "error": format!("unknown op `{other}`: status, events, watch")})
            }
        };
        let _ = req.reply.try_send(answer);
        None
    }

    /// The violation records kept, with the calls the kernel's rate limit still holds
    /// back added to the last record of their workload and syscall: each record stands
    /// for `1 + suppressed` calls, and the total is exact.
    fn recent_violations(&self) -> Vec<Value> {
        let mut records: Vec<Value> = self.telemetry.recent.iter().cloned().collect();
        if let Ok(pending) = self.probe.pending_suppressed() {
            for (cgroup_id, index, n) in pending {
                let Some(last) = self.telemetry.last_record.get(&(cgroup_id, index)) else {
                    continue;
                };
                if let Some(r) = records.iter_mut().rev().find(|r| r["seq"] == *last) {
                    r["suppressed"] = json!(r["suppressed"].as_u64().unwrap_or(0) + n);
                }
            }
        }
        records
    }

    fn status(&self) -> Value {
        let stats = self.probe.stats().ok();
        let (used, capacity) = self.workloads.slot_usage();
        json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_ms": unix_ms(self.telemetry.started),
            "policies_dir": self.options.policies.display().to_string(),
            "probe": {
                "pinned": self.probe.pin_dir().map(|p| p.display().to_string()),
                "adopted": self.probe.adopted(),
                "layout": pins::LAYOUT_VERSION,
                "programs": self.probe.attachments(),
                "deny": match &self.deny { Ok(()) => "attached".to_string(), Err(e) => e.clone() },
                "self_protection": match &self.guards { Ok(n) => format!("{n} hooks attached"), Err(e) => e.clone() },
                "slots_used": used,
                "slots": capacity,
                "stats": stats,
            },
            "last_reload": self.telemetry.last_reload,
            "reloads": self.telemetry.reloads,
            "policies": self.workloads.policy_rows(),
            "workloads": self.workloads.bound_rows(),
        })
    }

    /// The bound workloads a watch's filter selects (as `sysfence watch` filters).
    fn watch_rows(&self, filter: &Value) -> Vec<Value> {
        let filters: Filters = serde_json::from_value(filter.clone()).unwrap_or_default();
        let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
        self.workloads
            .bound_rows()
            .into_iter()
            .filter(|r| {
                let eq = |want: &Option<String>, k: &str| {
                    want.as_deref()
                        .filter(|w| !w.is_empty())
                        .is_none_or(|w| w == text(r, k))
                };
                eq(&filters.namespace, "namespace")
                    && eq(&filters.pod, "pod")
                    && eq(&filters.container, "container")
                    && filters.cgroup_matches(&text(r, "cgroup"))
            })
            .collect()
    }

    /// One frame of a watch: cumulative counts since the watch began, per workload
    /// (each counted in a slot of its own while watched), and its violations. Workloads
    /// that appear are taken on, those gone are let go.
    fn watch_frame(&mut self, w: &mut Watch) -> Value {
        let rows = self.watch_rows(&w.filter);
        let ids: Vec<u64> = rows
            .iter()
            .filter_map(|r| r["cgroup_id"].as_u64())
            .collect();
        let new: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !w.baseline.contains_key(id))
            .collect();
        let gone: Vec<u64> = w
            .baseline
            .keys()
            .copied()
            .filter(|id| !ids.contains(id))
            .collect();
        if let Err(e) = self.workloads.watch_release(&mut self.probe, &gone) {
            warn!(event = "watch_failed", error = %format!("{e:#}"));
        }
        for id in &gone {
            w.baseline.remove(id);
            w.violations_before.remove(id);
        }
        if !new.is_empty() {
            match self.workloads.watch_acquire(&mut self.probe, &new) {
                Ok(shared) if !shared.is_empty() => {
                    warn!(
                        event = "watch_slots_exhausted",
                        workloads = shared.len(),
                        "no free slot to count these workloads apart"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(event = "watch_failed", error = %format!("{e:#}")),
            }
            for id in &new {
                let now = self.workloads.workload_counts(&self.probe, *id);
                w.baseline.insert(*id, now);
                let seen = self
                    .telemetry
                    .watch_violations
                    .get(id)
                    .cloned()
                    .unwrap_or_default();
                w.violations_before.insert(*id, seen);
            }
        }
        let workloads: Vec<Value> = rows
            .into_iter()
            .map(|mut r| {
                let id = r["cgroup_id"].as_u64().unwrap_or(0);
                let base = w.baseline.get(&id);
                let mut counts = serde_json::Map::new();
                if self.workloads.counted_apart(id) {
                    for (index, n) in self.workloads.workload_counts(&self.probe, id) {
                        let before = base.and_then(|b| b.get(&index)).copied().unwrap_or(0);
                        if n > before {
                            counts
                                .insert(SyscallKey::of_index(index).to_string(), json!(n - before));
                        }
                    }
                } else {
                    r["note"] =
                        json!("no free policy slot to count this workload apart: counts not shown");
                }
                let mut violations = serde_json::Map::new();
                if let Some(v) = self.telemetry.watch_violations.get(&id) {
                    let before = w.violations_before.get(&id);
                    for (key, n) in v {
                        let since = n - before.and_then(|b| b.get(key)).copied().unwrap_or(0);
                        if since > 0 {
                            violations.insert(key.clone(), json!(since));
                        }
                    }
                }
                r["counts"] = Value::Object(counts);
                r["violations"] = Value::Object(violations);
                r
            })
            .collect();
        json!({"t_ms": unix_ms(SystemTime::now()), "workloads": workloads})
    }

    /// A watch ended: let its workloads go.
    fn watch_end(&mut self, w: &Watch) {
        let ids: Vec<u64> = w.baseline.keys().copied().collect();
        if let Err(e) = self.workloads.watch_release(&mut self.probe, &ids) {
            warn!(event = "watch_failed", error = %format!("{e:#}"));
        }
    }

    /// Everything `/metrics` exports, read now.
    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for ((policy, monitor_only), counts) in self.workloads.policy_counts(&self.probe) {
            let mode = if monitor_only {
                "monitor-only"
            } else {
                "as-written"
            };
            for (index, n) in counts {
                let (abi, name) = syscall_table::describe_index(index);
                let abi = abi.map_or("unknown", |a| a.name()).to_string();
                let name = if index_to_syscall(index).is_some() {
                    name.to_string()
                } else {
                    "unclassified".to_string()
                };
                *s.syscalls
                    .entry((policy.clone(), mode.to_string(), abi, name))
                    .or_default() += n;
            }
        }
        s.violations = self.telemetry.violations.clone();
        if let Ok(pending) = self.probe.pending_suppressed() {
            for (cgroup_id, index, n) in pending {
                if let Some(key) = self.telemetry.by_rate_key.get(&(cgroup_id, index)) {
                    *s.violations.entry(key.clone()).or_default() += n;
                }
            }
        }
        let mut exported = self.telemetry.exported.borrow_mut();
        for (key, n) in s.violations.iter_mut() {
            let high = exported.entry(key.clone()).or_default();
            *n = (*n).max(*high);
            *high = *n;
        }
        drop(exported);
        for row in self.workloads.policy_rows() {
            s.bound.insert(
                row["name"].as_str().unwrap_or("").to_string(),
                row["bound"].as_u64().unwrap_or(0),
            );
        }
        s.reloads = self.telemetry.reloads.clone();
        s.last_reload_success = self
            .telemetry
            .last_reload_success
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(stats) = self.probe.stats() {
            s.events_dropped = stats.events_dropped;
            s.events_suppressed = stats.events_suppressed;
            s.kill_failed = stats.kill_failed;
            s.mark_failed = stats.mark_failed;
        }
        let (used, capacity) = self.workloads.slot_usage();
        s.slots_used = used as u64;
        s.slots_capacity = capacity as u64;
        s.probe = vec![
            ("pinned".into(), self.probe.pin_dir().is_some().to_string()),
            ("adopted".into(), self.probe.adopted().to_string()),
            ("layout".into(), pins::LAYOUT_VERSION.to_string()),
            (
                "deny".into(),
                if self.deny.is_ok() { "attached" } else { "off" }.into(),
            ),
            (
                "self_protection".into(),
                if self.guards.is_ok() {
                    "attached"
                } else {
                    "off"
                }
                .into(),
            ),
        ];
        s
    }
}

/// Watch the policy directory (and its subdirectories, including kubelet's `..data`
/// swap): each change sends a reload request.
fn spawn_policy_watcher(
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
