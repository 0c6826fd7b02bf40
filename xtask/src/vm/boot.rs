//! Booting one kernel in QEMU, and reading what the guest prints on its console.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{ACCEL, APPEND, MARK, PREVENTABILITY, VM_MEMORY_MIB, kernels::Kernel};
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
    /// The kernel's panic line, where it panicked, and its oops, if it panicked.
    pub(super) panic: Option<String>,
    /// On a second boot, the first boot's panic (set by the caller).
    pub(super) first_panic: Option<String>,
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
) -> BootResult {
    // Counted here, into the result: the caller adds a boot's counts to its tally
    // only when it keeps that boot.
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut r = BootResult {
        passed: 0,
        preventability: None,
        failed: 0,
        boot: None,
        total: Duration::ZERO,
        error: None,
        panic: None,
        first_panic: None,
    };
    let spawned = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            // One host thread runs both vCPUs in turn (see ACCEL in mod.rs).
            ACCEL,
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

    let mut deadline = started + timeout;
    let mut done: Option<String> = None;
    let mut panicked: Option<String> = None;
    // The console's last lines, for the oops behind a panic; the test executable and
    // the test that were running (the harness prints `test name ... ` before each test
    // under --test-threads=1).
    let mut recent: VecDeque<String> = VecDeque::with_capacity(RECENT_LINES);
    let mut running_exe: Option<String> = None;
    let mut running_test: Option<String> = None;
    let mut exits = 0usize;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = printable(&line);
                // Kernels boot side by side: each console line says whose it is.
                println!("[{}] {line}", k.series());
                if recent.len() == RECENT_LINES {
                    recent.pop_front();
                }
                recent.push_back(line.clone());
                if let Some(at) = line.find("test ").filter(|_| line.contains(" ... ")) {
                    running_test = line[at + 5..].split(" ... ").next().map(str::to_string);
                }
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
                    } else if let Some(exe) = rest.strip_prefix("RUN ") {
                        running_exe = Some(exe.trim().to_string());
                    } else if rest.starts_with("EXIT ") {
                        exits += 1;
                    } else if let Some(s) = rest.strip_prefix("DONE ") {
                        done = Some(s.trim().to_string());
                    }
                }
                if panicked.is_none() && line.contains("Kernel panic") {
                    panicked = Some(format!(
                        "{}\n  while running {} (test {})\n  the kernel's report:\n{}",
                        line.trim(),
                        running_exe.as_deref().unwrap_or("no test executable"),
                        running_test.as_deref().unwrap_or("none started"),
                        oops_excerpt(recent.make_contiguous())
                    ));
                    // The guest reboots, and QEMU exits (-no-reboot), right after a
                    // panic: wait for that a little, not for the whole timeout.
                    deadline = deadline.min(Instant::now() + PANIC_GRACE);
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
    if timed_out && panicked.is_none() {
        errors.push(format!(
            "timed out after {} s; qemu killed",
            timeout.as_secs()
        ));
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
    // Last: its report runs over several lines.
    if let Some(p) = panicked {
        errors.push(format!("kernel panic: {p}"));
        r.panic = Some(p);
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

/// How long QEMU may take to exit after the guest's kernel panicked.
const PANIC_GRACE: Duration = Duration::from_secs(60);

/// How many console lines are kept for the report of a kernel panic.
const RECENT_LINES: usize = 200;

/// The kernel's own report of what led to a panic, from the console's last lines: from
/// the first line of the last oops, BUG or warning to the panic line, at most 80
/// lines, each indented. The last 40 lines when no such start is found.
fn oops_excerpt(lines: &[String]) -> String {
    const STARTS: [&str; 7] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "kernel BUG at",
        "WARNING:",
        "Unable to handle",
        "stack segment:",
    ];
    let end = lines
        .iter()
        .rposition(|l| l.contains("Kernel panic"))
        .map_or(lines.len(), |i| i + 1);
    let start = lines[..end]
        .iter()
        .rposition(|l| STARTS.iter().any(|s| l.contains(s)))
        .unwrap_or(end.saturating_sub(40))
        .max(end.saturating_sub(80));
    lines[start..end]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
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

    #[test]
    fn a_panic_report_holds_the_oops_that_led_to_it() {
        let lines: Vec<String> = [
            "test lsm_denies_mount ... ok",
            "[  120.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[  120.2] RIP: 0010:bpf_task_storage_free+0x10/0x40",
            "[  120.3] Call Trace:",
            "[  121.6] Kernel panic - not syncing: Fatal exception in interrupt",
            "[  121.7] Kernel Offset: disabled",
        ]
        .map(str::to_string)
        .to_vec();
        let got = oops_excerpt(&lines);
        assert!(got.starts_with("    [  120.1] BUG: kernel NULL"), "{got}");
        assert!(got.contains("RIP: 0010:bpf_task_storage_free"), "{got}");
        assert!(got.ends_with("Fatal exception in interrupt"), "{got}");
        assert!(!got.contains("lsm_denies_mount"), "{got}");

        // No recognised start: the last lines before the panic.
        let plain: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let got = oops_excerpt(&plain);
        assert_eq!(got.lines().count(), 40);
        assert!(got.ends_with("line 99"), "{got}");
    }
}
