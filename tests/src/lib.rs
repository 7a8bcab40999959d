//! Network-namespace test bed for sekisho's privileged tests and `cargo xtask demo`.
//!
//! [`Topology::build`] creates the demo network of [`plan`] — gateway, Communication Server,
//! terminals, a rogue host, prefecture, J-LIS and an "Internet" host, each in its own network
//! namespace, joined by veth pairs and two bridge "switches" — and deletes it again on
//! `Drop`. The traffic helpers ([`tcp_echo`], [`udp_echo`], [`ping`], [`tcp_probe`],
//! [`StreamCheck`], the echo servers) send real packets between those hosts from Rust code,
//! entering namespaces with [`in_netns`] rather than through external tools.
//!
//! Invariants: everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), touches only
//! namespaces it created itself, and is bounded in time; tests that use it share the
//! kernel, so run them with `--test-threads=1`.

pub mod checks;
pub mod daemon;
pub mod netns;
pub mod plan;
pub mod servers;
mod topology;
mod traffic;

pub use daemon::Sekishod;
pub use netns::{in_netns, try_in_netns};
pub use topology::{Host, Kept, Segment, Topology};
pub use traffic::{
    Probe, StreamCheck, StreamStats, TcpServer, UdpServer, ping, tcp_echo, tcp_probe, udp_echo,
};

#[cfg(test)]
mod selftest;
