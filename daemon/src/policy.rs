//! Compiles a validated [`Config`] into the kernel's lookup tables, and evaluates them in
//! user space with the very decision the kernel runs (`sekisho_common::decide`).
//!
//! Selectors: every asset, role and peer gets a number (`SEL_ASSET | i`, `SEL_ROLE | j`,
//! `SEL_PEER | k`, 1-based in file/sorted order). A rule becomes one LPM entry per
//! (protocol, port prefix) from its `from` selector to its `to` selector — a role rule is
//! not expanded per asset — so the table grows with the rules as written, and a lookup
//! costs the same whatever its size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sekisho_common::{
    ENDPOINT_KEY_FIXED_BITS, Endpoint, FLAG_ISOLATE_ALL, FLAG_ISOLATIONS, KIND_ASSET, KIND_PEER,
    MODE_ENFORCE, MODE_MONITOR, RULE_KEY_FULL_BITS, RULE_KEY_PROTO_BITS, RuleKey, SEL_ASSET,
    SEL_PEER, SEL_ROLE, V4_MAPPED_OFFSET,
    decide::{Packet, PolicyView},
    proto, v4_mapped,
};

use crate::config::{self, Config, Mode, PortSpec};

/// An endpoint prefix: address bits (0..=128 of the 16-byte form) and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub prefix_len: u32,
    pub addr: [u8; 16],
    pub endpoint: Endpoint,
}

/// A rule prefix: key bits after the slot byte, the key (slot 0) and the rule number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleEntry {
    /// Prefix length over the whole key, slot included.
    pub prefix_len: u32,
    pub key: RuleKey,
    pub rule: u32,
}

/// The policy as the kernel holds it, for one slot.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub mode: u32,
    /// `FLAG_ISOLATE_ALL` / `FLAG_ISOLATIONS`.
    pub flags: u32,
    /// Selectors cut off.
    pub isolated: BTreeSet<u32>,
    pub endpoints: Vec<EndpointEntry>,
    pub rules: Vec<RuleEntry>,
    /// Selector number → "asset:NAME" / "role:NAME" / "peer:NAME", for people.
    pub selector_names: BTreeMap<u32, String>,
    /// Rule number → how the configuration wrote it.
    pub rule_names: BTreeMap<u32, String>,
    /// Every distinct rule prefix length, longest first (user-space LPM emulation).
    rule_prefix_lens: Vec<u32>,
    rule_index: HashMap<(u32, RuleKey), u32>,
    endpoint_index: HashMap<(u32, [u8; 16]), Endpoint>,
    endpoint_prefix_lens: Vec<u32>,
}

/// The 16-byte form of an address and the prefix-length offset of its family.
pub fn addr16(ip: IpAddr) -> ([u8; 16], u32) {
    match ip {
        IpAddr::V4(v4) => (v4_mapped(v4.octets()), V4_MAPPED_OFFSET),
        IpAddr::V6(v6) => (v6.octets(), 0),
    }
}

/// Zeroes every bit after the first `bits` of `bytes`.
fn mask<const N: usize>(mut bytes: [u8; N], bits: u32) -> [u8; N] {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = (i as u32) * 8;
        if start >= bits {
            *b = 0;
        } else if start + 8 > bits {
            *b &= 0xffu8 << (8 - (bits - start));
        }
    }
    bytes
}

/// Splits an inclusive port range into (value, prefix bits) blocks, at most 30 of them.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        // The largest aligned block starting at `lo` that does not pass `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

impl CompiledPolicy {
    pub fn compile(config: &Config) -> CompiledPolicy {
        let mut selector_names = BTreeMap::new();
        let roles: BTreeSet<&str> = config.assets.iter().map(|a| a.role.as_str()).collect();
        let role_sel: HashMap<&str, u32> = roles
            .iter()
            .enumerate()
            .map(|(j, r)| (*r, SEL_ROLE | (j as u32 + 1)))
            .collect();
        for (r, s) in &role_sel {
            selector_names.insert(*s, format!("role:{r}"));
        }
        let mut asset_sel = HashMap::new();
        let mut endpoints = Vec::new();
        for (i, asset) in config.assets.iter().enumerate() {
            let sel = SEL_ASSET | (i as u32 + 1);
            asset_sel.insert(asset.name.as_str(), sel);
            selector_names.insert(sel, format!("asset:{}", asset.name));
            let endpoint = Endpoint {
                asset: sel,
                role: role_sel[asset.role.as_str()],
                peer: 0,
                kind: KIND_ASSET,
                has_mac: u8::from(asset.mac.is_some()),
                mac: asset.mac.unwrap_or_default(),
            };
            for ip in &asset.addresses {
                let (addr, _) = addr16(*ip);
                endpoints.push(EndpointEntry {
                    prefix_len: 128,
                    addr,
                    endpoint,
                });
            }
        }
        let mut peer_sel = HashMap::new();
        for (k, peer) in config.peers.iter().enumerate() {
            let sel = SEL_PEER | (k as u32 + 1);
            peer_sel.insert(peer.name.as_str(), sel);
            selector_names.insert(sel, format!("peer:{}", peer.name));
            let endpoint = Endpoint {
                peer: sel,
                kind: KIND_PEER,
                ..Endpoint::default()
            };
            for net in &peer.networks {
                let (addr, offset) = addr16(net.network());
                let prefix_len = offset + u32::from(net.prefix_len());
                endpoints.push(EndpointEntry {
                    prefix_len,
                    addr: mask(addr, prefix_len),
                    endpoint,
                });
            }
        }
        let selector = |ep: &config::Endpoint| -> u32 {
            match ep {
                config::Endpoint::Role(n) => role_sel[n.as_str()],
                config::Endpoint::Asset(n) => asset_sel[n.as_str()],
                config::Endpoint::Peer(n) => peer_sel[n.as_str()],
            }
        };
        let mut rules = Vec::new();
        let mut rule_names = BTreeMap::new();
        let mut seen = HashMap::new();
        for rule in &config.rules {
            let number = rule.index as u32 + 1;
            let (src, dst) = (selector(&rule.from), selector(&rule.to));
            let ports: Vec<String> = rule.ports.iter().map(ToString::to_string).collect();
            let label = match &rule.name {
                Some(name) => format!("{name} ({} → {}: {})", rule.from, rule.to, ports.join(", ")),
                None => format!("{} → {}: {}", rule.from, rule.to, ports.join(", ")),
            };
            rule_names.insert(number, label);
            for spec in &rule.ports {
                let blocks: Vec<(u8, u16, u32)> = match spec {
                    PortSpec::Tcp { first, last } => port_prefixes(*first, *last)
                        .into_iter()
                        .map(|(p, b)| (proto::TCP, p, RULE_KEY_PROTO_BITS + b))
                        .collect(),
                    PortSpec::Udp { first, last } => port_prefixes(*first, *last)
                        .into_iter()
                        .map(|(p, b)| (proto::UDP, p, RULE_KEY_PROTO_BITS + b))
                        .collect(),
                    PortSpec::Icmp => vec![
                        (proto::ICMP, 0, RULE_KEY_PROTO_BITS),
                        (proto::ICMPV6, 0, RULE_KEY_PROTO_BITS),
                    ],
                };
                for (p, port, prefix_len) in blocks {
                    let key = RuleKey::new(0, src, dst, p, port);
                    // The first rule that covers a prefix is the one recorded.
                    seen.entry((prefix_len, key)).or_insert_with(|| {
                        rules.push(RuleEntry {
                            prefix_len,
                            key,
                            rule: number,
                        });
                        number
                    });
                }
            }
        }
        let mode = match config.daemon.mode {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Monitor => MODE_MONITOR,
        };
        CompiledPolicy::from_parts(mode, endpoints, rules, selector_names, rule_names)
    }

    fn from_parts(
        mode: u32,
        endpoints: Vec<EndpointEntry>,
        rules: Vec<RuleEntry>,
        selector_names: BTreeMap<u32, String>,
        rule_names: BTreeMap<u32, String>,
    ) -> CompiledPolicy {
        let lens = |it: &mut dyn Iterator<Item = u32>| {
            let set: BTreeSet<u32> = it.collect();
            set.into_iter().rev().collect::<Vec<_>>()
        };
        CompiledPolicy {
            mode,
            flags: 0,
            isolated: BTreeSet::new(),
            rule_prefix_lens: lens(&mut rules.iter().map(|r| r.prefix_len)),
            endpoint_prefix_lens: lens(&mut endpoints.iter().map(|e| e.prefix_len)),
            rule_index: rules
                .iter()
                .map(|r| ((r.prefix_len, r.key), r.rule))
                .collect(),
            endpoint_index: endpoints
                .iter()
                .map(|e| ((e.prefix_len, e.addr), e.endpoint))
                .collect(),
            endpoints,
            rules,
            selector_names,
            rule_names,
        }
    }

    /// Cuts off `targets` ("asset:NAME", "role:NAME", "peer:NAME", "all"), replacing any
    /// earlier isolation of this policy.
    pub fn set_isolation<'a>(
        &mut self,
        targets: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        self.flags = 0;
        self.isolated.clear();
        for target in targets {
            if target == "all" {
                self.flags |= FLAG_ISOLATE_ALL;
                continue;
            }
            let selector = self
                .selector_names
                .iter()
                .find_map(|(sel, name)| (name == target).then_some(*sel))
                .ok_or_else(|| format!("{target} is not in the policy in force"))?;
            self.isolated.insert(selector);
        }
        if !self.isolated.is_empty() {
            self.flags |= FLAG_ISOLATIONS;
        }
        Ok(())
    }

    /// Decides a first packet as the kernel would, `Ok(rule)` or `Err(reason)`.
    pub fn decide(&self, pkt: &Packet) -> Result<u32, sekisho_common::Reason> {
        sekisho_common::decide::decide(self, 0, pkt, true)
    }

    /// Decides by addresses, protocol and port only, without the side and MAC checks
    /// (for a recorded flow, whose frame is gone).
    pub fn decide_flow(&self, pkt: &Packet) -> Result<u32, sekisho_common::Reason> {
        sekisho_common::decide::decide(self, 0, pkt, false)
    }

    /// Number of distinct selectors per kind: (assets, roles, peers).
    pub fn counts(&self) -> (usize, usize, usize) {
        let kind = |k: u32| {
            self.selector_names
                .keys()
                .filter(|s| *s & 0xf000_0000 == k)
                .count()
        };
        (kind(SEL_ASSET), kind(SEL_ROLE), kind(SEL_PEER))
    }
}

/// Full-key prefix length of an endpoint entry in the kernel's trie.
pub const fn endpoint_key_bits(prefix_len: u32) -> u32 {
    ENDPOINT_KEY_FIXED_BITS + prefix_len
}

impl PolicyView for CompiledPolicy {
    fn flags(&self, _slot: u8) -> u32 {
        self.flags
    }

    fn isolated(&self, _slot: u8, selector: u32) -> bool {
        self.isolated.contains(&selector)
    }

    fn endpoint(&self, _slot: u8, addr: &[u8; 16]) -> Option<Endpoint> {
        self.endpoint_prefix_lens
            .iter()
            .find_map(|len| self.endpoint_index.get(&(*len, mask(*addr, *len))).copied())
    }

    fn rule(&self, key: &RuleKey) -> Option<u32> {
        debug_assert_eq!(key.bytes[0], 0);
        self.rule_prefix_lens.iter().find_map(|len| {
            let masked = RuleKey {
                bytes: mask(key.bytes, (*len).min(RULE_KEY_FULL_BITS)),
            };
            self.rule_index.get(&(*len, masked)).copied()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sekisho_common::Reason;
    use std::path::Path;

    #[test]
    fn port_ranges_split_into_minimal_aligned_blocks() {
        assert_eq!(port_prefixes(443, 443), vec![(443, 16)]);
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(8000, 8003), vec![(8000, 14)]);
        for (first, last) in [(1, 65535), (8000, 8100), (1023, 1025), (65535, 65535)] {
            let blocks = port_prefixes(first, last);
            assert!(blocks.len() <= 30, "{first}-{last}: {blocks:?}");
            // Every port is covered exactly when inside the range.
            for port in 0..=65535u32 {
                let hits = blocks
                    .iter()
                    .filter(|(v, bits)| {
                        let m = if *bits == 0 {
                            0
                        } else {
                            u32::MAX << (32 - bits) >> 16
                        };
                        port & m == u32::from(*v) & m
                    })
                    .count();
                let inside = (u32::from(first)..=u32::from(last)).contains(&port);
                assert_eq!(hits, usize::from(inside), "port {port} in {first}-{last}");
            }
        }
    }

    fn demo() -> CompiledPolicy {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));
        CompiledPolicy::compile(&Config::load(path).expect("demo.toml is valid"))
    }

    fn pkt(src: &str, dst: &str, proto: u8, dport: u16, from_lan: bool) -> Packet {
        let (src, _) = addr16(src.parse().unwrap());
        let (dst, _) = addr16(dst.parse().unwrap());
        Packet {
            src,
            dst,
            sport: 40000,
            dport,
            proto,
            src_mac: if from_lan {
                [2, 0, 0, 0, 0, 0x0a]
            } else {
                [0; 6]
            },
            from_lan,
            tcp_flags: 0,
        }
    }

    #[test]
    fn demo_policy_r2_terminals_reach_the_cs_but_not_the_peers() {
        let p = demo();
        assert!(
            p.decide(&pkt("192.0.2.21", "192.0.2.10", proto::TCP, 443, true))
                .is_ok()
        );
        assert!(
            p.decide(&pkt("192.0.2.21", "192.0.2.10", proto::TCP, 8050, true))
                .is_ok()
        );
        assert_eq!(
            p.decide(&pkt("192.0.2.21", "192.0.2.10", proto::TCP, 22, true)),
            Err(Reason::NoRule)
        );
        assert_eq!(
            p.decide(&pkt("192.0.2.21", "203.0.113.10", proto::TCP, 443, true)),
            Err(Reason::NoRule)
        );
        assert!(
            p.decide(&pkt(
                "2001:db8:21::15",
                "2001:db8:10::a",
                proto::ICMPV6,
                0,
                true
            ))
            .is_ok()
        );
    }

    #[test]
    fn demo_policy_r1_cs_reaches_only_peers_on_their_ports() {
        let p = demo();
        assert!(
            p.decide(&pkt("192.0.2.10", "203.0.113.10", proto::TCP, 443, true))
                .is_ok()
        );
        assert!(
            p.decide(&pkt("192.0.2.10", "203.0.113.20", proto::UDP, 123, true))
                .is_ok()
        );
        assert_eq!(
            p.decide(&pkt("192.0.2.10", "203.0.113.20", proto::UDP, 124, true)),
            Err(Reason::NoRule)
        );
        assert_eq!(
            p.decide(&pkt("192.0.2.10", "203.0.113.100", proto::TCP, 443, true)),
            Err(Reason::UnknownDestination)
        );
        assert!(
            p.decide(&pkt(
                "2001:db8:10::a",
                "2001:db8:ff::a",
                proto::TCP,
                443,
                true
            ))
            .is_ok()
        );
        assert_eq!(
            p.decide(&pkt(
                "2001:db8:10::a",
                "2001:db8:ff::64",
                proto::TCP,
                443,
                true
            )),
            Err(Reason::UnknownDestination)
        );
    }

    #[test]
    fn demo_policy_r5_unknown_and_spoofed_sources_are_denied() {
        let p = demo();
        assert_eq!(
            p.decide(&pkt("192.0.2.29", "192.0.2.10", proto::TCP, 443, true)),
            Err(Reason::UnknownSource)
        );
        // The CS is registered with its MAC: its address from another card is spoofed.
        let mut spoof = pkt("192.0.2.10", "203.0.113.10", proto::TCP, 443, true);
        spoof.src_mac = [2, 0, 0, 0, 0, 0x1d];
        assert_eq!(p.decide(&spoof), Err(Reason::Spoofed));
        // A LAN asset's address arriving from the WAN is spoofed too.
        assert_eq!(
            p.decide(&pkt("192.0.2.21", "192.0.2.10", proto::TCP, 443, false)),
            Err(Reason::Spoofed)
        );
        assert_eq!(
            p.decide(&pkt("203.0.113.100", "192.0.2.10", proto::TCP, 8443, false)),
            Err(Reason::UnknownSource)
        );
    }

    #[test]
    fn demo_policy_peer_initiated_flows_need_their_own_rule() {
        let p = demo();
        assert!(
            p.decide(&pkt("203.0.113.10", "192.0.2.10", proto::TCP, 8443, false))
                .is_ok()
        );
        assert_eq!(
            p.decide(&pkt("203.0.113.20", "192.0.2.10", proto::TCP, 8443, false)),
            Err(Reason::NoRule)
        );
        assert_eq!(
            p.decide(&pkt("203.0.113.10", "192.0.2.21", proto::TCP, 8443, false)),
            Err(Reason::NoRule)
        );
    }

    #[test]
    fn isolation_cuts_every_flow_of_its_target_and_nothing_else() {
        let mut p = demo();
        let cs_to_pref = pkt("192.0.2.10", "203.0.113.10", proto::TCP, 443, true);
        let term_to_cs = pkt("192.0.2.21", "192.0.2.10", proto::TCP, 443, true);
        let cs_to_jlis = pkt("192.0.2.10", "203.0.113.20", proto::TCP, 443, true);
        p.set_isolation(["peer:prefecture"]).unwrap();
        assert_eq!(p.decide(&cs_to_pref), Err(Reason::Isolated));
        assert!(p.decide(&term_to_cs).is_ok());
        assert!(p.decide(&cs_to_jlis).is_ok());
        p.set_isolation(["asset:cs01"]).unwrap();
        assert_eq!(p.decide(&cs_to_pref), Err(Reason::Isolated));
        assert_eq!(p.decide(&term_to_cs), Err(Reason::Isolated));
        p.set_isolation(["role:terminal"]).unwrap();
        assert_eq!(p.decide(&term_to_cs), Err(Reason::Isolated));
        assert!(p.decide(&cs_to_pref).is_ok());
        p.set_isolation(["all"]).unwrap();
        assert_eq!(p.decide(&cs_to_jlis), Err(Reason::Isolated));
        p.set_isolation([]).unwrap();
        assert!(p.decide(&cs_to_pref).is_ok());
        assert!(p.set_isolation(["asset:nobody"]).is_err());
    }

    #[test]
    fn the_first_rule_covering_a_port_is_the_one_recorded() {
        let p = demo();
        let r = p
            .decide(&pkt("192.0.2.21", "192.0.2.10", proto::TCP, 443, true))
            .unwrap();
        assert_eq!(r, 1);
        assert!(p.rule_names[&1].contains("role:terminal → asset:cs01"));
    }
}
