//! One WireGuard session with one peer: a thin wrapper around boringtun's
//! `noise::Tunn` that translates its results into weftnet's types.
//!
//! `Tunn` reads the monotonic clock itself for its timers (rekey, keepalive, handshake
//! retry); this module is the only place in the protocol core where that happens. The
//! caller drives [`Session::tick`] periodically (every 100-250 ms), as the WireGuard
//! timer rules assume.

use crate::keys::{PrivateKey, PublicKey};
use crate::router::PeerId;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Extra bytes a data message adds to a packet (header and tag), not counting padding.
pub const OVERHEAD: usize = 32;

/// Handshake messages a node accepts per second before it demands cookies.
pub const HANDSHAKES_PER_SECOND: u64 = 100;

/// What the caller must do with the result of a session call.
#[derive(Debug)]
pub enum Output<'a> {
    /// Nothing to send.
    Done,
    /// Send these bytes to the peer's endpoint (or to the datagram's source).
    Network(&'a [u8]),
    /// Deliver this decrypted IP packet (after the router's source check).
    Tunnel(&'a [u8]),
    /// Under load, the answer to a handshake message whose sender is not verified
    /// yet: send it back to the datagram's source, but learn nothing from that
    /// source (it proves nothing) and send nothing else there.
    CookieReply(&'a [u8]),
    /// The input was rejected.
    Error(SessionError),
}

/// Why a session rejected input. Names are stable for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// A MAC, AEAD tag or key did not verify: forged or corrupted.
    Authentication,
    /// A replayed or too old counter or timestamp.
    Replay,
    /// No session for that index (e.g. expired, or not ours).
    NoSession,
    /// The handshake was not completed within the WireGuard time limits.
    Expired,
    /// Handshakes are being rate limited and this one carried no valid cookie.
    UnderLoad,
    /// Any other malformed input.
    Malformed,
}

impl SessionError {
    /// Every error, for counters.
    pub const ALL: [SessionError; 6] = [
        Self::Authentication,
        Self::Replay,
        Self::NoSession,
        Self::Expired,
        Self::UnderLoad,
        Self::Malformed,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Replay => "replay",
            Self::NoSession => "no_session",
            Self::Expired => "expired",
            Self::UnderLoad => "under_load",
            Self::Malformed => "malformed_wireguard",
        }
    }

    /// Position in [`SessionError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<WireGuardError> for SessionError {
    fn from(e: WireGuardError) -> Self {
        use WireGuardError as W;
        match e {
            W::InvalidMac | W::InvalidAeadTag | W::WrongKey => Self::Authentication,
            W::InvalidCounter | W::DuplicateCounter | W::WrongTai64nTimestamp => Self::Replay,
            W::NoCurrentSession | W::WrongIndex => Self::NoSession,
            W::ConnectionExpired => Self::Expired,
            W::UnderLoad => Self::UnderLoad,
            _ => Self::Malformed,
        }
    }
}

fn convert(result: TunnResult<'_>) -> Output<'_> {
    match result {
        TunnResult::Done => Output::Done,
        TunnResult::WriteToNetwork(b) => Output::Network(b),
        TunnResult::WriteToTunnelV4(b, _) | TunnResult::WriteToTunnelV6(b, _) => Output::Tunnel(b),
        TunnResult::Err(e) => Output::Error(e.into()),
    }
}

/// Counters and times of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Time since the last completed handshake.
    pub since_handshake: Option<Duration>,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
}

/// The handshake rate limiter and cookie state shared by all sessions of one node.
///
/// Each handshake message passes the count once: initiations in
/// [`identify_initiator`], responses in [`Session::decapsulate`]. The `Tunn` of every
/// session gets `mac1_only`, a limiter that is never under load, so a message handed
/// on to a session after the count (an identified initiation) is not counted again:
/// it only has its MAC1 checked a second time.
#[derive(Clone)]
pub struct Limiter {
    /// Counts handshake messages and asks for cookies beyond the rate.
    counted: Arc<RateLimiter>,
    /// Checks MAC1 only (its limit is never reached).
    mac1_only: Arc<RateLimiter>,
}

impl Limiter {
    /// A limiter for the node with public key `local`.
    pub fn new(local: &PublicKey) -> Self {
        Self {
            counted: Arc::new(RateLimiter::new(&local.to_x25519(), HANDSHAKES_PER_SECOND)),
            mac1_only: Arc::new(RateLimiter::new(&local.to_x25519(), u64::MAX)),
        }
    }

    /// Starts a new one-second rate window; call once per second.
    pub fn reset_count(&self) {
        self.counted.reset_count();
        self.mac1_only.reset_count();
    }
}

/// Who sent a handshake initiation.
#[derive(Debug)]
pub enum Initiator<'a> {
    /// The initiation decrypted to this peer's static key.
    Peer(PublicKey),
    /// Under load and without a valid cookie: send this cookie reply to the source.
    CookieReply(&'a [u8]),
}

/// Finds the sender of a handshake initiation (after checking its MAC and the rate
/// limit), so that the caller can hand it to that peer's session.
pub fn identify_initiator<'a>(
    local: &PrivateKey,
    limiter: &Limiter,
    src: IpAddr,
    datagram: &[u8],
    cookie_out: &'a mut [u8],
) -> Result<Initiator<'a>, SessionError> {
    let packet = match limiter
        .counted
        .verify_packet(Some(src), datagram, cookie_out)
    {
        Ok(p) => p,
        Err(TunnResult::WriteToNetwork(cookie)) => return Ok(Initiator::CookieReply(cookie)),
        Err(TunnResult::Err(e)) => return Err(e.into()),
        Err(_) => return Err(SessionError::Malformed),
    };
    let Packet::HandshakeInit(init) = packet else {
        return Err(SessionError::Malformed);
    };
    let secret = local.to_secret();
    let public = local.public_key().to_x25519();
    let half = parse_handshake_anon(&secret, &public, &init).map_err(SessionError::from)?;
    Ok(Initiator::Peer(PublicKey::from_bytes(
        half.peer_static_public,
    )))
}

/// One WireGuard session with one peer.
pub struct Session {
    tunn: Tunn,
    /// The node's counting limiter, for handshake responses.
    counted: Arc<RateLimiter>,
}

impl Session {
    /// A session between `local` and `peer`; `slot` must be unique per peer on this
    /// node (it becomes the upper 24 bits of the session indices).
    pub fn new(
        local: &PrivateKey,
        peer: &PublicKey,
        preshared_key: Option<[u8; 32]>,
        persistent_keepalive: Option<u16>,
        slot: PeerId,
        limiter: &Limiter,
    ) -> Self {
        Self {
            tunn: Tunn::new(
                local.to_secret(),
                peer.to_x25519(),
                preshared_key,
                persistent_keepalive,
                slot & 0x00ff_ffff,
                Some(Arc::clone(&limiter.mac1_only)),
            ),
            counted: Arc::clone(&limiter.counted),
        }
    }

    /// Encrypts one IP packet. `out` must hold `packet.len() + 32` and at least 148
    /// bytes. Without a session the packet is queued and a handshake is started.
    pub fn encapsulate<'a>(&mut self, packet: &[u8], out: &'a mut [u8]) -> Output<'a> {
        if out.len() < (packet.len() + OVERHEAD).max(crate::wire::HANDSHAKE_INIT_LEN) {
            return Output::Error(SessionError::Malformed);
        }
        convert(self.tunn.encapsulate(packet, out))
    }

    /// Handles one datagram from this peer. A handshake initiation must have passed
    /// [`identify_initiator`] first (which counts it against the rate limit); a
    /// handshake response is counted here. After an [`Output::Network`] the caller
    /// must call [`Session::flush_queued`] until it returns [`Output::Done`].
    pub fn decapsulate<'a>(
        &mut self,
        src: Option<IpAddr>,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Output<'a> {
        if datagram.is_empty() || out.len() < datagram.len().max(crate::wire::HANDSHAKE_INIT_LEN) {
            return Output::Error(SessionError::Malformed);
        }
        if matches!(
            crate::wire::classify(datagram),
            Ok(crate::wire::Datagram::HandshakeResponse { .. })
        ) {
            let mut cookie = [0u8; crate::wire::COOKIE_REPLY_LEN];
            match self.counted.verify_packet(src, datagram, &mut cookie) {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    let n = reply.len();
                    out[..n].copy_from_slice(reply);
                    return Output::CookieReply(&out[..n]);
                }
                Err(TunnResult::Err(e)) => return Output::Error(e.into()),
                Err(_) => return Output::Error(SessionError::Malformed),
            }
        }
        match convert(self.tunn.decapsulate(src, datagram, out)) {
            Output::Network(b) if b.first() == Some(&crate::wire::TYPE_COOKIE_REPLY) => {
                Output::CookieReply(b)
            }
            other => other,
        }
    }

    /// Sends packets queued while the handshake was in progress, one per call.
    pub fn flush_queued<'a>(&mut self, out: &'a mut [u8]) -> Output<'a> {
        convert(self.tunn.decapsulate(None, &[], out))
    }

    /// Runs the WireGuard timers: handshake retries, rekeying, keepalives.
    pub fn tick<'a>(&mut self, out: &'a mut [u8]) -> Output<'a> {
        convert(self.tunn.update_timers(out))
    }

    /// Starts a handshake now unless one is in progress.
    pub fn start_handshake<'a>(&mut self, out: &'a mut [u8]) -> Output<'a> {
        convert(self.tunn.format_handshake_initiation(out, false))
    }

    /// Counters and handshake age.
    pub fn stats(&self) -> SessionStats {
        let (since_handshake, tx, rx, _, _) = self.tunn.stats();
        SessionStats {
            since_handshake,
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{classify, Datagram};

    fn ping_packet() -> Vec<u8> {
        let mut p = vec![0u8; 84];
        p[0] = 0x45;
        p[3] = 84;
        p[12..16].copy_from_slice(&[10, 47, 0, 1]);
        p[16..20].copy_from_slice(&[10, 47, 0, 2]);
        p
    }

    /// Two sessions complete a handshake in memory and carry a packet both ways.
    #[test]
    fn handshake_and_data_in_memory() {
        let a_key = PrivateKey::generate();
        let b_key = PrivateKey::generate();
        let a_lim = Limiter::new(&a_key.public_key());
        let b_lim = Limiter::new(&b_key.public_key());
        let mut a = Session::new(&a_key, &b_key.public_key(), None, None, 1, &a_lim);
        let mut b = Session::new(&b_key, &a_key.public_key(), None, None, 7, &b_lim);
        let src: IpAddr = "192.0.2.1".parse().expect("addr");
        let mut buf_a = vec![0u8; 2048];
        let mut buf_b = vec![0u8; 2048];
        let mut cookie = [0u8; 64];

        // A has no session: the packet is queued and an initiation comes out.
        let init = match a.encapsulate(&ping_packet(), &mut buf_a) {
            Output::Network(b) => b.to_vec(),
            other => panic!("expected handshake init, got {other:?}"),
        };
        assert_eq!(classify(&init), Ok(Datagram::HandshakeInit));
        match identify_initiator(&b_key, &b_lim, src, &init, &mut cookie) {
            Ok(Initiator::Peer(k)) => assert_eq!(k, a_key.public_key()),
            other => panic!("initiator not identified: {other:?}"),
        }
        let resp = match b.decapsulate(Some(src), &init, &mut buf_b) {
            Output::Network(b) => b.to_vec(),
            other => panic!("expected response, got {other:?}"),
        };
        match classify(&resp) {
            Ok(Datagram::HandshakeResponse { receiver }) => {
                assert_eq!(Datagram::peer_slot(receiver), 1)
            }
            other => panic!("{other:?}"),
        }
        // A completes, sends a keepalive, then the queued packet.
        let keepalive = match a.decapsulate(Some(src), &resp, &mut buf_a) {
            Output::Network(b) => b.to_vec(),
            other => panic!("expected keepalive, got {other:?}"),
        };
        let data = match a.flush_queued(&mut buf_a) {
            Output::Network(b) => b.to_vec(),
            other => panic!("expected queued data, got {other:?}"),
        };
        assert!(matches!(a.flush_queued(&mut buf_a), Output::Done));
        assert!(matches!(
            b.decapsulate(Some(src), &keepalive, &mut buf_b),
            Output::Done
        ));
        match b.decapsulate(Some(src), &data, &mut buf_b) {
            Output::Tunnel(p) => assert_eq!(p, ping_packet().as_slice()),
            other => panic!("expected plaintext, got {other:?}"),
        }
        // Replaying the same data message is rejected.
        assert!(matches!(
            b.decapsulate(Some(src), &data, &mut buf_b),
            Output::Error(SessionError::Replay)
        ));
        // A tampered message with a fresh counter is rejected.
        let mut forged = data.clone();
        forged[8..16].copy_from_slice(&1000u64.to_le_bytes());
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            b.decapsulate(Some(src), &forged, &mut buf_b),
            Output::Error(SessionError::Authentication)
        ));
        assert!(b.stats().since_handshake.is_some());
        assert_eq!(b.stats().rx_bytes, 84);
    }

    #[test]
    fn stranger_initiation_is_not_identified() {
        let a_key = PrivateKey::generate();
        let b_key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let a_lim = Limiter::new(&a_key.public_key());
        // A initiates to `other`, but the message arrives at B: MAC1 does not verify.
        let mut a = Session::new(&a_key, &other.public_key(), None, None, 1, &a_lim);
        let mut buf = vec![0u8; 2048];
        let init = match a.start_handshake(&mut buf) {
            Output::Network(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        let b_lim = Limiter::new(&b_key.public_key());
        let mut cookie = [0u8; 64];
        let src: IpAddr = "192.0.2.1".parse().expect("addr");
        assert!(matches!(
            identify_initiator(&b_key, &b_lim, src, &init, &mut cookie),
            Err(SessionError::Authentication)
        ));
    }

    /// Each initiation passes the limiter once on its way in (identified, then handed
    /// to the peer's session, as the data plane does): exactly
    /// `HANDSHAKES_PER_SECOND` of them are answered within a second before the node
    /// asks for cookies.
    #[test]
    fn each_initiation_counts_once_against_the_rate_limit() {
        let b_key = PrivateKey::generate();
        let b_lim = Limiter::new(&b_key.public_key());
        let src: IpAddr = "192.0.2.1".parse().expect("addr");
        let mut buf = vec![0u8; 2048];
        let mut cookie = [0u8; 64];
        let mut answered = 0u64;
        for i in 0..=HANDSHAKES_PER_SECOND {
            let a_key = PrivateKey::generate();
            let a_lim = Limiter::new(&a_key.public_key());
            let mut a = Session::new(&a_key, &b_key.public_key(), None, None, 1, &a_lim);
            let init = match a.start_handshake(&mut buf) {
                Output::Network(b) => b.to_vec(),
                other => panic!("{other:?}"),
            };
            match identify_initiator(&b_key, &b_lim, src, &init, &mut cookie) {
                Ok(Initiator::Peer(k)) => assert_eq!(k, a_key.public_key()),
                Ok(Initiator::CookieReply(c)) => {
                    assert_eq!(
                        i, HANDSHAKES_PER_SECOND,
                        "cookie after {answered} initiations"
                    );
                    assert!(matches!(classify(c), Ok(Datagram::CookieReply { .. })));
                    continue;
                }
                Err(e) => panic!("initiation {i}: {e:?}"),
            }
            let slot = u32::try_from(i).expect("small") + 2;
            let mut b = Session::new(&b_key, &a_key.public_key(), None, None, slot, &b_lim);
            match b.decapsulate(Some(src), &init, &mut buf) {
                Output::Network(r) => {
                    assert!(matches!(
                        classify(r),
                        Ok(Datagram::HandshakeResponse { .. })
                    ));
                    answered += 1;
                }
                other => panic!("initiation {i} not answered: {other:?}"),
            }
        }
        assert_eq!(answered, HANDSHAKES_PER_SECOND);
    }

    /// Handshake responses are counted too: beyond the rate, one without a cookie gets
    /// a cookie reply instead of completing the handshake.
    #[test]
    fn responses_beyond_the_rate_get_a_cookie_reply() {
        let a_key = PrivateKey::generate();
        let b_key = PrivateKey::generate();
        let a_lim = Limiter::new(&a_key.public_key());
        let b_lim = Limiter::new(&b_key.public_key());
        let src: IpAddr = "192.0.2.1".parse().expect("addr");
        let mut buf = vec![0u8; 2048];
        let mut cookie = [0u8; 64];
        // Fill A's window with initiations from strangers (they count, then fail).
        let stranger = PrivateKey::generate();
        let s_lim = Limiter::new(&stranger.public_key());
        for _ in 0..HANDSHAKES_PER_SECOND {
            let mut s = Session::new(&stranger, &a_key.public_key(), None, None, 9, &s_lim);
            let init = match s.start_handshake(&mut buf) {
                Output::Network(b) => b.to_vec(),
                other => panic!("{other:?}"),
            };
            let _ = identify_initiator(&a_key, &a_lim, src, &init, &mut cookie);
        }
        let mut a = Session::new(&a_key, &b_key.public_key(), None, None, 1, &a_lim);
        let mut b = Session::new(&b_key, &a_key.public_key(), None, None, 7, &b_lim);
        let init = match a.start_handshake(&mut buf) {
            Output::Network(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            identify_initiator(&b_key, &b_lim, src, &init, &mut cookie),
            Ok(Initiator::Peer(_))
        ));
        let resp = match b.decapsulate(Some(src), &init, &mut buf) {
            Output::Network(r) => r.to_vec(),
            other => panic!("{other:?}"),
        };
        match a.decapsulate(Some(src), &resp, &mut buf) {
            Output::CookieReply(c) => assert_eq!(c.len(), 64),
            other => panic!("expected a cookie reply, got {other:?}"),
        }
    }
}
