//! What the node tells the operator when the mesh cannot form or is misconfigured:
//! seeds that do not answer or do not resolve, strangers whose datagrams fail
//! authentication, and names shared by two live nodes. Each is a [`Notice`] the
//! reconciler queues as [`super::Effect::Notice`] (the daemon logs it as a warning),
//! rate-limited here; the seeds and whether each answers also go into the status
//! snapshot ([`SeedStatus`]).

use crate::gossip::{GossipError, Member, NodeRecord};
use crate::keys::PublicKey;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after the join (or after the last live member went away) the node may
/// stay alone with silent seeds before it warns.
pub const SEED_ANSWER_BOUND: Duration = Duration::from_secs(10);
/// How often the silent-seeds warning repeats while nothing changes.
pub const SEED_WARN_EVERY: Duration = Duration::from_secs(60);
/// An authenticated datagram from a seed's address counts as an answer this long
/// (for seeds whose member advertises another endpoint, e.g. behind NAT).
pub const SEED_HEARD: Duration = Duration::from_secs(60);
/// Most seeds of one kind (Kubernetes Nodes, known members) tracked for status.
pub const MAX_TRACKED_SEEDS: usize = 64;
/// How often datagrams from one address failing authentication are reported.
pub const STRANGER_WARN_EVERY: Duration = Duration::from_secs(60);
/// Most addresses whose failing datagrams are tracked at once.
pub const MAX_STRANGERS: usize = 256;
/// Most stranger warnings (distinct addresses) per [`STRANGER_WARN_EVERY`]; the rest
/// are counted and summed into the next warning.
pub const STRANGER_WARNINGS_PER_PERIOD: u32 = 8;
/// Most keys one shared-name warning lists.
pub const MAX_KEYS_LISTED: usize = 8;

/// A warning for the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The node has seeds but no live member, and no seed has answered for `since`.
    SeedsSilent {
        /// The seeds as status shows them.
        seeds: Vec<SeedStatus>,
        /// How long the node has been alone.
        since: Duration,
    },
    /// A seed written as `HOST:PORT` did not resolve (reported once per seed).
    SeedUnresolved {
        /// The seed as written.
        seed: String,
    },
    /// Datagrams from `from` fail authentication.
    Stranger {
        /// The source address.
        from: SocketAddr,
        /// The gossip error counter (`gossip_unknown_key`, `gossip_authentication`).
        reason: &'static str,
        /// Datagrams from `from` that failed since its last warning (this one included).
        datagrams: u64,
        /// Failing datagrams from other addresses not warned about (rate limit).
        unreported: u64,
    },
    /// Two or more live nodes (this one perhaps among them) share a name.
    SharedName {
        /// The name.
        name: String,
        /// Their keys (at most [`MAX_KEYS_LISTED`]).
        keys: Vec<PublicKey>,
        /// How many keys share the name in all.
        count: usize,
        /// Whether this node is one of them.
        this_node: bool,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::SeedsSilent { seeds, since } => {
                let list: Vec<String> = seeds
                    .iter()
                    .map(|s| format!("{} ({})", s.seed, s.state.as_str().replace('_', " ")))
                    .collect();
                write!(
                    f,
                    "no seed has answered in {} s and this node is alone (seeds: {}); likely causes: \
                     the seeds have another cluster secret and drop this node's datagrams (they \
                     count drops.gossip_unknown_key), their UDP port is closed by a firewall or \
                     security group, or there is no route to them; check `weftnet status` here and \
                     on a seed, the --secret-file on both, the UDP rule and `ip route get SEED`",
                    since.as_secs(),
                    list.join(", ")
                )
            }
            Notice::SeedUnresolved { seed } => write!(
                f,
                "seed {seed} does not resolve (looked up again every few seconds): check the name \
                 given to --join and this host's DNS"
            ),
            Notice::Stranger {
                from,
                reason,
                datagrams,
                unreported,
            } => {
                write!(
                    f,
                    "datagrams from {from} fail authentication: it has another cluster secret, or is \
                     not weftnet ({datagrams} dropped as {reason} since the last warning"
                )?;
                if *unreported > 0 {
                    write!(
                        f,
                        "; {unreported} more from other addresses not reported one by one"
                    )?;
                }
                write!(f, ")")
            }
            Notice::SharedName {
                name,
                keys,
                count,
                this_node,
            } => {
                let keys: Vec<String> = keys.iter().map(PublicKey::to_base64).collect();
                write!(
                    f,
                    "{count} live nodes share the name {name}{}: keys {}{}; give each node its \
                     own --name, and forget such a node by its key",
                    if *this_node {
                        " (this node among them)"
                    } else {
                        ""
                    },
                    keys.join(", "),
                    if *count > keys.len() { ", ..." } else { "" }
                )
            }
        }
    }
}

/// Where a seed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedSource {
    /// `--join`.
    Join,
    /// Another Kubernetes Node.
    Kubernetes,
    /// A member saved by an earlier run.
    Known,
}

impl SeedSource {
    /// The lower-case name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedSource::Join => "join",
            SeedSource::Kubernetes => "kubernetes",
            SeedSource::Known => "known",
        }
    }
}

/// Whether a seed answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedState {
    /// A live member has its endpoint, or an authenticated datagram came from it
    /// within [`SEED_HEARD`].
    Answering,
    /// Nothing authenticated from it (yet).
    NotAnswering,
    /// Its name does not resolve (yet).
    Unresolved,
    /// It is this node's own endpoint.
    ThisNode,
}

impl SeedState {
    /// The name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedState::Answering => "answering",
            SeedState::NotAnswering => "not_answering",
            SeedState::Unresolved => "unresolved",
            SeedState::ThisNode => "this_node",
        }
    }
}

/// One seed in the status snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedStatus {
    /// As written (`--join`), else its address.
    pub seed: String,
    /// Where it came from.
    pub source: SeedSource,
    /// Its address, once resolved.
    pub address: Option<SocketAddr>,
    /// Whether it answers.
    pub state: SeedState,
}

/// Failing datagrams from one address.
#[derive(Debug)]
struct Stranger {
    /// When it was last reported (`None` until the first report).
    warned: Option<Instant>,
    datagrams: u64,
}

/// The state behind the notices.
#[derive(Debug, Default)]
pub(super) struct Diagnostics {
    /// `--join` seeds as written, with their address once resolved.
    join: Vec<(String, Option<SocketAddr>)>,
    kubernetes: Vec<SocketAddr>,
    known: Vec<SocketAddr>,
    /// Every seed address, to look datagrams' sources up.
    addresses: BTreeSet<SocketAddr>,
    /// When an authenticated datagram last came from a seed address.
    heard: BTreeMap<SocketAddr, Instant>,
    unresolved_warned: BTreeSet<String>,
    alone_since: Option<Instant>,
    next_seed_warning: Option<Instant>,
    strangers: BTreeMap<SocketAddr, Stranger>,
    next_purge: Option<Instant>,
    /// Start of the current stranger-warning period and warnings in it.
    period: Option<(Instant, u32)>,
    unreported: u64,
    /// Keys already reported per shared name.
    shared: BTreeMap<String, BTreeSet<PublicKey>>,
}

impl Diagnostics {
    pub(super) fn new(join: &[String], known: &[SocketAddr]) -> Self {
        let mut d = Self {
            join: join.iter().map(|s| (s.clone(), None)).collect(),
            known: known.iter().copied().take(MAX_TRACKED_SEEDS).collect(),
            ..Self::default()
        };
        d.index();
        d
    }

    fn index(&mut self) {
        self.addresses = self
            .join
            .iter()
            .filter_map(|(_, a)| *a)
            .chain(self.kubernetes.iter().copied())
            .chain(self.known.iter().copied())
            .collect();
        let addresses = &self.addresses;
        self.heard.retain(|a, _| addresses.contains(a));
    }

    /// The `--join` seeds looked up: each as written with its address, if it resolved.
    pub(super) fn resolved(
        &mut self,
        lookups: &[(String, Option<SocketAddr>)],
        out: &mut Vec<Notice>,
    ) {
        for (name, addr) in lookups {
            for entry in self.join.iter_mut().filter(|(n, _)| n == name) {
                // A name that resolved once keeps its address if a later lookup fails.
                entry.1 = addr.or(entry.1);
            }
            if addr.is_none() && self.unresolved_warned.insert(name.clone()) {
                out.push(Notice::SeedUnresolved { seed: name.clone() });
            }
        }
        self.index();
    }

    /// Kubernetes: the other Nodes' addresses.
    pub(super) fn kubernetes(&mut self, seeds: &[SocketAddr], me: SocketAddr) {
        self.kubernetes = seeds
            .iter()
            .copied()
            .filter(|s| *s != me)
            .take(MAX_TRACKED_SEEDS)
            .collect();
        self.index();
    }

    /// An authenticated datagram came from `from`.
    pub(super) fn authenticated(&mut self, from: SocketAddr, now: Instant) {
        if self.addresses.contains(&from) {
            self.heard.insert(from, now);
        }
    }

    /// A datagram from `from` was dropped with `error`: reports strangers failing
    /// authentication, at most once per [`STRANGER_WARN_EVERY`] per address and
    /// [`STRANGER_WARNINGS_PER_PERIOD`] addresses per period.
    pub(super) fn failed(
        &mut self,
        from: SocketAddr,
        error: GossipError,
        now: Instant,
        out: &mut Vec<Notice>,
    ) {
        if !matches!(error, GossipError::UnknownKey | GossipError::Authentication) {
            return;
        }
        let period = match self.period {
            Some((start, n)) if now < start + STRANGER_WARN_EVERY => (start, n),
            _ => (now, 0),
        };
        self.period = Some(period);
        if !self.strangers.contains_key(&from) {
            if self.strangers.len() >= MAX_STRANGERS && self.next_purge.is_none_or(|t| now >= t) {
                self.strangers
                    .retain(|_, s| s.warned.is_some_and(|t| now < t + STRANGER_WARN_EVERY));
                self.next_purge = Some(now + Duration::from_secs(1));
            }
            if self.strangers.len() >= MAX_STRANGERS || period.1 >= STRANGER_WARNINGS_PER_PERIOD {
                self.unreported += 1;
                return;
            }
        }
        let stranger = self.strangers.entry(from).or_insert(Stranger {
            warned: None,
            datagrams: 0,
        });
        stranger.datagrams += 1;
        let due = stranger
            .warned
            .is_none_or(|t| now >= t + STRANGER_WARN_EVERY);
        if !due || period.1 >= STRANGER_WARNINGS_PER_PERIOD {
            return;
        }
        out.push(Notice::Stranger {
            from,
            reason: error.as_str(),
            datagrams: stranger.datagrams,
            unreported: std::mem::take(&mut self.unreported),
        });
        stranger.warned = Some(now);
        stranger.datagrams = 0;
        self.period = Some((period.0, period.1 + 1));
    }

    /// The seeds and whether each answers.
    pub(super) fn seeds(
        &self,
        members: &[Member],
        me: SocketAddr,
        now: Instant,
    ) -> Vec<SeedStatus> {
        let live: BTreeSet<SocketAddr> = members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.record.endpoint)
            .collect();
        let state = |a: SocketAddr| {
            if a == me {
                SeedState::ThisNode
            } else if live.contains(&a) || self.heard.get(&a).is_some_and(|t| now < *t + SEED_HEARD)
            {
                SeedState::Answering
            } else {
                SeedState::NotAnswering
            }
        };
        let mut out: Vec<SeedStatus> = self
            .join
            .iter()
            .map(|(name, addr)| SeedStatus {
                seed: name.clone(),
                source: SeedSource::Join,
                address: *addr,
                state: addr.map_or(SeedState::Unresolved, state),
            })
            .collect();
        let others = self
            .kubernetes
            .iter()
            .map(|a| (*a, SeedSource::Kubernetes))
            .chain(self.known.iter().map(|a| (*a, SeedSource::Known)));
        for (a, source) in others {
            if out.iter().all(|s| s.address != Some(a)) {
                out.push(SeedStatus {
                    seed: a.to_string(),
                    source,
                    address: Some(a),
                    state: state(a),
                });
            }
        }
        out
    }

    /// Warns when the node has seeds, no live member and no seed has answered for
    /// [`SEED_ANSWER_BOUND`], then every [`SEED_WARN_EVERY`] while that lasts.
    pub(super) fn check_seeds(
        &mut self,
        seeds: &[SeedStatus],
        members: &[Member],
        now: Instant,
        out: &mut Vec<Notice>,
    ) {
        let others: Vec<SeedStatus> = seeds
            .iter()
            .filter(|s| s.state != SeedState::ThisNode)
            .cloned()
            .collect();
        let alone = !members.iter().any(|m| m.state.is_live());
        let answered = others.iter().any(|s| s.state == SeedState::Answering);
        if others.is_empty() || answered || !alone {
            self.alone_since = None;
            self.next_seed_warning = None;
            return;
        }
        let since = *self.alone_since.get_or_insert(now);
        let due = self.next_seed_warning.unwrap_or(since + SEED_ANSWER_BOUND);
        if now >= due {
            out.push(Notice::SeedsSilent {
                seeds: others,
                since: now.saturating_duration_since(since),
            });
            self.next_seed_warning = Some(now + SEED_WARN_EVERY);
        }
    }

    /// When [`Diagnostics::check_seeds`] may warn next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.alone_since
            .map(|since| self.next_seed_warning.unwrap_or(since + SEED_ANSWER_BOUND))
    }

    /// Warns about names shared by live members (and this node), once per new key
    /// sharing a name.
    pub(super) fn check_names(
        &mut self,
        me: &NodeRecord,
        members: &[Member],
        out: &mut Vec<Notice>,
    ) {
        let mut by_name: BTreeMap<&str, BTreeSet<PublicKey>> = BTreeMap::new();
        let live = members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| &m.record);
        for r in std::iter::once(me).chain(live) {
            if !r.name.is_empty() {
                by_name.entry(&r.name).or_default().insert(r.public_key);
            }
        }
        // Forget reported keys that are no member any more (bounded by the table).
        let known: BTreeSet<PublicKey> = members
            .iter()
            .map(|m| m.record.public_key)
            .chain([me.public_key])
            .collect();
        self.shared.retain(|_, keys| {
            keys.retain(|k| known.contains(k));
            !keys.is_empty()
        });
        for (name, keys) in by_name {
            if keys.len() < 2 {
                continue;
            }
            let reported = self.shared.entry(name.to_string()).or_default();
            if keys.is_subset(reported) {
                continue;
            }
            reported.extend(keys.iter().copied());
            out.push(Notice::SharedName {
                name: name.to_string(),
                count: keys.len(),
                this_node: keys.contains(&me.public_key),
                keys: keys.into_iter().take(MAX_KEYS_LISTED).collect(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0xc633_6400 + i), 51820))
    }

    #[test]
    fn strangers_are_reported_once_a_period_per_address() {
        let mut d = Diagnostics::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for s in 0..30 {
            d.failed(
                addr(1),
                GossipError::UnknownKey,
                t0 + Duration::from_secs(s),
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
        d.failed(addr(1), GossipError::Replay, t0, &mut out);
        assert_eq!(out.len(), 1, "a replay is no stranger");
        d.failed(
            addr(1),
            GossipError::Authentication,
            t0 + STRANGER_WARN_EVERY,
            &mut out,
        );
        assert_eq!(
            out.last(),
            Some(&Notice::Stranger {
                from: addr(1),
                reason: "gossip_authentication",
                datagrams: 30,
                unreported: 0,
            })
        );
    }

    #[test]
    fn many_strangers_are_bounded_in_memory_and_in_warnings() {
        let mut d = Diagnostics::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..10_000 {
            let now = t0 + Duration::from_millis(u64::from(i));
            d.failed(addr(i), GossipError::UnknownKey, now, &mut out);
            assert!(d.strangers.len() <= MAX_STRANGERS);
        }
        // Ten seconds of a flood from 10,000 addresses: one period's warnings.
        assert_eq!(out.len(), STRANGER_WARNINGS_PER_PERIOD as usize);
        let later = t0 + Duration::from_secs(70);
        d.failed(addr(20_000), GossipError::UnknownKey, later, &mut out);
        assert_eq!(
            out.last(),
            Some(&Notice::Stranger {
                from: addr(20_000),
                reason: "gossip_unknown_key",
                datagrams: 1,
                unreported: 10_000 - u64::from(STRANGER_WARNINGS_PER_PERIOD),
            })
        );
        assert!(out
            .last()
            .is_some_and(|n| n.to_string().contains("more from other addresses")));
    }
}
