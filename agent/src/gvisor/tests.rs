//! The wire decoding (on packets captured from Debian's runsc 20221219, hand-built
//! ones, and garbage), the session document, and the sink against a fake Sentry.

use std::{
    collections::BTreeSet,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, PermissionsExt as _},
    },
    path::Path,
    time::Duration,
};

use prost::Message as _;

use super::{
    ConnectionId, SandboxEvent, Session, Sink, SyscallExit,
    session::{self, CONTEXT_FIELDS, LAST_RAW_SYSNO},
    wire::{self, Header, Message, WireError, message_type},
};

const CONN: ConnectionId = ConnectionId(7);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Packets of `runsc run gold3` (Debian 20221219) whose entrypoint calls mkdir("/d",
/// 0755) three times, then exit_group(0), under the session of [`Session`].
mod captured {
    pub const HANDSHAKE: &str = "0801";
    pub const CONTAINER_START: &str = "08000100000000000a1508caf4c791dcfbb5f718100120013205676f6c64331205676f6c64331a012f22072f6d6b64697233";
    pub const MKDIR_ENTER: &str =
        "08000600000000000a1508a696a393dcfbb5f718100120013205676f6c64332053289f81800230ed03";
    pub const MKDIR_EXIT_OK: &str =
        "08000600000000000a1508e9cec893dcfbb5f718100120013205676f6c643312002053289f81800230ed03";
    pub const MKDIR_EXIT_EEXIST: &str = "08000600000000000a1508d2f0d093dcfbb5f718100120013205676f6c6433120210112053289f81800230ed03";
    pub const EXIT_GROUP_EXIT: &str =
        "08000600000000000a1508838fd893dcfbb5f718100120013205676f6c6433120020e70130ed03";
    pub const TASK_EXIT: &str = "08000500000000000a150880b7d893dcfbb5f718100120013205676f6c6433";
}

fn event_of(packet: &[u8]) -> SandboxEvent {
    let frame = wire::decode_frame(packet).expect("decodes");
    SandboxEvent::from_message(CONN, frame.message)
        .expect("converts")
        .expect("an event")
}

/// A packet: an 8-byte header of `message_type` and `dropped`, then `payload`.
fn packet(message_type: u16, dropped: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(8u16.to_le_bytes());
    p.extend(message_type.to_le_bytes());
    p.extend(dropped.to_le_bytes());
    p.extend(payload);
    p
}

/// `packet` with the header's running drop count set to `dropped`.
fn with_dropped(mut packet: Vec<u8>, dropped: u32) -> Vec<u8> {
    packet[4..8].copy_from_slice(&dropped.to_le_bytes());
    packet
}

fn context(container: &str, tid: i32) -> wire::ContextData {
    wire::ContextData {
        time_ns: 1_700_000_000_000_000_000,
        thread_id: tid,
        thread_group_id: tid,
        container_id: container.into(),
        process_name: String::new(),
    }
}

fn syscall_packet(sysno: u64, exit: Option<wire::Exit>, dropped: u32) -> Vec<u8> {
    let call = wire::Syscall {
        context_data: Some(context("c1", 3)),
        exit,
        sysno,
        arg1: 1,
        arg6: 6,
        ..Default::default()
    };
    packet(message_type::SYSCALL_RAW, dropped, &call.encode_to_vec())
}

#[test]
fn runsc_handshake_is_version_1_and_ours_matches_it() {
    let theirs = wire::decode_handshake(&hex(captured::HANDSHAKE)).unwrap();
    assert_eq!(theirs.version, 1);
    assert_eq!(wire::encode_handshake(), hex(captured::HANDSHAKE));
}

#[test]
fn handshake_of_version_0_or_garbage_is_refused() {
    assert!(matches!(
        wire::decode_handshake(&[]),
        Err(WireError::Version(0))
    ));
    assert!(matches!(
        wire::decode_handshake(&[0x08, 0xff]),
        Err(WireError::Handshake(_))
    ));
    // A newer Sentry is fine: it is its job to speak our version.
    assert_eq!(wire::decode_handshake(&[0x08, 9]).unwrap().version, 9);
}

#[test]
fn captured_header_is_8_bytes_little_endian() {
    let header = wire::decode_header(&hex(captured::MKDIR_ENTER)).unwrap();
    assert_eq!(
        header,
        Header {
            header_size: 8,
            message_type: message_type::SYSCALL_RAW,
            dropped_count: 0
        }
    );
}

#[test]
fn captured_container_start_names_the_runsc_container() {
    let SandboxEvent::ContainerStart {
        connection,
        container_id,
        args,
        cwd,
        tid,
        tgid,
        time_ns,
    } = event_of(&hex(captured::CONTAINER_START))
    else {
        panic!("not a start");
    };
    assert_eq!(connection, CONN);
    assert_eq!(container_id, "gold3");
    assert_eq!(args, ["/mkdir3"]);
    assert_eq!(cwd, "/");
    assert_eq!((tid, tgid), (1, 1));
    assert_eq!(time_ns, 1_796_610_648_813_206_090);
}

#[test]
fn captured_syscall_enter_has_arguments_and_no_exit() {
    let event = event_of(&hex(captured::MKDIR_ENTER));
    let SandboxEvent::Syscall {
        container_id,
        sysno,
        args,
        exit,
        tid,
        tgid,
        ..
    } = event
    else {
        panic!("not a syscall");
    };
    assert_eq!(container_id, "gold3");
    assert_eq!(sysno, 83, "mkdir");
    assert_eq!(args, [0x40_009f, 0o755, 0, 0, 0, 0]);
    assert_eq!(exit, None);
    assert_eq!((tid, tgid), (1, 1));
}

fn exit_of(event: SandboxEvent) -> (u64, Option<SyscallExit>) {
    match event {
        SandboxEvent::Syscall { sysno, exit, .. } => (sysno, exit),
        other => panic!("not a syscall: {other:?}"),
    }
}

#[test]
fn captured_exits_carry_result_and_errno() {
    // Success: an empty `Exit` message, present all the same.
    assert_eq!(
        exit_of(event_of(&hex(captured::MKDIR_EXIT_OK))),
        (
            83,
            Some(SyscallExit {
                result: 0,
                errno: 0
            })
        )
    );
    // Failure: errno positive, result 0.
    assert_eq!(
        exit_of(event_of(&hex(captured::MKDIR_EXIT_EEXIST))),
        (
            83,
            Some(SyscallExit {
                result: 0,
                errno: libc::EEXIST
            })
        )
    );
    // exit_group's exit point fires too.
    assert_eq!(exit_of(event_of(&hex(captured::EXIT_GROUP_EXIT))).0, 231);
}

#[test]
fn captured_task_exit_has_status_0() {
    let SandboxEvent::TaskExit {
        container_id,
        exit_status,
        tid,
        ..
    } = event_of(&hex(captured::TASK_EXIT))
    else {
        panic!("not a task exit");
    };
    assert_eq!((container_id.as_str(), exit_status, tid), ("gold3", 0, 1));
}

#[test]
fn a_seccomp_kill_shows_as_status_31() {
    let exit = wire::TaskExit {
        context_data: Some(context("k1", 1)),
        exit_status: 31,
    };
    let event = event_of(&packet(
        message_type::SENTRY_TASK_EXIT,
        0,
        &exit.encode_to_vec(),
    ));
    assert!(matches!(
        event,
        SandboxEvent::TaskExit {
            exit_status: 31,
            ..
        }
    ));
}

#[test]
fn hand_built_syscall_round_trips() {
    let exit = wire::Exit {
        result: -1,
        errorno: 0,
    };
    let event = event_of(&syscall_packet(110, Some(exit), 0));
    assert_eq!(
        event,
        SandboxEvent::Syscall {
            connection: CONN,
            container_id: "c1".into(),
            sysno: 110,
            args: [1, 0, 0, 0, 0, 6],
            exit: Some(SyscallExit {
                result: -1,
                errno: 0
            }),
            tid: 3,
            tgid: 3,
            time_ns: 1_700_000_000_000_000_000,
        }
    );
}

#[test]
fn missing_context_is_empty_not_an_error() {
    let call = wire::Syscall {
        sysno: 39,
        ..Default::default()
    };
    let event = event_of(&packet(message_type::SYSCALL_RAW, 0, &call.encode_to_vec()));
    let SandboxEvent::Syscall {
        container_id, tid, ..
    } = event
    else {
        panic!("not a syscall");
    };
    assert_eq!((container_id.as_str(), tid), ("", 0));
}

#[test]
fn container_start_falls_back_to_the_context_id() {
    let start = wire::ContainerStart {
        context_data: Some(context("from-context", 1)),
        ..Default::default()
    };
    let event = event_of(&packet(
        message_type::CONTAINER_START,
        0,
        &start.encode_to_vec(),
    ));
    assert!(matches!(
        event,
        SandboxEvent::ContainerStart { container_id, .. } if container_id == "from-context"
    ));
}

#[test]
fn unknown_and_undecoded_types_are_skipped() {
    for t in [
        message_type::SENTRY_CLONE,
        message_type::SENTRY_EXEC,
        message_type::SENTRY_EXIT_NOTIFY_PARENT,
        34,
        0,
        u16::MAX,
    ] {
        // Even with a payload that is not protobuf at all.
        let frame = wire::decode_frame(&packet(t, 0, &[0xff, 0xff, 0xff])).unwrap();
        assert_eq!(frame.message, Message::Skipped { message_type: t });
        assert_eq!(
            SandboxEvent::from_message(CONN, frame.message).unwrap(),
            None
        );
    }
}

#[test]
fn a_longer_header_is_skipped_by_its_size() {
    let call = wire::Syscall {
        sysno: 1,
        ..Default::default()
    };
    let mut p = Vec::new();
    p.extend(12u16.to_le_bytes());
    p.extend(message_type::SYSCALL_RAW.to_le_bytes());
    p.extend(5u32.to_le_bytes());
    p.extend([0xde, 0xad, 0xbe, 0xef]); // a future header field
    p.extend(call.encode_to_vec());
    let frame = wire::decode_frame(&p).unwrap();
    assert_eq!(frame.header.dropped_count, 5);
    assert!(matches!(frame.message, Message::Syscall(s) if s.sysno == 1));
}

#[test]
fn malformed_packets_are_typed_errors() {
    assert!(matches!(
        wire::decode_frame(&[8, 0, 6, 0]),
        Err(WireError::Short { len: 4 })
    ));
    let mut small = packet(message_type::SYSCALL_RAW, 0, &[]);
    small[0] = 4;
    assert!(matches!(
        wire::decode_frame(&small),
        Err(WireError::HeaderSize { declared: 4, .. })
    ));
    let mut past = packet(message_type::SYSCALL_RAW, 0, &[]);
    past[0] = 9;
    assert!(matches!(
        wire::decode_frame(&past),
        Err(WireError::HeaderSize {
            declared: 9,
            len: 8
        })
    ));
    // A varint that never ends.
    assert!(matches!(
        wire::decode_frame(&packet(message_type::SYSCALL_RAW, 0, &[0x20, 0xff])),
        Err(WireError::Payload {
            message_type: 6,
            ..
        })
    ));
    // A container id that is not UTF-8 (context_data { container_id: 0xff }).
    assert!(matches!(
        wire::decode_frame(&packet(
            message_type::SYSCALL_RAW,
            0,
            &[0x0a, 0x03, 0x32, 0x01, 0xff]
        )),
        Err(WireError::Payload { .. })
    ));
}

#[test]
fn an_errno_beyond_i32_is_out_of_range() {
    let exit = wire::Exit {
        result: 0,
        errorno: i64::from(i32::MAX) + 1,
    };
    let frame = wire::decode_frame(&syscall_packet(2, Some(exit), 0)).unwrap();
    assert!(matches!(
        SandboxEvent::from_message(CONN, frame.message),
        Err(WireError::OutOfRange {
            field: "errorno",
            ..
        })
    ));
}

/// Garbage, and mutations of real packets, never panic.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let real: Vec<Vec<u8>> = [
        captured::CONTAINER_START,
        captured::MKDIR_EXIT_EEXIST,
        captured::TASK_EXIT,
    ]
    .iter()
    .map(|h| hex(h))
    .collect();
    for round in 0..20_000 {
        let mut p = if round % 2 == 0 {
            real[round % real.len()].clone()
        } else {
            (0..next() % 64).map(|_| next() as u8).collect()
        };
        if !p.is_empty() {
            for _ in 0..=next() % 4 {
                let i = (next() as usize) % p.len();
                p[i] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
        }
        if let Ok(frame) = wire::decode_frame(&p) {
            let _ = SandboxEvent::from_message(CONN, frame.message);
        }
        let _ = wire::decode_handshake(&p);
    }
}

#[test]
fn session_traces_0_to_441_enter_and_exit_and_the_lifecycle() {
    assert_eq!(session::raw_syscall_numbers(), 0..=LAST_RAW_SYSNO);
    let names = session::point_names();
    assert_eq!(names.len(), 2 + 2 * 442);
    assert_eq!(names[..2], ["container/start", "sentry/task_exit"]);
    assert_eq!(names[2], "syscall/sysno/0/enter");
    assert_eq!(names[3], "syscall/sysno/0/exit");
    assert_eq!(names.last().unwrap(), "syscall/sysno/441/exit");
    assert!(!names.iter().any(|n| n.starts_with("syscall/sysno/442/")));
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}

#[test]
fn pod_init_config_names_the_sink_and_the_context_fields() {
    let doc = Session::new(Path::new("/run/sysfence/gvisor.sock")).pod_init_config();
    let session = &doc["trace_session"];
    assert_eq!(session["name"], "Default");
    let points = session["points"].as_array().unwrap();
    assert_eq!(points.len(), session::point_names().len());
    for p in points {
        assert_eq!(
            p["context_fields"],
            serde_json::json!(CONTEXT_FIELDS),
            "{p}"
        );
        assert!(p.get("optional_fields").is_none());
    }
    assert_eq!(
        session["sinks"],
        serde_json::json!([{
            "name": "remote",
            "config": { "endpoint": "/run/sysfence/gvisor.sock" },
            "ignore_setup_error": false,
        }])
    );
    let lenient = Session::new(Path::new("/s"))
        .ignore_setup_error(true)
        .retries(3)
        .trace_session();
    assert_eq!(lenient["sinks"][0]["ignore_setup_error"], true);
    assert_eq!(lenient["sinks"][0]["config"]["retries"], 3);
    assert!(lenient.get("trace_session").is_none());
}

#[test]
fn pod_init_config_file_is_0600_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod-init.json");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let s = Session::new(Path::new("/s.sock"));
    s.write_pod_init_config(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let back: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, s.pod_init_config());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary left"
    );
}

#[test]
fn missing_points_are_found_from_runsc_metadata() {
    let metadata = "POINTS (3)\n\
        Name: container/start, optional fields: [env], context fields: [time|thread_id]\n\
        Name: syscall/sysno/0/enter, optional fields: [], context fields: [time]\n\
        Name: syscall/sysno/0/exit, optional fields: [], context fields: [time]\n\
        \nSINKS (2)\nName: null\nName: remote\n";
    let supported = session::supported_points(metadata);
    assert_eq!(supported.len(), 3, "{supported:?}");
    let doc = serde_json::json!({ "trace_session": { "points": [
        { "name": "container/start" },
        { "name": "syscall/sysno/0/exit" },
        { "name": "syscall/sysno/442/enter" },
    ]}});
    assert_eq!(
        session::missing_points(&doc, &supported),
        ["syscall/sysno/442/enter"]
    );
    assert!(session::missing_points(&doc["trace_session"], &supported).len() == 1);
}

// The sink, against a fake Sentry.

/// A connected, blocking seqpacket client of the sink at `path`.
fn fake_sentry(path: &Path) -> OwnedFd {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr
        .sun_path
        .iter_mut()
        .zip(path.as_os_str().as_encoded_bytes())
    {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: valid address of that length.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    fd
}

fn send(fd: &OwnedFd, bytes: &[u8], flags: i32) -> isize {
    // SAFETY: `bytes` is valid for its length.
    unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), flags) }
}

fn recv(fd: &OwnedFd) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    buf[..usize::try_from(n).unwrap()].to_vec()
}

/// Connect and handshake as runsc does, from a blocking thread.
async fn connect_as_runsc(path: &Path) -> OwnedFd {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let fd = fake_sentry(&path);
        assert_eq!(send(&fd, &[0x08, 0x01], 0), 2);
        assert_eq!(recv(&fd), [0x08, 0x01], "our handshake");
        fd
    })
    .await
    .unwrap()
}

async fn next(handle: &mut super::SinkHandle) -> SandboxEvent {
    tokio::time::timeout(Duration::from_secs(10), handle.recv())
        .await
        .expect("an event in time")
        .expect("the sink runs")
}

#[tokio::test]
async fn sink_socket_is_0600_and_replaces_only_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let sink = Sink::bind(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Live: refused.
    let err = Sink::bind(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // Stale (the file of a listener that is gone): replaced.
    let stale = std::os::unix::net::UnixDatagram::bind(dir.path().join("stale.sock")).unwrap();
    drop(stale);
    let again = Sink::bind(&dir.path().join("stale.sock")).unwrap();
    drop(again);
    assert!(!dir.path().join("stale.sock").exists(), "removed on drop");
    // Not a socket: left alone.
    fs::write(dir.path().join("file"), "keep").unwrap();
    let err = Sink::bind(&dir.path().join("file")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read_to_string(dir.path().join("file")).unwrap(), "keep");
    let handle = sink.serve(4);
    drop(handle);
    assert!(!path.exists(), "removed when the handle goes");
}

#[tokio::test]
async fn sink_decodes_a_sandbox_stream_and_counts_what_it_skips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let mut handle = Sink::bind(&path).unwrap().serve(64);
    let fd = connect_as_runsc(&path).await;
    let connection = match next(&mut handle).await {
        SandboxEvent::Connected {
            connection,
            peer_pid,
            version,
        } => {
            assert_eq!(peer_pid, Some(std::process::id() as i32));
            assert_eq!(version, 1);
            connection
        }
        other => panic!("{other:?}"),
    };
    let stream = [
        hex(captured::CONTAINER_START),
        hex(captured::MKDIR_ENTER),
        packet(99, 0, b"from the future"),
        vec![1, 2, 3],
        syscall_packet(110, None, 3),
        packet(message_type::SYSCALL_RAW, 3, &[0x20, 0xff]),
        syscall_packet(110, None, 5),
        with_dropped(hex(captured::TASK_EXIT), 5),
    ];
    for p in &stream {
        assert_eq!(send(&fd, p, 0), p.len() as isize);
    }
    drop(fd);
    let mut events = Vec::new();
    loop {
        let e = next(&mut handle).await;
        assert_eq!(e.connection(), connection);
        let closed = matches!(e, SandboxEvent::Closed { .. });
        events.push(e);
        if closed {
            break;
        }
    }
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            SandboxEvent::ContainerStart { .. } => "start".into(),
            SandboxEvent::Syscall { sysno, .. } => format!("syscall {sysno}"),
            SandboxEvent::Dropped { count, .. } => format!("dropped {count}"),
            SandboxEvent::TaskExit { .. } => "task exit".into(),
            SandboxEvent::Closed { .. } => "closed".into(),
            SandboxEvent::Connected { .. } => "connected".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "start",
            "syscall 83",
            "dropped 3",
            "syscall 110",
            "dropped 2",
            "syscall 110",
            "task exit",
            "closed"
        ]
    );
    let SandboxEvent::Closed { stats, error, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(*error, None);
    assert_eq!(stats.messages, 8);
    assert_eq!(stats.skipped, 1);
    assert_eq!(stats.malformed, 2);
    assert_eq!(stats.dropped, 5);
    assert_eq!(stats.events, 1 + 7, "Connected and the seven before Closed");
}

#[tokio::test]
async fn sink_refuses_a_bad_handshake_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let mut handle = Sink::bind(&path).unwrap().serve(8);
    let p = path.clone();
    let bad = tokio::task::spawn_blocking(move || {
        let fd = fake_sentry(&p);
        send(&fd, &[0x08, 0x00], 0);
        fd
    })
    .await
    .unwrap();
    let SandboxEvent::Closed { error, stats, .. } = next(&mut handle).await else {
        panic!("closed first");
    };
    assert!(error.unwrap().contains("version 0"));
    assert_eq!(stats.messages, 0);
    drop(bad);
    let _good = connect_as_runsc(&path).await;
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Connected { .. }
    ));
}

#[tokio::test]
async fn a_message_longer_than_the_buffer_is_skipped_but_its_drops_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let mut handle = Sink::bind(&path).unwrap().serve(8);
    let fd = connect_as_runsc(&path).await;
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Connected { .. }
    ));
    let huge = packet(
        message_type::CONTAINER_START,
        4,
        &vec![0u8; super::sink::MAX_MESSAGE + 1],
    );
    let fd = tokio::task::spawn_blocking(move || {
        // Raise the send buffer so that one packet of that size fits.
        let size: libc::c_int = 1 << 20;
        // SAFETY: an int option of its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const size).cast(),
                std::mem::size_of_val(&size) as libc::socklen_t,
            )
        };
        assert_eq!(
            send(&fd, &huge, 0),
            huge.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
        assert!(send(&fd, &syscall_packet(1, None, 4), 0) > 0);
        fd
    })
    .await
    .unwrap();
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Dropped { count: 4, .. }
    ));
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Syscall { sysno: 1, .. }
    ));
    drop(fd);
    let SandboxEvent::Closed { stats, .. } = next(&mut handle).await else {
        panic!("closed");
    };
    assert_eq!((stats.messages, stats.malformed), (2, 1));
}

/// A consumer that does not keep up makes the sink stop reading: the sandbox's socket
/// fills (its writes would block: the real Sentry then drops and counts), the sink's
/// memory does not grow; nothing is lost between the socket and the channel.
#[tokio::test]
async fn a_slow_consumer_pushes_back_on_the_sandbox_not_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let mut handle = Sink::bind(&path).unwrap().serve(4);
    let fd = connect_as_runsc(&path).await;
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Connected { .. }
    ));
    let (fd, written) = tokio::task::spawn_blocking(move || {
        let p = syscall_packet(39, None, 0);
        let mut written = 0u64;
        let mut would_block = 0;
        // Until the socket stays full for a while (the sink may still be draining).
        while would_block < 50 {
            if send(&fd, &p, libc::MSG_DONTWAIT) > 0 {
                written += 1;
                would_block = 0;
            } else {
                would_block += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            assert!(written < 1_000_000, "the sink never pushed back");
        }
        (fd, written)
    })
    .await
    .unwrap();
    assert!(written > 4, "{written}");
    drop(fd);
    let mut syscalls = 0;
    loop {
        match next(&mut handle).await {
            SandboxEvent::Syscall { .. } => syscalls += 1,
            SandboxEvent::Closed { stats, .. } => {
                assert_eq!(stats.dropped, 0);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(syscalls, written);
}

/// The header's drop count is a running total that wraps at `u32::MAX`: each `Dropped`
/// is the difference from the previous message's.
#[tokio::test]
async fn the_running_drop_count_is_reported_as_differences_across_the_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let mut handle = Sink::bind(&path).unwrap().serve(8);
    let fd = connect_as_runsc(&path).await;
    assert!(matches!(
        next(&mut handle).await,
        SandboxEvent::Connected { .. }
    ));
    for total in [u32::MAX - 1, u32::MAX - 1, 2] {
        let p = syscall_packet(0, None, total);
        assert_eq!(send(&fd, &p, 0), p.len() as isize);
    }
    drop(fd);
    let mut drops = Vec::new();
    loop {
        match next(&mut handle).await {
            SandboxEvent::Dropped { count, .. } => drops.push(count),
            SandboxEvent::Closed { stats, .. } => {
                assert_eq!(stats.dropped, u64::from(u32::MAX - 1) + 4);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(drops, [u64::from(u32::MAX - 1), 4]);
}
