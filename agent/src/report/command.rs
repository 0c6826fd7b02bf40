//! `sysfence report`: pick the evidence, build the report, print it, set the status.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::{DryRunReport, from_audit, from_recording, input, load_candidate, render};
use crate::{api::client as api, clock::now_ms, record::Recording};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
    Html,
}

pub struct ReportOptions {
    pub policy: Option<PathBuf>,
    pub from: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub api: PathBuf,
    pub format: Format,
    pub output: Option<PathBuf>,
}

/// Exit status: 0 when nothing would be denied, 1 when something would, 2 on error
/// (returned as `Err`).
pub fn run(options: ReportOptions) -> anyhow::Result<i32> {
    let candidate = options.policy.as_deref().map(load_candidate).transpose()?;
    let report: DryRunReport = match (&options.from, &options.events) {
        (Some(_), Some(_)) => bail!("give `--from RECORDING` or `--events LOG`, not both"),
        (Some(rec), None) => {
            let Some(c) = &candidate else {
                bail!(
                    "`--from {}` needs the candidate: `--policy CANDIDATE.yaml`",
                    rec.display()
                );
            };
            let recording = Recording::load(rec)?;
            from_recording(&recording, rec, c)
        }
        (None, Some(log)) => {
            let text = std::fs::read_to_string(log)
                .with_context(|| format!("reading agent log {}", log.display()))?;
            let ev = input::parse_agent_log(log, &text)?;
            from_audit(&ev, candidate.as_ref())
        }
        (None, None) => {
            let answer = api::fetch_events(&options.api).with_context(|| {
                format!(
                    "no evidence given and the agent API at {} cannot be asked: give \
                     `--from RECORDING --policy CANDIDATE` or `--events AGENT_LOG`, or \
                     `--api PATH` of a running agent",
                    options.api.display()
                )
            })?;
            let ev = input::from_events_answer(&options.api, answer, now_ms());
            from_audit(&ev, candidate.as_ref())
        }
    };
    let text = match options.format {
        Format::Table => render::table(&report),
        Format::Json => render::json(&report),
        Format::Markdown => render::markdown(&report),
        Format::Html => render::html(&report),
    };
    match &options.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "sysfence: wrote {} ({} workloads, {} would-be denials)",
                path.display(),
                report.workloads.len(),
                report.total_denials()
            );
        }
        None => print!("{text}"),
    }
    Ok(if report.safe() { 0 } else { 1 })
}
