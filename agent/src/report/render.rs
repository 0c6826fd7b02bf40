//! A dry-run report as a table, JSON, Markdown, or one self-contained HTML page with an
//! inline SVG bar chart (no script, no network).

use std::fmt::Write as _;

use super::{DryRunReport, WorkloadReport};
use crate::clock::{human_span, iso_ms};

fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), iso_ms)
}

fn window(w: &WorkloadReport) -> String {
    match (w.from_ms, w.to_ms) {
        (Some(f), Some(t)) if t >= f => {
            format!("{} to {} ({})", iso_ms(f), iso_ms(t), human_span(t - f))
        }
        _ => "unknown".to_string(),
    }
}

fn example(d: &super::Denial) -> String {
    let mut s = match d.pid {
        Some(pid) => format!("pid {pid}"),
        None => return "-".to_string(),
    };
    if let Some(c) = &d.comm {
        s.push_str(&format!(" ({c})"));
    }
    if let Some(e) = &d.exe {
        s.push_str(&format!(" {e}"));
    }
    s
}

fn overall(r: &DryRunReport) -> String {
    let unsafe_n = r.workloads.iter().filter(|w| !w.verdict.safe).count();
    if r.workloads.is_empty() {
        "nothing to judge".to_string()
    } else if unsafe_n == 0 && r.workloads.len() == 1 {
        "the workload is safe to enforce".to_string()
    } else if unsafe_n == 0 {
        format!(
            "all {} workload{} safe to enforce",
            r.workloads.len(),
            if r.workloads.len() == 1 { "" } else { "s" }
        )
    } else {
        let n = r.total_denials();
        format!(
            "{unsafe_n} of {} workload{} not safe to enforce: {n} would-be denial{}",
            r.workloads.len(),
            if r.workloads.len() == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Plain text for a terminal.
pub fn table(r: &DryRunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sysfence dry-run report: {}", r.source);
    if let Some(c) = &r.candidate {
        let _ = writeln!(out, "candidate policy: {c}");
    }
    let _ = writeln!(out, "verdict: {}", overall(r));
    for w in &r.workloads {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "workload {}  (cgroup {}, policy `{}`, {})",
            w.name, w.workload.cgroup, w.policy, w.mode
        );
        let _ = writeln!(out, "  observed: {}", window(w));
        if let Some(t) = w.total_calls {
            let _ = writeln!(out, "  calls counted: {t}");
        }
        let _ = writeln!(out, "  {}", w.verdict.text);
        if !w.denials.is_empty() {
            let lw = w
                .denials
                .iter()
                .map(|d| d.label.len())
                .max()
                .unwrap_or(7)
                .max(7);
            let _ = writeln!(
                out,
                "  {:<lw$}  {:>9}  {:<24}  {:<24}  example",
                "SYSCALL", "COUNT", "FIRST SEEN", "LAST SEEN"
            );
            for d in &w.denials {
                let _ = writeln!(
                    out,
                    "  {:<lw$}  {:>9}  {:<24}  {:<24}  {}",
                    d.label,
                    d.count,
                    when(d.first_ms),
                    when(d.last_ms),
                    example(d)
                );
            }
        }
        if let Some(s) = &w.suggestion {
            let _ = writeln!(out, "  to allow them:");
            for l in s.lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    out
}

pub fn json(r: &DryRunReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default() + "\n"
}

/// Text safe in a Markdown table cell.
pub(super) fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

pub fn markdown(r: &DryRunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# sysfence dry-run report\n");
    let _ = writeln!(out, "- source: {}", md_escape(&r.source));
    if let Some(c) = &r.candidate {
        let _ = writeln!(out, "- candidate policy: `{c}`");
    }
    let _ = writeln!(out, "- verdict: **{}**", overall(r));
    for w in &r.workloads {
        let _ = writeln!(
            out,
            "\n## {}\n\ncgroup `{}`, policy `{}` ({}), observed {}\n\n**{}**\n",
            md_escape(&w.name),
            w.workload.cgroup,
            w.policy,
            w.mode,
            window(w),
            w.verdict.text
        );
        if !w.denials.is_empty() {
            let _ = writeln!(
                out,
                "| syscall | count | first seen | last seen | example |\n| --- | ---: | --- | --- | --- |"
            );
            for d in &w.denials {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    d.label,
                    d.count,
                    when(d.first_ms),
                    when(d.last_ms),
                    md_escape(&example(d))
                );
            }
        }
        if let Some(s) = &w.suggestion {
            let _ = writeln!(out, "\nTo allow them:\n\n```yaml\n{}```", s);
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {}", md_escape(n));
        }
    }
    out
}

/// Text safe in HTML, in elements and in quoted attributes.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The bar chart: one bar per (workload, syscall) with would-be denials.
fn svg_chart(r: &DryRunReport) -> String {
    let bars: Vec<(String, String, u64)> = r
        .workloads
        .iter()
        .flat_map(|w| {
            w.denials
                .iter()
                .map(move |d| (w.name.clone(), d.label.clone(), d.count))
        })
        .collect();
    if bars.is_empty() {
        return "<p class=\"none\">No would-be denials: nothing to chart.</p>".to_string();
    }
    let max = bars.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    let (label_w, bar_w, row_h) = (360.0, 420.0, 26.0);
    let height = row_h * bars.len() as f64 + 30.0;
    let width = label_w + bar_w + 90.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"would-be denials per workload and syscall\">"
    );
    let palette = [
        "#d9480f", "#1971c2", "#2f9e44", "#9c36b5", "#e67700", "#0c8599",
    ];
    let mut workloads: Vec<&str> = Vec::new();
    for (i, (w, syscall, n)) in bars.iter().enumerate() {
        let wi = match workloads.iter().position(|x| x == w) {
            Some(p) => p,
            None => {
                workloads.push(w);
                workloads.len() - 1
            }
        };
        let y = 10.0 + i as f64 * row_h;
        let len = (*n as f64 / max as f64 * bar_w).max(2.0);
        let _ = write!(
            s,
            "<g class=\"bar\" data-workload=\"{}\" data-syscall=\"{}\" data-count=\"{n}\">\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"13\">{} · {}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{len:.1}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"13\">{n}</text></g>",
            esc(w),
            esc(syscall),
            label_w - 8.0,
            y + row_h * 0.65,
            esc(w),
            esc(syscall),
            row_h - 8.0,
            palette[wi % palette.len()],
            label_w + len + 6.0,
            y + row_h * 0.65,
        );
    }
    s.push_str("</svg>");
    s
}

/// The reports' style sheet, inline: a page needs nothing but itself.
pub(super) const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;background:#fff}\
     table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em}\
     td.n{text-align:right}.safe{color:#2b8a3e}.unsafe{color:#c92a2a}\
     pre{background:#f4f4f4;padding:.6em}h2{margin-top:1.5em}";

pub fn html(r: &DryRunReport) -> String {
    let mut out = String::new();
    let verdict_class = if r.safe() { "safe" } else { "unsafe" };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>sysfence dry-run report</title>\
         <style>{STYLE}</style></head><body>\n\
         <h1>sysfence dry-run report</h1>\n<p>source: {}</p>\n",
        esc(&r.source)
    );
    if let Some(c) = &r.candidate {
        let _ = writeln!(out, "<p>candidate policy: <code>{}</code></p>", esc(c));
    }
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"{verdict_class}\"><strong>{}</strong></p>",
        esc(&overall(r))
    );
    let _ = writeln!(
        out,
        "<h2>Would-be denials per workload and syscall</h2>\n{}",
        svg_chart(r)
    );
    for w in &r.workloads {
        let class = if w.verdict.safe { "safe" } else { "unsafe" };
        let _ = writeln!(
            out,
            "<section class=\"workload\" data-cgroup-id=\"{}\"><h2>{}</h2>\
             <p>cgroup <code>{}</code>, policy <code>{}</code> ({}), observed {}</p>\
             <p class=\"verdict {class}\">{}</p>",
            w.workload.cgroup_id,
            esc(&w.name),
            esc(&w.workload.cgroup),
            esc(&w.policy),
            esc(&w.mode),
            esc(&window(w)),
            esc(&w.verdict.text)
        );
        if !w.denials.is_empty() {
            out.push_str(
                "<table class=\"denials\"><tr><th>syscall</th><th>count</th><th>first seen</th>\
                 <th>last seen</th><th>example</th></tr>\n",
            );
            for d in &w.denials {
                let _ = writeln!(
                    out,
                    "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&d.label),
                    d.count,
                    when(d.first_ms),
                    when(d.last_ms),
                    esc(&example(d))
                );
            }
            out.push_str("</table>\n");
        }
        if let Some(s) = &w.suggestion {
            let _ = writeln!(out, "<p>To allow them:</p><pre>{}</pre>", esc(s));
        }
        out.push_str("</section>\n");
    }
    for n in &r.notes {
        let _ = writeln!(out, "<p class=\"note\">note: {}</p>", esc(n));
    }
    out.push_str("</body></html>\n");
    out
}
