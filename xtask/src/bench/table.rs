//! The printed summary of a bench run (markdown tables).

use super::{
    Results, Workload,
    maps::{self, MemoryReport},
};

pub(super) fn print_table(r: &Results) {
    println!("machine: {}", r.machine);
    if !r.rows.is_empty() {
        print_syscall_tables(r);
    }
    print_later_tables(r);
}

/// The per-syscall tables, argument rules and scale.
fn print_syscall_tables(r: &Results) {
    println!(
        "{} rounds interleaved; medians; overhead = median - median(nothing attached) of the same run;\n\
         x floor = each round's overhead / the same round's floor overhead: median (min–max)",
        r.rounds
    );
    for w in Workload::ALL {
        println!();
        println!(
            "{} (ns per syscall)",
            match w {
                Workload::Getppid => format!("getppid(2), {} calls per sample", r.calls),
                Workload::Personality => format!(
                    "personality(0xffffffff), allowed by an argument rule, {} calls per sample",
                    r.calls
                ),
                Workload::Mix => format!(
                    "openat+read+write+close on tmpfs, {} rounds per sample",
                    r.calls / 4
                ),
            }
        );
        println!("| setup | median | overhead | x floor |");
        println!("| --- | ---: | ---: | ---: |");
        for row in r.rows.iter().filter(|row| row.workload == w) {
            println!(
                "| {} | {:.1} | {:.1} | {} |",
                row.setup.label(),
                row.median_ns,
                row.overhead_ns,
                row.ratio_to_floor
                    .map_or("-".to_string(), |x| x.to_string())
            );
        }
    }
    // What argument rules cost: the same allowlist with runtime-default's rules (enforce)
    // and without any (no argument rules), on a call without rules and on one with.
    let overhead = |w: Workload, setup: super::Setup| {
        r.rows
            .iter()
            .find(|row| row.workload == w && row.setup == setup)
            .map(|row| row.overhead_ns)
    };
    println!();
    println!("argument rules: overhead with runtime-default's rules / overhead without any rule");
    println!("| call | with rules | without | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for (w, what) in [
        (Workload::Getppid, "getppid (no rule of its own)"),
        (
            Workload::Personality,
            "personality (5 rules, the last one matches)",
        ),
    ] {
        if let (Some(with), Some(without)) = (
            overhead(w, super::Setup::PolicedEnforce),
            overhead(w, super::Setup::PolicedNoRules),
        ) {
            println!(
                "| {what} | {with:.1} | {without:.1} | {} |",
                if without > 0.0 {
                    format!("{:.2}", with / without)
                } else {
                    "-".to_string()
                }
            );
        }
    }
    print_goals(r);
    println!();
    println!("scale: getppid ns per call with N workloads bound");
    println!("| workloads bound | caller not policed | caller policed | probe map memory |");
    println!("| ---: | ---: | ---: | ---: |");
    for s in &r.scale {
        println!(
            "| {} | {:.1} | {:.1} | {} KiB |",
            s.workloads,
            s.unpoliced_median_ns,
            s.policed_median_ns,
            r.map_memory_bytes.get(&s.workloads).copied().unwrap_or(0) / 1024
        );
    }
}

/// Issue 18's per-syscall goals on getppid, each from per-round ratios (median, range).
fn print_goals(r: &Results) {
    use super::{Setup, ratios};
    let row = |setup: Setup| {
        r.rows
            .iter()
            .find(|row| row.workload == Workload::Getppid && row.setup == setup)
    };
    let Some(nothing) = row(Setup::Nothing) else {
        return;
    };
    println!();
    println!("goals (getppid; per round: median (min–max))");
    println!("| goal | measured | met (median) |");
    println!("| --- | ---: | --- |");
    let goal = |what: &str, summary: Option<ratios::Summary>, limit: f64, strict: bool| {
        if let Some(s) = summary {
            let met = if strict {
                s.median < limit
            } else {
                s.median <= limit
            };
            println!("| {what} | {s} | {} |", if met { "yes" } else { "no" });
        }
    };
    // The rows' own per-round ratios to the floor (computed with the rows).
    for (setup, what, limit) in [
        (
            Setup::PolicedDaemon,
            "policed-and-allowed (as the agent runs it) ≤ 1.2× floor",
            1.2,
        ),
        (Setup::Unpoliced, "unpoliced ≤ 1.1× floor", 1.1),
    ] {
        if let Some(row) = row(setup) {
            goal(what, row.ratio_to_floor, limit, false);
        }
    }
    if let (Some(policed), Some(bpftrace)) = (row(Setup::PolicedDaemon), row(Setup::Bpftrace)) {
        goal(
            "policed overhead < 0.5× bpftrace's",
            ratios::summary(&ratios::overhead_per_round(
                &nothing.samples_ns,
                &policed.samples_ns,
                &bpftrace.samples_ns,
            )),
            0.5,
            true,
        );
    }
}

/// Map memory, nginx, the agent, container start.
fn print_later_tables(r: &Results) {
    if let Some(m) = &r.memory {
        print_memory(m);
    }
    if let Some(n) = &r.nginx {
        println!();
        println!(
            "nginx in a runc container ({}, 1 worker, a {}-byte file), {} on loopback, {} rounds interleaved; medians",
            n.nginx_version, 15, n.wrk, n.rounds
        );
        println!("| setup | requests/s | p99 latency | nginx CPU per request |");
        println!("| --- | ---: | ---: | ---: |");
        for row in &n.rows {
            println!(
                "| {} | {:.0} | {:.0} us | {:.2} us |",
                row.setup.label(),
                row.rps_median,
                row.p99_us_median,
                row.cpu_us_per_request_median
            );
        }
        println!(
            "policed vs unpoliced: throughput loss {:.2}%; p99 x{:.2}; nginx CPU per request {:+.2}%; {:.1} syscalls per request",
            n.throughput_loss_percent,
            n.p99_ratio,
            n.cpu_per_request_increase_percent,
            n.syscalls_per_request
        );
        println!(
            "policy: runtime-default + {} learned ({}); {} violations counted over {} policed requests",
            n.learned_beyond_runtime_default.len(),
            n.learned_beyond_runtime_default.join(", "),
            n.policed_violations,
            n.policed_requests
        );
    }
    if let Some(a) = &r.agent {
        println!();
        println!("agent");
        println!("| figure | value |");
        println!("| --- | ---: |");
        println!(
            "| start to programs attached | {:.0} ms |",
            a.start_to_attached_ms
        );
        println!(
            "| 1,000 cgroups created to all bound | {:.0} ms |",
            a.bind_1000_workloads_ms
        );
        println!(
            "| RSS with 1,000 workloads bound | {} KiB |",
            a.rss_kib_1000_workloads
        );
        println!(
            "| flood: denied syscalls (audit) | {} at {:.0}/s |",
            a.flood_calls, a.flood_calls_per_sec
        );
        println!(
            "| flood: events logged / dropped (counted) | {} / {} |",
            a.flood_events_logged, a.flood_events_dropped
        );
        println!(
            "| flood: agent CPU, RSS | {:.0}% of one core, {} KiB |",
            a.flood_agent_cpu_percent, a.flood_agent_rss_kib
        );
        println!(
            "| policy change to maps written: file renamed in to the reload logged (median of {}) | {:.1} ms |",
            a.reload_count,
            a.reload_end_to_end_us / 1e3
        );
        println!(
            "| policy change to maps written: the agent's own figure, inotify event to last map write | {:.1} ms |",
            a.reload_agent_us / 1e3
        );
        println!(
            "| change of the policy of 1,000 workloads: rebound, inotify event to last map write | {} in {:.1} ms |",
            a.reload_1000_rebound,
            a.reload_1000_us / 1e3
        );
    }
    if let Some(st) = &r.start {
        println!();
        println!(
            "container start: `runc run` of /bin/true, {} rounds interleaved ({} of the held starts were held until bound)",
            st.runs, st.held_and_bound
        );
        println!("| setup | median | p90 |");
        println!("| --- | ---: | ---: |");
        for row in &st.rows {
            println!(
                "| {} | {:.1} ms | {:.1} ms |",
                row.setup.label(),
                row.median_ms,
                row.p90_ms
            );
        }
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(b: f64) -> String {
    thousands(b.round() as u64)
}

/// Kernel map memory: by workloads and policies, per item, per map, and the goal.
fn print_memory(m: &MemoryReport) {
    let c0 = m.possible_cpus;
    let targets = maps::TARGET_CPUS;
    println!();
    println!(
        "kernel map memory, bytes: the maps' own accounting (memlock in fdinfo), measured on this machine ({c0} possible CPUs), and computed for {} CPUs from the map definitions",
        targets.map(|c| c.to_string()).join(" and ")
    );
    print!("| workloads | policies | slots | {c0} CPUs (measured) | per workload |");
    for c in targets {
        print!(" {c} CPUs | per workload |");
    }
    println!();
    println!(
        "| ---: | ---: | ---: | ---: | ---: |{}",
        " ---: | ---: |".repeat(targets.len())
    );
    for row in &m.rows {
        print!(
            "| {} | {} | {} | {} | {} |",
            thousands(u64::from(row.workloads)),
            row.policies,
            row.slots,
            thousands(row.measured.total_bytes),
            bytes(row.measured.per_workload_bytes)
        );
        for at in &row.computed {
            print!(
                " {} | {} |",
                thousands(at.total_bytes),
                bytes(at.per_workload_bytes)
            );
        }
        println!();
    }
    println!(
        "per workload: all of the probe's kernel map memory (every map, preallocated or not) divided by the workloads bound; slots: the POLICIES capacity the agent gives that many policies (2 × max(policies, 8) + 4)"
    );
    if !m.items.is_empty() {
        println!();
        println!(
            "per item, {} workloads on {} policies (an item's map memory / its entries: what one more adds)",
            thousands(u64::from(maps::GOAL_WORKLOADS)),
            maps::GOAL_POLICIES
        );
        print!("| item |");
        for i in &m.items {
            print!(" {} CPUs |", i.cpus);
        }
        println!();
        println!("| --- |{}", " ---: |".repeat(m.items.len()));
        let line = |what: &str, f: &dyn Fn(&maps::MemoryItems) -> f64| {
            print!("| {what} |");
            for i in &m.items {
                print!(" {} |", bytes(f(i)));
            }
            println!();
        };
        line("WORKLOADS entry", &|i| i.workloads_entry_bytes);
        line("CGROUP_CACHE entry", &|i| i.cache_entry_bytes);
        line("one policy slot (POLICIES entry + COUNTS / slots)", &|i| {
            i.slot_bytes
        });
        line(
            "a workload with a policy of its own (binding + slot)",
            &|i| i.own_policy_bytes,
        );
        line(
            "a workload on a policy 10 share (binding + slot / 10)",
            &|i| i.ten_per_policy_bytes,
        );
        line("all maps", &|i| i.total_bytes as f64);
    }
    if !m.maps.is_empty() {
        println!();
        println!(
            "maps, {} workloads on {} policies (memlock in bytes)",
            thousands(u64::from(maps::GOAL_WORKLOADS)),
            maps::GOAL_POLICIES
        );
        print!("| map | type | flags | key | value | max_entries | {c0} CPUs (measured) |");
        for c in targets {
            print!(" {c} CPUs |");
        }
        println!();
        println!(
            "| --- | --- | --- | ---: | ---: | ---: | ---: |{}",
            " ---: |".repeat(targets.len())
        );
        for map in &m.maps {
            let l = &map.line;
            print!(
                "| {} | {} | {:#x} | {} | {} | {} | {} |",
                l.name,
                maps::type_name(l.map_type),
                l.map_flags,
                l.key_size,
                l.value_size,
                thousands(u64::from(l.max_entries)),
                thousands(l.memlock)
            );
            for c in targets {
                print!(
                    " {} |",
                    map.computed_memlock
                        .get(&c)
                        .map_or("-".into(), |b| thousands(*b))
                );
            }
            println!();
        }
    }
    if let Some(g) = &m.goal {
        let verdict = |met: bool| if met { "met" } else { "missed" };
        println!(
            "goal ≤ {} KiB per workload at {} workloads, {} policies, {} CPUs: {} B computed — {}; {} B measured on this machine ({} CPUs) — {}",
            g.limit_bytes / 1024.0,
            thousands(u64::from(g.workloads)),
            g.policies,
            g.cpus,
            bytes(g.computed_bytes),
            verdict(g.computed_met),
            bytes(g.measured_bytes),
            g.measured_cpus,
            verdict(g.measured_met)
        );
    }
}
