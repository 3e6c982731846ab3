//! The node's state as `weftnet status`, the health probes and Kubernetes publishing
//! see it: a snapshot the reconciler builds, which the daemon publishes on change.

use super::diagnose::SeedStatus;
use crate::gossip::{Member, MemberState};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A snapshot of the node's control-plane state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Whether gossip runs (a cluster secret was given).
    pub clustered: bool,
    /// This node's name in the mesh.
    pub name: String,
    /// The endpoint this node advertises.
    pub endpoint: Option<SocketAddr>,
    /// Everyone known except this node (tombstones excluded).
    pub members: Vec<Member>,
    /// The seeds joined through (`--join`, Kubernetes Nodes, members known from an
    /// earlier run) and whether each answers.
    pub seeds: Vec<SeedStatus>,
    /// Every block this node holds (given, from the Node, or claimed).
    pub blocks: Vec<IpNet>,
    /// The block shown in status: the claimed one, else the first given one.
    pub block: Option<IpNet>,
    /// True while the node is still choosing its block.
    pub claiming: bool,
    /// The node's addresses: the given ones and each block's.
    pub addresses: Vec<IpNet>,
    /// Dropped gossip datagrams by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// Prefixes members announced that the authority refused (each member and prefix
    /// counted once).
    pub refused_prefixes: u64,
    /// Multicast groups with a member on this node that may receive them (what the
    /// node announces).
    pub local_groups: Vec<IpAddr>,
    /// IGMP/MLD report records refused by NetworkPolicy since start (a join of a
    /// group the listener may not receive; PROTOCOL.md §7.11).
    pub refused_reports: u64,
    /// Memberships snooped but refused by policy: (group, listener address).
    pub denied_members: Vec<(IpAddr, IpAddr)>,
}

/// The lower-case name of a member state, as status shows it.
pub fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}
