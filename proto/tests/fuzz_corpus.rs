//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry
//! points the fuzz targets use, so every `cargo test` checks them without libFuzzer.

use std::path::Path;
use weftnet_proto::fuzzing;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        f(&data);
        n += 1;
    }
    assert!(n > 0, "corpus {target} is empty");
}

#[test]
fn wire_classify_corpus() {
    replay("wire_classify", fuzzing::wire_classify);
}

#[test]
fn ip_header_corpus() {
    replay("ip_header", fuzzing::ip_header);
}

#[test]
fn pmtu_probe_corpus() {
    replay("pmtu_probe", fuzzing::pmtu_probe);
}

#[test]
fn router_inbound_corpus() {
    replay("router_inbound", fuzzing::router);
}

#[test]
fn session_datagram_corpus() {
    replay("session_datagram", fuzzing::session_datagram);
}

#[test]
fn igmp_corpus() {
    replay("igmp", fuzzing::igmp);
}

#[test]
fn mld_corpus() {
    replay("mld", fuzzing::mld);
}

#[test]
fn gossip_datagram_corpus() {
    replay("gossip_datagram", fuzzing::gossip_datagram);
}

#[test]
fn gossip_plaintext_corpus() {
    replay("gossip_plaintext", fuzzing::gossip_plaintext);
}

#[test]
fn ethernet_corpus() {
    replay("ethernet", fuzzing::ethernet);
}

#[test]
fn offload_split_corpus() {
    replay("offload_split", fuzzing::offload_split);
}

#[test]
fn offload_coalesce_corpus() {
    replay("offload_coalesce", fuzzing::offload_coalesce);
}

#[test]
fn signed_entry_corpus() {
    replay("signed_entry", fuzzing::signed_entry);
}

#[test]
fn handover_corpus() {
    replay("handover", fuzzing::handover);
}

#[test]
fn signature_corpus() {
    replay("signature", fuzzing::signature);
}

#[test]
fn certificate_corpus() {
    replay("certificate", fuzzing::certificate);
}

#[test]
fn pod_port_corpus() {
    replay("pod_port", fuzzing::pod_port);
}
