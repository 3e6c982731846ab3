//! The `weftnet` binary: command-line entry point. Each subcommand lives in its own
//! module; this file only parses arguments and turns errors into one line and a
//! non-zero exit.

mod accept;
mod bridge;
mod ca;
mod chained;
mod cli;
mod cluster;
mod cni;
mod config;
mod control;
mod daemon;
mod dataplane;
mod duration;
mod health;
mod http;
mod keyfile;
mod kube;
mod masquerade;
mod metrics;
mod netlink;
mod policy;
mod rotation;
mod status;
mod system;
mod tun;
mod udp;
mod uninstall;

use clap::Parser;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some() {
        return cni::run();
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap renders them; a usage error becomes the same one
/// line as every other error (exit status 2, as clap uses).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // `weftnet` alone: the help text, as a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line");
    let message = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("weftnet: error: {message}: see `weftnet --help`");
    ExitCode::from(2)
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Up(args) => daemon::run(*args),
        cli::Command::Status(args) => status::run(args),
        cli::Command::Leave(state) => control::leave(&config::state_dir_of(&state)?),
        cli::Command::Forget(args) => {
            control::forget(&config::state_dir_of(&args.state)?, &args.node)
        }
        cli::Command::RotateKey(state) => control::rotate_key(&config::state_dir_of(&state)?),
        cli::Command::Uninstall(args) => uninstall::run(&args),
        cli::Command::Ca(cli::CaCommand::Init(args)) => ca::init(&args),
        cli::Command::Ca(cli::CaCommand::Sign(args)) => ca::sign(&args),
        cli::Command::Genkey(out) => {
            let key = weftnet_proto::keys::PrivateKey::generate();
            keyfile::emit_secret(&key.to_base64(), out.output.as_deref())
        }
        cli::Command::Gensecret(out) => keyfile::emit_secret(
            &weftnet_proto::keys::generate_secret(),
            out.output.as_deref(),
        ),
        cli::Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let key = weftnet_proto::keys::PrivateKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!("the private key on stdin is invalid ({e}): pass the output of `weftnet genkey`")
            })?;
            println!("{}", key.public_key());
            Ok(())
        }
    }
}
