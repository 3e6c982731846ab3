//! CNI errors: the spec's error codes and the error JSON a runtime reads from stdout.

use serde_json::json;

/// Error codes from the CNI specification (1-99) and weftnet's own (100 and up).
pub(crate) mod code {
    /// The config's cniVersion is not one this plugin speaks.
    pub(crate) const INCOMPATIBLE_VERSION: u32 = 1;
    /// The container (its network namespace or its allocation) is unknown.
    pub(crate) const UNKNOWN_CONTAINER: u32 = 3;
    /// A CNI_* environment variable is missing or invalid.
    pub(crate) const INVALID_ENV: u32 = 4;
    /// Reading or writing the allocation state failed.
    pub(crate) const IO_FAILURE: u32 = 5;
    /// The config on stdin is not JSON.
    pub(crate) const DECODE: u32 = 6;
    /// The config is JSON but a field is missing or invalid.
    pub(crate) const INVALID_CONFIG: u32 = 7;
    /// A transient condition (the bridge is not there yet): the runtime retries.
    pub(crate) const TRY_AGAIN: u32 = 11;
    /// A netlink operation (veth, address, route) failed.
    pub(crate) const NETLINK: u32 = 100;
    /// No free address is left in a range.
    pub(crate) const EXHAUSTED: u32 = 101;
    /// CHECK found the container's network not as ADD left it.
    pub(crate) const CHECK_FAILED: u32 = 102;
}

/// One CNI error: a code, a one-line message that names the problem and the fix, and
/// optional details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CniError {
    pub(crate) code: u32,
    pub(crate) msg: String,
    pub(crate) details: String,
}

impl CniError {
    pub(crate) fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub(crate) fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error JSON of the CNI spec, for `cniVersion`.
    pub(crate) fn to_json(&self, cni_version: &str) -> String {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// A failure of the netlink layer (`crate::netlink`, the plugin's only source of
/// `anyhow` errors): its one-line message with the fix, and the kernel's answer as the
/// netlink library reported it as details.
impl From<anyhow::Error> for CniError {
    fn from(e: anyhow::Error) -> Self {
        let details = e
            .downcast_ref::<crate::netlink::Error>()
            .map(|n| n.detail().to_owned())
            .unwrap_or_default();
        CniError::new(
            code::NETLINK,
            format!("{e:#}: check the node's kernel log and that the plugin runs as root"),
        )
        .with_details(details)
    }
}

pub(crate) type Result<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_every_field() {
        let e = CniError::new(code::TRY_AGAIN, "bridge missing").with_details("start it");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).expect("json");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "bridge missing");
        assert_eq!(v["details"], "start it");
        assert_eq!(e.to_string(), "bridge missing (start it)");
    }

    #[test]
    fn netlink_failures_are_netlink_errors_with_the_fix() {
        let e = CniError::from(anyhow::anyhow!("interface eth0 disappeared"));
        assert_eq!(e.code, code::NETLINK);
        assert!(
            e.msg.starts_with("interface eth0 disappeared: "),
            "{}",
            e.msg
        );
        assert!(e.msg.ends_with("that the plugin runs as root"), "{}", e.msg);
    }
}
