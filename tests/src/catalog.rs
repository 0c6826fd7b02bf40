//! Sensitive syscalls with realistic arguments, for measuring which ones `action: deny`
//! prevents. Each entry reaches the kernel's permission checks with arguments a real
//! program would pass (a valid path, our own pid, a real socket); run as root, an
//! allowed call would succeed, or fail only after those checks.
//!
//! Every call runs in a forked child, so that one call's effect (a new namespace, a
//! dropped uid) does not change the next one.

use std::{ffi::CString, path::Path};

/// The catalog, by syscall name (the x86_64 name the policy denies).
pub const CATALOG: &[&str] = &[
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "fchownat",
    "lchown",
    "truncate",
    "ftruncate",
    "utimensat",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "chroot",
    "creat",
    "statfs",
    "acct",
    "swapon",
    "inotify_add_watch",
    "fanotify_init",
    "name_to_handle_at",
    "open_by_handle_at",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "kill",
    "tgkill",
    "setuid",
    "setgid",
    "setresuid",
    "setgroups",
    "capset",
    "prctl",
    "personality",
    "setpriority",
    "sched_setscheduler",
    "setrlimit",
    "prlimit64",
    "setpgid",
    "ioprio_set",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "reboot",
    "syslog",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "iopl",
    "ioperm",
    "vhangup",
    "socket",
    "socketpair",
    "bind",
    "connect",
    "listen",
    "setsockopt",
    "msgget",
    "semget",
    "shmget",
    "memfd_create",
    "getppid",
    "uname",
    "sysinfo",
];

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn path_c(p: &Path) -> CString {
    c(p.to_str().expect("UTF-8 path"))
}

/// Prepare what a call needs (files, sockets) in `dir`, then make the call; returns the
/// raw result (-1 and errno on failure). Runs in a child process.
pub fn call(name: &str, dir: &Path) -> Result<i64, std::io::Error> {
    let file = dir.join("file");
    let _ = std::fs::write(&file, b"sysfence");
    let sub = dir.join("sub");
    let _ = std::fs::create_dir(&sub);
    let f = path_c(&file);
    let s = path_c(&sub);
    let new = path_c(&dir.join("new"));
    let fd = unsafe { libc::open(f.as_ptr(), libc::O_RDWR) };
    let me = unsafe { libc::getpid() };
    use libc::*;
    // SAFETY: every pointer below points to a live local; integers are plain values.
    let r: i64 = unsafe {
        match name {
            "mkdir" => syscall(SYS_mkdir, new.as_ptr(), 0o755),
            "mkdirat" => syscall(SYS_mkdirat, AT_FDCWD, new.as_ptr(), 0o755),
            "rmdir" => syscall(SYS_rmdir, s.as_ptr()),
            "unlink" => syscall(SYS_unlink, f.as_ptr()),
            "unlinkat" => syscall(SYS_unlinkat, AT_FDCWD, f.as_ptr(), 0),
            "rename" => syscall(SYS_rename, f.as_ptr(), new.as_ptr()),
            "renameat" => syscall(SYS_renameat, AT_FDCWD, f.as_ptr(), AT_FDCWD, new.as_ptr()),
            "renameat2" => syscall(
                SYS_renameat2,
                AT_FDCWD,
                f.as_ptr(),
                AT_FDCWD,
                new.as_ptr(),
                0,
            ),
            "link" => syscall(SYS_link, f.as_ptr(), new.as_ptr()),
            "linkat" => syscall(SYS_linkat, AT_FDCWD, f.as_ptr(), AT_FDCWD, new.as_ptr(), 0),
            "symlink" => syscall(SYS_symlink, f.as_ptr(), new.as_ptr()),
            "symlinkat" => syscall(SYS_symlinkat, f.as_ptr(), AT_FDCWD, new.as_ptr()),
            "mknod" => syscall(SYS_mknod, new.as_ptr(), S_IFIFO | 0o600, 0),
            "mknodat" => syscall(SYS_mknodat, AT_FDCWD, new.as_ptr(), S_IFIFO | 0o600, 0),
            "chmod" => syscall(SYS_chmod, f.as_ptr(), 0o600),
            "fchmod" => syscall(SYS_fchmod, fd, 0o600),
            "fchmodat" => syscall(SYS_fchmodat, AT_FDCWD, f.as_ptr(), 0o600),
            "chown" => syscall(SYS_chown, f.as_ptr(), 1, 1),
            "fchown" => syscall(SYS_fchown, fd, 1, 1),
            "fchownat" => syscall(SYS_fchownat, AT_FDCWD, f.as_ptr(), 1, 1, 0),
            "lchown" => syscall(SYS_lchown, f.as_ptr(), 1, 1),
            "truncate" => syscall(SYS_truncate, f.as_ptr(), 1),
            "ftruncate" => syscall(SYS_ftruncate, fd, 1),
            "utimensat" => syscall(
                SYS_utimensat,
                AT_FDCWD,
                f.as_ptr(),
                std::ptr::null::<timespec>(),
                0,
            ),
            "setxattr" => {
                let (n, v) = (c("user.sysfence"), b"1");
                syscall(SYS_setxattr, f.as_ptr(), n.as_ptr(), v.as_ptr(), v.len(), 0)
            }
            "getxattr" => {
                let n = c("user.sysfence");
                let mut buf = [0u8; 16];
                syscall(
                    SYS_getxattr,
                    f.as_ptr(),
                    n.as_ptr(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            }
            "listxattr" => {
                let mut buf = [0u8; 256];
                syscall(SYS_listxattr, f.as_ptr(), buf.as_mut_ptr(), buf.len())
            }
            "removexattr" => {
                let n = c("user.sysfence");
                syscall(SYS_removexattr, f.as_ptr(), n.as_ptr())
            }
            "chroot" => syscall(SYS_chroot, s.as_ptr()),
            "creat" => syscall(SYS_creat, new.as_ptr(), 0o600),
            "statfs" => {
                let mut st: statfs = std::mem::zeroed();
                syscall(SYS_statfs, f.as_ptr(), &mut st)
            }
            "acct" => syscall(SYS_acct, f.as_ptr()),
            "swapon" => syscall(SYS_swapon, f.as_ptr(), 0),
            "inotify_add_watch" => {
                let ifd = inotify_init1(0);
                syscall(SYS_inotify_add_watch, ifd, f.as_ptr(), IN_MODIFY)
            }
            "fanotify_init" => syscall(SYS_fanotify_init, 0, O_RDONLY),
            "name_to_handle_at" | "open_by_handle_at" => {
                #[repr(C)]
                struct Handle {
                    bytes: u32,
                    kind: i32,
                    data: [u8; 128],
                }
                let mut h = Handle {
                    bytes: 128,
                    kind: 0,
                    data: [0; 128],
                };
                let mut mount_id = 0i32;
                let r = syscall(
                    SYS_name_to_handle_at,
                    AT_FDCWD,
                    f.as_ptr(),
                    &mut h as *mut Handle,
                    &mut mount_id,
                    0,
                );
                if name == "name_to_handle_at" || r < 0 {
                    r
                } else {
                    let root = open(c("/").as_ptr(), O_RDONLY | O_DIRECTORY);
                    syscall(SYS_open_by_handle_at, root, &mut h as *mut Handle, O_RDONLY)
                }
            }
            "mount" => syscall(
                SYS_mount,
                c("none").as_ptr(),
                s.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                std::ptr::null::<u8>(),
            ),
            "umount2" => {
                mount(
                    c("none").as_ptr(),
                    s.as_ptr(),
                    c("tmpfs").as_ptr(),
                    0,
                    std::ptr::null(),
                );
                syscall(SYS_umount2, s.as_ptr(), 0)
            }
            "pivot_root" => {
                // In a private mount namespace, with `sub` a mount point: pivot into it.
                unshare(CLONE_NEWNS);
                mount(
                    std::ptr::null(),
                    c("/").as_ptr(),
                    std::ptr::null(),
                    MS_REC | MS_PRIVATE,
                    std::ptr::null(),
                );
                mount(
                    s.as_ptr(),
                    s.as_ptr(),
                    std::ptr::null(),
                    MS_BIND,
                    std::ptr::null(),
                );
                let old = sub.join("old");
                let _ = std::fs::create_dir(&old);
                syscall(SYS_pivot_root, s.as_ptr(), path_c(&old).as_ptr())
            }
            "unshare" => syscall(SYS_unshare, CLONE_NEWUSER),
            "setns" => {
                let ns = open(c("/proc/self/ns/uts").as_ptr(), O_RDONLY);
                syscall(SYS_setns, ns, CLONE_NEWUTS)
            }
            "ptrace" => {
                let child = fork();
                if child == 0 {
                    pause();
                    _exit(0);
                }
                let r = syscall(SYS_ptrace, PTRACE_ATTACH, child, 0, 0);
                kill(child, SIGKILL);
                r
            }
            "process_vm_readv" => {
                let mut local = [0u8; 8];
                let src = [1u8; 8];
                let l = iovec {
                    iov_base: local.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                let rm = iovec {
                    iov_base: src.as_ptr() as *mut c_void,
                    iov_len: 8,
                };
                syscall(SYS_process_vm_readv, me, &l, 1, &rm, 1, 0)
            }
            "kill" => syscall(SYS_kill, me, 0),
            "tgkill" => syscall(SYS_tgkill, me, me, 0),
            "setuid" => syscall(SYS_setuid, 0),
            "setgid" => syscall(SYS_setgid, 0),
            "setresuid" => syscall(SYS_setresuid, 0, 0, 0),
            "setgroups" => {
                let groups = [0 as gid_t];
                syscall(SYS_setgroups, 1, groups.as_ptr())
            }
            "capset" => {
                let mut hdr = [0x2008_0522u32, 0];
                let mut data = [0u32; 6];
                syscall(SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr());
                syscall(SYS_capset, hdr.as_mut_ptr(), data.as_ptr())
            }
            "prctl" => syscall(SYS_prctl, PR_SET_NAME, c("sf-prctl").as_ptr(), 0, 0, 0),
            "personality" => syscall(SYS_personality, 0xffff_ffffu64),
            "setpriority" => syscall(SYS_setpriority, PRIO_PROCESS, 0, 5),
            "sched_setscheduler" => {
                let p = sched_param { sched_priority: 0 };
                syscall(SYS_sched_setscheduler, 0, SCHED_BATCH, &p)
            }
            "setrlimit" | "prlimit64" => {
                let mut l: rlimit = std::mem::zeroed();
                getrlimit(RLIMIT_NOFILE, &mut l);
                if name == "setrlimit" {
                    syscall(SYS_setrlimit, RLIMIT_NOFILE, &l)
                } else {
                    syscall(
                        SYS_prlimit64,
                        0,
                        RLIMIT_NOFILE,
                        &l,
                        std::ptr::null_mut::<rlimit>(),
                    )
                }
            }
            "setpgid" => syscall(SYS_setpgid, 0, 0),
            "ioprio_set" => syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 4),
            "bpf" => {
                let attr = [2u32, 4, 4, 1, 0, 0, 0, 0];
                syscall(SYS_bpf, 0, attr.as_ptr(), std::mem::size_of_val(&attr))
            }
            "perf_event_open" => {
                let mut attr = [0u64; 16];
                attr[0] = 1 | ((std::mem::size_of_val(&attr) as u64) << 32);
                syscall(SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0)
            }
            "keyctl" => syscall(SYS_keyctl, 1, c("sf-keyring").as_ptr()),
            "add_key" => {
                let payload = b"secret";
                syscall(
                    SYS_add_key,
                    c("user").as_ptr(),
                    c("sf-key").as_ptr(),
                    payload.as_ptr(),
                    payload.len(),
                    -2i32,
                )
            }
            "init_module" => {
                let image = [0u8; 64];
                syscall(SYS_init_module, image.as_ptr(), image.len(), c("").as_ptr())
            }
            "finit_module" => syscall(SYS_finit_module, fd, c("").as_ptr(), 0),
            "delete_module" => syscall(
                SYS_delete_module,
                c("sysfence_nonexistent").as_ptr(),
                O_NONBLOCK,
            ),
            "kexec_load" => syscall(SYS_kexec_load, 0, 0, std::ptr::null::<u8>(), 0),
            // Not a valid magic: an allowed call fails with EINVAL after the capability check.
            "reboot" => syscall(SYS_reboot, 0, 0, 0, std::ptr::null::<u8>()),
            "syslog" => syscall(SYS_syslog, 10, std::ptr::null_mut::<u8>(), 0),
            "sethostname" => {
                let h = b"sysfence-vm";
                syscall(SYS_sethostname, h.as_ptr(), h.len())
            }
            "setdomainname" => {
                let h = b"sysfence";
                syscall(SYS_setdomainname, h.as_ptr(), h.len())
            }
            "settimeofday" => {
                let mut tv: timeval = std::mem::zeroed();
                gettimeofday(&mut tv, std::ptr::null_mut());
                syscall(SYS_settimeofday, &tv, std::ptr::null::<u8>())
            }
            "clock_settime" => {
                let mut ts: timespec = std::mem::zeroed();
                clock_gettime(CLOCK_REALTIME, &mut ts);
                syscall(SYS_clock_settime, CLOCK_REALTIME, &ts)
            }
            "adjtimex" => {
                let mut tx: timex = std::mem::zeroed();
                syscall(SYS_adjtimex, &mut tx)
            }
            "iopl" => syscall(SYS_iopl, 3),
            "ioperm" => syscall(SYS_ioperm, 0x80, 1, 1),
            "vhangup" => syscall(SYS_vhangup),
            "socket" => syscall(SYS_socket, AF_INET, SOCK_STREAM, 0),
            "socketpair" => {
                let mut sv = [0i32; 2];
                syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv.as_mut_ptr())
            }
            "bind" | "connect" | "listen" | "setsockopt" => {
                let sock = socket(AF_INET, SOCK_STREAM, 0);
                let mut addr: sockaddr_in = std::mem::zeroed();
                addr.sin_family = AF_INET as sa_family_t;
                addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
                let len = std::mem::size_of::<sockaddr_in>() as socklen_t;
                match name {
                    "bind" => syscall(SYS_bind, sock, &addr, len),
                    "listen" => {
                        bind(sock, (&addr as *const sockaddr_in).cast(), len);
                        syscall(SYS_listen, sock, 1)
                    }
                    "setsockopt" => {
                        let one = 1i32;
                        syscall(SYS_setsockopt, sock, SOL_SOCKET, SO_REUSEADDR, &one, 4)
                    }
                    _ => {
                        let server = socket(AF_INET, SOCK_STREAM, 0);
                        bind(server, (&addr as *const sockaddr_in).cast(), len);
                        let mut bound: sockaddr_in = std::mem::zeroed();
                        let mut blen = len;
                        getsockname(server, (&mut bound as *mut sockaddr_in).cast(), &mut blen);
                        listen(server, 1);
                        syscall(SYS_connect, sock, &bound, len)
                    }
                }
            }
            "msgget" => syscall(SYS_msgget, IPC_PRIVATE, IPC_CREAT | 0o600),
            "semget" => syscall(SYS_semget, IPC_PRIVATE, 1, IPC_CREAT | 0o600),
            "shmget" => syscall(SYS_shmget, IPC_PRIVATE, 4096, IPC_CREAT | 0o600),
            "memfd_create" => syscall(SYS_memfd_create, c("sf-memfd").as_ptr(), 0),
            "getppid" => syscall(SYS_getppid),
            "uname" => {
                let mut u: utsname = std::mem::zeroed();
                syscall(SYS_uname, &mut u)
            }
            "sysinfo" => {
                let mut i: libc::sysinfo = std::mem::zeroed();
                syscall(SYS_sysinfo, &mut i)
            }
            other => panic!("{other} is not in the catalog"),
        }
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Batches measured under one policy each: a batch's calls are denied, and the calls
/// its entries need for their setup are allowed (a `listen` needs a `bind` first).
pub const BATCHES: &[(&[&str], &[&str])] = &[
    (
        &[
            "connect",
            "listen",
            "setsockopt",
            "umount2",
            "pivot_root",
            "open_by_handle_at",
            "ptrace",
        ],
        &[
            "socket",
            "bind",
            "mount",
            "unshare",
            "name_to_handle_at",
            "kill",
        ],
    ),
    (&["bind"], &["socket"]),
];

/// The first batch: every catalog entry the other batches do not measure.
pub fn first_batch() -> Vec<&'static str> {
    CATALOG
        .iter()
        .copied()
        .filter(|n| !BATCHES.iter().any(|(denied, _)| denied.contains(n)))
        .collect()
}

/// Run `names` each in its own child process, in a fresh subdirectory of `dir`; print
/// one line per entry: `NAME: ok`, `NAME: error: ...`, or `NAME: killed`.
pub fn run_all(dir: &Path, names: &[String]) {
    for name in names {
        let name = name.as_str();
        let sub = dir.join(name);
        let _ = std::fs::create_dir_all(&sub);
        // SAFETY: the child only runs the call and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let code = match call(name, &sub) {
                Ok(_) => 0,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => 1,
                Err(_) => 2,
            };
            // SAFETY: exit the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let what = if libc::WIFSIGNALED(status) {
            "killed".to_string()
        } else {
            match libc::WEXITSTATUS(status) {
                0 => "ok".to_string(),
                1 => "error: Operation not permitted".to_string(),
                _ => "error: other".to_string(),
            }
        };
        println!("{name}: {what}");
    }
}
