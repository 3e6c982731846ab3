//! Node key rotation on disk (PROTOCOL.md §6.13; the decisions are in
//! `weftnet_proto::gossip::Handover`): which key this node runs with, and how a new
//! one is made.
//!
//! The configured key file is never rewritten (it may be read-only, or a Kubernetes
//! Secret). After a rotation the node's key lives in `STATE_DIR/rotated.key` (mode
//! 0600): the new private key and the old key's signed hand-over, one base64 line
//! each, written to a temporary file and renamed over the old one, so a crash leaves
//! either the old identity or the new one, whole. The file it replaces is kept as
//! `rotated.key.previous` until the daemon runs with the new key. The daemon then
//! restarts in place (same process, same arguments) the way `systemctl restart`
//! does: the overlay interface stays, and the peers move the node to the new key.

use crate::duration::unit_seconds;
use crate::keyfile;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use weftnet_proto::gossip::{Handover, HANDOVER_LEN, MAX_GENERATION};
use weftnet_proto::identity::Signer;
use weftnet_proto::keys::{PrivateKey, PublicKey};

/// The rotated key and its hand-over, in the state directory.
pub(crate) const ROTATED_FILE: &str = "rotated.key";
/// The shortest `--key-lifetime`.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(10);

/// The key this node runs with.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) key: PrivateKey,
    /// The old key's statement for `key` (`None` before the first rotation).
    pub(crate) handover: Option<Handover>,
    /// When the key was made (the key file's modification time).
    pub(crate) since: SystemTime,
}

impl Identity {
    /// Rotations so far (0 before the first).
    pub(crate) fn generation(&self) -> u64 {
        self.handover.map_or(0, |h| h.generation)
    }

    /// How old the key is.
    pub(crate) fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.since)
            .unwrap_or_default()
    }
}

fn rotated_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ROTATED_FILE)
}

fn previous_path(state_dir: &Path) -> PathBuf {
    state_dir.join(format!("{ROTATED_FILE}.previous"))
}

fn modified(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now())
}

/// The identity to run with: the rotated key if the state directory has one, else
/// `configured` (read from `configured_path`).
pub(crate) fn load(
    state_dir: &Path,
    configured: PrivateKey,
    configured_path: &Path,
) -> Result<Identity> {
    let path = rotated_path(state_dir);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(Identity {
            key: configured,
            handover: None,
            since: modified(configured_path),
        });
    }
    let fix = format!(
        "restore {} from {}, or remove both to run with the configured key as a new member",
        path.display(),
        previous_path(state_dir).display()
    );
    let text = keyfile::read_secret(&path, "rotated key")?;
    let mut lines = text.lines();
    let key = lines
        .next()
        .and_then(|l| PrivateKey::from_base64(l.trim()).ok())
        .ok_or_else(|| {
            anyhow!(
                "rotated key file {} has no valid key: {fix}",
                path.display()
            )
        })?;
    let handover = lines
        .next()
        .and_then(|l| STANDARD.decode(l.trim()).ok())
        .and_then(|b| Handover::decode(&b))
        .filter(|h| h.new == key.public_key())
        .ok_or_else(|| {
            anyhow!(
                "rotated key file {} has no valid hand-over for its key: {fix}",
                path.display()
            )
        })?;
    Ok(Identity {
        key,
        handover: Some(handover),
        since: modified(&path),
    })
}

/// Makes a new key for the node `name`, signs its hand-over with the current key and
/// stores both atomically (the file replaced is kept as `rotated.key.previous`).
/// Returns the new public key.
pub(crate) fn rotate(state_dir: &Path, current: &Identity, name: &str) -> Result<PublicKey> {
    let generation = current.generation() + 1;
    if generation >= MAX_GENERATION {
        bail!("this node's key has been rotated {} times, the most the protocol allows: remove {} and restart as a new member", current.generation(), rotated_path(state_dir).display());
    }
    let new = PrivateKey::generate();
    let handover = Handover::sign(
        &Signer::new(&current.key),
        name,
        new.public_key(),
        generation,
    );
    let mut bytes = Vec::with_capacity(HANDOVER_LEN);
    handover.encode(&mut bytes);
    let text = format!("{}\n{}\n", new.to_base64(), STANDARD.encode(&bytes));
    let path = rotated_path(state_dir);
    if path.exists() {
        fs::copy(&path, previous_path(state_dir)).with_context(|| {
            format!(
                "cannot keep the current key in {}",
                previous_path(state_dir).display()
            )
        })?;
    }
    let tmp = state_dir.join(format!("{ROTATED_FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    if let Ok(dir) = fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(new.public_key())
}

/// The files that hold this node's rotated key (uninstall keeps them unless told to
/// purge the key, like the configured key file).
pub(crate) fn files(state_dir: &Path) -> [PathBuf; 2] {
    [rotated_path(state_dir), previous_path(state_dir)]
}

/// Called once the daemon runs with its current key: the previous one is no longer
/// needed.
pub(crate) fn confirm(state_dir: &Path) {
    let previous = previous_path(state_dir);
    if previous.exists() {
        match fs::remove_file(&previous) {
            Ok(()) => {
                tracing::info!(path = %previous.display(), "the new key is in use; removed the previous one")
            }
            Err(e) => {
                tracing::warn!(path = %previous.display(), error = %e, "cannot remove the previous key")
            }
        }
    }
}

/// `--key-lifetime`: a duration such as `90s`, `30m`, `12h`, `30d`, at least
/// [`MIN_LIFETIME`].
pub(crate) fn parse_lifetime(text: &str) -> Result<Duration> {
    let t = text.trim();
    let bad = || {
        anyhow!("invalid --key-lifetime {t:?}: give a duration such as 30d, 12h, 30m or 90s (at least {}s)", MIN_LIFETIME.as_secs())
    };
    let units = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];
    let d = Duration::from_secs(unit_seconds(t, &units).ok_or_else(bad)?);
    if d < MIN_LIFETIME {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_is_stored_whole_and_chains() {
        let dir = tempfile::tempdir().expect("tempdir");
        let configured = dir.path().join("private.key");
        keyfile::emit_secret(&PrivateKey::generate().to_base64(), Some(&configured)).expect("key");
        let key = keyfile::load_private_key(&configured, false).expect("key");
        let first = load(dir.path(), key.clone(), &configured).expect("identity");
        assert_eq!(first.generation(), 0);
        assert_eq!(first.key.public_key(), key.public_key());

        let new = rotate(dir.path(), &first, "node-a").expect("rotated");
        let second = load(dir.path(), key.clone(), &configured).expect("identity");
        assert_eq!(second.key.public_key(), new);
        let h = second.handover.expect("hand-over");
        assert_eq!((h.old, h.generation), (key.public_key(), 1));
        assert_eq!(h.verify(&new, "node-a"), Ok(()));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(rotated_path(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let newer = rotate(dir.path(), &second, "node-a").expect("rotated");
        assert!(previous_path(dir.path()).exists(), "the old one is kept");
        let third = load(dir.path(), key.clone(), &configured).expect("identity");
        let h = third.handover.expect("hand-over");
        assert_eq!((h.old, h.new, h.generation), (new, newer, 2));
        confirm(dir.path());
        assert!(!previous_path(dir.path()).exists());

        fs::write(rotated_path(dir.path()), "garbage\n").expect("write");
        let e = format!(
            "{:#}",
            load(dir.path(), key, &configured).err().expect("refused")
        );
        assert!(e.contains("restore"), "{e}");
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_lifetime("30d").ok(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(parse_lifetime("5s").is_err());
        assert!(parse_lifetime("12").is_err());
        assert!(parse_lifetime("1w").is_err());
    }
}
