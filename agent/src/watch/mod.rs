//! `sysfence watch`: live syscalls per workload.
//!
//! A [`Source`] produces [`Snapshot`]s of cumulative counts per workload per (ABI,
//! syscall); the views turn consecutive snapshots into rates and deltas:
//! - on a terminal, a top-like table ([`tui`]);
//! - otherwise, or with `--json`, one JSON line per interval per workload, with the
//!   per-syscall deltas since the previous line.
//!
//! Sources: the running agent's API ([`api`], with the policy, mode and violations of
//! each workload), or, when it cannot be reached, sysfence's own probe
//! ([`standalone`], monitor only, one counting slot per workload).

pub mod snapshot;
pub mod standalone;
mod tui;

use std::{
    collections::HashMap,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use snapshot::{Counts, Filters, Snapshot, WorkloadCounts};

use crate::api::{
    client::{self, ApiClient},
    protocol::Request,
};

/// Where snapshots come from.
pub trait Source: Send {
    /// One line that says which source this is, for stderr and the title bar.
    fn describe(&self) -> String;
    /// Short name: `agent` or `standalone`.
    fn kind(&self) -> &'static str;
    /// The next snapshot (waits for it); `None` when the source has ended.
    fn next_snapshot(&mut self) -> anyhow::Result<Option<Snapshot>>;
    /// Final counts, when the source has any to give (the standalone source reads its
    /// slots one last time).
    fn finish(self: Box<Self>) -> anyhow::Result<Option<Snapshot>>;
}

struct AgentSource {
    client: ApiClient,
    first: Option<Snapshot>,
    /// The last frame's workloads: one that is missing from the next frame is reported
    /// once more, as gone.
    last: HashMap<u64, WorkloadCounts>,
}

/// Add, as gone, the workloads of the previous frame that this one lacks.
fn mark_departed(last: &mut HashMap<u64, WorkloadCounts>, mut s: Snapshot) -> Snapshot {
    let now: HashMap<u64, WorkloadCounts> = s
        .workloads
        .iter()
        .map(|w| (w.identity.cgroup_id, w.clone()))
        .collect();
    for (id, mut w) in std::mem::take(last) {
        if !now.contains_key(&id) {
            w.gone = true;
            s.workloads.push(w);
        }
    }
    *last = now;
    s
}

impl Source for AgentSource {
    fn describe(&self) -> String {
        format!(
            "agent mode: the running agent's counts, policies and violations (API {})",
            self.client.path.display()
        )
    }
    fn kind(&self) -> &'static str {
        "agent"
    }
    fn next_snapshot(&mut self) -> anyhow::Result<Option<Snapshot>> {
        let next = match self.first.take() {
            Some(s) => s,
            None => match self.client.next_line()? {
                Some(line) => Snapshot::from_frame(client::parse_watch_line(&line)?),
                None => return Ok(None),
            },
        };
        Ok(Some(mark_departed(&mut self.last, next)))
    }
    fn finish(self: Box<Self>) -> anyhow::Result<Option<Snapshot>> {
        Ok(None)
    }
}

struct StandaloneSource {
    inner: standalone::Standalone,
    interval: Duration,
    polled: bool,
}

impl Source for StandaloneSource {
    fn describe(&self) -> String {
        format!(
            "standalone mode: own probe, monitor only, one counting slot per workload ({} \
             slots); no policy or violations shown",
            self.inner.max_workloads()
        )
    }
    fn kind(&self) -> &'static str {
        "standalone"
    }
    fn next_snapshot(&mut self) -> anyhow::Result<Option<Snapshot>> {
        if self.polled {
            sleep_unless_stopped(self.interval);
        }
        self.polled = true;
        if STOP.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.poll().map(Some)
    }
    fn finish(self: Box<Self>) -> anyhow::Result<Option<Snapshot>> {
        self.inner.close().map(Some)
    }
}

pub struct WatchOptions {
    pub filters: Filters,
    pub json: bool,
    pub interval: Duration,
    pub api: PathBuf,
    pub standalone: bool,
    pub max_workloads: u32,
    /// Stop after this many intervals.
    pub count: Option<u64>,
    /// Where standalone discovery learns what a cgroup is.
    pub discovery: standalone::Discovery,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn sleep_unless_stopped(d: Duration) {
    let end = Instant::now() + d;
    while !STOP.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// The agent's source if its API answers, else the standalone one (saying why).
fn open_source(options: &WatchOptions) -> anyhow::Result<Box<dyn Source>> {
    if !options.standalone {
        let request = Request::Watch(options.filters.clone());
        let attempt = ApiClient::request(&options.api, &request, Duration::from_secs(5)).and_then(
            |mut client| {
                let line = client
                    .next_line()?
                    .ok_or_else(|| anyhow::anyhow!("the agent closed the connection"))?;
                let first = Snapshot::from_frame(client::parse_watch_line(&line)?);
                Ok(AgentSource {
                    client,
                    first: Some(first),
                    last: HashMap::new(),
                })
            },
        );
        match attempt {
            Ok(source) => return Ok(Box::new(source)),
            Err(e) => eprintln!("sysfence watch: {e:#}; falling back to standalone mode"),
        }
    }
    let inner = standalone::Standalone::new(
        options.filters.clone(),
        options.max_workloads,
        options.interval,
        options.discovery.clone(),
    )?;
    Ok(Box::new(StandaloneSource {
        inner,
        interval: options.interval,
        polled: false,
    }))
}

pub fn run(options: WatchOptions) -> anyhow::Result<()> {
    options.filters.validate()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only stores an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as *const () as usize;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    let source = open_source(&options)?;
    eprintln!("sysfence watch: {}", source.describe());
    let tty = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if options.json || !tty {
        json_lines(source, &options)
    } else {
        tui::run(source, &options)
    }
}

/// Turns cumulative snapshots into per-interval deltas.
#[derive(Default)]
pub struct Deltas {
    previous: HashMap<u64, (Counts, Counts)>,
    last_t_ms: Option<u64>,
}

/// One workload's change over one interval.
pub struct WorkloadDelta<'a> {
    pub workload: &'a WorkloadCounts,
    pub interval_ms: u64,
    pub counts: Counts,
    pub violations: Counts,
}

fn diff(now: &Counts, before: Option<&Counts>) -> Counts {
    now.iter()
        .filter_map(|(k, &n)| {
            let b = before.and_then(|b| b.get(k)).copied().unwrap_or(0);
            // A count that went down was reset (a new watch): all of it is new.
            let d = if n >= b { n - b } else { n };
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

impl Deltas {
    pub fn apply<'a>(&mut self, s: &'a Snapshot) -> Vec<WorkloadDelta<'a>> {
        let interval_ms = self.last_t_ms.map_or(0, |t| s.t_ms.saturating_sub(t));
        self.last_t_ms = Some(s.t_ms);
        let mut out = Vec::new();
        for w in &s.workloads {
            let id = w.identity.cgroup_id;
            let before = self.previous.get(&id);
            let counts = diff(&w.counts, before.map(|b| &b.0));
            let violations = diff(&w.violations, before.map(|b| &b.1));
            if w.gone {
                self.previous.remove(&id);
            } else {
                self.previous
                    .insert(id, (w.counts.clone(), w.violations.clone()));
            }
            out.push(WorkloadDelta {
                workload: w,
                interval_ms,
                counts,
                violations,
            });
        }
        out
    }
}

/// The JSON line of one workload's interval, fields in this order.
#[derive(Debug, serde::Serialize)]
pub struct DeltaLine<'a> {
    pub t_ms: u64,
    pub interval_ms: u64,
    pub source: &'a str,
    pub cgroup_id: u64,
    pub cgroup: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub container_id: &'a str,
    pub policy: Option<&'a str>,
    pub mode: Option<&'a str>,
    pub total: u64,
    pub deltas: &'a Counts,
    pub violations: &'a Counts,
    /// The arguments that decided the last violation of a syscall judged on them.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub violation_args: &'a std::collections::BTreeMap<snapshot::SyscallKey, String>,
    pub gone: bool,
    /// The counts are the application's syscalls inside a gVisor sandbox (its trace
    /// session), not the sandbox's host syscalls.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inside_sandbox: bool,
}

pub fn delta_line<'a>(source: &'a str, t_ms: u64, d: &'a WorkloadDelta) -> DeltaLine<'a> {
    let w = d.workload;
    DeltaLine {
        t_ms,
        interval_ms: d.interval_ms,
        source,
        cgroup_id: w.identity.cgroup_id,
        cgroup: &w.identity.cgroup,
        namespace: &w.identity.namespace,
        pod: &w.identity.pod,
        container: &w.identity.container,
        container_id: &w.identity.container_id,
        policy: w.policy.as_deref(),
        mode: w.mode.as_deref(),
        total: d.counts.values().sum(),
        deltas: &d.counts,
        violations: &d.violations,
        violation_args: &w.violation_args,
        gone: w.gone,
        inside_sandbox: w.inside_sandbox,
    }
}

fn json_lines(mut source: Box<dyn Source>, options: &WatchOptions) -> anyhow::Result<()> {
    let mut deltas = Deltas::default();
    let mut stdout = std::io::stdout().lock();
    let kind = source.kind();
    let mut emit = |s: &Snapshot, deltas: &mut Deltas| -> anyhow::Result<()> {
        for d in deltas.apply(s) {
            let line = serde_json::to_string(&delta_line(kind, s.t_ms, &d))?;
            writeln!(stdout, "{line}").context("writing stdout")?;
        }
        stdout.flush().context("writing stdout")
    };
    let mut n = 0u64;
    while !STOP.load(Ordering::SeqCst) && options.count.is_none_or(|c| n < c) {
        match source.next_snapshot()? {
            Some(s) => emit(&s, &mut deltas)?,
            None => break,
        }
        n += 1;
    }
    if let Some(last) = source.finish()? {
        emit(&last, &mut deltas)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::{SyscallKey, WorkloadRef};

    fn snap(t: u64, reads: u64, gone: bool) -> Snapshot {
        let mut counts = Counts::new();
        counts.insert(SyscallKey::new("x86_64", "read"), reads);
        Snapshot {
            t_ms: t,
            workloads: vec![WorkloadCounts {
                identity: WorkloadRef {
                    cgroup_id: 5,
                    ..WorkloadRef::default()
                },
                counts,
                gone,
                ..WorkloadCounts::default()
            }],
        }
    }

    #[test]
    fn deltas_sum_to_the_cumulative_count() {
        let mut d = Deltas::default();
        let mut total = 0;
        for (t, n, gone) in [
            (1000, 3, false),
            (2000, 3, false),
            (3000, 10, false),
            (3500, 12, true),
        ] {
            let s = snap(t, n, gone);
            for w in d.apply(&s) {
                total += w.counts.values().sum::<u64>();
                let line = serde_json::to_value(delta_line("standalone", s.t_ms, &w)).unwrap();
                assert_eq!(line["total"], w.counts.values().sum::<u64>());
            }
        }
        assert_eq!(total, 12);
        // A workload seen again after it went is counted from zero.
        let s = snap(4000, 2, false);
        assert_eq!(d.apply(&s)[0].counts.values().sum::<u64>(), 2);
    }

    #[test]
    fn a_workload_missing_from_the_next_frame_is_reported_gone_once() {
        let mut last = HashMap::new();
        let first = mark_departed(&mut last, snap(1000, 3, false));
        assert_eq!(first.workloads.len(), 1);
        let empty = mark_departed(
            &mut last,
            Snapshot {
                t_ms: 2000,
                workloads: Vec::new(),
            },
        );
        assert_eq!(empty.workloads.len(), 1);
        assert!(empty.workloads[0].gone);
        let again = mark_departed(
            &mut last,
            Snapshot {
                t_ms: 3000,
                workloads: Vec::new(),
            },
        );
        assert!(again.workloads.is_empty());
    }

    #[test]
    fn an_interval_without_calls_has_no_keys() {
        let mut d = Deltas::default();
        let a = snap(1000, 4, false);
        d.apply(&a);
        let b = snap(2000, 4, false);
        let out = d.apply(&b);
        assert!(out[0].counts.is_empty());
        assert_eq!(out[0].interval_ms, 1000);
    }
}
