//! Benchmark workloads. Each prints one number: nanoseconds per syscall.
//!
//! sf-bench getppid N [--seccomp PROFILE]  N getppid(2) calls
//! sf-bench mix N [--seccomp PROFILE]      N rounds of openat+read+write+close on a
//!                                         tmpfs file (4 syscalls a round)
//! sf-bench loop-denied N                  N getppid(2) calls as fast as possible (an
//!                                         audit policy that denies getppid makes each
//!                                         one a violation event); prints calls/s
//!
//! Time is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared machine, time the scheduler gives to other processes does not count, while
//! everything the kernel does on the thread's behalf (the syscall, the tracepoint and
//! its programs) does. The N calls run in [`BATCHES`] batches after a warm-up of N/10,
//! and the number printed is the fastest batch's: what the machine's neighbours do to
//! caches, the shared core and its clock only ever slows a batch, so the fastest one is
//! the closest to the path's own cost, and the same estimator serves every setup.
//!
//! `--seccomp PROFILE` first installs a libseccomp filter allowing the names of an OCI
//! seccomp profile (as `sysfence policy export-seccomp` writes), so the same allowlist
//! can be compared under seccomp and under sysfence.
use std::{ffi::CString, time::Instant};

/// This thread's CPU time, in ns.
fn cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

/// Batches a sample's calls are timed in.
const BATCHES: u64 = 20;

/// `n` calls of `call` (one round makes `per_round` syscalls) after a warm-up of `n/10`,
/// in [`BATCHES`] batches: ns per syscall of the fastest batch.
fn fastest_batch(n: u64, per_round: u64, mut call: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        call();
    }
    let batch = (n / BATCHES).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..BATCHES {
        let start = cpu_ns();
        for _ in 0..batch {
            call();
        }
        best = best.min((cpu_ns() - start) as f64 / (batch * per_round) as f64);
    }
    best
}

fn getppid() {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) };
}

fn install_seccomp(profile: &str) {
    let text = std::fs::read_to_string(profile).unwrap_or_else(|e| panic!("{profile}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("profile is JSON");
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).expect("seccomp_init");
    let mut allowed = 0;
    for rule in json["syscalls"].as_array().expect("syscalls") {
        for name in rule["names"].as_array().expect("names") {
            if let Ok(sc) = ScmpSyscall::from_name(name.as_str().expect("name")) {
                filter
                    .add_rule(ScmpAction::Allow, sc)
                    .expect("seccomp_rule_add");
                allowed += 1;
            }
        }
    }
    filter.load().expect("seccomp_load");
    eprintln!("sf-bench: seccomp filter allowing {allowed} syscalls loaded");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!(
            "usage: sf-bench getppid|personality|mix|loop-denied N [--seccomp PROFILE] [--ring]"
        );
        std::process::exit(64)
    });
    if let Some(i) = args.iter().position(|a| a == "--seccomp") {
        install_seccomp(args.get(i + 1).expect("--seccomp PROFILE"));
    }
    // `--ring`: own an io_uring ring (unused) while measuring, as a task whose ring work
    // the probe must tell from its own syscalls does.
    let _ring = args.iter().any(|a| a == "--ring").then(|| {
        let mut params = [0u8; 120]; // struct io_uring_params
        // SAFETY: io_uring_setup writes the kernel's answer into `params`.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) };
        assert!(
            fd >= 0,
            "io_uring_setup: {}",
            std::io::Error::last_os_error()
        );
        fd
    });
    match args[1].as_str() {
        "getppid" => println!("{:.2}", fastest_batch(n, 1, getppid)),
        "personality" => {
            // personality(0xffffffff) queries and changes nothing: a call that Docker's
            // rules (and runtime-default's) allow for some argument values only.
            let query = || {
                // SAFETY: a query without side effects.
                unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) }
            };
            println!(
                "{:.2}",
                fastest_batch(n, 1, || {
                    query();
                })
            );
        }
        "mix" => {
            let dir = std::env::var("SF_BENCH_TMPFS").unwrap_or_else(|_| "/dev/shm".into());
            let path =
                CString::new(format!("{dir}/sf-bench-{}", std::process::id())).expect("path");
            let mut buf = [7u8; 64];
            let round = |buf: &mut [u8; 64]| {
                // SAFETY: valid path and buffer; errors are checked below.
                unsafe {
                    let fd = libc::openat(
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDWR | libc::O_CREAT,
                        0o600,
                    );
                    assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
                    libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    libc::write(fd, buf.as_ptr().cast(), buf.len());
                    libc::close(fd);
                }
            };
            println!("{:.2}", fastest_batch(n, 4, || round(&mut buf)));
            // SAFETY: valid path.
            unsafe { libc::unlink(path.as_ptr()) };
        }
        "loop-denied" => {
            let start = Instant::now();
            for _ in 0..n {
                getppid();
            }
            println!("{:.0}", n as f64 / start.elapsed().as_secs_f64());
        }
        other => {
            eprintln!("sf-bench: unknown workload {other}");
            std::process::exit(64);
        }
    }
}
