//! The health endpoint for probes (`--health-listen`): `GET /healthz` answers 200
//! while the daemon's threads run, `GET /readyz` answers 200 once the node can carry
//! pod traffic (its block is known and, in Kubernetes mode, the CNI config is
//! written), 503 with the reason otherwise. Served by [`crate::http`].

use crate::http::{Reply, Route};
use hyper::StatusCode;
use std::sync::Arc;

/// The setting that asks for the probes, as error messages name it.
pub(crate) const FLAG: &str = "--health-listen";

/// Answers for the two probes: `Ok(())` or the reason it is not healthy/ready.
pub(crate) struct Checks {
    pub(crate) live: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    pub(crate) ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

fn reply(result: Result<(), String>) -> Reply {
    match result {
        Ok(()) => Reply::text(StatusCode::OK, "ok\n".into()),
        Err(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The probes' paths: `/healthz` (and its alias `/livez`) and `/readyz`.
pub(crate) fn routes(checks: Checks) -> Vec<Route> {
    let checks = Arc::new(checks);
    let live = Arc::clone(&checks);
    let live_alias = Arc::clone(&checks);
    vec![
        Route {
            path: "/healthz",
            answer: Box::new(move || reply((live.live)())),
        },
        Route {
            path: "/livez",
            answer: Box::new(move || reply((live_alias.live)())),
        },
        Route {
            path: "/readyz",
            answer: Box::new(move || reply((checks.ready)())),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::{free_addr, get, runtime};
    use std::io::Write;

    #[test]
    fn probes_answer_with_status_and_reason() {
        let rt = runtime();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&ready);
        let addr = free_addr();
        rt.block_on(async {
            let mut ls = crate::http::bind(&[("--health-listen", addr)]).expect("bind");
            let checks = Checks {
                live: Box::new(|| Ok(())),
                ready: Box::new(move || {
                    if r.load(std::sync::atomic::Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err("no block yet".into())
                    }
                }),
            };
            crate::http::serve(ls.remove(0), routes(checks)).expect("serve");
        });
        let live = get(addr, "/healthz");
        assert!(live.starts_with("HTTP/1.1 200"), "{live}");
        assert!(get(addr, "/livez").starts_with("HTTP/1.1 200"));
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
