//! The test bed tested on its own, without any firewall: the gateway only routes, so every
//! host must reach every other one, and teardown must leave nothing behind.
//!
//! Needs root; run with `cargo test -p sekisho-testbed -- --test-threads=1`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{list_with_prefix, netns_path};
use crate::plan::*;
use crate::*;

const TIMEOUT: Duration = Duration::from_millis(500);

fn build() -> Topology {
    assert!(
        nix::unistd::geteuid().is_root(),
        "sekisho-testbed's tests need root (network namespaces); run them as root with \
         --test-threads=1"
    );
    let started = Instant::now();
    let topo = Topology::build().unwrap_or_else(|e| panic!("building the topology: {e:#}"));
    eprintln!(
        "topology {} built in {:?}",
        topo.prefix(),
        started.elapsed()
    );
    topo
}

#[test]
fn every_host_reaches_every_other_host_through_a_plain_router() {
    let topo = build();
    let port = 7007;
    let servers: Vec<(Host, TcpServer, UdpServer)> = Host::ALL
        .iter()
        .map(|&h| {
            let tcp = TcpServer::start(&topo, h, port).expect("tcp server");
            let udp = UdpServer::start(&topo, h, port).expect("udp server");
            (h, tcp, udp)
        })
        .collect();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut checks = 0;
    for from in Host::ALL {
        for to in Host::ALL.into_iter().filter(|&to| to != from) {
            for v6 in [false, true] {
                let addr = to.addr_from(from, v6);
                let dest = SocketAddr::new(addr, port);
                checks += 3;
                if let Err(e) = tcp_echo(&topo, from, dest, TIMEOUT) {
                    failures.push(format!("{e:#}"));
                }
                if !udp_echo(&topo, from, dest, TIMEOUT) {
                    failures.push(format!("udp echo {from} -> {dest}"));
                }
                if !ping(&topo, from, addr, TIMEOUT) {
                    failures.push(format!("ping {from} -> {addr}"));
                }
            }
        }
    }
    eprintln!("{checks} checks in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {checks} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every host was reached by each of the 7 others over both families.
    for (host, tcp, udp) in &servers {
        assert_eq!(tcp.accepted(), 14, "tcp connections accepted by {host}");
        assert!(
            udp.received() >= 14,
            "udp datagrams received by {host}: {}",
            udp.received()
        );
    }
}

#[test]
fn cross_segment_traffic_goes_through_the_gateway() {
    let topo = build();
    let _server = TcpServer::start(&topo, Host::Pref, 7007).expect("tcp server");
    let dest = SocketAddr::new(Host::Pref.v4().into(), 7007);
    assert_eq!(tcp_probe(&topo, Host::Cs, dest, TIMEOUT), Probe::Connected);

    // A router that stops forwarding cuts the segments apart: there is no other path.
    topo.exec_ok(Host::Gw, &["ip", "link", "set", GW_CS_IF, "down"])
        .expect("link down");
    assert_ne!(tcp_probe(&topo, Host::Cs, dest, TIMEOUT), Probe::Connected);
    assert!(!ping(&topo, Host::Cs, Host::Pref.v6().into(), TIMEOUT));
    // The switched segments still work on their own.
    assert!(ping(&topo, Host::Term1, Host::Rogue.v6().into(), TIMEOUT));
}

#[test]
fn probes_tell_refused_unreachable_and_timed_out_apart() {
    let topo = build();
    // Nothing listens on pref:9.
    let closed = SocketAddr::new(Host::Pref.v4().into(), 9);
    assert_eq!(tcp_probe(&topo, Host::Cs, closed, TIMEOUT), Probe::Refused);
    let closed6 = SocketAddr::new(Host::Pref.v6().into(), 9);
    assert_eq!(
        tcp_probe(&topo, Host::Term2, closed6, TIMEOUT),
        Probe::Refused
    );
    // The gateway has no route beyond the plan: it answers "network unreachable".
    let outside = SocketAddr::new(Ipv4Addr::new(198, 51, 100, 1).into(), 80);
    assert_eq!(
        tcp_probe(&topo, Host::Cs, outside, TIMEOUT),
        Probe::Unreachable
    );
    // No host owns 203.0.113.50: ARP goes unanswered, the SYN is never delivered.
    let nobody = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 50).into(), 80);
    let started = Instant::now();
    assert_eq!(tcp_probe(&topo, Host::Cs, nobody, TIMEOUT), Probe::TimedOut);
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_millis(200),
        "probe overran"
    );
    assert!(!udp_echo(&topo, Host::Cs, nobody, TIMEOUT));
}

#[test]
fn nothing_routes_to_the_host_or_beyond() {
    let topo = build();
    for host in Host::ALL {
        let routes = topo
            .exec_ok(host, &["ip", "-4", "route", "show"])
            .expect("ip route");
        for line in routes.lines() {
            assert!(
                line.contains("192.0.2.") || line.contains("203.0.113."),
                "{host} has a route outside the plan: {line}"
            );
        }
    }
    let gw_default = topo
        .exec_ok(Host::Gw, &["ip", "route", "show", "default"])
        .expect("route");
    assert!(
        gw_default.trim().is_empty(),
        "gw has a default route: {gw_default}"
    );
    let outside: IpAddr = Ipv4Addr::new(192, 0, 2, 200).into();
    assert!(!ping(&topo, Host::Gw, outside, Duration::from_millis(300)));
}

#[test]
fn stream_check_counts_echoes_and_notices_a_dead_server() {
    let topo = build();
    let server = TcpServer::start(&topo, Host::Jlis, 0).expect("tcp server");
    let dest = SocketAddr::new(Host::Jlis.v6().into(), server.port());

    let check = StreamCheck::start(&topo, Host::Term1, dest).expect("stream");
    thread::sleep(Duration::from_millis(300));
    let stats = check.stop();
    assert!(stats.is_clean(), "{stats:?}");
    assert!(stats.echoed >= 20, "{stats:?}");
    assert!(stats.max_gap < Duration::from_millis(100), "{stats:?}");

    let check = StreamCheck::start(&topo, Host::Cs, dest).expect("stream");
    thread::sleep(Duration::from_millis(100));
    drop(server);
    thread::sleep(Duration::from_millis(100));
    let stats = check.stop();
    assert!(stats.echoed > 0, "{stats:?}");
    assert!(stats.errors > 0 && stats.first_error.is_some(), "{stats:?}");
}

#[test]
fn exec_and_spawn_run_in_the_hosts_namespace() {
    let topo = build();
    let links = topo
        .exec_ok(Host::Cs, &["ip", "link", "show", HOST_IF])
        .expect("ip link");
    assert!(links.contains(CS_MAC_STR), "{links}");
    let addrs = topo
        .exec_ok(Host::Gw, &["ip", "-br", "addr"])
        .expect("ip addr");
    for ifname in [GW_CS_IF, GW_TERM_IF, GW_WAN_IF] {
        assert!(addrs.contains(ifname), "{addrs}");
    }
    assert!(
        !topo
            .exec(Host::Gw, &["false"])
            .expect("false")
            .status
            .success()
    );

    let mut child = topo
        .spawn(
            Host::Rogue,
            Command::new("sleep").arg("10").stdout(Stdio::null()),
        )
        .expect("spawn");
    let netns_inode = |path: String| std::fs::metadata(path).expect("stat").ino();
    let child_ns = netns_inode(format!("/proc/{}/ns/net", child.id()));
    let rogue_ns = netns_inode(netns_path(topo.ns(Host::Rogue)).display().to_string());
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(child_ns, rogue_ns);

    // /proc/thread-self/net (not /proc/net, which follows the main thread) and sysctls
    // follow in_netns.
    let v6 = topo.in_ns(Host::Pref, || {
        std::fs::read_to_string("/proc/thread-self/net/if_inet6")
    });
    assert!(
        v6.expect("if_inet6")
            .contains("20010db800ff0000000000000000000a")
    );
    let forwarding = topo.in_ns(Host::Gw, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
    });
    assert_eq!(forwarding.expect("ip_forward").trim(), "1");
}

#[test]
fn drop_removes_every_namespace_and_prefixes_never_clash() {
    let first = build();
    let second = build();
    assert_ne!(first.prefix(), second.prefix());
    let prefixes = [first.prefix().to_owned(), second.prefix().to_owned()];
    for prefix in &prefixes {
        assert_eq!(
            list_with_prefix(prefix).expect("list").len(),
            10,
            "{prefix}"
        );
    }
    assert!(ping(&second, Host::Cs, Host::Internet.v4().into(), TIMEOUT));
    drop(first);
    drop(second);
    for prefix in &prefixes {
        assert_eq!(
            list_with_prefix(prefix).expect("list"),
            Vec::<String>::new(),
            "{prefix}"
        );
    }
}

#[test]
fn kept_topology_survives_until_removed_by_prefix() {
    let kept = build().keep();
    assert_eq!(kept.namespaces.len(), 10);
    assert_eq!(list_with_prefix(&kept.prefix).expect("list"), {
        let mut names = kept.namespaces.clone();
        names.sort();
        names
    });
    let removed = Topology::remove_by_prefix(&kept.prefix).expect("remove");
    assert_eq!(removed.len(), 10);
    assert!(list_with_prefix(&kept.prefix).expect("list").is_empty());
}
