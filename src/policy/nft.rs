//! The nftables side of policy enforcement: per-pod rules ([`PodRules`]) written as
//! one `inet weftnet_policy` table, replaced in one `nft -f -` transaction (create,
//! delete, create: nothing is ever half applied), its drop counters read back as
//! `nft -j` JSON, and the table removed at shutdown and by `weftnet uninstall`.
//!
//! The table (all of it weftnet's own, nothing else is touched):
//! - base chains on `forward` (pod to pod, on the bridge through `br_netfilter` and
//!   across nodes through the overlay interface) and `input` (pod to this host);
//!   `ct state established,related accept` first, so replies to allowed connections
//!   pass; IPv6 neighbour discovery passes (it is how a pod finds its gateway);
//! - verdict maps from a pod's address to its chains: `egress4/6` by source address
//!   (a chain that `return`s what is allowed and drops the rest), then `ingress4/6`
//!   by destination address (a chain that `accept`s what is allowed and drops the
//!   rest), so a packet between two local pods passes both checks;
//! - one interval set per distinct peer address set, shared by every rule that uses
//!   it, so a thousand pods cost set elements, not rules;
//! - one named counter per isolated pod and direction, in front of its final drop.
//!
//! Traffic this host sends to its own pods (`output`) is not filtered: the kubelet's
//! probes come from there, and upstream lets them through.

use anyhow::{anyhow, Context, Result};
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use weftnet_proto::policy::{AddrSet, Allow, Direction, Peers, PodKey, PodRules, Ports, Protocol};

/// The table's name (family `inet`).
pub(crate) const TABLE: &str = "weftnet_policy";

/// A rendered ruleset and which counter counts whose drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ruleset {
    /// The `nft -f` script (replaces the table atomically).
    pub(crate) script: String,
    /// Counter name to the pod and direction whose drops it counts.
    pub(crate) counters: HashMap<String, (PodKey, Direction)>,
}

/// Interned address sets: one named set per distinct set and family.
#[derive(Default)]
struct Sets {
    ids: HashMap<AddrSet, usize>,
    text: String,
}

impl Sets {
    /// The set names (`(v4, v6)`, each `None` if that family is empty) for `set`.
    fn name(&mut self, set: &AddrSet) -> (Option<String>, Option<String>) {
        let next = self.ids.len();
        let id = *self.ids.entry(set.clone()).or_insert(next);
        let (v4, v6): (Vec<String>, Vec<String>) = (
            set.v4_ranges()
                .map(|(a, b)| range(IpAddr::V4(a), IpAddr::V4(b)))
                .collect(),
            set.v6_ranges()
                .map(|(a, b)| range(IpAddr::V6(a), IpAddr::V6(b)))
                .collect(),
        );
        let fresh = id == next;
        let mut named = |fam: &str, ty: &str, elems: Vec<String>| {
            if elems.is_empty() {
                return None;
            }
            let name = format!("peers{fam}_{id}");
            if fresh {
                let _ = writeln!(
                    self.text,
                    "  set {name} {{ type {ty}; flags interval; elements = {{ {} }} }}",
                    elems.join(", ")
                );
            }
            Some(name)
        };
        (named("4", "ipv4_addr", v4), named("6", "ipv6_addr", v6))
    }
}

fn range(a: IpAddr, b: IpAddr) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The port matches of `ports`: one string per protocol (`None` for any port).
fn port_matches(ports: &Ports) -> Vec<Option<String>> {
    let Ports::Only(ranges) = ports else {
        return vec![None];
    };
    let mut out = Vec::new();
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        let of: Vec<_> = ranges.iter().filter(|r| r.protocol == proto).collect();
        if of.is_empty() {
            continue;
        }
        if of.iter().any(|r| r.is_whole_protocol()) {
            out.push(Some(format!("meta l4proto {}", proto.name())));
            continue;
        }
        let list: Vec<String> = of
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                }
            })
            .collect();
        out.push(Some(format!(
            "meta l4proto {} th dport {{ {} }}",
            proto.name(),
            list.join(", ")
        )));
    }
    out
}

/// The rules of one pod chain for `allows`, each ending in `verdict`.
fn chain_rules(sets: &mut Sets, dir: Direction, allows: &[Allow], verdict: &str, out: &mut String) {
    let field = match dir {
        Direction::Ingress => "saddr",
        Direction::Egress => "daddr",
    };
    for allow in allows {
        let peers: Vec<Option<String>> = match &allow.peers {
            Peers::Any => vec![None],
            Peers::Only(set) => {
                let (v4, v6) = sets.name(set);
                let mut p = Vec::new();
                if let Some(n) = v4 {
                    p.push(Some(format!("ip {field} @{n}")));
                }
                if let Some(n) = v6 {
                    p.push(Some(format!("ip6 {field} @{n}")));
                }
                p
            }
        };
        for peer in &peers {
            for ports in port_matches(&allow.ports) {
                let parts: Vec<&str> = [peer.as_deref(), ports.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let _ = writeln!(
                    out,
                    "    {} {verdict} comment \"{}\"",
                    parts.join(" "),
                    allow.policy
                );
            }
        }
    }
}

/// What one chain pair protects: a pod's addresses, or (standalone) local prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) rules: PodRules,
    pub(crate) nets: Vec<IpNet>,
    /// The pod's port on the bridge (its veth's host end), for multicast delivery.
    pub(crate) port: Option<String>,
}

impl Target {
    /// A pod: its addresses as host prefixes.
    pub(crate) fn pod(rules: PodRules) -> Self {
        let nets = rules.addrs.iter().map(|a| IpNet::from(*a)).collect();
        Self {
            rules,
            nets,
            port: None,
        }
    }
}

/// Replies to connections a policy allowed pass every base chain.
const ESTABLISHED: &str = "    ct state established,related accept\n";
/// Multicast membership queries and reports (IGMP, MLD) always pass.
const MEMBERSHIP: &str = "    ip protocol igmp accept\n    icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report } accept\n";
/// IPv6 neighbour discovery passes: it is how a pod finds its gateway.
const NEIGHBOURS: &str = "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n";
/// A pod's egress chains, by source address.
const EGRESS_MAPS: &str = "    ip saddr vmap @egress4\n    ip6 saddr vmap @egress6\n";
/// A pod's ingress chains, by destination address.
const INGRESS_MAPS: &str = "    ip daddr vmap @ingress4\n    ip6 daddr vmap @ingress6\n";

/// A base chain on `hook` that accepts by default, with `lines` in order.
fn base_chain(hook: &str, lines: &[&str]) -> String {
    format!(
        "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n{}  }}\n",
        lines.concat()
    )
}

/// The `bridge weftnet_policy` table: multicast delivered to a pod's bridge port passes
/// only if the pod's egress rules allow the group (when its egress is isolated) and its
/// ingress rules allow the sender (when its ingress is isolated). IGMP and MLD pass.
fn render_bridge(
    targets: &[Target],
    counters: &mut HashMap<String, (PodKey, Direction)>,
) -> String {
    let mut sets = Sets::default();
    let mut chains = String::new();
    let mut elements = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let (Some(port), pod) = (&target.port, &target.rules) else {
            continue;
        };
        if pod.ingress.is_none() && pod.egress.is_none() {
            continue;
        }
        let counter = format!("mdrop_{i}");
        let _ = writeln!(
            chains,
            "  counter {counter} {{ comment \"{} multicast\" }}",
            pod.pod
        );
        counters.insert(counter.clone(), (pod.pod.clone(), Direction::Ingress));
        let senders = format!("msrc_{i}");
        if let Some(allows) = &pod.ingress {
            let _ = writeln!(chains, "  chain {senders} {{");
            chain_rules(&mut sets, Direction::Ingress, allows, "accept", &mut chains);
            let _ = writeln!(chains, "    counter name \"{counter}\" drop\n  }}");
        }
        let entry = match &pod.egress {
            Some(allows) => {
                let chain = format!("mgrp_{i}");
                let verdict = if pod.ingress.is_some() {
                    format!("goto {senders}")
                } else {
                    "accept".to_string()
                };
                let _ = writeln!(chains, "  chain {chain} {{");
                chain_rules(&mut sets, Direction::Egress, allows, &verdict, &mut chains);
                let _ = writeln!(chains, "    counter name \"{counter}\" drop\n  }}");
                chain
            }
            None => senders,
        };
        elements.push(format!("\"{port}\" : jump {entry}"));
    }
    let mut s =
        format!("table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{\n");
    s.push_str(&sets.text);
    s.push_str(&chains);
    s.push_str("  map mcast { type ifname : verdict;");
    if !elements.is_empty() {
        let _ = write!(s, " elements = {{ {} }}", elements.join(", "));
    }
    s.push_str(" }\n");
    s.push_str(&base_chain(
        "forward",
        &[
            MEMBERSHIP,
            "    ip daddr 224.0.0.0/4 oifname vmap @mcast\n    ip6 daddr ff00::/8 oifname vmap @mcast\n",
        ],
    ));
    s.push_str("}\n");
    s
}

/// The whole table for `targets` (whose prefixes do not overlap).
pub(crate) fn render(targets: &[Target]) -> Ruleset {
    let mut sets = Sets::default();
    let mut chains = String::new();
    let mut counters = HashMap::new();
    // Map elements: (family 4/6, direction) -> "addr : jump chain".
    let mut maps: HashMap<(bool, Direction), Vec<String>> = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let pod = &target.rules;
        for dir in [Direction::Ingress, Direction::Egress] {
            let Some(allows) = pod.direction(dir) else {
                continue;
            };
            let short = match dir {
                Direction::Ingress => "in",
                Direction::Egress => "out",
            };
            let chain = format!("{short}_{i}");
            let counter = format!("drop_{short}_{i}");
            let verdict = match dir {
                Direction::Ingress => "accept",
                Direction::Egress => "return",
            };
            let _ = writeln!(
                chains,
                "  counter {counter} {{ comment \"{} {}\" }}",
                pod.pod,
                dir.name()
            );
            let _ = writeln!(chains, "  chain {chain} {{");
            chain_rules(&mut sets, dir, allows, verdict, &mut chains);
            let _ = writeln!(chains, "    counter name \"{counter}\" drop\n  }}");
            counters.insert(counter, (pod.pod.clone(), dir));
            for addr in &target.nets {
                maps.entry((addr.addr().is_ipv4(), dir))
                    .or_default()
                    .push(format!("{addr} : jump {chain}"));
            }
        }
    }
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    s.push_str(&sets.text);
    s.push_str(&chains);
    for (v4, dir) in [
        (true, Direction::Egress),
        (false, Direction::Egress),
        (true, Direction::Ingress),
        (false, Direction::Ingress),
    ] {
        let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
        let _ = write!(
            s,
            "  map {}{} {{ type {ty} : verdict; flags interval;",
            dir.name(),
            if v4 { 4 } else { 6 }
        );
        if let Some(el) = maps.get(&(v4, dir)) {
            let _ = write!(s, " elements = {{ {} }}", el.join(", "));
        }
        s.push_str(" }\n");
    }
    // Pod to pod and pod to this host are filtered alike; loopback is not a pod's.
    let filtered = [
        ESTABLISHED,
        MEMBERSHIP,
        NEIGHBOURS,
        EGRESS_MAPS,
        INGRESS_MAPS,
    ]
    .concat();
    s.push_str(&base_chain("forward", &[&filtered]));
    s.push_str(&base_chain("input", &["    iif lo accept\n", &filtered]));
    s.push_str(&base_chain(
        "output",
        &["    oif lo accept\n", ESTABLISHED, NEIGHBOURS, EGRESS_MAPS],
    ));
    s.push_str("}\n");
    s.push_str(&render_bridge(targets, &mut counters));
    Ruleset {
        script: s,
        counters,
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run nft ({e}): install nftables (Debian/Ubuntu: apt-get install nftables), or run with --network-policy=false"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .context("cannot write the ruleset to nft")?;
    }
    let out = child.wait_with_output().context("nft did not finish")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(anyhow!("nft {} failed: {first}", args.join(" ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the table with `ruleset` in one transaction.
pub(crate) fn apply(ruleset: &Ruleset) -> Result<()> {
    nft(&["-f", "-"], Some(&ruleset.script)).map(|_| ())
}

/// Whether weftnet's `inet` policy table is installed (an earlier run left it).
pub(crate) fn present() -> Result<bool> {
    let list = nft(&["list", "tables"], None)?;
    Ok(list
        .lines()
        .any(|l| l.trim() == format!("table inet {TABLE}")))
}

/// Removes the table (nothing if it is not there).
pub(crate) fn remove() -> Result<bool> {
    let list = nft(&["list", "tables"], None)?;
    let mut removed = false;
    for family in ["inet", "bridge"] {
        if list
            .lines()
            .any(|l| l.trim() == format!("table {family} {TABLE}"))
        {
            nft(&["delete", "table", family, TABLE], None)?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Packets each named counter of the table has counted.
pub(crate) fn read_counters() -> Result<HashMap<String, u64>> {
    let text = nft(&["-j", "list", "counters"], None)?;
    Ok(parse_counters(&text))
}

fn parse_counters(json: &str) -> HashMap<String, u64> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    let c = i.get("counter").filter(|c| c["table"] == TABLE)?;
                    Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::policy::{PortRange, Protocol};

    fn pod(
        name: &str,
        ip: &str,
        ingress: Option<Vec<Allow>>,
        egress: Option<Vec<Allow>>,
    ) -> PodRules {
        PodRules {
            pod: PodKey::new("x", name),
            addrs: vec![ip.parse().expect("ip")],
            ingress,
            egress,
            policies: vec![PodKey::new("x", "p")],
        }
    }

    fn set(addrs: &[&str]) -> AddrSet {
        let mut s = AddrSet::new();
        for a in addrs {
            s.insert(a.parse().expect("ip"));
        }
        s
    }

    #[test]
    fn renders_chains_sets_maps_and_counters() {
        let allow = Allow {
            policy: PodKey::new("x", "p"),
            peers: Peers::Only(set(&["10.0.0.2", "10.0.0.3", "fd00::1"])),
            ports: Ports::Only(vec![
                PortRange {
                    protocol: Protocol::Tcp,
                    first: 80,
                    last: 80,
                },
                PortRange {
                    protocol: Protocol::Tcp,
                    first: 8000,
                    last: 8080,
                },
                PortRange {
                    protocol: Protocol::Udp,
                    first: 0,
                    last: u16::MAX,
                },
            ]),
        };
        let r = render(&[
            Target::pod(pod(
                "a",
                "10.0.0.1",
                Some(vec![allow.clone()]),
                Some(vec![]),
            )),
            Target::pod(pod("b", "10.0.0.9", None, Some(vec![allow]))),
        ]);
        let s = &r.script;
        assert!(
            s.starts_with("table inet weftnet_policy\ndelete table inet weftnet_policy\n"),
            "{s}"
        );
        // One set per family, shared by both pods.
        assert_eq!(s.matches("set peers4_").count(), 1, "{s}");
        assert!(s.contains("elements = { 10.0.0.2-10.0.0.3 }"), "{s}");
        assert!(
            s.contains("ip saddr @peers4_0 meta l4proto tcp th dport { 80, 8000-8080 } accept"),
            "{s}"
        );
        assert!(
            s.contains("ip6 saddr @peers6_0 meta l4proto udp accept"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr @peers4_0 meta l4proto tcp th dport { 80, 8000-8080 } return"),
            "{s}"
        );
        assert!(s.contains("10.0.0.1/32 : jump in_0"), "{s}");
        assert!(s.contains("10.0.0.1/32 : jump out_0"), "{s}");
        assert!(s.contains("10.0.0.9/32 : jump out_1"), "{s}");
        assert!(!s.contains("jump in_1"), "b's ingress is open: {s}");
        assert_eq!(r.counters.len(), 3);
        assert_eq!(
            r.counters["drop_out_0"],
            (PodKey::new("x", "a"), Direction::Egress)
        );
    }

    /// nft itself accepts the script (`nft -c`: checked, not applied).
    #[test]
    fn nft_accepts_the_script() {
        let allow = Allow {
            policy: PodKey::new("x", "p"),
            peers: Peers::Only(AddrSet::block(
                "10.0.0.0/16".parse().expect("net"),
                &["10.0.1.0/24".parse().expect("net")],
            )),
            ports: Ports::Only(vec![PortRange {
                protocol: Protocol::Sctp,
                first: 5,
                last: 9,
            }]),
        };
        let any = Allow {
            policy: PodKey::new("x", "q"),
            peers: Peers::Any,
            ports: Ports::Any,
        };
        let mut six = pod("c", "fd00::5", Some(vec![any.clone()]), None);
        six.addrs.push("10.0.0.7".parse().expect("ip"));
        let prefix = Target {
            rules: pod("net", "10.1.0.1", Some(vec![]), None),
            nets: vec!["10.1.0.0/24".parse().expect("net")],
            port: None,
        };
        let mut both = Target::pod(pod(
            "m",
            "10.0.0.8",
            Some(vec![any.clone()]),
            Some(vec![any.clone()]),
        ));
        both.port = Some("wf0000beef".into());
        let mut recv = Target::pod(pod("r", "10.0.0.9", Some(vec![any.clone()]), None));
        recv.port = Some("wf0000cafe".into());
        for pods in [
            vec![],
            vec![
                Target::pod(pod("a", "10.0.0.1", Some(vec![allow, any]), Some(vec![]))),
                Target::pod(six),
                prefix,
                both,
                recv,
            ],
        ] {
            let r = render(&pods);
            let out = Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    c.stdin
                        .take()
                        .expect("stdin")
                        .write_all(r.script.as_bytes())?;
                    c.wait_with_output()
                })
                .expect("run nft (apt-get install nftables)");
            assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                r.script
            );
        }
    }

    #[test]
    fn counters_parse_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "inet", "name": "drop_in_0", "table": "weftnet_policy", "handle": 3, "packets": 7, "bytes": 420}}]}"#;
        let c = parse_counters(json);
        assert_eq!(c.get("drop_in_0"), Some(&7));
        assert!(parse_counters("not json").is_empty());
    }
}
