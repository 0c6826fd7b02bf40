//! `sysfence check`: validate policy files without touching the kernel.
//!
//! Besides each finding, it says what it read: every file, each set included and where
//! it was found (or, for an include that resolves nowhere, what was searched), and
//! what the walks passed over. A user can see why a set was or was not found.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::policy;

/// Check `paths` (files, or directories walked as the agent walks its own); includes
/// are also looked for in `sets_dir`. Findings go to stderr as text, or to stdout as
/// JSON lines with `json`; what was read goes to stderr. Exit status: 0 when valid
/// (warnings allowed), 1 when not.
pub fn run(paths: &[PathBuf], sets_dir: Option<&Path>, json: bool) -> ExitCode {
    let loaded = policy::load_paths(paths, sets_dir);
    for r in &loaded.read {
        eprintln!("read: {r}");
    }
    for u in &loaded.included {
        eprintln!("set {u}");
    }
    for s in &loaded.skipped {
        eprintln!("skipped: {s}");
    }
    for d in &loaded.diagnostics {
        if json {
            println!("{}", serde_json::to_string(d).unwrap_or_default());
        } else {
            eprintln!("{d}");
        }
    }
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diagnostics.len() - errors;
    if !json {
        if errors == 0 {
            eprintln!(
                "ok: {} polic{}, {} set{} checked, {warnings} warning{}",
                loaded.policies.len(),
                if loaded.policies.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                loaded.sets,
                plural(loaded.sets),
                plural(warnings)
            );
        } else {
            let files = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.file.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            eprintln!("{errors} error{} in {files} file(s)", plural(errors));
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
