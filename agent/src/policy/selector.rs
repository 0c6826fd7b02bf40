//! Selectors: which workloads a policy binds to. Pure: compiled from the YAML model,
//! matched against [`Workload`]s, and compared with each other for conflicts.
//!
//! Fields and their matching (all set fields must match; a selector with no field
//! matches nothing):
//!
//! | field | matches | against |
//! | --- | --- | --- |
//! | `namespace` | exactly | the pod's namespace |
//! | `podLabels` | Kubernetes label-selector semantics (`matchLabels`, `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`) | the pod's labels; a workload outside any pod never matches |
//! | `container` | exactly | the container's name (CRI metadata, or the `io.kubernetes.container.name` / `io.kubernetes.cri.container-name` annotation) |
//! | `image` | glob, `*` matches any run of characters, `/` included | the image name (`docker.io/library/nginx:1.25`), or its id when the name is unknown |
//! | `runtime` | exactly | a known OCI runtime name (`runc`, `crun`, `runsc`, `kata`, `youki`) against the runtime the agent recognised; any other name against the CRI runtime handler (RuntimeClass) |
//! | `cgroupPath` | glob under the cgroup v2 root, `*` stops at `/` | the workload's cgroup path |
//!
//! **Specificity** (see [`CompiledSelector::specificity`]): one point per field set among
//! `namespace`, `container`, `image`, `runtime` and `cgroupPath`, plus one point per
//! label requirement of `podLabels` (each `matchLabels` entry and each
//! `matchExpressions` entry; an empty `podLabels: {}` counts one). The most specific
//! matching policy wins. Two policies that can match one workload with the same
//! specificity are a conflict, which `check` and the agent reject.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use glob::{MatchOptions, Pattern};
use marked_yaml::Spanned;

use super::diag::{Diagnostic, start};
use super::model::Selector;
use crate::model::Workload;

/// `*` stops at `/`: `kubepods/*/pod*/*` matches one level per `*`.
pub const PATH_MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// `*` crosses `/`: `docker.io/library/*` matches every image of that repository tree.
pub const IMAGE_MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// A glob as written, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pub text: String,
    pattern: Pattern,
    path_like: bool,
}

impl Glob {
    pub fn path(text: &str) -> Result<Glob, glob::PatternError> {
        Ok(Glob {
            text: text.to_string(),
            pattern: Pattern::new(text)?,
            path_like: true,
        })
    }

    pub fn image(text: &str) -> Result<Glob, glob::PatternError> {
        Ok(Glob {
            text: text.to_string(),
            pattern: Pattern::new(text)?,
            path_like: false,
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.pattern.matches_with(
            s,
            if self.path_like {
                PATH_MATCH
            } else {
                IMAGE_MATCH
            },
        )
    }

    fn is_literal(text: &str) -> bool {
        !text.contains(['*', '?', '['])
    }

    /// Whether some string could match both globs. Conservative: `false` only when
    /// that is certain (different literals, a literal the other glob rejects,
    /// incompatible literal prefixes or suffixes, or, for paths, different depths).
    pub fn may_overlap(&self, other: &Glob) -> bool {
        if self.path_like && other.path_like {
            if self.text.contains("**") || other.text.contains("**") {
                return true;
            }
            let a: Vec<&str> = self.text.split('/').collect();
            let b: Vec<&str> = other.text.split('/').collect();
            if a.len() != b.len() {
                return false;
            }
            a.iter().zip(&b).all(|(x, y)| texts_may_overlap(x, y))
        } else {
            texts_may_overlap(&self.text, &other.text)
        }
    }
}

/// Whether two glob texts (one path component, or a whole image glob) can match a
/// common string.
fn texts_may_overlap(a: &str, b: &str) -> bool {
    match (Glob::is_literal(a), Glob::is_literal(b)) {
        (true, true) => a == b,
        (true, false) => Pattern::new(b).is_ok_and(|p| p.matches_with(a, IMAGE_MATCH)),
        (false, true) => Pattern::new(a).is_ok_and(|p| p.matches_with(b, IMAGE_MATCH)),
        (false, false) => {
            let prefix = |s: &str| s[..s.find(['*', '?', '[']).unwrap_or(s.len())].to_string();
            let suffix = |s: &str| s[s.rfind(['*', '?', ']']).map_or(0, |i| i + 1)..].to_string();
            let (pa, pb) = (prefix(a), prefix(b));
            let (sa, sb) = (suffix(a), suffix(b));
            (pa.starts_with(&pb) || pb.starts_with(&pa)) && (sa.ends_with(&sb) || sb.ends_with(&sa))
        }
    }
}

/// A label-selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Op {
    pub const NAMES: &'static str = "In, NotIn, Exists, DoesNotExist";

    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "In" => Some(Op::In),
            "NotIn" => Some(Op::NotIn),
            "Exists" => Some(Op::Exists),
            "DoesNotExist" => Some(Op::DoesNotExist),
            _ => None,
        }
    }
}

/// One requirement; a `matchLabels` entry `k: v` is `k In [v]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: BTreeSet<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::In => value.is_some_and(|v| self.values.contains(v)),
            Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// A Kubernetes label selector: every requirement must hold. No requirement: every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether some label set satisfies every requirement of `self` and of `other`.
    /// Exact: requirements on different keys are independent, and per key the
    /// combination is decided by set arithmetic.
    pub fn may_overlap(&self, other: &LabelSelector) -> bool {
        Self::satisfiable(self.requirements.iter().chain(&other.requirements))
    }

    /// Whether any label set satisfies all these requirements.
    pub fn satisfiable<'a>(requirements: impl Iterator<Item = &'a Requirement>) -> bool {
        #[derive(Default)]
        struct Key {
            exists: bool,
            absent: bool,
            allowed: Option<BTreeSet<String>>,
            excluded: BTreeSet<String>,
        }
        let mut keys: BTreeMap<&str, Key> = BTreeMap::new();
        for r in requirements {
            let k = keys.entry(r.key.as_str()).or_default();
            match r.op {
                Op::In => {
                    k.exists = true;
                    k.allowed = Some(match k.allowed.take() {
                        None => r.values.clone(),
                        Some(a) => a.intersection(&r.values).cloned().collect(),
                    });
                }
                Op::NotIn => k.excluded.extend(r.values.iter().cloned()),
                Op::Exists => k.exists = true,
                Op::DoesNotExist => k.absent = true,
            }
        }
        keys.values().all(|k| {
            if k.absent {
                return !k.exists;
            }
            match &k.allowed {
                Some(a) => a.iter().any(|v| !k.excluded.contains(v)),
                None => true,
            }
        })
    }
}

/// `spec.selector`, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledSelector {
    pub namespace: Option<String>,
    pub pod_labels: Option<LabelSelector>,
    pub container: Option<String>,
    pub image: Option<Glob>,
    pub runtime: Option<String>,
    pub cgroup_path: Option<Glob>,
}

/// Runtime names the agent recognises by itself (CRI handlers may name others).
pub use crate::model::KNOWN_RUNTIMES;

impl CompiledSelector {
    /// No field set: the policy binds nothing (the agent says so).
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod_labels.is_none()
            && self.container.is_none()
            && self.image.is_none()
            && self.runtime.is_none()
            && self.cgroup_path.is_none()
    }

    /// One point per field set among namespace, container, image, runtime and
    /// cgroupPath, plus one per label requirement (at least one when `podLabels` is set).
    pub fn specificity(&self) -> u32 {
        let fields = [
            self.namespace.is_some(),
            self.container.is_some(),
            self.image.is_some(),
            self.runtime.is_some(),
            self.cgroup_path.is_some(),
        ]
        .into_iter()
        .filter(|&b| b)
        .count() as u32;
        fields
            + self
                .pod_labels
                .as_ref()
                .map_or(0, |l| (l.requirements.len() as u32).max(1))
    }

    /// Whether this selector names the workload's runtime explicitly (a sandboxed
    /// runtime is then policed as the policy says, not monitor-only).
    pub fn names_runtime_of(&self, w: &Workload) -> bool {
        self.runtime.as_deref().is_some_and(|r| w.runtime_is(r))
    }

    /// Whether the workload, as known, matches: every field the selector names is the
    /// workload's.
    pub fn matches(&self, w: &Workload) -> bool {
        self.test(w, false)
    }

    /// Whether this selector could match the workload once its unknown fields are
    /// known: a field the workload lacks (`None`), and its labels when its identity is
    /// incomplete ([`Workload::unknown`]), could be anything. The cgroup path is always
    /// known. Used to fail closed.
    pub fn could_match(&self, w: &Workload) -> bool {
        self.test(w, true)
    }

    /// The one field walk behind [`Self::matches`] and [`Self::could_match`]: `open`
    /// says whether what the workload does not know yet counts as matching.
    fn test(&self, w: &Workload, open: bool) -> bool {
        if self.is_empty() {
            return false;
        }
        let field = |have: Option<&str>, ok: &dyn Fn(&str) -> bool| have.map_or(open, ok);
        self.namespace
            .as_deref()
            .is_none_or(|ns| field(w.namespace.as_deref(), &|h| h == ns))
            && self.pod_labels.as_ref().is_none_or(|ls| {
                (open && w.unknown.is_some()) || (w.in_pod() && ls.matches(&w.labels))
            })
            && self
                .container
                .as_deref()
                .is_none_or(|c| field(w.container.as_deref(), &|h| h == c))
            && self
                .image
                .as_ref()
                .is_none_or(|image| field(w.image.as_deref(), &|i| image.matches(i)))
            && self
                .runtime
                .as_deref()
                .is_none_or(|r| w.runtime_is(r) || (open && w.runtime.is_none()))
            && self
                .cgroup_path
                .as_ref()
                .is_none_or(|p| p.matches(&w.cgroup_path))
    }

    /// Whether one workload could match both selectors. `false` only when certain.
    pub fn may_overlap(&self, other: &CompiledSelector) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let differ =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x != y);
        if differ(&self.namespace, &other.namespace) || differ(&self.container, &other.container) {
            return false;
        }
        // A workload has one OCI runtime; a name that is not a known runtime is a CRI
        // handler name, which may belong to any runtime.
        if let (Some(a), Some(b)) = (&self.runtime, &other.runtime)
            && a != b
            && KNOWN_RUNTIMES.contains(&a.as_str())
            && KNOWN_RUNTIMES.contains(&b.as_str())
        {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.image, &other.image)
            && !a.may_overlap(b)
        {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.cgroup_path, &other.cgroup_path)
            && !a.may_overlap(b)
        {
            return false;
        }
        match (&self.pod_labels, &other.pod_labels) {
            (Some(a), Some(b)) => a.may_overlap(b),
            _ => true,
        }
    }
}

/// Where a selector starts, for diagnostics about it: its first field that is set.
pub(super) fn first_selector_marker(sel: &Selector) -> Option<marked_yaml::Marker> {
    [
        sel.namespace.as_ref().map(|v| v.span()),
        sel.pod_labels.as_ref().map(|v| v.span()),
        sel.container.as_ref().map(|v| v.span()),
        sel.image.as_ref().map(|v| v.span()),
        sel.runtime.as_ref().map(|v| v.span()),
        sel.cgroup_path.as_ref().map(|v| v.span()),
    ]
    .into_iter()
    .flatten()
    .filter_map(start)
    .min_by_key(|m| (m.line(), m.column()))
}

/// Compile `spec.selector`, reporting bad globs, label syntax and operators.
pub(super) fn compile_selector(
    path: &Path,
    sel: &Selector,
    diags: &mut Vec<Diagnostic>,
) -> CompiledSelector {
    let mut out = CompiledSelector::default();
    let text = |v: &Spanned<String>, field: &str, diags: &mut Vec<Diagnostic>| {
        let t = v.trim().to_string();
        if t.is_empty() {
            diags.push(Diagnostic::error(
                path,
                start(v.span()),
                format!("`{field}` is empty"),
            ));
        }
        t
    };
    if let Some(ns) = &sel.namespace {
        let t = text(ns, "namespace", diags);
        if !t.is_empty() && !valid_dns_label(&t) {
            diags.push(
                Diagnostic::error(path, start(ns.span()), format!("invalid namespace `{t}`"))
                    .with_help("a Kubernetes namespace is a DNS label: lowercase letters, digits and `-`, at most 63"),
            );
        }
        out.namespace = Some(t);
    }
    if let Some(c) = &sel.container {
        out.container = Some(text(c, "container", diags));
    }
    if let Some(r) = &sel.runtime {
        let t = text(r, "runtime", diags);
        if !t.is_empty() && !KNOWN_RUNTIMES.contains(&t.as_str()) {
            diags.push(
                Diagnostic::warning(
                    path,
                    start(r.span()),
                    format!("`{t}` is not a runtime sysfence recognises: it matches a CRI runtime handler of that name only"),
                )
                .with_help(format!("runtimes: {}", KNOWN_RUNTIMES.join(", "))),
            );
        }
        out.runtime = Some(t);
    }
    if let Some(i) = &sel.image {
        let t = text(i, "image", diags);
        match Glob::image(&t) {
            Ok(g) => out.image = Some(g),
            Err(e) => diags.push(Diagnostic::error(
                path,
                start(i.span()),
                format!("invalid image glob `{t}`: {e}"),
            )),
        }
    }
    if let Some(p) = &sel.cgroup_path {
        let t = p.trim_start_matches('/').to_string();
        match Glob::path(&t) {
            Ok(g) => out.cgroup_path = Some(g),
            Err(e) => diags.push(Diagnostic::error(
                path,
                start(p.span()),
                format!("invalid cgroupPath glob `{}`: {e}", **p),
            )),
        }
    }
    if let Some(labels) = &sel.pod_labels {
        let mut ls = LabelSelector::default();
        for (key, value) in &labels.match_labels {
            check_label_key(path, key, start(value.span()), diags);
            check_label_value(path, value, diags);
            ls.requirements.push(Requirement {
                key: key.clone(),
                op: Op::In,
                values: [value.to_string()].into(),
            });
        }
        for e in &labels.match_expressions {
            check_label_key(path, &e.key, start(e.key.span()), diags);
            let Some(op) = Op::parse(&e.operator) else {
                diags.push(
                    Diagnostic::error(
                        path,
                        start(e.operator.span()),
                        format!("unknown operator `{}`", *e.operator),
                    )
                    .with_help(format!("operator is one of: {}", Op::NAMES)),
                );
                continue;
            };
            match op {
                Op::In | Op::NotIn if e.values.is_empty() => diags.push(Diagnostic::error(
                    path,
                    start(e.operator.span()),
                    format!("`{}` needs a non-empty `values` list", *e.operator),
                )),
                Op::Exists | Op::DoesNotExist if !e.values.is_empty() => diags.push(
                    Diagnostic::error(
                        path,
                        start(e.values[0].span()),
                        format!("`{}` takes no `values`", *e.operator),
                    )
                    .with_help("remove `values`, or use `In` / `NotIn`"),
                ),
                _ => {}
            }
            for v in &e.values {
                check_label_value(path, v, diags);
            }
            ls.requirements.push(Requirement {
                key: e.key.to_string(),
                op,
                values: e.values.iter().map(|v| v.to_string()).collect(),
            });
        }
        if !LabelSelector::satisfiable(ls.requirements.iter()) {
            diags.push(Diagnostic::warning(
                path,
                start(labels.span()),
                "these label requirements contradict each other: the selector matches no pod",
            ));
        }
        out.pod_labels = Some(ls);
    }
    out
}

/// A DNS label (RFC 1123), as Kubernetes namespaces are.
fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A label name or value segment: alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn valid_label_segment(s: &str, max: usize) -> bool {
    s.len() <= max
        && (s.is_empty()
            || (s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

fn check_label_key(
    path: &Path,
    key: &str,
    at: Option<marked_yaml::Marker>,
    diags: &mut Vec<Diagnostic>,
) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(valid_dns_label));
    if name.is_empty() || !valid_label_segment(name, 63) || !prefix_ok {
        diags.push(
            Diagnostic::error(path, at, format!("invalid label key `{key}`"))
                .with_help("a label key is `[prefix/]name`: name up to 63 alphanumerics, `-`, `_`, `.`; prefix a DNS subdomain"),
        );
    }
}

fn check_label_value(path: &Path, value: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if !valid_label_segment(value, 63) {
        diags.push(
            Diagnostic::error(path, start(value.span()), format!("invalid label value `{}`", **value))
                .with_help("a label value is up to 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric"),
        );
    }
}
