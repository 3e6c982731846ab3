//! Key and secret files: written with mode 0600, refused when other users can read
//! them, created on first start when the default location is used.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use weftnet_proto::keys::PrivateKey;

/// Writes `text` to a new 0600 file, or prints it when no path is given.
pub(crate) fn emit_secret(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        None => {
            println!("{text}");
            Ok(())
        }
        Some(p) => write_new_secret(p, text),
    }
}

fn write_new_secret(path: &Path, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow!(
                "{} already exists: remove it first or choose another path",
                path.display()
            ),
            _ => anyhow!("cannot create {}: {e}", path.display()),
        })?;
    writeln!(f, "{text}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads a secret file, refusing one that other users can read.
pub(crate) fn read_secret(path: &Path, what: &str) -> Result<String> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!(
            "{what} file {} does not exist: create it (`weftnet gensecret --output FILE`; in Kubernetes, create the weftnet-secret Secret and mount it)",
            path.display()
        ),
        _ => anyhow!("cannot read {what} file {}: {e}", path.display()),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} file {} has mode {mode:04o} and other users can read it: run chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    fs::read_to_string(path).with_context(|| format!("cannot read {what} file {}", path.display()))
}

/// Creates the state directory (mode 0700) if needed.
pub(crate) fn ensure_state_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create state directory {}: create it or choose another with --state-dir",
                dir.display()
            )
        })
}

/// Loads the node's private key; when `create` is set and the file is missing, a new
/// key is generated and stored there.
pub(crate) fn load_private_key(path: &Path, create: bool) -> Result<PrivateKey> {
    if !path.exists() {
        if !create {
            bail!(
                "private key file {} does not exist: create it with `weftnet genkey --output {}`",
                path.display(),
                path.display()
            );
        }
        let key = PrivateKey::generate();
        write_new_secret(path, &key.to_base64())?;
        return Ok(key);
    }
    let text = read_secret(path, "private key")?;
    PrivateKey::from_base64(&text).map_err(|e| {
        anyhow!(
            "private key file {} is not a valid key ({e}): replace it with the output of `weftnet genkey`",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_reuses_and_guards_key_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("private.key");
        assert!(load_private_key(&path, false).is_err());
        let a = load_private_key(&path, true).expect("created");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_private_key(&path, true).expect("reused");
        assert_eq!(a.public_key(), b.public_key());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = format!(
            "{:#}",
            load_private_key(&path, true).expect_err("loose mode")
        );
        assert!(e.contains("chmod 600"), "{e}");

        let bad = dir.path().join("bad.key");
        emit_secret("nonsense", Some(&bad)).expect("written");
        let e = format!("{:#}", load_private_key(&bad, false).expect_err("bad key"));
        assert!(e.contains("not a valid key"), "{e}");
        assert!(
            emit_secret("again", Some(&bad)).is_err(),
            "never overwrites"
        );
    }
}
