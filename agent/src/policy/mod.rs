//! Policies: the YAML format ([`model`]), diagnostics ([`diag`]), the pure compiler
//! ([`compile`]), and loading files and directories (here).

pub mod compile;
pub mod diag;
pub mod model;
pub mod selector;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use compile::{Action, CompiledPolicy, Fallback, Mode, SetCatalog};
pub use diag::{Diagnostic, Rejected, Severity};
use model::Document;
pub use selector::CompiledSelector;

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
    pub sets: usize,
    /// Every finding, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
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

/// Expand files and directories (a directory gives its `*.yaml`/`*.yml` files, and
/// those of its subdirectories) into a sorted list of files.
pub fn expand_paths(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            collect_dir(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    // Hidden entries are not policies: kubelet mounts a ConfigMap as `..data` and a
    // timestamped `..2026_...` directory beside the per-key links; reading them too
    // would load every policy three times.
    entries.retain(|p| {
        !p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    });
    for p in entries {
        if p.is_dir() {
            collect_dir(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    Ok(())
}

/// Read, parse and compile `files`. Sets found among them are added to the shipped ones
/// (and replace a shipped set of the same name). Sets in the directory of each policy
/// file are visible too, so `sysfence run --policy dir/p.yaml` finds `dir/*.yaml` sets.
pub fn load_files(files: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut catalog = shipped_catalog();
    let mut policies = Vec::new();
    let mut seen_files: Vec<PathBuf> = files.to_vec();
    // Sibling sets of each policy file, so includes resolve without naming every file.
    for f in files {
        if let Some(dir) = f.parent().filter(|d| d.is_dir())
            && let Ok(siblings) = expand_paths(&[dir.to_path_buf()])
        {
            for s in siblings {
                if !seen_files.contains(&s) {
                    seen_files.push(s);
                }
            }
        }
    }
    for f in &seen_files {
        let explicit = files.contains(f);
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                if explicit {
                    loaded.diagnostics.push(
                        Diagnostic::error(f, None, format!("cannot read: {e}"))
                            .with_help("check the path and its permissions"),
                    );
                }
                continue;
            }
        };
        match model::parse(f, &text) {
            Ok(Document::Set(set)) => {
                loaded.sets += usize::from(explicit);
                catalog.insert(f.clone(), *set);
            }
            Ok(Document::Policy(p)) if explicit => policies.push((f.clone(), p)),
            Ok(Document::Policy(_)) => {}
            Err(d) if explicit => loaded.diagnostics.push(d),
            Err(_) => {}
        }
    }
    loaded.diagnostics.extend(
        catalog
            .validate()
            .into_iter()
            .filter(|d| files.iter().any(|f| f.display().to_string() == d.file)),
    );
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (f, doc) in &policies {
        match compile::compile(f, doc, &catalog) {
            Ok((policy, warnings)) => {
                loaded.diagnostics.extend(warnings);
                if let Some(other) = names.insert(policy.name.clone(), f.clone()) {
                    loaded.diagnostics.push(
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
            Err(diags) => loaded.diagnostics.extend(diags),
        }
    }
    loaded
        .diagnostics
        .extend(compile::conflicts(&loaded.policies));
    loaded
}

#[cfg(test)]
mod tests;
