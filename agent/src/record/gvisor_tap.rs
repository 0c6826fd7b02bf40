//! `record` of runsc containers: the application's syscalls, from a trace session
//! that `record` attaches to each running sandbox (`runsc trace create`) and removes
//! at the end (`runsc trace delete`). The host sees only the sandbox's own syscalls,
//! so a runsc workload's recording is the application's as gVisor served them.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use probe_common::Abi;

use crate::{
    gvisor::{SandboxEvent, Session, Sink},
    model::{Counts, SyscallKey},
    watch::{snapshot::Snapshot, standalone::Standalone},
};

/// The most containers counted (`record --max-workloads` is far below).
const MAX_CONTAINERS: usize = 4096;

/// Per container id, the application's calls: x86_64 number → count.
type Tally = Arc<Mutex<HashMap<String, BTreeMap<u64, u64>>>>;

/// The trace sessions `record` attached, and what they counted.
pub struct GvisorTap {
    dir: PathBuf,
    config: PathBuf,
    name: String,
    tally: Tally,
    dropped: Arc<AtomicU64>,
    /// Containers attached: id → the runtime root used.
    attached: HashMap<String, Option<PathBuf>>,
    /// Containers that could not be attached (not tried again).
    refused: std::collections::HashSet<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GvisorTap {
    /// Listen for trace points in a directory of this process's own under `/run`.
    pub fn start() -> anyhow::Result<GvisorTap> {
        let dir = PathBuf::from(format!("/run/sysfence/record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("trace.sock");
        // runsc 20221219 allows one session per sandbox, named "Default".
        let name = crate::gvisor::session::SESSION_NAME.to_string();
        let session = Session::new(&socket)
            .retries(crate::gvisor::session::FLOOD_RETRIES)
            .trace_session();
        let config = dir.join("session.json");
        std::fs::write(&config, serde_json::to_vec(&session)?)
            .with_context(|| format!("writing {}", config.display()))?;
        let tally: Tally = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = {
            let (tally, dropped) = (tally.clone(), dropped.clone());
            std::thread::spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(serve(&socket, tally, dropped, ready_tx, stopped));
            })
        };
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("gVisor trace sink: {e}"),
            Err(_) => bail!("gVisor trace sink: its thread ended"),
        }
        Ok(GvisorTap {
            dir,
            config,
            name,
            tally,
            dropped,
            attached: HashMap::new(),
            refused: Default::default(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Whether container `id` has a session of this tap.
    pub fn is_attached(&self, id: &str) -> bool {
        self.attached.contains_key(id)
    }

    /// Whether attaching to container `id` failed already.
    pub fn refused(&self, id: &str) -> bool {
        self.refused.contains(id)
    }

    /// Attach a session to the sandbox of runsc container `id` (state under `root`).
    pub fn attach(&mut self, id: &str, root: Option<&Path>) -> anyhow::Result<()> {
        let mut c = Command::new("runsc");
        if let Some(r) = root {
            c.arg("--root").arg(r);
        }
        c.args(["trace", "create", "--config"])
            .arg(&self.config)
            .arg(id);
        let out = c.output().context("running runsc trace create")?;
        if !out.status.success() {
            self.refused.insert(id.to_string());
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if why.contains("single \"Default\" session") {
                bail!(
                    "container {id} has a trace session already (the sysfence agent's, when \
                     `sysfence wrap` started it): record it through the agent's `watch`, or \
                     start it without the wrapper"
                );
            }
            bail!("runsc trace create for container {id}: {why}");
        }
        self.attached
            .insert(id.to_string(), root.map(Path::to_path_buf));
        Ok(())
    }

    /// The application's calls of container `id` so far, keyed as counts are.
    pub fn counts_of(&self, id: &str) -> Counts {
        let tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|(&nr, &n)| {
                probe_common::syscall_index(Abi::X86_64, nr).map(|i| (SyscallKey::of_index(i), n))
            })
            .collect()
    }

    /// Points the Sentries dropped (their sockets were full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Let the points already sent arrive (before the last counts are read).
    pub fn settle(&self) {
        if !self.attached.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Remove the sessions (a sandbox that is gone has none to remove) and the sink.
    pub fn close(mut self) {
        for (id, root) in std::mem::take(&mut self.attached) {
            let mut c = Command::new("runsc");
            if let Some(r) = &root {
                c.arg("--root").arg(r);
            }
            let _ = c
                .args(["trace", "delete", "--name", &self.name])
                .arg(&id)
                .output();
        }
    }
}

impl Drop for GvisorTap {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// runsc workloads: their counts are the application's syscalls inside gVisor, from a
/// trace session attached to each sandbox the first time it is seen (before any of its
/// counts is observed). A sandbox that cannot be traced keeps its host counts, and
/// says so.
pub fn inside_sandboxes(
    snapshot: &mut Snapshot,
    source: &Standalone,
    tap: &mut Option<GvisorTap>,
    quiet: bool,
) {
    for w in &mut snapshot.workloads {
        let id = w.identity.container_id.clone();
        if w.identity.runtime != crate::model::Runtime::Runsc.name() || id.is_empty() {
            continue;
        }
        if tap.is_none() {
            match GvisorTap::start() {
                Ok(t) => *tap = Some(t),
                Err(e) => {
                    eprintln!(
                        "sysfence: warning: {e:#}: runsc workloads are recorded as the host sees them (the sandbox, not the application)"
                    );
                    return;
                }
            }
        }
        let Some(t) = tap.as_mut() else { return };
        if t.refused(&id) {
            continue;
        }
        if !t.is_attached(&id) {
            match t.attach(&id, source.state_root(&id).as_deref()) {
                Ok(()) if !quiet => eprintln!(
                    "sysfence: recording the application inside gVisor container {id} (trace session)"
                ),
                Ok(()) => {}
                Err(e) => {
                    eprintln!(
                        "sysfence: warning: {e:#}: container {id} is recorded as the host sees it"
                    );
                    continue;
                }
            }
        }
        w.host_counts = std::mem::replace(&mut w.counts, t.counts_of(&id));
        w.inside_sandbox = true;
    }
}

/// The sink's loop: count every syscall entry per container until told to stop.
async fn serve(
    socket: &Path,
    tally: Tally,
    dropped: Arc<AtomicU64>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut handle = match Sink::bind(socket) {
        Ok(s) => s.serve(crate::gvisor::sink::DEFAULT_CAPACITY),
        Err(e) => {
            let _ = ready.send(Err(format!("listening on {}: {e}", socket.display())));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        tokio::select! {
            _ = &mut stop => {
                // What is already in the socket still counts.
                let end = tokio::time::sleep(Duration::from_millis(200));
                tokio::pin!(end);
                loop {
                    tokio::select! {
                        _ = &mut end => return,
                        Some(e) = handle.recv() => count(&tally, &dropped, e),
                    }
                }
            }
            Some(e) = handle.recv() => count(&tally, &dropped, e),
        }
    }
}

fn count(tally: &Tally, dropped: &AtomicU64, e: SandboxEvent) {
    match e {
        SandboxEvent::Syscall {
            container_id,
            sysno,
            exit: None,
            ..
        } => {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            // A Sentry names its own containers; one that names thousands is not
            // believed past the bound.
            if t.len() >= MAX_CONTAINERS && !t.contains_key(&container_id) {
                return;
            }
            *t.entry(container_id).or_default().entry(sysno).or_default() += 1;
        }
        SandboxEvent::Dropped { count, .. } => {
            dropped.fetch_add(count, Ordering::Relaxed);
        }
        _ => {}
    }
}
