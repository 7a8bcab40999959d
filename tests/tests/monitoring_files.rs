//! The monitoring files shipped for the administrators' Prometheus and Grafana (issue 7):
//! the alerting rules are checked and unit-tested by Prometheus' own `promtool`, and the
//! dashboard may only query metrics the daemon exposes, so a typo in a query fails here
//! instead of showing an empty panel on the day it is needed.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/prometheus/alerts.yml"
);
const ALERTS_TEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/prometheus/alerts_test.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/grafana/sekisho.json"
);

/// Every metric sekishod exposes (INTERFACE.md "Metrics", issue 7).
const METRICS: &[&str] = &[
    "sekisho_packets_total",
    "sekisho_bytes_total",
    "sekisho_flows_total",
    "sekisho_drops_total",
    "sekisho_isolation_active",
    "sekisho_datapath_attached",
    "sekisho_policy_generation",
    "sekisho_last_reload_success",
    "sekisho_last_reload_timestamp_seconds",
    "sekisho_notifications_pending",
    "sekisho_notifications_oldest_pending_seconds",
    "sekisho_notifications_total",
    "sekisho_history_records_total",
    "sekisho_events_lost_total",
    "sekisho_history_recording",
    "sekisho_history_unrecorded_total",
    "sekisho_history_last_sync_timestamp_seconds",
    "sekisho_history_disk_bytes",
    "sekisho_flows_tracked",
    "sekisho_ipfix_records_total",
    "sekisho_peer_up",
    "sekisho_drift_repaired_total",
    "sekisho_maintenance_windows",
    "sekisho_control_requests_total",
    "sekisho_asset_packets_total",
    "sekisho_peer_packets_total",
    "sekisho_build_info",
    "sekisho_mode",
];

/// The alerts the administrators were promised.
const ALERT_NAMES: &[&str] = &[
    "SekishoIsolationActive",
    "SekishoDatapathDetached",
    "SekishoNftablesMissing",
    "SekishoNoticeUndelivered",
    "SekishoHistoryNotWritten",
    "SekishoEventsLost",
    "SekishoHistoryNotRecording",
    "SekishoPeerDown",
    "SekishoViolationsRising",
    "SekishoDriftRepaired",
    "SekishoReloadFailed",
    "SekishoDown",
    "SekishoMonitorMode",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package `prometheus`) must be installed")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every `sekisho_[a-z_]+` token of `text`.
fn metric_tokens(text: &str) -> BTreeSet<&str> {
    let mut tokens = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sekisho_") {
        let tail = &rest[at..];
        let len = "sekisho_".len()
            + tail["sekisho_".len()..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
        tokens.insert(&tail[..len]);
        rest = &tail[len..];
    }
    tokens
}

/// The `sekisho_` tokens of `text` that are not metrics the daemon exposes.
fn unknown_metrics(text: &str) -> Vec<&str> {
    metric_tokens(text)
        .into_iter()
        .filter(|t| !METRICS.contains(t))
        .collect()
}

#[test]
fn the_metric_name_check_catches_a_typo() {
    assert_eq!(
        unknown_metrics(
            r#"sum by (verdict) (rate(sekisho_paket_total{direction="from_lan"}[5m]))"#
        ),
        ["sekisho_paket_total"]
    );
    assert_eq!(
        unknown_metrics("sekisho_packets_total / ignoring(x) sekisho_bytes_totals"),
        ["sekisho_bytes_totals"]
    );
    assert!(unknown_metrics("rate(sekisho_drops_total[5m]) + sekisho_peer_up").is_empty());
}

#[test]
fn promtool_check_rules_accepts_the_alerting_rules() {
    let out = promtool(&["check", "rules", ALERTS]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("SUCCESS"), "{}", describe(&out));
    let found: usize = stdout
        .split("SUCCESS:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in {stdout}"));
    assert!(found >= ALERT_NAMES.len(), "{}", describe(&out));
}

#[test]
fn promtool_unit_tests_of_the_alerting_rules_pass() {
    let out = promtool(&["test", "rules", ALERTS_TEST]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS"),
        "{}",
        describe(&out)
    );
}

#[test]
fn every_promised_alert_exists_and_is_unit_tested() {
    let rules = read(ALERTS);
    let tests = read(ALERTS_TEST);
    let defined: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    let tested: BTreeSet<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname:"))
        .map(str::trim)
        .collect();
    for name in ALERT_NAMES {
        assert!(defined.contains(name), "alerts.yml lacks {name}");
        assert!(tested.contains(name), "alerts_test.yml never tests {name}");
    }
    for name in &defined {
        assert!(tested.contains(name), "alerts_test.yml never tests {name}");
    }
    // Every alert has a severity and both languages in its annotations.
    assert_eq!(
        rules.matches("severity:").count(),
        rules.matches("- alert:").count()
    );
    assert!(rules.matches("summary:").count() >= defined.len());
    assert!(rules.matches("description:").count() >= defined.len());
    assert!(
        rules.matches("severity: critical").count() >= 1
            && rules.contains("severity: warning")
            && rules.contains("severity: info")
    );
    assert_eq!(unknown_metrics(&rules), Vec::<&str>::new(), "alerts.yml");
    assert_eq!(
        unknown_metrics(&tests),
        Vec::<&str>::new(),
        "alerts_test.yml"
    );
}

/// The panels of the dashboard, rows' nested panels included; rows themselves excluded.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn exprs(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

fn dashboard() -> Result<Value> {
    serde_json::from_str(&read(DASHBOARD)).context("configs/grafana/sekisho.json is not JSON")
}

fn uses_prometheus_input(ds: &Value) -> bool {
    ds["type"] == "prometheus" && ds["uid"] == "${DS_PROMETHEUS}"
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() -> Result<()> {
    let d = dashboard()?;
    assert_eq!(d["uid"], "sekisho");
    let title = d["title"].as_str().context("title")?;
    assert!(title.contains("sekisho"), "{title}");
    ensure!(d["schemaVersion"].as_u64().context("schemaVersion")? >= 36);
    let inputs = d["__inputs"].as_array().context("__inputs")?;
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a ${{DS_PROMETHEUS}} datasource input: {inputs:?}"
    );
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().context("panels")? {
        let id = p["id"].as_u64().context("panel id")?;
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().context("x")?, g["w"].as_u64().context("w")?);
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap_or(0) > 0,
            "gridPos {g}"
        );
    }
    Ok(())
}

#[test]
fn every_panel_queries_prometheus_for_metrics_the_daemon_exposes() -> Result<()> {
    let d = dashboard()?;
    let panels = panels(&d);
    assert!(panels.len() >= 12, "{} panels", panels.len());
    for p in &panels {
        let title = p["title"].as_str().context("panel title")?;
        assert!(!title.is_empty());
        assert!(
            uses_prometheus_input(&p["datasource"]),
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().context("targets")?;
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: empty expr");
            assert!(
                uses_prometheus_input(&t["datasource"]) || t.get("datasource").is_none(),
                "{title}: target datasource"
            );
            assert!(
                !metric_tokens(expr).is_empty(),
                "{title}: `{expr}` queries no sekisho metric"
            );
            assert_eq!(
                unknown_metrics(expr),
                Vec::<&str>::new(),
                "{title}: `{expr}`"
            );
        }
    }
    // Template variables and annotation queries too: anything in the file.
    assert_eq!(unknown_metrics(&read(DASHBOARD)), Vec::<&str>::new());
    Ok(())
}

#[test]
fn the_dashboard_covers_every_topic() -> Result<()> {
    let d = dashboard()?;
    let panels = panels(&d);
    let panel_with = |metrics: &[&str]| {
        panels.iter().copied().find(|p| {
            let used: BTreeSet<&str> = exprs(p).into_iter().flat_map(metric_tokens).collect();
            metrics.iter().all(|m| used.contains(m))
        })
    };
    let topics: &[(&str, &[&str])] = &[
        (
            "packets by direction and verdict",
            &["sekisho_packets_total"],
        ),
        ("bytes by direction and verdict", &["sekisho_bytes_total"]),
        ("drops by reason", &["sekisho_drops_total"]),
        ("traffic by asset", &["sekisho_asset_packets_total"]),
        ("isolations in force", &["sekisho_isolation_active"]),
        ("maintenance windows", &["sekisho_maintenance_windows"]),
        ("notices pending", &["sekisho_notifications_pending"]),
        (
            "oldest pending notice",
            &["sekisho_notifications_oldest_pending_seconds"],
        ),
        ("notices delivered/failed", &["sekisho_notifications_total"]),
        ("history records", &["sekisho_history_records_total"]),
        ("events lost", &["sekisho_events_lost_total"]),
        (
            "history sync lag",
            &["sekisho_history_last_sync_timestamp_seconds"],
        ),
        ("history disk use", &["sekisho_history_disk_bytes"]),
        ("datapath attachment", &["sekisho_datapath_attached"]),
        ("policy generation", &["sekisho_policy_generation"]),
        (
            "last reload",
            &[
                "sekisho_last_reload_success",
                "sekisho_last_reload_timestamp_seconds",
            ],
        ),
        ("drift repairs", &["sekisho_drift_repaired_total"]),
        ("peer up", &["sekisho_peer_up"]),
    ];
    let mut missing = Vec::new();
    for (topic, metrics) in topics {
        if panel_with(metrics).is_none() {
            missing.push(*topic);
        }
    }
    assert!(missing.is_empty(), "no panel for {missing:?}");

    // The breakdowns the topics ask for.
    let by = |metric: &str, labels: &[&str]| {
        let p = panel_with(&[metric]).expect("checked above");
        let text = p["targets"].to_string();
        for l in labels {
            assert!(
                text.contains(l),
                "{}: not broken down by {l}: {text}",
                p["title"]
            );
        }
    };
    by("sekisho_packets_total", &["direction", "verdict"]);
    by("sekisho_bytes_total", &["direction", "verdict"]);
    by("sekisho_drops_total", &["reason"]);
    by("sekisho_asset_packets_total", &["asset", "topk"]);
    by("sekisho_isolation_active", &["{{target}}"]);
    by("sekisho_maintenance_windows", &["state"]);
    by("sekisho_notifications_total", &["result"]);
    by("sekisho_datapath_attached", &["{{interface}}", "{{layer}}"]);
    by("sekisho_peer_up", &["{{peer}}"]);
    by("sekisho_drift_repaired_total", &["layer"]);
    // Rates of counters, never their raw running totals.
    for p in &panels {
        for e in exprs(p) {
            for m in metric_tokens(e) {
                if m.ends_with("_total") {
                    assert!(
                        e.contains("rate(") || e.contains("increase("),
                        "{}: raw counter in `{e}`",
                        p["title"]
                    );
                }
            }
        }
    }
    // Rows group the panels.
    let rows = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "row")
        .count();
    assert!(rows >= 5, "{rows} rows");
    Ok(())
}
