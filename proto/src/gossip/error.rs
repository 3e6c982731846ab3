//! Why a gossip datagram was dropped, and why a gossip node could not be set up.
//! Datagram errors have stable names so the daemon can count them.

use super::record::RecordError;

/// Why [`super::Gossip::handle_datagram`] dropped a datagram. Nothing in it was
/// applied, except for [`GossipError::Uncertified`], [`GossipError::RetiredKey`]
/// and [`GossipError::BadHandover`] (only the entries at fault were left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GossipError {
    /// Not a gossip datagram, too short, or the plaintext does not parse.
    #[error("malformed gossip datagram")]
    Malformed,
    /// Larger than the 1200-byte gossip limit.
    #[error("oversized gossip datagram")]
    Oversized,
    /// A gossip protocol version this node does not speak.
    #[error("unsupported gossip version {0}")]
    Version(u8),
    /// The key id names no accepted cluster secret: another cluster, or a stranger.
    #[error("gossip key id matches no cluster secret")]
    UnknownKey,
    /// The AEAD tag did not verify: forged, corrupted, or another secret.
    #[error("gossip datagram failed authentication")]
    Authentication,
    /// An old boot epoch, or a sequence number already seen or too old.
    #[error("replayed or stale gossip datagram")]
    Replay,
    /// The datagram claims to come from this node's own key: a looped datagram or a
    /// second node configured with the same private key.
    #[error("gossip datagram from our own public key")]
    OwnKey,
    /// Sealed for another receiver (a copy replayed to this node), or for an unknown
    /// receiver but not a lone Join.
    #[error("gossip datagram sealed for another receiver")]
    Misdirected,
    /// The sender's boot epoch is more than the allowance ahead of this node's clock:
    /// it would poison the sender's replay window.
    #[error("gossip datagram from a boot epoch in the future")]
    FutureEpoch,
    /// The sender MAC (under the sender-receiver pair key) did not verify: a holder
    /// of the cluster secret posing as another member.
    #[error("gossip datagram not sent by the member it names")]
    BadSender,
    /// An entry's owner signature did not verify: a forged record.
    #[error("gossip entry with a bad owner signature")]
    BadSignature,
    /// With a cluster CA: a live entry's record carries no certificate of that CA
    /// valid now for its key and name. Only such entries were left out; the rest of
    /// the datagram was applied.
    #[error("gossip entry without a valid certificate")]
    Uncertified,
    /// An entry's key was retired by a key rotation (§6.13): a stale relay, or a
    /// stolen old key. Only such entries were left out.
    #[error("gossip entry of a retired key")]
    RetiredKey,
    /// A record's hand-over (§6.13) is forged (the datagram was dropped), or
    /// replayed, rolled back or forked (only that entry was left out).
    #[error("gossip entry with a refused key hand-over")]
    BadHandover,
}

impl GossipError {
    /// Every error, for counters.
    pub const ALL: [GossipError; Self::COUNT] = [
        Self::Malformed,
        Self::Oversized,
        Self::Version(0),
        Self::UnknownKey,
        Self::Authentication,
        Self::Replay,
        Self::OwnKey,
        Self::Misdirected,
        Self::FutureEpoch,
        Self::BadSender,
        Self::BadSignature,
        Self::Uncertified,
        Self::RetiredKey,
        Self::BadHandover,
    ];

    /// Number of errors (the length of [`GossipError::ALL`]).
    pub const COUNT: usize = 14;

    /// Stable snake_case counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "gossip_malformed",
            Self::Oversized => "gossip_oversized",
            Self::Version(_) => "gossip_version",
            Self::UnknownKey => "gossip_unknown_key",
            Self::Authentication => "gossip_authentication",
            Self::Replay => "gossip_replay",
            Self::OwnKey => "gossip_own_key",
            Self::Misdirected => "gossip_misdirected",
            Self::FutureEpoch => "gossip_future_epoch",
            Self::BadSender => "gossip_bad_sender",
            Self::BadSignature => "gossip_bad_signature",
            Self::Uncertified => "gossip_uncertified",
            Self::RetiredKey => "gossip_retired_key",
            Self::BadHandover => "gossip_bad_handover",
        }
    }

    /// Position in [`GossipError::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Malformed => 0,
            Self::Oversized => 1,
            Self::Version(_) => 2,
            Self::UnknownKey => 3,
            Self::Authentication => 4,
            Self::Replay => 5,
            Self::OwnKey => 6,
            Self::Misdirected => 7,
            Self::FutureEpoch => 8,
            Self::BadSender => 9,
            Self::BadSignature => 10,
            Self::Uncertified => 11,
            Self::RetiredKey => 12,
            Self::BadHandover => 13,
        }
    }

    /// True for the errors a node without the right secret causes.
    pub fn is_authentication(self) -> bool {
        matches!(self, Self::UnknownKey | Self::Authentication)
    }
}

/// Why [`super::Gossip::new`] refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No cluster secret was given.
    #[error("no cluster secret: generate one with `weftnet gensecret` and configure it")]
    NoSecret,
    /// A configuration value is out of range.
    #[error("invalid gossip setting `{field}`: {reason}")]
    Invalid {
        /// The [`super::GossipConfig`] field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: &'static str,
    },
    /// This node's own record is not valid.
    #[error("invalid node record: {0}")]
    Record(#[from] RecordError),
    /// The private key given does not match the record's public key.
    #[error("the identity key does not match the node's public key")]
    KeyMismatch,
    /// With a cluster CA: this node's own certificate is missing or not valid.
    #[error("this node's certificate: {0}")]
    Certificate(String),
    /// This node's own hand-over (after a key rotation) does not verify.
    #[error("this node's key hand-over: {0}")]
    Handover(super::handover::HandoverError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexed() {
        for (i, e) in GossipError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        let mut names: Vec<_> = GossipError::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GossipError::ALL.len());
    }
}
