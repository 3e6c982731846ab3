//! The attacks of issue 10 on records, as tests: a takeover of another node's record
//! with counters at the end of their range, forged records and forged leaves, and the
//! cluster CA (entries without a valid certificate never enter a view).

use super::super::codec::Entry;
use super::super::member::{Claim, Rank};
use super::*;
use crate::cert::Ca;

fn claim(epoch: u64, incarnation: u64, rank: Rank) -> Claim {
    Claim {
        epoch,
        incarnation,
        rank,
    }
}

fn rumor(entry: Entry) -> Message {
    Message::Entry { entry, rumor: true }
}

/// One entry for node 1 with epoch, incarnation and version at u64::MAX and a new
/// endpoint and prefix used to move node 1's endpoint and allowed IPs on node 0 at
/// once, and node 1 could never refute it. Now such an entry is malformed (counters
/// are bounded, epochs are bounded by the clock) and one within the bounds but not
/// signed by node 1 is dropped as a bad signature: node 1 stays alive at node 0
/// with its record intact.
#[test]
fn takeover_with_max_counters_leaves_the_victim_alive_and_intact() {
    let mut sim = mesh(3);
    let key0 = sim.node(0).key;
    let key1 = sim.node(1).key;
    let forger = sim.identity(2).clone();
    let from = sim.node(2).addr;
    let epoch2 = sim
        .member(0, &sim.node(2).key)
        .map(|m| m.epoch)
        .expect("member");
    let genuine = sim.member(0, &key1).expect("known");
    let mut hijacked = genuine.record.clone();
    hijacked.endpoint = SocketAddr::from(([203, 0, 113, 66], 51820));
    hijacked.prefixes = vec![net("10.47.2.0/24"), net("169.254.169.254/32")];
    let before = sim.node(0).errors;
    let attempts = [
        // the takeover of the issue, signed by the forger
        (claim(u64::MAX, u64::MAX, Rank::Alive), u64::MAX),
        // counters at the end of their range, epoch within the clock bound
        (claim(genuine.epoch, u64::MAX, Rank::Alive), u64::MAX),
        // an epoch beyond the clock bound with small counters
        (claim(u64::MAX, 0, Rank::Alive), 1),
        // everything within the bounds, but not node 1's signature
        (claim(genuine.epoch + 1, 1_000, Rank::Alive), 1_000),
        (claim(genuine.epoch, 1, Rank::Dead), 0),
    ];
    for (seq, (c, version)) in attempts.into_iter().enumerate() {
        let mut r = hijacked.clone();
        r.version = version;
        let e = signed_entry(&forger, &r, c, Rank::Alive);
        let d = seal_msgs(
            &forger,
            epoch2,
            1 << 40 | seq as u64,
            Some(&key0),
            &[rumor(e)],
        );
        sim.inject(0, from, d);
    }
    // A forged leave: node 1's genuine statement with state Left.
    let mut g = genuine.record.clone();
    g.version = genuine.record.version;
    let left = signed_entry(
        &forger,
        &g,
        claim(genuine.epoch, genuine.incarnation, Rank::Left),
        Rank::Alive,
    );
    let d = seal_msgs(&forger, epoch2, 1 << 41, Some(&key0), &[rumor(left)]);
    sim.inject(0, from, d);
    sim.run_until(sim.elapsed() + Duration::from_secs(30));
    let after = sim.node(0).errors;
    let delta = |e: GossipError| after[e.index()] - before[e.index()];
    assert_eq!(
        delta(GossipError::Malformed),
        3,
        "bounded counters, forged leave"
    );
    assert_eq!(delta(GossipError::FutureEpoch), 1);
    assert_eq!(delta(GossipError::BadSignature), 2);
    for i in [0, 2] {
        let m = sim.member(i, &key1).expect("known");
        assert_eq!(m.state, MemberState::Alive, "node {i}");
        assert_eq!(m.record, genuine.record, "node {i}: record intact");
        assert_eq!((m.epoch, m.incarnation), (genuine.epoch, 0), "node {i}");
    }
    assert_eq!(GossipError::BadSignature.as_str(), "gossip_bad_signature");
}

/// Suspicion and death are claims others may make, but only about a statement the
/// owner signed: node 1's own signed entry replayed with state Dead makes node 0
/// suspect it (a verdict about a live member is doubted), and node 1 refutes with
/// incarnation + 1, which it signs.
#[test]
fn a_replayed_death_is_refuted_by_the_owner() {
    let mut sim = mesh(3);
    let key0 = sim.node(0).key;
    let key1 = sim.node(1).key;
    let owner = sim.identity(1).clone();
    let genuine = sim.member(0, &key1).expect("known");
    let dead = signed_entry(
        &owner,
        &genuine.record,
        claim(genuine.epoch, genuine.incarnation, Rank::Dead),
        Rank::Alive,
    );
    let sender = sim.identity(2).clone();
    let epoch2 = sim
        .member(0, &sim.node(2).key)
        .map(|m| m.epoch)
        .expect("member");
    let before = sim.node(0).errors;
    let d = seal_msgs(&sender, epoch2, 1 << 40, Some(&key0), &[rumor(dead)]);
    sim.inject(0, sim.node(2).addr, d);
    sim.run_until(sim.elapsed() + Duration::from_millis(1));
    assert_eq!(sim.node(0).errors, before, "accepted");
    assert_eq!(
        sim.member(0, &key1).map(|m| m.state),
        Some(MemberState::Suspect),
        "doubted: held as a suspicion while node 1 counts as live"
    );
    sim.run_until(sim.elapsed() + Duration::from_secs(15));
    for i in [0, 2] {
        let m = sim.member(i, &key1).expect("known");
        assert_eq!(m.state, MemberState::Alive, "node {i}");
        assert_eq!(m.incarnation, 1, "node {i}: refuted once");
        assert_eq!(m.record.endpoint, genuine.record.endpoint);
    }
}

/// A member with the secret and its own identity cannot write another node's
/// record: the entry is dropped, counted, and nothing of its datagram is applied.
/// The owner's own signature is accepted.
#[test]
fn a_forged_record_for_another_node_is_dropped_and_counted() {
    let now = Instant::now();
    let mut g = node(1, 10, now);
    let me = key(1).public_key();
    let from = record(3).endpoint;
    let c = claim(5, 0, Rank::Alive);
    let forged = signed_entry(&key(3), &record(5), c, Rank::Alive);
    let d = seal_msgs(&key(3), 5, 1, Some(&me), &[rumor(forged)]);
    assert_eq!(
        g.handle_datagram(from, &d, now),
        Err(GossipError::BadSignature)
    );
    assert!(
        g.members().is_empty(),
        "not even the sender's datagram applied"
    );
    // A tombstone is signed too.
    let mut tomb = signed_entry(&key(5), &record(5), c, Rank::Alive);
    tomb.claim.rank = Rank::Forgotten;
    tomb.record = None;
    tomb.remaining_secs = 60;
    tomb.proof.body_hash[0] ^= 1;
    let d = seal_msgs(&key(3), 5, 2, Some(&me), &[rumor(tomb)]);
    assert_eq!(
        g.handle_datagram(from, &d, now),
        Err(GossipError::BadSignature)
    );
    let genuine = signed_entry(&key(5), &record(5), c, Rank::Alive);
    let d = seal_msgs(&key(3), 5, 3, Some(&me), &[rumor(genuine)]);
    assert_eq!(g.handle_datagram(from, &d, now), Ok(()));
    let m = g.member(&key(5).public_key()).expect("admitted");
    assert_eq!(m.record, record(5));
}

/// Merge rule: the slot keeps the owner's greatest statement; others' states stick
/// only to the statement's incarnation.
#[test]
fn statements_order_the_merge() {
    use super::super::merge::{merge, Current};
    let r = record(5);
    let e = |c: Claim, signed: Rank| signed_entry(&key(5), &r, c, signed);
    let cur = |c: Claim, signed: Rank| {
        Some(Current {
            claim: c,
            version: 0,
            signed,
            has_record: true,
        })
    };
    // a refutation (higher incarnation) clears death
    assert_eq!(
        merge(
            cur(claim(5, 0, Rank::Dead), Rank::Alive),
            &e(claim(5, 1, Rank::Alive), Rank::Alive)
        ),
        Some((claim(5, 1, Rank::Alive), 0, true))
    );
    // suspicion of the current incarnation sticks, the statement stays
    assert_eq!(
        merge(
            cur(claim(5, 1, Rank::Alive), Rank::Alive),
            &e(claim(5, 1, Rank::Suspect), Rank::Alive)
        ),
        Some((claim(5, 1, Rank::Suspect), 0, false))
    );
    // an older incarnation changes nothing
    assert_eq!(
        merge(
            cur(claim(5, 1, Rank::Alive), Rank::Alive),
            &e(claim(5, 0, Rank::Dead), Rank::Alive)
        ),
        None
    );
    // the owner's leave beats death at the same incarnation
    assert_eq!(
        merge(
            cur(claim(5, 1, Rank::Dead), Rank::Alive),
            &e(claim(5, 1, Rank::Left), Rank::Left)
        ),
        Some((claim(5, 1, Rank::Left), 0, true))
    );
}

fn ca_config(ca: &Ca) -> GossipConfig {
    GossipConfig {
        ca: Some(ca.public_key()),
        ..GossipConfig::default()
    }
}

/// 1.7e12 ms, the epochs the tests use, in seconds.
const T: u64 = 1_700_000_000;

/// With a cluster CA only members whose record carries a certificate of that CA,
/// valid now, for their key and name, enter the view; unsigned, expired, not yet
/// valid, wrong-CA, wrong-key and wrong-name certificates are dropped as
/// `gossip_uncertified`. A node without a valid certificate of its own cannot start.
#[test]
fn with_a_ca_only_certified_members_enter() {
    let now = Instant::now();
    let ca = Ca::from_seed(&[0xca; 32]);
    let rogue = Ca::from_seed(&[0xcb; 32]);
    let epoch = T * 1000;
    let cert_for = |ca: &Ca, i: u8, name: &str, from: u64, until: u64| {
        ca.issue(
            name,
            *key(i).public_key().as_bytes(),
            vec![net(&format!("10.47.{i}.0/24"))],
            false,
            from,
            until,
        )
        .expect("fits")
    };
    let mut me = record(1);
    assert!(matches!(
        Gossip::new(
            ca_config(&ca),
            &[SECRET],
            &key(1),
            me.clone(),
            epoch,
            1,
            now
        ),
        Err(ConfigError::Certificate(_))
    ));
    me.certificate = Some(cert_for(&ca, 1, "n1", T - 10, T - 1));
    assert!(matches!(
        Gossip::new(ca_config(&ca), &[SECRET], &key(1), me.clone(), epoch, 1, now),
        Err(ConfigError::Certificate(e)) if e.contains("expired")
    ));
    me.certificate = Some(cert_for(&ca, 1, "n1", T - 10, T + 3600));
    let mut g =
        Gossip::new(ca_config(&ca), &[SECRET], &key(1), me, epoch, 1, now).expect("certified");
    let to = key(1).public_key();
    let from = record(3).endpoint;
    let c = claim(epoch, 0, Rank::Alive);
    let cases = [
        None,
        Some(cert_for(&ca, 5, "n5", T - 10, T - 1)),
        Some(cert_for(&ca, 5, "n5", T + 60, T + 3600)),
        Some(cert_for(&rogue, 5, "n5", T - 10, T + 3600)),
        Some(cert_for(&ca, 6, "n5", T - 10, T + 3600)),
        Some(cert_for(&ca, 5, "n6", T - 10, T + 3600)),
    ];
    for (seq, cert) in cases.into_iter().enumerate() {
        let mut r = record(5);
        r.certificate = cert;
        let d = seal_msgs(
            &key(3),
            epoch,
            seq as u64 + 1,
            Some(&to),
            &[rumor(signed_entry(&key(5), &r, c, Rank::Alive))],
        );
        assert_eq!(
            g.handle_datagram(from, &d, now),
            Err(GossipError::Uncertified),
            "case {seq}"
        );
    }
    assert!(g.members().is_empty());
    let mut r = record(5);
    r.certificate = Some(cert_for(&ca, 5, "n5", T - 10, T + 3600));
    let d = seal_msgs(
        &key(3),
        epoch,
        99,
        Some(&to),
        &[rumor(signed_entry(&key(5), &r, c, Rank::Alive))],
    );
    assert_eq!(g.handle_datagram(from, &d, now), Ok(()));
    let m = g.member(&key(5).public_key()).expect("admitted");
    assert_eq!(
        m.record.certificate, r.certificate,
        "the certificate travels"
    );
    assert_eq!(GossipError::Uncertified.as_str(), "gossip_uncertified");
    // An uncertified entry beside a certified one: only it is left out.
    let mut r7 = record(7);
    r7.certificate = Some(cert_for(&ca, 7, "n7", T - 10, T + 30));
    let d = seal_msgs(
        &key(3),
        epoch,
        100,
        Some(&to),
        &[
            rumor(signed_entry(&key(6), &record(6), c, Rank::Alive)),
            rumor(signed_entry(&key(7), &r7, c, Rank::Alive)),
        ],
    );
    assert_eq!(
        g.handle_datagram(from, &d, now),
        Err(GossipError::Uncertified)
    );
    assert!(g.member(&key(6).public_key()).is_none());
    assert!(g.member(&key(7).public_key()).is_some());
    // When n7's certificate expires, it is declared dead.
    g.handle_timeout(now + Duration::from_secs(40));
    assert_eq!(
        g.member(&key(7).public_key()).map(|m| m.state),
        Some(MemberState::Dead)
    );
    assert_eq!(
        g.member(&key(5).public_key()).map(|m| m.state),
        Some(MemberState::Alive)
    );
}

/// With a CA whose certificates are optional (Kubernetes nodes, a host outside the
/// cluster), a record without a certificate enters and a node needs none of its own,
/// but a certificate that is there is checked as always, and its expiry still ends
/// the member.
#[test]
fn with_an_optional_ca_uncertified_members_enter_and_bad_certificates_do_not() {
    let now = Instant::now();
    let ca = Ca::from_seed(&[0xcc; 32]);
    let rogue = Ca::from_seed(&[0xcd; 32]);
    let epoch = T * 1000;
    let cert_for = |ca: &Ca, i: u8, until: u64| {
        ca.issue(
            &format!("n{i}"),
            *key(i).public_key().as_bytes(),
            vec![net(&format!("10.47.{i}.0/24"))],
            false,
            T - 10,
            until,
        )
        .expect("fits")
    };
    let config = GossipConfig {
        ca_optional: true,
        ..ca_config(&ca)
    };
    let mut g = Gossip::new(config, &[SECRET], &key(1), record(1), epoch, 1, now)
        .expect("no certificate needed");
    let to = key(1).public_key();
    let from = record(3).endpoint;
    let c = claim(epoch, 0, Rank::Alive);
    let mut forged = record(5);
    forged.certificate = Some(cert_for(&rogue, 5, T + 3600));
    let d = seal_msgs(
        &key(3),
        epoch,
        1,
        Some(&to),
        &[rumor(signed_entry(&key(5), &forged, c, Rank::Alive))],
    );
    assert_eq!(
        g.handle_datagram(from, &d, now),
        Err(GossipError::Uncertified)
    );
    assert!(g.member(&key(5).public_key()).is_none());
    let mut r7 = record(7);
    r7.certificate = Some(cert_for(&ca, 7, T + 30));
    let d = seal_msgs(
        &key(3),
        epoch,
        2,
        Some(&to),
        &[
            rumor(signed_entry(&key(6), &record(6), c, Rank::Alive)),
            rumor(signed_entry(&key(7), &r7, c, Rank::Alive)),
        ],
    );
    assert_eq!(g.handle_datagram(from, &d, now), Ok(()));
    assert!(g.member(&key(6).public_key()).is_some(), "no certificate");
    assert!(g.member(&key(7).public_key()).is_some(), "a valid one");
    g.handle_timeout(now + Duration::from_secs(40));
    assert_eq!(
        g.member(&key(7).public_key()).map(|m| m.state),
        Some(MemberState::Dead),
        "expired"
    );
    assert_eq!(
        g.member(&key(6).public_key()).map(|m| m.state),
        Some(MemberState::Alive)
    );
}
