//! The demo topology in network namespaces with the real `sekishod` enforcing
//! `configs/demo.toml` on the gateway: real TCP, UDP and ICMP between the hosts, over IPv4
//! and IPv6. Every denied case has a listening server behind it, so a timeout can only
//! mean the gateway dropped the packets.

use std::net::SocketAddr;

use sekisho_testbed::{Host, Sekishod, TcpServer, Topology, UdpServer, ping, udp_echo};

use sekisho_testbed::checks::{ALLOW, DENY, allowed, denied};

fn addr(host: Host, v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(host.addr(v6), port)
}

fn setup(mode: &str) -> (Topology, Sekishod) {
    Topology::remove_stale().expect("stale topologies removed");
    let topo = Topology::build().expect("topology");
    let mode = mode.to_owned();
    let daemon = Sekishod::start_demo(&topo, |t| {
        t.replace("mode = \"enforce\"", &format!("mode = \"{mode}\""))
    })
    .expect("sekishod starts");
    (topo, daemon)
}

fn servers(topo: &Topology, host: Host, tcp: &[u16]) -> Vec<TcpServer> {
    tcp.iter()
        .map(|p| TcpServer::start(topo, host, *p).expect("tcp server"))
        .collect()
}

fn counters(daemon: &Sekishod) -> serde_json::Value {
    daemon.ctl_json(&["status"]).expect("status")["counters"].clone()
}

#[test]
fn r2_terminals_reach_the_cs_and_nothing_beyond() {
    let (topo, _d) = setup("enforce");
    let _cs = servers(&topo, Host::Cs, &[443, 8000, 22]);
    let _pref = servers(&topo, Host::Pref, &[443]);
    let _jlis = servers(&topo, Host::Jlis, &[443]);
    for v6 in [false, true] {
        for term in [Host::Term1, Host::Term2] {
            allowed(&topo, term, addr(Host::Cs, v6, 443));
            allowed(&topo, term, addr(Host::Cs, v6, 8000));
            denied(&topo, term, addr(Host::Cs, v6, 22));
            denied(&topo, term, addr(Host::Pref, v6, 443));
            denied(&topo, term, addr(Host::Jlis, v6, 443));
        }
        assert!(ping(&topo, Host::Term1, Host::Cs.addr(v6), ALLOW));
        assert!(!ping(&topo, Host::Term1, Host::Pref.addr(v6), DENY));
    }
}

#[test]
fn r1_the_cs_reaches_only_the_peers_on_their_ports() {
    let (topo, _d) = setup("enforce");
    let _pref = servers(&topo, Host::Pref, &[443, 8050, 22]);
    let _jlis = servers(&topo, Host::Jlis, &[443, 8050]);
    let _inet = servers(&topo, Host::Internet, &[443, 80]);
    let _ntp = UdpServer::start(&topo, Host::Jlis, 123).expect("udp server");
    let _ntp_pref = UdpServer::start(&topo, Host::Pref, 123).expect("udp server");
    for v6 in [false, true] {
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 443));
        allowed(&topo, Host::Cs, addr(Host::Pref, v6, 8050));
        denied(&topo, Host::Cs, addr(Host::Pref, v6, 22));
        allowed(&topo, Host::Cs, addr(Host::Jlis, v6, 443));
        denied(&topo, Host::Cs, addr(Host::Jlis, v6, 8050));
        assert!(udp_echo(&topo, Host::Cs, addr(Host::Jlis, v6, 123), ALLOW));
        assert!(!udp_echo(&topo, Host::Cs, addr(Host::Pref, v6, 123), DENY));
        // R1: nothing outside 住基ネット.
        denied(&topo, Host::Cs, addr(Host::Internet, v6, 443));
        denied(&topo, Host::Cs, addr(Host::Internet, v6, 80));
        assert!(ping(&topo, Host::Cs, Host::Pref.addr(v6), ALLOW));
        assert!(!ping(&topo, Host::Cs, Host::Internet.addr(v6), DENY));
    }
}

#[test]
fn unsolicited_inbound_is_denied_and_peer_rules_are_one_way() {
    let (topo, _d) = setup("enforce");
    let _cs = servers(&topo, Host::Cs, &[443, 8443]);
    let _term = servers(&topo, Host::Term1, &[443]);
    for v6 in [false, true] {
        denied(&topo, Host::Internet, addr(Host::Cs, v6, 443));
        denied(&topo, Host::Internet, addr(Host::Cs, v6, 8443));
        // The prefecture may open its own connection to the CS (a rule says so), J-LIS
        // may not, and no peer reaches a terminal.
        allowed(&topo, Host::Pref, addr(Host::Cs, v6, 8443));
        denied(&topo, Host::Jlis, addr(Host::Cs, v6, 8443));
        denied(&topo, Host::Pref, addr(Host::Term1, v6, 443));
        assert!(!ping(&topo, Host::Internet, Host::Cs.addr(v6), DENY));
    }
}

#[test]
fn r5_an_unlisted_host_on_the_lan_is_denied() {
    let (topo, daemon) = setup("enforce");
    let _cs = servers(&topo, Host::Cs, &[443]);
    let _pref = servers(&topo, Host::Pref, &[443]);
    for v6 in [false, true] {
        denied(&topo, Host::Rogue, addr(Host::Cs, v6, 443));
        denied(&topo, Host::Rogue, addr(Host::Pref, v6, 443));
        assert!(!ping(&topo, Host::Rogue, Host::Cs.addr(v6), DENY));
    }
    let c = counters(&daemon);
    assert!(
        c["by_reason"]["unknown_source"].as_u64().unwrap() > 0,
        "{c}"
    );
}

#[test]
fn a_host_using_the_cs_address_with_another_mac_is_denied() {
    let (topo, _d) = setup("enforce");
    let _pref = servers(&topo, Host::Pref, &[443]);
    allowed(&topo, Host::Cs, addr(Host::Pref, false, 443));
    // Same address, another card: the register binds cs01 to its MAC.
    topo.exec_ok(
        Host::Cs,
        &["ip", "link", "set", "eth0", "address", "02:00:00:00:00:ee"],
    )
    .unwrap();
    topo.exec_ok(Host::Cs, &["ip", "neigh", "flush", "all"])
        .unwrap();
    denied(&topo, Host::Cs, addr(Host::Pref, false, 443));
}

#[test]
fn monitor_mode_passes_everything_and_counts_would_be_drops() {
    let (topo, daemon) = setup("monitor");
    let _inet = servers(&topo, Host::Internet, &[443]);
    let _pref = servers(&topo, Host::Pref, &[443]);
    allowed(&topo, Host::Cs, addr(Host::Internet, false, 443));
    allowed(&topo, Host::Term1, addr(Host::Pref, true, 443));
    allowed(&topo, Host::Rogue, addr(Host::Pref, false, 443));
    let c = counters(&daemon);
    let monitor = c["by_direction"][0][2]["packets"].as_u64().unwrap();
    let deny = c["by_direction"][0][1]["packets"].as_u64().unwrap();
    assert!(monitor >= 3, "would-be drops counted: {c}");
    assert_eq!(deny, 0, "nothing dropped in monitor mode: {c}");
}

#[test]
fn status_reports_mode_interfaces_generation_policy_and_counters() {
    let (topo, daemon) = setup("enforce");
    let _pref = servers(&topo, Host::Pref, &[443]);
    allowed(&topo, Host::Cs, addr(Host::Pref, false, 443));
    denied(&topo, Host::Cs, addr(Host::Internet, false, 443));
    let s = daemon.ctl_json(&["status"]).unwrap();
    assert_eq!(s["mode"], "enforce");
    assert_eq!(s["generation"], 1);
    assert_eq!(s["assets"], 3);
    assert_eq!(s["roles"], 2);
    assert_eq!(s["peers"], 2);
    assert_eq!(s["rules"], 4);
    let ifs = s["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    assert!(ifs.iter().all(|i| i["attached"] == true), "{s}");
    assert!(
        s["counters"]["by_direction"][0][0]["packets"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        s["counters"]["by_reason"]["unknown_destination"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The table form carries the same facts for people.
    let out = daemon.ctl(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "enforce",
        "lan-cs",
        "lan-term",
        "wan0",
        "attached",
        "unknown_destination",
    ] {
        assert!(
            text.contains(needle),
            "status table lacks {needle}:\n{text}"
        );
    }
    // SEKISHO_SOCKET names the socket as well as --socket does.
    let out = std::process::Command::new(sekisho_testbed::daemon::bin("sekishoctl"))
        .arg("status")
        .env("SEKISHO_SOCKET", daemon.socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let (_topo, mut daemon) = setup("enforce");
    let status = daemon.stop().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_bad_reload_changes_nothing_and_a_good_one_bumps_the_generation() {
    let (topo, daemon) = setup("enforce");
    let _pref = servers(&topo, Host::Pref, &[443]);
    let good = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        good.replace("\"tcp/443\"", "\"tcp/4430000\""),
    )
    .unwrap();
    let out = daemon.ctl(&["reload"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sekisho.toml:") && err.contains("out of range"),
        "{err}"
    );
    assert_eq!(daemon.ctl_json(&["status"]).unwrap()["generation"], 1);
    allowed(&topo, Host::Cs, addr(Host::Pref, false, 443));
    std::fs::write(daemon.config_path(), &good).unwrap();
    assert!(daemon.ctl(&["reload"]).unwrap().status.success());
    assert_eq!(daemon.ctl_json(&["status"]).unwrap()["generation"], 2);
    allowed(&topo, Host::Cs, addr(Host::Pref, false, 443));
}

#[test]
fn a_bad_configuration_stops_sekishod_before_it_attaches_anything() {
    let topo = Topology::build().unwrap();
    let dir = Sekishod::scratch_dir().unwrap();
    let config = dir.join("bad.toml");
    let text = sekisho_testbed::daemon::demo_config_text(&dir).unwrap();
    std::fs::write(&config, text.replace("peer:jlis", "peer:jlls")).unwrap();
    let err = Sekishod::start(&topo, dir.clone(), config)
        .err()
        .expect("must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bad.toml:") && msg.contains("unknown peer \"jlls\""),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
