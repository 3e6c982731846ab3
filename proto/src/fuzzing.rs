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

/// `IpHeader::parse` on arbitrary bytes; a parsed length never exceeds the input.
pub fn ip_header(data: &[u8]) {
    if let Ok(h) = IpHeader::parse(data) {
        assert!(h.total_len <= data.len());
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
