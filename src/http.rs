//! The daemon's small HTTP server (hyper), shared by the health endpoint
//! (`--health-listen`, [`crate::health`]) and the Prometheus metrics
//! (`--metrics`, [`crate::metrics`]): listeners bound early in start-up, one per
//! distinct address (the two flags may name the same one), each answering `GET` and
//! `HEAD` on a fixed set of paths, at most [`crate::accept::MAX_CONNECTIONS`]
//! connections at once. Every answer is computed when asked; nothing here keeps
//! state.

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer: status, content type and body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Reply {
    /// A `text/plain` answer.
    pub(crate) fn text(status: StatusCode, body: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// What answers `GET` on one path.
pub(crate) struct Route {
    pub(crate) path: &'static str,
    pub(crate) answer: Box<dyn Fn() -> Reply + Send + Sync>,
}

/// A bound listener and the flags it serves (for error messages).
pub(crate) struct Listener {
    listener: std::net::TcpListener,
    /// Which settings asked for this address, e.g. `--health-listen and --metrics`.
    pub(crate) serves: Vec<&'static str>,
}

impl Listener {
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// Binds one listener per distinct address of `wanted` (`(flag, address)` pairs), so
/// two settings with the same address share a listener. Called early in start-up, so a
/// port in use fails before anything is created.
pub(crate) fn bind(wanted: &[(&'static str, SocketAddr)]) -> Result<Vec<Listener>> {
    let mut out: Vec<Listener> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (flag, addr) in wanted {
        if let Some(i) = addrs.iter().position(|a| a == addr) {
            out[i].serves.push(flag);
            continue;
        }
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("cannot listen on {flag} {addr}: choose a free port or another address")
        })?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("cannot make the {flag} listener non-blocking"))?;
        addrs.push(*addr);
        out.push(Listener {
            listener,
            serves: vec![flag],
        });
    }
    Ok(out)
}

fn answer(routes: &[Route], req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = if !matches!(req.method(), &Method::GET | &Method::HEAD) {
        Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into())
    } else if let Some(r) = routes.iter().find(|r| r.path == req.uri().path()) {
        (r.answer)()
    } else {
        let paths: Vec<&str> = routes.iter().map(|r| r.path).collect();
        Reply::text(
            StatusCode::NOT_FOUND,
            format!("not found: use {}\n", paths.join(" or ")),
        )
    };
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() = reply.status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    r
}

/// Serves `routes` on `listener` in the background (on the current tokio runtime), at
/// most [`crate::accept::MAX_CONNECTIONS`] connections at once, with backoff on
/// accept errors ([`crate::accept::serve`]).
pub(crate) fn serve(listener: Listener, routes: Vec<Route>) -> Result<tokio::task::JoinHandle<()>> {
    let what = listener.serves.join(" and ");
    let listener = tokio::net::TcpListener::from_std(listener.listener)
        .with_context(|| format!("cannot register the {what} listener"))?;
    let routes = Arc::new(routes);
    Ok(tokio::spawn(crate::accept::serve(
        listener,
        what,
        crate::accept::MAX_CONNECTIONS,
        move |stream| {
            let routes = Arc::clone(&routes);
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = answer(&routes, &req);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            }
        },
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// `GET path` on `addr`: the whole raw answer.
    pub(crate) fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
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

    /// A runtime for serving in tests.
    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A free local address (bound and released).
    pub(crate) fn free_addr() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    }

    #[test]
    fn one_listener_per_address_and_a_taken_port_names_the_flag() {
        let a = free_addr();
        let b = free_addr();
        let ls = bind(&[("--health-listen", a), ("--metrics", a)]).expect("bind");
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].serves, ["--health-listen", "--metrics"]);
        assert_eq!(ls[0].addr(), Some(a));
        let e = bind(&[("--health-listen", b), ("--metrics", a)])
            .err()
            .expect("port in use");
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!(
                "cannot listen on --metrics {a}: choose a free port"
            )),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn routes_answer_and_others_are_not_found() {
        let rt = runtime();
        let addr = free_addr();
        rt.block_on(async {
            let mut ls = bind(&[("--metrics", addr)]).expect("bind");
            let routes = vec![Route {
                path: "/a",
                answer: Box::new(|| Reply {
                    status: StatusCode::OK,
                    content_type: "text/x-test",
                    body: "hello\n".into(),
                }),
            }];
            serve(ls.remove(0), routes).expect("serve");
        });
        let ok = get(addr, "/a");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("content-type: text/x-test"), "{ok}");
        assert!(ok.ends_with("hello\n"), "{ok}");
        let missing = get(addr, "/b");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(missing.contains("use /a"), "{missing}");
        // Garbage is answered (400) or dropped by hyper, never a panic.
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"\x00\xff garbage\r\n\r\n").expect("write");
        assert!(get(addr, "/a").starts_with("HTTP/1.1 200"));
    }
}
