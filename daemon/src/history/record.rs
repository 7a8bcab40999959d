//! One row of the traffic history: the start or the end of a flow, or a gap.
//!
//! The same shape is written to the write-ahead log, sealed into Parquet segments, shown by
//! `history query`, exported as JSON lines or CSV and sent as IPFIX, so that a record means
//! the same thing wherever it is read.

use std::net::IpAddr;
use std::sync::Arc;

/// What a record tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The first packet of a flow: allowed (and tracked) or denied.
    Start,
    /// A flow has ended (or, for denied flows, stopped trying): totals for its lifetime.
    End,
    /// Records that were not written: `lost` says how many events, `first_us..=last_us`
    /// when. A reader can tell "no traffic" from "not recorded".
    Gap,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Start, Event::End, Event::Gap];

    pub const fn name(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::End => "end",
            Event::Gap => "gap",
        }
    }

    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// What the datapath did with the flow's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Allow,
    Deny,
    /// The policy would have denied it; passed because the daemon runs in monitor mode.
    Monitor,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::Monitor];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Monitor => "monitor",
        }
    }

    pub fn from_name(name: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// Why an `End` record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Close {
    /// TCP FIN seen in both directions (or one, then idle).
    Fin,
    /// TCP RST seen.
    Rst,
    /// No packet for the protocol's idle timeout.
    Idle,
    /// Cut by a new policy generation or an isolation: later packets were denied.
    Cut,
    /// The kernel's flow table was full and dropped the entry; totals are those last seen.
    Evicted,
}

impl Close {
    pub const ALL: [Close; 5] = [
        Close::Fin,
        Close::Rst,
        Close::Idle,
        Close::Cut,
        Close::Evicted,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
            Close::Idle => "idle",
            Close::Cut => "cut",
            Close::Evicted => "evicted",
        }
    }

    pub fn from_name(name: &str) -> Option<Close> {
        Close::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One history record. Times are microseconds since the Unix epoch (UTC).
///
/// Names (`*_asset`, `*_role`, `*_peer`, `interface`, `rule_name`) are resolved from the
/// policy generation in force when the event happened; an address in neither the register
/// nor a peer network has none. A peer end has `*_peer` set and no asset or role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    /// First packet (`Start`, `End`) or start of the unrecorded interval (`Gap`).
    pub first_us: i64,
    /// Last packet seen (`End`), equal to `first_us` for `Start`, end of a `Gap`.
    pub last_us: i64,
    pub verdict: Verdict,
    /// [`sekisho_common::Reason`] code (`Reason::name` for text); 0 for a gap.
    pub reason: u8,
    /// Policy generation that decided the flow (0: none loaded, or a gap).
    pub generation: u32,
    /// 1-based `[[allow]]` number that allowed the flow; 0 when no rule did.
    pub rule: u32,
    /// The rule's `name`, when it has one.
    pub rule_name: Option<Arc<str>>,
    /// Interface the first packet came in on.
    pub interface: Option<Arc<str>>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub proto: u8,
    /// The flow's initiator (the first packet's source) and responder. `None` only in gaps.
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Ports; the ICMP echo identifier as `sport` for echo flows; 0 where there are none.
    pub sport: u16,
    pub dport: u16,
    pub src_asset: Option<Arc<str>>,
    pub src_role: Option<Arc<str>>,
    pub src_peer: Option<Arc<str>>,
    pub dst_asset: Option<Arc<str>>,
    pub dst_role: Option<Arc<str>>,
    pub dst_peer: Option<Arc<str>>,
    /// Initiator → responder, and replies.
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
    /// TCP flags seen in either direction (OR of the flags byte), 0 for other protocols.
    pub tcp_flags: u8,
    /// Why an `End` record was written.
    pub close: Option<Close>,
    /// `Gap` only: how many events were not recorded.
    pub lost: u64,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            event: Event::Start,
            first_us: 0,
            last_us: 0,
            verdict: Verdict::Allow,
            reason: 0,
            generation: 0,
            rule: 0,
            rule_name: None,
            interface: None,
            proto: 0,
            src: None,
            dst: None,
            sport: 0,
            dport: 0,
            src_asset: None,
            src_role: None,
            src_peer: None,
            dst_asset: None,
            dst_role: None,
            dst_peer: None,
            packets_fwd: 0,
            bytes_fwd: 0,
            packets_rev: 0,
            bytes_rev: 0,
            tcp_flags: 0,
            close: None,
            lost: 0,
        }
    }
}

impl Record {
    /// A gap of `lost` events between two times.
    pub fn gap(first_us: i64, last_us: i64, lost: u64) -> Record {
        Record {
            event: Event::Gap,
            first_us,
            last_us,
            lost,
            ..Record::default()
        }
    }

    /// The reason's name (`"policy"`, `"no_rule"`, `"isolated"`, …), `""` for a gap.
    pub fn reason_name(&self) -> &'static str {
        sekisho_common::Reason::from_u8(self.reason).map_or("", |r| r.name())
    }
}
