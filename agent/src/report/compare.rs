//! `sysfence report --compare`: the runtimes compared. One workload recorded under
//! different container runtimes (runc, runsc = gVisor, ...), one column per recording:
//! the host kernel surface each runtime exposes (what reached the host kernel) and what
//! the application asked for, side by side, with ratios against the first recording
//! (the baseline) and the host syscalls only one side reaches.
//!
//! [`compare`] is pure (recordings in, a [`Comparison`] out); the renderers below turn
//! it into a table, JSON, Markdown or one self-contained HTML page.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::render::{STYLE, esc, md_escape};
use crate::{
    clock::human_span,
    model::{Counts, Runtime, SyscallKey},
    record::Recording,
};

/// The `format` field of a comparison's JSON.
pub const COMPARISON_FORMAT: &str = "sysfence-runtime-comparison";
/// The `version` field of a comparison's JSON.
pub const COMPARISON_VERSION: u32 = 1;

/// What the application's calls were seen as, in one recording.
const NOT_SEEN: &str = "not seen (only the sandbox's host calls were recorded)";

/// What a column's numbers mean, for every rendering.
pub const LEGEND: &str = "host: what reached the host kernel (under runsc, the calls of the \
     sandbox itself: gVisor's Sentry and gofer); application: what the application asked \
     for (under runc the same calls as the host's; under runsc only when recorded with \
     gVisor's trace session). The first recording is the baseline.";

/// Recordings of one workload under several runtimes, compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Always [`COMPARISON_FORMAT`].
    pub format: String,
    /// [`COMPARISON_VERSION`].
    pub version: u32,
    /// The first column's label: ratios and "only under" lists are relative to it.
    pub baseline: String,
    /// One per recording, in the order given.
    pub columns: Vec<RuntimeColumn>,
    /// Every column after the first, against the baseline.
    pub versus_baseline: Vec<VersusBaseline>,
    /// Every (ABI, syscall) seen anywhere, host side or application, sorted by name.
    pub syscalls: Vec<SyscallRow>,
    /// What the numbers are and what was left out.
    pub notes: Vec<String>,
}

/// One recording: a runtime's column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeColumn {
    /// The runtime of its workloads (`runc`, `runsc`; `host` for none, `mixed` for
    /// several), suffixed with the file's stem when two columns would read alike.
    pub label: String,
    /// The recording file.
    pub file: String,
    /// The runtimes its workloads ran under, as recorded (`host` for none).
    pub runtimes: Vec<String>,
    /// Its workloads, as reports name them.
    pub workloads: Vec<String>,
    /// The recorded command, when one command was recorded.
    pub command: Option<Vec<String>>,
    /// How long it recorded; `None` when the recording's times give no positive span.
    pub duration_ms: Option<u64>,
    /// What reached the host kernel.
    pub host: Surface,
    /// What the application asked for.
    pub application: ApplicationSide,
}

/// Distinct syscalls and calls of one side of one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Surface {
    /// Distinct (ABI, syscall) pairs.
    pub distinct: usize,
    /// Calls, summed over the workloads.
    pub calls: u64,
    /// Calls per second of the recording; `None` when its duration is unknown.
    pub calls_per_second: Option<f64>,
}

/// How a recording saw the application's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// No sandbox between the application and the host kernel: its calls are the host's.
    Host,
    /// Traced inside the sandbox (gVisor's trace session), apart from the host's calls.
    InsideSandbox,
    /// A sandboxed workload recorded without a trace session: only its host calls.
    NotSeen,
}

/// The application's side of one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplicationSide {
    /// How its calls were seen.
    pub seen: Seen,
    /// Its distinct syscalls and calls; `None` when not seen (never guessed).
    pub surface: Option<Surface>,
    /// One sentence saying what the numbers are.
    pub note: String,
}

/// One column against the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersusBaseline {
    /// The column's label.
    pub label: String,
    /// Its distinct host syscalls over the baseline's; `None` when the baseline has none.
    pub distinct_host_ratio: Option<f64>,
    /// Its host calls per second over the baseline's; `None` when either is unknown or
    /// the baseline's is zero.
    pub host_rate_ratio: Option<f64>,
    /// Host syscalls it reaches and the baseline does not, most called first.
    pub only_here: Vec<String>,
    /// Host syscalls the baseline reaches and it does not, most called first.
    pub only_baseline: Vec<String>,
    /// The comparison in sentences.
    pub summary: Vec<String>,
}

/// One (ABI, syscall), across the columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyscallRow {
    /// Its ABI (`x86_64`, `i386`, ...).
    pub abi: String,
    /// The kernel's name.
    pub syscall: String,
    /// `mount (i386)`, as tables print it.
    pub label: String,
    /// One per column, in column order.
    pub cells: Vec<SyscallCell>,
}

/// One syscall's calls under one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyscallCell {
    /// Calls that reached the host kernel.
    pub host: u64,
    /// The application's calls, only where they differ from the host's (a column
    /// traced inside its sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<u64>,
}

/// One recording reduced to its two sides.
struct Sides {
    runtimes: BTreeSet<String>,
    seen: Seen,
    host: Counts,
    /// `None` when not seen.
    application: Option<Counts>,
}

impl Sides {
    fn of(recording: &Recording) -> Sides {
        let mut host = Counts::new();
        let mut application = Counts::new();
        let mut runtimes = BTreeSet::new();
        let (mut traced, mut untraced_sandbox) = (false, false);
        for w in &recording.workloads {
            let runtime = w.identity.runtime.trim();
            runtimes.insert(if runtime.is_empty() { "host" } else { runtime }.to_string());
            traced |= w.inside_sandbox;
            untraced_sandbox |= !w.inside_sandbox && Runtime::from_name(runtime).sandboxed();
            for s in w.host_side() {
                let n = host.entry(SyscallKey::new(&s.abi, &s.syscall)).or_default();
                *n = n.saturating_add(s.count);
            }
            for s in &w.syscalls {
                let n = application
                    .entry(SyscallKey::new(&s.abi, &s.syscall))
                    .or_default();
                *n = n.saturating_add(s.count);
            }
        }
        host.retain(|_, n| *n > 0);
        application.retain(|_, n| *n > 0);
        let seen = if untraced_sandbox {
            Seen::NotSeen
        } else if traced {
            Seen::InsideSandbox
        } else {
            Seen::Host
        };
        Sides {
            runtimes,
            seen,
            host,
            application: (seen != Seen::NotSeen).then_some(application),
        }
    }

    fn base_label(&self) -> String {
        match self.runtimes.len() {
            0 => "host".to_string(),
            1 => self.runtimes.iter().next().cloned().unwrap_or_default(),
            _ => "mixed".to_string(),
        }
    }
}

/// Labels that tell the columns apart: the runtime, then the file's stem, then the
/// column's place.
fn labels(inputs: &[(PathBuf, Recording)], sides: &[Sides]) -> Vec<String> {
    let base: Vec<String> = sides.iter().map(Sides::base_label).collect();
    let alike = |all: &[String], i: usize| all.iter().filter(|l| **l == all[i]).count() > 1;
    let stemmed: Vec<String> = (0..base.len())
        .map(|i| {
            if alike(&base, i) {
                format!("{} ({})", base[i], stem(&inputs[i].0))
            } else {
                base[i].clone()
            }
        })
        .collect();
    (0..stemmed.len())
        .map(|i| {
            if alike(&stemmed, i) {
                format!("{} #{}", stemmed[i], i + 1)
            } else {
                stemmed[i].clone()
            }
        })
        .collect()
}

fn stem(file: &Path) -> String {
    file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into(),
    )
}

/// Counts that are syscalls: the new-namespace pseudo-key counts clone and unshare
/// calls already counted under their own names.
fn syscalls_of(counts: &Counts) -> impl Iterator<Item = (&SyscallKey, &u64)> {
    counts.iter().filter(|(k, _)| !k.is_new_namespace())
}

fn surface(counts: &Counts, duration_ms: Option<u64>) -> Surface {
    let calls = syscalls_of(counts).fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    Surface {
        distinct: syscalls_of(counts).count(),
        calls,
        calls_per_second: duration_ms.map(|d| calls as f64 * 1000.0 / d as f64),
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Host syscalls `here` reaches that `there` does not, most called first.
fn only_in(here: &Counts, there: &Counts) -> Vec<String> {
    let mut only: Vec<(&SyscallKey, u64)> = syscalls_of(here)
        .filter(|(k, _)| !there.contains_key(*k))
        .map(|(k, n)| (k, *n))
        .collect();
    only.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    only.into_iter().map(|(k, _)| k.label()).collect()
}

/// A rate for people: `n/a` when unknown.
pub fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "n/a".to_string(),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) if r >= 1.0 => format!("{r:.1}"),
        Some(r) => format!("{r:.3}"),
    }
}

fn versus(
    column: &RuntimeColumn,
    baseline: &RuntimeColumn,
    here: &Sides,
    base: &Sides,
) -> VersusBaseline {
    let (c, b) = (&column.label, &baseline.label);
    let distinct_host_ratio = ratio(column.host.distinct as f64, baseline.host.distinct as f64);
    let host_rate_ratio = match (column.host.calls_per_second, baseline.host.calls_per_second) {
        (Some(x), Some(y)) => ratio(x, y),
        _ => None,
    };
    let only_here = only_in(&here.host, &base.host);
    let only_baseline = only_in(&base.host, &here.host);
    let mut summary = vec![format!(
        "{c} exposes {} distinct host syscalls where {b} exposes {}{}",
        column.host.distinct,
        baseline.host.distinct,
        distinct_host_ratio.map_or_else(String::new, |r| format!(" ({r:.2}×)"))
    )];
    summary.push(match host_rate_ratio {
        Some(r) => format!(
            "host calls/s: {r:.2}× of {b}'s ({c} {}/s, {b} {}/s)",
            rate_text(column.host.calls_per_second),
            rate_text(baseline.host.calls_per_second)
        ),
        None => format!(
            "host calls/s: not comparable ({c} {}, {b} {})",
            rate_text(column.host.calls_per_second),
            rate_text(baseline.host.calls_per_second)
        ),
    });
    if let (Some(x), Some(y)) = (&column.application.surface, &baseline.application.surface) {
        summary.push(format!(
            "the application asks for {} distinct syscalls under {c}, {} under {b}",
            x.distinct, y.distinct
        ));
    }
    for (only, side) in [(&only_here, c), (&only_baseline, b)] {
        summary.push(if only.is_empty() {
            format!("no syscall reaches the host only under {side}")
        } else {
            format!(
                "reach the host only under {side} ({}): {}",
                only.len(),
                only.join(", ")
            )
        });
    }
    VersusBaseline {
        label: column.label.clone(),
        distinct_host_ratio,
        host_rate_ratio,
        only_here,
        only_baseline,
        summary,
    }
}

/// Compare recordings of one workload under different runtimes, one column each in the
/// order given, the first the baseline. Needs at least two.
pub fn compare(inputs: &[(PathBuf, Recording)]) -> anyhow::Result<Comparison> {
    if inputs.len() < 2 {
        bail!(
            "a comparison needs at least two recordings, got {}: give one `--compare \
             RECORDING` per runtime, e.g. `--compare runc.json --compare runsc.json`",
            inputs.len()
        );
    }
    let sides: Vec<Sides> = inputs.iter().map(|(_, r)| Sides::of(r)).collect();
    let labels = labels(inputs, &sides);
    let mut notes = Vec::new();
    let mut columns = Vec::new();
    for (((file, recording), side), label) in inputs.iter().zip(&sides).zip(labels) {
        let duration_ms = recording
            .ended_ms
            .checked_sub(recording.started_ms)
            .filter(|&d| d > 0);
        let note = match side.seen {
            Seen::Host => "the application's calls are the host's (no sandbox between them)",
            Seen::InsideSandbox => {
                "the application's calls were traced inside the sandbox (gVisor's trace \
                 session); the host side is the sandbox's own calls"
            }
            Seen::NotSeen => NOT_SEEN,
        };
        notes.push(match side.seen {
            Seen::NotSeen => format!("{label}: the application's calls: {note}"),
            _ => format!("{label}: {note}"),
        });
        if duration_ms.is_none() {
            notes.push(format!(
                "{label}: the recording gives no positive duration (started {}, ended {}): \
                 its rates are n/a",
                recording.started_ms, recording.ended_ms
            ));
        }
        if recording.workloads.is_empty() {
            notes.push(format!("{label}: the recording holds no workload"));
        } else if side.runtimes.len() > 1 {
            notes.push(format!(
                "{label}: workloads of several runtimes ({}), summed",
                side.runtimes.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        columns.push(RuntimeColumn {
            label,
            file: file.display().to_string(),
            runtimes: side.runtimes.iter().cloned().collect(),
            workloads: recording
                .workloads
                .iter()
                .map(|w| w.identity.display_name())
                .collect(),
            command: recording.command.clone(),
            duration_ms,
            host: surface(&side.host, duration_ms),
            application: ApplicationSide {
                seen: side.seen,
                surface: side.application.as_ref().map(|a| surface(a, duration_ms)),
                note: note.to_string(),
            },
        });
    }
    let commands: BTreeSet<&Option<Vec<String>>> = columns.iter().map(|c| &c.command).collect();
    if commands.len() > 1 {
        notes.push(format!(
            "the recordings ran different commands ({}): compare like with like",
            columns
                .iter()
                .map(|c| format!(
                    "{}: {}",
                    c.label,
                    c.command
                        .as_ref()
                        .map_or("none".to_string(), |c| c.join(" "))
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let versus_baseline = (1..columns.len())
        .map(|i| versus(&columns[i], &columns[0], &sides[i], &sides[0]))
        .collect();
    let syscalls = rows(&sides);
    if syscalls
        .iter()
        .any(|r| SyscallKey::new(&r.abi, &r.syscall).is_new_namespace())
    {
        notes.push(
            "fork into a new namespace counts clone and unshare calls with CLONE_NEW* \
             flags, already counted under their names: it is left out of the distinct \
             counts, the totals and the \"only under\" lists"
                .to_string(),
        );
    }
    Ok(Comparison {
        format: COMPARISON_FORMAT.to_string(),
        version: COMPARISON_VERSION,
        baseline: columns[0].label.clone(),
        columns,
        versus_baseline,
        syscalls,
        notes,
    })
}

/// Every (ABI, syscall) seen anywhere, sorted by name (the new-namespace count last).
fn rows(sides: &[Sides]) -> Vec<SyscallRow> {
    let mut keys: BTreeSet<&SyscallKey> = BTreeSet::new();
    for s in sides {
        keys.extend(s.host.keys());
        keys.extend(s.application.iter().flat_map(|a| a.keys()));
    }
    let mut keys: Vec<&SyscallKey> = keys.into_iter().collect();
    keys.sort_by(|a, b| {
        (a.is_new_namespace(), &a.name, &a.abi).cmp(&(b.is_new_namespace(), &b.name, &b.abi))
    });
    keys.into_iter()
        .map(|k| SyscallRow {
            abi: k.abi.clone(),
            syscall: k.name.clone(),
            label: k.label(),
            cells: sides
                .iter()
                .map(|s| SyscallCell {
                    host: s.host.get(k).copied().unwrap_or(0),
                    application: match (s.seen, &s.application) {
                        (Seen::InsideSandbox, Some(a)) => Some(a.get(k).copied().unwrap_or(0)),
                        _ => None,
                    },
                })
                .collect(),
        })
        .collect()
}

// ---- renderings ----

/// A table's header and rows as plain strings; each format escapes and aligns them.
struct Grid {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn count_text(n: u64) -> String {
    if n == 0 {
        "-".to_string()
    } else {
        n.to_string()
    }
}

fn seen_text(seen: Seen) -> &'static str {
    match seen {
        Seen::Host => "the host's",
        Seen::InsideSandbox => "traced inside the sandbox",
        Seen::NotSeen => "not seen",
    }
}

/// The columns' figures, one row per figure.
fn overview(c: &Comparison) -> Grid {
    let mut header = vec![String::new()];
    header.extend(c.columns.iter().map(|col| col.label.clone()));
    let row = |name: &str, f: &dyn Fn(&RuntimeColumn) -> String| {
        let mut r = vec![name.to_string()];
        r.extend(c.columns.iter().map(f));
        r
    };
    let app = |f: fn(&Surface) -> String| {
        move |col: &RuntimeColumn| {
            col.application
                .surface
                .as_ref()
                .map_or("not seen".into(), f)
        }
    };
    let rows = vec![
        row("recording", &|col| col.file.clone()),
        row("workloads", &|col| col.workloads.len().to_string()),
        row("duration", &|col| {
            col.duration_ms.map_or("n/a".into(), human_span)
        }),
        row("distinct host syscalls", &|col| {
            col.host.distinct.to_string()
        }),
        row("host calls", &|col| col.host.calls.to_string()),
        row("host calls/s", &|col| rate_text(col.host.calls_per_second)),
        row("application", &|col| seen_text(col.application.seen).into()),
        row(
            "distinct application syscalls",
            &app(|s| s.distinct.to_string()),
        ),
        row("application calls", &app(|s| s.calls.to_string())),
        row(
            "application calls/s",
            &app(|s| rate_text(s.calls_per_second)),
        ),
    ];
    Grid { header, rows }
}

/// The per-syscall table: host calls per column, and the application's where traced.
fn per_syscall(c: &Comparison) -> Grid {
    let traced: Vec<bool> = c
        .columns
        .iter()
        .map(|col| col.application.seen == Seen::InsideSandbox)
        .collect();
    let mut header = vec!["syscall".to_string()];
    for (col, &t) in c.columns.iter().zip(&traced) {
        header.push(format!("{} host", col.label));
        if t {
            header.push(format!("{} application", col.label));
        }
    }
    let rows = c
        .syscalls
        .iter()
        .map(|r| {
            let mut cells = vec![r.label.clone()];
            for (cell, &t) in r.cells.iter().zip(&traced) {
                cells.push(count_text(cell.host));
                if t {
                    cells.push(count_text(cell.application.unwrap_or(0)));
                }
            }
            cells
        })
        .collect();
    Grid { header, rows }
}

/// Aligned plain text: the first column left, the others right.
fn text_grid(g: &Grid, indent: &str) -> String {
    let n = g.header.len();
    let mut widths = vec![0; n];
    for r in std::iter::once(&g.header).chain(&g.rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&g.header).chain(&g.rows) {
        let mut line = indent.to_string();
        for (i, (cell, w)) in r.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "  {cell:>w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn md_grid(g: &Grid, code_first: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} |",
        g.header
            .iter()
            .map(|h| md_escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let align: Vec<&str> = (0..g.header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for r in &g.rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == 0 && code_first {
                    format!("`{}`", cell.replace('|', "\\|"))
                } else {
                    md_escape(cell)
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

fn html_grid(g: &Grid, class: &str, code_first: bool) -> String {
    let mut out = format!("<table class=\"{class}\"><tr>");
    for h in &g.header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for r in &g.rows {
        out.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            match i {
                0 if code_first => {
                    let _ = write!(out, "<td><code>{}</code></td>", esc(cell));
                }
                0 => {
                    let _ = write!(out, "<th>{}</th>", esc(cell));
                }
                _ => {
                    let _ = write!(out, "<td class=\"n\">{}</td>", esc(cell));
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn title(c: &Comparison) -> String {
    format!(
        "{} recordings compared: {}",
        c.columns.len(),
        c.columns
            .iter()
            .map(|col| col.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    )
}

/// Plain text for a terminal.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sysfence runtime comparison: {}", title(c));
    let _ = writeln!(out, "baseline: {}\n", c.baseline);
    out.push_str(&text_grid(&overview(c), "  "));
    for v in &c.versus_baseline {
        let _ = writeln!(out, "\n{} vs {}:", v.label, c.baseline);
        for s in &v.summary {
            let _ = writeln!(out, "  {s}");
        }
    }
    let _ = writeln!(out, "\nper syscall (calls; - for none):");
    out.push_str(&text_grid(&per_syscall(c), "  "));
    let _ = writeln!(out, "\nlegend: {LEGEND}");
    for n in &c.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// The comparison as pretty JSON.
pub fn json(c: &Comparison) -> String {
    serde_json::to_string_pretty(c).unwrap_or_default() + "\n"
}

/// Markdown, for a CI summary or a pull request.
pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# sysfence runtime comparison\n");
    let _ = writeln!(
        out,
        "{}; baseline **{}**.\n",
        md_escape(&title(c)),
        md_escape(&c.baseline)
    );
    let _ = writeln!(out, "{LEGEND}\n");
    out.push_str(&md_grid(&overview(c), false));
    for v in &c.versus_baseline {
        let _ = writeln!(
            out,
            "\n## {} vs {}\n",
            md_escape(&v.label),
            md_escape(&c.baseline)
        );
        for s in &v.summary {
            let _ = writeln!(out, "- {}", md_escape(s));
        }
    }
    let _ = writeln!(out, "\n## Per syscall\n\nCalls; - for none.\n");
    out.push_str(&md_grid(&per_syscall(c), true));
    if !c.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &c.notes {
            let _ = writeln!(out, "- {}", md_escape(n));
        }
    }
    out
}

/// One self-contained HTML page (no script, no network), styled as the dry-run report.
pub fn html(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>sysfence runtime comparison</title><style>{STYLE}</style></head><body>\n\
         <h1>sysfence runtime comparison</h1>\n<p>{}; baseline <strong>{}</strong>.</p>\n\
         <p class=\"legend\">{}</p>\n",
        esc(&title(c)),
        esc(&c.baseline),
        esc(LEGEND)
    );
    out.push_str(&html_grid(&overview(c), "overview", false));
    for v in &c.versus_baseline {
        let _ = writeln!(
            out,
            "<section class=\"versus\"><h2>{} vs {}</h2><ul>",
            esc(&v.label),
            esc(&c.baseline)
        );
        for s in &v.summary {
            let _ = writeln!(out, "<li>{}</li>", esc(s));
        }
        out.push_str("</ul></section>\n");
    }
    out.push_str("<h2>Per syscall</h2>\n<p>Calls; - for none.</p>\n");
    out.push_str(&html_grid(&per_syscall(c), "syscalls", true));
    for n in &c.notes {
        let _ = writeln!(out, "<p class=\"note\">note: {}</p>", esc(n));
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
