//! Test workload: makes exactly the syscalls it is asked for, so that counts can be
//! compared to the call.
//!
//! sf-syscalls getppid N        N raw getppid(2) calls
//! sf-syscalls mkdir PATH       one mkdir(2); prints "mkdir: ok" or the error
//! sf-syscalls bench-getppid N  N getppid(2) calls, prints nanoseconds per call
//! sf-syscalls sleep MS         sleeps, then exits 0
use std::{ffi::CString, time::Instant};

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("getppid") => {
            let n: u64 = arg(&args, 2, "a count");
            for _ in 0..n {
                getppid();
            }
        }
        Some("bench-getppid") => {
            let n: u64 = arg(&args, 2, "a count");
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
            let path: String = arg(&args, 2, "a path");
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
        Some("sleep") => {
            let ms: u64 = arg(&args, 2, "milliseconds");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        _ => {
            eprintln!("usage: sf-syscalls getppid N | bench-getppid N | mkdir PATH | sleep MS");
            std::process::exit(64);
        }
    }
}
