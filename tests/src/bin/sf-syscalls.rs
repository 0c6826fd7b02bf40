//! Test workload: makes exactly the syscalls it is asked for, so that counts can be
//! compared to the call.
//!
//! sf-syscalls getppid N        N raw getppid(2) calls
//! sf-syscalls mkdir PATH       one mkdir(2); prints "mkdir: ok" or the error
//! sf-syscalls bench-getppid N  N getppid(2) calls, prints nanoseconds per call
//! sf-syscalls sleep MS         sleeps, then exits 0
//! sf-syscalls int80 NR [A B C] one i386 syscall through `int 0x80`; prints its result
//! sf-syscalls raw NR           one x86_64 syscall with a raw (possibly invalid) number
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
        Some("int80") => {
            let nr: u32 = arg(&args, 2, "a syscall number");
            let a: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let b: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
            let c: u32 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
            println!("int80 {nr} = {}", int80(nr, a, b, c));
        }
        Some("raw") => {
            let nr: i64 = arg(&args, 2, "a syscall number");
            // SAFETY: no arguments; an invalid number just fails with ENOSYS.
            let r = unsafe { libc::syscall(nr) };
            println!("raw {nr} = {r}");
        }
        Some("sleep") => {
            let ms: u64 = arg(&args, 2, "milliseconds");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        _ => {
            eprintln!(
                "usage: sf-syscalls getppid N | bench-getppid N | mkdir PATH | sleep MS | int80 NR [A B C] | raw NR"
            );
            std::process::exit(64);
        }
    }
}
