//! Entry points shared by the fuzz targets in `fuzz/` and by the test that replays
//! their committed corpus (`proto/tests/fuzz_corpus.rs`), so that the corpus runs in
//! every `cargo test` without libFuzzer. Each function must never panic on any input.

use crate::keys::PrivateKey;
use crate::packet::IpHeader;
use crate::router::Router;
use crate::session::{identify_initiator, Limiter, Output, Session};
use crate::wire;
use std::net::IpAddr;

/// `wire::classify` on arbitrary bytes; checks the receiver index it reports.
pub fn wire_classify(data: &[u8]) {
    if let Ok(d) = wire::classify(data) {
        if let Some(r) = d.receiver() {
            assert!(wire::Datagram::peer_slot(r) < (1 << 24));
        }
    }
}

/// `IpHeader::parse` on arbitrary bytes; a parsed length never exceeds the input. The
/// same bytes given a worker by their flow (`flow::lane`): always one of the workers.
pub fn ip_header(data: &[u8]) {
    if let Ok(h) = IpHeader::parse(data) {
        assert!(h.total_len <= data.len());
    }
    for workers in [0, 1, 3, 8] {
        assert!(crate::flow::lane(data, workers) < workers.max(1));
    }
}

/// A decrypted packet checked as a path MTU probe or ack: what parses writes back to
/// the same bytes, and nothing that is not addressed like a probe parses; and the
/// same bytes as an outbound packet answered with an ICMP too-big error.
pub fn pmtu_probe(data: &[u8]) {
    use crate::pmtu::probe::{is_probe, parse, write};
    if let Ok(message) = parse(data) {
        let mut out = vec![0u8; data.len()];
        assert_eq!(write(message, &mut out), Some(data.len()));
        assert_eq!(out, data);
    }
    if !is_probe(data) {
        assert!(parse(data).is_err());
    }
    // The same bytes as a packet too big for its path: the error fits its limit.
    let mut out = vec![0u8; 1280];
    if let Some(n) = crate::pmtu::icmp::too_big(data, 1280, &mut out) {
        assert!(n <= 1280 && n > 28);
    }
}

/// A frame read from the bridge's L2 port: the multicast IP packet it yields is
/// inside the frame, and re-framing it gives the same packet back.
pub fn ethernet(data: &[u8]) {
    use crate::ethernet::{multicast_frame, multicast_ip_packet, HEADER_LEN};
    if let Ok(Some(packet)) = multicast_ip_packet(data) {
        assert!(packet.len() + HEADER_LEN <= data.len());
        let mut out = vec![0u8; data.len()];
        let n = multicast_frame(packet, [2, 0, 0, 0, 0, 1], &mut out);
        assert_eq!(n, Some(packet.len() + HEADER_LEN));
        assert_eq!(
            multicast_ip_packet(&out[..packet.len() + HEADER_LEN]),
            Ok(Some(packet))
        );
    }
}

/// Router decisions on arbitrary packets, with a fixed two-peer table.
pub fn router(data: &[u8]) {
    let mut r = Router::new();
    for (net, peer) in [("10.47.1.0/24", 1), ("10.47.2.0/24", 2), ("fd47::/64", 1)] {
        if let Ok(n) = net.parse() {
            r.add_prefix(n, peer);
        }
    }
    let _ = r.outbound(data);
    for peer in [1, 2, 3] {
        if let Ok(h) = r.inbound(peer, data) {
            assert!(h.total_len <= data.len());
        }
    }
}

/// Arbitrary datagrams through the classifier, initiator identification and a
/// session's decapsulation (as the UDP receive path does).
pub fn session_datagram(data: &[u8]) {
    let local = PrivateKey::from_bytes([7; 32]);
    let peer = PrivateKey::from_bytes([9; 32]).public_key();
    let limiter = Limiter::new(&local.public_key());
    let mut session = Session::new(&local, &peer, None, None, 1, &limiter);
    let src = IpAddr::from([192, 0, 2, 1]);
    let mut out = vec![0u8; data.len().max(wire::HANDSHAKE_INIT_LEN) + 64];
    let Ok(kind) = wire::classify(data) else {
        return;
    };
    if kind.receiver().is_none() {
        let mut cookie = [0u8; 64];
        let _ = identify_initiator(&local, &limiter, src, data, &mut cookie);
    }
    if let Output::Network(_) = session.decapsulate(Some(src), data, &mut out) {
        while let Output::Network(_) = session.flush_queued(&mut out) {}
    }
}

/// Arbitrary bytes as a gossip datagram from the network (type byte forced to the
/// gossip range): the envelope, key lookup and AEAD must reject them without panic.
pub fn gossip_datagram(data: &[u8]) {
    use crate::gossip::{fuzz_node, GOSSIP_TYPE};
    let now = std::time::Instant::now();
    let Some(mut g) = fuzz_node(1, now) else {
        return;
    };
    let mut datagram = data.to_vec();
    if let Some(first) = datagram.first_mut() {
        *first = GOSSIP_TYPE;
    }
    let from = std::net::SocketAddr::from(([192, 0, 2, 2], 51820));
    assert!(g.handle_datagram(from, &datagram, now).is_err());
    assert!(g.members().is_empty());
}

/// One gossip entry decoded from arbitrary bytes and its owner signature checked.
pub fn signed_entry(data: &[u8]) {
    crate::gossip::fuzz_signed_entry(data);
}

/// A key hand-over and a record body decoded from arbitrary bytes (PROTOCOL.md §6.13).
pub fn handover(data: &[u8]) {
    crate::gossip::fuzz_handover(data);
}

/// The signature check on arbitrary input: `key[32] | signature[64] | message`. A
/// signature that verifies must not verify for another message.
pub fn signature(data: &[u8]) {
    if data.len() < 96 {
        return;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&data[..32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&data[32..96]);
    let key = crate::keys::PublicKey::from_bytes(key);
    if crate::identity::verify(&key, &data[96..], &sig) {
        let mut other = data[96..].to_vec();
        other.push(0);
        assert!(!crate::identity::verify(&key, &other, &sig));
    }
}

/// A certificate decoded from arbitrary bytes: it re-encodes to the same bytes, and
/// checking it against a CA never panics.
pub fn certificate(data: &[u8]) {
    use crate::cert::Certificate;
    if let Ok(c) = Certificate::decode(data) {
        assert_eq!(c.encode(), data, "certificates re-encode to the same bytes");
        let _ = c.verify(&c.issuer, c.not_before);
        let key = crate::keys::PublicKey::from_bytes(c.public_key);
        let _ = c.verify_for(&[7; 32], c.not_after, &key, &c.name);
    }
}

/// Arbitrary plaintexts sealed with the node's own cluster key.
pub fn gossip_plaintext(data: &[u8]) {
    crate::gossip::fuzz_plaintext(data);
}

/// IGMP parsing of arbitrary bytes, then the parsed message through a group table and
/// the packet through the replicator; checks the table's and replicator's invariants.
pub fn igmp(data: &[u8]) {
    let parsed = crate::multicast::igmp::parse(data).map(crate::multicast::Control::Igmp);
    multicast_control(data, parsed);
}

/// MLD parsing of arbitrary bytes, as [`igmp`] does for IPv4.
pub fn mld(data: &[u8]) {
    let parsed = crate::multicast::mld::parse(data).map(crate::multicast::Control::Mld);
    multicast_control(data, parsed);
}

/// The per-listener table under a policy that lets the report's source receive
/// 239.0.0.0/8 only: what it announces is always allowed, and every refused report
/// record is counted once at most.
fn listeners_under_policy(
    data: &[u8],
    msg: &crate::multicast::Control,
    config: crate::multicast::GroupConfig,
) {
    use crate::multicast::{packet_source, GroupFilter, Listeners, ReceivePolicy};
    use crate::policy::AddrSet;
    use std::time::{Duration, Instant};

    let Some(source) = packet_source(data) else {
        return;
    };
    let mut groups = AddrSet::new();
    groups.insert_net(ipnet::IpNet::V4(
        ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(239, 0, 0, 0), 8).expect("constant"),
    ));
    let policy = ReceivePolicy::new([(ipnet::IpNet::from(source), Some(groups))]);
    let mut l = Listeners::new(config, GroupFilter::default());
    let t0 = Instant::now();
    l.handle_report(t0, source, msg);
    let before = l.groups();
    l.set_policy(policy.clone());
    l.handle_report(t0 + Duration::from_secs(1), source, msg);
    for g in l.groups() {
        assert!(policy.allows(source, g) && before.contains(&g));
        assert!(l.is_member(source, g));
    }
    for (g, who) in l.denied() {
        assert!(!policy.allows(who, g));
    }
    assert!(l.refused() <= crate::multicast::MAX_RECORDS as u64);
    l.set_policy(ReceivePolicy::default());
    assert_eq!(l.groups(), before);
    l.handle_timeout(t0 + Duration::from_secs(100_000));
    assert!(l.groups().is_empty() && l.denied().is_empty());
}

fn multicast_control(
    data: &[u8],
    parsed: Result<crate::multicast::Control, crate::multicast::ParseError>,
) {
    use crate::multicast::{
        is_link_control, parse_control, Control, GroupConfig, GroupFilter, GroupTable, Membership,
        Message, Replicator, MAX_RECORDS,
    };
    use std::time::{Duration, Instant};

    let t0 = Instant::now();
    let config = GroupConfig {
        max_groups: 4,
        max_sources: 2,
        ..GroupConfig::default()
    };
    let mut table = GroupTable::new(config.clone(), GroupFilter::default());
    let config_small = || config.clone();
    if let Ok(msg) = &parsed {
        // Whatever parses as IGMP/MLD is control traffic and parses the same way
        // through the generic entry point.
        assert_eq!(is_link_control(data), Ok(true));
        assert_eq!(parse_control(data).as_ref(), Ok(msg));
        let records = match msg {
            Control::Igmp(Message::Report { records, .. }) => records.len(),
            Control::Mld(Message::Report { records, .. }) => records.len(),
            _ => 0,
        };
        assert!(records <= MAX_RECORDS && records <= data.len() / 8);
        for (i, at) in [0u64, 1, 100, 300].into_iter().enumerate() {
            let now = t0 + Duration::from_secs(at);
            table.handle_report(now, msg);
            if i == 2 {
                table.handle_timeout(now);
            }
            let groups = table.groups();
            assert!(groups.len() <= 4);
            assert!(groups.windows(2).all(|w| w[0] < w[1]));
            for g in &groups {
                assert!(table.filter().allows(*g));
                let f = table.source_filter(*g);
                assert!(f.is_some_and(|f| f.sources.len() <= 2));
            }
            if let Some(d) = table.poll_timeout() {
                assert!(d > now);
            }
        }
        while table.poll_event().is_some() {}
        listeners_under_policy(data, msg, config_small());
    }
    let mut members = Membership::new(Some(0));
    members.set_peer_groups(0, table.groups());
    members.set_peer_groups(1, table.groups());
    let mut replicator = Replicator::new(GroupFilter::default(), None);
    if let Ok(out) = replicator.outbound(t0, data, &members) {
        assert!(parsed.is_err());
        assert!(out.header.total_len <= data.len());
        assert_eq!(out.peers, &[1]);
    }
}

/// One read from a TUN with `IFF_VNET_HDR` (header and packet) through the TSO
/// splitter: every packet it yields fits the segment buffer and the input.
pub fn offload_split(data: &[u8]) {
    let mut read = data.to_vec();
    let mut scratch = vec![0u8; 65536];
    let mut total = 0;
    let _ = crate::offload::split(&mut read, &mut scratch, |p| {
        assert!(p.len() <= 65536);
        total += 1;
    });
    assert!(total <= data.len().max(1));
}

/// Decrypted packets (the input cut at every 0xff 0x00 0xff marker) through the
/// receive coalescer: every write starts with a virtio-net header, and the bytes
/// written never exceed what was pushed plus one header per write.
pub fn offload_coalesce(data: &[u8]) {
    use crate::offload::{Coalescer, VNET_HDR_LEN};
    let mut c = Coalescer::new();
    let mut pushed = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(3)
            .position(|w| w == [0xff, 0x00, 0xff])
            .unwrap_or(rest.len());
        c.push(&rest[..end]);
        pushed += end;
        rest = rest.get(end + 3..).unwrap_or(&[]);
        if c.is_full() {
            c.flush(|_| {});
        }
    }
    let mut written = 0;
    let mut writes = 0;
    c.flush(|w| {
        assert!(w.len() >= VNET_HDR_LEN);
        written += w.len();
        writes += 1;
    });
    assert!(written <= pushed + writes * VNET_HDR_LEN);
}

/// A read from chained mode's pod ports: the first byte picks the interface it came
/// in on (a pod veth, another pod's, or no pod's), the rest is what the packet socket
/// gives (a virtio-net header, then the frame). The frame goes through the offload
/// split, the multicast-IP decision and [`crate::multicast::PodPorts`]: a packet is
/// admitted only from its pod's address (or, for IGMP/MLD, an unspecified or IPv6
/// link-local one), and only known ports ever become members.
pub fn pod_port(data: &[u8]) {
    use crate::multicast::{is_link_control, packet_source, parse_control, PodPorts};
    use std::time::Instant;

    let Some((&pick, read)) = data.split_first() else {
        return;
    };
    let pod_v4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 47, 0, 1));
    let pod_v6: IpAddr = "fd47::1".parse().expect("constant");
    let mut ports = PodPorts::new(Default::default(), Default::default());
    ports.set_ports([
        (7, vec![pod_v4, pod_v6]),
        (8, vec![IpAddr::from([10, 47, 0, 2])]),
    ]);
    let port = [7, 8, 9][usize::from(pick % 3)];
    let mut read = read.to_vec();
    let mut scratch = vec![0u8; 65536];
    let now = Instant::now();
    let _ = crate::offload::split(&mut read, &mut scratch, |frame| {
        let Ok(Some(packet)) = crate::ethernet::multicast_ip_packet(frame) else {
            return;
        };
        if ports.admit(port, packet).is_err() {
            return;
        }
        assert_ne!(port, 9, "no pod's interface admitted");
        let src = packet_source(packet).expect("admitted packets have a source");
        if !(port == 7 && (src == pod_v4 || src == pod_v6)) {
            assert_eq!(
                is_link_control(packet),
                Ok(true),
                "{src} admitted on {port}"
            );
        }
        if let Ok(control) = parse_control(packet) {
            ports.handle_report(now, port, &control);
        }
        if let Ok(h) = IpHeader::parse(packet) {
            assert!(ports.members(h.dst).iter().all(|p| *p == 7 || *p == 8));
        }
    });
    if let Some(at) = ports.poll_timeout() {
        ports.handle_timeout(at);
    }
}
