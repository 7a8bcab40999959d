//! The systemd unit: start-up safety (R24) depends on its ordering, so it is checked by
//! systemd's own verifier and its ordering asserted.

use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(sekisho_testbed::daemon::configs_dir().join("systemd/sekishod.service"))
        .expect("configs/systemd/sekishod.service")
}

#[test]
fn r24_the_unit_puts_the_policy_in_force_before_the_network_comes_up() {
    let text = unit_text();
    let value = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    assert!(value("Before").contains(&"network-pre.target".to_owned()));
    assert!(value("Wants").contains(&"network-pre.target".to_owned()));
    assert_eq!(
        value("Type"),
        ["notify"],
        "ready only once the policy is in force"
    );
    assert_eq!(value("DefaultDependencies"), ["no"]);
    // A hung daemon is restarted (the kernel keeps enforcing meanwhile).
    assert_eq!(value("WatchdogSec"), ["30s"]);
    assert_eq!(value("Restart"), ["always"]);
    // Stopping must not remove anything: no ExecStop that uninstalls.
    assert!(
        text.lines()
            .filter(|l| l.starts_with("Exec"))
            .all(|l| !l.contains("--uninstall"))
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = sekisho_testbed::Sekishod::scratch_dir().unwrap();
    let sekishod = sekisho_testbed::daemon::bin("sekishod");
    let unit = dir.join("sekishod.service");
    std::fs::write(
        &unit,
        unit_text().replace("/usr/sbin/sekishod", sekishod.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Units it refers to that this machine lacks are not the unit's fault.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sekishod.service") && !l.contains("not found"))
        .collect();
    assert!(out.status.success() || problems.is_empty(), "{stderr}");
    assert!(problems.is_empty(), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
