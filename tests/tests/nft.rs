//! The nftables layer alone (no eBPF, no daemon): `sekisho::nft::apply` of
//! `configs/demo.toml` inside the gateway namespace, then real TCP, UDP and ICMP between the
//! hosts, IPv4 and IPv6. Every denied case has a listening server behind it, so a timeout
//! can only mean the gateway dropped the packets. Also: drift shows in snapshots, reapplying
//! is an atomic replace, and a reload that removes a rule cuts that rule's established
//! connections while the others survive.
//!
//! Run as root with `cargo test -p sekisho-testbed --test nft -- --test-threads=1`.

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use sekisho::config::Config;
use sekisho::nft::{self, Snapshot};
use sekisho_testbed::{
    Host, Probe, StreamCheck, TcpServer, Topology, UdpServer, ping, tcp_echo, tcp_probe, udp_echo,
};

const ALLOW: Duration = Duration::from_secs(2);
const DENY: Duration = Duration::from_millis(700);
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");

/// In demo.toml, the ports of the cs → prefecture rule.
const CS_TO_PREF: &str =
    "to = \"peer:prefecture\"\nports = [\"tcp/443\", \"tcp/8000-8100\", \"icmp\"]";

fn demo_text() -> String {
    std::fs::read_to_string(DEMO).expect("demo.toml is readable")
}

fn config(text: &str) -> Config {
    Config::parse_str(text, Path::new(DEMO)).expect("valid configuration")
}

fn addr(host: Host, v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(host.addr(v6), port)
}

fn apply(topo: &Topology, config: &Config) -> Snapshot {
    topo.in_ns(Host::Gw, || nft::apply(config))
        .unwrap_or_else(|e| panic!("nft apply: {e} ({:?})", std::error::Error::source(&e)))
}

fn snapshot(topo: &Topology) -> Option<Snapshot> {
    topo.in_ns(Host::Gw, nft::snapshot)
        .unwrap_or_else(|e| panic!("nft snapshot: {e}"))
}

/// A fresh topology with only the nftables layer of `config` on the gateway.
fn setup(config: &Config) -> Topology {
    Topology::remove_stale().expect("stale topologies removed");
    let topo = Topology::build().expect("topology");
    apply(&topo, config);
    topo
}

fn servers(topo: &Topology, host: Host, tcp: &[u16]) -> Vec<TcpServer> {
    tcp.iter()
        .map(|p| TcpServer::start(topo, host, *p).expect("tcp server"))
        .collect()
}

#[track_caller]
fn allowed(topo: &Topology, from: Host, to: SocketAddr) {
    if let Err(e) = tcp_echo(topo, from, to, ALLOW) {
        panic!("{from} → {to} should be allowed: {e:#}");
    }
}

/// Probes every case at once (each ≤ DENY) and reports all that were not dropped.
fn all_denied(topo: &Topology, cases: &[(Host, SocketAddr)]) {
    let results: Vec<(Host, SocketAddr, Probe)> = thread::scope(|scope| {
        let probes: Vec<_> = cases
            .iter()
            .map(|&(from, to)| scope.spawn(move || (from, to, tcp_probe(topo, from, to, DENY))))
            .collect();
        probes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let passed: Vec<String> = results
        .iter()
        .filter(|(_, _, probe)| *probe != Probe::TimedOut)
        .map(|(from, to, probe)| format!("{from} → {to}: {probe}"))
        .collect();
    assert!(
        passed.is_empty(),
        "should be dropped: {}",
        passed.join("; ")
    );
}

#[test]
fn demo_policy_holds_with_nftables_alone_v4_and_v6() {
    let topo = setup(&config(&demo_text()));
    let listing = topo
        .exec_ok(Host::Gw, &["nft", "list", "table", "inet", "sekisho"])
        .expect("nft list");
    println!("{listing}");

    let _cs = servers(&topo, Host::Cs, &[443, 22, 8443]);
    let _pref = servers(&topo, Host::Pref, &[443]);
    let _inet = servers(&topo, Host::Internet, &[443]);
    let _ntp = UdpServer::start(&topo, Host::Jlis, 123).expect("udp server");
    let _not_ntp = UdpServer::start(&topo, Host::Jlis, 124).expect("udp server");
    let _gw = servers(&topo, Host::Gw, &[2222]);

    for v6 in [false, true] {
        allowed(&topo, Host::Term1, addr(Host::Cs, v6, 443));
        allowed(&topo, Host::Term2, addr(Host::Cs, v6, 443));
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 443));
        allowed(&topo, Host::Pref, addr(Host::Cs, v6, 8443));
        assert!(
            udp_echo(&topo, Host::Cs, addr(Host::Jlis, v6, 123), ALLOW),
            "cs → jlis udp/123 (v6: {v6}) should be allowed"
        );
        assert!(
            ping(&topo, Host::Term1, Host::Cs.addr(v6), ALLOW),
            "term1 → cs icmp (v6: {v6}) should be allowed"
        );

        all_denied(
            &topo,
            &[
                (Host::Term1, addr(Host::Cs, v6, 22)),
                (Host::Term1, addr(Host::Pref, v6, 443)),
                (Host::Cs, addr(Host::Internet, v6, 443)),
                (Host::Internet, addr(Host::Cs, v6, 443)),
                (Host::Internet, addr(Host::Cs, v6, 8443)),
                (Host::Jlis, addr(Host::Cs, v6, 8443)),
                (Host::Rogue, addr(Host::Cs, v6, 443)),
                // The gateway's own input is closed too.
                (
                    Host::Cs,
                    SocketAddr::new(Host::Gw.addr_from(Host::Cs, v6), 2222),
                ),
                (
                    Host::Pref,
                    SocketAddr::new(Host::Gw.addr_from(Host::Pref, v6), 2222),
                ),
            ],
        );
        assert!(
            !udp_echo(&topo, Host::Cs, addr(Host::Jlis, v6, 124), DENY),
            "cs → jlis udp/124 (v6: {v6}) should be dropped"
        );
        assert!(
            !ping(&topo, Host::Term1, Host::Pref.addr(v6), DENY),
            "term1 → pref icmp (v6: {v6}) should be dropped"
        );
    }
}

#[test]
fn cs_with_a_changed_mac_is_denied_and_allowed_again_with_its_own() {
    let topo = setup(&config(&demo_text()));
    let _pref = servers(&topo, Host::Pref, &[443]);
    let set_mac = |mac: &str| {
        topo.exec_ok(Host::Cs, &["ip", "link", "set", "eth0", "address", mac])
            .expect("ip link set address");
        for host in [Host::Cs, Host::Gw] {
            topo.exec_ok(host, &["ip", "neigh", "flush", "all"])
                .expect("ip neigh flush");
        }
    };

    set_mac("02:00:00:00:00:ee");
    all_denied(
        &topo,
        &[
            (Host::Cs, addr(Host::Pref, false, 443)),
            (Host::Cs, addr(Host::Pref, true, 443)),
        ],
    );

    // The same host with its registered MAC passes: the MAC alone made the difference.
    set_mac(sekisho_testbed::plan::CS_MAC_STR);
    for v6 in [false, true] {
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 443));
    }
}

#[test]
fn snapshots_show_drift_and_absence() {
    let demo = config(&demo_text());
    let topo = setup(&demo);
    let applied = apply(&topo, &demo);
    let first = snapshot(&topo).expect("table present");
    assert_eq!(first, applied, "apply returns the table as listed");
    assert_eq!(snapshot(&topo), Some(first.clone()), "unchanged table");

    topo.exec_ok(
        Host::Gw,
        &["nft", "add", "rule", "inet", "sekisho", "forward", "accept"],
    )
    .expect("nft add rule");
    let drifted = snapshot(&topo).expect("table present");
    assert_ne!(drifted, first, "an added rule shows");

    // Reapplying puts back exactly what was there.
    assert_eq!(apply(&topo, &demo), first);

    topo.exec_ok(Host::Gw, &["nft", "delete", "table", "inet", "sekisho"])
        .expect("nft delete table");
    assert_eq!(snapshot(&topo), None);
    assert!(!topo.in_ns(Host::Gw, nft::remove).expect("remove"));

    apply(&topo, &demo);
    assert!(topo.in_ns(Host::Gw, nft::remove).expect("remove"));
    assert_eq!(snapshot(&topo), None);
    // Without the table, forwarding is open again (this layer was the only one).
    let _pref = servers(&topo, Host::Pref, &[443]);
    allowed(&topo, Host::Term1, addr(Host::Pref, false, 443));
}

#[test]
fn applying_twice_is_an_atomic_replace() {
    let demo = config(&demo_text());
    let topo = setup(&demo);
    let _pref = servers(&topo, Host::Pref, &[443, 8050]);
    let stream = StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, false, 8050))
        .expect("stream cs → pref:8050");
    let a = apply(&topo, &demo);
    let b = apply(&topo, &demo);
    assert_eq!(a, b, "the same configuration gives the same table");
    let rules = |s: &Snapshot| s.as_str().matches("\"rule\"").count();
    assert_eq!(
        rules(&a),
        rules(&b),
        "no rule duplicated by the second apply"
    );
    let monitor = config(&demo_text().replace("mode = \"enforce\"", "mode = \"monitor\""));
    let m = apply(&topo, &monitor);
    assert_ne!(m, a, "monitor mode changes the forward policy");
    assert!(m.as_str().contains("\"policy\":\"accept\""), "{m}");
    apply(&topo, &demo);
    for _ in 0..20 {
        apply(&topo, &demo);
    }
    thread::sleep(Duration::from_millis(200));
    let stats = stream.stop();
    assert!(
        stats.is_clean() && stats.echoed > 0,
        "an allowed stream survives repeated replaces: {stats:?}"
    );
    for v6 in [false, true] {
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 443));
        all_denied(&topo, &[(Host::Term1, addr(Host::Pref, v6, 443))]);
    }
}

#[test]
fn reload_removing_a_rule_cuts_its_established_connections_only() {
    let text = demo_text();
    assert!(
        text.contains(CS_TO_PREF),
        "demo.toml changed: update CS_TO_PREF"
    );
    let topo = setup(&config(&text));
    let _pref = servers(&topo, Host::Pref, &[443, 8050]);

    let start = |port: u16, v6: bool| {
        StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, v6, port))
            .unwrap_or_else(|e| panic!("stream cs → pref:{port} (v6: {v6}): {e:#}"))
    };
    let cut = [start(443, false), start(443, true)];
    let kept = [start(8050, false), start(8050, true)];
    thread::sleep(Duration::from_millis(300));
    for s in cut.iter().chain(&kept) {
        let stats = s.stats();
        assert!(stats.echoed > 0 && stats.errors == 0, "flowing: {stats:?}");
    }

    let without_443 = text.replace(
        CS_TO_PREF,
        "to = \"peer:prefecture\"\nports = [\"tcp/8000-8100\", \"icmp\"]",
    );
    apply(&topo, &config(&without_443));
    thread::sleep(Duration::from_millis(1200));

    for s in cut {
        let stats = s.stop();
        assert!(
            stats.errors > 0 || stats.since_last_echo >= Duration::from_millis(800),
            "the connection on the removed port is cut: {stats:?}"
        );
    }
    for s in kept {
        let stats = s.stop();
        assert!(
            stats.is_clean() && stats.since_last_echo < Duration::from_millis(500),
            "the connection on a remaining port survives: {stats:?}"
        );
    }
    // And new connections follow the new policy.
    for v6 in [false, true] {
        all_denied(&topo, &[(Host::Cs, addr(Host::Pref, v6, 443))]);
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 8050));
    }
}

#[test]
fn metrics_on_a_lan_address_are_reachable_and_nothing_else_on_the_gateway() {
    let text = demo_text().replace(
        "metrics_listen = \"127.0.0.1:9807\"",
        "metrics_listen = \"192.0.2.1:9807\"",
    );
    let topo = setup(&config(&text));
    let _gw = servers(&topo, Host::Gw, &[9807, 2222]);
    let gw_cs = SocketAddr::new(Host::Gw.addr_from(Host::Cs, false), 9807);
    allowed(&topo, Host::Cs, gw_cs);
    all_denied(
        &topo,
        &[
            (Host::Cs, SocketAddr::new(gw_cs.ip(), 2222)),
            (
                Host::Cs,
                SocketAddr::new(Host::Gw.addr_from(Host::Cs, true), 9807),
            ),
            (
                Host::Pref,
                SocketAddr::new(Host::Gw.addr_from(Host::Pref, false), 9807),
            ),
        ],
    );
}
