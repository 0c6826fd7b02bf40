//! runsc containers, from inside their sandboxes: the agent's side of
//! [`crate::workload::sandbox`].
//!
//! - Before `create`, the wrapper asks which policy the application gets inside; the
//!   binder answers it as a seccomp profile. For an enforced one, the agent makes the
//!   container's Sentry-log pipe ([`crate::workload::sentry_log`]) and reads it: each
//!   syscall gVisor's seccomp refused becomes a violation, with the outcome that
//!   happened (`denied`: the call failed with its errno; `killed`: the thread died, and
//!   the agent kills what the policy's `killScope` names).
//! - Every sandbox the wrapper started streams its application's syscalls to the
//!   agent's trace sink ([`crate::gvisor`]). Under a `monitor` or `audit` policy (no
//!   profile), the agent judges them itself: a call the policy does not allow is a
//!   violation, `monitored` or `audited`.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Command,
};

use serde_json::Value;
use tokio::{sync::mpsc, task::AbortHandle};
use tracing::{info, warn};

use super::Agent;
use crate::{
    event::Violation,
    gvisor::SandboxEvent,
    model::Runtime,
    policy::{KillScope, Mode},
    syscall_table,
    workload::{
        binder::{SandboxEntry, SandboxRecord},
        sentry_log::{SeccompRefusal, SentryLog},
        socket::SandboxRequest,
    },
};
use probe_common::Abi;

/// The agent's gVisor state: where the pipes are, and who reads them.
pub(super) struct Sandboxes {
    /// `gvisor/` beside the runtime socket: the trace sink, the session, the pipes, and
    /// a record per container the wrapper asked about (`<id>.sandbox.json`).
    pub dir: PathBuf,
    /// The trace session for `runsc trace create` (`attach.json`), when the sink is up.
    pub attach_config: Option<PathBuf>,
    /// Refusals read from the pipes, for the main loop.
    pub refusals: mpsc::Sender<(String, SeccompRefusal)>,
    /// The pipe readers, by container id.
    pub readers: HashMap<String, AbortHandle>,
    /// The application's syscalls per runsc container, from its trace session: x86_64
    /// number → calls (only containers the wrapper asked about: a Sentry cannot make
    /// the agent keep counts for ids of its choosing).
    pub counts: HashMap<String, BTreeMap<u64, u64>>,
}

impl Sandboxes {
    pub fn new(
        dir: PathBuf,
        refusals: mpsc::Sender<(String, SeccompRefusal)>,
        attach_config: Option<PathBuf>,
    ) -> Sandboxes {
        Sandboxes {
            dir,
            attach_config,
            refusals,
            readers: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// Where the record of container `id` is kept.
    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sandbox.json"))
    }
}

impl Agent {
    /// After the binder answered a runsc container's `sandbox` request: keep its record
    /// (for a restarted agent), and for a policy enforced inside, open the container's
    /// Sentry-log pipe and tell the wrapper.
    pub(super) fn follow_sandbox(&mut self, request: SandboxRequest, answer: &mut Value) {
        if answer["ok"] != true {
            return;
        }
        let id = request.id.clone();
        if let Some(entry) = self.workloads.sandbox(&id) {
            let record = entry.record(request);
            let path = self.sandboxes.record_path(&id);
            if let Err(e) = serde_json::to_vec(&record)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&path, bytes))
            {
                warn!(event = "sandbox_record_failed", container_id = %id, error = %e, "an agent restarted later will not resume reading this sandbox");
            }
        }
        if answer["seccomp"].is_object() {
            self.read_sentry_log(&id, Some(answer));
        }
    }

    /// Read container `id`'s Sentry-log pipe (made if missing), and name it in the
    /// wrapper's `answer` when there is one.
    fn read_sentry_log(&mut self, id: &str, answer: Option<&mut Value>) {
        if let Some(old) = self.sandboxes.readers.remove(id) {
            old.abort();
        }
        match SentryLog::open(&self.sandboxes.dir, id) {
            Ok(log) => {
                if let Some(answer) = answer {
                    answer["sentry_log"] = Value::String(log.path.display().to_string());
                }
                let handle = tokio::spawn(log.run(self.sandboxes.refusals.clone()));
                self.sandboxes
                    .readers
                    .insert(id.to_string(), handle.abort_handle());
            }
            Err(e) => warn!(
                event = "sentry_log_unavailable",
                container_id = id,
                error = %e,
                "gVisor enforces the policy inside the sandbox, but the agent cannot report what it refuses"
            ),
        }
    }

    /// At start: the runsc containers an earlier agent followed (their records), still
    /// running, are followed again: the policy they were given, their Sentry-log pipe
    /// (gVisor keeps writing to it), and their trace session, attached again to this
    /// agent's sink (runsc does not reconnect a session whose sink went away). Records
    /// of containers that are gone are removed.
    pub(super) fn resume_sandboxes(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.sandboxes.dir) else {
            return;
        };
        for path in dir.flatten().map(|e| e.path()) {
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".sandbox.json"))
                .map(str::to_string)
            else {
                continue;
            };
            let record: Option<SandboxRecord> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|r: &SandboxRecord| r.request.id == id && r.request.validate().is_ok());
            let alive = record.as_ref().is_some_and(|r| {
                crate::workload::runtime::read_state(
                    &Runtime::Runsc,
                    r.request.root.as_deref(),
                    &id,
                )
                .is_ok()
            });
            let Some(record) = record.filter(|_| alive) else {
                info!(event = "sandbox_gone", container_id = %id, "an earlier agent followed it; it ended while no agent ran");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(self.sandboxes.dir.join(format!("{id}.log")));
                continue;
            };
            self.workloads.restore_sandbox(&record);
            if record.enforced {
                self.read_sentry_log(&id, None);
            }
            let traced = self.attach_trace_session(&record);
            info!(
                event = "sandbox_resumed",
                container_id = %id,
                policy = record.policy.as_deref().unwrap_or(""),
                sentry_log = record.enforced,
                traced,
                "a runsc container an earlier agent followed"
            );
        }
    }

    /// Attach this agent's trace session to a resumed sandbox, in place of the one whose
    /// sink went away with the earlier agent.
    fn attach_trace_session(&self, record: &SandboxRecord) -> bool {
        let Some(config) = &self.sandboxes.attach_config else {
            return false;
        };
        let mut c = Command::new("runsc");
        if let Some(root) = &record.request.root {
            c.arg("--root").arg(root);
        }
        c.args(["trace", "create", "--force", "--config"])
            .arg(config)
            .arg(&record.request.id);
        match c.output() {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                warn!(event = "sandbox_trace_lost", container_id = %record.request.id, runsc = %String::from_utf8_lossy(&out.stderr).trim(), "its application's syscalls are not seen until it restarts");
                false
            }
            Err(e) => {
                warn!(event = "sandbox_trace_lost", container_id = %record.request.id, error = %e, "its application's syscalls are not seen until it restarts");
                false
            }
        }
    }

    /// Stop reading the pipes of runsc containers that are gone, and remove them and
    /// their records.
    pub(super) fn forget_gone_sandboxes(&mut self) {
        // A pipe is made before `create`, so before the runtime has any state of the
        // container: it gets a minute to appear.
        let now = crate::clock::now_ms();
        let mut known: Vec<String> = self.workloads.sandbox_ids();
        known.extend(
            self.sandboxes
                .readers
                .keys()
                .filter(|id| self.workloads.sandbox(id).is_none())
                .cloned(),
        );
        let gone: Vec<String> = known
            .iter()
            .filter(|id| {
                let entry = self.workloads.sandbox(id);
                !self.workloads.index().runtime_knows(id)
                    && entry.is_none_or(|e| now.saturating_sub(e.since_ms) > 60_000)
                    && crate::workload::runtime::read_state(
                        &Runtime::Runsc,
                        entry.and_then(|e| e.root.as_deref()),
                        id,
                    )
                    .is_err()
            })
            .cloned()
            .collect();
        for id in gone {
            if let Some(r) = self.sandboxes.readers.remove(&id) {
                r.abort();
            }
            let _ = std::fs::remove_file(self.sandboxes.dir.join(format!("{id}.log")));
            let _ = std::fs::remove_file(self.sandboxes.record_path(&id));
            self.workloads.forget_sandbox(&id);
            self.sandboxes.counts.remove(&id);
        }
    }

    /// gVisor's seccomp refused a syscall of container `id`: a violation, as it happened.
    pub(super) fn on_refusal(&mut self, id: &str, r: SeccompRefusal) {
        let entry = self.workloads.sandbox(id).cloned();
        let mut v = sandbox_violation(id, entry.as_ref(), r.tgid, r.tid, r.sysno);
        self.locate(&mut v);
        v.outcome = if r.killed { "killed" } else { "denied" }.to_string();
        v.hook = "gvisor-seccomp".to_string();
        let scope = entry
            .as_ref()
            .and_then(|e| e.policy.as_deref())
            .and_then(|p| self.workloads.policy_named(p))
            .map(|p| p.kill_scope);
        if r.killed {
            v.workload_killed = scope == Some(KillScope::Workload);
        }
        v.log();
        if r.killed
            && let Some(e) = &entry
        {
            complete_kill(id, e, r.tgid, scope.unwrap_or(KillScope::Process));
        }
        self.telemetry.record_violation(v);
    }

    /// Name the host cgroup of a sandbox violation's container, when the agent has
    /// found it (so that `watch` and the metrics count it with its workload).
    fn locate(&self, v: &mut Violation) {
        let id = v.workload.container_id.clone();
        if let Some(w) = self
            .workloads
            .index()
            .workloads()
            .values()
            .find(|w| w.container_id.as_deref() == Some(id.as_str()))
        {
            v.workload = w.to_ref();
        }
    }

    /// A point from a sandbox's trace session.
    pub(super) fn on_sandbox_event(&mut self, event: SandboxEvent) {
        match event {
            SandboxEvent::Syscall {
                container_id,
                sysno,
                args,
                exit: None,
                tid,
                tgid,
                ..
            } => {
                let Some(entry) = self.workloads.sandbox(&container_id).cloned() else {
                    return;
                };
                *self
                    .sandboxes
                    .counts
                    .entry(container_id.clone())
                    .or_default()
                    .entry(sysno)
                    .or_default() += 1;
                // Under an enforced policy, gVisor's seccomp judged the call already:
                // what reaches the trace was allowed.
                if entry.enforced {
                    return;
                }
                let Some(policy) = entry
                    .policy
                    .as_deref()
                    .and_then(|p| self.workloads.policy_named(p))
                else {
                    return;
                };
                if policy.allows_call(Abi::X86_64, sysno, &args) {
                    return;
                }
                let outcome = match policy.mode {
                    Mode::Monitor => "monitored",
                    Mode::Audit => "audited",
                    // An enforce policy with no profile: the wrapper was not in the way.
                    Mode::Enforce => "not-preventable",
                };
                let mut v =
                    sandbox_violation(&container_id, Some(&entry), tgid as u32, tid as u32, sysno);
                v.outcome = outcome.to_string();
                self.locate(&mut v);
                v.log();
                self.telemetry.record_violation(v);
            }
            SandboxEvent::Syscall { .. } | SandboxEvent::TaskExit { .. } => {}
            SandboxEvent::Connected {
                connection,
                peer_pid,
                version,
            } => info!(event = "sandbox_connected", connection = %connection, peer_pid, version),
            SandboxEvent::ContainerStart {
                container_id, args, ..
            } => {
                // From now on its counts are the application's, even before its first
                // syscall arrives.
                if self.workloads.sandbox(&container_id).is_some() {
                    self.sandboxes
                        .counts
                        .entry(container_id.clone())
                        .or_default();
                }
                info!(event = "sandbox_container_started", container_id = %container_id, args = ?args)
            }
            SandboxEvent::Dropped { connection, count } => warn!(
                event = "sandbox_points_dropped",
                connection = %connection,
                count,
                "the Sentry dropped trace points (its socket was full): counts and monitor/audit reports of that sandbox are short by this many calls"
            ),
            SandboxEvent::Closed {
                connection,
                stats,
                error,
            } => info!(
                event = "sandbox_disconnected",
                connection = %connection,
                messages = stats.messages,
                dropped = stats.dropped,
                malformed = stats.malformed,
                error = error.unwrap_or_default()
            ),
        }
    }
}

/// A violation of runsc container `id`'s application, as far as the agent knows it.
fn sandbox_violation(
    id: &str,
    entry: Option<&SandboxEntry>,
    tgid: u32,
    tid: u32,
    sysno: u64,
) -> Violation {
    let name = syscall_table::name(Abi::X86_64, sysno as u32)
        .map_or_else(|| format!("syscall {sysno}"), str::to_string);
    let mut v = Violation {
        policy: entry
            .and_then(|e| e.policy.clone())
            .unwrap_or_else(|| "?".to_string()),
        sandboxed: true,
        pid: tgid,
        tid,
        abi: Abi::X86_64.name().to_string(),
        syscall: name,
        nr: sysno as i64,
        ..Violation::default()
    };
    match entry {
        Some(e) => v.workload = e.workload.to_ref(),
        None => {
            v.workload.container_id = id.to_string();
            v.workload.runtime = Runtime::Runsc.name().to_string();
        }
    }
    v
}

/// gVisor's `SCMP_ACT_KILL` killed one thread; the policy's kill takes the process
/// (or the whole container): `runsc kill`, with the runtime the agent finds on its
/// own PATH.
fn complete_kill(id: &str, e: &SandboxEntry, tgid: u32, scope: KillScope) {
    let mut c = Command::new("runsc");
    if let Some(root) = &e.root {
        c.arg("--root").arg(root);
    }
    c.arg("kill");
    match scope {
        KillScope::Workload => {
            c.arg("--all");
        }
        KillScope::Process => {
            c.arg(format!("--pid={tgid}"));
        }
    }
    c.args([id, "KILL"]);
    // The thread group may be gone already (a single-threaded caller dies with its
    // thread): that is the kill done.
    match c.output() {
        Ok(out) if out.status.success() => {
            info!(event = "sandbox_killed", container_id = id, pid = tgid, scope = ?scope)
        }
        Ok(out) => info!(
            event = "sandbox_kill_done_by_seccomp",
            container_id = id,
            pid = tgid,
            runsc = %String::from_utf8_lossy(&out.stderr).trim(),
            "runsc kill found nothing left to kill"
        ),
        Err(err) => warn!(event = "sandbox_kill_failed", container_id = id, error = %err),
    }
}
