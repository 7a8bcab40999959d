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
