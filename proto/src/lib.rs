//! weftnet's sans-IO protocol core.
//!
//! Nothing in this crate opens a socket, spawns a thread or owns a device: callers feed
//! it bytes and events and it returns what to send where. The daemon in the root crate
//! owns all I/O. The one exception to time injection is [`session`], which wraps
//! boringtun's `noise::Tunn`; `Tunn` reads the monotonic clock itself, and that wrapper
//! is the only place where this happens.
//!
//! Modules:
//! - [`keys`]: WireGuard/X25519 keys and their base64 text form.
//! - [`identity`]: signing with a node's WireGuard key (XEdDSA) and pair keys.
//! - [`cert`]: the standalone cluster CA and node certificates.
//! - [`packet`]: parsing of the IP headers the router looks at.
//! - [`ethernet`]: Ethernet II framing for the L2 port on a bridge (bridge mode).
//! - [`wire`]: classification of datagrams arriving on the shared UDP port.
//! - [`prefix_table`]: longest-prefix-match table for IPv4 and IPv6.
//! - [`router`]: crypto-key routing decisions (which peer gets a packet, which
//!   decrypted packets are accepted).
//! - [`session`]: one WireGuard session with one peer.
//! - [`parking`]: handshake initiations from keys not yet peers, parked briefly.
//! - [`pmtu`]: path MTU per peer: probing (PLPMTUD) and the probe format.
//! - [`offload`]: TUN offloads: the virtio-net header, TSO split, receive coalescing.
//! - [`flow`]: which data-plane worker a flow belongs to (a symmetric flow hash).
//! - [`multicast`]: IGMP/MLD snooping, local group membership and the querier,
//!   group filters and multicast replication decisions.
//! - [`policy`]: NetworkPolicy semantics: policies, pods and namespaces to per-pod
//!   allow lists.
//! - [`node`]: the node reconciler: every control-plane decision of one node (gossip,
//!   blocks, peers, addresses, routes, groups) as events in, effects out.
//!
//! The wire format is specified in `PROTOCOL.md` next to this crate.
#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod affinity;
pub mod cert;
pub mod ethernet;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod gossip;
pub mod identity;
pub mod ipam;
pub mod keys;
pub mod multicast;
pub mod node;
pub mod offload;
pub mod packet;
pub mod parking;
pub mod pmtu;
pub mod policy;
pub mod prefix_table;
pub mod router;
pub mod session;
pub mod wire;
