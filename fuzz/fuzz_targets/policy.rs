//! The policy parser and compiler: any text must give a policy, a set, or diagnostics;
//! never a panic.
//!
//! Input: bytes read as UTF-8 YAML (other bytes are skipped: files are read as UTF-8
//! before they are parsed). A policy is compiled against the shipped sets, as `sysfence
//! check` does; a set is validated with them. What compiles goes on through what the
//! agent and the CLI do with a policy: conflict detection, the enforcement decision,
//! and the seccomp export, whose profile must import back.

#![no_main]

use std::{path::Path, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use sysfence::{
    policy::{
        self, SetCatalog, compile,
        model::{self, Document},
    },
    seccomp,
};

static CATALOG: LazyLock<SetCatalog> = LazyLock::new(policy::shipped_catalog);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    match model::parse(path, text) {
        Ok(Document::Policy(doc)) => match compile::compile(path, &doc, &CATALOG) {
            Ok((compiled, warnings)) => {
                for w in &warnings {
                    assert!(!w.is_error(), "compile returned Ok with an error: {w}");
                    let _ = w.to_string();
                }
                // The same policy twice: exercises selector overlap and specificity.
                for d in compile::conflicts(&[compiled.clone(), compiled.clone()]) {
                    let _ = d.to_string();
                }
                let _ = compiled.enforcement(Ok(()));
                let _ = compiled.enforcement(Err("no BPF LSM"));
                for options in [
                    seccomp::ExportOptions::default(),
                    seccomp::ExportOptions::for_mode(compiled.mode),
                ] {
                    let exported = seccomp::export_with(&compiled, &options);
                    let import_options = seccomp::ImportOptions {
                        name: compiled.name.clone(),
                        ..Default::default()
                    };
                    if let Err(e) = seccomp::import(&exported.json, &import_options) {
                        panic!(
                            "the export of a valid policy does not import back: {e}\n{}",
                            exported.json
                        );
                    }
                }
            }
            Err(diags) => {
                assert!(
                    diags.iter().any(|d| d.is_error()),
                    "compile failed without an error"
                );
                let _ = policy::Rejected(diags).to_string();
            }
        },
        Ok(Document::Set(set)) => {
            let mut catalog = policy::shipped_catalog();
            catalog.insert(path.to_path_buf(), *set);
            for d in catalog.validate() {
                let _ = d.to_string();
            }
        }
        Err(d) => {
            let _ = d.to_string();
        }
    }
});
