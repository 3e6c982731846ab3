//! What a node needs before gossip starts: the cluster secrets, a boot epoch that grows
//! across restarts, the seeds' addresses, the underlay address to advertise, and the
//! address block claimed in an earlier run.

use anyhow::{anyhow, Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Reads the last claimed block from the state directory.
pub(crate) fn saved_block(
    state_file: &std::path::Path,
    range: IpNet,
    block_len: u8,
) -> Option<IpNet> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let block: IpNet = text.trim().parse().ok()?;
    (block.prefix_len() == block_len && range.contains(&block)).then_some(block)
}

/// The interface address for a block: its first host, with the range's prefix length
/// so that the kernel routes the whole range into the interface.
pub(crate) fn block_address(block: IpNet, range: IpNet) -> IpNet {
    let host = match block.network() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    };
    IpNet::new(host, range.prefix_len()).unwrap_or(block)
}

/// Resolves seeds written as HOST:PORT; unresolvable ones are skipped (and retried).
pub(crate) fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    seeds
        .iter()
        .filter_map(|s| s.to_socket_addrs().ok().and_then(|mut a| a.next()))
        .collect()
}

/// This host's underlay address toward `seeds` (the source the kernel would pick),
/// else toward any global destination, else `None`. No packet is sent.
pub(crate) fn detect_underlay_ip(seeds: &[SocketAddr]) -> Option<IpAddr> {
    let probes: Vec<SocketAddr> = seeds
        .iter()
        .copied()
        .chain(
            ["192.0.2.1:9".parse().ok(), "[2001:db8::1]:9".parse().ok()]
                .into_iter()
                .flatten(),
        )
        .collect();
    probes.into_iter().find_map(|to| {
        let bind: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        let ip = s.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// Reads the cluster secrets (first one sends, all are accepted).
pub(crate) fn read_secrets(files: &[PathBuf]) -> Result<Vec<[u8; 32]>> {
    use base64::Engine as _;
    files
        .iter()
        .map(|f| {
            let text = crate::keyfile::read_secret(f, "cluster secret")?;
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| {
                    anyhow!(
                        "cluster secret file {} is not a valid secret: create one with `weftnet gensecret --output {}`",
                        f.display(),
                        f.display()
                    )
                })
        })
        .collect()
}

/// A boot epoch that grows across restarts even if the clock steps back: the larger
/// of wall-clock milliseconds and the last epoch plus one, persisted in `file`.
pub(crate) fn next_epoch(file: &std::path::Path) -> Result<u64> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let last = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = now_ms.max(last.saturating_add(1));
    std::fs::write(file, format!("{epoch}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_address_is_first_host_with_range_length() {
        let range: IpNet = "10.47.0.0/16".parse().expect("net");
        let block: IpNet = "10.47.3.0/24".parse().expect("net");
        assert_eq!(block_address(block, range).to_string(), "10.47.3.1/16");
        let range6: IpNet = "fd47::/48".parse().expect("net");
        let block6: IpNet = "fd47:0:0:5::/64".parse().expect("net");
        assert_eq!(
            block_address(block6, range6).to_string(),
            "fd47:0:0:5::1/48"
        );
    }

    #[test]
    fn epochs_grow_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("epoch");
        std::fs::write(&f, format!("{}\n", u64::MAX / 2)).expect("write");
        let a = next_epoch(&f).expect("epoch");
        let b = next_epoch(&f).expect("epoch");
        assert_eq!(a, u64::MAX / 2 + 1);
        assert_eq!(b, a + 1);
    }

    #[test]
    fn saved_block_must_fit_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("block");
        let range: IpNet = "10.47.0.0/16".parse().expect("net");
        std::fs::write(&f, "10.47.9.0/24\n").expect("write");
        assert_eq!(saved_block(&f, range, 24), "10.47.9.0/24".parse().ok());
        assert_eq!(saved_block(&f, range, 25), None);
        std::fs::write(&f, "10.48.9.0/24\n").expect("write");
        assert_eq!(saved_block(&f, range, 24), None);
    }
}
