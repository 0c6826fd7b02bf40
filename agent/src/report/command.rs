//! `sysfence report`: pick the evidence, build the report, print it, set the status.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::{DryRunReport, compare, from_audit, from_recording, input, load_candidate, render};
use crate::{api::client as api, clock::now_ms, record::Recording};

/// How a report is printed (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned plain text, for a terminal.
    Table,
    /// Pretty JSON.
    Json,
    /// Markdown, for a CI summary or a pull request.
    Markdown,
    /// One self-contained HTML page.
    Html,
}

/// What `sysfence report` was asked for.
pub struct ReportOptions {
    pub policy: Option<PathBuf>,
    pub from: Option<PathBuf>,
    pub events: Option<PathBuf>,
    /// Recordings of one workload under different runtimes, to compare (the runtimes
    /// compared, not a dry run); empty for a dry run.
    pub compare: Vec<PathBuf>,
    pub api: PathBuf,
    pub format: Format,
    pub output: Option<PathBuf>,
}

/// Exit status: 0 when nothing would be denied, 1 when something would, 2 on error
/// (returned as `Err`). A comparison judges nothing: 0.
pub fn run(options: ReportOptions) -> anyhow::Result<i32> {
    if !options.compare.is_empty() {
        return run_comparison(&options);
    }
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
    emit(options.output.as_deref(), &text, || {
        format!(
            "{} workloads, {} would-be denials",
            report.workloads.len(),
            report.total_denials()
        )
    })?;
    Ok(if report.safe() { 0 } else { 1 })
}

/// `--compare A --compare B ...`: the runtimes compared, one column per recording.
fn run_comparison(options: &ReportOptions) -> anyhow::Result<i32> {
    if options.policy.is_some() || options.from.is_some() || options.events.is_some() {
        bail!(
            "`--compare` compares recordings and judges no policy: drop `--policy`, `--from` \
             and `--events`"
        );
    }
    if let [only] = options.compare.as_slice() {
        bail!(
            "`--compare {}` needs a second recording to compare it with: give one `--compare \
             RECORDING` per runtime, e.g. `--compare runc.json --compare runsc.json`",
            only.display()
        );
    }
    let inputs = options
        .compare
        .iter()
        .map(|file| Ok((file.clone(), Recording::load(file)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let comparison = compare::compare(&inputs)?;
    let text = match options.format {
        Format::Table => compare::table(&comparison),
        Format::Json => compare::json(&comparison),
        Format::Markdown => compare::markdown(&comparison),
        Format::Html => compare::html(&comparison),
    };
    emit(options.output.as_deref(), &text, || {
        format!("{} recordings compared", comparison.columns.len())
    })?;
    Ok(0)
}

/// Write the report to `output`, saying so on stderr, or print it.
fn emit(output: Option<&Path>, text: &str, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("sysfence: wrote {} ({})", path.display(), what());
        }
        None => print!("{text}"),
    }
    Ok(())
}
