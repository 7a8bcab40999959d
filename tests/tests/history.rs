//! The traffic history (R6–R9) with the real daemon in the namespace topology: flows the
//! datapath allowed and denied come back from `sekishoctl history query` with the rule and
//! the generation that decided them, and a daemon killed with SIGKILL loses nothing it had
//! synced.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sekisho_testbed::checks::{addr, allowed, demo_with, denied};
use sekisho_testbed::{Host, Sekishod, TcpServer, Topology};

/// `sekishoctl history query ARGS… --format jsonl`, one JSON value per record.
fn query(daemon: &Sekishod, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "query", "--format", "jsonl"];
    all.extend_from_slice(args);
    let out = daemon.ctl(&all).expect("sekishoctl runs");
    assert!(
        out.status.success(),
        "history query {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Queries until `want` holds for the records (the recorder writes within a second).
#[track_caller]
fn wait_for(
    daemon: &Sekishod,
    args: &[&str],
    limit: Duration,
    want: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let records = query(daemon, args);
        if want(&records) {
            return records;
        }
        if start.elapsed() > limit {
            panic!(
                "history query {args:?} did not show what was expected within {limit:?}:\n{}\n\ndaemon log:\n{}",
                records
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn s<'a>(r: &'a serde_json::Value, field: &str) -> &'a str {
    r[field].as_str().unwrap_or("")
}

fn n(r: &serde_json::Value, field: &str) -> u64 {
    r[field].as_u64().unwrap_or(0)
}

fn generation(daemon: &Sekishod) -> u64 {
    daemon.ctl_json(&["status"]).unwrap()["generation"]
        .as_u64()
        .unwrap()
}

#[test]
fn r6_allowed_and_denied_flows_are_recorded_with_their_rule_and_generation() {
    let (topo, daemon) = demo_with(|t| t);
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _internet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    let g = generation(&daemon);
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
    // IPv6 too.
    allowed(
        &topo,
        Host::Term1,
        SocketAddr::new(Host::Cs.addr(true), 443),
    );
    denied(&topo, Host::Term1, addr(Host::Pref, 443));
    denied(&topo, Host::Rogue, addr(Host::Cs, 443));
    denied(&topo, Host::Cs, addr(Host::Internet, 443));

    let term = Host::Term1.addr(false).to_string();
    let cs = Host::Cs.addr(false).to_string();
    let starts = wait_for(
        &daemon,
        &["--asset", "term-01", "--event", "start"],
        Duration::from_secs(10),
        |r| r.len() >= 3,
    );
    let allow = starts
        .iter()
        .find(|r| s(r, "verdict") == "allow" && s(r, "dst") == cs)
        .expect("the allowed IPv4 flow");
    assert_eq!(s(allow, "src"), term);
    assert_eq!(n(allow, "dport"), 443);
    assert_eq!(n(allow, "proto"), 6);
    assert_eq!(s(allow, "src_asset"), "term-01");
    assert_eq!(s(allow, "src_role"), "terminal");
    assert_eq!(s(allow, "dst_asset"), "cs01");
    assert_eq!(s(allow, "dst_role"), "cs");
    assert_eq!(s(allow, "reason"), "policy");
    assert_eq!(n(allow, "rule"), 1, "{allow}");
    assert_eq!(s(allow, "rule_name"), "terminal-to-cs");
    assert_eq!(n(allow, "generation"), g);
    assert_eq!(s(allow, "interface"), "lan-term");
    assert!(
        starts
            .iter()
            .any(|r| s(r, "verdict") == "allow" && s(r, "dst") == Host::Cs.addr(true).to_string()),
        "the IPv6 flow: {starts:?}"
    );
    let deny = starts
        .iter()
        .find(|r| s(r, "verdict") == "deny")
        .expect("the denied flow");
    assert_eq!(s(deny, "dst"), Host::Pref.addr(false).to_string());
    assert_eq!(s(deny, "dst_peer"), "prefecture");
    assert_eq!(s(deny, "reason"), "no_rule");
    assert_eq!(n(deny, "rule"), 0);
    assert_eq!(n(deny, "generation"), g);

    // A host outside the register, and the CS trying the Internet.
    let rogue = wait_for(
        &daemon,
        &["--addr", &Host::Rogue.addr(false).to_string()],
        Duration::from_secs(5),
        |r| !r.is_empty(),
    );
    assert_eq!(s(&rogue[0], "reason"), "unknown_source", "{rogue:?}");
    assert_eq!(s(&rogue[0], "src_asset"), "");
    let internet = Host::Internet.addr(false).to_string();
    let from_cs = wait_for(
        &daemon,
        &["--asset", "cs01", "--verdict", "deny"],
        Duration::from_secs(5),
        |r| r.iter().any(|x| s(x, "dst") == internet),
    );
    let to_internet = from_cs.iter().find(|x| s(x, "dst") == internet).unwrap();
    assert_eq!(s(to_internet, "src_asset"), "cs01");
    assert_eq!(s(to_internet, "dst_peer"), "", "the Internet is no peer");

    // The allowed connection ended with FIN: its end record carries both directions.
    let ends = wait_for(
        &daemon,
        &[
            "--asset",
            "term-01",
            "--event",
            "end",
            "--verdict",
            "allow",
            "--addr",
            &cs,
        ],
        Duration::from_secs(30),
        |r| !r.is_empty(),
    );
    let end = &ends[0];
    assert_eq!(s(end, "close"), "fin", "{end}");
    assert!(n(end, "packets_fwd") >= 3, "{end}");
    assert!(n(end, "packets_rev") >= 2, "{end}");
    assert!(n(end, "bytes_fwd") > n(end, "packets_fwd") * 40, "{end}");
    assert_eq!(n(end, "tcp_flags") & 0x03, 0x03, "SYN and FIN seen: {end}");
    assert_eq!(n(end, "rule"), 1);
    // The attempts to the prefecture were aggregated into one flow with its packet count
    // (SYN and its retransmissions), ended once they stopped.
    let denied_end = wait_for(
        &daemon,
        &["--asset", "term-01", "--event", "end", "--verdict", "deny"],
        Duration::from_secs(30),
        |r| !r.is_empty(),
    );
    assert!(n(&denied_end[0], "packets_fwd") >= 1, "{denied_end:?}");
    assert_eq!(s(&denied_end[0], "reason"), "no_rule");

    // The table, CSV and the metrics agree that something was recorded.
    let table = daemon
        .ctl(&["history", "query", "--asset", "term-01"])
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("192.0.2.21"), "{table}");
    let csv = daemon
        .ctl(&["history", "query", "--asset", "term-01", "--format", "csv"])
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.lines().next().unwrap_or("").contains("dport"), "{csv}");
    // `--count` says how many records the same query lists.
    let count = daemon
        .ctl(&["history", "query", "--asset", "term-01", "--count"])
        .unwrap();
    let count: usize = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .expect("a number");
    // Records only come, so the count lies between the listings before and after it.
    let after = daemon
        .ctl(&["history", "query", "--asset", "term-01", "--format", "csv"])
        .unwrap();
    let after = String::from_utf8_lossy(&after.stdout).lines().count() - 1;
    let before = csv.lines().count() - 1;
    assert!(
        before > 0 && (before..=after).contains(&count),
        "{before} ≤ {count} ≤ {after}"
    );
    let status = daemon.ctl_json(&["status"]).unwrap();
    assert!(
        status["history"]["records"].as_u64().unwrap() >= 6,
        "{status}"
    );
    assert_eq!(status["history"]["degraded"], false);
}

/// Connects from term-01 to the CS `count` times, one short connection each; returns the
/// source ports with the time each connection was made.
fn burst(topo: &Topology, count: usize, pause: Duration) -> Vec<(u16, Instant)> {
    topo.in_ns(Host::Term1, || {
        let mut made = Vec::new();
        for _ in 0..count {
            if let Ok(c) = TcpStream::connect_timeout(&addr(Host::Cs, 443), Duration::from_secs(1))
            {
                made.push((c.local_addr().unwrap().port(), Instant::now()));
            }
            std::thread::sleep(pause);
        }
        made
    })
}

#[test]
fn r9_kill_9_during_a_burst_loses_nothing_that_was_synced() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let made = std::thread::scope(|scope| {
        let t = scope.spawn(|| burst(&topo, 400, Duration::from_millis(10)));
        std::thread::sleep(Duration::from_millis(3000));
        daemon.kill9().unwrap();
        let killed = Instant::now();
        let made = t.join().unwrap();
        (made, killed)
    });
    let (made, killed) = made;
    assert!(made.len() >= 350, "the burst ran: {}", made.len());
    daemon.spawn(&topo).unwrap();
    // The log is synced at least every second; what was made 1.5 s before the kill was
    // on disk when the daemon died.
    let synced: BTreeSet<u16> = made
        .iter()
        .filter(|(_, at)| *at + Duration::from_millis(1500) < killed)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        synced.len() > 20,
        "some connections were made before the kill"
    );
    let records = query(
        &daemon,
        &["--asset", "term-01", "--event", "start", "--port", "443"],
    );
    let recorded: BTreeSet<u16> = records.iter().map(|r| n(r, "sport") as u16).collect();
    let missing: Vec<_> = synced.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} synced connections missing after kill -9: {missing:?}",
        missing.len()
    );
    // The kernel kept its ring buffer (pinned) while no daemon ran: the connections made
    // after the kill are recorded by the new daemon too.
    let all: BTreeSet<u16> = made.iter().map(|(p, _)| *p).collect();
    let recorded_all = wait_for(
        &daemon,
        &["--asset", "term-01", "--event", "start", "--port", "443"],
        Duration::from_secs(5),
        |r| {
            let got: BTreeSet<u16> = r.iter().map(|x| n(x, "sport") as u16).collect();
            all.iter().filter(|p| !got.contains(p)).count() * 20 < all.len()
        },
    );
    let got: BTreeSet<u16> = recorded_all.iter().map(|x| n(x, "sport") as u16).collect();
    let after_kill = made
        .iter()
        .filter(|(p, at)| *at > killed && got.contains(p))
        .count();
    assert!(
        after_kill > 0,
        "connections made while no daemon ran are recorded from the pinned ring buffer"
    );
}

#[test]
fn r6_policy_whatif_replays_recorded_flows_against_a_candidate() {
    let (topo, daemon) = demo_with(|t| t);
    let _cs443 = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let _cs8000 = TcpServer::start(&topo, Host::Cs, 8000).unwrap();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let since = jiff::Timestamp::now().to_string();
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
    allowed(&topo, Host::Term1, addr(Host::Cs, 8000));
    denied(&topo, Host::Term1, addr(Host::Pref, 443));
    wait_for(
        &daemon,
        &["--asset", "term-01", "--event", "start"],
        Duration::from_secs(10),
        |r| r.len() >= 3,
    );
    // The candidate narrows terminal → CS to 443 only and lets terminals reach the
    // prefecture on 443.
    let demo = std::fs::read_to_string(daemon.config_path()).unwrap();
    let narrowed = demo.replacen(
        "ports = [\"tcp/443\", \"tcp/8000-8100\", \"icmp\"]",
        "ports = [\"tcp/443\", \"icmp\"]",
        1,
    );
    assert_ne!(
        narrowed, demo,
        "the demo's terminal rule is where the test expects"
    );
    let candidate = format!(
        "{narrowed}\n[[allow]]\nname = \"terminal-to-prefecture\"\nfrom = \"role:terminal\"\nto = \"peer:prefecture\"\nports = [\"tcp/443\"]\n"
    );
    let file = daemon.dir().join("candidate.toml");
    std::fs::write(&file, candidate).unwrap();
    let report = daemon
        .ctl_json(&[
            "policy",
            "whatif",
            file.to_str().unwrap(),
            "--since",
            &since,
        ])
        .unwrap();
    let changes = report["changes"].as_array().unwrap();
    let cut = changes
        .iter()
        .find(|c| c["was"] == "allow" && c["would"] == "deny")
        .unwrap_or_else(|| panic!("the 8000 flow would be cut: {report}"));
    assert_eq!(cut["dport"], 8000);
    assert_eq!(cut["src_name"], "asset:term-01");
    assert_eq!(cut["dst_name"], "asset:cs01");
    assert_eq!(cut["reason"], "no_rule");
    let opened = changes
        .iter()
        .find(|c| c["was"] == "deny" && c["would"] == "allow")
        .unwrap_or_else(|| panic!("the prefecture flow would be allowed: {report}"));
    assert_eq!(opened["dst_name"], "peer:prefecture");
    assert!(opened["rule_would"].as_u64().unwrap() > 0);
    assert_eq!(changes.len(), 2, "443 to the CS stays allowed: {report}");
    assert!(report["flows"].as_u64().unwrap() >= 3);
    // The human form names both.
    let text = daemon
        .ctl(&[
            "policy",
            "whatif",
            file.to_str().unwrap(),
            "--since",
            &since,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("allow→deny") && text.contains("deny→allow"),
        "{text}"
    );
}

#[test]
fn r7_segments_past_the_retention_are_removed_and_the_removal_is_in_the_operation_history() {
    use sekisho::history::store::{History, ManualClock};
    use sekisho::history::{Event, Record};
    Topology::remove_stale().unwrap();
    let topo = Topology::build().unwrap();
    let dir = Sekishod::scratch_dir().unwrap();
    let config = dir.join("sekisho.toml");
    std::fs::write(
        &config,
        sekisho_testbed::daemon::demo_config_text(&dir).unwrap(),
    )
    .unwrap();
    // A history whose first hours are eight years old, and a recent hour.
    let root = dir.join("state/history");
    let hour = 3_600_000_000i64;
    let now = jiff::Timestamp::now().as_microsecond();
    let eight_years = 8 * 366 * 24 * hour;
    let six_years = 6 * 365 * 24 * hour;
    {
        let clock = ManualClock::new(now - eight_years);
        let mut h = History::open(&root, clock.clone()).unwrap();
        for start in [now - eight_years, now - six_years] {
            clock.set(start);
            for i in 0..10 {
                h.append(&Record {
                    event: Event::Start,
                    first_us: start + i,
                    last_us: start + i,
                    src: Some("192.0.2.21".parse().unwrap()),
                    dst: Some("192.0.2.10".parse().unwrap()),
                    dport: 443,
                    proto: 6,
                    ..Record::default()
                });
            }
            h.sync().unwrap();
            clock.set(start + 2 * hour);
            assert_eq!(h.seal_due().unwrap().len(), 1);
        }
    }
    let daemon = Sekishod::start(&topo, dir, config).unwrap();
    let audit = (0..50)
        .find_map(|_| {
            let audit = daemon.ctl_json(&["audit", "show"]).unwrap();
            let found = audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "history-retention");
            if found {
                Some(audit)
            } else {
                std::thread::sleep(Duration::from_millis(200));
                None
            }
        })
        .unwrap_or_else(|| panic!("no retention entry:\n{}", daemon.log_text()));
    let removals: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "history-retention")
        .collect();
    assert_eq!(
        removals.len(),
        1,
        "only the eight-year-old segment: {audit}"
    );
    assert_eq!(removals[0]["details"]["records"], 10);
    // The six-year-old records are still there, and the chain verifies with the removal.
    let until = jiff::Timestamp::from_microsecond(now - 5 * 365 * 24 * hour)
        .unwrap()
        .to_string();
    let old = query(&daemon, &["--until", &until, "--event", "start"]);
    assert_eq!(old.len(), 10, "{old:?}");
    let verify = daemon.ctl_json(&["history", "verify"]).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["removed_segments"], 1, "{verify}");
    // One byte changed in the remaining segment: verify fails and names it.
    let segment = walk(&root.join("segments"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("the six-year-old segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let out = daemon.ctl(&["history", "verify"]).unwrap();
    assert!(!out.status.success(), "a changed segment must fail verify");
    let text = String::from_utf8_lossy(&out.stdout);
    let name = segment.strip_prefix(&root).unwrap().display().to_string();
    assert!(
        text.contains("changed segment") && text.contains(&name),
        "verify names {name}: {text}"
    );
    drop(daemon);
    drop(topo);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn r6_ended_flows_are_exported_in_ipfix_to_the_configured_collector() {
    let (topo, daemon) = demo_with(|t| format!("{t}\n[history]\nipfix = \"127.0.0.1:47390\"\n"));
    // The collector: a UDP socket on the gateway's loopback, where the daemon runs.
    let collector = topo.in_ns(Host::Gw, || {
        std::net::UdpSocket::bind("127.0.0.1:47390").expect("collector port")
    });
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
    // The flow ends (FIN, then quiet) and is exported with the next flush.
    let term = [192u8, 0, 2, 21];
    let cs = [192u8, 0, 2, 10];
    let start = Instant::now();
    let mut messages = 0;
    loop {
        let mut buf = [0u8; 2048];
        if let Ok(n) = collector.recv(&mut buf) {
            let msg = &buf[..n];
            messages += 1;
            assert_eq!(u16::from_be_bytes([msg[0], msg[1]]), 10, "IPFIX version");
            assert_eq!(
                usize::from(u16::from_be_bytes([msg[2], msg[3]])),
                n,
                "message length"
            );
            let has = |needle: &[u8]| msg.windows(needle.len()).any(|w| w == needle);
            // A data record carrying the flow's addresses (templates carry none).
            if has(&term) && has(&cs) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no IPFIX data record for the flow ({messages} messages):\n{}",
            daemon.log_text()
        );
    }
    let status = daemon.ctl_json(&["status"]).unwrap();
    assert!(
        status["history"]["ipfix_records"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[test]
fn r9_a_cut_off_is_reported_only_with_the_traffic_before_it_on_disk() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    // A connection, then at once an isolation; the daemon dies right after reporting it.
    let port = topo.in_ns(Host::Term2, || {
        let c = TcpStream::connect_timeout(&addr(Host::Cs, 443), Duration::from_secs(1))
            .expect("connect");
        c.local_addr().unwrap().port()
    });
    let out = daemon
        .ctl(&[
            "isolate",
            "asset:term-01",
            "--reason",
            "訓練",
            "--emergency",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.kill9().unwrap();
    // Read straight from disk, without a daemon: the WAL as the killed daemon left it.
    let out = std::process::Command::new(sekisho_testbed::daemon::bin("sekishoctl"))
        .args([
            "history", "query", "--format", "jsonl", "--asset", "term-02", "--dir",
        ])
        .arg(daemon.dir().join("state/history"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| n(&r, "sport") == u64::from(port)),
        "the connection made just before the cut-off is on disk: {text}"
    );
}
