//! The CNI plugin (spec 1.0, also 0.3.x/0.4.0 configs): when the binary runs with
//! CNI_COMMAND set, as /opt/cni/bin/weftnet under kubelet/containerd, this module reads
//! the network config on stdin, runs ADD, DEL, CHECK or VERSION, and prints the result
//! or the CNI error JSON on stdout.

pub(crate) mod chained;
mod commands;
mod config;
mod error;
mod ipam;
mod netns;
mod result;

pub(crate) use config::conflist;

/// The host end of the veth of the pod with address `ip`, from the plugin's allocation
/// record under `data_dir` (`None` if no pod on this node has it).
pub(crate) fn pod_port(data_dir: &std::path::Path, ip: std::net::IpAddr) -> Option<String> {
    let text =
        std::fs::read_to_string(data_dir.join(config::NETWORK_NAME).join(ip.to_string())).ok()?;
    let mut lines = text.lines();
    let (id, ifname) = (lines.next()?, lines.next()?);
    Some(commands::host_veth_name(id, ifname))
}

/// The IPv6 link-local address the plugin recorded for the pod behind bridge port
/// `port` under `data_dir` (`None` if none is).
pub(crate) fn pod_link_local(data_dir: &std::path::Path, port: &str) -> Option<std::net::IpAddr> {
    ipam::link_local(data_dir, config::NETWORK_NAME, port)
}

use error::{code, CniError};
use std::io::Read;
use std::process::ExitCode;

/// Runs the plugin for the CNI_COMMAND in the environment; the exit status is what the
/// runtime checks (0 success, 1 error with the error JSON on stdout).
pub(crate) fn run() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command == "VERSION" {
        println!("{}", commands::version());
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    let outcome = if !["ADD", "DEL", "CHECK"].contains(&command.as_str()) {
        Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {command:?} is not supported: use ADD, DEL, CHECK or VERSION"),
        ))
    } else if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        Err(CniError::new(
            code::IO_FAILURE,
            format!("cannot read the network config from stdin: {e}: pass it on stdin"),
        ))
    } else {
        dispatch(&command, &stdin)
    };
    match outcome {
        Ok(output) => {
            if let Some(text) = output {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let version = config::version_of(&stdin);
            println!(
                "{}",
                e.to_json(version.as_deref().unwrap_or(config::CNI_VERSION))
            );
            eprintln!("weftnet CNI {command}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: &str, stdin: &[u8]) -> error::Result<Option<String>> {
    let env = commands::Env::from_process();
    if chained::is_chained(stdin) {
        let conf = chained::parse(stdin)?;
        return match command {
            "ADD" => chained::add(&conf, &env).map(Some),
            "DEL" => chained::del(&conf, &env).map(|()| None),
            _ => chained::check(&conf, &env).map(|()| None),
        };
    }
    let conf = config::parse(stdin)?;
    match command {
        "ADD" => commands::add(&conf, &env).map(Some),
        "DEL" => commands::del(&conf, &env).map(|()| None),
        _ => commands::check(&conf, &env).map(|()| None),
    }
}
