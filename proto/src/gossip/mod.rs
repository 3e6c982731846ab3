//! Authenticated gossip of membership, keys, endpoints and overlay prefixes: how the
//! mesh forms itself from one seed address, with no central store.
//!
//! [`Gossip`] is a sans-IO state machine (no sockets, no clock, no threads): the
//! daemon feeds it datagrams whose first byte is `0x40` and timeouts, and sends what
//! [`Gossip::poll_transmit`] returns from the WireGuard UDP port. The protocol is
//! specified in `PROTOCOL.md` §6:
//!
//! - **Envelope** (`seal`, `replay`): XChaCha20-Poly1305 under a key derived from the
//!   cluster secret, key ids for rotation, each datagram bound to its receiver's key,
//!   per-sender boot epochs (bounded by the clock) and sequence windows against
//!   replay, and a sender MAC under the sender-receiver pair key. Without the secret
//!   a host can neither read nor inject, a captured datagram is accepted at most
//!   once, by the node it was sealed for, and with the secret no host can send in
//!   another member's name.
//! - **Records** (`record`, `codec`, `merge`): each entry is signed by the node it
//!   describes (XEdDSA with its WireGuard key, [`crate::identity`]); receivers verify
//!   before merging, counters are bounded, so nobody writes or advances another
//!   node's record; with a cluster CA ([`crate::cert`]) the record carries the node's
//!   certificate.
//! - **Reflection** (`handle`, `sync`): answers go to members' recorded endpoints; an
//!   unproven source address gets no more bytes than it sent, and a joiner gets the
//!   state only after a cookie round trip (Join, Challenge, Join with cookie).
//! - **Membership** (`member`, `merge`, `table`): one entry per node (record, epoch,
//!   incarnation, state) merged by a total order, so all views converge.
//! - **Failure detection** (`probe`): SWIM with indirect probes, suspicion and
//!   refutation by incarnation numbers.
//! - **Dissemination** (`news`, `transmit`): rumors piggybacked on probes and
//!   digests and pushed to a few random members per round.
//! - **Anti-entropy** (`digest`, `sync`): a tree of bucketed hash sums compared with
//!   a random member twice a second, descending only where views differ and ending in
//!   per-entry summaries, so late joiners and healed partitions converge and a quiet
//!   mesh costs one small datagram per node per round.
//! - **Simulation** ([`sim`]): a deterministic virtual network for tests and the
//!   `gossip_sim` benchmark.
//!
//! # Why not `foca`
//!
//! foca is a good sans-IO SWIM, but weftnet needs things it does not provide: a wire
//! format specified independently of a crate's internal serde layout (PROTOCOL.md must
//! let a second implementation interoperate); state-based anti-entropy for custom data
//! (foca's custom broadcasts are rumors only, so a late joiner would miss records
//! whose rumors ended); identities that are keys with roaming endpoints rather than
//! addresses; and the sender key and epoch inside an authenticated envelope, which
//! foca's identity would duplicate. The SWIM part here is small (`probe.rs`).

mod codec;
mod config;
mod digest;
mod error;
mod handle;
mod handover;
mod member;
mod merge;
mod news;
mod node;
mod probe;
mod proof;
mod record;
mod replay;
mod rng;
mod seal;
pub mod sim;
mod sync;
mod table;
mod transmit;

#[cfg(test)]
mod spec_vectors;
#[cfg(test)]
mod tests;

pub use config::GossipConfig;
pub use error::{ConfigError, GossipError};
pub use handover::{Handover, HandoverError, HANDOVER_LEN, MAX_GENERATION};
pub use member::{Event, Member, MemberState};
pub use node::{Gossip, ViewDigest};
pub use record::{NodeRecord, RecordError, MAX_ENTRY_LEN, MAX_NAME_LEN, MAX_PREFIXES};
pub use seal::{GOSSIP_TYPE, MAX_DATAGRAM};

/// The private key of the node the gossip fuzz targets feed.
#[doc(hidden)]
pub const FUZZ_KEY: [u8; 32] = [1; 32];
/// The one cluster secret of the node the gossip fuzz targets feed.
#[doc(hidden)]
pub const FUZZ_SECRET: [u8; 32] = [7; 32];

/// The node the gossip fuzz targets feed: key [`FUZZ_KEY`], cluster secret
/// [`FUZZ_SECRET`], record `fuzz` at 192.0.2.1:51820, boot epoch `epoch`.
#[doc(hidden)]
pub fn fuzz_node(epoch: u64, now: std::time::Instant) -> Option<Gossip> {
    let identity = crate::keys::PrivateKey::from_bytes(FUZZ_KEY);
    let me = NodeRecord {
        public_key: identity.public_key(),
        name: "fuzz".into(),
        endpoint: std::net::SocketAddr::from(([192, 0, 2, 1], 51820)),
        prefixes: Vec::new(),
        version: 0,
        certificate: None,
        handover: None,
    };
    Gossip::new(
        GossipConfig::default(),
        &[FUZZ_SECRET],
        &identity,
        me,
        epoch,
        1,
        now,
    )
    .ok()
}

/// Feeds arbitrary bytes to a node as its plaintext, sealed with the node's own
/// cluster key (once for the node, once for an unknown receiver), so that fuzzers
/// reach the decoders and handlers behind the AEAD. The sender MAC is set right for
/// the sender the plaintext names (as that sender would), so the handlers behind it
/// are reached too; entry signatures are left as the fuzzer wrote them (the
/// `signed_entry` target covers them). The node's epoch is the largest, so that no
/// sender epoch is refused as being in the future. Must never panic.
#[doc(hidden)]
pub fn fuzz_plaintext(data: &[u8]) {
    let now = std::time::Instant::now();
    let Some(mut g) = fuzz_node(u64::MAX, now) else {
        return;
    };
    let key = crate::keys::PrivateKey::from_bytes(FUZZ_KEY).public_key();
    let cluster = seal::ClusterKey::derive(&FUZZ_SECRET);
    let from = std::net::SocketAddr::from(([192, 0, 2, 2], 51820));
    let mut data = data.to_vec();
    if data.len() >= codec::PLAIN_HEADER_LEN {
        let mut sender = [0u8; 32];
        sender.copy_from_slice(&data[..32]);
        if let Some(pair) = g.pair_key(&crate::keys::PublicKey::from_bytes(sender)) {
            data[codec::MAC_AT..codec::PLAIN_HEADER_LEN].fill(0);
            let mac = codec::sender_mac(&pair, &data);
            data[codec::MAC_AT..codec::PLAIN_HEADER_LEN].copy_from_slice(&mac);
        }
    }
    let data = &data[..];
    let bound = cluster.seal(seal::Receiver::Key(&key), &[0; 24], data);
    let _ = g.handle_datagram(from, &bound, now);
    let unknown = cluster.seal(seal::Receiver::Unknown, &[1; 24], data);
    let _ = g.handle_datagram(from, &unknown, now);
    g.handle_timeout(now + std::time::Duration::from_secs(5));
    while g.poll_transmit().is_some() {}
    while g.poll_event().is_some() {}
    let _ = g.members();
}

/// Decodes arbitrary bytes as one entry and checks its owner signature: a decoded
/// entry re-encodes to the same bytes, and the check never panics. Must never panic.
#[doc(hidden)]
pub fn fuzz_signed_entry(data: &[u8]) {
    if let Ok(e) = codec::decode_entry(data) {
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(out, data, "entries re-encode to the same bytes");
        let _ = e.verify();
        if let Some(body) = &e.record {
            assert_eq!(body.hash(), e.proof.body_hash);
            let _ = body.to_record(e.key, e.version);
        }
    }
}

/// Decodes arbitrary bytes as a key hand-over (PROTOCOL.md §6.13) and as a record body
/// (which may carry one): what decodes re-encodes to the same bytes, and verifying a
/// hand-over and checking it against the retired-key register never panic. Must never
/// panic.
#[doc(hidden)]
pub fn fuzz_handover(data: &[u8]) {
    if let Some(h) = data.get(..HANDOVER_LEN).and_then(Handover::decode) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(
            out,
            data[..HANDOVER_LEN],
            "hand-overs re-encode to the same bytes"
        );
        let name = String::from_utf8_lossy(&data[HANDOVER_LEN..]);
        let _ = h.verify(&h.new, &name);
        let mut retired = handover::Retired::default();
        if retired.check(&h, &name) == Ok(true) {
            retired.insert(&h, &name);
            assert_eq!(retired.check(&h, &name), Ok(false), "known after insert");
        }
    }
    if let Ok(b) = codec::parse_record_body(data) {
        let mut out = Vec::new();
        codec::encode_record_body(
            &mut out,
            &b.name,
            b.endpoint,
            &b.prefixes,
            b.certificate.as_ref(),
            b.handover.as_ref(),
        );
        assert_eq!(out, data, "record bodies re-encode to the same bytes");
    }
}
