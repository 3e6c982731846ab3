//! The health endpoint for probes (`--health-listen`): `GET /healthz` answers 200
//! while the daemon's threads run, `GET /readyz` answers 200 once the node can carry
//! pod traffic (its block is known and, in Kubernetes mode, the CNI config is
//! written), 503 with the reason otherwise. HTTP parsing is hyper's.

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// Answers for the two probes: `Ok(())` or the reason it is not healthy/ready.
pub(crate) struct Checks {
    pub(crate) live: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    pub(crate) ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

fn answer(checks: &Checks, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez") => (checks.live)(),
        (&Method::GET | &Method::HEAD, "/readyz") => (checks.ready)(),
        (&Method::GET | &Method::HEAD, _) => {
            return reply(
                StatusCode::NOT_FOUND,
                "not found: use /healthz or /readyz\n".into(),
            )
        }
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
    };
    match result {
        Ok(()) => reply(StatusCode::OK, "ok\n".into()),
        Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Binds the listener; called early in start-up, so a port in use fails before
/// anything is created.
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on --health-listen {addr}: choose a free port or another address")
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot make the health listener non-blocking")?;
    Ok(listener)
}

/// Serves the probes on `listener` in the background.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    checks: Checks,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("cannot register the health listener")?;
    let checks = Arc::new(checks);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let checks = Arc::clone(&checks);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = answer(&checks, &req);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(5))
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn probes_answer_with_status_and_reason() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&ready);
        let addr = rt.block_on(async {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = probe.local_addr().expect("addr");
            drop(probe);
            serve(
                bind(addr).expect("bind"),
                Checks {
                    live: Box::new(|| Ok(())),
                    ready: Box::new(move || {
                        if r.load(std::sync::atomic::Ordering::Relaxed) {
                            Ok(())
                        } else {
                            Err("no block yet".into())
                        }
                    }),
                },
            )
            .expect("serve");
            addr
        });
        let live = get(addr, "/healthz");
        assert!(live.starts_with("HTTP/1.1 200"), "{live}");
        let not_ready = get(addr, "/readyz");
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("no block yet"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 404"));
        // Garbage is answered (400) or dropped by hyper, never a panic.
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"\x00\xff garbage\r\n\r\n").expect("write");
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
    }
}
