//! Command-line syntax (clap derive). The settings of `up` are declared once, in
//! [`crate::config::settings`], for flags, the environment (`WEFTNET_<KEY>`) and the TOML
//! config file alike; [`crate::config`] stacks them (flags win over the environment,
//! which wins over the file).

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

#[derive(Debug, Args)]
pub(crate) struct StateDirArgs {
    /// Directory holding the daemon's key and control socket.
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
