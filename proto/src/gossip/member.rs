//! Membership states, the public view of a member, the events the state machine emits,
//! and the precedence rule that makes every node's view converge (PROTOCOL.md §6.5).

use super::record::NodeRecord;
use crate::keys::PublicKey;

/// What a node believes about another node's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answers probes (or has refuted every suspicion so far).
    Alive,
    /// Missed a probe; declared dead unless it refutes within the suspicion timeout.
    Suspect,
    /// Failed to refute a suspicion.
    Dead,
    /// Announced a graceful leave.
    Left,
}

impl MemberState {
    /// Alive or suspect: the node should keep a tunnel to it.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The newest record known.
    pub record: NodeRecord,
    /// Liveness.
    pub state: MemberState,
    /// The boot epoch of the incarnation this state refers to.
    pub epoch: u64,
    /// Incarnation number within that epoch (bumped by the node to refute suspicion).
    pub incarnation: u64,
}

/// Changes of the membership view, for the daemon to act on (add or remove peers,
/// routes and endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node became live (alive or suspect) from unknown, dead, left or forgotten.
    Up(NodeRecord),
    /// A live node's record changed (new version, or it restarted with a new epoch).
    Updated(NodeRecord),
    /// A live node was declared dead or left.
    Down {
        /// The node.
        public_key: PublicKey,
        /// [`MemberState::Dead`] or [`MemberState::Left`].
        state: MemberState,
    },
    /// A node's record was removed (by [`super::Gossip::forget`] somewhere in the mesh,
    /// or because it stayed dead or left for the configured reap time).
    Forgotten(PublicKey),
    /// A node rotated its key (PROTOCOL.md §6.13): `old` is retired (its entry is a
    /// tombstone, with no death or leave) and `new` carries the node from now on.
    Rotated {
        /// The retired key.
        old: PublicKey,
        /// Its successor.
        new: PublicKey,
        /// The node's name.
        name: String,
    },
}

/// Wire rank of a state: at equal epoch and incarnation the higher rank wins.
/// `Forgotten` is a tombstone that never appears in [`Member`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Rank {
    Alive = 0,
    Suspect = 1,
    Dead = 2,
    Left = 3,
    Forgotten = 4,
}

impl Rank {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            4 => Self::Forgotten,
            _ => return None,
        })
    }

    pub(crate) fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }

    pub(crate) fn state(self) -> Option<MemberState> {
        Some(match self {
            Self::Alive => MemberState::Alive,
            Self::Suspect => MemberState::Suspect,
            Self::Dead => MemberState::Dead,
            Self::Left => MemberState::Left,
            Self::Forgotten => return None,
        })
    }
}

/// The membership claim of an entry, ordered as PROTOCOL.md §6.5 says: epoch first,
/// then incarnation, then rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Claim {
    pub(crate) epoch: u64,
    pub(crate) incarnation: u64,
    pub(crate) rank: Rank,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A claim, briefly.
    pub(crate) fn c(epoch: u64, incarnation: u64, rank: Rank) -> Claim {
        Claim {
            epoch,
            incarnation,
            rank,
        }
    }

    #[test]
    fn precedence() {
        // suspicion overrides alive at the same incarnation; refutation overrides it
        assert!(c(1, 0, Rank::Suspect) > c(1, 0, Rank::Alive));
        assert!(c(1, 1, Rank::Alive) > c(1, 0, Rank::Suspect));
        // a refuted death: the node bumps its incarnation
        assert!(c(1, 3, Rank::Alive) > c(1, 2, Rank::Dead));
        // leave beats death, a tombstone beats both
        assert!(c(1, 2, Rank::Left) > c(1, 2, Rank::Dead));
        assert!(c(1, 2, Rank::Forgotten) > c(1, 2, Rank::Left));
        // a restart (new epoch) beats everything of the old epoch
        assert!(c(2, 0, Rank::Alive) > c(1, 99, Rank::Forgotten));
        for v in 0..=4 {
            assert_eq!(Rank::from_u8(v).map(|r| r as u8), Some(v));
        }
        assert_eq!(Rank::from_u8(5), None);
    }
}
