//! [`Gossip`]: one node's membership state machine and its public API. Time comes in
//! as `now` on every call; datagrams, events and the next wake-up are pulled with the
//! `poll_*` methods. The protocol steps live in sibling modules: `handle` (incoming
//! datagrams), `merge` (applying entries), `probe` (SWIM), `sync` (anti-entropy),
//! `transmit` (building and sealing datagrams).

use super::codec::{self, Proof};
use super::config::GossipConfig;
use super::error::ConfigError;
use super::handover::Retired;
use super::member::{Claim, Event, Member, Rank};
use super::news::News;
use super::probe::{Probe, Relay};
use super::record::{NodeRecord, RecordBody, RecordError};
use super::replay::ReplayWindow;
use super::rng::Rng;
use super::seal::Keyring;
use super::sync::TokenBucket;
use super::table::Table;
use crate::identity::Signer;
use crate::keys::{PrivateKey, PublicKey};
use blake2::digest::Digest as _;
use blake2::Blake2s256;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most seed addresses remembered.
const MAX_SEEDS: usize = 64;
/// How far (in milliseconds) a sender's boot epoch may be ahead of this node's
/// wall-clock epoch (PROTOCOL.md §6.3): one hour of clock skew.
pub(crate) const MAX_EPOCH_AHEAD_MS: u64 = 3_600_000;
/// Most pair keys cached (one X25519 operation each to recompute).
const MAX_PAIR_KEYS: usize = 4096;
/// Lifetime of one cookie key period; a cookie is accepted in its period and the next.
pub(crate) const COOKIE_PERIOD: Duration = Duration::from_secs(120);

/// A summary of a node's whole view (every entry's key, epoch, incarnation, state and
/// record version): two nodes with equal digests hold the same view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewDigest {
    /// Entries, this node and tombstones included.
    pub entries: u32,
    /// Wrapping sum of the entry hashes (PROTOCOL.md §6.8).
    pub hash: u64,
}

/// One node's gossip state machine (SWIM membership with suspicion, rumor
/// dissemination and digest-based anti-entropy, inside an authenticated envelope).
///
/// It performs no I/O and reads no clock: feed it datagrams and timeouts, then drain
/// [`Gossip::poll_transmit`] and [`Gossip::poll_event`] and sleep until
/// [`Gossip::poll_timeout`].
#[derive(Debug)]
pub struct Gossip {
    pub(super) config: GossipConfig,
    pub(super) keys: Keyring,
    /// Signs this node's entries and derives pair keys (its WireGuard private key).
    pub(super) signer: Signer,
    /// Pair keys with other nodes, for sender MACs (PROTOCOL.md §6.3).
    pub(super) pair_keys: BTreeMap<PublicKey, Option<[u8; 32]>>,
    pub(super) me: NodeRecord,
    pub(super) my_claim: Claim,
    pub(super) boot_epoch: u64,
    /// When this node was created: `boot_epoch` in wall-clock terms.
    pub(super) created: Instant,
    /// Local secret under which address cookies are MACed (never sent).
    pub(super) cookie_secret: CookieSecret,
    /// While a datagram from an unproven address is handled: that address and the
    /// bytes that may still be sent to it.
    pub(super) limit: Option<(SocketAddr, usize)>,
    pub(super) seq: u64,
    pub(super) nonce_prefix: [u8; 16],
    pub(super) rng: Rng,
    pub(super) table: Table,
    pub(super) news: News,
    pub(super) transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(super) events: VecDeque<Event>,
    pub(super) strangers: BTreeMap<PublicKey, (ReplayWindow, Instant)>,
    pub(super) probe: Option<Probe>,
    pub(super) probe_order: Vec<PublicKey>,
    pub(super) probe_pos: usize,
    pub(super) relays: VecDeque<Relay>,
    pub(super) seeds: Vec<SocketAddr>,
    pub(super) sync_tokens: TokenBucket,
    pub(super) scratch: Vec<u8>,
    pub(super) left: bool,
    /// Keys retired by rotations (this node's own old keys included).
    pub(super) retired: Retired,
    /// The latest `now` passed in (never goes backwards).
    pub(super) now: Instant,
    pub(super) next_probe: Instant,
    pub(super) next_gossip: Instant,
    pub(super) next_sync: Instant,
    pub(super) next_reconnect: Instant,
    pub(super) next_maintenance: Instant,
    pub(super) next_join: Option<Instant>,
    pub(super) join_backoff: Duration,
}

/// The local cookie secret; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct CookieSecret(pub(crate) [u8; 32]);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(<redacted>)")
    }
}

/// This node's signature of its own statement (PROTOCOL.md §6.5).
pub(super) fn sign(
    signer: &Signer,
    key: &PublicKey,
    claim: Claim,
    version: u64,
    body: &RecordBody,
) -> Proof {
    let signed = if claim.rank == Rank::Left {
        Rank::Left
    } else {
        Rank::Alive
    };
    let body_hash = body.hash();
    let m = codec::signed_message(
        key,
        claim.epoch,
        claim.incarnation,
        signed,
        version,
        &body_hash,
    );
    Proof {
        signed,
        body_hash,
        signature: signer.sign(&m),
    }
}

/// `now + d`, saturating instead of panicking far in the future.
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

impl Gossip {
    /// A node announcing `me`.
    ///
    /// - `secrets`: cluster secrets; the first seals, all are accepted (rotation).
    /// - `identity`: this node's WireGuard private key (its public key is
    ///   `me.public_key`); it signs the node's entries and authenticates its datagrams.
    /// - `boot_epoch`: MUST grow across restarts of the same key (wall-clock
    ///   milliseconds at start, or a persisted counter); peers reject datagrams from an
    ///   older epoch as replays.
    /// - `rng_seed`: seeds the protocol's randomness; take it from the OS RNG in
    ///   production, fix it in tests.
    pub fn new(
        config: GossipConfig,
        secrets: &[[u8; 32]],
        identity: &PrivateKey,
        mut me: NodeRecord,
        boot_epoch: u64,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let keys = Keyring::new(secrets).ok_or(ConfigError::NoSecret)?;
        let signer = Signer::new(identity);
        if signer.public_key() != me.public_key {
            return Err(ConfigError::KeyMismatch);
        }
        me.normalize();
        me.validate()?;
        let mut retired = Retired::default();
        if let Some(h) = &me.handover {
            h.verify(&me.public_key, &me.name)
                .map_err(ConfigError::Handover)?;
            retired.insert(h, &me.name);
        }
        if let Some(ca) = &config.ca {
            let secs = boot_epoch / 1000;
            match &me.certificate {
                None if config.ca_optional => {}
                None => {
                    return Err(ConfigError::Certificate(
                        "none given, but the mesh has a cluster CA".into(),
                    ))
                }
                Some(c) => c
                    .verify_for(ca, secs, &me.public_key, &me.name)
                    .map_err(|e| ConfigError::Certificate(e.to_string()))?,
            }
        }
        let mut h = Blake2s256::new();
        h.update(b"weftnet gossip v1 nonce");
        h.update(me.public_key.as_bytes());
        h.update(boot_epoch.to_le_bytes());
        h.update(rng_seed.to_le_bytes());
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix.copy_from_slice(&h.finalize()[..16]);
        let mut h = Blake2s256::new();
        h.update(b"weftnet gossip v2 cookie secret");
        h.update(me.public_key.as_bytes());
        h.update(boot_epoch.to_le_bytes());
        h.update(rng_seed.to_le_bytes());
        h.update(secrets[0]);
        let cookie_secret = CookieSecret(h.finalize().into());
        let my_claim = Claim {
            epoch: boot_epoch,
            incarnation: 0,
            rank: Rank::Alive,
        };
        let mut table = Table::new(me.public_key);
        let body = RecordBody::from_record(&me);
        let proof = sign(&signer, &me.public_key, my_claim, me.version, &body);
        table.set(
            me.public_key,
            my_claim,
            me.version,
            Some((proof, Some(body))),
            None,
        );
        let mut rng = Rng::new(rng_seed);
        let next_probe = later(now, rng.jitter(config.probe_interval));
        let next_sync = later(now, rng.jitter(config.sync_interval));
        let next_reconnect = later(
            now,
            config.reconnect_interval + rng.jitter(config.reconnect_interval),
        );
        Ok(Self {
            news: News::new(config.max_news),
            sync_tokens: TokenBucket::new(config.sync_rate, 2 * config.sync_burst as u32, now),
            join_backoff: config.join_interval,
            keys,
            signer,
            pair_keys: BTreeMap::new(),
            me,
            my_claim,
            boot_epoch,
            created: now,
            cookie_secret,
            limit: None,
            seq: 0,
            nonce_prefix,
            rng,
            table,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            strangers: BTreeMap::new(),
            probe: None,
            probe_order: Vec::new(),
            probe_pos: 0,
            relays: VecDeque::new(),
            seeds: Vec::new(),
            scratch: Vec::new(),
            left: false,
            retired,
            now,
            next_probe,
            next_gossip: now,
            next_sync,
            next_reconnect,
            next_maintenance: later(now, Duration::from_secs(1)),
            next_join: None,
            config,
        })
    }

    /// Contacts the seeds (addresses only; their keys are learned from the replies)
    /// and keeps retrying, with backoff, while no member is known.
    pub fn join(&mut self, seeds: &[SocketAddr], now: Instant) {
        let now = self.advance(now);
        if self.left {
            return;
        }
        self.seeds = seeds.iter().copied().take(MAX_SEEDS).collect();
        self.join_backoff = self.config.join_interval;
        self.send_join();
        self.next_join = Some(later(now, self.join_backoff));
    }

    /// Changes this node's record (endpoint, prefixes, name), bumps its version and
    /// spreads it. The key cannot change. A closure that changes nothing is a no-op.
    pub fn update_record(
        &mut self,
        f: impl FnOnce(&mut NodeRecord),
        now: Instant,
    ) -> Result<(), RecordError> {
        self.advance(now);
        let mut next = self.me.clone();
        f(&mut next);
        if next.public_key != self.me.public_key {
            return Err(RecordError::KeyChanged);
        }
        next.normalize();
        next.validate()?;
        next.version = self.me.version;
        if next == self.me {
            return Ok(());
        }
        next.version = self.me.version.saturating_add(1);
        self.me = next;
        self.announce_self();
        Ok(())
    }

    /// Leaves the mesh gracefully: the `Left` state goes out at once to a few members
    /// and by rumor to the rest. Afterwards the node only drains its rumors: keep
    /// driving it until [`Gossip::poll_timeout`] returns `None` (about a second).
    pub fn leave(&mut self, now: Instant) {
        self.advance(now);
        if self.left {
            return;
        }
        self.my_claim.rank = Rank::Left;
        self.announce_self();
        self.left = true;
        self.probe = None;
        self.next_join = None;
        let n = self.table.live().len().min(2 * self.config.gossip_fanout);
        for key in self.random_live(n, None) {
            self.send_rumors_to(&key);
        }
    }

    /// Removes a node's record mesh-wide (a tombstone is spread and kept for
    /// `tombstone_ttl`). Meant for dead or departed nodes: a live node refutes it and
    /// comes back.
    pub fn forget(&mut self, public_key: &PublicKey, now: Instant) {
        let now = self.advance(now);
        if *public_key == self.me.public_key || self.left {
            return;
        }
        if let Some(slot) = self.table.get(public_key) {
            if slot.claim.rank != Rank::Forgotten {
                let claim = Claim {
                    rank: Rank::Forgotten,
                    ..slot.claim
                };
                let version = slot.version;
                let deadline = later(now, self.config.tombstone_ttl);
                self.table
                    .set(*public_key, claim, version, None, Some(deadline));
                self.events.push_back(Event::Forgotten(*public_key));
                self.news.push(*public_key);
            }
        }
    }

    /// Everyone known except this node, in any state (tombstones excluded), ordered
    /// by key.
    pub fn members(&self) -> Vec<Member> {
        self.table
            .iter()
            .filter(|(k, _)| **k != self.me.public_key)
            .filter_map(|(k, s)| Self::member_of(k, s))
            .collect()
    }

    /// One member, if known (not this node, not a tombstone).
    pub fn member(&self, public_key: &PublicKey) -> Option<Member> {
        if *public_key == self.me.public_key {
            return None;
        }
        self.table
            .get(public_key)
            .and_then(|s| Self::member_of(public_key, s))
    }

    fn member_of(key: &PublicKey, s: &super::table::Slot) -> Option<Member> {
        Some(Member {
            state: s.claim.rank.state()?,
            record: s.record.as_ref()?.to_record(*key, s.version),
            epoch: s.claim.epoch,
            incarnation: s.claim.incarnation,
        })
    }

    /// This node's current record.
    pub fn me(&self) -> &NodeRecord {
        &self.me
    }

    /// Number of live (alive or suspect) members, this node excluded.
    pub fn live_members(&self) -> usize {
        self.table.live().len()
    }

    /// A summary of the whole view, equal on nodes that agree on everything.
    pub fn view_digest(&self) -> ViewDigest {
        let (entries, hash) = self.table.tree().get(0, 0);
        ViewDigest { entries, hash }
    }

    /// True after [`Gossip::leave`].
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The next datagram to send: destination and bytes (starting with 0x40).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Gossip::handle_timeout`] must be called next (may be in the past: call
    /// it at once). `None` only after a leave, once the last rumor went out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let gossip = (!self.news.is_empty()).then_some(self.next_gossip);
        if self.left {
            return gossip;
        }
        let indirect = self
            .probe
            .as_ref()
            .filter(|p| !p.acked && !p.indirect_sent)
            .map(|p| p.indirect_at);
        [
            Some(self.next_probe),
            Some(self.next_sync),
            Some(self.next_reconnect),
            Some(self.next_maintenance),
            gossip,
            indirect,
            self.next_join,
            self.table.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.left {
            if self.table.live().is_empty() {
                self.news.clear();
            }
            if !self.news.is_empty() && now >= self.next_gossip {
                self.gossip_round();
                self.next_gossip = later(now, self.config.gossip_interval);
            }
            return;
        }
        self.probe_timers(now);
        while let Some(key) = self.table.pop_due(now) {
            self.expire(&key);
        }
        if now >= self.next_gossip {
            if !self.news.is_empty() {
                self.gossip_round();
            }
            self.next_gossip = later(now, self.config.gossip_interval);
        }
        if now >= self.next_sync {
            self.start_sync();
            self.next_sync = later(now, self.config.sync_interval);
        }
        if now >= self.next_reconnect {
            self.reconnect();
            self.next_reconnect = later(now, self.config.reconnect_interval);
        }
        if self.next_join.is_some_and(|t| now >= t) {
            if self.table.live().is_empty() && !self.seeds.is_empty() {
                self.send_join();
                self.join_backoff = (self.join_backoff * 2).min(self.config.join_interval * 16);
                let wait = self.join_backoff / 2 + self.rng.jitter(self.join_backoff / 2);
                self.next_join = Some(later(now, wait));
            } else {
                self.next_join = None;
            }
        }
        if now >= self.next_maintenance {
            self.maintenance(now);
            self.next_maintenance = later(now, Duration::from_secs(1));
        }
    }

    /// This node's wall-clock epoch now: the boot epoch plus the time since creation.
    pub(super) fn current_epoch(&self) -> u64 {
        let ms = self.now.saturating_duration_since(self.created).as_millis();
        self.boot_epoch
            .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Records the caller's clock; a `now` older than one seen before is ignored.
    pub(super) fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Housekeeping once a second: members whose certificate expired, expired relays,
    /// stale strangers, and rejoining the seeds when every member is gone.
    fn maintenance(&mut self, now: Instant) {
        self.expire_certificates();
        while self.relays.front().is_some_and(|r| r.expires <= now) {
            self.relays.pop_front();
        }
        if let Some(stale) = now.checked_sub(Duration::from_secs(600)) {
            self.strangers.retain(|_, (_, seen)| *seen > stale);
        }
        if self.table.live().is_empty() && !self.seeds.is_empty() && self.next_join.is_none() {
            self.join_backoff = self.config.join_interval;
            self.next_join = Some(now);
        }
    }

    /// Re-signs and re-announces this node's entry after a change to its record or
    /// claim.
    pub(super) fn announce_self(&mut self) {
        let key = self.me.public_key;
        let body = RecordBody::from_record(&self.me);
        let proof = sign(&self.signer, &key, self.my_claim, self.me.version, &body);
        self.table.set(
            key,
            self.my_claim,
            self.me.version,
            Some((proof, Some(body))),
            None,
        );
        self.news.push(key);
    }

    /// The key this node shares with `peer` (cached); `None` for a low-order key.
    pub(super) fn pair_key(&mut self, peer: &PublicKey) -> Option<[u8; 32]> {
        if let Some(k) = self.pair_keys.get(peer) {
            return *k;
        }
        if self.pair_keys.len() >= MAX_PAIR_KEYS {
            self.pair_keys.clear();
        }
        let k = self.signer.pair_key(peer);
        self.pair_keys.insert(*peer, k);
        k
    }

    /// Wall-clock seconds now, for certificate validity.
    pub(super) fn now_secs(&self) -> u64 {
        self.current_epoch() / 1000
    }

    /// Whole seconds a tombstone has left (0 for other slots).
    pub(super) fn remaining_secs(&self, s: &super::table::Slot) -> u32 {
        match (s.claim.rank, s.deadline) {
            (Rank::Forgotten, Some(d)) => {
                u32::try_from(d.saturating_duration_since(self.now).as_secs()).unwrap_or(u32::MAX)
            }
            _ => 0,
        }
    }

    /// Up to `n` distinct random live members, `except` excluded.
    pub(super) fn random_live(&mut self, n: usize, except: Option<&PublicKey>) -> Vec<PublicKey> {
        let live = self.table.live();
        let mut out: Vec<PublicKey> = Vec::with_capacity(n);
        if live.len() <= n + 1 {
            out.extend(live.iter().filter(|k| Some(*k) != except));
            self.rng.shuffle(&mut out);
            out.truncate(n);
            return out;
        }
        let mut tries = 0;
        while out.len() < n && tries < 4 * n + 8 {
            tries += 1;
            let k = live[self.rng.below(live.len())];
            if Some(&k) != except && !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// The endpoint of a known member.
    pub(super) fn endpoint_of(&self, key: &PublicKey) -> Option<SocketAddr> {
        self.table
            .get(key)?
            .record
            .as_ref()
            .map(RecordBody::endpoint)
    }

    /// Where datagrams of `key` are answered: its recorded endpoint, or for a
    /// tombstone the endpoint of the record it replaced. `None` for strangers.
    pub(super) fn reply_endpoint(&self, key: &PublicKey) -> Option<SocketAddr> {
        let slot = self.table.get(key)?;
        slot.record
            .as_ref()
            .map(RecordBody::endpoint)
            .or(slot.last_endpoint)
    }
}
