//! Membership as the reconciler acts on it: Kubernetes seeds and Node deletion,
//! forget, multicast announcements, what a member may claim, and rejoining after a
//! restart.

use super::*;

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

#[test]
fn a_dead_verdict_keeps_the_tunnel_of_a_peer_whose_traffic_still_flows() {
    let (mut net, [a, b, c]) = Net::three_joined();
    let has_c = |net: &Net, i: usize| {
        net.hosts[i]
            .peers
            .iter()
            .any(|p| p.peer.public_key == key_of(c))
    };
    assert!(has_c(&net, a) && has_c(&net, b));
    // c's gossip goes silent, but a's tunnel to c keeps carrying traffic.
    net.hosts[c].up = false;
    let until = net.now + Duration::from_secs(20);
    while net.now < until {
        let now = net.now;
        net.hosts[a].node.handle_peer_activity(&[key_of(c)], now);
        net.drain(a);
        net.run(Duration::from_millis(500));
    }
    assert_eq!(net.member_state(a, c), Some(MemberState::Dead));
    assert_eq!(net.member_state(b, c), Some(MemberState::Dead));
    assert!(
        has_c(&net, a),
        "traffic is evidence of life: the tunnel stays"
    );
    assert!(!has_c(&net, b), "no traffic at b: the verdict holds");
    // The traffic stops: the verdict takes effect once the evidence runs out.
    net.run(LIFE_EVIDENCE - Duration::from_millis(600));
    assert!(has_c(&net, a), "still within the evidence window");
    net.run(Duration::from_secs(1));
    assert!(!has_c(&net, a), "evidence ran out");
}

#[test]
fn a_node_restarted_on_its_persistent_interface_changes_nothing_and_calls_its_peers() {
    let (mut net, mut ids) = Net::three_joined();
    // c is the node with the highest key: before the restart it waited for the others
    // to call. a is the first node (the seed), whichever keys come out.
    let first = ids[0];
    ids.sort_by_key(|&i| key_of(i));
    let [x, y, c] = ids;
    let (a, b) = if y == first { (y, x) } else { (x, y) };
    let name = ["a", "b", "c"][c];
    let known = net.hosts[c].members_saved.clone();
    // SIGTERM: no leave; the interface keeps its addresses and routes.
    net.now += Duration::from_secs(1);
    let host = net.host_state(c);
    assert!(!host.addresses.is_empty(), "c had its block's address");
    let (addresses, routes) = (net.hosts[c].addresses.clone(), net.hosts[c].routes.clone());
    let spec = Spec {
        seeds: vec![a],
        ..Spec::named(name)
    };
    let restarted = Node::adopting(
        NodeConfig {
            saved_block: net.block(c),
            gossip: net
                .config(c, &spec)
                .gossip
                .map(|g| GossipSetup { known, ..g }),
            ..net.config(c, &spec)
        },
        host,
        net.now,
    )
    .expect("node");
    net.hosts[c].node = restarted;
    net.hosts[c].peers.clear();
    // The model refuses an addition of something present: nothing is added twice.
    net.drain(c);
    assert_eq!(
        net.hosts[c].addresses, addresses,
        "nothing removed or added"
    );
    assert_eq!(net.hosts[c].routes, routes);
    net.run(Duration::from_secs(2));
    assert_eq!(net.member_state(a, c), Some(MemberState::Alive));
    let peers = &net.hosts[c].peers;
    let keys: BTreeSet<PublicKey> = peers.iter().map(|p| p.peer.public_key).collect();
    assert_eq!(keys, [key_of(a), key_of(b)].into());
    assert!(
        peers.iter().all(|p| p.first_contact),
        "the restarted node calls every peer it knew at once: {peers:?}"
    );
    // The others still call by the key rule.
    let a_calls_c = net.hosts[a]
        .peers
        .iter()
        .find(|p| p.peer.public_key == key_of(c))
        .map(|p| p.first_contact);
    assert_eq!(a_calls_c, Some(true));
}

/// A node restarted on its interface with a rotated key (PROTOCOL.md §6.13): the others
/// move its block's route and allowed IPs to the new key's peer with no gap in the
/// route, no death or leave, no block conflict, and no peer left with the old key.
#[test]
fn a_rotated_key_moves_the_member_with_its_block_and_routes() {
    let (mut net, [a, b, c]) = Net::three_joined();
    let block = net.block(c).expect("c holds a block");
    let allowed = |net: &Net, i: usize, key: PublicKey| {
        net.hosts[i]
            .peers
            .iter()
            .find(|p| p.peer.public_key == key)
            .map(|p| p.peer.allowed_ips.clone())
    };
    let before = allowed(&net, a, key_of(c)).expect("a has c as a peer");
    assert!(before.contains(&block));
    let routes_a = net.hosts[a].routes.clone();
    let fresh = crate::keys::PrivateKey::from_bytes([99; 32]);
    let handover = crate::gossip::Handover::sign(
        &crate::identity::Signer::new(&identity_of(c)),
        "c",
        fresh.public_key(),
        1,
    );
    let host = net.host_state(c);
    let known = net.hosts[c].members_saved.clone();
    let base = net.config(c, &Spec::named("c"));
    let rotated = Node::adopting(
        NodeConfig {
            public_key: fresh.public_key(),
            saved_block: Some(block),
            gossip: base.gossip.clone().map(|g| GossipSetup {
                identity: fresh.clone(),
                handover: Some(handover),
                known,
                ..g
            }),
            ..base
        },
        host,
        net.now,
    )
    .expect("node");
    net.hosts[c].node = rotated;
    net.hosts[c].peers.clear();
    net.drain(c);
    // Step by step: the route to c's block never goes away at a, and nobody sees c
    // dead or left.
    for _ in 0..40 {
        net.run(Duration::from_millis(100));
        assert_eq!(net.hosts[a].routes, routes_a, "a's routes changed");
        for i in [a, b] {
            let st = net.hosts[i].node.status();
            assert!(
                !st.members
                    .iter()
                    .any(|m| m.record.name == "c" && !m.state.is_live()),
                "{i} saw c down: {:?}",
                st.members
            );
        }
    }
    for i in [a, b] {
        assert_eq!(
            allowed(&net, i, fresh.public_key()),
            Some(before.clone()),
            "{i}: the new key's peer has c's prefixes"
        );
        assert_eq!(
            allowed(&net, i, key_of(c)),
            None,
            "{i}: no peer with the old key"
        );
        let names: Vec<&str> = net.hosts[i]
            .node
            .status()
            .members
            .iter()
            .map(|m| m.record.name.as_str())
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "c").count(), 1, "{names:?}");
    }
    assert_eq!(net.block(c), Some(block), "c kept its block");
    assert_eq!(net.block(a), net.hosts[a].saved, "a kept its block");
    let c_peers: BTreeSet<PublicKey> = net.hosts[c]
        .peers
        .iter()
        .map(|p| p.peer.public_key)
        .collect();
    assert_eq!(c_peers, [key_of(a), key_of(b)].into());
}
