//! `sysfence report`: what a policy would deny, before anyone enforces it.
//!
//! Two kinds of evidence, one report:
//! - **offline** ([`from_recording`]): a candidate policy judged against a recording's
//!   exact counts with the probe's own decision function, no kernel, no root;
//! - **audit** ([`from_audit`]): the violations the agent logged for workloads bound
//!   to `audit` policies (from its JSON-lines log or its API). Each event stands for
//!   itself plus the `suppressed` events the kernel's rate limit held back, so counts
//!   are exact.
//!
//! Per workload: the would-be denials (count, first and last seen, an example
//! process), the policy change that would allow them, and a verdict.

pub mod command;
pub mod compare;
pub mod input;
pub mod render;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use probe_common::{Abi, Decision, decide, mode};
use serde::Serialize;

use crate::{
    clock::human_span,
    policy::{self, CompiledPolicy, model},
    record::Recording,
    watch::snapshot::{SyscallKey, WorkloadRef},
};
use input::AuditEvidence;

/// A candidate policy, with what its file denies explicitly (for suggestions).
pub struct Candidate {
    pub policy: CompiledPolicy,
    pub file: PathBuf,
    /// `spec.deny` as written.
    pub denied: BTreeSet<String>,
}

/// Load and compile one policy file, as `check` would (errors name file and line).
pub fn load_candidate(file: &Path) -> anyhow::Result<Candidate> {
    let (mut policies, warnings) = policy::load_files(&[file.to_path_buf()]).into_result()?;
    for w in &warnings {
        eprintln!("{w}");
    }
    let policy = match policies.len() {
        1 => policies.remove(0),
        0 => anyhow::bail!("{}: holds no SyscallPolicy", file.display()),
        n => anyhow::bail!("{}: holds {n} policies; give one", file.display()),
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let denied = match model::parse(file, &text) {
        Ok(model::Document::Policy(doc)) => doc.spec.deny.iter().map(|d| d.to_string()).collect(),
        _ => BTreeSet::new(),
    };
    Ok(Candidate {
        policy,
        file: file.to_path_buf(),
        denied,
    })
}

/// What a recorded workload's counts are when a sandbox stands between its application
/// and the host kernel; `None` for a workload on the host kernel.
pub fn sandbox_note(w: &crate::record::RecordedWorkload) -> Option<String> {
    let name = w.identity.display_name();
    match w.identity.runtime.as_str() {
        "runsc" if w.inside_sandbox => Some(format!(
            "{name} runs on runsc: its counts are the application's syscalls inside the \
             sandbox (gVisor's trace session); the sandbox's own host calls are the \
             recording's host_syscalls"
        )),
        "runsc" => Some(format!(
            "{name} runs on runsc: its counts are the sandbox's own host syscalls (the \
             Sentry's and the gofer's), not the application's"
        )),
        "kata" => Some(format!(
            "{name} runs on Kata: its counts are the VMM's host syscalls; nothing inside \
             the VM (the application's syscalls) is visible to sysfence"
        )),
        _ => None,
    }
}

/// One syscall a workload made that its policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub abi: String,
    pub syscall: String,
    /// `mount (i386)`, as tables print it.
    pub label: String,
    /// Exact number of calls.
    pub count: u64,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    /// An example offender (audit evidence only: counters carry no process).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub safe: bool,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadReport {
    pub workload: WorkloadRef,
    /// `namespace/pod/container`, else the container id or cgroup path.
    pub name: String,
    pub policy: String,
    pub mode: String,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Every call counted (offline evidence only).
    pub total_calls: Option<u64>,
    pub would_be_denials: u64,
    pub denials: Vec<Denial>,
    /// YAML to add to the policy so that these calls would be allowed.
    pub suggestion: Option<String>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DryRunReport {
    pub format: &'static str,
    pub version: u32,
    pub source: String,
    /// The candidate policy file, offline.
    pub candidate: Option<String>,
    pub generated_ms: u64,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub workloads: Vec<WorkloadReport>,
    /// What was left out, and why.
    pub notes: Vec<String>,
}

impl DryRunReport {
    /// Whether no workload would see a denial.
    pub fn safe(&self) -> bool {
        self.workloads.iter().all(|w| w.verdict.safe)
    }

    pub fn total_denials(&self) -> u64 {
        self.workloads.iter().map(|w| w.would_be_denials).sum()
    }
}

pub fn verdict(denials: &[Denial], from_ms: Option<u64>, to_ms: Option<u64>) -> Verdict {
    let n: u64 = denials.iter().map(|d| d.count).sum();
    if n == 0 {
        let span = match (from_ms, to_ms) {
            (Some(f), Some(t)) if t >= f => format!(" in {}", human_span(t - f)),
            _ => String::new(),
        };
        Verdict {
            safe: true,
            text: format!("safe to enforce: 0 would-be denials{span}"),
        }
    } else {
        let k = denials.len();
        Verdict {
            safe: false,
            text: format!(
                "not safe: {n} would-be denial{} of {k} syscall{}",
                if n == 1 { "" } else { "s" },
                if k == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The policy change that would allow `keys`, as YAML to merge into `spec`.
pub fn suggestion(
    policy_name: &str,
    keys: &[SyscallKey],
    candidate: Option<&Candidate>,
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let mut allow: BTreeSet<&str> = BTreeSet::new();
    let mut undeny: BTreeSet<&str> = BTreeSet::new();
    let mut per_abi: BTreeMap<Abi, BTreeSet<&str>> = BTreeMap::new();
    let mut unnameable: Vec<String> = Vec::new();
    for k in keys {
        let Some(abi) = k.abi().filter(|_| k.nameable()) else {
            unnameable.push(k.label());
            continue;
        };
        let Some(c) = candidate else {
            allow.insert(&k.name);
            if abi != Abi::X86_64 {
                per_abi.entry(abi).or_default().insert(&k.name);
            }
            continue;
        };
        if c.denied.contains(&k.name) {
            undeny.insert(&k.name);
        }
        let narrowed =
            abi != Abi::X86_64 && c.policy.abi_names.get(&abi) != Some(&c.policy.allowed_names);
        if narrowed {
            per_abi.entry(abi).or_default().insert(&k.name);
        } else if !c.policy.allowed_names.contains(&k.name) {
            allow.insert(&k.name);
        }
    }
    let mut out = String::new();
    if !undeny.is_empty() {
        out.push_str(&format!(
            "# policy `{policy_name}`: remove from spec.deny (deny wins over allow): {}\n",
            undeny.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if !allow.is_empty() {
        out.push_str(&format!(
            "# policy `{policy_name}`: add to spec.allow\nallow: [{}]\n",
            allow.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if !per_abi.is_empty() {
        match candidate {
            Some(c) => {
                out.push_str("# and to the narrowed ABI lists (spec.abi):\nabi:\n");
                for (abi, new) in &per_abi {
                    let mut all: BTreeSet<&str> = c
                        .policy
                        .abi_names
                        .get(abi)
                        .map(|s| s.iter().map(String::as_str).collect())
                        .unwrap_or_default();
                    all.extend(new.iter().copied());
                    out.push_str(&format!(
                        "  {}: [{}]\n",
                        abi_key(*abi),
                        all.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            None => {
                for (abi, names) in &per_abi {
                    out.push_str(&format!(
                        "# {} calls: if spec.abi.{} narrows that ABI, add {} there too\n",
                        abi.name(),
                        abi_key(*abi),
                        names.iter().copied().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    if !unnameable.is_empty() {
        out.push_str(&format!(
            "# cannot be allowed by name (no syscall of that number in the kernel's tables): {}\n",
            unnameable.join(", ")
        ));
    }
    Some(out)
}

fn abi_key(abi: Abi) -> &'static str {
    match abi {
        Abi::X86_64 => "x86_64",
        Abi::Ia32 => "ia32",
        Abi::X32 => "x32",
    }
}

/// Judge a candidate policy against a recording, offline.
pub fn from_recording(
    recording: &Recording,
    recording_file: &Path,
    candidate: &Candidate,
) -> DryRunReport {
    // The probe's own decision, with the candidate's allowlist in audit mode: every
    // call it would not allow is a violation.
    let mut slot = candidate.policy.enforcement(Ok(())).slot;
    slot.mode = mode::AUDIT;
    let mut workloads = Vec::new();
    for w in &recording.workloads {
        let mut denials = Vec::new();
        let mut total = 0;
        for s in &w.syscalls {
            total += s.count;
            let key = SyscallKey::new(&s.abi, &s.syscall);
            let denied = if key.is_new_namespace() {
                // Forks into a new namespace: a would-be denial under `namespaces: deny`.
                slot.flags & probe_common::SLOT_DENY_NAMESPACES != 0
            } else {
                // A recording holds counts, not arguments: a syscall the policy allows
                // for some arguments only is taken as allowed (its rules are judged live).
                let index = key.index();
                !(index.is_some_and(|i| slot.judges_arguments(i))
                    || decide(&slot, index, &probe_common::UnknownArgs) == Decision::Allow)
            };
            if !denied {
                continue;
            }
            denials.push(Denial {
                label: key.label(),
                abi: s.abi.clone(),
                syscall: s.syscall.clone(),
                count: s.count,
                first_ms: s.first_ms,
                last_ms: s.last_ms,
                pid: None,
                comm: None,
                exe: None,
            });
        }
        denials.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        let keys: Vec<SyscallKey> = denials
            .iter()
            .map(|d| SyscallKey::new(&d.abi, &d.syscall))
            .collect();
        // The workload was watched for the whole recording, calls or not.
        let (from_ms, to_ms) = (Some(recording.started_ms), Some(recording.ended_ms));
        let bare = w.identity.namespace.is_empty()
            && w.identity.pod.is_empty()
            && w.identity.container.is_empty()
            && w.identity.container_id.is_empty();
        workloads.push(WorkloadReport {
            name: match &recording.command {
                Some(cmd) if bare => format!("command `{}`", cmd.join(" ")),
                _ => w.identity.display_name(),
            },
            workload: w.identity.clone(),
            policy: candidate.policy.name.clone(),
            mode: candidate.policy.mode.as_str().to_string(),
            from_ms,
            to_ms,
            total_calls: Some(total),
            would_be_denials: denials.iter().map(|d| d.count).sum(),
            suggestion: suggestion(&candidate.policy.name, &keys, Some(candidate)),
            verdict: verdict(&denials, from_ms, to_ms),
            denials,
        });
    }
    let mut notes = vec![
        "offline: the candidate is judged against recorded counts; the recording holds no \
         process per call, so no example pid is shown (an audit run names them)"
            .to_string(),
    ];
    notes.extend(recording.workloads.iter().filter_map(sandbox_note));
    if let Some(cmd) = &recording.command {
        notes.push(format!("recorded command: {}", cmd.join(" ")));
    }
    DryRunReport {
        format: "sysfence-dry-run",
        version: 1,
        source: format!("recording {}", recording_file.display()),
        candidate: Some(candidate.file.display().to_string()),
        generated_ms: crate::clock::now_ms(),
        from_ms: Some(recording.started_ms),
        to_ms: Some(recording.ended_ms),
        workloads,
        notes,
    }
}

/// Would-be denials of workloads under `audit` policies, from the agent's evidence.
/// `candidate`, when given, makes the suggestions exact (spec.deny, spec.abi).
pub fn from_audit(ev: &AuditEvidence, candidate: Option<&Candidate>) -> DryRunReport {
    #[derive(Default)]
    struct Group {
        identity: WorkloadRef,
        policy: String,
        mode: String,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        denials: BTreeMap<SyscallKey, Denial>,
    }
    let mut groups: BTreeMap<(u64, String), Group> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut not_audit: BTreeMap<String, usize> = BTreeMap::new();
    for b in &ev.bindings {
        if b.mode != "audit" {
            *not_audit.entry(b.mode.clone()).or_default() += 1;
            continue;
        }
        let g = groups
            .entry((b.identity.cgroup_id, b.policy.clone()))
            .or_default();
        g.identity = b.identity.clone();
        g.policy = b.policy.clone();
        g.mode = b.mode.clone();
        g.from_ms = match (g.from_ms, b.since_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        g.to_ms = b.until_ms.or(ev.to_ms);
    }
    let mut other_outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for v in &ev.violations {
        if v.monitor_only || v.outcome != "audited" {
            *other_outcomes.entry(v.outcome.clone()).or_default() += v.calls();
            continue;
        }
        let g = groups
            .entry((v.workload.cgroup_id, v.policy.clone()))
            .or_insert_with(|| Group {
                // Bound before the evidence begins: the window is the evidence's.
                identity: v.workload.clone(),
                policy: v.policy.clone(),
                mode: "audit".into(),
                from_ms: ev.from_ms,
                to_ms: ev.to_ms,
                ..Group::default()
            });
        // The log's bound line may lack what the violation knows (pod metadata
        // arrives later from the CRI).
        if g.identity.pod.is_empty() && !v.workload.pod.is_empty() {
            g.identity = v.workload.clone();
        }
        let key = v.key();
        let t = v.time_ms();
        let d = g.denials.entry(key.clone()).or_insert_with(|| Denial {
            abi: key.abi.clone(),
            syscall: key.name.clone(),
            label: key.label(),
            count: 0,
            first_ms: t,
            last_ms: t,
            pid: Some(v.pid),
            comm: Some(v.comm.clone()).filter(|c| !c.is_empty()),
            exe: Some(v.exe.clone()).filter(|e| !e.is_empty()),
        });
        d.count += v.calls();
        if let Some(t) = t {
            if d.first_ms.is_none_or(|f| t < f) {
                d.first_ms = Some(t);
                d.pid = Some(v.pid);
                d.comm = Some(v.comm.clone()).filter(|c| !c.is_empty());
                d.exe = Some(v.exe.clone()).filter(|e| !e.is_empty());
            }
            d.last_ms = Some(d.last_ms.map_or(t, |l| l.max(t)));
        }
    }
    let mut workloads = Vec::new();
    for (_, g) in groups {
        let mut denials: Vec<Denial> = g.denials.into_values().collect();
        denials.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        let keys: Vec<SyscallKey> = denials
            .iter()
            .map(|d| SyscallKey::new(&d.abi, &d.syscall))
            .collect();
        let cand = candidate.filter(|c| c.policy.name == g.policy);
        workloads.push(WorkloadReport {
            name: g.identity.display_name(),
            suggestion: suggestion(&g.policy, &keys, cand),
            verdict: verdict(&denials, g.from_ms, g.to_ms),
            would_be_denials: denials.iter().map(|d| d.count).sum(),
            workload: g.identity,
            policy: g.policy,
            mode: g.mode,
            from_ms: g.from_ms,
            to_ms: g.to_ms,
            total_calls: None,
            denials,
        });
    }
    workloads.sort_by(|a, b| {
        b.would_be_denials
            .cmp(&a.would_be_denials)
            .then(a.name.cmp(&b.name))
    });
    for (mode, n) in not_audit {
        notes.push(format!(
            "{n} binding{} in `{mode}` mode left out (a dry run reads audit policies)",
            if n == 1 { "" } else { "s" }
        ));
    }
    for (outcome, n) in other_outcomes {
        notes.push(format!(
            "{n} call{} with outcome `{outcome}` left out (not an audit of this policy)",
            if n == 1 { "" } else { "s" }
        ));
    }
    if ev.skipped_lines > 0 {
        notes.push(format!("{} non-JSON line(s) skipped", ev.skipped_lines));
    }
    if workloads.is_empty() {
        notes.push("no workload bound to an `audit` policy in this evidence".to_string());
    }
    DryRunReport {
        format: "sysfence-dry-run",
        version: 1,
        source: ev.source.clone(),
        candidate: candidate.map(|c| c.file.display().to_string()),
        generated_ms: crate::clock::now_ms(),
        from_ms: ev.from_ms,
        to_ms: ev.to_ms,
        workloads,
        notes,
    }
}

#[cfg(test)]
mod tests;
