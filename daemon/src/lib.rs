//! sekisho (関所): the user-space side of the 住基ネット segregation appliance.
//!
//! `config` reads and validates the one configuration file, `policy` compiles it into the
//! kernel's lookup tables (and evaluates them the way the kernel does), `datapath` loads
//! and attaches the eBPF programs, `control` is the socket between `sekishod` and
//! `sekishoctl`, `server` is the running daemon.

pub mod archive;
pub mod audit;
pub mod authz;
pub mod config;
pub mod control;
pub mod datapath;
pub mod diff;
pub mod dispatch;
pub mod history;
pub mod isolation;
pub mod maintenance;
pub mod metrics;
pub mod nft;
pub mod notice;
pub mod notify;
pub mod paths;
pub mod policy;
pub mod server;
pub mod store;
pub mod systemd;
#[cfg(test)]
pub(crate) mod testutil;
pub mod triggers;
