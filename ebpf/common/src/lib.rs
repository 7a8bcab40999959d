//! The `#[repr(C)]` types that sekisho's kernel programs and user space share, and the
//! pure policy decision both of them run.
//!
//! Invariants of every ABI type here: `#[repr(C)]`, explicit `_pad` fields so no byte is
//! left to the compiler, `u8`/`u32` flags instead of `bool`, and keys that user space
//! zero-initialises (padding garbage would make lookups miss). Sizes are asserted at
//! compile time so that a change on one side cannot silently skew the other.
//!
//! Addresses are always 16 bytes: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one
//! table serves both families and an IPv4 prefix `/n` is stored as `/(96 + n)`.
#![no_std]

pub mod decide;

/// Number of policy slots. A reload writes the slot that is not in force and then flips
/// the generation, so a packet never sees a half-written policy (generation `g` lives in
/// slot `g % SLOTS`).
pub const SLOTS: u32 = 2;

/// Names of the maps and programs in the eBPF object; user space finds them by these.
pub mod names {
    pub const PROG_LAN: &str = "sekisho_lan";
    pub const PROG_WAN: &str = "sekisho_wan";
    /// An empty classifier, the benchmark's baseline; never attached.
    pub const PROG_BASELINE: &str = "sekisho_baseline";
    pub const STATE: &str = "SEKISHO_STATE";
    pub const SETTINGS: &str = "SEKISHO_SETTINGS";
    pub const ENDPOINTS: &str = "SEKISHO_ENDPOINTS";
    pub const RULES: &str = "SEKISHO_RULES";
    pub const FLOWS: &str = "SEKISHO_FLOWS";
    pub const FLOWS4: &str = "SEKISHO_FLOWS4";
    pub const COUNTERS: &str = "SEKISHO_COUNTERS";
    pub const REASONS: &str = "SEKISHO_REASONS";
    pub const ISOLATED: &str = "SEKISHO_ISOLATED";
    pub const VIOLATIONS: &str = "SEKISHO_VIOLATIONS";
    pub const LOCAL: &str = "SEKISHO_LOCAL";
    pub const ACCOUNTS: &str = "SEKISHO_ACCOUNTS";
    pub const DENIED: &str = "SEKISHO_DENIED";
    pub const EVENTS: &str = "SEKISHO_EVENTS";
    pub const LOST: &str = "SEKISHO_LOST";
    /// Every map, in the order they are pinned.
    pub const MAPS: [&str; 15] = [
        STATE, SETTINGS, ENDPOINTS, RULES, FLOWS, FLOWS4, COUNTERS, REASONS, ISOLATED, VIOLATIONS,
        LOCAL, ACCOUNTS, DENIED, EVENTS, LOST,
    ];
}

/// Capacity of the kernel tables. LPM tries allocate on insert, so their limits cost
/// nothing until used; the flow table is preallocated.
pub mod capacity {
    /// Endpoint prefixes, both slots together.
    pub const ENDPOINTS: u32 = 1 << 20;
    /// Rule prefixes (a port range expands to several), both slots together.
    pub const RULES: u32 = 1 << 22;
    /// Selectors cut off, both slots together.
    pub const ISOLATED: u32 = 1 << 16;
    /// Traffic accounts: assets at 1..2^16, peers at 2^16 + 1.. (see `account_of`).
    pub const ACCOUNTS: u32 = 1 << 17;
    /// The gateway's own addresses.
    pub const LOCAL: u32 = 1024;
    /// LAN sources whose denied packets are counted.
    pub const VIOLATIONS: u32 = 1 << 14;
    /// Tracked connections, per address family.
    pub const FLOWS: u32 = 1 << 17;
    /// Denied flows being aggregated until user space records them.
    pub const DENIED: u32 = 1 << 16;
    /// Bytes of the ring buffer that carries flow events to user space: about 40,000
    /// events, several seconds of a port scan while the daemon is busy or restarting.
    pub const EVENTS_BYTES: u32 = 1 << 22;
}

/// IPv4-mapped prefix length offset: an IPv4 `/n` is stored as `/(96 + n)`.
pub const V4_MAPPED_OFFSET: u32 = 96;

/// Turns an IPv4 address (network byte order octets) into its IPv4-mapped 16 bytes.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Layout version of the maps. Pinned maps outlive the daemon; a daemon adopts them only
/// when they were written with the layout it knows. Bump on any change to a map's key or
/// value type, size or meaning.
pub const ABI_VERSION: u32 = 5;

/// Global state, one entry (index 0) of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The policy generation in force. 0 means "no policy loaded": everything is dropped.
    pub generation: u32,
    /// [`ABI_VERSION`] of the daemon that wrote the policy in force.
    pub abi: u32,
}

/// Per-slot settings, an array map indexed by slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// [`MODE_ENFORCE`] or [`MODE_MONITOR`].
    pub mode: u32,
    /// [`FLAG_ISOLATE_ALL`], [`FLAG_ISOLATIONS`].
    pub flags: u32,
}

/// Everything is cut off (`sekishoctl isolate all`).
pub const FLAG_ISOLATE_ALL: u32 = 1;
/// Some selectors are cut off: look them up in the isolation map (skipped otherwise, so
/// isolation costs nothing while none is in force).
pub const FLAG_ISOLATIONS: u32 = 2;

/// Key of the isolation map: a selector cut off in one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IsolationKey {
    pub slot: u8,
    pub _pad: [u8; 3],
    pub selector: u32,
}

/// Denied packets counted per LAN source address (the automatic triggers read them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Violations {
    pub packets: u64,
}

pub const MODE_ENFORCE: u32 = 0;
/// Decide and count, but pass what would be dropped.
pub const MODE_MONITOR: u32 = 1;

/// Data part of an endpoint LPM key. Prefix length = 8 (slot) + address bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub slot: u8,
    pub addr: [u8; 16],
    pub _pad: [u8; 3],
}

/// Bits of an [`EndpointKey`] that precede the address.
pub const ENDPOINT_KEY_FIXED_BITS: u32 = 8;

/// What an address is: an asset of the register (host entry) or part of a peer network.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Selector of the asset itself (0 for a peer).
    pub asset: u32,
    /// Selector of the asset's role (0 for a peer).
    pub role: u32,
    /// Selector of the peer (0 for an asset).
    pub peer: u32,
    /// [`KIND_ASSET`] or [`KIND_PEER`].
    pub kind: u8,
    /// 1 when `mac` must match the frame's source address.
    pub has_mac: u8,
    pub mac: [u8; 6],
}

pub const KIND_ASSET: u8 = 1;
pub const KIND_PEER: u8 = 2;

/// Selector kinds occupy the top bits of a selector id, so ids of different kinds never
/// collide in the rule table.
pub const SEL_ASSET: u32 = 1 << 28;
pub const SEL_ROLE: u32 = 2 << 28;
pub const SEL_PEER: u32 = 3 << 28;

/// Data part of a rule LPM key, bytes in network order so that the trie matches the port
/// as a prefix: `slot(1) src_sel(4) dst_sel(4) proto(1) port(2)`.
///
/// Precedence: every rule allows, so any hit allows; the trie returns the longest
/// (most specific port) prefix, and user space writes the first rule of the file last so
/// that for identical prefixes the earliest rule is the one recorded.
/// A rule for a whole protocol (ICMP) stops after `proto` (prefix 80 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub bytes: [u8; 12],
}

/// Prefix length of a rule key that matches every port of its protocol.
pub const RULE_KEY_PROTO_BITS: u32 = 80;
/// Prefix length of a rule key for exactly one port.
pub const RULE_KEY_FULL_BITS: u32 = 96;

impl RuleKey {
    #[inline(always)]
    pub const fn new(slot: u8, src: u32, dst: u32, proto: u8, port: u16) -> Self {
        let s = src.to_be_bytes();
        let d = dst.to_be_bytes();
        let p = port.to_be_bytes();
        Self {
            bytes: [
                slot, s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], proto, p[0], p[1],
            ],
        }
    }
}

/// The rule that allowed a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// 1-based rule number in the configuration ([[allow]] order).
    pub rule: u32,
    pub _pad: u32,
}

/// A connection as seen by its first packet. Replies are found by swapping the ends.
/// For ICMP echo, `sport` is the identifier of a request and `dport` of a reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// An IPv4 connection: the same as [`FlowKey`] in 16 bytes instead of 40, because hashing
/// the key is most of the cost of the path almost every packet takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey4 {
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// What the kernel keeps per tracked connection: the decision, and the flow's accounting
/// for the traffic history (user space reads it when the flow ends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Generation that last allowed this flow; a newer generation re-decides it.
    pub generation: u32,
    /// Rule that allowed it.
    pub rule: u32,
    /// Traffic accounts of its two ends ([`account_of`]), 0 for none.
    pub src_account: u32,
    pub dst_account: u32,
    /// 1 when the first packet came in on a LAN interface.
    pub from_lan: u8,
    /// TCP flags seen in either direction, OR-ed.
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
    /// Interface the first packet came in on.
    pub ifindex: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the first packet, and of the last new TCP
    /// flag (FIN, RST). Not updated on every packet (the clock costs more than the rest of
    /// the accounting): user space tells a flow's activity from its counters.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Initiator → responder.
    pub fwd: Counter,
    /// Replies.
    pub rev: Counter,
}

/// A denied (or, in monitor mode, would-be-denied) flow: its packets are aggregated here,
/// never one event per packet, until user space records and removes the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeniedValue {
    pub generation: u32,
    /// [`Reason`] code.
    pub reason: u8,
    /// [`VERDICT_DENY`] or [`VERDICT_MONITOR`].
    pub verdict: u8,
    pub from_lan: u8,
    pub tcp_flags: u8,
    pub ifindex: u32,
    pub _pad: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// A flow event in the ring buffer, kernel → user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// [`EVENT_ALLOW`], [`EVENT_DENY`] or [`EVENT_CUT`].
    pub kind: u8,
    /// [`Reason`] code: why it was allowed, denied or cut.
    pub reason: u8,
    /// [`VERDICT_ALLOW`], [`VERDICT_DENY`] or [`VERDICT_MONITOR`].
    pub verdict: u8,
    pub proto: u8,
    pub ifindex: u32,
    pub generation: u32,
    pub rule: u32,
    /// The flow as its first packet saw it (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub from_lan: u8,
    pub _pad: [u8; 2],
    pub first_ns: u64,
    pub last_ns: u64,
    pub fwd: Counter,
    pub rev: Counter,
}

/// A flow's first packet was allowed and the flow is now tracked.
pub const EVENT_ALLOW: u8 = 1;
/// A flow's first denied packet (later ones are aggregated in the denied map).
pub const EVENT_DENY: u8 = 2;
/// An allowed flow was cut: a newer generation or an isolation no longer allows it. Carries
/// the flow's totals, because the kernel forgets the flow at that moment.
pub const EVENT_CUT: u8 = 3;

/// Where the accounts of peers start.
pub const PEER_ACCOUNT_BASE: u32 = 1 << 16;

/// The traffic account of an endpoint: its asset number, or the peer's number above
/// [`PEER_ACCOUNT_BASE`]; 0 (no account) beyond the capacity. Bounded by the register,
/// never by what packets claim.
#[inline(always)]
pub const fn account_of(ep: &Endpoint) -> u32 {
    let (number, base) = if ep.kind == KIND_ASSET {
        (ep.asset & 0x0fff_ffff, 0)
    } else {
        (ep.peer & 0x0fff_ffff, PEER_ACCOUNT_BASE)
    };
    if number == 0 || number >= PEER_ACCOUNT_BASE {
        0
    } else {
        base + number
    }
}

/// Packet and byte counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Where a packet entered the gateway.
pub const DIR_FROM_LAN: u32 = 0;
pub const DIR_FROM_WAN: u32 = 1;
pub const DIRECTIONS: u32 = 2;

/// What happened to a packet.
pub const VERDICT_ALLOW: u32 = 0;
pub const VERDICT_DENY: u32 = 1;
/// Would have been dropped, passed because the policy runs in monitor mode.
pub const VERDICT_MONITOR: u32 = 2;
pub const VERDICTS: u32 = 3;

/// Index into the counter array.
#[inline(always)]
pub const fn counter_index(direction: u32, verdict: u32) -> u32 {
    direction * VERDICTS + verdict
}

/// Why a packet was passed or dropped: one numbering for counters, history and metrics.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A rule allowed the first packet of a flow.
    Policy = 1,
    /// A packet of a flow already allowed.
    Established = 2,
    /// A reply of a flow already allowed.
    Reply = 3,
    /// ARP, needed for IPv4 to work at all on a link.
    Arp = 4,
    /// IPv6 neighbour discovery (hop limit 255, so never forwarded traffic).
    NeighborDiscovery = 5,
    /// Addressed to the gateway itself: not forwarded, so its nftables input chain
    /// (default drop) decides it.
    Local = 6,

    /// No rule allows this flow.
    NoRule = 16,
    /// The source address is in neither the asset register nor a peer network.
    UnknownSource = 17,
    /// The destination is in neither the asset register nor a peer network.
    UnknownDestination = 18,
    /// An asset's address with the wrong MAC, or an address on the wrong side.
    Spoofed = 19,
    /// An IP fragment: ports cannot be checked, so fragments are never forwarded.
    Fragment = 20,
    /// Truncated or malformed headers.
    Malformed = 21,
    /// An 802.1Q/802.1ad tagged frame.
    Vlan = 22,
    /// An Ethernet type other than IPv4, IPv6 and ARP.
    Ethertype = 23,
    /// An IPv6 routing header, fragment header or too long a chain of extension headers.
    Ipv6Extension = 24,
    /// No policy generation is loaded: fail closed.
    NoPolicy = 25,
    /// The source or destination is cut off by an operator or a trigger.
    Isolated = 26,
}

/// Size of the per-reason counter array (reasons are < 32).
pub const REASONS: u32 = 32;

impl Reason {
    pub const ALL: [Reason; 17] = [
        Reason::Policy,
        Reason::Established,
        Reason::Reply,
        Reason::Arp,
        Reason::NeighborDiscovery,
        Reason::Local,
        Reason::NoRule,
        Reason::UnknownSource,
        Reason::UnknownDestination,
        Reason::Spoofed,
        Reason::Fragment,
        Reason::Malformed,
        Reason::Vlan,
        Reason::Ethertype,
        Reason::Ipv6Extension,
        Reason::NoPolicy,
        Reason::Isolated,
    ];

    #[inline(always)]
    pub const fn is_pass(self) -> bool {
        (self as u8) < 16
    }

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Policy => "policy",
            Reason::Established => "established",
            Reason::Reply => "reply",
            Reason::Arp => "arp",
            Reason::NeighborDiscovery => "neighbor_discovery",
            Reason::Local => "local",
            Reason::NoRule => "no_rule",
            Reason::UnknownSource => "unknown_source",
            Reason::UnknownDestination => "unknown_destination",
            Reason::Spoofed => "spoofed",
            Reason::Fragment => "fragment",
            Reason::Malformed => "malformed",
            Reason::Vlan => "vlan",
            Reason::Ethertype => "ethertype",
            Reason::Ipv6Extension => "ipv6_extension",
            Reason::NoPolicy => "no_policy",
            Reason::Isolated => "isolated",
        }
    }

    pub fn from_u8(v: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u8 == v)
    }
}

/// IP protocol numbers the datapath knows by name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

const _: () = assert!(core::mem::size_of::<State>() == 8);
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 20);
const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);
const _: () = assert!(core::mem::size_of::<RuleKey>() == 12);
const _: () = assert!(core::mem::size_of::<RuleValue>() == 8);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowKey4>() == 16);
const _: () = assert!(core::mem::size_of::<IsolationKey>() == 8);
const _: () = assert!(core::mem::size_of::<Violations>() == 8);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 72);
const _: () = assert!(core::mem::size_of::<DeniedValue>() == 48);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 104);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
mod pod {
    //! aya's `Pod` marks these as plain bytes for user-space map access.
    use super::*;
    unsafe impl aya::Pod for State {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowKey4 {}
    unsafe impl aya::Pod for IsolationKey {}
    unsafe impl aya::Pod for Violations {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for DeniedValue {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for Counter {}
}
