//! Key and secret files: written with mode 0600 (their directory created with mode
//! 0700 when missing), never overwritten, created on first start when the default
//! location is used. Read without following a symbolic link and checked on the open
//! file: refused unless it is a regular file owned by root or this user that nobody
//! else can read; what is read is zeroized when dropped. The state directory is kept
//! at mode 0700.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use weftnet_proto::keys::PrivateKey;
use zeroize::Zeroizing;

/// Largest key or secret file read (both are one line of base64).
const MAX_SECRET_FILE: u64 = 4096;

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

/// The effective user id of this process.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Opens a key or secret file for reading without following a symbolic link, and
/// checks the open file (`fstat`, so nothing can be swapped in between): a regular
/// file, owned by root or this user, that neither group nor others can read.
fn open_private(path: &Path, what: &str) -> Result<File> {
    let p = path.display();
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted there must not block the start.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::NotFound, _) => anyhow!(
                "{what} file {p} does not exist: create it (`weftnet gensecret --output FILE`; in Kubernetes, create the weftnet-secret Secret and mount it)"
            ),
            (_, Some(libc::ELOOP)) => anyhow!(
                "{what} file {p} is a symbolic link, which weftnet does not follow: replace it with the file itself (cp --remove-destination \"$(readlink -f {p})\" {p}; in Kubernetes, mount the Secret's key with subPath)"
            ),
            _ => anyhow!("cannot read {what} file {p}: {e}"),
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {what} file {p}"))?;
    if !meta.file_type().is_file() {
        bail!("{what} file {p} is not a regular file: point the setting at the file itself");
    }
    let me = effective_uid();
    if meta.uid() != 0 && meta.uid() != me {
        let owner = if me == 0 {
            "root".to_owned()
        } else {
            me.to_string()
        };
        bail!(
            "{what} file {p} is owned by uid {}, not by root or the user running weftnet (uid {me}): run chown {owner} {p}",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!("{what} file {p} has mode {mode:04o} and other users can read it: run chmod 600 {p}");
    }
    Ok(file)
}

/// Reads a secret file checked by [`open_private`]; the text is zeroized when dropped.
pub(crate) fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let file = open_private(path, what)?;
    // Room for the whole file up front, so that no grown-out buffer is left behind
    // unzeroized.
    let mut text = Zeroizing::new(String::with_capacity(MAX_SECRET_FILE as usize + 1));
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        bail!(
            "{what} file {} is larger than {MAX_SECRET_FILE} bytes, which no key or secret is: check the path",
            path.display()
        );
    }
    Ok(text)
}

/// Creates the state directory (mode 0700) if needed; an existing one with another
/// mode is set to 0700, and its old mode returned (the caller logs it once the node is
/// up, so that a failed start still prints exactly one line).
pub(crate) fn ensure_state_dir(dir: &Path) -> Result<Option<u32>> {
    ensure_private_dir(dir).with_context(|| {
        format!(
            "cannot create state directory {}: create it or choose another with --state-dir",
            dir.display()
        )
    })?;
    let mode = fs::metadata(dir)
        .with_context(|| format!("cannot read state directory {}", dir.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
            format!(
                "state directory {} has mode {mode:04o} and cannot be set to 0700: run chmod 700 {}",
                dir.display(),
                dir.display()
            )
        })?;
        return Ok(Some(mode));
    }
    Ok(None)
}

/// Loads the node's private key; when `create` is set and the file is missing, a new
/// key is generated and stored there.
pub(crate) fn load_private_key(path: &Path, create: bool) -> Result<PrivateKey> {
    // Not `exists()`: a symbolic link, even a dangling one, is refused when read.
    if fs::symlink_metadata(path).is_err() {
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
    PrivateKey::from_base64(text.as_str()).map_err(|e| {
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

    /// A symbolic link, a file of another user and a file others can read are each
    /// refused with one line naming the file, the problem and the fix.
    #[test]
    fn key_files_are_checked_on_the_open_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.key");
        emit_secret(&PrivateKey::generate().to_base64(), Some(&real)).expect("written");
        load_private_key(&real, false).expect("a good key loads");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let e = format!("{:#}", load_private_key(&link, true).expect_err("symlink"));
        assert!(
            e.contains("is a symbolic link") && e.contains("link.key"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // A dangling link is not taken for a missing file either.
        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        let e = format!(
            "{:#}",
            load_private_key(&dangling, true).expect_err("dangling")
        );
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(fs::symlink_metadata(dir.path().join("nowhere")).is_err());
        let e = format!(
            "{:#}",
            read_secret(&link, "cluster secret").expect_err("symlink")
        );
        assert!(e.starts_with("cluster secret file"), "{e}");

        for mode in [0o640, 0o604, 0o644] {
            fs::set_permissions(&real, fs::Permissions::from_mode(mode)).expect("chmod");
            let e = format!(
                "{:#}",
                read_secret(&real, "cluster secret").expect_err("mode")
            );
            assert!(
                e.contains(&format!("mode {mode:04o}")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        fs::set_permissions(&real, fs::Permissions::from_mode(0o400)).expect("chmod");
        read_secret(&real, "cluster secret").expect("0400 is fine");

        let e = format!(
            "{:#}",
            read_secret(dir.path(), "cluster secret").expect_err("dir")
        );
        assert!(e.contains("not a regular file"), "{e}");

        let big = dir.path().join("big");
        emit_secret(&"x".repeat(5000), Some(&big)).expect("written");
        let e = format!(
            "{:#}",
            read_secret(&big, "cluster secret").expect_err("big")
        );
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        let me = effective_uid();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("private.key");
        emit_secret(&PrivateKey::generate().to_base64(), Some(&path)).expect("written");
        if me != 0 {
            // Only root may give a file away; the check is the same.
            return;
        }
        std::os::unix::fs::chown(&path, Some(4321), None).expect("chown");
        let e = format!("{:#}", load_private_key(&path, false).expect_err("owner"));
        assert!(
            e.contains("owned by uid 4321")
                && e.contains("chown root")
                && e.contains("private.key"),
            "{e}"
        );
        std::os::unix::fs::chown(&path, Some(0), None).expect("chown back");
        load_private_key(&path, false).expect("root's file loads");
    }

    #[test]
    fn the_state_dir_is_forced_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let fresh = dir.path().join("new/state");
        assert_eq!(ensure_state_dir(&fresh).expect("created"), None);
        assert_eq!(mode(&fresh), 0o700);
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(ensure_state_dir(&open).expect("fixed"), Some(0o755));
        assert_eq!(mode(&open), 0o700);
        assert_eq!(ensure_state_dir(&open).expect("again"), None);
        assert_eq!(mode(&open), 0o700);
    }
}
