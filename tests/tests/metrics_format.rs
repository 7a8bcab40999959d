//! The metrics exposition against the real tools, no root needed: `promtool check metrics`
//! (Debian's `prometheus` package) accepts a rendered scrape without a single lint warning,
//! and `MetricsServer` answers `GET /metrics` over plain HTTP with the exposition content
//! type, 404 elsewhere.
//!
//! Run with `cargo test -p sekisho-testbed --test metrics_format`.

use std::io::Read as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sekisho::metrics::MetricsServer;
use sekisho::metrics::Snapshot;
use sekisho::metrics::render;

/// Every field filled, with label values that need escaping, and one reload failed.
fn synthetic() -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        mode: "monitor".into(),
        generation: 3,
        last_reload_ok: Some(false),
        last_reload_time: Some(1_750_000_000.25),
        packets: vec![
            ("from_lan", "allow", 1_000),
            ("from_lan", "deny", 7),
            ("from_wan", "monitor", 4),
        ],
        bytes: vec![
            ("from_lan", "allow", 1_500_000),
            ("from_wan", "monitor", 256),
        ],
        reasons: vec![("policy".into(), 7), ("malformed".into(), 0)],
        flows_new_allowed: 30,
        flows_denied: 2,
        interfaces: vec![
            ("lan0".into(), "lan".into(), true),
            ("wan0".into(), "wan".into(), true),
        ],
        nftables_present: false,
        isolations: vec!["role:cs".into()],
        known_targets: vec![
            "asset:cs01".into(),
            "role:cs".into(),
            "peer:prefecture".into(),
            "all".into(),
        ],
        maintenance_scheduled: 1,
        maintenance_active: 0,
        notifications_pending: 2,
        oldest_pending_age_seconds: 310.0,
        notifications: vec![
            ("isolation".into(), "smtp".into(), "delivered".into(), 3),
            ("reload".into(), "webhook".into(), "failed".into(), 2),
        ],
        drift_ebpf: 0,
        drift_nftables: 1,
        history_records: 1_234,
        events_lost: 2,
        history_recording: true,
        history_unrecorded: 0,
        history_last_sync: 1_795_000_000.25,
        history_disk_bytes: 1 << 30,
        flows_tracked: 42,
        flows_denied_open: 3,
        ipfix_records: 1_000,
        ipfix_errors: 0,
        peers_up: vec![("prefecture".into(), true)],
        control_requests: vec![("ok".into(), 4), ("error".into(), 1)],
        assets_traffic: vec![("cs01".into(), 900), ("端末\"2\"".into(), 1)],
        peers_traffic: vec![("prefecture".into(), 7)],
    }
}

/// A file under the system temporary directory, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn promtool_accepts_the_exposition_without_warnings() {
    let text = render(&synthetic());
    assert!(text.contains("sekisho_build_info"), "{text}");
    let file =
        TempFile(std::env::temp_dir().join(format!("sekisho-metrics-{}.prom", std::process::id())));
    std::fs::write(&file.0, &text).expect("write the scrape to a temporary file");
    let stdin = std::fs::File::open(&file.0).expect("reopen the scrape");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("promtool runs (Debian package `prometheus`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.is_empty() && stderr.is_empty(),
        "promtool check metrics: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nscrape:\n{text}",
        out.status
    );
}

/// Status line and whole response of a plain HTTP/1.0 GET of `path`.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the whole response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, response)
}

#[test]
fn server_answers_metrics_and_404_elsewhere() {
    let source: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| render(&synthetic()));
    let server = MetricsServer::start("127.0.0.1:0".parse().expect("an address"), source)
        .expect("start the metrics server");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the kernel chose a port");

    let (status, response) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{response}");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    assert!(
        head.lines().any(|l| {
            let (name, value) = l.split_once(':').unwrap_or_default();
            name.eq_ignore_ascii_case("content-type") && value.trim() == "text/plain; version=0.0.4"
        }),
        "{head}"
    );
    assert!(
        body.contains("sekisho_isolation_active{target=\"role:cs\"} 1"),
        "{body}"
    );
    assert!(body.contains("sekisho_mode{mode=\"monitor\"} 1"), "{body}");

    let (status, response) = get(addr, "/other");
    assert!(status.contains(" 404 "), "{response}");

    // Stops on drop: the port is closed soon afterwards (tiny_http's acceptor thread
    // closes it on its way out).
    drop(server);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still listens on {addr} 3 s after drop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
