//! The policy YAML format, as written by users, with the source position of every value.
//!
//! ```yaml
//! apiVersion: sysfence.dev/v1
//! kind: SyscallPolicy          # or SyscallSet, a reusable list of names
//! metadata:
//!   name: web
//! spec:
//!   selector:                # see [`Selector`]: fields, specificity, conflicts
//!     namespace: shop
//!     podLabels: {matchLabels: {app: web}}
//!     cgroupPath: "kubepods/*/pod*/*"   # glob under the cgroup v2 root
//!   mode: audit                # monitor | audit | enforce
//!   action: kill               # kill | deny     (enforce mode)
//!   fallback: kill             # kill | allow    (when deny cannot prevent)
//!   include: [runtime-default] # SyscallSet names
//!   allow: [getppid]
//!   deny: [ptrace]             # wins over allow and include
//!   rules:                     # allowed for some argument values only (see `ArgRuleDoc`)
//!     - names: [socket]
//!       args: [{index: 0, op: NE, value: 40}]     # not AF_VSOCK
//!   errno: {clone3: ENOSYS}    # what `action: deny` fails a syscall with (default EPERM)
//!   namespaces: deny           # no new namespace: unshare, setns, clone's CLONE_NEW*
//! ```

use std::{collections::BTreeMap, path::Path};

use marked_yaml::{LoaderOptions, Marker, Node, Spanned};
use serde::Deserialize;

use super::diag::{Diagnostic, start};

pub const API_VERSION: &str = "sysfence.dev/v1";
/// The largest policy or set file read: a syscall allowlist is a few KiB.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// How deeply YAML may nest (flow brackets, or indentation levels of two spaces): a
/// policy needs five; the parser recurses per level.
pub const MAX_NESTING: usize = 64;
pub const KIND_POLICY: &str = "SyscallPolicy";
pub const KIND_SET: &str = "SyscallSet";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDoc {
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub action: Option<Spanned<String>>,
    #[serde(default)]
    pub fallback: Option<Spanned<String>>,
    /// What a kill takes: `workload` (every process of the workload's cgroup, the
    /// default) or `process` (the caller's).
    #[serde(default)]
    pub kill_scope: Option<Spanned<String>>,
    /// Whose syscalls: `application` (the default) or `sandbox` (the host processes of
    /// a sandboxed runtime: gVisor's Sentry and gofer).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Syscalls allowed for some argument values only.
    #[serde(default)]
    pub rules: Vec<Spanned<ArgRuleDoc>>,
    /// Per syscall name, the errno `action: deny` fails it with (a name such as `ENOSYS`,
    /// or a number); `EPERM` when not listed.
    #[serde(default)]
    pub errno: BTreeMap<String, Spanned<String>>,
    /// `deny`: no new namespace, whatever the syscall: `unshare` and `setns` are
    /// denied, `clone` and `clone3` are allowed without `CLONE_NEW*` flags only (the
    /// flags of `clone3`, in memory, are judged at `sys_enter` and again on the
    /// kernel's copy). `allow`: as the names say. Default: `deny` when an included set
    /// says so, else `allow`.
    #[serde(default)]
    pub namespaces: Option<Spanned<String>>,
    /// What the other syscall ABIs of x86_64 may call. x86_64 itself always uses the
    /// names above.
    #[serde(default)]
    pub abi: Option<AbiSpec>,
}

/// One argument rule, with the semantics of the OCI runtime spec's seccomp rules: the
/// named syscalls are allowed when every condition in `args` holds (AND); several rules
/// naming one syscall allow it when any of them holds (OR). A name also allowed without
/// conditions (`allow`, `include`) is allowed whatever its arguments.
///
/// ```yaml
/// rules:
///   - names: [personality]
///     args: [{index: 0, op: EQ, value: 0x0}]
///   - names: [clone]
///     args: [{index: 0, op: MASKED_EQ, value: 0x7E020000, valueTwo: 0}]
/// ```
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgRuleDoc {
    pub names: Vec<Spanned<String>>,
    pub args: Vec<Spanned<ArgCondDoc>>,
    /// Free text, kept by export.
    #[serde(default)]
    pub comment: Option<String>,
}

/// One condition: `index` 0..=5, `op` one of EQ, NE, LT, LE, GT, GE, MASKED_EQ (or the
/// `SCMP_CMP_` names), `value` (and `valueTwo` for MASKED_EQ: `arg & value ==
/// valueTwo`), decimal or `0x` hexadecimal.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgCondDoc {
    pub index: Spanned<String>,
    pub op: Spanned<String>,
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    #[serde(default)]
    pub value_two: Option<Spanned<String>>,
}

/// `spec.abi`: per ABI, `same` (the names above; the default), `deny` (no syscall of
/// that ABI), or an explicit list of names.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbiSpec {
    #[serde(default)]
    pub ia32: Option<Spanned<AbiChoice>>,
    #[serde(default)]
    pub x32: Option<Spanned<AbiChoice>>,
}

#[derive(Debug)]
pub enum AbiChoice {
    /// `same` or `deny` (anything else is reported by the compiler).
    Keyword(String),
    Names(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for AbiChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AbiChoice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`same`, `deny`, or a list of syscall names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AbiChoice, E> {
                Ok(AbiChoice::Keyword(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AbiChoice, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element()? {
                    names.push(n);
                }
                Ok(AbiChoice::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// `spec.selector`: which workloads the policy binds to. Every field set must match;
/// a selector with no field binds nothing.
///
/// ```yaml
/// selector:
///   namespace: shop                 # the pod's namespace, exactly
///   podLabels:                      # Kubernetes label-selector semantics
///     matchLabels: {app: web}
///     matchExpressions:
///       - {key: tier, operator: In, values: [frontend, edge]}   # In | NotIn | Exists | DoesNotExist
///   container: nginx                # the container's name, exactly
///   image: "docker.io/library/nginx:*"   # glob; `*` crosses `/`
///   runtime: runc                   # runc | crun | runsc | kata | youki, or a CRI handler name
///   cgroupPath: "kubepods/*/pod*/*" # glob under the cgroup v2 root; `*` stops at `/`
/// ```
///
/// **Which policy wins.** Of the policies whose selectors match a workload, the most
/// specific one is bound. Specificity is one point for each of `namespace`,
/// `container`, `image`, `runtime` and `cgroupPath` that is set, plus one point per
/// label requirement in `podLabels` (each `matchLabels` entry and each
/// `matchExpressions` entry count one; `podLabels: {}` counts one). So
/// `{namespace: shop, podLabels: {matchLabels: {app: web}}}` (2) beats
/// `{namespace: shop}` (1), and `{container: nginx, runtime: runc}` (2) ties with it.
/// Two policies that could match the same workload with equal specificity are a
/// conflict: `sysfence check` reports it as an error and the agent refuses to start,
/// rather than pick one arbitrarily. Overlap is decided per field: different
/// `namespace`, `container` or known `runtime` values, globs that cannot match a common
/// string, or label requirements that cannot hold together make two selectors disjoint.
///
/// **Sandboxed runtimes.** On gVisor (`runsc`) and Kata the host sees the sandbox's own
/// processes (the Sentry, the VMM), not the application's syscalls. A policy binds to
/// such a workload as written only if its selector names that runtime (`runtime: runsc`);
/// otherwise it is applied monitor-only.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub cgroup_path: Option<Spanned<String>>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub pod_labels: Option<Spanned<LabelSelectorDoc>>,
    #[serde(default)]
    pub container: Option<Spanned<String>>,
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    #[serde(default)]
    pub runtime: Option<Spanned<String>>,
}

/// A Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions`, all ANDed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorDoc {
    #[serde(default)]
    pub match_labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub match_expressions: Vec<Spanned<LabelExpressionDoc>>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelExpressionDoc {
    pub key: Spanned<String>,
    pub operator: Spanned<String>,
    #[serde(default)]
    pub values: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetDoc {
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: SetSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetSpec {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub syscalls: Vec<Spanned<String>>,
    /// Syscalls allowed for some argument values only, as in a policy.
    #[serde(default)]
    pub rules: Vec<Spanned<ArgRuleDoc>>,
    /// errno per syscall name, as in a policy; a policy's own entry wins.
    #[serde(default)]
    pub errno: BTreeMap<String, Spanned<String>>,
    /// `deny`: policies that include the set deny new namespaces, unless they say
    /// `namespaces: allow` themselves.
    #[serde(default)]
    pub namespaces: Option<Spanned<String>>,
}

/// One parsed file.
#[derive(Debug)]
pub enum Document {
    Policy(Box<PolicyDoc>),
    Set(Box<SetDoc>),
}

impl Document {
    pub fn name(&self) -> &str {
        match self {
            Document::Policy(p) => &p.metadata.name,
            Document::Set(s) => &s.metadata.name,
        }
    }
}

/// Parse one YAML document. Syntax and shape errors come back with their position.
pub fn parse(path: &Path, text: &str) -> Result<Document, Diagnostic> {
    check_bounds(path, text)?;
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let node =
        marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| load_error(path, e))?;
    let top = node.as_mapping().ok_or_else(|| {
        Diagnostic::error(
            path,
            start(node.span()),
            "a policy file must be a YAML mapping",
        )
    })?;
    let kind = top.get_node("kind").ok_or_else(|| {
        Diagnostic::error(path, start(node.span()), "missing `kind`")
            .with_help(format!("add `kind: {KIND_POLICY}` or `kind: {KIND_SET}`"))
    })?;
    let kind_str = kind
        .as_scalar()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    let doc = match kind_str.as_str() {
        KIND_POLICY => from_node(path, &node).map(|p| Document::Policy(Box::new(p)))?,
        KIND_SET => from_node(path, &node).map(|s| Document::Set(Box::new(s)))?,
        other => {
            return Err(Diagnostic::error(
                path,
                start(kind.span()),
                format!("unknown kind `{other}`"),
            )
            .with_help(format!("kind is `{KIND_POLICY}` or `{KIND_SET}`")));
        }
    };
    let api = match &doc {
        Document::Policy(p) => &p.api_version,
        Document::Set(s) => &s.api_version,
    };
    if api.as_str() != API_VERSION {
        return Err(Diagnostic::error(
            path,
            start(api.span()),
            format!("unsupported apiVersion `{}`", api.as_str()),
        )
        .with_help(format!("this sysfence reads `apiVersion: {API_VERSION}`")));
    }
    Ok(doc)
}

fn from_node<'de, T: Deserialize<'de>>(path: &Path, node: &'de Node) -> Result<T, Diagnostic> {
    marked_yaml::from_node(node).map_err(|e| {
        let at = e.start_mark();
        let message = match &*e {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                return Diagnostic::error(path, at, format!("unknown field `{field}`"))
                    .with_help(format!("expected one of: {}", expected.join(", ")));
            }
            other => other.to_string(),
        };
        let message = match e.path() {
            Some(p) if !p.is_empty() && p != "." => format!("{message} (at `{p}`)"),
            _ => message,
        };
        Diagnostic::error(path, at, message)
    })
}

fn load_error(path: &Path, e: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError as E;
    let at = match &e {
        E::TopLevelMustBeMapping(m)
        | E::TopLevelMustBeSequence(m)
        | E::UnexpectedAnchor(m)
        | E::MappingKeyMustBeScalar(m)
        | E::UnexpectedTag(m)
        | E::ScanError(m, _) => Some(*m),
        E::DuplicateKey(inner) => inner.key.span().start().copied(),
    };
    let message = match &e {
        E::ScanError(_, scan) => format!("YAML syntax: {}", scan.info()),
        E::DuplicateKey(inner) => format!("duplicate key `{}`", inner.key.as_str()),
        E::TopLevelMustBeMapping(_) => "a policy file must be a YAML mapping".to_string(),
        other => other.to_string(),
    };
    Diagnostic::error(path, at, message)
}

/// Refuse, before parsing, what no policy needs and what could exhaust the parser: a
/// file over [`MAX_FILE_BYTES`], or nesting deeper than [`MAX_NESTING`].
fn check_bounds(path: &Path, text: &str) -> Result<(), Diagnostic> {
    let at = |line: usize, column: usize| Marker::new(0, 0, line, column);
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            path,
            Some(at(1, 1)),
            format!(
                "the file is {} bytes; a policy or set file is at most {MAX_FILE_BYTES}",
                text.len()
            ),
        ));
    }
    let deep = |line: usize, column: usize| {
        Err(Diagnostic::error(
            path,
            Some(at(line, column)),
            format!("nested deeper than {MAX_NESTING} levels"),
        )
        .with_help("a policy needs a handful of levels; this is not a policy"))
    };
    // Flow brackets may span lines: their depth carries over.
    let mut flow = 0usize;
    let mut quote = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent / 2 > MAX_NESTING {
            return deep(i + 1, indent + 1);
        }
        for (col, ch) in line.char_indices() {
            match (quote, ch) {
                (None, '#') => break,
                (None, '"' | '\'') => quote = Some(ch),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => {
                    flow += 1;
                    if indent / 2 + flow > MAX_NESTING {
                        return deep(i + 1, col + 1);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        // A quote left open at the end of a line (`it's` in plain text) ends there.
        quote = None;
    }
    Ok(())
}
