use std::{ffi::OsString, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use sysfence::{daemon, policy, run};

/// Per-container syscall allowlists, enforced by eBPF in the host kernel.
///
/// Adopt a policy in steps: write or include an allowlist, `check` it, try it on one
/// command with `run --mode audit`, then let the `agent` bind it to cgroups in audit
/// mode, and switch to `enforce` once it reports no violations.
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
    /// Directories are searched for *.yaml and *.yml files.
    #[command(
        after_help = "Examples:\n  sysfence check policies/\n  sysfence check web.yaml sets/base.yaml"
    )]
    Check {
        /// Policy or set files, or directories of them.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
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
        /// The policy file (one SyscallPolicy; its selector is ignored).
        #[arg(long, short = 'p', value_name = "FILE")]
        policy: PathBuf,
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
    /// Run the node agent: bind every policy in DIR to the cgroups its selector matches.
    ///
    /// Cgroups created later are bound as they appear. Violations are logged as JSON
    /// lines on stdout. SIGINT or SIGTERM stop it cleanly. Needs root.
    #[command(after_help = "Example:\n  sysfence agent --policies /etc/sysfence/policies")]
    Agent {
        /// Directory of policy and set files.
        #[arg(long, value_name = "DIR")]
        policies: PathBuf,
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
        /// A CRI socket (containerd, CRI-O) to read pod metadata from; repeatable.
        /// Default: the usual containerd and CRI-O sockets that exist.
        #[arg(long, value_name = "PATH")]
        cri_socket: Vec<PathBuf>,
        /// Read no CRI socket.
        #[arg(long, conflicts_with = "cri_socket")]
        no_cri: bool,
        /// A runtime state directory (a runtime's `--root`) to read besides /run/runc,
        /// /run/crun, /run/youki, /var/run/runsc and /run/containerd/runc/*; repeatable.
        #[arg(long, value_name = "DIR")]
        runtime_root: Vec<PathBuf>,
        /// Violation events per workload and syscall per second, limited in the kernel;
        /// past it events are counted as suppressed (counts stay exact). 0: no limit.
        #[arg(long, default_value_t = probe_common_default_rate(), value_name = "N")]
        events_per_second: u32,
    },
    /// Run an OCI runtime (runc, crun, runsc, youki) with ARGS, binding each container
    /// before its entrypoint runs.
    ///
    /// Use it as the node's runtime binary (containerd's `BinaryName`, CRI-O's
    /// `runtime_path`, Docker's and Podman's `--runtime`), through a two-line script:
    /// `exec sysfence wrap --runtime /usr/sbin/runc -- "$@"`. Every command goes to the
    /// runtime unchanged; `start` first asks the agent to bind the container, and runs
    /// once it is bound: the entrypoint's first syscall is policed. If the agent cannot
    /// be reached, `start` fails unless `--fail-open`.
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
    /// Hold a benchmark setup until stdin closes (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchHold {
        what: String,
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Cgroups to bind to the policy (idle).
        #[arg(long, default_value_t = 1)]
        workloads: u32,
        /// Also create a bound cgroup for the workload and print its path (idle).
        #[arg(long)]
        caller: bool,
        /// Also bind this existing cgroup (under the cgroup v2 root) (idle).
        #[arg(long)]
        bind: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Read an OCI/Docker seccomp JSON profile and write the equivalent sysfence policy.
    ///
    /// The profile is resolved for amd64 (x86_64, plus i386 and x32 when it lists
    /// them), a set of capabilities and a kernel version, as a container runtime would.
    /// What sysfence cannot express (argument filters, errno returns, TRACE/NOTIFY) is
    /// approximated and listed as warnings on stderr; the policy comes out in audit mode.
    #[command(
        after_help = "Examples:\n  sysfence policy import-seccomp default.json -o docker-default.yaml\n  sysfence policy import-seccomp profile.json --name web --cap SYS_ADMIN --strict-args"
    )]
    ImportSeccomp {
        /// The seccomp profile (JSON).
        file: PathBuf,
        /// Write the policy here instead of stdout.
        #[arg(long, short = 'o', value_name = "OUT")]
        output: Option<PathBuf>,
        /// metadata.name of the policy.
        #[arg(long, default_value = "imported-seccomp")]
        name: String,
        /// Capabilities the container holds, for the profile's `includes.caps`
        /// (repeatable; default: Docker's default set).
        #[arg(long = "cap", value_name = "CAP")]
        caps: Vec<String>,
        /// Kernel version for `minKernel` rules.
        #[arg(long, default_value = "6.1", value_name = "MAJOR.MINOR")]
        kernel: String,
        /// Leave out syscalls the profile allows only for some argument values.
        #[arg(long)]
        strict_args: bool,
    },
    /// Write a policy as a seccomp profile kubelet can use as a `Localhost` profile.
    #[command(
        after_help = "Example:\n  sysfence policy export-seccomp web.yaml -o /var/lib/kubelet/seccomp/web.json"
    )]
    ExportSeccomp {
        /// The policy file (one SyscallPolicy).
        policy: PathBuf,
        /// Write the profile here instead of stdout.
        #[arg(long, short = 'o', value_name = "OUT")]
        output: Option<PathBuf>,
        /// Default action for audit/monitor policies: SCMP_ACT_LOG instead of ERRNO.
        #[arg(long)]
        log_for_audit: bool,
    },
}

fn write_out(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    use sysfence::seccomp;
    match command {
        PolicyCommand::ImportSeccomp {
            file,
            output,
            name,
            caps,
            kernel,
            strict_args,
        } => {
            let json = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let mut options = seccomp::ImportOptions {
                name,
                strict_args,
                ..Default::default()
            };
            if !caps.is_empty() {
                options.capabilities = caps.into_iter().collect();
            }
            options.kernel = seccomp::KernelVersion::parse(&kernel).ok_or_else(|| {
                anyhow::anyhow!("--kernel {kernel}: expected MAJOR.MINOR, e.g. 6.1")
            })?;
            let imported = seccomp::import(&json, &options)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for w in &imported.warnings {
                eprintln!("{}: warning: {w}", file.display());
            }
            write_out(output.as_deref(), &imported.policy_yaml)?;
            eprintln!(
                "imported {} syscalls from {}",
                imported.allowed.len(),
                file.display()
            );
            Ok(())
        }
        PolicyCommand::ExportSeccomp {
            policy: file,
            output,
            log_for_audit,
        } => {
            let (mut policies, warnings) =
                policy::load_files(std::slice::from_ref(&file)).into_result()?;
            for w in &warnings {
                eprintln!("{w}");
            }
            let Some(p) = policies.pop() else {
                anyhow::bail!("{}: holds no SyscallPolicy", file.display());
            };
            let options = if log_for_audit {
                seccomp::ExportOptions::for_mode(p.mode)
            } else {
                seccomp::ExportOptions::default()
            };
            let exported = seccomp::export_with(&p, &options);
            for w in &exported.warnings {
                eprintln!("{}: warning: {w}", file.display());
            }
            write_out(output.as_deref(), &exported.json)
        }
    }
}

const fn probe_common_default_rate() -> u32 {
    probe_common::DEFAULT_EVENTS_PER_SECOND
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
        Command::Check { files, json } => return check(&files, json),
        Command::Run {
            policy,
            mode,
            json_report,
            quiet,
            command,
        } => {
            init_logging(LogFormat::Text);
            run::run(run::RunOptions {
                policy,
                mode: mode.map(Into::into),
                json_report,
                quiet,
                command,
            })
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Doctor { json } => sysfence::doctor::run(json).map(|()| ExitCode::SUCCESS),
        Command::Policy(command) => policy_command(command).map(|()| ExitCode::SUCCESS),
        Command::BenchHold {
            what,
            policy,
            workloads,
            caller,
            bind,
        } => sysfence::bench_support::hold(
            &what,
            policy.as_deref(),
            workloads,
            caller,
            bind.as_deref(),
        )
        .map(|()| ExitCode::SUCCESS),
        Command::Wrap {
            runtime,
            socket,
            fail_open,
            timeout,
            args,
        } => sysfence::workload::socket::wrap(sysfence::workload::socket::WrapOptions {
            runtime,
            socket,
            fail_open,
            timeout: Duration::from_secs_f64(timeout.max(0.1)),
            args,
        })
        .map(|never| match never {}),
        Command::Agent {
            policies,
            rescan_every,
            log_format,
            runtime_socket,
            cri_socket,
            no_cri,
            runtime_root,
            events_per_second,
        } => {
            init_logging(log_format);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(daemon::run(daemon::AgentOptions {
                        policies,
                        rescan_every: Duration::from_secs_f64(rescan_every.max(0.1)),
                        runtime_socket,
                        cri_sockets: if no_cri {
                            Some(Vec::new())
                        } else if cri_socket.is_empty() {
                            None
                        } else {
                            Some(cri_socket)
                        },
                        runtime_roots: runtime_root,
                        events_per_second,
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

fn check(files: &[PathBuf], json: bool) -> ExitCode {
    let files = match policy::expand_paths(files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sysfence: error: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = policy::load_files(&files);
    for d in &loaded.diagnostics {
        if json {
            println!("{}", serde_json::to_string(d).unwrap_or_default());
        } else {
            eprintln!("{d}");
        }
    }
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diagnostics.len() - errors;
    if !json {
        if errors == 0 {
            eprintln!(
                "ok: {} polic{}, {} set{} checked, {warnings} warning{}",
                loaded.policies.len(),
                if loaded.policies.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                loaded.sets,
                if loaded.sets == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" }
            );
        } else {
            eprintln!(
                "{errors} error{} in {} file(s)",
                if errors == 1 { "" } else { "s" },
                files.len()
            );
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
