//! The demo topology of [`plan`](crate::plan), built from network namespaces, veth pairs
//! and two bridges, torn down again on `Drop`.
//!
//! Invariants: every namespace a [`Topology`] creates is named `<prefix><node>`, where the
//! prefix `sk<pid>x<n>-` is unique to this process and build, so parallel or leftover runs
//! never clash, and teardown only ever deletes names that this very value created (recorded
//! as it goes, so a build that fails half-way still cleans up what it made). The namespaces
//! connect only to each other: nothing in them has a route to the host or the outside world.
//! Interfaces are created directly inside their namespaces, so no temporary name ever
//! appears in the host namespace.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::netns::{self, command_in, ensure_netns_dir, enter_on_exec, in_netns};
use crate::plan::*;
use crate::traffic::ping_in;

/// A host of the demo network, i.e. one network namespace with an IP stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// The sekisho gateway; runs the daemon and routes between the three segments.
    Gw,
    /// The Communication Server (CS), alone on the CS link.
    Cs,
    /// Business terminal 1 on the terminal LAN.
    Term1,
    /// Business terminal 2 on the terminal LAN.
    Term2,
    /// A host on the terminal LAN that no policy lists.
    Rogue,
    /// The prefecture server on the WAN.
    Pref,
    /// The J-LIS server on the WAN.
    Jlis,
    /// A stand-in for the Internet on the WAN; sekisho must never let anything reach it.
    Internet,
}

impl Host {
    /// Every host, the gateway first.
    pub const ALL: [Host; 8] = [
        Host::Gw,
        Host::Cs,
        Host::Term1,
        Host::Term2,
        Host::Rogue,
        Host::Pref,
        Host::Jlis,
        Host::Internet,
    ];

    /// Every host except the gateway.
    pub const END_HOSTS: [Host; 7] = [
        Host::Cs,
        Host::Term1,
        Host::Term2,
        Host::Rogue,
        Host::Pref,
        Host::Jlis,
        Host::Internet,
    ];

    /// The short name, also the namespace name after the topology's prefix (`"term1"`).
    pub const fn name(self) -> &'static str {
        match self {
            Host::Gw => "gw",
            Host::Cs => "cs",
            Host::Term1 => "term1",
            Host::Term2 => "term2",
            Host::Rogue => "rogue",
            Host::Pref => "pref",
            Host::Jlis => "jlis",
            Host::Internet => "internet",
        }
    }

    /// The segment an end host sits on; `None` for the gateway, which is on all three.
    pub const fn segment(self) -> Option<Segment> {
        match self {
            Host::Gw => None,
            Host::Cs => Some(Segment::Cs),
            Host::Term1 | Host::Term2 | Host::Rogue => Some(Segment::Term),
            Host::Pref | Host::Jlis | Host::Internet => Some(Segment::Wan),
        }
    }

    /// The host's IPv4 address; for [`Host::Gw`] its WAN address [`GW_WAN_V4`] (see
    /// [`Segment::gw_v4`] and [`Host::v4_from`] for its other ones).
    pub const fn v4(self) -> Ipv4Addr {
        match self {
            Host::Gw => GW_WAN_V4,
            Host::Cs => CS_V4,
            Host::Term1 => TERM1_V4,
            Host::Term2 => TERM2_V4,
            Host::Rogue => ROGUE_V4,
            Host::Pref => PREF_V4,
            Host::Jlis => JLIS_V4,
            Host::Internet => INTERNET_V4,
        }
    }

    /// The host's IPv6 address; for [`Host::Gw`] its WAN address [`GW_WAN_V6`].
    pub const fn v6(self) -> Ipv6Addr {
        match self {
            Host::Gw => GW_WAN_V6,
            Host::Cs => CS_V6,
            Host::Term1 => TERM1_V6,
            Host::Term2 => TERM2_V6,
            Host::Rogue => ROGUE_V6,
            Host::Pref => PREF_V6,
            Host::Jlis => JLIS_V6,
            Host::Internet => INTERNET_V6,
        }
    }

    /// The host's address of the given family (`v6 == false`: IPv4).
    pub const fn addr(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6())
        } else {
            IpAddr::V4(self.v4())
        }
    }

    /// The IPv4 address `from` uses to reach this host: the gateway's address on `from`'s
    /// own segment when this is [`Host::Gw`], else [`Host::v4`].
    pub const fn v4_from(self, from: Host) -> Ipv4Addr {
        match (self, from.segment()) {
            (Host::Gw, Some(segment)) => segment.gw_v4(),
            _ => self.v4(),
        }
    }

    /// The IPv6 address `from` uses to reach this host (see [`Host::v4_from`]).
    pub const fn v6_from(self, from: Host) -> Ipv6Addr {
        match (self, from.segment()) {
            (Host::Gw, Some(segment)) => segment.gw_v6(),
            _ => self.v6(),
        }
    }

    /// [`Host::v4_from`] or [`Host::v6_from`] by family.
    pub const fn addr_from(self, from: Host, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6_from(from))
        } else {
            IpAddr::V4(self.v4_from(from))
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the three L2 segments the gateway connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// The point-to-point link to the Communication Server.
    Cs,
    /// The terminal LAN (bridge in namespace `swt`).
    Term,
    /// The WAN to the prefecture and J-LIS (bridge in namespace `sww`).
    Wan,
}

impl Segment {
    /// All segments.
    pub const ALL: [Segment; 3] = [Segment::Cs, Segment::Term, Segment::Wan];

    /// The gateway's interface on this segment (`lan-cs`, `lan-term`, `wan0`).
    pub const fn gw_if(self) -> &'static str {
        match self {
            Segment::Cs => GW_CS_IF,
            Segment::Term => GW_TERM_IF,
            Segment::Wan => GW_WAN_IF,
        }
    }

    /// The gateway's IPv4 address on this segment (the end hosts' default gateway).
    pub const fn gw_v4(self) -> Ipv4Addr {
        match self {
            Segment::Cs => GW_CS_V4,
            Segment::Term => GW_TERM_V4,
            Segment::Wan => GW_WAN_V4,
        }
    }

    /// The gateway's IPv6 address on this segment.
    pub const fn gw_v6(self) -> Ipv6Addr {
        match self {
            Segment::Cs => GW_CS_V6,
            Segment::Term => GW_TERM_V6,
            Segment::Wan => GW_WAN_V6,
        }
    }

    /// The segment's IPv4 network and prefix length.
    pub const fn net_v4(self) -> (Ipv4Addr, u8) {
        match self {
            Segment::Cs => (CS_NET_V4, CS_PREFIX_V4),
            Segment::Term => (TERM_NET_V4, TERM_PREFIX_V4),
            Segment::Wan => (WAN_NET_V4, WAN_PREFIX_V4),
        }
    }

    /// The segment's IPv6 network and prefix length.
    pub const fn net_v6(self) -> (Ipv6Addr, u8) {
        match self {
            Segment::Cs => (CS_NET_V6, CS_PREFIX_V6),
            Segment::Term => (TERM_NET_V6, TERM_PREFIX_V6),
            Segment::Wan => (WAN_NET_V6, WAN_PREFIX_V6),
        }
    }

    /// The end hosts on this segment.
    pub const fn hosts(self) -> &'static [Host] {
        match self {
            Segment::Cs => &[Host::Cs],
            Segment::Term => &[Host::Term1, Host::Term2, Host::Rogue],
            Segment::Wan => &[Host::Pref, Host::Jlis, Host::Internet],
        }
    }
}

/// Namespace names after the prefix: the hosts in [`Host`] order, then the two switches.
const NODES: [&str; 10] = [
    "gw", "cs", "term1", "term2", "rogue", "pref", "jlis", "internet", "swt", "sww",
];
const SWT: usize = 8;
const SWW: usize = 9;

/// How long [`Topology::build`] waits for every link to pass traffic.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

static BUILDS: AtomicU32 = AtomicU32::new(0);

/// What [`Topology::keep`] hands back: enough to find and remove the namespaces later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The prefix shared by all namespaces; pass it to [`Topology::remove_by_prefix`].
    pub prefix: String,
    /// Every namespace of the topology, hosts first, then `swt` and `sww`.
    pub namespaces: Vec<String>,
}

/// A live instance of the demo topology; dropping it deletes its namespaces.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    /// All namespace names, indexed like [`NODES`].
    names: Vec<String>,
    /// The namespaces that exist because this value created them, in creation order.
    created: Vec<String>,
}

impl Topology {
    /// Creates the whole topology under a fresh prefix and waits until the gateway can
    /// ping every end host over IPv4 and IPv6.
    pub fn build() -> Result<Topology> {
        ensure_netns_dir().with_context(|| format!("creating {}", netns::NETNS_DIR))?;
        let prefix = fresh_prefix()?;
        let names: Vec<String> = NODES.iter().map(|n| format!("{prefix}{n}")).collect();
        let mut topo = Topology {
            prefix,
            names,
            created: Vec::new(),
        };
        for name in topo.names.clone() {
            run(Command::new("ip").args(["netns", "add", &name]), None)?;
            topo.created.push(name);
        }
        topo.configure()?;
        topo.wait_ready(READY_TIMEOUT)?;
        Ok(topo)
    }

    fn configure(&self) -> Result<()> {
        // DAD off before any interface exists, so every address is usable at once; no
        // router advertisements, the plan is static.
        for name in &self.names {
            write_sysctls(
                name,
                &[
                    ("net/ipv6/conf/all/accept_dad", "0"),
                    ("net/ipv6/conf/default/accept_dad", "0"),
                    ("net/ipv6/conf/all/accept_ra", "0"),
                    ("net/ipv6/conf/default/accept_ra", "0"),
                    ("net/ipv6/conf/default/router_solicitations", "0"),
                ],
            )?;
        }
        // The switches only bridge: no IP stack on the bridge or its ports.
        for idx in [SWT, SWW] {
            write_sysctls(
                &self.names[idx],
                &[
                    ("net/ipv6/conf/all/disable_ipv6", "1"),
                    ("net/ipv6/conf/default/disable_ipv6", "1"),
                ],
            )?;
        }

        // Links, each end created directly in its own namespace.
        let mut links = String::new();
        let gw = self.ns(Host::Gw);
        let mut veth = |a_ns: &str, a_if: &str, b_ns: &str, b_if: &str, b_mac: Option<&str>| {
            let mac = b_mac.map(|m| format!(" address {m}")).unwrap_or_default();
            links.push_str(&format!(
                "link add {a_if} netns {a_ns} type veth peer name {b_if}{mac} netns {b_ns}\n"
            ));
        };
        veth(gw, GW_CS_IF, self.ns(Host::Cs), HOST_IF, Some(CS_MAC_STR));
        for segment in [Segment::Term, Segment::Wan] {
            let switch = self.switch_ns(segment).expect("bridged segment");
            veth(gw, segment.gw_if(), switch, "p-gw", None);
            for &host in segment.hosts() {
                veth(self.ns(host), HOST_IF, switch, &switch_port(host), None);
            }
        }
        ip_batch(None, &links)?;

        for segment in [Segment::Term, Segment::Wan] {
            let switch = self.switch_ns(segment).expect("bridged segment");
            let mut cmds = format!(
                "link set lo up\n\
                 link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0 \
                 ageing_time 30000\n\
                 link set {BRIDGE} up\n"
            );
            let ports = std::iter::once("p-gw".to_owned())
                .chain(segment.hosts().iter().map(|&h| switch_port(h)));
            for port in ports {
                cmds.push_str(&format!(
                    "link set {port} master {BRIDGE}\nlink set {port} up\n"
                ));
            }
            ip_batch(Some(switch), &cmds)?;
        }

        let mut cmds = String::from("link set lo up\n");
        for segment in Segment::ALL {
            let (ifname, v4, v6) = (segment.gw_if(), segment.gw_v4(), segment.gw_v6());
            let (p4, p6) = (segment.net_v4().1, segment.net_v6().1);
            cmds.push_str(&format!(
                "addr add {v4}/{p4} dev {ifname}\n\
                 addr add {v6}/{p6} dev {ifname} nodad\n\
                 link set {ifname} up\n"
            ));
        }
        ip_batch(Some(gw), &cmds)?;

        for host in Host::END_HOSTS {
            let segment = host.segment().expect("end hosts have a segment");
            let (p4, p6) = (segment.net_v4().1, segment.net_v6().1);
            let (v4, v6) = (host.v4(), host.v6());
            let (gw4, gw6) = (segment.gw_v4(), segment.gw_v6());
            let cmds = format!(
                "link set lo up\n\
                 addr add {v4}/{p4} dev {HOST_IF}\n\
                 addr add {v6}/{p6} dev {HOST_IF} nodad\n\
                 link set {HOST_IF} up\n\
                 route add 0.0.0.0/0 via {gw4} dev {HOST_IF}\n\
                 route add ::/0 via {gw6} dev {HOST_IF}\n"
            );
            ip_batch(Some(self.ns(host)), &cmds)?;
        }

        // Forwarding last: `all` reaches the interfaces that exist now.
        write_sysctls(
            gw,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
                ("net/ipv6/conf/default/forwarding", "1"),
            ],
        )
    }

    /// Waits until the gateway can ping every end host's IPv4 and IPv6 address.
    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let gw = self.ns(Host::Gw);
        let failed: Vec<String> = thread::scope(|scope| {
            let checks: Vec<_> = Host::END_HOSTS
                .iter()
                .flat_map(|&h| [IpAddr::V4(h.v4()), IpAddr::V6(h.v6())].map(|a| (h, a)))
                .map(|(host, addr)| {
                    let handle = scope.spawn(move || {
                        loop {
                            if ping_in(gw, addr, Duration::from_millis(300)) {
                                return true;
                            }
                            if Instant::now() >= deadline {
                                return false;
                            }
                            thread::sleep(Duration::from_millis(50));
                        }
                    });
                    (host, addr, handle)
                })
                .collect();
            checks
                .into_iter()
                .filter_map(|(host, addr, handle)| {
                    let ok = handle.join().unwrap_or(false);
                    (!ok).then(|| format!("{host} ({addr})"))
                })
                .collect()
        });
        ensure!(
            failed.is_empty(),
            "topology {} not usable after {timeout:?}: gw cannot ping {}",
            self.prefix,
            failed.join(", ")
        );
        Ok(())
    }

    /// The prefix of every namespace of this topology (`sk<pid>x<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The network namespace name of `host`.
    pub fn ns(&self, host: Host) -> &str {
        &self.names[host.index()]
    }

    /// The namespace of the switch bridging `segment` (`None` for the CS link, which is a
    /// plain veth pair). Its bridge is [`BRIDGE`]; the port to host `h` is `p-<h>` (the
    /// Internet host's is `p-inet`), the port to the gateway `p-gw`.
    pub fn switch_ns(&self, segment: Segment) -> Option<&str> {
        match segment {
            Segment::Cs => None,
            Segment::Term => Some(&self.names[SWT]),
            Segment::Wan => Some(&self.names[SWW]),
        }
    }

    /// Every namespace of the topology: the hosts in [`Host::ALL`] order, then `swt`, `sww`.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }

    /// Runs `f` on a thread inside `host`'s namespace (see [`in_netns`]).
    pub fn in_ns<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        in_netns(self.ns(host), f)
    }

    /// A [`Command`] for `program` that will run in `host`'s network namespace.
    pub fn command(&self, host: Host, program: &str) -> Result<Command> {
        command_in(self.ns(host), program).with_context(|| format!("preparing {program} in {host}"))
    }

    /// Runs `argv` in `host`'s namespace to completion and returns its output, whatever its
    /// exit status; fails only if it cannot be started.
    pub fn exec(&self, host: Host, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("exec: empty argv")?;
        self.command(host, program)?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {host}"))
    }

    /// Like [`Topology::exec`], but fails unless the command exits 0, and returns its stdout.
    pub fn exec_ok(&self, host: Host, argv: &[&str]) -> Result<String> {
        let out = self.exec(host, argv)?;
        ensure!(
            out.status.success(),
            "`{}` in {host} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Spawns `cmd` in `host`'s namespace (for daemons); the caller owns the child and must
    /// kill and wait for it.
    pub fn spawn(&self, host: Host, cmd: &mut Command) -> Result<Child> {
        enter_on_exec(cmd, self.ns(host))?
            .spawn()
            .with_context(|| format!("spawning {:?} in {host}", cmd.get_program()))
    }

    /// Gives up ownership: the namespaces stay after this value is gone (the demo's
    /// `--keep`). Remove them later with [`Topology::remove_by_prefix`].
    pub fn keep(mut self) -> Kept {
        self.created.clear();
        Kept {
            prefix: self.prefix.clone(),
            namespaces: self.names.clone(),
        }
    }

    /// Deletes every namespace whose name starts with `prefix`, which must have the form
    /// `sk<pid>x<n>-` that [`Topology::build`] uses; returns the names deleted.
    pub fn remove_by_prefix(prefix: &str) -> Result<Vec<String>> {
        ensure!(
            parse_prefix(prefix).is_some_and(|(_, len)| len == prefix.len()),
            "{prefix:?} is not a testbed prefix (sk<pid>x<n>-)"
        );
        let names = netns::list_with_prefix(prefix)
            .with_context(|| format!("listing {}", netns::NETNS_DIR))?;
        let mut errors = Vec::new();
        for name in &names {
            if let Err(e) = delete_netns(name) {
                errors.push(format!("{e:#}"));
            }
        }
        ensure!(
            errors.is_empty(),
            "removing {prefix}*: {}",
            errors.join("; ")
        );
        Ok(names)
    }

    /// Deletes the namespaces of testbed topologies whose creating process no longer
    /// exists (left behind by a crashed or killed run); returns the names deleted.
    pub fn remove_stale() -> Result<Vec<String>> {
        let mut prefixes: Vec<String> = netns::list_with_prefix("sk")?
            .iter()
            .filter_map(|name| {
                let (pid, len) = parse_prefix(name)?;
                let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    != Err(nix::errno::Errno::ESRCH);
                (!alive).then(|| name[..len].to_owned())
            })
            .collect();
        prefixes.sort();
        prefixes.dedup();
        let mut removed = Vec::new();
        for prefix in prefixes {
            removed.extend(Topology::remove_by_prefix(&prefix)?);
        }
        Ok(removed)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(e) = delete_netns(&name) {
                eprintln!("sekisho-testbed: {e:#}");
            }
        }
    }
}

/// The port name on the switch for an end host (≤ 15 bytes).
fn switch_port(host: Host) -> String {
    match host {
        Host::Internet => "p-inet".to_owned(),
        _ => format!("p-{}", host.name()),
    }
}

/// A prefix no existing namespace uses yet.
fn fresh_prefix() -> Result<String> {
    let pid = std::process::id();
    for _ in 0..1000 {
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sk{pid}x{n}-");
        if netns::list_with_prefix(&prefix)?.is_empty() {
            return Ok(prefix);
        }
    }
    bail!("no free namespace prefix sk{pid}x*-; remove leftovers with Topology::remove_stale")
}

/// Parses a leading `sk<pid>x<n>-` and returns the pid and the prefix's length.
fn parse_prefix(name: &str) -> Option<(i32, usize)> {
    let rest = name.strip_prefix("sk")?;
    let pid_len = rest.find(|c: char| !c.is_ascii_digit())?;
    let pid: i32 = rest[..pid_len].parse().ok()?;
    let rest = rest[pid_len..].strip_prefix('x')?;
    let n_len = rest.find(|c: char| !c.is_ascii_digit())?;
    if n_len == 0 || !rest[n_len..].starts_with('-') || pid <= 0 {
        return None;
    }
    Some((pid, 2 + pid_len + 1 + n_len + 1))
}

fn delete_netns(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "delete", name]), None)
}

/// Writes `/proc/sys/<key>` inside namespace `ns` (the `net` tree follows the namespace of
/// the thread that opens it).
fn write_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    in_netns(ns, || {
        for (key, value) in settings {
            fs::write(format!("/proc/sys/{key}"), value)
                .with_context(|| format!("setting {key}={value} in {ns}"))?;
        }
        Ok(())
    })
}

/// Runs `ip -batch -` with `cmds` on stdin, in namespace `ns` or the caller's.
fn ip_batch(ns: Option<&str>, cmds: &str) -> Result<()> {
    let mut cmd = match ns {
        Some(ns) => command_in(ns, "ip")?,
        None => Command::new("ip"),
    };
    cmd.args(["-batch", "-"]);
    run(&mut cmd, Some(cmds)).with_context(|| format!("in {}", ns.unwrap_or("the host namespace")))
}

/// Runs `cmd` to completion, feeding it `stdin`; fails with its stderr unless it exits 0.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<()> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("child stdin")?;
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("feeding {what}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse() {
        assert_eq!(parse_prefix("sk123x4-gw"), Some((123, 8)));
        assert_eq!(parse_prefix("sk123x4-"), Some((123, 8)));
        assert_eq!(parse_prefix("sk123x-gw"), None);
        assert_eq!(parse_prefix("skx4-gw"), None);
        assert_eq!(parse_prefix("sk12x4gw"), None);
        assert_eq!(parse_prefix("other"), None);
    }

    #[test]
    fn remove_by_prefix_refuses_foreign_prefixes() {
        for bad in ["", "sk", "sk1x1", "sk1x1-gw", "foo-", "sk1x1-*"] {
            assert!(Topology::remove_by_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for host in Host::END_HOSTS {
            assert!(switch_port(host).len() <= 15, "{host}");
        }
    }

    #[test]
    fn addresses_from_the_gateways_point_of_view() {
        assert_eq!(Host::Gw.v4_from(Host::Cs), GW_CS_V4);
        assert_eq!(Host::Gw.v6_from(Host::Rogue), GW_TERM_V6);
        assert_eq!(Host::Gw.v4_from(Host::Jlis), GW_WAN_V4);
        assert_eq!(Host::Pref.v4_from(Host::Gw), PREF_V4);
        assert_eq!(Host::Cs.addr_from(Host::Term1, true), IpAddr::V6(CS_V6));
    }
}
