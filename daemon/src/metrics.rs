//! Prometheus metrics (R19, R20): what a scrape of `GET /metrics` shows, and the small HTTP
//! server that answers it on `[daemon] metrics_listen`.
//!
//! The daemon fills a [`Snapshot`] — plain data, copied out of its state with no lock held —
//! and [`render`] turns it into the text exposition format (0.0.4) through the `prometheus`
//! crate: a fresh [`Registry`] of typed collectors is built and set from the snapshot on every
//! scrape, so nothing here keeps state between scrapes and the kernel's per-CPU counters,
//! summed by the daemon at scrape time, are the only source of truth.
//!
//! Invariants:
//! - every name starts with `sekisho_`; counters are exposed as counters and end in `_total`,
//!   gauges never do (both checked by `promtool check metrics` in the tests);
//! - label sets are bounded: directions, verdicts, layers, maintenance states and control
//!   results are fixed lists (always present, with 0s), assets and isolation targets come from
//!   the register and the configuration, never from packets;
//! - `sekisho_isolation_active` lists every known target with 0, and 1 for those isolated, so
//!   an alert can tell "not isolated" from "not reported";
//! - `sekisho_last_reload_success` and `sekisho_last_reload_timestamp_seconds` are absent
//!   until the first reload, rather than a misleading 0.

use std::net::SocketAddr;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::GaugeVec;
use prometheus::IntCounterVec;
use prometheus::Opts;
use prometheus::Registry;
use prometheus::TEXT_FORMAT;
use prometheus::TextEncoder;

/// The directions of `sekisho_packets_total` and `sekisho_bytes_total`.
pub const DIRECTIONS: [&str; 2] = ["from_lan", "from_wan"];
/// The verdicts of `sekisho_packets_total` and `sekisho_bytes_total`.
pub const VERDICTS: [&str; 3] = ["allow", "deny", "monitor"];
/// The results of `sekisho_control_requests_total`.
pub const CONTROL_RESULTS: [&str; 3] = ["ok", "error", "refused"];

/// Everything a scrape shows, filled by the daemon from its state (plain data, no locks held
/// while rendering).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: String,
    /// `"enforce"` or `"monitor"`.
    pub mode: String,
    pub generation: u32,
    /// `None` before any reload.
    pub last_reload_ok: Option<bool>,
    /// Unix seconds.
    pub last_reload_time: Option<f64>,
    /// (direction `from_lan`|`from_wan`, verdict `allow`|`deny`|`monitor`, packets).
    pub packets: Vec<(&'static str, &'static str, u64)>,
    /// (direction, verdict, bytes).
    pub bytes: Vec<(&'static str, &'static str, u64)>,
    /// (drop reason name, packets).
    pub reasons: Vec<(String, u64)>,
    /// `sekisho_flows_total{verdict="allow"}`: new flows allowed by the policy.
    pub flows_new_allowed: u64,
    /// `sekisho_flows_total{verdict="deny"}`: first packets denied.
    pub flows_denied: u64,
    /// (interface name, side, eBPF program attached).
    pub interfaces: Vec<(String, String, bool)>,
    pub nftables_present: bool,
    /// Isolations in force, e.g. `"asset:cs01"`.
    pub isolations: Vec<String>,
    /// Every `asset:`/`role:`/`peer:` name and `"all"`: the label set of
    /// `sekisho_isolation_active`.
    pub known_targets: Vec<String>,
    pub maintenance_scheduled: u64,
    pub maintenance_active: u64,
    pub notifications_pending: u64,
    pub oldest_pending_age_seconds: f64,
    /// (kind, channel, result `delivered`|`failed`, count).
    pub notifications: Vec<(String, String, String, u64)>,
    pub drift_ebpf: u64,
    pub drift_nftables: u64,
    /// Records appended to the traffic history since the daemon started.
    pub history_records: u64,
    /// Flow events the kernel's ring buffer had no room for.
    pub events_lost: u64,
    /// The traffic history is recording (its thread runs and its last write succeeded).
    pub history_recording: bool,
    /// Records that could not be written (disk full, I/O error) since the daemon started.
    pub history_unrecorded: u64,
    /// Unix time of the last successful sync of the history's write-ahead log; the lag is
    /// `time() - this` (0 before the first sync).
    pub history_last_sync: f64,
    /// Bytes of the traffic history on disk.
    pub history_disk_bytes: u64,
    /// Flows tracked in the kernel, and denied flows being aggregated.
    pub flows_tracked: u64,
    pub flows_denied_open: u64,
    /// IPFIX records sent to the collector, and failed sends.
    pub ipfix_records: u64,
    pub ipfix_errors: u64,
    /// (peer name, reachable).
    pub peers_up: Vec<(String, bool)>,
    /// (result `ok`|`error`|`refused`, count).
    pub control_requests: Vec<(String, u64)>,
    /// (asset, packets), bounded by the register.
    pub assets_traffic: Vec<(String, u64)>,
    /// (peer, packets), bounded by the configuration.
    pub peers_traffic: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the metric {name}")]
    Metric {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot encode the metrics")]
    Encode {
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot listen for metrics scrapes on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metrics HTTP server on {addr}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot start the metrics server thread")]
    Thread {
        #[source]
        source: std::io::Error,
    },
}

/// The text exposition of `s`. A failure (a bug: every name and label set here is fixed) is
/// logged and yields an empty scrape, which `absent(sekisho_build_info)` alerts on.
pub fn render(s: &Snapshot) -> String {
    match try_render(s) {
        Ok(text) => text,
        Err(error) => {
            tracing::error!(error = %error, "cannot render the metrics");
            String::new()
        }
    }
}

/// The text exposition of `s`, or why it could not be built.
pub fn try_render(s: &Snapshot) -> Result<String, MetricsError> {
    let r = Collectors::new();

    let build = r.gauge(
        "sekisho_build_info",
        "Always 1; the version label is the running sekisho version.",
        &["version"],
    )?;
    r.set(&build, &[&s.version], 1.0)?;
    let mode = r.gauge(
        "sekisho_mode",
        "Always 1; the mode label is enforce (denied traffic is dropped) or monitor (only counted).",
        &["mode"],
    )?;
    r.set(&mode, &[&s.mode], 1.0)?;

    // Policy.
    let generation = r.gauge(
        "sekisho_policy_generation",
        "Generation number of the policy in force, incremented by every successful reload.",
        &[],
    )?;
    r.set(&generation, &[], f64::from(s.generation))?;
    if let Some(ok) = s.last_reload_ok {
        let success = r.gauge(
            "sekisho_last_reload_success",
            "1 if the last policy reload succeeded, 0 if it failed and the previous policy stayed in force.",
            &[],
        )?;
        r.set(&success, &[], if ok { 1.0 } else { 0.0 })?;
    }
    if let Some(time) = s.last_reload_time {
        let at = r.gauge(
            "sekisho_last_reload_timestamp_seconds",
            "Unix time of the last policy reload attempt.",
            &[],
        )?;
        r.set(&at, &[], time)?;
    }

    // Traffic.
    let packets = r.counter(
        "sekisho_packets_total",
        "Packets seen by the gateway, by direction and verdict.",
        &["direction", "verdict"],
    )?;
    let bytes = r.counter(
        "sekisho_bytes_total",
        "Bytes seen by the gateway, by direction and verdict.",
        &["direction", "verdict"],
    )?;
    for direction in DIRECTIONS {
        for verdict in VERDICTS {
            r.add(&packets, &[direction, verdict], 0)?;
            r.add(&bytes, &[direction, verdict], 0)?;
        }
    }
    for &(direction, verdict, n) in &s.packets {
        r.add(&packets, &[direction, verdict], n)?;
    }
    for &(direction, verdict, n) in &s.bytes {
        r.add(&bytes, &[direction, verdict], n)?;
    }
    let drops = r.counter(
        "sekisho_drops_total",
        "Packets dropped, by drop reason.",
        &["reason"],
    )?;
    for (reason, n) in &s.reasons {
        r.add(&drops, &[reason.as_str()], *n)?;
    }
    let flows = r.counter(
        "sekisho_flows_total",
        "Flows decided: new flows allowed by the policy, and flows whose first packet was denied.",
        &["verdict"],
    )?;
    r.add(&flows, &["allow"], s.flows_new_allowed)?;
    r.add(&flows, &["deny"], s.flows_denied)?;
    let assets = r.counter(
        "sekisho_asset_packets_total",
        "Packets to or from each registered asset.",
        &["asset"],
    )?;
    for (asset, n) in &s.assets_traffic {
        r.add(&assets, &[asset.as_str()], *n)?;
    }
    let peers = r.counter(
        "sekisho_peer_packets_total",
        "Packets exchanged with each configured peer.",
        &["peer"],
    )?;
    for (peer, n) in &s.peers_traffic {
        r.add(&peers, &[peer.as_str()], *n)?;
    }

    // Datapath.
    let attached = r.gauge(
        "sekisho_datapath_attached",
        "1 if the enforcement layer is in place on the interface (nftables covers all interfaces), 0 if not.",
        &["interface", "layer"],
    )?;
    for (name, _side, ebpf) in &s.interfaces {
        r.set(&attached, &[name.as_str(), "ebpf"], bool_value(*ebpf))?;
    }
    r.set(
        &attached,
        &["all", "nftables"],
        bool_value(s.nftables_present),
    )?;
    let drift = r.counter(
        "sekisho_drift_repaired_total",
        "Times the datapath was found changed outside sekisho and put back, by layer.",
        &["layer"],
    )?;
    r.add(&drift, &["ebpf"], s.drift_ebpf)?;
    r.add(&drift, &["nftables"], s.drift_nftables)?;

    // Isolation and maintenance.
    let isolation = r.gauge(
        "sekisho_isolation_active",
        "1 if an isolation is in force for the target, 0 if not.",
        &["target"],
    )?;
    for target in &s.known_targets {
        r.set(&isolation, &[target.as_str()], 0.0)?;
    }
    for target in &s.isolations {
        r.set(&isolation, &[target.as_str()], 1.0)?;
    }
    let maintenance = r.gauge(
        "sekisho_maintenance_windows",
        "Maintenance windows, by state (scheduled or active).",
        &["state"],
    )?;
    r.set(&maintenance, &["scheduled"], s.maintenance_scheduled as f64)?;
    r.set(&maintenance, &["active"], s.maintenance_active as f64)?;

    // Notifications.
    let pending = r.gauge(
        "sekisho_notifications_pending",
        "Notifications in the outbox waiting to be delivered.",
        &[],
    )?;
    r.set(&pending, &[], s.notifications_pending as f64)?;
    let oldest = r.gauge(
        "sekisho_notifications_oldest_pending_seconds",
        "Age of the oldest notification still waiting in the outbox, 0 if none.",
        &[],
    )?;
    r.set(&oldest, &[], s.oldest_pending_age_seconds)?;
    let notifications = r.counter(
        "sekisho_notifications_total",
        "Notification delivery attempts, by kind, channel and result (delivered or failed).",
        &["kind", "channel", "result"],
    )?;
    for (kind, channel, result, n) in &s.notifications {
        r.add(
            &notifications,
            &[kind.as_str(), channel.as_str(), result.as_str()],
            *n,
        )?;
    }

    // History.
    let records = r.counter(
        "sekisho_history_records_total",
        "Records written to the traffic history.",
        &[],
    )?;
    r.add(&records, &[], s.history_records)?;
    let lost = r.counter(
        "sekisho_events_lost_total",
        "Traffic events lost before reaching the history (ring buffer full).",
        &[],
    )?;
    r.add(&lost, &[], s.events_lost)?;
    let recording = r.gauge(
        "sekisho_history_recording",
        "1 while the traffic history records; 0 when it cannot (enforcement goes on).",
        &[],
    )?;
    r.set(&recording, &[], if s.history_recording { 1.0 } else { 0.0 })?;
    let unrecorded = r.counter(
        "sekisho_history_unrecorded_total",
        "Traffic records that could not be written (disk full, I/O error); a gap record says so once writing resumes.",
        &[],
    )?;
    r.add(&unrecorded, &[], s.history_unrecorded)?;
    let synced = r.gauge(
        "sekisho_history_last_sync_timestamp_seconds",
        "Unix time of the last sync of the traffic history's write-ahead log.",
        &[],
    )?;
    r.set(&synced, &[], s.history_last_sync)?;
    let disk = r.gauge(
        "sekisho_history_disk_bytes",
        "Bytes of the traffic history on disk (write-ahead log, segments, manifest).",
        &[],
    )?;
    r.set(&disk, &[], s.history_disk_bytes as f64)?;
    let tracked = r.gauge(
        "sekisho_flows_tracked",
        "Flows in the kernel's tables: allowed and tracked, or denied and being aggregated.",
        &["verdict"],
    )?;
    r.set(&tracked, &["allow"], s.flows_tracked as f64)?;
    r.set(&tracked, &["deny"], s.flows_denied_open as f64)?;
    let ipfix = r.counter(
        "sekisho_ipfix_records_total",
        "Flow records exported in IPFIX, by result.",
        &["result"],
    )?;
    r.add(&ipfix, &["sent"], s.ipfix_records)?;
    r.add(&ipfix, &["error"], s.ipfix_errors)?;

    // Peers and control.
    let peers = r.gauge(
        "sekisho_peer_up",
        "1 if the peer network is reachable, 0 if not.",
        &["peer"],
    )?;
    for (peer, up) in &s.peers_up {
        r.set(&peers, &[peer.as_str()], bool_value(*up))?;
    }
    let control = r.counter(
        "sekisho_control_requests_total",
        "Requests on the control socket, by result (ok, error or refused).",
        &["result"],
    )?;
    for result in CONTROL_RESULTS {
        r.add(&control, &[result], 0)?;
    }
    for (result, n) in &s.control_requests {
        r.add(&control, &[result.as_str()], *n)?;
    }

    let mut text = String::new();
    TextEncoder::new()
        .encode_utf8(&r.registry.gather(), &mut text)
        .map_err(|source| MetricsError::Encode { source })?;
    Ok(text)
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// One scrape's registry, with helpers that attach the metric name to every error.
struct Collectors {
    registry: Registry,
}

impl Collectors {
    fn new() -> Self {
        Self {
            registry: Registry::new(),
        }
    }

    fn counter(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<Named<IntCounterVec>, MetricsError> {
        let wrap = |source| MetricsError::Metric { name, source };
        let vec = IntCounterVec::new(Opts::new(name, help), labels).map_err(wrap)?;
        self.registry
            .register(Box::new(vec.clone()))
            .map_err(wrap)?;
        Ok(Named { name, vec })
    }

    fn gauge(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<Named<GaugeVec>, MetricsError> {
        let wrap = |source| MetricsError::Metric { name, source };
        let vec = GaugeVec::new(Opts::new(name, help), labels).map_err(wrap)?;
        self.registry
            .register(Box::new(vec.clone()))
            .map_err(wrap)?;
        Ok(Named { name, vec })
    }

    /// Adds `n` to a counter (several entries with the same labels sum up).
    fn add(&self, c: &Named<IntCounterVec>, labels: &[&str], n: u64) -> Result<(), MetricsError> {
        c.vec
            .get_metric_with_label_values(labels)
            .map_err(|source| MetricsError::Metric {
                name: c.name,
                source,
            })?
            .inc_by(n);
        Ok(())
    }

    /// Sets a gauge (the last entry with the same labels wins).
    fn set(&self, g: &Named<GaugeVec>, labels: &[&str], v: f64) -> Result<(), MetricsError> {
        g.vec
            .get_metric_with_label_values(labels)
            .map_err(|source| MetricsError::Metric {
                name: g.name,
                source,
            })?
            .set(v);
        Ok(())
    }
}

struct Named<V> {
    name: &'static str,
    vec: V,
}

/// The scrape endpoint: `GET /metrics` answered from `source` on a thread of its own, 404 for
/// any other path. Stops (and joins its thread) on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the serving thread waits for a request before it checks for a stop.
const POLL: Duration = Duration::from_millis(200);

impl MetricsServer {
    /// Serves GET /metrics on `addr` (tiny_http) from `source`, on its own thread; 404
    /// elsewhere; stops on drop.
    pub fn start(
        addr: SocketAddr,
        source: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Result<MetricsServer, MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|source| MetricsError::Serve { addr, source })?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("sekisho-metrics".into())
            .spawn({
                let server = Arc::clone(&server);
                let stop = Arc::clone(&stop);
                move || serve(&server, &stop, &*source)
            })
            .map_err(|source| MetricsError::Thread { source })?;
        tracing::info!(addr = %local, "serving metrics");
        Ok(MetricsServer {
            addr: local,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually listened on (the port chosen by the kernel for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the metrics server thread panicked");
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    source: &(dyn Fn() -> String + Send + Sync),
) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => answer(request, source),
            Ok(None) => {}
            Err(error) => tracing::debug!(error = %error, "metrics connection failed"),
        }
    }
}

fn answer(request: tiny_http::Request, source: &(dyn Fn() -> String + Send + Sync)) {
    let path = request.url().split('?').next().unwrap_or_default();
    let method = request.method().clone();
    let response = if path != "/metrics" {
        plain(404, "not found: metrics are at /metrics\n")
    } else if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        plain(405, "method not allowed: use GET\n")
    } else {
        // A panic while collecting must not take the endpoint down with it.
        match std::panic::catch_unwind(AssertUnwindSafe(source)) {
            Ok(text) => tiny_http::Response::from_string(text).with_header(header(TEXT_FORMAT)),
            Err(_) => {
                tracing::error!("collecting the metrics panicked");
                plain(500, "cannot collect the metrics\n")
            }
        }
    };
    if let Err(error) = request.respond(response) {
        tracing::debug!(error = %error, "cannot answer a metrics scrape");
    }
}

fn plain(status: u16, body: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header("text/plain; charset=utf-8"))
}

fn header(content_type: &str) -> tiny_http::Header {
    tiny_http::Header {
        field: "Content-Type"
            .parse()
            .expect("Content-Type is a valid header name"),
        value: content_type
            .parse()
            .expect("a content type is ASCII and a valid header value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with every field filled, as a busy gateway would report it.
    fn full() -> Snapshot {
        Snapshot {
            version: "0.1.0".into(),
            mode: "enforce".into(),
            generation: 7,
            last_reload_ok: Some(true),
            last_reload_time: Some(1_700_000_000.5),
            packets: vec![
                ("from_lan", "allow", 100),
                ("from_lan", "deny", 3),
                ("from_wan", "allow", 90),
                ("from_wan", "monitor", 2),
            ],
            bytes: vec![("from_lan", "allow", 64_000), ("from_wan", "deny", 120)],
            reasons: vec![("policy".into(), 3), ("isolated".into(), 1)],
            flows_new_allowed: 12,
            flows_denied: 4,
            interfaces: vec![
                ("eth0".into(), "lan".into(), true),
                ("eth1".into(), "wan".into(), false),
            ],
            nftables_present: true,
            isolations: vec!["asset:cs01".into()],
            known_targets: vec![
                "asset:cs01".into(),
                "asset:cs02".into(),
                "role:cs".into(),
                "peer:prefecture".into(),
                "all".into(),
            ],
            maintenance_scheduled: 2,
            maintenance_active: 1,
            notifications_pending: 3,
            oldest_pending_age_seconds: 42.5,
            notifications: vec![
                ("isolation".into(), "smtp".into(), "delivered".into(), 5),
                ("isolation".into(), "webhook".into(), "failed".into(), 1),
            ],
            drift_ebpf: 1,
            drift_nftables: 2,
            history_records: 1234,
            events_lost: 5,
            history_recording: true,
            history_unrecorded: 3,
            history_last_sync: 1_795_000_000.5,
            history_disk_bytes: 4096,
            flows_tracked: 7,
            flows_denied_open: 2,
            ipfix_records: 11,
            ipfix_errors: 1,
            peers_up: vec![("prefecture".into(), true), ("nation".into(), false)],
            control_requests: vec![("ok".into(), 9), ("refused".into(), 1)],
            assets_traffic: vec![("cs01".into(), 50), ("cs02".into(), 0)],
            peers_traffic: vec![("prefecture".into(), 7)],
        }
    }

    /// The `# TYPE` of `name` in `text`.
    fn kind<'t>(text: &'t str, name: &str) -> Option<&'t str> {
        let prefix = format!("# TYPE {name} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    /// The value of the sample `series` (name and labels exactly as exposed) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[track_caller]
    fn expect(text: &str, series: &str, value: f64) {
        assert_eq!(sample(text, series), Some(value), "{series} in\n{text}");
    }

    #[test]
    fn every_metric_has_its_type_and_help() {
        let text = render(&full());
        let counters = [
            "sekisho_packets_total",
            "sekisho_bytes_total",
            "sekisho_flows_total",
            "sekisho_notifications_total",
            "sekisho_history_records_total",
            "sekisho_events_lost_total",
            "sekisho_history_unrecorded_total",
            "sekisho_ipfix_records_total",
            "sekisho_drops_total",
            "sekisho_drift_repaired_total",
            "sekisho_control_requests_total",
            "sekisho_asset_packets_total",
        ];
        let gauges = [
            "sekisho_isolation_active",
            "sekisho_datapath_attached",
            "sekisho_policy_generation",
            "sekisho_notifications_pending",
            "sekisho_peer_up",
            "sekisho_build_info",
            "sekisho_mode",
            "sekisho_last_reload_success",
            "sekisho_last_reload_timestamp_seconds",
            "sekisho_maintenance_windows",
            "sekisho_notifications_oldest_pending_seconds",
            "sekisho_history_recording",
            "sekisho_history_last_sync_timestamp_seconds",
            "sekisho_history_disk_bytes",
            "sekisho_flows_tracked",
        ];
        for name in counters {
            assert_eq!(kind(&text, name), Some("counter"), "{name} in\n{text}");
        }
        for name in gauges {
            assert_eq!(kind(&text, name), Some("gauge"), "{name} in\n{text}");
        }
        for name in counters.iter().chain(&gauges) {
            let help = format!("# HELP {name} ");
            assert!(
                text.lines()
                    .any(|l| l.len() > help.len() + 10 && l.starts_with(&help)),
                "{name} has a help text"
            );
        }
    }

    #[test]
    fn samples_carry_the_snapshot_with_their_labels() {
        let text = render(&full());
        expect(&text, "sekisho_build_info{version=\"0.1.0\"}", 1.0);
        expect(&text, "sekisho_mode{mode=\"enforce\"}", 1.0);
        expect(&text, "sekisho_policy_generation", 7.0);
        expect(&text, "sekisho_last_reload_success", 1.0);
        expect(
            &text,
            "sekisho_last_reload_timestamp_seconds",
            1_700_000_000.5,
        );
        expect(
            &text,
            "sekisho_packets_total{direction=\"from_lan\",verdict=\"allow\"}",
            100.0,
        );
        expect(
            &text,
            "sekisho_packets_total{direction=\"from_wan\",verdict=\"deny\"}",
            0.0,
        );
        expect(
            &text,
            "sekisho_bytes_total{direction=\"from_lan\",verdict=\"allow\"}",
            64_000.0,
        );
        expect(
            &text,
            "sekisho_bytes_total{direction=\"from_lan\",verdict=\"monitor\"}",
            0.0,
        );
        expect(&text, "sekisho_drops_total{reason=\"policy\"}", 3.0);
        expect(&text, "sekisho_flows_total{verdict=\"allow\"}", 12.0);
        expect(&text, "sekisho_flows_total{verdict=\"deny\"}", 4.0);
        expect(&text, "sekisho_asset_packets_total{asset=\"cs01\"}", 50.0);
        expect(&text, "sekisho_asset_packets_total{asset=\"cs02\"}", 0.0);
        expect(
            &text,
            "sekisho_datapath_attached{interface=\"eth0\",layer=\"ebpf\"}",
            1.0,
        );
        expect(
            &text,
            "sekisho_datapath_attached{interface=\"eth1\",layer=\"ebpf\"}",
            0.0,
        );
        expect(
            &text,
            "sekisho_datapath_attached{interface=\"all\",layer=\"nftables\"}",
            1.0,
        );
        expect(&text, "sekisho_drift_repaired_total{layer=\"ebpf\"}", 1.0);
        expect(
            &text,
            "sekisho_drift_repaired_total{layer=\"nftables\"}",
            2.0,
        );
        expect(
            &text,
            "sekisho_maintenance_windows{state=\"scheduled\"}",
            2.0,
        );
        expect(&text, "sekisho_maintenance_windows{state=\"active\"}", 1.0);
        expect(&text, "sekisho_notifications_pending", 3.0);
        expect(&text, "sekisho_notifications_oldest_pending_seconds", 42.5);
        expect(
            &text,
            "sekisho_notifications_total{channel=\"webhook\",kind=\"isolation\",result=\"failed\"}",
            1.0,
        );
        expect(&text, "sekisho_history_records_total", 1234.0);
        expect(&text, "sekisho_events_lost_total", 5.0);
        expect(&text, "sekisho_history_recording", 1.0);
        expect(&text, "sekisho_history_unrecorded_total", 3.0);
        expect(&text, "sekisho_history_disk_bytes", 4096.0);
        expect(&text, "sekisho_flows_tracked{verdict=\"deny\"}", 2.0);
        expect(&text, "sekisho_ipfix_records_total{result=\"sent\"}", 11.0);
        expect(&text, "sekisho_peer_up{peer=\"prefecture\"}", 1.0);
        expect(&text, "sekisho_peer_up{peer=\"nation\"}", 0.0);
        expect(&text, "sekisho_control_requests_total{result=\"ok\"}", 9.0);
        expect(
            &text,
            "sekisho_control_requests_total{result=\"error\"}",
            0.0,
        );
        expect(
            &text,
            "sekisho_control_requests_total{result=\"refused\"}",
            1.0,
        );
    }

    #[test]
    fn isolation_lists_every_known_target() {
        let text = render(&full());
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sekisho_isolation_active{"))
            .collect();
        assert_eq!(series.len(), 5, "{text}");
        expect(
            &text,
            "sekisho_isolation_active{target=\"asset:cs01\"}",
            1.0,
        );
        for target in ["asset:cs02", "role:cs", "peer:prefecture", "all"] {
            expect(
                &text,
                &format!("sekisho_isolation_active{{target=\"{target}\"}}"),
                0.0,
            );
        }
    }

    #[test]
    fn reload_metrics_are_absent_before_a_reload() {
        let text = render(&Snapshot::default());
        assert!(!text.contains("sekisho_last_reload_success"), "{text}");
        assert!(
            !text.contains("sekisho_last_reload_timestamp_seconds"),
            "{text}"
        );
        // The fixed label sets are there, at 0, from the first scrape.
        expect(
            &text,
            "sekisho_packets_total{direction=\"from_wan\",verdict=\"monitor\"}",
            0.0,
        );
        expect(&text, "sekisho_history_records_total", 0.0);
        expect(&text, "sekisho_events_lost_total", 0.0);
    }

    #[test]
    fn a_failed_reload_shows_as_zero() {
        let mut s = full();
        s.last_reload_ok = Some(false);
        expect(&render(&s), "sekisho_last_reload_success", 0.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = full();
        s.assets_traffic = vec![("odd\"name\\\n".into(), 1)];
        let text = try_render(&s).expect("renders");
        expect(
            &text,
            "sekisho_asset_packets_total{asset=\"odd\\\"name\\\\\\n\"}",
            1.0,
        );
    }
}
