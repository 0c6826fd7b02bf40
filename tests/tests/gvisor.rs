//! gVisor's trace sessions into sysfence's sink (`sysfence::gvisor`), with Debian's real
//! runsc: a sandbox whose entrypoint makes known syscalls a known number of times, and
//! the events that come out of the sink. Root; host only (the QEMU VM of
//! `cargo xtask vm-test` carries no runsc).

mod host_only {
    use std::{
        collections::BTreeMap,
        fs,
        os::unix::fs::PermissionsExt as _,
        path::{Path, PathBuf},
        process::{Output, Stdio},
        time::{Duration, Instant},
    };

    use serde_json::{Value, json};
    use sysfence::gvisor::{
        SandboxEvent, Session, Sink, SyscallExit,
        session::{missing_points, query_supported_points},
        sink::DEFAULT_CAPACITY,
    };
    use sysfence_tests::{oci::*, skip};

    const MKDIR: u32 = 83;
    const GETPPID: u32 = 110;
    const EXIT_GROUP: u32 = 231;
    /// How many times the entrypoint makes its syscall.
    const TIMES: u32 = 3;
    const SIGSYS: i32 = 31;

    /// A temporary directory with runsc's state root, the sink's socket, the session
    /// file, the bundle; the sandboxes are deleted (`runsc delete --force`) on drop, on
    /// failure too, before the directory goes.
    struct Scene {
        containers: Containers,
        dir: tempfile::TempDir,
    }

    impl Scene {
        fn new(test: &str) -> Option<Scene> {
            // SAFETY: plain libc call.
            if unsafe { libc::geteuid() } != 0 {
                skip(test, "runsc needs root");
                return None;
            }
            let bins = require(test, &["runsc"], false)?;
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("runsc-root");
            fs::create_dir(&root).unwrap();
            Some(Scene {
                containers: Containers::new(&bins[0], &root),
                dir,
            })
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        fn runsc(&self) -> &Path {
            &self.containers.runtime
        }

        /// A bundle (its own directory, `name`) whose entrypoint `/entry` is `program`,
        /// root writable, no cgroup, and `seccomp` as `linux.seccomp` if given.
        fn bundle(&self, name: &str, program: &[u8], seccomp: Option<Value>) -> PathBuf {
            let bundle = self.path(name);
            fs::create_dir(&bundle).unwrap();
            let rootfs = busybox_rootfs(&bundle, &[]);
            let entry = rootfs.join("entry");
            fs::write(&entry, program).unwrap();
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o755)).unwrap();
            write_bundle_config(&bundle, self.runsc(), &["/entry"], "");
            let file = bundle.join("config.json");
            let mut config: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
            config["linux"]
                .as_object_mut()
                .unwrap()
                .remove("cgroupsPath");
            config["root"]["readonly"] = json!(false);
            if let Some(seccomp) = seccomp {
                config["linux"]["seccomp"] = seccomp;
            }
            fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            bundle
        }

        /// `runsc --root R --network=none [FLAGS] run --bundle B ID`, to its end.
        fn run(&mut self, flags: &[&str], bundle: &Path, id: &str) -> Output {
            self.containers.track(id);
            self.containers
                .cmd(&["--network=none"])
                .args(flags)
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(id)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    }

    /// Run a sandbox under a session into a fresh sink; every event of its connection
    /// (up to its `Closed`), and runsc's output. `session` edits the session file.
    fn traced_run(
        scene: &mut Scene,
        flags: &[&str],
        bundle: &Path,
        id: &str,
        session: impl FnOnce(&mut Value),
    ) -> (Vec<SandboxEvent>, Output) {
        let socket = scene.path(&format!("{id}.sock"));
        let config = scene.path(&format!("{id}.json"));
        let mut doc = Session::new(&socket).pod_init_config();
        session(&mut doc);
        fs::write(&config, serde_json::to_vec(&doc).unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut sink = Sink::bind(&socket).unwrap().serve(DEFAULT_CAPACITY);
            let mut all_flags = vec![
                "--pod-init-config".to_string(),
                config.display().to_string(),
            ];
            all_flags.extend(flags.iter().map(|f| f.to_string()));
            let flags: Vec<&str> = all_flags.iter().map(String::as_str).collect();
            let output = tokio::task::block_in_place(|| scene.run(&flags, bundle, id));
            // A runsc that failed may not have connected at all.
            let patience = if output.status.success() { 60 } else { 5 };
            let events = until_closed(&mut sink, Duration::from_secs(patience)).await;
            (events, output)
        })
    }

    /// The events of the first connection, up to its `Closed`; none if nothing comes
    /// within `patience`.
    async fn until_closed(
        sink: &mut sysfence::gvisor::SinkHandle,
        patience: Duration,
    ) -> Vec<SandboxEvent> {
        let mut events = Vec::new();
        let Ok(first) = tokio::time::timeout(patience, sink.recv()).await else {
            return events;
        };
        events.push(first.expect("the sink runs"));
        if matches!(events[0], SandboxEvent::Closed { .. }) {
            return events;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, sink.recv())
                .await
                .unwrap_or_else(|_| panic!("no Closed within 60 s; so far: {events:?}"))
                .expect("the sink runs");
            let closed = matches!(event, SandboxEvent::Closed { .. });
            events.push(event);
            if closed {
                return events;
            }
        }
    }

    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Enter points per syscall number.
    fn enters(events: &[SandboxEvent]) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for e in events {
            if let SandboxEvent::Syscall {
                sysno, exit: None, ..
            } = e
            {
                *counts.entry(*sysno).or_default() += 1;
            }
        }
        counts
    }

    fn exits_of(events: &[SandboxEvent], nr: u32) -> Vec<SyscallExit> {
        events
            .iter()
            .filter_map(|e| match e {
                SandboxEvent::Syscall {
                    sysno,
                    exit: Some(exit),
                    ..
                } if *sysno == u64::from(nr) => Some(*exit),
                _ => None,
            })
            .collect()
    }

    fn task_exit_statuses(events: &[SandboxEvent]) -> Vec<i32> {
        events
            .iter()
            .filter_map(|e| match e {
                SandboxEvent::TaskExit { exit_status, .. } => Some(*exit_status),
                _ => None,
            })
            .collect()
    }

    fn closed_cleanly(events: &[SandboxEvent]) {
        let Some(SandboxEvent::Closed { stats, error, .. }) = events.last() else {
            panic!("no Closed: {events:?}");
        };
        assert_eq!(*error, None, "{events:?}");
        assert_eq!(stats.malformed, 0, "{stats:?}");
        assert_eq!(stats.dropped, 0, "the Sentry dropped points: {stats:?}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, SandboxEvent::Dropped { .. })),
            "{events:?}"
        );
    }

    /// Every point of the session is one this runsc knows: else it would run the
    /// container untraced (see `unknown_point_disables_the_whole_session`).
    #[test]
    fn runsc_knows_every_point_of_the_session() {
        let name = "runsc_knows_every_point_of_the_session";
        let Some(scene) = Scene::new(name) else {
            return;
        };
        let supported = query_supported_points(scene.runsc()).unwrap();
        let session = Session::new(Path::new("/unused.sock")).pod_init_config();
        assert_eq!(missing_points(&session, &supported), Vec::<String>::new());
    }

    /// The container's syscalls, each enter and exit, exactly as many as it made,
    /// attributed to the runsc container id, after `container/start`, with results.
    #[test]
    fn sink_sees_exactly_the_syscalls_of_the_container() {
        let name = "sink_sees_exactly_the_syscalls_of_the_container";
        let Some(mut scene) = Scene::new(name) else {
            return;
        };
        let id = format!("sf-gvisor-{}", std::process::id());
        let program = repeat_syscalls_elf(&[(MKDIR, TIMES)]);
        let bundle = scene.bundle("bundle", &program, None);
        let (events, out) = traced_run(&mut scene, &[], &bundle, &id, |_| {});
        assert!(out.status.success(), "runsc run: {}", stderr(&out));
        closed_cleanly(&events);
        assert!(
            matches!(events[0], SandboxEvent::Connected { version, .. } if version >= 1),
            "{events:?}"
        );
        for e in &events {
            if let SandboxEvent::Syscall { container_id, .. }
            | SandboxEvent::ContainerStart { container_id, .. }
            | SandboxEvent::TaskExit { container_id, .. } = e
            {
                assert_eq!(*container_id, id, "{e:?}");
            }
        }
        let start = events
            .iter()
            .position(|e| matches!(e, SandboxEvent::ContainerStart { .. }))
            .expect("container/start");
        let first_call = events
            .iter()
            .position(|e| matches!(e, SandboxEvent::Syscall { .. }))
            .expect("syscalls");
        assert!(
            start < first_call,
            "container/start comes first: {events:?}"
        );
        assert_eq!(
            enters(&events),
            BTreeMap::from([
                (u64::from(MKDIR), TIMES as usize),
                (u64::from(EXIT_GROUP), 1)
            ]),
            "the entrypoint's syscalls and nothing else"
        );
        // Results: created, then EEXIST; the errno is positive, the result 0.
        let eexist = SyscallExit {
            result: 0,
            errno: libc::EEXIST,
        };
        let ok = SyscallExit {
            result: 0,
            errno: 0,
        };
        assert_eq!(exits_of(&events, MKDIR), [ok, eexist, eexist]);
        assert_eq!(exits_of(&events, EXIT_GROUP).len(), 1);
        for e in &events {
            if let SandboxEvent::Syscall {
                sysno,
                args,
                tid,
                tgid,
                time_ns,
                ..
            } = e
            {
                assert_eq!((*tid, *tgid), (1, 1), "the container's init");
                assert!(*time_ns > 0);
                if *sysno == u64::from(MKDIR) {
                    assert_eq!(args[1], 0o755, "mode");
                }
            }
        }
        assert_eq!(task_exit_statuses(&events), [0]);
    }

    /// `runsc --oci-seccomp` with `SCMP_ACT_ERRNO` on mkdir: the refused calls fire no
    /// point at all, enter or exit; the calls around them do.
    #[test]
    fn syscalls_refused_by_oci_seccomp_errno_are_not_traced() {
        let name = "syscalls_refused_by_oci_seccomp_errno_are_not_traced";
        let Some(mut scene) = Scene::new(name) else {
            return;
        };
        let id = format!("sf-gvisor-errno-{}", std::process::id());
        let program = repeat_syscalls_elf(&[(GETPPID, 2), (MKDIR, TIMES), (GETPPID, 1)]);
        let seccomp = deny_mkdir("SCMP_ACT_ERRNO");
        let bundle = scene.bundle("bundle", &program, Some(seccomp));
        let (events, out) = traced_run(&mut scene, &["--oci-seccomp"], &bundle, &id, |_| {});
        assert!(out.status.success(), "runsc run: {}", stderr(&out));
        closed_cleanly(&events);
        assert_eq!(
            enters(&events),
            BTreeMap::from([(u64::from(GETPPID), 3), (u64::from(EXIT_GROUP), 1)]),
            "mkdir, refused by seccomp, is invisible"
        );
        assert!(exits_of(&events, MKDIR).is_empty());
        assert!(!bundle.join("rootfs/d").exists(), "mkdir was refused");
        assert_eq!(task_exit_statuses(&events), [0]);
    }

    /// `SCMP_ACT_KILL` on mkdir: the task dies of SIGSYS; the trace shows the calls
    /// before it and the exit status 31, not the mkdir. (`SCMP_ACT_KILL_PROCESS`, which
    /// runsc 20221219 refuses outright, is checked to either do the same or stop the
    /// container from starting, with nothing traced.)
    #[test]
    fn a_seccomp_kill_shows_only_as_exit_status_sigsys() {
        let name = "a_seccomp_kill_shows_only_as_exit_status_sigsys";
        let Some(mut scene) = Scene::new(name) else {
            return;
        };
        let program = repeat_syscalls_elf(&[(GETPPID, 2), (MKDIR, TIMES)]);
        for (i, action) in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"]
            .iter()
            .enumerate()
        {
            let action = *action;
            let id = format!("sf-gvisor-kill{i}-{}", std::process::id());
            let bundle = scene.bundle(&id, &program, Some(deny_mkdir(action)));
            let (events, out) = traced_run(&mut scene, &["--oci-seccomp"], &bundle, &id, |_| {});
            let refused = stderr(&out).contains("invalid action");
            if action == "SCMP_ACT_KILL_PROCESS" && refused {
                assert!(!out.status.success());
                assert_no_points(&events);
                continue;
            }
            assert_eq!(
                out.status.code(),
                Some(128 + SIGSYS),
                "{action}: {}",
                stderr(&out)
            );
            assert_eq!(
                enters(&events),
                BTreeMap::from([(u64::from(GETPPID), 2)]),
                "{action}: no mkdir point"
            );
            assert_eq!(task_exit_statuses(&events), [SIGSYS], "{action}");
        }
    }

    /// A session naming a point runsc does not know is not refused by runsc 20221219:
    /// the container runs, untraced, and the sink sees a connection with nothing in it.
    /// (Either that or a refusal to start is accepted: never a partial trace.)
    #[test]
    fn unknown_point_disables_the_whole_session() {
        let name = "unknown_point_disables_the_whole_session";
        let Some(mut scene) = Scene::new(name) else {
            return;
        };
        let id = format!("sf-gvisor-unknown-{}", std::process::id());
        let program = repeat_syscalls_elf(&[(GETPPID, 1)]);
        let bundle = scene.bundle("bundle", &program, None);
        let (events, out) = traced_run(&mut scene, &[], &bundle, &id, |doc| {
            let points = doc["trace_session"]["points"].as_array_mut().unwrap();
            points.push(json!({ "name": "syscall/sysno/100000/enter" }));
        });
        assert_no_points(&events);
        if out.status.success() {
            eprintln!("{name}: runsc ran the container untraced");
        }
    }

    /// What a flood does: how many points of a `getppid` loop were delivered, and how
    /// many the Sentry said it dropped, when the consumer stalls for `stall` at the
    /// start, with a channel of 16 events.
    struct Flood {
        delivered: u64,
        dropped: u64,
        dropped_events: u64,
        /// The last point (`sentry/task_exit`) was delivered: every drop before it was
        /// reported (the header's count is a running total).
        complete: bool,
        stats_dropped: u64,
    }

    /// Points of a run of `repeat_syscalls_elf(&[(GETPPID, n)])`: `container/start`,
    /// enter and exit of each call and of `exit_group`, `sentry/task_exit`.
    fn flood_points(n: u32) -> u64 {
        1 + 2 * u64::from(n) + 2 + 1
    }

    fn flood(scene: &mut Scene, id: &str, n: u32, stall: Duration, session: Session) -> Flood {
        let program = repeat_syscalls_elf(&[(GETPPID, n)]);
        let bundle = scene.bundle(id, &program, None);
        let config = scene.path(&format!("{id}.json"));
        session.write_pod_init_config(&config).unwrap();
        let flags = [
            "--pod-init-config".to_string(),
            config.display().to_string(),
        ];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut sink = Sink::bind(session.endpoint()).unwrap().serve(16);
            let run = {
                let mut cmd = scene.containers.cmd(&["--network=none"]);
                cmd.args(&flags)
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(id);
                scene.containers.track(id);
                tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
            };
            tokio::time::sleep(stall).await;
            let events = until_closed(&mut sink, Duration::from_secs(120)).await;
            let out = run.await.unwrap();
            assert!(out.status.success(), "runsc run: {}", stderr(&out));
            tally(&events)
        })
    }

    fn tally(events: &[SandboxEvent]) -> Flood {
        let mut flood = Flood {
            delivered: 0,
            dropped: 0,
            dropped_events: 0,
            complete: false,
            stats_dropped: 0,
        };
        for e in events {
            match e {
                SandboxEvent::Syscall { .. } | SandboxEvent::ContainerStart { .. } => {
                    flood.delivered += 1
                }
                SandboxEvent::TaskExit { .. } => {
                    flood.delivered += 1;
                    flood.complete = true;
                }
                SandboxEvent::Dropped { count, .. } => {
                    flood.dropped += count;
                    flood.dropped_events += 1;
                }
                SandboxEvent::Closed { stats, error, .. } => {
                    assert_eq!(*error, None);
                    flood.stats_dropped = stats.dropped;
                }
                SandboxEvent::Connected { .. } => {}
            }
        }
        flood
    }

    /// A consumer that stalls while the sandbox floods: the sink stops reading, the
    /// Sentry drops points, and every point is either delivered or counted in a
    /// `Dropped` (exactly, once the last point got through). With `retries`, the
    /// Sentry waits instead, and nothing is lost.
    #[test]
    fn a_stalled_consumer_loses_points_only_counted() {
        let name = "a_stalled_consumer_loses_points_only_counted";
        let Some(mut scene) = Scene::new(name) else {
            return;
        };
        let n = 30_000;
        let stall = Duration::from_secs(1);
        let pid = std::process::id();
        let socket = scene.path("flood.sock");
        let lossy = flood(
            &mut scene,
            &format!("sf-flood-{pid}"),
            n,
            stall,
            Session::new(&socket),
        );
        eprintln!(
            "{name}: {} points delivered, {} dropped in {} Dropped events, last delivered: {}",
            lossy.delivered, lossy.dropped, lossy.dropped_events, lossy.complete
        );
        assert!(lossy.dropped > 0, "the stall made the Sentry drop points");
        assert_eq!(lossy.stats_dropped, lossy.dropped);
        assert!(lossy.delivered + lossy.dropped <= flood_points(n));
        if lossy.complete {
            assert_eq!(
                lossy.delivered + lossy.dropped,
                flood_points(n),
                "{} Dropped events",
                lossy.dropped_events
            );
        }
        let waiting = Session::new(&socket).retries(10_000);
        let lossless = flood(&mut scene, &format!("sf-retry-{pid}"), n, stall, waiting);
        assert_eq!((lossless.dropped, lossless.dropped_events), (0, 0));
        assert_eq!(lossless.delivered, flood_points(n));
    }

    /// No point arrived: no connection at all, or one that closed empty.
    fn assert_no_points(events: &[SandboxEvent]) {
        match events.last() {
            None => {}
            Some(SandboxEvent::Closed { stats, .. }) => assert_eq!(stats.messages, 0, "{events:?}"),
            Some(_) => panic!("no Closed: {events:?}"),
        }
    }

    /// `linux.seccomp`: allow everything but mkdir, which gets `action` (EPERM for
    /// `SCMP_ACT_ERRNO`).
    fn deny_mkdir(action: &str) -> Value {
        let mut rule = json!({ "names": ["mkdir"], "action": action });
        if action == "SCMP_ACT_ERRNO" {
            rule["errnoRet"] = json!(libc::EPERM);
        }
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [rule],
        })
    }
}
