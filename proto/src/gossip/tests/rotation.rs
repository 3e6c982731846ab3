//! Key rotation (PROTOCOL.md §6.13) at one node: a verified hand-over moves the node
//! to its new key with no death or leave; entries of the retired key, and forged,
//! replayed, rolled-back, forked or misnamed hand-overs are left out and counted.

use super::super::member::{Claim, Rank};
use super::*;

const EPOCH: u64 = 5;

fn alive(incarnation: u64) -> Claim {
    Claim {
        epoch: EPOCH,
        incarnation,
        rank: Rank::Alive,
    }
}

/// Node `carrier`'s record named `name`, carrying `handover`.
fn rotated(carrier: u8, name: &str, handover: Handover) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        handover: Some(handover),
        ..record(carrier)
    }
}

/// Delivers `r` (signed by `owner`) at `incarnation` to `g`, sent by `owner`.
fn deliver(
    g: &mut Gossip,
    owner: u8,
    r: &NodeRecord,
    incarnation: u64,
    seq: &mut u64,
    now: Instant,
) -> Result<(), GossipError> {
    *seq += 1;
    let entry = signed_entry(&key(owner), r, alive(incarnation), Rank::Alive);
    let d = seal_as(
        &key(owner),
        key(owner).public_key(),
        EPOCH,
        *seq,
        Some(&g.me().public_key),
        &[Message::Entry { entry, rumor: true }],
    );
    g.handle_datagram(SocketAddr::from(([192, 0, 2, owner], 51820)), &d, now)
}

fn keys(g: &Gossip) -> Vec<PublicKey> {
    g.members().iter().map(|m| m.record.public_key).collect()
}

fn signer(i: u8) -> crate::identity::Signer {
    crate::identity::Signer::new(&key(i))
}

#[test]
fn a_verified_hand_over_moves_the_member_to_its_new_key_and_refuses_the_rest() {
    let now = Instant::now();
    let mut g = node(1, 100, now);
    let mut seq = 0;
    let old = NodeRecord {
        prefixes: vec![net("10.47.2.0/24")],
        ..record(2)
    };
    deliver(&mut g, 2, &old, 0, &mut seq, now).expect("applied");
    assert_eq!(keys(&g), vec![key(2).public_key()]);
    while g.poll_event().is_some() {}

    // n2 rotates from key 2 to key 3 (generation 1): the record of key 3 carries it.
    let h = Handover::sign(&signer(2), "n2", key(3).public_key(), 1);
    let new = NodeRecord {
        prefixes: old.prefixes.clone(),
        ..rotated(3, "n2", h)
    };
    deliver(&mut g, 3, &new, 0, &mut seq, now).expect("applied");
    assert_eq!(keys(&g), vec![key(3).public_key()], "one member, new key");
    let events: Vec<Event> = std::iter::from_fn(|| g.poll_event()).collect();
    assert!(
        events.contains(&Event::Rotated {
            old: key(2).public_key(),
            new: key(3).public_key(),
            name: "n2".into(),
        }),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Down { .. })),
        "no death, no leave: {events:?}"
    );
    let m = g.member(&key(3).public_key()).expect("member");
    assert_eq!(
        m.record.prefixes, old.prefixes,
        "the prefixes moved with it"
    );
    assert_eq!(m.state, MemberState::Alive);

    // The old key speaks again (stolen, or a stale relay): left out, counted.
    let err = deliver(&mut g, 2, &old, 7, &mut seq, now);
    assert_eq!(err, Err(GossipError::RetiredKey));
    assert_eq!(keys(&g), vec![key(3).public_key()]);

    // A stolen old key hands the name over to an attacker's key: forked.
    let fork = Handover::sign(&signer(2), "n2", key(4).public_key(), 9);
    let err = deliver(&mut g, 4, &rotated(4, "n2", fork), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::BadHandover));
    assert!(g.member(&key(4).public_key()).is_none());

    // Another key of the name at an older or equal generation: rolled back.
    let back = Handover::sign(&signer(5), "n2", key(6).public_key(), 1);
    let err = deliver(&mut g, 6, &rotated(6, "n2", back), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::BadHandover));
    assert!(g.member(&key(6).public_key()).is_none());

    // Back to the retired key: refused.
    let revive = Handover::sign(&signer(3), "n2", key(2).public_key(), 2);
    let err = deliver(&mut g, 2, &rotated(2, "n2", revive), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::RetiredKey));

    // The next rotation (generation 2, signed by the current key) is taken.
    let next = Handover::sign(&signer(3), "n2", key(7).public_key(), 2);
    deliver(&mut g, 7, &rotated(7, "n2", next), 0, &mut seq, now).expect("applied");
    assert_eq!(keys(&g), vec![key(7).public_key()]);
}

#[test]
fn forged_and_misnamed_hand_overs_drop_the_datagram() {
    let now = Instant::now();
    let mut g = node(1, 100, now);
    let mut seq = 0;
    deliver(&mut g, 2, &record(2), 0, &mut seq, now).expect("applied");
    // Signed by someone else than the old key.
    let mut forged = Handover::sign(&signer(8), "n2", key(3).public_key(), 1);
    forged.old = key(2).public_key();
    let err = deliver(&mut g, 3, &rotated(3, "n2", forged), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::BadHandover));
    // The old key's statement for another name.
    let other = Handover::sign(&signer(2), "elsewhere", key(3).public_key(), 1);
    let err = deliver(&mut g, 3, &rotated(3, "n2", other), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::BadHandover));
    // A statement naming another successor than the record's key.
    let moved = Handover::sign(&signer(2), "n2", key(4).public_key(), 1);
    let err = deliver(&mut g, 3, &rotated(3, "n2", moved), 0, &mut seq, now);
    assert_eq!(err, Err(GossipError::BadHandover));
    assert_eq!(keys(&g), vec![key(2).public_key()], "nothing applied");
    assert_eq!(GossipError::BadHandover.as_str(), "gossip_bad_handover");
}

#[test]
fn a_node_refuses_its_own_hand_over_when_it_does_not_verify() {
    let now = Instant::now();
    let h = Handover::sign(&signer(2), "n1", key(1).public_key(), 1);
    let ok = Gossip::new(
        GossipConfig::default(),
        &[SECRET],
        &key(1),
        rotated(1, "n1", h),
        100,
        1,
        now,
    );
    assert!(ok.is_ok());
    let bad = Gossip::new(
        GossipConfig::default(),
        &[SECRET],
        &key(1),
        rotated(1, "other", h),
        100,
        1,
        now,
    );
    assert!(matches!(bad, Err(ConfigError::Handover(_))));
}

/// In the simulator: node 2 restarts with a new key and the hand-over; every node
/// ends with the new key for it and none with the old one, and nobody saw it die.
#[test]
fn the_mesh_converges_on_the_new_key() {
    let mut sim = mesh(4);
    let old = sim.node(2).record.clone();
    let fresh = PrivateKey::from_bytes([77; 32]);
    let h = Handover::sign(
        &crate::identity::Signer::new(sim.identity(2)),
        &old.name,
        fresh.public_key(),
        1,
    );
    sim.rotate(2, fresh.clone(), h, &[0]);
    let t = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(10), |s| {
        (0..4).filter(|i| *i != 2).all(|i| {
            let ks: Vec<PublicKey> = s
                .node(i)
                .gossip
                .as_ref()
                .map(Gossip::members)
                .unwrap_or_default()
                .iter()
                .filter(|m| m.state.is_live())
                .map(|m| m.record.public_key)
                .collect();
            ks.contains(&fresh.public_key()) && !ks.contains(&old.public_key)
        })
    });
    assert!(t.is_some(), "the mesh did not move to the new key");
    for (i, n) in sim.nodes().iter().enumerate() {
        assert!(
            !n.events.iter().any(|(_, e)| matches!(e, Event::Down { public_key, .. } if *public_key == old.public_key)),
            "node {i} saw the old key die or leave"
        );
    }
    for i in [0, 1, 3] {
        assert!(
            sim.member(i, &old.public_key).is_none(),
            "node {i} keeps the old key"
        );
        let m = sim.member(i, &fresh.public_key()).expect("new key known");
        assert_eq!(m.record.prefixes, old.prefixes);
    }
}
