//! The OCI/Docker seccomp importer: any text must give a policy or an error; never a
//! panic.
//!
//! Input: bytes read as UTF-8 JSON, imported twice: with the default options (Docker's
//! capabilities, kernel 6.1) and with strict argument handling, no capabilities and an
//! old kernel. Besides "no panic", two properties the importer documents are checked:
//! - the generated policy passes sysfence's own loader (`ImportError::Generated` is a
//!   sysfence bug, not a property of the input);
//! - import → export → import is stable: the same allowed names, and the same allowed
//!   (ABI, number) pairs once compiled. (`Imported::abis` itself may shrink: an ABI the
//!   profile lists but allows nothing in is not exported, which denies it just the same.)

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sysfence::{
    policy::{
        self, compile,
        model::{self, Document},
    },
    seccomp::{self, ImportError, ImportOptions, KernelVersion},
};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let options = [
        ImportOptions::default(),
        ImportOptions {
            name: "fuzz".to_string(),
            capabilities: Default::default(),
            kernel: KernelVersion::new(4, 14),
            strict_args: true,
        },
    ];
    for (i, options) in options.iter().enumerate() {
        match seccomp::import(json, options) {
            Ok(imported) => {
                for w in &imported.warnings {
                    assert!(!w.is_empty());
                }
                if i == 0 {
                    round_trip(&imported, options);
                }
            }
            Err(e @ ImportError::Generated(_)) => {
                panic!("the importer generated a policy its own loader rejects: {e}")
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

/// Compile the imported policy, export it, import the export: the allowlist must come
/// back unchanged, as names and as compiled (ABI, number) pairs.
fn round_trip(first: &seccomp::Imported, options: &ImportOptions) {
    let compiled = compile_yaml(&first.policy_yaml);
    let exported = seccomp::export_string(&compiled);
    let second = seccomp::import(&exported, options)
        .unwrap_or_else(|e| panic!("the export of an import does not import: {e}\n{exported}"));
    assert_eq!(
        second.allowed, first.allowed,
        "import -> export -> import changed the allowed names\n{exported}"
    );
    assert_eq!(
        compile_yaml(&second.policy_yaml).allowed,
        compiled.allowed,
        "import -> export -> import changed the allowed (ABI, number) pairs\n{exported}"
    );
}

/// Parse and compile a generated policy as `sysfence check` does; any error is a bug.
fn compile_yaml(text: &str) -> policy::CompiledPolicy {
    let path = Path::new("imported.yaml");
    let doc = match model::parse(path, text) {
        Ok(Document::Policy(doc)) => doc,
        Ok(Document::Set(_)) => panic!("import produced a set:\n{text}"),
        Err(d) => panic!("import produced YAML that does not parse: {d}\n{text}"),
    };
    match compile::compile(path, &doc, &policy::shipped_catalog()) {
        Ok((p, _)) => p,
        Err(d) => panic!(
            "import produced a policy that does not compile: {}\n{text}",
            policy::Rejected(d)
        ),
    }
}
