//! The CNI operations ADD, DEL and CHECK: each validates its environment, then drives
//! the allocation store and netlink, and ADD rolls back whatever it did on failure.

use super::config::{self, NetConf};
use super::error::{code, CniError, Result};
use super::ipam::{Ipam, Lease};
use super::netns::{in_netns, on_host};
use super::result::{format_mac, AddResult, Interface};
use crate::netlink::{self, Link};
use std::fs::File;
use std::net::IpAddr;

/// The CNI_* variables a runtime passes (CNI_ARGS and CNI_PATH are not needed).
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    pub(crate) container_id: Option<String>,
    pub(crate) netns: Option<String>,
    pub(crate) ifname: Option<String>,
}

impl Env {
    /// Reads the variables; an empty value counts as absent.
    pub(crate) fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    pub(super) fn container_id(&self) -> Result<&str> {
        let id = required(&self.container_id, "CNI_CONTAINERID", "the container's id")?;
        let valid = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} is invalid: use letters, digits, '_', '.' and '-', starting with a letter or digit"),
            ));
        }
        Ok(id)
    }

    pub(super) fn ifname(&self) -> Result<&str> {
        let name = required(
            &self.ifname,
            "CNI_IFNAME",
            "the interface name inside the pod, e.g. eth0",
        )?;
        if name.len() > 15
            || name == "."
            || name == ".."
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {name:?} is not a valid interface name: use at most 15 characters without '/', ':' or spaces, e.g. eth0"),
            ));
        }
        Ok(name)
    }

    fn netns_path(&self) -> Result<&str> {
        required(
            &self.netns,
            "CNI_NETNS",
            "the path of the pod's network namespace, e.g. /var/run/netns/NAME",
        )
    }
}

fn required<'a>(value: &'a Option<String>, var: &str, what: &str) -> Result<&'a str> {
    value.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            format!("{var} is not set: set it to {what}"),
        )
    })
}

fn open_netns(path: &str) -> Result<File> {
    File::open(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            code::UNKNOWN_CONTAINER
        } else {
            code::INVALID_ENV
        };
        CniError::new(code, format!("cannot open network namespace {path} (CNI_NETNS): {e}: pass the path of the pod's network namespace"))
    })
}

/// The host end's name: `wf` + 8 hex digits of a stable hash (FNV-1a) of the container
/// id and interface name, so DEL finds what ADD made, across plugin versions.
pub(super) fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("wf{:08x}", (hash ^ (hash >> 32)) as u32)
}

fn bridge(conf: &NetConf) -> Result<Link> {
    let name = conf.bridge.clone();
    on_host(|nl| async move { Ok(nl.link(&name).await?) })?.ok_or_else(|| {
        CniError::new(
            code::TRY_AGAIN,
            format!("bridge {} does not exist on this node: is the weftnet DaemonSet (weftnet up --kubernetes) running?", conf.bridge),
        )
    })
}

/// ADD: allocate, create and configure the veth; returns the result JSON.
pub(crate) fn add(conf: &NetConf, env: &Env) -> Result<String> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns_path = env.netns_path()?;
    let netns = open_netns(netns_path)?;
    let bridge = bridge(conf)?;
    let ipam = Ipam::new(&conf.data_dir, &conf.name);
    let leases = ipam.allocate(&conf.ranges, id, ifname)?;
    let host_name = host_veth_name(id, ifname);
    let mut created = false;
    let outcome = plumb(
        conf,
        &netns,
        bridge.index,
        &host_name,
        ifname,
        &leases,
        &mut created,
    );
    match outcome {
        Ok((host_mac, container_mac, link_local)) => {
            if let Some(ll) = link_local {
                ipam.record_link_local(&host_name, ll)?;
            }
            let result = AddResult {
                host: Interface {
                    name: host_name,
                    mac: format_mac(&host_mac),
                    sandbox: None,
                },
                container: Interface {
                    name: ifname.to_owned(),
                    mac: format_mac(&container_mac),
                    sandbox: Some(netns_path.to_owned()),
                },
                leases,
            };
            Ok(result.render(&conf.cni_version, conf.legacy_result()))
        }
        Err(e) => {
            if created {
                let name = host_name.clone();
                // Best effort: the original error is the one to report.
                let _ = on_host(|nl| async move { Ok(nl.delete_named(&name).await?) });
            }
            let _ = ipam.rollback(&leases);
            Err(e)
        }
    }
}

/// How often (10 ms apart) ADD looks for the pod's link-local address when its IPv6 is
/// on: 2 s at most.
const LINK_LOCAL_POLLS: u32 = 200;

/// Creates the veth, attaches the host end, configures the pod end. Returns both MACs
/// and the pod end's IPv6 link-local address (the source of its MLD reports), if the
/// kernel gave it one.
fn plumb(
    conf: &NetConf,
    netns: &File,
    bridge: u32,
    host_name: &str,
    ifname: &str,
    leases: &[Lease],
    created: &mut bool,
) -> Result<(Vec<u8>, Vec<u8>, Option<IpAddr>)> {
    let mtu = conf.mtu;
    let host = on_host(|nl| async move {
        nl.create_veth(host_name, ifname, mtu, netns)
            .await
            .map_err(|e| {
                if netlink::already_exists(&e) {
                    CniError::new(
                        code::NETLINK,
                        format!("interface {host_name} (host side) or {ifname} (in the pod) already exists: the container was already added; call DEL first"),
                    )
                } else {
                    e.into()
                }
            })?;
        *created = true;
        let host = nl.link(host_name).await?.ok_or_else(|| {
            CniError::new(
                code::NETLINK,
                format!("interface {host_name} vanished right after it was created: retry"),
            )
        })?;
        nl.attach_port(host.index, bridge, mtu).await?;
        Ok(host)
    })?;
    let (container_mac, link_local) = in_netns(netns, |nl| async move {
        let pod = nl.link(ifname).await?.ok_or_else(|| {
            CniError::new(
                code::NETLINK,
                format!(
                    "interface {ifname} is missing in the pod right after it was created: retry"
                ),
            )
        })?;
        for lease in leases {
            nl.add_address(pod.index, lease.net()).await?;
        }
        nl.set_up(pod.index).await?;
        for lease in leases {
            nl.add_default_route(pod.index, lease.gateway()).await?;
        }
        // The kernel adds the link-local address once it sees the link operational
        // (the link watcher's pass, usually milliseconds): wait for it, bounded.
        // (This thread is in the pod's namespace, so /proc/sys/net is the pod's.)
        let ipv6_on =
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"))
                .is_ok_and(|v| v.trim() == "0");
        let mut link_local = None;
        for _ in 0..if ipv6_on { LINK_LOCAL_POLLS } else { 0 } {
            link_local = nl
                .addresses(pod.index)
                .await?
                .into_iter()
                .map(|n| n.addr())
                .find(|a| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()));
            if link_local.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok((pod.mac, link_local))
    })?;
    Ok((host.mac, container_mac, link_local))
}

/// DEL: remove the veth and free the addresses; anything already gone is fine.
pub(crate) fn del(conf: &NetConf, env: &Env) -> Result<()> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    if let Some(path) = env.netns.as_deref() {
        match File::open(path) {
            Ok(netns) => in_netns(&netns, |nl| async move { Ok(nl.delete_named(ifname).await?) })?,
            // The pod's namespace is gone, and its end of the veth with it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("cannot open network namespace {path} (CNI_NETNS): {e}: pass the pod's namespace path or leave CNI_NETNS empty"),
                ))
            }
        }
    }
    let host_name = host_veth_name(id, ifname);
    on_host(|nl| async move { Ok(nl.delete_named(&host_name).await?) })?;
    let ipam = Ipam::new(&conf.data_dir, &conf.name);
    ipam.release(id, ifname)?;
    ipam.forget_link_local(&host_veth_name(id, ifname))?;
    Ok(())
}

fn check_failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

/// CHECK: the pod interface carries its addresses and the host end is on the bridge.
pub(crate) fn check(conf: &NetConf, env: &Env) -> Result<()> {
    config::check_defined(&conf.cni_version)?;
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = open_netns(env.netns_path()?)?;
    let held = Ipam::new(&conf.data_dir, &conf.name).lookup(id, ifname)?;
    if held.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("no address is allocated to container {id} interface {ifname}: the container was never added or was deleted; call ADD"),
        ));
    }
    let expected = expected_addresses(conf, &held)?;
    let bridge = bridge(conf)?;
    in_netns(&netns, |nl| async move {
        let pod = nl.link(ifname).await?.ok_or_else(|| {
            check_failed(format!("interface {ifname} does not exist in the pod's network namespace: delete and re-add the pod"))
        })?;
        let present = nl.addresses(pod.index).await?;
        for want in &expected {
            if !present.contains(want) {
                return Err(check_failed(format!(
                    "interface {ifname} in the pod lacks its address {want}: delete and re-add the pod"
                )));
            }
        }
        Ok(())
    })?;
    let host_name = host_veth_name(id, ifname);
    let name = host_name.clone();
    let host = on_host(|nl| async move { Ok(nl.link(&name).await?) })?;
    match host {
        None => Err(check_failed(format!(
            "host interface {host_name} of the pod does not exist: delete and re-add the pod"
        ))),
        Some(h) if h.controller != Some(bridge.index) => Err(check_failed(format!(
            "host interface {host_name} of the pod is not attached to bridge {}: delete and re-add the pod",
            conf.bridge
        ))),
        Some(_) => Ok(()),
    }
}

/// The allocated addresses with the prefix length of the configured range holding them.
fn expected_addresses(conf: &NetConf, held: &[IpAddr]) -> Result<Vec<ipnet::IpNet>> {
    held.iter()
        .map(|ip| {
            conf.ranges
                .iter()
                .find(|r| r.contains(ip))
                .and_then(|r| ipnet::IpNet::new(*ip, r.prefix_len()).ok())
                .ok_or_else(|| {
                    check_failed(format!(
                        "the pod's address {ip} is outside the configured ranges: delete and re-add the pod"
                    ))
                })
        })
        .collect()
}

/// The answer to VERSION.
pub(crate) fn version() -> String {
    serde_json::json!({
        "cniVersion": config::CNI_VERSION,
        "supportedVersions": config::SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str, ifname: &str, netns: &str) -> Env {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Env {
            container_id: some(id),
            netns: some(netns),
            ifname: some(ifname),
        }
    }

    #[test]
    fn env_validation_names_the_variable() {
        for (e, var) in [
            (env("", "eth0", "/x"), "CNI_CONTAINERID"),
            (env("-bad", "eth0", "/x"), "CNI_CONTAINERID"),
            (env("id\nx", "eth0", "/x"), "CNI_CONTAINERID"),
            (env("abc", "", "/x"), "CNI_IFNAME"),
            (env("abc", "a/b", "/x"), "CNI_IFNAME"),
            (env("abc", "sixteen-chars-xx", "/x"), "CNI_IFNAME"),
        ] {
            let err = e
                .container_id()
                .and_then(|_| e.ifname())
                .expect_err("invalid");
            assert_eq!(err.code, code::INVALID_ENV);
            assert!(err.msg.contains(var), "{}", err.msg);
        }
        let e = env("abc", "eth0", "");
        let err = e.netns_path().expect_err("missing");
        assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
        assert_eq!(
            env("a1_b.c-d", "eth0", "/x").container_id().expect("valid"),
            "a1_b.c-d"
        );
    }

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert!(a.len() <= 15 && a.starts_with("wf"), "{a}");
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth1")
        );
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdee", "eth0")
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        // Pinned: a changed hash would orphan the veths of running pods on upgrade.
        assert_eq!(host_veth_name("c", "eth0"), "wf83b2b8a9");
    }

    #[test]
    fn missing_netns_file_is_an_unknown_container() {
        let err = open_netns("/nonexistent/netns/path").expect_err("missing");
        assert_eq!(err.code, code::UNKNOWN_CONTAINER);
    }

    #[test]
    fn version_answer() {
        let v: serde_json::Value = serde_json::from_str(&version()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
        );
    }
}
