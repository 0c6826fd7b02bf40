//! Where the probe finds what it reads in kernel structures: member offsets from the
//! running kernel's BTF, written into the probe's `.rodata` at load.

use anyhow::{Context as _, anyhow, bail};

use super::VMLINUX_BTF;

/// Where the probe finds what it reads in kernel structures, from the running kernel's
/// BTF (parsed once, at load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `thread_info.status` within `task_struct` (ia32 detection).
    pub task_status: u32,
    /// `task->cgroups->dfl_cgrp->kn->id`, or zeros: the probe then uses the helper.
    pub cgroup_id_path: [u32; 4],
    /// `task_struct.flags`, or 0: the io_uring worker check is then off.
    pub task_flags: u32,
    /// `task_struct.tgid`, `inode.i_sb`, `super_block.s_magic`, `file.f_inode`,
    /// `file.f_mode`, or zeros: the self-protection hooks are then not loaded.
    pub guard: [u32; 5],
    /// `task_struct.io_uring` (a task's io_uring context), or 0 on a kernel without
    /// io_uring.
    pub task_io_uring: u32,
    /// `task_struct.tgid`, `task_struct.signal`, `signal_struct.live`,
    /// `kernfs_node.parent` (`__parent` from 6.15), or zeros: processes that leave their
    /// workload's cgroup are then not followed.
    pub containment: [u32; 4],
    /// `task_struct.thread_pid`, `pid.level`, or zeros: a killed `ptrace` then reports
    /// its caller in the host's pid namespace.
    pub pid_level: [u32; 2],
    /// `task_struct.mm`, `mm_struct.flags`, or zeros: no process is then the runtime's
    /// setup (the exec boundary is off: everything in a bound cgroup is judged).
    pub setup: [u32; 2],
}

impl KernelLayout {
    pub fn read() -> anyhow::Result<KernelLayout> {
        let btf = btf_rs::Btf::from_file(VMLINUX_BTF).context("reading kernel BTF")?;
        let task_status = member_offset(&btf, "task_struct", "thread_info")?
            + member_offset(&btf, "thread_info", "status")?;
        let path = [
            member_offset(&btf, "task_struct", "cgroups"),
            member_offset(&btf, "css_set", "dfl_cgrp"),
            member_offset(&btf, "cgroup", "kn"),
            member_offset(&btf, "kernfs_node", "id"),
        ];
        // An offset of 0 would read as "no path": none of these members comes first.
        let cgroup_id_path = match path {
            [Ok(a), Ok(b), Ok(c), Ok(d)] if [a, b, c, d].iter().all(|&o| o != 0) => [a, b, c, d],
            _ => [0; 4],
        };
        let task_flags = member_offset(&btf, "task_struct", "flags").unwrap_or(0);
        let guard = [
            member_offset(&btf, "task_struct", "tgid"),
            member_offset(&btf, "inode", "i_sb"),
            member_offset(&btf, "super_block", "s_magic"),
            member_offset(&btf, "file", "f_inode"),
            member_offset(&btf, "file", "f_mode"),
        ];
        let guard = match guard {
            [Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)] => [a, b, c, d, e],
            _ => [0; 5],
        };
        let task_io_uring = member_offset(&btf, "task_struct", "io_uring").unwrap_or(0);
        let containment = [
            member_offset(&btf, "task_struct", "tgid"),
            member_offset(&btf, "task_struct", "signal"),
            member_offset(&btf, "signal_struct", "live"),
            member_offset(&btf, "kernfs_node", "parent")
                .or_else(|_| member_offset(&btf, "kernfs_node", "__parent")),
        ];
        let containment = match containment {
            [Ok(a), Ok(b), Ok(c), Ok(d)] if [a, b, c, d].iter().all(|&o| o != 0) => [a, b, c, d],
            _ => [0; 4],
        };
        let pid_level = match (
            member_offset(&btf, "task_struct", "thread_pid"),
            member_offset(&btf, "pid", "level"),
        ) {
            (Ok(a), Ok(b)) if a != 0 => [a, b],
            _ => [0; 2],
        };
        let setup = match (
            member_offset(&btf, "task_struct", "mm"),
            nested_member_offset(&btf, "mm_struct", "flags"),
        ) {
            (Ok(a), Ok(b)) if a != 0 => [a, b],
            _ => [0; 2],
        };
        Ok(KernelLayout {
            setup,
            pid_level,
            task_status,
            cgroup_id_path,
            task_flags,
            guard,
            task_io_uring,
            containment,
        })
    }
}

fn member_offset(btf: &btf_rs::Btf, strukt: &str, member: &str) -> anyhow::Result<u32> {
    for t in btf
        .resolve_types_by_name(strukt)
        .with_context(|| format!("BTF type {strukt}"))?
    {
        if let btf_rs::Type::Struct(s) = t {
            for m in &s.members {
                if btf.resolve_name(m).ok().as_deref() == Some(member) {
                    if m.bit_offset() % 8 != 0 {
                        bail!("{strukt}.{member} is a bit field");
                    }
                    return Ok(m.bit_offset() / 8);
                }
            }
        }
    }
    Err(anyhow!(
        "kernel BTF has no {strukt}.{member}: ia32 syscalls cannot be told apart on this kernel"
    ))
}

/// The byte offset of `member` in `strukt`, looking into its anonymous structs and
/// unions too (`mm_struct` keeps its members in one, for layout randomisation).
fn nested_member_offset(btf: &btf_rs::Btf, strukt: &str, member: &str) -> anyhow::Result<u32> {
    fn find(btf: &btf_rs::Btf, s: &btf_rs::Struct, member: &str, depth: u32) -> Option<u32> {
        for m in &s.members {
            let name = btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return (m.bit_offset() % 8 == 0).then(|| m.bit_offset() / 8);
            }
            if name.is_empty()
                && depth < 4
                && let Ok(btf_rs::Type::Struct(inner) | btf_rs::Type::Union(inner)) =
                    btf.resolve_chained_type(m)
                && let Some(offset) = find(btf, &inner, member, depth + 1)
            {
                return Some(m.bit_offset() / 8 + offset);
            }
        }
        None
    }
    for t in btf
        .resolve_types_by_name(strukt)
        .with_context(|| format!("BTF type {strukt}"))?
    {
        if let btf_rs::Type::Struct(s) = t
            && let Some(offset) = find(btf, &s, member, 0)
        {
            return Ok(offset);
        }
    }
    Err(anyhow!("kernel BTF has no {strukt}.{member}"))
}
