//! The CNI network config: parsing the plugin object a runtime passes on stdin, and
//! rendering the conflist the daemon installs in /etc/cni/net.d.

use super::error::{code, CniError, Result};
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// CNI versions this plugin accepts in a config (and answers VERSION with).
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version of configs the daemon writes and of VERSION's answer.
pub(crate) const CNI_VERSION: &str = "1.0.0";
/// The network (and plugin type) name.
pub(crate) const NETWORK_NAME: &str = "weftnet";
/// MTU of pod interfaces when the config has none.
pub(crate) const DEFAULT_MTU: u32 = 1420;

/// A validated network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetConf {
    pub(crate) cni_version: String,
    pub(crate) name: String,
    pub(crate) bridge: String,
    /// At most one range per address family, each in network form.
    pub(crate) ranges: Vec<IpNet>,
    pub(crate) mtu: u32,
    pub(crate) data_dir: PathBuf,
}

impl NetConf {
    /// True when results must carry the pre-1.0 `"version"` field in `ips`.
    pub(crate) fn legacy_result(&self) -> bool {
        self.cni_version != "1.0.0"
    }
}

/// The conflist the daemon writes to /etc/cni/net.d/00-weftnet.conflist.
pub(crate) fn conflist(bridge: &str, ranges: &[IpNet], mtu: u32, data_dir: &Path) -> String {
    let ranges: Vec<String> = ranges.iter().map(|r| r.trunc().to_string()).collect();
    let doc = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": NETWORK_NAME,
            "bridge": bridge,
            "ranges": ranges,
            "mtu": mtu,
            "dataDir": data_dir.to_string_lossy(),
        }],
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string());
    text.push('\n');
    text
}

/// An `INVALID_CONFIG` error with this message.
pub(crate) fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// The config's `"dataDir"`: an absolute path, or the default when absent.
pub(crate) fn parse_data_dir(obj: &Map<String, Value>) -> Result<PathBuf> {
    match obj.get("dataDir") {
        None | Some(Value::Null) => Ok(PathBuf::from(crate::config::DEFAULT_CNI_DATA_DIR)),
        Some(Value::String(s)) if s.starts_with('/') => Ok(PathBuf::from(s)),
        Some(other) => Err(invalid(format!(
            "network config field \"dataDir\" is {other}, not an absolute path: use e.g. \"{}\" or leave it out",
            crate::config::DEFAULT_CNI_DATA_DIR
        ))),
    }
}

/// CHECK is defined from cniVersion 0.4.0 on: an `INCOMPATIBLE_VERSION` error for a
/// 0.3.x config.
pub(crate) fn check_defined(cni_version: &str) -> Result<()> {
    if cni_version.starts_with("0.3.") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK is not defined for cniVersion {cni_version}: use cniVersion 0.4.0 or later"
            ),
        ));
    }
    Ok(())
}

/// The cniVersion of a config, if it has a readable one: errors are reported in it.
pub(crate) fn version_of(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let version = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS
        .contains(&version)
        .then(|| version.to_owned())
}

/// Parses and validates the plugin object on stdin. Unknown fields (runtimeConfig,
/// prevResult, args, ...) are accepted and ignored.
pub(crate) fn parse(bytes: &[u8]) -> Result<NetConf> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("the network config on stdin is not valid JSON ({e}): pass the plugin object of the weftnet conflist"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(
            code::DECODE,
            "the network config on stdin is not a JSON object: pass the plugin object of the weftnet conflist",
        ));
    };
    let cni_version = parse_version(&obj)?;
    let name = required_str(&obj, "name")?;
    if name.contains('/') || name == "." || name == ".." {
        return Err(invalid(format!(
            "network config field \"name\" is {name:?}, which cannot be a directory name: use a plain name such as \"weftnet\""
        )));
    }
    let bridge = required_str(&obj, "bridge")?;
    if bridge.len() > 15 || bridge.contains(['/', ' ', ':']) {
        return Err(invalid(format!(
            "network config field \"bridge\" is {bridge:?}, not a valid interface name: use at most 15 characters without '/', ':' or spaces, e.g. \"weftbr0\""
        )));
    }
    let ranges = parse_ranges(&obj)?;
    let mtu = parse_mtu(&obj, &ranges)?;
    let data_dir = parse_data_dir(&obj)?;
    Ok(NetConf {
        cni_version,
        name,
        bridge,
        ranges,
        mtu,
        data_dir,
    })
}

fn parse_version(obj: &Map<String, Value>) -> Result<String> {
    let supported = SUPPORTED_VERSIONS.join(", ");
    match obj.get("cniVersion") {
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(v.clone()),
        Some(Value::String(v)) => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {v:?} is not supported by the weftnet plugin: use one of {supported}"
            ),
        )),
        None => Err(invalid(format!(
            "network config field \"cniVersion\" is missing: add \"cniVersion\": \"{CNI_VERSION}\""
        ))),
        Some(other) => Err(invalid(format!(
            "network config field \"cniVersion\" is {other}, not a string: use \"{CNI_VERSION}\""
        ))),
    }
}

fn required_str(obj: &Map<String, Value>, field: &str) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(invalid(format!(
            "network config field \"{field}\" is missing: reinstall the conflist that `weftnet up --kubernetes` writes"
        ))),
        Some(other) => Err(invalid(format!(
            "network config field \"{field}\" is {other}: it must be a non-empty string"
        ))),
    }
}

fn parse_ranges(obj: &Map<String, Value>) -> Result<Vec<IpNet>> {
    let fix = "use the node's pod CIDRs, e.g. \"ranges\": [\"10.244.1.0/24\"]";
    let items = match obj.get("ranges") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        None | Some(Value::Null) => {
            return Err(invalid(format!(
                "network config field \"ranges\" is missing: {fix}"
            )))
        }
        Some(other) => {
            return Err(invalid(format!(
                "network config field \"ranges\" is {other}, not a non-empty list: {fix}"
            )))
        }
    };
    let mut ranges: Vec<IpNet> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let range: IpNet = item
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("ranges[{i}] is {item}, not a CIDR: {fix}")))?;
        if range.trunc() != range {
            return Err(invalid(format!(
                "ranges[{i}] {range} has host bits set: write the network, {}",
                range.trunc()
            )));
        }
        let max_prefix = if range.addr().is_ipv4() { 30 } else { 126 };
        if range.prefix_len() > max_prefix {
            return Err(invalid(format!(
                "ranges[{i}] {range} is too small for a gateway and a pod: use a prefix of /{max_prefix} or shorter"
            )));
        }
        if ranges
            .iter()
            .any(|r| r.addr().is_ipv4() == range.addr().is_ipv4())
        {
            return Err(invalid(format!(
                "ranges[{i}] {range} is a second range of the same address family: give at most one IPv4 and one IPv6 range"
            )));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

fn parse_mtu(obj: &Map<String, Value>, ranges: &[IpNet]) -> Result<u32> {
    let min = if ranges.iter().any(|r| r.addr().is_ipv6()) {
        1280
    } else {
        576
    };
    match obj.get("mtu") {
        None | Some(Value::Null) => Ok(DEFAULT_MTU),
        Some(v) => match v.as_u64() {
            Some(m) if (min..=65535).contains(&m) => Ok(m as u32),
            _ => Err(invalid(format!(
                "network config field \"mtu\" is {v}: use a number from {min} to 65535 (default {DEFAULT_MTU})"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"weftnet","type":"weftnet",
        "bridge":"weftbr0","ranges":["10.244.1.0/24","fd00:10:244:1::/64"],"mtu":1400,
        "dataDir":"/tmp/x","runtimeConfig":{"portMappings":[]},"args":{},"prevResult":{}}"#;

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).expect("json");
        v[field] = value;
        v.to_string().into_bytes()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).expect("json");
        v.as_object_mut().expect("object").remove(field);
        v.to_string().into_bytes()
    }

    fn err(bytes: &[u8]) -> CniError {
        parse(bytes).expect_err("config must be rejected")
    }

    #[test]
    fn good_config_with_unknown_fields() {
        let c = parse(GOOD.as_bytes()).expect("parse");
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "weftnet");
        assert_eq!(c.bridge, "weftbr0");
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(!c.legacy_result());
    }

    #[test]
    fn defaults_for_mtu_and_data_dir() {
        let c = parse(&without("mtu")).expect("parse");
        assert_eq!(c.mtu, DEFAULT_MTU);
        let c = parse(&without("dataDir")).expect("parse");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/weftnet"));
    }

    #[test]
    fn every_supported_version_and_legacy_flag() {
        for v in SUPPORTED_VERSIONS {
            let c = parse(&with("cniVersion", json!(v))).expect("parse");
            assert_eq!(c.legacy_result(), v != "1.0.0");
        }
    }

    #[test]
    fn bad_json_is_a_decode_error() {
        assert_eq!(err(b"{not json").code, code::DECODE);
        assert_eq!(err(b"[1,2]").code, code::DECODE);
        assert_eq!(err(b"").code, code::DECODE);
    }

    #[test]
    fn unsupported_or_missing_version() {
        let e = err(&with("cniVersion", json!("0.2.0")));
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("1.0.0"), "{}", e.msg);
        assert_eq!(
            err(&with("cniVersion", json!("1.1.0"))).code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(err(&without("cniVersion")).code, code::INVALID_CONFIG);
        assert_eq!(
            err(&with("cniVersion", json!(1))).code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn missing_or_bad_fields_name_the_field() {
        for (bytes, field) in [
            (without("bridge"), "bridge"),
            (with("bridge", json!("")), "bridge"),
            (with("bridge", json!("a-name-that-is-too-long")), "bridge"),
            (with("bridge", json!(7)), "bridge"),
            (without("name"), "name"),
            (with("name", json!("../etc")), "name"),
            (without("ranges"), "ranges"),
            (with("ranges", json!([])), "ranges"),
            (with("ranges", json!("10.244.1.0/24")), "ranges"),
            (with("ranges", json!(["10.244.1.0"])), "ranges[0]"),
            (with("ranges", json!(["pods"])), "ranges[0]"),
            (with("ranges", json!([24])), "ranges[0]"),
            (with("ranges", json!(["10.244.1.5/24"])), "10.244.1.0/24"),
            (with("ranges", json!(["10.244.1.0/31"])), "/30"),
            (
                with("ranges", json!(["10.1.0.0/16", "10.2.0.0/16"])),
                "ranges[1]",
            ),
            (with("mtu", json!(0)), "mtu"),
            (with("mtu", json!(1000)), "1280"),
            (with("mtu", json!("1420")), "mtu"),
            (with("mtu", json!(70000)), "mtu"),
            (with("dataDir", json!("relative/dir")), "dataDir"),
            (with("dataDir", json!(5)), "dataDir"),
        ] {
            let e = err(&bytes);
            assert_eq!(e.code, code::INVALID_CONFIG, "{}", e.msg);
            assert!(e.msg.contains(field), "{field} not named in: {}", e.msg);
            assert!(e.msg.contains(": "), "no fix in: {}", e.msg);
        }
    }

    #[test]
    fn small_mtu_is_fine_without_ipv6() {
        let mut v: Value = serde_json::from_str(GOOD).expect("json");
        v["ranges"] = json!(["10.244.1.0/24"]);
        v["mtu"] = json!(1000);
        assert_eq!(parse(v.to_string().as_bytes()).expect("parse").mtu, 1000);
    }

    #[test]
    fn conflist_round_trips_through_the_parser() {
        let ranges: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().expect("net"),
            "fd00:10:244:1::/64".parse().expect("net"),
        ];
        let text = conflist("weftbr0", &ranges, 1420, Path::new("/var/lib/cni/weftnet"));
        let list: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(list["cniVersion"], CNI_VERSION);
        assert_eq!(list["name"], NETWORK_NAME);
        // A runtime copies name and cniVersion into the plugin object.
        let mut plugin = list["plugins"][0].clone();
        assert_eq!(plugin["type"], "weftnet");
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let c = parse(plugin.to_string().as_bytes()).expect("parse");
        assert_eq!(c.bridge, "weftbr0");
        assert_eq!(c.ranges, ranges);
        assert_eq!(c.mtu, 1420);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/weftnet"));
    }

    #[test]
    fn version_of_reads_only_supported_versions() {
        assert_eq!(version_of(GOOD.as_bytes()).as_deref(), Some("1.0.0"));
        assert_eq!(version_of(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(version_of(b"nope"), None);
    }
}
