//! A deterministic network simulator for [`Gossip`] nodes, used by the simulation
//! tests and the `gossip_sim` benchmark: N state machines exchange datagrams over a
//! virtual network with per-link delay, random loss and partitions, in virtual time
//! (the clock jumps to the next delivery or wake-up). Everything is reproducible from
//! one seed.

use super::rng::Rng;
use super::{Event, Gossip, GossipConfig, GossipError, Handover, NodeRecord};
use crate::keys::{PrivateKey, PublicKey};
use blake2::digest::Digest as _;
use blake2::Blake2s256;
use ipnet::IpNet;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Network and protocol settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of everything random (keys, loss, delays, protocol randomness).
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Smallest one-way link delay; each link gets a fixed delay in
    /// `min_delay..max_delay`, each datagram up to 10% jitter on top.
    pub min_delay: Duration,
    /// Largest one-way link delay.
    pub max_delay: Duration,
    /// Probability that a datagram is delivered twice (the copy with its own delay).
    pub duplicate: f64,
    /// Extra delay, uniform in `0..reorder`, drawn for each datagram: with more than
    /// the spacing of a sender's datagrams, later ones overtake earlier ones.
    pub reorder: Duration,
    /// Protocol settings of every node.
    pub gossip: GossipConfig,
    /// Keep every node's events in [`SimNode::events`].
    pub record_events: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            loss: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            duplicate: 0.0,
            reorder: Duration::ZERO,
            gossip: GossipConfig::default(),
            record_events: true,
        }
    }
}

/// One simulated host.
#[derive(Debug)]
pub struct SimNode {
    /// The state machine; `None` while the host is down.
    pub gossip: Option<Gossip>,
    /// Its underlay address.
    pub addr: SocketAddr,
    /// Its public key.
    pub key: PublicKey,
    /// Its private key.
    identity: PrivateKey,
    /// Its cluster secret.
    pub secret: [u8; 32],
    /// Its record at the last (re)start.
    pub record: NodeRecord,
    /// Events with the virtual time they were polled (if recorded).
    pub events: Vec<(Duration, Event)>,
    /// Dropped datagrams per [`GossipError::index`].
    pub errors: [u64; GossipError::COUNT],
    /// Datagrams sent.
    pub sent_datagrams: u64,
    /// Bytes (UDP payload) sent.
    pub sent_bytes: u64,
    /// Times started, for boot epochs.
    pub boots: u64,
    deadline: Option<Instant>,
    timer_gen: u64,
}

/// A datagram on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    at: Instant,
    order: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated network and its hosts.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    start: Instant,
    now: Instant,
    rng: Rng,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    flights: BinaryHeap<Reverse<Flight>>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    order: u64,
    groups: Option<Vec<u32>>,
    /// When set, copies of datagrams sent by this node are kept in `tapped`.
    pub tap: Option<usize>,
    /// Datagrams captured from the tapped node: destination and bytes.
    pub tapped: Vec<(SocketAddr, Vec<u8>)>,
}

fn hash64(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl Sim {
    /// An empty network at virtual time zero.
    pub fn new(config: SimConfig) -> Self {
        let start = Instant::now();
        Self {
            rng: Rng::new(config.seed),
            config,
            start,
            now: start,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            flights: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            order: 0,
            groups: None,
            tap: None,
            tapped: Vec::new(),
        }
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// All hosts.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// One host.
    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// What host `observer` knows about the node with `key` (`None` while the
    /// observer is down or does not know it).
    pub fn member(&self, observer: usize, key: &PublicKey) -> Option<super::Member> {
        self.nodes[observer]
            .gossip
            .as_ref()
            .and_then(|g| g.member(key))
    }

    /// Host `i`'s private key (for tests that speak as it).
    pub fn identity(&self, i: usize) -> &PrivateKey {
        &self.nodes[i].identity
    }

    /// A running host's state machine. Call [`Sim::poke`] after changing it.
    pub fn gossip_mut(&mut self, i: usize) -> Option<&mut Gossip> {
        self.nodes[i].gossip.as_mut()
    }

    /// Adds and starts a host with `secret`, owning `prefixes`. Its key and address
    /// derive from the seed and its index (10.x.y.z:51820).
    pub fn add_node(&mut self, secret: [u8; 32], prefixes: Vec<IpNet>) -> usize {
        let i = self.nodes.len();
        let identity = PrivateKey::from_bytes(hash64(&[
            b"sim key",
            &self.config.seed.to_le_bytes(),
            &(i as u64).to_le_bytes(),
        ]));
        let key = identity.public_key();
        let n = i as u32 + 1;
        let addr = SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 51820));
        let record = NodeRecord {
            public_key: key,
            name: format!("node-{i}"),
            endpoint: addr,
            prefixes,
            version: 0,
            certificate: None,
            handover: None,
        };
        self.nodes.push(SimNode {
            gossip: None,
            addr,
            key,
            identity,
            secret,
            record,
            events: Vec::new(),
            errors: [0; GossipError::COUNT],
            sent_datagrams: 0,
            sent_bytes: 0,
            boots: 0,
            deadline: None,
            timer_gen: 0,
        });
        self.by_addr.insert(addr, i);
        self.boot(i);
        i
    }

    fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.boots += 1;
        // Epochs grow across restarts, like wall-clock milliseconds would.
        let epoch = 1_700_000_000_000 + (self.now - self.start).as_millis() as u64 + node.boots;
        let seed = self.config.seed ^ ((i as u64) << 20) ^ node.boots;
        node.gossip = Gossip::new(
            self.config.gossip.clone(),
            &[node.secret],
            &node.identity,
            node.record.clone(),
            epoch,
            seed,
            self.now,
        )
        .ok();
        self.after(i);
    }

    /// Makes host `i` join through the hosts `seeds` (by address).
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        let addrs: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        let now = self.now;
        if let Some(g) = self.nodes[i].gossip.as_mut() {
            g.join(&addrs, now);
        }
        self.after(i);
    }

    /// Crashes host `i` (no leave): its state is lost.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].gossip = None;
        self.nodes[i].deadline = None;
    }

    /// Restarts host `i` with a new boot epoch and the same key and record.
    pub fn restart(&mut self, i: usize) {
        self.boot(i);
    }

    /// Restarts host `i` with a rotated key: `identity` is its new private key and
    /// `handover` the old key's statement for it (PROTOCOL.md §6.13); it rejoins
    /// through the hosts `seeds`.
    pub fn rotate(&mut self, i: usize, identity: PrivateKey, handover: Handover, seeds: &[usize]) {
        let node = &mut self.nodes[i];
        node.key = identity.public_key();
        node.record.public_key = node.key;
        node.record.handover = Some(handover);
        node.identity = identity;
        self.boot(i);
        self.join(i, seeds);
    }

    /// Moves host `i` to the underlay address `addr` (a roaming host): its datagrams
    /// come from there and it announces the new endpoint in its record.
    pub fn move_node(&mut self, i: usize, addr: SocketAddr) {
        let old = self.nodes[i].addr;
        self.by_addr.remove(&old);
        self.by_addr.insert(addr, i);
        self.nodes[i].addr = addr;
        self.nodes[i].record.endpoint = addr;
        let now = self.now;
        if let Some(g) = self.nodes[i].gossip.as_mut() {
            // Only the endpoint changes, which is always a valid record.
            let _ = g.update_record(|r| r.endpoint = addr, now);
        }
        self.after(i);
    }

    /// Splits the network: hosts in different groups cannot reach each other.
    /// `None` heals it.
    pub fn partition(&mut self, groups: Option<Vec<u32>>) {
        self.groups = groups;
    }

    /// Delivers raw bytes to host `to` as if sent from `from`, at the current virtual
    /// time (in order with other injected datagrams).
    pub fn inject(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        self.order += 1;
        self.flights.push(Reverse(Flight {
            at: self.now,
            order: self.order,
            to,
            from,
            bytes,
        }));
    }

    /// Call after changing a node through [`Sim::gossip_mut`]: sends what it queued
    /// and reschedules its timer.
    pub fn poke(&mut self, i: usize) {
        self.after(i);
    }

    fn link_delay(&mut self, a: usize, b: usize) -> Duration {
        let (lo, hi) = (self.config.min_delay, self.config.max_delay);
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        let h = hash64(&[
            b"link",
            &(a.min(b) as u64).to_le_bytes(),
            &(a.max(b) as u64).to_le_bytes(),
        ]);
        let base = lo
            + Duration::from_nanos(
                u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % span.max(1),
            );
        base + self.rng.jitter(base / 10)
    }

    fn route(&mut self, from: usize, to_addr: SocketAddr, bytes: Vec<u8>) {
        let node = &mut self.nodes[from];
        node.sent_datagrams += 1;
        node.sent_bytes += bytes.len() as u64;
        let from_addr = node.addr;
        if self.tap == Some(from) {
            self.tapped.push((to_addr, bytes.clone()));
        }
        let Some(&to) = self.by_addr.get(&to_addr) else {
            return;
        };
        if let Some(g) = &self.groups {
            if g.get(from) != g.get(to) {
                return;
            }
        }
        if self.config.loss > 0.0 && self.rng.chance(self.config.loss) {
            return;
        }
        let copies = if self.config.duplicate > 0.0 && self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now + self.link_delay(from, to);
            if !self.config.reorder.is_zero() {
                at += self.rng.jitter(self.config.reorder);
            }
            self.order += 1;
            self.flights.push(Reverse(Flight {
                at,
                order: self.order,
                to,
                from: from_addr,
                bytes: bytes.clone(),
            }));
        }
    }

    fn after(&mut self, i: usize) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let deadline = match self.nodes[i].gossip.as_mut() {
            Some(g) => {
                while let Some(t) = g.poll_transmit() {
                    out.push(t);
                }
                while let Some(e) = g.poll_event() {
                    events.push(e);
                }
                g.poll_timeout()
            }
            None => None,
        };
        for (to, bytes) in out {
            self.route(i, to, bytes);
        }
        if self.config.record_events {
            let t = self.elapsed();
            self.nodes[i]
                .events
                .extend(events.into_iter().map(|e| (t, e)));
        }
        let node = &mut self.nodes[i];
        let deadline = deadline.map(|d| d.max(self.now));
        if deadline != node.deadline {
            node.deadline = deadline;
            node.timer_gen += 1;
            if let Some(d) = deadline {
                self.timers.push(Reverse((d, i, node.timer_gen)));
            }
        }
    }

    /// Runs until virtual time `until` (after the start).
    pub fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            while let Some(Reverse((_, i, gen))) = self.timers.peek() {
                if self.nodes[*i].timer_gen == *gen && self.nodes[*i].deadline.is_some() {
                    break;
                }
                self.timers.pop();
            }
            let next_flight = self.flights.peek().map(|Reverse(f)| f.at);
            let next_timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
            let next = match (next_flight, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_flight == Some(next) {
                let Some(Reverse(f)) = self.flights.pop() else {
                    break;
                };
                let now = self.now;
                if let Some(g) = self.nodes[f.to].gossip.as_mut() {
                    if let Err(e) = g.handle_datagram(f.from, &f.bytes, now) {
                        self.nodes[f.to].errors[e.index()] += 1;
                    }
                    self.after(f.to);
                }
            } else if let Some(Reverse((_, i, _))) = self.timers.pop() {
                self.nodes[i].deadline = None;
                let now = self.now;
                if let Some(g) = self.nodes[i].gossip.as_mut() {
                    g.handle_timeout(now);
                }
                self.after(i);
            }
        }
        self.now = self.now.max(end);
    }

    /// Runs in steps of `step` until `done` holds or `limit` (after the start) is
    /// reached; returns the virtual time when it held.
    pub fn run_until_true(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        loop {
            if done(self) {
                return Some(self.elapsed());
            }
            if self.elapsed() >= limit {
                return None;
            }
            let next = (self.elapsed() + step).min(limit);
            self.run_until(next);
        }
    }

    /// True when every running host holds the same view with exactly `entries`
    /// entries.
    pub fn converged(&self, entries: u32) -> bool {
        let mut digests = self
            .nodes
            .iter()
            .filter_map(|n| n.gossip.as_ref().map(Gossip::view_digest));
        let Some(first) = digests.next() else {
            return true;
        };
        first.entries == entries && digests.all(|d| d == first)
    }

    /// Datagram errors of every host, summed per kind.
    pub fn errors(&self) -> [u64; GossipError::COUNT] {
        let mut sum = [0; GossipError::COUNT];
        for n in &self.nodes {
            for (s, e) in sum.iter_mut().zip(n.errors) {
                *s += e;
            }
        }
        sum
    }

    /// Total errors of one kind.
    pub fn error_count(&self, e: GossipError) -> u64 {
        self.errors()[e.index()]
    }
}
