//! The result JSON of a successful ADD (CNI 1.0 shape; for 0.3.x and 0.4.0 configs the
//! same shape with that cniVersion and a `"version"` in every `ips` entry).

use super::ipam::Lease;
use ipnet::IpNet;
use serde_json::{json, Value};

/// An interface in the result: the host end (no sandbox) or the container end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) mac: String,
    pub(crate) sandbox: Option<String>,
}

/// What ADD created: the host and container interfaces and the container's leases.
#[derive(Debug, Clone)]
pub(crate) struct AddResult {
    pub(crate) host: Interface,
    pub(crate) container: Interface,
    pub(crate) leases: Vec<Lease>,
}

/// `aa:bb:cc:dd:ee:ff` for a hardware address.
pub(crate) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn interface_json(i: &Interface) -> Value {
    let mut v = json!({ "name": i.name, "mac": i.mac });
    if let Some(sandbox) = &i.sandbox {
        v["sandbox"] = json!(sandbox);
    }
    v
}

impl AddResult {
    /// The result JSON for `cni_version`; `legacy` adds the pre-1.0 `ips[].version`.
    pub(crate) fn render(&self, cni_version: &str, legacy: bool) -> String {
        // Index of the container interface in `interfaces`.
        const CONTAINER: usize = 1;
        let ips: Vec<Value> = self
            .leases
            .iter()
            .map(|l| {
                let mut ip = json!({
                    "address": l.net().to_string(),
                    "gateway": l.gateway().to_string(),
                    "interface": CONTAINER,
                });
                if legacy {
                    ip["version"] = json!(if l.address.is_ipv4() { "4" } else { "6" });
                }
                ip
            })
            .collect();
        let routes: Vec<Value> = self
            .leases
            .iter()
            .map(|l| {
                let dst = if l.address.is_ipv4() {
                    IpNet::V4(Default::default())
                } else {
                    IpNet::V6(Default::default())
                };
                json!({ "dst": dst.to_string(), "gw": l.gateway().to_string() })
            })
            .collect();
        json!({
            "cniVersion": cni_version,
            "interfaces": [interface_json(&self.host), interface_json(&self.container)],
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        let lease = |range: &str, addr: &str| Lease {
            range: range.parse().expect("net"),
            address: addr.parse().expect("ip"),
            fresh: true,
        };
        AddResult {
            host: Interface {
                name: "wf0123abcd".into(),
                mac: format_mac(&[0x0a, 0x58, 0, 1, 0xfe, 0x7f]),
                sandbox: None,
            },
            container: Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                sandbox: Some("/var/run/netns/pod".into()),
            },
            leases: vec![
                lease("10.244.1.0/24", "10.244.1.2"),
                lease("fd00:1::/64", "fd00:1::2"),
            ],
        }
    }

    #[test]
    fn cni_1_0_result() {
        let v: Value = serde_json::from_str(&sample().render("1.0.0", false)).expect("json");
        let want = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "wf0123abcd", "mac": "0a:58:00:01:fe:7f"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/pod"},
            ],
            "ips": [
                {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1},
                {"address": "fd00:1::2/64", "gateway": "fd00:1::1", "interface": 1},
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                {"dst": "::/0", "gw": "fd00:1::1"},
            ],
            "dns": {},
        });
        assert_eq!(v, want);
    }

    #[test]
    fn legacy_results_carry_the_ip_version() {
        let v: Value = serde_json::from_str(&sample().render("0.3.1", true)).expect("json");
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["ips"][1]["interface"], 1);
    }
}
