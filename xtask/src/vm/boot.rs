//! Booting one kernel in QEMU, and reading what the guest prints on its console.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{APPEND, MARK, PREVENTABILITY, VM_MEMORY_MIB, kernels::Kernel};
use crate::Tally;

pub(super) struct BootResult {
    pub(super) passed: u64,
    /// The preventability table the guest printed, if any.
    pub(super) preventability: Option<String>,
    pub(super) failed: u64,
    /// Until /init's first line.
    pub(super) boot: Option<Duration>,
    pub(super) total: Duration,
    pub(super) error: Option<String>,
}

/// The QEMU process; killed (by its PID) and reaped on drop if still running.
pub(super) struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(super) fn boot(
    k: &Kernel,
    initrd: &Path,
    expected_exes: usize,
    timeout: Duration,
    tally: &mut Tally,
) -> BootResult {
    let started = Instant::now();
    let mut r = BootResult {
        passed: 0,
        preventability: None,
        failed: 0,
        boot: None,
        total: Duration::ZERO,
        error: None,
    };
    let spawned = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            &VM_MEMORY_MIB.to_string(),
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&k.path)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", APPEND])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut qemu = match spawned {
        Ok(c) => Qemu(c),
        Err(e) => {
            r.error = Some(format!("starting qemu-system-x86_64: {e}"));
            return r;
        }
    };
    let stdout = qemu.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        while stdout.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf);
            if tx
                .send(line.trim_end_matches(['\r', '\n']).to_string())
                .is_err()
            {
                break;
            }
            buf.clear();
        }
    });

    let deadline = started + timeout;
    let mut done: Option<String> = None;
    let mut panicked: Option<String> = None;
    let mut exits = 0usize;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = printable(&line);
                println!("{line}");
                // The test harness may print the test's name on the same line first.
                if let Some(at) = line.find(PREVENTABILITY) {
                    r.preventability = Some(line[at + PREVENTABILITY.len()..].trim().to_string());
                }
                if let Some((p, f)) = tally.count(&line) {
                    r.passed += p;
                    r.failed += f;
                }
                if let Some(rest) = line.strip_prefix(MARK).map(str::trim) {
                    if rest == "START" {
                        r.boot = Some(started.elapsed());
                    } else if rest.starts_with("EXIT ") {
                        exits += 1;
                    } else if let Some(s) = rest.strip_prefix("DONE ") {
                        done = Some(s.trim().to_string());
                    }
                }
                if panicked.is_none() && line.contains("Kernel panic") {
                    panicked = Some(line.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        // Kill the QEMU we started, by its PID (Child::kill), then reap it.
        let _ = qemu.0.kill();
    }
    let status = qemu.0.wait();
    let _ = reader.join();
    r.total = started.elapsed();

    let mut errors = Vec::new();
    if timed_out {
        errors.push(format!(
            "timed out after {} s; qemu killed",
            timeout.as_secs()
        ));
    }
    if let Some(p) = panicked {
        errors.push(format!("kernel panic: {p}"));
    }
    match done.as_deref() {
        Some("pass") => {}
        Some(other) => errors.push(format!("the guest reported DONE {other}")),
        None => errors.push(format!("no `{MARK} DONE` line from the guest")),
    }
    if exits != expected_exes {
        errors.push(format!(
            "{exits} of {expected_exes} test executables ran to completion"
        ));
    }
    if r.failed > 0 {
        errors.push(format!("{} test(s) failed", r.failed));
    }
    if !timed_out {
        match status {
            Ok(s) if !s.success() => errors.push(format!("qemu exited with {s}")),
            Err(e) => errors.push(format!("waiting for qemu: {e}")),
            _ => {}
        }
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

/// A console line without terminal control sequences (SeaBIOS resets and clears the
/// screen: `ESC c`, `ESC [2J`) or other control characters.
pub(super) fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next_if_eq(&'[').is_some() {
                    // CSI: parameters and intermediates up to a final byte in @..~.
                    while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_terminal_controls() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(printable("test result: ok.\r"), "test result: ok.");
    }
}
