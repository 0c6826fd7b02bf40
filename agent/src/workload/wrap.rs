//! `sysfence wrap`, the OCI runtime wrapper: it binds a container before its
//! entrypoint runs (see the module doc of [`crate::workload`]).
//!
//! Every command goes to the real runtime. Three are changed:
//!
//! - `start`: the agent binds the container first, over its runtime socket; the runtime
//!   runs once the binding is in the kernel ([`bind_before_start`]).
//! - `run` (create and start in one call, which never gives the agent its moment) runs
//!   as `create`, the same binding, and `start` ([`RunPlan`]). Unless `--detach`, the
//!   wrapper then does what `run` does: it waits for the container's init process (it
//!   is its subreaper), forwards the signals it gets to it, deletes the container
//!   (unless `--keep`), and exits with the init's status (128 + the signal if it was
//!   killed). runsc's `run` is not split: its init is the sandbox, whose status is
//!   not the application's.
//! - runsc's `create` and `run`: the agent says which policy the application gets
//!   inside the sandbox ([`into_sandbox`]); the wrapper installs it as the bundle's
//!   `linux.seccomp` and runs runsc with `--oci-seccomp` (gVisor then judges the
//!   application's syscalls itself), and with the agent's trace session
//!   (`--pod-init-config`), through which the agent sees them.
//! - `restore` starts the container's processes with no `start` to hook: refused,
//!   unless `--fail-open`.
//!
//! When the agent cannot be reached or refuses, nothing starts unpoliced: the command
//! fails (and a container `run` created is deleted), unless `--fail-open`.

use std::{
    ffi::OsString,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use super::{
    Runtime, sandbox,
    socket::{Request, SandboxRequest, StartRequest, call, monotonic_ns},
};

pub struct WrapOptions {
    pub runtime: PathBuf,
    pub socket: PathBuf,
    pub fail_open: bool,
    pub timeout: Duration,
    pub args: Vec<OsString>,
}

/// Global flags of runc, crun, runsc and youki that take a value in the next argument.
const VALUE_FLAGS: &[&str] = &[
    "root",
    "log",
    "log-format",
    "criu",
    "rootless",
    "cgroup-manager",
    "debug-log",
    "debug-log-format",
    "panic-log",
    "platform",
    "network",
    "file-access",
    "overlay2",
    "log-fd",
    "debug-log-fd",
    "panic-log-fd",
    "systemd-cgroup-path",
];

/// The runtime command line, as far as the wrapper cares: the subcommand and where it
/// is, its last positional argument (the container id for `start`), and `--root`.
#[derive(Debug, PartialEq, Eq)]
pub struct RuntimeArgs {
    pub subcommand: Option<String>,
    /// The subcommand's index in the arguments; what comes before it is global flags.
    pub at: usize,
    pub id: Option<String>,
    pub root: Option<PathBuf>,
}

/// A flag's name and its `=value`, if `a` is a flag (`-x`, `--x`, `--x=v`).
fn split_flag(a: &str) -> Option<(&str, Option<&str>)> {
    let flag = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
    Some(match flag.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (flag, None),
    })
}

pub fn parse_runtime_args(args: &[OsString]) -> RuntimeArgs {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut root = None;
    let mut subcommand = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some((name, inline)) = split_flag(a) {
            let takes_value = VALUE_FLAGS.contains(&name);
            let value = match inline.map(str::to_string) {
                Some(v) => Some(v),
                None if takes_value => {
                    i += 1;
                    args.get(i).cloned()
                }
                None => None,
            };
            if name == "root"
                && let Some(v) = value
            {
                root = Some(PathBuf::from(v));
            }
            i += 1;
            continue;
        }
        subcommand = Some(a.clone());
        break;
    }
    let id = subcommand.as_ref().and_then(|_| {
        args[i + 1..]
            .iter()
            .rev()
            .find(|a| !a.starts_with('-'))
            .cloned()
    });
    RuntimeArgs {
        subcommand,
        at: i,
        id,
        root,
    }
}

/// Flags of `run` (runc, crun, youki) that take a value in the next argument.
const RUN_VALUE_FLAGS: &[&str] = &[
    "bundle",
    "b",
    "console-socket",
    "pid-file",
    "preserve-fds",
    "pidfd-socket",
    "config",
    "f",
];

/// A `run` as the commands the wrapper runs in its place: `GLOBAL create CREATE ID`,
/// `GLOBAL start ID`, and, unless detached, waiting and `GLOBAL delete ID`.
#[derive(Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// The runtime's global flags, given to every command.
    pub global: Vec<OsString>,
    /// `run`'s flags that `create` has too, in their order.
    pub create: Vec<OsString>,
    pub id: String,
    /// `--detach`/`-d`: return once the container has started.
    pub detach: bool,
    /// `--keep`: do not delete the container after it exits.
    pub keep: bool,
    /// `--bundle`/`-b`, or the working directory.
    pub bundle: PathBuf,
    /// Whether `--console-socket` was given (a terminal needs it with `create`).
    pub console_socket: bool,
}

/// Split `run`'s arguments (`args[at]` is `run`, or runsc's `create`, which takes the
/// same) into a [`RunPlan`]. Pure; errors name the subcommand.
pub fn plan_run(args: &[OsString], at: usize) -> Result<RunPlan, String> {
    let sub = args
        .get(at)
        .map_or("run".into(), |a| a.to_string_lossy().into_owned());
    let mut plan = RunPlan {
        global: args[..at].to_vec(),
        create: Vec::new(),
        id: String::new(),
        detach: false,
        keep: false,
        bundle: PathBuf::from("."),
        console_socket: false,
    };
    let mut id: Option<String> = None;
    let mut i = at + 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        // `-` and `--` alone are not flags here.
        let flag = split_flag(&a).filter(|_| a != "-" && a != "--");
        let Some((name, inline)) = flag else {
            if let Some(first) = &id {
                return Err(format!(
                    "`{sub}` takes one container id; `{a}` follows `{first}`"
                ));
            }
            id = Some(a);
            i += 1;
            continue;
        };
        if id.is_some() {
            return Err(format!(
                "`{a}`: flags go before the container id in `{sub}`"
            ));
        }
        // Flags only `run` has (boolean; `--detach=false` as Go's flag package allows).
        let on = inline != Some("false");
        match name {
            "detach" | "d" => plan.detach = on,
            "keep" => plan.keep = on,
            // runc's own reaping of the container's orphans; the wrapper is the
            // subreaper itself.
            "no-subreaper" => {}
            _ => {
                plan.create.push(args[i].clone());
                let value = match inline.map(str::to_string) {
                    Some(v) => Some(v),
                    None if RUN_VALUE_FLAGS.contains(&name) => {
                        i += 1;
                        let v = args.get(i).ok_or_else(|| format!("`{a}` needs a value"))?;
                        plan.create.push(v.clone());
                        Some(v.to_string_lossy().into_owned())
                    }
                    None => None,
                };
                match name {
                    "bundle" | "b" => {
                        plan.bundle = PathBuf::from(value.unwrap_or_default());
                    }
                    "console-socket" => plan.console_socket = true,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    plan.id = id.ok_or_else(|| format!("`{sub}` without a container id"))?;
    Ok(plan)
}

/// Whether the bundle's `config.json` asks for a terminal (`process.terminal`).
fn wants_terminal(bundle: &Path) -> anyhow::Result<bool> {
    let path = bundle.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(config["process"]["terminal"] == true)
}

/// `sysfence wrap`: pass the command to the real runtime, binding the container before
/// `start` and `run`. Returns the exit code for `run`; otherwise it execs the runtime
/// and returns only on error.
pub fn wrap(options: WrapOptions) -> anyhow::Result<u8> {
    let sent_ns = monotonic_ns();
    let parsed = parse_runtime_args(&options.args);
    // Recognised as the agent recognises the runtime the wrapper names.
    let runsc = Runtime::from_name(&runtime_name(&options)) == Runtime::Runsc;
    let mut args = options.args.clone();
    match parsed.subcommand.as_deref() {
        Some("create" | "run") if runsc => {
            let plan = plan_run(&options.args, parsed.at).map_err(|e| anyhow!("{e}"))?;
            let global = into_sandbox(&options, parsed.root.as_deref(), &plan)?;
            args.splice(0..0, global);
        }
        Some("start") => {
            let id = parsed
                .id
                .clone()
                .ok_or_else(|| anyhow!("`start` without a container id"))?;
            bind_before_start(&options, parsed.root.as_deref(), &id, sent_ns)?;
        }
        Some("run") if !runsc => {
            let plan = plan_run(&options.args, parsed.at).map_err(|e| anyhow!("{e}"))?;
            if !plan.console_socket && wants_terminal(&plan.bundle)? {
                unpoliced(
                    &options,
                    &format!(
                        "`run` of container {} with a terminal (process.terminal in {}): \
                         the wrapper runs `run` as create + start, and `create` needs \
                         --console-socket for a terminal; use create --console-socket \
                         and start",
                        plan.id,
                        plan.bundle.join("config.json").display()
                    ),
                )?;
            } else {
                return run(&options, parsed.root.as_deref(), &plan, sent_ns);
            }
        }
        Some("restore") => unpoliced(
            &options,
            "`restore` starts the container's processes with no `start` the agent \
             could bind it at",
        )?,
        _ => {}
    }
    let err = Command::new(&options.runtime).args(&args).exec();
    Err(anyhow!("executing {}: {err}", options.runtime.display()))
}

/// Before runsc creates container `plan.id`: ask the agent which policy its
/// application gets inside the sandbox, install it in the bundle, and return the global
/// flags that make runsc apply it (`--oci-seccomp`) and report to the agent
/// (`--pod-init-config`). See [`sandbox`].
pub fn into_sandbox(
    options: &WrapOptions,
    root: Option<&Path>,
    plan: &RunPlan,
) -> anyhow::Result<Vec<OsString>> {
    let bundle = std::path::absolute(&plan.bundle)
        .with_context(|| format!("the bundle {}", plan.bundle.display()))?;
    let request = Request::Sandbox(SandboxRequest {
        runtime: runtime_name(options),
        id: plan.id.clone(),
        bundle: bundle.clone(),
        root: root.map(|r| std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf())),
    });
    let answer = ask(options, &request);
    let answer = match answer {
        Ok(a) => a,
        Err(e) if options.fail_open => {
            eprintln!(
                "sysfence: warning: container {} runs unpoliced inside its sandbox: {e:#}",
                plan.id
            );
            return Ok(Vec::new());
        }
        Err(e) => bail!(
            "refusing to create container {} before sysfence has said its policy: {e:#} \
             (`sysfence wrap --fail-open` creates it unpoliced instead)",
            plan.id
        ),
    };
    let given = |flag: &str| {
        plan.global.iter().any(|a| {
            let a = a.to_string_lossy();
            split_flag(&a).is_some_and(|(n, _)| n == flag)
        })
    };
    let mut global = Vec::new();
    if let Some(profile) = answer.get("seccomp").filter(|p| p.is_object()) {
        let mut config = sandbox::read_config(&bundle)?;
        sandbox::install_profile(&mut config, profile.clone())?;
        sandbox::write_config(&bundle, &config)?;
        for w in answer["profile_warnings"].as_array().into_iter().flatten() {
            if let Some(w) = w.as_str() {
                eprintln!("sysfence: container {}: {w}", plan.id);
            }
        }
        if !given("oci-seccomp") {
            global.push(OsString::from("--oci-seccomp"));
        }
    }
    if let Some(log) = answer.get("sentry_log").and_then(|t| t.as_str()) {
        if given("debug-log") || given("debug-log-fd") {
            eprintln!(
                "sysfence: warning: container {}: runsc already has a debug log; the \
                 agent cannot read what gVisor's seccomp refuses, so refusals inside the \
                 sandbox are enforced but not reported",
                plan.id
            );
        } else {
            global.extend(
                [
                    "--debug".to_string(),
                    "--debug-command=boot".to_string(),
                    format!("--debug-log={log}"),
                    "--debug-log-format=json".to_string(),
                ]
                .map(OsString::from),
            );
        }
    }
    if let Some(trace) = answer.get("trace_config").and_then(|t| t.as_str()) {
        if given("pod-init-config") {
            eprintln!(
                "sysfence: warning: container {}: runsc already has a --pod-init-config; \
                 sysfence's trace session is not added, so the agent does not see the \
                 application's syscalls (it is still policed inside the sandbox)",
                plan.id
            );
        } else {
            global.push(OsString::from(format!("--pod-init-config={trace}")));
        }
    }
    Ok(global)
}

/// Send the agent one request; its answer if it says `ok`, else why not.
fn ask(options: &WrapOptions, request: &Request) -> anyhow::Result<serde_json::Value> {
    let answer = call(&options.socket, request, options.timeout)?;
    if answer["ok"] == true {
        Ok(answer)
    } else {
        bail!(
            "{}",
            answer["error"].as_str().unwrap_or("the agent refused")
        )
    }
}

fn runtime_name(options: &WrapOptions) -> String {
    options
        .runtime
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A command that would start processes before the agent could bind them: refused,
/// or, with `--fail-open`, passed on with a warning.
fn unpoliced(options: &WrapOptions, why: &str) -> anyhow::Result<()> {
    if options.fail_open {
        eprintln!("sysfence: warning: starting unpoliced (--fail-open): {why}");
        return Ok(());
    }
    bail!(
        "refusing to start a container sysfence cannot bind first: {why} \
         (`sysfence wrap --fail-open` runs it unpoliced instead)"
    )
}

/// Ask the agent to bind container `id`, and wait until the binding is in the kernel.
/// With `--fail-open`, an agent that cannot be reached or refuses only gets a warning.
pub fn bind_before_start(
    options: &WrapOptions,
    root: Option<&Path>,
    id: &str,
    sent_ns: u64,
) -> anyhow::Result<()> {
    let request = Request::Start(StartRequest {
        runtime: runtime_name(options),
        runtime_path: Some(options.runtime.clone()),
        root: root.map(Path::to_path_buf),
        id: id.to_string(),
        sent_ns,
    });
    let answer = ask(options, &request);
    match answer {
        Ok(_) => Ok(()),
        Err(e) if options.fail_open => {
            eprintln!("sysfence: warning: container {id} starts unpoliced: {e:#}");
            Ok(())
        }
        Err(e) => bail!(
            "refusing to start container {id} before sysfence has bound it: {e:#} \
             (`sysfence wrap --fail-open` starts it unpoliced instead)"
        ),
    }
}

/// The signals `run` forwards to the container's init, as runc's `run` does (all but
/// those that stop or kill the wrapper itself, and SIGCHLD, which it reaps on).
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGPWR,
];

/// `run` as create, bind, start, and (unless detached) wait, forward, delete.
fn run(
    options: &WrapOptions,
    root: Option<&Path>,
    plan: &RunPlan,
    sent_ns: u64,
) -> anyhow::Result<u8> {
    let runtime = |sub: &str| {
        let mut c = Command::new(&options.runtime);
        c.args(&plan.global).arg(sub);
        c
    };
    let signals = if plan.detach {
        None
    } else {
        // The init is `create`'s child; it becomes the wrapper's when `create` exits.
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            bail!(
                "becoming a subreaper for the container's init: {}",
                std::io::Error::last_os_error()
            );
        }
        // Held pending from now on, and forwarded once the init runs. (The runtime's
        // processes start with no signal blocked: std's Command clears the mask.)
        Some(block(FORWARDED)?)
    };
    let created = runtime("create")
        .args(&plan.create)
        .arg(&plan.id)
        .status()
        .with_context(|| format!("running {} create", options.runtime.display()))?;
    if !created.success() {
        // The runtime said why.
        return Ok(exit_code(created));
    }
    // From here the container exists: if it does not start, it is deleted, as `run`
    // does.
    let delete_force = || {
        let _ = runtime("delete").args(["--force", &plan.id]).status();
    };
    // Asked now, while the init waits for `start`: once it has exited, `state` no
    // longer gives its pid.
    let init = match signals {
        None => None,
        Some(_) => match runtime("state")
            .arg(&plan.id)
            .output()
            .map_err(anyhow::Error::from)
            .and_then(|out| init_pid(&out))
        {
            Ok(pid) => Some(pid),
            Err(e) => {
                delete_force();
                return Err(e.context(format!("the init pid of container {}", plan.id)));
            }
        },
    };
    if let Err(e) = bind_before_start(options, root, &plan.id, sent_ns) {
        delete_force();
        return Err(e);
    }
    let started = runtime("start")
        .arg(&plan.id)
        .status()
        .with_context(|| format!("running {} start", options.runtime.display()))?;
    if !started.success() {
        delete_force();
        return Ok(exit_code(started));
    }
    let (Some(signals), Some(init)) = (signals, init) else {
        return Ok(0);
    };
    let status = wait_forwarding(init, &signals)?;
    if !plan.keep {
        let deleted = runtime("delete").arg(&plan.id).status()?;
        if !deleted.success() {
            eprintln!(
                "sysfence: warning: deleting container {} after it exited: {deleted}",
                plan.id
            );
        }
    }
    Ok(exit_code(status))
}

/// The init pid in a runtime's `state` output.
fn init_pid(out: &std::process::Output) -> anyhow::Result<i32> {
    if !out.status.success() {
        bail!("state: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).context("state")?;
    state["pid"]
        .as_i64()
        .filter(|&p| p > 0)
        .map(|p| p as i32)
        .ok_or_else(|| anyhow!("no pid in the runtime's state"))
}

/// Block `signals` in this (single-threaded) process, to take them with sigwaitinfo.
fn block(signals: &[i32]) -> anyhow::Result<libc::sigset_t> {
    // SAFETY: plain libc calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("blocking signals: {}", std::io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// Wait for `init` (a child: the wrapper is its subreaper), forwarding every signal of
/// `signals` but SIGCHLD to it, and reaping whatever else is handed over; its status.
fn wait_forwarding(init: i32, signals: &libc::sigset_t) -> anyhow::Result<ExitStatus> {
    let timeout = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == init {
                return Ok(ExitStatus::from_raw(status));
            }
            if pid <= 0 {
                break;
            }
        }
        // SAFETY: plain libc calls; `info` is written by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(signals, &mut info, &timeout)
        };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: plain kill; ESRCH (already gone) is seen by the next waitpid.
            unsafe { libc::kill(init, sig) };
        }
        // SAFETY: signal 0 only checks that `init` exists.
        if sig < 0 && unsafe { libc::kill(init, 0) } != 0 {
            // Gone without a SIGCHLD for the wrapper: not its child.
            let mut status = 0;
            // SAFETY: plain waitpid.
            if unsafe { libc::waitpid(init, &mut status, libc::WNOHANG) } == init {
                return Ok(ExitStatus::from_raw(status));
            }
            bail!("the container's init ({init}) exited, and was not the wrapper's to reap");
        }
    }
}

/// A status as a shell sees it: the exit code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn plan(a: &[&str]) -> Result<RunPlan, String> {
        let a = args(a);
        let parsed = parse_runtime_args(&a);
        assert!(
            matches!(parsed.subcommand.as_deref(), Some("run" | "create")),
            "{parsed:?}"
        );
        plan_run(&a, parsed.at)
    }

    #[test]
    fn run_becomes_create_with_runs_own_flags_taken_out() {
        let p = plan(&[
            "--root",
            "/run/r",
            "--systemd-cgroup",
            "run",
            "-d",
            "--bundle",
            "/b",
            "--pid-file=/p",
            "--keep",
            "--no-subreaper",
            "--preserve-fds",
            "2",
            "c1",
        ])
        .unwrap();
        assert_eq!(p.global, args(&["--root", "/run/r", "--systemd-cgroup"]));
        assert_eq!(
            p.create,
            args(&["--bundle", "/b", "--pid-file=/p", "--preserve-fds", "2"])
        );
        assert_eq!(p.id, "c1");
        assert!(p.detach && p.keep && !p.console_socket);
        assert_eq!(p.bundle, Path::new("/b"));
    }

    #[test]
    fn run_defaults_to_foreground_in_the_working_directory() {
        let p = plan(&["run", "-b=/x", "--console-socket", "/s.sock", "c2"]).unwrap();
        assert!(!p.detach && !p.keep && p.console_socket);
        assert_eq!(p.bundle, Path::new("/x"));
        assert_eq!(p.create, args(&["-b=/x", "--console-socket", "/s.sock"]));
        let p = plan(&["run", "--detach=false", "c3"]).unwrap();
        assert!(!p.detach);
        assert_eq!(p.bundle, Path::new("."));
    }

    #[test]
    fn a_run_the_wrapper_cannot_split_is_refused_with_the_reason() {
        assert_eq!(plan(&["run"]).unwrap_err(), "`run` without a container id");
        // runsc's `create` takes the same arguments, and its errors say `create`.
        assert_eq!(
            plan(&["create", "--bundle", "b"]).unwrap_err(),
            "`create` without a container id"
        );
        assert!(
            plan(&["run", "c1", "c2"])
                .unwrap_err()
                .contains("one container id")
        );
        assert!(
            plan(&["run", "c1", "-d"])
                .unwrap_err()
                .contains("before the container id")
        );
        assert!(
            plan(&["run", "--bundle"])
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn exit_codes_are_the_shells() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
