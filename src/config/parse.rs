//! Parsers for single setting values (names, prefixes, addresses, peers). Each error is
//! one line that names the setting, the bad value and the fix.

use super::settings::PeerSettings;
use super::{Advertise, LogFormat, PeerConfig, MAX_NAME};
use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use std::net::{SocketAddr, ToSocketAddrs};
use weftnet_proto::keys::PublicKey;

/// The host name, the default node name.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weftnet".to_string())
}

pub(crate) fn parse_interface_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("invalid interface name {name:?}: use 1-15 characters from a-z, 0-9, '-', '_', '.'");
    }
    Ok(name.to_string())
}

pub(super) fn parse_address(text: &str) -> Result<IpNet> {
    text.trim().parse::<IpNet>().map_err(|_| {
        anyhow!("invalid address {text:?}: give the overlay address with its mesh prefix length, e.g. 10.47.0.1/16 or fd47::1/64")
    })
}

pub(super) fn parse_block(text: &str) -> Result<IpNet> {
    let net = text.trim().parse::<IpNet>().map_err(|_| {
        anyhow!("invalid --block {text:?}: give this node's block as a prefix, e.g. 10.244.1.0/24")
    })?;
    let max = if net.addr().is_ipv4() { 30 } else { 126 };
    if net.prefix_len() > max || net.network().is_multicast() {
        bail!("invalid --block {net}: give a unicast prefix of length {max} or shorter, e.g. 10.244.1.0/24");
    }
    Ok(net.trunc())
}

/// A `--multicast-allow` or `--multicast-deny` prefix (`what` is `allow` or `deny`).
pub(super) fn parse_multicast(text: &str, what: &str) -> Result<IpNet> {
    let net: IpNet = text.trim().parse().map_err(|_| {
        anyhow!("invalid --multicast-{what} {text:?}: give a multicast prefix such as 239.0.0.0/8 or ff05::/16")
    })?;
    if !net.network().is_multicast() {
        bail!("invalid --multicast-{what} {net}: not inside 224.0.0.0/4 or ff00::/8");
    }
    Ok(net)
}

pub(super) fn parse_advertise(text: &str) -> Result<Advertise> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(Advertise {
            ip: sa.ip(),
            port: Some(sa.port()),
        });
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| Advertise { ip, port: None })
        .map_err(|_| {
            anyhow!("invalid --advertise-address {text:?}: give an IP address (192.0.2.7) or IP:PORT (192.0.2.7:51820)")
        })
}

/// A range and the prefix length of the blocks claimed from it.
pub(crate) fn parse_range(text: &str, block: Option<u8>) -> Result<(IpNet, u8)> {
    let range = text
        .trim()
        .parse::<IpNet>()
        .map_err(|_| anyhow!("invalid --range {text:?}: give a prefix such as 10.47.0.0/16"))?;
    let range = range.trunc();
    let (default, max) = if range.addr().is_ipv4() {
        (24, 30)
    } else {
        (64, 126)
    };
    let block = block.unwrap_or(default);
    if block <= range.prefix_len() || block > max {
        bail!(
            "invalid --block-prefix-len {block} for --range {range}: choose a length from {} to {max}",
            range.prefix_len() + 1
        );
    }
    Ok((range, block))
}

/// Checks a node name (carried by gossip, shown by `status`).
pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("invalid --name {name:?}: use 1-{MAX_NAME} characters without spaces");
    }
    Ok(())
}

/// Checks a seed's form (HOST:PORT); it is resolved at each join attempt.
pub(super) fn check_join(seed: &str) -> Result<()> {
    if !seed.contains(':')
        || seed
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        bail!(
            "invalid --join {seed:?}: give HOST:PORT, e.g. 192.0.2.7:51820 or [2001:db8::7]:51820"
        );
    }
    Ok(())
}

/// A TCP address to serve HTTP on, for the setting `flag` (example port `port`).
pub(super) fn parse_listen(flag: &str, port: u16, text: &str) -> Result<SocketAddr> {
    let addr = text.parse::<SocketAddr>().map_err(|_| {
        anyhow!("invalid {flag} {text:?}: give ADDR:PORT, e.g. 0.0.0.0:{port} or 127.0.0.1:{port}")
    })?;
    if addr.port() == 0 {
        let example = SocketAddr::new(addr.ip(), port);
        bail!("invalid {flag} {text:?}: port 0 would pick a random port; give a fixed one, e.g. {example}");
    }
    Ok(addr)
}

pub(super) fn parse_log_format(text: &str) -> Result<LogFormat> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => bail!("invalid --log-format {text:?}: use text or json"),
    }
}

fn parse_prefix(peer: usize, text: &str) -> Result<IpNet> {
    let t = text.trim();
    let net = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match t.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => bail!(
                "peer #{peer}: invalid allowed_ips entry {text:?}: use a prefix such as 10.47.9.0/24 or fd47::/64"
            ),
        },
    };
    Ok(net.trunc())
}

fn parse_endpoint(peer: usize, text: &str) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            anyhow!("peer #{peer}: invalid endpoint {text:?}: use HOST:PORT, e.g. 192.0.2.7:51820 or [2001:db8::7]:51820")
        })
}

/// The `index`th `[[peer]]` table (from 1, as errors count them).
pub(super) fn parse_peer(index: usize, p: PeerSettings) -> Result<PeerConfig> {
    let public_key = PublicKey::from_base64(&p.public_key).map_err(|e| {
        anyhow!("peer #{index}: invalid public_key ({e}): use the output of `weftnet pubkey` or `wg pubkey`")
    })?;
    let endpoint = p
        .endpoint
        .as_deref()
        .map(|e| parse_endpoint(index, e))
        .transpose()?;
    let allowed_ips = p
        .allowed_ips
        .iter()
        .map(|s| parse_prefix(index, s))
        .collect::<Result<Vec<_>>>()?;
    Ok(PeerConfig {
        public_key,
        endpoint,
        allowed_ips,
        persistent_keepalive: p.persistent_keepalive.filter(|k| *k > 0),
    })
}
