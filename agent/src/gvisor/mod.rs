//! gVisor: the application's syscalls, from the Sentry's trace sessions.
//!
//! Under gVisor (`runsc`) the host kernel, and so sysfence's eBPF probe, sees only the
//! Sentry's own syscalls: the application's are served inside the sandbox. gVisor can
//! stream them out instead: a *trace session* enables points (raw syscall enter/exit,
//! container start, task exit, ...) and a *remote sink* sends each point that fires, as
//! protobuf, over a Unix `SOCK_SEQPACKET` socket to a monitor listening on the host.
//! This module is that monitor's receiving side:
//!
//! - [`session`]: the session (runsc's `--pod-init-config` file) that names the sink's
//!   socket and asks for every raw syscall point, enter and exit;
//! - [`Sink`]: the listener; each sandbox connects once when it boots, and its points
//!   come out of [`SinkHandle::events`] as [`SandboxEvent`]s;
//! - [`wire`]: the decoding of that socket's bytes.
//!
//! Use: `Sink::bind(path)?.serve(capacity)` inside a Tokio runtime; write
//! `Session::new(path).write_pod_init_config(file)`; run the sandbox with
//! `runsc --pod-init-config FILE` (runsc connects to the sink from its `create`/`run`
//! command, as the calling user: the socket is 0600, so that is root).
//!
//! What a session gives (checked with Debian's runsc 20221219):
//! - every syscall the application enters, with its number and six argument registers,
//!   and how it returned (`result`, and a positive `errno` on failure, `result` then 0),
//!   attributed to the runsc container id, thread, thread group, with a realtime stamp;
//! - `container/start` before the container's first syscall;
//! - the wait status of each exiting task.
//!
//! What it does not give:
//! - syscalls refused by the sandbox's own OCI seccomp filter (`runsc --oci-seccomp`):
//!   with `SCMP_ACT_ERRNO` the refused call fires neither its enter nor its exit point;
//!   with `SCMP_ACT_KILL` (or `SCMP_ACT_TRAP`) nothing fires but the task's exit, with
//!   status 31 (`SIGSYS`), and not which syscall it was. (runsc 20221219 refuses
//!   `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_KILL_THREAD` and `SCMP_ACT_LOG` outright: the
//!   container does not start.) A policy enforced that way is invisible here;
//! - syscall numbers past [`session::LAST_RAW_SYSNO`], which that runsc has no point
//!   for;
//! - any guarantee: the Sentry is the sandbox's kernel, and a compromised Sentry can
//!   send anything or nothing. Everything is decoded as untrusted input, and a sandbox
//!   whose stream stops is not proof that it stopped.
//! - completeness under load: the Sentry writes without blocking and drops a point when
//!   the socket is full, counting it; the count arrives with its next message
//!   ([`SandboxEvent::Dropped`]). Drops after its last message cannot be known.

pub mod session;
pub mod sink;
pub mod wire;

#[cfg(test)]
mod tests;

pub use session::Session;
pub use sink::{Sink, SinkHandle};

/// One connection of a sandbox to the sink, numbered from 1 in accept order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gvisor-sink#{}", self.0)
    }
}

/// How a syscall returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallExit {
    /// The return value (0 on failure).
    pub result: i64,
    /// The positive errno of a failure, 0 on success.
    pub errno: i32,
}

/// What one connection amounted to, told when it closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Packets received after the handshake.
    pub messages: u64,
    /// Events delivered.
    pub events: u64,
    /// Messages of a type not decoded (newer gVisor, or points not asked for).
    pub skipped: u64,
    /// Messages that did not decode (or did not fit the receive buffer).
    pub malformed: u64,
    /// Points the Sentry said it dropped (the sum of the `Dropped` events).
    pub dropped: u64,
}

/// What the sink tells of the sandboxes connected to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxEvent {
    /// A sandbox connected and the handshake succeeded.
    Connected {
        /// The connection.
        connection: ConnectionId,
        /// The process that connected (`SO_PEERCRED`): the `runsc create`/`run`
        /// command, which then hands the socket to the Sentry.
        peer_pid: Option<i32>,
        /// The Sentry's wire version.
        version: u32,
    },
    /// A container's init process is about to run (before its first syscall).
    ContainerStart {
        /// The connection.
        connection: ConnectionId,
        /// The runsc container id.
        container_id: String,
        /// The init's argv.
        args: Vec<String>,
        /// The init's working directory.
        cwd: String,
        /// The task that reported it.
        tid: i32,
        /// Its thread group.
        tgid: i32,
        /// `CLOCK_REALTIME`, ns.
        time_ns: i64,
    },
    /// A syscall entered (`exit` None) or returned (`exit` Some).
    Syscall {
        /// The connection.
        connection: ConnectionId,
        /// The runsc container id of the calling task.
        container_id: String,
        /// The x86_64 syscall number.
        sysno: u64,
        /// The argument registers.
        args: [u64; 6],
        /// How it returned, on exit points.
        exit: Option<SyscallExit>,
        /// The calling thread (sandbox's root PID namespace).
        tid: i32,
        /// Its thread group.
        tgid: i32,
        /// `CLOCK_REALTIME`, ns.
        time_ns: i64,
    },
    /// A task (thread) exited.
    TaskExit {
        /// The connection.
        connection: ConnectionId,
        /// The runsc container id.
        container_id: String,
        /// The exiting thread.
        tid: i32,
        /// Its thread group.
        tgid: i32,
        /// The thread group's wait(2) status (`status & 0x7f` is the killing signal).
        exit_status: i32,
        /// `CLOCK_REALTIME`, ns.
        time_ns: i64,
    },
    /// The Sentry dropped `count` points of this connection (its socket was full) since
    /// the previous `Dropped`. Which containers they belonged to is not known.
    Dropped {
        /// The connection.
        connection: ConnectionId,
        /// Points lost.
        count: u64,
    },
    /// The connection ended: the sandbox exited, or it broke the protocol.
    Closed {
        /// The connection.
        connection: ConnectionId,
        /// What it carried.
        stats: ConnectionStats,
        /// Why, when not a plain end of stream.
        error: Option<String>,
    },
}

impl SandboxEvent {
    /// The event of a decoded message; `None` for a [`wire::Message::Skipped`].
    pub fn from_message(
        connection: ConnectionId,
        message: wire::Message,
    ) -> Result<Option<SandboxEvent>, wire::WireError> {
        Ok(Some(match message {
            wire::Message::Syscall(call) => syscall_event(connection, call)?,
            wire::Message::ContainerStart(start) => container_start_event(connection, start),
            wire::Message::TaskExit(exit) => task_exit_event(connection, exit),
            wire::Message::Skipped { .. } => return Ok(None),
        }))
    }

    /// The connection the event came from.
    pub fn connection(&self) -> ConnectionId {
        match self {
            SandboxEvent::Connected { connection, .. }
            | SandboxEvent::ContainerStart { connection, .. }
            | SandboxEvent::Syscall { connection, .. }
            | SandboxEvent::TaskExit { connection, .. }
            | SandboxEvent::Dropped { connection, .. }
            | SandboxEvent::Closed { connection, .. } => *connection,
        }
    }
}

fn syscall_event(
    connection: ConnectionId,
    call: wire::Syscall,
) -> Result<SandboxEvent, wire::WireError> {
    let exit = match &call.exit {
        Some(exit) => Some(SyscallExit {
            result: exit.result,
            errno: wire::errno_of(exit)?,
        }),
        None => None,
    };
    let args = call.args();
    let context = call.context_data.unwrap_or_default();
    Ok(SandboxEvent::Syscall {
        connection,
        container_id: context.container_id,
        sysno: call.sysno,
        args,
        exit,
        tid: context.thread_id,
        tgid: context.thread_group_id,
        time_ns: context.time_ns,
    })
}

fn container_start_event(connection: ConnectionId, start: wire::ContainerStart) -> SandboxEvent {
    let context = start.context_data.unwrap_or_default();
    let container_id = if start.id.is_empty() {
        context.container_id
    } else {
        start.id
    };
    SandboxEvent::ContainerStart {
        connection,
        container_id,
        args: start.args,
        cwd: start.cwd,
        tid: context.thread_id,
        tgid: context.thread_group_id,
        time_ns: context.time_ns,
    }
}

fn task_exit_event(connection: ConnectionId, exit: wire::TaskExit) -> SandboxEvent {
    let context = exit.context_data.unwrap_or_default();
    SandboxEvent::TaskExit {
        connection,
        container_id: context.container_id,
        tid: context.thread_id,
        tgid: context.thread_group_id,
        exit_status: exit.exit_status,
        time_ns: context.time_ns,
    }
}
