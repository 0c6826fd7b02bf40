//! Syscall names and numbers per ABI.
//!
//! x86_64 and i386 come from the `syscalls` crate, which is generated from the kernel's
//! `syscall_64.tbl` and `syscall_32.tbl`. That crate has no x32 table, so x32 is derived
//! here from the x86_64 one, following the kernel's `syscall_64.tbl`:
//! - `common` entries keep their number (plus `__X32_SYSCALL_BIT` at run time);
//! - `64` entries do not exist for x32;
//! - the `x32` entries 512..=547 replace some of them under new numbers.

use std::{collections::BTreeSet, str::FromStr, sync::OnceLock};

use probe_common::{Abi, index_to_syscall, syscall_index};

/// x86_64 numbers marked `64` (not `common`) in the kernel's `syscall_64.tbl`: an x32
/// task cannot call them under that number.
const X86_64_ONLY: &[u32] = &[
    13, 15, 16, 19, 20, 45, 46, 47, 54, 55, 59, 101, 127, 128, 129, 131, 134, 156, 174, 177, 178,
    180, 205, 206, 209, 211, 214, 215, 222, 236, 244, 246, 247, 273, 274, 278, 279, 295, 296, 297,
    299, 307, 310, 311, 322, 327, 328,
];

/// The `x32` entries of `syscall_64.tbl`: (number, name).
const X32_SPECIFIC: &[(u32, &str)] = &[
    (512, "rt_sigaction"),
    (513, "rt_sigreturn"),
    (514, "ioctl"),
    (515, "readv"),
    (516, "writev"),
    (517, "recvfrom"),
    (518, "sendmsg"),
    (519, "recvmsg"),
    (520, "execve"),
    (521, "ptrace"),
    (522, "rt_sigpending"),
    (523, "rt_sigtimedwait"),
    (524, "rt_sigqueueinfo"),
    (525, "sigaltstack"),
    (526, "timer_create"),
    (527, "mq_notify"),
    (528, "kexec_load"),
    (529, "waitid"),
    (530, "set_robust_list"),
    (531, "get_robust_list"),
    (532, "vmsplice"),
    (533, "move_pages"),
    (534, "preadv"),
    (535, "pwritev"),
    (536, "rt_tgsigqueueinfo"),
    (537, "recvmmsg"),
    (538, "sendmmsg"),
    (539, "process_vm_readv"),
    (540, "process_vm_writev"),
    (541, "setsockopt"),
    (542, "getsockopt"),
    (543, "io_setup"),
    (544, "io_submit"),
    (545, "execveat"),
    (546, "preadv2"),
    (547, "pwritev2"),
];

/// The number of syscall `name` in `abi`, if that ABI has it.
pub fn number(abi: Abi, name: &str) -> Option<u32> {
    match abi {
        Abi::X86_64 => syscalls::x86_64::Sysno::from_str(name)
            .ok()
            .map(|s| s.id() as u32),
        Abi::Ia32 => syscalls::x86::Sysno::from_str(name)
            .ok()
            .map(|s| s.id() as u32),
        Abi::X32 => {
            if let Some(&(nr, _)) = X32_SPECIFIC.iter().find(|(_, n)| *n == name) {
                return Some(nr);
            }
            let nr = number(Abi::X86_64, name)?;
            (!X86_64_ONLY.contains(&nr)).then_some(nr)
        }
    }
}

/// The name of syscall `nr` in `abi`.
pub fn name(abi: Abi, nr: u32) -> Option<&'static str> {
    match abi {
        Abi::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name()),
        Abi::Ia32 => syscalls::x86::Sysno::new(nr as usize).map(|s| s.name()),
        Abi::X32 => {
            if let Some(&(_, n)) = X32_SPECIFIC.iter().find(|(x, _)| *x == nr) {
                return Some(n);
            }
            if X86_64_ONLY.contains(&nr) {
                return None;
            }
            name(Abi::X86_64, nr)
        }
    }
}

/// Every syscall name known in any ABI, sorted.
pub fn all_names() -> &'static BTreeSet<&'static str> {
    static NAMES: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: BTreeSet<&'static str> =
            syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect();
        names.extend(syscalls::x86::Sysno::iter().map(|s| s.name()));
        names
    })
}

/// The ABIs in which `name` exists.
pub fn abis_of(name: &str) -> Vec<Abi> {
    Abi::ALL
        .into_iter()
        .filter(|&abi| number(abi, name).is_some())
        .collect()
}

/// Index in the probe's syscall index space of `name` in `abi`.
pub fn index_of(abi: Abi, name: &str) -> Option<u32> {
    syscall_index(abi, number(abi, name)? as u64)
}

/// A syscall index as users read it: `getppid` for x86_64, `mount (i386)` otherwise,
/// `#600 (i386)` for a number with no name, `unclassified` for the overflow counter.
pub fn describe_index(index: u32) -> (Option<Abi>, String) {
    match index_to_syscall(index) {
        Some((abi, nr)) => {
            let name = name(abi, nr).map_or_else(|| format!("#{nr}"), str::to_string);
            (Some(abi), name)
        }
        None => (None, "unclassified".to_string()),
    }
}

/// `name (abi)` for ABIs other than x86_64, bare `name` for x86_64.
pub fn label(abi: Option<Abi>, name: &str) -> String {
    match abi {
        Some(Abi::X86_64) => name.to_string(),
        Some(abi) => format!("{name} ({})", abi.name()),
        None => name.to_string(),
    }
}

/// Known names closest to an unknown one, best first (at most 3).
pub fn suggestions(unknown: &str) -> Vec<&'static str> {
    let mut scored: Vec<(f64, &'static str)> = all_names()
        .iter()
        .map(|&n| (strsim::jaro_winkler(unknown, n), n))
        .filter(|(score, _)| *score >= 0.85)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusable_numbers_resolve_per_abi() {
        // i386 21 is mount, x86_64 21 is access.
        assert_eq!(number(Abi::X86_64, "access"), Some(21));
        assert_eq!(number(Abi::Ia32, "mount"), Some(21));
        assert_eq!(name(Abi::Ia32, 21), Some("mount"));
        assert_eq!(name(Abi::X86_64, 21), Some("access"));
        // i386 310 is unshare, x86_64 310 is process_vm_readv.
        assert_eq!(number(Abi::Ia32, "unshare"), Some(310));
        assert_eq!(number(Abi::X86_64, "process_vm_readv"), Some(310));
    }

    #[test]
    fn x32_uses_its_own_numbers_where_the_kernel_does() {
        assert_eq!(number(Abi::X32, "read"), Some(0));
        assert_eq!(number(Abi::X32, "ioctl"), Some(514));
        assert_eq!(number(Abi::X32, "execve"), Some(520));
        assert_eq!(name(Abi::X32, 520), Some("execve"));
        // x86_64-only numbers do not exist for x32.
        assert_eq!(name(Abi::X32, 16), None);
        assert_eq!(number(Abi::X32, "uselib"), None);
        // i386-only names do not exist for x32 or x86_64.
        assert_eq!(number(Abi::X32, "socketcall"), None);
        assert_eq!(number(Abi::Ia32, "socketcall"), Some(102));
    }

    #[test]
    fn every_x32_specific_entry_names_an_x86_64_syscall() {
        for (_, n) in X32_SPECIFIC {
            assert!(number(Abi::X86_64, n).is_some(), "{n}");
        }
    }

    #[test]
    fn suggestions_find_typos() {
        assert_eq!(suggestions("getpid2").first(), Some(&"getpid"));
        assert!(suggestions("mkdri").contains(&"mkdir"));
        assert!(suggestions("zzzzzzzz").is_empty());
    }

    #[test]
    fn labels_name_the_abi() {
        let i = index_of(Abi::Ia32, "mount").unwrap();
        let (abi, name) = describe_index(i);
        assert_eq!(label(abi, &name), "mount (i386)");
        let (abi, name) = describe_index(index_of(Abi::X86_64, "getppid").unwrap());
        assert_eq!(label(abi, &name), "getppid");
    }
}
