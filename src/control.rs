//! The local control socket (`STATE_DIR/weftnet.sock`, mode 0600): a line-based JSON
//! request/response protocol between the CLI and the running daemon.
//!
//! Request: one JSON object per line, e.g. `{"request":"status"}`. Response: one JSON
//! object per line, either the answer or `{"error":"..."}`.

use crate::status::StatusReport;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Socket file name inside the state directory.
pub(crate) const SOCKET_NAME: &str = "weftnet.sock";
/// Longest request line the daemon reads.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub(crate) enum Request {
    Status,
    Leave,
    Forget { node: String },
    RotateKey,
}

/// What the daemon does with requests.
pub(crate) struct Handler {
    pub(crate) report: Box<dyn Fn() -> StatusReport + Send + Sync>,
    pub(crate) commands: tokio::sync::mpsc::Sender<crate::cluster::Command>,
    pub(crate) shutdown: std::sync::Arc<tokio::sync::Notify>,
    /// Makes and stores a new key, then has the daemon restart with it; returns the
    /// new public key (base64).
    pub(crate) rotate: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
}

impl Handler {
    async fn handle(&self, req: Request) -> serde_json::Value {
        let error = |e: String| serde_json::json!({ "error": e });
        match req {
            Request::Status => {
                serde_json::to_value((self.report)()).unwrap_or_else(|e| error(e.to_string()))
            }
            Request::RotateKey => match (self.rotate)() {
                Ok(key) => serde_json::json!({ "rotated": key }),
                Err(e) => error(e),
            },
            Request::Leave => {
                self.shutdown.notify_one();
                serde_json::json!({ "leaving": true })
            }
            Request::Forget { node } => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                if self
                    .commands
                    .send(crate::cluster::Command::Forget { node, reply })
                    .await
                    .is_err()
                {
                    return error("the gossip task has stopped".into());
                }
                match answer.await {
                    Ok(Ok(key)) => serde_json::json!({ "forgotten": key }),
                    Ok(Err(e)) => error(e),
                    Err(_) => error("the gossip task has stopped".into()),
                }
            }
        }
    }
}

pub(crate) fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Fails if a daemon already answers on the socket; removes a stale socket file.
pub(crate) fn claim_socket(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another weftnet daemon is running with control socket {}: stop it, or give this one another --state-dir",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove stale control socket {}", path.display()))
}

/// Creates the control socket (mode 0600); the caller owns the file from here on.
pub(crate) fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict control socket {}", path.display()))?;
    Ok(listener)
}

/// Serves requests until the task is dropped: at most
/// [`crate::accept::MAX_CONNECTIONS`] at once; an accept error is logged and retried
/// with backoff ([`crate::accept::serve`]), never the end of the daemon.
pub(crate) async fn serve(listener: tokio::net::UnixListener, handler: Handler) {
    let handler = std::sync::Arc::new(handler);
    crate::accept::serve(
        listener,
        "the control socket".to_owned(),
        crate::accept::MAX_CONNECTIONS,
        move |stream: tokio::net::UnixStream| {
            let handler = handler.clone();
            async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
                let answer =
                    match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                        .await
                    {
                        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                            Ok(req) => serde_json::to_string(&handler.handle(req).await),
                            Err(e) => serde_json::to_string(
                                &serde_json::json!({ "error": format!("bad request: {e}") }),
                            ),
                        },
                        _ => return,
                    };
                if let Ok(mut text) = answer {
                    text.push('\n');
                    let _ = write.write_all(text.as_bytes()).await;
                }
            }
        },
    )
    .await
}

/// Sends one request to the daemon and returns its JSON answer.
pub(crate) fn request(state_dir: &Path, req: &Request) -> Result<serde_json::Value> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "cannot reach the daemon at {} ({e}): is `weftnet up` running with this --state-dir?",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("the daemon did not answer")?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).context("the daemon sent an unreadable answer")?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        bail!("the daemon refused the request: {e}");
    }
    Ok(value)
}

/// `weftnet leave`: asks the daemon to leave the mesh and stop, then waits (bounded)
/// until it is gone.
pub(crate) fn leave(state_dir: &Path) -> Result<()> {
    request(state_dir, &Request::Leave)?;
    let path = socket_path(state_dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if UnixStream::connect(&path).is_err() {
            println!("left the mesh; the daemon has stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the daemon did not stop within 15 s: check its log")
}

/// `weftnet forget NODE`.
pub(crate) fn forget(state_dir: &Path, node: &str) -> Result<()> {
    let answer = request(
        state_dir,
        &Request::Forget {
            node: node.to_string(),
        },
    )?;
    let key = answer
        .get("forgotten")
        .and_then(|k| k.as_str())
        .unwrap_or("?");
    println!("forgot {node} ({key}) across the mesh");
    Ok(())
}

/// `weftnet rotate-key`: asks the daemon to rotate its key, then waits (bounded) until
/// it runs with the new one.
pub(crate) fn rotate_key(state_dir: &Path) -> Result<()> {
    let before = request(state_dir, &Request::Status)?;
    let old = before
        .get("public_key")
        .and_then(|k| k.as_str())
        .unwrap_or("?")
        .to_string();
    let answer = request(state_dir, &Request::RotateKey)?;
    let new = answer
        .get("rotated")
        .and_then(|k| k.as_str())
        .ok_or_else(|| anyhow!("the daemon sent an unreadable answer: {answer}"))?
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let running = request(state_dir, &Request::Status).ok().and_then(|s| {
            s.get("public_key")
                .and_then(|k| k.as_str())
                .map(String::from)
        });
        if running.as_deref() == Some(new.as_str()) {
            println!("rotated the key: {old} -> {new}; the mesh moves to the new key by gossip");
            return Ok(());
        }
    }
    bail!("the daemon stored the new key {new} but does not run with it after 30 s: check its log")
}
