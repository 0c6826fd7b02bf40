//! Policy compilation: parsed YAML in, per-ABI allow bitmaps out. Pure: no I/O, no
//! kernel, unit-tested without root.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use marked_yaml::Spanned;
use probe_common::{Abi, PolicySlot, action, mode};

use super::args::{self, RuleBook};
pub use super::choices::{Action, Fallback, KillScope, Mode, Target};
use super::{
    choices::parse_choice,
    diag::{Diagnostic, start},
    model::{AbiChoice, PolicyDoc, SetDoc},
    selector::{CompiledSelector, compile_selector, first_selector_marker},
};
use crate::syscall_table;

/// A policy ready to be put in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub name: String,
    pub file: PathBuf,
    pub mode: Mode,
    pub action: Action,
    pub fallback: Fallback,
    /// What a kill takes.
    pub kill_scope: KillScope,
    /// Whose syscalls: the application's, or a sandboxed runtime's own host processes'.
    pub target: Target,
    /// Glob under the cgroup v2 root, without a leading `/` (also in `selector`).
    pub cgroup_path: Option<String>,
    /// `spec.selector`, compiled: which workloads this policy binds to.
    pub selector: CompiledSelector,
    /// Line and column of `spec.selector` (or of the policy's name), for diagnostics.
    pub selector_at: (usize, usize),
    /// Allowed syscall indexes (see `probe_common::syscall_index`), all ABIs.
    pub allowed: BTreeSet<u32>,
    /// The names the allowlist was compiled from, after includes and denies.
    pub allowed_names: BTreeSet<String>,
    /// The names each ABI's allowlist was compiled from (`spec.abi` applied).
    pub abi_names: BTreeMap<Abi, BTreeSet<String>>,
    /// Syscalls allowed for some argument values only: per name, its rules (ORed). A
    /// name here is not in `allowed_names`.
    pub rules: RuleBook,
    /// The syscall indexes `rules` apply to (every ABI whose allowlist follows the
    /// policy's names), with their names.
    pub conditional: BTreeMap<u32, String>,
    /// Per syscall name, the errno `action: deny` fails it with, when not EPERM.
    pub errnos: BTreeMap<String, u32>,
    /// `namespaces: deny`.
    pub deny_namespaces: bool,
}

/// How the kernel will act on a policy, and why it differs from what was asked, if it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enforcement {
    pub slot: PolicySlot,
    pub degraded: Option<String>,
}

impl CompiledPolicy {
    /// Whether the policy allows syscall `nr` of `abi` with these argument registers: the
    /// probe's decision, made in user space (for syscalls the probe does not see, such
    /// as an application's inside gVisor). A syscall the tables do not know is not
    /// allowed.
    pub fn allows_call(&self, abi: Abi, nr: u64, args: &[u64; 6]) -> bool {
        let Some(index) = probe_common::syscall_index(abi, nr) else {
            return false;
        };
        if self.allowed.contains(&index) {
            return true;
        }
        let Some(name) = self.conditional.get(&index) else {
            return false;
        };
        self.rules.get(name).is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r.conds.iter().all(|c| c.to_probe(name).holds(args)))
        })
    }

    /// Whether this policy asks for the LSM deny path (enforce + `action: deny`).
    pub fn wants_deny(&self) -> bool {
        self.mode == Mode::Enforce && self.action == Action::Deny
    }

    /// The slot value for this policy. `lsm_deny` is `Ok` when this kernel and probe can
    /// deny through BPF LSM, else the reason; without it, `action: deny` falls back to
    /// its `fallback`, and says why.
    pub fn enforcement(&self, lsm_deny: Result<(), &str>) -> Enforcement {
        let mut slot = PolicySlot {
            live: 1,
            ..PolicySlot::EMPTY
        };
        for &index in &self.allowed {
            slot.set_allowed(index);
        }
        // One probe rule per rule, for the syscall's index in every ABI it applies to.
        // Capacity was checked by `compile`: what does not fit is never allowed.
        let mut by_name: BTreeMap<&str, [u32; 3]> = BTreeMap::new();
        for (&index, name) in &self.conditional {
            slot.set_conditional(index);
            if let Some((abi, _)) = probe_common::index_to_syscall(index) {
                let at = Abi::ALL.iter().position(|a| *a == abi).unwrap_or(0);
                by_name.entry(name).or_insert([probe_common::NO_SYSCALL; 3])[at] = index;
            }
        }
        let entries = by_name.iter().flat_map(|(name, syscalls)| {
            self.rules[*name].iter().map(move |r| (*name, *syscalls, r))
        });
        for ((name, syscalls, rule), entry) in entries.zip(slot.rules.iter_mut()) {
            entry.syscalls = syscalls;
            entry.count = rule.conds.len() as u32;
            for (c, out) in rule.conds.iter().zip(entry.conds.iter_mut()) {
                *out = c.to_probe(name);
            }
        }
        let errno_entries = self.errnos.iter().flat_map(|(name, &errno)| {
            Abi::ALL
                .into_iter()
                .filter_map(move |abi| syscall_table::index_of(abi, name))
                .map(move |index| probe_common::SyscallErrno {
                    syscall: index,
                    errno,
                })
        });
        for (entry, out) in errno_entries.zip(slot.errnos.iter_mut()) {
            *out = entry;
        }
        if self.deny_namespaces {
            slot.flags |= probe_common::SLOT_DENY_NAMESPACES;
        }
        if self.kill_scope == KillScope::Workload {
            slot.flags |= probe_common::SLOT_KILL_WORKLOAD;
        }
        slot.mode = match self.mode {
            Mode::Monitor => mode::MONITOR,
            Mode::Audit => mode::AUDIT,
            Mode::Enforce => mode::ENFORCE,
        };
        let mut degraded = None;
        slot.action = match (self.action, lsm_deny) {
            (Action::Kill, _) => action::KILL,
            (Action::Deny, Ok(())) => match self.fallback {
                Fallback::Kill => action::DENY_OR_KILL,
                Fallback::Allow => action::DENY_OR_ALLOW,
            },
            (Action::Deny, Err(why)) => {
                if self.mode == Mode::Enforce {
                    degraded = Some(format!(
                        "policy `{}`: action `deny` needs BPF LSM: {why}; falling back to `{}` \
                         (violations are reported as {})",
                        self.name,
                        match self.fallback {
                            Fallback::Kill => "kill",
                            Fallback::Allow => "allow",
                        },
                        match self.fallback {
                            Fallback::Kill => "killed-after: the syscall runs, then SIGKILL",
                            Fallback::Allow => "not-preventable: the syscall runs",
                        }
                    ));
                }
                match self.fallback {
                    Fallback::Kill => action::KILL,
                    Fallback::Allow => action::ALLOW,
                }
            }
        };
        // No hook returns clone3's ENOSYS under `kill` (or without BPF LSM): glibc, which
        // calls clone3 for every thread, would be killed. ENOSYS asks the caller to use
        // clone instead, so clone3 is allowed where clone would be: whatever its flags
        // if clone is allowed outright, without namespace flags if clone's rules keep
        // them clear (judged as `namespaces: deny` judges clone3).
        if !matches!(slot.action, action::DENY_OR_KILL | action::DENY_OR_ALLOW)
            && self.errnos.get("clone3") == Some(&args::ENOSYS)
        {
            let clone_rules = self.rules.get("clone");
            let outright = self.allowed_names.contains("clone");
            if outright || clone_rules.is_some_and(|r| args::rules_forbid_new_namespaces(r)) {
                for abi in Abi::ALL {
                    let (Some(clone), Some(clone3)) = (
                        syscall_table::index_of(abi, "clone"),
                        syscall_table::index_of(abi, "clone3"),
                    ) else {
                        continue;
                    };
                    if self.allowed.contains(&clone) || self.conditional.contains_key(&clone) {
                        slot.set_allowed(clone3);
                    }
                }
                if !outright {
                    slot.flags |= probe_common::SLOT_DENY_NAMESPACES;
                }
            }
        }
        Enforcement { slot, degraded }
    }
}

/// Named syscall sets that policies `include`.
#[derive(Clone, Debug, Default)]
pub struct SetCatalog {
    sets: BTreeMap<String, Arc<(PathBuf, SetDoc)>>,
    /// Includes that could not be resolved, by the including file and the set's name:
    /// why (where it was looked for). See `policy::sources`.
    unresolved: BTreeMap<(PathBuf, String), Unresolved>,
}

/// Why an `include` found no set, for its error: the message and what was searched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub message: String,
    pub help: String,
}

impl SetCatalog {
    /// Add a set; a later set of the same name replaces an earlier one (a local file
    /// overrides a shipped set).
    pub fn insert(&mut self, path: PathBuf, set: SetDoc) {
        self.insert_shared(Arc::new((path, set)));
    }

    /// Add a set already parsed for another catalog.
    pub fn insert_shared(&mut self, entry: Arc<(PathBuf, SetDoc)>) {
        self.sets.insert(entry.1.metadata.name.to_string(), entry);
    }

    /// Record why `include: [name]` in `from` found nothing; its error says so.
    pub fn note_unresolved(&mut self, from: &Path, name: &str, why: Unresolved) {
        self.unresolved
            .insert((from.to_path_buf(), name.to_string()), why);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&(PathBuf, SetDoc)> {
        self.sets.get(name).map(|e| &**e)
    }

    pub fn get_shared(&self, name: &str) -> Option<&Arc<(PathBuf, SetDoc)>> {
        self.sets.get(name)
    }

    /// Check every set's own names and includes.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        for entry in self.sets.values() {
            let (path, set) = &**entry;
            for name in &set.spec.syscalls {
                check_name(path, name, &mut diags);
            }
            if let Some(v) = &set.spec.namespaces
                && !matches!(v.as_str(), "deny" | "allow")
            {
                diags.push(
                    Diagnostic::error(
                        path,
                        start(v.span()),
                        format!("unknown namespaces choice `{}`", **v),
                    )
                    .with_help(
                        "namespaces is `deny` (no new namespace, by any syscall) or `allow`",
                    ),
                );
            }
            let mut out = BTreeSet::new();
            let mut stack = vec![set.metadata.name.to_string()];
            let mut done = BTreeSet::new();
            for inc in &set.spec.include {
                self.expand(path, inc, &mut stack, &mut done, &mut out, &mut diags);
            }
        }
        diags
    }

    /// Add the names of set `name` (and its includes) to `out`. `stack` is the chain
    /// of sets being expanded (a set in it again is a cycle); `done` the sets already
    /// in `out` (a set included twice, directly or through others, is expanded once:
    /// no diamond of includes can blow up).
    fn expand(
        &self,
        path: &Path,
        name: &Spanned<String>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut BTreeSet<String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let Some((set_path, set)) = self.get(name.as_str()) else {
            let why = self
                .unresolved
                .get(&(path.to_path_buf(), name.to_string()))
                .cloned()
                .unwrap_or_else(|| Unresolved {
                    message: format!("unknown set `{}`", **name),
                    help: format!(
                        "known sets: {}",
                        self.names().collect::<Vec<_>>().join(", ")
                    ),
                });
            diags
                .push(Diagnostic::error(path, start(name.span()), why.message).with_help(why.help));
            return;
        };
        if stack.len() >= MAX_INCLUDE_DEPTH {
            diags.push(
                Diagnostic::error(
                    path,
                    start(name.span()),
                    format!(
                        "includes nested deeper than {MAX_INCLUDE_DEPTH} sets: {} -> {}",
                        stack.join(" -> "),
                        **name
                    ),
                )
                .with_help("flatten the chain of included sets"),
            );
            return;
        }
        if stack.iter().any(|s| s == name.as_str()) {
            diags.push(Diagnostic::error(
                path,
                start(name.span()),
                format!(
                    "set `{}` includes itself: {} -> {}",
                    **name,
                    stack.join(" -> "),
                    **name
                ),
            ));
            return;
        }
        if !done.insert(name.to_string()) {
            return;
        }
        stack.push(name.to_string());
        for inc in &set.spec.include {
            self.expand(set_path, inc, stack, done, out, diags);
        }
        out.extend(set.spec.syscalls.iter().map(|s| s.to_string()));
        stack.pop();
    }
}

/// How deep a chain of included sets may go.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// i386 syscalls that multiplex many operations behind one number and a pointer.
const MULTIPLEXERS: &[(&str, &str)] = &[
    (
        "socketcall",
        "it multiplexes every socket operation (socket, connect, bind, accept, sendmsg, ...)",
    ),
    (
        "ipc",
        "it multiplexes every System V IPC operation (semop, msgsnd, shmat, ...)",
    ),
];

const IO_URING: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Syscall names in backquotes, joined by `sep`, for a message.
fn quoted(names: &[&str], sep: &str) -> String {
    names
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Syscalls that create namespaces through a flag argument, as `unshare` does.
const NAMESPACE_BY_FLAGS: &[&str] = &["clone", "clone3"];

/// Syscalls that make a sandbox escape or blind the agent easy. Allowing one is legal
/// but worth a warning.
const SENSITIVE: &[(&str, &str)] = &[
    ("bpf", "it can load programs that blind or bypass sysfence"),
    (
        "perf_event_open",
        "it can attach programs and read kernel data",
    ),
    ("ptrace", "it can take over other processes"),
    ("process_vm_writev", "it can write other processes' memory"),
    ("process_vm_readv", "it can read other processes' memory"),
    ("kexec_load", "it can replace the running kernel"),
    ("init_module", "it loads kernel code"),
    ("finit_module", "it loads kernel code"),
];

pub(super) fn check_name(path: &Path, name: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> bool {
    if syscall_table::all_names().contains(name.as_str()) {
        return true;
    }
    let mut d = Diagnostic::error(
        path,
        start(name.span()),
        format!("unknown syscall `{}`", **name),
    );
    let hints = syscall_table::suggestions(name);
    d = if hints.is_empty() {
        d.with_help("names are those of the kernel's syscall tables, e.g. `openat`, `getppid`")
    } else {
        d.with_help(format!("did you mean `{}`?", hints.join("`, `")))
    };
    diags.push(d);
    false
}

/// Compile one policy. `Err` holds at least one error; `Ok` may carry warnings.
pub fn compile(
    path: &Path,
    doc: &PolicyDoc,
    catalog: &SetCatalog,
) -> Result<(CompiledPolicy, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let spec = &doc.spec;
    let name = doc.metadata.name.to_string();
    if !valid_name(&name) {
        diags.push(
            Diagnostic::error(
                path,
                start(doc.metadata.name.span()),
                format!("invalid name `{name}`"),
            )
            .with_help("use lowercase letters, digits, `-` and `.`, as Kubernetes names"),
        );
    }

    let mode = parse_choice(
        path,
        spec.mode.as_ref(),
        "mode",
        Mode::Audit,
        Mode::NAMES,
        Mode::parse,
        &mut diags,
    );
    let action = parse_choice(
        path,
        spec.action.as_ref(),
        "action",
        Action::Kill,
        "kill, deny",
        |s| match s {
            "kill" => Some(Action::Kill),
            "deny" => Some(Action::Deny),
            _ => None,
        },
        &mut diags,
    );
    let fallback = parse_choice(
        path,
        spec.fallback.as_ref(),
        "fallback",
        Fallback::Kill,
        "kill, allow",
        |s| match s {
            "kill" => Some(Fallback::Kill),
            "allow" => Some(Fallback::Allow),
            _ => None,
        },
        &mut diags,
    );
    if let Some(f) = &spec.fallback
        && action != Action::Deny
    {
        diags.push(
            Diagnostic::warning(
                path,
                start(f.span()),
                "`fallback` has no effect unless `action: deny`",
            )
            .with_help("remove it, or set `action: deny`"),
        );
    }

    let kill_scope = parse_choice(
        path,
        spec.kill_scope.as_ref(),
        "killScope",
        KillScope::Workload,
        KillScope::NAMES,
        KillScope::parse,
        &mut diags,
    );
    if let Some(k) = &spec.kill_scope
        && !(mode == Mode::Enforce && (action == Action::Kill || fallback == Fallback::Kill))
    {
        diags.push(
            Diagnostic::warning(path, start(k.span()), "`killScope` has no effect: nothing is killed")
                .with_help("it applies under `mode: enforce` with `action: kill`, or `action: deny` with `fallback: kill`"),
        );
    }

    let target = parse_choice(
        path,
        spec.target.as_ref(),
        "target",
        Target::Application,
        Target::NAMES,
        Target::parse,
        &mut diags,
    );

    let selector = spec
        .selector
        .as_ref()
        .map(|sel| compile_selector(path, sel, &mut diags))
        .unwrap_or_default();
    if let (Target::Sandbox, Some(t)) = (target, &spec.target)
        && let Some(r) = spec.selector.as_ref().and_then(|s| s.runtime.as_ref())
        && !crate::model::Runtime::from_name(r.as_str()).sandboxed()
    {
        diags.push(
            Diagnostic::warning(
                path,
                start(t.span()),
                format!("`target: sandbox` never binds: runtime `{}` runs no sandbox", **r),
            )
            .with_help("a sandbox policy polices runsc's or Kata's host processes: select `runtime: runsc`"),
        );
    }
    let cgroup_path = selector.cgroup_path.as_ref().map(|g| g.text.clone());
    let selector_at = spec
        .selector
        .as_ref()
        .and_then(first_selector_marker)
        .or_else(|| start(doc.metadata.name.span()))
        .map_or((0, 0), |m| (m.line(), m.column()));
    // Names: includes, then allow, minus deny.
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut done = BTreeSet::new();
    for inc in &spec.include {
        let mut stack = Vec::new();
        catalog.expand(path, inc, &mut stack, &mut done, &mut names, &mut diags);
    }
    let mut listed: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
    for n in &spec.allow {
        if check_name(path, n, &mut diags) {
            if listed.insert(n.as_str(), n).is_some() {
                diags.push(Diagnostic::warning(
                    path,
                    start(n.span()),
                    format!("`{}` is listed twice in allow", **n),
                ));
            }
            names.insert(n.to_string());
        }
    }
    for n in &spec.deny {
        if check_name(path, n, &mut diags) {
            if let Some(a) = listed.get(n.as_str()) {
                diags.push(
                    Diagnostic::warning(
                        path,
                        start(n.span()),
                        format!("`{}` is in both allow and deny: deny wins", **n),
                    )
                    .with_help(format!(
                        "allowed at line {}",
                        a.span().start().map_or(0, |m| m.line())
                    )),
                );
            }
            names.remove(n.as_str());
        }
    }
    let (rules, errnos, deny_namespaces) = args::compile_arguments(
        path, spec, catalog, &done, &mut names, &listed, mode, action, &mut diags,
    );
    for (syscall, why) in SENSITIVE {
        if let Some(n) = listed.get(syscall) {
            diags.push(Diagnostic::warning(
                path,
                start(n.span()),
                format!("allowing `{syscall}` weakens the sandbox: {why}"),
            ));
        }
    }

    // Each ABI's allowlist, from the same names unless `spec.abi` says otherwise.
    let denied: BTreeSet<&str> = spec.deny.iter().map(|d| d.as_str()).collect();
    let mut per_abi: BTreeMap<Abi, BTreeSet<String>> = BTreeMap::new();
    let mut follows_names: BTreeSet<Abi> = BTreeSet::new();
    for abi in Abi::ALL {
        let choice = spec.abi.as_ref().and_then(|a| match abi {
            Abi::X86_64 => None,
            Abi::Ia32 => a.ia32.as_ref(),
            Abi::X32 => a.x32.as_ref(),
        });
        let same = match choice.map(|c| &**c) {
            None => true,
            Some(AbiChoice::Keyword(k)) => k == "same",
            Some(AbiChoice::Names(_)) => false,
        };
        if same {
            follows_names.insert(abi);
        }
        let abi_names = match choice.map(|c| (&**c, c.span())) {
            None => names.clone(),
            Some((AbiChoice::Keyword(k), _)) if k == "same" => names.clone(),
            Some((AbiChoice::Keyword(k), _)) if k == "deny" => BTreeSet::new(),
            Some((AbiChoice::Keyword(k), span)) => {
                diags.push(
                    Diagnostic::error(path, start(span), format!("unknown ABI choice `{k}`"))
                        .with_help("use `same`, `deny`, or a list of syscall names"),
                );
                BTreeSet::new()
            }
            Some((AbiChoice::Names(list), _)) => {
                let mut set = BTreeSet::new();
                for n in list {
                    if !check_name(path, n, &mut diags) {
                        continue;
                    }
                    if syscall_table::number(abi, n).is_none() {
                        diags.push(Diagnostic::warning(
                            path,
                            start(n.span()),
                            format!("`{}` has no {} number: ignored", **n, abi.name()),
                        ));
                    } else if !denied.contains(n.as_str()) {
                        set.insert(n.to_string());
                    }
                }
                set
            }
        };
        per_abi.insert(abi, abi_names);
    }
    // A name listed in `allow` that no allowed ABI has does nothing: say so.
    for n in &spec.allow {
        // A name with argument rules (clone under `namespaces: deny`) is allowed on
        // their terms by the ABIs that follow `allow`.
        let ruled = rules.contains_key(n.as_str());
        let exists_somewhere = Abi::ALL.into_iter().any(|abi| {
            syscall_table::number(abi, n).is_some()
                && (per_abi[&abi].contains(n.as_str()) || ruled && follows_names.contains(&abi))
        });
        if !exists_somewhere
            && !denied.contains(n.as_str())
            && syscall_table::all_names().contains(n.as_str())
        {
            let abis: Vec<&str> = syscall_table::abis_of(n).iter().map(|a| a.name()).collect();
            diags.push(Diagnostic::warning(
                path,
                start(n.span()),
                format!(
                    "`{}` exists only for {}, which this policy does not allow it for",
                    **n,
                    abis.join(", ")
                ),
            ));
        }
    }
    let at_policy = start(doc.metadata.name.span());
    for (syscall, what) in MULTIPLEXERS {
        if per_abi[&Abi::Ia32].contains(*syscall) {
            let at = listed.get(syscall).map_or(at_policy, |n| start(n.span()));
            diags.push(
                Diagnostic::warning(path, at, format!("allowing `{syscall}` (i386) widens the policy: {what}"))
                    .with_help("sysfence judges the syscall number only; deny it, or set `abi: {ia32: deny}` if no 32-bit code runs"),
            );
        }
    }
    // Whether any ABI's allowlist has the syscall, and the ones of `names` that are.
    let allowed_anywhere = |s: &str| per_abi.values().any(|n| n.contains(s));
    let allowed_of = |names: &[&'static str]| -> Vec<&'static str> {
        names
            .iter()
            .copied()
            .filter(|s| allowed_anywhere(s))
            .collect()
    };
    let ring = allowed_of(IO_URING);
    if !ring.is_empty() {
        let at = ring
            .iter()
            .find_map(|s| listed.get(s))
            .map_or(at_policy, |n| start(n.span()));
        diags.push(
            Diagnostic::warning(
                path,
                at,
                format!(
                    "allowing {} opens a bypass: operations submitted through an io_uring ring \
                     (openat, read, write, connect, accept, send, recv, ...) never pass sys_enter, \
                     so this policy neither sees nor stops them",
                    quoted(&ring, ", ")
                ),
            )
            .with_help("deny io_uring_setup unless the workload needs io_uring"),
        );
    }

    // Denying `unshare` reads as "no new namespaces", which it is not while clone and
    // clone3 are allowed: judged by number, their CLONE_NEW* flags pass.
    let mut by_flags = allowed_of(NAMESPACE_BY_FLAGS);
    for (syscall, rs) in &rules {
        if let Some(&s) = NAMESPACE_BY_FLAGS.iter().find(|s| **s == syscall.as_str())
            && !by_flags.contains(&s)
            && !(s == "clone" && args::rules_forbid_new_namespaces(rs))
        {
            by_flags.push(s);
        }
    }
    if !allowed_anywhere("unshare") && !deny_namespaces && !by_flags.is_empty() {
        let at = spec
            .deny
            .iter()
            .find(|d| d.as_str() == "unshare")
            .map_or(at_policy, |n| start(n.span()));
        diags.push(
            Diagnostic::warning(
                path,
                at,
                format!(
                    "`unshare` is not allowed, but {} {}: they create the same namespaces \
                     (CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, ...), and no rule of this policy \
                     keeps their CLONE_NEW* flags clear, so it does not stop new namespaces",
                    quoted(&by_flags, " and "),
                    if by_flags.len() == 1 { "is" } else { "are" }
                ),
            )
            .with_help(if by_flags == ["clone3"] {
                "clone3 passes its flags in memory and sysfence does not judge them: deny it \
                 with `errno: {clone3: ENOSYS}` and `action: deny` (glibc then falls back to \
                 clone, whose flags are judged), as Docker's default profile does"
            } else {
                "add `namespaces: deny` (it denies unshare, setns and clone's CLONE_NEW* \
                 flags), or a rule on clone's flags as Docker's default profile has"
            }),
        );
    }

    let mut conditional = BTreeMap::new();
    for name in rules.keys() {
        for &abi in &follows_names {
            if let Some(index) = syscall_table::index_of(abi, name) {
                conditional.insert(index, name.clone());
            }
        }
    }
    let rule_entries: usize = conditional
        .values()
        .collect::<BTreeSet<_>>()
        .iter()
        .map(|n| rules[*n].len())
        .sum();
    if rule_entries > probe_common::MAX_ARG_RULES {
        diags.push(
            Diagnostic::error(
                path,
                at_policy,
                format!(
                    "{rule_entries} argument rules; a slot holds {}",
                    probe_common::MAX_ARG_RULES
                ),
            )
            .with_help("merge rules: one rule may name several syscalls, and a MASKED_EQ or a range (GE and LE) may stand for several EQ rules"),
        );
    }
    let errno_entries: usize = errnos
        .keys()
        .map(|n| {
            Abi::ALL
                .into_iter()
                .filter(|a| syscall_table::number(*a, n).is_some())
                .count()
        })
        .sum();
    if errno_entries > probe_common::MAX_ERRNOS {
        diags.push(Diagnostic::error(
            path,
            at_policy,
            format!(
                "{} syscalls with their own errno ({errno_entries} over all ABIs); a slot holds {}",
                errnos.len(),
                probe_common::MAX_ERRNOS
            ),
        ));
    }

    let mut allowed = BTreeSet::new();
    for (abi, abi_names) in &per_abi {
        for n in abi_names {
            if let Some(index) = syscall_table::index_of(*abi, n) {
                allowed.insert(index);
            }
        }
    }
    if names.is_empty() && rules.is_empty() && mode == Mode::Enforce {
        diags.push(Diagnostic::warning(
            path,
            start(doc.metadata.name.span()),
            "the allowlist is empty: every syscall of a bound workload is a violation",
        ));
    }

    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    Ok((
        CompiledPolicy {
            name,
            file: path.to_path_buf(),
            mode,
            action,
            fallback,
            kill_scope,
            target,
            cgroup_path,
            selector,
            selector_at,
            allowed,
            allowed_names: names,
            abi_names: per_abi,
            rules,
            conditional,
            errnos,
            deny_namespaces,
        },
        diags,
    ))
}

/// Kubernetes-style name: lowercase alphanumerics, `-` and `.`, 1 to 253 characters.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Pairs of policies that could bind the same workload with equal specificity: an
/// error each, at the later policy's selector.
pub fn conflicts(policies: &[CompiledPolicy]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (i, a) in policies.iter().enumerate() {
        for b in &policies[i + 1..] {
            if a.selector.is_empty()
                || a.target != b.target
                || a.selector.specificity() != b.selector.specificity()
                || !a.selector.may_overlap(&b.selector)
            {
                continue;
            }
            let mut d = Diagnostic::error(
                &b.file,
                None,
                format!(
                    "selector conflict: policies `{}` and `{}` can select the same workload with equal specificity {}",
                    a.name,
                    b.name,
                    b.selector.specificity()
                ),
            )
            .with_help(format!(
                "`{}` is at {}:{}:{}; make one selector more specific (add a field or a label requirement) or make them disjoint (e.g. different namespaces)",
                a.name,
                a.file.display(),
                a.selector_at.0,
                a.selector_at.1
            ));
            (d.line, d.column) = b.selector_at;
            diags.push(d);
        }
    }
    diags
}
