//! What the reconciler tells the operator: seeds that do not answer, strangers
//! failing authentication, and two live nodes sharing a name.

use super::*;

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
