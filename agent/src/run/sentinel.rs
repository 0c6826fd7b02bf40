//! `sysfence run` does not stay stopped while its command runs. The command may stop
//! it: a `ptrace(PTRACE_ATTACH)` on its parent that is killed after it ran leaves the
//! attach's SIGSTOP behind, and nobody would ever send the SIGCONT; `run` would wait,
//! stopped, for ever. A sentinel process, forked before anything else, resumes `run`
//! whenever it finds it stopped for any reason but job control from the terminal (Ctrl-Z
//! still stops `run` and its command, and `fg` resumes them).

use std::sync::atomic::{AtomicU32, Ordering};

/// The page `run` and the sentinel share: 1 while `run` stops itself for job control.
static SHARED: std::sync::atomic::AtomicPtr<AtomicU32> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The sentinel process; ended and reaped on drop.
pub struct Sentinel {
    pid: libc::pid_t,
}

/// SIGTSTP, SIGTTIN, SIGTTOU: from the terminal (`SI_KERNEL`), `run` stops itself, and
/// the sentinel lets it; from a process (the command can send them), they are ignored.
extern "C" fn job_control(_sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; the shared
    // page lives as long as the process. Only atomics and raise(2): async-signal-safe.
    unsafe {
        if (*info).si_code != libc::SI_KERNEL {
            return;
        }
        let flag = SHARED.load(Ordering::SeqCst);
        if let Some(flag) = flag.as_ref() {
            flag.store(1, Ordering::SeqCst);
        }
        libc::raise(libc::SIGSTOP);
        if let Some(flag) = flag.as_ref() {
            flag.store(0, Ordering::SeqCst);
        }
    }
}

impl Sentinel {
    /// Fork the sentinel. Call while the process has one thread (`fork` copies only the
    /// caller's). `None` (with a warning) if it cannot be had: `run` then works as
    /// before, stoppable.
    pub fn start() -> Option<Sentinel> {
        // SAFETY: a new shared anonymous page, zeroed.
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
        if page == libc::MAP_FAILED {
            tracing::warn!("sysfence run: no sentinel (mmap failed): a stop of run is not undone");
            return None;
        }
        let flag = page.cast::<AtomicU32>();
        SHARED.store(flag, Ordering::SeqCst);
        // SAFETY: getpid has no failure.
        let run = unsafe { libc::getpid() };
        // SAFETY: fork while single-threaded; the child runs only `watch`, which uses
        // plain syscalls and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => watch(run, flag),
            pid if pid > 0 => {
                for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
                    // SAFETY: installing an async-signal-safe handler.
                    unsafe {
                        let mut action: libc::sigaction = std::mem::zeroed();
                        action.sa_sigaction = job_control as *const () as usize;
                        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                        libc::sigaction(sig, &action, std::ptr::null_mut());
                    }
                }
                Some(Sentinel { pid })
            }
            _ => {
                tracing::warn!(
                    "sysfence run: no sentinel (fork failed): a stop of run is not undone"
                );
                None
            }
        }
    }
}

/// The sentinel's loop: every 20 ms, if `run` is stopped and did not stop itself, send it
/// SIGCONT. Ends when `run` does.
fn watch(run: libc::pid_t, flag: *mut AtomicU32) -> ! {
    // SAFETY: plain syscalls on this process; the shared page outlives both processes'
    // use of it; _exit leaves without running the parent's destructors.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Not the command's output: a reader waiting for EOF must not wait for us.
        libc::close(0);
        libc::close(1);
        let stat = format!("/proc/{run}/stat\0");
        let mut buf = [0u8; 512];
        loop {
            if libc::getppid() != run {
                libc::_exit(0);
            }
            let fd = libc::open(stat.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                libc::close(fd);
                let text = &buf[..n.max(0) as usize];
                // The state is the field after the last ')'.
                let state = text
                    .iter()
                    .rposition(|&b| b == b')')
                    .and_then(|i| text.get(i + 2))
                    .copied();
                if state == Some(b'T') && (*flag).load(Ordering::SeqCst) == 0 {
                    libc::kill(run, libc::SIGCONT);
                    let msg = b"sysfence run: something stopped sysfence run (a killed PTRACE_ATTACH, or SIGSTOP): resumed\n";
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                }
            }
            libc::usleep(20_000);
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
