//! The agent's local API: a unix socket (root only) speaking JSON lines, for
//! `sysfence status`, `sysfence report` and `sysfence watch`.
//!
//! A client writes one request line, `{"op": ...}`, and reads answer lines until the
//! agent closes the connection (`status` and `events`: one line; `watch`: one line per
//! interval until the client hangs up).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::mpsc,
};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sysfence/api.sock";

/// One request, with the channel its answer lines go to.
pub struct ApiRequest {
    pub request: Value,
    pub reply: mpsc::Sender<Value>,
}

/// Listen on `path` (replacing a stale socket) and forward requests.
pub fn serve(path: &Path) -> anyhow::Result<mpsc::Receiver<ApiRequest>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another agent answers on {}: stop it first (two agents would fight over the same pinned probe)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                let Ok(Some(line)) = lines.next_line().await else {
                    return;
                };
                let (reply, mut answers) = mpsc::channel(4);
                let request = match serde_json::from_str::<Value>(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = json!({"ok": false, "error": format!("not a JSON request: {e}")});
                        let _ = write.write_all(format!("{msg}\n").as_bytes()).await;
                        return;
                    }
                };
                if tx.send(ApiRequest { request, reply }).await.is_err() {
                    return;
                }
                while let Some(answer) = answers.recv().await {
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        // The client hung up: dropping `answers` ends a watch.
                        return;
                    }
                }
            });
        }
    });
    Ok(rx)
}

/// Send one request and read its single answer (blocking; for the CLI).
pub fn request(path: &Path, request: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let mut stream = connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    writeln!(stream, "{request}")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("reading the agent's answer on {}", path.display()))?;
    if line.trim().is_empty() {
        bail!(
            "the agent on {} closed the connection without an answer",
            path.display()
        );
    }
    let v: Value = serde_json::from_str(&line).context("the agent's answer is not JSON")?;
    if v["ok"] == false {
        bail!(
            "the agent refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(v)
}

/// Connect, saying what to do when nothing listens.
pub fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "no agent answers on {} ({e}): is `sysfence agent` running (as root, with \
             `--api-socket` at that path)?",
            path.display()
        )
    })
}

/// The API socket path for a CLI: the flag, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}
