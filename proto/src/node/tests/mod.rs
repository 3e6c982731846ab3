//! The reconciler in virtual time: several nodes over an in-memory network, each with
//! a model of its host (addresses, routes, peer set, saved block) that the effects
//! change. The model rejects an addition of something present or a removal of
//! something absent, so every test also checks that the diffs are minimal.

use super::*;
use crate::gossip::{GossipConfig, MemberState};
use crate::multicast::GroupFilter;
use diagnose::SEED_ANSWER_BOUND;
use std::collections::BTreeMap;

mod blocks;
mod chained;
mod diagnostics;
mod members;

const START: Duration = Duration::from_secs(1000);

fn n(s: &str) -> IpNet {
    s.parse().expect("net")
}

/// One simulated host: the reconciler and what its effects built.
struct Host {
    node: Node,
    addr: SocketAddr,
    up: bool,
    addresses: BTreeSet<(Link, IpNet)>,
    routes: BTreeMap<IpNet, Option<IpAddr>>,
    peers: Vec<PeerSpec>,
    saved: Option<IpNet>,
    members_saved: Vec<SocketAddr>,
    injected: usize,
    /// Warnings for the operator, with when they came.
    notices: Vec<(Instant, Notice)>,
    /// Route additions the host refuses (to test retries).
    refuse_routes: BTreeSet<IpNet>,
}

struct Net {
    base: Instant,
    now: Instant,
    hosts: Vec<Host>,
    in_flight: Vec<(Instant, usize, SocketAddr, Vec<u8>)>,
}

struct Spec {
    name: &'static str,
    range: Option<(&'static str, u8)>,
    blocks: Vec<&'static str>,
    saved: Option<&'static str>,
    bridge: bool,
    seeds: Vec<usize>,
    /// Seeds written otherwise (a name that does not resolve here).
    seed_names: Vec<&'static str>,
    known: Vec<SocketAddr>,
    /// The cluster secret (all bytes this value).
    secret: u8,
}

impl Spec {
    fn named(name: &'static str) -> Self {
        Self {
            name,
            range: Some(("10.47.0.0/16", 24)),
            blocks: vec![],
            saved: None,
            bridge: false,
            seeds: vec![],
            seed_names: vec![],
            known: vec![],
            secret: 7,
        }
    }
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + i as u8], 51820))
}

fn identity_of(i: usize) -> crate::keys::PrivateKey {
    crate::keys::PrivateKey::from_bytes([10 + i as u8; 32])
}

fn key_of(i: usize) -> PublicKey {
    identity_of(i).public_key()
}

impl Net {
    fn new() -> Self {
        let base = Instant::now();
        Self {
            base,
            now: base + START,
            hosts: Vec::new(),
            in_flight: Vec::new(),
        }
    }

    fn config(&self, i: usize, spec: &Spec) -> NodeConfig {
        NodeConfig {
            public_key: key_of(i),
            addresses: vec![],
            static_peers: vec![],
            blocks: spec.blocks.iter().map(|b| n(b)).collect(),
            range: spec.range.map(|(r, len)| (n(r), len)),
            saved_block: spec.saved.map(n),
            bridge: spec.bridge,
            group_filter: GroupFilter::default(),
            gossip: Some(GossipSetup {
                config: GossipConfig::default(),
                secrets: vec![[spec.secret; 32]].into(),
                identity: identity_of(i),
                certificate: None,
                handover: None,
                name: spec.name.into(),
                endpoint: addr_of(i),
                epoch: (self.now - self.base).as_millis() as u64,
                rng_seed: i as u64,
                seeds: spec
                    .seeds
                    .iter()
                    .map(|s| addr_of(*s).to_string())
                    .chain(spec.seed_names.iter().map(|s| s.to_string()))
                    .collect(),
                known: spec.known.clone(),
            }),
        }
    }

    fn add(&mut self, spec: Spec) -> usize {
        let i = self.hosts.len();
        let node = Node::new(self.config(i, &spec), self.now).expect("node");
        self.hosts.push(Host {
            node,
            addr: addr_of(i),
            up: true,
            addresses: BTreeSet::new(),
            routes: BTreeMap::new(),
            peers: Vec::new(),
            saved: None,
            members_saved: Vec::new(),
            injected: 0,
            notices: Vec::new(),
            refuse_routes: BTreeSet::new(),
        });
        self.drain(i);
        i
    }

    /// Carries out host `i`'s effects on its model.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(effect) = self.hosts[i].node.poll_effect() {
            let h = &mut self.hosts[i];
            match &effect {
                Effect::Transmit { to, bytes } => {
                    if let Some(j) = self.hosts.iter().position(|h| h.addr == *to) {
                        let at = now + Duration::from_millis(2);
                        self.in_flight.push((at, j, addr_of(i), bytes.clone()));
                    }
                }
                Effect::Inject(_) => h.injected += 1,
                Effect::SetPeers(p) => h.peers = p.clone(),
                Effect::DelRoute { prefix } => {
                    assert!(
                        h.routes.remove(prefix).is_some(),
                        "{i}: removed absent route {prefix}"
                    )
                }
                Effect::AddRoute { prefix, src } => {
                    if h.refuse_routes.contains(prefix) {
                        h.node.handle_failed(&effect, now);
                    } else {
                        assert!(
                            h.routes.insert(*prefix, *src).is_none(),
                            "{i}: added present route {prefix}"
                        );
                    }
                }
                Effect::DelAddress { link, address } => {
                    assert!(
                        h.addresses.remove(&(*link, *address)),
                        "{i}: removed absent address {address}"
                    )
                }
                Effect::AddAddress { link, address } => {
                    assert!(
                        h.addresses.insert((*link, *address)),
                        "{i}: added present address {address}"
                    )
                }
                Effect::PersistBlock(b) => h.saved = Some(*b),
                Effect::PersistMembers(m) => h.members_saved = m.clone(),
                Effect::Resolve(names) => {
                    let lookups: Vec<(String, Option<SocketAddr>)> =
                        names.iter().map(|s| (s.clone(), s.parse().ok())).collect();
                    h.node.handle_resolved(&lookups, now);
                }
                Effect::Notice(notice) => h.notices.push((now, notice.clone())),
            }
        }
    }

    /// Runs the network for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next_delivery = self.in_flight.iter().map(|f| f.0).min();
            let next_timer = self
                .hosts
                .iter()
                .filter(|h| h.up)
                .filter_map(|h| h.node.poll_timeout().map(|t| t.0))
                .min();
            let Some(next) = [next_delivery, next_timer].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|f| f.0 <= now);
            self.in_flight = rest;
            for (_, to, from, bytes) in due {
                if self.hosts[to].up {
                    self.hosts[to].node.handle_datagram(from, &bytes, now);
                    self.drain(to);
                }
            }
            for i in 0..self.hosts.len() {
                let due = self.hosts[i]
                    .node
                    .poll_timeout()
                    .is_some_and(|t| t.0 <= now);
                if self.hosts[i].up && due {
                    self.hosts[i].node.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = end;
    }

    /// Three nodes "a", "b", "c", the last two joined through the first, converged.
    fn three_joined() -> (Self, [usize; 3]) {
        let mut net = Net::new();
        let nodes = net.add_three(["a", "b", "c"]);
        net.run(Duration::from_secs(8));
        (net, nodes)
    }

    /// Three nodes with these names, the last two joining through the first.
    fn add_three(&mut self, names: [&'static str; 3]) -> [usize; 3] {
        let a = self.add(Spec::named(names[0]));
        let b = self.add(Spec {
            seeds: vec![a],
            ..Spec::named(names[1])
        });
        let c = self.add(Spec {
            seeds: vec![a],
            ..Spec::named(names[2])
        });
        [a, b, c]
    }

    fn block(&self, i: usize) -> Option<IpNet> {
        self.hosts[i].node.status().block
    }

    /// Host `i`'s warnings for which `pick` holds.
    /// What host `i` shows a node started on it: the overlay's addresses and the
    /// routes (as after a restart on a persistent interface).
    fn host_state(&self, i: usize) -> HostState {
        HostState {
            addresses: self.hosts[i]
                .addresses
                .iter()
                .filter(|(l, _)| *l == Link::Overlay)
                .map(|(_, a)| *a)
                .collect(),
            routes: self.hosts[i].routes.clone().into_iter().collect(),
        }
    }

    fn notices(&self, i: usize, pick: impl Fn(&Notice) -> bool) -> Vec<(Instant, Notice)> {
        self.hosts[i]
            .notices
            .iter()
            .filter(|(_, n)| pick(n))
            .cloned()
            .collect()
    }

    /// Host `i`'s seeds with their state.
    fn seed_states(&self, i: usize) -> Vec<(String, SeedState)> {
        self.hosts[i]
            .node
            .status()
            .seeds
            .iter()
            .map(|s| (s.seed.clone(), s.state))
            .collect()
    }

    fn member_state(&self, i: usize, of: usize) -> Option<MemberState> {
        self.hosts[i]
            .node
            .status()
            .members
            .iter()
            .find(|m| m.record.public_key == key_of(of))
            .map(|m| m.state)
    }
}
