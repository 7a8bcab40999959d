//! The demo network's addressing plan: every address, prefix, MAC and interface name that
//! [`Topology::build`](crate::Topology::build) configures.
//!
//! Invariants: other crates (configs under `configs/`, the integration tests, `cargo xtask
//! demo`) hard-code these values, so they only change together with them. Each end host has
//! exactly one interface, `eth0`, with one IPv4 and one IPv6 address, and its default routes
//! (both families) point at the gateway's address on the same segment. The gateway `gw` has
//! one interface per segment and forwards between them.
//!
//! ```text
//!   cs ──eth0───────── lan-cs ┐
//!                             │
//!   term1 ─┐                  │
//!   term2 ─┼─ swt/br0 ─ lan-term ─ gw ─ wan0 ─ sww/br0 ─┬─ pref
//!   rogue ─┘                                            ├─ jlis
//!                                                       └─ internet
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

// --- Interface names -------------------------------------------------------------------

/// The gateway's interface towards the Communication Server.
pub const GW_CS_IF: &str = "lan-cs";
/// The gateway's interface towards the terminal LAN switch.
pub const GW_TERM_IF: &str = "lan-term";
/// The gateway's interface towards the WAN switch.
pub const GW_WAN_IF: &str = "wan0";
/// The only interface of every end host.
pub const HOST_IF: &str = "eth0";
/// The bridge inside each switch namespace (`swt`, `sww`).
pub const BRIDGE: &str = "br0";

// --- CS segment: a point-to-point link gw <-> cs ------------------------------------------

/// IPv4 network of the CS link.
pub const CS_NET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// IPv4 prefix length of the CS link.
pub const CS_PREFIX_V4: u8 = 28;
/// IPv6 network of the CS link.
pub const CS_NET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0);
/// IPv6 prefix length of the CS link.
pub const CS_PREFIX_V6: u8 = 64;
/// The gateway's IPv4 address on the CS link.
pub const GW_CS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The gateway's IPv6 address on the CS link.
pub const GW_CS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);
/// The Communication Server's IPv4 address.
pub const CS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The Communication Server's IPv6 address.
pub const CS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0xa);
/// The Communication Server's fixed MAC address (on its `eth0`).
pub const CS_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
/// [`CS_MAC`] in the notation `ip link` uses.
pub const CS_MAC_STR: &str = "02:00:00:00:00:0a";

// --- Terminal LAN, bridged in namespace `swt` ------------------------------------------------

/// IPv4 network of the terminal LAN.
pub const TERM_NET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 16);
/// IPv4 prefix length of the terminal LAN.
pub const TERM_PREFIX_V4: u8 = 28;
/// IPv6 network of the terminal LAN.
pub const TERM_NET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 0);
/// IPv6 prefix length of the terminal LAN.
pub const TERM_PREFIX_V6: u8 = 64;
/// The gateway's IPv4 address on the terminal LAN.
pub const GW_TERM_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 17);
/// The gateway's IPv6 address on the terminal LAN.
pub const GW_TERM_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 1);
/// Business terminal 1, IPv4.
pub const TERM1_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
/// Business terminal 1, IPv6.
pub const TERM1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 0x15);
/// Business terminal 2, IPv4.
pub const TERM2_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 22);
/// Business terminal 2, IPv6.
pub const TERM2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 0x16);
/// The unlisted ("rogue") host on the terminal LAN, IPv4.
pub const ROGUE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 29);
/// The unlisted ("rogue") host on the terminal LAN, IPv6.
pub const ROGUE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x21, 0, 0, 0, 0, 0x1d);

// --- WAN, bridged in namespace `sww` ----------------------------------------------------------

/// IPv4 network of the WAN.
pub const WAN_NET_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
/// IPv4 prefix length of the WAN.
pub const WAN_PREFIX_V4: u8 = 24;
/// IPv6 network of the WAN.
pub const WAN_NET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0);
/// IPv6 prefix length of the WAN.
pub const WAN_PREFIX_V6: u8 = 64;
/// The gateway's IPv4 address on the WAN.
pub const GW_WAN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The gateway's IPv6 address on the WAN.
pub const GW_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// The prefecture server, IPv4.
pub const PREF_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The prefecture server, IPv6.
pub const PREF_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0xa);
/// The J-LIS server, IPv4.
pub const JLIS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// The J-LIS server, IPv6.
pub const JLIS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x14);
/// A host standing for "the Internet" (must never be reachable through sekisho), IPv4.
pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
/// A host standing for "the Internet", IPv6.
pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x64);

#[cfg(test)]
mod tests {
    use super::*;

    fn in_v4(addr: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
        let mask = u32::MAX << (32 - len);
        u32::from(addr) & mask == u32::from(net)
    }

    fn in_v6(addr: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
        let mask = u128::MAX << (128 - len);
        u128::from(addr) & mask == u128::from(net)
    }

    #[test]
    fn every_address_lies_in_its_segment() {
        for a in [GW_CS_V4, CS_V4] {
            assert!(in_v4(a, CS_NET_V4, CS_PREFIX_V4), "{a}");
        }
        for a in [GW_TERM_V4, TERM1_V4, TERM2_V4, ROGUE_V4] {
            assert!(in_v4(a, TERM_NET_V4, TERM_PREFIX_V4), "{a}");
        }
        for a in [GW_WAN_V4, PREF_V4, JLIS_V4, INTERNET_V4] {
            assert!(in_v4(a, WAN_NET_V4, WAN_PREFIX_V4), "{a}");
        }
        for a in [GW_CS_V6, CS_V6] {
            assert!(in_v6(a, CS_NET_V6, CS_PREFIX_V6), "{a}");
        }
        for a in [GW_TERM_V6, TERM1_V6, TERM2_V6, ROGUE_V6] {
            assert!(in_v6(a, TERM_NET_V6, TERM_PREFIX_V6), "{a}");
        }
        for a in [GW_WAN_V6, PREF_V6, JLIS_V6, INTERNET_V6] {
            assert!(in_v6(a, WAN_NET_V6, WAN_PREFIX_V6), "{a}");
        }
        assert!(
            !in_v4(TERM_NET_V4, CS_NET_V4, CS_PREFIX_V4),
            "CS and terminal LAN overlap"
        );
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for name in [GW_CS_IF, GW_TERM_IF, GW_WAN_IF, HOST_IF, BRIDGE] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    #[test]
    fn cs_mac_string_matches_bytes() {
        let s: Vec<String> = CS_MAC.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(s.join(":"), CS_MAC_STR);
    }
}
