//! The context a profile is resolved in: the ABIs it filters on an amd64 host, and
//! whether a rule applies for the held capabilities and the kernel version.

use std::collections::BTreeSet;

use probe_common::Abi;

use super::profile::{Filter, Profile, Rule};
use super::{
    ARCH_X32, ARCH_X86, ARCH_X86_64, HOST_ARCH, ImportError, KernelVersion, OTHER_FAMILY_ARCHES,
    normalize_cap,
};

/// The ABIs the profile filters on an amd64 host.
pub(super) fn resolve_abis(
    profile: &Profile,
    warnings: &mut Vec<String>,
) -> Result<BTreeSet<Abi>, ImportError> {
    let architectures = profile.architectures.as_deref().unwrap_or_default();
    let arch_map = profile.arch_map.as_deref().unwrap_or_default();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err(ImportError::ArchitecturesAndArchMap);
    }
    let listed: Vec<&str> = if !arch_map.is_empty() {
        let Some(entry) = arch_map.iter().find(|e| e.architecture == ARCH_X86_64) else {
            let found: Vec<&str> = arch_map.iter().map(|e| e.architecture.as_str()).collect();
            return Err(ImportError::NoAmd64 {
                found: found.join(", "),
            });
        };
        std::iter::once(entry.architecture.as_str())
            .chain(entry.sub_architectures.iter().flatten().map(String::as_str))
            .collect()
    } else {
        architectures.iter().map(String::as_str).collect()
    };
    let mut abis = BTreeSet::from([Abi::X86_64]);
    if listed.is_empty() {
        warnings.push(
            "the profile lists no architectures: the runtime filters the native one only \
             (x86_64) and refuses i386 and x32 syscalls; imported with `abi: {ia32: deny, \
             x32: deny}`"
                .to_string(),
        );
        return Ok(abis);
    }
    let family = |a: &&str| [ARCH_X86_64, ARCH_X86, ARCH_X32].contains(a);
    if !listed.iter().any(family) {
        return Err(ImportError::NoAmd64 {
            found: listed.join(", "),
        });
    }
    if !listed.contains(&ARCH_X86_64) {
        warnings.push(format!(
            "the profile's architectures omit {ARCH_X86_64}: the native architecture is \
             filtered anyway, with the same rules; imported for x86_64 too"
        ));
    }
    if listed.contains(&ARCH_X86) {
        abis.insert(Abi::Ia32);
    }
    if listed.contains(&ARCH_X32) {
        abis.insert(Abi::X32);
    }
    let others: Vec<&str> = listed.iter().copied().filter(|a| !family(a)).collect();
    if !others.is_empty() {
        warnings.push(format!(
            "architectures outside the amd64 family ignored: {}",
            others.join(", ")
        ));
    }
    Ok(abis)
}

/// Whether a rule applies in the context, as moby's `setupSeccomp` decides it.
pub(super) fn applies(
    rule: &Rule,
    at: &str,
    caps: &BTreeSet<String>,
    kernel: KernelVersion,
    warnings: &mut Vec<String>,
) -> Result<bool, ImportError> {
    let min_kernel = |f: &Filter, which: &str| -> Result<Option<KernelVersion>, ImportError> {
        match f.min_kernel.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => {
                KernelVersion::parse(v)
                    .map(Some)
                    .ok_or_else(|| ImportError::InvalidMinKernel {
                        at: format!("{at}.{which}.minKernel"),
                        value: v.to_string(),
                    })
            }
        }
    };
    let empty = Filter::default();
    let inc = rule.includes.as_ref().unwrap_or(&empty);
    let exc = rule.excludes.as_ref().unwrap_or(&empty);
    // Parse both versions first, so that a bad one is reported whatever the context.
    let inc_kernel = min_kernel(inc, "includes")?;
    let exc_kernel = min_kernel(exc, "excludes")?;
    let inc_arches = inc.arches.as_deref().unwrap_or_default();
    let exc_arches = exc.arches.as_deref().unwrap_or_default();
    let family_only = |arches: &[String]| {
        !arches.iter().any(|a| a == HOST_ARCH)
            && arches
                .iter()
                .any(|a| OTHER_FAMILY_ARCHES.contains(&a.as_str()))
    };
    if !inc_arches.is_empty() && family_only(inc_arches) {
        warnings.push(format!(
            "{at}: includes.arches [{}] names x86/x32 but not amd64: Docker matches `arches` \
             against the host architecture, so on an amd64 host the rule does not apply \
             (not imported)",
            inc_arches.join(", ")
        ));
    }
    if family_only(exc_arches) {
        warnings.push(format!(
            "{at}: excludes.arches [{}] names x86/x32 but not amd64: Docker matches `arches` \
             against the host architecture, so on an amd64 host the rule still applies",
            exc_arches.join(", ")
        ));
    }
    let held = |c: &String| caps.contains(&normalize_cap(c));
    if exc_arches.iter().any(|a| a == HOST_ARCH)
        || exc.caps.iter().flatten().any(held)
        || exc_kernel.is_some_and(|k| kernel >= k)
    {
        return Ok(false);
    }
    if (!inc_arches.is_empty() && !inc_arches.iter().any(|a| a == HOST_ARCH))
        || !inc.caps.iter().flatten().all(held)
        || inc_kernel.is_some_and(|k| kernel < k)
    {
        return Ok(false);
    }
    Ok(true)
}
