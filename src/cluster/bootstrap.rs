//! What a node needs before gossip starts: the cluster secrets, a boot epoch that grows
//! across restarts, the seeds' addresses, the underlay address to advertise, and the
//! address block and members' endpoints saved by an earlier run.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest time one seed lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the block claimed by an earlier run, if one was saved (the reconciler
/// checks that it still fits the range).
pub(crate) fn saved_block(state_file: &std::path::Path) -> Option<IpNet> {
    std::fs::read_to_string(state_file)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the members' endpoints saved by an earlier run (lines that do not parse are
/// skipped).
pub(crate) fn saved_members(file: &std::path::Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(file)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Resolves seeds written as HOST:PORT, each within `LOOKUP_TIMEOUT`; unresolvable
/// ones are skipped (the reconciler has them looked up again).
pub(crate) async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    resolve_each(seeds)
        .await
        .into_iter()
        .filter_map(|(_, a)| a)
        .collect()
}

/// Resolves seeds written as HOST:PORT, each within `LOOKUP_TIMEOUT`: each seed with
/// its first address, or `None` if it did not resolve.
pub(crate) async fn resolve_each(seeds: &[String]) -> Vec<(String, Option<SocketAddr>)> {
    let mut out = Vec::new();
    for s in seeds {
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(s.as_str())).await;
        let addr = match found {
            Ok(Ok(mut addrs)) => addrs.next(),
            _ => None,
        };
        out.push((s.clone(), addr));
    }
    out
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

/// The start-up error when no underlay address can be found: it says what is wrong
/// (no route to the seeds, seeds that do not resolve, no address at all) and how to
/// fix it. `join` is the seeds as written, `resolved` their addresses.
pub(crate) fn no_underlay_address(join: &[String], resolved: &[SocketAddr]) -> String {
    if !resolved.is_empty() {
        let list: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
        return format!(
            "no route to the seed(s) {}: this host has no route toward them and no default route; check the underlay interface and its routes (`ip route get {}`)",
            list.join(", "),
            list[0]
        );
    }
    if !join.is_empty() {
        return format!(
            "the seed(s) {} do not resolve and this host has no default route: check the names (or give IP:PORT) and the underlay's routes, or give --advertise-address",
            join.join(", ")
        );
    }
    "this host has no global address and no default route, so other nodes cannot reach it: bring up the underlay interface, or give --advertise-address"
        .to_string()
}

/// Reads the cluster secrets (first one sends, all are accepted), zeroized when
/// dropped, as is every copy made on the way.
pub(crate) fn read_secrets(files: &[PathBuf]) -> Result<Zeroizing<Vec<[u8; 32]>>> {
    use base64::Engine as _;
    // Sized up front: a Vec that grows leaves its old buffer behind unzeroized.
    let mut secrets = Zeroizing::new(Vec::with_capacity(files.len()));
    for f in files {
        let text = crate::keyfile::read_secret(f, "cluster secret")?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .unwrap_or_default(),
        );
        let Ok(secret) = <&[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!(
                "cluster secret file {} is not a valid secret: create one with `weftnet gensecret --output {}`",
                f.display(),
                f.display()
            );
        };
        secrets.push(*secret);
    }
    Ok(secrets)
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
    fn saved_members_are_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("members");
        assert!(saved_members(&f).is_empty());
        std::fs::write(&f, "192.0.2.1:51820\ngarbage\n[2001:db8::1]:51820\n").expect("write");
        let want: Vec<SocketAddr> = vec![
            "192.0.2.1:51820".parse().expect("addr"),
            "[2001:db8::1]:51820".parse().expect("addr"),
        ];
        assert_eq!(saved_members(&f), want);
    }

    #[test]
    fn a_saved_block_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("block");
        assert_eq!(saved_block(&f), None);
        std::fs::write(&f, "10.47.9.0/24\n").expect("write");
        assert_eq!(saved_block(&f), "10.47.9.0/24".parse().ok());
        std::fs::write(&f, "garbage\n").expect("write");
        assert_eq!(saved_block(&f), None);
    }

    #[test]
    fn no_underlay_address_says_what_is_wrong() {
        let seed: SocketAddr = "10.9.9.9:51820".parse().expect("addr");
        let e = no_underlay_address(&["10.9.9.9:51820".into()], &[seed]);
        assert!(e.starts_with("no route to the seed(s) 10.9.9.9"), "{e}");
        assert!(e.contains("ip route get 10.9.9.9"), "{e}");
        assert!(!e.contains("  "), "one line, single spaces: {e}");
        assert!(!e.contains("--advertise-address"), "not blamed: {e}");
        let e = no_underlay_address(&["seed.example:51820".into()], &[]);
        assert!(e.contains("do not resolve"), "{e}");
        let e = no_underlay_address(&[], &[]);
        assert!(e.contains("no global address"), "{e}");
    }
}
