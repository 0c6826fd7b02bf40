//! The remote sink's listener: one `SOCK_SEQPACKET` Unix socket for every sandbox of the
//! node, one connection per sandbox, events out of one bounded channel.
//!
//! Under flood (a workload making syscalls faster than the consumer takes events):
//! the channel holds at most `capacity` events; a connection whose next event does not
//! fit waits for room and stops reading its socket meanwhile (one pending event and one
//! [`MAX_MESSAGE`] buffer per connection: the sink's memory does not grow with the
//! flood). Waiting connections get room in turn, so a flooding sandbox slows the others'
//! events down but does not starve them. The socket's kernel buffer then fills, and the
//! Sentry, which writes without blocking, drops points and counts them; the count comes
//! in the header of its next message, and the sink turns it into
//! [`SandboxEvent::Dropped`] (and [`ConnectionStats::dropped`]). A session with
//! [`super::Session::retries`] makes the Sentry wait instead, slowing the workload.

use std::{
    fs, io,
    mem::{size_of, size_of_val},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    sync::mpsc,
    task::{JoinHandle, JoinSet},
};
use tracing::{debug, warn};

use super::{ConnectionId, ConnectionStats, SandboxEvent, wire};

/// The default capacity of the event channel.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The largest message read whole: a longer one (a `container/start` with a huge argv)
/// is counted as malformed and skipped; its header still counts the Sentry's drops.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How long a new connection has to send its handshake (runsc sends it at once).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The listening socket, not serving yet.
#[derive(Debug)]
pub struct Sink {
    listener: Socket,
    path: PathBuf,
    identity: FileIdentity,
}

impl Sink {
    /// Listen at `path`: a `SOCK_SEQPACKET` socket file of mode 0600. A stale socket
    /// file there (nothing listening) is replaced; a live one is `AddrInUse`, and any
    /// other file `AlreadyExists`. Must be called inside a Tokio runtime.
    pub fn bind(path: &Path) -> io::Result<Sink> {
        remove_stale_socket(path)?;
        let listener = Socket::listen(path)?;
        let identity = FileIdentity::of(path)?;
        Ok(Sink {
            listener,
            path: path.to_path_buf(),
            identity,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept sandboxes until the handle is dropped, delivering their events through a
    /// channel of `capacity` (at least 1) events.
    pub fn serve(self, capacity: usize) -> SinkHandle {
        let (tx, events) = mpsc::channel(capacity.max(1));
        let path = self.path.clone();
        let identity = self.identity;
        let task = tokio::spawn(accept_loop(self, tx));
        SinkHandle {
            events,
            task,
            path,
            identity,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.identity.remove(&self.path);
    }
}

/// A serving [`Sink`]: its events, and its lifetime (dropping it stops the accept loop
/// and every connection, and removes the socket file).
#[derive(Debug)]
pub struct SinkHandle {
    /// The events of every connection, in arrival order per connection.
    pub events: mpsc::Receiver<SandboxEvent>,
    task: JoinHandle<()>,
    path: PathBuf,
    identity: FileIdentity,
}

impl SinkHandle {
    /// The next event (`None` once the sink has stopped).
    pub async fn recv(&mut self) -> Option<SandboxEvent> {
        self.events.recv().await
    }

    /// Where the sink listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.task.abort();
        self.identity.remove(&self.path);
    }
}

/// A file's (device, inode): the socket file is removed only if it is still ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> io::Result<FileIdentity> {
        let meta = fs::symlink_metadata(path)?;
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn remove(&self, path: &Path) {
        if FileIdentity::of(path).is_ok_and(|now| now == *self) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Clear `path` for a new listener: nothing there, or a socket nobody listens on.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if someone_listens(path) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a sink already listens at {}", path.display()),
        ));
    }
    fs::remove_file(path)
}

/// Whether a seqpacket listener answers at `path`.
fn someone_listens(path: &Path) -> bool {
    let Ok(addr) = socket_address(path) else {
        return false;
    };
    let Ok(fd) = new_socket() else {
        return false;
    };
    // SAFETY: `addr` is a valid sockaddr_un of the given length; `fd` is open.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            socket_address_len(),
        )
    };
    // EAGAIN: its backlog is full, so it is alive.
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}

/// A nonblocking, close-on-exec `AF_UNIX` `SOCK_SEQPACKET` socket.
fn new_socket() -> io::Result<OwnedFd> {
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socket_address_len() -> libc::socklen_t {
    size_of::<libc::sockaddr_un>() as libc::socklen_t
}

/// `path` as a `sockaddr_un` (at most 107 bytes, no NUL inside).
fn socket_address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long or has a NUL", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(addr)
}

/// What one `recvmsg` got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packet {
    /// A whole message of this many bytes.
    Whole(usize),
    /// A message longer than the buffer, of which the buffer holds the start.
    Truncated,
    /// The peer closed the connection.
    End,
}

/// A nonblocking seqpacket socket registered with Tokio.
#[derive(Debug)]
struct Socket(AsyncFd<OwnedFd>);

impl Socket {
    fn listen(path: &Path) -> io::Result<Socket> {
        let addr = socket_address(path)?;
        let fd = new_socket()?;
        // SAFETY: `addr` is a valid sockaddr_un; `fd` is open.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                socket_address_len(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Before listen(2): until then nobody can connect, whatever the umask made.
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        // SAFETY: plain listen(2) on our socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
            let e = io::Error::last_os_error();
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Socket::register(fd)
    }

    /// Register a nonblocking socket with the runtime.
    fn register(fd: OwnedFd) -> io::Result<Socket> {
        // SAFETY: an OwnedFd is open, owned by the AsyncFd from here on, and always
        // returns the same descriptor.
        Ok(Socket(unsafe { AsyncFd::register(fd) }?))
    }

    async fn accept(&self) -> io::Result<OwnedFd> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|fd| accept_now(fd.as_raw_fd())) {
                return result;
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<Packet> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|fd| recv_now(fd.as_raw_fd(), buf)) {
                return result;
            }
        }
    }

    async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.0.writable().await?;
            if let Ok(result) = ready.try_io(|fd| send_now(fd.as_raw_fd(), bytes)) {
                return result;
            }
        }
    }
}

fn accept_now(fd: i32) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: accept4(2) without an address buffer.
    let conn = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
    if conn < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `conn` was just returned by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(conn) })
}

fn recv_now(fd: i32, buf: &mut [u8]) -> io::Result<Packet> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points at one iovec over `buf`, which outlives the call.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match usize::try_from(n) {
        Ok(0) | Err(_) => Packet::End,
        Ok(_) if msg.msg_flags & libc::MSG_TRUNC != 0 => Packet::Truncated,
        Ok(len) => Packet::Whole(len),
    })
}

fn send_now(fd: i32, bytes: &[u8]) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: `bytes` is valid for its length during the call.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(n) != Ok(bytes.len()) {
        return Err(io::Error::other("short send on a seqpacket socket"));
    }
    Ok(())
}

/// The pid of the process that connected, from `SO_PEERCRED`.
fn peer_pid(fd: &OwnedFd) -> Option<i32> {
    // SAFETY: ucred is plain old data; all zeroes is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of_val(&cred) as libc::socklen_t;
    // SAFETY: `cred` and `len` describe a buffer of the size SO_PEERCRED writes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

/// Accept connections until the receiver is dropped (or the task aborted), each served
/// by its own task.
async fn accept_loop(sink: Sink, tx: mpsc::Sender<SandboxEvent>) {
    let mut connections = JoinSet::new();
    let mut last_id = 0;
    loop {
        tokio::select! {
            accepted = sink.listener.accept() => match accepted {
                Ok(fd) => {
                    last_id += 1;
                    connections.spawn(serve_connection(ConnectionId(last_id), fd, tx.clone()));
                }
                Err(e) => {
                    warn!(socket = %sink.path.display(), "gVisor sink: accept: {e}");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = tx.closed() => return,
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("closed before the handshake")]
    NoHandshake,
    #[error("the handshake does not fit {MAX_MESSAGE} bytes")]
    HandshakeTooLong,
    #[error("the event receiver is gone")]
    ReceiverGone,
}

/// One sandbox's connection.
struct Connection {
    id: ConnectionId,
    socket: Socket,
    tx: mpsc::Sender<SandboxEvent>,
    stats: ConnectionStats,
    /// The Sentry's running drop count at its last message.
    last_dropped: u32,
    buf: Vec<u8>,
}

async fn serve_connection(id: ConnectionId, fd: OwnedFd, tx: mpsc::Sender<SandboxEvent>) {
    let peer = peer_pid(&fd);
    let socket = match Socket::register(fd) {
        Ok(socket) => socket,
        Err(e) => {
            warn!(connection = %id, "gVisor sink: register: {e}");
            return;
        }
    };
    let mut conn = Connection {
        id,
        socket,
        tx: tx.clone(),
        stats: ConnectionStats::default(),
        last_dropped: 0,
        buf: vec![0; MAX_MESSAGE],
    };
    let error = match conn.run(peer).await {
        Ok(()) => None,
        Err(ConnectionError::ReceiverGone) => return,
        Err(e) => {
            debug!(connection = %id, "gVisor sink: connection ends: {e}");
            Some(e.to_string())
        }
    };
    let closed = SandboxEvent::Closed {
        connection: id,
        stats: conn.stats,
        error,
    };
    let _ = tx.send(closed).await;
}

impl Connection {
    async fn run(&mut self, peer_pid: Option<i32>) -> Result<(), ConnectionError> {
        let version = self.handshake().await?;
        self.emit(SandboxEvent::Connected {
            connection: self.id,
            peer_pid,
            version,
        })
        .await?;
        loop {
            match self.socket.recv(&mut self.buf).await? {
                Packet::End => return Ok(()),
                Packet::Truncated => self.on_packet(MAX_MESSAGE, true).await?,
                Packet::Whole(len) => self.on_packet(len, false).await?,
            }
        }
    }

    /// Read the Sentry's handshake, answer with ours; the Sentry's version.
    async fn handshake(&mut self) -> Result<u32, ConnectionError> {
        let packet = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.socket.recv(&mut self.buf))
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)??;
        let len = match packet {
            Packet::End => return Err(ConnectionError::NoHandshake),
            Packet::Truncated => return Err(ConnectionError::HandshakeTooLong),
            Packet::Whole(len) => len,
        };
        let theirs = wire::decode_handshake(&self.buf[..len])?;
        self.socket.send(&wire::encode_handshake()).await?;
        Ok(theirs.version)
    }

    /// One message: its header's drop count, then its event, if any.
    async fn on_packet(&mut self, len: usize, truncated: bool) -> Result<(), ConnectionError> {
        self.stats.messages += 1;
        let packet = &self.buf[..len];
        let header = match wire::decode_header(packet) {
            Ok(header) => header,
            Err(e) => {
                self.malformed(&e);
                return Ok(());
            }
        };
        let decoded = if truncated {
            None
        } else {
            Some(
                wire::decode_frame(packet)
                    .and_then(|f| SandboxEvent::from_message(self.id, f.message)),
            )
        };
        self.account_drops(header.dropped_count).await?;
        match decoded {
            None => self.malformed(&"message longer than the receive buffer"),
            Some(Err(e)) => self.malformed(&e),
            Some(Ok(None)) => self.stats.skipped += 1,
            Some(Ok(Some(event))) => self.emit(event).await?,
        }
        Ok(())
    }

    /// Report the points the Sentry dropped since its previous message.
    async fn account_drops(&mut self, running_total: u32) -> Result<(), ConnectionError> {
        let new = running_total.wrapping_sub(self.last_dropped);
        self.last_dropped = running_total;
        if new == 0 {
            return Ok(());
        }
        self.stats.dropped += u64::from(new);
        self.emit(SandboxEvent::Dropped {
            connection: self.id,
            count: u64::from(new),
        })
        .await
    }

    fn malformed(&mut self, why: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        debug!(connection = %self.id, "gVisor sink: malformed message skipped: {why}");
    }

    async fn emit(&mut self, event: SandboxEvent) -> Result<(), ConnectionError> {
        self.tx
            .send(event)
            .await
            .map_err(|_| ConnectionError::ReceiverGone)?;
        self.stats.events += 1;
        Ok(())
    }
}
