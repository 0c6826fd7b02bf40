use std::{ffi::OsString, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use sysfence::{agent, policy, run};

/// Per-container syscall allowlists, enforced by eBPF in the host kernel.
///
/// Adopt a policy in four steps: `watch` what workloads call, `record` a policy from
/// it (it passes `check`), `report` what it would deny (a dry run, offline or from the
/// agent's audit events), then enforce it (`run --mode enforce`, or the `agent` with
/// `mode: enforce`) once the report says it is safe.
#[derive(Parser)]
#[command(
    name = "sysfence",
    version,
    about,
    long_about,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Count every syscall; nothing else.
    Monitor,
    /// Count, and report each violation; nothing is stopped (the dry run).
    Audit,
    /// Count, report, and act: kill (after the syscall ran) or deny (BPF LSM).
    Enforce,
}

impl From<ModeArg> for policy::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Monitor => policy::Mode::Monitor,
            ModeArg::Audit => policy::Mode::Audit,
            ModeArg::Enforce => policy::Mode::Enforce,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files without touching the kernel (no root needed).
    ///
    /// Each problem is printed as `file:line:column: error: message`, with a hint when
    /// there is one. Exits 0 when every file is valid (warnings allowed), 1 otherwise.
    /// It also says what it read: each file, each set included and where it was found,
    /// and what it passed over (on stderr, lines `read:`, `set`, `skipped:`).
    ///
    /// A file is read alone, with the sets it includes. A set NAME is looked for, in
    /// order: among the files given (by metadata.name); NAME.yaml or NAME.yml in the
    /// including file's own directory, then in its sets/ (not a symlinked one); in
    /// --sets DIR; among the shipped sets. Nothing is walked to find a set. An include
    /// found nowhere is an error at its file:line that lists what was searched.
    ///
    /// A directory gives its *.yaml and *.yml files and those of its subdirectories, as
    /// `agent --policies` reads it: at most 4 levels down and 10000 entries, on one
    /// filesystem, each directory once (symlink loops are reported), hidden entries
    /// (kubelet's ..data) left out.
    #[command(
        after_help = "Examples:\n  sysfence check policies/\n  sysfence check web.yaml sets/base.yaml\n  sysfence check --sets /etc/sysfence/sets web.yaml"
    )]
    Check {
        /// Policy or set files, or directories of them.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// A directory of sets to look for includes in, after the including file's
        /// own directory and its sets/, before the shipped sets.
        #[arg(long, value_name = "DIR")]
        sets: Option<PathBuf>,
        /// Print findings as JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one command in a fresh cgroup under a policy, and report its syscalls.
    ///
    /// The command joins the policed cgroup before it executes, so its first syscall is
    /// already policed. The cgroup is torn down when the command exits (processes it
    /// left behind are killed). sysfence exits with the command's status, 128+N when a
    /// signal N ended it (137 for a kill by the policy). Needs root.
    #[command(
        after_help = "Examples:\n  sysfence run --policy web.yaml --mode audit -- ./server --port 8080\n  sysfence run --policy p.yaml --json-report out.json -- /bin/true"
    )]
    Run {
        /// The policy file (one SyscallPolicy; its selector is ignored). It is read
        /// alone, with the sets it includes (see `sysfence check --help`).
        #[arg(long, short = 'p', value_name = "FILE")]
        policy: PathBuf,
        /// A directory of sets to look for includes in, after the including file's
        /// own directory and its sets/, before the shipped sets.
        #[arg(long, value_name = "DIR")]
        sets: Option<PathBuf>,
        /// Override the policy's mode.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Write counts and violations as JSON to this file.
        #[arg(long, value_name = "OUT")]
        json_report: Option<PathBuf>,
        /// Print nothing on stderr but errors.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Show live syscalls per workload (pod, container or cgroup).
    ///
    /// On a terminal: a top-like table (rows = workload x syscall; columns rate/s,
    /// total, ABI, violations; keys r/t/v/s/w sort, arrows scroll, q quits). Otherwise,
    /// or with --json: one JSON line per interval per workload with the per-syscall
    /// deltas since the previous line ({"t_ms","interval_ms","source","cgroup_id",
    /// "cgroup","namespace","pod","container","policy","mode","total","deltas":
    /// {"x86_64:read":12},"violations":{..},"gone"}); the last line of a workload that
    /// went away, or of every workload when watch stops, has "gone": true.
    ///
    /// Data comes from the running agent's API (with each workload's policy, mode and
    /// violations) or, when the socket is missing or refuses, from sysfence's own probe
    /// (standalone: monitor only, one counting slot per workload, so counts are exact
    /// per workload). The mode used is printed on stderr and in the title bar. Needs
    /// root in standalone mode.
    #[command(
        after_help = "Examples:\n  sysfence watch                                  # every container, on a terminal\n  sysfence watch --namespace shop --pod web-1\n  sysfence watch --cgroup 'system.slice/*' --json --interval 5\n  sysfence watch --standalone --json --count 10 > calls.jsonl"
    )]
    Watch {
        #[command(flatten)]
        filters: FilterArgs,
        /// JSON lines on stdout even on a terminal.
        #[arg(long)]
        json: bool,
        /// Seconds between snapshots (standalone; the agent sends one per second).
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Stop after N intervals.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The agent's API socket.
        #[arg(long, value_name = "PATH", default_value = sysfence::api::DEFAULT_SOCKET)]
        api: PathBuf,
        /// Use sysfence's own probe even if the agent runs.
        #[arg(long)]
        standalone: bool,
        /// Workloads watched at most (standalone: one probe slot each).
        #[arg(long, default_value_t = 128, value_name = "N")]
        max_workloads: u32,
        #[command(flatten)]
        discovery: DiscoveryArgs,
    },
    /// Learn a policy: record the syscalls of live workloads, or of one command.
    ///
    /// Live: `record [FILTERS] --duration 60s` counts every workload matching the
    /// filters (as `watch` does, with its own probe: it works with or without the
    /// agent) and learns one policy from the union of what they did (replicas of one
    /// workload make one policy). Command: `record -o DIR -- CMD ARGS` runs the command
    /// in a fresh cgroup that it joins before exec (its first syscall is counted),
    /// until it exits; sysfence then exits with the command's status.
    ///
    /// Writes DIR/policy.yaml (passes `sysfence check`; mode audit by default; the
    /// allowlist is every syscall observed, per ABI; selector from the filters) and
    /// DIR/recording.json (versioned; exact counts per workload, ABI and syscall, first
    /// and last seen, the workloads' identity, the time span, the command). Live
    /// recordings include `runtime-default` (what a container's start needs, which a
    /// recording of running workloads cannot see); the YAML says so and how many names
    /// that adds. Needs root.
    #[command(
        after_help = "Examples:\n  sysfence record -o learned/ -- ./server --selftest\n  sysfence record --namespace shop --container web --duration 10m -o web/\n  sysfence record --cgroup 'system.slice/nginx.service' --duration 60s -o nginx/ --no-include\n\nNext: sysfence report --policy learned/policy.yaml --from learned/recording.json"
    )]
    Record {
        #[command(flatten)]
        filters: FilterArgs,
        /// How long to record live workloads: 90s, 10m, 1h, 500ms (plain numbers are
        /// seconds).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Directory for policy.yaml and recording.json (created if missing).
        #[arg(long, short = 'o', value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// metadata.name of the policy (default: learned-<command|container|pod|...>).
        #[arg(long)]
        name: Option<String>,
        /// Mode written in the policy.
        #[arg(long, value_enum, default_value_t = ModeArg::Audit)]
        mode: ModeArg,
        /// A set to include (repeatable; default: runtime-default for live workloads,
        /// none for a command).
        #[arg(long = "include", value_name = "SET", conflicts_with = "no_include")]
        include: Vec<String>,
        /// Include no set: allow only what was observed.
        #[arg(long)]
        no_include: bool,
        /// A directory of sets to look for --include sets in, after the output
        /// directory and its sets/, before the shipped sets.
        #[arg(long, value_name = "DIR")]
        sets: Option<PathBuf>,
        /// Seconds between samples (first/last seen are exact to this).
        #[arg(long, default_value_t = 0.1, value_name = "SECS")]
        interval: f64,
        /// Live workloads recorded at most (one probe slot each).
        #[arg(long, default_value_t = 128, value_name = "N")]
        max_workloads: u32,
        #[command(flatten)]
        discovery: DiscoveryArgs,
        /// Record the sandbox, not the application: for runsc (gVisor) and Kata
        /// workloads, the syscalls their own host processes (the Sentry and the gofer,
        /// the VMM) make to the host kernel. Writes a `target: sandbox` policy, which
        /// the agent binds to those workloads' host cgroups as written, beside the
        /// application's policy inside. Other workloads are passed over.
        #[arg(long)]
        sandbox_process: bool,
        /// Print nothing on stderr but errors.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// The command and its arguments.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// A dry-run report: what a policy would deny, per workload, before enforcing it.
    ///
    /// Evidence, one of:
    ///
    /// * `--policy CANDIDATE --from RECORDING`: offline, the candidate judged against a
    ///   recording's exact counts; no kernel, no root (for CI pipelines).
    ///
    /// * `--events AGENT_LOG`: the violations the agent logged (JSON lines) for
    ///   workloads bound to `audit` policies.
    ///
    /// * neither: the running agent, asked on its API socket.
    ///
    /// For each workload: the syscalls that would have been denied (exact counts, the
    /// rate-limited events' `suppressed` included; first and last seen; an example pid,
    /// comm and exe from audit events), the policy change that would allow them (YAML
    /// to add), and a verdict: "safe to enforce: 0 would-be denials in 3h" or "not
    /// safe: N would-be denials of K syscalls".
    ///
    /// Or, with `--compare RECORDING` twice or more, no dry run but the runtimes
    /// compared: one workload recorded under different runtimes (runc, runsc, ...), one
    /// column per recording, the first the baseline. A column's "host" figures are what
    /// reached the host kernel (under runsc, the calls of gVisor's Sentry and gofer);
    /// its "application" figures are what the application asked for (under runc the
    /// same calls; under runsc only if recorded with gVisor's trace session, else "not
    /// seen"). Then, against the baseline: distinct host syscalls and host calls per
    /// second as ratios, the host syscalls only one side reaches, and every syscall's
    /// calls side by side.
    ///
    /// Exit status: 0 when nothing would be denied, 1 when something would, 2 on error;
    /// a comparison judges nothing: 0, or 2 on error.
    #[command(
        after_help = "Examples:\n  sysfence report --policy learned/policy.yaml --from learned/recording.json\n  sysfence report --events /var/log/sysfence.jsonl --format markdown\n  sysfence report --format html -o dry-run.html          # from the running agent\n  sysfence report --compare runc.json --compare runsc.json --format markdown\n\nIn CI:\n  sysfence report --policy web.yaml --from web-recording.json --format markdown >> \"$GITHUB_STEP_SUMMARY\" || exit 1"
    )]
    Report {
        /// The candidate policy (one SyscallPolicy). With --events, it makes the
        /// suggested changes exact (spec.deny, spec.abi).
        #[arg(long, short = 'p', value_name = "FILE")]
        policy: Option<PathBuf>,
        /// A recording made by `sysfence record` (offline report).
        #[arg(long, value_name = "RECORDING", conflicts_with = "events")]
        from: Option<PathBuf>,
        /// The agent's JSON-lines log.
        #[arg(long, value_name = "AGENT_LOG")]
        events: Option<PathBuf>,
        /// A recording of the workload under one runtime (`sysfence record`), to compare;
        /// repeat it, once per runtime (two at least). The first is the baseline.
        #[arg(
            long,
            value_name = "RECORDING",
            action = clap::ArgAction::Append,
            conflicts_with_all = ["policy", "from", "events"]
        )]
        compare: Vec<PathBuf>,
        /// The agent's API socket, asked when neither --from nor --events is given.
        #[arg(long, value_name = "PATH", default_value = sysfence::api::DEFAULT_SOCKET)]
        api: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// Write the report here instead of stdout.
        #[arg(long, short = 'o', value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// Run the node agent: bind every policy in DIR to the cgroups its selector matches.
    ///
    /// Cgroups created later are bound as they appear. Violations are logged as JSON
    /// lines on stdout. SIGINT or SIGTERM stop it cleanly. Needs root.
    ///
    /// The probe is pinned under --pin-path: when the agent stops (SIGTERM, a crash,
    /// SIGKILL) enforcement goes on, and the next agent adopts the pinned probe, its
    /// bindings and counters, without a moment unpoliced. Changes to the policy
    /// directory (or SIGHUP) reload it: a changed policy is written into a free slot
    /// and its workloads switched to it in one map write each; a file that does not
    /// compile is rejected with file:line:reason and the policies in force stay.
    ///
    /// DIR gives its *.yaml and *.yml files and those of its subdirectories: at most 4
    /// levels below DIR and 10000 entries in all, only on DIR's filesystem, each
    /// directory once (a symlink loop such as `a -> .` is logged and passed over),
    /// hidden entries left out (a kubelet ConfigMap volume is read through its per-key
    /// links, not its `..data` directory). What is passed over is logged with its
    /// path and the reason. Includes resolve among DIR's sets, then beside the
    /// including file, in --sets, and among the shipped sets (see `check --help`).
    #[command(
        after_help = "Examples:\n  sysfence agent --policies /etc/sysfence/policies --metrics 127.0.0.1:9464\n  sysfence status\n  sysfence agent --uninstall     # stop policing: remove the pinned probe"
    )]
    Agent {
        /// Directory of policy and set files.
        #[arg(long, value_name = "DIR", required_unless_present = "uninstall")]
        policies: Option<PathBuf>,
        /// A directory of sets to look for includes in, after DIR's own sets, before
        /// the shipped sets (watched for changes too).
        #[arg(long, value_name = "DIR")]
        sets: Option<PathBuf>,
        /// Where the probe is pinned (on bpffs; /sys/fs/bpf is mounted if need be).
        #[arg(long, value_name = "DIR", default_value = sysfence::probe::pins::DEFAULT_ROOT)]
        pin_path: PathBuf,
        /// Do not pin: enforcement ends with the agent (for trials).
        #[arg(long)]
        no_pin: bool,
        /// Remove the pinned probe (programs detach, maps go) and exit. Run it after
        /// stopping the agent; the node is unpoliced from then on.
        #[arg(long)]
        uninstall: bool,
        /// Serve Prometheus metrics (GET /metrics) and a liveness probe (GET /healthz)
        /// on this address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// The local API socket (`sysfence status`, `report`, `watch`).
        #[arg(long, value_name = "PATH", default_value = sysfence::api::DEFAULT_SOCKET)]
        api_socket: PathBuf,
        /// A uid besides root that may use the API socket (read-only: status, events,
        /// watch); repeatable. By default only root may.
        #[arg(long, value_name = "UID")]
        api_socket_uid: Vec<u32>,
        /// The policy (its metadata.name) for containers whose identity cannot be
        /// established (the CRI does not know them yet, no runtime state accounts for
        /// them) and that no policy could select. Containers of unknown identity that
        /// some policy could select get the strictest such policy regardless.
        #[arg(long, value_name = "NAME")]
        default_policy: Option<String>,
        /// Seconds between full rescans of the cgroup tree (inotify catches most
        /// changes at once).
        #[arg(long, default_value_t = 2.0, value_name = "SECS")]
        rescan_every: f64,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
        /// The socket `sysfence wrap` asks to bind a container at `start`.
        #[arg(long, value_name = "PATH", default_value = sysfence::workload::socket::DEFAULT_SOCKET)]
        runtime_socket: PathBuf,
        /// A uid besides root that may ask on the runtime socket (the uid a rootless
        /// runtime wrapper runs as); repeatable. By default only root may.
        #[arg(long, value_name = "UID")]
        runtime_socket_uid: Vec<u32>,
        /// A CRI socket (containerd, CRI-O) to read pod metadata from; repeatable.
        /// Default: the usual containerd and CRI-O sockets that exist.
        #[arg(long, value_name = "PATH")]
        cri_socket: Vec<PathBuf>,
        /// Read no CRI socket.
        #[arg(long, conflicts_with = "cri_socket")]
        no_cri: bool,
        /// Do not hold new containers at their first exec. By default, an exec in a
        /// cgroup no binding knows, below a cgroup a selector's cgroupPath names or a
        /// found container sits in, is stopped until the agent has looked at that
        /// cgroup (and bound it, if a policy selects it): no container's entrypoint runs
        /// unpoliced, even without `sysfence wrap`. While no agent runs, such execs wait
        /// for the next one.
        #[arg(long)]
        no_start_hold: bool,
        /// A runtime state directory (a runtime's `--root`) to read besides /run/runc,
        /// /run/crun, /run/youki, /var/run/runsc and /run/containerd/runc/*; repeatable.
        #[arg(long, value_name = "DIR")]
        runtime_root: Vec<PathBuf>,
        /// Violation events per workload and syscall per second, limited in the kernel;
        /// past it events are counted as suppressed (counts stay exact). 0: no limit.
        #[arg(long, default_value_t = probe_common_default_rate(), value_name = "N")]
        events_per_second: u32,
        /// Violation events per workload per second, whatever the syscall: the budget
        /// that keeps a workload cycling through syscall numbers from flooding the
        /// event path every workload shares. Held-back events count as suppressed
        /// (totals stay exact); `status` and /metrics show them per workload. 0: no budget.
        #[arg(long, default_value_t = probe_common_default_budget(), value_name = "N")]
        workload_events_per_second: u32,
    },
    /// Run an OCI runtime (runc, crun, runsc, youki) with ARGS, binding each container
    /// before its entrypoint runs.
    ///
    /// Use it as the node's runtime binary (containerd's `BinaryName`, CRI-O's
    /// `runtime_path`, Docker's and Podman's `--runtime`), through a two-line script:
    /// `exec sysfence wrap --runtime /usr/sbin/runc -- "$@"`. Every command goes to the
    /// runtime unchanged, except that `start` first asks the agent to bind the
    /// container, and runs once it is bound: the entrypoint's first syscall is policed.
    /// `run` is run as `create`, that binding, and `start`; unless `--detach`, the
    /// wrapper then waits for the container as `run` does (signals forwarded to its
    /// init, deleted unless `--keep`, the init's exit status). `restore`, which has no
    /// `start`, is refused. If the agent cannot be reached, nothing starts unless
    /// `--fail-open`.
    #[command(
        after_help = "Example (containerd, /usr/local/bin/sysfence-runc):\n  #!/bin/sh\n  exec /usr/local/bin/sysfence wrap --runtime /usr/sbin/runc -- \"$@\""
    )]
    Wrap {
        /// The real runtime binary.
        #[arg(long, value_name = "PATH")]
        runtime: PathBuf,
        /// The agent's runtime socket.
        #[arg(long, value_name = "PATH", default_value = sysfence::workload::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Start the container unpoliced when the agent cannot be reached.
        #[arg(long)]
        fail_open: bool,
        /// Seconds to wait for the agent's answer.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        timeout: f64,
        /// The runtime's arguments.
        #[arg(last = true, value_name = "ARGS", allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The running agent's health, its probe, its policies and its bound workloads.
    #[command(
        after_help = "Examples:\n  sysfence status\n  sysfence status --json | jq .workloads"
    )]
    Status {
        /// The agent's API socket.
        #[arg(long, value_name = "PATH", default_value = sysfence::api::DEFAULT_SOCKET)]
        api: PathBuf,
        /// Print the agent's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What this kernel lets sysfence do, and which syscalls `deny` can prevent.
    ///
    /// Probes BTF, tp_btf, bpf_send_signal, BPF LSM, the cgroup layout, ia32 and x32
    /// syscalls, lockdown and io_uring, and shows the preventability table measured for
    /// this kernel (syscalls an LSM hook fails with EPERM before their side effects,
    /// and those that run anyway). Run as root for the rows that load programs.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Convert between sysfence policies and OCI/Docker seccomp profiles.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Which workloads: every filter given must match (names exactly; --cgroup is a glob
/// under the cgroup v2 root where `*` stops at `/`, as a policy's cgroupPath).
#[derive(clap::Args, Clone, Debug, Default)]
struct FilterArgs {
    /// The pod's namespace.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The pod's name.
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// The container's name.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// A cgroup path glob, e.g. 'kubepods/*/pod*/*' (any cgroup, container or not).
    #[arg(long, value_name = "GLOB")]
    cgroup: Option<String>,
}

/// Where `watch` and `record` (with their own probe) learn what a cgroup is.
#[derive(clap::Args, Clone, Debug, Default)]
struct DiscoveryArgs {
    /// A runtime state directory (a runtime's `--root`) to read besides /run/runc,
    /// /run/crun, /run/youki, /var/run/runsc and /run/containerd/runc/*, to name
    /// containers; repeatable.
    #[arg(long, value_name = "DIR")]
    runtime_root: Vec<PathBuf>,
    /// A CRI socket (containerd, CRI-O) to read pod names, namespaces and labels from;
    /// repeatable. Default: the usual containerd and CRI-O sockets that exist.
    #[arg(long, value_name = "PATH")]
    cri_socket: Vec<PathBuf>,
}

impl From<DiscoveryArgs> for sysfence::watch::standalone::Discovery {
    fn from(d: DiscoveryArgs) -> Self {
        sysfence::watch::standalone::Discovery {
            runtime_roots: d.runtime_root,
            cri_sockets: (!d.cri_socket.is_empty()).then_some(d.cri_socket),
        }
    }
}

impl From<FilterArgs> for sysfence::watch::snapshot::Filters {
    fn from(f: FilterArgs) -> Self {
        sysfence::watch::snapshot::Filters {
            namespace: f.namespace,
            pod: f.pod,
            container: f.container,
            cgroup: f.cgroup,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Markdown,
    Html,
}

/// `90s`, `10m`, `1h`, `500ms`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((t, ""), |i| t.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration such as 90s, 10m, 1h, 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m, h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{text}`: the duration must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Read an OCI/Docker seccomp JSON profile and write the equivalent sysfence policy.
    ///
    /// The profile is resolved for amd64 (x86_64, plus i386 and x32 when it lists
    /// them), a set of capabilities and a kernel version, as a container runtime would.
    /// Names allowed outright go to `allow`; names allowed for some argument values go
    /// to `rules` with the same conditions; errnos other than EPERM go to `errno`. What
    /// sysfence cannot express (TRACE/NOTIFY, argument conditions of a denylist
    /// profile) is approximated and listed as warnings on stderr; the policy comes out
    /// in audit mode.
    #[command(
        after_help = "Examples:\n  sysfence policy import-seccomp default.json -o docker-default.yaml\n  sysfence policy import-seccomp profile.json --name web --cap SYS_ADMIN --strict-args"
    )]
    ImportSeccomp(sysfence::seccomp::command::ImportCommand),
    /// Write a policy as a seccomp profile kubelet can use as a `Localhost` profile.
    ///
    /// `allow` becomes one SCMP_ACT_ALLOW rule, each argument rule one SCMP_ACT_ALLOW
    /// rule with its `args`, each errno an SCMP_ACT_ERRNO rule. Under `namespaces:
    /// deny`, clone3 (whose flags a seccomp filter cannot read) fails with ENOSYS, as in
    /// Docker's profile. Import of the export gives the same policy back.
    #[command(
        after_help = "Example:\n  sysfence policy export-seccomp web.yaml -o /var/lib/kubelet/seccomp/web.json"
    )]
    ExportSeccomp(sysfence::seccomp::command::ExportCommand),
}

fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    use sysfence::seccomp::command::{export_command, import_command};
    match command {
        PolicyCommand::ImportSeccomp(c) => import_command(c),
        PolicyCommand::ExportSeccomp(c) => export_command(c),
    }
}

const fn probe_common_default_rate() -> u32 {
    probe_common::DEFAULT_EVENTS_PER_SECOND
}

const fn probe_common_default_budget() -> u32 {
    probe_common::DEFAULT_WORKLOAD_EVENTS_PER_SECOND
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYSFENCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stdout)
            .init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { files, json, sets } => {
            return sysfence::check::run(&files, sets.as_deref(), json);
        }
        Command::Run {
            policy,
            sets,
            mode,
            json_report,
            quiet,
            command,
        } => {
            init_logging(LogFormat::Text);
            run::run(run::RunOptions {
                policy,
                sets,
                mode: mode.map(Into::into),
                json_report,
                quiet,
                command,
            })
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Watch {
            filters,
            json,
            interval,
            count,
            api,
            standalone,
            max_workloads,
            discovery,
        } => sysfence::watch::run(sysfence::watch::WatchOptions {
            filters: filters.into(),
            json,
            interval: Duration::from_secs_f64(interval.max(0.05)),
            api,
            standalone,
            max_workloads,
            count,
            discovery: discovery.into(),
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Record {
            filters,
            duration,
            output,
            name,
            mode,
            include,
            no_include,
            sets,
            interval,
            max_workloads,
            discovery,
            sandbox_process,
            quiet,
            command,
        } => sysfence::record::record(sysfence::record::RecordOptions {
            output,
            filters: filters.into(),
            duration,
            command,
            name,
            mode: mode.into(),
            include: if no_include {
                Some(Vec::new())
            } else if include.is_empty() {
                None
            } else {
                Some(include)
            },
            interval: Duration::from_secs_f64(interval.max(0.01)),
            max_workloads,
            quiet,
            discovery: discovery.into(),
            sets,
            sandbox_process,
        })
        .map(|code| ExitCode::from(code.clamp(0, 255) as u8)),
        Command::Report {
            policy,
            from,
            events,
            compare,
            api,
            format,
            output,
        } => {
            use sysfence::report::command::{Format, ReportOptions};
            sysfence::report::command::run(ReportOptions {
                policy,
                from,
                events,
                compare,
                api,
                format: match format {
                    ReportFormat::Table => Format::Table,
                    ReportFormat::Json => Format::Json,
                    ReportFormat::Markdown => Format::Markdown,
                    ReportFormat::Html => Format::Html,
                },
                output,
            })
            .map(|code| ExitCode::from(code as u8))
        }
        Command::Doctor { json } => sysfence::doctor::run(json).map(|()| ExitCode::SUCCESS),
        Command::Policy(command) => policy_command(command).map(|()| ExitCode::SUCCESS),
        Command::Wrap {
            runtime,
            socket,
            fail_open,
            timeout,
            args,
        } => sysfence::workload::wrap::wrap(sysfence::workload::wrap::WrapOptions {
            runtime,
            socket,
            fail_open,
            timeout: Duration::from_secs_f64(timeout.max(0.1)),
            args,
        })
        .map(ExitCode::from),
        Command::Status { api, json } => sysfence::status::print(&api, json).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Agent {
            uninstall: true,
            pin_path,
            ..
        } => agent::uninstall(&pin_path).map(|removed| {
            if removed.is_empty() {
                println!("nothing pinned under {}", pin_path.display());
            } else {
                println!(
                    "removed {} pins under {}: the probe is detached, nothing is policed",
                    removed.len(),
                    pin_path.display()
                );
            }
            ExitCode::SUCCESS
        }),
        Command::Agent {
            policies,
            sets,
            rescan_every,
            log_format,
            runtime_socket,
            cri_socket,
            no_cri,
            no_start_hold,
            runtime_root,
            events_per_second,
            workload_events_per_second,
            pin_path,
            no_pin,
            uninstall: false,
            metrics,
            api_socket,
            api_socket_uid,
            default_policy,
            runtime_socket_uid,
        } => {
            let policies = policies.expect("clap requires --policies without --uninstall");
            init_logging(log_format);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(agent::run(agent::AgentOptions {
                        policies,
                        sets,
                        rescan_every: Duration::from_secs_f64(rescan_every.max(0.1)),
                        runtime_socket,
                        runtime_socket_uids: runtime_socket_uid,
                        cri_sockets: if no_cri {
                            Some(Vec::new())
                        } else if cri_socket.is_empty() {
                            None
                        } else {
                            Some(cri_socket)
                        },
                        runtime_roots: runtime_root,
                        events_per_second,
                        workload_events_per_second,
                        pin_root: (!no_pin).then_some(pin_path),
                        api_socket,
                        api_socket_uids: api_socket_uid,
                        default_policy,
                        metrics,
                        start_hold: !no_start_hold,
                    }))
                })
                .map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        if let Some(rejected) = e.downcast_ref::<policy::Rejected>() {
            eprintln!("{rejected}");
            eprintln!("sysfence: policy rejected; nothing was changed");
        } else {
            eprintln!("sysfence: error: {e:#}");
        }
        ExitCode::from(2)
    })
}
