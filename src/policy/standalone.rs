//! Standalone mode's policy (`[[policy]]` in the config file, for hosts outside
//! Kubernetes): per local prefix, the sources allowed in, the ports they may use, and
//! the multicast groups the prefix may send to. Each entry becomes the same per-target
//! rules the NetworkPolicy engine produces, enforced by the same nftables table:
//!
//! - `allow_from` (prefixes) and/or `ports` (`tcp/22`, `udp/5000-5010`, `sctp`) isolate
//!   ingress: only those sources (default: any) on those ports (default: any) pass;
//! - `groups` (prefixes inside 224.0.0.0/4 or ff00::/8) isolate multicast egress: the
//!   prefix may send to those groups and to every unicast address, to no other group.
//!
//! Replies to allowed connections pass both ways (the table is stateful).

use super::nft::Target;
use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use serde::Deserialize;
use weftnet_proto::policy::{AddrSet, Allow, Peers, PodKey, PodRules, PortRange, Ports, Protocol};

/// One `[[policy]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicySettings {
    /// The local addresses this entry protects (this host's overlay address, or a
    /// bridge's VMs or containers).
    pub(crate) prefix: String,
    /// Sources allowed in.
    pub(crate) allow_from: Option<Vec<String>>,
    /// Ports allowed in.
    pub(crate) ports: Option<Vec<String>>,
    /// Multicast groups the prefix may send to.
    pub(crate) groups: Option<Vec<String>>,
}

fn prefix(n: usize, what: &str, text: &str) -> Result<IpNet> {
    text.parse::<IpNet>().map(|p| p.trunc()).map_err(|_| {
        anyhow!(
            "policy #{n}: invalid {what} {text:?}: use a prefix such as 10.47.1.0/24 or fd47::/64"
        )
    })
}

fn port_range(n: usize, text: &str) -> Result<PortRange> {
    let bad = || {
        anyhow!("policy #{n}: invalid ports entry {text:?}: use PROTO, PROTO/PORT or PROTO/FIRST-LAST with PROTO tcp, udp or sctp, e.g. tcp/22 or udp/5000-5010")
    };
    let (proto, ports) = text
        .split_once('/')
        .map_or((text, None), |(a, b)| (a, Some(b)));
    let protocol = Protocol::parse(&proto.to_ascii_uppercase()).ok_or_else(bad)?;
    let (first, last) = match ports {
        None => (0, u16::MAX),
        Some(p) => {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let a: u16 = a.parse().map_err(|_| bad())?;
            let b: u16 = b.parse().map_err(|_| bad())?;
            if a == 0 || b < a {
                return Err(bad());
            }
            (a, b)
        }
    };
    Ok(PortRange {
        protocol,
        first,
        last,
    })
}

/// Every unicast address (both families), for egress rules that only limit groups.
fn unicast() -> AddrSet {
    let mut s = AddrSet::block(
        "0.0.0.0/0".parse().expect("constant"),
        &["224.0.0.0/4".parse().expect("constant")],
    );
    s.extend(&AddrSet::block(
        "::/0".parse().expect("constant"),
        &["ff00::/8".parse().expect("constant")],
    ));
    s
}

/// The `n`th entry (from 1) as a target.
fn target(n: usize, p: &PolicySettings) -> Result<Target> {
    let net = prefix(n, "prefix", &p.prefix)?;
    let key = PodKey::new("standalone", &format!("policy-{n}"));
    let ingress = if p.allow_from.is_some() || p.ports.is_some() {
        let peers = match &p.allow_from {
            None => Peers::Any,
            Some(list) => {
                let mut set = AddrSet::new();
                for s in list {
                    set.insert_net(prefix(n, "allow_from entry", s)?);
                }
                Peers::Only(set)
            }
        };
        let ports = match &p.ports {
            None => Ports::Any,
            Some(list) => Ports::Only(
                list.iter()
                    .map(|t| port_range(n, t))
                    .collect::<Result<_>>()?,
            ),
        };
        Some(vec![Allow {
            policy: key.clone(),
            peers,
            ports,
        }])
    } else {
        None
    };
    let egress = match &p.groups {
        None => None,
        Some(list) => {
            let mut groups = AddrSet::new();
            for g in list {
                let g = prefix(n, "groups entry", g)?;
                if !g.addr().is_multicast() {
                    bail!("policy #{n}: groups entry {g} is not multicast: use prefixes inside 224.0.0.0/4 or ff00::/8");
                }
                groups.insert_net(g);
            }
            Some(vec![
                Allow {
                    policy: key.clone(),
                    peers: Peers::Only(unicast()),
                    ports: Ports::Any,
                },
                Allow {
                    policy: key.clone(),
                    peers: Peers::Only(groups),
                    ports: Ports::Any,
                },
            ])
        }
    };
    Ok(Target {
        rules: PodRules {
            pod: key.clone(),
            addrs: vec![net.addr()],
            ingress,
            egress,
            policies: vec![key],
        },
        nets: vec![net],
        port: None,
    })
}

/// The `[[policy]]` entries as targets; prefixes may not overlap.
pub(crate) fn targets(entries: &[PolicySettings]) -> Result<Vec<Target>> {
    let targets: Vec<Target> = entries
        .iter()
        .enumerate()
        .map(|(i, p)| target(i + 1, p))
        .collect::<Result<_>>()?;
    for (i, a) in targets.iter().enumerate() {
        for (j, b) in targets.iter().enumerate().skip(i + 1) {
            let (x, y) = (a.nets[0], b.nets[0]);
            if x.contains(&y) || y.contains(&x) {
                bail!("policy #{} and policy #{} have overlapping prefixes ({x} and {y}): give each address one [[policy]]", i + 1, j + 1);
            }
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::policy::Direction;

    fn entry(toml_text: &str) -> Vec<PolicySettings> {
        #[derive(Deserialize)]
        struct File {
            policy: Vec<PolicySettings>,
        }
        toml::from_str::<File>(toml_text).expect("toml").policy
    }

    #[test]
    fn sources_ports_and_groups() {
        let t = targets(&entry(
            r#"
            [[policy]]
            prefix = "10.47.1.0/24"
            allow_from = ["10.47.2.0/24"]
            ports = ["tcp/22", "udp/5000-5010"]
            groups = ["239.1.0.0/16"]
            "#,
        ))
        .expect("valid");
        let r = &t[0].rules;
        let tcp = Some((Protocol::Tcp, 22));
        assert!(r.allows(Direction::Ingress, "10.47.2.9".parse().expect("ip"), tcp));
        assert!(!r.allows(Direction::Ingress, "10.47.3.9".parse().expect("ip"), tcp));
        assert!(!r.allows(
            Direction::Ingress,
            "10.47.2.9".parse().expect("ip"),
            Some((Protocol::Tcp, 23))
        ));
        assert!(r.allows(
            Direction::Ingress,
            "10.47.2.9".parse().expect("ip"),
            Some((Protocol::Udp, 5005))
        ));
        assert!(r.allows(Direction::Egress, "239.1.2.3".parse().expect("ip"), None));
        assert!(!r.allows(Direction::Egress, "239.2.0.1".parse().expect("ip"), None));
        assert!(r.allows(Direction::Egress, "10.9.9.9".parse().expect("ip"), tcp));
        assert!(r.allows(Direction::Egress, "2001:db8::1".parse().expect("ip"), tcp));
    }

    #[test]
    fn errors_name_the_entry_and_the_fix() {
        let err = |text: &str| targets(&entry(text)).expect_err("invalid").to_string();
        let e = err("[[policy]]\nprefix = \"10.0.0.0/24\"\nports = [\"tcp/http\"]");
        assert!(e.contains("policy #1") && e.contains("tcp/22"), "{e}");
        let e = err("[[policy]]\nprefix = \"10.0.0.0/24\"\ngroups = [\"10.1.0.0/16\"]");
        assert!(e.contains("not multicast"), "{e}");
        let e = err("[[policy]]\nprefix = \"10.0.0.0/16\"\n[[policy]]\nprefix = \"10.0.1.0/24\"");
        assert!(e.contains("overlapping"), "{e}");
        let e = err("[[policy]]\nprefix = \"nope\"");
        assert!(e.contains("invalid prefix"), "{e}");
    }
}
