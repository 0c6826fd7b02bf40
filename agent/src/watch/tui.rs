//! The terminal view of `watch`: rows are workload × syscall, columns rate, total, ABI
//! and violations; keys sort; ratatui redraws only what changed (no flicker).

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
};

use super::{Deltas, Source, WatchOptions, snapshot::Snapshot};

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Rate,
    Total,
    Violations,
    Syscall,
    Workload,
}

impl SortBy {
    fn name(self) -> &'static str {
        match self {
            SortBy::Rate => "rate",
            SortBy::Total => "total",
            SortBy::Violations => "violations",
            SortBy::Syscall => "syscall",
            SortBy::Workload => "workload",
        }
    }
}

#[derive(Clone)]
struct RowData {
    workload: String,
    syscall: String,
    abi: String,
    rate: f64,
    total: u64,
    violations: u64,
    policy: String,
}

#[derive(Default)]
struct View {
    rows: Vec<RowData>,
    workloads: usize,
    t_ms: u64,
    ended: Option<String>,
}

fn rows_of(s: &Snapshot, deltas: &mut Deltas) -> Vec<RowData> {
    let mut rows = Vec::new();
    for d in deltas.apply(s) {
        if d.workload.gone {
            continue;
        }
        let secs = (d.interval_ms as f64 / 1000.0).max(0.001);
        let w = d.workload;
        for (k, &total) in &w.counts {
            rows.push(RowData {
                workload: w.identity.display_name(),
                syscall: k.name.clone(),
                abi: k.abi.clone(),
                rate: if d.interval_ms == 0 {
                    0.0
                } else {
                    d.counts.get(k).copied().unwrap_or(0) as f64 / secs
                },
                total,
                violations: w.violations.get(k).copied().unwrap_or(0),
                policy: match (&w.policy, &w.mode) {
                    (Some(p), Some(m)) => format!("{p} ({m})"),
                    (Some(p), None) => p.clone(),
                    _ => "-".into(),
                },
            });
        }
        // Violations of syscalls the counts do not list (agent source).
        for (k, &v) in &w.violations {
            if !w.counts.contains_key(k) {
                rows.push(RowData {
                    workload: w.identity.display_name(),
                    syscall: k.name.clone(),
                    abi: k.abi.clone(),
                    rate: 0.0,
                    total: v,
                    violations: v,
                    policy: w.policy.clone().unwrap_or_else(|| "-".into()),
                });
            }
        }
    }
    rows
}

fn sort(rows: &mut [RowData], by: SortBy) {
    rows.sort_by(|a, b| {
        let key = match by {
            SortBy::Rate => b.rate.total_cmp(&a.rate),
            SortBy::Total => b.total.cmp(&a.total),
            SortBy::Violations => b.violations.cmp(&a.violations),
            SortBy::Syscall => a.syscall.cmp(&b.syscall),
            SortBy::Workload => a.workload.cmp(&b.workload),
        };
        key.then(b.total.cmp(&a.total))
            .then(a.workload.cmp(&b.workload))
            .then(a.syscall.cmp(&b.syscall))
    });
}

pub fn run(mut source: Box<dyn Source>, options: &WatchOptions) -> anyhow::Result<()> {
    let title = source.describe();
    let kind = source.kind();
    let count = options.count;
    // The source waits (for the interval, or the agent's next line) on its own thread,
    // so keys are answered at once.
    let (tx, rx) = mpsc::channel::<Result<Option<Snapshot>, String>>();
    let feeder = std::thread::spawn(move || {
        let mut n = 0u64;
        loop {
            if count.is_some_and(|c| n >= c) {
                let _ = tx.send(Ok(None));
                break;
            }
            let next = source.next_snapshot().map_err(|e| format!("{e:#}"));
            let end = !matches!(next, Ok(Some(_)));
            if tx.send(next).is_err() || end {
                break;
            }
            n += 1;
        }
        source.finish()
    });
    let mut terminal = ratatui::init();
    let mut deltas = Deltas::default();
    let mut view = View::default();
    let mut sort_by = SortBy::Rate;
    let mut offset = 0usize;
    let result = (|| -> anyhow::Result<()> {
        loop {
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Ok(Some(s)) => {
                        view.rows = rows_of(&s, &mut deltas);
                        view.workloads = s.workloads.iter().filter(|w| !w.gone).count();
                        view.t_ms = s.t_ms;
                    }
                    Ok(None) => {
                        view.ended.get_or_insert_with(|| "source ended".into());
                    }
                    Err(e) => {
                        view.ended.get_or_insert(e);
                    }
                }
            }
            sort(&mut view.rows, sort_by);
            terminal.draw(|f| {
                let [head, body, foot] = Layout::vertical([
                    Constraint::Length(1),
                    Constraint::Min(3),
                    Constraint::Length(1),
                ])
                .areas(f.area());
                f.render_widget(
                    Paragraph::new(Line::from(format!(
                        " sysfence watch [{kind}] {title}"
                    )))
                    .style(Style::new().reversed()),
                    head,
                );
                let visible = body.height.saturating_sub(3) as usize;
                offset = offset.min(view.rows.len().saturating_sub(visible.max(1)));
                let rows = view.rows.iter().skip(offset).take(visible).map(|r| {
                    let style = if r.violations > 0 {
                        Style::new().red()
                    } else {
                        Style::new()
                    };
                    Row::new(vec![
                        r.workload.clone(),
                        r.syscall.clone(),
                        r.abi.clone(),
                        format!("{:.1}", r.rate),
                        r.total.to_string(),
                        if r.violations > 0 {
                            r.violations.to_string()
                        } else {
                            "-".into()
                        },
                        r.policy.clone(),
                    ])
                    .style(style)
                });
                let header = Row::new(vec![
                    "WORKLOAD", "SYSCALL", "ABI", "RATE/s", "TOTAL", "VIOL", "POLICY",
                ])
                .style(Style::new().add_modifier(Modifier::BOLD));
                let table = Table::new(
                    rows,
                    [
                        Constraint::Percentage(34),
                        Constraint::Length(22),
                        Constraint::Length(7),
                        Constraint::Length(10),
                        Constraint::Length(12),
                        Constraint::Length(6),
                        Constraint::Min(10),
                    ],
                )
                .header(header)
                .block(Block::bordered().title(format!(
                    " {} workloads, {} rows, sorted by {} ",
                    view.workloads,
                    view.rows.len(),
                    sort_by.name()
                )));
                f.render_widget(table, body);
                let status = match &view.ended {
                    Some(why) => format!(" {why}; q quits"),
                    None => " q quit  r rate  t total  v violations  s syscall  w workload  \u{2191}\u{2193} scroll".to_string(),
                };
                f.render_widget(Paragraph::new(status), foot);
            })?;
            let deadline = Instant::now() + Duration::from_millis(200);
            while Instant::now() < deadline {
                if !event::poll(deadline.saturating_duration_since(Instant::now()))? {
                    break;
                }
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c')
                            if k.modifiers
                                .contains(ratatui::crossterm::event::KeyModifiers::CONTROL) =>
                        {
                            return Ok(());
                        }
                        KeyCode::Char('r') => sort_by = SortBy::Rate,
                        KeyCode::Char('t') => sort_by = SortBy::Total,
                        KeyCode::Char('v') => sort_by = SortBy::Violations,
                        KeyCode::Char('s') => sort_by = SortBy::Syscall,
                        KeyCode::Char('w') => sort_by = SortBy::Workload,
                        KeyCode::Down => offset += 1,
                        KeyCode::Up => offset = offset.saturating_sub(1),
                        KeyCode::PageDown => offset += 20,
                        KeyCode::PageUp => offset = offset.saturating_sub(20),
                        _ => {}
                    }
                }
            }
            if super::STOP.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    super::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(rx);
    // The feeder ends at its next snapshot; the probe is released when it does.
    if let Ok(r) = feeder.join() {
        r?;
    }
    result
}
