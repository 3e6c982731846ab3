//! Command-line syntax (clap derive). The settings of `up` are declared once, in
//! [`crate::config::settings`], for flags, the environment (`WEFTNET_<KEY>`) and the TOML
//! config file alike; [`crate::config`] stacks them (flags win over the environment,
//! which wins over the file). `uninstall` takes the same settings as `up`; `status`,
//! `leave`, `forget` and `rotate-key` take the config file for its `state_dir`.

use crate::config::settings::Settings;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// weftnet: an encrypted, multicast-capable full-mesh overlay network.
#[derive(Debug, Parser)]
#[command(name = "weftnet", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon in the foreground until SIGINT/SIGTERM.
    Up(Box<UpArgs>),
    /// Show this node and its peers (asks the running daemon).
    Status(StatusArgs),
    /// Print a new WireGuard private key (base64).
    Genkey(OutputArgs),
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Print a new cluster secret (base64, 32 random bytes).
    Gensecret(OutputArgs),
    /// Announce a graceful leave to the mesh and stop the running daemon.
    Leave(StateDirArgs),
    /// Remove a dead or departed node's record from the whole mesh.
    Forget(ForgetArgs),
    /// Give the running daemon a new key: the old key signs a hand-over, the daemon
    /// restarts in place with the new key and the mesh moves to it by gossip.
    RotateKey(StateDirArgs),
    /// Remove everything weftnet put on this node (interfaces, bridge, guard route, nat
    /// chain, CNI files, state); give the settings `up` ran with. The daemon must be
    /// stopped.
    Uninstall(Box<UninstallArgs>),
    /// The standalone cluster CA: create it, sign node certificates.
    #[command(subcommand)]
    Ca(CaCommand),
}

/// `weftnet ca`.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a CA: DIR/ca.key (the signing key, mode 0600; keep it off the nodes) and
    /// DIR/ca.crt (the CA certificate every node is given with --ca-file).
    Init(CaInitArgs),
    /// Sign a node certificate binding a node name to its WireGuard public key and the
    /// blocks it may announce (give it to the node with --cert-file).
    Sign(CaSignArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaInitArgs {
    /// Directory to write ca.key and ca.crt to (created with mode 0700 if missing).
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub(crate) output: PathBuf,
    /// The CA's name, shown in its certificate.
    #[arg(long, default_value = "weftnet-ca")]
    pub(crate) name: String,
    /// Validity: a duration (90d, 12h, 2y) or a date (2030-12-31, UTC midnight).
    #[arg(long, value_name = "DURATION_OR_DATE", default_value = "10y")]
    pub(crate) expires: String,
}

#[derive(Debug, Args)]
pub(crate) struct CaSignArgs {
    /// Directory holding ca.key and ca.crt (from `weftnet ca init`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) ca: PathBuf,
    /// The node's name (its --name, by default its host name).
    #[arg(long)]
    pub(crate) name: String,
    /// The node's WireGuard public key (`weftnet pubkey < key`).
    #[arg(long, value_name = "KEY")]
    pub(crate) public_key: String,
    /// An overlay block the node may announce (repeatable).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub(crate) block: Vec<String>,
    /// The node may also claim a block inside --range by gossip.
    #[arg(long)]
    pub(crate) allow_claim: bool,
    /// Validity: a duration (90d, 12h, 2y) or a date (2030-12-31, UTC midnight).
    #[arg(long, value_name = "DURATION_OR_DATE", default_value = "1y")]
    pub(crate) expires: String,
    /// Write the certificate to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The node's name (as `weftnet status` shows it) or its public key.
    pub(crate) node: String,
    #[command(flatten)]
    pub(crate) state: StateDirArgs,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Write to this file (created with mode 0600) instead of stdout.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
}

/// Where the running daemon's control socket is: its state directory, given or read
/// from its config file.
#[derive(Debug, Args)]
pub(crate) struct StateDirArgs {
    /// The daemon's TOML config file, for its `state_dir`.
    #[arg(long, short, env = "WEFTNET_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory holding the daemon's key and control socket [default: the config
    /// file's `state_dir`, else /var/lib/weftnet].
    #[arg(long, env = "WEFTNET_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) state: StateDirArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `weftnet up`: the config file, and every setting as a flag (see [`Settings`]).
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// TOML config file (settings and [[peer]] tables).
    #[arg(long, short, env = "WEFTNET_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// `weftnet uninstall`: the settings `up` ran with, and whether the key goes too.
#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    #[command(flatten)]
    pub(crate) up: UpArgs,
    /// Also remove the node's private key (a reinstall then joins as a new node).
    #[arg(long)]
    pub(crate) purge_key: bool,
}
