//! Import: a seccomp profile to a sysfence policy; the rules are in the module
//! documentation of [`super`].

use std::collections::{BTreeMap, BTreeSet};

use super::context::{applies, resolve_abis};
use super::profile::{Action, Arg, Profile, Rule};
use super::render::render_policy;
use super::{
    ENOSYS, EPERM, ImportError, ImportOptions, Imported, UNKNOWN_PREFIX, normalize_cap,
    quoted_list, shape,
};
use crate::policy::args;
use crate::syscall_table;

/// A rule that applies in the resolved context.
struct Applied<'a> {
    at: String,
    action: Action,
    rule: &'a Rule,
}

impl Applied<'_> {
    fn conditional(&self) -> bool {
        self.rule.args.as_ref().is_some_and(|a| !a.is_empty())
    }

    fn conditions(&self) -> String {
        self.rule
            .args
            .iter()
            .flatten()
            .map(Arg::to_string)
            .collect::<Vec<_>>()
            .join(" && ")
    }

    fn comment(&self) -> String {
        match self.rule.comment.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => format!(" [comment: {c}]"),
            _ => String::new(),
        }
    }
}

/// The applicable rules naming one syscall.
#[derive(Default)]
struct NameRules<'r, 'a> {
    allow_uncond: Vec<&'r Applied<'a>>,
    allow_cond: Vec<&'r Applied<'a>>,
    deny_uncond: Vec<&'r Applied<'a>>,
    deny_cond: Vec<&'r Applied<'a>>,
}

/// A rule's `args` as sysfence argument rules, or why they cannot be. Conditions are
/// ANDed, except in an entry where one argument has several: there runc, and gVisor
/// after it, OR every condition of the entry, so each becomes a rule of its own.
fn to_rules(a: &Applied) -> Result<Vec<args::Rule>, String> {
    let rule = to_rule(a)?;
    if args::repeated_index(&rule.conds).is_none() {
        return Ok(vec![rule]);
    }
    Ok(rule
        .conds
        .iter()
        .map(|c| args::Rule {
            conds: vec![*c],
            comment: rule.comment.clone(),
        })
        .collect())
}

/// A rule's `args` as one sysfence argument rule (its conditions ANDed), or why it
/// cannot be one.
fn to_rule(a: &Applied) -> Result<args::Rule, String> {
    let list = a.rule.args.as_deref().unwrap_or_default();
    if list.len() > probe_common::MAX_ARG_CONDS {
        return Err(format!(
            "{} conditions; sysfence holds {} per rule",
            list.len(),
            probe_common::MAX_ARG_CONDS
        ));
    }
    let mut conds = Vec::new();
    for arg in list {
        let op = args::CondOp::parse(&arg.op).ok_or_else(|| format!("unknown op `{}`", arg.op))?;
        if arg.index > 5 {
            return Err(format!("argument index {}", arg.index));
        }
        conds.push(args::Cond {
            index: arg.index as u8,
            op,
            value: arg.value,
            value_two: if op == args::CondOp::MaskedEq {
                arg.value_two
            } else {
                0
            },
        });
    }
    Ok(args::Rule {
        conds,
        comment: a
            .rule
            .comment
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from),
    })
}

/// Convert a seccomp profile (JSON text) into a sysfence policy. See the module
/// documentation for how the profile is resolved and approximated.
pub fn import(json: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    if !crate::policy::compile::valid_name(&options.name) {
        return Err(ImportError::InvalidName {
            name: options.name.clone(),
        });
    }
    // A byte-order mark is not JSON, but editors write one.
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    // Syntax first, so that a syntax error is reported as one even when the text would
    // also have the wrong shape before that point.
    let value: serde_json::Value = serde_json::from_str(json).map_err(ImportError::from_json)?;
    if !value.is_object() {
        return Err(ImportError::Shape {
            field: None,
            line: 1,
            column: 1,
            message: "the profile must be a JSON object".to_string(),
        });
    }
    let profile: Profile = serde_json::from_str(json).map_err(|e| {
        let mut e = ImportError::from_json(e);
        if let ImportError::Shape { field, .. } = &mut e {
            *field = shape::locate(&value);
        }
        e
    })?;
    let mut warnings = Vec::new();

    let default_action = profile
        .default_action
        .as_deref()
        .ok_or(ImportError::MissingDefaultAction)?;
    let default_action =
        Action::parse(default_action).ok_or_else(|| ImportError::UnknownAction {
            at: "defaultAction".to_string(),
            action: default_action.to_string(),
        })?;
    let denylist = default_action.allows();
    if let Some(why) = default_action.handed_over() {
        warnings.push(format!(
            "defaultAction {} ({why}): sysfence cannot hand a syscall over; what the rules do \
             not allow is denied",
            default_action.as_str()
        ));
    }
    if !denylist && profile.default_errno_ret == Some(ENOSYS) {
        warnings.push(
            "defaultErrnoRet is ENOSYS (38), so that programs fall back from syscalls they \
             may not use; sysfence cannot return an errno: under `enforce`, calling one kills \
             the task"
                .to_string(),
        );
    }

    let abis = resolve_abis(&profile, &mut warnings)?;
    let caps: BTreeSet<String> = options
        .capabilities
        .iter()
        .map(|c| normalize_cap(c))
        .collect();

    // The applicable rules, in order.
    let rules = profile.syscalls.as_deref().unwrap_or_default();
    let mut applied: Vec<Applied> = Vec::new();
    let mut rule_names: Vec<Vec<&str>> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("syscalls[{i}]");
        let action_text = rule
            .action
            .as_deref()
            .ok_or_else(|| ImportError::MissingAction { at: at.clone() })?;
        let action = Action::parse(action_text).ok_or_else(|| ImportError::UnknownAction {
            at: at.clone(),
            action: action_text.to_string(),
        })?;
        let names: Vec<&str> = match (&rule.name, &rule.names) {
            (Some(n), Some(list)) if !n.is_empty() && !list.is_empty() => {
                return Err(ImportError::NameAndNames { at });
            }
            (Some(n), _) if !n.is_empty() => vec![n.as_str()],
            (_, Some(list)) => list.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        if !applies(rule, &at, &caps, options.kernel, &mut warnings)? {
            continue;
        }
        if names.is_empty() {
            warnings.push(format!("{at}: names no syscall: ignored"));
            continue;
        }
        applied.push(Applied { at, action, rule });
        rule_names.push(names);
    }

    // Per name, the applicable rules naming it.
    let mut by_name: BTreeMap<&str, NameRules> = BTreeMap::new();
    for (a, names) in applied.iter().zip(&rule_names) {
        for &n in names {
            let e = by_name.entry(n).or_default();
            match (a.action.allows(), a.conditional()) {
                (true, false) => e.allow_uncond.push(a),
                (true, true) => e.allow_cond.push(a),
                (false, false) => e.deny_uncond.push(a),
                (false, true) => e.deny_cond.push(a),
            }
        }
    }

    // Rules that hand syscalls over, and LOG rules.
    let mut logged = BTreeSet::new();
    for (a, names) in applied.iter().zip(&rule_names) {
        if let Some(why) = a.action.handed_over() {
            warnings.push(format!(
                "{}: {} for {} ({why}){}: sysfence cannot hand a syscall over; treated as denied",
                a.at,
                a.action.as_str(),
                quoted_list(names.iter().copied()),
                a.comment()
            ));
        }
        if a.action == Action::Log {
            logged.extend(names.iter().copied());
        }
    }
    if !logged.is_empty() && !denylist {
        warnings.push(format!(
            "SCMP_ACT_LOG (allowed, and logged) for {}: allowed; sysfence counts allowed \
             syscalls but does not report each call",
            quoted_list(logged.iter().copied())
        ));
    }

    // The verdict, per name: allowed for some argument values, and for all of them.
    let mut some_allowed: BTreeSet<&str> = BTreeSet::new();
    let mut all_allowed: BTreeSet<&str> = BTreeSet::new();
    let mut partial: Vec<(&str, Vec<String>)> = Vec::new();
    let mut rules = args::RuleBook::new();
    let mut errnos: BTreeMap<String, u32> = BTreeMap::new();
    for (&n, r) in &by_name {
        let conflict = !r.allow_uncond.is_empty() && !r.deny_uncond.is_empty();
        if conflict {
            warnings.push(format!(
                "`{n}`: both allowed ({}) and denied ({}) by applicable rules without argument \
                 conditions; runc refuses such a profile; left out",
                r.allow_uncond
                    .iter()
                    .map(|a| a.at.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.deny_uncond
                    .iter()
                    .map(|a| format!("{} {}", a.at, a.action.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        let (some, all) = if denylist {
            (
                r.deny_uncond.is_empty(),
                r.deny_uncond.is_empty() && r.deny_cond.is_empty(),
            )
        } else {
            (
                !r.allow_uncond.is_empty() || !r.allow_cond.is_empty(),
                !r.allow_uncond.is_empty() && r.deny_uncond.is_empty() && r.deny_cond.is_empty(),
            )
        };
        if some {
            some_allowed.insert(n);
        }
        if all {
            all_allowed.insert(n);
        }
        // A deny-by-default profile that allows the name for some arguments only: the
        // same argument rules, exactly, unless a rule cannot be expressed.
        if some && !all && !denylist && !options.strict_args && r.allow_uncond.is_empty() {
            let converted: Result<Vec<Vec<args::Rule>>, String> =
                r.allow_cond.iter().map(|a| to_rules(a)).collect();
            match converted {
                Ok(list) => {
                    for rule in list.into_iter().flatten() {
                        args::add_rule(&mut rules, n, rule);
                    }
                    for a in r.deny_uncond.iter().chain(&r.deny_cond) {
                        warnings.push(format!(
                            "`{n}`: allowed by argument rules, and also denied by {} ({}){}{}; \
                             sysfence follows the allowing rules",
                            a.at,
                            a.action.as_str(),
                            if a.conditional() {
                                format!(" when {}", a.conditions())
                            } else {
                                String::new()
                            },
                            a.comment()
                        ));
                    }
                    continue;
                }
                Err(why) => warnings.push(format!(
                    "`{n}`: an argument rule sysfence cannot hold ({why})"
                )),
            }
        }
        if some && !all {
            let mut why = Vec::new();
            if !denylist && r.allow_uncond.is_empty() {
                let conds: Vec<String> = r
                    .allow_cond
                    .iter()
                    .map(|a| format!("{}{}", a.conditions(), a.comment()))
                    .collect();
                why.push(format!("allowed only when {}", conds.join(" || ")));
            }
            for a in r.deny_uncond.iter().chain(&r.deny_cond) {
                if a.conditional() {
                    why.push(format!(
                        "denied by {} ({}) when {}{}",
                        a.at,
                        a.action.as_str(),
                        a.conditions(),
                        a.comment()
                    ));
                } else {
                    why.push(format!(
                        "also denied by {} ({}){}",
                        a.at,
                        a.action.as_str(),
                        a.comment()
                    ));
                }
            }
            partial.push((n, why));
        }
        // The errno the profile fails a name it does not allow with.
        if !some || (options.strict_args && !all) {
            for a in r.deny_uncond.iter().chain(&r.deny_cond) {
                if a.action == Action::Errno
                    && let Some(errno) = a.rule.errno_ret
                    && errno != EPERM
                    && (1..=args::MAX_ERRNO).contains(&errno)
                {
                    errnos.insert(n.to_string(), errno);
                    let fallback = if n == "clone3" {
                        "under `action: kill`, where no errno can be returned, clone3 is \
                         allowed when its flags ask for no namespace, as its fallback clone \
                         is (glibc 2.34 and later call clone3 for every new thread)"
                            .to_string()
                    } else {
                        format!("under `action: kill`, calling `{n}` kills the task")
                    };
                    warnings.push(format!(
                        "`{n}`: the profile fails it with {} ({}{}): imported as `errno`, which \
                         `action: deny` returns (BPF LSM); {fallback}",
                        args::errno_label(errno),
                        a.at,
                        a.comment()
                    ));
                    break;
                }
            }
        }
    }
    for (n, why) in &partial {
        let verdict = if options.strict_args {
            "left out (strict_args)"
        } else {
            "sysfence allows all of them"
        };
        warnings.push(format!(
            "`{n}`: allowed for some argument values only ({}); {verdict}",
            why.join("; ")
        ));
    }
    let chosen = if options.strict_args {
        &all_allowed
    } else {
        &some_allowed
    };

    // From names to the allowlist.
    let known = syscall_table::all_names();
    let in_abis = |n: &str| {
        abis.iter()
            .any(|&abi| syscall_table::number(abi, n).is_some())
    };
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    let mut skipped_unknown: BTreeSet<String> = BTreeSet::new();
    if denylist {
        let denied: BTreeSet<&str> = by_name
            .keys()
            .copied()
            .filter(|n| !chosen.contains(n))
            .collect();
        let universe: BTreeSet<&str> = known.iter().copied().filter(|n| in_abis(n)).collect();
        allowed.extend(
            universe
                .iter()
                .filter(|n| !denied.contains(*n))
                .map(|n| n.to_string()),
        );
        warnings.push(format!(
            "defaultAction {} makes the profile a denylist: imported as an allowlist of every \
             syscall sysfence's tables know for {} ({} names) minus the {} the profile denies; \
             syscalls newer than the tables are not allowed",
            default_action.as_str(),
            abis.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
            universe.len(),
            universe.len() - allowed.len()
        ));
    } else {
        let mut elsewhere = BTreeSet::new();
        for &n in chosen {
            if rules.contains_key(n) {
                if !known.contains(n) {
                    skipped_unknown.insert(n.to_string());
                    rules.remove(n);
                } else if !in_abis(n) {
                    elsewhere.insert(n);
                    rules.remove(n);
                }
                continue;
            }
            if !known.contains(n) {
                skipped_unknown.insert(n.to_string());
            } else if !in_abis(n) {
                elsewhere.insert(n);
            } else {
                allowed.insert(n.to_string());
            }
        }
        // Names the strict choice dropped can still be unknown: report every one.
        for &n in &some_allowed {
            if !known.contains(n) {
                skipped_unknown.insert(n.to_string());
            }
        }
        if !elsewhere.is_empty() {
            warnings.push(format!(
                "skipped {} name(s) that exist only in ABIs the profile's architectures do not \
                 include: {}",
                elsewhere.len(),
                quoted_list(elsewhere.iter().copied())
            ));
        }
    }
    if !skipped_unknown.is_empty() {
        warnings.push(format!(
            "{}: {}",
            UNKNOWN_PREFIX,
            skipped_unknown
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    errnos.retain(|n, _| known.contains(n.as_str()));
    let policy_yaml = render_policy(options, &allowed, &rules, &errnos, &abis, &mut warnings)?;
    Ok(Imported {
        policy_yaml,
        allowed,
        rules,
        errnos,
        abis,
        skipped_unknown,
        warnings,
    })
}
