//! The recording `record` writes and `report` reads (versioned JSON: per workload, per
//! ABI and syscall, exact counts with first and last seen), and the [`Recorder`] that
//! turns snapshots into one.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::watch::snapshot::{Counts, Filters, Snapshot, SyscallKey, WorkloadRef};

pub const RECORDING_FORMAT: &str = "sysfence-recording";
pub const RECORDING_VERSION: u32 = 1;

/// A recording: what `record` saw, exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// Always [`RECORDING_FORMAT`].
    pub format: String,
    /// [`RECORDING_VERSION`]; a reader refuses versions it does not know.
    pub version: u32,
    /// The sysfence version that recorded it.
    pub sysfence: String,
    /// The command, when one command was recorded.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Its exit status (128+N for signal N).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The filters of a live recording.
    #[serde(default)]
    pub filters: Filters,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Sampling period: `first_ms`/`last_ms` are exact to this.
    pub sample_ms: u64,
    pub workloads: Vec<RecordedWorkload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedWorkload {
    #[serde(flatten)]
    pub identity: WorkloadRef,
    /// When its first and last counted call were seen.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    /// The workload's syscalls: for a runsc workload traced inside its sandbox, the
    /// application's (`inside_sandbox`), else what reached the host kernel.
    pub syscalls: Vec<RecordedSyscall>,
    /// `syscalls` are the application's, from gVisor's trace session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inside_sandbox: bool,
    /// With `inside_sandbox`: what the sandbox's own processes (the Sentry, the gofer)
    /// made to the host kernel meanwhile, as the probe counted them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_syscalls: Vec<RecordedSyscall>,
}

impl RecordedWorkload {
    /// What reached the host kernel: `host_syscalls` for a workload traced inside its
    /// sandbox, else `syscalls`.
    pub fn host_side(&self) -> &[RecordedSyscall] {
        if self.inside_sandbox {
            &self.host_syscalls
        } else {
            &self.syscalls
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSyscall {
    pub abi: String,
    pub syscall: String,
    #[serde(default)]
    pub nr: Option<u32>,
    pub count: u64,
    #[serde(default)]
    pub first_ms: Option<u64>,
    #[serde(default)]
    pub last_ms: Option<u64>,
}

impl Recording {
    /// Read a recording; errors name the file, line and reason.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading recording {}", path.display()))?;
        Recording::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Recording> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: not JSON: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        let format = value["format"].as_str().unwrap_or_default();
        if format != RECORDING_FORMAT {
            bail!(
                "{}: not a sysfence recording (format `{format}`, expected `{RECORDING_FORMAT}`); \
                 make one with `sysfence record`",
                path.display()
            );
        }
        let version = value["version"].as_u64().unwrap_or(0);
        if version != u64::from(RECORDING_VERSION) {
            bail!(
                "{}: recording version {version} is not supported (this sysfence reads \
                 version {RECORDING_VERSION})",
                path.display()
            );
        }
        serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
    }

    /// Counts summed over the workloads.
    pub fn union(&self) -> Counts {
        let mut out = Counts::new();
        for w in &self.workloads {
            for s in &w.syscalls {
                *out.entry(SyscallKey::new(&s.abi, &s.syscall)).or_default() += s.count;
            }
        }
        out
    }
}

/// Turns snapshots into a recording: cumulative counts, first and last seen.
#[derive(Default)]
pub struct Recorder {
    workloads: BTreeMap<u64, Track>,
}

#[derive(Default)]
struct Track {
    identity: WorkloadRef,
    /// The workload's counts (the application's, inside a sandbox).
    calls: Tally,
    inside_sandbox: bool,
    /// The sandbox's own host calls, while `calls` are the application's.
    host: Tally,
}

/// Cumulative counts of one stream, and when each syscall was first and last seen.
#[derive(Default)]
struct Tally {
    counts: Counts,
    seen: BTreeMap<SyscallKey, (u64, u64)>,
}

impl Tally {
    fn observe(&mut self, t_ms: u64, counts: &Counts) {
        for (k, &n) in counts {
            let before = self.counts.get(k).copied().unwrap_or(0);
            if n > before {
                let e = self.seen.entry(k.clone()).or_insert((t_ms, t_ms));
                e.1 = t_ms;
            }
            if n >= before {
                self.counts.insert(k.clone(), n);
            }
        }
    }

    /// Most called first.
    fn syscalls(&self) -> Vec<RecordedSyscall> {
        let mut syscalls: Vec<RecordedSyscall> = self
            .counts
            .iter()
            .map(|(k, &count)| RecordedSyscall {
                abi: k.abi.clone(),
                syscall: k.name.clone(),
                nr: k
                    .index()
                    .and_then(probe_common::index_to_syscall)
                    .map(|(_, nr)| nr),
                count,
                first_ms: self.seen.get(k).map(|s| s.0),
                last_ms: self.seen.get(k).map(|s| s.1),
            })
            .collect();
        syscalls.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));
        syscalls
    }
}

impl Recorder {
    pub fn observe(&mut self, snapshot: &Snapshot) {
        for w in &snapshot.workloads {
            let t = self.workloads.entry(w.identity.cgroup_id).or_default();
            t.identity = w.identity.clone();
            t.inside_sandbox |= w.inside_sandbox;
            t.calls.observe(snapshot.t_ms, &w.counts);
            t.host.observe(snapshot.t_ms, &w.host_counts);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.values().all(|t| t.calls.counts.is_empty())
    }

    pub fn finish(self, base: Recording) -> Recording {
        let mut rec = base;
        rec.workloads = self
            .workloads
            .into_values()
            .map(|t| RecordedWorkload {
                first_ms: t.calls.seen.values().map(|s| s.0).min(),
                last_ms: t.calls.seen.values().map(|s| s.1).max(),
                syscalls: t.calls.syscalls(),
                inside_sandbox: t.inside_sandbox,
                host_syscalls: if t.inside_sandbox {
                    t.host.syscalls()
                } else {
                    Vec::new()
                },
                identity: t.identity,
            })
            .collect();
        rec
    }
}
