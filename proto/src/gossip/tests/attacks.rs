//! The attacks of issue 10 on the gossip envelope, as tests: a datagram replayed to
//! another receiver, reflection toward unproven addresses, answers at recorded
//! endpoints, and a forged sender that must not poison the replay window. Attacks on
//! records (takeover, forged entries) are in `records.rs`.

use super::super::codec::decode_plaintext;
use super::super::member::{Claim, Rank};
use super::super::seal::Keyring;
use super::*;

/// Opens a datagram sealed for `me` and decodes its messages.
fn open_for(me: &PublicKey, datagram: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    Keyring::new(&[SECRET])
        .expect("key")
        .open(datagram, me, &mut out)
        .expect("sealed for me");
    decode_plaintext(&out).expect("decodes").1
}

fn alive_entry(k: u8) -> Message {
    let claim = Claim {
        epoch: 5,
        incarnation: 0,
        rank: Rank::Alive,
    };
    Message::Entry {
        entry: signed_entry(&key(k), &record(k), claim, Rank::Alive),
        rumor: true,
    }
}

fn drain(g: &mut Gossip) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| g.poll_transmit()).collect()
}

/// A captured datagram from node 1 to node 2, replayed to node 0, is dropped and
/// counted as misdirected (it used to be accepted and answered: sequence numbers are
/// per sender, not per receiver); at node 2 a second copy is a replay.
#[test]
fn cross_receiver_replay_is_dropped_and_counted() {
    let mut sim = mesh(3);
    sim.tap = Some(1);
    sim.run_until(sim.elapsed() + Duration::from_secs(3));
    let to2 = sim.node(2).addr;
    let from = sim.node(1).addr;
    let captured: Vec<Vec<u8>> = sim
        .tapped
        .iter()
        .filter(|(to, _)| *to == to2)
        .map(|(_, b)| b.clone())
        .collect();
    assert!(!captured.is_empty());
    let before0 = sim.node(0).errors;
    let before2 = sim.node(2).errors;
    sim.tap = Some(0);
    sim.tapped.clear();
    for d in &captured {
        sim.inject(0, from, d.clone());
        sim.inject(2, from, d.clone());
    }
    sim.run_until(sim.elapsed() + Duration::from_millis(1));
    let delta = |i: usize, before: [u64; GossipError::COUNT], e: GossipError| {
        sim.node(i).errors[e.index()] - before[e.index()]
    };
    let n = captured.len() as u64;
    assert_eq!(delta(0, before0, GossipError::Misdirected), n);
    assert_eq!(delta(2, before2, GossipError::Replay), n);
    assert!(
        sim.tapped.is_empty(),
        "node 0 answered a misdirected datagram"
    );
    assert_eq!(
        GossipError::Misdirected.as_str(),
        "gossip_misdirected",
        "the counter `weftnet status` shows"
    );
}

/// Everything a node sends to an unproven source address (a spoofed victim) is at
/// most what it received from there: a replayed or spoofed Join gets a small
/// Challenge, never the state transfer (328 bytes, about 7x, before); a stranger's
/// Ping an Ack without piggybacked rumors (about 12x before); a stranger's Digest no
/// burst of answers. The state goes out only after the cookie round trip.
#[test]
fn unproven_addresses_get_no_more_bytes_than_they_sent() {
    let now = Instant::now();
    let me = record(1).public_key;
    let mut g = node(1, 10, now);
    // Members to talk about, and rumors queued for piggybacking.
    let member = key(3);
    let seed_ep = record(3).endpoint;
    for (seq, keys) in [(1, 3..8), (2, 8..12)] {
        let entries: Vec<Message> = keys.map(alive_entry).collect();
        g.handle_datagram(
            seed_ep,
            &seal_msgs(&member, 5, seq, Some(&me), &entries),
            now,
        )
        .expect("accepted");
    }
    drain(&mut g);
    assert_eq!(g.live_members(), 9);

    let victim = SocketAddr::from(([203, 0, 113, 7], 4444));
    let joiner_key = key(0x20);
    let joiner = joiner_key.public_key();
    let received = std::cell::Cell::new(0usize);
    let sent = std::cell::Cell::new(0usize);
    let exchange = |g: &mut Gossip, from: SocketAddr, d: Vec<u8>| {
        let r = g.handle_datagram(from, &d, now);
        let out = drain(g);
        if from == victim {
            received.set(received.get() + d.len());
            sent.set(
                sent.get()
                    + out
                        .iter()
                        .filter(|(to, _)| *to == victim)
                        .map(|(_, b)| b.len())
                        .sum::<usize>(),
            );
        }
        (r, out)
    };

    // 1. A first Join (unknown receiver) from the victim's address: one Challenge.
    let mut join = vec![Message::Join { cookie: None }];
    join.push(Message::Padding {
        len: super::transmit::JOIN_PADDED_LEN - 50 - PLAIN_HEADER_LEN - 2,
    });
    let first = seal_msgs(&joiner_key, 5, 1, None, &join);
    assert_eq!(first.len(), super::transmit::JOIN_PADDED_LEN);
    let (r, out) = exchange(&mut g, victim, first.clone());
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 1);
    assert!(out[0].1.len() <= first.len());
    let cookie = match open_for(&joiner, &out[0].1).as_slice() {
        [Message::Challenge { cookie }] => *cookie,
        other => panic!("not a challenge: {other:?}"),
    };
    // The same Join replayed: stateless, the same small answer each time.
    for _ in 0..3 {
        let (r, _) = exchange(&mut g, victim, first.clone());
        assert_eq!(r, Ok(()));
    }
    // A first Join that carries more than a Join is refused.
    let mut stuffed = join.clone();
    stuffed.insert(1, alive_entry(0x20));
    let (r, _) = exchange(&mut g, victim, seal_msgs(&joiner_key, 5, 2, None, &stuffed));
    assert_eq!(r, Err(GossipError::Misdirected));
    // Too short to cover a Challenge: no answer at all.
    let bare = seal_msgs(&joiner_key, 5, 3, None, &[Message::Join { cookie: None }]);
    let (r, out) = exchange(&mut g, victim, bare);
    assert_eq!((r, out.len()), (Ok(()), 0));

    // 2. The victim's cookie presented from another address proves nothing.
    let elsewhere = SocketAddr::from(([198, 51, 100, 9], 51820));
    let with_cookie = vec![
        Message::Join {
            cookie: Some(cookie),
        },
        alive_entry(0x20),
    ];
    let (r, out) = exchange(
        &mut g,
        elsewhere,
        seal_msgs(&joiner_key, 5, 4, Some(&me), &with_cookie),
    );
    assert_eq!(r, Ok(()));
    assert!(
        out.iter().all(|(to, d)| *to != elsewhere
            || matches!(open_for(&joiner, d).as_slice(), [Message::Challenge { .. }])),
        "no state for an unproven address"
    );

    // 3. A stranger's small Ping and Digest from the victim's address.
    let stranger = key(0x21);
    let (r, out) = exchange(
        &mut g,
        victim,
        seal_msgs(&stranger, 5, 1, Some(&me), &[Message::Ping { probe: 7 }]),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 1, "acked, without the queued rumors");
    let digest = Message::Digest(vec![super::codec::Pair {
        level: 0,
        pull: true,
        index: 0,
        count: 0,
        hash: 0,
    }]);
    let (r, _) = exchange(
        &mut g,
        victim,
        seal_msgs(&stranger, 5, 2, Some(&me), &[digest]),
    );
    assert_eq!(r, Ok(()));
    let (sent, received) = (sent.get(), received.get());
    assert!(
        sent <= received,
        "sent {sent} bytes to the victim for {received}"
    );

    // 4. The real joiner, at the address its cookie was issued to, gets the state.
    let (r, out) = exchange(
        &mut g,
        victim,
        seal_msgs(&joiner_key, 5, 5, Some(&me), &with_cookie),
    );
    assert_eq!(r, Ok(()));
    let state = out
        .iter()
        .find(|(to, _)| *to == victim)
        .map(|(_, d)| open_for(&joiner, d))
        .expect("state transfer");
    let entries = state
        .iter()
        .filter(|m| matches!(m, Message::Entry { rumor: false, .. }))
        .count();
    assert!(
        entries >= 7,
        "own entry and the members that fit: {state:?}"
    );
    assert!(g.member(&joiner).is_some(), "the joiner's entry applied");
}

/// Known members are answered at their recorded endpoint, not at the source of the
/// datagram.
#[test]
fn members_are_answered_at_their_recorded_endpoint() {
    let mut sim = mesh(2);
    let key0 = sim.node(0).key;
    let key1 = sim.node(1).key;
    let epoch = sim.member(0, &key1).map(|m| m.epoch).expect("member");
    let spoofed = SocketAddr::from(([203, 0, 113, 9], 51820));
    sim.tap = Some(0);
    sim.tapped.clear();
    let ping = seal_msgs(
        sim.identity(1),
        epoch,
        1 << 40,
        Some(&key0),
        &[Message::Ping { probe: 77 }],
    );
    sim.inject(0, spoofed, ping);
    sim.run_until(sim.elapsed() + Duration::from_millis(1));
    assert!(sim.tapped.iter().all(|(to, _)| *to != spoofed));
    let acked = sim.tapped.iter().any(|(to, d)| {
        *to == sim.node(1).addr && open_for(&key1, d).contains(&Message::Ack { probe: 77 })
    });
    assert!(acked, "the ack went to the recorded endpoint");
}

/// One datagram claiming sender = node 1 with epoch u64::MAX used to make every later
/// datagram of node 1 a replay (node 1 was dead within 8 s, for as long as its entry
/// was kept). Now epochs beyond the clock bound are dropped, and a holder of the
/// secret posing as node 1 (epoch within the bound, or sequence number u64::MAX at
/// node 1's own epoch) fails the sender MAC: node 1's replay window never moves, and
/// node 1 stays alive, never even suspected.
#[test]
fn a_forged_sender_does_not_poison_the_replay_window() {
    // Two nodes and a forger, so that no indirect probe hides the poisoning.
    let mut sim = mesh(2);
    let key0 = sim.node(0).key;
    let key1 = sim.node(1).key;
    let from = sim.node(1).addr;
    let epoch1 = sim.member(0, &key1).map(|m| m.epoch).expect("member");
    let forger = key(0x66);
    let before = sim.node(0).errors;
    let forged = [
        (u64::MAX, 1),
        (epoch1 + 30 * 60 * 1000, 1),
        (epoch1, u64::MAX),
        (epoch1 + 1, 1),
    ];
    for (epoch, seq) in forged {
        let d = seal_as(
            &forger,
            key1,
            epoch,
            seq,
            Some(&key0),
            &[Message::Ping { probe: 1 }],
        );
        sim.inject(0, from, d);
    }
    sim.run_until(sim.elapsed() + Duration::from_secs(30));
    let m = sim.member(0, &key1).expect("known");
    assert_eq!(m.state, MemberState::Alive);
    assert_eq!(m.incarnation, 0, "never even suspected");
    let after = sim.node(0).errors;
    let delta = |e: GossipError| after[e.index()] - before[e.index()];
    assert_eq!(delta(GossipError::FutureEpoch), 1);
    assert_eq!(delta(GossipError::BadSender), 3);
    assert_eq!(delta(GossipError::Replay), 0);
    assert_eq!(GossipError::BadSender.as_str(), "gossip_bad_sender");
}

/// A member that moves to a new address and announces it is answered there: roaming
/// keeps working with answers at recorded endpoints.
#[test]
fn a_member_that_moves_is_answered_at_its_new_endpoint() {
    let mut sim = mesh(3);
    let key = sim.node(2).key;
    let new = SocketAddr::from(([10, 9, 9, 9], 51820));
    sim.move_node(2, new);
    sim.run_until(sim.elapsed() + Duration::from_secs(20));
    for i in 0..2 {
        let m = sim.member(i, &key).expect("known");
        assert_eq!(m.state, MemberState::Alive, "node {i}");
        assert_eq!(m.record.endpoint, new, "node {i}");
    }
    let g = sim.node(2).gossip.as_ref().expect("running");
    assert_eq!(g.live_members(), 2);
}
