//! Tests of the metrics: the encoding of a snapshot in the Prometheus text format
//! (names, labels, units, and what is left out when it cannot be known).

use super::*;
use crate::dataplane::PeerStats;
use std::time::Duration;
use weftnet_proto::gossip::{Member, NodeRecord};
use weftnet_proto::keys::{PrivateKey, PublicKey};
use weftnet_proto::node::Peer;

/// A fixed snapshot, for the encoding alone.
#[derive(Debug)]
struct Fixed(Snapshot);

impl Collector for Fixed {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.0, encoder)
    }
}

fn text(s: Snapshot) -> String {
    render(&registry(Fixed(s))).expect("encodes")
}

fn member(key: PublicKey, name: &str, state: MemberState) -> Member {
    Member {
        record: NodeRecord {
            public_key: key,
            name: name.into(),
            endpoint: "192.0.2.1:51820".parse().expect("addr"),
            prefixes: Vec::new(),
            version: 1,
            certificate: None,
            handover: None,
        },
        state,
        epoch: 1,
        incarnation: 0,
    }
}

fn peer(key: PublicKey, rx_bytes: u64, handshake: Option<Duration>) -> PeerReport {
    PeerReport {
        peer: Peer {
            public_key: key,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        },
        stats: PeerStats {
            since_handshake: handshake,
            rx_bytes,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            // Known for the peers that handshook, as the data plane reports it.
            path_mtu: handshake.map(|_| 8941),
        },
    }
}

/// The value of the one sample line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<String> {
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .collect();
    assert!(found.len() <= 1, "{series} twice in:\n{text}");
    found.first().map(|v| v.to_string())
}

#[test]
fn a_gossip_node_reports_members_peers_drops_and_groups() {
    let a = PrivateKey::generate().public_key();
    let b = PrivateKey::generate().public_key();
    let stat = PrivateKey::generate().public_key();
    let mut status = Status {
        clustered: true,
        name: "me".into(),
        members: vec![
            member(a, "n1", MemberState::Alive),
            member(b, "n\"2\\", MemberState::Suspect),
            member(
                PrivateKey::generate().public_key(),
                "n3",
                MemberState::Alive,
            ),
        ],
        blocks: vec!["10.47.1.0/24".parse().expect("net")],
        local_groups: vec!["239.1.2.3".parse().expect("ip")],
        refused_reports: 6,
        denied_members: vec![(
            "239.9.9.9".parse().expect("ip"),
            "10.244.1.5".parse().expect("ip"),
        )],
        ..Status::default()
    };
    status.errors.insert("gossip_unknown_key", 7);
    let drops = crate::status::drop_counts(vec![("no_route", 5)], &status);
    let s = Snapshot {
        status,
        peers: vec![
            peer(a, 1000, Some(Duration::from_millis(2500))),
            peer(b, 0, None),
            peer(stat, 9, None),
        ],
        drops,
        groups: vec![(
            "239.1.2.3".parse().expect("ip"),
            GroupCounters {
                tx_packets: 1,
                tx_bytes: 100,
                tx_copies: 2,
                rx_packets: 3,
                rx_bytes: 300,
                drops: 4,
            },
        )],
        dataplane_running: true,
        offload: "tso",
        workers: vec![(10, 20), (30, 40)],
        tun_queues: 8,
        multi_queue: true,
        peer_lock_waits: 7,
        start_time_seconds: 1_700_000_000.5,
        key_age_seconds: 12.0,
        key_generation: 2,
        kube_api_reachable: None,
        policy: None,
        pod_ports: None,
    };
    let t = text(s);
    let v = |series: &str| value(&t, series).unwrap_or_else(|| panic!("{series} in:\n{t}"));
    assert_eq!(v("weftnet_members{state=\"alive\"}"), "2");
    assert_eq!(v("weftnet_members{state=\"suspect\"}"), "1");
    assert_eq!(v("weftnet_members{state=\"dead\"}"), "0");
    assert_eq!(v("weftnet_members{state=\"left\"}"), "0");
    let ka = a.to_base64();
    assert_eq!(
        v(&format!(
            "weftnet_peer_rx_bytes_total{{public_key=\"{ka}\",name=\"n1\"}}"
        )),
        "1000"
    );
    // Label values are escaped; a static peer has no name.
    assert_eq!(
        v(&format!(
            "weftnet_peer_tx_packets_total{{public_key=\"{}\",name=\"n\\\"2\\\\\"}}",
            b.to_base64()
        )),
        "4"
    );
    assert_eq!(
        v(&format!(
            "weftnet_peer_rx_bytes_total{{public_key=\"{}\"}}",
            stat.to_base64()
        )),
        "9"
    );
    assert_eq!(
        v(&format!(
            "weftnet_peer_handshake_age_seconds{{public_key=\"{ka}\",name=\"n1\"}}"
        )),
        "2.5"
    );
    assert_eq!(
        t.matches("weftnet_peer_handshake_age_seconds{").count(),
        1,
        "no age before the first handshake:\n{t}"
    );
    assert_eq!(
        v(&format!(
            "weftnet_peer_path_mtu_bytes{{public_key=\"{ka}\",name=\"n1\"}}"
        )),
        "8941"
    );
    assert_eq!(
        t.matches("weftnet_peer_path_mtu_bytes{").count(),
        1,
        "no path MTU before it is known:\n{t}"
    );
    assert_eq!(v("weftnet_drops_total{reason=\"no_route\"}"), "5");
    assert_eq!(v("weftnet_drops_total{reason=\"gossip_unknown_key\"}"), "7");
    // Every gossip error is listed, as in `weftnet status`.
    for e in weftnet_proto::gossip::GossipError::ALL {
        assert!(
            t.contains(&format!("weftnet_drops_total{{reason=\"{}\"}}", e.as_str())),
            "{t}"
        );
    }
    let g = "{group=\"239.1.2.3\"}";
    assert_eq!(v(&format!("weftnet_multicast_tx_packets_total{g}")), "1");
    assert_eq!(v(&format!("weftnet_multicast_tx_bytes_total{g}")), "100");
    assert_eq!(v(&format!("weftnet_multicast_tx_copies_total{g}")), "2");
    assert_eq!(v(&format!("weftnet_multicast_rx_packets_total{g}")), "3");
    assert_eq!(v(&format!("weftnet_multicast_rx_bytes_total{g}")), "300");
    assert_eq!(v(&format!("weftnet_multicast_drops_total{g}")), "4");
    assert_eq!(v("weftnet_multicast_local_groups"), "1");
    assert_eq!(v("weftnet_multicast_reports_refused_total"), "6");
    assert_eq!(v("weftnet_multicast_denied_members"), "1");
    assert_eq!(v("weftnet_blocks"), "1");
    assert_eq!(v("weftnet_claiming"), "0");
    assert_eq!(v("weftnet_dataplane_running"), "1");
    assert_eq!(v("weftnet_tun_offload{path=\"tso\"}"), "1");
    assert_eq!(v("weftnet_dataplane_workers"), "2");
    assert_eq!(v("weftnet_tun_queues"), "8");
    assert_eq!(v("weftnet_tun_multi_queue"), "1");
    assert_eq!(v("weftnet_worker_tun_reads_total{worker=\"1\"}"), "30");
    assert_eq!(v("weftnet_worker_udp_datagrams_total{worker=\"0\"}"), "20");
    assert_eq!(v("weftnet_session_lock_waits_total"), "7");
    assert_eq!(v("weftnet_start_time_seconds"), "1700000000.5");
    assert_eq!(v("weftnet_key_generation"), "2");
    assert_eq!(v("weftnet_key_age_seconds"), "12.0");
    assert!(!t.contains("weftnet_kubernetes"), "{t}");
    assert!(
        t.contains("# TYPE weftnet_peer_rx_bytes_total counter\n"),
        "{t}"
    );
    assert!(t.contains("# TYPE weftnet_members gauge\n"), "{t}");
    // Every line is a comment or `name{labels} value`, every name weftnet_*.
    for line in t.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("weftnet_"), "{line}");
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn a_static_node_has_no_member_gauges_and_kubernetes_adds_the_api_server() {
    let s = Snapshot {
        drops: crate::status::drop_counts(vec![("no_route", 0)], &Status::default()),
        kube_api_reachable: Some(false),
        policy: None,
        ..Snapshot::default()
    };
    let t = text(s);
    assert!(!t.contains("weftnet_members"), "{t}");
    assert!(!t.contains("weftnet_peer_"), "{t}");
    assert!(
        !t.contains("gossip_"),
        "no gossip errors without gossip:\n{t}"
    );
    assert_eq!(
        value(&t, "weftnet_drops_total{reason=\"no_route\"}").as_deref(),
        Some("0")
    );
    assert_eq!(value(&t, "weftnet_dataplane_running").as_deref(), Some("0"));
    assert_eq!(
        value(&t, "weftnet_kubernetes_api_reachable").as_deref(),
        Some("0")
    );
}

#[test]
fn network_policy_gauges_and_drops_per_selected_pod() {
    let pod =
        |name: &str, policies: Vec<String>, ingress_drops| crate::policy::enforce::PodPolicy {
            pod: format!("x/{name}"),
            addresses: vec!["10.244.1.2".into()],
            ingress: "isolated".into(),
            egress: "open".into(),
            policies,
            ingress_drops,
            egress_drops: 0,
        };
    let s = Snapshot {
        policy: Some(crate::policy::PolicyStatus {
            policies: 3,
            pods_known: 10,
            applied: 4,
            applied_secs_ago: Some(1),
            error: None,
            pods: vec![pod("a", vec!["x/p".into()], 7), pod("open", vec![], 0)],
        }),
        ..Snapshot::default()
    };
    let t = text(s);
    assert_eq!(value(&t, "weftnet_network_policies").as_deref(), Some("3"));
    assert_eq!(
        value(&t, "weftnet_network_policy_pods_selected").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&t, "weftnet_network_policy_rulesets_applied_total").as_deref(),
        Some("4")
    );
    assert_eq!(
        value(
            &t,
            "weftnet_network_policy_drops_total{namespace=\"x\",pod=\"a\",direction=\"ingress\"}"
        )
        .as_deref(),
        Some("7")
    );
    assert!(
        !t.contains("pod=\"open\""),
        "pods no policy selects have no drop series:\n{t}"
    );
    assert!(!text(Snapshot::default()).contains("network_policy"));
}

#[test]
fn chained_mode_reports_the_pod_ports_counters() {
    let s = Snapshot {
        pod_ports: Some(crate::dataplane::PodStats {
            ports: 3,
            rx_frames: 10,
            ignored_frames: 1,
            other_interfaces: 2,
            foreign_source: 4,
            malformed_frames: 5,
            tx_frames: 20,
            write_errors: 6,
        }),
        ..Snapshot::default()
    };
    let t = text(s);
    let v = |series: &str| value(&t, series).unwrap_or_else(|| panic!("{series} in:\n{t}"));
    assert_eq!(v("weftnet_pod_ports"), "3");
    assert_eq!(v("weftnet_pod_port_rx_frames_total"), "10");
    assert_eq!(v("weftnet_pod_port_ignored_frames_total"), "1");
    assert_eq!(v("weftnet_pod_port_other_interface_packets_total"), "2");
    assert_eq!(v("weftnet_pod_port_foreign_source_packets_total"), "4");
    assert_eq!(v("weftnet_pod_port_malformed_frames_total"), "5");
    assert_eq!(v("weftnet_pod_port_tx_frames_total"), "20");
    assert_eq!(v("weftnet_pod_port_write_errors_total"), "6");
    assert!(
        !text(Snapshot::default()).contains("pod_port"),
        "no pod port series outside chained mode"
    );
}
