//! Checks the gossip test vectors written in `proto/PROTOCOL.md` §6.12 and §6.13 against the
//! code. The vectors are parsed from the document, so the spec and the code cannot
//! drift apart silently (like `tests/vectors.rs` does for §5).

use super::codec::{
    check_sender_mac, decode_plaintext, sender_mac, signed_message, Entry, Header, Message, Proof,
    MAC_AT,
};
use super::digest::entry_hash;
use super::error::GossipError;
use super::member::{Claim, Rank};
use super::record::{NodeRecord, RecordBody};
use super::seal::{derive_key, key_id, ClusterKey, Keyring, Receiver};
use super::transmit::JOIN_PADDED_LEN;
use crate::cert::{Ca, Certificate};
use crate::identity::Signer;
use crate::keys::{PrivateKey, PublicKey};

const SPEC: &str = include_str!("../../PROTOCOL.md");

/// `name value` lines of the first code block after the heading `heading`.
fn block(heading: &str) -> Vec<(String, String)> {
    let start = SPEC
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let rest = &SPEC[start..];
    let open = rest.find("```\n").expect("code block") + 4;
    let close = rest[open..].find("```").expect("closed block") + open;
    rest[open..close]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once(char::is_whitespace)?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn field<'a>(lines: &'a [(String, String)], name: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name}"))
}

/// A one-line hex field.
fn hex_field(lines: &[(String, String)], name: &str) -> Vec<u8> {
    hex::decode(field(lines, name).replace(' ', "")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Concatenates a hex field continued on lines starting with `..`.
fn long_hex(heading: &str, name: &str) -> Vec<u8> {
    let start = SPEC.find(heading).expect("heading");
    let rest = &SPEC[start..];
    let open = rest.find("```\n").expect("code block") + 4;
    let close = rest[open..].find("```").expect("closed block") + open;
    let mut out = String::new();
    let mut inside = false;
    for line in rest[open..close].lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix(name) {
            if v.starts_with(char::is_whitespace) {
                inside = true;
                out.push_str(v.trim());
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("..") {
                out.push_str(v.trim());
                continue;
            }
            inside = false;
        }
    }
    hex::decode(out.replace(' ', "")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn arr32(v: &[u8]) -> [u8; 32] {
    v.try_into().expect("32 bytes")
}

#[test]
fn key_derivation() {
    let lines = block("#### 6.12.1");
    let secret = arr32(&hex_field(&lines, "secret"));
    let key = derive_key(&secret);
    assert_eq!(hex::encode(key), field(&lines, "key"));
    assert_eq!(hex::encode(key_id(&key)), field(&lines, "key_id"));
    assert_eq!(ClusterKey::derive(&secret).id(), key_id(&key));
}

/// The sender and receiver of §6.12.2-6.12.3 (private keys `11` × 32, `22` × 32).
fn pair() -> (PrivateKey, PrivateKey) {
    (
        PrivateKey::from_bytes([0x11; 32]),
        PrivateKey::from_bytes([0x22; 32]),
    )
}

/// Prints a value the spec should hold, then checks it (so a failing vector shows
/// what the code computes).
fn check_hex(h: &str, name: &str, got: &[u8]) {
    let want = long_hex(h, name);
    assert_eq!(hex::encode(got), hex::encode(want), "{h} {name}");
}

#[test]
fn sealed_datagram() {
    let keys = block("#### 6.12.1");
    let secret = arr32(&hex_field(&keys, "secret"));
    let h = "#### 6.12.2";
    let lines = block(h);
    let (sender, receiver_key) = pair();
    assert_eq!(
        hex::encode(sender.public_key().as_bytes()),
        field(&lines, "sender")
    );
    let receiver = receiver_key.public_key();
    assert_eq!(hex::encode(receiver.as_bytes()), field(&lines, "receiver"));
    let pair_key = Signer::new(&sender).pair_key(&receiver).expect("pair");
    assert_eq!(
        Signer::new(&receiver_key).pair_key(&sender.public_key()),
        Some(pair_key)
    );
    check_hex(h, "pair_key", &pair_key);
    let mut header = Header {
        sender: sender.public_key(),
        epoch: field(&lines, "epoch").parse().expect("epoch"),
        seq: field(&lines, "seq").parse().expect("seq"),
        mac: [0; 16],
    };
    let probe =
        u32::from_str_radix(field(&lines, "ping").trim_start_matches("0x"), 16).expect("probe");
    let mut plaintext = Vec::new();
    header.encode(&mut plaintext);
    Message::Ping { probe }.encode(&mut plaintext);
    header.mac = sender_mac(&pair_key, &plaintext);
    check_hex(h, "mac", &header.mac);
    plaintext[MAC_AT..MAC_AT + 16].copy_from_slice(&header.mac);
    check_hex(h, "plaintext", &plaintext);
    assert!(check_sender_mac(&pair_key, &mut plaintext.clone()));
    let nonce: [u8; 24] = hex_field(&lines, "nonce").try_into().expect("24 bytes");
    let datagram = ClusterKey::derive(&secret).seal(Receiver::Key(&receiver), &nonce, &plaintext);
    check_hex(h, "datagram", &datagram);
    let ring = Keyring::new(&[[9; 32], secret]).expect("keys");
    let mut opened = Vec::new();
    assert_eq!(ring.open(&datagram, &receiver, &mut opened), Ok(false));
    let (got, messages) = decode_plaintext(&opened).expect("decodes");
    assert_eq!(got, header);
    assert_eq!(messages, vec![Message::Ping { probe }]);
    // Any other receiver drops it.
    let other = PublicKey::from_bytes([0x33; 32]);
    assert_eq!(
        ring.open(&datagram, &other, &mut opened),
        Err(GossipError::Misdirected)
    );
}

#[test]
fn join_to_an_unknown_receiver() {
    let keys = block("#### 6.12.1");
    let secret = arr32(&hex_field(&keys, "secret"));
    let h = "#### 6.12.3";
    let lines = block(h);
    let (sender, _) = pair();
    let header = Header {
        sender: sender.public_key(),
        epoch: field(&lines, "epoch").parse().expect("epoch"),
        seq: field(&lines, "seq").parse().expect("seq"),
        mac: [0; 16],
    };
    let padding: usize = field(&lines, "padding").parse().expect("padding");
    let mut plaintext = Vec::new();
    header.encode(&mut plaintext);
    let messages = vec![
        Message::Join { cookie: None },
        Message::Padding { len: padding },
    ];
    for m in &messages {
        m.encode(&mut plaintext);
    }
    check_hex(h, "plaintext", &plaintext);
    let nonce: [u8; 24] = hex_field(&lines, "nonce").try_into().expect("24 bytes");
    let datagram = ClusterKey::derive(&secret).seal(Receiver::Unknown, &nonce, &plaintext);
    assert_eq!(datagram.len(), JOIN_PADDED_LEN);
    check_hex(h, "datagram", &datagram);
    let mut opened = Vec::new();
    let anyone = PublicKey::from_bytes([0x44; 32]);
    let ring = Keyring::new(&[secret]).expect("key");
    assert_eq!(ring.open(&datagram, &anyone, &mut opened), Ok(true));
    assert_eq!(
        decode_plaintext(&opened).expect("decodes"),
        (header, messages)
    );
}

#[test]
fn entry_encoding_signature_and_hash() {
    let h = "#### 6.12.4";
    let lines = block(h);
    let owner = PrivateKey::from_bytes(arr32(&hex_field(&lines, "private")));
    let key = owner.public_key();
    assert_eq!(hex::encode(key.as_bytes()), field(&lines, "key"));
    let num = |n: &str| -> u64 { field(&lines, n).parse().expect("number") };
    let rank = match field(&lines, "state") {
        "alive" => Rank::Alive,
        "suspect" => Rank::Suspect,
        other => panic!("state {other}"),
    };
    let record = NodeRecord {
        public_key: key,
        name: field(&lines, "name").trim_matches('"').to_string(),
        endpoint: field(&lines, "endpoint").parse().expect("endpoint"),
        prefixes: field(&lines, "prefixes")
            .split_whitespace()
            .map(|p| p.parse().expect("prefix"))
            .collect(),
        version: num("version"),
        certificate: None,
        handover: None,
    };
    let claim = Claim {
        epoch: num("epoch"),
        incarnation: num("incarnation"),
        rank,
    };
    let body = RecordBody::from_record(&record);
    check_hex(h, "body_hash", &body.hash());
    let m = signed_message(
        &key,
        claim.epoch,
        claim.incarnation,
        Rank::Alive,
        record.version,
        &body.hash(),
    );
    check_hex(h, "signed", &m);
    let signature = Signer::new(&owner).sign(&m);
    check_hex(h, "signature", &signature);
    let entry = Entry {
        key,
        claim,
        version: record.version,
        record: Some(body.clone()),
        remaining_secs: 0,
        proof: Proof {
            signed: Rank::Alive,
            body_hash: body.hash(),
            signature,
        },
    };
    assert!(entry.verify());
    let mut bytes = Vec::new();
    entry.encode(&mut bytes);
    check_hex(h, "encoded", &bytes);
    let hash = entry_hash(&key, &entry.claim, entry.version);
    assert_eq!(format!("{hash:016x}"), field(&lines, "hash"));
    // the bucket of the key (first 10 bits)
    let leaf: usize = field(&lines, "leaf").parse().expect("leaf");
    assert_eq!(super::digest::leaf_of(&key), leaf);
}

#[test]
fn certificate_encoding() {
    let h = "### 8.4 Test vector";
    let lines = block(h);
    let ca = Ca::from_seed(&arr32(&hex_field(&lines, "ca_seed")));
    check_hex(h, "ca_key", &ca.public_key());
    let cert = ca
        .issue(
            field(&lines, "name").trim_matches('"'),
            arr32(&hex_field(&lines, "public_key")),
            field(&lines, "blocks")
                .split_whitespace()
                .map(|p| p.parse().expect("block"))
                .collect(),
            field(&lines, "may_claim") == "yes",
            field(&lines, "not_before").parse().expect("time"),
            field(&lines, "not_after").parse().expect("time"),
        )
        .expect("fits");
    check_hex(h, "encoded", &cert.encode());
    let back = Certificate::decode(&cert.encode()).expect("decodes");
    assert_eq!(back.verify(&ca.public_key(), back.not_before), Ok(()));
}

#[test]
fn handover_encoding_and_signature() {
    let h = "#### 6.13.1";
    let lines = block(h);
    let old = PrivateKey::from_bytes(arr32(&hex_field(&lines, "old_private")));
    let new = PrivateKey::from_bytes(arr32(&hex_field(&lines, "new_private")));
    check_hex(h, "old", old.public_key().as_bytes());
    check_hex(h, "new", new.public_key().as_bytes());
    let name = field(&lines, "name").trim_matches('"');
    let generation: u64 = field(&lines, "generation").parse().expect("number");
    let m = super::handover::signed_message(name, &old.public_key(), &new.public_key(), generation);
    check_hex(h, "signed", &m);
    let handover = super::Handover::sign(&Signer::new(&old), name, new.public_key(), generation);
    check_hex(h, "signature", &handover.signature);
    let mut bytes = Vec::new();
    handover.encode(&mut bytes);
    check_hex(h, "encoded", &bytes);
    assert_eq!(handover.verify(&new.public_key(), name), Ok(()));
    assert_eq!(super::Handover::decode(&bytes), Some(handover));
    // The new key's record carries it after the certificate, flagged in bit 7 of the
    // name length.
    let record = NodeRecord {
        public_key: new.public_key(),
        name: name.to_string(),
        endpoint: field(&lines, "endpoint").parse().expect("endpoint"),
        prefixes: field(&lines, "prefixes")
            .split_whitespace()
            .map(|p| p.parse().expect("prefix"))
            .collect(),
        version: 0,
        certificate: None,
        handover: Some(handover),
    };
    let body = RecordBody::from_record(&record);
    check_hex(h, "body", body.bytes());
    let back = super::codec::parse_record_body(body.bytes()).expect("parses");
    assert_eq!(back.handover, Some(handover));
}
