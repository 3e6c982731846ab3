//! The cluster CA for end-to-end tests: a node key pair, `weftnet ca init` and
//! `weftnet ca sign`, run as an operator would.

use super::{expect_success, host_exec, run_bounded, Daemon};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A new private key and its public key, from `weftnet genkey` / `weftnet pubkey`.
pub fn keypair() -> (String, String) {
    let private = expect_success(
        "weftnet genkey",
        host_exec(Daemon::bin(), &["genkey"] as &[&str]),
    )
    .trim()
    .to_owned();
    let out = run_bounded(
        Command::new(Daemon::bin())
            .arg("pubkey")
            .stdin(Stdio::piped()),
        Some(private.as_bytes()),
        Duration::from_secs(10),
    );
    let public = expect_success("weftnet pubkey", out).trim().to_owned();
    (private, public)
}

/// `weftnet ca init --output DIR`.
pub fn ca_init(dir: &Path) {
    let out = host_exec(
        Daemon::bin(),
        &["ca", "init", "--output", &dir.display().to_string()],
    );
    expect_success("weftnet ca init", out);
    assert!(dir.join("ca.key").exists() && dir.join("ca.crt").exists());
}

/// `weftnet ca sign` for `name`/`public` with `blocks`, written to DIR/NAME.crt.
pub fn ca_sign(ca: &Path, name: &str, public: &str, blocks: &[&str], out_dir: &Path) -> String {
    let path = out_dir.join(format!("{name}.crt"));
    let mut args = vec![
        "ca".to_owned(),
        "sign".into(),
        "--ca".into(),
        ca.display().to_string(),
        "--name".into(),
        name.into(),
        "--public-key".into(),
        public.into(),
        "--expires".into(),
        "1d".into(),
        "-o".into(),
        path.display().to_string(),
    ];
    for b in blocks {
        args.push("--block".into());
        args.push((*b).into());
    }
    expect_success("weftnet ca sign", host_exec(Daemon::bin(), &args));
    path.display().to_string()
}
