//! The agent's answers on its API socket: `status`, `events`, and the start of a
//! `watch`.

use serde_json::{Value, json};

use super::{Agent, watches::Watch};
use crate::{
    api::{
        protocol::{self, EventsAnswer, Request},
        server::ApiRequest,
    },
    clock::unix_ms,
    probe::pins,
};

impl Agent {
    /// Answer an API request; a `watch` becomes a [`Watch`] fed every second.
    pub(super) fn api(&mut self, req: ApiRequest) -> Option<Watch> {
        let answer = match req.request {
            Request::Status => self.status(),
            Request::Events => serde_json::to_value(EventsAnswer {
                ok: true,
                since_ms: unix_ms(self.telemetry.started),
                workloads: self.workloads.bound_rows(),
                violations: self.recent_violations(),
            })
            .unwrap_or_else(|e| protocol::error(format!("events: {e}"))),
            Request::Watch(filters) => {
                let mut w = Watch::new(filters, req.reply.clone());
                let frame = self.watch_frame(&mut w);
                let _ = req.reply.try_send(frame);
                return Some(w);
            }
        };
        let _ = req.reply.try_send(answer);
        None
    }

    fn status(&self) -> Value {
        let stats = self.probe.stats().ok();
        let (used, capacity) = self.workloads.slot_usage();
        json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_ms": unix_ms(self.telemetry.started),
            "policies_dir": self.options.policies.display().to_string(),
            "probe": {
                "pinned": self.probe.pin_dir().map(|p| p.display().to_string()),
                "adopted": self.probe.adopted(),
                "layout": pins::LAYOUT_VERSION,
                "programs": self.probe.attachments(),
                "deny": match &self.deny { Ok(()) => "attached".to_string(), Err(e) => e.clone() },
                "self_protection": match &self.guards { Ok(n) => format!("{n} hooks attached"), Err(e) => e.clone() },
                "slots_used": used,
                "slots": capacity,
                "stats": stats,
            },
            "last_reload": self.telemetry.last_reload,
            "reloads": self.telemetry.reloads,
            "policies": self.workloads.policy_rows(),
            "workloads": self.workloads.bound_rows(),
            "event_budgets": self.budget_rows(),
        })
    }
}
