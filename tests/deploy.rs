//! The files in `deploy/` name only flags and subcommands that the binary has.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weftnet"))
        .args(args)
        .arg("--help")
        .output()
        .expect("weftnet runs");
    assert!(out.status.success(), "weftnet {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn systemd_unit_uses_existing_flags() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/weftnet.service"
    ))
    .expect("unit file");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/weftnet");
    let sub = words[1];
    let text = help(&[sub]);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(text.contains(flag), "`weftnet {sub}` has no flag {flag}");
    }
    // SIGTERM is a restart (no leave, weft0 kept); `weftnet leave` exits 0 for good,
    // which Restart=on-failure does not undo.
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.lines().any(|l| l == "Restart=on-failure"));
    assert!(unit.contains("CAP_NET_ADMIN"));
}
