//! sekisho's TC classifiers: one for LAN interfaces (CS, terminals), one for WAN interfaces
//! (住基ネット). Both run at ingress, so every packet the gateway forwards is decided before
//! it is routed, and decide it the same way:
//!
//! 1. Parse: Ethernet → (ARP passes) → IPv4/IPv6 → L4 ports. Tagged frames, other
//!    Ethernet types, fragments, IPv6 routing/fragment headers, long extension chains and
//!    truncated headers are dropped with their own reason — nothing is passed unparsed.
//! 2. Connection tracking: a packet of a flow the policy allowed passes (`Established`),
//!    and so does its reply (`Reply`), as long as the flow was allowed by the generation in
//!    force; a flow from an older generation is decided again and cut if no longer allowed.
//! 3. Otherwise the policy decides (`sekisho_common::decide`), with keyed lookups only.
//!
//! The generation is read once per packet and selects the policy slot, so a packet is never
//! decided by a mix of two policies. Generation 0 means no policy: everything is dropped.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic compiles to the BPF atomic add
// instruction (`lock +=`), as `__sync_fetch_and_add` does in C. The kernel programs are
// built with nightly (build-std) anyway.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{classifier, map},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key,
    },
    programs::TcContext,
};
use sekisho_common::{
    Counter, DIR_FROM_LAN, DIR_FROM_WAN, DeniedValue, ENDPOINT_KEY_FIXED_BITS, EVENT_ALLOW,
    EVENT_CUT, EVENT_DENY, Endpoint, EndpointKey, FlowEvent, FlowKey, FlowKey4, FlowValue,
    IsolationKey, MODE_MONITOR, REASONS, RULE_KEY_FULL_BITS, Reason, RuleKey, RuleValue, SLOTS,
    Settings, State, VERDICT_ALLOW, VERDICT_DENY, VERDICT_MONITOR, VERDICTS, Violations, capacity,
    counter_index,
    decide::{Packet, PolicyView, decide_flow},
    proto, v4_mapped,
};

#[map(name = "SEKISHO_STATE")]
static STATE: Array<State> = Array::with_max_entries(1, 0);

#[map(name = "SEKISHO_SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(SLOTS, 0);

#[map(name = "SEKISHO_ENDPOINTS")]
static ENDPOINTS: LpmTrie<EndpointKey, Endpoint> =
    LpmTrie::with_max_entries(capacity::ENDPOINTS, 0);

#[map(name = "SEKISHO_RULES")]
static RULES: LpmTrie<RuleKey, RuleValue> = LpmTrie::with_max_entries(capacity::RULES, 0);

#[map(name = "SEKISHO_FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(capacity::FLOWS, 0);

#[map(name = "SEKISHO_FLOWS4")]
static FLOWS4: LruHashMap<FlowKey4, FlowValue> = LruHashMap::with_max_entries(capacity::FLOWS, 0);

#[map(name = "SEKISHO_COUNTERS")]
static COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(sekisho_common::DIRECTIONS * VERDICTS, 0);

#[map(name = "SEKISHO_ISOLATED")]
static ISOLATED: HashMap<IsolationKey, u8> = HashMap::with_max_entries(capacity::ISOLATED, 0);

#[map(name = "SEKISHO_VIOLATIONS")]
static VIOLATIONS: LruPerCpuHashMap<[u8; 16], Violations> =
    LruPerCpuHashMap::with_max_entries(capacity::VIOLATIONS, 0);

#[map(name = "SEKISHO_ACCOUNTS")]
static ACCOUNTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(capacity::ACCOUNTS, 0);

#[map(name = "SEKISHO_LOCAL")]
static LOCAL: HashMap<[u8; 16], u8> = HashMap::with_max_entries(capacity::LOCAL, 0);

#[map(name = "SEKISHO_DENIED")]
static DENIED: LruHashMap<FlowKey, DeniedValue> = LruHashMap::with_max_entries(capacity::DENIED, 0);

#[map(name = "SEKISHO_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Flow events the ring buffer had no room for (user space writes a gap record for them).
#[map(name = "SEKISHO_LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SEKISHO_REASONS")]
static REASON_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASONS, 0);

#[classifier]
pub fn sekisho_lan(ctx: TcContext) -> i32 {
    handle(&ctx, true)
}

#[classifier]
pub fn sekisho_wan(ctx: TcContext) -> i32 {
    handle(&ctx, false)
}

/// Never attached: the baseline that `cargo xtask bench` subtracts, so that figures show
/// the cost of sekisho's decision and not of BPF_PROG_TEST_RUN itself.
#[classifier]
pub fn sekisho_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_HLEN: usize = 40;
/// Extension headers walked before giving up (`Ipv6Extension`): enough for the
/// hop-by-hop and destination options a real stack sends, bounded for the verifier.
const IPV6_MAX_EXT: usize = 4;
/// Bytes made linear before parsing: Ethernet + IPv6 + a few extension headers + TCP.
const PULL_LEN: u32 = 160;

#[inline(always)]
fn handle(ctx: &TcContext, from_lan: bool) -> i32 {
    let mut mode = sekisho_common::MODE_ENFORCE;
    let reason = match classify(ctx, from_lan, &mut mode) {
        Ok(r) | Err(r) => r,
    };
    let verdict = if reason.is_pass() {
        VERDICT_ALLOW
    } else if mode == MODE_MONITOR && reason != Reason::Isolated {
        // Monitor mode passes what the policy would drop, never a cut-off: an operator's
        // isolation is obeyed whatever the mode.
        VERDICT_MONITOR
    } else {
        VERDICT_DENY
    };
    let direction = if from_lan { DIR_FROM_LAN } else { DIR_FROM_WAN };
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(direction, verdict)) {
        // Per-CPU entry: no other writer, plain adds are safe.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(ctx.len());
        }
    }
    if let Some(c) = REASON_COUNTS.get_ptr_mut(u32::from(reason as u8)) {
        unsafe { *c += 1 };
    }
    if verdict == VERDICT_DENY {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

/// Bounds-checked pointer into the linear packet data.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*const T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Reason::Malformed);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, Reason> {
    let p = ptr_at::<T>(ctx, offset)?;
    // Packet data has no alignment guarantee.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

/// Copies a header at an offset only known at run time (IPv4 options, IPv6 extension
/// headers): `bpf_skb_load_bytes` keeps the verifier out of variable packet offsets.
#[inline(always)]
fn load_at<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, Reason> {
    ctx.load::<T>(offset).map_err(|_| Reason::Malformed)
}

#[inline(always)]
fn load_be16(ctx: &TcContext, offset: usize) -> Result<u16, Reason> {
    Ok(u16::from_be_bytes(load::<[u8; 2]>(ctx, offset)?))
}

/// Everything but the counting: the reason is `Ok` for a pass, `Err` for a drop, so `?`
/// reads as "stop here and drop".
#[inline(always)]
fn classify(ctx: &TcContext, from_lan: bool, mode: &mut u32) -> Result<Reason, Reason> {
    // A tag the driver or the stack stripped into skb metadata is still a tagged frame.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Err(Reason::Vlan);
    }
    let linear = ctx.data_end() - ctx.data();
    let want = if ctx.len() < PULL_LEN {
        ctx.len()
    } else {
        PULL_LEN
    };
    if (linear as u32) < want {
        // Headers split over fragments of a non-linear skb; make them directly readable.
        let _ = ctx.pull_data(want);
    }

    let ethertype = load_be16(ctx, 12)?;
    match ethertype {
        ETH_P_ARP => return Ok(Reason::Arp),
        ETH_P_IP | ETH_P_IPV6 => {}
        ETH_P_8021Q | ETH_P_8021AD => return Err(Reason::Vlan),
        _ => return Err(Reason::Ethertype),
    }

    let state = STATE.get(0).copied().unwrap_or_default();
    if state.generation == 0 {
        return Err(Reason::NoPolicy);
    }
    let slot = (state.generation % SLOTS) as u8;
    // Read once per packet: the decision below uses these flags, never a second lookup.
    let mut flags = 0;
    if let Some(settings) = SETTINGS.get(u32::from(slot)) {
        *mode = settings.mode;
        flags = settings.flags;
    }
    if ethertype == ETH_P_IP {
        if let Some(reason) = established_v4(ctx, state.generation) {
            return Ok(reason);
        }
    }

    let mut pkt = Packet {
        from_lan,
        src_mac: load::<[u8; 6]>(ctx, 6)?,
        ..Packet::default()
    };
    let l4_off = if ethertype == ETH_P_IP {
        parse_ipv4(ctx, &mut pkt)?
    } else {
        let (off, hop_limit) = parse_ipv6(ctx, &mut pkt)?;
        if pkt.proto == proto::ICMPV6 && hop_limit == 255 {
            let icmp_type: u8 = load_at(ctx, off)?;
            // Router/neighbour solicitation and advertisement, redirect: link-local
            // only (hop limit 255 proves it was not routed), and IPv6 needs them.
            if (133..=137).contains(&icmp_type) {
                return Ok(Reason::NeighborDiscovery);
            }
        }
        off
    };
    // The gateway's own traffic is not the segment's: its input chain decides.
    if unsafe { LOCAL.get(&pkt.dst) }.is_some() {
        return Ok(Reason::Local);
    }
    // Headers without options or extensions put L4 at a constant offset, which direct
    // packet access reads without a helper call: the path nearly every packet takes.
    const V4_L4: usize = ETH_HLEN + 20;
    const V6_L4: usize = ETH_HLEN + IPV6_HLEN;
    if l4_off == V4_L4 {
        parse_l4(ctx, V4_L4, &Direct, &mut pkt)?;
    } else if l4_off == V6_L4 {
        parse_l4(ctx, V6_L4, &Direct, &mut pkt)?;
    } else {
        parse_l4(ctx, l4_off, &Copied, &mut pkt)?;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let verdict = if ethertype == ETH_P_IP {
        track_and_decide::<V4>(state.generation, slot, flags, &pkt, ctx.len(), ifindex)
    } else {
        track_and_decide::<V6>(state.generation, slot, flags, &pkt, ctx.len(), ifindex)
    };
    if let Err(reason) = verdict {
        if from_lan {
            count_violation(&pkt.src);
        }
        let passed = *mode == MODE_MONITOR && reason != Reason::Isolated;
        let verdict = if passed {
            VERDICT_MONITOR
        } else {
            VERDICT_DENY
        };
        record_denied(&pkt, reason, verdict, state.generation, ctx.len(), ifindex);
    }
    verdict
}

/// Adds to a counter other CPUs may be adding to.
#[inline(always)]
unsafe fn atomic_add(counter: *mut u64, value: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Hands an event to user space, written in place in the ring buffer (the BPF stack has
/// no room for a copy); a full ring buffer is counted, never silent.
#[inline(always)]
fn emit(fill: impl FnOnce(*mut FlowEvent)) {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            fill(entry.as_mut_ptr());
            entry.submit(0);
        }
        None => {
            if let Some(c) = LOST.get_ptr_mut(0) {
                // Per-CPU entry: no other writer.
                unsafe { *c += 1 };
            }
        }
    }
}

/// Fills the fields every event has.
#[inline(always)]
unsafe fn fill_event(e: *mut FlowEvent, kind: u8, reason: Reason, verdict: u32, pkt: &Packet) {
    unsafe {
        (*e).kind = kind;
        (*e).reason = reason as u8;
        (*e).verdict = verdict as u8;
        (*e).proto = pkt.proto;
        (*e).src = pkt.src;
        (*e).dst = pkt.dst;
        (*e).sport = pkt.sport;
        (*e).dport = pkt.dport;
        (*e).from_lan = u8::from(pkt.from_lan);
        (*e)._pad = [0; 2];
    }
}

/// Aggregates a denied packet into its flow's entry; the first packet of a denied flow is
/// also an event, so the attempt is in the history even if nothing else follows.
#[inline(always)]
fn record_denied(
    pkt: &Packet,
    reason: Reason,
    verdict: u32,
    generation: u32,
    len: u32,
    ifindex: u32,
) {
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(d) = DENIED.get_ptr_mut(&key) {
        // Shared between CPUs: the counters are added atomically; the time and flags are
        // a last-writer-wins hint.
        unsafe {
            atomic_add(&raw mut (*d).packets, 1);
            atomic_add(&raw mut (*d).bytes, u64::from(len));
            (*d).last_ns = bpf_ktime_get_coarse_ns();
            (*d).tcp_flags |= pkt.tcp_flags;
        }
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let value = DeniedValue {
        generation,
        reason: reason as u8,
        verdict: verdict as u8,
        from_lan: u8::from(pkt.from_lan),
        tcp_flags: pkt.tcp_flags,
        ifindex,
        _pad: 0,
        first_ns: now,
        last_ns: now,
        packets: 1,
        bytes: u64::from(len),
    };
    let _ = DENIED.insert(&key, &value, 0);
    emit(|e| unsafe {
        fill_event(e, EVENT_DENY, reason, verdict, pkt);
        (*e).ifindex = ifindex;
        (*e).generation = generation;
        (*e).rule = 0;
        (*e).tcp_flags = pkt.tcp_flags;
        (*e).first_ns = now;
        (*e).last_ns = now;
        (*e).fwd = Counter {
            packets: 1,
            bytes: u64::from(len),
        };
        (*e).rev = Counter::default();
    });
}

/// Counts a denied packet against its LAN source address, for the automatic triggers
/// (a host that keeps trying what the policy forbids).
#[inline(always)]
fn count_violation(src: &[u8; 16]) {
    match VIOLATIONS.get_ptr_mut(src) {
        // Per-CPU value: no other writer.
        Some(v) => unsafe { (*v).packets += 1 },
        None => {
            let _ = VIOLATIONS.insert(src, &Violations { packets: 1 }, 0);
        }
    }
}

/// The path nearly every packet takes: IPv4 without options or fragmentation, TCP or UDP,
/// a flow already allowed by the generation in force. Reads the few bytes it needs in
/// place, one bounds check, one hash lookup. `None` sends the packet down the full path,
/// which checks everything again from the start.
#[inline(always)]
fn established_v4(ctx: &TcContext, generation: u32) -> Option<Reason> {
    // Ethernet + IPv4 without options + a whole TCP header (UDP packets this short
    // take the full path).
    let p = ptr_at::<[u8; ETH_HLEN + 20 + 20]>(ctx, 0).ok()?;
    let b = unsafe { &*p };
    let proto = b[23];
    let frag = u16::from_be_bytes([b[20], b[21]]);
    if b[14] != 0x45 || frag & 0x3fff != 0 || (proto != proto::TCP && proto != proto::UDP) {
        return None;
    }
    if proto == proto::TCP && b[46] >> 4 < 5 {
        return None;
    }
    let key = FlowKey4 {
        src: [b[26], b[27], b[28], b[29]],
        dst: [b[30], b[31], b[32], b[33]],
        sport: u16::from_be_bytes([b[34], b[35]]),
        dport: u16::from_be_bytes([b[36], b[37]]),
        proto,
        _pad: [0; 3],
    };
    let flow = FLOWS4.get_ptr_mut(&key)?;
    if unsafe { (*flow).generation } != generation {
        return None;
    }
    let flags = if proto == proto::TCP { b[47] } else { 0 };
    account_flow(flow, ctx.len(), false, flags);
    Some(Reason::Established)
}

/// Fills addresses and protocol; returns the L4 offset.
#[inline(always)]
fn parse_ipv4(ctx: &TcContext, pkt: &mut Packet) -> Result<usize, Reason> {
    // One copy of the fixed header: a single bounds check at a constant offset, which
    // the verifier can follow.
    let h: [u8; 20] = load(ctx, ETH_HLEN)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(Reason::Malformed);
    }
    // Options, if any, must be present too.
    load_at::<[u8; 4]>(ctx, ETH_HLEN + ihl - 4)?;
    let frag = u16::from_be_bytes([h[6], h[7]]);
    // More-fragments set or a non-zero offset: only the first fragment has ports, and
    // the others cannot be tied to it here.
    if frag & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    pkt.proto = h[9];
    pkt.src = v4_mapped([h[12], h[13], h[14], h[15]]);
    pkt.dst = v4_mapped([h[16], h[17], h[18], h[19]]);
    Ok(ETH_HLEN + ihl)
}

/// Fills addresses and protocol after walking the extension headers; returns the L4
/// offset and the hop limit.
#[inline(always)]
fn parse_ipv6(ctx: &TcContext, pkt: &mut Packet) -> Result<(usize, u8), Reason> {
    let h: [u8; IPV6_HLEN] = load(ctx, ETH_HLEN)?;
    if h[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let hop_limit = h[7];
    let mut next = h[6];
    let mut i = 0;
    while i < 16 {
        pkt.src[i] = h[8 + i];
        pkt.dst[i] = h[24 + i];
        i += 1;
    }
    let mut off = ETH_HLEN + IPV6_HLEN;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            // Hop-by-hop and destination options: skip.
            0 | 60 => {
                let hdr: [u8; 2] = load_at(ctx, off)?;
                next = hdr[0];
                off += (usize::from(hdr[1]) + 1) * 8;
            }
            // Routing headers can steer a packet past its stated destination, and
            // fragments hide their ports.
            43 => return Err(Reason::Ipv6Extension),
            44 => return Err(Reason::Fragment),
            _ => {
                pkt.proto = next;
                return Ok((off, hop_limit));
            }
        }
    }
    Err(Reason::Ipv6Extension)
}

/// How a header is read: directly from packet memory (constant offsets) or copied out by
/// the kernel (offsets known only at run time).
trait Fetch {
    fn fetch<T: Copy>(&self, ctx: &TcContext, offset: usize) -> Result<T, Reason>;
}

struct Direct;
struct Copied;

impl Fetch for Direct {
    #[inline(always)]
    fn fetch<T: Copy>(&self, ctx: &TcContext, offset: usize) -> Result<T, Reason> {
        load(ctx, offset)
    }
}

impl Fetch for Copied {
    #[inline(always)]
    fn fetch<T: Copy>(&self, ctx: &TcContext, offset: usize) -> Result<T, Reason> {
        load_at(ctx, offset)
    }
}

/// Fills the ports (ICMP echo identifier for ICMP).
#[inline(always)]
fn parse_l4<F: Fetch>(ctx: &TcContext, off: usize, f: &F, pkt: &mut Packet) -> Result<(), Reason> {
    match pkt.proto {
        proto::TCP => {
            let hdr: [u8; 20] = f.fetch(ctx, off)?;
            if hdr[12] >> 4 < 5 {
                return Err(Reason::Malformed);
            }
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            pkt.tcp_flags = hdr[13];
        }
        proto::UDP => {
            let hdr: [u8; 8] = f.fetch(ctx, off)?;
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let hdr: [u8; 8] = f.fetch(ctx, off)?;
            let id = u16::from_be_bytes([hdr[4], hdr[5]]);
            // Echo request keys the flow by its identifier as source port, the echo
            // reply as destination port, so the reply finds the request reversed.
            match (pkt.proto, hdr[0]) {
                (proto::ICMP, 8) | (proto::ICMPV6, 128) => pkt.sport = id,
                (proto::ICMP, 0) | (proto::ICMPV6, 129) => pkt.dport = id,
                _ => {}
            }
        }
        // Other protocols have no ports; the policy decides them by protocol alone, and
        // the configuration has no way to allow them, so they are dropped as `NoRule`.
        _ => {}
    }
    Ok(())
}

/// The kernel's view of one slot's policy; the slot's flags were read with the mode.
struct Maps {
    flags: u32,
}

impl PolicyView for Maps {
    #[inline(always)]
    fn endpoint(&self, slot: u8, addr: &[u8; 16]) -> Option<Endpoint> {
        let key = Key::new(
            ENDPOINT_KEY_FIXED_BITS + 128,
            EndpointKey {
                slot,
                addr: *addr,
                _pad: [0; 3],
            },
        );
        ENDPOINTS.get(&key).copied()
    }

    #[inline(always)]
    fn flags(&self, _slot: u8) -> u32 {
        self.flags
    }

    #[inline(always)]
    fn isolated(&self, slot: u8, selector: u32) -> bool {
        let key = IsolationKey {
            slot,
            _pad: [0; 3],
            selector,
        };
        unsafe { ISOLATED.get(&key) }.is_some()
    }

    #[inline(always)]
    fn rule(&self, key: &RuleKey) -> Option<u32> {
        RULES
            .get(&Key::new(RULE_KEY_FULL_BITS, *key))
            .map(|v| v.rule)
    }
}

/// A connection-tracking table, one per address family.
trait FlowTable {
    type Key;
    fn key(pkt: &Packet) -> Self::Key;
    fn reversed(key: &Self::Key) -> Self::Key;
    fn get(key: &Self::Key) -> Option<*mut FlowValue>;
    fn insert(key: &Self::Key, value: &FlowValue);
    fn remove(key: &Self::Key);
}

struct V4;
struct V6;

impl FlowTable for V4 {
    type Key = FlowKey4;
    #[inline(always)]
    fn key(pkt: &Packet) -> FlowKey4 {
        FlowKey4 {
            src: [pkt.src[12], pkt.src[13], pkt.src[14], pkt.src[15]],
            dst: [pkt.dst[12], pkt.dst[13], pkt.dst[14], pkt.dst[15]],
            sport: pkt.sport,
            dport: pkt.dport,
            proto: pkt.proto,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn reversed(key: &FlowKey4) -> FlowKey4 {
        key.reversed()
    }
    #[inline(always)]
    fn get(key: &FlowKey4) -> Option<*mut FlowValue> {
        FLOWS4.get_ptr_mut(key)
    }
    #[inline(always)]
    fn insert(key: &FlowKey4, value: &FlowValue) {
        // A full table evicts the least recently used flow; the packet passes either way.
        let _ = FLOWS4.insert(key, value, 0);
    }
    #[inline(always)]
    fn remove(key: &FlowKey4) {
        let _ = FLOWS4.remove(key);
    }
}

impl FlowTable for V6 {
    type Key = FlowKey;
    #[inline(always)]
    fn key(pkt: &Packet) -> FlowKey {
        FlowKey {
            src: pkt.src,
            dst: pkt.dst,
            sport: pkt.sport,
            dport: pkt.dport,
            proto: pkt.proto,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn reversed(key: &FlowKey) -> FlowKey {
        key.reversed()
    }
    #[inline(always)]
    fn get(key: &FlowKey) -> Option<*mut FlowValue> {
        FLOWS.get_ptr_mut(key)
    }
    #[inline(always)]
    fn insert(key: &FlowKey, value: &FlowValue) {
        let _ = FLOWS.insert(key, value, 0);
    }
    #[inline(always)]
    fn remove(key: &FlowKey) {
        let _ = FLOWS.remove(key);
    }
}

/// Counts a packet of `len` bytes against the flow (for its history record) and against
/// both of its ends (for the per-asset and per-peer metrics).
#[inline(always)]
fn account_flow(flow: *mut FlowValue, len: u32, reply: bool, tcp_flags: u8) {
    // Plain adds, not atomic ones (which cost 7 ns on this path): the packets of one
    // direction of a flow arrive on one receive queue (RSS hashes the 5-tuple), so one CPU
    // updates a counter at a time. The time is not read per packet either (12 ns): user
    // space sees a flow's activity from its counters at each sweep.
    unsafe {
        let c = if reply {
            &raw mut (*flow).rev
        } else {
            &raw mut (*flow).fwd
        };
        (*c).packets += 1;
        (*c).bytes += u64::from(len);
        if tcp_flags & !(*flow).tcp_flags != 0 {
            // A flag not seen before (SYN-ACK, FIN, RST) is rare enough to be timed: a
            // TCP flow's end is then known to the microsecond.
            (*flow).tcp_flags |= tcp_flags;
            (*flow).last_ns = bpf_ktime_get_ns();
        }
    }
    account_accounts(unsafe { &*flow }, len);
}

/// The event of a tracked flow: its start (`EVENT_ALLOW`) or its cut (`EVENT_CUT`).
#[inline(always)]
fn flow_event(kind: u8, reason: Reason, pkt: &Packet, flow: *const FlowValue) {
    emit(|e| unsafe {
        fill_event(e, kind, reason, VERDICT_ALLOW, pkt);
        (*e).from_lan = (*flow).from_lan;
        (*e).ifindex = (*flow).ifindex;
        (*e).generation = (*flow).generation;
        (*e).rule = (*flow).rule;
        (*e).tcp_flags = (*flow).tcp_flags;
        (*e).first_ns = (*flow).first_ns;
        (*e).last_ns = (*flow).last_ns;
        (*e).fwd = (*flow).fwd;
        (*e).rev = (*flow).rev;
    });
}

#[inline(always)]
fn track_and_decide<T: FlowTable>(
    generation: u32,
    slot: u8,
    flags: u32,
    pkt: &Packet,
    len: u32,
    ifindex: u32,
) -> Result<Reason, Reason> {
    let key = T::key(pkt);
    if let Some(flow) = T::get(&key) {
        if unsafe { (*flow).generation } != generation {
            redecide::<T>(&key, flow, generation, slot, flags, pkt, true)?;
        }
        account_flow(flow, len, false, pkt.tcp_flags);
        return Ok(Reason::Established);
    }
    let rkey = T::reversed(&key);
    if let Some(flow) = T::get(&rkey) {
        if unsafe { (*flow).generation } != generation {
            let original = Packet {
                src: pkt.dst,
                dst: pkt.src,
                sport: pkt.dport,
                dport: pkt.sport,
                proto: pkt.proto,
                src_mac: [0; 6],
                from_lan: unsafe { (*flow).from_lan } != 0,
                tcp_flags: 0,
            };
            redecide::<T>(&rkey, flow, generation, slot, flags, &original, false)?;
        }
        account_flow(flow, len, true, pkt.tcp_flags);
        return Ok(Reason::Reply);
    }
    let allowed = decide_flow(&Maps { flags }, slot, pkt, true)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let value = FlowValue {
        generation,
        rule: allowed.rule,
        src_account: allowed.src_account,
        dst_account: allowed.dst_account,
        from_lan: u8::from(pkt.from_lan),
        tcp_flags: pkt.tcp_flags,
        _pad: [0; 2],
        ifindex,
        first_ns: now,
        last_ns: now,
        fwd: Counter {
            packets: 1,
            bytes: u64::from(len),
        },
        rev: Counter::default(),
    };
    account_accounts(&value, len);
    T::insert(&key, &value);
    flow_event(EVENT_ALLOW, Reason::Policy, pkt, &value);
    Ok(Reason::Policy)
}

/// Counts a packet against both ends of a flow, for the per-asset and per-peer metrics.
#[inline(always)]
fn account_accounts(flow: &FlowValue, len: u32) {
    for account in [flow.src_account, flow.dst_account] {
        if account != 0 {
            // Per-CPU entry: plain adds are safe.
            if let Some(c) = ACCOUNTS.get_ptr_mut(account) {
                unsafe {
                    (*c).packets += 1;
                    (*c).bytes += u64::from(len);
                }
            }
        }
    }
}

/// A flow allowed by an older generation: keep it if the policy in force still allows it,
/// cut it (and forget it) otherwise. A cut flow's totals go to user space with the event,
/// because the kernel forgets the flow here.
#[inline(always)]
fn redecide<T: FlowTable>(
    key: &T::Key,
    flow: *mut FlowValue,
    generation: u32,
    slot: u8,
    flags: u32,
    original: &Packet,
    check_origin: bool,
) -> Result<(), Reason> {
    match decide_flow(&Maps { flags }, slot, original, check_origin) {
        Ok(allowed) => {
            unsafe {
                (*flow).generation = generation;
                (*flow).rule = allowed.rule;
                (*flow).src_account = allowed.src_account;
                (*flow).dst_account = allowed.dst_account;
            }
            Ok(())
        }
        Err(reason) => {
            flow_event(EVENT_CUT, reason, original, flow);
            T::remove(key);
            Err(reason)
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
