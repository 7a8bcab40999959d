//! What a new configuration would change: `sekishoctl policy diff FILE`.
//!
//! Each policy is expanded into its *effective flows*: for every (source, destination,
//! protocol) the set of destination-port intervals some rule allows. Roles expand to the
//! assets that have them in that file; assets and peers stay themselves. A flow present in
//! the new file and not in the old one is *allowed*, one present in the old file and not in
//! the new one is *denied*; ports are compared interval by interval, so shrinking
//! `tcp/8000-8100` to `tcp/8000-8099` denies exactly port 8100.
//!
//! Invariants and rules chosen:
//! - An endpoint is named `asset:NAME` or `peer:NAME`. When an asset's address set or MAC
//!   differs between the two files, or a peer's network set does, it is *a different
//!   endpoint at the address level* (the kernel matches addresses, not names): its name then
//!   carries the addresses, `asset:cs01 [192.0.2.10, 2001:db8:10::a]`, so every flow it
//!   takes part in shows as denied under the old addresses and allowed under the new ones.
//!   Order of addresses in the file does not count as a change. The change itself is also
//!   listed in `assets_changed` / `peers_changed`.
//! - A role change moves an asset's flows by the expansion alone (the asset stays the same
//!   endpoint) and is listed in `assets_changed`, as are `hours` changes.
//! - Pairs that can never carry a packet are left out: an asset to itself (through a role on
//!   both ends), and a pair without an address family in common. `icmp` has no ports; its
//!   flow is either there or not.
//! - `mode` is reported, not folded into flows: `monitor` lets everything pass, which is
//!   said once rather than as every flow there is.
//! - Everything is sorted: flows by (from, to, protocol tcp < udp < icmp), names by name.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Asset;
use crate::config::Config;
use crate::config::Endpoint;
use crate::config::Peer;
use crate::config::PortSpec;
use crate::config::Rule;

/// What changes when `new` replaces `old`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyDiff {
    /// Flows `new` allows that `old` does not.
    pub allowed: Vec<FlowSet>,
    /// Flows `old` allows that `new` does not.
    pub denied: Vec<FlowSet>,
    /// `(old, new)` when the mode changes.
    pub mode: Option<(String, String)>,
    /// Asset names only in `new`.
    pub assets_added: Vec<String>,
    /// Asset names only in `old`.
    pub assets_removed: Vec<String>,
    /// `NAME: what changed` for assets in both whose addresses, MAC, role or hours differ.
    pub assets_changed: Vec<String>,
    /// `NAME: what changed` for peers added, removed, or whose networks differ.
    pub peers_changed: Vec<String>,
}

/// Ports of one (source, destination, protocol) that changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowSet {
    /// `asset:term-01`, `peer:prefecture`, or with addresses when they changed (module doc).
    pub from: String,
    pub to: String,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// `443, 8000-8100`; empty for icmp.
    pub ports: String,
    /// The rules of the file that allows the flow (new for allowed, old for denied) that
    /// cover any of these ports, in file order.
    pub rules: Vec<String>,
}

impl PolicyDiff {
    /// Whether nothing at all changes (flows, mode, assets, peers).
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
            && self.denied.is_empty()
            && self.mode.is_none()
            && self.assets_added.is_empty()
            && self.assets_removed.is_empty()
            && self.assets_changed.is_empty()
            && self.peers_changed.is_empty()
    }
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((old, new)) = &self.mode {
            write!(f, "! mode {old} → {new}")?;
            match new.as_str() {
                "monitor" => writeln!(f, " (nothing the policy denies is dropped any more)")?,
                _ => writeln!(f)?,
            }
        }
        if self.allowed.is_empty() && self.denied.is_empty() {
            writeln!(f, "no change in allowed flows")?;
        }
        for (sign, verb, sets) in [("+", "allow", &self.allowed), ("-", "deny ", &self.denied)] {
            for set in sets {
                write!(
                    f,
                    "{sign} {verb} {} → {} {}",
                    set.from, set.to, set.protocol
                )?;
                if !set.ports.is_empty() {
                    write!(f, " {}", set.ports)?;
                }
                writeln!(f, " ({})", set.rules.join("; "))?;
            }
        }
        for name in &self.assets_added {
            writeln!(f, "asset added: {name}")?;
        }
        for name in &self.assets_removed {
            writeln!(f, "asset removed: {name}")?;
        }
        for change in &self.assets_changed {
            writeln!(f, "asset changed: {change}")?;
        }
        for change in &self.peers_changed {
            writeln!(f, "peer changed: {change}")?;
        }
        Ok(())
    }
}

/// Compares the policies of `old` (running) and `new` (proposed).
pub fn diff(old: &Config, new: &Config) -> PolicyDiff {
    let changed = Relabel::between(old, new);
    let before = expand(old, &changed);
    let after = expand(new, &changed);

    let mode = (old.daemon.mode != new.daemon.mode).then(|| {
        (
            old.daemon.mode.as_str().to_owned(),
            new.daemon.mode.as_str().to_owned(),
        )
    });

    let old_assets: BTreeMap<&str, &Asset> =
        old.assets.iter().map(|a| (a.name.as_str(), a)).collect();
    let new_assets: BTreeMap<&str, &Asset> =
        new.assets.iter().map(|a| (a.name.as_str(), a)).collect();
    let assets_added = names_missing(&new_assets, &old_assets);
    let assets_removed = names_missing(&old_assets, &new_assets);
    let assets_changed = old_assets
        .iter()
        .filter_map(|(name, a)| {
            let b = new_assets.get(name)?;
            let mut what = Vec::new();
            if a.role != b.role {
                what.push(format!("role {} → {}", a.role, b.role));
            }
            if sorted(&a.addresses) != sorted(&b.addresses) {
                what.push(format!(
                    "addresses {} → {}",
                    join(&sorted(&a.addresses)),
                    join(&sorted(&b.addresses))
                ));
            }
            if a.mac != b.mac {
                what.push(format!("mac {} → {}", mac(a.mac), mac(b.mac)));
            }
            if a.hours != b.hours {
                let hours = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".to_owned());
                what.push(format!("hours {} → {}", hours(&a.hours), hours(&b.hours)));
            }
            (!what.is_empty()).then(|| format!("{name}: {}", what.join(", ")))
        })
        .collect();

    let old_peers: BTreeMap<&str, &Peer> = old.peers.iter().map(|p| (p.name.as_str(), p)).collect();
    let new_peers: BTreeMap<&str, &Peer> = new.peers.iter().map(|p| (p.name.as_str(), p)).collect();
    let names: BTreeSet<&str> = old_peers.keys().chain(new_peers.keys()).copied().collect();
    let peers_changed = names
        .into_iter()
        .filter_map(|name| match (old_peers.get(name), new_peers.get(name)) {
            (Some(a), Some(b)) => {
                let (a, b) = (sorted(&a.networks), sorted(&b.networks));
                (a != b).then(|| format!("{name}: networks {} → {}", join(&a), join(&b)))
            }
            (None, Some(b)) => Some(format!(
                "{name}: added (networks {})",
                join(&sorted(&b.networks))
            )),
            (Some(a), None) => Some(format!(
                "{name}: removed (networks {})",
                join(&sorted(&a.networks))
            )),
            (None, None) => None,
        })
        .collect();

    PolicyDiff {
        allowed: subtract(&after, &before, new),
        denied: subtract(&before, &after, old),
        mode,
        assets_added,
        assets_removed,
        assets_changed,
        peers_changed,
    }
}

/// Protocols in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals. ICMP is the one interval `0-0`.
type Ports = Vec<(u16, u16)>;

/// (from, to, protocol) → for each rule (index into `Config::rules`) the ports it allows.
type Flows = BTreeMap<(String, String, Proto), BTreeMap<usize, Ports>>;

/// Endpoints whose address-level identity differs between the two files.
struct Relabel {
    assets: BTreeSet<String>,
    peers: BTreeSet<String>,
}

impl Relabel {
    fn between(old: &Config, new: &Config) -> Relabel {
        let assets = old
            .assets
            .iter()
            .filter(|a| {
                new.asset(&a.name)
                    .is_some_and(|b| sorted(&a.addresses) != sorted(&b.addresses) || a.mac != b.mac)
            })
            .map(|a| a.name.clone())
            .collect();
        let peers = old
            .peers
            .iter()
            .filter(|a| {
                new.peer(&a.name)
                    .is_some_and(|b| sorted(&a.networks) != sorted(&b.networks))
            })
            .map(|a| a.name.clone())
            .collect();
        Relabel { assets, peers }
    }

    fn asset(&self, asset: &Asset) -> String {
        if !self.assets.contains(&asset.name) {
            return format!("asset:{}", asset.name);
        }
        let mut label = format!("asset:{} [{}", asset.name, join(&sorted(&asset.addresses)));
        if asset.mac.is_some() {
            label.push_str("; mac ");
            label.push_str(&mac(asset.mac));
        }
        label.push(']');
        label
    }

    fn peer(&self, peer: &Peer) -> String {
        if self.peers.contains(&peer.name) {
            format!("peer:{} [{}]", peer.name, join(&sorted(&peer.networks)))
        } else {
            format!("peer:{}", peer.name)
        }
    }
}

/// One concrete end of a flow.
struct Member {
    label: String,
    /// The asset's name, to leave out an asset talking to itself.
    asset: Option<String>,
    v4: bool,
    v6: bool,
}

fn members(config: &Config, endpoint: &Endpoint, relabel: &Relabel) -> Vec<Member> {
    let of_asset = |a: &Asset| Member {
        label: relabel.asset(a),
        asset: Some(a.name.clone()),
        v4: a.addresses.iter().any(IpAddr::is_ipv4),
        v6: a.addresses.iter().any(IpAddr::is_ipv6),
    };
    match endpoint {
        Endpoint::Role(role) => config.assets_of_role(role).map(of_asset).collect(),
        Endpoint::Asset(name) => config.asset(name).map(of_asset).into_iter().collect(),
        Endpoint::Peer(name) => config
            .peer(name)
            .map(|p| Member {
                label: relabel.peer(p),
                asset: None,
                v4: p.networks.iter().any(|n| matches!(n, IpNet::V4(_))),
                v6: p.networks.iter().any(|n| matches!(n, IpNet::V6(_))),
            })
            .into_iter()
            .collect(),
    }
}

fn expand(config: &Config, relabel: &Relabel) -> Flows {
    let mut flows = Flows::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let sources = members(config, &rule.from, relabel);
        let destinations = members(config, &rule.to, relabel);
        for src in &sources {
            for dst in &destinations {
                if src.asset.is_some() && src.asset == dst.asset {
                    continue;
                }
                if !((src.v4 && dst.v4) || (src.v6 && dst.v6)) {
                    continue;
                }
                for spec in &rule.ports {
                    let (proto, first, last) = match *spec {
                        PortSpec::Tcp { first, last } => (Proto::Tcp, first, last),
                        PortSpec::Udp { first, last } => (Proto::Udp, first, last),
                        PortSpec::Icmp => (Proto::Icmp, 0, 0),
                    };
                    let ports = flows
                        .entry((src.label.clone(), dst.label.clone(), proto))
                        .or_default()
                        .entry(i)
                        .or_default();
                    *ports = union(ports, &[(first, last)]);
                }
            }
        }
    }
    flows
}

/// The flows of `a` not in `b`; rules are described from `config` (the file of `a`).
fn subtract(a: &Flows, b: &Flows, config: &Config) -> Vec<FlowSet> {
    let mut out = Vec::new();
    for (key, by_rule) in a {
        let all = by_rule.values().fold(Ports::new(), |acc, p| union(&acc, p));
        let other = b
            .get(key)
            .map(|r| r.values().fold(Ports::new(), |acc, p| union(&acc, p)))
            .unwrap_or_default();
        let left = difference(&all, &other);
        if left.is_empty() {
            continue;
        }
        let (from, to, proto) = key;
        out.push(FlowSet {
            from: from.clone(),
            to: to.clone(),
            protocol: proto.as_str().to_owned(),
            ports: if *proto == Proto::Icmp {
                String::new()
            } else {
                ports_text(&left)
            },
            rules: by_rule
                .iter()
                .filter(|(_, ports)| !intersection(ports, &left).is_empty())
                .map(|(&i, _)| describe(&config.rules[i]))
                .collect(),
        });
    }
    out
}

/// `rule 1 "terminal-to-cs", line 71: role:terminal → asset:cs01`; numbers are 1-based as
/// in [`crate::policy::CompiledPolicy::rule_names`].
fn describe(rule: &Rule) -> String {
    let name = match &rule.name {
        Some(name) => format!(" {name:?}"),
        None => String::new(),
    };
    format!(
        "rule {}{name}, line {}: {} → {}",
        rule.index + 1,
        rule.line,
        rule.from,
        rule.to
    )
}

fn union(a: &[(u16, u16)], b: &[(u16, u16)]) -> Ports {
    let mut all: Vec<(u16, u16)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Ports = Vec::with_capacity(all.len());
    for (first, last) in all {
        match out.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// `a` without `b`; both normalised.
fn difference(a: &[(u16, u16)], b: &[(u16, u16)]) -> Ports {
    let mut out = Ports::new();
    for &(first, last) in a {
        // Walk the part of `a`'s interval not yet cut away.
        let mut lo = u32::from(first);
        let hi = u32::from(last);
        for &(cut_first, cut_last) in b {
            let (cf, cl) = (u32::from(cut_first), u32::from(cut_last));
            if cl < lo || cf > hi {
                continue;
            }
            if cf > lo {
                out.push((lo as u16, (cf - 1) as u16));
            }
            lo = cl + 1;
            if lo > hi {
                break;
            }
        }
        if lo <= hi {
            out.push((lo as u16, hi as u16));
        }
    }
    out
}

fn intersection(a: &[(u16, u16)], b: &[(u16, u16)]) -> Ports {
    let mut out = Ports::new();
    for &(af, al) in a {
        for &(bf, bl) in b {
            let (first, last) = (af.max(bf), al.min(bl));
            if first <= last {
                out.push((first, last));
            }
        }
    }
    union(&out, &[])
}

fn ports_text(ports: &[(u16, u16)]) -> String {
    ports
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn names_missing<T>(a: &BTreeMap<&str, T>, b: &BTreeMap<&str, T>) -> Vec<String> {
    a.keys()
        .filter(|name| !b.contains_key(*name))
        .map(|name| (*name).to_owned())
        .collect()
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort_unstable();
    items.dedup();
    items
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn mac(mac: Option<[u8; 6]>) -> String {
    match mac {
        Some(m) => m
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DEMO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));

    fn parse(text: &str) -> Config {
        Config::parse_str(text, Path::new("demo.toml"))
            .unwrap_or_else(|err| panic!("test configuration does not parse: {err}"))
    }

    /// The demo configuration with `from` replaced by `to` (which must occur exactly once).
    fn edited(edits: &[(&str, &str)]) -> Config {
        let mut text = DEMO.to_owned();
        for (from, to) in edits {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{from:?} must occur exactly once in demo.toml"
            );
            text = text.replace(from, to);
        }
        parse(&text)
    }

    fn flow(set: &FlowSet) -> (&str, &str, &str, &str) {
        (&set.from, &set.to, &set.protocol, &set.ports)
    }

    #[test]
    fn identical_configs_are_an_empty_diff() {
        let d = diff(&parse(DEMO), &parse(DEMO));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.to_string(), "no change in allowed flows\n");
    }

    #[test]
    fn reordering_addresses_changes_nothing() {
        let new = edited(&[(
            r#"addresses = ["192.0.2.10", "2001:db8:10::a"]"#,
            r#"addresses = ["2001:db8:10::a", "192.0.2.10"]"#,
        )]);
        assert!(diff(&parse(DEMO), &new).is_empty());
    }

    #[test]
    fn narrowing_a_range_denies_exactly_the_removed_ports() {
        let new = edited(&[(
            "to = \"asset:cs01\"\nports = [\"tcp/443\", \"tcp/8000-8100\", \"icmp\"]",
            "to = \"asset:cs01\"\nports = [\"tcp/443\", \"tcp/8000-8049\", \"tcp/8051-8099\", \"icmp\"]",
        )]);
        let d = diff(&parse(DEMO), &new);
        assert!(d.allowed.is_empty(), "{d:?}");
        let denied: Vec<_> = d.denied.iter().map(flow).collect();
        assert_eq!(
            denied,
            [
                ("asset:term-01", "asset:cs01", "tcp", "8050, 8100"),
                ("asset:term-02", "asset:cs01", "tcp", "8050, 8100"),
            ]
        );
        let line = parse(DEMO).rules[0].line;
        assert_eq!(
            d.denied[0].rules,
            [format!(
                "rule 1 \"terminal-to-cs\", line {line}: role:terminal → asset:cs01"
            )]
        );
        assert!(d.assets_changed.is_empty() && d.peers_changed.is_empty());
    }

    #[test]
    fn adding_a_rule_allows_its_flows() {
        let text = format!(
            "{DEMO}\n[[allow]]\nname = \"term-01-ssh\"\nfrom = \"asset:term-01\"\n\
             to = \"asset:cs01\"\nports = [\"tcp/22\", \"tcp/443\", \"udp/514\"]\n"
        );
        let d = diff(&parse(DEMO), &parse(&text));
        assert!(d.denied.is_empty(), "{d:?}");
        let allowed: Vec<_> = d.allowed.iter().map(flow).collect();
        // 443 was already allowed by rule 1: only what is new shows.
        assert_eq!(
            allowed,
            [
                ("asset:term-01", "asset:cs01", "tcp", "22"),
                ("asset:term-01", "asset:cs01", "udp", "514"),
            ]
        );
        assert_eq!(d.allowed[0].rules.len(), 1);
        assert!(d.allowed[0].rules[0].starts_with("rule 5 \"term-01-ssh\""));
        let shown = d.to_string();
        assert!(
            shown.contains(
                "+ allow asset:term-01 → asset:cs01 tcp 22 (rule 5 \"term-01-ssh\", line"
            ),
            "{shown}"
        );
    }

    #[test]
    fn removing_a_rule_denies_its_flows() {
        let new = edited(&[(
            "[[allow]]\nname = \"prefecture-to-cs\"\nfrom = \"peer:prefecture\"\nto = \"role:cs\"\nports = [\"tcp/8443\"]\n",
            "",
        )]);
        let d = diff(&parse(DEMO), &new);
        let denied: Vec<_> = d.denied.iter().map(flow).collect();
        assert_eq!(denied, [("peer:prefecture", "asset:cs01", "tcp", "8443")]);
        assert!(d.allowed.is_empty());
    }

    #[test]
    fn role_change_moves_flows() {
        let new = edited(&[(
            "name = \"term-02\"\nrole = \"terminal\"",
            "name = \"term-02\"\nrole = \"cs\"",
        )]);
        let d = diff(&parse(DEMO), &new);
        let denied: Vec<_> = d.denied.iter().map(flow).collect();
        assert_eq!(
            denied,
            [
                ("asset:term-02", "asset:cs01", "tcp", "443, 8000-8100"),
                ("asset:term-02", "asset:cs01", "icmp", ""),
            ]
        );
        let allowed: Vec<_> = d.allowed.iter().map(flow).collect();
        assert_eq!(
            allowed,
            [
                ("asset:term-02", "peer:jlis", "tcp", "443"),
                ("asset:term-02", "peer:jlis", "udp", "123"),
                ("asset:term-02", "peer:jlis", "icmp", ""),
                ("asset:term-02", "peer:prefecture", "tcp", "443, 8000-8100"),
                ("asset:term-02", "peer:prefecture", "icmp", ""),
                ("peer:prefecture", "asset:term-02", "tcp", "8443"),
            ]
        );
        assert_eq!(d.assets_changed, ["term-02: role terminal → cs"]);
    }

    #[test]
    fn address_change_makes_a_different_endpoint() {
        let new = edited(&[("\"192.0.2.21\"", "\"192.0.2.31\"")]);
        let d = diff(&parse(DEMO), &new);
        let old_label = "asset:term-01 [192.0.2.21, 2001:db8:21::15]";
        let new_label = "asset:term-01 [192.0.2.31, 2001:db8:21::15]";
        let denied: Vec<_> = d.denied.iter().map(flow).collect();
        assert_eq!(
            denied,
            [
                (old_label, "asset:cs01", "tcp", "443, 8000-8100"),
                (old_label, "asset:cs01", "icmp", ""),
            ]
        );
        let allowed: Vec<_> = d.allowed.iter().map(flow).collect();
        assert_eq!(
            allowed,
            [
                (new_label, "asset:cs01", "tcp", "443, 8000-8100"),
                (new_label, "asset:cs01", "icmp", ""),
            ]
        );
        assert_eq!(
            d.assets_changed,
            ["term-01: addresses 192.0.2.21, 2001:db8:21::15 → 192.0.2.31, 2001:db8:21::15"]
        );
    }

    #[test]
    fn peer_network_change_is_reported_and_relabels_its_flows() {
        let new = edited(&[("\"203.0.113.16/28\"", "\"203.0.113.32/28\"")]);
        let d = diff(&parse(DEMO), &new);
        assert_eq!(
            d.peers_changed,
            [
                "jlis: networks 203.0.113.16/28, 2001:db8:ff::10/124 → 203.0.113.32/28, 2001:db8:ff::10/124"
            ]
        );
        assert_eq!(d.denied.len(), 3, "{d:?}");
        assert_eq!(d.allowed.len(), 3, "{d:?}");
        assert!(
            d.allowed
                .iter()
                .all(|f| f.to.starts_with("peer:jlis [203.0.113.32/28"))
        );
    }

    #[test]
    fn asset_added_and_removed_are_listed() {
        let new = edited(&[
            ("name = \"term-02\"", "name = \"term-03\""),
            ("\"192.0.2.22\"", "\"192.0.2.23\""),
        ]);
        let d = diff(&parse(DEMO), &new);
        assert_eq!(d.assets_added, ["term-03"]);
        assert_eq!(d.assets_removed, ["term-02"]);
        assert_eq!(d.denied[0].from, "asset:term-02");
        assert_eq!(d.allowed[0].from, "asset:term-03");
    }

    #[test]
    fn mode_change_is_reported() {
        let new = edited(&[("mode = \"enforce\"", "mode = \"monitor\"")]);
        let d = diff(&parse(DEMO), &new);
        assert_eq!(d.mode, Some(("enforce".to_owned(), "monitor".to_owned())));
        assert!(d.allowed.is_empty() && d.denied.is_empty());
        assert!(!d.is_empty());
        assert_eq!(
            d.to_string(),
            "! mode enforce → monitor (nothing the policy denies is dropped any more)\n\
             no change in allowed flows\n"
        );
    }

    #[test]
    fn serde_round_trip() {
        let new = edited(&[("tcp/8443", "tcp/8443-8444")]);
        let d = diff(&parse(DEMO), &new);
        let json = serde_json::to_string(&d).expect("serialises");
        let back: PolicyDiff = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, d);
        assert_eq!(d.allowed[0].ports, "8444");
    }

    #[test]
    fn interval_arithmetic() {
        assert_eq!(union(&[(1, 5)], &[(6, 9), (20, 20)]), [(1, 9), (20, 20)]);
        assert_eq!(
            difference(&[(1, 65535)], &[(1, 1), (65535, 65535)]),
            [(2, 65534)]
        );
        assert_eq!(
            difference(&[(10, 20)], &[(12, 13), (15, 30)]),
            [(10, 11), (14, 14)]
        );
        assert_eq!(difference(&[(10, 20)], &[(0, 65535)]), []);
        assert_eq!(
            intersection(&[(1, 10), (20, 30)], &[(5, 25)]),
            [(5, 10), (20, 25)]
        );
    }
}
