//! The IPFIX export read back by the tools a prefecture would run: Wireshark's decoder
//! (`tshark`) and nfdump's collector (`nfcapd`, read with `nfdump`). Each test has a network
//! namespace of its own with only `lo` up, runs the tool there and sends from an
//! [`Exporter`] created inside the same namespace.
//!
//! Needs root (network namespaces) and the Debian packages `tshark` and `nfdump`, which
//! `cargo xtask setup` installs. Every process started here is stopped by its PID, every
//! wait is bounded, and the namespace is deleted when the test ends, pass or fail.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sekisho::history::ipfix::{Counters, Encoder, Exporter, Flow, Options};
use sekisho::history::{Close, Event, Record, Verdict};
use sekisho_common::Reason;
use sekisho_testbed::in_netns;
use sekisho_testbed::netns::{self, command_in};

const PORT: u16 = 4739;
const WAIT: Duration = Duration::from_secs(20);
/// Observation domain of the test exporter.
const DOMAIN: u32 = 4_012_345;
/// Flows beyond the hand-written ones, so that the export takes several messages.
const BULK: u16 = 60;

/// A network namespace of this test's own, with `lo` up; deleted on drop. Named like the
/// testbed's topologies (`sk<pid>x<n>-…`), so `Topology::remove_stale` also clears one
/// left behind by a killed run.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(900);
        netns::ensure_netns_dir().expect("create the netns directory");
        let name = loop {
            let name = format!(
                "sk{}x{}-{tag}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            if !netns::netns_path(&name).exists() {
                break name;
            }
        };
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        run_ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns delete {}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => eprintln!("ip netns delete {}: {err}", self.0),
        }
    }
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sekisho-ipfix-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tool running in the background: stopped with SIGTERM (so that it writes out what it
/// has) by [`Running::stop`], killed by PID if the test fails first.
struct Running {
    child: Option<Child>,
    what: &'static str,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then [`Running::wait`].
    fn stop(self, stderr: mpsc::Receiver<String>) -> String {
        let child = self.child.as_ref().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM {}: {e}", self.what));
        self.wait(stderr)
    }

    /// Waits (bounded) for it to exit successfully; returns what it wrote on stderr.
    fn wait(mut self, stderr: mpsc::Receiver<String>) -> String {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log: Vec<String> = stderr.try_iter().collect();
                panic!("{} did not exit within {WAIT:?}: {log:#?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends with the pipe; take everything it read.
        let log = stderr.iter().collect::<Vec<_>>().join("\n");
        assert!(
            status.success(),
            "{} exited with {status}: {log}",
            self.what
        );
        log
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` with stderr read line by line into the returned channel.
fn spawn(what: &'static str, cmd: &mut Command) -> (Running, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what} (is it installed? `cargo xtask setup`): {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (
        Running {
            child: Some(child),
            what,
        },
        rx,
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("run {cmd:?} (is it installed? `cargo xtask setup`): {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// One flow as the tools should show it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    packets: u64,
    bytes: u64,
    packets_rev: u64,
    bytes_rev: u64,
    /// forwardingStatus.
    fwd: u8,
}

fn end(src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> Record {
    // Ten seconds ago, lasting 2.5 s.
    let first_us = (now_ms() as i64 - 10_000) * 1000;
    Record {
        event: Event::End,
        first_us,
        last_us: first_us + 2_500_000,
        verdict: Verdict::Allow,
        reason: Reason::Policy as u8,
        generation: 1,
        rule: 1,
        interface: Some(Arc::from("lan0")),
        proto,
        src: Some(src.parse().expect("address")),
        dst: Some(dst.parse().expect("address")),
        sport,
        dport,
        close: Some(Close::Fin),
        ..Record::default()
    }
}

/// What the tests send (documentation addresses only): allowed and denied flows over
/// IPv4 and IPv6, then `BULK` more IPv4 flows so that the export spans several messages,
/// with a `Start` and a `Gap` record in between that must not be exported.
fn records() -> Vec<Record> {
    let mut records = vec![
        Record {
            packets_fwd: 10,
            bytes_fwd: 1500,
            packets_rev: 8,
            bytes_rev: 9000,
            tcp_flags: 0x1b,
            ..end("192.0.2.10", "198.51.100.20", 49152, 443, 6)
        },
        Record {
            verdict: Verdict::Deny,
            reason: Reason::NoRule as u8,
            rule: 0,
            packets_fwd: 3,
            bytes_fwd: 210,
            close: Some(Close::Idle),
            ..end("203.0.113.5", "192.0.2.10", 5353, 53, 17)
        },
        Record {
            event: Event::Start,
            ..end("192.0.2.99", "198.51.100.99", 1, 2, 6)
        },
        Record::gap(1_000, 2_000, 17),
        Record {
            packets_fwd: 12,
            bytes_fwd: 2400,
            packets_rev: 11,
            bytes_rev: 4321,
            tcp_flags: 0x1b,
            ..end("2001:db8::10", "2001:db8:1::20", 50000, 22, 6)
        },
        Record {
            verdict: Verdict::Deny,
            reason: Reason::Isolated as u8,
            rule: 0,
            packets_fwd: 4,
            bytes_fwd: 320,
            close: Some(Close::Cut),
            ..end("2001:db8:2::7", "2001:db8::10", 40001, 8050, 6)
        },
    ];
    records.extend([
        // ICMP echo: the record's source port is the echo identifier, not exported.
        Record {
            packets_fwd: 2,
            bytes_fwd: 168,
            packets_rev: 2,
            bytes_rev: 168,
            close: Some(Close::Idle),
            ..end("192.0.2.10", "198.51.100.20", 0x1234, 0, 1)
        },
        Record {
            packets_fwd: 1,
            bytes_fwd: 104,
            close: Some(Close::Idle),
            verdict: Verdict::Deny,
            reason: Reason::NoRule as u8,
            rule: 0,
            ..end("2001:db8:2::7", "2001:db8::10", 0x4321, 0, 58)
        },
    ]);
    records.extend((0..BULK).map(|i| Record {
        packets_fwd: u64::from(i) + 1,
        bytes_fwd: 100 * (u64::from(i) + 1),
        packets_rev: 1,
        bytes_rev: 60,
        ..end("192.0.2.30", "198.51.100.40", 20_000 + i, 80, 6)
    }));
    records
}

fn expected() -> BTreeSet<Expected> {
    records()
        .iter()
        .filter(|r| r.event == Event::End)
        .map(|r| Expected {
            src: r.src.unwrap(),
            dst: r.dst.unwrap(),
            // ICMP: the echo identifier is not exported.
            sport: if matches!(r.proto, 1 | 58) {
                0
            } else {
                r.sport
            },
            dport: r.dport,
            proto: r.proto,
            packets: r.packets_fwd,
            bytes: r.bytes_fwd,
            packets_rev: r.packets_rev,
            bytes_rev: r.bytes_rev,
            fwd: if r.verdict == Verdict::Deny { 129 } else { 64 },
        })
        .collect()
}

/// Sends [`records`] from inside `ns` to `collector`; returns the exporter's counters.
fn export(ns: &Netns, collector: SocketAddr) -> Counters {
    in_netns(&ns.0, || {
        let mut exporter = Exporter::new(collector, DOMAIN).expect("exporter");
        for record in &records() {
            exporter.push(record);
        }
        exporter.flush(now_ms());
        exporter.counters()
    })
}

fn check_counters(counters: &Counters) {
    let flows = expected().len() as u64;
    assert_eq!(counters.records_sent, flows, "{counters:?}");
    assert_eq!(counters.records_lost, 0, "{counters:?}");
    assert_eq!(counters.gaps_skipped, 1, "{counters:?}");
    assert_eq!(counters.records_skipped, 1, "{counters:?}");
    assert!(
        counters.messages_sent >= 3,
        "{flows} flows should need several 1400-byte messages: {counters:?}"
    );
}

/// Starts `cmd` and waits (bounded) for a stderr line containing `ready`.
fn start(what: &'static str, cmd: &mut Command, ready: &str) -> (Running, mpsc::Receiver<String>) {
    let (running, stderr) = spawn(what, cmd);
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(ready) => return (running, stderr),
            Ok(line) => seen.push(line),
            Err(_) => panic!("{what} did not say {ready:?} within {WAIT:?}: {seen:#?}"),
        }
    }
}

/// How many messages the export of [`records`] takes: the encoder is deterministic, so
/// the capture can stop by itself after exactly that many packets.
fn expected_messages() -> usize {
    let flows: Vec<Flow> = records().iter().filter_map(Flow::from_record).collect();
    Encoder::new(Options::new(DOMAIN))
        .expect("default options")
        .encode(&flows, now_ms())
        .len()
}

/// Panics if any key of `value`, at any depth, is one of Wireshark's error markers.
fn assert_no_dissector_errors(value: &serde_json::Value, frame: usize) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                assert!(
                    !key.starts_with("_ws.malformed") && !key.starts_with("_ws.expert"),
                    "frame {frame}: tshark reports {key}: {inner}"
                );
                assert_no_dissector_errors(inner, frame);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                assert_no_dissector_errors(item, frame);
            }
        }
        _ => {}
    }
}

fn str_of<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value:#}"))
}

fn num_of<T: std::str::FromStr>(value: &serde_json::Value, key: &str) -> T {
    let text = str_of(value, key);
    text.parse()
        .unwrap_or_else(|_| panic!("{key} = {text:?} is not a number"))
}

/// One decoded flow of tshark's JSON (`Flow N` under a data set).
fn tshark_flow(flow: &serde_json::Value) -> Expected {
    let addr = |v4: &str, v6: &str| -> IpAddr {
        flow.get(v4)
            .or_else(|| flow.get(v6))
            .and_then(|a| a.as_str())
            .unwrap_or_else(|| panic!("no {v4} or {v6} in {flow:#}"))
            .parse()
            .expect("an address")
    };
    // Forward and reverse (RFC 5103) counters share a field name: both, in template order.
    let pair = |key: &str| -> (u64, u64) {
        let values: Vec<u64> = flow[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} should appear twice (forward, reverse): {flow:#}"))
            .iter()
            .map(|v| v.as_str().and_then(|v| v.parse().ok()).expect("a count"))
            .collect();
        assert_eq!(values.len(), 2, "{key}: {values:?}");
        (values[0], values[1])
    };
    let (packets, packets_rev) = pair("cflow.packets");
    let (bytes, bytes_rev) = pair("cflow.octets");
    let status = &flow["Forwarding Status"];
    let class: u8 = num_of(status, "cflow.forwarding_status");
    let code: u8 = ["forward", "drop", "consume", "unknown"]
        .iter()
        .find_map(|kind| status.get(format!("cflow.forwarding_status_{kind}_code")))
        .and_then(|c| c.as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no forwarding status code in {status:#}"));
    assert_eq!(str_of(flow, "cflow.timedelta"), "2.500000000", "duration");
    assert_eq!(str_of(flow, "cflow.biflow_direction"), "1", "initiator");
    Expected {
        src: addr("cflow.srcaddr", "cflow.srcaddrv6"),
        dst: addr("cflow.dstaddr", "cflow.dstaddrv6"),
        sport: num_of(flow, "cflow.srcport"),
        dport: num_of(flow, "cflow.dstport"),
        proto: num_of(flow, "cflow.protocol"),
        packets,
        bytes,
        packets_rev,
        bytes_rev,
        fwd: class << 6 | code,
    }
}

#[test]
fn tshark_decodes_the_export_as_ipfix() {
    let ns = Netns::new("ipfix-ts");
    let dir = TempDir::new("tshark");
    let pcap = dir.0.join("ipfix.pcapng");
    let messages = expected_messages();
    assert!(messages >= 3, "the export should span several messages");
    let mut cmd = command_in(&ns.0, "tshark").expect("enter the namespace");
    cmd.args(["-i", "lo", "-f", &format!("udp port {PORT}")])
        .args(["-c", &messages.to_string(), "-w"])
        .arg(&pcap);
    let (tshark, stderr) = start("tshark", &mut cmd, "Capture started");

    // Nothing listens on the port: the collector's refusals come back as send errors,
    // and the exporter sends each message anyway.
    let counters = export(&ns, SocketAddr::from(([127, 0, 0, 1], PORT)));
    check_counters(&counters);
    assert_eq!(counters.messages_sent, messages as u64, "{counters:?}");
    assert!(counters.send_errors >= 1, "no refusal seen: {counters:?}");
    tshark.wait(stderr);

    let out = run_ok(
        Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-d", &format!("udp.port=={PORT},cflow")])
            .args(["-T", "json", "--no-duplicate-keys"]),
    );
    let frames: Vec<serde_json::Value> = serde_json::from_str(&out).expect("tshark JSON");
    assert_eq!(frames.len(), messages, "one frame per message");
    let mut flows = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let layers = &frame["_source"]["layers"];
        assert_no_dissector_errors(layers, i + 1);
        let cflow = layers
            .get("cflow")
            .unwrap_or_else(|| panic!("frame {}: not decoded as IPFIX: {layers:#}", i + 1));
        assert_eq!(str_of(cflow, "cflow.version"), "10", "IPFIX");
        assert_eq!(num_of::<u32>(cflow, "cflow.od_id"), DOMAIN);
        // The sequence number counts the data records of the earlier messages.
        assert_eq!(
            num_of::<usize>(cflow, "cflow.sequence"),
            flows.len(),
            "frame {}",
            i + 1
        );
        let udp_len: usize = num_of(&layers["udp"], "udp.length");
        assert_eq!(
            num_of::<usize>(cflow, "cflow.len") + 8,
            udp_len,
            "message length"
        );
        assert!(udp_len - 8 <= 1400, "frame {}: {udp_len} bytes", i + 1);
        let sets: Vec<(&String, &serde_json::Value)> = cflow
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("Set "))
            .collect();
        assert!(!sets.is_empty(), "frame {}: no sets", i + 1);
        // The templates come first, in the first message.
        assert_eq!(
            sets[0].0.contains("(Data Template): 256,257"),
            i == 0,
            "frame {}: {}",
            i + 1,
            sets[0].0
        );
        for (_, set) in sets {
            for (key, flow) in set.as_object().unwrap() {
                if key.starts_with("Flow ") {
                    flows.push(tshark_flow(flow));
                }
            }
        }
    }
    let decoded: BTreeSet<Expected> = flows.iter().cloned().collect();
    assert_eq!(decoded.len(), flows.len(), "no flow twice");
    assert_eq!(decoded, expected());
}

/// The flows of `nfdump -o csv` output, by the column names of its header line.
fn nfdump_flows(csv: &str) -> Vec<Expected> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let [sa, da, sp, dp, pr, fwd, ipkt, ibyt, opkt, obyt, td] = [
        "sa", "da", "sp", "dp", "pr", "fwd", "ipkt", "ibyt", "opkt", "obyt", "td",
    ]
    .map(column);
    lines
        // The flows end at an empty line or the summary.
        .take_while(|line| !line.is_empty() && !line.starts_with("Summary"))
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let num = |i: usize| -> u64 {
                cells[i]
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("column {} of {line:?} is not a number", header[i]))
            };
            let proto = match cells[pr].trim() {
                "TCP" => 6,
                "UDP" => 17,
                "ICMP" => 1,
                "ICMP6" => 58,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("protocol {other:?}")),
            };
            assert_eq!(cells[td].trim(), "2.500", "duration of {line:?}");
            Expected {
                src: cells[sa].trim().parse().expect("source address"),
                dst: cells[da].trim().parse().expect("destination address"),
                sport: num(sp) as u16,
                dport: num(dp) as u16,
                proto,
                packets: num(ipkt),
                bytes: num(ibyt),
                packets_rev: num(opkt),
                bytes_rev: num(obyt),
                fwd: num(fwd) as u8,
            }
        })
        .collect()
}

/// Waits (bounded) until the UDP socket of process `pid` on `port` has nothing left to
/// read. `/proc/PID/net` shows the sockets of the process's own network namespace.
fn wait_until_read(pid: u32, port: u16) {
    let local = format!(":{port:04X} ");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut queued = None;
        for table in ["udp", "udp6"] {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                .unwrap_or_else(|e| panic!("/proc/{pid}/net/{table}: {e}"));
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields
                    .get(1)
                    .is_some_and(|addr| format!("{addr} ").contains(&local))
                {
                    // tx_queue:rx_queue, in hex.
                    let rx = fields[4].split(':').nth(1).expect("rx_queue");
                    queued = Some(u64::from_str_radix(rx, 16).expect("hex rx_queue"));
                }
            }
        }
        match queued {
            Some(0) => return,
            None => panic!("no UDP socket on port {port} in process {pid}"),
            Some(bytes) => assert!(
                Instant::now() < deadline,
                "{bytes} bytes still queued for process {pid} after {WAIT:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nfcapd_collects_the_export() {
    let ns = Netns::new("ipfix-nf");
    let dir = TempDir::new("nfcapd");
    // Over IPv6 this time: the exporter's socket follows the collector's family.
    let mut cmd = command_in(&ns.0, "nfcapd").expect("enter the namespace");
    cmd.args(["-6", "-b", "::1", "-p", &PORT.to_string(), "-w"])
        .arg(&dir.0);
    let (nfcapd, stderr) = start("nfcapd", &mut cmd, "Startup");

    let counters = export(&ns, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, PORT)));
    check_counters(&counters);
    assert_eq!(counters.send_errors, 0, "{counters:?}");
    // nfcapd stops reading at SIGTERM: first let it read everything queued for it.
    wait_until_read(nfcapd.pid(), PORT);
    let log = nfcapd.stop(stderr);
    let flows = expected().len();
    let summary = log
        .lines()
        .find(|line| line.contains("Flows:"))
        .unwrap_or_else(|| panic!("no summary from nfcapd: {log}"));
    assert!(
        summary.contains(&format!("Flows: {flows},")),
        "nfcapd: {summary}"
    );
    assert!(summary.contains("Sequence Errors: 0,"), "nfcapd: {summary}");
    assert!(summary.contains("Bad Packets: 0"), "nfcapd: {summary}");

    let csv = run_ok(
        Command::new("nfdump")
            .arg("-R")
            .arg(&dir.0)
            .args(["-o", "csv"]),
    );
    let decoded = nfdump_flows(&csv);
    let unique: BTreeSet<Expected> = decoded.iter().cloned().collect();
    assert_eq!(unique.len(), decoded.len(), "no flow twice: {csv}");
    // nfdump 1.7.1 (Debian 12) files forwardingStatus as 0 whatever the exporter sends
    // (1 or 4 octets alike; tshark shows the value, see the test above). Accept that, but
    // never a wrong status.
    let want = expected();
    for flow in &decoded {
        let sent = want
            .iter()
            .find(|e| {
                (e.src, e.dst, e.sport, e.dport) == (flow.src, flow.dst, flow.sport, flow.dport)
            })
            .unwrap_or_else(|| panic!("nfdump shows a flow that was not sent: {flow:?}"));
        assert!(
            flow.fwd == 0 || flow.fwd == sent.fwd,
            "forwarding status {} for {flow:?}, sent {}",
            flow.fwd,
            sent.fwd
        );
    }
    let without_status = |flows: BTreeSet<Expected>| -> BTreeSet<Expected> {
        flows
            .into_iter()
            .map(|f| Expected { fwd: 0, ..f })
            .collect()
    };
    assert_eq!(without_status(unique), without_status(want), "{csv}");
}
