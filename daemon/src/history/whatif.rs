//! `sekishoctl policy whatif FILE --since T`: the recorded flows replayed against a
//! candidate policy. Lists what it would have allowed or denied differently — the evidence
//! an administrator needs before tightening (or loosening) a rule.
//!
//! Each flow's first packet (`start` record) is decided again by the candidate, the same
//! decision the kernel runs, by addresses, protocol and port; the side and MAC checks need
//! the frame, which is not recorded. Flows denied because of an isolation or a spoofing
//! check are left out: the policy text did not decide them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use sekisho_common::Reason;
use sekisho_common::decide::Packet;
use serde::Serialize;

use super::query::{self, Filter, QueryError};
use super::record::{Event, Record, Verdict};
use crate::policy::{CompiledPolicy, addr16};

/// A kind of flow the candidate decides differently, with how often it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `allow` → `deny` (the candidate would cut it) or `deny` → `allow`.
    pub was: &'static str,
    pub would: &'static str,
    pub src: IpAddr,
    pub src_name: Option<String>,
    pub dst: IpAddr,
    pub dst_name: Option<String>,
    pub proto: u8,
    pub dport: u16,
    /// Recorded rule (for flows that were allowed) and the candidate's rule (for flows it
    /// would allow), 1-based.
    pub rule_was: u32,
    pub rule_would: u32,
    /// Why the candidate would deny (its reason name), empty if it would allow.
    pub reason: String,
    pub flows: u64,
    pub first_us: i64,
    pub last_us: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    /// Recorded flows replayed.
    pub flows: u64,
    /// Flows left out (isolations, spoofing, records without addresses).
    pub skipped: u64,
    /// Gap records in the range: the replay cannot speak for what was not recorded.
    pub gaps: u64,
    pub changes: Vec<Change>,
}

fn name(r: &Record, src: bool) -> Option<String> {
    let (asset, peer) = if src {
        (&r.src_asset, &r.src_peer)
    } else {
        (&r.dst_asset, &r.dst_peer)
    };
    asset
        .as_ref()
        .map(|a| format!("asset:{a}"))
        .or_else(|| peer.as_ref().map(|p| format!("peer:{p}")))
}

/// Replays the flows recorded under `root` between `since_us` and `until_us` against
/// `candidate`.
pub fn replay(
    root: &Path,
    candidate: &CompiledPolicy,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<WhatIf, QueryError> {
    let filter = Filter {
        since_us,
        until_us,
        ..Filter::default()
    };
    let mut out = WhatIf::default();
    let mut changes: BTreeMap<(u8, IpAddr, IpAddr, u8, u16), Change> = BTreeMap::new();
    query::query(root, &filter, &mut |r: Record| {
        if r.event == Event::Gap {
            out.gaps += 1;
            return true;
        }
        if r.event != Event::Start {
            return true;
        }
        let reason = Reason::from_u8(r.reason);
        let (Some(src), Some(dst)) = (r.src, r.dst) else {
            out.skipped += 1;
            return true;
        };
        if matches!(reason, Some(Reason::Isolated | Reason::Spoofed)) {
            out.skipped += 1;
            return true;
        }
        out.flows += 1;
        let pkt = Packet {
            src: addr16(src).0,
            dst: addr16(dst).0,
            sport: r.sport,
            dport: r.dport,
            proto: r.proto,
            src_mac: [0; 6],
            from_lan: r.src_asset.is_some(),
            tcp_flags: 0,
        };
        let was_allowed = r.verdict == Verdict::Allow;
        let decision = candidate.decide_flow(&pkt);
        if decision.is_ok() == was_allowed {
            return true;
        }
        let key = (u8::from(was_allowed), src, dst, r.proto, r.dport);
        let c = changes.entry(key).or_insert_with(|| Change {
            was: if was_allowed { "allow" } else { "deny" },
            would: if was_allowed { "deny" } else { "allow" },
            src,
            src_name: name(&r, true),
            dst,
            dst_name: name(&r, false),
            proto: r.proto,
            dport: r.dport,
            rule_was: r.rule,
            rule_would: *decision.as_ref().unwrap_or(&0),
            reason: decision
                .err()
                .map(|e| e.name().to_owned())
                .unwrap_or_default(),
            flows: 0,
            first_us: r.first_us,
            last_us: r.last_us,
        });
        c.flows += 1;
        c.first_us = c.first_us.min(r.first_us);
        c.last_us = c.last_us.max(r.last_us);
        true
    })?;
    out.changes = changes.into_values().collect();
    out.changes
        .sort_by(|a, b| b.flows.cmp(&a.flows).then(a.first_us.cmp(&b.first_us)));
    Ok(out)
}
