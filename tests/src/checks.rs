//! The checks the namespace tests share: a demo topology with the real daemon, and
//! "this connection is allowed / dropped" with real TCP.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{Host, Probe, Sekishod, Topology, tcp_echo, tcp_probe};

/// How long an allowed connection may take.
pub const ALLOW: Duration = Duration::from_secs(2);
/// How long a dropped connection attempt is given before it counts as dropped.
pub const DENY: Duration = Duration::from_millis(400);

/// `host`'s IPv4 address with `port`.
pub fn addr(host: Host, port: u16) -> SocketAddr {
    SocketAddr::new(host.addr(false), port)
}

/// A fresh topology with `sekishod` running the demo configuration, edited by `edit`.
pub fn demo_with(edit: impl FnOnce(String) -> String) -> (Topology, Sekishod) {
    Topology::remove_stale().expect("stale topologies removed");
    let topo = Topology::build().expect("topology");
    let daemon = Sekishod::start_demo(&topo, edit).expect("sekishod starts");
    (topo, daemon)
}

/// Panics unless a TCP round trip from `from` to `to` succeeds.
#[track_caller]
pub fn allowed(topo: &Topology, from: Host, to: SocketAddr) {
    if let Err(e) = tcp_echo(topo, from, to, ALLOW) {
        panic!("{from:?} → {to} should be allowed: {e:#}");
    }
}

/// Panics unless a TCP connection attempt from `from` to `to` goes unanswered (dropped,
/// not refused: the tests put a listening server behind every denied case).
#[track_caller]
pub fn denied(topo: &Topology, from: Host, to: SocketAddr) {
    assert_eq!(
        tcp_probe(topo, from, to, DENY),
        Probe::TimedOut,
        "{from:?} → {to} should be dropped"
    );
}
