//! The plugin in chained mode (`"mode": "chained"` in its plugin object): it runs after
//! a primary plugin that plumbed the pod (the AWS VPC CNI, or any other), as Cilium's
//! `aws-cni` chaining does. It changes nothing in the pod: ADD reads the primary's
//! `prevResult`, records the pod's addresses and host-side interface for the daemon
//! (one file per address under `<dataDir>/chained/`), and passes the result on
//! unchanged; DEL removes the container's records (a repeated DEL succeeds); CHECK
//! verifies that every address of the result is recorded for the container.

use super::commands::Env;
use super::config::{check_defined, invalid, parse_data_dir, SUPPORTED_VERSIONS};
use super::error::{code, CniError, Result};
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The directory under `dataDir` holding the records.
pub(crate) const RECORDS: &str = "chained";

/// A chained plugin config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChainedConf {
    pub(crate) cni_version: String,
    pub(crate) data_dir: PathBuf,
    /// The primary plugin's result (absent in a DEL the runtime has no result for).
    pub(crate) prev: Option<Value>,
}

/// One pod address as the plugin recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) address: IpAddr,
    pub(crate) container_id: String,
    pub(crate) ifname: String,
    /// The host end of the pod's interface, when the primary's result names one.
    pub(crate) host_veth: Option<String>,
}

/// Whether the plugin object on stdin asks for chained mode.
pub(crate) fn is_chained(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mode")
                .and_then(Value::as_str)
                .map(|m| m == "chained")
        })
        .unwrap_or(false)
}

/// Parses the chained plugin object.
pub(crate) fn parse(bytes: &[u8]) -> Result<ChainedConf> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(CniError::new(
            code::DECODE,
            "the network config on stdin is not a JSON object: pass the plugin object of the chained conflist",
        ));
    };
    let cni_version = match obj.get("cniVersion").and_then(Value::as_str) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => v.to_owned(),
        Some(v) => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {v:?} is not supported by the weftnet plugin: use one of {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ))
        }
        None => {
            return Err(invalid(
                "network config field \"cniVersion\" is missing or not a string: add \"cniVersion\": \"1.0.0\"",
            ))
        }
    };
    let data_dir = parse_data_dir(&obj)?;
    let prev = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "network config field \"prevResult\" is {other}, not an object: weftnet in chained mode runs after a primary plugin (put it after aws-cni in the conflist's plugins)"
            )))
        }
    };
    Ok(ChainedConf {
        cni_version,
        data_dir,
        prev,
    })
}

/// The pod's addresses (as host prefixes' addresses) and host-side interface in a
/// previous result: the `ips` on the container interface `ifname` (or on no named
/// interface), and the first interface without a sandbox.
pub(crate) fn pod_of(prev: &Value, ifname: &str) -> Result<(Vec<IpAddr>, Option<String>)> {
    let empty = Vec::new();
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let sandboxed = |i: &Value| {
        i.get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let host_veth = interfaces
        .iter()
        .find(|i| !sandboxed(i))
        .and_then(|i| i.get("name").and_then(Value::as_str))
        .filter(|n| !n.is_empty() && n.len() <= 15 && !n.contains('/'))
        .map(str::to_owned);
    let Some(ips) = prev.get("ips").and_then(Value::as_array) else {
        return Err(invalid(
            "prevResult has no \"ips\": the primary plugin before weftnet must assign the pod's addresses",
        ));
    };
    let mut addresses = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let on = ip
            .get("interface")
            .and_then(Value::as_u64)
            .and_then(|n| interfaces.get(usize::try_from(n).ok()?));
        if let Some(iface) = on {
            let name = iface.get("name").and_then(Value::as_str);
            if !sandboxed(iface) || name.is_some_and(|n| n != ifname) {
                continue;
            }
        }
        let address: IpNet = ip
            .get("address")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                invalid(format!(
                    "prevResult ips[{i}] has no valid \"address\" (a CIDR): fix the primary plugin's result"
                ))
            })?;
        if !addresses.contains(&address.addr()) {
            addresses.push(address.addr());
        }
    }
    if addresses.is_empty() {
        return Err(invalid(format!(
            "prevResult assigns no address to interface {ifname}: the primary plugin before weftnet must assign the pod's addresses"
        )));
    }
    Ok((addresses, host_veth))
}

fn records_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORDS)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| {
        CniError::new(
            code::IO_FAILURE,
            format!("{what}: {e}: check dataDir and that it is writable"),
        )
    }
}

impl Record {
    fn to_json(&self) -> String {
        json!({
            "address": self.address.to_string(),
            "containerId": self.container_id,
            "ifname": self.ifname,
            "hostVeth": self.host_veth,
        })
        .to_string()
    }

    /// Parses a record file; `None` for anything that is not one.
    pub(crate) fn parse(text: &str) -> Option<Record> {
        let v: Map<String, Value> = serde_json::from_str(text).ok()?;
        Some(Record {
            address: v.get("address")?.as_str()?.parse().ok()?,
            container_id: v.get("containerId")?.as_str()?.to_owned(),
            ifname: v.get("ifname")?.as_str()?.to_owned(),
            host_veth: v.get("hostVeth").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// Every record under `data_dir` (unreadable or foreign files are skipped).
pub(crate) fn records(data_dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(records_dir(data_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| Record::parse(&t))
        .collect();
    out.sort_by_key(|r| r.address);
    out
}

/// ADD: records the pod and returns the previous result unchanged.
pub(crate) fn add(conf: &ChainedConf, env: &Env) -> Result<String> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let Some(prev) = &conf.prev else {
        return Err(invalid(
            "network config has no \"prevResult\": weftnet in chained mode runs after a primary plugin (put it after aws-cni in the conflist's plugins)",
        ));
    };
    let (addresses, host_veth) = pod_of(prev, ifname)?;
    let dir = records_dir(&conf.data_dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    for address in addresses {
        let record = Record {
            address,
            container_id: id.to_owned(),
            ifname: ifname.to_owned(),
            host_veth: host_veth.clone(),
        };
        let path = dir.join(address.to_string());
        let tmp = dir.join(format!(".{address}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, record.to_json())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io(format!("cannot write {}", path.display())))?;
    }
    Ok(prev.to_string())
}

/// DEL: removes the container's records; none is fine.
pub(crate) fn del(conf: &ChainedConf, env: &Env) -> Result<()> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let dir = records_dir(&conf.data_dir);
    for r in records(&conf.data_dir) {
        if r.container_id == id && r.ifname == ifname {
            let path = dir.join(r.address.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("cannot remove {}", path.display()))(e)),
            }
        }
    }
    Ok(())
}

/// CHECK: every address of the previous result is recorded for the container.
pub(crate) fn check(conf: &ChainedConf, env: &Env) -> Result<()> {
    check_defined(&conf.cni_version)?;
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let Some(prev) = &conf.prev else {
        return Err(invalid(
            "network config has no \"prevResult\": CHECK needs the primary plugin's result",
        ));
    };
    let (addresses, _) = pod_of(prev, ifname)?;
    let held = records(&conf.data_dir);
    for address in addresses {
        let ok = held
            .iter()
            .any(|r| r.address == address && r.container_id == id && r.ifname == ifname);
        if !ok {
            return Err(CniError::new(
                code::CHECK_FAILED,
                format!("the pod's address {address} is not recorded for container {id}: delete and re-add the pod"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result as the AWS VPC CNI returns it (host veth, container eth0, a dummy).
    fn aws_prev() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "eni8ea2c11fe35", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/p"},
                {"name": "dummy8ea2c11fe35", "mac": "0", "sandbox": "0"}
            ],
            "ips": [{"address": "192.168.3.17/32", "interface": 1}],
            "dns": {}
        })
    }

    fn conf(dir: &Path, prev: Option<Value>) -> ChainedConf {
        let mut v = json!({"cniVersion": "1.0.0", "name": "aws-cni", "type": "weftnet",
            "mode": "chained", "dataDir": dir.to_string_lossy()});
        if let Some(p) = prev {
            v["prevResult"] = p;
        }
        parse(v.to_string().as_bytes()).expect("parse")
    }

    fn env(id: &str) -> Env {
        Env {
            container_id: Some(id.into()),
            netns: Some("/var/run/netns/p".into()),
            ifname: Some("eth0".into()),
        }
    }

    #[test]
    fn mode_is_detected() {
        assert!(is_chained(br#"{"type":"weftnet","mode":"chained"}"#));
        assert!(!is_chained(br#"{"type":"weftnet","bridge":"weftbr0"}"#));
        assert!(!is_chained(b"not json"));
    }

    #[test]
    fn reads_the_vpc_cni_result() {
        let (ips, veth) = pod_of(&aws_prev(), "eth0").expect("pod");
        assert_eq!(ips, vec!["192.168.3.17".parse::<IpAddr>().expect("ip")]);
        assert_eq!(veth.as_deref(), Some("eni8ea2c11fe35"));
        // ptp: host veth first, container second, dual stack
        let ptp = json!({"interfaces": [{"name": "veth1234"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 1}, {"address": "fd00::5/64", "interface": 1}]});
        let (ips, veth) = pod_of(&ptp, "eth0").expect("pod");
        assert_eq!(ips.len(), 2);
        assert_eq!(veth.as_deref(), Some("veth1234"));
        // an address on another container interface is not this one's
        assert!(pod_of(&ptp, "net1").is_err());
    }

    #[test]
    fn bad_previous_results_name_the_fix() {
        for prev in [
            json!({}),
            json!({"ips": []}),
            json!({"ips": [{"address": "nope"}]}),
            json!({"ips": [{"address": 5}]}),
        ] {
            let e = pod_of(&prev, "eth0").expect_err("refused");
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert!(e.msg.contains(": "), "{}", e.msg);
        }
        let e = parse(br#"{"cniVersion":"1.0.0","prevResult":[1]}"#).expect_err("bad");
        assert!(e.msg.contains("prevResult"), "{}", e.msg);
        let e = parse(br#"{"cniVersion":"0.1.0"}"#).expect_err("bad");
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn add_passes_the_result_on_and_del_and_check_follow() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = conf(dir.path(), Some(aws_prev()));
        let out = add(&c, &env("c1")).expect("add");
        let out: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(out, aws_prev(), "the result is passed on unchanged");
        let held = records(dir.path());
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].container_id, "c1");
        assert_eq!(held[0].host_veth.as_deref(), Some("eni8ea2c11fe35"));
        check(&c, &env("c1")).expect("check");
        // a repeated ADD is the same record
        add(&c, &env("c1")).expect("add again");
        assert_eq!(records(dir.path()).len(), 1);
        // another container's DEL leaves it; the owner's removes it, twice is fine
        del(&c, &env("c2")).expect("del other");
        assert_eq!(records(dir.path()).len(), 1);
        let no_prev = conf(dir.path(), None);
        del(&no_prev, &env("c1")).expect("del");
        del(&no_prev, &env("c1")).expect("del again");
        assert!(records(dir.path()).is_empty());
        let e = check(&c, &env("c1")).expect_err("gone");
        assert_eq!(e.code, code::CHECK_FAILED);
        let e = add(&no_prev, &env("c1")).expect_err("no prevResult");
        assert!(e.msg.contains("prevResult"), "{}", e.msg);
    }

    #[test]
    fn an_address_reused_by_a_new_pod_survives_the_old_pods_del() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = conf(dir.path(), Some(aws_prev()));
        add(&c, &env("old")).expect("add");
        add(&c, &env("new")).expect("add");
        del(&c, &env("old")).expect("del");
        let held = records(dir.path());
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].container_id, "new");
    }
}
