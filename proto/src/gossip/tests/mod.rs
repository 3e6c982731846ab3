//! Unit tests of the state machine: a handful of nodes on the simulator, checking the
//! public API's behaviour one feature at a time.

use super::codec::{Message, PLAIN_HEADER_LEN};
use super::seal::{ClusterKey, Receiver, HEADER_LEN};
use super::sim::{Sim, SimConfig};
use super::*;
use crate::keys::{PrivateKey, PublicKey};
use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod attacks;
mod records;
mod rotation;

const SECRET: [u8; 32] = [5; 32];

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("prefix")
}

/// `n` nodes, all joined through node 0, run until converged.
fn mesh(n: usize) -> Sim {
    let mut sim = Sim::new(SimConfig::default());
    for i in 0..n {
        sim.add_node(SECRET, vec![net(&format!("10.47.{i}.0/24"))]);
    }
    for i in 1..n {
        sim.join(i, &[0]);
    }
    let t = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(10), |s| {
        s.converged(n as u32)
    });
    assert!(t.is_some(), "{n} nodes did not converge");
    sim
}

/// The private key of test node `i`.
fn key(i: u8) -> PrivateKey {
    PrivateKey::from_bytes([i; 32])
}

fn record(i: u8) -> NodeRecord {
    NodeRecord {
        public_key: key(i).public_key(),
        name: format!("n{i}"),
        endpoint: SocketAddr::from(([192, 0, 2, i], 51820)),
        prefixes: vec![],
        version: 0,
        certificate: None,
        handover: None,
    }
}

/// Node `i` with the default config.
fn node(i: u8, epoch: u64, now: Instant) -> Gossip {
    Gossip::new(
        GossipConfig::default(),
        &[SECRET],
        &key(i),
        record(i),
        epoch,
        1,
        now,
    )
    .expect("valid")
}

/// An entry for `r`, signed by `owner` (its owner, or a forger) with the state
/// `signed`, carrying the state `claim.rank`.
fn signed_entry(
    owner: &PrivateKey,
    r: &NodeRecord,
    claim: super::member::Claim,
    signed: super::member::Rank,
) -> super::codec::Entry {
    let body = super::record::RecordBody::from_record(r);
    let body_hash = body.hash();
    let m = super::codec::signed_message(
        &r.public_key,
        claim.epoch,
        claim.incarnation,
        signed,
        r.version,
        &body_hash,
    );
    super::codec::Entry {
        key: r.public_key,
        claim,
        version: r.version,
        record: (claim.rank != super::member::Rank::Forgotten).then_some(body),
        remaining_secs: if claim.rank == super::member::Rank::Forgotten {
            60
        } else {
            0
        },
        proof: super::codec::Proof {
            signed,
            body_hash,
            signature: crate::identity::Signer::new(owner).sign(&m),
        },
    }
}

/// Seals `messages` from `sender` (its header names `as_key`, its MAC is made with
/// `sender`'s key) at (`epoch`, `seq`) for `to` (`None`: an unknown receiver), as a
/// holder of the cluster secret would.
fn seal_as(
    sender: &PrivateKey,
    as_key: PublicKey,
    epoch: u64,
    seq: u64,
    to: Option<&PublicKey>,
    messages: &[Message],
) -> Vec<u8> {
    let mut p = Vec::new();
    super::codec::Header {
        sender: as_key,
        epoch,
        seq,
        mac: [0; 16],
    }
    .encode(&mut p);
    for m in messages {
        m.encode(&mut p);
    }
    if let Some(to) = to {
        let pair = crate::identity::Signer::new(sender)
            .pair_key(to)
            .expect("contributory");
        let mac = super::codec::sender_mac(&pair, &p);
        p[super::codec::MAC_AT..PLAIN_HEADER_LEN].copy_from_slice(&mac);
    }
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&seq.to_le_bytes());
    nonce[8..].copy_from_slice(&as_key.as_bytes()[..16]);
    let receiver = to.map_or(Receiver::Unknown, Receiver::Key);
    ClusterKey::derive(&SECRET).seal(receiver, &nonce, &p)
}

/// [`seal_as`] by the sender itself.
fn seal_msgs(
    sender: &PrivateKey,
    epoch: u64,
    seq: u64,
    to: Option<&PublicKey>,
    messages: &[Message],
) -> Vec<u8> {
    seal_as(sender, sender.public_key(), epoch, seq, to, messages)
}

#[test]
fn two_nodes_learn_each_other() {
    let sim = mesh(2);
    let a = sim.node(0);
    let b = sim.node(1);
    let ga = a.gossip.as_ref().expect("running");
    let m = ga.member(&b.key).expect("knows b");
    assert_eq!(m.state, MemberState::Alive);
    assert_eq!(m.record.endpoint, b.addr);
    assert_eq!(m.record.prefixes, vec![net("10.47.1.0/24")]);
    assert_eq!(ga.members().len(), 1);
    assert!(ga.member(&a.key).is_none(), "not a member of itself");
    assert!(matches!(&a.events[..], [(_, Event::Up(r))] if r.public_key == b.key));
    assert_eq!(sim.errors(), [0; GossipError::COUNT]);
}

#[test]
fn record_updates_spread_and_bump_versions() {
    let mut sim = mesh(3);
    let now = sim.now();
    let key = sim.node(1).key;
    let g = sim.gossip_mut(1).expect("running");
    g.update_record(|r| r.prefixes.push(net("10.99.0.7/16")), now)
        .expect("valid");
    assert_eq!(g.me().version, 1);
    assert_eq!(g.me().prefixes[1], net("10.99.0.0/16"), "normalized");
    g.update_record(|_| {}, now).expect("no-op");
    assert_eq!(g.me().version, 1, "unchanged record keeps its version");
    assert_eq!(
        g.update_record(|r| r.name = "x".repeat(65), now),
        Err(RecordError::NameTooLong(65))
    );
    assert_eq!(
        g.update_record(|r| r.public_key = PublicKey::from_bytes([0; 32]), now),
        Err(RecordError::KeyChanged)
    );
    sim.poke(1);
    let t0 = sim.elapsed();
    sim.run_until(t0 + Duration::from_secs(2));
    for i in [0, 2] {
        let m = sim.member(i, &key);
        assert_eq!(m.map(|m| m.record.version), Some(1));
        assert!(sim
            .node(i)
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Updated(r) if r.public_key == key && r.version == 1)));
    }
}

#[test]
fn leave_is_seen_at_once_and_node_goes_quiet() {
    let mut sim = mesh(4);
    let now = sim.now();
    let key = sim.node(3).key;
    sim.gossip_mut(3).expect("running").leave(now);
    sim.poke(3);
    let t0 = sim.elapsed();
    sim.run_until(t0 + Duration::from_millis(500));
    for i in 0..3 {
        let g = sim.node(i).gossip.as_ref().expect("running");
        assert_eq!(
            g.member(&key).map(|m| m.state),
            Some(MemberState::Left),
            "node {i}"
        );
        assert!(sim.node(i).events.iter().any(|(_, e)| *e
            == Event::Down {
                public_key: key,
                state: MemberState::Left
            }));
    }
    sim.run_until(t0 + Duration::from_secs(5));
    let g = sim.node(3).gossip.as_ref().expect("running");
    assert!(g.has_left());
    assert_eq!(
        g.poll_timeout(),
        None,
        "a left node stops once its rumors are out"
    );
}

#[test]
fn suspicion_is_refuted() {
    let mut sim = mesh(3);
    let key = sim.node(2).key;
    // Cut node 2 off long enough to be suspected but not declared dead.
    sim.partition(Some(vec![0, 0, 1]));
    let t0 = sim.elapsed();
    let suspected = sim.run_until_true(
        Duration::from_millis(50),
        t0 + Duration::from_secs(6),
        |s| {
            s.member(0, &key)
                .is_some_and(|m| m.state == MemberState::Suspect)
        },
    );
    assert!(suspected.is_some(), "never suspected");
    sim.partition(None);
    let t1 = sim.elapsed();
    sim.run_until(t1 + Duration::from_secs(3));
    for i in 0..2 {
        let m = sim.member(i, &key).expect("known");
        assert_eq!(m.state, MemberState::Alive, "node {i}");
        assert!(m.incarnation >= 1, "refuted with a higher incarnation");
    }
}

#[test]
fn forget_removes_everywhere_and_live_nodes_come_back() {
    let mut sim = mesh(4);
    let victim = sim.node(3).key;
    sim.kill(3);
    let t0 = sim.elapsed();
    let dead = sim.run_until_true(
        Duration::from_millis(100),
        t0 + Duration::from_secs(20),
        |s| {
            (0..3).all(|i| {
                s.member(i, &victim)
                    .is_some_and(|m| m.state == MemberState::Dead)
            })
        },
    );
    assert!(dead.is_some());
    let now = sim.now();
    sim.gossip_mut(0).expect("running").forget(&victim, now);
    sim.poke(0);
    let t1 = sim.elapsed();
    sim.run_until(t1 + Duration::from_secs(3));
    for i in 0..3 {
        let n = sim.node(i);
        let g = n.gossip.as_ref().expect("running");
        assert!(g.member(&victim).is_none(), "node {i} still has it");
        assert!(n.events.iter().any(|(_, e)| *e == Event::Forgotten(victim)));
        assert_eq!(g.members().len(), 2);
    }
    // Forgetting a live node: it refutes and is back.
    let live = sim.node(2).key;
    let now = sim.now();
    sim.gossip_mut(0).expect("running").forget(&live, now);
    sim.poke(0);
    let t2 = sim.elapsed();
    sim.run_until(t2 + Duration::from_secs(5));
    for i in 0..2 {
        let m = sim.member(i, &live);
        assert_eq!(m.map(|m| m.state), Some(MemberState::Alive), "node {i}");
    }
}

#[test]
fn replay_tamper_own_key_and_strangers_are_rejected() {
    let mut sim = mesh(2);
    sim.tap = Some(1);
    let t0 = sim.elapsed();
    sim.run_until(t0 + Duration::from_secs(2));
    let (_, captured) = sim.tapped.first().cloned().expect("node 1 sent something");
    let from = sim.node(1).addr;
    let before = sim.node(0).errors;
    sim.inject(0, from, captured.clone());
    let mut flipped = captured.clone();
    flipped[HEADER_LEN + 3] ^= 0x20;
    sim.inject(0, from, flipped);
    let mut stranger = captured.clone();
    stranger[2] ^= 1; // key id
    sim.inject(0, from, stranger);
    sim.inject(0, from, vec![0x40; 1201]);
    sim.inject(0, from, vec![0x40, 9, 0, 0]);
    // node 0's own datagram to node 1, looped back to it: sealed for node 1
    sim.tap = Some(0);
    sim.tapped.clear();
    sim.run_until(sim.elapsed() + Duration::from_secs(1));
    let (_, own) = sim.tapped.first().cloned().expect("node 0 sent something");
    sim.inject(0, from, own);
    // a datagram for node 0 claiming to come from node 0's key
    let key0 = sim.node(0).key;
    let looped = seal_msgs(
        sim.identity(0),
        1,
        1,
        Some(&key0),
        &[Message::Ping { probe: 1 }],
    );
    sim.inject(0, from, looped);
    sim.run_until(sim.elapsed() + Duration::from_millis(10));
    let after = sim.node(0).errors;
    let delta = |e: GossipError| after[e.index()] - before[e.index()];
    assert_eq!(delta(GossipError::Replay), 1);
    assert_eq!(delta(GossipError::Authentication), 1);
    assert_eq!(delta(GossipError::UnknownKey), 1);
    assert_eq!(delta(GossipError::Oversized), 1);
    assert_eq!(delta(GossipError::Version(0)), 1);
    assert_eq!(delta(GossipError::OwnKey), 1);
    assert_eq!(delta(GossipError::Misdirected), 1);
}

#[test]
fn setup_errors_and_debug_hides_secrets() {
    let now = Instant::now();
    let cfg = GossipConfig::default;
    assert_eq!(
        Gossip::new(cfg(), &[], &key(1), record(1), 1, 1, now).err(),
        Some(ConfigError::NoSecret)
    );
    assert_eq!(
        Gossip::new(cfg(), &[SECRET], &key(2), record(1), 1, 1, now).err(),
        Some(ConfigError::KeyMismatch)
    );
    let mut long = record(1);
    long.name = "é".repeat(33);
    assert_eq!(
        Gossip::new(cfg(), &[SECRET], &key(1), long, 1, 1, now).err(),
        Some(ConfigError::Record(RecordError::NameTooLong(66)))
    );
    let bad = GossipConfig {
        gossip_fanout: 0,
        ..cfg()
    };
    assert!(matches!(
        Gossip::new(bad, &[SECRET], &key(1), record(1), 1, 1, now),
        Err(ConfigError::Invalid {
            field: "gossip_fanout",
            ..
        })
    ));
    let secret = [0x5a; 32];
    let g = Gossip::new(cfg(), &[secret], &key(1), record(1), 1, 1, now).expect("valid");
    let text = format!("{g:?}");
    let key = hex::encode(super::seal::derive_key(&secret));
    assert!(!text.contains("90, 90, 90"), "secret bytes in Debug");
    assert!(!text.contains(&key[..8]) && !text.to_lowercase().contains("5a5a5a"));
    assert!(text.contains("redacted"));
}

#[test]
fn join_retries_until_a_seed_answers() {
    let mut sim = Sim::new(SimConfig::default());
    let a = sim.add_node(SECRET, vec![]);
    let b = sim.add_node(SECRET, vec![]);
    sim.kill(a);
    sim.join(b, &[a]);
    sim.run_until(Duration::from_secs(5));
    sim.restart(a);
    let t = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
        s.converged(2)
    });
    assert!(t.is_some(), "b never reached the restarted seed");
}

#[test]
fn stale_time_and_huge_inputs_do_not_panic() {
    let now = Instant::now();
    let mut g = node(1, 1, now);
    g.join(&[SocketAddr::from(([192, 0, 2, 2], 51820))], now);
    g.handle_timeout(now + Duration::from_secs(3600));
    g.handle_timeout(now); // time never goes backwards inside
    assert!(g.poll_timeout().is_some_and(|t| t > now));
    // a tombstone claiming an enormous lifetime is capped, an unknown forget is a no-op
    g.forget(&PublicKey::from_bytes([9; 32]), now);
    assert!(g.members().is_empty());
}

/// Seals `body` (after a valid header from node 2) for node 1.
fn sealed(body: &[u8], seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PLAIN_HEADER_LEN + body.len());
    super::codec::Header {
        sender: key(2).public_key(),
        epoch: 7,
        seq,
        mac: [0; 16],
    }
    .encode(&mut p);
    p.extend_from_slice(body);
    let to = key(1).public_key();
    let pair = crate::identity::Signer::new(&key(2))
        .pair_key(&to)
        .expect("contributory");
    let mac = super::codec::sender_mac(&pair, &p);
    p[super::codec::MAC_AT..PLAIN_HEADER_LEN].copy_from_slice(&mac);
    ClusterKey::derive(&SECRET).seal(Receiver::Key(&to), &[seq as u8; 24], &p)
}

#[test]
fn authenticated_garbage_is_malformed_and_valid_messages_apply() {
    let now = Instant::now();
    let mut g = node(1, 1, now);
    let from = SocketAddr::from(([192, 0, 2, 2], 51820));
    assert_eq!(
        g.handle_datagram(from, &sealed(&[0x77], 1), now),
        Err(GossipError::Malformed)
    );
    let mut ping = Vec::new();
    Message::Ping { probe: 9 }.encode(&mut ping);
    assert_eq!(g.handle_datagram(from, &sealed(&ping, 2), now), Ok(()));
    let (to, reply) = g.poll_transmit().expect("ack");
    assert_eq!(to, from);
    assert!(reply.len() <= MAX_DATAGRAM && reply[0] == GOSSIP_TYPE);
    assert_eq!(
        g.handle_datagram(from, &sealed(&ping, 2), now),
        Err(GossipError::Replay)
    );
}

proptest! {
    #[test]
    fn handle_datagram_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let now = Instant::now();
        let mut g = node(1, 1, now);
        let from = SocketAddr::from(([192, 0, 2, 2], 51820));
        let mut d = bytes.clone();
        let _ = g.handle_datagram(from, &d, now);
        if !d.is_empty() {
            d[0] = GOSSIP_TYPE;
        }
        let _ = g.handle_datagram(from, &d, now);
    }

    #[test]
    fn authenticated_arbitrary_plaintext_never_panics(body in proptest::collection::vec(any::<u8>(), 0..1100)) {
        fuzz_plaintext(&body);
    }

    #[test]
    fn authenticated_message_soup_never_panics(
        kinds in proptest::collection::vec((1u8..=7, any::<u32>(), any::<u8>()), 1..12)
    ) {
        // Valid message framing with adversarial values: exercises every handler.
        let mut body = Vec::new();
        for (kind, a, b) in kinds {
            match kind {
                1 => Message::Ping { probe: a }.encode(&mut body),
                2 => Message::Ack { probe: a }.encode(&mut body),
                3 => Message::PingReq {
                    probe: a,
                    target: PublicKey::from_bytes([b; 32]),
                    endpoint: SocketAddr::from(([10, 0, 0, b], 1)),
                }
                .encode(&mut body),
                4 => Message::Join { cookie: (a & 1 == 1).then_some([b; 16]) }.encode(&mut body),
                6 => Message::Digest(vec![super::codec::Pair {
                    level: [0, 5, 10][usize::from(b % 3)],
                    pull: a & 1 == 1,
                    index: 0,
                    count: (a >> 16) as u16,
                    hash: u64::from(a),
                }])
                .encode(&mut body),
                _ => {
                    let mut r = record(b % 4 + 2);
                    r.version = u64::from(a);
                    let rank = super::member::Rank::from_u8(b % 5).expect("rank");
                    let signed = if rank == super::member::Rank::Left {
                        super::member::Rank::Left
                    } else {
                        super::member::Rank::Alive
                    };
                    let claim = super::member::Claim {
                        epoch: u64::from(a % 3),
                        incarnation: u64::from(a >> 30),
                        rank,
                    };
                    // Signed by its owner, or forged by another node.
                    let owner = key(if a & 4 == 0 { b % 4 + 2 } else { 9 });
                    let entry = signed_entry(&owner, &r, claim, signed);
                    Message::Entry { entry, rumor: kind == 5 }.encode(&mut body);
                }
            }
        }
        let mut plaintext = Vec::new();
        super::codec::Header { sender: key(2).public_key(), epoch: 7, seq: 1, mac: [0; 16] }
            .encode(&mut plaintext);
        plaintext.extend_from_slice(&body);
        fuzz_plaintext(&plaintext);
    }
}
