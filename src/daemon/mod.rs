//! `weftnet up`, as wiring: validates the settings, acquires the node's resources in
//! an order that fails early (key, secrets, control socket, HTTP listeners, UDP port,
//! TUN interface, bridge, masquerade chain), hands each to the [`Teardown`] the moment
//! it exists, builds the node reconciler (`weftnet_proto::node::Node`) and runs its
//! shell, the data plane, the control socket, the HTTP endpoints (probes, metrics) and
//! the Kubernetes tasks until SIGINT, SIGTERM, SIGHUP, `weftnet leave` or a data-plane
//! failure; then leaves the mesh gracefully and removes what it created. Decisions
//! live in the reconciler; nothing here decides.

pub(crate) mod teardown;

use crate::cli::UpArgs;
use crate::cluster::{self, Command, Links, Shell};
use crate::config::{Config, LogFormat, WIREGUARD_OVERHEAD};
use crate::control;
use crate::dataplane::Dataplane;
use crate::keyfile;
use crate::kube::{self, KubeView};
use crate::netlink::Netlink;
use crate::status::{NodeInfo, StatusReport};
use crate::system;
use crate::tun::Tun;
use crate::udp::Udp;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use teardown::{failpoint, Created, Teardown};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use weftnet_proto::gossip::GossipConfig;
use weftnet_proto::keys::PrivateKey;
use weftnet_proto::node::{GossipSetup, Node, NodeConfig, PeerSpec, Status};

/// Control datagrams queued between the UDP thread and the control plane.
const CONTROL_QUEUE: usize = 4096;
/// Longest wait for the graceful leave at shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Logs to stderr, filtered by `--log`, as text or one JSON object per line.
fn init_logging(filter: &str, format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        anyhow::anyhow!("invalid --log filter {filter:?} ({e}): use a level such as info or debug")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields (message included) at the top level of each object.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

pub(crate) fn run(args: UpArgs) -> Result<()> {
    let started = SystemTime::now();
    let config = Config::load(&args)?;
    init_logging(&config.log, config.log_format)?;
    if !system::has_net_admin() {
        bail!("weftnet up needs CAP_NET_ADMIN to create {}: run it as root, or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)", config.interface);
    }
    keyfile::ensure_state_dir(&config.state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(up(config, started))
}

/// The node's key, secrets and (in Kubernetes mode) Node facts, then everything else
/// under one [`Teardown`] that runs on every way out.
async fn up(mut config: Config, started: SystemTime) -> Result<()> {
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
    let kube = tokio::select! {
        r = kube::prepare(&mut config) => r?,
        _ = stop_signal() => {
            tracing::info!("stopped while waiting for the Kubernetes API server");
            return Ok(());
        }
    };
    if !key_existed {
        tracing::info!(path = %config.private_key_file.display(), "created a new private key");
    }
    let netlink = Arc::new(Netlink::connect()?);
    let mut teardown = Teardown::new(Arc::clone(&netlink));
    let result = match start(config, key, secrets, kube, started, &netlink, &mut teardown).await {
        Ok(running) => {
            teardown.started();
            running.run().await
        }
        Err(e) => Err(e),
    };
    teardown.remove().await;
    if result.is_ok() {
        tracing::info!("weftnet stopped");
    }
    result
}

/// Resolves on SIGINT or SIGTERM (used while nothing exists yet).
async fn stop_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A peer from the config file, as the reconciler takes it.
fn static_peer(p: &crate::config::PeerConfig) -> PeerSpec {
    PeerSpec {
        peer: p.clone(),
        groups: Vec::new(),
        first_contact: true,
    }
}

/// A started node: the tasks to stop and the channels to talk to them.
struct Running {
    commands: mpsc::Sender<Command>,
    shell: JoinHandle<()>,
    server: JoinHandle<Result<()>>,
    others: Vec<JoinHandle<()>>,
    shutdown: Arc<Notify>,
    /// Turns `Some` when a data-plane thread dies.
    failure: watch::Receiver<Option<String>>,
}

/// Where other nodes reach this one: given, or the source address toward the seeds,
/// or the host's first global address.
async fn advertise(config: &Config, netlink: &Netlink, overlay: u32) -> Result<Option<SocketAddr>> {
    let Some(c) = &config.cluster else {
        return Ok(None);
    };
    let mut ip = c.advertise.map(|a| a.ip);
    if ip.is_none() {
        let seeds = cluster::resolve(&c.join).await;
        ip = cluster::detect_underlay_ip(&seeds);
    }
    if ip.is_none() {
        ip = netlink
            .global_addresses(overlay)
            .await
            .ok()
            .and_then(|v| v.first().copied());
    }
    let Some(ip) = ip else {
        bail!("cannot tell which underlay address other nodes reach this one at: give --advertise-address");
    };
    let port = c
        .advertise
        .and_then(|a| a.port)
        .unwrap_or(config.listen_port);
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Creates everything in order, each thing owned by `teardown` as soon as it exists.
/// `started` is when the process started (for the metrics).
async fn start(
    config: Config,
    key: PrivateKey,
    secrets: Vec<[u8; 32]>,
    kube: Option<kube::Started>,
    started: SystemTime,
    netlink: &Arc<Netlink>,
    teardown: &mut Teardown,
) -> Result<Running> {
    let socket = control::socket_path(&config.state_dir);
    control::claim_socket(&socket)?;
    // The HTTP listeners (probes, metrics; one when both have the same address).
    let wanted: Vec<(&'static str, SocketAddr)> = [
        (crate::health::FLAG, config.health_listen),
        (crate::metrics::FLAG, config.metrics),
    ]
    .into_iter()
    .filter_map(|(flag, addr)| Some((flag, addr?)))
    .collect();
    let listeners = crate::http::bind(&wanted)?;
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
    let overlay = netlink.link_index(&config.interface).await?;
    teardown.push(Created::Link {
        index: overlay,
        what: "overlay interface",
    });
    failpoint("interface")?;
    netlink
        .configure(overlay, mtu, &[])
        .await
        .with_context(|| format!("cannot configure interface {}", config.interface))?;
    let endpoint = advertise(&config, netlink, overlay).await?;
    failpoint("advertise")?;

    let range = config.cluster.as_ref().and_then(|c| c.range);
    let (bridge, l2) = match &config.bridge {
        Some(name) => {
            let v6 = config
                .blocks
                .iter()
                .chain(range.iter().map(|(r, _)| r))
                .any(|b| b.addr().is_ipv6());
            let r = range.map(|(r, _)| r);
            let (index, port) =
                crate::bridge::setup(netlink, teardown, name, &config.interface, mtu, v6, r)
                    .await?;
            (Some(index), Some(port))
        }
        None => (None, None),
    };
    failpoint("bridge")?;
    if let (true, Some((r, _))) = (config.masquerade, range) {
        let installed =
            tokio::task::spawn_blocking(move || crate::masquerade::Masquerade::install(&[r]))
                .await
                .context("the masquerade set-up did not finish")??;
        teardown.push(Created::Masquerade(installed));
    }
    failpoint("masquerade")?;

    // The node reconciler: decides blocks, addresses, routes and peers from here on.
    let public_key = key.public_key();
    let gossip = match (&config.cluster, endpoint) {
        (Some(c), Some(endpoint)) => {
            let epoch = cluster::next_epoch(&config.state_dir.join("epoch"))?;
            Some(GossipSetup {
                config: GossipConfig::default(),
                secrets,
                name: c.name.clone(),
                endpoint,
                epoch,
                rng_seed: rand::random(),
                seeds: c.join.clone(),
            })
        }
        _ => None,
    };
    let block_file = config.state_dir.join("block");
    let node = Node::new(
        NodeConfig {
            public_key,
            addresses: config.addresses.clone(),
            static_peers: config.peers.iter().map(static_peer).collect(),
            blocks: config.blocks.clone(),
            range,
            saved_block: range.and_then(|_| cluster::saved_block(&block_file)),
            bridge: bridge.is_some(),
            group_filter: config.multicast.filter.clone(),
            gossip,
        },
        Instant::now(),
    )
    .map_err(|e| anyhow::anyhow!("cannot start gossip: {e}"))?;
    let clustered = node.status().clustered;
    let links = Links { overlay, bridge };
    let (mut shell, status) = Shell::new(node, Arc::clone(netlink), links, block_file);

    // The data plane, with its peers, addresses and routes in place before it runs.
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (snoop_tx, snoop_rx) = mpsc::channel(CONTROL_QUEUE);
    let dp = Dataplane::new(
        key,
        tun,
        udp,
        crate::dataplane::Options {
            // Without gossip, control datagrams and snooped reports have no use.
            control: clustered.then_some(control_tx),
            snoop: clustered.then_some(snoop_tx),
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
    let added = shell
        .start(&dp)
        .await
        .with_context(|| format!("cannot configure interface {}", config.interface));
    for (index, address) in added.iter().flatten() {
        teardown.push_until_started(Created::Address {
            index: *index,
            address: *address,
        });
    }
    added?;
    failpoint("addresses")?;
    let threads = dp.start().context("cannot start the data plane threads")?;
    teardown.push(Created::Dataplane {
        dp: Arc::clone(&dp),
        threads,
    });
    failpoint("dataplane")?;
    let listener = control::bind(&socket)?;
    teardown.push(Created::File(socket));
    failpoint("control socket")?;

    // From here on nothing fails: the tasks start.
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let shutdown = Arc::new(Notify::new());
    let shell = tokio::spawn(shell.run(Arc::clone(&dp), control_rx, snoop_rx, commands_rx));
    let mut others = Vec::new();
    let mut kube_view = None;
    if let (Some(started), Some(k)) = (kube, config.kube.clone()) {
        let (tasks, view) = kube::spawn(kube::Running {
            started,
            config: k,
            bridge: config
                .bridge
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_BRIDGE.to_string()),
            listen_port: config.listen_port,
            mtu,
            public_key: public_key.to_base64(),
            endpoint,
            commands: commands_tx.clone(),
            shutdown: Arc::clone(&shutdown),
            status: status.clone(),
        });
        others.extend(tasks);
        kube_view = Some(view);
    }
    for listener in listeners {
        let mut routes = Vec::new();
        if listener.serves.contains(&crate::health::FLAG) {
            let checks = health_checks(&dp, kube_view.clone(), status.clone());
            routes.extend(crate::health::routes(checks));
        }
        if listener.serves.contains(&crate::metrics::FLAG) {
            routes.push(crate::metrics::route(crate::metrics::Sources {
                dp: Arc::clone(&dp),
                status: status.clone(),
                kube: kube_view.clone(),
                started,
            }));
        }
        tracing::info!(
            address = %listener.addr().map_or("?".to_string(), |a| a.to_string()),
            serves = %listener.serves.join(", "),
            "serving HTTP"
        );
        others.push(crate::http::serve(listener, routes)?);
    }
    let node_info = NodeInfo {
        listen_port: config.listen_port,
        mtu,
    };
    let report_dp = Arc::clone(&dp);
    let handler = control::Handler {
        report: Box::new(move || {
            let status = status.borrow().clone();
            let mut r = StatusReport::build(&node_info, &report_dp, &status);
            r.kubernetes = kube_view.as_ref().map(|k| k.borrow().status());
            r
        }),
        commands: commands_tx.clone(),
        shutdown: Arc::clone(&shutdown),
    };
    let server = tokio::spawn(control::serve(listener, handler));
    tracing::info!(
        interface = %config.interface,
        public_key = %public_key,
        port = config.listen_port,
        mtu,
        peers = config.peers.len(),
        gossip = clustered,
        "weftnet is up"
    );
    Ok(Running {
        failure: dp.failure(),
        commands: commands_tx,
        shell,
        server,
        others,
        shutdown,
    })
}

impl Running {
    /// Runs until a signal, `weftnet leave`, or a failure; then leaves the mesh.
    async fn run(mut self) -> Result<()> {
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let outcome = tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
            _ = hup.recv() => Ok("SIGHUP"),
            _ = self.shutdown.notified() => Ok("weftnet leave"),
            r = &mut self.server => match r {
                Ok(Err(e)) => Err(e.context("the control socket failed")),
                _ => Err(anyhow::anyhow!("the control socket task ended")),
            },
            _ = &mut self.shell => Err(anyhow::anyhow!("the control plane task ended")),
            failed = self.failure.wait_for(Option::is_some) => {
                let why = failed.ok().and_then(|f| f.clone()).unwrap_or_default();
                Err(anyhow::anyhow!("the data plane stopped: {why}"))
            }
        };
        match &outcome {
            Ok(why) => tracing::info!(signal = why, "stopping: leaving the mesh"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "stopping on a failure"),
        }
        // Graceful leave: the others drop this node at once instead of suspecting it.
        let (reply, done) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Leave(reply)).await.is_ok() {
            let _ = tokio::time::timeout(LEAVE_TIMEOUT, done).await;
        }
        self.shell.abort();
        self.server.abort();
        for t in self.others {
            t.abort();
        }
        outcome.map(|_| ())
    }
}

/// The probes: live while the data plane runs; ready once the node has a block and,
/// in Kubernetes mode, the CNI config is written.
fn health_checks(
    dp: &Arc<Dataplane>,
    kube: Option<watch::Receiver<KubeView>>,
    status: watch::Receiver<Status>,
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
            if status.borrow().blocks.is_empty() {
                return Err("no pod CIDR yet: claiming a block from --range".into());
            }
            if k.borrow().cni_config.is_none() {
                return Err("the CNI network config is not written yet".into());
            }
            Ok(())
        }),
    }
}
