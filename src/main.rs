//! The `weftnet` binary: command-line entry point. Each subcommand lives in its own
//! module; this file only parses arguments and turns errors into one line and a
//! non-zero exit.

mod cli;
mod config;
mod control;
mod daemon;
mod dataplane;
mod keyfile;
mod netlink;
mod status;
mod system;
mod tun;
mod udp;

use clap::Parser;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Up(args) => daemon::run(args),
        cli::Command::Status(args) => status::run(args),
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
