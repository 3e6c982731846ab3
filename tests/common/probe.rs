//! Traffic probes between pods for the NetworkPolicy tests, in-process: a thread that
//! enters a pod's network namespace (setns) serves or probes TCP and UDP ports there.
//! Servers answer `ok` (IPv4, or IPv4 and IPv6); a probe is allowed when the answer
//! arrives within its timeout.
//! Every socket has a timeout; servers stop when their guard drops.

use super::Netns;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs `f` on a thread inside `netns` and returns its result.
pub fn in_netns<T: Send + 'static>(netns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", netns.name());
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; it changes only this short-lived thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// TCP and UDP servers on some ports of a pod; they stop on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Serves `ports` over TCP and UDP on every IPv4 address of `netns`.
    pub fn start(netns: &Netns, ports: &[u16]) -> Servers {
        Self::start_on(netns, ports, false)
    }

    /// Serves `ports` over TCP and UDP on every IPv4 and IPv6 address of `netns` (one
    /// socket per family: the IPv6 ones are `IPV6_V6ONLY`).
    pub fn start_dual_stack(netns: &Netns, ports: &[u16]) -> Servers {
        Self::start_on(netns, ports, true)
    }

    fn start_on(netns: &Netns, ports: &[u16], v6: bool) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let (tcp, udp) = in_netns(netns, move || {
                let tcp = TcpListener::bind(("0.0.0.0", port)).expect("tcp bind");
                let udp = UdpSocket::bind(("0.0.0.0", port)).expect("udp bind");
                (tcp, udp)
            });
            serve(tcp, udp, &stop, &mut threads);
            if v6 {
                let (tcp, udp) = in_netns(netns, move || bind_v6_only(port));
                serve(tcp, udp, &stop, &mut threads);
            }
        }
        Servers { stop, threads }
    }
}

/// A TCP listener and a UDP socket on `[::]:port` that take IPv6 only.
fn bind_v6_only(port: u16) -> (TcpListener, UdpSocket) {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
    let open = |ty: Type| {
        let s = Socket::new(Domain::IPV6, ty, None).expect("ipv6 socket");
        s.set_only_v6(true).expect("IPV6_V6ONLY");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind [::]:{port}: {e}"));
        s
    };
    let tcp = open(Type::STREAM);
    tcp.listen(128).expect("listen");
    (tcp.into(), open(Type::DGRAM).into())
}

/// Threads that answer `ok` on `tcp` and `udp` until `stop`.
fn serve(
    tcp: TcpListener,
    udp: UdpSocket,
    stop: &Arc<AtomicBool>,
    threads: &mut Vec<JoinHandle<()>>,
) {
    tcp.set_nonblocking(true).expect("nonblocking");
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = c.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }));
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !s.load(Ordering::Relaxed) {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(b"ok", from);
            }
        }
    }));
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A transport protocol of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Whether a connection from inside `netns` to `to:port` gets its answer in `timeout`.
pub fn probe_in(netns: &Netns, to: IpAddr, proto: Proto, port: u16, timeout: Duration) -> bool {
    in_netns(netns, move || probe(to, proto, port, timeout))
}

/// Probes from the calling thread's namespace.
pub fn probe(to: IpAddr, proto: Proto, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(to, port);
    let mut buf = [0u8; 2];
    match proto {
        Proto::Tcp => {
            let Ok(mut c) = TcpStream::connect_timeout(&addr, timeout) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(timeout));
            c.read_exact(&mut buf).is_ok() && &buf == b"ok"
        }
        Proto::Udp => {
            let any: IpAddr = if to.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let Ok(s) = UdpSocket::bind((any, 0)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout / 2));
            // Two tries: one lost datagram must not read as a denial.
            for _ in 0..2 {
                if s.send_to(b"x", addr).is_err() {
                    continue;
                }
                if let Ok((2, _)) = s.recv_from(&mut buf) {
                    return &buf == b"ok";
                }
            }
            false
        }
    }
}
