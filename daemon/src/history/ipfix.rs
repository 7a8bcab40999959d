//! Flow export in IPFIX (RFC 7011) over UDP, so that a prefecture can gather every
//! municipality's flows in one collector (nfdump's nfcapd, pmacct's nfacctd, goflow2).
//!
//! One IPFIX data record per finished flow: every [`Event::End`] record, allowed or
//! denied, with the totals of the flow's lifetime. `Start` records are not exported (the
//! `End` describes the same flow with its counts) and gaps have no IPFIX form; both are
//! counted in [`Counters`]. Each record is a biflow (RFC 5103) whose source is the flow's
//! initiator; see [`IPV4_TEMPLATE`] for the information elements and why.
//!
//! [`Encoder`] turns flows into messages and holds no socket, so the wire format is tested
//! byte for byte without a network; [`Exporter`] buffers flows pushed by the daemon and
//! sends them to the configured collector when flushed.
//!
//! Invariants:
//! - every message is at most `mtu` bytes and carries at least one data record or the
//!   templates;
//! - the header's sequence number counts the data records of every earlier message of the
//!   stream (mod 2^32), including messages the kernel refused to send, so that a collector
//!   sees records lost on the way as a gap in the sequence;
//! - the first message carries both templates, and they are repeated after
//!   `template_messages` messages or `template_interval_ms` without them (RFC 7011 §8.4: over
//!   UDP templates are resent periodically and never withdrawn);
//! - sending never blocks: the socket is non-blocking and a message it cannot take now is
//!   dropped and counted, never retried later.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

use sekisho_common::Reason;

use super::record::{Close, Event, Record, Verdict};

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// Message header: version, length, export time, sequence number, observation domain.
pub const HEADER_LEN: usize = 16;
/// Set header: set id, length.
pub const SET_HEADER_LEN: usize = 4;
/// Set id of a Template Set.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Template (and data set) id of IPv4 flows; ids below 256 are reserved for set ids.
pub const IPV4_TEMPLATE_ID: u16 = 256;
/// Template (and data set) id of IPv6 flows.
pub const IPV6_TEMPLATE_ID: u16 = 257;
/// The private enterprise number RFC 5103 reserves for reverse information elements.
pub const REVERSE_PEN: u32 = 29305;

/// Largest message by default: with IPv6 and UDP headers (48 bytes) it fits an Ethernet
/// MTU of 1500 with room for a tunnel.
pub const DEFAULT_MTU: usize = 1400;
/// Templates are repeated at least this often (RFC 7011 §8.4 leaves the period to the
/// exporter; a restarted collector learns them again within this time).
pub const DEFAULT_TEMPLATE_INTERVAL_MS: u64 = 30_000;
/// … and after this many messages without them.
pub const DEFAULT_TEMPLATE_MESSAGES: u32 = 32;
/// Flows held between flushes before [`Exporter::push`] sends them itself (about 50 full
/// messages: a burst the socket's send buffer takes without refusing any).
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// The send buffer asked for (the kernel caps it at `net.core.wmem_max`).
const SEND_BUFFER: usize = 1 << 20;

/// IANA information element numbers used by the templates.
pub mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const FORWARDING_STATUS: u16 = 89;
    pub const FLOW_END_REASON: u16 = 136;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const BIFLOW_DIRECTION: u16 = 239;
}

/// `forwardingStatus` values (IANA "forwardingStatus" registry, RFC 7270 §4.12): the top
/// two bits are the status (01 forwarded, 10 dropped, 11 consumed), the low six a reason.
pub mod forwarding {
    pub const FORWARDED: u8 = 64;
    pub const DROPPED: u8 = 128;
    pub const DROPPED_ACL_DENY: u8 = 129;
    pub const DROPPED_RPF: u8 = 140;
    pub const CONSUMED_FOR_US: u8 = 195;
}

/// `flowEndReason` values (IANA registry, RFC 5102 §5.11.3).
pub mod end_reason {
    pub const UNKNOWN: u8 = 0;
    pub const IDLE_TIMEOUT: u8 = 1;
    pub const END_OF_FLOW: u8 = 3;
    pub const FORCED_END: u8 = 4;
    pub const LACK_OF_RESOURCES: u8 = 5;
}

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// `biflowDirection` (RFC 5103 §6.3): the source address is the flow's initiator.
pub const BIFLOW_INITIATOR: u8 = 1;

/// One field specifier of a template: an information element and its encoded length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub id: u16,
    pub len: u16,
    /// Enterprise number, for elements outside the IANA registry (sent with the top bit of
    /// the id set).
    pub pen: Option<u32>,
}

const fn iana(id: u16, len: u16) -> Field {
    Field { id, len, pen: None }
}

const fn reverse(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        pen: Some(REVERSE_PEN),
    }
}

/// The IPv4 flow template, in the order the data record carries the values.
///
/// Why these elements:
/// - Times are `flowStart/EndMilliseconds` (absolute, `dateTimeMilliseconds`): the
///   exporter has no sysUpTime, and every collector reads them.
/// - Counters are the lifetime totals of a flow exported once, so `*DeltaCount` and
///   `*TotalCount` are equal; the delta elements are what flow exporters usually send.
/// - The replies' counts are the RFC 5103 reverse elements (PEN 29305, same numbers):
///   tshark decodes them as "Reverse", nfcapd (1.7) files them as the flow's out
///   packets/bytes, and they mean exactly "responder → initiator", unlike
///   `postOctetDeltaCount` (counts after the observation point) or `responderOctets`
///   (layer-4 payload only). `biflowDirection` = initiator says which end is which.
/// - `tcpControlBits` is `unsigned16` since RFC 7125; the flags byte is its low octet.
/// - `forwardingStatus` carries the verdict (see [`forwarding_status`]); `flowEndReason`
///   why the flow ended. Both are one octet. (nfdump 1.7.1, Debian 12's, files
///   `forwardingStatus` as 0 whatever its size; tshark and newer collectors read it.)
/// - No `ingressInterface`: the record names the interface but not its ifindex, and a
///   made-up 0 would read as "interface 0". No enterprise elements of sekisho's own: rule
///   and generation stay in the history, and collectors would only skip them.
pub const IPV4_TEMPLATE: [Field; 15] = [
    iana(ie::FLOW_START_MILLISECONDS, 8),
    iana(ie::FLOW_END_MILLISECONDS, 8),
    iana(ie::SOURCE_IPV4_ADDRESS, 4),
    iana(ie::DESTINATION_IPV4_ADDRESS, 4),
    iana(ie::SOURCE_TRANSPORT_PORT, 2),
    iana(ie::DESTINATION_TRANSPORT_PORT, 2),
    iana(ie::PROTOCOL_IDENTIFIER, 1),
    iana(ie::TCP_CONTROL_BITS, 2),
    iana(ie::FORWARDING_STATUS, 1),
    iana(ie::FLOW_END_REASON, 1),
    iana(ie::BIFLOW_DIRECTION, 1),
    iana(ie::PACKET_DELTA_COUNT, 8),
    iana(ie::OCTET_DELTA_COUNT, 8),
    reverse(ie::PACKET_DELTA_COUNT, 8),
    reverse(ie::OCTET_DELTA_COUNT, 8),
];

/// The IPv6 flow template: [`IPV4_TEMPLATE`] with IPv6 addresses.
pub const IPV6_TEMPLATE: [Field; 15] = [
    iana(ie::FLOW_START_MILLISECONDS, 8),
    iana(ie::FLOW_END_MILLISECONDS, 8),
    iana(ie::SOURCE_IPV6_ADDRESS, 16),
    iana(ie::DESTINATION_IPV6_ADDRESS, 16),
    iana(ie::SOURCE_TRANSPORT_PORT, 2),
    iana(ie::DESTINATION_TRANSPORT_PORT, 2),
    iana(ie::PROTOCOL_IDENTIFIER, 1),
    iana(ie::TCP_CONTROL_BITS, 2),
    iana(ie::FORWARDING_STATUS, 1),
    iana(ie::FLOW_END_REASON, 1),
    iana(ie::BIFLOW_DIRECTION, 1),
    iana(ie::PACKET_DELTA_COUNT, 8),
    iana(ie::OCTET_DELTA_COUNT, 8),
    reverse(ie::PACKET_DELTA_COUNT, 8),
    reverse(ie::OCTET_DELTA_COUNT, 8),
];

const fn record_len(template: &[Field]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < template.len() {
        len += template[i].len as usize;
        i += 1;
    }
    len
}

const fn template_record_len(template: &[Field]) -> usize {
    let mut len = 4;
    let mut i = 0;
    while i < template.len() {
        len += if template[i].pen.is_some() { 8 } else { 4 };
        i += 1;
    }
    len
}

/// Bytes of one IPv4 data record.
pub const IPV4_RECORD_LEN: usize = record_len(&IPV4_TEMPLATE);
/// Bytes of one IPv6 data record.
pub const IPV6_RECORD_LEN: usize = record_len(&IPV6_TEMPLATE);
/// Bytes of the Template Set that carries both templates.
pub const TEMPLATE_SET_LEN: usize =
    SET_HEADER_LEN + template_record_len(&IPV4_TEMPLATE) + template_record_len(&IPV6_TEMPLATE);
/// The smallest `mtu`: the templates and one IPv6 record must fit one message.
pub const MIN_MTU: usize = HEADER_LEN + TEMPLATE_SET_LEN + SET_HEADER_LEN + IPV6_RECORD_LEN;
/// The largest `mtu`: the message length field is 16 bits.
pub const MAX_MTU: usize = u16::MAX as usize;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IpfixError {
    #[error("ipfix message size {mtu} is outside {min}..={max} bytes")]
    Mtu { mtu: usize, min: usize, max: usize },
    #[error("cannot {action} a UDP socket for ipfix collector {collector}")]
    Socket {
        collector: SocketAddr,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How the exporter frames and paces its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Observation domain id in every message header: tells a collector's exporters
    /// apart when several share an address (e.g. one per municipality behind a NAT).
    pub domain: u32,
    /// Largest IPFIX message (the UDP payload) in bytes, [`MIN_MTU`]..=[`MAX_MTU`].
    pub mtu: usize,
    /// Templates again after this long without them.
    pub template_interval_ms: u64,
    /// Templates again after this many messages without them.
    pub template_messages: u32,
    /// Flows [`Exporter::push`] holds before it sends them without waiting for a flush.
    pub max_pending: usize,
}

impl Options {
    /// The defaults, for observation domain `domain`.
    pub const fn new(domain: u32) -> Options {
        Options {
            domain,
            mtu: DEFAULT_MTU,
            template_interval_ms: DEFAULT_TEMPLATE_INTERVAL_MS,
            template_messages: DEFAULT_TEMPLATE_MESSAGES,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// What one data record says: an `End` record reduced to the template's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Initiator and responder; both of one family.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// As recorded, except for ICMP and ICMPv6: 0 (see [`Flow::from_record`]).
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub forwarding_status: u8,
    pub end_reason: u8,
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
}

impl Flow {
    /// The flow an `End` record describes; `None` for `Start` and `Gap` records and for a
    /// record without addresses of one family.
    ///
    /// An ICMP echo flow's record carries the echo identifier as its source port. It is
    /// not sent: collectors read an ICMP flow's ports as type and code (nfdump moves a
    /// non-zero source port into the type/code), so it would show as a made-up type.
    pub fn from_record(rec: &Record) -> Option<Flow> {
        if rec.event != Event::End {
            return None;
        }
        let (src, dst) = match (rec.src?, rec.dst?) {
            (src @ IpAddr::V4(_), dst @ IpAddr::V4(_)) => (src, dst),
            (src @ IpAddr::V6(_), dst @ IpAddr::V6(_)) => (src, dst),
            _ => return None,
        };
        Some(Flow {
            start_ms: millis(rec.first_us),
            end_ms: millis(rec.last_us),
            src,
            dst,
            sport: if matches!(rec.proto, ICMP | ICMPV6) {
                0
            } else {
                rec.sport
            },
            dport: rec.dport,
            proto: rec.proto,
            tcp_flags: rec.tcp_flags,
            forwarding_status: forwarding_status(rec.verdict, rec.reason),
            end_reason: flow_end_reason(rec.close),
            packets_fwd: rec.packets_fwd,
            bytes_fwd: rec.bytes_fwd,
            packets_rev: rec.packets_rev,
            bytes_rev: rec.bytes_rev,
        })
    }

    /// The template (and data set id) this flow is sent with.
    pub fn template_id(&self) -> u16 {
        match self.src {
            IpAddr::V4(_) => IPV4_TEMPLATE_ID,
            IpAddr::V6(_) => IPV6_TEMPLATE_ID,
        }
    }

    /// Bytes of its data record.
    pub fn record_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => IPV4_RECORD_LEN,
            IpAddr::V6(_) => IPV6_RECORD_LEN,
        }
    }

    /// Appends the data record, in template order.
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.start_ms.to_be_bytes());
        buf.extend_from_slice(&self.end_ms.to_be_bytes());
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                buf.extend_from_slice(&src.octets());
                buf.extend_from_slice(&dst.octets());
            }
            (src, dst) => {
                buf.extend_from_slice(&v6(src).octets());
                buf.extend_from_slice(&v6(dst).octets());
            }
        }
        buf.extend_from_slice(&self.sport.to_be_bytes());
        buf.extend_from_slice(&self.dport.to_be_bytes());
        buf.push(self.proto);
        buf.extend_from_slice(&u16::from(self.tcp_flags).to_be_bytes());
        buf.push(self.forwarding_status);
        buf.push(self.end_reason);
        buf.push(BIFLOW_INITIATOR);
        buf.extend_from_slice(&self.packets_fwd.to_be_bytes());
        buf.extend_from_slice(&self.bytes_fwd.to_be_bytes());
        buf.extend_from_slice(&self.packets_rev.to_be_bytes());
        buf.extend_from_slice(&self.bytes_rev.to_be_bytes());
    }
}

/// An IPv6 address as such; an IPv4 one (never paired with IPv6 in a [`Flow`] built by
/// [`Flow::from_record`]) as IPv4-mapped.
fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Microseconds since the epoch to `dateTimeMilliseconds` (unsigned: before 1970 is 0).
fn millis(us: i64) -> u64 {
    u64::try_from(us.div_euclid(1000)).unwrap_or(0)
}

/// The verdict as a `forwardingStatus`.
///
/// Policy denials (no rule, unknown ends, isolation, no policy, and the frame shapes the
/// policy refuses outright: fragments, VLAN tags, other ethertypes, IPv6 extension
/// headers) are "Drop ACL deny"; spoofed sources are what a router's reverse-path check
/// drops, "Drop RPF"; malformed headers have no code of their own and are "Dropped". Flows
/// passed in monitor mode were forwarded, so they read "Forwarded" like allowed ones.
/// Traffic addressed to the gateway itself is "Consumed, terminate for us".
pub fn forwarding_status(verdict: Verdict, reason: u8) -> u8 {
    match (verdict, Reason::from_u8(reason)) {
        (Verdict::Deny, Some(Reason::Spoofed)) => forwarding::DROPPED_RPF,
        (Verdict::Deny, Some(Reason::Malformed) | None) => forwarding::DROPPED,
        (Verdict::Deny, Some(_)) => forwarding::DROPPED_ACL_DENY,
        (Verdict::Allow | Verdict::Monitor, Some(Reason::Local)) => forwarding::CONSUMED_FOR_US,
        (Verdict::Allow | Verdict::Monitor, _) => forwarding::FORWARDED,
    }
}

/// Why the flow ended, as a `flowEndReason`.
pub fn flow_end_reason(close: Option<Close>) -> u8 {
    match close {
        Some(Close::Fin | Close::Rst) => end_reason::END_OF_FLOW,
        Some(Close::Idle) => end_reason::IDLE_TIMEOUT,
        Some(Close::Cut) => end_reason::FORCED_END,
        Some(Close::Evicted) => end_reason::LACK_OF_RESOURCES,
        None => end_reason::UNKNOWN,
    }
}

/// The Template Set with both templates.
pub fn template_set() -> Vec<u8> {
    let mut buf = Vec::with_capacity(TEMPLATE_SET_LEN);
    buf.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    buf.extend_from_slice(&(TEMPLATE_SET_LEN as u16).to_be_bytes());
    for (id, template) in [
        (IPV4_TEMPLATE_ID, &IPV4_TEMPLATE),
        (IPV6_TEMPLATE_ID, &IPV6_TEMPLATE),
    ] {
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&(template.len() as u16).to_be_bytes());
        for field in template {
            match field.pen {
                None => buf.extend_from_slice(&field.id.to_be_bytes()),
                Some(_) => buf.extend_from_slice(&(field.id | 0x8000).to_be_bytes()),
            }
            buf.extend_from_slice(&field.len.to_be_bytes());
            if let Some(pen) = field.pen {
                buf.extend_from_slice(&pen.to_be_bytes());
            }
        }
    }
    debug_assert_eq!(buf.len(), TEMPLATE_SET_LEN);
    buf
}

/// One encoded message and how many data records it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    pub records: u32,
}

/// Frames flows into IPFIX messages for one stream (one collector, one observation
/// domain): keeps the sequence number and decides when the templates go out again.
#[derive(Clone, Debug)]
pub struct Encoder {
    options: Options,
    /// Data records in the messages encoded so far (mod 2^32).
    sequence: u32,
    /// When the templates last went out, and messages encoded since; `None` before.
    templates: Option<(u64, u32)>,
}

impl Encoder {
    pub fn new(options: Options) -> Result<Encoder, IpfixError> {
        if !(MIN_MTU..=MAX_MTU).contains(&options.mtu) {
            return Err(IpfixError::Mtu {
                mtu: options.mtu,
                min: MIN_MTU,
                max: MAX_MTU,
            });
        }
        Ok(Encoder {
            options,
            sequence: 0,
            templates: None,
        })
    }

    /// The sequence number of the next message.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Whether the next message carries the templates: none sent yet, or too long or too
    /// many messages ago.
    pub fn templates_due(&self, now_ms: u64) -> bool {
        self.templates_stale(now_ms)
            || self
                .templates
                .is_some_and(|(_, since)| since >= self.options.template_messages)
    }

    /// None sent yet, or the last too long ago: worth a message of their own.
    fn templates_stale(&self, now_ms: u64) -> bool {
        self.templates.is_none_or(|(at_ms, _)| {
            now_ms.saturating_sub(at_ms) >= self.options.template_interval_ms
        })
    }

    /// Encodes `flows`, in order, into as few messages as fit `mtu`, with the templates in
    /// front when they are due. With no flows, a message of the templates alone when none
    /// went out yet or the last ones are older than `template_interval_ms`: a collector
    /// that restarts during a quiet spell learns them without waiting for traffic. The
    /// messages are meant to be sent in order, now.
    pub fn encode(&mut self, flows: &[Flow], now_ms: u64) -> Vec<Message> {
        let mut messages = Vec::new();
        if flows.is_empty() && self.templates_stale(now_ms) {
            messages.push(self.message(&[], true, now_ms));
        }
        let mut rest = flows;
        while !rest.is_empty() {
            let templates = self.templates_due(now_ms);
            let message = self.message(rest, templates, now_ms);
            rest = &rest[message.records as usize..];
            messages.push(message);
        }
        messages
    }

    /// One message: the templates if asked, then as many of `flows` as fit (at least one,
    /// which `MIN_MTU` guarantees), consecutive flows of one family sharing a data set.
    fn message(&mut self, flows: &[Flow], templates: bool, now_ms: u64) -> Message {
        let mtu = self.options.mtu;
        let mut buf = Vec::with_capacity(mtu);
        buf.extend_from_slice(&VERSION.to_be_bytes());
        buf.extend_from_slice(&[0, 0]); // length, set below
        buf.extend_from_slice(&export_time(now_ms).to_be_bytes());
        buf.extend_from_slice(&self.sequence.to_be_bytes());
        buf.extend_from_slice(&self.options.domain.to_be_bytes());
        if templates {
            buf.extend_from_slice(&template_set());
        }
        let mut records = 0u32;
        // Start offset and id of the data set being filled.
        let mut set: Option<(usize, u16)> = None;
        for flow in flows {
            let id = flow.template_id();
            let same_set = set.is_some_and(|(_, open)| open == id);
            let needed = flow.record_len() + if same_set { 0 } else { SET_HEADER_LEN };
            if buf.len() + needed > mtu {
                break;
            }
            if !same_set {
                close_set(&mut buf, set);
                set = Some((buf.len(), id));
                buf.extend_from_slice(&id.to_be_bytes());
                buf.extend_from_slice(&[0, 0]);
            }
            flow.encode(&mut buf);
            records += 1;
        }
        close_set(&mut buf, set);
        debug_assert!(buf.len() <= mtu);
        let len = buf.len() as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());

        self.sequence = self.sequence.wrapping_add(records);
        self.templates = match self.templates {
            _ if templates => Some((now_ms, 0)),
            Some((at_ms, since)) => Some((at_ms, since.saturating_add(1))),
            None => None,
        };
        Message {
            bytes: buf,
            records,
        }
    }
}

/// Writes the length of the set that starts at `set`'s offset.
fn close_set(buf: &mut [u8], set: Option<(usize, u16)>) {
    if let Some((start, _)) = set {
        let len = (buf.len() - start) as u16;
        buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Seconds since the epoch, as the 32-bit export time (clamped, not wrapped).
fn export_time(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The exporter's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data records in messages the kernel accepted.
    pub records_sent: u64,
    /// Messages the kernel accepted.
    pub messages_sent: u64,
    /// Errors from sending, one per failed attempt (a refusal by the collector, reported
    /// on the next send, counts here even when the retry goes through).
    pub send_errors: u64,
    /// Data records in messages that could not be sent.
    pub records_lost: u64,
    /// `Gap` records pushed: they have no IPFIX form.
    pub gaps_skipped: u64,
    /// Other records not exported: `Start` records, and records without addresses.
    pub records_skipped: u64,
}

/// Sends the history's finished flows to one IPFIX collector over UDP.
///
/// The daemon calls [`push`](Exporter::push) for every record as it is recorded and
/// [`flush`](Exporter::flush) at least every second.
#[derive(Debug)]
pub struct Exporter {
    socket: UdpSocket,
    collector: SocketAddr,
    encoder: Encoder,
    pending: Vec<Flow>,
    max_pending: usize,
    counters: Counters,
    /// Whether the last message could not be sent: errors are logged when sending starts
    /// failing and when it works again, not once per message.
    failing: bool,
}

impl Exporter {
    /// An exporter to `collector` with the default [`Options`] for observation domain
    /// `domain`.
    pub fn new(collector: SocketAddr, domain: u32) -> Result<Exporter, IpfixError> {
        Exporter::with_options(collector, Options::new(domain))
    }

    pub fn with_options(collector: SocketAddr, options: Options) -> Result<Exporter, IpfixError> {
        let encoder = Encoder::new(options)?;
        let socket_error = |action| {
            move |source| IpfixError::Socket {
                collector,
                action,
                source,
            }
        };
        let local: SocketAddr = match collector {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(socket_error("bind"))?;
        // Connected, so that the collector's ICMP refusals come back as send errors and
        // show in the counters; only datagrams from the collector could be received.
        socket.connect(collector).map_err(socket_error("connect"))?;
        socket
            .set_nonblocking(true)
            .map_err(socket_error("configure"))?;
        // Best effort: room for a burst of messages. The kernel silently caps it.
        let _ =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
        Ok(Exporter {
            socket,
            collector,
            encoder,
            pending: Vec::new(),
            max_pending: options.max_pending.max(1),
            counters: Counters::default(),
            failing: false,
        })
    }

    pub fn collector(&self) -> SocketAddr {
        self.collector
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// [`Counters::records_sent`].
    pub fn records_sent(&self) -> u64 {
        self.counters.records_sent
    }

    /// [`Counters::messages_sent`].
    pub fn messages_sent(&self) -> u64 {
        self.counters.messages_sent
    }

    /// [`Counters::send_errors`].
    pub fn send_errors(&self) -> u64 {
        self.counters.send_errors
    }

    /// Flows waiting for the next flush.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes a history record: an `End` is buffered for the next flush, anything else
    /// counted. When `max_pending` flows are waiting they are sent at once (stamped with
    /// the wall clock).
    pub fn push(&mut self, rec: &Record) {
        match rec.event {
            Event::Gap => self.counters.gaps_skipped += 1,
            _ => match Flow::from_record(rec) {
                Some(flow) => self.pending.push(flow),
                None => self.counters.records_skipped += 1,
            },
        }
        if self.pending.len() >= self.max_pending {
            // Bounded memory: a burst of flow ends (an idle sweep, a flow table eviction)
            // goes out now rather than piling up until the daemon's next flush.
            self.flush(wall_clock_ms());
        }
    }

    /// Sends the buffered flows, and the templates when due; `now_ms` is the wall clock in
    /// milliseconds since the epoch. Returns how many messages the kernel took. A message
    /// that cannot be sent is dropped and counted ([`Counters::records_lost`]); the first
    /// failure after a success is logged, and so is the recovery.
    pub fn flush(&mut self, now_ms: u64) -> usize {
        let messages = self.encoder.encode(&self.pending, now_ms);
        self.pending.clear();
        let mut sent = 0;
        for message in &messages {
            match self.send(&message.bytes) {
                Ok(()) => {
                    sent += 1;
                    self.counters.messages_sent += 1;
                    self.counters.records_sent += u64::from(message.records);
                    if self.failing {
                        self.failing = false;
                        tracing::info!(collector = %self.collector, "IPFIX export works again");
                    }
                }
                Err(error) => {
                    self.counters.records_lost += u64::from(message.records);
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            collector = %self.collector,
                            %error,
                            records = message.records,
                            "cannot send IPFIX message; flows are dropped until sending works"
                        );
                    }
                }
            }
        }
        sent
    }

    /// One datagram, retried once if the error was a refusal by the collector: that error
    /// is left over from an earlier datagram (an ICMP port unreachable) and says nothing
    /// about this one.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut retried = false;
        loop {
            match self.socket.send(bytes) {
                Ok(_) => return Ok(()),
                Err(err) => {
                    self.counters.send_errors += 1;
                    if err.kind() == io::ErrorKind::ConnectionRefused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::sync::Arc;
    use std::time::Duration;

    use sekisho_common::Reason;

    use super::*;

    const NOW_MS: u64 = 1_700_000_005_999;

    /// An allowed TCP flow 192.0.2.10:49152 → 198.51.100.20:443 that ended with FIN.
    fn tcp_v4() -> Record {
        Record {
            event: Event::End,
            first_us: 1_700_000_000_123_456,
            last_us: 1_700_000_004_567_890,
            verdict: Verdict::Allow,
            reason: Reason::Policy as u8,
            generation: 3,
            rule: 2,
            rule_name: Some(Arc::from("web")),
            interface: Some(Arc::from("lan0")),
            proto: 6,
            src: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
            dst: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20))),
            sport: 49152,
            dport: 443,
            packets_fwd: 10,
            bytes_fwd: 1500,
            packets_rev: 8,
            bytes_rev: 9000,
            tcp_flags: 0x1b,
            close: Some(Close::Fin),
            ..Record::default()
        }
    }

    /// A denied UDP flow 2001:db8::5:5353 → 2001:db8:1::53:53 that went idle.
    fn udp_v6_denied() -> Record {
        Record {
            event: Event::End,
            first_us: 1_700_000_001_000_000,
            last_us: 1_700_000_002_000_000,
            verdict: Verdict::Deny,
            reason: Reason::NoRule as u8,
            proto: 17,
            src: Some("2001:db8::5".parse().unwrap()),
            dst: Some("2001:db8:1::53".parse().unwrap()),
            sport: 5353,
            dport: 53,
            packets_fwd: 3,
            bytes_fwd: 210,
            close: Some(Close::Idle),
            ..Record::default()
        }
    }

    fn flow(rec: &Record) -> Flow {
        Flow::from_record(rec).expect("an End record with addresses")
    }

    /// `n` IPv4 flows, told apart by their source port.
    fn v4_flows(n: u16) -> Vec<Flow> {
        (0..n)
            .map(|i| Flow {
                sport: 10_000 + i,
                ..flow(&tcp_v4())
            })
            .collect()
    }

    fn encoder(mtu: usize) -> Encoder {
        Encoder::new(Options {
            mtu,
            ..Options::new(0x0102_0304)
        })
        .expect("valid options")
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// A message taken apart the way a collector does, checking every length on the way.
    #[derive(Debug)]
    struct Decoded {
        export_time: u32,
        sequence: u32,
        domain: u32,
        /// Set id and body, in order.
        sets: Vec<(u16, Vec<u8>)>,
    }

    fn decode(bytes: &[u8]) -> Decoded {
        assert!(bytes.len() >= HEADER_LEN, "short message: {bytes:?}");
        assert_eq!(u16_at(bytes, 0), 10, "version");
        assert_eq!(usize::from(u16_at(bytes, 2)), bytes.len(), "message length");
        let mut sets = Vec::new();
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            let id = u16_at(bytes, at);
            let len = usize::from(u16_at(bytes, at + 2));
            assert!(len >= SET_HEADER_LEN, "set length {len} at {at}");
            assert!(at + len <= bytes.len(), "set at {at} overruns the message");
            sets.push((id, bytes[at + SET_HEADER_LEN..at + len].to_vec()));
            at += len;
        }
        Decoded {
            export_time: u32_at(bytes, 4),
            sequence: u32_at(bytes, 8),
            domain: u32_at(bytes, 12),
            sets,
        }
    }

    /// The templates of a Template Set body.
    fn templates(body: &[u8]) -> HashMap<u16, Vec<Field>> {
        let mut found = HashMap::new();
        let mut at = 0;
        while at < body.len() {
            let id = u16_at(body, at);
            let count = u16_at(body, at + 2);
            at += 4;
            let mut fields = Vec::new();
            for _ in 0..count {
                let raw = u16_at(body, at);
                let len = u16_at(body, at + 2);
                at += 4;
                let pen = (raw & 0x8000 != 0).then(|| {
                    at += 4;
                    u32_at(body, at - 4)
                });
                fields.push(Field {
                    id: raw & 0x7fff,
                    len,
                    pen,
                });
            }
            found.insert(id, fields);
        }
        found
    }

    /// One decoded data record: (enterprise, element) → value bytes.
    type Values = HashMap<(Option<u32>, u16), Vec<u8>>;

    /// The data records of a Data Set body.
    fn records(template: &[Field], body: &[u8]) -> Vec<Values> {
        let len: usize = template.iter().map(|f| usize::from(f.len)).sum();
        assert_eq!(body.len() % len, 0, "no padding expected");
        body.chunks(len)
            .map(|chunk| {
                let mut at = 0;
                template
                    .iter()
                    .map(|f| {
                        let value = chunk[at..at + usize::from(f.len)].to_vec();
                        at += usize::from(f.len);
                        ((f.pen, f.id), value)
                    })
                    .collect()
            })
            .collect()
    }

    fn number(value: &[u8]) -> u64 {
        value.iter().fold(0, |n, b| n << 8 | u64::from(*b))
    }

    /// Every data record of `messages`, decoded with the templates they carried.
    fn all_records(messages: &[Message]) -> Vec<(u16, Values)> {
        let mut known = HashMap::new();
        let mut out = Vec::new();
        for message in messages {
            for (id, body) in decode(&message.bytes).sets {
                if id == TEMPLATE_SET_ID {
                    known.extend(templates(&body));
                } else {
                    let template = known.get(&id).expect("data set after its template");
                    out.extend(records(template, &body).into_iter().map(|r| (id, r)));
                }
            }
        }
        out
    }

    #[test]
    fn header_is_byte_exact() {
        let messages = encoder(DEFAULT_MTU).encode(&[flow(&tcp_v4())], NOW_MS);
        assert_eq!(messages.len(), 1);
        let bytes = &messages[0].bytes;
        assert_eq!(
            bytes[..HEADER_LEN],
            [
                0x00, 0x0a, // version 10
                0x00, 0xea, // length 234 = 16 + 148 (templates) + 4 + 66
                0x65, 0x53, 0xf1, 0x05, // export time 1700000005
                0x00, 0x00, 0x00, 0x00, // sequence: no records before
                0x01, 0x02, 0x03, 0x04, // observation domain
            ]
        );
        assert_eq!(bytes.len(), 234);
        assert_eq!(messages[0].records, 1);
    }

    #[test]
    fn template_set_is_byte_exact() {
        #[rustfmt::skip]
        let common_head = [
            0x00, 0x98, 0x00, 0x08, // flowStartMilliseconds
            0x00, 0x99, 0x00, 0x08, // flowEndMilliseconds
        ];
        #[rustfmt::skip]
        let common_tail = [
            0x00, 0x07, 0x00, 0x02, // sourceTransportPort
            0x00, 0x0b, 0x00, 0x02, // destinationTransportPort
            0x00, 0x04, 0x00, 0x01, // protocolIdentifier
            0x00, 0x06, 0x00, 0x02, // tcpControlBits
            0x00, 0x59, 0x00, 0x01, // forwardingStatus
            0x00, 0x88, 0x00, 0x01, // flowEndReason
            0x00, 0xef, 0x00, 0x01, // biflowDirection
            0x00, 0x02, 0x00, 0x08, // packetDeltaCount
            0x00, 0x01, 0x00, 0x08, // octetDeltaCount
            0x80, 0x02, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reverse packetDeltaCount
            0x80, 0x01, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reverse octetDeltaCount
        ];
        let mut expected = vec![0x00, 0x02, 0x00, 0x94]; // Template Set, 148 bytes
        expected.extend([0x01, 0x00, 0x00, 0x0f]); // template 256, 15 fields
        expected.extend(common_head);
        expected.extend([0x00, 0x08, 0x00, 0x04]); // sourceIPv4Address
        expected.extend([0x00, 0x0c, 0x00, 0x04]); // destinationIPv4Address
        expected.extend(common_tail);
        expected.extend([0x01, 0x01, 0x00, 0x0f]); // template 257, 15 fields
        expected.extend(common_head);
        expected.extend([0x00, 0x1b, 0x00, 0x10]); // sourceIPv6Address
        expected.extend([0x00, 0x1c, 0x00, 0x10]); // destinationIPv6Address
        expected.extend(common_tail);
        assert_eq!(template_set(), expected);
        assert_eq!(TEMPLATE_SET_LEN, 148);

        // And the first message carries it right after the header.
        let messages = encoder(DEFAULT_MTU).encode(&[flow(&tcp_v4())], NOW_MS);
        assert_eq!(messages[0].bytes[HEADER_LEN..HEADER_LEN + 148], expected);
    }

    #[test]
    fn ipv4_data_record_is_byte_exact() {
        let messages = encoder(DEFAULT_MTU).encode(&[flow(&tcp_v4())], NOW_MS);
        #[rustfmt::skip]
        let expected = [
            0x01, 0x00, 0x00, 0x46, // data set 256, 4 + 66 bytes
            0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b, // start 1700000000123 ms
            0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x79, 0xd7, // end 1700000004567 ms
            192, 0, 2, 10, // source
            198, 51, 100, 20, // destination
            0xc0, 0x00, // source port 49152
            0x01, 0xbb, // destination port 443
            6, // TCP
            0x00, 0x1b, // FIN SYN PSH ACK
            64, // forwarded
            3, // end of flow detected
            1, // source is the initiator
            0, 0, 0, 0, 0, 0, 0, 10, // packets
            0, 0, 0, 0, 0, 0, 0x05, 0xdc, // octets 1500
            0, 0, 0, 0, 0, 0, 0, 8, // reverse packets
            0, 0, 0, 0, 0, 0, 0x23, 0x28, // reverse octets 9000
        ];
        assert_eq!(messages[0].bytes[HEADER_LEN + TEMPLATE_SET_LEN..], expected);
        assert_eq!(IPV4_RECORD_LEN, 66);
        assert_eq!(IPV6_RECORD_LEN, 90);
    }

    #[test]
    fn families_choose_their_template() {
        let flows = [flow(&tcp_v4()), flow(&udp_v6_denied()), flow(&tcp_v4())];
        let messages = encoder(DEFAULT_MTU).encode(&flows, NOW_MS);
        assert_eq!(messages.len(), 1);
        let ids: Vec<u16> = decode(&messages[0].bytes)
            .sets
            .iter()
            .map(|(id, _)| *id)
            .collect();
        // A new data set whenever the family changes; order kept.
        assert_eq!(ids, [TEMPLATE_SET_ID, 256, 257, 256]);

        let decoded = all_records(&messages);
        assert_eq!(decoded.len(), 3);
        let (id, v6) = &decoded[1];
        assert_eq!(*id, IPV6_TEMPLATE_ID);
        let src: [u8; 16] = v6[&(None, ie::SOURCE_IPV6_ADDRESS)]
            .clone()
            .try_into()
            .unwrap();
        let dst: [u8; 16] = v6[&(None, ie::DESTINATION_IPV6_ADDRESS)]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(
            Ipv6Addr::from(src),
            "2001:db8::5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            Ipv6Addr::from(dst),
            "2001:db8:1::53".parse::<Ipv6Addr>().unwrap()
        );
        assert!(!v6.contains_key(&(None, ie::SOURCE_IPV4_ADDRESS)));
        let get = |key| number(&v6[&key]);
        assert_eq!(get((None, ie::SOURCE_TRANSPORT_PORT)), 5353);
        assert_eq!(get((None, ie::DESTINATION_TRANSPORT_PORT)), 53);
        assert_eq!(get((None, ie::PROTOCOL_IDENTIFIER)), 17);
        assert_eq!(get((None, ie::FORWARDING_STATUS)), 129);
        assert_eq!(get((None, ie::FLOW_END_REASON)), 1);
        assert_eq!(get((None, ie::PACKET_DELTA_COUNT)), 3);
        assert_eq!(get((None, ie::OCTET_DELTA_COUNT)), 210);
        assert_eq!(get((Some(REVERSE_PEN), ie::PACKET_DELTA_COUNT)), 0);
        assert_eq!(get((Some(REVERSE_PEN), ie::OCTET_DELTA_COUNT)), 0);
        assert_eq!(get((None, ie::FLOW_START_MILLISECONDS)), 1_700_000_001_000);
        assert_eq!(get((None, ie::FLOW_END_MILLISECONDS)), 1_700_000_002_000);

        let (id, v4) = &decoded[0];
        assert_eq!(*id, IPV4_TEMPLATE_ID);
        assert_eq!(v4[&(None, ie::SOURCE_IPV4_ADDRESS)], [192, 0, 2, 10]);
        assert_eq!(
            v4[&(None, ie::DESTINATION_IPV4_ADDRESS)],
            [198, 51, 100, 20]
        );
    }

    #[test]
    fn lengths_add_up_in_every_message() {
        let mut flows = v4_flows(40);
        flows.splice(5..5, [flow(&udp_v6_denied()); 7]);
        let messages = encoder(600).encode(&flows, NOW_MS);
        assert!(messages.len() > 1);
        for message in &messages {
            let decoded = decode(&message.bytes); // checks message and set lengths
            let data: usize = decoded
                .sets
                .iter()
                .filter(|(id, _)| *id != TEMPLATE_SET_ID)
                .map(|(id, body)| {
                    let len = if *id == IPV4_TEMPLATE_ID { 66 } else { 90 };
                    assert_eq!(body.len() % len, 0, "set {id} holds whole records");
                    body.len() / len
                })
                .sum();
            assert_eq!(data, message.records as usize);
        }
    }

    #[test]
    fn sequence_numbers_count_the_records_before_each_message() {
        let mut enc = encoder(MIN_MTU + 3 * IPV4_RECORD_LEN);
        let first = enc.encode(&v4_flows(20), NOW_MS);
        let second = enc.encode(&v4_flows(5), NOW_MS + 500);
        let mut expected = 0u32;
        for message in first.iter().chain(&second) {
            assert_eq!(decode(&message.bytes).sequence, expected);
            expected += message.records;
        }
        assert_eq!(expected, 25);
        assert_eq!(enc.sequence(), 25);
        // A message with the templates alone carries the count so far.
        let refresh = enc.encode(&[], NOW_MS + DEFAULT_TEMPLATE_INTERVAL_MS);
        assert_eq!(refresh.len(), 1);
        assert_eq!(refresh[0].records, 0);
        assert_eq!(decode(&refresh[0].bytes).sequence, 25);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut enc = encoder(DEFAULT_MTU);
        enc.sequence = u32::MAX - 1;
        enc.encode(&v4_flows(3), NOW_MS);
        let next = enc.encode(&v4_flows(1), NOW_MS);
        assert_eq!(decode(&next[0].bytes).sequence, 1);
    }

    #[test]
    fn messages_split_at_the_mtu() {
        for mtu in [MIN_MTU, 300, 576, DEFAULT_MTU, 9000] {
            let mut flows = v4_flows(300);
            for i in (0..300).step_by(7) {
                flows.insert(i, flow(&udp_v6_denied()));
            }
            let messages = encoder(mtu).encode(&flows, NOW_MS);
            let mut consumed = 0;
            for (i, message) in messages.iter().enumerate() {
                assert!(message.bytes.len() <= mtu, "message {i} over {mtu}");
                assert!(message.records >= 1);
                consumed += message.records as usize;
                if i + 1 < messages.len() {
                    // Full: the next flow would not have fitted, even in the open set.
                    let next = flows[consumed];
                    assert!(message.bytes.len() + next.record_len() > mtu, "mtu {mtu}");
                }
            }
            assert_eq!(consumed, flows.len());
            let decoded = all_records(&messages);
            assert_eq!(decoded.len(), flows.len(), "mtu {mtu}: every flow once");
            for ((_, rec), flow) in decoded.iter().zip(&flows) {
                assert_eq!(
                    number(&rec[&(None, ie::SOURCE_TRANSPORT_PORT)]),
                    u64::from(flow.sport),
                    "mtu {mtu}: order kept"
                );
            }
            // Only the first message carries the templates (fewer than 32 messages at
            // the larger sizes; at the small ones they come back after 32).
            let with_templates: Vec<usize> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| decode(&m.bytes).sets[0].0 == TEMPLATE_SET_ID)
                .map(|(i, _)| i)
                .collect();
            let expected: Vec<usize> = (0..messages.len()).step_by(33).collect();
            assert_eq!(with_templates, expected, "mtu {mtu}");
        }
    }

    #[test]
    fn templates_are_repeated_by_count_and_by_time() {
        let mut enc = Encoder::new(Options {
            template_messages: 3,
            template_interval_ms: 10_000,
            ..Options::new(7)
        })
        .unwrap();
        let carries = |messages: &[Message]| -> Vec<bool> {
            messages
                .iter()
                .map(|m| decode(&m.bytes).sets[0].0 == TEMPLATE_SET_ID)
                .collect()
        };
        let one = v4_flows(1);
        let mut seen = Vec::new();
        for i in 0..8 {
            seen.extend(carries(&enc.encode(&one, NOW_MS + i)));
        }
        assert_eq!(seen, [true, false, false, false, true, false, false, false]);
        // Nothing to send and nothing due: no message.
        assert!(enc.encode(&[], NOW_MS + 100).is_empty());
        // The interval passes with no flows: a template-only message.
        let refresh = enc.encode(&[], NOW_MS + 4 + 10_000);
        assert_eq!(carries(&refresh), [true]);
        assert_eq!(decode(&refresh[0].bytes).sets.len(), 1);
        assert_eq!(refresh[0].bytes.len(), HEADER_LEN + TEMPLATE_SET_LEN);
        assert_eq!(carries(&enc.encode(&one, NOW_MS + 10_005)), [false]);
        // A fresh encoder starts with them even when there is nothing else.
        let start = encoder(DEFAULT_MTU).encode(&[], NOW_MS);
        assert_eq!(carries(&start), [true]);
        assert_eq!(decode(&start[0].bytes).export_time, 1_700_000_005);
        assert_eq!(decode(&start[0].bytes).domain, 0x0102_0304);
    }

    #[test]
    fn mtu_outside_the_limits_is_refused() {
        for mtu in [0, MIN_MTU - 1, MAX_MTU + 1] {
            let err = Encoder::new(Options {
                mtu,
                ..Options::new(0)
            })
            .unwrap_err();
            assert!(
                matches!(err, IpfixError::Mtu { mtu: m, min: 258, max: 65535 } if m == mtu),
                "{err}"
            );
        }
        assert!(
            Encoder::new(Options {
                mtu: MIN_MTU,
                ..Options::new(0)
            })
            .is_ok()
        );
    }

    #[test]
    fn verdicts_and_reasons_become_forwarding_status() {
        let cases = [
            (Verdict::Allow, Reason::Policy, 64),
            (Verdict::Monitor, Reason::NoRule, 64),
            (Verdict::Allow, Reason::Local, 195),
            (Verdict::Deny, Reason::NoRule, 129),
            (Verdict::Deny, Reason::UnknownSource, 129),
            (Verdict::Deny, Reason::UnknownDestination, 129),
            (Verdict::Deny, Reason::Isolated, 129),
            (Verdict::Deny, Reason::NoPolicy, 129),
            (Verdict::Deny, Reason::Fragment, 129),
            (Verdict::Deny, Reason::Spoofed, 140),
            (Verdict::Deny, Reason::Malformed, 128),
        ];
        for (verdict, reason, status) in cases {
            assert_eq!(
                forwarding_status(verdict, reason as u8),
                status,
                "{verdict:?} {reason:?}"
            );
            // Top two bits: 01 forwarded, 10 dropped, 11 consumed.
            let class = status >> 6;
            assert_eq!(
                class == 2,
                verdict == Verdict::Deny,
                "{verdict:?} {reason:?}"
            );
        }
        assert_eq!(forwarding_status(Verdict::Deny, 0), 128);
    }

    #[test]
    fn only_end_records_with_addresses_become_flows() {
        let end = tcp_v4();
        let start = Record {
            event: Event::Start,
            ..tcp_v4()
        };
        let gap = Record::gap(1, 2, 3);
        let half = Record {
            dst: None,
            ..tcp_v4()
        };
        let mixed = Record {
            dst: Some("2001:db8::1".parse().unwrap()),
            ..tcp_v4()
        };
        assert!(Flow::from_record(&end).is_some());
        for rec in [start, gap, half, mixed] {
            assert_eq!(Flow::from_record(&rec), None, "{rec:?}");
        }
        let f = flow(&end);
        assert_eq!((f.sport, f.dport), (49152, 443));
        for proto in [1, 58] {
            let echo = Record {
                proto,
                sport: 0x1234,
                dport: 0,
                ..tcp_v4()
            };
            assert_eq!(
                (flow(&echo).sport, flow(&echo).dport),
                (0, 0),
                "proto {proto}"
            );
        }
        assert_eq!(
            (f.start_ms, f.end_ms),
            (1_700_000_000_123, 1_700_000_004_567)
        );
        assert_eq!(f.end_reason, end_reason::END_OF_FLOW);
        let early = Record {
            first_us: -5,
            ..tcp_v4()
        };
        assert_eq!(flow(&early).start_ms, 0);
        for (close, reason) in [
            (Some(Close::Rst), 3),
            (Some(Close::Idle), 1),
            (Some(Close::Cut), 4),
            (Some(Close::Evicted), 5),
            (None, 0),
        ] {
            assert_eq!(flow_end_reason(close), reason, "{close:?}");
        }
    }

    fn receiver() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback receiver");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        (socket, addr)
    }

    #[test]
    fn exporter_sends_end_records_and_counts_the_rest() {
        let (collector, addr) = receiver();
        let mut exporter = Exporter::new(addr, 42).expect("exporter");
        exporter.push(&tcp_v4());
        exporter.push(&Record {
            event: Event::Start,
            ..tcp_v4()
        });
        exporter.push(&Record::gap(1, 2, 9));
        exporter.push(&udp_v6_denied());
        assert_eq!(exporter.pending(), 2);
        assert_eq!(exporter.flush(NOW_MS), 1);
        assert_eq!(exporter.pending(), 0);

        let mut buf = [0u8; 65536];
        let n = collector.recv(&mut buf).expect("a message");
        let message = Message {
            bytes: buf[..n].to_vec(),
            records: 2,
        };
        let decoded = decode(&message.bytes);
        assert_eq!((decoded.domain, decoded.sequence), (42, 0));
        let records = all_records(std::slice::from_ref(&message));
        let ids: Vec<u16> = records.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [IPV4_TEMPLATE_ID, IPV6_TEMPLATE_ID]);

        // Nothing pending and templates not due: a flush sends nothing.
        assert_eq!(exporter.flush(NOW_MS + 1), 0);
        exporter.push(&tcp_v4());
        assert_eq!(exporter.flush(NOW_MS + 2), 1);
        let n = collector.recv(&mut buf).expect("a second message");
        let second = decode(&buf[..n]);
        assert_eq!(second.sequence, 2);
        assert_eq!(second.sets.len(), 1, "no templates the second time");

        assert_eq!(
            exporter.counters(),
            Counters {
                records_sent: 3,
                messages_sent: 2,
                send_errors: 0,
                records_lost: 0,
                gaps_skipped: 1,
                records_skipped: 1,
            }
        );
    }

    #[test]
    fn exporter_sends_by_itself_when_the_buffer_is_full() {
        let (collector, addr) = receiver();
        let mut exporter = Exporter::with_options(
            addr,
            Options {
                max_pending: 4,
                ..Options::new(1)
            },
        )
        .expect("exporter");
        for _ in 0..4 {
            exporter.push(&tcp_v4());
        }
        assert_eq!(exporter.pending(), 0);
        let mut buf = [0u8; 65536];
        let n = collector.recv(&mut buf).expect("sent without a flush");
        let message = Message {
            bytes: buf[..n].to_vec(),
            records: 4,
        };
        assert_eq!(all_records(std::slice::from_ref(&message)).len(), 4);
        assert_eq!(exporter.counters().records_sent, 4);
    }

    #[test]
    fn a_closed_collector_port_never_blocks_and_is_counted() {
        // A port nothing listens on: bind, note it, close.
        let addr = receiver().1;
        let mut exporter = Exporter::new(addr, 1).expect("exporter");
        let started = std::time::Instant::now();
        for i in 0..5 {
            exporter.push(&tcp_v4());
            // Refusals come back as errors on the next send, which is retried once.
            exporter.flush(NOW_MS + i);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let counters = exporter.counters();
        assert!(counters.send_errors >= 1, "{counters:?}");
        assert_eq!(
            counters.records_sent + counters.records_lost,
            5,
            "{counters:?}"
        );
    }
}
