//! History queries and exports: sealed segments, then the unsealed write-ahead log.
//!
//! A query walks the manifest in order, skips segments whose time range cannot overlap the
//! filter, lets `segment::read` prune row groups and pages by their statistics, then reads
//! the WAL files that are not sealed yet. Records come out in time order per file, files in
//! manifest order, then the WAL: the order they were sealed in.
//!
//! Gap records match every filter except the time range, so that a reader of a filtered
//! history still sees where records are missing.

use ipnet::IpNet;

use crate::history::record::{Event, Record, Verdict};

/// Which records a query returns. Every field set narrows it; none set returns everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records whose `last_us` is at or after this time (microseconds since the epoch).
    pub since_us: Option<i64>,
    /// Records whose `first_us` is at or before this time.
    pub until_us: Option<i64>,
    /// Source or destination asset.
    pub asset: Option<String>,
    /// Source or destination role.
    pub role: Option<String>,
    /// Source or destination peer.
    pub peer: Option<String>,
    /// Source or destination address within this network.
    pub addr: Option<IpNet>,
    /// Source or destination port.
    pub port: Option<u16>,
    pub verdict: Option<Verdict>,
    pub event: Option<Event>,
    /// At most this many records (gaps count too).
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether the record overlaps the time range.
    pub fn matches_time(&self, rec: &Record) -> bool {
        self.since_us.is_none_or(|since| rec.last_us >= since)
            && self.until_us.is_none_or(|until| rec.first_us <= until)
    }

    /// Whether any filter other than the time range is set.
    pub fn has_field_filter(&self) -> bool {
        self.asset.is_some()
            || self.role.is_some()
            || self.peer.is_some()
            || self.addr.is_some()
            || self.port.is_some()
            || self.verdict.is_some()
            || self.event.is_some()
    }

    /// Whether the record passes the filters other than the time range. Gaps always do.
    pub fn matches_fields(&self, rec: &Record) -> bool {
        if rec.event == Event::Gap {
            return true;
        }
        let either = |want: &Option<String>, a: &Option<std::sync::Arc<str>>, b: &Option<_>| {
            want.as_deref().is_none_or(|w| {
                a.as_deref() == Some(w) || b.as_ref().map(|s: &std::sync::Arc<str>| &**s) == Some(w)
            })
        };
        either(&self.asset, &rec.src_asset, &rec.dst_asset)
            && either(&self.role, &rec.src_role, &rec.dst_role)
            && either(&self.peer, &rec.src_peer, &rec.dst_peer)
            && self.addr.is_none_or(|net| {
                rec.src.is_some_and(|a| net.contains(&a))
                    || rec.dst.is_some_and(|a| net.contains(&a))
            })
            && self.port.is_none_or(|p| rec.sport == p || rec.dport == p)
            && self.verdict.is_none_or(|v| rec.verdict == v)
            && self.event.is_none_or(|e| rec.event == e)
    }

    /// Whether the record is one the query returns.
    pub fn matches(&self, rec: &Record) -> bool {
        self.matches_time(rec) && self.matches_fields(rec)
    }
}
