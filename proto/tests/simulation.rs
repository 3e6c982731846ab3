//! Deterministic multi-node simulations of the gossip layer (no root, no sockets):
//! N `Gossip` state machines on `gossip::sim`'s virtual network with per-link delay,
//! loss, partitions, crashes and restarts, in virtual time. Each test states the
//! property it checks; all of them together run in a few seconds.

use ipnet::IpNet;
use std::time::Duration;
use weftnet_proto::gossip::sim::{Sim, SimConfig};
use weftnet_proto::gossip::{Event, GossipConfig, GossipError, MemberState};
use weftnet_proto::ipam;
use weftnet_proto::keys::PublicKey;

const SECRET: [u8; 32] = [0x2a; 32];
const STEP: Duration = Duration::from_millis(100);

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn sim(seed: u64, loss: f64) -> Sim {
    Sim::new(SimConfig {
        seed,
        loss,
        ..SimConfig::default()
    })
}

/// Adds `n` nodes owning 10.47.i.0/24, all joining node 0 at once.
fn cold_start(s: &mut Sim, n: usize) {
    for i in 0..n {
        s.add_node(SECRET, vec![net(&format!("10.47.{i}.0/24"))]);
    }
    for i in 1..n {
        s.join(i, &[0]);
    }
}

fn state_at(s: &Sim, observer: usize, key: &PublicKey) -> Option<MemberState> {
    s.member(observer, key).map(|m| m.state)
}

/// Every running node other than `except` sees `key` in `state`.
fn all_see(s: &Sim, key: &PublicKey, state: MemberState, except: usize) -> bool {
    (0..s.nodes().len())
        .filter(|&i| i != except && s.node(i).gossip.is_some())
        .all(|i| state_at(s, i, key) == Some(state))
}

fn downs(s: &Sim, i: usize) -> Vec<PublicKey> {
    s.node(i)
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Down {
                public_key,
                state: MemberState::Dead,
            } => Some(*public_key),
            _ => None,
        })
        .collect()
}

/// (1) 50 nodes joining through one seed all know every other node's key, endpoint
/// and prefixes within 10 s of virtual time.
#[test]
fn fifty_nodes_converge_from_one_seed() {
    let mut s = sim(1, 0.0);
    cold_start(&mut s, 50);
    let t = s.run_until_true(STEP, Duration::from_secs(10), |s| s.converged(50));
    assert!(t.is_some(), "no convergence in 10 s");
    for i in 0..50 {
        let g = s.node(i).gossip.as_ref().expect("running");
        let members = g.members();
        assert_eq!(members.len(), 49, "node {i}");
        for m in members {
            let j = s
                .nodes()
                .iter()
                .position(|n| n.key == m.record.public_key)
                .expect("a real node");
            assert_eq!(m.state, MemberState::Alive);
            assert_eq!(m.record.endpoint, s.node(j).addr);
            assert_eq!(m.record.prefixes, vec![net(&format!("10.47.{j}.0/24"))]);
            assert_eq!(m.record.name, format!("node-{j}"));
        }
    }
    assert_eq!(s.errors(), [0; GossipError::COUNT]);
    println!("50 nodes converged after {:?}", t);
}

/// (2) 10% loss on every datagram for 5 minutes of virtual time: suspicions happen
/// and are refuted, but no live node is ever declared dead.
#[test]
fn no_false_deaths_under_ten_percent_loss() {
    let n = 20;
    let mut s = sim(2, 0.10);
    cold_start(&mut s, n);
    let t = s.run_until_true(STEP, Duration::from_secs(30), |s| s.converged(n as u32));
    assert!(t.is_some(), "no convergence under loss");
    s.run_until(Duration::from_secs(300));
    for i in 0..n {
        assert_eq!(downs(&s, i), vec![], "node {i} declared a live node dead");
        let g = s.node(i).gossip.as_ref().expect("running");
        assert_eq!(g.live_members(), n - 1, "node {i}");
    }
    assert!(s.converged(n as u32));
}

/// (3) A crashed node is suspected, then dead everywhere within the bound; restarted
/// with a new epoch it is alive again; a graceful leave is seen at once; forget
/// removes the record everywhere.
#[test]
fn failure_restart_leave_and_forget() {
    let n = 20;
    let cfg = GossipConfig::default();
    let mut s = sim(3, 0.0);
    cold_start(&mut s, n);
    assert!(s
        .run_until_true(STEP, Duration::from_secs(10), |s| s.converged(n as u32))
        .is_some());

    // Crash.
    let victim = 7;
    let key = s.node(victim).key;
    s.kill(victim);
    let t0 = s.elapsed();
    // Bound (PROTOCOL.md §6.6): a few probe periods until probed and the period ends,
    // the suspicion timeout, and a few seconds of dissemination.
    let bound = cfg.probe_interval * 5 + cfg.suspicion_timeout(n - 1) + Duration::from_secs(3);
    let mut suspected = false;
    let dead = s.run_until_true(Duration::from_millis(50), t0 + bound, |s| {
        suspected |= (0..n).any(|i| state_at(s, i, &key) == Some(MemberState::Suspect));
        all_see(s, &key, MemberState::Dead, victim)
    });
    assert!(suspected, "never suspected before dead");
    let dead = dead.expect("not dead everywhere within the bound") - t0;
    println!("failure known by all after {dead:?} (bound {bound:?})");
    for i in (0..n).filter(|&i| i != victim) {
        assert_eq!(downs(&s, i), vec![key], "node {i}");
    }

    // Restart with a new epoch: alive again everywhere.
    s.restart(victim);
    s.join(victim, &[0]);
    let t1 = s.elapsed();
    let back = s.run_until_true(STEP, t1 + Duration::from_secs(10), |s| {
        all_see(s, &key, MemberState::Alive, victim) && s.converged(n as u32)
    });
    assert!(back.is_some(), "restarted node not alive everywhere");
    let g = s.node(0).gossip.as_ref().expect("running");
    let m = g.member(&key).expect("known");
    assert!(
        m.epoch > 1_700_000_000_000 + t0.as_millis() as u64,
        "new epoch"
    );

    // Graceful leave: left everywhere within a second.
    let leaver = 11;
    let lkey = s.node(leaver).key;
    let now = s.now();
    s.gossip_mut(leaver).expect("running").leave(now);
    s.poke(leaver);
    let t2 = s.elapsed();
    let left = s.run_until_true(
        Duration::from_millis(10),
        t2 + Duration::from_secs(2),
        |s| all_see(s, &lkey, MemberState::Left, leaver),
    );
    let left = left.expect("leave not seen everywhere") - t2;
    assert!(left <= Duration::from_secs(1), "leave took {left:?}");
    s.kill(leaver);

    // Forget both: removed everywhere.
    let now = s.now();
    s.gossip_mut(1).expect("running").forget(&lkey, now);
    s.poke(1);
    let t3 = s.elapsed();
    let gone = s.run_until_true(STEP, t3 + Duration::from_secs(5), |s| {
        (0..n)
            .filter(|&i| s.node(i).gossip.is_some())
            .all(|i| s.member(i, &lkey).is_none())
    });
    assert!(gone.is_some(), "forget did not reach everyone");
    // Tombstones keep it gone through anti-entropy.
    s.run_until(s.elapsed() + Duration::from_secs(20));
    for i in (0..n).filter(|&i| i != leaver) {
        assert!(state_at(&s, i, &lkey).is_none(), "node {i} resurrected it");
        assert!(s
            .node(i)
            .events
            .iter()
            .any(|(_, e)| *e == Event::Forgotten(lkey)));
    }
}

/// (4) A partition splits the mesh for a minute (each side declares the other dead),
/// then heals: everyone is alive again and all views are equal.
#[test]
fn partition_heals() {
    let n = 16;
    let mut s = sim(4, 0.01);
    cold_start(&mut s, n);
    assert!(s
        .run_until_true(STEP, Duration::from_secs(15), |s| s.converged(n as u32))
        .is_some());
    let groups: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    s.partition(Some(groups));
    let t0 = s.elapsed();
    s.run_until(t0 + Duration::from_secs(60));
    let other = s.node(1).key;
    assert_eq!(
        state_at(&s, 0, &other),
        Some(MemberState::Dead),
        "sides split"
    );
    s.partition(None);
    let t1 = s.elapsed();
    let healed = s.run_until_true(STEP, t1 + Duration::from_secs(60), |s| {
        s.converged(n as u32)
            && (0..n).all(|i| {
                s.node(i)
                    .gossip
                    .as_ref()
                    .is_some_and(|g| g.live_members() == n - 1)
            })
    });
    let healed = healed.expect("partition did not heal") - t1;
    println!("healed after {healed:?}");
}

/// Every node's own claims, `(key, block)`.
fn claims(s: &Sim) -> Vec<(PublicKey, IpNet)> {
    s.nodes()
        .iter()
        .filter_map(|n| n.gossip.as_ref())
        .flat_map(|g| g.me().prefixes.iter().map(|p| (g.me().public_key, *p)))
        .collect()
}

/// What a node does with its view: if a live member's block overlaps its own and
/// wins, re-claim a free block (ipam) and announce it.
fn resolve_blocks(s: &mut Sim, range: IpNet) {
    for i in 0..s.nodes().len() {
        let now = s.now();
        let Some(g) = s.gossip_mut(i) else { continue };
        let me = g.me().public_key;
        let Some(&mine) = g.me().prefixes.first() else {
            continue;
        };
        let others: Vec<(PublicKey, IpNet)> = g
            .members()
            .into_iter()
            .filter(|m| m.state.is_live())
            .flat_map(|m| {
                m.record
                    .prefixes
                    .into_iter()
                    .map(move |p| (m.record.public_key, p))
            })
            .collect();
        if ipam::must_reclaim(&me, mine, others.iter().map(|(k, p)| (k, p))) {
            let taken: Vec<IpNet> = others.iter().map(|(_, p)| *p).collect();
            let block = ipam::choose_block(range, 24, &taken, &me).expect("a free block");
            g.update_record(|r| r.prefixes = vec![block], now)
                .expect("valid record");
            s.poke(i);
        }
    }
}

/// (5) Two nodes claim the same block on both sides of a partition; after the heal
/// the loser (higher key) re-claims through ipam and no two live nodes keep one block.
#[test]
fn block_conflict_resolves_after_heal() {
    let n = 10;
    let range = net("10.47.0.0/16");
    let mut s = sim(5, 0.0);
    for _ in 0..n {
        s.add_node(SECRET, vec![]);
    }
    // Each node claims a block from what it knows (nothing yet: spread by its key).
    for i in 0..n {
        let now = s.now();
        let key = s.node(i).key;
        let block = ipam::choose_block(range, 24, &[], &key).expect("block");
        s.gossip_mut(i)
            .expect("running")
            .update_record(|r| r.prefixes = vec![block], now)
            .expect("valid");
        s.poke(i);
    }
    for i in 1..n {
        s.join(i, &[0]);
    }
    assert!(s
        .run_until_true(STEP, Duration::from_secs(10), |s| s.converged(n as u32))
        .is_some());
    for _ in 0..5 {
        resolve_blocks(&mut s, range);
        s.run_until(s.elapsed() + Duration::from_secs(1));
    }
    // Partition, then nodes 2 (side 0) and 3 (side 1) both take the same free block.
    s.partition(Some((0..n as u32).map(|i| i % 2).collect()));
    s.run_until(s.elapsed() + Duration::from_secs(20));
    let taken: Vec<IpNet> = claims(&s).into_iter().map(|(_, p)| p).collect();
    let contested = ipam::choose_block(range, 24, &taken, &s.node(2).key).expect("free");
    for i in [2, 3] {
        let now = s.now();
        s.gossip_mut(i)
            .expect("running")
            .update_record(|r| r.prefixes = vec![contested], now)
            .expect("valid");
        s.poke(i);
    }
    for _ in 0..10 {
        resolve_blocks(&mut s, range);
        s.run_until(s.elapsed() + Duration::from_secs(1));
    }
    assert_eq!(
        claims(&s).iter().filter(|(_, p)| *p == contested).count(),
        2,
        "each side keeps its claim while split"
    );
    s.partition(None);
    let t = s.elapsed();
    let mut settled = None;
    while s.elapsed() < t + Duration::from_secs(60) {
        resolve_blocks(&mut s, range);
        s.run_until(s.elapsed() + Duration::from_secs(1));
        let c = claims(&s);
        let unique = c
            .iter()
            .all(|(k, p)| c.iter().all(|(k2, p2)| k == k2 || !ipam::overlaps(p, p2)));
        if unique && s.converged(n as u32) {
            settled = Some(s.elapsed() - t);
            break;
        }
    }
    let settled = settled.expect("conflict not resolved after the heal");
    let (k2, k3) = (s.node(2).key, s.node(3).key);
    let winner = if k2 < k3 { 2 } else { 3 };
    let loser = 5 - winner;
    let g = |i: usize| {
        s.node(i)
            .gossip
            .as_ref()
            .expect("running")
            .me()
            .prefixes
            .clone()
    };
    assert_eq!(g(winner), vec![contested], "the lower key keeps the block");
    assert_ne!(g(loser), vec![contested], "the higher key moved");
    println!("conflict settled {settled:?} after the heal");
}

/// (6) A node with another secret joins through a member: it never enters anyone's
/// view, learns nothing, and its datagrams are counted as authentication failures.
/// Replayed datagrams are rejected as replays.
#[test]
fn wrong_secret_never_enters_and_replays_are_rejected() {
    let n = 6;
    let mut s = sim(6, 0.0);
    cold_start(&mut s, n);
    let intruder = s.add_node([0x66; 32], vec![net("10.66.0.0/24")]);
    s.join(intruder, &[0, 1]);
    s.tap = Some(1);
    s.run_until(Duration::from_secs(30));
    let ikey = s.node(intruder).key;
    for i in 0..n {
        assert!(state_at(&s, i, &ikey).is_none(), "node {i} let it in");
        assert_eq!(
            s.node(i).gossip.as_ref().expect("running").live_members(),
            n - 1
        );
    }
    let g = s.node(intruder).gossip.as_ref().expect("running");
    assert!(g.members().is_empty(), "the intruder learned members");
    assert_eq!(
        s.node(intruder).errors,
        [0; GossipError::COUNT],
        "nobody ever answered it"
    );
    let rejected =
        s.error_count(GossipError::UnknownKey) + s.error_count(GossipError::Authentication);
    assert!(
        rejected >= 5,
        "join retries counted as authentication failures: {rejected}"
    );
    assert_eq!(
        rejected,
        s.node(intruder).sent_datagrams,
        "every datagram rejected"
    );

    // Replay everything node 1 sent to node 0 in the last 30 s.
    let to0 = s.node(0).addr;
    let from = s.node(1).addr;
    let captured: Vec<Vec<u8>> = s
        .tapped
        .iter()
        .filter(|(to, _)| *to == to0)
        .map(|(_, b)| b.clone())
        .collect();
    assert!(captured.len() > 10);
    let before = s.node(0).errors[GossipError::Replay.index()];
    for d in &captured {
        s.inject(0, from, d.clone());
    }
    s.run_until(s.elapsed() + Duration::from_millis(10));
    let replays = s.node(0).errors[GossipError::Replay.index()] - before;
    assert_eq!(replays, captured.len() as u64);
    s.kill(intruder);
    assert!(s.converged(n as u32));
}

/// The same seed gives the same run: views, traffic and errors are identical.
#[test]
fn runs_are_deterministic() {
    let run = || {
        let mut s = sim(7, 0.05);
        cold_start(&mut s, 12);
        s.run_until(Duration::from_secs(5));
        s.kill(3);
        s.run_until(Duration::from_secs(20));
        let digests: Vec<_> = s
            .nodes()
            .iter()
            .filter_map(|n| n.gossip.as_ref().map(|g| g.view_digest()))
            .collect();
        let sent: Vec<u64> = s.nodes().iter().map(|n| n.sent_bytes).collect();
        (digests, sent, s.errors())
    };
    assert_eq!(run(), run());
}

/// (4b) At the heal of a 3+3 partition, each side hears the other side's verdicts of
/// death about its own members: those are rumors about members it reaches, so it
/// asks them first (they refute) instead of believing them. No node declares anyone
/// dead after the heal, and everyone ends alive in one view.
#[test]
fn partition_heal_causes_no_false_death() {
    let n = 6;
    for seed in [11, 12, 13] {
        let mut s = sim(seed, 0.0);
        cold_start(&mut s, n);
        assert!(s
            .run_until_true(STEP, Duration::from_secs(15), |s| s.converged(n as u32))
            .is_some());
        s.partition(Some(vec![0, 0, 0, 1, 1, 1]));
        let t0 = s.elapsed();
        s.run_until(t0 + Duration::from_secs(60));
        assert_eq!(
            state_at(&s, 0, &s.node(3).key),
            Some(MemberState::Dead),
            "sides split"
        );
        let before: Vec<usize> = (0..n).map(|i| downs(&s, i).len()).collect();
        s.partition(None);
        let t1 = s.elapsed();
        let healed = s.run_until_true(STEP, t1 + Duration::from_secs(60), |s| {
            s.converged(n as u32)
                && (0..n).all(|i| {
                    s.node(i)
                        .gossip
                        .as_ref()
                        .is_some_and(|g| g.live_members() == n - 1)
                })
        });
        assert!(healed.is_some(), "seed {seed}: partition did not heal");
        s.run_until(s.elapsed() + Duration::from_secs(10));
        for (i, b) in before.iter().enumerate() {
            let after = &downs(&s, i)[*b..];
            assert!(
                after.is_empty(),
                "seed {seed}: node {i} declared {} member(s) dead after the heal",
                after.len()
            );
        }
    }
}

/// (4c) Delay, duplication and reordering do not break membership: 12 nodes over
/// links of 1-150 ms, each datagram delayed up to 300 ms more (so they overtake each
/// other), 10 % delivered twice and 2 % lost, converge and run two minutes with no
/// false death; the duplicates are refused as replays, never applied twice.
#[test]
fn delay_duplication_and_reordering_do_not_break_membership() {
    let n = 12;
    let mut s = Sim::new(SimConfig {
        seed: 21,
        loss: 0.02,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(150),
        duplicate: 0.10,
        reorder: Duration::from_millis(300),
        ..SimConfig::default()
    });
    cold_start(&mut s, n);
    let t = s.run_until_true(STEP, Duration::from_secs(30), |s| s.converged(n as u32));
    assert!(t.is_some(), "no convergence");
    s.run_until(Duration::from_secs(120));
    for i in 0..n {
        assert_eq!(downs(&s, i), vec![], "node {i} declared a live node dead");
        let g = s.node(i).gossip.as_ref().expect("running");
        assert_eq!(g.live_members(), n - 1, "node {i}");
    }
    assert!(s.converged(n as u32));
    assert!(
        s.error_count(GossipError::Replay) > 0,
        "duplicates reached the nodes and were refused"
    );
}
