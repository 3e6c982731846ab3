//! The peer set: every peer's session, endpoint and prefixes, and the routing table
//! built from them. A [`Mesh`] is immutable once built; changes build a new one that
//! keeps the sessions of peers that stay (see `Dataplane::set_peers`).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weftnet_proto::keys::{PrivateKey, PublicKey};
use weftnet_proto::multicast::Membership;
use weftnet_proto::pmtu::{self, PathMtu};
use weftnet_proto::router::{PeerId, Router};
use weftnet_proto::session::{Limiter, Output, Session};

/// Largest slot number: session indices keep 24 bits for it.
const MAX_SLOT: PeerId = (1 << 24) - 1;

pub(crate) use weftnet_proto::node::{Peer, PeerSpec};

pub(super) struct PeerState {
    pub(super) session: Session,
    /// Where to send: the configured or gossiped endpoint, then the source of the
    /// latest authenticated datagram (roaming).
    pub(super) endpoint: Option<SocketAddr>,
    /// The path MTU search (PROTOCOL.md §9).
    pub(super) pmtu: PathMtu,
    /// `tx_packets` when the timer thread last looked, and when it last saw it grow:
    /// an idle tunnel is not probed (probes would keep every session in the mesh
    /// busy).
    pub(super) probe_seen_tx: u64,
    pub(super) last_tx_at: Option<Instant>,
}

/// One peer's live state, shared by all threads.
pub(super) struct LivePeer {
    pub(super) state: Mutex<PeerState>,
    pub(super) rx_packets: AtomicU64,
    pub(super) tx_packets: AtomicU64,
    /// The inner MTU of the path once the peer answered a probe, 0 while unknown;
    /// read without the lock on the packet path.
    pub(super) path_mtu: AtomicU32,
    /// Contact the peer at once (persistent keepalive configured).
    first_contact: AtomicBool,
}

impl LivePeer {
    fn new(
        spec: &PeerSpec,
        slot: PeerId,
        key: &PrivateKey,
        limiter: &Limiter,
        max_mtu: u16,
    ) -> Self {
        let session = Session::new(
            key,
            &spec.peer.public_key,
            None,
            spec.peer.persistent_keepalive,
            slot,
            limiter,
        );
        let overhead = match spec.peer.endpoint {
            Some(SocketAddr::V6(_)) => pmtu::OVERHEAD_V6,
            _ => pmtu::OVERHEAD_V4,
        };
        Self {
            state: Mutex::new(PeerState {
                session,
                endpoint: spec.peer.endpoint,
                pmtu: PathMtu::new(pmtu::Config::new(max_mtu, overhead), Instant::now()),
                probe_seen_tx: 0,
                last_tx_at: None,
            }),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            path_mtu: AtomicU32::new(0),
            first_contact: AtomicBool::new(
                spec.first_contact && spec.peer.persistent_keepalive.is_some(),
            ),
        }
    }

    /// The first contact, if still due and the endpoint is known: the handshake
    /// initiation to send now (the caller sends it at once rather than at the next
    /// timer tick).
    pub(super) fn first_contact<'a>(&self, out: &'a mut [u8]) -> Option<(Output<'a>, SocketAddr)> {
        let mut st = self.state.lock();
        let endpoint = st.endpoint?;
        if !self.first_contact.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some((st.session.start_handshake(out), endpoint))
    }

    /// Runs the WireGuard timers (and the first contact); returns what to send.
    pub(super) fn tick<'a>(&self, out: &'a mut [u8]) -> (Option<Output<'a>>, Option<SocketAddr>) {
        let mut st = self.state.lock();
        let endpoint = st.endpoint;
        if endpoint.is_some() && self.first_contact.swap(false, Ordering::Relaxed) {
            return (Some(st.session.start_handshake(out)), endpoint);
        }
        (Some(st.session.tick(out)), endpoint)
    }

    /// The inner MTU of the path, if known (the peer answered a probe).
    pub(super) fn path_mtu(&self) -> Option<usize> {
        match self.path_mtu.load(Ordering::Relaxed) {
            0 => None,
            m => Some(m as usize),
        }
    }

    /// Whether `len` bytes are more than the known path to this peer carries.
    pub(super) fn too_big(&self, len: usize) -> Option<usize> {
        self.path_mtu().filter(|&m| len > m)
    }
}

struct Slot {
    live: Arc<LivePeer>,
    spec: PeerSpec,
}

/// What `weftnet status` shows about one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerReport {
    /// The peer as specified, with the endpoint in use (it follows roaming).
    pub(crate) peer: Peer,
    pub(crate) stats: PeerStats,
}

/// One peer's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PeerStats {
    /// Time since the last completed handshake; `None` before the first.
    pub(crate) since_handshake: Option<Duration>,
    /// Plaintext bytes received and sent.
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    /// Packets received from and sent to the peer.
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    /// Inner MTU of the path (PROTOCOL.md §9); `None` until the peer answered a probe.
    pub(crate) path_mtu: Option<u16>,
}

/// A snapshot of the peer set with its routing table.
pub(super) struct Mesh {
    /// Looked up for every packet: foldhash rather than SipHash.
    slots: HashMap<PeerId, Slot, foldhash::fast::RandomState>,
    by_key: HashMap<PublicKey, PeerId>,
    pub(super) router: Router,
    /// Which peers have members of which multicast groups.
    pub(super) membership: Membership,
    next_slot: PeerId,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            slots: HashMap::default(),
            by_key: HashMap::new(),
            router: Router::new(),
            membership: Membership::new(None),
            next_slot: 0,
        }
    }
}

impl Mesh {
    pub(super) fn peer(&self, id: PeerId) -> Option<&Arc<LivePeer>> {
        self.slots.get(&id).map(|s| &s.live)
    }

    pub(super) fn slot_of(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<LivePeer>> {
        self.slots.values().map(|s| &s.live)
    }

    /// The next mesh for `specs`: peers that stay keep slot and session (a changed
    /// advertised endpoint replaces the current one), new peers get an unused slot.
    pub(super) fn rebuild(
        &self,
        specs: Vec<PeerSpec>,
        key: &PrivateKey,
        limiter: &Limiter,
        max_mtu: u16,
    ) -> Mesh {
        let mut next = Mesh {
            next_slot: self.next_slot,
            ..Mesh::default()
        };
        for spec in specs {
            let public_key = spec.peer.public_key;
            if next.by_key.contains_key(&public_key) || public_key == key.public_key() {
                continue;
            }
            let kept = self.by_key.get(&public_key).and_then(|id| {
                let old = self.slots.get(id)?;
                let (was, now) = (&old.spec.peer, &spec.peer);
                // A changed keepalive needs a new session; anything else keeps it.
                (was.persistent_keepalive == now.persistent_keepalive).then(|| {
                    if now.endpoint.is_some() && was.endpoint != now.endpoint {
                        old.live.state.lock().endpoint = now.endpoint;
                    }
                    (*id, Arc::clone(&old.live))
                })
            });
            let (id, live) = match kept {
                Some(k) => k,
                None => {
                    let id = next.free_slot(self);
                    (
                        id,
                        Arc::new(LivePeer::new(&spec, id, key, limiter, max_mtu)),
                    )
                }
            };
            for net in &spec.peer.allowed_ips {
                next.router.add_prefix(*net, id);
            }
            if !spec.groups.is_empty() {
                next.membership
                    .set_peer_groups(id, spec.groups.iter().copied());
            }
            next.by_key.insert(public_key, id);
            next.slots.insert(id, Slot { live, spec });
        }
        next
    }

    /// A slot used neither by `old` nor by this mesh. Slots are not reused right
    /// away, so late datagrams for a removed peer never reach a new one.
    fn free_slot(&mut self, old: &Mesh) -> PeerId {
        loop {
            let id = self.next_slot;
            self.next_slot = if id >= MAX_SLOT { 0 } else { id + 1 };
            if !self.slots.contains_key(&id) && !old.slots.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn reports(&self) -> Vec<PeerReport> {
        let mut v: Vec<PeerReport> = self
            .slots
            .values()
            .map(|s| {
                let (stats, endpoint) = {
                    let st = s.live.state.lock();
                    (st.session.stats(), st.endpoint)
                };
                PeerReport {
                    peer: Peer {
                        endpoint,
                        ..s.spec.peer.clone()
                    },
                    stats: PeerStats {
                        since_handshake: stats.since_handshake,
                        rx_bytes: stats.rx_bytes,
                        tx_bytes: stats.tx_bytes,
                        rx_packets: s.live.rx_packets.load(Ordering::Relaxed),
                        tx_packets: s.live.tx_packets.load(Ordering::Relaxed),
                        path_mtu: s.live.path_mtu().map(|m| m as u16),
                    },
                }
            })
            .collect();
        v.sort_by_key(|r| r.peer.public_key);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn spec(key: &PrivateKey, net: &str, endpoint: Option<&str>) -> PeerSpec {
        PeerSpec {
            peer: Peer {
                public_key: key.public_key(),
                endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
                allowed_ips: vec![net.parse().expect("net")],
                persistent_keepalive: None,
            },
            groups: Vec::new(),
            first_contact: true,
        }
    }

    #[test]
    fn rebuild_keeps_sessions_and_slots_of_staying_peers() {
        let me = PrivateKey::generate();
        let limiter = Limiter::new(&me.public_key());
        let (a, b, c) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let m1 = Mesh::default().rebuild(
            vec![spec(&a, "10.0.1.0/24", None), spec(&b, "10.0.2.0/24", None)],
            &me,
            &limiter,
            1420,
        );
        let a_slot = m1.slot_of(&a.public_key()).expect("a");
        let b_slot = m1.slot_of(&b.public_key()).expect("b");
        assert_ne!(a_slot, b_slot);
        let a_peer = Arc::clone(m1.peer(a_slot).expect("peer"));

        let m2 = m1.rebuild(
            vec![
                spec(&a, "10.0.9.0/24", Some("192.0.2.9:51820")),
                spec(&c, "10.0.3.0/24", None),
            ],
            &me,
            &limiter,
            1420,
        );
        assert_eq!(m2.slot_of(&a.public_key()), Some(a_slot));
        assert!(
            Arc::ptr_eq(m2.peer(a_slot).expect("a"), &a_peer),
            "session kept"
        );
        assert_eq!(a_peer.state.lock().endpoint, "192.0.2.9:51820".parse().ok());
        assert_eq!(m2.slot_of(&b.public_key()), None);
        let c_slot = m2.slot_of(&c.public_key()).expect("c");
        assert_ne!(
            c_slot, b_slot,
            "a removed peer's slot is not reused at once"
        );
        assert_eq!(
            m2.router.prefixes_of(a_slot),
            vec!["10.0.9.0/24".parse::<IpNet>().expect("net")]
        );
        assert!(m2.router.prefixes_of(b_slot).is_empty());
        // Our own key is never a peer.
        let m3 = m2.rebuild(vec![spec(&me, "10.0.4.0/24", None)], &me, &limiter, 1420);
        assert_eq!(m3.iter().count(), 0);
    }
}
