//! `weftnet up`, as wiring: validates the settings, reads the key and secrets (and in
//! Kubernetes mode this Node), then starts the node ([`start`]) under one
//! [`Teardown`] that owns everything created (the HTTP endpoints for probes and
//! metrics included), and runs it until a signal, `weftnet leave` or a failure (a
//! data-plane thread, the control plane task; the control socket retries accept errors
//! and ends only by a panic). SIGTERM, SIGHUP and SIGQUIT (and a failure) mean a
//! restart: no leave is announced and the persistent overlay interface, its addresses
//! and routes and the masquerade rules stay for the next run to adopt. `weftnet
//! leave`, SIGINT and the deletion of this Kubernetes Node mean for good: the node
//! leaves the mesh gracefully and removes what it created.
//! Decisions live in the node reconciler (`weftnet_proto::node`); nothing here decides.

mod host;
mod start;
pub(crate) mod teardown;

use crate::cli::UpArgs;
use crate::cluster::{self, Command};
use crate::config::{Config, LogFormat};
use crate::keyfile;
use crate::kube;
use crate::netlink::Netlink;
use crate::system;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use teardown::{Stop, Teardown};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

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
    let state_dir_was = keyfile::ensure_state_dir(&config.state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rotated = runtime.block_on(up(config, started, state_dir_was))?;
    drop(runtime);
    if rotated {
        return Err(restart_in_place());
    }
    Ok(())
}

/// After `weftnet rotate-key`: runs this program again in this process (same process
/// id, same arguments), as a restart does, so it starts with the new key. Returns only
/// on failure.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    tracing::info!("restarting in place with the new key");
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "weftnet".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    anyhow::anyhow!(
        "cannot restart with the new key ({err}): start weftnet again; it runs with the new key"
    )
}

/// The node's key, secrets and (in Kubernetes mode) Node facts, then everything else
/// under one [`Teardown`] that runs on every way out.
/// `state_dir_was`: the state directory's mode before it was set to 0700, if it was
/// another (logged once the node is up). Returns whether the key was rotated (the
/// caller restarts in place).
async fn up(mut config: Config, started: SystemTime, state_dir_was: Option<u32>) -> Result<bool> {
    let secrets = match &config.cluster {
        Some(c) => cluster::read_secrets(&c.secret_files)?,
        None => Default::default(),
    };
    let key_existed = config.private_key_file.exists();
    let key = keyfile::load_private_key(&config.private_key_file, config.private_key_is_default)?;
    let identity = crate::rotation::load(&config.state_dir, key, &config.private_key_file)?;
    let key = identity.key.clone();
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
            return Ok(false);
        }
    };
    if !key_existed {
        tracing::info!(path = %config.private_key_file.display(), "created a new private key");
    }
    let state_dir = config.state_dir.clone();
    let netlink = Arc::new(Netlink::connect()?);
    let mut teardown = Teardown::new(Arc::clone(&netlink));
    let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (result, stop) = match start::start(
        config,
        identity,
        secrets,
        kube,
        (started, Arc::clone(&rotated)),
        &netlink,
        &mut teardown,
    )
    .await
    {
        Ok(running) => {
            teardown.started();
            if let Some(mode) = state_dir_was {
                tracing::info!(
                    path = %state_dir.display(),
                    was = format!("{mode:04o}"),
                    "state directory set to mode 0700"
                );
            }
            running.run().await
        }
        Err(e) => (Err(e), Stop::Failed),
    };
    teardown.remove(stop).await;
    let rotated = rotated.load(std::sync::atomic::Ordering::SeqCst) && stop == Stop::Restart;
    if result.is_ok() && !rotated {
        tracing::info!("weftnet stopped");
    }
    result.map(|()| rotated)
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

/// A started node: the tasks to stop and the channels to talk to them.
struct Running {
    commands: mpsc::Sender<Command>,
    shell: JoinHandle<()>,
    /// The control socket; it never ends by itself (accept errors are retried).
    server: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
    shutdown: Arc<Notify>,
    /// Notified when the key was rotated: the node restarts with the new key.
    rotate: Arc<Notify>,
    /// Turns `Some` when a data-plane thread dies.
    failure: watch::Receiver<Option<String>>,
    /// Chained mode (its CNI config directory): at a stop for good, its rules go before
    /// the leave, so the pods' traffic is back on the VPC's path before the peers drop
    /// this node's tunnels (the other way round, it would go into a tunnel the peers no
    /// longer accept until the teardown).
    chained: Option<(Arc<Netlink>, std::path::PathBuf)>,
}

impl Running {
    /// Runs until a signal, `weftnet leave`, or a failure. A stop for good leaves the
    /// mesh first; a restart leaves nothing, so the others keep this node's tunnel and
    /// routes while the next run starts.
    async fn run(mut self) -> (Result<()>, Stop) {
        let (outcome, stop) = match self.wait().await {
            Ok(s) => s,
            Err(e) => (Err(e), Stop::Restart),
        };
        match (&outcome, stop) {
            (Ok(why), Stop::Leave) => tracing::info!(by = why, "stopping for good: leaving the mesh"),
            (Ok(why), _) => tracing::info!(
                signal = why,
                "stopping for a restart: no leave announced; the interface, its routes and rules stay for the next run (`weftnet leave` stops for good)"
            ),
            (Err(e), _) => tracing::error!(error = %format!("{e:#}"), "stopping on a failure"),
        }
        if stop == Stop::Leave {
            if let Some((netlink, conf_dir)) = &self.chained {
                // The chained task would put the rules back.
                for t in self.others.drain(..) {
                    t.abort();
                }
                crate::chained::remove(netlink, conf_dir).await;
            }
            // Graceful leave: the others drop this node at once instead of suspecting it.
            let (reply, done) = tokio::sync::oneshot::channel();
            if self.commands.send(Command::Leave(reply)).await.is_ok() {
                let _ = tokio::time::timeout(LEAVE_TIMEOUT, done).await;
            }
        }
        self.shell.abort();
        self.server.abort();
        for t in self.others {
            t.abort();
        }
        (outcome.map(|_| ()), stop)
    }

    /// What stopped the node, and how it stops.
    async fn wait(&mut self) -> Result<(Result<&'static str>, Stop)> {
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let mut quit = signal(SignalKind::quit()).context("cannot install the SIGQUIT handler")?;
        Ok(tokio::select! {
            _ = term.recv() => (Ok("SIGTERM"), Stop::Restart),
            _ = hup.recv() => (Ok("SIGHUP"), Stop::Restart),
            _ = quit.recv() => (Ok("SIGQUIT"), Stop::Restart),
            _ = int.recv() => (Ok("SIGINT"), Stop::Leave),
            _ = self.shutdown.notified() => (Ok("weftnet leave"), Stop::Leave),
            _ = self.rotate.notified() => (Ok("key rotation"), Stop::Restart),
            _ = &mut self.server => (Err(anyhow::anyhow!("the control socket task ended")), Stop::Restart),
            _ = &mut self.shell => (Err(anyhow::anyhow!("the control plane task ended")), Stop::Restart),
            failed = self.failure.wait_for(Option::is_some) => {
                let why = failed.ok().and_then(|f| f.clone()).unwrap_or_default();
                (Err(anyhow::anyhow!("the data plane stopped: {why}")), Stop::Restart)
            }
        })
    }
}
