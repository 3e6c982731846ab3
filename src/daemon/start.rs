//! The start sequence, step by step, in an order that fails early: certificates, the
//! host side ([`super::host`]: ports, overlay interface, advertised endpoint, bridge,
//! masquerade chain), then the node reconciler and the data plane with its first
//! peers, addresses and routes, the control socket and network policy, then the tasks.
//! Each thing created is handed to the [`Teardown`] the moment it exists; after each
//! step a test hook (`failpoint`) can make start-up fail there.

use super::host::{host_side, HostSide};
use super::teardown::{failpoint, Created, Teardown};
use super::Running;
use crate::cluster::{self, Links, Shell};
use crate::config::Config;
use crate::control;
use crate::dataplane::Dataplane;
use crate::kube::{self, KubeView};
use crate::netlink::Netlink;
use crate::rotation::Identity;
use crate::status::{NodeInfo, StatusReport};
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
use weftnet_proto::gossip::GossipConfig;
use weftnet_proto::keys::PrivateKey;
use weftnet_proto::node::{GossipSetup, Node, NodeConfig, PeerSpec, Status};

/// Control datagrams queued between the UDP thread and the control plane.
const CONTROL_QUEUE: usize = 4096;
/// After a restart, how long peers are called as soon as they are set: those known
/// before the restart arrive within it (by the saved members), and still know this
/// node's key.
const RESTART_CALL_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates everything in order, each thing owned by `teardown` as soon as it exists.
/// `started` is when the process started (for the metrics).
pub(super) async fn start(
    config: Config,
    identity: Identity,
    secrets: zeroize::Zeroizing<Vec<[u8; 32]>>,
    kube: Option<kube::Started>,
    (started, rotated): (SystemTime, Arc<AtomicBool>),
    netlink: &Arc<Netlink>,
    teardown: &mut Teardown,
) -> Result<Running> {
    let key = identity.key.clone();
    // Certificates are checked before anything is created.
    let trust = trust(&config, &key)?;
    let host = host_side(&config, netlink, teardown).await?;
    let node = reconciler(&config, &key, identity.handover, secrets, trust, &host)?;
    let clustered = node.status().clustered;
    let chained = config.kube.as_ref().and_then(|k| k.chained);
    let links = Links {
        overlay: host.overlay,
        bridge: host.bridge,
        table: chained.map(|_| crate::chained::TABLE),
    };
    let (mut shell, status) =
        Shell::new(node, Arc::clone(netlink), links, config.state_dir.clone());
    if host.restarted {
        shell.restarted(RESTART_CALL_WINDOW);
    }

    // The data plane, with its peers, addresses and routes in place before it runs.
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (snoop_tx, snoop_rx) = mpsc::channel(CONTROL_QUEUE);
    let range = config.cluster.as_ref().and_then(|c| c.range);
    let public_key = key.public_key();
    let dp = Dataplane::new(
        key,
        host.tun,
        host.udp,
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
            l2: host.l2,
            pods: host.pods,
            mtu: u16::try_from(host.mtu).unwrap_or(u16::MAX),
        },
    )?;
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
    let listener = control::bind(&host.socket)?;
    teardown.push(Created::File(host.socket));
    failpoint("control socket")?;
    let local = match (&config.kube, config.network_policy) {
        (Some(k), true) => Some(crate::policy::Local::Node {
            name: k.node_name.clone(),
            cni_data: k.cni_data_dir.clone(),
        }),
        _ if !config.policies.is_empty() => {
            Some(crate::policy::Local::Fixed(config.policies.clone()))
        }
        _ => None,
    };
    let policy = match local {
        Some(local) => Some(crate::policy::start(local, host.bridge.is_some(), teardown).await?),
        None => {
            crate::policy::remove_leftover().await;
            None
        }
    };
    failpoint("network policy")?;

    // From here on nothing fails: the tasks start.
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let shutdown = Arc::new(Notify::new());
    let shell = tokio::spawn(shell.run(Arc::clone(&dp), control_rx, snoop_rx, commands_rx));
    let mut others = Vec::new();
    let policy_view = policy.as_ref().map(|p| p.view.clone());
    if let Some(view) = policy_view.clone() {
        others.push(tokio::spawn(crate::policy::follow_receive_policy(
            view,
            commands_tx.clone(),
        )));
    }
    let policy_cluster = policy.map(|p| {
        others.push(p.task);
        p.cluster
    });
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
            mtu: host.mtu,
            public_key: public_key.to_base64(),
            endpoint: host.endpoint,
            commands: commands_tx.clone(),
            shutdown: Arc::clone(&shutdown),
            status: status.clone(),
            policy: policy_cluster,
            netlink: Arc::clone(netlink),
            dataplane: Arc::clone(&dp),
        });
        others.extend(tasks);
        kube_view = Some(view);
    }
    for listener in host.listeners {
        let mut routes = Vec::new();
        if listener.serves.contains(&crate::health::FLAG) {
            let checks = health_checks(&dp, kube_view.clone(), status.clone(), chained.is_some());
            routes.extend(crate::health::routes(checks));
        }
        if listener.serves.contains(&crate::metrics::FLAG) {
            routes.push(crate::metrics::route(crate::metrics::Sources {
                dp: Arc::clone(&dp),
                status: status.clone(),
                kube: kube_view.clone(),
                policy: policy_view.clone(),
                started,
                key: (identity.since, identity.generation()),
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
        mtu: host.mtu,
        key_since: identity.since,
        key_generation: identity.generation(),
    };
    let rotate = Arc::new(Notify::new());
    let rotator = rotator(&config, &identity, Arc::clone(&rotate), rotated);
    if let (Some(lifetime), Some(r)) = (
        config.cluster.as_ref().and_then(|c| c.key_lifetime),
        rotator.clone(),
    ) {
        others.push(tokio::spawn(rotate_when_old(identity.age(), lifetime, r)));
    }
    if identity.handover.is_some() {
        crate::rotation::confirm(&config.state_dir);
    }
    let report_dp = Arc::clone(&dp);
    let handler = control::Handler {
        report: Box::new(move || {
            let status = status.borrow().clone();
            let mut r = StatusReport::build(&node_info, &report_dp, &status);
            r.kubernetes = kube_view.as_ref().map(|k| k.borrow().status());
            r.policy = policy_view.as_ref().map(|p| p.borrow().status());
            r
        }),
        commands: commands_tx.clone(),
        shutdown: Arc::clone(&shutdown),
        rotate: Box::new(move || match &rotator {
            Some(r) => r(),
            None => Err(NO_ROTATION.to_string()),
        }),
    };
    let server = tokio::spawn(control::serve(listener, handler));
    tracing::info!(
        interface = %config.interface,
        public_key = %public_key,
        port = config.listen_port,
        mtu = host.mtu,
        peers = config.peers.len(),
        gossip = clustered,
        "weftnet is up"
    );
    let chained = config
        .kube
        .as_ref()
        .filter(|k| k.chained.is_some())
        .map(|k| (Arc::clone(netlink), k.cni_conf_dir.clone()));
    Ok(Running {
        failure: dp.failure(),
        chained,
        commands: commands_tx,
        shell,
        server,
        others,
        shutdown,
        rotate,
    })
}

/// Why a node cannot rotate its key.
const NO_ROTATION: &str = "key rotation needs gossip (a cluster secret), no static [[peer]] and no cluster CA: static peers name this node by its key on their side and cannot follow, and with a CA the new key needs a certificate only the CA can sign (rotate by hand: new key, `weftnet ca sign`, restart)";

/// A key rotation, shared by `weftnet rotate-key` and `--key-lifetime`.
type Rotator = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Makes a new key, stores it with its hand-over and has the daemon restart with it
/// (`None` where rotation is not possible). Only the first call rotates.
fn rotator(
    config: &Config,
    identity: &Identity,
    rotate: Arc<Notify>,
    rotated: Arc<AtomicBool>,
) -> Option<Rotator> {
    if !config.peers.is_empty() {
        return None;
    }
    // With a certificate of its own, a new key needs the CA's signature.
    let c = config
        .cluster
        .as_ref()
        .filter(|c| c.ca.as_ref().is_none_or(|(_, cert)| cert.is_none()))?;
    let (state_dir, name, identity) = (config.state_dir.clone(), c.name.clone(), identity.clone());
    Some(Arc::new(move || {
        if rotated.swap(true, Ordering::SeqCst) {
            return Err("a key rotation is already under way".into());
        }
        match crate::rotation::rotate(&state_dir, &identity, &name) {
            Ok(new) => {
                tracing::info!(old = %identity.key.public_key(), new = %new, generation = identity.generation() + 1, "rotated this node's key; restarting with it");
                rotate.notify_one();
                Ok(new.to_base64())
            }
            Err(e) => {
                rotated.store(false, Ordering::SeqCst);
                tracing::error!(error = %format!("{e:#}"), "cannot rotate this node's key");
                Err(format!("{e:#}"))
            }
        }
    }))
}

/// `--key-lifetime`: rotates once the key is `lifetime` old (it is `age` now); a
/// failure is retried a minute later.
async fn rotate_when_old(age: Duration, lifetime: Duration, rotate: Rotator) {
    tokio::time::sleep(lifetime.saturating_sub(age)).await;
    loop {
        tracing::info!(lifetime = ?lifetime, "this node's key reached --key-lifetime");
        if rotate().is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// With a cluster CA: the CA's key and this node's certificate (if it has one),
/// checked.
fn trust(config: &Config, key: &PrivateKey) -> Result<Option<Trust>> {
    match config
        .cluster
        .as_ref()
        .and_then(|c| c.ca.as_ref().map(|ca| (c, ca)))
    {
        Some((c, (ca_file, Some(cert_file)))) => {
            let (ca, cert) = crate::ca::load(ca_file, cert_file, &key.public_key(), &c.name)?;
            Ok(Some((ca, Some(cert))))
        }
        Some((_, (ca_file, None))) => Ok(Some((crate::ca::load_ca(ca_file)?, None))),
        None => Ok(None),
    }
}

/// The CA's key and this node's certificate, if it has one.
type Trust = ([u8; 32], Option<weftnet_proto::cert::Certificate>);

/// The node reconciler, which decides blocks, addresses, routes and peers from here on.
fn reconciler(
    config: &Config,
    key: &PrivateKey,
    handover: Option<weftnet_proto::gossip::Handover>,
    secrets: zeroize::Zeroizing<Vec<[u8; 32]>>,
    trust: Option<Trust>,
    host: &HostSide,
) -> Result<Node> {
    let gossip = match (&config.cluster, host.endpoint) {
        (Some(c), Some(endpoint)) => Some(GossipSetup {
            config: GossipConfig {
                ca: trust.as_ref().map(|(ca, _)| *ca),
                // Kubernetes nodes are vouched for by their Node, and a host outside
                // the cluster trusts the nodes by --pod-range.
                ca_optional: config.kube.is_some() || c.pod_range.is_some(),
                ..GossipConfig::default()
            },
            secrets,
            identity: key.clone(),
            certificate: trust.and_then(|(_, cert)| cert),
            handover,
            name: c.name.clone(),
            endpoint,
            epoch: cluster::next_epoch(&config.state_dir.join("epoch"))?,
            rng_seed: rand::random(),
            seeds: c.join.clone(),
            known: cluster::saved_members(&config.state_dir.join(cluster::MEMBERS_FILE)),
        }),
        _ => None,
    };
    let range = config.cluster.as_ref().and_then(|c| c.range);
    let static_peers = config
        .peers
        .iter()
        .map(|p| PeerSpec {
            peer: p.clone(),
            groups: Vec::new(),
            first_contact: true,
        })
        .collect();
    Node::adopting(
        NodeConfig {
            public_key: key.public_key(),
            addresses: config.addresses.clone(),
            static_peers,
            blocks: config.blocks.clone(),
            range,
            saved_block: range
                .and_then(|_| cluster::saved_block(&config.state_dir.join(cluster::BLOCK_FILE))),
            bridge: host.bridge.is_some(),
            group_filter: config.multicast.filter.clone(),
            gossip,
        },
        host.adopted.clone(),
        Instant::now(),
    )
    .map_err(|e| anyhow::anyhow!("cannot start gossip: {e}"))
    .map(|mut node| {
        if config.kube.as_ref().is_some_and(|k| k.chained.is_some()) {
            node.await_pod_addresses();
        }
        if let Some((range, block_len)) = config.cluster.as_ref().and_then(|c| c.pod_range) {
            node.trust_pod_range(range, block_len);
        }
        node
    })
}

/// The probes: live while the data plane runs; ready once the node has a block and,
/// in Kubernetes mode, the CNI config is written.
fn health_checks(
    dp: &Arc<Dataplane>,
    kube: Option<watch::Receiver<KubeView>>,
    status: watch::Receiver<Status>,
    chained: bool,
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
            if !chained && status.borrow().blocks.is_empty() {
                return Err("no pod CIDR yet: claiming a block from --range".into());
            }
            if k.borrow().cni_config.is_none() {
                if chained {
                    return Err("the chained CNI config is not written yet: is aws-node's 10-aws.conflist there?".into());
                }
                return Err("the CNI network config is not written yet".into());
            }
            Ok(())
        }),
    }
}
