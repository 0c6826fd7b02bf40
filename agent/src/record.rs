//! `sysfence record`: learn a policy from what workloads do.
//!
//! Two ways to watch:
//! - live workloads matching filters, for a duration, through the standalone counting
//!   source of `watch` (its own probe, one monitor slot per workload, allow-all);
//! - one command, run in a fresh cgroup that it joins before `exec` (as `run` does),
//!   until it exits: its very first syscall is counted.
//!
//! Both write a recording (versioned JSON: per workload, per ABI and syscall, exact
//! counts with first and last seen) and a policy whose allowlist is every syscall
//! observed, in the union over the workloads (replicas of one workload make one
//! policy). The policy passes `sysfence check`; it comes out in `audit` mode, the next
//! step of adoption.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use probe_common::Abi;

use crate::{
    cgroup::{self, OwnedCgroup},
    clock::{human_span, iso_ms, now_ms},
    policy::{self, Mode},
    probe::{Probe, ProbeOptions},
    run,
    watch::{
        snapshot::{Filters, Snapshot, SyscallKey, WorkloadRef},
        standalone::{Discovery, Standalone, allow_all_slot, slot_keyed},
    },
};

pub use recording::{
    RECORDING_FORMAT, RECORDING_VERSION, RecordedSyscall, RecordedWorkload, Recorder, Recording,
};

/// How a learned policy is written.
#[derive(Clone, Debug)]
pub struct LearnOptions {
    pub name: String,
    pub mode: Mode,
    /// Sets to include, e.g. `runtime-default`.
    pub include: Vec<String>,
    /// Whether the recording began before the workload's first syscall (one command)
    /// or while it already ran (live workloads).
    pub from_first_syscall: bool,
    /// The file the policy will be written to: its includes are looked for beside it,
    /// then in `sets_dir` (see `policy::sources`). `None`: the shipped sets only.
    pub written_to: Option<PathBuf>,
    /// `--sets DIR`.
    pub sets_dir: Option<PathBuf>,
    /// Whose policy: `Sandbox` when the recording is of sandboxed workloads' own host
    /// processes (`record --sandbox-process`).
    pub target: policy::Target,
}

/// Labels that differ between replicas or rollouts: never put in a learned selector.
const VOLATILE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
    "apps.kubernetes.io/pod-index",
];

/// The pod uid kubelet labels every pod with: another for every new pod, so never in a
/// learned selector.
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The names kubelet labels every pod with. A controller's replacement pod has another
/// name: a learned selector keeps them only when the pod has no labels of its own.
const KUBELET_NAME_LABELS: &[&str] = &["io.kubernetes.pod.name", "io.kubernetes.container.name"];

/// The namespace kubelet labels every pod with: said by `namespace:` when the recording
/// filtered on it.
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The labels of a recorded pod a learned selector names: the stable ones its workloads
/// share, without the uid and names kubelet gives each new pod unless nothing else
/// names it.
fn selector_labels(
    common: BTreeMap<String, String>,
    namespace_selected: bool,
) -> BTreeMap<String, String> {
    let mut labels = common;
    labels.remove(POD_UID_LABEL);
    if namespace_selected {
        labels.remove(POD_NAMESPACE_LABEL);
    }
    let own = labels
        .keys()
        .any(|k| !KUBELET_NAME_LABELS.contains(&k.as_str()) && k != POD_NAMESPACE_LABEL);
    if own {
        labels.retain(|k, _| !KUBELET_NAME_LABELS.contains(&k.as_str()));
    }
    labels
}

/// A Kubernetes-style name from free text.
pub fn sanitize_name(text: &str) -> String {
    let mut s: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s: String = s
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    let s = s.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if s.is_empty() {
        "learned".to_string()
    } else {
        s.to_string()
    }
}

/// The names a set (and its includes) holds, found as an include in `from` would be
/// (`None`: among the shipped sets).
pub fn set_names(
    set: &str,
    from: Option<&Path>,
    sets_dir: Option<&Path>,
) -> anyhow::Result<BTreeSet<String>> {
    policy::set_names(set, from, sets_dir).map_err(|rejected| anyhow::anyhow!("{rejected}"))
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `[a, b, c]` wrapped at about 88 columns, continuation lines indented by `indent`.
fn flow_list(names: &[&str], indent: usize) -> String {
    let mut out = String::from("[");
    let mut line = 1;
    for (i, n) in names.iter().enumerate() {
        let piece = if i + 1 == names.len() {
            n.to_string()
        } else {
            format!("{n}, ")
        };
        if line + piece.len() > 80 && line > 1 {
            out = out.trim_end().to_string();
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = indent;
        }
        out.push_str(&piece);
        line += piece.len();
    }
    out.push(']');
    out
}

/// The learned policy as YAML. `observed` is the union of the counts.
pub fn learned_policy_yaml(
    recording: &Recording,
    options: &LearnOptions,
) -> anyhow::Result<String> {
    let observed = recording.union();
    let mut per_abi: BTreeMap<Abi, BTreeSet<&str>> = BTreeMap::new();
    let mut unnameable: Vec<String> = Vec::new();
    let forks_into_namespaces = observed
        .get(&SyscallKey::new_namespace())
        .copied()
        .unwrap_or(0);
    for k in observed.keys().filter(|k| !k.is_new_namespace()) {
        match k.abi().filter(|_| k.nameable()) {
            Some(abi) => {
                per_abi.entry(abi).or_default().insert(&k.name);
            }
            None => unnameable.push(format!("{} ({} calls)", k.label(), observed[k])),
        }
    }
    let total: u64 = observed.values().sum();
    let span = human_span(recording.ended_ms.saturating_sub(recording.started_ms));
    let mut y = String::new();
    y.push_str(&format!(
        "# Learned by `sysfence record` from {total} syscalls of {} workload{} over {span}\n",
        recording.workloads.len(),
        if recording.workloads.len() == 1 {
            ""
        } else {
            "s"
        },
    ));
    y.push_str(&format!(
        "# ({} to {}); the recording beside it has the exact counts.\n",
        iso_ms(recording.started_ms),
        iso_ms(recording.ended_ms)
    ));
    if let Some(cmd) = &recording.command {
        y.push_str(&format!("# Command: {}\n", cmd.join(" ")));
    }
    y.push_str(&format!(
        "# Mode `{}`: bind it in audit first, read `sysfence report`, then enforce.\n",
        options.mode.as_str()
    ));
    let sandboxed: BTreeSet<&str> = recording
        .workloads
        .iter()
        .filter(|w| !w.inside_sandbox)
        .map(|w| w.identity.runtime.as_str())
        .filter(|r| matches!(*r, "runsc" | "kata"))
        .collect();
    if options.target == policy::Target::Sandbox {
        y.push_str(
            "# The sandbox's own host processes (gVisor's Sentry and gofer, Kata's VMM), not \
             the\n# application: `target: sandbox` binds it to sandboxed workloads' host \
             cgroups only,\n# as written; the application's policy still applies inside.\n",
        );
    } else {
        for r in &sandboxed {
            y.push_str(&format!(
                "# Sandboxed ({r}): the host saw the sandbox's own syscalls (gVisor's Sentry, \
                 Kata's VMM),\n# not the application's. The agent applies this policy \
                 monitor-only unless its selector\n# names `runtime: {r}`; for the sandbox's \
                 own processes, record with\n# `--sandbox-process`.\n"
            ));
        }
    }
    y.push_str("apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n");
    y.push_str(&format!("  name: {}\n", options.name));
    y.push_str(&format!(
        "  description: {}\n",
        quote(&format!(
            "learned from {total} syscalls over {span} by sysfence record"
        ))
    ));
    y.push_str("spec:\n");
    // Selector from the filters.
    let f = &recording.filters;
    let mut sel = Vec::new();
    if options.target == policy::Target::Sandbox {
        y.push_str("  target: sandbox\n");
        // One runtime, else none (`check` then says the selector is too wide).
        if let [r] = sandboxed.iter().collect::<Vec<_>>()[..] {
            sel.push(format!("    runtime: {}", quote(r)));
        }
    }
    if let Some(ns) = &f.namespace {
        sel.push(format!("    namespace: {}", quote(ns)));
    }
    if let Some(c) = &f.container {
        sel.push(format!("    container: {}", quote(c)));
    }
    if let Some(g) = &f.cgroup {
        sel.push(format!(
            "    cgroupPath: {}",
            quote(g.trim_start_matches('/'))
        ));
    }
    if let Some(pod) = &f.pod {
        // No selector field names a pod: its replicas share labels, not a name.
        let mut common: Option<BTreeMap<String, String>> = None;
        for w in &recording.workloads {
            let mut l = w.identity.labels.clone();
            l.retain(|k, _| !VOLATILE_LABELS.contains(&k.as_str()));
            common = Some(match common {
                None => l,
                Some(c) => c.into_iter().filter(|(k, v)| l.get(k) == Some(v)).collect(),
            });
        }
        let common = common.map(|c| selector_labels(c, f.namespace.is_some()));
        match common.filter(|c| !c.is_empty()) {
            Some(labels) => {
                sel.push(format!(
                    "    # --pod {pod}: a selector names no pod; these are its labels (not the\n    \
                     # uid kubelet gives each pod, nor its name when it has labels of its own)"
                ));
                sel.push("    podLabels:\n      matchLabels:".to_string());
                for (k, v) in labels {
                    sel.push(format!("        {}: {}", quote(&k), quote(&v)));
                }
            }
            None => sel.push(format!(
                "    # --pod {pod}: a selector names no pod and its labels are unknown; \
                 add podLabels"
            )),
        }
    }
    if sel.iter().any(|l| !l.trim_start().starts_with('#')) {
        y.push_str("  selector:\n");
        for l in sel {
            y.push_str(&l);
            y.push('\n');
        }
    } else {
        for l in sel {
            y.push_str(&format!("  {}\n", l.trim_start()));
        }
        y.push_str(if recording.command.is_some() {
            "  # No selector: `sysfence run --policy` ignores it. Add one (namespace,\n  \
             # container, cgroupPath, ...) before the agent can bind this policy.\n"
        } else {
            "  # No selector: the recording had no filter. Add one (namespace, container,\n  \
             # cgroupPath, ...) before the agent can bind this policy.\n"
        });
    }
    y.push_str(&format!("  mode: {}\n", options.mode.as_str()));
    // Includes, and the honest account of what they add.
    let x86: Vec<&str> = per_abi
        .get(&Abi::X86_64)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    if options.include.is_empty() {
        if options.from_first_syscall {
            y.push_str(
                "  # Recorded from the command's first syscall (it joined the counting cgroup\n  \
                 # before exec), start-up included: nothing below was not observed. To run it\n  \
                 # as a container, add `include: [runtime-default]`: the runtime's last calls\n  \
                 # before the entrypoint (runc: write, close, getpid, futex, execve) are policed too.\n",
            );
        } else {
            y.push_str(
                "  # No set included: this allows only what was observed. The recording began\n  \
                 # while the workloads ran, so a restart may need more (the runtime's last\n  \
                 # calls before the entrypoint, the loader's start-up): consider\n  \
                 # `include: [runtime-default]`.\n",
            );
        }
    } else {
        let mut added = BTreeSet::new();
        for set in &options.include {
            added.extend(set_names(
                set,
                options.written_to.as_deref(),
                options.sets_dir.as_deref(),
            )?);
        }
        let observed_names: BTreeSet<&str> = per_abi.values().flatten().copied().collect();
        let unobserved = added
            .iter()
            .filter(|n| !observed_names.contains(n.as_str()))
            .count();
        let why = if options.from_first_syscall {
            "the command was recorded from its first syscall, but as a container it also\n  \
             # needs what the runtime does before the entrypoint"
        } else {
            "this recording began while the workloads already ran: it did not see what the\n  \
             # runtime and the program's start-up need (runc's last calls before the\n  \
             # entrypoint: write, close, getpid, futex, execve; the loader's openat, mmap,\n  \
             # mprotect)"
        };
        y.push_str(&format!(
            "  # include: {} is not what was observed: {why}.\n  \
             # It allows {unobserved} syscall names this recording never saw. Record with\n  \
             # `--no-include` to allow only what was seen.\n",
            options.include.join(", ")
        ));
        y.push_str(&format!("  include: [{}]\n", options.include.join(", ")));
    }
    y.push_str(&format!(
        "  # {} syscall name{} observed (x86_64)\n",
        x86.len(),
        if x86.len() == 1 { "" } else { "s" }
    ));
    y.push_str(&format!("  allow: {}\n", flow_list(&x86, 4)));
    // Namespaces: denied unless the workload made one (a fork with CLONE_NEW*, unshare,
    // setns), so that a learned policy keeps running what was recorded.
    let ns_calls: Vec<&str> = ["unshare", "setns"]
        .into_iter()
        .filter(|n| per_abi.values().any(|names| names.contains(n)))
        .collect();
    if forks_into_namespaces > 0 || !ns_calls.is_empty() {
        let mut what = Vec::new();
        if forks_into_namespaces > 0 {
            what.push(format!(
                "{forks_into_namespaces} fork{} with CLONE_NEW* flags",
                if forks_into_namespaces == 1 { "" } else { "s" }
            ));
        }
        what.extend(ns_calls.iter().map(|n| format!("`{n}`")));
        y.push_str(&format!(
            "  # The workload made namespaces while recorded ({}): allowed.\n  namespaces: allow\n",
            what.join(", ")
        ));
    } else {
        y.push_str(
            "  # No namespace was made while recorded: clone and clone3 are allowed without\n  \
             # CLONE_NEW* flags only, and unshare and setns are not allowed.\n  namespaces: deny\n",
        );
    }
    // Other ABIs: what was seen there, or nothing.
    y.push_str("  abi:\n");
    for (abi, key) in [(Abi::Ia32, "ia32"), (Abi::X32, "x32")] {
        match per_abi.get(&abi) {
            Some(names) if !names.is_empty() => {
                let names: Vec<&str> = names.iter().copied().collect();
                y.push_str(&format!(
                    "    # {} {} call name{} observed\n    {key}: {}\n",
                    names.len(),
                    abi.name(),
                    if names.len() == 1 { "" } else { "s" },
                    flow_list(&names, 6)
                ));
            }
            _ => y.push_str(&format!(
                "    {key}: deny   # no {} call was observed\n",
                abi.name()
            )),
        }
    }
    if !unnameable.is_empty() {
        y.push_str(&format!(
            "  # Observed but not expressible by name (always violations): {}\n",
            unnameable.join(", ")
        ));
    }
    Ok(y)
}

/// What `sysfence record` was asked.
pub struct RecordOptions {
    pub output: PathBuf,
    pub filters: Filters,
    pub duration: Option<Duration>,
    pub command: Vec<OsString>,
    pub name: Option<String>,
    pub mode: Mode,
    /// `None`: the default (runtime-default for live workloads, nothing for a command).
    pub include: Option<Vec<String>>,
    pub interval: Duration,
    pub max_workloads: u32,
    pub quiet: bool,
    /// Where discovery learns what a cgroup is (live workloads).
    pub discovery: Discovery,
    /// `--sets DIR`: where includes are looked for besides the output directory.
    pub sets: Option<PathBuf>,
    /// Record sandboxed workloads' own host processes (the Sentry), not their
    /// applications: no trace session, only runsc and Kata workloads, a `target:
    /// sandbox` policy.
    pub sandbox_process: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only stores an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as *const () as usize;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

fn base_recording(filters: Filters, command: Option<Vec<String>>, sample: Duration) -> Recording {
    Recording {
        format: RECORDING_FORMAT.to_string(),
        version: RECORDING_VERSION,
        sysfence: env!("CARGO_PKG_VERSION").to_string(),
        command,
        exit_code: None,
        filters,
        started_ms: now_ms(),
        ended_ms: 0,
        sample_ms: sample.as_millis() as u64,
        workloads: Vec::new(),
    }
}

/// Record, write the recording and the policy; returns the exit status to use (the
/// command's, for a command).
pub fn record(options: RecordOptions) -> anyhow::Result<i32> {
    let (recording, exit) = if options.command.is_empty() {
        let Some(duration) = options.duration else {
            bail!(
                "give `--duration` (e.g. `--duration 60s`) to record live workloads, or a \
                 command after `--`"
            );
        };
        (record_live(&options, duration)?, 0)
    } else if options.sandbox_process {
        bail!(
            "`--sandbox-process` records the host processes of live runsc or Kata workloads: \
             give filters and `--duration`, not a command"
        );
    } else {
        if options.duration.is_some() {
            bail!("`--duration` is for live workloads; a command is recorded until it exits");
        }
        if !options.filters.is_empty() {
            bail!("filters select live workloads; a command is recorded in a cgroup of its own");
        }
        let rec = record_command(&options)?;
        let code = rec.exit_code.unwrap_or(0);
        (rec, code)
    };
    if recording.workloads.iter().all(|w| w.syscalls.is_empty()) {
        bail!(
            "no syscall was recorded: {}",
            if recording.command.is_some() {
                "the command made none in its cgroup"
            } else {
                "no workload matched the filters during the recording (see `sysfence watch` \
                 with the same filters)"
            }
        );
    }
    let from_first_syscall = recording.command.is_some();
    let name = match &options.name {
        Some(n) => n.clone(),
        None => default_name(&recording),
    };
    let include = options.include.clone().unwrap_or_else(|| {
        if from_first_syscall {
            Vec::new()
        } else {
            vec!["runtime-default".to_string()]
        }
    });
    let yaml = learned_policy_yaml(
        &recording,
        &LearnOptions {
            name,
            mode: options.mode,
            include,
            from_first_syscall,
            written_to: Some(options.output.join("policy.yaml")),
            sets_dir: options.sets.clone(),
            target: if options.sandbox_process {
                policy::Target::Sandbox
            } else {
                policy::Target::Application
            },
        },
    )?;
    std::fs::create_dir_all(&options.output)
        .with_context(|| format!("creating {}", options.output.display()))?;
    let rec_path = options.output.join("recording.json");
    let policy_path = options.output.join("policy.yaml");
    std::fs::write(&rec_path, serde_json::to_string_pretty(&recording)? + "\n")
        .with_context(|| format!("writing {}", rec_path.display()))?;
    std::fs::write(&policy_path, &yaml)
        .with_context(|| format!("writing {}", policy_path.display()))?;
    // The same checks as `sysfence check`: a learned policy that fails them is a bug.
    let loaded = policy::load(std::slice::from_ref(&policy_path), options.sets.as_deref());
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        bail!(
            "the learned policy {} does not pass `sysfence check` (a sysfence bug)",
            policy_path.display()
        );
    }
    if !options.quiet {
        let union = recording.union();
        eprintln!(
            "sysfence: recorded {} syscalls ({} distinct) of {} workload{} over {}",
            union.values().sum::<u64>(),
            union.len(),
            recording.workloads.len(),
            if recording.workloads.len() == 1 {
                ""
            } else {
                "s"
            },
            human_span(recording.ended_ms.saturating_sub(recording.started_ms))
        );
        eprintln!(
            "sysfence: wrote {} and {} (passes `sysfence check`)",
            policy_path.display(),
            rec_path.display()
        );
        eprintln!(
            "next: sysfence report --policy {} --from {}",
            policy_path.display(),
            rec_path.display()
        );
    }
    Ok(exit)
}

fn default_name(r: &Recording) -> String {
    let base = if let Some(cmd) = &r.command {
        cmd.first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
            .unwrap_or_default()
    } else if let Some(c) = &r.filters.container {
        c.clone()
    } else if let Some(p) = &r.filters.pod {
        p.clone()
    } else if let Some(n) = &r.filters.namespace {
        n.clone()
    } else if let Some(g) = &r.filters.cgroup {
        g.rsplit('/')
            .find(|s| !s.contains('*') && !s.is_empty())
            .unwrap_or("cgroup")
            .to_string()
    } else {
        "all".to_string()
    };
    sanitize_name(&format!("learned-{base}"))
}

fn record_live(options: &RecordOptions, duration: Duration) -> anyhow::Result<Recording> {
    // Discovery walks the cgroup tree and asks the CRI: once a second is enough.
    let mut source = Standalone::new(
        options.filters.clone(),
        options.max_workloads,
        options.interval.max(Duration::from_secs(1)),
        options.discovery.clone(),
    )?;
    stop_on_signals();
    let mut base = base_recording(options.filters.clone(), None, options.interval);
    if !options.quiet {
        eprintln!(
            "sysfence: recording for {} (own probe, monitor only, one counting slot per \
             workload, {} slots); Ctrl-C ends early",
            human_span(duration.as_millis() as u64),
            source.max_workloads()
        );
    }
    let mut recorder = Recorder::default();
    let mut gvisor: Option<gvisor_tap::GvisorTap> = None;
    let mut passed_over = BTreeSet::new();
    let end = Instant::now() + duration;
    while Instant::now() < end && !STOP.load(Ordering::SeqCst) {
        let mut snapshot = source.poll()?;
        if options.sandbox_process {
            sandboxes_only(&mut snapshot, &mut passed_over);
        } else {
            gvisor_tap::inside_sandboxes(&mut snapshot, &source, &mut gvisor, options.quiet);
        }
        recorder.observe(&snapshot);
        for w in source.take_new() {
            if !options.quiet {
                eprintln!(
                    "sysfence: recording {} (cgroup {}) from now on",
                    w.display_name(),
                    w.cgroup
                );
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(options.interval));
    }
    if let Some(tap) = &gvisor {
        tap.settle();
    }
    let mut last = source.close()?;
    if options.sandbox_process {
        sandboxes_only(&mut last, &mut passed_over);
    }
    for w in passed_over.iter().filter(|_| !options.quiet) {
        eprintln!(
            "sysfence: passed over {w}: `--sandbox-process` records runsc and Kata workloads only"
        );
    }
    if let Some(tap) = gvisor {
        for w in &mut last.workloads {
            if tap.is_attached(&w.identity.container_id) {
                w.host_counts =
                    std::mem::replace(&mut w.counts, tap.counts_of(&w.identity.container_id));
                w.inside_sandbox = true;
            }
        }
        if tap.dropped() > 0 {
            eprintln!(
                "sysfence: warning: gVisor dropped {} trace points: the recording of its \
                 applications is short by as many calls",
                tap.dropped()
            );
        }
        tap.close();
    }
    recorder.observe(&last);
    base.ended_ms = now_ms();
    Ok(recorder.finish(base))
}

/// `--sandbox-process`: keep the workloads of sandboxed runtimes (their host counts are
/// the sandbox's own processes); name the others in `passed_over`.
fn sandboxes_only(snapshot: &mut Snapshot, passed_over: &mut BTreeSet<String>) {
    snapshot.workloads.retain(|w| {
        let keep = crate::model::Runtime::from_name(&w.identity.runtime).sandboxed();
        if !keep {
            passed_over.insert(format!(
                "{} ({})",
                w.identity.display_name(),
                if w.identity.runtime.is_empty() {
                    "no known runtime"
                } else {
                    &w.identity.runtime
                }
            ));
        }
        keep
    });
}

fn record_command(options: &RecordOptions) -> anyhow::Result<Recording> {
    let mut probe = Probe::load(ProbeOptions {
        max_slots: 1,
        attach: true,
        ..ProbeOptions::default()
    })?;
    probe.settle();
    let slot = 0;
    probe.fill_slot(slot, &allow_all_slot())?;
    let root = cgroup::v2_root()?;
    let cg = OwnedCgroup::create(&root, &format!("sysfence/record-{}", std::process::id()))?;
    probe.bind(cg.id, slot)?;
    // Cgroups the command creates below its own count with it.
    probe.set_ancestor_levels(1u32.checked_shl(cgroup::level(&cg.rel)).unwrap_or(0))?;
    let command: Vec<String> = options
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut base = base_recording(Filters::default(), Some(command), options.interval);
    let identity = WorkloadRef {
        cgroup_id: cg.id,
        cgroup: cg.rel.clone(),
        ..WorkloadRef::default()
    };
    let mut recorder = Recorder::default();
    let sample = |probe: &Probe, recorder: &mut Recorder| -> anyhow::Result<()> {
        recorder.observe(&Snapshot {
            t_ms: now_ms(),
            workloads: vec![crate::watch::snapshot::WorkloadCounts {
                identity: identity.clone(),
                counts: slot_keyed(probe, slot)?,
                ..Default::default()
            }],
        });
        Ok(())
    };
    let mut child = run::spawn_in_cgroup(&cg, &options.command)?;
    let mut last = Instant::now();
    let status = run::wait_forwarding(&mut child, || {
        if last.elapsed() >= options.interval {
            last = Instant::now();
            sample(&probe, &mut recorder)?;
        }
        Ok(())
    })?;
    cg.kill_all(Duration::from_secs(5))?;
    sample(&probe, &mut recorder)?;
    probe.unbind(cg.id)?;
    drop(cg);
    base.ended_ms = now_ms();
    base.exit_code = Some(run::exit_code(&status)?);
    Ok(recorder.finish(base))
}

mod gvisor_tap;
mod recording;
#[cfg(test)]
mod tests;
