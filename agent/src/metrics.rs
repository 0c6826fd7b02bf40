//! `sysfence agent --metrics ADDR`: a Prometheus text endpoint (`/metrics`) and a
//! liveness probe (`/healthz`).
//!
//! The HTTP side only forwards: each scrape asks the agent's main loop, which owns the
//! probe, for a [`Snapshot`] (kernel counters read at that moment), and renders it with
//! `prometheus-client`. `/healthz` answers 200 when the main loop answers within two
//! seconds, 503 otherwise.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::{mpsc, oneshot};

type Labels = Vec<(String, String)>;

/// Everything a scrape exports, read by the main loop.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// (policy, applied mode, ABI, syscall) → calls, exact (kernel counters).
    pub syscalls: BTreeMap<(String, String, String, String), u64>,
    /// Violations per workload, syscall and outcome (events plus those suppressed by
    /// the rate limit: exact as long as no event was dropped).
    pub violations: BTreeMap<ViolationSeries, u64>,
    /// Workloads bound, per policy.
    pub bound: BTreeMap<String, u64>,
    /// Policy reloads by result (`applied`, `unchanged`, `rejected`, `failed`).
    pub reloads: BTreeMap<String, u64>,
    /// Unix time of the last successful policy load.
    pub last_reload_success: f64,
    pub events_dropped: u64,
    pub events_suppressed: u64,
    /// Of those suppressed, the events workloads' budgets held back.
    pub events_held: u64,
    /// Workloads with held or dropped events.
    pub budgets: Vec<BudgetRow>,
    pub kill_failed: u64,
    pub mark_failed: u64,
    pub slots_used: u64,
    pub slots_capacity: u64,
    /// Probe state labels: pinned, adopted, deny path, layout.
    pub probe: Labels,
}

/// A workload's events its budget held back and the full ring buffer lost (`status`,
/// `/metrics`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BudgetRow {
    pub workload: crate::model::WorkloadRef,
    pub held: u64,
    pub dropped: u64,
}

/// The labels of one `sysfence_violations_total` series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViolationSeries {
    pub policy: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cgroup: String,
    pub abi: String,
    pub syscall: String,
    pub outcome: String,
}

impl ViolationSeries {
    /// The series a violation counts in.
    pub fn of(v: &crate::event::Violation) -> ViolationSeries {
        let w = &v.workload;
        ViolationSeries {
            policy: v.policy.clone(),
            namespace: w.namespace.clone(),
            pod: w.pod.clone(),
            container: w.container.clone(),
            cgroup: w.cgroup.clone(),
            abi: v.abi.clone(),
            syscall: v.syscall.clone(),
            outcome: v.outcome.clone(),
        }
    }
}

/// The text exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("sysfence");
    let syscalls = Family::<Labels, Counter>::default();
    for ((policy, mode, abi, syscall), n) in &s.syscalls {
        syscalls
            .get_or_create(&vec![
                ("policy".into(), policy.clone()),
                ("mode".into(), mode.clone()),
                ("abi".into(), abi.clone()),
                ("syscall".into(), syscall.clone()),
            ])
            .inc_by(*n);
    }
    registry.register(
        "syscalls",
        "Syscalls of bound workloads per policy (exact, counted in the kernel): every call under monitor and audit, violations only under enforce",
        syscalls,
    );
    let violations = Family::<Labels, Counter>::default();
    for (k, n) in &s.violations {
        violations
            .get_or_create(&vec![
                ("policy".into(), k.policy.clone()),
                ("namespace".into(), k.namespace.clone()),
                ("pod".into(), k.pod.clone()),
                ("container".into(), k.container.clone()),
                ("cgroup".into(), k.cgroup.clone()),
                ("abi".into(), k.abi.clone()),
                ("syscall".into(), k.syscall.clone()),
                ("outcome".into(), k.outcome.clone()),
            ])
            .inc_by(*n);
    }
    registry.register(
        "violations",
        "Syscalls outside the allowlist, per workload, syscall and outcome",
        violations,
    );
    let bound = Family::<Labels, Gauge>::default();
    for (policy, n) in &s.bound {
        bound
            .get_or_create(&vec![("policy".into(), policy.clone())])
            .set(*n as i64);
    }
    registry.register("workloads_bound", "Workloads bound, per policy", bound);
    let reloads = Family::<Labels, Counter>::default();
    for result in ["applied", "unchanged", "rejected", "failed"] {
        reloads
            .get_or_create(&vec![("result".into(), result.into())])
            .inc_by(s.reloads.get(result).copied().unwrap_or(0));
    }
    registry.register(
        "policy_reloads",
        "Policy reloads by result; `rejected` keeps the policies in force",
        reloads,
    );
    let last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    last.set(s.last_reload_success);
    registry.register(
        "policy_last_reload_success_timestamp_seconds",
        "When the policies in force were loaded",
        last,
    );
    for (name, help, v) in [
        (
            "events_dropped",
            "Violation events lost because the ring buffer was full",
            s.events_dropped,
        ),
        (
            "events_suppressed",
            "Violation events not sent because of the per-(workload, syscall) rate limit (counted in `violations`)",
            s.events_suppressed,
        ),
        (
            "events_held",
            "Of the suppressed events, those held back by a workload's event budget",
            s.events_held,
        ),
        (
            "kill_failed",
            "Kills the probe could not send",
            s.kill_failed,
        ),
        (
            "deny_mark_failed",
            "Denials the probe could not mark",
            s.mark_failed,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        registry.register(name, help, c);
    }
    let held = Family::<Labels, Counter>::default();
    let dropped = Family::<Labels, Counter>::default();
    for row in &s.budgets {
        let w = &row.workload;
        let labels = vec![
            ("namespace".into(), w.namespace.clone()),
            ("pod".into(), w.pod.clone()),
            ("container".into(), w.container.clone()),
            ("cgroup".into(), w.cgroup.clone()),
        ];
        if row.held > 0 {
            held.get_or_create(&labels).inc_by(row.held);
        }
        if row.dropped > 0 {
            dropped.get_or_create(&labels).inc_by(row.dropped);
        }
    }
    registry.register(
        "workload_events_held",
        "Violation events a workload's budget held back (counted in `violations`), per live workload that had any",
        held,
    );
    registry.register(
        "workload_events_dropped",
        "Violation events of a workload lost because the ring buffer was full, per live workload that lost any",
        dropped,
    );
    for (name, help, v) in [
        ("policy_slots_used", "Policy slots in use", s.slots_used),
        (
            "policy_slots",
            "Policy slots in the probe",
            s.slots_capacity,
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        registry.register(name, help, g);
    }
    let probe = Family::<Labels, Gauge>::default();
    probe.get_or_create(&s.probe).set(1);
    registry.register("probe_info", "The probe's state (always 1)", probe);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String");
    out
}

/// What the HTTP side asks the main loop.
pub enum Ask {
    /// A snapshot for `/metrics`.
    Snapshot(oneshot::Sender<Snapshot>),
    /// `/healthz`: answer at once.
    Health(oneshot::Sender<()>),
}

/// Listen on `addr` and forward scrapes to `asks`.
pub async fn serve(addr: SocketAddr, asks: mpsc::Sender<Ask>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let asks = asks.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, asks.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn answer(
    req: Request<Incoming>,
    asks: mpsc::Sender<Ask>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response"))
    };
    if req.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics or /healthz\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            let got = match asks.send(Ask::Snapshot(tx)).await {
                Ok(()) => tokio::time::timeout(Duration::from_secs(10), rx).await,
                Err(_) => {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "agent stopping\n".into(),
                    );
                }
            };
            match got {
                Ok(Ok(snapshot)) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    render(&snapshot),
                ),
                _ => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the agent's main loop did not answer\n".into(),
                ),
            }
        }
        "/healthz" => {
            let (tx, rx) = oneshot::channel();
            let ok = asks.send(Ask::Health(tx)).await.is_ok()
                && matches!(
                    tokio::time::timeout(Duration::from_secs(2), rx).await,
                    Ok(Ok(()))
                );
            if ok {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the agent's main loop did not answer within 2 s\n".into(),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: GET /metrics or /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let mut s = Snapshot::default();
        s.syscalls.insert(
            (
                "web".into(),
                "enforce".into(),
                "x86_64".into(),
                "read".into(),
            ),
            42,
        );
        s.violations.insert(
            ViolationSeries {
                policy: "web".into(),
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: "nginx".into(),
                cgroup: "k/p".into(),
                abi: "x86_64".into(),
                syscall: "ptrace".into(),
                outcome: "killed-after".into(),
            },
            3,
        );
        s.bound.insert("web".into(), 2);
        s.reloads.insert("rejected".into(), 1);
        s.events_dropped = 5;
        s.probe = vec![("pinned".into(), "true".into())];
        let text = render(&s);
        assert!(text.contains(
            "sysfence_syscalls_total{policy=\"web\",mode=\"enforce\",abi=\"x86_64\",syscall=\"read\"} 42"
        ), "{text}");
        assert!(
            text.contains("syscall=\"ptrace\",outcome=\"killed-after\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sysfence_workloads_bound{policy=\"web\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sysfence_policy_reloads_total{result=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sysfence_policy_reloads_total{result=\"applied\"} 0"),
            "{text}"
        );
        assert!(text.contains("sysfence_events_dropped_total 5"), "{text}");
        assert!(
            text.contains("sysfence_probe_info{pinned=\"true\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
