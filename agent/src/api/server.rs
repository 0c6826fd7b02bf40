//! The agent's side of the API socket: accept, check the peer, read one bounded
//! request line, hand it to the agent's loop, and write its answers back.

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc},
};
use tracing::warn;

use super::protocol::{self, Request};

/// The longest request line the agent reads; a longer one is refused.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Connections served at once; more wait for a free place (a `watch` holds one).
pub const MAX_CONNECTIONS: usize = 32;

/// One request, with the channel its answer lines go to.
pub struct ApiRequest {
    pub request: Request,
    pub reply: mpsc::Sender<Value>,
}

/// Who may talk to the socket: root, and these uids.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub uids: Vec<u32>,
}

impl Access {
    /// Whether a peer with this uid may talk to the agent.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || self.uids.contains(&uid)
    }
}

/// Listen on `path` (replacing a stale socket) and forward requests.
pub fn serve(path: &Path, access: Access) -> anyhow::Result<mpsc::Receiver<ApiRequest>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another agent answers on {}: stop it first (two agents would fight over the same pinned probe)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    let mode = if access.uids.is_empty() { 0o600 } else { 0o666 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let (tx, rx) = mpsc::channel(16);
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(place) = places.clone().acquire_owned().await else {
                return;
            };
            let tx = tx.clone();
            let access = access.clone();
            tokio::spawn(async move {
                serve_one(stream, &access, tx).await;
                drop(place);
            });
        }
    });
    Ok(rx)
}

async fn serve_one(stream: UnixStream, access: &Access, tx: mpsc::Sender<ApiRequest>) {
    let peer = stream.peer_cred().ok();
    let (read, mut write) = stream.into_split();
    let mut refuse = async |why: String| {
        let line = format!("{}\n", protocol::error(why));
        let _ = write.write_all(line.as_bytes()).await;
    };
    match peer {
        Some(p) if access.allows(p.uid()) => {}
        Some(p) => {
            warn!(event = "api_refused", uid = p.uid(), pid = ?p.pid(), "peer is not root nor an allowed uid");
            return refuse(format!(
                "uid {} may not use this socket (root only; the agent's --api-socket-uid allows others)",
                p.uid()
            ))
            .await;
        }
        None => return refuse("the peer's credentials cannot be read".into()).await,
    }
    let mut line = Vec::new();
    let mut bounded = tokio::io::BufReader::new(read).take(MAX_REQUEST_LINE as u64 + 1);
    if bounded.read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    if line.len() > MAX_REQUEST_LINE {
        return refuse(format!("request longer than {MAX_REQUEST_LINE} bytes")).await;
    }
    let request = match serde_json::from_slice::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            return refuse(format!(
                "not a request ({e}): send one JSON line with \"op\": status, events or watch"
            ))
            .await;
        }
    };
    let (reply, mut answers) = mpsc::channel(4);
    if tx.send(ApiRequest { request, reply }).await.is_err() {
        return;
    }
    let mut write = write;
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
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        time::Duration,
    };

    use super::*;

    fn roundtrip(sock: &Path, request: &[u8]) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_and_malformed_requests_are_refused_and_good_ones_served() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let mut rx = serve(&sock, Access::default()).unwrap();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let _ = req
                    .reply
                    .send(serde_json::json!({"ok": true, "op": format!("{:?}", req.request)}))
                    .await;
            }
        });
        let s = sock.clone();
        let (big, bad, good) = tokio::task::spawn_blocking(move || {
            let mut huge = vec![b' '; MAX_REQUEST_LINE + 10];
            huge.push(b'\n');
            (
                roundtrip(&s, &huge),
                roundtrip(&s, b"{\"op\":\"reboot\"}\n"),
                roundtrip(&s, b"{\"op\":\"status\"}\n"),
            )
        })
        .await
        .unwrap();
        assert!(big.contains("longer than"), "{big}");
        assert!(bad.contains("not a request"), "{bad}");
        assert!(good.contains("Status"), "{good}");
    }

    #[test]
    fn only_root_and_configured_uids_are_allowed() {
        assert!(Access::default().allows(0));
        assert!(!Access::default().allows(1000));
        assert!(Access { uids: vec![1000] }.allows(1000));
    }
}
