//! One peer as the control plane describes it: public key, endpoint, allowed IPs and
//! persistent keepalive, defined once. A static peer of the config file is a [`Peer`]
//! (`config::PeerConfig`); the data plane's `PeerSpec` adds gossip facts to one and its
//! `PeerReport` adds traffic counters; `weftnet status` shows it as these four JSON
//! fields (`public_key` in base64, `endpoint` as `HOST:PORT` or null, `allowed_ips` as
//! prefixes, `persistent_keepalive` in seconds or null).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use weftnet_proto::keys::PublicKey;

/// A peer: who it is, where to reach it, which prefixes it may send from and receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Peer {
    #[serde(with = "base64_key")]
    pub(crate) public_key: PublicKey,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives; `None` sends none.
    pub(crate) persistent_keepalive: Option<u16>,
}

/// A [`PublicKey`] as its base64 text, as `wg pubkey` prints it.
mod base64_key {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use weftnet_proto::keys::PublicKey;

    pub(super) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_base64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_base64(&text).map_err(|e| D::Error::custom(format!("public key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::keys::PrivateKey;

    #[test]
    fn json_form() {
        let key = PrivateKey::generate().public_key();
        let peer = Peer {
            public_key: key,
            endpoint: "[2001:db8::7]:51820".parse().ok(),
            allowed_ips: vec!["10.1.0.0/16".parse().expect("net")],
            persistent_keepalive: None,
        };
        let json = serde_json::to_value(&peer).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "public_key": key.to_base64(),
                "endpoint": "[2001:db8::7]:51820",
                "allowed_ips": ["10.1.0.0/16"],
                "persistent_keepalive": null,
            })
        );
        assert_eq!(serde_json::from_value::<Peer>(json).ok(), Some(peer));
        let bad = serde_json::json!({
            "public_key": "not base64",
            "endpoint": null,
            "allowed_ips": [],
            "persistent_keepalive": 25,
        });
        assert!(serde_json::from_value::<Peer>(bad).is_err());
    }
}
