//! One worker: a thread that serves its TUN queues (`super::outbound`) and its UDP
//! socket (`super::inbound`) in turn, a bounded batch from each, and sleeps in one
//! epoll wait on all of them when all are empty.
//!
//! One thread per worker rather than one per direction: a packet that crosses the
//! tunnel and the reply it causes then wake the same thread, which the scheduler
//! keeps on the CPU that last ran it, rather than a second thread that may sit on
//! another, idle CPU (waking that costs an inter-processor interrupt, dear in a VM).
//! Each queue and the socket get a bounded batch per turn, so bulk traffic on one
//! does not starve the others: TCP's ACKs, and a small flow beside a bulk one (see
//! `QUEUES_PER_WORKER`).

use super::inbound::UdpReader;
use super::outbound::TunReader;
use super::{Dataplane, POLL_MS};
use crate::tun::Tun;
use anyhow::Context;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

impl Dataplane {
    /// Serves worker `lane`'s TUN queues and UDP socket until stopped; fails if one
    /// cannot be read or polled, or the socket is unusable.
    pub(super) fn worker_loop(&self, lane: usize) -> anyhow::Result<()> {
        let queues: Vec<(String, &Tun)> = self
            .queues_of(lane)
            .map(|(i, q)| {
                let what = if self.tun_queues() == 1 {
                    "the TUN device".to_string()
                } else {
                    format!("TUN queue {i}")
                };
                (what, q)
            })
            .collect();
        let Some((_, first)) = queues.first() else {
            anyhow::bail!("worker {lane} has no TUN queue");
        };
        let udp = &self.udp[lane];
        let mut outbound = TunReader::new(self, first, lane);
        let mut inbound = UdpReader::new(self, lane);
        let reads = &self.lane_tun_reads[lane];
        let stop = self.lifecycle.stop_fd();
        // Without a stop descriptor, wake now and then to look at the stop flag.
        let timeout = if stop.is_some() { -1 } else { POLL_MS };
        // The queues, the socket (index `n`), then the stop eventfd if there is one.
        let fds: Vec<RawFd> = queues
            .iter()
            .map(|(_, q)| q.fd())
            .chain([udp.fd()])
            .chain(stop)
            .collect();
        let mut waiter =
            Waiter::new(&fds).with_context(|| format!("setting up the wait of worker {lane}"))?;
        let n = queues.len();
        // Per queue, then the UDP socket: whether it may have more to read. `woke`: this
        // pass follows a wait, so the queues it reads were empty before (their first
        // packet then leaves at once).
        let mut ready = vec![true; n + 1];
        let mut woke = false;
        let mut events = vec![0u32; fds.len()];
        while !self.stopping() {
            // A bounded batch from each queue in turn, then from the socket.
            for (i, (what, queue)) in queues.iter().enumerate() {
                if ready[i] {
                    let affinity = inbound.affinity();
                    ready[i] = !outbound.pump(
                        self,
                        queue,
                        what,
                        woke,
                        Some(reads),
                        affinity,
                        |m, p, s, b| self.route_out(m, p, s, b),
                    )?;
                }
            }
            woke = false;
            if ready[n] {
                ready[n] = !inbound.pump(self)?;
            }
            if ready.iter().any(|&r| r) {
                continue;
            }
            waiter
                .wait(timeout, &mut events)
                .with_context(|| format!("waiting on the queues and socket of worker {lane}"))?;
            if events[n] & libc::EPOLLERR as u32 != 0 {
                // Errors of earlier sends (ICMP unreachable) wait on the error queue.
                self.counters.add_udp_async_errors(udp.drain_errors());
            }
            for (r, e) in ready.iter_mut().zip(&events) {
                *r = *e != 0;
            }
            woke = true;
        }
        Ok(())
    }
}

/// An epoll instance watching a worker's descriptors for input: registered once, so
/// a wait costs no per-call setup (poll(2) adds and removes a wait-queue entry per
/// descriptor on every call).
///
/// Level-triggered, which is why this is not `mio` (edge-triggered only): the UDP
/// reader takes a short `recvmmsg` as "empty" to save a receive, but a socket error
/// (an ICMP unreachable, with `IP_RECVERR`) also cuts a batch short while datagrams
/// are still queued. A level-triggered wait returns at once for those; an
/// edge-triggered one would leave them until the next datagram arrives.
struct Waiter {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Waiter {
    /// Watches each of `fds`; a wait reports it at its index.
    fn new(fds: &[RawFd]) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for (i, &fd) in fds.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid epoll and target descriptors, and a valid event.
            let rc =
                unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; fds.len().max(1)],
        })
    }

    /// Waits up to `timeout_ms` (-1: no limit) for input (or an error) on any
    /// descriptor; fills `ready` with each one's events, all 0 on a timeout or a
    /// signal.
    fn wait(&mut self, timeout_ms: i32, ready: &mut [u32]) -> io::Result<()> {
        ready.fill(0);
        let max = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` has room for the `max` entries the call may fill.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for event in self.events.iter().take(n as usize) {
            let (index, events) = (event.u64, event.events);
            if let Some(slot) = ready.get_mut(index as usize) {
                *slot = events;
            }
        }
        Ok(())
    }
}
