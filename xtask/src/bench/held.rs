//! A probe setup held by a helper process for the length of a measurement.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

use anyhow::bail;

use super::Env;

/// An `sf-bench-hold` setup, released when dropped (or by [`Held::finish`]).
pub(super) struct Held {
    pub(super) child: Child,
    pub(super) out: Option<BufReader<std::process::ChildStdout>>,
    pub(super) lines: Vec<String>,
}

impl Held {
    pub(super) fn start(env: &Env, args: &[&str]) -> anyhow::Result<Held> {
        let mut child = Command::new(&env.hold)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = Vec::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        loop {
            let mut line = String::new();
            if out.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("sf-bench-hold {} did not start", args.join(" "));
            }
            let line = line.trim().to_string();
            if line == "ready" {
                break;
            }
            lines.push(line);
        }
        Ok(Held {
            child,
            out: Some(out),
            lines,
        })
    }

    pub(super) fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    }

    /// Release the setup; the lines it printed on the way out (the slot's counts).
    pub(super) fn finish(mut self) -> anyhow::Result<Vec<String>> {
        drop(self.child.stdin.take());
        let mut lines = Vec::new();
        if let Some(out) = self.out.take() {
            for line in out.lines() {
                lines.push(line?.trim().to_string());
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("sf-bench-hold failed on release ({status})");
        }
        Ok(lines)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // Drain what it prints on the way out, so that it exits cleanly.
        if let Some(out) = self.out.take() {
            for _ in out.lines().map_while(Result::ok) {}
        }
        let _ = self.child.wait();
    }
}
