//! The reconciler in virtual time: several nodes over an in-memory network, each with
//! a model of its host (addresses, routes, peer set, saved block) that the effects
//! change. The model rejects an addition of something present or a removal of
//! something absent, so every test also checks that the diffs are minimal.

use super::*;
use crate::gossip::MemberState;
use diagnose::SEED_ANSWER_BOUND;
use std::collections::BTreeMap;

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

fn key_of(i: usize) -> PublicKey {
    PublicKey::from_bytes([10 + i as u8; 32])
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

#[test]
fn a_lone_node_claims_at_once_and_persists_its_block() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let block = net.block(a).expect("claimed at start: no seed to wait for");
    assert!(n("10.47.0.0/16").contains(&block) && block.prefix_len() == 24);
    let h = &net.hosts[a];
    assert_eq!(h.saved, Some(block));
    let address = IpNet::new(gateway(block).addr(), 16).expect("address");
    assert_eq!(h.addresses, [(Link::Overlay, address)].into());
    assert!(h.routes.is_empty(), "the /16 address covers the range");
    assert_eq!(h.node.status().addresses, vec![address]);
    assert!(!h.node.status().claiming);
}

#[test]
fn a_restarted_node_keeps_its_saved_block_without_claiming() {
    let mut net = Net::new();
    let a = net.add(Spec {
        saved: Some("10.47.9.0/24"),
        ..Spec::named("a")
    });
    let h = &net.hosts[a];
    assert!(!h.node.status().claiming);
    assert_eq!(h.node.status().blocks, vec![n("10.47.9.0/24")]);
    assert_eq!(h.addresses, [(Link::Overlay, n("10.47.9.1/16"))].into());
    net.run(Duration::from_secs(10));
    assert_eq!(net.hosts[a].saved, None, "nothing new to persist");
    assert_eq!(net.block(a), Some(n("10.47.9.0/24")));
}

#[test]
fn joining_nodes_settle_then_claim_distinct_blocks_and_peer() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    net.run(Duration::from_millis(10));
    let b = net.add(Spec {
        seeds: vec![a],
        ..Spec::named("b")
    });
    let c = net.add(Spec {
        seeds: vec![a],
        ..Spec::named("c")
    });
    // Listening first: no claim before the settle time after the first member.
    net.run(Duration::from_millis(500));
    assert!(net.hosts[b].node.status().claiming);
    net.run(Duration::from_secs(10));
    let blocks: BTreeSet<IpNet> = [a, b, c].iter().filter_map(|i| net.block(*i)).collect();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    for i in [a, b, c] {
        let h = &net.hosts[i];
        assert_eq!(h.peers.len(), 2, "{i} peers with the two others");
        for p in &h.peers {
            let j = (0..3)
                .find(|j| key_of(*j) == p.peer.public_key)
                .expect("known key");
            assert_eq!(p.peer.allowed_ips, vec![net.block(j).expect("block")]);
            assert_eq!(p.peer.endpoint, Some(addr_of(j)));
            assert_eq!(p.first_contact, key_of(i) < key_of(j));
        }
    }
}

#[test]
fn a_conflict_moves_the_loser_and_its_gateway_follows() {
    let mut net = Net::new();
    let spec = |name, seeds| Spec {
        saved: Some("10.244.5.0/24"),
        range: Some(("10.244.0.0/16", 24)),
        bridge: true,
        seeds,
        ..Spec::named(name)
    };
    let a = net.add(spec("a", vec![]));
    let b = net.add(spec("b", vec![0]));
    let old = n("10.244.5.0/24");
    for i in [a, b] {
        assert_eq!(
            net.hosts[i].addresses,
            [(Link::Bridge, n("10.244.5.1/24"))].into()
        );
        assert_eq!(
            net.hosts[i].routes.get(&n("10.244.0.0/16")),
            Some(&"10.244.5.1".parse().ok())
        );
    }
    net.run(Duration::from_secs(10));
    let (ka, kb) = (key_of(a), key_of(b));
    let winner =
        crate::ipam::resolve_conflict((&ka, old), (&kb, old)).expect("a conflict has a winner");
    let (w, l) = if *winner == ka { (a, b) } else { (b, a) };
    assert_eq!(net.block(w), Some(old));
    let new = net.block(l).expect("the loser holds a block");
    assert_ne!(new, old);
    assert_eq!(net.hosts[l].saved, Some(new));
    let gw = gateway(new);
    assert_eq!(net.hosts[l].addresses, [(Link::Bridge, gw)].into());
    assert_eq!(
        net.hosts[l].routes.get(&n("10.244.0.0/16")),
        Some(&Some(gw.addr())),
        "the routes' source follows the gateway"
    );
    // The winner routes the loser's new block through the range route.
    let to_loser = net.hosts[w]
        .peers
        .iter()
        .find(|p| p.peer.public_key == key_of(l))
        .expect("peer");
    assert_eq!(to_loser.peer.allowed_ips, vec![new]);
}

#[test]
fn reconciling_again_without_a_change_does_nothing() {
    let mut net = Net::new();
    let a = net.add(Spec {
        blocks: vec!["10.244.1.0/24"],
        range: None,
        ..Spec::named("a")
    });
    let b = net.add(Spec {
        blocks: vec!["10.244.2.0/24"],
        range: None,
        seeds: vec![a],
        ..Spec::named("b")
    });
    net.run(Duration::from_secs(5));
    assert_eq!(
        net.hosts[a].routes,
        [(n("10.244.2.0/24"), None)].into(),
        "a route to the other node's block"
    );
    let now = net.now;
    let node = &mut net.hosts[b].node;
    node.retry_at = Some(now);
    node.handle_timeout(now);
    let effects: Vec<Effect> = std::iter::from_fn(|| node.poll_effect())
        .filter(|e| !matches!(e, Effect::Transmit { .. }))
        .collect();
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn a_refused_route_is_tried_again_later() {
    let mut net = Net::new();
    let a = net.add(Spec {
        blocks: vec!["10.244.1.0/24"],
        range: None,
        ..Spec::named("a")
    });
    net.hosts[a].refuse_routes.insert(n("10.244.2.0/24"));
    let b = net.add(Spec {
        blocks: vec!["10.244.2.0/24"],
        range: None,
        seeds: vec![a],
        ..Spec::named("b")
    });
    net.run(Duration::from_secs(3));
    assert!(net.hosts[a].routes.is_empty());
    assert!(!net.hosts[a]
        .node
        .installed_routes()
        .contains_key(&n("10.244.2.0/24")));
    net.hosts[a].refuse_routes.clear();
    net.run(RETRY + Duration::from_secs(1));
    assert!(net.hosts[a].routes.contains_key(&n("10.244.2.0/24")));
    assert_eq!(net.member_state(a, b), Some(MemberState::Alive));
}

#[test]
fn seeds_from_kubernetes_nodes_join_only_new_addresses() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let b = net.add(Spec::named("b"));
    net.run(Duration::from_secs(1));
    assert!(net.hosts[a].node.status().members.is_empty());
    let now = net.now;
    net.hosts[a]
        .node
        .handle_node_seeds(&[addr_of(a), addr_of(b)], now);
    net.drain(a);
    net.run(Duration::from_secs(5));
    assert_eq!(net.member_state(a, b), Some(MemberState::Alive));
    assert_eq!(net.member_state(b, a), Some(MemberState::Alive));
    // Known live members are not joined again.
    let now = net.now;
    let node = &mut net.hosts[a].node;
    node.handle_node_seeds(&[addr_of(a), addr_of(b)], now);
    assert!(
        std::iter::from_fn(|| node.poll_effect()).all(|e| !matches!(e, Effect::Transmit { .. })),
        "no join to a live member"
    );
}

#[test]
fn a_deleted_node_is_no_peer_and_is_forgotten_once_down() {
    let (mut net, [a, b, c]) = Net::three_joined();
    assert_eq!(net.hosts[a].peers.len(), 2);
    let now = net.now;
    net.hosts[a].node.handle_node_deleted("c", now);
    net.drain(a);
    assert_eq!(net.hosts[a].peers.len(), 1, "dropped at once");
    assert_eq!(
        net.member_state(a, c),
        Some(MemberState::Alive),
        "not forgotten while live"
    );
    net.hosts[c].up = false;
    net.run(Duration::from_secs(30));
    assert_eq!(net.member_state(a, c), None, "forgotten once down");
    assert_eq!(net.member_state(b, c), None, "mesh-wide");
    // A Node that comes back is welcome again.
    let now = net.now;
    net.hosts[a].node.handle_node_added("c", now);
    net.drain(a);
    assert_eq!(net.hosts[a].peers.len(), 1);
}

#[test]
fn forget_takes_only_dead_or_departed_members() {
    let (mut net, [a, b, c]) = Net::three_joined();
    let now = net.now;
    let live = net.hosts[a].node.forget("c", now);
    assert_eq!(
        live,
        Err("c is alive: only dead or departed nodes can be forgotten".into())
    );
    let unknown = net.hosts[a].node.forget("zz", now);
    assert_eq!(
        unknown,
        Err("no member named zz: see `weftnet status` for names".into())
    );
    // c leaves gracefully.
    net.hosts[c].node.leave(now);
    net.drain(c);
    net.run(LEAVE_DRAIN);
    assert!(net.hosts[c].node.is_done());
    net.hosts[c].up = false;
    assert_eq!(net.member_state(a, c), Some(MemberState::Left));
    assert!(net.hosts[a]
        .peers
        .iter()
        .all(|p| p.peer.public_key != key_of(c)));
    let now = net.now;
    assert_eq!(
        net.hosts[a].node.forget(&key_of(c).to_base64(), now),
        Ok(key_of(c))
    );
    net.drain(a);
    net.run(Duration::from_secs(5));
    assert_eq!(net.member_state(a, c), None);
    assert_eq!(net.member_state(b, c), None, "forgotten mesh-wide");
}

#[test]
fn a_snooped_join_is_announced_and_becomes_the_peers_group() {
    // IGMPv3 report from 10.47.0.1: CHANGE_TO_EXCLUDE({}) for 239.1.2.3 (a join).
    let join = hex::decode(
        "46c00028000040000102f9c90a2f0001e0000016940400002200e8f90000000104000000ef010203",
    )
    .expect("hex");
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let b = net.add(Spec {
        seeds: vec![a],
        ..Spec::named("b")
    });
    net.run(Duration::from_secs(5));
    let now = net.now;
    net.hosts[a].node.handle_snooped(&join, now);
    net.drain(a);
    let group: IpAddr = "239.1.2.3".parse().expect("ip");
    assert_eq!(net.hosts[a].node.status().local_groups, vec![group]);
    net.run(Duration::from_secs(3));
    let to_a = net.hosts[b]
        .peers
        .iter()
        .find(|p| p.peer.public_key == key_of(a))
        .expect("peer");
    assert_eq!(to_a.groups, vec![group]);
    assert!(net.hosts[a].injected > 0, "the querier asked for reports");
}

#[test]
fn without_gossip_only_the_given_state_is_installed() {
    let static_peer = PeerSpec {
        peer: Peer {
            public_key: key_of(9),
            endpoint: Some(addr_of(9)),
            allowed_ips: vec![n("10.47.0.2/32"), n("10.99.0.0/24")],
            persistent_keepalive: None,
        },
        groups: vec![],
        first_contact: true,
    };
    let now = Instant::now();
    let mut node = Node::new(
        NodeConfig {
            public_key: key_of(0),
            addresses: vec![n("10.47.0.1/16")],
            static_peers: vec![static_peer.clone()],
            blocks: vec![],
            range: None,
            saved_block: None,
            bridge: false,
            group_filter: GroupFilter::default(),
            gossip: None,
        },
        now,
    )
    .expect("node");
    let effects: Vec<Effect> = std::iter::from_fn(|| node.poll_effect()).collect();
    assert_eq!(
        effects,
        vec![
            Effect::SetPeers(vec![static_peer]),
            Effect::AddAddress {
                link: Link::Overlay,
                address: n("10.47.0.1/16")
            },
            Effect::AddRoute {
                prefix: n("10.99.0.0/24"),
                src: None
            },
        ]
    );
    assert_eq!(node.poll_timeout(), None, "nothing to wake up for");
    assert!(!node.status().clustered);
    assert!(node.forget("x", now).is_err());
    node.leave(now);
    assert!(node.is_done());
}

#[test]
fn a_member_cannot_capture_routes_outside_what_it_may_claim() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let b = net.add(Spec {
        seeds: vec![a],
        ..Spec::named("b")
    });
    // The rogue holds the secret and announces a half-default route as its block.
    let rogue = net.add(Spec {
        blocks: vec!["0.0.0.0/1"],
        seeds: vec![a],
        ..Spec::named("rogue")
    });
    net.run(Duration::from_secs(10));
    assert!(
        net.block(b).is_some(),
        "the rogue's prefix does not block claims"
    );
    for i in [a, b] {
        let h = &net.hosts[i];
        let to_rogue = h
            .peers
            .iter()
            .find(|p| p.peer.public_key == key_of(rogue))
            .expect("the rogue is still a member");
        assert!(to_rogue.peer.allowed_ips.is_empty(), "{:?}", to_rogue.peer);
        assert!(h.routes.keys().all(|r| !r.contains(&n("8.8.8.8/32"))));
        assert_eq!(h.node.status().refused_prefixes, 1);
    }
    // A prefix holding another member's underlay address, and one larger than a block.
    let now = net.now;
    let g = net.hosts[rogue].node.gossip.as_mut().expect("gossip");
    let forged = vec![n("192.0.2.1/32"), n("10.47.0.0/16")];
    g.update_record(|r| r.prefixes = forged, now)
        .expect("record");
    net.drain(rogue);
    net.run(Duration::from_secs(5));
    let h = &net.hosts[a];
    assert_eq!(h.node.status().refused_prefixes, 3);
    assert!(h.routes.is_empty(), "{:?}", h.routes);
}

#[test]
fn a_restarted_first_node_rejoins_through_the_members_it_knew() {
    let (mut net, [a, b, c]) = Net::three_joined();
    let known = net.hosts[a].members_saved.clone();
    assert_eq!(known, vec![addr_of(b), addr_of(c)], "a saved its members");
    assert_eq!(net.hosts[b].members_saved, vec![addr_of(a), addr_of(c)]);
    // a leaves gracefully and comes back with the same command: no --join.
    let now = net.now;
    net.hosts[a].node.leave(now);
    net.drain(a);
    net.run(LEAVE_DRAIN);
    assert_eq!(net.member_state(b, a), Some(MemberState::Left));
    assert_eq!(net.hosts[a].members_saved, known, "a leave saves nothing");
    net.now += Duration::from_secs(1);
    let block = net.block(a);
    let restarted = Node::new(
        NodeConfig {
            saved_block: block,
            gossip: net
                .config(a, &Spec::named("a"))
                .gossip
                .map(|g| GossipSetup { known, ..g }),
            ..net.config(a, &Spec::named("a"))
        },
        net.now,
    )
    .expect("node");
    // The overlay interface went away with the old process.
    net.hosts[a].addresses.clear();
    net.hosts[a].routes.clear();
    net.hosts[a].node = restarted;
    net.drain(a);
    net.run(Duration::from_secs(5));
    assert_eq!(net.member_state(a, b), Some(MemberState::Alive));
    assert_eq!(net.member_state(a, c), Some(MemberState::Alive));
    assert_eq!(net.member_state(b, a), Some(MemberState::Alive));
    assert_eq!(net.member_state(c, a), Some(MemberState::Alive));
    assert_eq!(net.block(a), block, "it kept its block");
}

fn silent(n: &Notice) -> bool {
    matches!(n, Notice::SeedsSilent { .. })
}

fn stranger(n: &Notice) -> bool {
    matches!(n, Notice::Stranger { .. })
}

fn shared(n: &Notice) -> bool {
    matches!(n, Notice::SharedName { .. })
}

#[test]
fn a_healthy_mesh_shows_its_seeds_answering_and_warns_nothing() {
    let (mut net, [a, b, c]) = Net::three_joined();
    net.run(Duration::from_secs(60));
    for i in [b, c] {
        assert_eq!(
            net.seed_states(i),
            vec![(addr_of(a).to_string(), SeedState::Answering)]
        );
    }
    assert!(net.seed_states(a).is_empty(), "the first node has no seed");
    for i in [a, b, c] {
        assert_eq!(net.hosts[i].notices, vec![], "host {i}");
    }
}

#[test]
fn a_seed_with_another_secret_is_not_answering_and_both_sides_warn_rate_limited() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let start = net.now;
    let b = net.add(Spec {
        seeds: vec![a],
        secret: 9,
        ..Spec::named("b")
    });
    let seed = vec![(addr_of(a).to_string(), SeedState::NotAnswering)];
    net.run(SEED_ANSWER_BOUND - Duration::from_secs(1));
    assert_eq!(net.seed_states(b), seed);
    assert!(
        net.notices(b, silent).is_empty(),
        "no warning before the bound"
    );

    net.run(Duration::from_secs(2));
    let warned = net.notices(b, silent);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let (at, notice) = &warned[0];
    assert!(*at - start >= SEED_ANSWER_BOUND && *at - start <= SEED_ANSWER_BOUND + STATUS_REFRESH);
    let Notice::SeedsSilent { seeds, .. } = notice else {
        unreachable!("filtered")
    };
    assert_eq!(seeds.len(), 1);
    assert_eq!(seeds[0].address, Some(addr_of(a)));
    assert_eq!(seeds[0].source, SeedSource::Join);
    let text = notice.to_string();
    for cause in [
        "cluster secret",
        "firewall",
        "no route",
        &addr_of(a).to_string(),
    ] {
        assert!(text.contains(cause), "{text}");
    }

    // The seed counts the stranger's datagrams and warns once a minute at most.
    let strangers = net.notices(a, stranger);
    assert_eq!(strangers.len(), 1, "{strangers:?}");
    let text = strangers[0].1.to_string();
    assert!(
        text.contains(&format!(
            "datagrams from {} fail authentication",
            addr_of(b)
        )) && text.contains("another cluster secret, or is not weftnet"),
        "{text}"
    );

    // Five more minutes: at most one warning a minute on each side.
    net.run(Duration::from_secs(300));
    let elapsed = (net.now - start).as_secs();
    let silent_count = net.notices(b, silent).len() as u64;
    assert!(
        (5..=elapsed / 60 + 1).contains(&silent_count),
        "{silent_count} warnings in {elapsed} s"
    );
    let strangers = net.notices(a, stranger);
    assert!(strangers.len() >= 2, "the warning repeats: {strangers:?}");
    for pair in strangers.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= diagnose::STRANGER_WARN_EVERY);
    }
    let failed: u64 = net.hosts[a].node.status().errors.values().sum();
    assert!(
        failed > strangers.len() as u64,
        "{failed} failing datagrams"
    );
    assert_eq!(net.seed_states(b), seed);
    assert!(net.hosts[b].node.status().members.is_empty());
}

#[test]
fn the_warning_stops_once_a_seed_answers() {
    let mut net = Net::new();
    // b's seed is not up yet: its address belongs to no host.
    let b = net.add(Spec {
        known: vec![addr_of(1)],
        ..Spec::named("b")
    });
    net.run(Duration::from_secs(15));
    assert_eq!(net.notices(b, silent).len(), 1);
    assert_eq!(
        net.seed_states(b),
        vec![(addr_of(1).to_string(), SeedState::NotAnswering)]
    );
    let seed = net.add(Spec::named("seed"));
    assert_eq!(net.hosts[seed].addr, addr_of(1));
    net.run(Duration::from_secs(20));
    assert_eq!(
        net.seed_states(b),
        vec![(addr_of(1).to_string(), SeedState::Answering)]
    );
    net.run(Duration::from_secs(120));
    assert_eq!(net.notices(b, silent).len(), 1, "no warning once joined");
}

#[test]
fn an_unresolved_seed_is_warned_about_once() {
    let mut net = Net::new();
    let b = net.add(Spec {
        seed_names: vec!["seed.invalid:51820"],
        ..Spec::named("b")
    });
    net.run(Duration::from_secs(30));
    let unresolved = net.notices(b, |n| matches!(n, Notice::SeedUnresolved { .. }));
    assert_eq!(unresolved.len(), 1, "looked up six times, warned once");
    assert_eq!(
        unresolved[0].1,
        Notice::SeedUnresolved {
            seed: "seed.invalid:51820".into()
        }
    );
    assert_eq!(
        net.seed_states(b),
        vec![("seed.invalid:51820".to_string(), SeedState::Unresolved)]
    );
    assert_eq!(net.notices(b, silent).len(), 1, "and alone with it");
}

#[test]
fn two_live_nodes_sharing_a_name_are_reported_once_and_forget_needs_the_key() {
    let mut net = Net::new();
    let [a, b, c] = net.add_three(["twin", "twin", "c"]);
    net.run(Duration::from_secs(60));
    for (i, this_node) in [(a, true), (b, true), (c, false)] {
        let warned = net.notices(i, shared);
        assert_eq!(warned.len(), 1, "host {i}: {warned:?}");
        let mut both = vec![key_of(a), key_of(b)];
        both.sort();
        assert_eq!(
            warned[0].1,
            Notice::SharedName {
                name: "twin".into(),
                keys: both,
                count: 2,
                this_node,
            }
        );
        let text = warned[0].1.to_string();
        assert!(
            text.contains(&key_of(a).to_base64()) && text.contains(&key_of(b).to_base64()),
            "{text}"
        );
    }

    // b crashes; forgetting "twin" from c is ambiguous, its key is not.
    net.hosts[b].up = false;
    net.run(Duration::from_secs(30));
    assert_eq!(net.member_state(c, b), Some(MemberState::Dead));
    let now = net.now;
    let by_name = net.hosts[c].node.forget("twin", now);
    let err = by_name.expect_err("ambiguous");
    assert!(
        err.contains("the name twin is ambiguous")
            && err.contains(&key_of(a).to_base64())
            && err.contains(&key_of(b).to_base64())
            && err.contains("weftnet forget KEY"),
        "{err}"
    );
    assert_eq!(
        net.hosts[c].node.forget(&key_of(b).to_base64(), now),
        Ok(key_of(b))
    );
    net.drain(c);
    net.run(Duration::from_secs(5));
    assert_eq!(net.member_state(c, b), None);
    assert_eq!(net.notices(c, shared).len(), 1, "still once");
}

#[test]
fn kubernetes_nodes_are_seeds_in_status_until_they_are_gone() {
    let mut net = Net::new();
    let a = net.add(Spec::named("a"));
    let b = net.add(Spec::named("b"));
    let now = net.now;
    // Node 2's address belongs to no running weftnet.
    net.hosts[a]
        .node
        .handle_node_seeds(&[addr_of(a), addr_of(b), addr_of(2)], now);
    net.drain(a);
    net.run(Duration::from_secs(30));
    let seeds = &net.hosts[a].node.status().seeds;
    assert!(seeds.iter().all(|s| s.source == SeedSource::Kubernetes));
    assert_eq!(
        net.seed_states(a),
        vec![
            (addr_of(b).to_string(), SeedState::Answering),
            (addr_of(2).to_string(), SeedState::NotAnswering),
        ],
        "this node's own Node is no seed"
    );
    assert_eq!(net.notices(a, silent), vec![], "a is not alone");
    let now = net.now;
    net.hosts[a].node.handle_node_seeds(&[], now);
    net.drain(a);
    net.run(Duration::from_secs(2));
    assert_eq!(net.seed_states(a), vec![]);
}
