//! Tests of `weftnet status`: the report's text and JSON renderings.

use super::*;
use crate::dataplane::PeerStats;
use std::time::Duration;
use weftnet_proto::keys::PrivateKey;
use weftnet_proto::node::{SeedSource, SeedState};

#[test]
fn peer_json_is_flat_and_reads_back() {
    let key = PrivateKey::generate().public_key();
    let report = PeerReport {
        peer: Peer {
            public_key: key,
            endpoint: "192.0.2.7:51820".parse().ok(),
            allowed_ips: vec!["10.0.2.0/24".parse().expect("net")],
            persistent_keepalive: Some(25),
        },
        stats: PeerStats {
            since_handshake: Some(Duration::from_millis(7_900)),
            rx_bytes: 1,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            path_mtu: Some(1440),
        },
    };
    let json = serde_json::to_value(PeerStatus::from(&report)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "public_key": key.to_base64(),
            "endpoint": "192.0.2.7:51820",
            "allowed_ips": ["10.0.2.0/24"],
            "persistent_keepalive": 25,
            "latest_handshake_secs": 7,
            "rx_bytes": 1,
            "tx_bytes": 2,
            "rx_packets": 3,
            "tx_packets": 4,
            "path_mtu": 1440,
        })
    );
    let back: PeerStatus = serde_json::from_value(json).expect("reads back");
    assert_eq!(back.peer, report.peer);
    assert!(back.render().contains("allowed ips: 10.0.2.0/24"));
    assert!(back.render().contains("path mtu: 1440"));
}

fn seed(seed: &str, state: SeedState) -> SeedReport {
    SeedReport::from(&SeedStatus {
        seed: seed.into(),
        source: SeedSource::Join,
        address: seed.parse().ok(),
        state,
    })
}

#[test]
fn seeds_are_shown_with_their_state() {
    let json =
        serde_json::to_value(seed("192.0.2.1:51820", SeedState::NotAnswering)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "seed": "192.0.2.1:51820",
            "source": "join",
            "address": "192.0.2.1:51820",
            "state": "not_answering",
        })
    );
    let seeds = vec![
        seed("192.0.2.1:51820", SeedState::Answering),
        seed("seed.example:51820", SeedState::Unresolved),
    ];
    assert_eq!(
        render_seeds(&seeds),
        "  seeds: 192.0.2.1:51820 answering, seed.example:51820 unresolved\n"
    );
    let many: Vec<SeedReport> = (0..20)
        .map(|i| {
            let state = if i < 17 {
                SeedState::Answering
            } else {
                SeedState::NotAnswering
            };
            seed(&format!("192.0.2.{i}:51820"), state)
        })
        .collect();
    assert_eq!(
        render_seeds(&many),
        "  seeds: 17 of 20 answering; 192.0.2.17:51820 not answering, \
             192.0.2.18:51820 not answering, 192.0.2.19:51820 not answering\n"
    );
}

#[test]
fn a_report_without_seeds_reads_back() {
    let cluster: ClusterStatus = serde_json::from_value(serde_json::json!({
        "name": "n1", "endpoint": null, "block": null, "claiming": false, "members": []
    }))
    .expect("reads back");
    assert!(cluster.seeds.is_empty());
}
