//! `weftnet status`: the report the daemon serves on its control socket, and its
//! rendering as text or JSON.

use crate::cli::StatusArgs;
use crate::config::DEFAULT_STATE_DIR;
use crate::control::{request, Request};
use crate::dataplane::Dataplane;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// This node and its peers, as served on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusReport {
    pub(crate) interface: String,
    pub(crate) public_key: String,
    pub(crate) listen_port: u16,
    pub(crate) addresses: Vec<String>,
    pub(crate) mtu: u32,
    pub(crate) peers: Vec<PeerStatus>,
    /// Dropped packets and rejected datagrams by reason.
    pub(crate) drops: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerStatus {
    pub(crate) public_key: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) allowed_ips: Vec<String>,
    pub(crate) persistent_keepalive: Option<u16>,
    /// Seconds since the last completed handshake; null if none yet.
    pub(crate) latest_handshake_secs: Option<u64>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
}

/// Static facts about the node that the data plane does not hold.
pub(crate) struct NodeInfo {
    pub(crate) listen_port: u16,
    pub(crate) addresses: Vec<String>,
    pub(crate) mtu: u32,
}

impl StatusReport {
    pub(crate) fn build(node: &NodeInfo, dp: &Dataplane) -> Self {
        Self {
            interface: dp.interface().to_string(),
            public_key: dp.public_key().to_base64(),
            listen_port: node.listen_port,
            addresses: node.addresses.clone(),
            mtu: node.mtu,
            peers: dp
                .peers()
                .into_iter()
                .map(|p| PeerStatus {
                    public_key: p.public_key.to_base64(),
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                    persistent_keepalive: p.persistent_keepalive,
                    latest_handshake_secs: p.since_handshake.map(|d| d.as_secs()),
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    rx_packets: p.rx_packets,
                    tx_packets: p.tx_packets,
                })
                .collect(),
            drops: dp
                .counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    fn render(&self) -> String {
        let mut s = format!(
            "interface: {}\n  public key: {}\n  listening port: {}\n  addresses: {}\n  mtu: {}\n",
            self.interface,
            self.public_key,
            self.listen_port,
            self.addresses.join(", "),
            self.mtu
        );
        for p in &self.peers {
            s.push_str(&format!("\npeer: {}\n", p.public_key));
            s.push_str(&format!(
                "  endpoint: {}\n  allowed ips: {}\n",
                p.endpoint.as_deref().unwrap_or("(none)"),
                if p.allowed_ips.is_empty() {
                    "(none)".to_string()
                } else {
                    p.allowed_ips.join(", ")
                }
            ));
            match p.latest_handshake_secs {
                Some(secs) => s.push_str(&format!("  latest handshake: {secs} seconds ago\n")),
                None => s.push_str("  latest handshake: (none)\n"),
            }
            s.push_str(&format!(
                "  transfer: {} B received, {} B sent\n",
                p.rx_bytes, p.tx_bytes
            ));
            if let Some(k) = p.persistent_keepalive {
                s.push_str(&format!("  persistent keepalive: every {k} seconds\n"));
            }
        }
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !drops.is_empty() {
            s.push_str(&format!("\ndrops: {}\n", drops.join(" ")));
        }
        s
    }
}

/// `weftnet status`.
pub(crate) fn run(args: StatusArgs) -> Result<()> {
    let dir = args
        .state
        .state_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let value = request(&dir, &Request::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let report: StatusReport = serde_json::from_value(value)?;
        print!("{}", report.render());
    }
    Ok(())
}
