//! Key and secret files: written with mode 0600 (their directory created with mode
//! 0700 when missing), never overwritten, refused when other users can read them,
//! created on first start when the default location is used.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use weftnet_proto::keys::PrivateKey;

/// Writes `text` to a new 0600 file (creating its directory, mode 0700, if missing),
/// or prints it when no path is given.
pub(crate) fn emit_secret(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        None => {
            println!("{text}");
            Ok(())
        }
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                ensure_private_dir(dir).with_context(|| {
                    format!(
                        "cannot create directory {} for {}: create it (mode 0700) or choose another --output",
                        dir.display(),
                        p.display()
                    )
                })?;
            }
            write_new_secret(p, text)
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700; an existing one is left as it
/// is.
fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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
    ensure_private_dir(dir).with_context(|| {
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

    #[test]
    fn output_creates_the_missing_directory_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/weftnet/private.key");
        emit_secret("secret", Some(&path)).expect("written with its directory");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("etc/weftnet")), 0o700);
        assert_eq!(mode(&dir.path().join("etc")), 0o700);
        let e = format!(
            "{:#}",
            emit_secret("again", Some(&path)).expect_err("exists")
        );
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "secret\n");
        // An existing directory keeps its mode.
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        emit_secret("s", Some(&open.join("secret"))).expect("written");
        assert_eq!(mode(&open), 0o755);
    }
}
