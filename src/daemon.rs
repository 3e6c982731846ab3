//! `weftnet up`: validates the settings, acquires the node's resources in an order that
//! fails early and cleanly (key, control socket, UDP port, TUN interface, addresses and
//! routes), runs the data plane and the control socket until SIGINT/SIGTERM, and then
//! removes its interface and socket.

use crate::cli::UpArgs;
use crate::config::{Config, WIREGUARD_OVERHEAD};
use crate::control;
use crate::dataplane::{Dataplane, PeerSpec};
use crate::keyfile;
use crate::netlink::{routes_needed, Netlink};
use crate::status::{NodeInfo, StatusReport};
use crate::system;
use crate::tun::Tun;
use crate::udp::Udp;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

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

pub(crate) fn run(args: UpArgs) -> Result<()> {
    let config = Config::load(&args)?;
    init_logging(&config.log)?;
    if !system::has_net_admin() {
        bail!("weftnet up needs CAP_NET_ADMIN to create {}: run it as root, or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)", config.interface);
    }
    keyfile::ensure_state_dir(&config.state_dir)?;
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
    let socket = control::socket_path(&config.state_dir);
    control::claim_socket(&socket)?;
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if !key_existed {
        tracing::info!(path = %config.private_key_file.display(), "created a new private key");
    }
    runtime.block_on(run_node(config, key, udp, tun, mtu, socket))
}

async fn run_node(
    config: Config,
    key: weftnet_proto::keys::PrivateKey,
    udp: Udp,
    tun: Tun,
    mtu: u32,
    socket: std::path::PathBuf,
) -> Result<()> {
    let netlink = Netlink::connect()?;
    let index = netlink.link_index(&config.interface).await?;
    let setup = async {
        netlink.configure(index, mtu, &config.addresses).await?;
        let peer_prefixes: Vec<_> = config
            .peers
            .iter()
            .flat_map(|p| p.allowed_ips.clone())
            .collect();
        for prefix in routes_needed(&config.addresses, &peer_prefixes) {
            netlink.add_route(index, prefix).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = setup.await {
        let _ = netlink.delete_link(index).await;
        return Err(e.context(format!("cannot configure interface {}", config.interface)));
    }

    let peers = config
        .peers
        .iter()
        .map(|p| PeerSpec {
            public_key: p.public_key,
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p.persistent_keepalive,
        })
        .collect();
    let dp = Dataplane::new(key, tun, udp, None);
    dp.set_peers(peers);
    let threads = dp.start().context("cannot start the data plane threads")?;
    let node = NodeInfo {
        listen_port: config.listen_port,
        addresses: config.addresses.iter().map(|a| a.to_string()).collect(),
        mtu,
    };
    let report_dp = Arc::clone(&dp);
    let server = tokio::spawn(control::serve(socket.clone(), move || {
        StatusReport::build(&node, &report_dp)
    }));
    tracing::info!(
        interface = %config.interface,
        public_key = %dp.public_key(),
        port = config.listen_port,
        mtu,
        peers = config.peers.len(),
        "weftnet is up"
    );

    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        r = server => match r {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("the control socket task ended")),
        },
    };

    // Teardown: stop the threads, remove the interface and the socket.
    dp.stop();
    for t in threads {
        let _ = t.join();
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
