//! Delay, jitter and so reordering of the underlay, in userspace (this kernel has no
//! netem and no NFQUEUE, and nftables cannot hold a packet back).
//!
//! A [`Delay`] sits on one host's egress: in the host's namespace, policy routing sends
//! the UDP datagrams to the chosen peers (`ip rule ipproto udp` on unmarked packets, to
//! a table whose only routes are the peers' underlay addresses via a TUN device) into a
//! TUN owned by a thread of the test process (it entered the namespace with `setns`).
//! The thread holds each packet for `delay` plus a uniform jitter in `-jitter..=jitter`
//! (a jitter comparable to the packets' spacing reorders them) and then re-sends it
//! unchanged with a raw IPv4 socket (`IPPROTO_RAW`, the header included) marked with
//! `SO_MARK`, which the rules send by the main table out of `eth0`. Everything else
//! (ARP, neighbour discovery, TCP, IPv6, other destinations) is untouched.
//!
//! Bounded: at most [`QUEUE_CAP`] packets are held (more are dropped and counted). On
//! drop the thread stops (it polls a flag at least every 20 ms), its TUN disappears with
//! its routes, and the rule is deleted; if the test dies, the namespace's deletion
//! removes all of it.

use super::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Most packets held at once by one [`Delay`].
pub const QUEUE_CAP: usize = 4096;
/// The mark on re-sent packets: the delay rules match unmarked packets only.
const MARK: u32 = 0x7764;
/// The longest the thread sleeps before it looks at its stop flag again.
const TICK: Duration = Duration::from_millis(20);

static RULE_COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Default)]
struct Stats {
    delayed: AtomicU64,
    reordered: AtomicU64,
    dropped: AtomicU64,
    send_errors: AtomicU64,
}

/// One host's delayed egress towards some peers; removed on drop.
#[derive(Debug)]
pub struct Delay {
    ns: Netns,
    pref: u32,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Delay {
    /// Delays the UDP datagrams (IPv4) `host` sends to `peers` by `delay` +- `jitter`.
    pub fn egress(host: &Host, peers: &[&Host], delay: Duration, jitter: Duration) -> Delay {
        let ns = host.netns().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (name, stop, stats) = (ns.name().to_owned(), stop.clone(), stats.clone());
            std::thread::spawn(move || match open(&name) {
                Ok((tun, ifname, raw)) => {
                    let _ = tx.send(Ok(ifname));
                    run(&tun, &raw, delay, jitter, &stop, &stats);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
        };
        let n = RULE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let (pref, table) = (1000 + n, 1000 + n);
        let guard = Delay {
            ns,
            pref,
            stop,
            stats,
            thread: Some(thread),
        };
        let ifname = match rx.recv_timeout(EXEC_TIMEOUT) {
            Ok(Ok(ifname)) => ifname,
            Ok(Err(e)) => panic!("delay in {}: {e}", host.name()),
            Err(e) => panic!("delay in {}: the thread did not start: {e}", host.name()),
        };
        let ns = &guard.ns;
        let mtu = ns.run(
            "cat",
            &[format!("/sys/class/net/{}/mtu", host.underlay_if())],
        );
        // No IPv6 on the TUN: nothing of the kernel's own (MLD, router solicitations).
        ns.sysctl(&[(&format!("net.ipv6.conf.{ifname}.disable_ipv6") as &str, "1")]);
        ns.ip(&["link", "set", &ifname, "mtu", mtu.trim(), "up"]);
        let (src, table) = (host.underlay_v4().to_string(), table.to_string());
        for p in peers {
            let to = format!("{}/32", p.underlay_v4());
            ns.ip(&[
                "route", "add", &to, "dev", &ifname, "src", &src, "table", &table,
            ]);
        }
        let pref_s = pref.to_string();
        ns.ip(&[
            "rule",
            "add",
            "pref",
            &pref_s,
            "ipproto",
            "udp",
            "fwmark",
            "0/0xffffffff",
            "lookup",
            &table,
        ]);
        guard
    }

    /// Every host of `underlay` delays what it sends to every other host: a datagram
    /// between two hosts is held once, so a round trip gains about `2 * delay`.
    pub fn everywhere(underlay: &Underlay, delay: Duration, jitter: Duration) -> Vec<Delay> {
        let hosts = underlay.hosts();
        hosts
            .iter()
            .map(|h| {
                let peers: Vec<&Host> = hosts.iter().filter(|p| p.index() != h.index()).collect();
                Delay::egress(h, &peers, delay, jitter)
            })
            .collect()
    }

    /// Packets held and re-sent so far.
    pub fn delayed(&self) -> u64 {
        self.stats.delayed.load(Ordering::Relaxed)
    }
    /// Packets re-sent after a packet that had arrived later (each counts once).
    pub fn reordered(&self) -> u64 {
        self.stats.reordered.load(Ordering::Relaxed)
    }
    /// Packets dropped because [`QUEUE_CAP`] were held already, or not IPv4.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
    /// Re-sends the kernel refused.
    pub fn send_errors(&self) -> u64 {
        self.stats.send_errors.load(Ordering::Relaxed)
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let pref = self.pref.to_string();
        let out = self.ns.exec("ip", &["rule", "del", "pref", &pref]);
        if !out.status.success() && !std::thread::panicking() {
            eprintln!(
                "[harness] could not remove delay rule {pref} in {}: {}",
                self.ns.name(),
                describe(&out)
            );
        }
    }
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// In this thread: enter namespace `name`, open a TUN (non-blocking, no packet info) and
/// a marked raw IPv4 socket there. Returns (tun, its name, raw socket).
fn open(name: &str) -> Result<(OwnedFd, String, OwnedFd), String> {
    let ns = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(|e| format!("open /run/netns/{name}: {e}"))?;
    // SAFETY: plain syscalls on descriptors we own; setns changes this thread only.
    unsafe {
        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return Err(last_error("setns"));
        }
        let fd = libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(last_error("open /dev/net/tun"));
        }
        let tun = OwnedFd::from_raw_fd(fd);
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            flags: libc::c_short,
            pad: [u8; 22],
        }
        let mut req = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            pad: [0; 22],
        };
        req.name[..8].copy_from_slice(b"wtdly%d\0");
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        if libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) != 0 {
            return Err(last_error("TUNSETIFF"));
        }
        let len = req.name.iter().position(|b| *b == 0).unwrap_or(16);
        let ifname = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        );
        if fd < 0 {
            return Err(last_error("raw socket"));
        }
        let raw = OwnedFd::from_raw_fd(fd);
        let mark: u32 = MARK;
        if libc::setsockopt(
            raw.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        ) != 0
        {
            return Err(last_error("SO_MARK"));
        }
        Ok((tun, ifname, raw))
    }
}

/// A held packet: due time, arrival order, bytes.
type Held = Reverse<(Instant, u64, Vec<u8>)>;

/// The thread's loop: read what the TUN gives, hold it, re-send what is due; until `stop`.
fn run(
    tun: &OwnedFd,
    raw: &OwnedFd,
    delay: Duration,
    jitter: Duration,
    stop: &AtomicBool,
    stats: &Stats,
) {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    let mut rng = Rng::seeded();
    let (mut next_seq, mut max_sent) = (0u64, None::<u64>);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, seq, pkt))) = heap.pop() else {
                break;
            };
            if max_sent.is_some_and(|m| seq < m) {
                stats.reordered.fetch_add(1, Ordering::Relaxed);
            }
            max_sent = Some(max_sent.map_or(seq, |m| m.max(seq)));
            if send(raw, &pkt) {
                stats.delayed.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = heap
            .peek()
            .map_or(TICK, |Reverse((at, _, _))| {
                at.saturating_duration_since(now)
            })
            .min(TICK);
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        if unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let pkt = &buf[..n as usize];
            if heap.len() >= QUEUE_CAP || pkt.len() < 20 || pkt[0] >> 4 != 4 {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let at = Instant::now() + rng.around(delay, jitter);
            heap.push(Reverse((at, next_seq, pkt.to_vec())));
            next_seq += 1;
        }
    }
}

/// Re-sends an IPv4 packet as it is, to its destination; true if the kernel took it.
fn send(raw: &OwnedFd, pkt: &[u8]) -> bool {
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a buffer of its length and a sockaddr_in of its size.
    let n = unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    n == pkt.len() as isize
}

/// xorshift64*: enough randomness for jitter, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `delay - jitter ..= delay + jitter` (never below zero).
    fn around(&mut self, delay: Duration, jitter: Duration) -> Duration {
        let span = jitter.as_micros() as u64 * 2;
        let offset = if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        };
        (delay + Duration::from_micros(offset)).saturating_sub(jitter)
    }
}
