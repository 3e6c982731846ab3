//! One worker: a thread that serves its TUN queue (`super::outbound`) and its UDP
//! socket (`super::inbound`) in turn, and sleeps in one epoll wait on both when both
//! are empty.
//!
//! One thread per worker rather than one per direction: a packet that crosses the
//! tunnel and the reply it causes then wake the same thread, which the scheduler
//! keeps on the CPU that last ran it, so a request-response exchange does not pay to
//! wake a second, idle CPU on each hop (the round trip measured 15-20 µs shorter on
//! this project's 2-core benchmark machine). Each side gets a bounded batch per turn,
//! so bulk traffic one way does not starve the other (TCP's ACKs, for one).

use super::inbound::UdpReader;
use super::outbound::TunReader;
use super::{Dataplane, POLL_MS};
use anyhow::Context;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

impl Dataplane {
    /// Serves worker `lane`'s TUN queue and UDP socket until stopped; fails if either
    /// cannot be read or polled, or the socket is unusable.
    pub(super) fn worker_loop(&self, lane: usize) -> anyhow::Result<()> {
        let tun = &self.tun[lane];
        let udp = &self.udp[lane];
        let what = if self.workers() == 1 {
            "the TUN device".to_string()
        } else {
            format!("TUN queue {lane}")
        };
        let mut outbound = TunReader::new(self, tun, lane);
        let mut inbound = UdpReader::new(self, lane);
        let reads = &self.lane_tun_reads[lane];
        // Whether each side may have more to read, and whether the TUN side was empty
        // before (its first packet then leaves at once).
        let (mut tun_ready, mut udp_ready, mut woke) = (true, true, false);
        let stop = self.lifecycle.stop_fd();
        // Without a stop descriptor, wake now and then to look at the stop flag.
        let timeout = if stop.is_some() { -1 } else { POLL_MS };
        let mut waiter = Waiter::new([Some(tun.fd()), Some(udp.fd()), stop])
            .with_context(|| format!("setting up the wait on {what} and its UDP socket"))?;
        while !self.stopping() {
            if tun_ready {
                tun_ready = !outbound.pump(self, tun, &what, woke, reads, |mesh, p, s, b| {
                    self.route_out(mesh, p, s, b)
                })?;
            }
            woke = false;
            if udp_ready {
                udp_ready = !inbound.pump(self)?;
            }
            if tun_ready || udp_ready {
                continue;
            }
            let [tun_events, udp_events, _stop] = waiter
                .wait(timeout)
                .with_context(|| format!("waiting on {what} and its UDP socket"))?;
            if udp_events & libc::EPOLLERR as u32 != 0 {
                // Errors of earlier sends (ICMP unreachable) wait on the error queue.
                self.counters.add_udp_async_errors(udp.drain_errors());
            }
            tun_ready = tun_events != 0;
            udp_ready = udp_events != 0;
            woke = tun_ready;
        }
        Ok(())
    }
}

/// An epoll instance watching a worker's descriptors for input: registered once, so
/// a wait costs no per-call setup (poll(2) adds and removes a wait-queue entry per
/// descriptor on every call).
struct Waiter {
    epoll: OwnedFd,
}

/// Descriptors a worker waits on: its TUN queue, its UDP socket, the stop event.
const WATCHED: usize = 3;

impl Waiter {
    fn new(fds: [Option<RawFd>; WATCHED]) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for (i, fd) in fds.into_iter().enumerate() {
            let Some(fd) = fd else { continue };
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
        Ok(Self { epoll })
    }

    /// Waits up to `timeout_ms` (-1: no limit) for input (or an error) on any
    /// descriptor; returns each one's events, all 0 on a timeout or a signal.
    fn wait(&mut self, timeout_ms: i32) -> io::Result<[u32; WATCHED]> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; WATCHED];
        // SAFETY: `events` has room for the WATCHED entries the call may fill.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                WATCHED as i32,
                timeout_ms,
            )
        };
        let mut ready = [0u32; WATCHED];
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(ready)
            } else {
                Err(e)
            };
        }
        for event in events.iter().take(n as usize) {
            if let Some(slot) = ready.get_mut(event.u64 as usize) {
                *slot = event.events;
            }
        }
        Ok(ready)
    }
}
