//! Blocks, addresses and routes: claims, conflicts and moves, minimal and
//! idempotent reconciliation, retries of refused changes, restarts from a saved block,
//! and a node without gossip.

use super::*;

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
