//! `weftnet uninstall`: removes what weftnet put on this node, given the settings
//! `weftnet up` ran with (the config file and flags): the overlay interface and the L2
//! port if left, the bridge when nothing else is attached to it, the `unreachable`
//! guard routes, chained mode's rules and routing table, the masquerade chain, the NetworkPolicy table, the CNI network config, plugin and data, and the
//! state directory's files (the private key only with `--purge-key`). It refuses to
//! run while a daemon answers on the control socket, and a second run finds nothing.
//! The Node's annotations and condition are the operator's to remove (see README).

use crate::bridge::{port_name, UNREACHABLE_METRIC};
use crate::cli::UninstallArgs;
use crate::config::{
    parse_interface_name, parse_range, stacked, state_dir_or_default, DEFAULT_BRIDGE,
    DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, DEFAULT_CNI_DATA_DIR, DEFAULT_INTERFACE,
};
use crate::control::socket_path;
use crate::kube::publish::{CONFLIST, OLD_CONFLIST, PLUGIN};
use crate::netlink::Netlink;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where weftnet's things are, from the settings `up` ran with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    interface: String,
    bridge: String,
    /// `--range`: its guard route is removed even if its metric was changed by hand.
    range: Option<IpNet>,
    state_dir: PathBuf,
    private_key_file: PathBuf,
    purge_key: bool,
    cni_bin_dir: PathBuf,
    cni_conf_dir: PathBuf,
    cni_data_dir: PathBuf,
}

impl Plan {
    fn new(args: &UninstallArgs) -> Result<Self> {
        let s = stacked(&args.up)?;
        let interface = parse_interface_name(s.interface.as_deref().unwrap_or(DEFAULT_INTERFACE))?;
        let bridge = parse_interface_name(s.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE))?;
        let range = s
            .cluster
            .range
            .as_deref()
            .map(|r| parse_range(r, s.cluster.block_prefix_len))
            .transpose()?
            .map(|(range, _)| range);
        let state_dir = state_dir_or_default(s.state_dir);
        let private_key_file = s
            .private_key_file
            .unwrap_or_else(|| state_dir.join("private.key"));
        let k = s.kubernetes;
        let dir = |d: Option<PathBuf>, default: &str| d.unwrap_or_else(|| PathBuf::from(default));
        Ok(Self {
            interface,
            bridge,
            range,
            state_dir,
            private_key_file,
            purge_key: args.purge_key,
            cni_bin_dir: dir(k.cni_bin_dir, DEFAULT_CNI_BIN_DIR),
            cni_conf_dir: dir(k.cni_conf_dir, DEFAULT_CNI_CONF_DIR),
            cni_data_dir: dir(k.cni_data_dir, DEFAULT_CNI_DATA_DIR),
        })
    }
}

/// What a run did, printed line by line.
#[derive(Default)]
struct Report {
    removed: usize,
    kept: Vec<String>,
}

impl Report {
    fn removed(&mut self, what: impl std::fmt::Display) {
        println!("removed {what}");
        self.removed += 1;
    }

    fn kept(&mut self, why: String) {
        println!("kept {why}");
        self.kept.push(why);
    }
}

pub(crate) fn run(args: &UninstallArgs) -> Result<()> {
    let plan = Plan::new(args)?;
    let socket = socket_path(&plan.state_dir);
    if UnixStream::connect(&socket).is_ok() {
        bail!(
            "a weftnet daemon is running (it answers on {}): stop it first (systemctl stop weftnet, or remove the DaemonSet from this node), then run uninstall again",
            socket.display()
        );
    }
    let mut report = Report::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(network(&plan, &mut report)).map_err(|e| {
        match e.downcast_ref::<crate::netlink::Error>() {
            Some(n) if n.errno() == Some(libc::EPERM) => {
                anyhow!("{e}: run weftnet uninstall as root (it needs CAP_NET_ADMIN)")
            }
            _ => e,
        }
    })?;
    match crate::masquerade::remove_leftover()? {
        tools if tools.is_empty() => {}
        tools => report.removed(format!(
            "nat chain {} ({})",
            crate::masquerade::CHAIN,
            tools.join(", ")
        )),
    }
    // Without nft there can be no table of weftnet's to remove.
    if let Ok(true) = crate::policy::nft::remove() {
        report.removed(format!("nftables table inet {}", crate::policy::nft::TABLE));
    }
    let cni = files(&plan, &mut report)?;
    let but = if report.kept.is_empty() {
        ""
    } else {
        " but for what is kept above"
    };
    if report.removed == 0 {
        println!("nothing left to remove{but}: weftnet is not installed on this node");
    } else {
        println!("weftnet is uninstalled from this node{but}");
    }
    if cni {
        println!("in Kubernetes, also remove this Node's weftnet.io/* annotations and its NetworkUnavailable condition with kubectl: see \"Uninstall\" in README.md");
    }
    Ok(())
}

/// The interfaces, the bridge and the guard routes.
async fn network(plan: &Plan, report: &mut Report) -> Result<()> {
    let netlink = Netlink::connect()?;
    for (name, what) in [
        (port_name(&plan.interface), "L2 port"),
        (plan.interface.clone(), "overlay interface"),
    ] {
        if netlink.find_link(&name).await?.is_some() {
            netlink.delete_named(&name).await?;
            report.removed(format!("{what} {name}"));
        }
    }
    match netlink.find_link(&plan.bridge).await? {
        None => {}
        Some((_, false)) => report.kept(format!(
            "interface {}: it is not a bridge, so not weftnet's (give --bridge if weftnet used another name)",
            plan.bridge
        )),
        Some((index, true)) => {
            let ports = netlink.ports_of(index).await?;
            if ports.is_empty() {
                netlink.delete_named(&plan.bridge).await?;
                report.removed(format!("bridge {}", plan.bridge));
            } else {
                report.kept(format!(
                    "bridge {}: {} still attached (pods or VMs use it): remove them (drain the node) and run uninstall again",
                    plan.bridge,
                    ports.join(", ")
                ));
            }
        }
    }
    let table = crate::chained::TABLE;
    let rules = netlink
        .source_rules(table, crate::chained::RULE_PRIORITY)
        .await?;
    for (ip, rule) in rules {
        netlink.del_rule(rule).await?;
        report.removed(format!("rule from {ip} lookup {table}"));
    }
    netlink.flush_table(table).await?;
    let mut guards = netlink.unreachable_routes(UNREACHABLE_METRIC).await?;
    if let Some(range) = plan.range {
        if !guards.contains(&range) {
            guards.push(range);
        }
    }
    for prefix in guards {
        if netlink.del_unreachable(prefix, UNREACHABLE_METRIC).await? {
            report.removed(format!(
                "guard route unreachable {prefix} metric {UNREACHABLE_METRIC}"
            ));
        }
    }
    Ok(())
}

/// The CNI files and the state directory; returns whether there were CNI files.
fn files(plan: &Plan, report: &mut Report) -> Result<bool> {
    let before = report.removed;
    let tmp = |name: &str| format!(".{name}.tmp");
    let chained = crate::chained::conflist::CONFLIST;
    for name in [
        chained,
        &tmp(chained),
        CONFLIST,
        OLD_CONFLIST,
        &tmp(CONFLIST),
    ] {
        remove_file(&plan.cni_conf_dir.join(name), "CNI network config", report)?;
    }
    for name in [PLUGIN, &tmp(PLUGIN)] {
        remove_file(&plan.cni_bin_dir.join(name), "CNI plugin", report)?;
    }
    if plan.cni_data_dir.exists() {
        std::fs::remove_dir_all(&plan.cni_data_dir).with_context(|| {
            format!(
                "cannot remove the CNI data directory {}: remove it by hand",
                plan.cni_data_dir.display()
            )
        })?;
        report.removed(format!(
            "CNI data directory {}",
            plan.cni_data_dir.display()
        ));
    }
    let cni = report.removed > before;
    state(plan, report)?;
    let rotated = crate::rotation::files(&plan.state_dir);
    for (path, what) in std::iter::once((&plan.private_key_file, "private key"))
        .chain(rotated.iter().map(|p| (p, "rotated private key")))
    {
        if !path.exists() {
            continue;
        }
        if plan.purge_key {
            remove_file(path, what, report)?;
        } else {
            report.kept(format!(
                "{what} {} (give --purge-key to remove it)",
                path.display()
            ));
        }
    }
    // Now empty unless the key (or something not weftnet's) is in it.
    if std::fs::remove_dir(&plan.state_dir).is_ok() {
        report.removed(format!("state directory {}", plan.state_dir.display()));
    }
    Ok(cni)
}

/// The files the daemon keeps in its state directory (control socket, epoch, block,
/// caches), but the private key and a rotated one (`rotated.key`). Subdirectories are not weftnet's and stay.
fn state(plan: &Plan, report: &mut Report) -> Result<()> {
    let entries = match std::fs::read_dir(&plan.state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!(
            "cannot read the state directory {}: {e}: check --state-dir",
            plan.state_dir.display()
        ),
    };
    for entry in entries {
        let entry = entry.with_context(|| {
            format!(
                "cannot read the state directory {}",
                plan.state_dir.display()
            )
        })?;
        let path = entry.path();
        let key = path == plan.private_key_file
            || crate::rotation::files(&plan.state_dir).contains(&path);
        if key || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        remove_file(&path, "state file", report)?;
    }
    Ok(())
}

fn remove_file(path: &Path, what: &str, report: &mut Report) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            report.removed(format!("{what} {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!(
            "cannot remove {what} {}: {e}: remove it by hand",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Parses under the lock of the tests that set `WEFTNET_*` variables.
    fn plan(argv: &[&str]) -> Plan {
        let _env = crate::config::tests::env_lock();
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            crate::cli::Command::Uninstall(args) => Plan::new(&args).expect("plan"),
            other => panic!("not uninstall: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_those_of_up() {
        let p = plan(&["weftnet", "uninstall"]);
        assert_eq!(p.interface, "weft0");
        assert_eq!(p.bridge, "weftbr0");
        assert_eq!(p.range, None);
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/weftnet"));
        assert_eq!(
            p.private_key_file,
            PathBuf::from("/var/lib/weftnet/private.key")
        );
        assert!(!p.purge_key);
        assert_eq!(p.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(p.cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(p.cni_data_dir, PathBuf::from("/var/lib/cni/weftnet"));
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("weftnet.toml");
        std::fs::write(
            &file,
            "interface = \"mesh0\"\nbridge = \"br9\"\nstate_dir = \"/srv/weft\"\n\
             [cluster]\nrange = \"10.244.0.0/16\"\n[kubernetes]\ncni_conf_dir = \"/x/net.d\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf-8");
        let p = plan(&[
            "weftnet",
            "uninstall",
            "--config",
            config,
            "--bridge",
            "br1",
            "--purge-key",
        ]);
        assert_eq!(p.interface, "mesh0");
        assert_eq!(p.bridge, "br1");
        assert_eq!(p.range, Some("10.244.0.0/16".parse().expect("net")));
        assert_eq!(p.state_dir, PathBuf::from("/srv/weft"));
        assert_eq!(p.private_key_file, PathBuf::from("/srv/weft/private.key"));
        assert_eq!(p.cni_conf_dir, PathBuf::from("/x/net.d"));
        assert!(p.purge_key);
    }

    #[test]
    fn state_files_go_but_the_keys_and_a_rotated_key_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8");
        let p = plan(&["weftnet", "uninstall", "--state-dir", d]);
        for f in [
            "private.key",
            "rotated.key",
            "rotated.key.previous",
            "epoch",
            "block",
        ] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let mut report = Report::default();
        state(&p, &mut report).expect("state");
        let left: Vec<bool> = [
            "private.key",
            "rotated.key",
            "rotated.key.previous",
            "epoch",
            "block",
        ]
        .iter()
        .map(|f| dir.path().join(f).exists())
        .collect();
        assert_eq!(left, [true, true, true, false, false]);
    }
}
