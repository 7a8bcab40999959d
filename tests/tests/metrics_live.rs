//! The daemon's /metrics scraped live (R20): checked by `promtool check metrics`, and
//! scraped by a real Prometheus server whose PromQL answers match the daemon's state.
//! Everything runs in the gateway's namespace, on its loopback.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sekisho_testbed::{Host, Sekishod, Topology, in_netns};

/// GET `path` from 127.0.0.1:`port` inside `ns`; the body.
fn get(ns: &str, port: u16, path: &str) -> String {
    let path = path.to_owned();
    in_netns(ns, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    })
}

/// A child killed by PID on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn r20_metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    Topology::remove_stale().unwrap();
    let topo = Topology::build().unwrap();
    // The prefecture is probed on its server; J-LIS has no probe.
    let daemon = Sekishod::start_demo(&topo, |t| {
        t.replacen(
            "networks = [\"203.0.113.8/29\", \"2001:db8:ff::8/125\"]",
            "networks = [\"203.0.113.8/29\", \"2001:db8:ff::8/125\"]\nprobe = \"203.0.113.10:443\"",
            1,
        )
    })
    .unwrap();
    let ns = topo.ns(Host::Gw).to_owned();
    daemon
        .ctl_json(&[
            "isolate",
            "asset:term-02",
            "--reason",
            "点検",
            "--emergency",
        ])
        .unwrap();
    let _pref = sekisho_testbed::TcpServer::start(&topo, Host::Pref, 443).unwrap();
    sekisho_testbed::tcp_echo(
        &topo,
        Host::Cs,
        std::net::SocketAddr::new(Host::Pref.addr(false), 443),
        Duration::from_secs(2),
    )
    .unwrap();

    // The exposition as a scrape sees it passes Prometheus's own linter.
    let text = get(&ns, 9807, "/metrics");
    for name in [
        "sekisho_packets_total",
        "sekisho_bytes_total",
        "sekisho_flows_total",
        "sekisho_isolation_active",
        "sekisho_datapath_attached",
        "sekisho_policy_generation",
        "sekisho_notifications_pending",
        "sekisho_drift_repaired_total",
    ] {
        assert!(text.contains(name), "scrape lacks {name}:\n{text}");
    }
    // Traffic by asset and peer, labelled from the register.
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(value("sekisho_asset_packets_total{asset=\"cs01\"}") >= 4.0);
    assert!(value("sekisho_peer_packets_total{peer=\"prefecture\"}") >= 4.0);
    assert_eq!(value("sekisho_asset_packets_total{asset=\"term-01\"}"), 0.0);
    // R19: the prefecture's server answers the gateway's probe (within one interval).
    let up = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        get(&ns, 9807, "/metrics").contains("sekisho_peer_up{peer=\"prefecture\"} 1")
    });
    assert!(up, "{}", get(&ns, 9807, "/metrics"));
    assert!(!text.contains("sekisho_peer_up{peer=\"jlis\"}"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes the daemon.
    let dir = daemon.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sekisho\n    static_configs:\n      - targets: ['127.0.0.1:9807']\n",
    )
    .unwrap();
    let _prometheus = Child(
        topo.spawn(
            Host::Gw,
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap(),
    );
    let start = Instant::now();
    let mut last = String::new();
    let answered = loop {
        if start.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
        let Ok(body) = std::panic::catch_unwind(|| {
            get(
                &ns,
                9090,
                "/api/v1/query?query=sekisho_isolation_active%7Btarget%3D%22asset%3Aterm-02%22%7D",
            )
        }) else {
            continue;
        };
        last = body.clone();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        if v["data"]["result"][0]["value"][1] == "1" {
            break true;
        }
    };
    assert!(answered, "PromQL never saw the isolation: {last}");
    let generation = get(&ns, 9090, "/api/v1/query?query=sekisho_policy_generation");
    let v: serde_json::Value = serde_json::from_str(&generation).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "2", "{generation}");
}
