//! From the kernel to history records: drains the flow-event ring buffer, ends flows that
//! are finished or idle, flushes aggregated denied flows, and turns lost events into gap
//! records.
//!
//! The kernel tells of a flow's start (and of a cut) at once through the ring buffer; it
//! cannot tell that a flow has ended, so `sweep` reads the flow tables: a TCP flow that has
//! seen FIN or RST and gone quiet, or any flow idle past its protocol's timeout, is
//! recorded with its totals and removed. A flow that vanished without either (the table
//! was full and evicted it) is recorded from the totals last seen, marked `evicted`.

use std::collections::HashMap as StdHashMap;

use super::FastMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use ipnet::IpNet;
use sekisho_common::{
    Counter, DeniedValue, EVENT_ALLOW, EVENT_CUT, EVENT_DENY, FlowEvent, FlowKey, FlowKey4,
    FlowValue, Reason, VERDICT_MONITOR, proto,
};

use super::record::{Close, Event, Record, Verdict};
use crate::config::Config;

/// The kernel maps the recorder owns (taken out of the datapath).
pub struct FlowMaps {
    pub events: RingBuf<MapData>,
    pub flows4: HashMap<MapData, FlowKey4, FlowValue>,
    pub flows6: HashMap<MapData, FlowKey, FlowValue>,
    pub denied: HashMap<MapData, FlowKey, DeniedValue>,
    pub lost: PerCpuArray<MapData, u64>,
}

/// How long a flow may be quiet before it is recorded as ended.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP after FIN or RST.
    pub tcp_closed: Duration,
    pub tcp: Duration,
    pub udp: Duration,
    /// ICMP and anything else.
    pub other: Duration,
    /// A denied flow with no new packet.
    pub denied_idle: Duration,
    /// A denied flow still trying is recorded (and restarted) at least this often.
    pub denied_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_closed: Duration::from_secs(5),
            tcp: Duration::from_secs(600),
            udp: Duration::from_secs(60),
            other: Duration::from_secs(30),
            denied_idle: Duration::from_secs(10),
            denied_max: Duration::from_secs(300),
        }
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Names of what the policy in force knows: assets, peers, rules, interfaces.
#[derive(Debug, Default)]
pub struct Names {
    hosts: FastMap<IpAddr, (Arc<str>, Arc<str>)>,
    /// Longest prefix first.
    peers: Vec<(IpNet, Arc<str>)>,
    /// By rule number - 1.
    rules: Vec<Option<Arc<str>>>,
    interfaces: std::sync::Mutex<FastMap<u32, Option<Arc<str>>>>,
}

/// One end of a flow, named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndName {
    pub asset: Option<Arc<str>>,
    pub role: Option<Arc<str>>,
    pub peer: Option<Arc<str>>,
}

impl Names {
    pub fn from_config(config: &Config) -> Names {
        let mut roles: StdHashMap<&str, Arc<str>> = StdHashMap::new();
        let mut hosts = FastMap::default();
        for asset in &config.assets {
            let role = roles
                .entry(asset.role.as_str())
                .or_insert_with(|| Arc::from(asset.role.as_str()))
                .clone();
            let name: Arc<str> = Arc::from(asset.name.as_str());
            for addr in &asset.addresses {
                hosts.insert(*addr, (name.clone(), role.clone()));
            }
        }
        let mut peers = Vec::new();
        for peer in &config.peers {
            let name: Arc<str> = Arc::from(peer.name.as_str());
            for net in &peer.networks {
                peers.push((*net, name.clone()));
            }
        }
        peers.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let rules = config
            .rules
            .iter()
            .map(|r| r.name.as_deref().map(Arc::from))
            .collect();
        Names {
            hosts,
            peers,
            rules,
            interfaces: Default::default(),
        }
    }

    pub fn end(&self, addr: IpAddr) -> EndName {
        if let Some((asset, role)) = self.hosts.get(&addr) {
            return EndName {
                asset: Some(asset.clone()),
                role: Some(role.clone()),
                peer: None,
            };
        }
        let peer = self
            .peers
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, name)| name.clone());
        EndName {
            peer,
            ..EndName::default()
        }
    }

    pub fn rule(&self, rule: u32) -> Option<Arc<str>> {
        let i = (rule as usize).checked_sub(1)?;
        self.rules.get(i).cloned().flatten()
    }

    /// The interface's name, looked up once per index.
    pub fn interface(&self, ifindex: u32) -> Option<Arc<str>> {
        if ifindex == 0 {
            return None;
        }
        let mut cache = self.interfaces.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(ifindex)
            .or_insert_with(|| {
                nix::net::if_::if_indextoname(ifindex)
                    .ok()
                    .and_then(|c| c.into_string().ok())
                    .map(Arc::from)
            })
            .clone()
    }
}

/// Turns an IPv4-mapped or IPv6 16-byte address into an address.
pub fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// CLOCK_MONOTONIC (the kernel's `bpf_ktime_get_ns`) → microseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct ClockMap {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, as whole microseconds and the nanoseconds left
    /// (0–999): a conversion is then one 64-bit division by a constant, not a 128-bit one
    /// (once per record).
    offset_us: i64,
    offset_rem_ns: u64,
}

impl ClockMap {
    pub fn now() -> ClockMap {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let offset_ns = real - mono;
        ClockMap {
            offset_us: offset_ns.div_euclid(1000) as i64,
            offset_rem_ns: offset_ns.rem_euclid(1000) as u64,
        }
    }

    pub fn to_us(&self, mono_ns: u64) -> i64 {
        (mono_ns.saturating_add(self.offset_rem_ns) / 1000) as i64 + self.offset_us
    }
}

/// The current CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Common fields of a flow record.
#[expect(clippy::too_many_arguments, reason = "one call site per event kind")]
fn flow_record(
    names: &Names,
    event: Event,
    verdict: Verdict,
    reason: u8,
    generation: u32,
    rule: u32,
    ifindex: u32,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
) -> Record {
    let (src, dst) = (ip_of(src), ip_of(dst));
    let s = names.end(src);
    let d = names.end(dst);
    Record {
        event,
        verdict,
        reason,
        generation,
        rule,
        rule_name: names.rule(rule),
        interface: names.interface(ifindex),
        proto,
        src: Some(src),
        dst: Some(dst),
        sport,
        dport,
        src_asset: s.asset,
        src_role: s.role,
        src_peer: s.peer,
        dst_asset: d.asset,
        dst_role: d.role,
        dst_peer: d.peer,
        ..Record::default()
    }
}

/// The record of a kernel event.
pub fn event_record(names: &Names, clock: &ClockMap, e: &FlowEvent) -> Record {
    let (event, verdict, close) = match e.kind {
        EVENT_CUT => (Event::End, Verdict::Allow, Some(Close::Cut)),
        EVENT_DENY if u32::from(e.verdict) == VERDICT_MONITOR => {
            (Event::Start, Verdict::Monitor, None)
        }
        EVENT_DENY => (Event::Start, Verdict::Deny, None),
        _ => (Event::Start, Verdict::Allow, None),
    };
    let mut r = flow_record(
        names,
        event,
        verdict,
        e.reason,
        e.generation,
        e.rule,
        e.ifindex,
        e.proto,
        e.src,
        e.dst,
        e.sport,
        e.dport,
    );
    set_counts(
        &mut r,
        clock,
        (e.first_ns, e.last_ns),
        e.fwd,
        e.rev,
        e.tcp_flags,
    );
    r.close = close;
    r
}

/// A flow's times (kernel clock) and counts, into its record.
fn set_counts(
    r: &mut Record,
    clock: &ClockMap,
    (first_ns, last_ns): (u64, u64),
    fwd: Counter,
    rev: Counter,
    tcp_flags: u8,
) {
    r.first_us = clock.to_us(first_ns);
    r.last_us = clock.to_us(last_ns).max(r.first_us);
    r.packets_fwd = fwd.packets;
    r.bytes_fwd = fwd.bytes;
    r.packets_rev = rev.packets;
    r.bytes_rev = rev.bytes;
    r.tcp_flags = tcp_flags;
}

/// Both flow tables' keys in one form.
fn key6_of4(k: &FlowKey4) -> FlowKey {
    FlowKey {
        src: sekisho_common::v4_mapped(k.src),
        dst: sekisho_common::v4_mapped(k.dst),
        sport: k.sport,
        dport: k.dport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

/// The end record of a tracked flow.
fn end_record(
    names: &Names,
    clock: &ClockMap,
    key: &FlowKey,
    v: &FlowValue,
    close: Close,
) -> Record {
    let mut r = flow_record(
        names,
        Event::End,
        Verdict::Allow,
        Reason::Policy as u8,
        v.generation,
        v.rule,
        v.ifindex,
        key.proto,
        key.src,
        key.dst,
        key.sport,
        key.dport,
    );
    set_counts(
        &mut r,
        clock,
        (v.first_ns, v.last_ns),
        v.fwd,
        v.rev,
        v.tcp_flags,
    );
    r.close = Some(close);
    r
}

/// What `sweep` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub flows_open: u64,
    pub flows_ended: u64,
    pub evicted: u64,
    pub denied_open: u64,
    pub denied_ended: u64,
    pub lost: u64,
}

/// A flow as last read, and when it was last seen active. The kernel does not time every
/// packet (it costs more than the rest of its accounting), so activity is a change of the
/// packet counts between two sweeps, timed to the sweep.
#[derive(Clone, Copy, Debug)]
struct Seen {
    value: FlowValue,
    packets: u64,
    active_ns: u64,
}

impl Seen {
    fn new(value: FlowValue, active_ns: u64) -> Seen {
        Seen {
            value,
            packets: value.fwd.packets + value.rev.packets,
            active_ns: active_ns.max(value.last_ns),
        }
    }
}

/// Reads the kernel maps into records.
pub struct Recorder {
    maps: FlowMaps,
    names: Arc<Names>,
    timeouts: Timeouts,
    /// Flows seen open, with the values last read: a flow that disappears without an end
    /// is recorded from these.
    open: StdHashMap<FlowKey, Seen>,
    /// The lost-event counter already turned into gap records.
    lost_seen: u64,
    last_lost_check_us: i64,
}

impl Recorder {
    pub fn new(maps: FlowMaps, names: Arc<Names>, timeouts: Timeouts) -> Recorder {
        let mut r = Recorder {
            maps,
            names,
            timeouts,
            open: StdHashMap::new(),
            lost_seen: 0,
            last_lost_check_us: ClockMap::now().to_us(monotonic_ns()),
        };
        // Events lost before this daemon started were reported by the one before it (or
        // are a gap it could not write): start counting from what the kernel has now, and
        // say so once if it is not zero.
        r.lost_seen = r.lost_total();
        r
    }

    pub fn set_names(&mut self, names: Arc<Names>) {
        self.names = names;
    }

    fn lost_total(&self) -> u64 {
        self.maps
            .lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// The kernel's count of events the ring buffer had no room for, since the maps were
    /// created.
    pub fn events_lost(&self) -> u64 {
        self.lost_total()
    }

    /// Drains the ring buffer; returns how many events were read.
    pub fn poll(&mut self, out: &mut dyn FnMut(Record)) -> usize {
        let clock = ClockMap::now();
        let mut n = 0;
        while let Some(item) = self.maps.events.next() {
            n += 1;
            if item.len() < std::mem::size_of::<FlowEvent>() {
                continue;
            }
            // SAFETY: the kernel writes a whole `FlowEvent`; read unaligned from the ring.
            let e: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let key = FlowKey {
                src: e.src,
                dst: e.dst,
                sport: e.sport,
                dport: e.dport,
                proto: e.proto,
                _pad: [0; 3],
            };
            match e.kind {
                EVENT_ALLOW => {
                    let value = FlowValue {
                        generation: e.generation,
                        rule: e.rule,
                        from_lan: e.from_lan,
                        tcp_flags: e.tcp_flags,
                        ifindex: e.ifindex,
                        first_ns: e.first_ns,
                        last_ns: e.last_ns,
                        fwd: e.fwd,
                        rev: e.rev,
                        ..FlowValue::default()
                    };
                    self.open.insert(key, Seen::new(value, e.first_ns));
                }
                EVENT_CUT => {
                    self.open.remove(&key);
                }
                EVENT_DENY => {}
                _ => continue,
            }
            out(event_record(&self.names, &clock, &e));
        }
        n
    }

    /// Records ended flows and aggregated denied flows, and lost events as a gap.
    pub fn sweep(&mut self, out: &mut dyn FnMut(Record)) -> SweepStats {
        // Events first, so that a cut reported by the kernel is not mistaken for an
        // eviction below.
        self.poll(out);
        let clock = ClockMap::now();
        let now = monotonic_ns();
        let mut stats = SweepStats::default();
        let mut seen: std::collections::HashSet<FlowKey> = Default::default();
        let mut ended4: Vec<FlowKey4> = Vec::new();
        let mut ended6: Vec<FlowKey> = Vec::new();
        let t = self.timeouts;
        let finished = |k: &FlowKey, v: &FlowValue, active_ns: u64| -> Option<Close> {
            let idle = Duration::from_nanos(now.saturating_sub(active_ns));
            if k.proto == proto::TCP {
                if v.tcp_flags & TCP_RST != 0 && idle >= t.tcp_closed {
                    return Some(Close::Rst);
                }
                if v.tcp_flags & TCP_FIN != 0 && idle >= t.tcp_closed {
                    return Some(Close::Fin);
                }
                (idle >= t.tcp).then_some(Close::Idle)
            } else if k.proto == proto::UDP {
                (idle >= t.udp).then_some(Close::Idle)
            } else {
                (idle >= t.other).then_some(Close::Idle)
            }
        };
        let mut entries: Vec<(FlowKey, FlowValue, Option<FlowKey4>)> = Vec::new();
        for (k, v) in self.maps.flows4.iter().flatten() {
            entries.push((key6_of4(&k), v, Some(k)));
        }
        for (k, v) in self.maps.flows6.iter().flatten() {
            entries.push((k, v, None));
        }
        for (key, value, key4) in entries {
            seen.insert(key);
            let packets = value.fwd.packets + value.rev.packets;
            // A flow first seen here (opened before this daemon started) counts as active
            // now: at worst it is recorded one timeout late.
            let mut s = self
                .open
                .get(&key)
                .copied()
                .unwrap_or_else(|| Seen::new(value, now));
            if packets != s.packets {
                s.packets = packets;
                s.active_ns = now;
            }
            s.active_ns = s.active_ns.max(value.last_ns);
            s.value = value;
            if let Some(close) = finished(&key, &value, s.active_ns) {
                let mut v = value;
                // FIN and RST are timed by the kernel; otherwise the last activity seen.
                if !matches!(close, Close::Fin | Close::Rst) {
                    v.last_ns = s.active_ns;
                }
                out(end_record(&self.names, &clock, &key, &v, close));
                stats.flows_ended += 1;
                self.open.remove(&key);
                match key4 {
                    Some(k4) => ended4.push(k4),
                    None => ended6.push(key),
                }
            } else {
                stats.flows_open += 1;
                self.open.insert(key, s);
            }
        }
        for k in ended4 {
            let _ = self.maps.flows4.remove(&k);
        }
        for k in ended6 {
            let _ = self.maps.flows6.remove(&k);
        }
        let vanished: Vec<FlowKey> = self
            .open
            .keys()
            .filter(|k| !seen.contains(*k))
            .copied()
            .collect();
        for key in vanished {
            if let Some(s) = self.open.remove(&key) {
                let mut v = s.value;
                v.last_ns = s.active_ns;
                out(end_record(&self.names, &clock, &key, &v, Close::Evicted));
                stats.evicted += 1;
            }
        }

        let mut denied_done = Vec::new();
        for (key, d) in self.maps.denied.iter().flatten() {
            let idle = Duration::from_nanos(now.saturating_sub(d.last_ns));
            let age = Duration::from_nanos(now.saturating_sub(d.first_ns));
            if idle < t.denied_idle && age < t.denied_max {
                stats.denied_open += 1;
                continue;
            }
            let verdict = if u32::from(d.verdict) == VERDICT_MONITOR {
                Verdict::Monitor
            } else {
                Verdict::Deny
            };
            let mut r = flow_record(
                &self.names,
                Event::End,
                verdict,
                d.reason,
                d.generation,
                0,
                d.ifindex,
                key.proto,
                key.src,
                key.dst,
                key.sport,
                key.dport,
            );
            let fwd = Counter {
                packets: d.packets,
                bytes: d.bytes,
            };
            set_counts(
                &mut r,
                &clock,
                (d.first_ns, d.last_ns),
                fwd,
                Counter::default(),
                d.tcp_flags,
            );
            r.close = Some(Close::Idle);
            out(r);
            stats.denied_ended += 1;
            denied_done.push(key);
        }
        for k in denied_done {
            let _ = self.maps.denied.remove(&k);
        }

        let lost = self.lost_total();
        let now_us = clock.to_us(now);
        if lost > self.lost_seen {
            stats.lost = lost - self.lost_seen;
            out(Record::gap(self.last_lost_check_us, now_us, stats.lost));
            self.lost_seen = lost;
        }
        self.last_lost_check_us = now_us;
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split offset converts as the whole one would, at every remainder.
    #[test]
    fn kernel_times_convert_to_wall_clock_microseconds() {
        let real_minus_mono: [i128; 4] = [
            1_774_969_200_123_456_789,
            1_774_969_200_123_456_000,
            1_774_969_200_123_456_999,
            1_000,
        ];
        for offset_ns in real_minus_mono {
            let map = ClockMap {
                offset_us: offset_ns.div_euclid(1000) as i64,
                offset_rem_ns: offset_ns.rem_euclid(1000) as u64,
            };
            for mono in [
                0u64,
                1,
                999,
                1000,
                1001,
                123_456_789_012,
                9_000_000_000_000_000,
            ] {
                let want = ((i128::from(mono) + offset_ns) / 1000) as i64;
                assert_eq!(map.to_us(mono), want, "{offset_ns} + {mono}");
            }
        }
    }

    #[test]
    fn names_resolve_assets_peers_and_rules() {
        const DEMO: &str =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));
        let config = Config::parse_str(DEMO, std::path::Path::new("demo.toml")).unwrap();
        let names = Names::from_config(&config);
        let asset = &config.assets[0];
        let end = names.end(asset.addresses[0]);
        assert_eq!(end.asset.as_deref(), Some(asset.name.as_str()));
        assert_eq!(end.role.as_deref(), Some(asset.role.as_str()));
        let peer = &config.peers[0];
        let inside = match peer.networks[0] {
            IpNet::V4(n) => IpAddr::V4(n.network()),
            IpNet::V6(n) => IpAddr::V6(n.network()),
        };
        assert_eq!(names.end(inside).peer.as_deref(), Some(peer.name.as_str()));
        assert_eq!(
            names.end("203.0.113.254".parse().unwrap()),
            EndName::default()
        );
    }

    #[test]
    fn clock_maps_monotonic_to_wall_time() {
        let clock = ClockMap::now();
        let now = jiff::Timestamp::now().as_microsecond();
        let mapped = clock.to_us(monotonic_ns());
        assert!((mapped - now).abs() < 100_000, "{mapped} vs {now}");
    }

    #[test]
    fn ipv4_mapped_addresses_come_back_as_ipv4() {
        assert_eq!(
            ip_of(sekisho_common::v4_mapped([192, 0, 2, 1])),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let IpAddr::V6(a) = v6 else { unreachable!() };
        assert_eq!(ip_of(a.octets()), v6);
    }
}
