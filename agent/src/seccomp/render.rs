//! The imported policy document: written, checked with sysfence's own loader, and
//! headed with the import's warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use probe_common::Abi;
use serde::Serialize;

use super::{DOCKER_DEFAULT_CAPS, ImportError, ImportOptions, normalize_cap};
use crate::policy::args::{self, CondOp, RuleBook};
use crate::policy::{self, Mode, model};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: MetadataOut<'a>,
    spec: SpecOut<'a>,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    name: &'a str,
    description: String,
}

#[derive(Serialize)]
struct SpecOut<'a> {
    mode: &'a str,
    allow: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<RuleOut>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errno: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abi: Option<AbiOut>,
}

#[derive(Serialize)]
struct RuleOut {
    names: Vec<String>,
    args: Vec<CondOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CondOut {
    index: u8,
    op: &'static str,
    value: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_two: Option<u64>,
}

/// `spec.rules` of a policy: one entry per rule, in the book's order.
fn rules_out(rules: &RuleBook) -> Vec<RuleOut> {
    rules
        .iter()
        .flat_map(|(name, list)| {
            list.iter().map(move |r| RuleOut {
                names: vec![name.clone()],
                args: r
                    .conds
                    .iter()
                    .map(|c| CondOut {
                        index: c.index,
                        op: c.op.as_str(),
                        value: c.value,
                        value_two: (c.op == CondOp::MaskedEq).then_some(c.value_two),
                    })
                    .collect(),
                comment: r.comment.clone(),
            })
        })
        .collect()
}

/// `spec.errno`: names as `ENOSYS` where the errno has a name.
fn errno_out(errnos: &BTreeMap<String, u32>) -> BTreeMap<&str, String> {
    errnos
        .iter()
        .map(|(n, &e)| {
            let label = args::ERRNO_NAMES
                .iter()
                .find(|(_, v)| *v == e)
                .map_or_else(|| e.to_string(), |(name, _)| name.to_string());
            (n.as_str(), label)
        })
        .collect()
}

#[derive(Serialize)]
struct AbiOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    ia32: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x32: Option<&'static str>,
}

/// The policy document, checked with sysfence's loader. The loader's warnings are added
/// to `warnings` and the header is written last, so that it lists them all.
pub(super) fn render_policy(
    options: &ImportOptions,
    allowed: &BTreeSet<String>,
    rules: &RuleBook,
    errnos: &BTreeMap<String, u32>,
    abis: &BTreeSet<Abi>,
    warnings: &mut Vec<String>,
) -> Result<String, ImportError> {
    let deny = |abi| (!abis.contains(&abi)).then_some("deny");
    let abi = (!abis.contains(&Abi::Ia32) || !abis.contains(&Abi::X32)).then(|| AbiOut {
        ia32: deny(Abi::Ia32),
        x32: deny(Abi::X32),
    });
    let caps_label = {
        let default: BTreeSet<String> = DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let held: BTreeSet<String> = options
            .capabilities
            .iter()
            .map(|c| normalize_cap(c))
            .collect();
        if held == default {
            "Docker's default capabilities".to_string()
        } else {
            format!("{} capabilities", held.len())
        }
    };
    let doc = PolicyOut {
        api_version: model::API_VERSION,
        kind: model::KIND_POLICY,
        metadata: MetadataOut {
            name: &options.name,
            description: format!(
                "Imported from a seccomp profile (amd64, {caps_label}, kernel {}{}).",
                options.kernel,
                if options.strict_args {
                    ", strict_args"
                } else {
                    ""
                }
            ),
        },
        spec: SpecOut {
            mode: Mode::Audit.as_str(),
            allow: allowed.iter().map(String::as_str).collect(),
            rules: rules_out(rules),
            errno: errno_out(errnos),
            abi,
        },
    };
    let body = serde_yaml::to_string(&doc)
        .map_err(|e| ImportError::Generated(format!("serde_yaml: {e}")))?;

    // Self-check with the loader: parse + compile, as `sysfence check` does.
    let path = Path::new("<import-seccomp>");
    let parsed = model::parse(path, &body).map_err(|d| ImportError::Generated(d.to_string()))?;
    let model::Document::Policy(doc) = parsed else {
        return Err(ImportError::Generated("not a policy".to_string()));
    };
    let (compiled, diags) = policy::compile::compile(path, &doc, &policy::shipped_catalog())
        .map_err(|d| ImportError::Generated(policy::Rejected(d).to_string()))?;
    for d in diags {
        warnings.push(format!("sysfence check: {}", d.message));
    }
    if compiled.allowed_names.iter().ne(allowed.iter()) {
        return Err(ImportError::Generated(
            "the compiled allowlist differs from the imported one".to_string(),
        ));
    }
    let conds = |b: &RuleBook| -> Vec<(String, Vec<Vec<args::Cond>>)> {
        b.iter()
            .map(|(n, l)| (n.clone(), l.iter().map(|r| r.conds.clone()).collect()))
            .collect()
    };
    if conds(&compiled.rules) != conds(rules) || &compiled.errnos != errnos {
        return Err(ImportError::Generated(
            "the compiled argument rules or errnos differ from the imported ones".to_string(),
        ));
    }

    let mut header = String::from(
        "# Imported from an OCI/Docker seccomp profile by sysfence (see `sysfence policy \
         import-seccomp`).\n# Review the notes below before moving this policy from \
         `audit` to `enforce`.\n",
    );
    if warnings.is_empty() {
        header.push_str("# No approximation was needed.\n");
    } else {
        header.push_str(&format!("# {} note(s):\n", warnings.len()));
        for w in warnings.iter() {
            header.push_str("# - ");
            // Profile text (names, comments) reaches the comment: a `\r` or NUL there would
            // end the comment line and break the document, so control characters are escaped.
            header.push_str(
                &w.replace('\n', " ")
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\t' {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect::<String>(),
            );
            header.push('\n');
        }
    }
    Ok(header + &body)
}
