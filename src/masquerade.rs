//! Masquerading pod egress (`--masquerade`, on by default in Kubernetes mode): traffic
//! from the cluster range to destinations outside it leaves the node with the node's
//! address, as kube-proxy and other pod networks expect, while pod-to-pod traffic
//! (inside the range) and pod multicast keep their pod source. The rules live
//! in a chain of weftnet's own (`WEFTNET-POSTROUTING` in the nat table), installed with
//! the host's `iptables`/`ip6tables` (legacy or nft backend). They stay across a
//! restart (the next run adopts them as they are, so egress is never left without
//! them) and are removed when the node leaves for good, or by `weftnet uninstall`.

use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use std::process::Command;

pub(crate) const CHAIN: &str = "WEFTNET-POSTROUTING";
const COMMENT: &str = "weftnet: masquerade pod egress leaving the cluster range";

/// The masquerade rules for one range, installed until [`Masquerade::remove`].
pub(crate) struct Masquerade {
    ranges: Vec<IpNet>,
}

fn tool(range: &IpNet) -> &'static str {
    if range.addr().is_ipv4() {
        "iptables"
    } else {
        "ip6tables"
    }
}

/// Runs `TOOL -w 5 -t nat ARGS`; `Ok(false)` when the command ran and said no (for
/// `-C` checks), an error when it cannot run at all.
fn run(tool: &str, args: &[&str]) -> Result<bool> {
    let out = Command::new(tool)
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "--masquerade needs {tool}, which is not installed: install the iptables package, or give --masquerade=false"
            ),
            _ => anyhow!("cannot run {tool}: {e}"),
        })?;
    Ok(out.status.success())
}

fn must(tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| anyhow!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -t nat {} failed: {}: check that the nat table is available (modprobe iptable_nat), or give --masquerade=false",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The rules in weftnet's chain for `range`.
fn rules(range: &str) -> [Vec<String>; 3] {
    let r = range.to_string();
    let multicast = if range.contains(':') {
        "ff00::/8"
    } else {
        "224.0.0.0/4"
    };
    [
        // Multicast (data and IGMP/MLD reports) never leaves through a route: it stays
        // on the bridge and the L2 port, and must keep its pod source, which names the
        // listener of a report and the sender for ingress rules (PROTOCOL.md §7.11).
        // With br_netfilter, bridged frames pass POSTROUTING too.
        vec![
            "-s".into(),
            r.clone(),
            "-d".into(),
            multicast.into(),
            "-j".into(),
            "RETURN".into(),
        ],
        // Pod to pod: keep the source.
        vec![
            "-s".into(),
            r.clone(),
            "-d".into(),
            r.clone(),
            "-j".into(),
            "RETURN".into(),
        ],
        // Leaving the cluster: the node's address.
        vec![
            "-s".into(),
            r.clone(),
            "!".into(),
            "-d".into(),
            r,
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            COMMENT.into(),
            "-j".into(),
            "MASQUERADE".into(),
        ],
    ]
}

impl Masquerade {
    /// Creates the chain and jumps to it from POSTROUTING. A chain an earlier run left
    /// with exactly these rules is adopted untouched (so egress keeps its rules across
    /// a restart); one with other rules is reset. Returns the rules and whether the
    /// chain existed before (then a failed start must not remove it).
    pub(crate) fn install(ranges: &[IpNet]) -> Result<(Self, bool)> {
        let mut existed = false;
        for range in ranges {
            let t = tool(range);
            let wanted = rules(&range.to_string());
            // -N fails if the chain exists (from an earlier run).
            let created = run(t, &["-N", CHAIN])?;
            existed |= !created;
            let intact = !created && wanted.iter().all(|rule| has_rule(t, rule));
            if !intact {
                if !created {
                    must(t, &["-F", CHAIN])?;
                }
                for rule in &wanted {
                    let mut args = vec!["-A", CHAIN];
                    args.extend(rule.iter().map(String::as_str));
                    must(t, &args)?;
                }
            }
            if !run(t, &["-C", "POSTROUTING", "-j", CHAIN])? {
                must(t, &["-A", "POSTROUTING", "-j", CHAIN])?;
            }
            if intact {
                tracing::info!(%range, tool = t, "masquerade rules from the previous run adopted");
            } else {
                tracing::info!(%range, tool = t, "masquerading pod egress that leaves the range");
            }
        }
        Ok((
            Self {
                ranges: ranges.to_vec(),
            },
            existed,
        ))
    }

    /// Removes the jump and the chain (errors are logged: shutdown goes on).
    pub(crate) fn remove(&self) {
        for range in &self.ranges {
            remove_chain(tool(range));
        }
    }
}

/// Whether weftnet's chain has `rule` (`-C`; an error counts as no).
fn has_rule(tool: &str, rule: &[String]) -> bool {
    let mut args = vec!["-C", CHAIN];
    args.extend(rule.iter().map(String::as_str));
    run(tool, &args).unwrap_or(false)
}

/// The steps that remove the jump to the chain and the chain itself.
const REMOVAL: [&[&str]; 3] = [
    &["-D", "POSTROUTING", "-j", CHAIN],
    &["-F", CHAIN],
    &["-X", CHAIN],
];

/// Removes the jump and the chain with `tool` (errors are logged).
fn remove_chain(tool: &str) {
    for args in REMOVAL {
        match run(tool, args) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(tool, ?args, "masquerade cleanup step did nothing")
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove the masquerade rules"),
        }
    }
}

/// `weftnet uninstall`: removes the chain and the jumps to it that a daemon left
/// behind (killed, or from an older version), with `iptables` and `ip6tables` where
/// installed. Returns the tools whose chain was there.
pub(crate) fn remove_leftover() -> Result<Vec<&'static str>> {
    let mut removed = Vec::new();
    for t in ["iptables", "ip6tables"] {
        // Not installed: nothing of ours can be in its tables.
        let exists = match Command::new(t)
            .args(["-w", "5", "-t", "nat", "-S", CHAIN])
            .output()
        {
            Ok(out) => out.status.success(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => bail!("cannot run {t}: {e}: check the iptables installation"),
        };
        if !exists {
            continue;
        }
        // Every jump, in case an older daemon added one twice.
        while run(t, REMOVAL[0])? {}
        for args in &REMOVAL[1..] {
            if !run(t, args)? {
                bail!(
                    "{t} -t nat {} failed: remove the chain by hand (`{t} -t nat -S` shows what refers to it)",
                    args.join(" ")
                );
            }
        }
        removed.push(t);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_to_pod_returns_before_masquerade() {
        let [mcast, keep, nat] = rules("10.244.0.0/16");
        assert_eq!(mcast.join(" "), "-s 10.244.0.0/16 -d 224.0.0.0/4 -j RETURN");
        assert_eq!(
            rules("fd00::/48")[0].join(" "),
            "-s fd00::/48 -d ff00::/8 -j RETURN"
        );
        assert_eq!(
            keep.join(" "),
            "-s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN"
        );
        let nat = nat.join(" ");
        assert!(
            nat.starts_with("-s 10.244.0.0/16 ! -d 10.244.0.0/16"),
            "{nat}"
        );
        assert!(nat.ends_with("-j MASQUERADE"), "{nat}");
        assert_eq!(tool(&"fd00::/48".parse().expect("net")), "ip6tables");
    }
}
