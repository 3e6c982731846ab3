//! Facts about the host the daemon needs before it touches anything: capabilities and
//! the underlay MTU.

use std::fs;

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process has CAP_NET_ADMIN in its effective set.
pub(crate) fn has_net_admin() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn mtu_of(interface: &str) -> Option<u32> {
    fs::read_to_string(format!("/sys/class/net/{interface}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The interface that carries the IPv4 default route, from /proc/net/route.
fn default_route_interface() -> Option<String> {
    let table = fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.len() > 7 && cols[1] == "00000000" && cols[7] == "00000000")
            .then(|| cols[0].to_string())
    })
}

/// The MTU of the underlay: the default route's interface, else the smallest MTU of
/// the other interfaces that are up (loopback and `exclude` aside), else 1500.
pub(crate) fn underlay_mtu(exclude: &str) -> u32 {
    if let Some(mtu) = default_route_interface().and_then(|i| mtu_of(&i)) {
        return mtu;
    }
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return 1500;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != "lo" && name != exclude)
        .filter(|name| {
            fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
                .map(|s| s.trim() != "down")
                .unwrap_or(false)
        })
        .filter_map(|name| mtu_of(&name))
        .min()
        .unwrap_or(1500)
}

/// Whether an interface with this name exists in the current network namespace.
pub(crate) fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
