//! Test workload: makes exactly the syscalls it is asked for, so that counts can be
//! compared to the call.
//!
//! sf-syscalls getppid N        N raw getppid(2) calls
//! sf-syscalls mkdir PATH       one mkdir(2); prints "mkdir: ok" or the error
//! sf-syscalls bench-getppid N  N getppid(2) calls, prints nanoseconds per call
//! sf-syscalls sleep MS         sleeps, then exits 0
//! sf-syscalls int80 NR [A B C] one i386 syscall through `int 0x80`; prints its result
//! sf-syscalls raw NR           one x86_64 syscall with a raw (possibly invalid) number
//! sf-syscalls int80-warm NR      10,000 x86_64 syscalls NR without arguments, then the
//!                               i386 one of the same number; prints its result
//! sf-syscalls loop NR N        N raw x86_64 syscalls NR without arguments
//! sf-syscalls cycle SECS RATE RANGE...  for SECS seconds, RATE calls a second, round
//!                              robin over the x86_64 syscall ids in each RANGE (`A-B`,
//!                              inclusive, decimal or 0x hex), which must all fail with
//!                              ENOSYS (it stops at the first that does not); prints
//!                              `cycle: N calls`
//! sf-syscalls kill PID SIG     one kill(2); prints "kill: ok" or the error
//! sf-syscalls try-all DIR NAME...  catalog calls (tests/src/catalog.rs), each in a child
//! sf-syscalls try NAME [PATH]  one sensitive operation (see `try_one`, and `rings` for
//!                              io_uring work deferred past its syscall), with realistic
//!                              arguments; prints `NAME: ok` or `NAME: error: ...`, and
//!                              `side-effect: none` or `side-effect: present` where it can
//!                              tell
//!
//! Verbs for the identity tests (tests/tests/identity.rs); the first three run the
//! rest of the command line as another verb:
//!
//! sf-syscalls prctl-name NAME VERB...   set `comm` to NAME (PR_SET_NAME), then VERB
//! sf-syscalls exec-argv0 NAME VERB...   re-execute itself with argv[0] = NAME, then VERB
//! sf-syscalls as-user UID VERB...       drop to UID (and its gid, no groups), then VERB
//! sf-syscalls probe-every MS N NR       N times, MS apart: fork a child that makes x86_64
//!                                       syscall NR and exits 0; print how each ended
//!                                       (`probe I T_MS: killed|survived|status S`) and a
//!                                       summary `probes N killed K survived S other O`
//! sf-syscalls send PATH LINE            one line on a unix socket; print the first answer
//!                                       line, or `closed` / `error: ...`
//!
//! Verbs for the argument-rule tests (tests/tests/args.rs):
//!
//! sf-syscalls clone FLAGS MARKER  one raw clone(FLAGS | SIGCHLD) (FLAGS decimal or 0x hex,
//!                                 all 64 bits); the child appends its user namespace
//!                                 to MARKER and exits 0; the parent prints
//!                                 `clone: ok child exited S` or `clone: error: ...`
//! sf-syscalls clone80 FLAGS MARKER  the same through i386 `int 0x80` (flags in ebx)
//! sf-syscalls clone3 FLAGS MARKER  one clone3 with `clone_args.flags = FLAGS` and
//!                                 SIGCHLD; the child appends its user namespace to
//!                                 MARKER and exits 0
//! sf-syscalls clone3-race FLAGS MARKER N  N clone3 calls while another thread flips
//!                                 `clone_args.flags` between 0 and FLAGS (the TOCTOU
//!                                 attack on a check that reads the flags at entry)
//! sf-syscalls clone3-unmapped FLAGS MARKER  one clone3 whose `clone_args` sit in a
//!                                 file mapping no one has touched yet: a non-faulting
//!                                 read (a BPF program's) fails, the kernel's copy
//!                                 faults the page in and succeeds
//!
//! Verbs for the containment tests (tests/tests/containment.rs): each ends its output
//! with how the process that made syscall NR after the escape ended, `NR: survived` (it
//! ran) or `child killed by signal S` / `child exited S`.
//!
//! sf-syscalls move-self PROCS NR  write "0" to PROCS (a cgroup.procs: this process
//!                                 moves itself), then one raw syscall NR
//! sf-syscalls move-self-fork PROCS NR  the same, then a forked child makes NR
//! sf-syscalls move-child PROCS NR  fork a child that waits; move it by writing its pid
//!                                 to PROCS; then it makes NR
//! sf-syscalls clone-into DIR NR   clone3(CLONE_INTO_CGROUP) into the cgroup directory
//!                                 DIR; the child makes NR
//! sf-syscalls attach PID|parent  one raw ptrace(PTRACE_ATTACH) of PID (or of this
//!                                 process's parent); prints `attach: ok` or the error
//! sf-syscalls harvest CALL        a sibling made by clone(CLONE_FILES) (CLONE_VM for
//!                                 shmat) makes CALL (userfaultfd, perf_event_open,
//!                                 io_uring_setup, shmat of a segment this process made,
//!                                 whose id it prints first: `harvest: shm ID`); then this
//!                                 process looks for what CALL made: `harvest: fd present:
//!                                 LINK, usable: yes|no`, `harvest: mapping present: LINE`,
//!                                 or `harvest: nothing`
//!
//! Verbs for the exec-boundary tests (tests/tests/containment.rs): this process plays a
//! container runtime, whose init joins a container non-dumpable and then execs.
//!
//! sf-syscalls as-runtime PROCS NR [PROGRAM ARGS...]  fork a child that makes itself
//!                                 non-dumpable and waits; move it by writing its pid to
//!                                 PROCS; it makes NR (`NR: survived`), then execs PROGRAM
//!                                 if one is given; print how it ended
//! sf-syscalls as-runtime-clone DIR NR [PROGRAM ARGS...]  the same, the child made
//!                                 non-dumpable by this process and born in the cgroup
//!                                 directory DIR by clone3(CLONE_INTO_CGROUP)
//! sf-syscalls as-runtime-fork PROCS NR  as `as-runtime`, but the moved child forks a
//!                                 grandchild that makes NR (and exits), then exits 0
//! sf-syscalls as-runtime-hold PROCS  as `as-runtime`, the moved child printing
//!                                 `held: PID` and then waiting to be killed
//! sf-syscalls poke-mem PID        open /proc/PID/mem for writing, and one
//!                                 process_vm_writev into PID; prints `mem: ok` or the
//!                                 error, and `vm_writev: ok` or the error
//!
//! sf-syscalls block-pause N       N threads, each in an i386 `pause` through `int 0x80`
//!                                 (a syscall no LSM hook sees: under `deny` its mark
//!                                 lasts until it returns); prints `blocked: N` once
//!                                 every one is in it, then waits to be killed
//!
//! sf-syscalls personality VALUE   one personality(VALUE) (all 64 bits of the register)
//! sf-syscalls socket FAMILY       one socket(FAMILY, SOCK_STREAM, 0), FAMILY as 64 bits
//! sf-syscalls threads N           start and join N threads (glibc: clone3, or clone)
//! sf-syscalls fork-exec PROGRAM   fork, exec PROGRAM in the child; print its status
use std::{ffi::CString, time::Instant};

mod rings;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("sf-syscalls: expected {what} at position {i}");
        std::process::exit(64)
    })
}

fn getppid() -> i64 {
    // SAFETY: getppid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

/// An i386 syscall through `int 0x80` from this 64-bit process. The kernel marks the
/// task TS_COMPAT for its duration and numbers it from the i386 table.
fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
    let ret: i32;
    // SAFETY: the arguments are plain integers (no pointers the kernel would write to
    // are passed by the tests); rbx is reserved by LLVM, so it is swapped in and out.
    unsafe {
        std::arch::asm!(
            "xchg {a:r}, rbx",
            "int 0x80",
            "xchg {a:r}, rbx",
            a = inout(reg) a as u64 => _,
            inlateout("eax") nr as i32 => ret,
            in("ecx") b,
            in("edx") c,
        );
    }
    ret
}

/// A number in decimal or 0x hex.
fn number(s: &str) -> Option<i64> {
    match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The `cycle` verb: a flood of distinct syscall numbers the kernel answers with ENOSYS.
fn cycle(secs: f64, rate: u64, ranges: &[String]) {
    let mut ids = Vec::new();
    for r in ranges {
        let bounds = r
            .split_once('-')
            .and_then(|(a, b)| Some((number(a)?, number(b)?)));
        let Some((a, b)) = bounds else {
            eprintln!("sf-syscalls: `{r}` is not a range A-B");
            std::process::exit(64);
        };
        ids.extend(a..=b);
    }
    if ids.is_empty() || rate == 0 {
        eprintln!("sf-syscalls: nothing to cycle through");
        std::process::exit(64);
    }
    let start = Instant::now();
    let per_tick = (rate / 100).max(1);
    let mut calls: u64 = 0;
    let mut next = 0;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..per_tick {
            let id = ids[next];
            next = (next + 1) % ids.len();
            // SAFETY: only numbers the kernel answers with ENOSYS (checked below).
            let r = unsafe { libc::syscall(id) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            calls += 1;
            if r != -1 || errno != Some(libc::ENOSYS) {
                println!(
                    "cycle: {id:#x} is a syscall here (returned {r}, errno {errno:?}); stopped"
                );
                std::process::exit(1);
            }
        }
        let due = std::time::Duration::from_secs_f64(calls as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    println!("cycle: {calls} calls");
}

/// Write `text` to a cgroup file; exit 1 saying why if the kernel refuses.
fn write_cgroup_file(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        println!("write {path}: {e}");
        std::process::exit(1);
    }
}

/// One raw syscall without arguments, then say that this process survived it.
fn call_and_report(nr: i64) {
    // SAFETY: a syscall without arguments (getppid, getpid, ...).
    let r = unsafe { libc::syscall(nr) };
    println!("{nr}: survived (returned {r})");
}

/// Wait for `pid` and print how it ended.
fn report_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        println!("child killed by signal {}", libc::WTERMSIG(status));
    } else {
        println!("child exited {}", libc::WEXITSTATUS(status));
    }
}

/// The SysV segment the `harvest shmat` sibling attaches.
static HARVEST_SHM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The `harvest` sibling: the one call, raw, then leave (if it lives).
extern "C" fn harvest_sibling(arg: *mut libc::c_void) -> libc::c_int {
    let call = arg as usize;
    // SAFETY: raw syscalls with arguments that live on this stack; the sibling leaves
    // with _exit and touches nothing of the parent's but HARVEST_SHM.
    unsafe {
        match call {
            0 => {
                libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC);
            }
            1 => {
                // PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, size PERF_ATTR_SIZE_VER0.
                let mut attr = [0u8; 128];
                attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
                attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
                libc::syscall(
                    libc::SYS_perf_event_open,
                    attr.as_ptr(),
                    0,
                    -1,
                    -1,
                    8, // PERF_FLAG_FD_CLOEXEC
                );
            }
            2 => {
                let params = [0u8; 120];
                libc::syscall(libc::SYS_io_uring_setup, 8, params.as_ptr());
            }
            _ => {
                let id = HARVEST_SHM.load(std::sync::atomic::Ordering::SeqCst);
                libc::syscall(libc::SYS_shmat, id, 0, 0);
            }
        }
        libc::_exit(0)
    }
}

/// The `harvest` verb: does anything the sibling's killed call made survive here?
fn harvest(call: &str) {
    use std::io::Write as _;
    let which: usize = match call {
        "userfaultfd" => 0,
        "perf_event_open" => 1,
        "io_uring_setup" => 2,
        "shmat" => 3,
        other => {
            eprintln!("sf-syscalls: harvest {other}: not a call it knows");
            std::process::exit(64);
        }
    };
    let mut flags = libc::SIGCHLD | libc::CLONE_FILES;
    if which == 3 {
        // SAFETY: a new private SysV segment.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        HARVEST_SHM.store(id, std::sync::atomic::Ordering::SeqCst);
        println!("harvest: shm {id}");
        flags = libc::SIGCHLD | libc::CLONE_VM;
    }
    let _ = std::io::stdout().flush();
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the top of a stack that outlives the sibling (this process waits for it).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            harvest_sibling,
            top as *mut libc::c_void,
            flags,
            which as *mut libc::c_void,
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    report_child(pid);
    drop(stack);
    if which == 3 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        match maps.lines().find(|l| l.contains("SYSV")) {
            Some(line) => println!("harvest: mapping present: {line}"),
            None => println!("harvest: nothing"),
        }
        return;
    }
    let want = ["[userfaultfd]", "[perf_event]", "[io_uring]"][which];
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.display().to_string();
        if !link.contains(want) {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap_or(-1);
        // SAFETY: the fd is ours; a userfaultfd gets UFFDIO_API, a perf counter is read.
        let usable = unsafe {
            match which {
                0 => {
                    let mut api = [0u64; 3];
                    api[0] = 0xaa; // UFFD_API
                    libc::ioctl(fd, 0xc018_aa3f, api.as_mut_ptr()) == 0 // UFFDIO_API
                }
                1 => {
                    let mut v = 0u64;
                    libc::read(fd, (&raw mut v).cast(), 8) == 8
                }
                _ => libc::fcntl(fd, libc::F_GETFD) >= 0,
            }
        };
        println!(
            "harvest: fd present: {link}, usable: {}",
            if usable { "yes" } else { "no" }
        );
        return;
    }
    println!("harvest: nothing");
}

/// `clone_args` as far as its `cgroup` member (CLONE_ARGS_SIZE_VER2): [`CloneArgs`]
/// and the three members after it.
#[repr(C)]
struct CloneArgsV2 {
    v0: CloneArgs,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A fork-like `clone3(CLONE_INTO_CGROUP)` (no CLONE_VM) into the cgroup directory
/// `target`: 0 in the child, the child's pid in the parent, negative on failure.
fn clone_into(target: &str) -> i64 {
    let dir = cstr(target);
    // SAFETY: opening a directory.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(
        fd >= 0,
        "open {target}: {}",
        std::io::Error::last_os_error()
    );
    let args = CloneArgsV2 {
        v0: CloneArgs::fork_like(0x2_0000_0000), // CLONE_INTO_CGROUP
        set_tid: 0,
        set_tid_size: 0,
        cgroup: fd as u64,
    };
    // SAFETY: a fork-like clone3 with arguments that live across the call; the caller
    // decides what the child does.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgsV2>(),
        )
    }
}

/// The containment verbs: a policed process leaves its cgroup, then syscall NR is made
/// by it, its child, or the moved or cloned child.
fn escape(verb: &str, target: &str, nr: i64) {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    match verb {
        "move-self" => {
            write_cgroup_file(target, "0");
            call_and_report(nr);
        }
        "move-self-fork" => {
            write_cgroup_file(target, "0");
            // SAFETY: fork; the child makes one syscall and leaves with _exit.
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: as above.
                    unsafe {
                        libc::syscall(nr);
                        libc::_exit(0)
                    }
                }
                pid if pid > 0 => report_child(pid),
                _ => panic!("fork: {}", std::io::Error::last_os_error()),
            }
        }
        "move-child" => {
            let mut fds = [0; 2];
            // SAFETY: a new pipe.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: fork; the child blocks on the pipe, makes one syscall, leaves.
            match unsafe { libc::fork() } {
                0 => unsafe {
                    let mut b = 0u8;
                    libc::read(fds[0], (&raw mut b).cast(), 1);
                    libc::syscall(nr);
                    libc::_exit(0)
                },
                pid if pid > 0 => {
                    write_cgroup_file(target, &pid.to_string());
                    // SAFETY: wakes the child.
                    unsafe { libc::write(fds[1], b"g".as_ptr().cast(), 1) };
                    report_child(pid);
                }
                _ => panic!("fork: {}", std::io::Error::last_os_error()),
            }
        }
        "clone-into" => {
            match clone_into(target) {
                // SAFETY: the child makes one syscall and leaves with _exit.
                0 => unsafe {
                    libc::syscall(nr);
                    libc::_exit(0)
                },
                pid if pid > 0 => report_child(pid as libc::pid_t),
                _ => {
                    println!("clone3: {}", std::io::Error::last_os_error());
                    std::process::exit(1);
                }
            }
        }
        _ => unreachable!(),
    }
}

/// A race against the tracepoint that follows cgroup moves (it fires after the move):
/// `count` children, one after another, each a raw fork (no libc code, so `nr` is its
/// first syscall) that waits on shared memory for the word that its parent starts
/// moving it to `target`, spins for a delay that differs from child to child (from none
/// to some tens of microseconds), and makes `nr`. Some calls land before the move, some
/// after the tracepoint, and some in between. Prints how the children ended.
fn move_child_race(target: &str, nr: i64, count: u32) {
    use std::sync::atomic::{AtomicU32, Ordering};
    // SAFETY: a new shared anonymous page, for this process and its children.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        page,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the page is mapped, writable and aligned; it lives until the exit.
    let go = unsafe { &*(page as *const AtomicU32) };
    let procs = cstr(target);
    // SAFETY: opening the cgroup's procs file for writing.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        println!("open {target}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let (mut moved, mut killed, mut exited, mut other) = (0u32, 0u32, 0u32, 0u32);
    for i in 0..count {
        go.store(0, Ordering::SeqCst);
        // Up to some tens of microseconds: where the move happens, after the word.
        let spins = u64::from(i.wrapping_mul(7919) % 2048);
        // SAFETY: a fork-like raw clone; the child touches only the shared word, makes
        // two raw syscalls and never returns.
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
        if pid == 0 {
            while go.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            for _ in 0..spins {
                std::hint::spin_loop();
            }
            // SAFETY: a syscall without arguments, then leave.
            unsafe {
                libc::syscall(nr);
                libc::syscall(libc::SYS_exit_group, 0);
            }
            unreachable!();
        }
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        let text = pid.to_string();
        go.store(1, Ordering::SeqCst);
        // SAFETY: one write of a pid to the procs file; ESRCH when the child is gone.
        if unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) } == text.len() as isize {
            moved += 1;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            killed += 1;
        } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            exited += 1;
        } else {
            other += 1;
        }
    }
    println!(
        "race: {count} children, {moved} moved, {killed} killed by signal 9, {exited} exited 0, {other} ended otherwise"
    );
}

/// Make this process non-dumpable, as runc and crun make their init before it joins a
/// container.
fn non_dumpable() {
    // SAFETY: plain prctl on this process.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_DUMPABLE: {}", std::io::Error::last_os_error());
}

/// In a child about to run `program` (may be empty): exec it, or leave.
fn exec_or_exit(program: &[std::ffi::CString]) -> ! {
    if let Some(path) = program.first() {
        let mut argv: Vec<*const libc::c_char> = program.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: NUL-terminated strings and a null-terminated argv that outlive the call.
        unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        println!("exec: {}", std::io::Error::last_os_error());
        // SAFETY: leaving the child.
        unsafe { libc::_exit(127) }
    }
    // SAFETY: leaving the child.
    unsafe { libc::_exit(0) }
}

/// The exec-boundary verbs: this process plays the runtime, its child the runtime's
/// init joining a container.
fn as_runtime(verb: &str, target: &str, nr: i64, program: &[String]) {
    use std::io::Write as _;
    let program: Vec<std::ffi::CString> = program.iter().map(|a| cstr(a)).collect();
    let _ = std::io::stdout().flush();
    if verb == "as-runtime-clone" {
        non_dumpable();
        // The child makes one syscall, then execs or leaves.
        match clone_into(target) {
            0 => {
                call_and_report(nr);
                let _ = std::io::stdout().flush();
                exec_or_exit(&program)
            }
            pid if pid > 0 => report_child(pid as libc::pid_t),
            _ => {
                println!("clone3: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
        }
        return;
    }
    // `go` wakes the child once it is moved; `ready` tells the runtime the child is
    // non-dumpable (runc's parent, too, moves its init only once it has heard from it).
    let mut fds = [0; 2];
    let mut ready = [0; 2];
    // SAFETY: two new pipes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: fork; the child waits on the pipe, then does what the verb says.
    match unsafe { libc::fork() } {
        0 => {
            non_dumpable();
            // SAFETY: one byte on our pipe.
            unsafe { libc::write(ready[1], b"r".as_ptr().cast(), 1) };
            let mut b = 0u8;
            // SAFETY: reads one byte of our pipe.
            unsafe { libc::read(fds[0], (&raw mut b).cast(), 1) };
            match verb {
                "as-runtime-hold" => {
                    // SAFETY: plain getpid.
                    println!("held: {}", unsafe { libc::getpid() });
                    let _ = std::io::stdout().flush();
                    loop {
                        // SAFETY: waits for a signal.
                        unsafe { libc::pause() };
                    }
                }
                "as-runtime-fork" => {
                    // SAFETY: fork; the grandchild makes one syscall and leaves.
                    match unsafe { libc::fork() } {
                        0 => {
                            call_and_report(nr);
                            let _ = std::io::stdout().flush();
                            // SAFETY: leaving the grandchild.
                            unsafe { libc::_exit(0) }
                        }
                        pid if pid > 0 => report_child(pid),
                        _ => panic!("fork: {}", std::io::Error::last_os_error()),
                    }
                    let _ = std::io::stdout().flush();
                    // SAFETY: leaving the child.
                    unsafe { libc::_exit(0) }
                }
                _ => {
                    call_and_report(nr);
                    let _ = std::io::stdout().flush();
                    exec_or_exit(&program)
                }
            }
        }
        pid if pid > 0 => {
            let mut b = 0u8;
            // SAFETY: waits for the child's one byte.
            unsafe { libc::read(ready[0], (&raw mut b).cast(), 1) };
            write_cgroup_file(target, &pid.to_string());
            // SAFETY: wakes the child.
            unsafe { libc::write(fds[1], b"g".as_ptr().cast(), 1) };
            report_child(pid);
        }
        _ => panic!("fork: {}", std::io::Error::last_os_error()),
    }
}

/// `poke-mem PID`: what a tracer that may not ptrace PID must not do to it either.
fn poke_mem(pid: i32) {
    match std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        Ok(_) => println!("mem: ok"),
        Err(e) => println!("mem: {e}"),
    }
    let mut local = [0u8; 8];
    let from = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: local.len(),
    };
    // An address no process maps: a permitted write fails with EFAULT, a refused one
    // with EPERM before it looks.
    let to = libc::iovec {
        iov_base: 8 as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: iovecs that live across the call; the remote address is never ours.
    let r = unsafe { libc::process_vm_writev(pid, &from, 1, &to, 1, 0) };
    if r >= 0 {
        println!("vm_writev: ok");
    } else {
        println!("vm_writev: {}", std::io::Error::last_os_error());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    dispatch(&args);
}

/// `block-pause N`.
fn block_pause(n: usize) -> ! {
    use std::io::Write as _;
    for i in 0..n {
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| int80(29, 0, 0, 0));
        if let Err(e) = spawned {
            println!("block-pause: thread {i}: error: {e}");
            std::process::exit(1);
        }
    }
    // Each thread is in the pause once /proc says its syscall is i386 number 29.
    loop {
        let blocked = std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("syscall"))
                    .is_ok_and(|s| s.starts_with("29 "))
            })
            .count();
        if blocked >= n {
            println!("blocked: {blocked}");
            let _ = std::io::stdout().flush();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    loop {
        std::thread::park();
    }
}

/// Run the verb `args[1]` with its arguments `args[2..]`.
fn dispatch(args: &[String]) {
    match args.get(1).map(String::as_str) {
        Some("block-pause") => block_pause(arg(args, 2, "a number of threads")),
        Some("prctl-name") => {
            let name: String = arg(args, 2, "a process name");
            let c = CString::new(name).expect("name without NUL");
            // SAFETY: PR_SET_NAME reads at most 16 bytes of a valid C string.
            let r = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
            assert_eq!(
                r,
                0,
                "prctl(PR_SET_NAME): {}",
                std::io::Error::last_os_error()
            );
            dispatch(&args[2..]);
        }
        Some("exec-argv0") => {
            use std::os::unix::process::CommandExt as _;
            let name: String = arg(args, 2, "an argv[0]");
            let err = std::process::Command::new("/proc/self/exe")
                .arg0(name)
                .args(&args[3..])
                .exec();
            eprintln!("sf-syscalls: re-executing itself: {err}");
            std::process::exit(71);
        }
        Some("as-user") => {
            let uid: u32 = arg(args, 2, "a uid");
            // SAFETY: plain credential calls on this process.
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
                assert_eq!(libc::setgid(uid), 0, "setgid");
                assert_eq!(libc::setuid(uid), 0, "setuid");
            }
            dispatch(&args[2..]);
        }
        Some("probe-every") => {
            let ms: u64 = arg(args, 2, "milliseconds");
            let n: u64 = arg(args, 3, "a count");
            let nr: i64 = arg(args, 4, "a syscall number");
            probe_every(ms, n, nr);
        }
        Some("send") => {
            let path: String = arg(args, 2, "a socket path");
            let line: String = arg(args, 3, "a request line");
            send(&path, &line);
        }
        Some("getppid") => {
            let n: u64 = arg(args, 2, "a count");
            for _ in 0..n {
                getppid();
            }
        }
        Some("bench-getppid") => {
            let n: u64 = arg(args, 2, "a count");
            for _ in 0..n / 10 {
                getppid();
            }
            let start = Instant::now();
            for _ in 0..n {
                getppid();
            }
            println!("{:.2}", start.elapsed().as_nanos() as f64 / n as f64);
        }
        Some("mkdir") => {
            let path: String = arg(args, 2, "a path");
            let c = CString::new(path).expect("path without NUL");
            // SAFETY: valid C string.
            let r = unsafe { libc::syscall(libc::SYS_mkdir, c.as_ptr(), 0o755) };
            if r == 0 {
                println!("mkdir: ok");
            } else {
                println!("mkdir: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
        }
        Some("int80") => {
            let nr: u32 = arg(args, 2, "a syscall number");
            let a: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let b: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
            let c: u32 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
            println!("int80 {nr} = {}", int80(nr, a, b, c));
        }
        Some("int80-warm") => {
            let nr: u32 = arg(args, 2, "a syscall number");
            for _ in 0..10_000 {
                // SAFETY: no arguments (a null pointer where one is read fails EFAULT).
                unsafe { libc::syscall(i64::from(nr)) };
            }
            println!("int80 {nr} = {}", int80(nr, 0, 0, 0));
        }
        Some("raw") => {
            let nr: i64 = arg(args, 2, "a syscall number");
            // SAFETY: no arguments; an invalid number just fails with ENOSYS.
            let r = unsafe { libc::syscall(nr) };
            println!("raw {nr} = {r}");
        }
        Some("loop") => {
            let nr: i64 = arg(args, 2, "a syscall number");
            let n: u64 = arg(args, 3, "a count");
            for _ in 0..n {
                // SAFETY: a syscall without arguments (getpid, getppid, ...).
                unsafe { libc::syscall(nr) };
            }
        }
        Some("cycle") => {
            let secs: f64 = arg(args, 2, "seconds");
            let rate: u64 = arg(args, 3, "calls per second");
            cycle(secs, rate, &args[4..]);
        }
        Some(verb @ ("move-self" | "move-self-fork" | "move-child" | "clone-into")) => {
            let target: String = arg(args, 2, "a cgroup.procs path or cgroup directory");
            let nr: i64 = arg(args, 3, "a syscall number");
            escape(verb, &target, nr);
        }
        Some("move-child-race") => {
            let target: String = arg(args, 2, "a cgroup.procs path");
            let nr: i64 = arg(args, 3, "a syscall number");
            let count: u32 = arg(args, 4, "a number of children");
            move_child_race(&target, nr, count);
        }
        Some(verb @ ("as-runtime" | "as-runtime-clone" | "as-runtime-fork")) => {
            let target: String = arg(args, 2, "a cgroup.procs path or cgroup directory");
            let nr: i64 = arg(args, 3, "a syscall number");
            as_runtime(verb, &target, nr, &args[4..]);
        }
        Some("as-runtime-hold") => {
            let target: String = arg(args, 2, "a cgroup.procs path");
            as_runtime("as-runtime-hold", &target, 0, &[]);
        }
        Some("poke-mem") => {
            let pid: i32 = arg(args, 2, "a pid");
            poke_mem(pid);
        }
        Some("attach") => {
            let target: String = arg(args, 2, "a pid, or `parent`");
            let pid: i64 = if target == "parent" {
                getppid()
            } else {
                target.parse().unwrap_or_else(|_| {
                    eprintln!("sf-syscalls: attach: `{target}` is not a pid");
                    std::process::exit(64)
                })
            };
            // SAFETY: a raw ptrace on a pid; nothing of ours is passed.
            let r = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, pid, 0, 0) };
            if r == 0 {
                println!("attach: ok");
            } else {
                println!("attach: {}", std::io::Error::last_os_error());
            }
        }
        Some("harvest") => {
            let call: String = arg(args, 2, "a syscall name");
            harvest(&call);
        }
        Some("kill") => {
            let pid: i32 = arg(args, 2, "a pid");
            let sig: i32 = arg(args, 3, "a signal number");
            // SAFETY: plain kill(2).
            let r = unsafe { libc::syscall(libc::SYS_kill, pid, sig) };
            if r == 0 {
                println!("kill: ok");
            } else {
                println!("kill: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
        }
        Some("clone") | Some("clone80") => {
            let flags: String = arg(args, 2, "clone flags");
            let marker: String = arg(args, 3, "a marker path");
            let flags = parse_flags(&flags);
            clone_verb(args[1] == "clone80", flags, &marker);
        }
        Some("clone3") | Some("clone3-race") => {
            let flags: String = arg(args, 2, "clone flags");
            let marker: String = arg(args, 3, "a marker path");
            let rounds: u64 = if args[1] == "clone3" {
                1
            } else {
                arg(args, 4, "a number of rounds")
            };
            clone3_verb(
                parse_flags(&flags),
                &marker,
                rounds,
                args[1] == "clone3-race",
            );
        }
        Some("clone3-unmapped") => {
            let flags: String = arg(args, 2, "clone flags");
            let marker: String = arg(args, 3, "a marker path");
            clone3_unmapped(parse_flags(&flags), &marker);
        }
        Some("personality") => {
            let v: String = arg(args, 2, "a personality value");
            // SAFETY: personality takes a plain integer.
            let r = unsafe { libc::syscall(libc::SYS_personality, parse_flags(&v)) };
            println!("personality: {r:#x}");
        }
        Some("socket") => {
            let family: String = arg(args, 2, "an address family");
            // SAFETY: socket takes plain integers.
            let r = unsafe {
                libc::syscall(libc::SYS_socket, parse_flags(&family), libc::SOCK_STREAM, 0)
            };
            if errno_result("socket", r) {
                // SAFETY: the fd just returned.
                unsafe { libc::close(r as i32) };
            }
        }
        Some("threads") => {
            let n: usize = arg(args, 2, "a thread count");
            let handles: Vec<_> = (0..n).map(|i| std::thread::spawn(move || i)).collect();
            let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
            println!("threads: ok {sum}");
        }
        Some("fork-exec") => {
            let program: String = arg(args, 2, "a program");
            match std::process::Command::new(&program).status() {
                Ok(s) => println!("fork-exec: ok {}", s.code().unwrap_or(-1)),
                Err(e) => println!("fork-exec: error: {e}"),
            }
        }
        Some("try-all") => {
            let dir: String = arg(args, 2, "a directory");
            sysfence_tests::catalog::run_all(std::path::Path::new(&dir), &args[3..]);
        }
        Some("try") => {
            let name: String = arg(args, 2, "an operation name");
            let path = args
                .get(3)
                .cloned()
                .unwrap_or_else(|| "/tmp/sf-try".to_string());
            try_one(&name, &path);
        }
        Some("sleep") => {
            let ms: u64 = arg(args, 2, "milliseconds");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        _ => {
            eprintln!(
                "usage: sf-syscalls getppid N | bench-getppid N | mkdir PATH | sleep MS | int80 NR [A B C] | raw NR | loop NR N | kill PID SIG | try NAME [PATH] | try-all DIR NAME... | prctl-name NAME VERB... | exec-argv0 NAME VERB... | as-user UID VERB... | probe-every MS N NR | send PATH LINE"
            );
            std::process::exit(64);
        }
    }
}

/// `n` probes, `ms` apart: a forked child makes syscall `nr` and exits 0 if it survives.
fn probe_every(ms: u64, n: u64, nr: i64) {
    let (mut killed, mut survived, mut other) = (0, 0, 0);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let t_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // SAFETY: the child makes one raw syscall and leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe {
                libc::syscall(nr);
                libc::_exit(0);
            }
        }
        assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let how = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            killed += 1;
            "killed".to_string()
        } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            survived += 1;
            "survived".to_string()
        } else {
            other += 1;
            format!("status {status}")
        };
        println!("probe {i} {t_ms}: {how}");
    }
    println!("probes {n} killed {killed} survived {survived} other {other}");
}

/// One request line on a unix socket; the answer line as read.
fn send(path: &str, line: &str) {
    use std::io::{BufRead as _, Write as _};
    let mut s = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            println!("error: connect: {e}");
            return;
        }
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    // A refused peer may be hung up on before the line is written.
    let _ = s.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    match std::io::BufReader::new(s).read_line(&mut answer) {
        Ok(0) => println!("closed"),
        Ok(_) => print!("{answer}"),
        Err(e) => println!("error: read: {e}"),
    }
}

fn errno_result(name: &str, r: i64) -> bool {
    if r < 0 {
        println!("{name}: error: {}", std::io::Error::last_os_error());
        false
    } else {
        println!("{name}: ok");
        true
    }
}

fn side_effect(present: bool) {
    println!("side-effect: {}", if present { "present" } else { "none" });
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// `123` or `0x7e020000`, 64 bits.
fn parse_flags(s: &str) -> u64 {
    let parsed = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| {
        eprintln!("sf-syscalls: `{s}` is not a number");
        std::process::exit(64)
    })
}

/// One clone(flags | SIGCHLD) with no new stack: the child goes on like a fork child,
/// writes the link of its user namespace to `marker` and exits.
fn clone_verb(int80: bool, flags: u64, marker: &str) {
    let flags = flags | libc::SIGCHLD as u64;
    let r: i64 = if int80 {
        // i386 clone is 120: flags in ebx, a null stack in ecx.
        int80_clone(flags as u32) as i64
    } else {
        // SAFETY: clone without CLONE_VM and without a stack behaves like fork.
        unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) }
    };
    if r == 0 {
        child_reports_namespace(marker);
    }
    if r < 0 {
        println!("clone: error: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let mut status = 0;
    // SAFETY: wait for the child just made.
    unsafe { libc::waitpid(r as i32, &mut status, 0) };
    println!("clone: ok child exited {}", libc::WEXITSTATUS(status));
}

/// `struct clone_args` up to `tls` (CLONE_ARGS_SIZE_VER0).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

impl CloneArgs {
    /// A fork-like clone3 (no CLONE_VM, no stack) with `flags`, exit signal SIGCHLD.
    fn fork_like(flags: u64) -> CloneArgs {
        CloneArgs {
            flags,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
        }
    }
}

/// In a child made by a clone verb: append the child's user namespace to `marker`,
/// then leave at once, without running the parent's exit handlers.
fn child_reports_namespace(marker: &str) -> ! {
    let ns = std::fs::read_link("/proc/self/ns/user")
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(marker)
    {
        use std::io::Write;
        let _ = writeln!(f, "{ns}");
    }
    // SAFETY: ends this child process only.
    unsafe { libc::_exit(0) }
}

/// One clone3 with its arguments in an untouched private mapping of a memfd.
fn clone3_unmapped(flags: u64, marker: &str) {
    let args = CloneArgs::fork_like(flags);
    let size = std::mem::size_of::<CloneArgs>();
    // SAFETY: plain syscalls on a new memfd and a new mapping of it; the mapping is
    // only read by the kernel.
    let ptr = unsafe {
        let fd = libc::memfd_create(cstr("sf-clone-args").as_ptr(), 0);
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        let wrote = libc::write(fd, (&raw const args).cast(), size);
        assert_eq!(wrote, size as isize);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork.
    let r = unsafe { libc::syscall(libc::SYS_clone3, ptr, size) };
    if r == 0 {
        child_reports_namespace(marker);
    }
    if r < 0 {
        println!("clone3: error: {}", std::io::Error::last_os_error());
        return;
    }
    let mut status = 0;
    // SAFETY: wait for the child just made.
    unsafe { libc::waitpid(r as i32, &mut status, 0) };
    println!("clone3: ok child exited {}", libc::WEXITSTATUS(status));
}

/// `rounds` clone3 calls; with `race`, a thread flips `flags` between 0 and `flags`
/// meanwhile. Each child appends its user namespace to `marker` and exits.
fn clone3_verb(flags: u64, marker: &str, rounds: u64, race: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let args = Box::leak(Box::new(CloneArgs::fork_like(flags)));
    let at = &raw mut args.flags as usize;
    static STOP: AtomicBool = AtomicBool::new(false);
    let flipper = race.then(|| {
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !STOP.load(Ordering::Relaxed) {
                // SAFETY: the leaked struct lives for the process; the race is the point.
                unsafe {
                    std::ptr::write_volatile(at as *mut u64, if i & 1 == 0 { 0 } else { flags })
                };
                i += 1;
            }
        })
    });
    let mut made = 0;
    for _ in 0..rounds {
        // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw const *args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r == 0 {
            child_reports_namespace(marker);
        }
        if r < 0 && !race {
            println!("clone3: error: {}", std::io::Error::last_os_error());
        }
        if r > 0 {
            made += 1;
            let mut status = 0;
            // SAFETY: wait for the child just made.
            unsafe { libc::waitpid(r as i32, &mut status, 0) };
        }
    }
    STOP.store(true, Ordering::Relaxed);
    if let Some(t) = flipper {
        let _ = t.join();
    }
    println!("clone3: ok {made} children");
}

/// i386 clone (120) through `int 0x80`, flags in ebx, every other argument 0.
fn int80_clone(flags: u32) -> i32 {
    let ret = int80(120, flags, 0, 0);
    if ret < 0 {
        // SAFETY: errno is thread-local; set it like the libc wrapper would.
        unsafe { *libc::__errno_location() = -ret };
        return -1;
    }
    ret
}

/// One sensitive operation with arguments that reach the kernel's checks.
fn try_one(name: &str, path: &str) {
    if rings::try_ring(name, path) {
        return;
    }
    // SAFETY (all blocks below): raw syscalls with valid pointers to locals.
    match name {
        "mkdir" => {
            let r = unsafe { libc::syscall(libc::SYS_mkdir, cstr(path).as_ptr(), 0o755) };
            errno_result(name, r);
            side_effect(std::path::Path::new(path).exists());
        }
        "mount" => {
            let _ = std::fs::create_dir_all(path);
            let r = unsafe {
                libc::syscall(
                    libc::SYS_mount,
                    cstr("sf-tmpfs").as_ptr(),
                    cstr(path).as_ptr(),
                    cstr("tmpfs").as_ptr(),
                    0,
                    std::ptr::null::<u8>(),
                )
            };
            errno_result(name, r);
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mounted = mounts.lines().any(|l| l.split(' ').nth(4) == Some(path));
            side_effect(mounted);
            if mounted {
                unsafe { libc::umount2(cstr(path).as_ptr(), 0) };
            }
        }
        "unshare-user" => {
            let before = std::fs::read_link("/proc/self/ns/user").ok();
            let r = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
            errno_result(name, r);
            side_effect(std::fs::read_link("/proc/self/ns/user").ok() != before);
        }
        "ptrace-attach" => {
            let child = unsafe { libc::fork() };
            if child == 0 {
                unsafe { libc::pause() };
                unsafe { libc::_exit(0) };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            let r = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, child, 0, 0) };
            errno_result(name, r);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let status =
                std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
            let traced = status
                .lines()
                .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"));
            side_effect(traced);
            unsafe { libc::kill(child, libc::SIGKILL) };
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        }
        "bpf" => {
            // BPF_MAP_CREATE of a 1-entry array: the fd it returns is the side effect.
            let mut attr = [0u32; 32];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4; // key size
            attr[2] = 4; // value size
            attr[3] = 1; // max entries
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    0,
                    attr.as_ptr(),
                    std::mem::size_of_val(&attr),
                )
            };
            errno_result(name, r);
            side_effect(r >= 0);
        }
        "keyctl" => {
            // KEYCTL_JOIN_SESSION_KEYRING: creates and joins a new named session keyring.
            let before = std::fs::read_to_string("/proc/keys").unwrap_or_default();
            let r = unsafe { libc::syscall(libc::SYS_keyctl, 1, cstr("sf-try-keyring").as_ptr()) };
            errno_result(name, r);
            let after = std::fs::read_to_string("/proc/keys").unwrap_or_default();
            side_effect(!before.contains("sf-try-keyring") && after.contains("sf-try-keyring"));
        }
        "init_module" => {
            // Not an ELF image: an allowed call fails with ENOEXEC; a denied one with EPERM.
            let image = [0u8; 64];
            let r = unsafe {
                libc::syscall(
                    libc::SYS_init_module,
                    image.as_ptr(),
                    image.len(),
                    cstr("").as_ptr(),
                )
            };
            errno_result(name, r);
        }
        "open_by_handle_at" => {
            #[repr(C)]
            struct Handle {
                bytes: u32,
                kind: i32,
                data: [u8; 128],
            }
            let mut handle = Handle {
                bytes: 128,
                kind: 0,
                data: [0; 128],
            };
            let mut mount_id = 0i32;
            let target = cstr("/");
            let r = unsafe {
                libc::syscall(
                    libc::SYS_name_to_handle_at,
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    &mut handle as *mut Handle,
                    &mut mount_id,
                    0,
                )
            };
            if r < 0 {
                println!(
                    "name_to_handle_at: error: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            let root = unsafe { libc::open(target.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            let r = unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    root,
                    &mut handle as *mut Handle,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
            };
            errno_result(name, r);
            side_effect(r >= 0);
        }
        "perf_event_open" => {
            // A software cpu-clock counter on this task.
            let mut attr = [0u64; 16];
            attr[0] = 1 | ((std::mem::size_of_val(&attr) as u64) << 32); // type SOFTWARE, size
            attr[1] = 0; // PERF_COUNT_SW_CPU_CLOCK
            let r =
                unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
            errno_result(name, r);
            side_effect(r >= 0);
        }
        "getppid" => {
            let r = getppid();
            errno_result(name, r);
        }
        other => {
            eprintln!("sf-syscalls: unknown operation {other}");
            std::process::exit(64);
        }
    }
}
