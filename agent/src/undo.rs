//! Undoing what a killed-after syscall left behind, where the kernel lets user space do
//! it. A `ptrace(PTRACE_ATTACH)` that was killed after it ran has stopped its target
//! (the attach sends SIGSTOP); the attacher dies, and the stop stays: the target would
//! wait, stopped, for a SIGCONT nobody sends. The agent (and `sysfence run`) send it.
//!
//! The probe reports every `ptrace` call's request and target pid, as the caller sees
//! it, with the level of the caller's pid namespace (0: the host's; `EVENT_PTRACE`).

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use probe_common::{EVENT_FALLBACK_KILLED, EVENT_PTRACE, Outcome, ViolationEvent};
use tracing::{info, warn};

/// `PTRACE_ATTACH`: the one request that stops its target.
pub const PTRACE_ATTACH: u64 = 16;

/// `ptrace`'s arguments as an event's `args` text.
pub fn describe_ptrace(args: [u64; 2]) -> String {
    let request = match args[0] {
        PTRACE_ATTACH => "PTRACE_ATTACH".to_string(),
        0x4206 => "PTRACE_SEIZE".to_string(),
        0 => "PTRACE_TRACEME".to_string(),
        n => format!("{n:#x}"),
    };
    let level = args[1] >> 32;
    let pid = args[1] as u32;
    if level == 0 {
        format!("request={request} pid={pid}")
    } else {
        format!("request={request} pid={pid} (pid namespace level {level})")
    }
}

/// The target of a `PTRACE_ATTACH` whose caller was killed (so that nobody will
/// detach it): (its pid as the caller saw it, the level of the caller's pid namespace).
pub fn killed_attach(e: &ViolationEvent) -> Option<(u32, u32)> {
    let killed = e.outcome == Outcome::KilledAfter as u32 || e.flags & EVENT_FALLBACK_KILLED != 0;
    (killed && e.flags & EVENT_PTRACE != 0 && e.args[0] == PTRACE_ATTACH)
        .then(|| (e.args[1] as u32, (e.args[1] >> 32) as u32))
}

/// The host pids a target can be: itself when the caller was in the host's pid
/// namespace; else the tasks of the caller's cgroup directory `cgroup_dir` whose
/// innermost pid (the last of `NSpid`) is `pid`.
pub fn host_pids(pid: u32, level: u32, cgroup_dir: Option<&Path>) -> Vec<u32> {
    if level == 0 {
        return vec![pid];
    }
    let Some(dir) = cgroup_dir else {
        return Vec::new();
    };
    let procs = std::fs::read_to_string(dir.join("cgroup.threads"))
        .or_else(|_| std::fs::read_to_string(dir.join("cgroup.procs")))
        .unwrap_or_default();
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|host| {
            std::fs::read_to_string(format!("/proc/{host}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .and_then(|v| v.split_whitespace().last().map(str::to_string))
                })
                .is_some_and(|inner| inner == pid.to_string())
        })
        .collect()
}

/// Whether the task `pid` is stopped (`T` in `/proc/PID/stat`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state == "T")
}

/// Resume `pids` where they are stopped, now and a few times within the next second (the
/// event comes from `sys_enter`, before the attach's SIGSTOP), on a thread of its own.
/// A pidfd per task keeps the retries on the same task, whatever pids are reused.
pub fn resume_stopped(pids: Vec<u32>, why: String) {
    let targets: Vec<(u32, OwnedFd)> = pids
        .into_iter()
        .filter_map(|pid| {
            // SAFETY: pidfd_open returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            // SAFETY: a new fd we own.
            (fd >= 0).then(|| (pid, unsafe { OwnedFd::from_raw_fd(fd as i32) }))
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sysfence-resume".into())
        .spawn(move || {
            let mut resumed = Vec::new();
            for wait_ms in [0, 20, 100, 300, 1000] {
                std::thread::sleep(Duration::from_millis(wait_ms));
                for (pid, fd) in &targets {
                    if !stopped(*pid) {
                        continue;
                    }
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: a signal through a pidfd we hold.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd.as_raw_fd(),
                            libc::SIGCONT,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        )
                    };
                    if r == 0 && !resumed.contains(pid) {
                        resumed.push(*pid);
                        info!(event = "resumed", pid, reason = %why, "a killed PTRACE_ATTACH had stopped it: SIGCONT");
                    } else if r != 0 {
                        warn!(event = "resume_failed", pid, error = %std::io::Error::last_os_error(), "could not resume a task a killed PTRACE_ATTACH stopped");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(event = "resume_failed", error = %e, "no thread to resume a stopped task");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: Outcome, flags: u32, args: [u64; 2]) -> ViolationEvent {
        ViolationEvent {
            boot_ns: 0,
            cgroup_id: 1,
            id: 101,
            pid: 7,
            tgid: 7,
            index: 101,
            slot: 0,
            mode: 2,
            outcome: outcome as u32,
            comm: [0; 16],
            hook: 0,
            flags,
            suppressed: 0,
            _reserved: 0,
            args,
        }
    }

    #[test]
    fn only_a_killed_attach_names_a_target_to_resume() {
        let attach = [PTRACE_ATTACH, 4242 | (1 << 32)];
        assert_eq!(
            killed_attach(&event(Outcome::KilledAfter, EVENT_PTRACE, attach)),
            Some((4242, 1))
        );
        assert_eq!(
            killed_attach(&event(
                Outcome::NotPreventable,
                EVENT_PTRACE | EVENT_FALLBACK_KILLED,
                attach
            )),
            Some((4242, 1))
        );
        assert_eq!(
            killed_attach(&event(Outcome::Audited, EVENT_PTRACE, attach)),
            None,
            "its caller lives"
        );
        assert_eq!(
            killed_attach(&event(Outcome::Denied, EVENT_PTRACE, attach)),
            None,
            "it did not run"
        );
        assert_eq!(
            killed_attach(&event(Outcome::KilledAfter, EVENT_PTRACE, [0x4206, 7])),
            None,
            "PTRACE_SEIZE stops nothing"
        );
        assert_eq!(
            describe_ptrace(attach),
            "request=PTRACE_ATTACH pid=4242 (pid namespace level 1)"
        );
        assert_eq!(
            describe_ptrace([PTRACE_ATTACH, 9]),
            "request=PTRACE_ATTACH pid=9"
        );
        assert_eq!(host_pids(9, 0, None), vec![9]);
        assert!(host_pids(9, 1, None).is_empty());
    }
}
