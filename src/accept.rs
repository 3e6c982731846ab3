//! The accept loop shared by the local endpoints (the HTTP listeners for probes and
//! metrics, the control socket): at most a fixed number of connections at once (one
//! beyond that is closed at once and logged, with a count, at most every 10 s), and
//! a failing `accept` (out of file descriptors, most likely) is retried after a sleep
//! growing from 10 ms to 1 s, reset by the next success, instead of spinning or
//! ending the daemon.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Connections one endpoint serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// First sleep after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest sleep after failed accepts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Least time between two log lines about the same kind of trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A listener whose connections [`serve`] accepts.
pub(crate) trait Accept: Send + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// The sleep after each failed accept: doubles from [`BACKOFF_MIN`] up to
/// [`BACKOFF_MAX`]; a success starts it over.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The sleep after one more failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let d = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((d * 2).min(BACKOFF_MAX));
        d
    }

    /// After a success.
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}

/// Says whether to log now: at most once per [`LOG_EVERY`], with the number of
/// occurrences since the last line.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    since: u64,
}

impl LogLimit {
    /// Counts one occurrence; `Some(n)` (occurrences since the last line, this one
    /// included) when a line is due.
    fn due(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Accepts connections on `listener` forever and runs `handle` on each (in its own
/// task), at most `max` at once. `what` names the endpoint in log lines. Never
/// returns: no accept error ends it.
pub(crate) async fn serve<L, F, Fut>(listener: L, what: String, max: usize, handle: F)
where
    L: Accept,
    F: Fn(L::Stream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut backoff = Backoff::default();
    let mut full_log = LogLimit::default();
    let mut error_log = LogLimit::default();
    loop {
        match listener.accept_one().await {
            Ok(stream) => {
                backoff.reset();
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let conn = handle(stream);
                        tokio::spawn(async move {
                            conn.await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        drop(stream);
                        if let Some(n) = full_log.due(Instant::now()) {
                            tracing::warn!(
                                endpoint = %what,
                                refused = n,
                                max,
                                "too many connections: closed new ones at once"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                let pause = backoff.failed();
                if let Some(n) = error_log.due(Instant::now()) {
                    tracing::warn!(
                        endpoint = %what,
                        error = %e,
                        failures = n,
                        retry_in_ms = pause.as_millis() as u64,
                        "cannot accept connections (out of file descriptors?): retrying"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let steps: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(steps, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(), BACKOFF_MIN);
    }

    #[test]
    fn log_lines_are_rate_limited_with_a_count() {
        let t = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.due(t), Some(1));
        assert_eq!(l.due(t + Duration::from_secs(1)), None);
        assert_eq!(l.due(t + Duration::from_secs(2)), None);
        assert_eq!(l.due(t + LOG_EVERY), Some(3));
    }

    /// Beyond `max` open connections, new ones are closed at once and counted; once
    /// one closes, the next is served again.
    #[test]
    fn connections_beyond_the_cap_are_closed_at_once() {
        use std::io::Read;
        let rt = crate::http::tests::runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let (release, held) = tokio::sync::watch::channel(false);
        rt.block_on(async {
            let listener = tokio::net::UnixListener::bind(&path).expect("bind");
            tokio::spawn(serve(
                listener,
                "test".into(),
                2,
                move |mut stream: tokio::net::UnixStream| {
                    let mut held = held.clone();
                    async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(b"hi").await;
                        let _ = held.wait_for(|r| *r).await;
                    }
                },
            ));
        });
        let connect = || {
            let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = [0u8; 2];
            let n = s.read(&mut buf).unwrap_or(0);
            (s, n)
        };
        let (_a, na) = connect();
        let (_b, nb) = connect();
        assert_eq!((na, nb), (2, 2), "two are served");
        let (_c, nc) = connect();
        assert_eq!(nc, 0, "the third is closed at once");
        release.send_replace(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_d, nd) = connect();
            if nd == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "slots never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
