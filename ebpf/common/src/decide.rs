//! The policy decision for the first packet of a flow, apart from packet parsing and from
//! connection tracking, so that the kernel and user space (tests, `policy diff`) run the
//! very same code over their own view of the tables.
//!
//! Order of checks, each one final:
//! 1. The source must be known: an asset when the packet came in on a LAN interface, a peer
//!    when it came in on the WAN (anything else is `UnknownSource`, or `Spoofed` for a
//!    known address on the wrong side). An asset registered with a MAC must send with it.
//! 2. The destination must be an asset or lie in a peer network (`UnknownDestination`).
//! 3. Neither end may be cut off: `isolate all`, or any selector of either end (asset,
//!    role, peer) in the isolation set (`Isolated`). Checked only while an isolation is in
//!    force (the slot's flags say so).
//! 4. A rule must exist for one of the source's selectors (asset, then role, or peer)
//!    towards one of the destination's selectors (asset, then role, or peer), for the
//!    protocol and destination port (`NoRule`). At most four keyed lookups, whatever the
//!    number of rules: the cost never grows with the policy.

use crate::{
    Endpoint, FLAG_ISOLATE_ALL, FLAG_ISOLATIONS, KIND_ASSET, KIND_PEER, Reason, RuleKey, proto,
};

/// Read access to one slot of the compiled policy.
pub trait PolicyView {
    /// Longest-prefix match of `addr` among the endpoints of `slot`.
    fn endpoint(&self, slot: u8, addr: &[u8; 16]) -> Option<Endpoint>;
    /// Longest-prefix match of a full rule key; the rule number when one matches.
    fn rule(&self, key: &RuleKey) -> Option<u32>;
    /// The slot's isolation flags (`FLAG_*`).
    fn flags(&self, slot: u8) -> u32;
    /// Whether `selector` is cut off in `slot`.
    fn isolated(&self, slot: u8, selector: u32) -> bool;
}

/// What the decision needs to know of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub src_mac: [u8; 6],
    /// The packet came in on a LAN interface.
    pub from_lan: bool,
    /// The TCP flags byte (0 for other protocols): recorded, never decided on.
    pub tcp_flags: u8,
}

/// Decides the first packet of a flow. `check_origin` is false when an existing flow is
/// re-decided under a new generation from one of its replies: the side and MAC checks
/// were made on its first packet and cannot be repeated from a reply.
#[inline(always)]
pub fn decide<V: PolicyView>(
    view: &V,
    slot: u8,
    pkt: &Packet,
    check_origin: bool,
) -> Result<u32, Reason> {
    decide_flow(view, slot, pkt, check_origin).map(|d| d.rule)
}

/// An allowed first packet: the rule, and the traffic accounts of both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    pub rule: u32,
    pub src_account: u32,
    pub dst_account: u32,
}

/// [`decide`], with the accounts the flow's traffic is counted against.
#[inline(always)]
pub fn decide_flow<V: PolicyView>(
    view: &V,
    slot: u8,
    pkt: &Packet,
    check_origin: bool,
) -> Result<Allowed, Reason> {
    let src = match view.endpoint(slot, &pkt.src) {
        Some(ep) => ep,
        None => return Err(Reason::UnknownSource),
    };
    if check_origin {
        let expected = if pkt.from_lan { KIND_ASSET } else { KIND_PEER };
        if src.kind != expected {
            return Err(Reason::Spoofed);
        }
        if src.has_mac != 0 && src.mac != pkt.src_mac {
            return Err(Reason::Spoofed);
        }
    }
    let dst = match view.endpoint(slot, &pkt.dst) {
        Some(ep) => ep,
        None => return Err(Reason::UnknownDestination),
    };
    // Whole-protocol rules (ICMP) end before the port; port 0 is never a real TCP/UDP port.
    let port = match pkt.proto {
        proto::TCP | proto::UDP => pkt.dport,
        _ => 0,
    };
    let srcs = selectors(&src);
    let dsts = selectors(&dst);
    let flags = view.flags(slot);
    if flags & FLAG_ISOLATE_ALL != 0 {
        return Err(Reason::Isolated);
    }
    if flags & FLAG_ISOLATIONS != 0 {
        let mut k = 0;
        while k < 2 {
            if (srcs[k] != 0 && view.isolated(slot, srcs[k]))
                || (dsts[k] != 0 && view.isolated(slot, dsts[k]))
            {
                return Err(Reason::Isolated);
            }
            k += 1;
        }
    }
    let mut i = 0;
    while i < 2 {
        let s = srcs[i];
        let mut j = 0;
        while j < 2 {
            let d = dsts[j];
            if s != 0 && d != 0 {
                if let Some(rule) = view.rule(&RuleKey::new(slot, s, d, pkt.proto, port)) {
                    return Ok(Allowed {
                        rule,
                        src_account: crate::account_of(&src),
                        dst_account: crate::account_of(&dst),
                    });
                }
            }
            j += 1;
        }
        i += 1;
    }
    Err(Reason::NoRule)
}

/// The selectors a rule may name an endpoint by, most specific first.
#[inline(always)]
fn selectors(ep: &Endpoint) -> [u32; 2] {
    if ep.kind == KIND_ASSET {
        [ep.asset, ep.role]
    } else {
        [ep.peer, 0]
    }
}
