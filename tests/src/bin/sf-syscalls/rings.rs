//! Operations through an io_uring ring, for `sf-syscalls try NAME [PATH]`.
//!
//! - `uring-mkdirat PATH`: a mkdirat, which the kernel runs in an io-wq worker.
//!
//! The rest run outside the syscall that submitted them: io_uring's task_work runs them
//! in this task *between* its syscalls (after `sys_exit`).
//!
//! - `uring-recv-poll-first`: a recv with `IORING_RECVSEND_POLL_FIRST` on an empty
//!   socket: armed, not tried; the write of this process that makes it ready queues
//!   the recv as task_work, which runs on the way out of that `write`.
//! - `uring-accept-poll-first`: an accept with `IORING_ACCEPT_POLL_FIRST` (kernel 6.10
//!   and later; older ones refuse the flag: `uring-accept-poll-first: unsupported`),
//!   made ready by a `connect` of this process.
//! - `uring-linked-accept`: a nop linked to an accept of a connection already
//!   waiting: the accept is issued from task_work once the nop completes, after the
//!   `io_uring_enter` that submitted both has returned.
//!
//! Each prints `NAME: ok` or `NAME: error: ...`, then `side-effect: present` when the
//! directory exists, data was received or a connection accepted.

use io_uring::{IoUring, opcode, squeue, types};
use std::os::{
    fd::AsRawFd,
    linux::net::SocketAddrExt as _,
    unix::net::{SocketAddr, UnixListener, UnixStream},
};

const IORING_RECVSEND_POLL_FIRST: u16 = 1;
const IORING_ACCEPT_POLL_FIRST: u16 = 4;

/// Set `sqe.ioprio`, which carries both flags (the crate has no setter on `Accept`).
fn with_ioprio(sqe: squeue::Entry, ioprio: u16) -> squeue::Entry {
    const { assert!(size_of::<squeue::Entry>() == 64) };
    let mut sqe = sqe;
    // SAFETY: `Entry` is `repr(C)` around the kernel's 64-byte `io_uring_sqe`, whose
    // `__u16 ioprio` is at offset 2 (after `__u8 opcode, flags`).
    unsafe {
        (&raw mut sqe)
            .cast::<u8>()
            .add(2)
            .cast::<u16>()
            .write_unaligned(ioprio)
    };
    sqe
}

fn ring() -> Option<IoUring> {
    match IoUring::new(8) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("io_uring_setup: error: {e}");
            None
        }
    }
}

/// Submit what is queued without waiting: the `io_uring_enter` returns at once.
fn submit(ring: &IoUring) -> bool {
    match ring.submit() {
        Ok(_) => true,
        Err(e) => {
            println!("io_uring_enter: error: {e}");
            false
        }
    }
}

/// Wait for the completion tagged `tag`; its result.
fn completion(ring: &mut IoUring, tag: u64) -> Option<i32> {
    for _ in 0..4 {
        if let Some(c) = ring.completion().find(|c| c.user_data() == tag) {
            return Some(c.result());
        }
        if let Err(e) = ring.submit_and_wait(1) {
            println!("io_uring_enter: error: {e}");
            return None;
        }
    }
    println!("io_uring: no completion {tag}");
    None
}

/// `NAME: ok` or `NAME: error: ...` for a completion's result, then the side effect.
fn report(name: &str, result: i32, side_effect: bool) {
    if result < 0 {
        println!(
            "{name}: error: {}",
            std::io::Error::from_raw_os_error(-result)
        );
    } else {
        println!("{name}: ok");
    }
    println!(
        "side-effect: {}",
        if side_effect { "present" } else { "none" }
    );
}

/// A listening unix socket of an abstract name of this process's own.
fn listener(tag: &str) -> (UnixListener, SocketAddr) {
    let name = format!("sf-syscalls-{tag}-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    (UnixListener::bind_addr(&addr).expect("bind"), addr)
}

/// Run the ring operation `name`; false if there is none of that name.
pub(crate) fn try_ring(name: &str, path: &str) -> bool {
    match name {
        "uring-mkdirat" => mkdirat(name, path),
        "uring-recv-poll-first" => recv_poll_first(name),
        "uring-accept-poll-first" => accept_poll_first(name),
        "uring-linked-accept" => linked_accept(name),
        _ => return false,
    }
    true
}

fn mkdirat(name: &str, path: &str) {
    let Some(mut ring) = ring() else { return };
    let target = std::ffi::CString::new(path).expect("no NUL");
    let sqe = opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), target.as_ptr())
        .mode(0o755)
        .build()
        .user_data(1);
    // SAFETY: `target` outlives the submission, which is waited for below.
    unsafe { ring.submission().push(&sqe).expect("queue has room") };
    if let Some(result) = completion(&mut ring, 1) {
        report(name, result, std::path::Path::new(path).exists());
    }
}

fn recv_poll_first(name: &str) {
    let Some(mut ring) = ring() else { return };
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut buf = [0u8; 16];
    let recv = opcode::Recv::new(types::Fd(ours.as_raw_fd()), buf.as_mut_ptr(), 16)
        .ioprio(IORING_RECVSEND_POLL_FIRST)
        .build()
        .user_data(1);
    // SAFETY: `buf` and the socket outlive the request, which is waited for below.
    unsafe { ring.submission().push(&recv).expect("queue has room") };
    if !submit(&ring) {
        return;
    }
    // The recv is armed, not tried. This write makes it ready: its task_work runs on
    // the way out of the write.
    std::io::Write::write_all(&mut &theirs, b"ring data").expect("write");
    if let Some(result) = completion(&mut ring, 1) {
        report(name, result, result > 0);
    }
}

fn accept_poll_first(name: &str) {
    let Some(mut ring) = ring() else { return };
    let (listener, addr) = listener("poll-first");
    let accept = with_ioprio(
        opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(1),
        IORING_ACCEPT_POLL_FIRST,
    );
    // SAFETY: the listener outlives the request, which is waited for below.
    unsafe { ring.submission().push(&accept).expect("queue has room") };
    if !submit(&ring) {
        return;
    }
    if let Some(c) = ring.completion().find(|c| c.user_data() == 1) {
        if c.result() == -libc::EINVAL {
            println!("{name}: unsupported");
        } else {
            report(name, c.result(), c.result() > 0);
        }
        return;
    }
    // Armed, not tried; this connect makes it ready.
    let _client = UnixStream::connect_addr(&addr).expect("connect");
    if let Some(result) = completion(&mut ring, 1) {
        report(name, result, result > 0);
    }
}

fn linked_accept(name: &str) {
    let Some(mut ring) = ring() else { return };
    let (listener, addr) = listener("linked");
    let _client = UnixStream::connect_addr(&addr).expect("connect");
    let nop = opcode::Nop::new()
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(1);
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(2);
    // SAFETY: the listener outlives the requests, which are waited for below.
    unsafe {
        let mut sq = ring.submission();
        sq.push(&nop).expect("queue has room");
        sq.push(&accept).expect("queue has room");
    }
    if !submit(&ring) {
        return;
    }
    if let Some(result) = completion(&mut ring, 2) {
        report(name, result, result > 0);
    }
}
