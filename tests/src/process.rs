//! A child process of a test whose output is collected line by line in the background
//! (the agent, `sysfence watch`, `sysfence record`): waits on what it printed, signals
//! it by PID, and kills it on drop.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use crate::wait_for;

/// Lines printed by a child: each stream apart, and both in the order they came; the
/// JSON ones also parsed, once, as they came.
#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    both: Vec<String>,
    json: Vec<Arc<Value>>,
}

/// A child whose stdout and stderr lines are collected in the background; killed on
/// drop.
pub struct Collected {
    child: Child,
    lines: Arc<Mutex<Lines>>,
    readers: Vec<JoinHandle<()>>,
}

impl Collected {
    /// Spawn `cmd` with its stdout and stderr piped to the collector.
    pub fn start(mut cmd: Command) -> Collected {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        let lines = Arc::new(Mutex::new(Lines::default()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            Self::reader(stdout, lines.clone(), |l, line| l.stdout.push(line)),
            Self::reader(stderr, lines.clone(), |l, line| l.stderr.push(line)),
        ];
        Collected {
            child,
            lines,
            readers,
        }
    }

    fn reader(
        stream: impl std::io::Read + Send + 'static,
        lines: Arc<Mutex<Lines>>,
        push: fn(&mut Lines, String),
    ) -> JoinHandle<()> {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // Parsed before taking the lock: waiters poll it, and a long log must
                // not keep this thread (and so the child's pipe) waiting.
                let json = serde_json::from_str::<Value>(&line).ok();
                let mut l = lines.lock().unwrap();
                l.both.push(line.clone());
                l.json.extend(json.map(Arc::new));
                push(&mut l, line);
            }
        })
    }

    /// PID of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().stdout.clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().stderr.clone()
    }

    /// Every line so far, stdout and stderr in the order they came.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().both.join("\n")
    }

    /// Every line so far that is a JSON value, from either stream.
    pub fn json_lines(&self) -> Vec<Value> {
        self.json_snapshot().iter().map(|v| (**v).clone()).collect()
    }

    /// The parsed lines so far, shared: taken under the lock, read outside it, so that
    /// a predicate may itself look at the log (and the reader is never held up).
    fn json_snapshot(&self) -> Vec<Arc<Value>> {
        self.lines.lock().unwrap().json.clone()
    }

    /// How many JSON lines so far `pred` accepts.
    pub fn count_json(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.json_snapshot().iter().filter(|v| pred(v)).count()
    }

    /// The first JSON line so far that `pred` accepts.
    pub fn find_json(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.json_snapshot()
            .iter()
            .find(|v| pred(v))
            .map(|v| (**v).clone())
    }

    /// Both streams apart, for a failure message.
    pub fn all(&self) -> String {
        let l = self.lines.lock().unwrap();
        format!(
            "stdout:\n{}\nstderr:\n{}",
            l.stdout.join("\n"),
            l.stderr.join("\n")
        )
    }

    /// The last 60 lines, for a failure message.
    pub fn tail(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Wait up to 30 s for a JSON line that `pred` accepts; panics with the last lines
    /// if none comes.
    pub fn wait_json(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_json_for(what, Duration::from_secs(30), pred)
    }

    /// Wait up to `timeout` for a JSON line that `pred` accepts; panics with the last
    /// lines if none comes.
    pub fn wait_json_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(timeout, || self.find_json(&pred))
            .unwrap_or_else(|| panic!("never saw {what}; last lines:\n{}", self.tail()))
    }

    /// Wait up to 30 s for a line (of either stream) that contains `needle`; every line
    /// so far. Panics with both streams if none comes.
    pub fn wait_for_line(&self, what: &str, needle: &str) -> String {
        self.wait_needle(what, needle, |l| &l.both)
    }

    /// Wait up to 30 s for a line of stderr that contains `needle`; stderr so far.
    pub fn wait_stderr(&self, what: &str, needle: &str) -> String {
        self.wait_needle(what, needle, |l| &l.stderr)
    }

    fn wait_needle(&self, what: &str, needle: &str, stream: fn(&Lines) -> &Vec<String>) -> String {
        wait_for(Duration::from_secs(30), || {
            let l = self.lines.lock().unwrap();
            let lines = stream(&l);
            lines
                .iter()
                .any(|l| l.contains(needle))
                .then(|| lines.join("\n"))
        })
        .unwrap_or_else(|| panic!("never saw {what} ({needle:?}); {}", self.all()))
    }

    /// SIGKILL it if it still runs, and reap it (never panics: fit for `Drop`).
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Send `signal`, wait for the exit and for the rest of the output.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().expect("wait");
        self.drain();
        status
    }

    /// Signal it, wait for it, and return its exit code (-1 when killed by a signal) and
    /// its stdout lines.
    pub fn stop(mut self, signal: i32) -> (i32, Vec<String>) {
        let status = self.signal_and_wait(signal);
        (status.code().unwrap_or(-1), self.stdout_lines())
    }

    /// Wait up to `timeout` for the child to exit by itself; its exit status and whole
    /// output. Panics (after killing it) if it is still running then.
    pub fn wait_exit(mut self, timeout: Duration) -> Output {
        let status = wait_for(timeout, || self.try_wait()).unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("still running after {timeout:?}; killed. {}", self.all())
        });
        self.drain();
        let l = self.lines.lock().unwrap();
        let joined = |lines: &[String]| {
            lines
                .iter()
                .flat_map(|l| [l.as_bytes(), b"\n"])
                .flatten()
                .copied()
                .collect()
        };
        Output {
            status,
            stdout: joined(&l.stdout),
            stderr: joined(&l.stderr),
        }
    }

    /// Wait (up to 2 s: a grandchild may hold the pipes) for the readers to reach the
    /// end of both streams.
    fn drain(&mut self) {
        let _ = wait_for(Duration::from_secs(2), || {
            self.readers.iter().all(|r| r.is_finished()).then_some(())
        });
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child the test started, SIGKILLed and reaped when dropped unless it has ended:
/// nothing it runs outlives a failing test.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
