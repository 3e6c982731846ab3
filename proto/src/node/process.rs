//! How the reconciler applies what changed, after every input: membership events,
//! group changes, names and seeds to warn about, block claims, the wanted peer set,
//! the minimal address and route diff, the members to save, and the status snapshot.
//! The public inputs and outputs are in the parent module.

use super::blocks::{self, ClaimOutcome};
use super::diagnose::SeedStatus;
use super::peers::{self, split_prefixes};
use super::{
    state_name, Effect, Node, Notice, Status, CLAIM_SETTLE, MAX_ANNOUNCED_GROUPS, MAX_KNOWN, RETRY,
    STATUS_REFRESH,
};
use crate::gossip::{Event, Gossip, Member, MemberState};
use crate::keys::PublicKey;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

impl Node {
    /// Applies what changed: membership events, group changes, block claims, the
    /// peer set, addresses and routes, and the status snapshot. `force` reconciles
    /// even if no event says anything changed.
    pub(super) fn process(&mut self, now: Instant, force: bool) {
        let mut changed = force;
        if let Some(g) = &mut self.gossip {
            while let Some(event) = g.poll_event() {
                changed = true;
                log_event(&event);
            }
        }
        let groups_changed = self.groups.take_changed();
        if groups_changed {
            self.announce(now);
        }
        let claim_pending = self.blocks.claiming() && self.blocks.claim_due().is_some();
        let status_due = self.next_status.is_some_and(|at| now >= at)
            || self.diagnostics.poll_timeout().is_some_and(|at| now >= at);
        if changed || claim_pending || status_due || groups_changed || self.next_status.is_none() {
            let members = self.members();
            if self.first_member_at.is_none() && members.iter().any(|m| m.state.is_live()) {
                self.first_member_at = Some(now);
                self.blocks.schedule_claim(now + CLAIM_SETTLE);
            }
            if changed {
                self.forget_deleted(now);
                self.report_conflicts(&members);
                self.check_names(&members);
            }
            let claimed = self.claim_if_needed(now, &members);
            if changed || claimed {
                self.reconcile(&members, now);
                self.persist_members(&members);
            }
            self.refresh_status(members, now);
        }
        self.flush();
        if let Some(at) = self.leave_deadline {
            let drained = self
                .gossip
                .as_ref()
                .is_none_or(|g| g.poll_timeout().is_none());
            if now >= at || drained {
                self.done = true;
            }
        }
    }

    /// Queues warnings for the operator.
    pub(super) fn notify(&mut self, notices: Vec<Notice>) {
        self.effects.extend(notices.into_iter().map(Effect::Notice));
    }

    /// Warns about names that live members (and this node) share.
    fn check_names(&mut self, members: &[Member]) {
        let Some(g) = &self.gossip else {
            return;
        };
        let mut notices = Vec::new();
        self.diagnostics.check_names(g.me(), members, &mut notices);
        self.notify(notices);
    }

    /// The seeds and whether each answers; warns when none does and the node is alone.
    fn check_seeds(&mut self, members: &[Member], now: Instant) -> Vec<SeedStatus> {
        let Some(g) = &self.gossip else {
            return Vec::new();
        };
        let seeds = self.diagnostics.seeds(members, g.me().endpoint, now);
        // A leaving node is alone on purpose: no check (and no timer) for it.
        let checked: &[SeedStatus] = if self.leave_deadline.is_none() {
            &seeds
        } else {
            &[]
        };
        let mut notices = Vec::new();
        self.diagnostics
            .check_seeds(checked, members, now, &mut notices);
        self.notify(notices);
        seeds
    }

    /// Saves the live members' endpoints when they changed. An empty set is never
    /// saved: a node whose peers are all down keeps the last ones it knew.
    fn persist_members(&mut self, members: &[Member]) {
        if self.leave_deadline.is_some() {
            return;
        }
        let mut live: Vec<SocketAddr> = members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.record.endpoint)
            .collect();
        live.sort();
        live.dedup();
        live.truncate(MAX_KNOWN);
        if !live.is_empty() && live != self.persisted {
            self.persisted = live.clone();
            self.effects.push_back(Effect::PersistMembers(live));
        }
    }

    /// Every underlay address known: the members' endpoints and this node's.
    fn underlays(&self, members: &[Member]) -> Vec<IpAddr> {
        members
            .iter()
            .map(|m| m.record.endpoint.ip())
            .chain(self.gossip.as_ref().map(|g| g.me().endpoint.ip()))
            .collect()
    }

    pub(super) fn members(&self) -> Vec<Member> {
        self.gossip
            .as_ref()
            .map(Gossip::members)
            .unwrap_or_default()
    }

    /// Queues what the gossip state machine wants sent.
    pub(super) fn flush(&mut self) {
        if let Some(g) = &mut self.gossip {
            while let Some((to, bytes)) = g.poll_transmit() {
                self.effects.push_back(Effect::Transmit { to, bytes });
            }
        }
    }

    /// Announces this node's unicast prefixes and multicast groups.
    pub(super) fn announce(&mut self, now: Instant) {
        let Some(g) = &mut self.gossip else {
            return;
        };
        let mut prefixes = own_prefixes(&self.addresses, &self.blocks.held());
        prefixes.extend(self.local_pods.iter().copied());
        let groups = self.groups.groups();
        if groups.len() > MAX_ANNOUNCED_GROUPS {
            tracing::warn!(
                groups = groups.len(),
                max = MAX_ANNOUNCED_GROUPS,
                "more local multicast groups than a record carries; announcing the first ones"
            );
        }
        prefixes.extend(
            groups
                .into_iter()
                .take(MAX_ANNOUNCED_GROUPS)
                .map(IpNet::from),
        );
        if let Err(e) = g.update_record(|r| r.prefixes = prefixes, now) {
            tracing::error!(error = %e, "cannot announce this node's prefixes and groups");
        }
    }

    /// Forgets the members of deleted Nodes that are down (a live one would refute
    /// the tombstone; it leaves by itself when it sees its Node deleted).
    pub(super) fn forget_deleted(&mut self, now: Instant) {
        let Some(g) = &mut self.gossip else {
            return;
        };
        if self.deleted_nodes.is_empty() {
            return;
        }
        let keys: Vec<PublicKey> = g
            .members()
            .iter()
            .filter(|m| self.deleted_nodes.contains(&m.record.name) && !m.state.is_live())
            .map(|m| m.record.public_key)
            .collect();
        for key in keys {
            g.forget(&key, now);
        }
    }

    /// Logs, once each, other nodes' prefixes that overlap a block given with --block.
    fn report_conflicts(&mut self, members: &[Member]) {
        let others = members.iter().filter(|m| m.state.is_live()).flat_map(|m| {
            split_prefixes(&m.record.prefixes)
                .0
                .into_iter()
                .map(move |p| (m.record.public_key, p))
        });
        for (key, prefix, block) in blocks::conflicts(self.blocks.fixed(), others) {
            if self.conflicts_seen.insert((key, prefix)) {
                tracing::error!(%block, other = %prefix, node = %key, "another node announces a prefix that overlaps this node's --block; it is not moved: give the nodes disjoint blocks");
            }
        }
    }

    /// Claims a block when one is due or ours was lost; returns whether it did.
    /// Only admissible prefixes count as taken, so a member announcing the whole
    /// range cannot block every claim.
    fn claim_if_needed(&mut self, now: Instant, members: &[Member]) -> bool {
        let underlays = self.underlays(members);
        let authority = &self.authority;
        let others: Vec<(PublicKey, IpNet)> = members
            .iter()
            .filter(|m| m.state.is_live())
            .flat_map(|m| {
                split_prefixes(&m.record.prefixes)
                    .0
                    .into_iter()
                    .filter(|p| authority.check(p, &underlays).is_ok())
                    .map(move |p| (m.record.public_key, p))
            })
            .collect();
        match self
            .blocks
            .claim(now, now + RETRY, &self.public_key, &others)
        {
            ClaimOutcome::Nothing => false,
            ClaimOutcome::RangeFull => {
                tracing::error!(range = ?self.blocks.claim_range(), "no free block left in the range; retrying");
                false
            }
            ClaimOutcome::Claimed { old, new } => {
                match old {
                    Some(old) => {
                        tracing::warn!(%old, %new, "another node won our block; claimed a new one")
                    }
                    None => tracing::info!(block = %new, "claimed address block"),
                }
                self.effects.push_back(Effect::PersistBlock(new));
                self.announce(now);
                true
            }
        }
    }

    /// Queues the changes that make the data plane's peers and the host's addresses
    /// and routes what the node wants.
    fn reconcile(&mut self, members: &[Member], now: Instant) {
        let underlays = self.underlays(members);
        // Dead members whose tunnels still carried traffic lately stay peers until
        // that evidence runs out.
        self.evidence.prune(now);
        let alive_by_traffic: BTreeSet<PublicKey> = members
            .iter()
            .filter(|m| m.state == MemberState::Dead)
            .map(|m| m.record.public_key)
            .filter(|k| self.evidence.fresh(k, now))
            .collect();
        self.evidence_expiry = alive_by_traffic
            .iter()
            .filter_map(|k| self.evidence.expiry(k))
            .min();
        let wanted = peers::wanted(
            &self.public_key,
            &self.static_peers,
            members,
            (&self.deleted_nodes, &alive_by_traffic),
            &mut self.authority,
            &underlays,
        );
        // The members known before a restart lost their sessions with this node: it
        // calls each at once (one round trip), whichever key is lower.
        let mut wanted = wanted;
        for p in &mut wanted {
            if p.peer.endpoint.is_some_and(|e| self.known.contains(&e)) {
                p.first_contact = true;
            }
        }
        let prefixes: Vec<IpNet> = wanted
            .iter()
            .flat_map(|p| p.peer.allowed_ips.clone())
            .collect();
        if self.peers.as_ref() != Some(&wanted) {
            self.peers = Some(wanted.clone());
            self.effects.push_back(Effect::SetPeers(wanted));
        }
        let addresses = self.blocks.addresses(&self.addresses);
        let routes = self.blocks.routes(&self.addresses, &prefixes);
        self.installed
            .reconcile(addresses, routes, &mut self.effects);
    }

    fn refresh_status(&mut self, members: Vec<Member>, now: Instant) {
        let seeds = self.check_seeds(&members, now);
        let held = self.blocks.held();
        let mut addresses = self.addresses.clone();
        for b in &held {
            let a = self.blocks.address(*b).1;
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
        let next = Status {
            clustered: self.gossip.is_some(),
            name: self
                .gossip
                .as_ref()
                .map(|g| g.me().name.clone())
                .unwrap_or_default(),
            endpoint: self.gossip.as_ref().map(|g| g.me().endpoint),
            members,
            seeds,
            blocks: held,
            block: self.blocks.shown(),
            claiming: self.blocks.claiming(),
            addresses,
            errors: self.errors.clone(),
            refused_prefixes: self.authority.refused(),
            local_groups: self.groups.groups(),
            refused_reports: self.groups.refused(),
            denied_members: self.groups.denied(),
        };
        if next != self.status {
            self.status = next;
            self.status_changed = true;
        }
        self.next_status = self.gossip.as_ref().map(|_| now + STATUS_REFRESH);
    }
}

/// The unicast prefixes a node announces: its given addresses (as host prefixes) and
/// its blocks.
pub(super) fn own_prefixes(addresses: &[IpNet], held: &[IpNet]) -> Vec<IpNet> {
    addresses
        .iter()
        .map(|a| IpNet::from(a.addr()))
        .chain(held.iter().copied())
        .collect()
}

fn log_event(event: &Event) {
    match event {
        Event::Up(r) => {
            tracing::info!(name = %r.name, key = %r.public_key, endpoint = %r.endpoint, "member up")
        }
        Event::Updated(r) => {
            tracing::debug!(name = %r.name, key = %r.public_key, "member updated")
        }
        Event::Down { public_key, state } => {
            tracing::info!(key = %public_key, state = state_name(*state), "member down")
        }
        Event::Forgotten(k) => tracing::info!(key = %k, "member forgotten"),
        Event::Rotated { old, new, name } => {
            tracing::info!(%name, old = %old, new = %new, "member rotated its key")
        }
    }
}
