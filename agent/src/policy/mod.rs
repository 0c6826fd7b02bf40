//! Policies: the YAML format ([`model`]), diagnostics ([`diag`]), the pure compiler
//! ([`compile`]), where files and sets come from ([`sources`]), and loading (here).

pub mod args;
pub mod choices;
pub mod compile;
pub mod diag;
pub mod model;
pub mod selector;
pub mod sources;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

pub use compile::{Action, CompiledPolicy, Fallback, KillScope, Mode, SetCatalog, Target};
pub use diag::{Diagnostic, Rejected, Severity};
use model::Document;
pub use selector::CompiledSelector;
use sources::Resolver;
pub use sources::{Limits, Origin, ReadFile, SetUse, Skip, Skipped, walk};

/// Sets shipped with sysfence, compiled into the binary so that `include` works anywhere.
pub const SHIPPED_SETS: &[(&str, &str)] = &[
    (
        "<shipped>/sets/runtime-default.yaml",
        include_str!("../../../policies/sets/runtime-default.yaml"),
    ),
    (
        "<shipped>/sets/ia32-multiplexers.yaml",
        include_str!("../../../policies/sets/ia32-multiplexers.yaml"),
    ),
];

/// What loading a group of files produced.
#[derive(Debug, Default)]
pub struct Loaded {
    pub policies: Vec<CompiledPolicy>,
    /// Set files among the files given.
    pub sets: usize,
    /// Every finding, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, in order, and what it holds.
    pub read: Vec<ReadFile>,
    /// Each set included, where it was found and why there.
    pub included: Vec<SetUse>,
    /// What the walks and set searches passed over, and why (errors are diagnostics).
    pub skipped: Vec<Skipped>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// Log what was read, which sets were included from where, and what was skipped
    /// (the agent's log).
    pub fn log_sources(&self) {
        tracing::info!(
            event = "policy_sources",
            read = %self.read.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            included = %self.included.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        );
        for s in &self.skipped {
            tracing::warn!(event = "policy_source_skipped", path = %s.path.display(), reason = %s.reason);
        }
    }

    /// All policies, or every diagnostic if any is an error.
    pub fn into_result(self) -> Result<(Vec<CompiledPolicy>, Vec<Diagnostic>), Rejected> {
        if self.has_errors() {
            Err(Rejected(self.diagnostics))
        } else {
            Ok((self.policies, self.diagnostics))
        }
    }
}

/// The shipped sets, parsed. They are part of the binary: failing to parse is a bug.
pub fn shipped_catalog() -> SetCatalog {
    let mut catalog = SetCatalog::default();
    for (name, text) in SHIPPED_SETS {
        match model::parse(Path::new(name), text) {
            Ok(Document::Set(set)) => catalog.insert(PathBuf::from(name), *set),
            Ok(Document::Policy(_)) => panic!("{name}: shipped set is a policy"),
            Err(d) => panic!("shipped set does not parse: {d}"),
        }
    }
    catalog
}

/// Load files and directories: a directory gives the files of its bounded [`walk`]
/// (see [`sources`]); includes are resolved as [`load`] does.
pub fn load_paths(paths: &[PathBuf], sets_dir: Option<&Path>) -> Loaded {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut walked = Loaded::default();
    for p in paths {
        if !p.is_dir() {
            if !files.contains(p) {
                files.push(p.clone());
            }
            continue;
        }
        match walk(p, Limits::POLICY_DIR) {
            Ok(w) => {
                for f in w.files {
                    if !files.contains(&f) {
                        files.push(f);
                    }
                }
                for s in w.skipped {
                    if s.reason.is_error() {
                        walked.diagnostics.push(
                            Diagnostic::error(&s.path, None, s.reason.to_string()).with_help(
                                "policies there would be lost: fix it, or move them elsewhere",
                            ),
                        );
                    } else {
                        walked.skipped.push(s);
                    }
                }
            }
            Err(e) => walked.diagnostics.push(
                Diagnostic::error(p, None, format!("cannot read the directory: {e}"))
                    .with_help("check the path and its permissions"),
            ),
        }
    }
    let mut loaded = load(&files, sets_dir);
    walked.diagnostics.append(&mut loaded.diagnostics);
    loaded.diagnostics = walked.diagnostics;
    walked.skipped.append(&mut loaded.skipped);
    loaded.skipped = walked.skipped;
    loaded
}

/// [`load`] with no `--sets` directory.
pub fn load_files(files: &[PathBuf]) -> Loaded {
    load(files, None)
}

/// Read, parse and compile `files`, and nothing else but the sets their policies
/// include: sets among `files` (by name), then `NAME.yaml` beside the including file,
/// in `sets_dir`, and the shipped sets (see [`sources`]).
pub fn load(files: &[PathBuf], sets_dir: Option<&Path>) -> Loaded {
    let mut loaded = Loaded::default();
    if let Some(d) = sets_dir
        && !d.is_dir()
    {
        loaded.diagnostics.push(
            Diagnostic::error(d, None, "--sets: not a directory")
                .with_help("name the directory that holds NAME.yaml for each `include: [NAME]`"),
        );
    }
    let mut policies = Vec::new();
    let mut given: BTreeMap<String, Arc<(PathBuf, model::SetDoc)>> = BTreeMap::new();
    let mut given_sets = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                loaded.diagnostics.push(
                    Diagnostic::error(f, None, format!("cannot read: {e}"))
                        .with_help("check the path and its permissions"),
                );
                continue;
            }
        };
        match model::parse(f, &text) {
            Ok(Document::Set(set)) => {
                loaded.read.push(ReadFile {
                    path: f.clone(),
                    holds: format!("set `{}`", *set.metadata.name),
                });
                loaded.sets += 1;
                let entry = Arc::new((f.clone(), *set));
                given_sets.push(entry.clone());
                given.insert(entry.1.metadata.name.to_string(), entry);
            }
            Ok(Document::Policy(p)) => {
                loaded.read.push(ReadFile {
                    path: f.clone(),
                    holds: format!("policy `{}`", *p.metadata.name),
                });
                policies.push((f.clone(), p));
            }
            Err(d) => {
                loaded.read.push(ReadFile {
                    path: f.clone(),
                    holds: "does not parse".into(),
                });
                loaded.diagnostics.push(d);
            }
        }
    }
    let mut resolver = Resolver::new(sets_dir, given);
    let mut found: Vec<Diagnostic> = Vec::new();
    // The sets given, each with what it includes.
    for entry in given_sets {
        let catalog = resolver.catalog_for(&entry.0.clone(), Some(entry), &[]);
        found.extend(catalog.validate());
    }
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut compiled = Vec::new();
    for (f, doc) in &policies {
        let catalog = resolver.catalog_for(f, None, &doc.spec.include);
        // The sets this policy reached: their own names and includes.
        found.extend(catalog.validate());
        match compile::compile(f, doc, &catalog) {
            Ok((policy, warnings)) => {
                compiled.extend(warnings);
                if let Some(other) = names.insert(policy.name.clone(), f.clone()) {
                    compiled.push(
                        Diagnostic::error(
                            f,
                            diag::start(doc.metadata.name.span()),
                            format!("policy name `{}` is already used", policy.name),
                        )
                        .with_help(format!("by {}; names must be unique", other.display())),
                    );
                }
                loaded.policies.push(policy);
            }
            Err(diags) => compiled.extend(diags),
        }
    }
    // A set reached from several policies is checked once.
    let mut seen = std::collections::HashSet::new();
    found.retain(|d| seen.insert(d.to_string()));
    compiled.retain(|d| !found.contains(d));
    loaded.diagnostics.append(&mut resolver.diagnostics);
    loaded.diagnostics.extend(found);
    loaded.diagnostics.extend(compiled);
    loaded
        .diagnostics
        .extend(compile::conflicts(&loaded.policies));
    loaded.read.append(&mut resolver.read);
    loaded.included = resolver.uses;
    loaded.skipped = resolver.skipped;
    loaded
}

/// The syscall names set `name` holds (its includes expanded), found as an include
/// in the file `from` would be (`None`: among the shipped sets).
pub fn set_names(
    name: &str,
    from: Option<&Path>,
    sets_dir: Option<&Path>,
) -> Result<BTreeSet<String>, Rejected> {
    let shipped = PathBuf::from(sources::SHIPPED_PREFIX).join("<include>");
    let from = from.unwrap_or(&shipped);
    let text = format!(
        "apiVersion: {}\nkind: {}\nmetadata:\n  name: probe\nspec:\n  include: [{}]\n",
        model::API_VERSION,
        model::KIND_POLICY,
        serde_json::to_string(name).unwrap_or_default()
    );
    let doc = match model::parse(from, &text) {
        Ok(Document::Policy(p)) => p,
        Ok(Document::Set(_)) => unreachable!("the probe document is a policy"),
        Err(d) => return Err(Rejected(vec![d])),
    };
    let mut resolver = Resolver::new(sets_dir, BTreeMap::new());
    let catalog = resolver.catalog_for(from, None, &doc.spec.include);
    let mut diags = resolver.diagnostics;
    diags.extend(catalog.validate());
    match compile::compile(from, &doc, &catalog) {
        Ok((p, _)) if !diags.iter().any(Diagnostic::is_error) => Ok(p.allowed_names),
        Ok(_) => Err(Rejected(diags)),
        Err(d) => {
            diags.extend(d);
            Err(Rejected(diags))
        }
    }
}

#[cfg(test)]
mod tests;
