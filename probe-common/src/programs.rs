//! Names of the probe's programs other than the deny path's LSM hooks (those are in
//! [`LSM_PROGRAM_NAMES`]): the `probe-ebpf` functions the agent loads by name. An agent
//! unit test checks each against the built object.

/// `tp_btf/sys_enter`: judges every syscall of a bound workload.
pub const SYS_ENTER: &str = "sys_enter";
/// `tp_btf/sys_enter`, empty: the benchmark's floor, never attached by the agent.
pub const SYS_ENTER_FLOOR: &str = "sys_enter_floor";
/// `tp_btf/sys_exit`: reports a marked syscall, and kills when no hook denied it.
pub const SYS_EXIT: &str = "sys_exit";
/// `tp_btf/sched_process_exit`: clears the mark of a thread that dies mid-syscall, or
/// of a marked child that dies before its first syscall.
pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
/// `tp_btf/task_newtask`: judges the kernel's copy of a fork's flags against its
/// policy's `namespaces: deny`.
pub const CLONE_GUARD: &str = "clone_guard";

/// `tp_btf/cgroup_attach_task`: a policed process moved to a cgroup its policy is not
/// bound to carries it (`STRAYS`).
pub const FOLLOW_CGROUP_MOVE: &str = "follow_cgroup_move";

/// `tp_btf/sched_process_exec`: a runtime's setup process exec'd its workload's
/// program, and is judged by its cgroup's policy from its next syscall on; an exec in
/// an unknown cgroup below a start-hold root is held until the agent has looked.
pub const EXEC_BOUNDARY: &str = "exec_boundary";

/// `tp_btf/cgroup_notify_populated`: a doomed workload (`killScope: workload`) whose
/// last task is gone is doomed no more.
pub const LIFT_DOOM: &str = "lift_doom";

/// `tp_btf/cgroup_attach_task`: invalidates `sys_enter`'s per-task memo.
pub const MEMO_CGROUP_ATTACH: &str = "memo_cgroup_attach";
/// `tp_btf/sched_process_exit`: invalidates `sys_enter`'s per-task memo.
pub const MEMO_TASK_EXIT: &str = "memo_task_exit";

/// The self-protection programs (BPF LSM) and the hook each attaches to: a policed
/// task may not signal the agent, nor write bpffs, nor ptrace (or read or write the
/// memory of) a runtime's setup process before its exec.
pub const GUARDS: &[(&str, &str)] = &[
    ("guard_agent_kill", "task_kill"),
    ("guard_bpffs_open", "file_open"),
    ("guard_bpffs_create", "inode_create"),
    ("guard_bpffs_link", "inode_link"),
    ("guard_bpffs_unlink", "inode_unlink"),
    ("guard_bpffs_symlink", "inode_symlink"),
    ("guard_bpffs_mkdir", "inode_mkdir"),
    ("guard_bpffs_rmdir", "inode_rmdir"),
    ("guard_bpffs_mknod", "inode_mknod"),
    ("guard_bpffs_rename_from", "inode_rename"),
    ("guard_bpffs_rename_to", "inode_rename"),
    ("guard_setup_ptrace", "ptrace_access_check"),
];
