//! What gVisor's seccomp refused inside a sandbox, read from the Sentry's debug log.
//!
//! A syscall that the sandbox's OCI seccomp filter refuses (see [`super::sandbox`])
//! never reaches gVisor's trace points: neither its enter nor its exit fires, and under
//! `SCMP_ACT_KILL` only the task's exit (status SIGSYS) does, without the syscall. The
//! one place where gVisor names it is its debug log, one line per refusal:
//!
//! ```text
//! {"msg":"[   2:   2] Syscall 83: denied by seccomp","level":"debug","time":"…"}
//! {"msg":"[   2:   2] Syscall 83: killed by seccomp","level":"debug","time":"…"}
//! ```
//!
//! (`[thread group: thread]` in the sandbox's PID namespace, the x86_64 number.) So the
//! wrapper runs runsc with `--debug --debug-command=boot --debug-log=FIFO
//! --debug-log-format=json`: only the Sentry (`boot`) logs at debug level, and only
//! into a named pipe that the agent made for that container and reads
//! ([`SentryLog`]). Nothing is written to disk, and a sandbox that logs faster than
//! the agent reads blocks on the pipe: it slows itself, never the node.
//!
//! The agent opens its end read-write, so the pipe has a writer (the agent) from the
//! start: no end of file before runsc opens it or after the sandbox exits; the reader
//! ends when the agent drops it, once the container is gone. A restarted agent opens
//! the same pipes again by path ([`SentryLog::open`]); the Sentry's end stays open
//! meanwhile (its writes fail while no reader is there, and are lost).
//!
//! The Sentry is the sandbox's kernel: a compromised one could write anything. Lines
//! are bounded ([`MAX_LINE`]) and parsed as untrusted text; a line naming a refusal
//! can only ever add a violation report to its own container.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use tokio::{io::AsyncReadExt as _, net::unix::pipe, sync::mpsc};
use tracing::warn;

/// Longest log line kept (the filter dump of a large policy is a few tens of KiB);
/// longer ones are skipped.
pub const MAX_LINE: usize = 1 << 20;

/// One syscall gVisor's seccomp refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeccompRefusal {
    /// Thread group and thread, in the sandbox's PID namespace.
    pub tgid: u32,
    pub tid: u32,
    /// The x86_64 syscall number.
    pub sysno: u64,
    /// `killed by seccomp` (`SCMP_ACT_KILL`: the thread died) rather than `denied`
    /// (`SCMP_ACT_ERRNO`: the call failed).
    pub killed: bool,
}

#[derive(Deserialize)]
struct LogLine {
    msg: String,
}

/// The refusal a Sentry debug-log line (JSON) reports, if it reports one. Pure.
pub fn parse_line(line: &[u8]) -> Option<SeccompRefusal> {
    let line: LogLine = serde_json::from_slice(line).ok()?;
    parse_message(&line.msg)
}

/// `[ TGID: TID] Syscall NR: denied by seccomp` (or `killed by seccomp`). Pure.
pub fn parse_message(msg: &str) -> Option<SeccompRefusal> {
    let rest = msg.trim_start().strip_prefix('[')?;
    let (ids, rest) = rest.split_once(']')?;
    let (tgid, tid) = ids.split_once(':')?;
    let rest = rest.trim_start().strip_prefix("Syscall ")?;
    let (nr, verdict) = rest.split_once(':')?;
    let killed = match verdict.trim() {
        "denied by seccomp" => false,
        "killed by seccomp" => true,
        _ => return None,
    };
    Some(SeccompRefusal {
        tgid: tgid.trim().parse().ok()?,
        tid: tid.trim().parse().ok()?,
        sysno: nr.trim().parse().ok()?,
        killed,
    })
}

/// The named pipe of one runsc container's Sentry log, and its reader.
pub struct SentryLog {
    pub container_id: String,
    pub path: PathBuf,
    receiver: pipe::Receiver,
}

impl SentryLog {
    /// The pipe for container `id` in `dir` (`ID.log`, mode 0600): made if missing, a
    /// stale regular file of that name replaced, and opened for reading.
    pub fn open(dir: &Path, id: &str) -> io::Result<SentryLog> {
        use std::os::unix::fs::FileTypeExt as _;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{id}.log"));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_fifo() => {}
            Ok(_) => {
                std::fs::remove_file(&path)?;
                mkfifo(&path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkfifo(&path)?,
            Err(e) => return Err(e),
        }
        let receiver = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)?;
        Ok(SentryLog {
            container_id: id.to_string(),
            path,
            receiver,
        })
    }

    /// Read refusals until the pipe fails or the receiving side closes, sending each
    /// with the container's id.
    pub async fn run(mut self, tx: mpsc::Sender<(String, SeccompRefusal)>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut line: Vec<u8> = Vec::new();
        let mut skipping = false;
        loop {
            let n = match self.receiver.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    warn!(event = "sentry_log_failed", container_id = %self.container_id, error = %e);
                    return;
                }
            };
            for chunk in buf[..n].split_inclusive(|&b| b == b'\n') {
                let complete = chunk.last() == Some(&b'\n');
                if !skipping {
                    line.extend_from_slice(chunk);
                    if line.len() > MAX_LINE {
                        line.clear();
                        skipping = !complete;
                        continue;
                    }
                }
                if complete {
                    if !skipping
                        && let Some(r) = parse_line(&line)
                        && tx.send((self.container_id.clone(), r)).await.is_err()
                    {
                        return;
                    }
                    line.clear();
                    skipping = false;
                }
            }
        }
    }
}

fn mkfifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_line_names_the_task_the_syscall_and_the_action() {
        let denied = br#"{"msg":"[   2:   3] Syscall 83: denied by seccomp","level":"debug","time":"2026-12-07T02:30:09.741914611Z"}"#;
        assert_eq!(
            parse_line(denied),
            Some(SeccompRefusal {
                tgid: 2,
                tid: 3,
                sysno: 83,
                killed: false
            })
        );
        let killed = br#"{"msg":"[ 602: 602] Syscall 258: killed by seccomp","level":"debug"}"#;
        assert_eq!(
            parse_line(killed),
            Some(SeccompRefusal {
                tgid: 602,
                tid: 602,
                sysno: 258,
                killed: true
            })
        );
    }

    #[test]
    fn other_lines_and_garbage_are_not_refusals() {
        for line in [
            &br#"{"msg":"Installing OCI seccomp filters","level":"debug"}"#[..],
            br#"{"msg":"[   2:   2] Syscall 83: stopping for PTRACE_EVENT_SECCOMP"}"#,
            br#"{"msg":"[   x:   2] Syscall 83: denied by seccomp"}"#,
            br#"{"msg":"[   2:   2] Syscall -1: denied by seccomp"}"#,
            br#"{"msg":"[   2:   2] Syscall 99999999999999999999999: denied by seccomp"}"#,
            br#"{"msg": 5}"#,
            b"D1207 02:29:10.210075 11497 task_syscall.go:240] [   2:   2] Syscall 83: denied by seccomp",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_line(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipe_delivers_refusals_across_writers_and_skips_overlong_lines() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = SentryLog::open(dir.path(), "c1").unwrap();
        let path = log.path.clone();
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(log.run(tx));
        // A writer that comes and goes (the Sentry), a line longer than the limit (more
        // than the pipe holds: written from a thread of its own), then a second writer:
        // the reader sees no end of file in between.
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            {
                let mut w = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&writer_path)
                    .unwrap();
                writeln!(
                    w,
                    r#"{{"msg":"[   2:   2] Syscall 83: denied by seccomp"}}"#
                )
                .unwrap();
                let long = "x".repeat(MAX_LINE + 10);
                writeln!(
                    w,
                    r#"{{"msg":"{long} [   9:   9] Syscall 1: denied by seccomp"}}"#
                )
                .unwrap();
            }
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&writer_path)
                .unwrap();
            writeln!(
                w,
                r#"{{"msg":"[   4:   5] Syscall 258: killed by seccomp"}}"#
            )
            .unwrap();
        });
        let first = rx.recv().await.unwrap();
        assert_eq!(first.0, "c1");
        assert_eq!(first.1.sysno, 83);
        let second = rx.recv().await.unwrap();
        assert_eq!(
            (second.1.tgid, second.1.sysno, second.1.killed),
            (4, 258, true)
        );
        writer.join().unwrap();
        task.abort();
        // A stale regular file of the pipe's name is replaced by a pipe.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let again = SentryLog::open(dir.path(), "c1").unwrap();
        use std::os::unix::fs::FileTypeExt as _;
        assert!(
            std::fs::metadata(&again.path)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
}
