//! The search against simulated paths in virtual time.

use super::*;

/// A path that carries inner packets up to `limit` bytes and loses every probe whose
/// sequence number `lose` picks.
struct Path {
    limit: u16,
    sent: Vec<Probe>,
}

impl Path {
    fn new(limit: u16) -> Self {
        Self {
            limit,
            sent: Vec::new(),
        }
    }

    /// Runs `p` from `start` for `secs` virtual seconds, acknowledging what fits
    /// (after a 10 ms round trip) unless `lose(probe)` says it is lost.
    fn run(
        &mut self,
        p: &mut PathMtu,
        start: Instant,
        secs: u64,
        lose: &mut impl FnMut(&Probe) -> bool,
    ) -> Instant {
        let end = start + Duration::from_secs(secs);
        let mut now = start;
        while now < end {
            let mut out = Vec::new();
            p.poll(now, &mut out);
            let rtt = now + Duration::from_millis(10);
            for probe in &out {
                self.sent.push(*probe);
                if probe.size <= self.limit && !lose(probe) {
                    // False once the search settled on an earlier ack of the round.
                    p.on_ack(rtt, probe.id, probe.size);
                }
            }
            let next = p.poll_timeout();
            assert!(next > now || !out.is_empty(), "poll made no progress");
            now = next.max(now + Duration::from_millis(1)).min(end);
        }
        end
    }
}

fn cfg(max: u16) -> Config {
    Config::new(max, OVERHEAD_V4)
}

#[test]
fn jumbo_path_reaches_the_maximum_in_one_round() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    assert_eq!(p.mtu(), 1280);
    let mut path = Path::new(8941);
    path.run(&mut p, t0, 1, &mut |_| false);
    assert_eq!(p.mtu(), 8941);
    assert_eq!(p.known_mtu(), Some(8941));
    assert!(matches!(p.phase(), Phase::Settled { .. }));
}

#[test]
fn ethernet_path_settles_at_1440_within_seconds() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(1440);
    // The common size (1500 - 60) is confirmed by the first round.
    path.run(&mut p, t0, 1, &mut |_| false);
    assert_eq!(p.mtu(), 1440);
    path.run(&mut p, t0 + Duration::from_secs(1), 30, &mut |_| false);
    assert_eq!(p.mtu(), 1440);
    assert!(
        matches!(p.phase(), Phase::Settled { .. }),
        "{:?}",
        p.phase()
    );
    // Nothing larger than the path was ever taken.
    assert!(p.mtu() <= path.limit);
}

#[test]
fn an_odd_path_is_found_within_the_granularity() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(3333);
    path.run(&mut p, t0, 60, &mut |_| false);
    assert!(p.mtu() <= 3333 && p.mtu() + 16 > 3333, "mtu {}", p.mtu());
    assert!(matches!(p.phase(), Phase::Settled { .. }));
}

#[test]
fn random_loss_does_not_lower_the_result() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(8941);
    // Two of every three probes lost: the maximum is still reached, only later.
    let mut n = 0u32;
    path.run(&mut p, t0, 10, &mut |_| {
        n += 1;
        n % 3 != 0
    });
    assert_eq!(p.mtu(), 8941);
}

#[test]
fn a_black_hole_falls_back_to_the_base_and_finds_the_new_path() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(8941);
    let t = path.run(&mut p, t0, 2, &mut |_| false);
    assert_eq!(p.mtu(), 8941);
    // The path shrinks to Ethernet: the next confirmations are lost.
    path.limit = 1440;
    let c = &p.cfg;
    let detect = c.confirm_interval.as_secs() + u64::from(c.max_probes) + 1;
    let t = path.run(&mut p, t, detect, &mut |_| false);
    assert_eq!(p.black_holes(), 1);
    assert_eq!(
        p.mtu(),
        1440,
        "found again in the first round after the fall"
    );
    path.run(&mut p, t, 30, &mut |_| false);
    assert_eq!(p.mtu(), 1440);
    assert_eq!(p.black_holes(), 1);
}

#[test]
fn confirmations_keep_a_good_path_and_raise_finds_a_larger_one() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(1440);
    let t = path.run(&mut p, t0, 60, &mut |_| false);
    assert_eq!(p.mtu(), 1440);
    path.sent.clear();
    let t = path.run(&mut p, t, 120, &mut |_| false);
    let confirms = path.sent.iter().filter(|s| s.size == 1440).count();
    assert!(confirms >= 6, "{confirms} confirmations in 120 s");
    assert!(
        path.sent.iter().all(|s| s.size == 1440),
        "settled: no search"
    );
    // The path grows (a new route); the periodic raise finds it.
    path.limit = 8941;
    path.run(&mut p, t, 600, &mut |_| false);
    assert_eq!(p.mtu(), 8941);
    assert_eq!(p.black_holes(), 0);
}

#[test]
fn stray_and_duplicate_acks_are_ignored() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut out = Vec::new();
    p.poll(t0, &mut out);
    assert!(!out.is_empty());
    assert!(!p.on_ack(t0, 999_999, 8941), "unknown id");
    assert!(!p.on_ack(t0, out[0].id, out[0].size - 1), "wrong size");
    assert_eq!(p.mtu(), 1280);
    assert!(p.on_ack(t0, out[0].id, out[0].size));
    assert!(!p.on_ack(t0, out[0].id, out[0].size), "duplicate");
    assert_eq!(p.mtu(), out[0].size);
}

#[test]
fn a_maximum_at_the_base_only_checks_that_the_peer_answers() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(1280), t0);
    let mut out = Vec::new();
    p.poll(t0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].size, 1280);
    assert_eq!(p.known_mtu(), None);
    assert!(p.on_ack(t0, out[0].id, 1280));
    assert_eq!(p.known_mtu(), Some(1280));
    out.clear();
    p.poll(t0 + Duration::from_secs(3600), &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_peer_that_never_answers_stays_unknown() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(0);
    path.run(&mut p, t0, 30, &mut |_| false);
    assert_eq!(p.known_mtu(), None);
    // Every round asked the base too, and the search gave up upward.
    assert_eq!(path.sent.iter().filter(|s| s.size == 1280).count(), 3);
    assert!(
        matches!(p.phase(), Phase::Settled { .. }),
        "{:?}",
        p.phase()
    );
    // Settled, it costs nothing until the raise asks again.
    let sent = path.sent.len();
    path.run(&mut p, t0 + Duration::from_secs(30), 500, &mut |_| false);
    assert_eq!(path.sent.len(), sent);
}

#[test]
fn a_path_no_larger_than_the_base_is_known() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(cfg(8941), t0);
    let mut path = Path::new(1280);
    path.run(&mut p, t0, 30, &mut |_| false);
    assert_eq!(p.known_mtu(), Some(1280));
}

#[test]
fn ipv6_underlay_uses_its_overhead() {
    let t0 = Instant::now();
    let mut p = PathMtu::new(Config::new(8921, OVERHEAD_V6), t0);
    let mut out = Vec::new();
    p.poll(t0, &mut out);
    let sizes: Vec<u16> = out.iter().map(|p| p.size).collect();
    assert!(sizes.contains(&8921) && sizes.contains(&1420), "{sizes:?}");
}
