//! The chained network config: the primary CNI's conflist (the VPC CNI's
//! `10-aws.conflist`) with weftnet appended to its plugins, written as
//! [`CONFLIST`], which sorts first so the runtime uses it. The primary's own file is
//! never touched: when aws-node rewrites it (at its every start), the chained file is
//! composed again from the new one; removing the chained file returns the node to
//! the primary's config as it is.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The chained config's file name (sorts before `10-aws.conflist`).
pub(crate) const CONFLIST: &str = "05-weftnet-chained.conflist";

/// The primary CNI's conflist in `dir`: the first `*.conflist` in lexical order that
/// is not weftnet's own (chained or as the pod network).
pub(crate) fn primary(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conflist") && !n.starts_with('.'))
        .filter(|n| n != CONFLIST && !n.contains("weftnet"))
        .collect();
    names.sort();
    names.first().map(|n| dir.join(n))
}

/// The chained conflist for the primary's `text`: its name, version and plugins,
/// then weftnet in chained mode (an older weftnet entry is replaced). `None` with the
/// reason if the primary's file is not a conflist.
pub(crate) fn compose(text: &str, data_dir: &Path) -> Result<String, String> {
    let mut doc: Value = serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
    let plugins = doc
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or("it has no \"plugins\" list")?;
    plugins.retain(|p| p.get("type").and_then(Value::as_str) != Some(crate::kube::publish::PLUGIN));
    if plugins.is_empty() {
        return Err("its \"plugins\" list has no primary plugin".into());
    }
    plugins.push(json!({
        "type": crate::kube::publish::PLUGIN,
        "mode": "chained",
        "dataDir": data_dir.to_string_lossy(),
    }));
    let mut out = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    out.push('\n');
    Ok(out)
}

/// What [`sync`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Synced {
    /// The chained file matches the primary's (written now, or already).
    Written(PathBuf),
    /// No primary conflist yet (aws-node writes it when it starts).
    NoPrimary,
}

/// Makes `dir/CONFLIST` the composition of the primary's current file (atomically;
/// unchanged content is not rewritten).
pub(crate) fn sync(dir: &Path, data_dir: &Path) -> Result<Synced, String> {
    let Some(primary) = primary(dir) else {
        return Ok(Synced::NoPrimary);
    };
    let text = std::fs::read_to_string(&primary)
        .map_err(|e| format!("cannot read {}: {e}", primary.display()))?;
    let chained = compose(&text, data_dir).map_err(|why| {
        format!(
            "{} cannot be chained: {why}: fix the primary CNI's config",
            primary.display()
        )
    })?;
    let path = dir.join(CONFLIST);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(chained.as_str()) {
        return Ok(Synced::Written(path));
    }
    let tmp = dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, &chained)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}: check --cni-conf-dir", path.display()))?;
    tracing::info!(path = %path.display(), primary = %primary.display(), "wrote the chained CNI config");
    Ok(Synced::Written(path))
}

/// Removes the chained file (at a stop for good, and by `weftnet uninstall`).
pub(crate) fn remove(dir: &Path) {
    let path = dir.join(CONFLIST);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed the chained CNI config"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot remove the chained CNI config; remove it by hand")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VPC CNI's conflist as aws-node writes it.
    const AWS: &str = r#"{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,"plugins":[
        {"name":"aws-cni","type":"aws-cni","vethPrefix":"eni","mtu":"9001","pluginLogFile":"/var/log/aws-routed-eni/plugin.log"},
        {"name":"egress-cni","type":"egress-cni","enabled":"false"},
        {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#;

    #[test]
    fn weftnet_goes_last_and_everything_else_is_kept() {
        let out = compose(AWS, Path::new("/var/lib/cni/weftnet")).expect("compose");
        let v: Value = serde_json::from_str(&out).expect("json");
        let orig: Value = serde_json::from_str(AWS).expect("json");
        assert_eq!(v["name"], "aws-cni");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["disableCheck"], true);
        let plugins = v["plugins"].as_array().expect("plugins");
        assert_eq!(plugins.len(), 4);
        assert_eq!(
            plugins[..3],
            orig["plugins"].as_array().expect("plugins")[..]
        );
        assert_eq!(
            plugins[3],
            json!({"type": "weftnet", "mode": "chained", "dataDir": "/var/lib/cni/weftnet"})
        );
        // composing the result again does not add a second weftnet
        let again = compose(&out, Path::new("/var/lib/cni/weftnet")).expect("compose");
        assert_eq!(again, out);
        assert!(compose("{", Path::new("/d")).is_err());
        assert!(compose(r#"{"plugins":[]}"#, Path::new("/d")).is_err());
    }

    #[test]
    fn sync_follows_the_primary_and_sorts_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = Path::new("/var/lib/cni/weftnet");
        assert_eq!(sync(dir.path(), data), Ok(Synced::NoPrimary));
        std::fs::write(dir.path().join("10-aws.conflist"), AWS).expect("write");
        std::fs::write(dir.path().join("00-weftnet.conflist"), "{}").expect("write");
        let Ok(Synced::Written(path)) = sync(dir.path(), data) else {
            panic!("not written");
        };
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conflist") && n != "00-weftnet.conflist")
            .collect();
        names.sort();
        assert_eq!(
            names[0], CONFLIST,
            "the chained file sorts before aws-node's"
        );
        // aws-node rewrites its file: the chained one follows
        std::fs::write(
            dir.path().join("10-aws.conflist"),
            AWS.replace("9001", "1500"),
        )
        .expect("write");
        sync(dir.path(), data).expect("sync");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("1500") && text.contains("chained"), "{text}");
        remove(dir.path());
        assert!(!path.exists());
        assert!(
            dir.path().join("10-aws.conflist").exists(),
            "aws-node's file stays"
        );
    }
}
