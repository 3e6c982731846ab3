//! `weftnet up`: validates the settings, acquires the node's resources in an order that
//! fails early and cleanly (key, secrets, control socket, UDP port, TUN interface,
//! addresses and routes), runs the data plane, the gossip control plane (with a
//! cluster secret) and the control socket until SIGINT/SIGTERM or `weftnet leave`,
//! then announces a graceful leave and removes its interface and socket.

use crate::cli::UpArgs;
use crate::cluster::{self, Cluster, ClusterView};
use crate::config::{Config, WIREGUARD_OVERHEAD};
use crate::control;
use crate::dataplane::{Dataplane, PeerSpec};
use crate::keyfile;
use crate::kube::{self, KubeView};
use crate::netlink::{routes_needed, Netlink};
use crate::status::{NodeInfo, StatusReport};
use crate::system;
use crate::tun::Tun;
use crate::udp::Udp;
use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use weftnet_proto::gossip::{Gossip, GossipConfig, NodeRecord};
use weftnet_proto::keys::PrivateKey;

/// Control datagrams queued between the UDP thread and the gossip task.
const CONTROL_QUEUE: usize = 4096;

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        anyhow::anyhow!("invalid --log filter {filter:?} ({e}): use a level such as info or debug")
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// Everything acquired before the async part starts.
struct Node {
    config: Config,
    key: PrivateKey,
    secrets: Vec<[u8; 32]>,
    udp: Udp,
    tun: Tun,
    mtu: u32,
    socket: std::path::PathBuf,
    kube: Option<kube::Started>,
    health: Option<std::net::TcpListener>,
}

pub(crate) fn run(args: UpArgs) -> Result<()> {
    let mut config = Config::load(&args)?;
    init_logging(&config.log)?;
    if !system::has_net_admin() {
        bail!("weftnet up needs CAP_NET_ADMIN to create {}: run it as root, or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)", config.interface);
    }
    keyfile::ensure_state_dir(&config.state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let secrets = match &config.cluster {
        Some(c) => cluster::read_secrets(&c.secret_files)?,
        None => Vec::new(),
    };
    let key_existed = config.private_key_file.exists();
    let key = keyfile::load_private_key(&config.private_key_file, config.private_key_is_default)?;
    if config
        .peers
        .iter()
        .any(|p| p.public_key == key.public_key())
    {
        bail!(
            "a [[peer]] has this node's own public key: remove that peer from this node's config"
        );
    }
    // Kubernetes mode: this Node's pod CIDRs and the seeds, before anything is made.
    let kube = runtime.block_on(async {
        tokio::select! {
            r = kube::prepare(&mut config) => r.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
            _ = async {
                match signal(SignalKind::terminate()) {
                    Ok(mut s) => { s.recv().await; }
                    Err(_) => std::future::pending().await,
                }
            } => Ok(None),
        }
    })?;
    let Some(kube) = kube else {
        tracing::info!("stopped while waiting for the Kubernetes API server");
        return Ok(());
    };
    let socket = control::socket_path(&config.state_dir);
    control::claim_socket(&socket)?;
    let health = config.health_listen.map(crate::health::bind).transpose()?;
    if system::interface_exists(&config.interface) {
        bail!(
            "interface {} already exists: choose another --interface, or remove it with `ip link del {}` if nothing uses it",
            config.interface,
            config.interface
        );
    }
    let udp = Udp::bind(config.listen_port)?;
    let mtu = config
        .mtu
        .unwrap_or_else(|| {
            system::underlay_mtu(&config.interface).saturating_sub(WIREGUARD_OVERHEAD)
        })
        .max(crate::config::MIN_MTU);
    let tun = Tun::create(&config.interface)?;
    if !key_existed {
        tracing::info!(path = %config.private_key_file.display(), "created a new private key");
    }
    runtime.block_on(run_node(Node {
        config,
        key,
        secrets,
        udp,
        tun,
        mtu,
        socket,
        kube,
        health,
    }))
}

fn static_peers(config: &Config) -> Vec<PeerSpec> {
    config
        .peers
        .iter()
        .map(|p| PeerSpec {
            peer: p.clone(),
            groups: Vec::new(),
            first_contact: true,
        })
        .collect()
}

async fn run_node(node: Node) -> Result<()> {
    let Node {
        config,
        key,
        secrets,
        udp,
        tun,
        mtu,
        socket,
        kube,
        health,
    } = node;
    let netlink = Arc::new(Netlink::connect()?);
    let index = netlink.link_index(&config.interface).await?;
    let range = config.cluster.as_ref().and_then(|c| c.range);
    let block_file = config.state_dir.join("block");
    // This node's blocks at start: given with --block, or saved by an earlier claim.
    let claim = cluster::claim_range(range, &config.blocks);
    let saved_block = claim.and_then(|(r, len)| cluster::saved_block(&block_file, r, len));
    let held: Vec<ipnet::IpNet> = config.blocks.iter().copied().chain(saved_block).collect();
    let placement = cluster::Placement {
        tun: index,
        bridge: None,
        range: range.map(|(r, _)| r),
    };
    let mut addresses = config.addresses.clone();
    if config.bridge.is_none() {
        addresses.extend(held.iter().map(|b| placement.address(*b).1));
    }
    let statics = static_peers(&config);
    let setup = async {
        netlink.configure(index, mtu, &addresses).await?;
        let peer_prefixes: Vec<_> = statics
            .iter()
            .flat_map(|p| p.peer.allowed_ips.clone())
            .collect();
        for prefix in routes_needed(&addresses, &peer_prefixes) {
            netlink.add_route(index, prefix).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = setup.await {
        let _ = netlink.delete_link(index).await;
        return Err(e.context(format!("cannot configure interface {}", config.interface)));
    }

    // Where other nodes reach this one: given, or the source address toward the
    // seeds, or the host's first global address.
    let mut advertise = None;
    if let Some(c) = &config.cluster {
        let seeds = cluster::resolve(&c.join);
        let mut ip = c
            .advertise
            .map(|a| a.ip)
            .or_else(|| cluster::detect_underlay_ip(&seeds));
        if ip.is_none() {
            ip = netlink
                .global_addresses(index)
                .await
                .ok()
                .and_then(|v| v.first().copied());
        }
        let Some(ip) = ip else {
            let _ = netlink.delete_link(index).await;
            bail!("cannot tell which underlay address other nodes reach this one at: give --advertise-address");
        };
        let port = c
            .advertise
            .and_then(|a| a.port)
            .unwrap_or(config.listen_port);
        advertise = Some(SocketAddr::new(ip, port));
    }
    // Bridge mode, once the advertised address is known (a gateway is no underlay).
    let (bridge, l2) = match &config.bridge {
        Some(name) => {
            let r = range.map(|(r, _)| r);
            match crate::bridge::setup(&netlink, name, &config.interface, mtu, &held, r).await {
                Ok((b, port)) => (Some(b), Some(port)),
                Err(e) => {
                    let _ = netlink.delete_link(index).await;
                    return Err(e);
                }
            }
        }
        None => (None, None),
    };
    let placement = cluster::Placement {
        bridge: bridge.as_ref().map(|b| b.index),
        ..placement
    };
    let masquerade = match (config.masquerade, range) {
        (true, Some((r, _))) => match crate::masquerade::Masquerade::install(&[r]) {
            Ok(m) => Some(m),
            Err(e) => {
                if let Some(b) = &bridge {
                    crate::bridge::teardown(&netlink, b).await;
                }
                let _ = netlink.delete_link(index).await;
                return Err(e);
            }
        },
        _ => None,
    };

    let (control_tx, control_rx) = match config.cluster {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    // Multicast needs gossip: members learn each other's groups from it.
    let (snoop_tx, snoop_rx) = match config.cluster {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let public_key = key.public_key();
    let dp = Dataplane::new(
        key,
        tun,
        udp,
        crate::dataplane::Options {
            control: control_tx,
            snoop: snoop_tx,
            multicast: config.multicast.clone(),
            broadcast_addrs: config
                .addresses
                .iter()
                .chain(range.iter().map(|(r, _)| r))
                .filter_map(|n| match n {
                    ipnet::IpNet::V4(v4) => Some(v4.broadcast()),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect(),
            l2,
        },
    );
    dp.set_peers(statics.clone());
    let threads = dp.start().context("cannot start the data plane threads")?;

    // The gossip control plane.
    let view = Arc::new(Mutex::new(ClusterView::default()));
    let (commands_tx, commands_rx) = tokio::sync::mpsc::channel(16);
    let mut cluster_task = None;
    if let (Some(c), Some(rx), Some(snoop), Some(endpoint)) =
        (&config.cluster, control_rx, snoop_rx, advertise)
    {
        let mut prefixes: Vec<_> = config
            .addresses
            .iter()
            .map(|a| ipnet::IpNet::from(a.addr()))
            .collect();
        prefixes.extend(held.iter().copied());
        let me = NodeRecord {
            public_key,
            name: c.name.clone(),
            endpoint,
            prefixes,
            version: 0,
        };
        let started = cluster::next_epoch(&config.state_dir.join("epoch")).and_then(|epoch| {
            let seed = rand::random::<u64>();
            Gossip::new(
                GossipConfig::default(),
                &secrets,
                me,
                epoch,
                seed,
                Instant::now(),
            )
            .map_err(|e| anyhow::anyhow!("cannot start gossip: {e}"))
        });
        let gossip = match started {
            Ok(g) => g,
            Err(e) => {
                dp.stop();
                for t in threads {
                    let _ = t.join();
                }
                let _ = netlink.delete_link(index).await;
                return Err(e);
            }
        };
        view.lock().name = c.name.clone();
        let cluster = Cluster::new(
            gossip,
            Arc::clone(&dp),
            Arc::clone(&netlink),
            index,
            statics,
            addresses.clone(),
            range.map(|(r, len)| (r, len, saved_block, block_file)),
            c.join.clone(),
            Arc::clone(&view),
            config.multicast.filter.clone(),
        )
        .with_blocks(config.blocks.clone(), placement.bridge);
        cluster_task = Some(tokio::spawn(cluster.run(rx, snoop, commands_rx)));
    }

    let node = NodeInfo {
        listen_port: config.listen_port,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        mtu,
    };
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let current_blocks = {
        let fixed = config.blocks.clone();
        let view = Arc::clone(&view);
        move || -> Vec<ipnet::IpNet> {
            if fixed.is_empty() {
                view.lock().block.into_iter().collect()
            } else {
                fixed.clone()
            }
        }
    };
    let mut kube_tasks = Vec::new();
    let mut kube_view: Option<Arc<Mutex<KubeView>>> = None;
    if let (Some(started), Some(k)) = (kube, config.kube.clone()) {
        let (tasks, kv) = kube::spawn(kube::Running {
            started,
            config: k,
            bridge: config
                .bridge
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_BRIDGE.to_string()),
            listen_port: config.listen_port,
            mtu,
            public_key: public_key.to_base64(),
            endpoint: advertise,
            commands: commands_tx.clone(),
            shutdown: Arc::clone(&shutdown),
            blocks: Box::new(current_blocks.clone()),
        });
        kube_tasks = tasks;
        kube_view = Some(kv);
    }
    let health = match health {
        Some(listener) => Some(crate::health::serve(
            listener,
            health_checks(&dp, kube_view.clone(), current_blocks),
        )?),
        None => None,
    };
    let report_kube = kube_view.clone();
    let report_dp = Arc::clone(&dp);
    let report_view = Arc::clone(&view);
    let clustered = config.cluster.is_some();
    let handler = control::Handler {
        report: Box::new(move || {
            let view = clustered.then(|| report_view.lock().clone());
            let mut r = StatusReport::build(&node, &report_dp, view.as_ref());
            r.kubernetes = report_kube.as_ref().map(|k| k.lock().status());
            if let Some(v) = &view {
                if let Some(block) = v.block {
                    let a = placement.address(block).1.to_string();
                    if !r.addresses.contains(&a) {
                        r.addresses.push(a);
                    }
                }
            }
            r
        }),
        commands: clustered.then(|| commands_tx.clone()),
        shutdown: Arc::clone(&shutdown),
    };
    let server = tokio::spawn(control::serve(socket.clone(), handler));
    tracing::info!(
        interface = %config.interface,
        public_key = %public_key,
        port = config.listen_port,
        mtu,
        peers = config.peers.len(),
        gossip = clustered,
        "weftnet is up"
    );

    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        _ = shutdown.notified() => Ok("weftnet leave"),
        r = server => match r {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("the control socket task ended")),
        },
    };

    // Graceful leave: the others drop this node at once instead of suspecting it.
    if let Some(task) = cluster_task {
        let (reply, done) = tokio::sync::oneshot::channel();
        if commands_tx
            .send(cluster::Command::Leave(reply))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(3), done).await;
        }
        task.abort();
    }
    for t in kube_tasks.into_iter().chain(health) {
        t.abort();
    }
    // Teardown: stop the threads, remove the interface and the socket.
    dp.stop();
    for t in threads {
        let _ = t.join();
    }
    if let Some(b) = &bridge {
        crate::bridge::teardown(&netlink, b).await;
    }
    if let Some(m) = &masquerade {
        m.remove();
    }
    if let Err(e) = netlink.delete_link(index).await {
        tracing::warn!(error = %e, "interface removal failed; closing the TUN device removes it");
    }
    drop(dp);
    let _ = std::fs::remove_file(&socket);
    let signal = outcome?;
    tracing::info!(signal, "weftnet stopped");
    Ok(())
}

/// The probes: live while the data plane runs; ready once the node has a block and,
/// in Kubernetes mode, the CNI config is written.
fn health_checks(
    dp: &Arc<Dataplane>,
    kube: Option<Arc<Mutex<KubeView>>>,
    blocks: impl Fn() -> Vec<ipnet::IpNet> + Send + Sync + 'static,
) -> crate::health::Checks {
    let live_dp = Arc::clone(dp);
    crate::health::Checks {
        live: Box::new(move || {
            if live_dp.running() {
                Ok(())
            } else {
                Err("the data plane has stopped".into())
            }
        }),
        ready: Box::new(move || {
            let Some(k) = &kube else {
                return Ok(());
            };
            if blocks().is_empty() {
                return Err("no pod CIDR yet: claiming a block from --range".into());
            }
            let k = k.lock();
            if k.cni_config.is_none() {
                return Err("the CNI network config is not written yet".into());
            }
            Ok(())
        }),
    }
}
