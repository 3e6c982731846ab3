//! The gossip plaintext (PROTOCOL.md §6.3-6.4, §6.8-6.9): the sender header, then a
//! sequence of typed messages (probes, joins and challenges, padding, entries as
//! rumors or state, digests of bucket pairs, per-entry summaries), with the bounds on
//! how many of each one datagram may carry.

use super::bytes::{put_endpoint, Reader};
use super::entry::Entry;
use super::Malformed;
use crate::keys::PublicKey;
use std::net::SocketAddr;

/// Length of the plaintext header: sender key, boot epoch, sequence number, sender MAC.
pub(crate) const PLAIN_HEADER_LEN: usize = 32 + 8 + 8 + MAC_LEN;
/// Length of the sender MAC (PROTOCOL.md §6.3).
pub(crate) const MAC_LEN: usize = 16;
/// Where the sender MAC sits in the plaintext.
pub(crate) const MAC_AT: usize = 48;

/// Most entries one datagram may carry.
pub(crate) const MAX_ENTRIES_PER_DATAGRAM: usize = 32;
/// Most messages one datagram may carry.
pub(crate) const MAX_MESSAGES_PER_DATAGRAM: usize = 128;
/// Most bucket pairs one digest message may carry.
pub(crate) const MAX_PAIRS_PER_DIGEST: usize = 80;

pub(crate) const MSG_PADDING: u8 = 0x00;
pub(crate) const MSG_PING: u8 = 0x01;
pub(crate) const MSG_ACK: u8 = 0x02;
pub(crate) const MSG_PING_REQ: u8 = 0x03;
pub(crate) const MSG_JOIN: u8 = 0x04;
pub(crate) const MSG_ENTRY: u8 = 0x05;
pub(crate) const MSG_DIGEST: u8 = 0x06;
pub(crate) const MSG_STATE: u8 = 0x07;
pub(crate) const MSG_SUMMARY: u8 = 0x08;
pub(crate) const MSG_CHALLENGE: u8 = 0x09;
/// Length of an address cookie (PROTOCOL.md §6.9).
pub(crate) const COOKIE_LEN: usize = 16;
/// An address cookie.
pub(crate) type Cookie = [u8; COOKIE_LEN];
/// Most items one summary may carry.
pub(crate) const MAX_SUMMARY_ITEMS: usize = 64;

/// The plaintext header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) sender: PublicKey,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// MAC of the plaintext under the sender-receiver pair key (zero in a first Join).
    pub(crate) mac: [u8; MAC_LEN],
}

/// One bucket summary in a digest (PROTOCOL.md §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair {
    pub(crate) level: u8,
    pub(crate) pull: bool,
    pub(crate) index: u16,
    pub(crate) count: u16,
    pub(crate) hash: u64,
}

/// One message of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Ping {
        probe: u32,
    },
    Ack {
        probe: u32,
    },
    PingReq {
        probe: u32,
        target: PublicKey,
        endpoint: SocketAddr,
    },
    /// A join request; `cookie` echoes a [`Message::Challenge`] to prove the source
    /// address.
    Join {
        cookie: Option<Cookie>,
    },
    /// The answer to a Join without a valid cookie: repeat it with this cookie.
    Challenge {
        cookie: Cookie,
    },
    /// `len` zero bytes (type byte included) up to the end of the plaintext.
    Padding {
        len: usize,
    },
    /// An entry; `rumor` entries (type 0x05) are passed on when they were news,
    /// state transfers (type 0x07: anti-entropy, join replies) are not.
    Entry {
        entry: Entry,
        rumor: bool,
    },
    Digest(Vec<Pair>),
    /// The entries of one bucket as (first 8 key bytes, entry hash) items.
    Summary(Summary),
}

/// Per-entry summary of one small bucket (PROTOCOL.md §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) level: u8,
    pub(crate) index: u16,
    /// Whether the receiver should answer with its own summary.
    pub(crate) reply: bool,
    pub(crate) items: Vec<([u8; 8], u64)>,
}

/// The first 8 bytes of a key, as summaries carry it.
pub(crate) fn key8(key: &PublicKey) -> [u8; 8] {
    let mut k = [0u8; 8];
    k.copy_from_slice(&key.as_bytes()[..8]);
    k
}

fn read_bucket(r: &mut Reader<'_>) -> Result<(u8, bool, u16), Malformed> {
    let tag = r.u8()?;
    let level = tag & 0x7f;
    if !matches!(level, 0 | 5 | 10) {
        return Err(Malformed);
    }
    let index = r.u16()?;
    if u32::from(index) >= 1u32 << level {
        return Err(Malformed);
    }
    Ok((level, tag & 0x80 != 0, index))
}

impl Header {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.mac);
    }
}

impl Pair {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.level | if self.pull { 0x80 } else { 0 });
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let (level, pull, index) = read_bucket(r)?;
        Ok(Self {
            level,
            pull,
            index,
            count: r.u16()?,
            hash: r.u64()?,
        })
    }
}

impl Message {
    /// Appends the message (type byte and body).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ping { probe } => {
                out.push(MSG_PING);
                out.extend_from_slice(&probe.to_le_bytes());
            }
            Self::Ack { probe } => {
                out.push(MSG_ACK);
                out.extend_from_slice(&probe.to_le_bytes());
            }
            Self::PingReq {
                probe,
                target,
                endpoint,
            } => {
                out.push(MSG_PING_REQ);
                out.extend_from_slice(&probe.to_le_bytes());
                out.extend_from_slice(target.as_bytes());
                put_endpoint(out, *endpoint);
            }
            Self::Join { cookie } => {
                out.push(MSG_JOIN);
                match cookie {
                    Some(c) => {
                        out.push(COOKIE_LEN as u8);
                        out.extend_from_slice(c);
                    }
                    None => out.push(0),
                }
            }
            Self::Challenge { cookie } => {
                out.push(MSG_CHALLENGE);
                out.extend_from_slice(cookie);
            }
            Self::Padding { len } => out.resize(out.len() + len, MSG_PADDING),
            Self::Entry { entry, rumor } => {
                out.push(if *rumor { MSG_ENTRY } else { MSG_STATE });
                entry.encode(out);
            }
            Self::Digest(pairs) => {
                out.push(MSG_DIGEST);
                let n = pairs.len().min(MAX_PAIRS_PER_DIGEST);
                out.push(n as u8);
                for p in &pairs[..n] {
                    p.encode(out);
                }
            }
            Self::Summary(sm) => {
                out.push(MSG_SUMMARY);
                out.push(sm.level | if sm.reply { 0x80 } else { 0 });
                out.extend_from_slice(&sm.index.to_le_bytes());
                let n = sm.items.len().min(MAX_SUMMARY_ITEMS);
                out.push(n as u8);
                for (k, h) in &sm.items[..n] {
                    out.extend_from_slice(k);
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
    }
}

/// Splits a plaintext into its header and messages.
pub(crate) fn decode_plaintext(buf: &[u8]) -> Result<(Header, Vec<Message>), Malformed> {
    let mut r = Reader { buf };
    let header = Header {
        sender: r.key()?,
        epoch: r.u64()?,
        seq: r.u64()?,
        mac: r.array()?,
    };
    let mut messages = Vec::new();
    let mut entries = 0;
    while !r.buf.is_empty() {
        if messages.len() == MAX_MESSAGES_PER_DATAGRAM {
            return Err(Malformed);
        }
        let m = match r.u8()? {
            MSG_PING => Message::Ping { probe: r.u32()? },
            MSG_ACK => Message::Ack { probe: r.u32()? },
            MSG_PING_REQ => Message::PingReq {
                probe: r.u32()?,
                target: r.key()?,
                endpoint: r.endpoint()?,
            },
            MSG_JOIN => Message::Join {
                cookie: match usize::from(r.u8()?) {
                    0 => None,
                    COOKIE_LEN => Some(r.array()?),
                    _ => return Err(Malformed),
                },
            },
            MSG_CHALLENGE => Message::Challenge { cookie: r.array()? },
            MSG_PADDING => {
                // The rest of the plaintext, all zero.
                let len = r.buf.len() + 1;
                if r.take(len - 1)?.iter().any(|&b| b != 0) {
                    return Err(Malformed);
                }
                Message::Padding { len }
            }
            t @ (MSG_ENTRY | MSG_STATE) => {
                entries += 1;
                if entries > MAX_ENTRIES_PER_DATAGRAM {
                    return Err(Malformed);
                }
                Message::Entry {
                    entry: Entry::decode(&mut r)?,
                    rumor: t == MSG_ENTRY,
                }
            }
            MSG_DIGEST => {
                let n = usize::from(r.u8()?);
                if n > MAX_PAIRS_PER_DIGEST {
                    return Err(Malformed);
                }
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push(Pair::decode(&mut r)?);
                }
                Message::Digest(pairs)
            }
            MSG_SUMMARY => {
                let (level, reply, index) = read_bucket(&mut r)?;
                let n = usize::from(r.u8()?);
                if n > MAX_SUMMARY_ITEMS {
                    return Err(Malformed);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.array::<8>()?, r.u64()?));
                }
                Message::Summary(Summary {
                    level,
                    index,
                    reply,
                    items,
                })
            }
            _ => return Err(Malformed),
        };
        messages.push(m);
    }
    Ok((header, messages))
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::entry;
    use super::*;
    use crate::gossip::member::Rank;
    use proptest::prelude::*;

    fn plaintext(messages: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        Header {
            sender: PublicKey::from_bytes([1; 32]),
            epoch: 9,
            seq: 10,
            mac: [0xaa; MAC_LEN],
        }
        .encode(&mut out);
        for m in messages {
            m.encode(&mut out);
        }
        out
    }

    #[test]
    fn round_trip_every_message() {
        let messages = vec![
            Message::Ping { probe: 1 },
            Message::Ack { probe: 2 },
            Message::PingReq {
                probe: 3,
                target: PublicKey::from_bytes([4; 32]),
                endpoint: "192.0.2.4:51820".parse().expect("addr"),
            },
            Message::Join { cookie: None },
            Message::Join {
                cookie: Some([0xc0; COOKIE_LEN]),
            },
            Message::Challenge {
                cookie: [0x5e; COOKIE_LEN],
            },
            Message::Entry {
                entry: entry(Rank::Suspect),
                rumor: true,
            },
            Message::Entry {
                entry: entry(Rank::Forgotten),
                rumor: false,
            },
            Message::Summary(Summary {
                level: 10,
                index: 77,
                reply: true,
                items: vec![([1; 8], 2), ([3; 8], u64::MAX)],
            }),
            Message::Digest(vec![
                Pair {
                    level: 0,
                    pull: false,
                    index: 0,
                    count: 5,
                    hash: 99,
                },
                Pair {
                    level: 10,
                    pull: true,
                    index: 1023,
                    count: 0,
                    hash: 0,
                },
            ]),
            Message::Padding { len: 20 },
        ];
        let bytes = plaintext(&messages);
        let (h, got) = decode_plaintext(&bytes).expect("decodes");
        assert_eq!((h.epoch, h.seq), (9, 10));
        assert_eq!(got, messages);
    }

    #[test]
    fn rejects_bad_fields() {
        let good = plaintext(&[Message::Entry {
            entry: entry(Rank::Alive),
            rumor: true,
        }]);
        assert!(decode_plaintext(&good).is_ok());
        let at = PLAIN_HEADER_LEN + 1 + 32 + 16; // rank byte
        let mut bad = good.clone();
        bad[at] = 5;
        assert_eq!(decode_plaintext(&bad), Err(Malformed));
        let mut name = good.clone();
        name[at + 10] = 65; // name length
        assert_eq!(decode_plaintext(&name), Err(Malformed));
        let mut utf8 = good.clone();
        utf8[at + 11] = 0xff;
        assert_eq!(decode_plaintext(&utf8), Err(Malformed));
        // counters beyond 2^48, a leave signed as alive
        let mut inc = good.clone();
        inc[at - 1] = 1; // top byte of the incarnation
        assert_eq!(decode_plaintext(&inc), Err(Malformed));
        let mut left = good.clone();
        left[at] = Rank::Left as u8;
        assert_eq!(decode_plaintext(&left), Err(Malformed));
        let mut utf8 = good.clone();
        utf8[at + 11] = 0xff;
        assert_eq!(decode_plaintext(&utf8), Err(Malformed));
        assert_eq!(decode_plaintext(&good[..good.len() - 1]), Err(Malformed));
        let mut trailing = good.clone();
        trailing.push(0x77);
        assert_eq!(decode_plaintext(&trailing), Err(Malformed));
        // host bits set in a prefix
        let mut host = good;
        // the v6 prefix, certificate length and signature are the last 18 + 2 + 64
        // bytes, before them the v4 length byte: 10.47.7.0 -> 10.47.7.1
        let last = host.len() - 64 - 2 - 18 - 2;
        assert_eq!(host[last], 0);
        host[last] = 1;
        assert_eq!(decode_plaintext(&host), Err(Malformed));
        // digest levels must be 0, 5 or 10 with an index below 2^level
        let mut d = plaintext(&[Message::Digest(vec![Pair {
            level: 5,
            pull: false,
            index: 31,
            count: 0,
            hash: 0,
        }])]);
        assert!(decode_plaintext(&d).is_ok());
        d[PLAIN_HEADER_LEN + 3] = 32;
        assert_eq!(decode_plaintext(&d), Err(Malformed));
        // too many entries
        let many: Vec<_> = (0..=MAX_ENTRIES_PER_DATAGRAM)
            .map(|_| Message::Entry {
                entry: entry(Rank::Forgotten),
                rumor: false,
            })
            .collect();
        assert_eq!(decode_plaintext(&plaintext(&many)), Err(Malformed));
        // a join cookie is absent or 16 bytes; padding is zero to the end
        let mut join = plaintext(&[Message::Join { cookie: None }]);
        join[PLAIN_HEADER_LEN + 1] = 15;
        join.extend_from_slice(&[0; 15]);
        assert_eq!(decode_plaintext(&join), Err(Malformed));
        let mut pad = plaintext(&[Message::Ping { probe: 1 }, Message::Padding { len: 9 }]);
        assert!(decode_plaintext(&pad).is_ok());
        let last = pad.len() - 1;
        pad[last] = 1;
        assert_eq!(decode_plaintext(&pad), Err(Malformed));
        let challenge = plaintext(&[Message::Challenge { cookie: [1; 16] }]);
        assert_eq!(
            decode_plaintext(&challenge[..challenge.len() - 1]),
            Err(Malformed)
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = decode_plaintext(&bytes);
        }

        #[test]
        fn mutated_valid_plaintext_never_panics(
            at in 0usize..400, byte in any::<u8>(), cut in 0usize..400
        ) {
            let mut p = plaintext(&[
                Message::Entry { entry: entry(Rank::Alive), rumor: true },
                Message::Ping { probe: 1 },
                Message::Entry { entry: entry(Rank::Forgotten), rumor: false },
            ]);
            if at < p.len() { p[at] = byte; }
            p.truncate(p.len().saturating_sub(cut % 40));
            let _ = decode_plaintext(&p);
        }
    }
}
