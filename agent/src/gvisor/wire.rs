//! The remote sink's wire format, decoded without trusting the sender.
//!
//! After the connection is accepted, each side sends one bare protobuf
//! [`Handshake`] (no header). Every later packet, from the Sentry only, is one
//! `SOCK_SEQPACKET` message: a little-endian [`Header`] followed by one protobuf
//! message whose type the header names ([`message_type`]).
//!
//! ```text
//! 0 --------- 16 ---------- 32 ----------- 64 -----------+
//! | HeaderSize | MessageType | DroppedCount | Payload... |
//! +---- 16 ----+---- 16 -----+----- 32 -----+------------+
//! ```
//!
//! Checked against Debian's runsc 20221219: the Sentry's handshake says version 1; the
//! header is 8 bytes, `header_size` 8; `dropped_count` is the Sentry's running total of
//! points it could not write (it wraps at `u32::MAX`); message types 1
//! (`container/start`), 5 (`sentry/task_exit`) and 6 (raw syscall points) are the ones
//! the session of [`super::session`] asks for.
//!
//! The message structs below carry only the fields sysfence reads (their numbers are
//! those of gVisor's `pkg/sentry/seccheck/points/*.proto`); protobuf skips the others.
//! Everything here is a pure function of the bytes: the Sentry is not trusted (it runs
//! the workload's syscalls), so any input yields a value or a [`WireError`], never a
//! panic.

use prost::Message as _;

/// The wire version this decoder implements, sent in our [`Handshake`]. It is the
/// version of Debian's runsc 20221219; newer Sentries (version 2) keep the header
/// layout, and `header_size` tells where the payload starts if the header grows.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest Sentry version this decoder talks to (the handshake's rule: continue when
/// the peer's version is at least our minimum).
pub const MIN_PEER_VERSION: u32 = 1;

/// The size of the header fields this decoder knows (`HeaderStructSize` in gVisor).
pub const HEADER_SIZE: usize = 8;

/// The `MessageType` enum of gVisor's `common.proto` (the values the binary of runsc
/// 20221219 embeds); only the types sysfence decodes are named.
pub mod message_type {
    /// `MESSAGE_CONTAINER_START`: a [`super::ContainerStart`].
    pub const CONTAINER_START: u16 = 1;
    /// `MESSAGE_SENTRY_CLONE` (not decoded).
    pub const SENTRY_CLONE: u16 = 2;
    /// `MESSAGE_SENTRY_EXEC` (not decoded).
    pub const SENTRY_EXEC: u16 = 3;
    /// `MESSAGE_SENTRY_EXIT_NOTIFY_PARENT` (not decoded).
    pub const SENTRY_EXIT_NOTIFY_PARENT: u16 = 4;
    /// `MESSAGE_SENTRY_TASK_EXIT`: a [`super::TaskExit`].
    pub const SENTRY_TASK_EXIT: u16 = 5;
    /// `MESSAGE_SYSCALL_RAW`: a [`super::Syscall`] (the `syscall/sysno/N/*` points).
    pub const SYSCALL_RAW: u16 = 6;
}

/// `gvisor.common.Handshake`: the version each side speaks.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Handshake {
    /// The sender's wire version.
    #[prost(uint32, tag = "1")]
    pub version: u32,
}

/// `gvisor.common.ContextData`: who made the point fire, and when. A field the session
/// did not ask for is absent (zero, empty).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContextData {
    /// `CLOCK_REALTIME` of the point, in nanoseconds (context field `time`).
    #[prost(int64, tag = "1")]
    pub time_ns: i64,
    /// The thread's id in the sandbox's root PID namespace (`thread_id`).
    #[prost(int32, tag = "2")]
    pub thread_id: i32,
    /// The thread group's id in that namespace (`group_id`).
    #[prost(int32, tag = "4")]
    pub thread_group_id: i32,
    /// The container the task belongs to (`container_id`): runsc's container id.
    #[prost(string, tag = "6")]
    pub container_id: String,
    /// The task's name (`process_name`): a claim of the workload.
    #[prost(string, tag = "9")]
    pub process_name: String,
}

/// `gvisor.syscall.Exit`: how a syscall returned. Present, possibly empty, on the
/// `.../exit` points only.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Exit {
    /// The return value; 0 when the call failed (runsc 20221219 reports the error in
    /// `errorno`, not as a negative result).
    #[prost(int64, tag = "1")]
    pub result: i64,
    /// The positive errno of a failed call, 0 on success (spelled so in gVisor).
    #[prost(int64, tag = "2")]
    pub errorno: i64,
}

/// `gvisor.syscall.Syscall`: a raw syscall point, enter or exit.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Syscall {
    /// Who called it.
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    /// Set on exit points only.
    #[prost(message, optional, tag = "2")]
    pub exit: Option<Exit>,
    /// The x86_64 syscall number.
    #[prost(uint64, tag = "4")]
    pub sysno: u64,
    /// The six argument registers, as the task passed them.
    #[prost(uint64, tag = "5")]
    pub arg1: u64,
    /// Second argument.
    #[prost(uint64, tag = "6")]
    pub arg2: u64,
    /// Third argument.
    #[prost(uint64, tag = "7")]
    pub arg3: u64,
    /// Fourth argument.
    #[prost(uint64, tag = "8")]
    pub arg4: u64,
    /// Fifth argument.
    #[prost(uint64, tag = "9")]
    pub arg5: u64,
    /// Sixth argument.
    #[prost(uint64, tag = "10")]
    pub arg6: u64,
}

impl Syscall {
    /// The six arguments, in order.
    pub fn args(&self) -> [u64; 6] {
        [
            self.arg1, self.arg2, self.arg3, self.arg4, self.arg5, self.arg6,
        ]
    }
}

/// `gvisor.container.Start`: a container's init process is about to run.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContainerStart {
    /// The point's context.
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    /// The runsc container id.
    #[prost(string, tag = "2")]
    pub id: String,
    /// The init process's working directory.
    #[prost(string, tag = "3")]
    pub cwd: String,
    /// The init process's argv.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
}

/// `gvisor.sentry.TaskExit`: a task (thread) exited.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TaskExit {
    /// The exiting task.
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    /// Its thread group's wait(2) status (a signal number in the low 7 bits when a
    /// signal ended it: 31 for seccomp's `SIGSYS`).
    #[prost(int32, tag = "2")]
    pub exit_status: i32,
}

/// The fixed part of every message after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Where the payload starts: at least [`HEADER_SIZE`].
    pub header_size: u16,
    /// One of [`message_type`], or a type this decoder does not know.
    pub message_type: u16,
    /// The Sentry's running total of dropped points (wrapping).
    pub dropped_count: u32,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// [`message_type::CONTAINER_START`].
    ContainerStart(ContainerStart),
    /// [`message_type::SYSCALL_RAW`].
    Syscall(Syscall),
    /// [`message_type::SENTRY_TASK_EXIT`].
    TaskExit(TaskExit),
    /// A type this decoder does not read (newer, or not asked for): skipped, and
    /// counted by the caller. Its payload is not looked at.
    Skipped {
        /// The header's type.
        message_type: u16,
    },
}

/// A header and its decoded payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The payload.
    pub message: Message,
}

/// Why bytes from the Sentry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header's fields.
    #[error("message of {len} bytes is shorter than the {HEADER_SIZE}-byte header")]
    Short {
        /// The packet's length.
        len: usize,
    },
    /// `header_size` is below the known header or past the packet's end.
    #[error("header size {declared} does not fit a message of {len} bytes")]
    HeaderSize {
        /// What the header says.
        declared: u16,
        /// The packet's length.
        len: usize,
    },
    /// The payload is not a valid protobuf message of the header's type.
    #[error("payload of message type {message_type}: {source}")]
    Payload {
        /// The header's type.
        message_type: u16,
        /// What protobuf said.
        source: prost::DecodeError,
    },
    /// The handshake is not a valid `Handshake`.
    #[error("handshake: {0}")]
    Handshake(prost::DecodeError),
    /// The peer speaks a version older than [`MIN_PEER_VERSION`].
    #[error("peer speaks wire version {0}, older than {MIN_PEER_VERSION}")]
    Version(u32),
    /// A field holds a value its Rust type cannot (an errno beyond `i32`).
    #[error("{field} = {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

/// The peer's handshake, checked against [`MIN_PEER_VERSION`].
pub fn decode_handshake(bytes: &[u8]) -> Result<Handshake, WireError> {
    let handshake = Handshake::decode(bytes).map_err(WireError::Handshake)?;
    if handshake.version < MIN_PEER_VERSION {
        return Err(WireError::Version(handshake.version));
    }
    Ok(handshake)
}

/// Our handshake: [`PROTOCOL_VERSION`].
pub fn encode_handshake() -> Vec<u8> {
    Handshake {
        version: PROTOCOL_VERSION,
    }
    .encode_to_vec()
}

/// The header of a packet (its first [`HEADER_SIZE`] bytes), checked against the
/// packet's length.
pub fn decode_header(packet: &[u8]) -> Result<Header, WireError> {
    let fields: &[u8; HEADER_SIZE] = packet
        .first_chunk()
        .ok_or(WireError::Short { len: packet.len() })?;
    let header = Header {
        header_size: u16::from_le_bytes([fields[0], fields[1]]),
        message_type: u16::from_le_bytes([fields[2], fields[3]]),
        dropped_count: u32::from_le_bytes([fields[4], fields[5], fields[6], fields[7]]),
    };
    let size = usize::from(header.header_size);
    if size < HEADER_SIZE || size > packet.len() {
        return Err(WireError::HeaderSize {
            declared: header.header_size,
            len: packet.len(),
        });
    }
    Ok(header)
}

/// A whole packet: header, then the payload of the type it names. An unknown type is
/// [`Message::Skipped`], not an error.
pub fn decode_frame(packet: &[u8]) -> Result<Frame, WireError> {
    let header = decode_header(packet)?;
    let payload = &packet[usize::from(header.header_size)..];
    let message = decode_payload(header.message_type, payload)?;
    Ok(Frame { header, message })
}

/// The payload of a message of type `message_type`.
pub fn decode_payload(message_type: u16, payload: &[u8]) -> Result<Message, WireError> {
    let fail = |source| WireError::Payload {
        message_type,
        source,
    };
    Ok(match message_type {
        message_type::SYSCALL_RAW => Message::Syscall(Syscall::decode(payload).map_err(fail)?),
        message_type::CONTAINER_START => {
            Message::ContainerStart(ContainerStart::decode(payload).map_err(fail)?)
        }
        message_type::SENTRY_TASK_EXIT => {
            Message::TaskExit(TaskExit::decode(payload).map_err(fail)?)
        }
        other => Message::Skipped {
            message_type: other,
        },
    })
}

/// An exit's errno as the `i32` of `errno(3)`.
pub fn errno_of(exit: &Exit) -> Result<i32, WireError> {
    i32::try_from(exit.errorno).map_err(|_| WireError::OutOfRange {
        field: "errorno",
        value: exit.errorno,
    })
}
