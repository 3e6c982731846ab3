//! Pod address allocation, persisted on the node: one file per allocated address under
//! `<dataDir>/<network>/`, holding the container id and interface name, created with
//! O_EXCL while an flock on `<dataDir>/<network>/lock` is held, so concurrent plugin
//! runs never hand out one address twice. Beside them, `<host veth>.link-local` holds
//! the pod's IPv6 link-local address (the source of its MLD reports, which the node's
//! multicast policy attributes to the pod; PROTOCOL.md §7.11).

use super::error::{code, CniError, Result};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One address handed to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) range: IpNet,
    pub(crate) address: IpAddr,
    /// False when an earlier ADD for the same container and interface already held it.
    pub(crate) fresh: bool,
}

impl Lease {
    /// The address with the range's prefix length.
    pub(crate) fn net(&self) -> IpNet {
        // The prefix comes from a valid range of the same family.
        IpNet::new(self.address, self.range.prefix_len()).unwrap_or(self.range)
    }

    /// The range's gateway (its first host address, on the bridge).
    pub(crate) fn gateway(&self) -> IpAddr {
        gateway(self.range)
    }
}

/// The gateway of a range: its first host address, the same the node puts on the
/// bridge.
pub(crate) fn gateway(range: IpNet) -> IpAddr {
    weftnet_proto::node::gateway(range).addr()
}

/// The address `offset` past the network address of `range`.
fn nth(range: IpNet, offset: u128) -> IpAddr {
    match range {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(
            u32::from(n.network()).wrapping_add(offset as u32),
        )),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(offset))),
    }
}

/// Offsets of the addresses a pod may get: not the network address, not the gateway,
/// not the IPv4 broadcast address.
fn usable_offsets(range: IpNet) -> std::ops::RangeInclusive<u128> {
    let host_bits = u32::from(range.max_prefix_len() - range.prefix_len());
    let size: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    };
    let last = match range {
        IpNet::V4(_) => size - 2,
        IpNet::V6(_) => size - 1,
    };
    2..=last
}

/// The allocation store of one network.
pub(crate) struct Ipam {
    dir: PathBuf,
}

/// Holds the store's flock until dropped.
struct Locked {
    _file: File,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!(
            "cannot {what} {}: {e}: check that the CNI data directory is writable by the plugin (root)",
            path.display()
        ),
    )
}

impl Ipam {
    /// The store for network `network` under `data_dir`.
    pub(crate) fn new(data_dir: &Path, network: &str) -> Self {
        Self {
            dir: data_dir.join(network),
        }
    }

    fn lock(&self) -> Result<Locked> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("create", &self.dir, e))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        loop {
            // SAFETY: flock on a descriptor we own; released when `file` is closed.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Locked { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_error("lock", &path, e));
            }
        }
    }

    /// Every allocated address and its owner line (`<container id>\n<ifname>\n`).
    fn entries(&self) -> Result<HashMap<IpAddr, String>> {
        let dir = std::fs::read_dir(&self.dir).map_err(|e| io_error("read", &self.dir, e))?;
        let mut out = HashMap::new();
        for entry in dir {
            let entry = entry.map_err(|e| io_error("read", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            // A file that cannot be read still marks its address as taken.
            let owner = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => String::new(),
            };
            out.insert(ip, owner);
        }
        Ok(out)
    }

    /// One address per range for the container's interface. A repeated call for the same
    /// container and interface returns the addresses it already holds.
    pub(crate) fn allocate(&self, ranges: &[IpNet], id: &str, ifname: &str) -> Result<Vec<Lease>> {
        let _lock = self.lock()?;
        let owner = owner_line(id, ifname);
        let entries = self.entries()?;
        let mut leases: Vec<Lease> = Vec::new();
        for range in ranges {
            let held = entries
                .iter()
                .filter(|(ip, o)| range.contains(*ip) && **o == owner)
                .map(|(ip, _)| *ip)
                .min();
            let lease = match held {
                Some(address) => Lease {
                    range: *range,
                    address,
                    fresh: false,
                },
                None => match self.claim(*range, &entries, &owner) {
                    Ok(address) => Lease {
                        range: *range,
                        address,
                        fresh: true,
                    },
                    Err(e) => {
                        self.remove_fresh(&leases);
                        return Err(e);
                    }
                },
            };
            leases.push(lease);
        }
        Ok(leases)
    }

    /// The lowest free usable address of `range`, written to its file.
    fn claim(
        &self,
        range: IpNet,
        entries: &HashMap<IpAddr, String>,
        owner: &str,
    ) -> Result<IpAddr> {
        let taken: HashSet<IpAddr> = entries
            .keys()
            .filter(|ip| range.contains(*ip))
            .copied()
            .collect();
        let usable = usable_offsets(range);
        for offset in usable.clone() {
            let address = nth(range, offset);
            if taken.contains(&address) {
                continue;
            }
            let path = self.dir.join(address.to_string());
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                // Only under a broken lock; try the next one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("create", &path, e)),
            };
            let written = file
                .write_all(owner.as_bytes())
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&path);
                return Err(io_error("write", &path, e));
            }
            return Ok(address);
        }
        let count = usable.end() - usable.start() + 1;
        Err(CniError::new(
            code::EXHAUSTED,
            format!(
                "no free address left in {range} (all {count} pod addresses are in use): delete unused pods or give this node a larger pod CIDR"
            ),
        ))
    }

    fn remove_fresh(&self, leases: &[Lease]) {
        for lease in leases.iter().filter(|l| l.fresh) {
            let _ = std::fs::remove_file(self.dir.join(lease.address.to_string()));
        }
    }

    /// Undoes `allocate`: frees the addresses it newly handed out (rollback of a failed ADD).
    pub(crate) fn rollback(&self, leases: &[Lease]) -> Result<()> {
        let _lock = self.lock()?;
        self.remove_fresh(leases);
        Ok(())
    }

    /// The addresses the container's interface holds.
    pub(crate) fn lookup(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let owner = owner_line(id, ifname);
        let mut held: Vec<IpAddr> = self
            .entries()?
            .into_iter()
            .filter(|(_, o)| *o == owner)
            .map(|(ip, _)| ip)
            .collect();
        held.sort();
        Ok(held)
    }

    /// Frees every address of the container's interface; returns them. Nothing held is fine.
    pub(crate) fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let owner = owner_line(id, ifname);
        let mut freed = Vec::new();
        for (ip, o) in self.entries()? {
            if o != owner {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => freed.push(ip),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, e)),
            }
        }
        freed.sort();
        Ok(freed)
    }
}

impl Ipam {
    fn link_local_path(&self, host_veth: &str) -> PathBuf {
        self.dir.join(format!("{host_veth}.link-local"))
    }

    /// Records the link-local address of the pod behind `host_veth`.
    pub(crate) fn record_link_local(&self, host_veth: &str, addr: IpAddr) -> Result<()> {
        let path = self.link_local_path(host_veth);
        std::fs::write(&path, format!("{addr}\n")).map_err(|e| io_error("write", &path, e))
    }

    /// Removes that record (nothing recorded is fine).
    pub(crate) fn forget_link_local(&self, host_veth: &str) -> Result<()> {
        let path = self.link_local_path(host_veth);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }
}

/// The link-local address recorded for the pod behind `host_veth` in `network`'s store
/// under `data_dir` (`None` if none is).
pub(crate) fn link_local(data_dir: &Path, network: &str, host_veth: &str) -> Option<IpAddr> {
    let ipam = Ipam::new(data_dir, network);
    let text = std::fs::read_to_string(ipam.link_local_path(host_veth)).ok()?;
    text.trim().parse().ok()
}

fn owner_line(id: &str, ifname: &str) -> String {
    format!("{id}\n{ifname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn store() -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::new(dir.path(), "weftnet");
        (dir, ipam)
    }

    #[test]
    fn first_lease_skips_network_and_gateway_in_both_families() {
        let (_d, ipam) = store();
        let ranges = [net("10.244.1.0/24"), net("fd00:1::/64")];
        let leases = ipam.allocate(&ranges, "c1", "eth0").expect("allocate");
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].address, ip("10.244.1.2"));
        assert_eq!(leases[0].gateway(), ip("10.244.1.1"));
        assert_eq!(leases[0].net(), net("10.244.1.2/24"));
        assert_eq!(leases[1].address, ip("fd00:1::2"));
        assert_eq!(leases[1].gateway(), ip("fd00:1::1"));
        assert!(leases.iter().all(|l| l.fresh));
        let text = std::fs::read_to_string(_d.path().join("weftnet/10.244.1.2")).expect("file");
        assert_eq!(text, "c1\neth0\n");
    }

    #[test]
    fn repeated_add_returns_the_same_addresses() {
        let (_d, ipam) = store();
        let ranges = [net("10.244.1.0/24")];
        let first = ipam.allocate(&ranges, "c1", "eth0").expect("allocate");
        let again = ipam.allocate(&ranges, "c1", "eth0").expect("allocate");
        assert_eq!(first[0].address, again[0].address);
        assert!(!again[0].fresh);
        let other_if = ipam.allocate(&ranges, "c1", "net1").expect("allocate");
        assert_ne!(other_if[0].address, first[0].address);
        assert_eq!(
            ipam.lookup("c1", "eth0").expect("lookup"),
            vec![first[0].address]
        );
    }

    #[test]
    fn exhaustion_skips_broadcast_and_rolls_back_the_other_family() {
        let (_d, ipam) = store();
        // A /29 has 8 addresses: network, gateway, broadcast and 5 for pods.
        let v4 = net("10.9.0.0/29");
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(
                ipam.allocate(&[v4], &format!("c{i}"), "eth0")
                    .expect("allocate")[0]
                    .address,
            );
        }
        assert_eq!(got.first(), Some(&ip("10.9.0.2")));
        assert_eq!(got.last(), Some(&ip("10.9.0.6")));
        let both = [net("fd00:2::/64"), v4];
        let e = ipam.allocate(&both, "late", "eth0").expect_err("exhausted");
        assert_eq!(e.code, code::EXHAUSTED);
        assert!(e.msg.contains("10.9.0.0/29"), "{}", e.msg);
        // The IPv6 lease taken before the failure was given back.
        assert!(ipam.lookup("late", "eth0").expect("lookup").is_empty());
    }

    #[test]
    fn release_frees_for_the_next_container_and_repeats_are_fine() {
        let (_d, ipam) = store();
        let ranges = [net("10.244.1.0/24")];
        let a = ipam.allocate(&ranges, "a", "eth0").expect("allocate")[0].address;
        let b = ipam.allocate(&ranges, "b", "eth0").expect("allocate")[0].address;
        assert_eq!(ipam.release("a", "eth0").expect("release"), vec![a]);
        assert!(ipam.release("a", "eth0").expect("release again").is_empty());
        assert!(ipam
            .release("unknown", "eth0")
            .expect("release unknown")
            .is_empty());
        let c = ipam.allocate(&ranges, "c", "eth0").expect("allocate")[0].address;
        assert_eq!(c, a);
        assert_eq!(ipam.lookup("b", "eth0").expect("lookup"), vec![b]);
    }

    #[test]
    fn release_of_a_store_never_written_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::new(&dir.path().join("absent"), "weftnet");
        assert!(ipam.release("x", "eth0").expect("release").is_empty());
        assert!(ipam.lookup("x", "eth0").expect("lookup").is_empty());
    }

    #[test]
    fn rollback_frees_only_fresh_leases() {
        let (_d, ipam) = store();
        let ranges = [net("10.244.1.0/24")];
        ipam.allocate(&ranges, "a", "eth0").expect("allocate");
        let again = ipam.allocate(&ranges, "a", "eth0").expect("allocate");
        ipam.rollback(&again).expect("rollback");
        assert_eq!(ipam.lookup("a", "eth0").expect("lookup").len(), 1);
        let b = ipam.allocate(&ranges, "b", "eth0").expect("allocate");
        ipam.rollback(&b).expect("rollback");
        assert!(ipam.lookup("b", "eth0").expect("lookup").is_empty());
    }

    #[test]
    fn concurrent_allocations_never_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ranges = [net("10.244.0.0/26"), net("fd00:3::/120")];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // Its own store object (own lock descriptor), as separate processes have.
                    let ipam = Ipam::new(&path, "weftnet");
                    (0..7)
                        .flat_map(|i| {
                            ipam.allocate(&ranges, &format!("c{t}-{i}"), "eth0")
                                .expect("allocate")
                        })
                        .map(|l| l.address)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<IpAddr> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(all.len(), 8 * 7 * 2);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8 * 7 * 2, "an address was handed out twice");
        // 56 of the /26's 61 pod addresses are now in use.
        let ipam = Ipam::new(dir.path(), "weftnet");
        let more: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&ranges[..1], &format!("x{i}"), "eth0"))
            .collect();
        assert!(more.iter().all(|r| r.is_ok()));
        let e = ipam
            .allocate(&ranges[..1], "full", "eth0")
            .expect_err("full");
        assert_eq!(e.code, code::EXHAUSTED);
    }

    #[test]
    fn link_local_records_are_kept_apart_from_leases() {
        let (dir, ipam) = store();
        let first = ipam
            .allocate(&[net("fd00::/64")], "c1", "eth0")
            .expect("allocate");
        let ll = ip("fe80::1c2d:3eff:fe4f:5a6b");
        ipam.record_link_local("wf0123", ll).expect("record");
        assert_eq!(link_local(dir.path(), "weftnet", "wf0123"), Some(ll));
        assert_eq!(link_local(dir.path(), "weftnet", "wf9999"), None);
        // not an address lease: the next container gets the next address, and the
        // first one's addresses are exactly its lease
        let next = ipam
            .allocate(&[net("fd00::/64")], "c2", "eth0")
            .expect("allocate");
        assert_ne!(next[0].address, first[0].address);
        assert_eq!(
            ipam.lookup("c1", "eth0").expect("lookup"),
            vec![first[0].address]
        );
        ipam.forget_link_local("wf0123").expect("forget");
        ipam.forget_link_local("wf0123").expect("forget twice");
        assert_eq!(link_local(dir.path(), "weftnet", "wf0123"), None);
    }

    #[test]
    fn usable_offsets_per_family() {
        assert_eq!(usable_offsets(net("10.0.0.0/24")), 2..=254);
        assert_eq!(usable_offsets(net("10.0.0.0/30")), 2..=2);
        assert_eq!(usable_offsets(net("fd00::/120")), 2..=255);
        assert_eq!(nth(net("fd00::/64"), 1), ip("fd00::1"));
    }
}
