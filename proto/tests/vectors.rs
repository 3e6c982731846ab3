//! Checks the test vectors written in `proto/PROTOCOL.md` section 5 against the code.
//! The vectors are parsed from the document itself, so the spec and the code cannot
//! drift apart.

use ipnet::IpNet;
use std::net::IpAddr;
use weftnet_proto::keys::PrivateKey;
use weftnet_proto::router::{DropReason, Router};
use weftnet_proto::wire::{classify, Datagram, WireError};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    std::fs::read_to_string(path).expect("PROTOCOL.md is readable")
}

/// The lines of the first code block after the heading that starts with `heading`.
fn block(spec: &str, heading: &str) -> Vec<String> {
    let start = spec
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let rest = &spec[start..];
    let open = rest.find("```\n").expect("code block") + 4;
    let close = rest[open..].find("```").expect("closed block") + open;
    rest[open..close]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn public_key_derivation() {
    let lines = block(&spec(), "### 5.1");
    let field = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .expect("field present")
            .to_string()
    };
    let private = PrivateKey::from_base64(&field("private")).expect("valid private key");
    assert_eq!(private.public_key().to_base64(), field("public"));
}

fn datagram(input: &str) -> Vec<u8> {
    let (hex_part, extra) = match input.split_once('+') {
        Some((h, e)) => (h, e),
        None => (input, ""),
    };
    let mut bytes: Vec<u8> = Vec::new();
    for token in hex_part.split_whitespace() {
        if let Some(first) = token.strip_suffix("...") {
            bytes.push(u8::from_str_radix(first, 16).expect("hex"));
            continue;
        }
        for i in (0..token.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&token[i..i + 2], 16).expect("hex"));
        }
    }
    let extra_len: usize = extra
        .split_whitespace()
        .next()
        .map(|n| n.parse().expect("count"))
        .unwrap_or(0);
    bytes.resize(bytes.len() + extra_len, 0);
    bytes
}

fn hex_after(text: &str, key: &str) -> u32 {
    let at = text.find(key).expect("key") + key.len();
    let token = text[at..]
        .trim_start()
        .trim_start_matches("0x")
        .split(|c: char| !c.is_ascii_hexdigit())
        .next()
        .expect("number");
    u32::from_str_radix(token, 16).expect("hex number")
}

#[test]
fn port_demultiplexing() {
    let lines = block(&spec(), "### 5.2");
    assert!(lines.len() >= 7);
    for line in lines {
        let (input, expect) = line.split_once("->").expect("vector line");
        let got = classify(&datagram(input));
        let expect = expect.trim();
        match expect.split(',').next().expect("kind") {
            "handshake initiation" => assert_eq!(got, Ok(Datagram::HandshakeInit), "{line}"),
            k if k.starts_with("control") => assert_eq!(got, Ok(Datagram::Control), "{line}"),
            "handshake response" | "cookie reply" | "transport data" => {
                let receiver = hex_after(expect, "receiver");
                let slot = hex_after(expect, "slot");
                let d = got.unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_eq!(d.receiver(), Some(receiver), "{line}");
                assert_eq!(Datagram::peer_slot(receiver), slot, "{line}");
                let kind_ok = match d {
                    Datagram::HandshakeResponse { .. } => expect.starts_with("handshake response"),
                    Datagram::CookieReply { .. } => expect.starts_with("cookie reply"),
                    Datagram::Data { .. } => expect.starts_with("transport data"),
                    Datagram::HandshakeInit | Datagram::Control => false,
                };
                assert!(kind_ok, "{line}: got {d:?}");
            }
            k if k.starts_with("malformed") => assert!(
                matches!(
                    got,
                    Err(WireError::Length { .. }) | Err(WireError::Reserved)
                ),
                "{line}: got {got:?}"
            ),
            k if k.starts_with("unknown type") => {
                let t = hex_after(k, "type") as u8;
                assert_eq!(got, Err(WireError::UnknownType(t)), "{line}");
            }
            other => panic!("unknown expectation {other:?}"),
        }
    }
}

fn packet(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[3] = 20;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p
        }
        _ => panic!("mixed families"),
    }
}

#[test]
fn crypto_key_routing() {
    let text = spec();
    let section = &text[text.find("### 5.3").expect("section")..];
    let mut router = Router::new();
    // "Peer 1 owns A and B, peer 2 owns C and D:" (the prose above the block)
    let prose = &section[..section.find("```").expect("block")];
    let prose = prose.replace('\n', " ").replace("Peer ", "peer ");
    for clause in prose.split("peer ").skip(1) {
        let Some((id, rest)) = clause.split_once(" owns ") else {
            continue;
        };
        let id: u32 = id.trim().parse().expect("peer id");
        for token in rest.split('`').skip(1).step_by(2) {
            let net: IpNet = token.parse().expect("prefix");
            router.add_prefix(net, id);
        }
    }
    let lines = block(&text, "### 5.3");
    assert!(lines.len() >= 8);
    let other_v4: IpAddr = "10.47.0.1".parse().expect("addr");
    let other_v6: IpAddr = "fd47::1".parse().expect("addr");
    for line in lines {
        let (input, expect) = line.split_once("->").expect("vector line");
        let expect = expect.split_whitespace().collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = input.split_whitespace().collect();
        let addr: IpAddr = words.last().expect("address").parse().expect("address");
        let other = if addr.is_ipv4() { other_v4 } else { other_v6 };
        if words[0] == "outbound" {
            let got = router.outbound(&packet(other, addr)).map(|(p, _)| p);
            match expect.as_str() {
                "no_route" => assert_eq!(got, Err(DropReason::NoRoute), "{line}"),
                e => {
                    let want: u32 = e
                        .trim_start_matches("peer ")
                        .split_whitespace()
                        .next()
                        .expect("peer")
                        .parse()
                        .expect("peer id");
                    assert_eq!(got, Ok(want), "{line}");
                }
            }
        } else {
            let peer: u32 = words[3].trim_end_matches(',').parse().expect("peer id");
            let got = router.inbound(peer, &packet(addr, other)).map(|_| ());
            match expect.as_str() {
                "accept" => assert_eq!(got, Ok(()), "{line}"),
                "source_not_allowed" => {
                    assert_eq!(got, Err(DropReason::SourceNotAllowed), "{line}")
                }
                other => panic!("unknown expectation {other:?}"),
            }
        }
    }
}

/// §7.10: every captured IGMP/MLD packet parses as link control and names the group in
/// its description; the general queries the spec lists are exactly what the querier
/// builds.
#[test]
fn multicast_packets() {
    use weftnet_proto::multicast::{parse_control, GroupConfig, Querier};
    let text = spec();
    let section = &text[text.find("### 7.10").expect("section 7.10")..];
    let mut packets: Vec<(String, Vec<u8>)> = Vec::new();
    for line in block(section, "### 7.10") {
        if line.chars().all(|c| c.is_ascii_hexdigit()) {
            let bytes = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"));
            packets
                .last_mut()
                .expect("a description first")
                .1
                .extend(bytes);
        } else {
            packets.push((line, Vec::new()));
        }
    }
    assert!(packets.len() >= 10);
    for (what, bytes) in &packets {
        let parsed = parse_control(bytes);
        if what.starts_with("router solicitation") {
            assert!(parsed.is_err(), "{what}: not IGMP/MLD");
            continue;
        }
        let msg = parsed.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let group = what
            .split(|c: char| c.is_whitespace() || "(){},".contains(c))
            .filter_map(|w| w.parse::<IpAddr>().ok())
            .find(|a| a.is_multicast())
            .expect("a group in the description");
        assert!(
            format!("{msg:?}").contains(&group.to_string()),
            "{what}: {msg:?}"
        );
    }
    // The querier's general queries, byte for byte.
    let queries = block(
        &section[section.find("General queries").expect("queries")..],
        "General",
    );
    let hex: Vec<String> = queries
        .iter()
        .filter(|l| l.chars().all(|c| c.is_ascii_hexdigit()))
        .cloned()
        .collect();
    let igmp = hex[0].clone();
    let mld = format!("{}{}", hex[1], hex[2]);
    let q = Querier::new(GroupConfig::default(), std::time::Instant::now());
    let to_hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        to_hex(q.igmp_general_query(std::net::Ipv4Addr::UNSPECIFIED)),
        igmp
    );
    assert_eq!(
        to_hex(q.mld_general_query("fe80::1".parse().expect("addr"))),
        mld
    );
}
