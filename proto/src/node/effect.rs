//! What the node reconciler asks of the daemon ([`Effect`], pulled with
//! [`super::Node::poll_effect`]): datagrams to send, packets to inject, the data
//! plane's peer set, address and route changes, state to persist, names to look up
//! and warnings for the operator.

use super::{Link, Notice, PeerSpec};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Something the daemon must do for the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a gossip datagram from the shared UDP port.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The sealed datagram.
        bytes: Vec<u8>,
    },
    /// Write an IP packet into the overlay interface (IGMP/MLD queries), and onto the
    /// bridge in bridge mode.
    Inject(Vec<u8>),
    /// The data plane's peer set is now exactly this.
    SetPeers(Vec<PeerSpec>),
    /// Remove the route to `prefix` from the overlay interface.
    DelRoute {
        /// The route's destination.
        prefix: IpNet,
    },
    /// Remove an address.
    DelAddress {
        /// Where it is.
        link: Link,
        /// The address with its prefix length.
        address: IpNet,
    },
    /// Add an address (report a refusal with [`super::Node::handle_failed`]).
    AddAddress {
        /// Where it goes.
        link: Link,
        /// The address with its prefix length.
        address: IpNet,
    },
    /// Route `prefix` into the overlay interface, with a preferred source (report a
    /// refusal with [`super::Node::handle_failed`]).
    AddRoute {
        /// The route's destination.
        prefix: IpNet,
        /// Its preferred source address.
        src: Option<IpAddr>,
    },
    /// Save this claimed block, so that a restart keeps it.
    PersistBlock(IpNet),
    /// Look these seeds (`HOST:PORT`) up and answer with [`super::Node::handle_resolved`].
    Resolve(Vec<String>),
    /// Save the live members' endpoints, so that a restart rejoins through them
    /// ([`super::GossipSetup::known`]) even without `--join`.
    PersistMembers(Vec<SocketAddr>),
    /// Tell the operator (log a warning); already rate-limited.
    Notice(Notice),
}
