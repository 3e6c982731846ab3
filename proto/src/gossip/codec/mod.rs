//! Byte layouts of the gossip plaintext (PROTOCOL.md §6.3-6.5), one concept per module:
//! - `message`: the sender header and the messages of a datagram (probes, joins,
//!   challenges, padding, digests, summaries, entries as rumors or state);
//! - `entry`: a membership entry with its owner's signature (the wire form of
//!   [`Proof`]);
//! - `body`: the record part of an entry (name, endpoint, prefixes, certificate,
//!   hand-over);
//! - `bytes`: the bounded reader and the address writers they share.
//!
//! All integers are little-endian; addresses are in network order. Decoders never
//! panic and bound every count an authenticated peer controls. Signatures and sender
//! MACs (`proof`) are checked by the caller, not while decoding.

mod body;
mod bytes;
mod entry;
mod message;

pub(crate) use super::proof::{
    body_hash, check_sender_mac, rank_fits, sender_mac, signed_message, Proof,
};
pub(crate) use body::{encode_record_body, parse_record_body, Body};
pub(crate) use bytes::put_endpoint;
pub(crate) use entry::{decode_entry, encode_entry, record_entry_len, Entry};
pub(crate) use message::{
    decode_plaintext, key8, Cookie, Header, Message, Pair, Summary, COOKIE_LEN, MAC_AT, MAC_LEN,
    MAX_ENTRIES_PER_DATAGRAM, MAX_PAIRS_PER_DIGEST, MAX_SUMMARY_ITEMS, MSG_ENTRY, MSG_STATE,
    PLAIN_HEADER_LEN,
};

/// The decoder's only error: the daemon counts it as `gossip_malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;
