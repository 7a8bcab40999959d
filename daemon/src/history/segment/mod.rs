//! Sealed segments: a stretch of the history as one Apache Parquet file (zstd).
//!
//! The schema is flat, one column per `Record` field under the same name, with standard
//! logical types (UTF-8 strings, UTC microsecond timestamps, unsigned integers), so that
//! DuckDB, pandas or Spark read a segment without sekisho for as long as it is kept
//! (seven years). The footer carries `sekisho.schema = 1`; a reader refuses other versions
//! rather than guess.
//!
//! Rows are sorted by (`first`, `last`), so a flow's start and end records sit side by side
//! and the time columns delta-encode to a few bits. Statistics are written per row group and
//! per page (the page index): `read` skips row groups and pages whose time range cannot
//! match, evaluates the filter on the few columns it needs, and decodes the other columns
//! only for rows that match.

use std::fs::File;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::page::{Page, PageReader};
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::page_index::RowGroupPageIndex;
use parquet::file::metadata::{KeyValue, ParquetMetaData, RowGroupMetaData, SortingColumn};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::history::FastMap;
use crate::history::query::Filter;
use crate::history::record::{Close, Event, Record, Verdict};

/// The footer key that names the schema version, and the version this module writes.
pub const SCHEMA_KEY: &str = "sekisho.schema";
pub const SCHEMA_VERSION: u32 = 1;

/// Rows per row group: the records a writer holds in memory (about 140 bytes each) before
/// it encodes them, and the unit that is sorted by time. A quiet hour is one row group; a
/// busy one several, each pruned by its statistics and within it by the page index.
const ROW_GROUP_ROWS: usize = 1 << 18;

/// Rows per data page: a few minutes of a busy hour, so the page index still skips most
/// of a row group for a short time range, while zstd sees long enough runs.
const PAGE_ROWS: usize = 1 << 16;

/// zstd level, measured on `synthetic` (1 M records, one core, sekisho's own page
/// encoding): level 1 gives 14.3 bytes per record and encodes 2.4 M records/s, level 3
/// gives 14.8 at 1.8 M/s (level 1 is smaller here: its shorter matches suit the short,
/// repetitive pages). Encoding speed bounds sustained ingest.
const ZSTD_LEVEL: i32 = 1;

/// The Parquet schema, version 1. Column order is the `Col` order below.
const SCHEMA: &str = "
message sekisho_history {
  required binary event (STRING);
  required int64 first (TIMESTAMP(MICROS,true));
  required int64 last (TIMESTAMP(MICROS,true));
  required binary verdict (STRING);
  required binary reason (STRING);
  required int32 generation (INTEGER(32,false));
  required int32 rule (INTEGER(32,false));
  optional binary rule_name (STRING);
  optional binary interface (STRING);
  required int32 proto (INTEGER(8,false));
  optional binary src (STRING);
  optional binary dst (STRING);
  required int32 sport (INTEGER(16,false));
  required int32 dport (INTEGER(16,false));
  optional binary src_asset (STRING);
  optional binary src_role (STRING);
  optional binary src_peer (STRING);
  optional binary dst_asset (STRING);
  optional binary dst_role (STRING);
  optional binary dst_peer (STRING);
  required int64 packets_fwd;
  required int64 bytes_fwd;
  required int64 packets_rev;
  required int64 bytes_rev;
  required int32 tcp_flags (INTEGER(8,false));
  optional binary close (STRING);
  required int64 lost;
}
";

/// Columns in schema order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Col {
    Event,
    First,
    Last,
    Verdict,
    Reason,
    Generation,
    Rule,
    RuleName,
    Interface,
    Proto,
    Src,
    Dst,
    Sport,
    Dport,
    SrcAsset,
    SrcRole,
    SrcPeer,
    DstAsset,
    DstRole,
    DstPeer,
    PacketsFwd,
    BytesFwd,
    PacketsRev,
    BytesRev,
    TcpFlags,
    Close,
    Lost,
}

impl Col {
    const ALL: [Col; 27] = [
        Col::Event,
        Col::First,
        Col::Last,
        Col::Verdict,
        Col::Reason,
        Col::Generation,
        Col::Rule,
        Col::RuleName,
        Col::Interface,
        Col::Proto,
        Col::Src,
        Col::Dst,
        Col::Sport,
        Col::Dport,
        Col::SrcAsset,
        Col::SrcRole,
        Col::SrcPeer,
        Col::DstAsset,
        Col::DstRole,
        Col::DstPeer,
        Col::PacketsFwd,
        Col::BytesFwd,
        Col::PacketsRev,
        Col::BytesRev,
        Col::TcpFlags,
        Col::Close,
        Col::Lost,
    ];

    const fn name(self) -> &'static str {
        match self {
            Col::Event => "event",
            Col::First => "first",
            Col::Last => "last",
            Col::Verdict => "verdict",
            Col::Reason => "reason",
            Col::Generation => "generation",
            Col::Rule => "rule",
            Col::RuleName => "rule_name",
            Col::Interface => "interface",
            Col::Proto => "proto",
            Col::Src => "src",
            Col::Dst => "dst",
            Col::Sport => "sport",
            Col::Dport => "dport",
            Col::SrcAsset => "src_asset",
            Col::SrcRole => "src_role",
            Col::SrcPeer => "src_peer",
            Col::DstAsset => "dst_asset",
            Col::DstRole => "dst_role",
            Col::DstPeer => "dst_peer",
            Col::PacketsFwd => "packets_fwd",
            Col::BytesFwd => "bytes_fwd",
            Col::PacketsRev => "packets_rev",
            Col::BytesRev => "bytes_rev",
            Col::TcpFlags => "tcp_flags",
            Col::Close => "close",
            Col::Lost => "lost",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The column names of a segment, in file order (the same names as `Record`'s fields,
/// without the `_us` of the times).
pub fn column_names() -> impl Iterator<Item = &'static str> {
    Col::ALL.into_iter().map(Col::name)
}

/// What `write` sealed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub records: u64,
    /// Size of the file on disk.
    pub bytes: u64,
    /// Time ranges of the records' `first_us` and `last_us`; all 0 for an empty segment.
    pub min_first_us: i64,
    pub max_first_us: i64,
    pub min_last_us: i64,
    pub max_last_us: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot create segment {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open segment {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sync segment {} to disk", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write segment {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("cannot read segment {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("segment {} has schema version {found:?}, this sekisho reads {SCHEMA_VERSION}", path.display())]
    Version {
        path: PathBuf,
        found: Option<String>,
    },
    #[error("segment {} has column {found:?} at position {index}, expected {expected:?}", path.display())]
    Schema {
        path: PathBuf,
        index: usize,
        found: String,
        expected: &'static str,
    },
    #[error("segment {} column {column}: malformed {what}", path.display())]
    Corrupt {
        path: PathBuf,
        column: &'static str,
        what: &'static str,
    },
    #[error("segment {} row {row}: column {column} holds {value}, not a valid value", path.display())]
    Value {
        path: PathBuf,
        row: u64,
        column: &'static str,
        value: String,
    },
}

fn schema() -> Arc<Type> {
    // The schema text is a constant: a parse error is a bug caught by every test.
    Arc::new(parquet::schema::parser::parse_message_type(SCHEMA).expect("segment schema parses"))
}

mod read;
mod write;

pub(crate) use read::{GroupRun, group_runs};
pub use read::{ScanStats, count, read, read_all, schema_version};
pub use write::{Buffers, Writer, write};

/// The reason's text in a segment: its name, or the number for a code this build does not
/// know (so that nothing is lost when a newer kernel program adds a reason).
fn reason_text(code: u8) -> String {
    match sekisho_common::Reason::from_u8(code) {
        Some(r) => r.name().to_string(),
        None if code == 0 => String::new(),
        None => code.to_string(),
    }
}

/// The inverse of `reason_text`.
fn reason_code(text: &str) -> Option<u8> {
    if text.is_empty() {
        return Some(0);
    }
    sekisho_common::Reason::ALL
        .into_iter()
        .find(|r| r.name() == text)
        .map(|r| r as u8)
        .or_else(|| text.parse().ok())
}

/// A deterministic stream of pseudo-random numbers (SplitMix64): enough for synthetic
/// traffic, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// `true` with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Log-uniform in `lo..hi`: as many small values per decade as large ones.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + u * (h - l)).exp() as u64
    }
}

/// Synthetic traffic for size and speed measurements: `n` records of a municipality's
/// 住基ネット segment, starting at 2026-04-01 00:00 JST.
///
/// Assets: 4 communication servers (CS, role `cs`) and 300 terminals (role `terminal`) in
/// the register; peers `prefecture` and `j-lis`. About 70 % of flows are allowed (CS ↔
/// prefecture/J-LIS on TCP 443 and 700, terminals → CS on TCP 443 and 8443, prefecture →
/// CS), about 30 % denied attempts (terminals to unregistered addresses or ports, unknown
/// sources). Each flow gives a start and an end record; flows begin 1–100 ms apart,
/// source ports are random ephemeral ports, durations and byte counts log-uniform.
/// Records are returned in arrival order (an end record after its flow's last packet).
#[doc(hidden)]
pub fn synthetic(n: usize, seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed);
    let arc = |s: String| -> Arc<str> { Arc::from(s) };
    let cs: Vec<(IpAddr, Arc<str>)> = (1..=4)
        .map(|i| (IpAddr::from([10, 1, 0, i as u8]), arc(format!("cs-{i:02}"))))
        .collect();
    let terminals: Vec<(IpAddr, Arc<str>)> = (1..=300)
        .map(|i: u32| {
            (
                IpAddr::from([10, 1, 1 + (i / 250) as u8, (i % 250) as u8 + 1]),
                arc(format!("term-{i:03}")),
            )
        })
        .collect();
    let role_cs = arc("cs".into());
    let role_term = arc("terminal".into());
    let prefecture = arc("prefecture".into());
    let jlis = arc("j-lis".into());
    let pref_hosts: Vec<IpAddr> = (10..14).map(|h| IpAddr::from([172, 16, 0, h])).collect();
    let jlis_hosts: Vec<IpAddr> = (20..22).map(|h| IpAddr::from([172, 17, 0, h])).collect();
    let lan = arc("lan0".into());
    let wan = arc("wan0".into());
    let rules: Vec<Arc<str>> = [
        "cs-to-prefecture",
        "cs-to-jlis",
        "terminals-to-cs",
        "prefecture-to-cs",
    ]
    .into_iter()
    .map(|s| arc(s.into()))
    .collect();
    let no_rule = sekisho_common::Reason::NoRule as u8;
    let unknown = sekisho_common::Reason::UnknownSource as u8;
    let policy = sekisho_common::Reason::Policy as u8;

    // Pending end records, by the time they are written (a min-heap on that time).
    let mut pending: std::collections::BinaryHeap<std::cmp::Reverse<(i64, usize)>> =
        std::collections::BinaryHeap::new();
    let mut ends: Vec<Option<Record>> = Vec::new();
    let mut out = Vec::with_capacity(n);
    // 2026-04-01T00:00:00+09:00
    let mut now: i64 = 1_774_969_200_000_000;
    let generation = 7;
    while out.len() < n {
        now += rng.log_uniform(1_000, 100_000) as i64;
        while let Some(std::cmp::Reverse((at, i))) = pending.peek().copied() {
            if at > now || out.len() >= n {
                break;
            }
            pending.pop();
            out.extend(ends[i].take());
        }
        if out.len() >= n {
            break;
        }
        let mut rec = Record {
            first_us: now,
            last_us: now,
            generation,
            proto: 6,
            sport: rng.range(32_768, 61_000) as u16,
            packets_fwd: 1,
            bytes_fwd: 60,
            tcp_flags: 0x02,
            ..Record::default()
        };
        let kind = rng.range(0, 100);
        let allowed = kind < 70;
        if allowed {
            rec.verdict = Verdict::Allow;
            rec.reason = policy;
            let c = &cs[rng.range(0, cs.len() as u64) as usize];
            match kind {
                0..30 => {
                    let t = &terminals[rng.range(0, terminals.len() as u64) as usize];
                    rec.rule = 3;
                    rec.rule_name = Some(rules[2].clone());
                    rec.interface = Some(lan.clone());
                    (rec.src, rec.src_asset, rec.src_role) =
                        (Some(t.0), Some(t.1.clone()), Some(role_term.clone()));
                    (rec.dst, rec.dst_asset, rec.dst_role) =
                        (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                    rec.dport = if rng.chance(0.8) { 443 } else { 8443 };
                }
                30..55 => {
                    rec.rule = 1;
                    rec.rule_name = Some(rules[0].clone());
                    rec.interface = Some(lan.clone());
                    (rec.src, rec.src_asset, rec.src_role) =
                        (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                    rec.dst = Some(pref_hosts[rng.range(0, pref_hosts.len() as u64) as usize]);
                    rec.dst_peer = Some(prefecture.clone());
                    rec.dport = if rng.chance(0.7) { 443 } else { 700 };
                }
                55..65 => {
                    rec.rule = 2;
                    rec.rule_name = Some(rules[1].clone());
                    rec.interface = Some(lan.clone());
                    (rec.src, rec.src_asset, rec.src_role) =
                        (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                    rec.dst = Some(jlis_hosts[rng.range(0, jlis_hosts.len() as u64) as usize]);
                    rec.dst_peer = Some(jlis.clone());
                    rec.dport = 443;
                }
                _ => {
                    rec.rule = 4;
                    rec.rule_name = Some(rules[3].clone());
                    rec.interface = Some(wan.clone());
                    rec.src = Some(pref_hosts[rng.range(0, pref_hosts.len() as u64) as usize]);
                    rec.src_peer = Some(prefecture.clone());
                    (rec.dst, rec.dst_asset, rec.dst_role) =
                        (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                    rec.dport = 443;
                }
            }
        } else {
            rec.verdict = Verdict::Deny;
            if kind < 95 {
                // A terminal trying somewhere it may not go.
                let t = &terminals[rng.range(0, terminals.len() as u64) as usize];
                rec.reason = no_rule;
                rec.interface = Some(lan.clone());
                (rec.src, rec.src_asset, rec.src_role) =
                    (Some(t.0), Some(t.1.clone()), Some(role_term.clone()));
                if rng.chance(0.5) {
                    let c = &cs[rng.range(0, cs.len() as u64) as usize];
                    (rec.dst, rec.dst_asset, rec.dst_role) =
                        (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                    rec.dport = [22, 445, 3389, 135][rng.range(0, 4) as usize];
                } else {
                    rec.dst = Some(IpAddr::from([203, 0, 113, rng.range(1, 255) as u8]));
                    rec.dport = [80, 443, 53][rng.range(0, 3) as usize];
                    if rec.dport == 53 {
                        rec.proto = 17;
                        rec.tcp_flags = 0;
                    }
                }
            } else {
                // An address on the LAN that is not in the register.
                rec.reason = unknown;
                rec.interface = Some(lan.clone());
                rec.src = Some(IpAddr::from([10, 1, 9, rng.range(1, 20) as u8]));
                let c = &cs[rng.range(0, cs.len() as u64) as usize];
                (rec.dst, rec.dst_asset, rec.dst_role) =
                    (Some(c.0), Some(c.1.clone()), Some(role_cs.clone()));
                rec.dport = 443;
            }
        }
        out.push(rec.clone());

        // The flow's end: totals for its lifetime.
        let mut end = rec;
        end.event = Event::End;
        if allowed {
            let duration = rng.log_uniform(2_000, 120_000_000) as i64;
            end.last_us = end.first_us + duration;
            end.bytes_fwd = rng.log_uniform(200, 10_000_000);
            end.bytes_rev = rng.log_uniform(200, 10_000_000);
            end.packets_fwd = end.bytes_fwd / 900 + rng.range(2, 6);
            end.packets_rev = end.bytes_rev / 900 + rng.range(2, 6);
            end.tcp_flags = 0x1b;
            end.close = Some(if rng.chance(0.9) {
                Close::Fin
            } else if rng.chance(0.5) {
                Close::Rst
            } else {
                Close::Idle
            });
        } else {
            // Retries of a denied attempt, aggregated until it stops trying.
            let retries = rng.range(0, 4);
            end.last_us = end.first_us + (retries as i64) * 1_000_000 * rng.range(1, 4) as i64;
            end.packets_fwd = 1 + retries;
            end.bytes_fwd = end.packets_fwd * if end.proto == 17 { 74 } else { 60 };
            end.close = Some(Close::Idle);
        }
        // Written when the flow is closed (denied attempts: after the idle timeout).
        let written = end.last_us + if allowed { 0 } else { 30_000_000 };
        pending.push(std::cmp::Reverse((written, ends.len())));
        ends.push(Some(end));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::read::open;
    use super::write::write_grouped;
    use super::*;
    use crate::testutil::TempDir;

    fn name(s: &str) -> Option<Arc<str>> {
        Some(Arc::from(s))
    }

    /// Records that between them set every field to an edge value: each event, verdict and
    /// close, IPv4 and IPv6, unset and maximal numbers, an unknown reason code.
    fn every_field() -> Vec<Record> {
        let v6: IpAddr = "2001:db8::1:0:0:1".parse().expect("address");
        vec![
            Record {
                event: Event::End,
                first_us: 1_774_969_200_000_001,
                last_us: 1_774_969_260_000_002,
                verdict: Verdict::Monitor,
                reason: sekisho_common::Reason::NoRule as u8,
                generation: u32::MAX,
                rule: u32::MAX,
                rule_name: name("規則-1"),
                interface: name("lan0"),
                proto: u8::MAX,
                src: Some(v6),
                dst: Some(IpAddr::from([10, 1, 0, 1])),
                sport: u16::MAX,
                dport: 1,
                src_asset: name("端末-001"),
                src_role: name("terminal"),
                src_peer: name("src-peer"),
                dst_asset: name("cs-01"),
                dst_role: name("cs"),
                dst_peer: name("j-lis"),
                packets_fwd: u64::MAX,
                bytes_fwd: i64::MAX as u64,
                packets_rev: 1,
                bytes_rev: 2,
                tcp_flags: u8::MAX,
                close: Some(Close::Evicted),
                lost: 0,
            },
            Record {
                event: Event::Start,
                first_us: -5,
                last_us: -5,
                verdict: Verdict::Deny,
                reason: 99,
                src: Some(IpAddr::from([0, 0, 0, 0])),
                dst: Some("::".parse().expect("address")),
                ..Record::default()
            },
            Record::gap(0, 7, u64::MAX),
        ]
        .into_iter()
        .chain(Close::ALL.into_iter().enumerate().map(|(i, c)| Record {
            event: Event::End,
            first_us: 100 + i as i64,
            last_us: 200,
            verdict: Verdict::Allow,
            reason: sekisho_common::Reason::Policy as u8,
            src: Some(IpAddr::from([192, 0, 2, i as u8])),
            dst: Some(IpAddr::from([198, 51, 100, 1])),
            close: Some(c),
            ..Record::default()
        }))
        .collect()
    }

    #[test]
    fn every_field_survives_a_segment() {
        let tmp = TempDir::new("segment-fields");
        let path = tmp.join("s.parquet");
        let mut recs = every_field();
        let info = write(&path, &mut recs).expect("write");
        let mut want = every_field();
        want.sort_by_key(|r| (r.first_us, r.last_us));
        assert_eq!(recs, want, "write sorts the records it was given");
        assert_eq!(read_all(&path).expect("read"), want);
        assert_eq!(schema_version(&path).expect("version"), SCHEMA_VERSION);
        assert_eq!(
            info,
            SegmentInfo {
                records: want.len() as u64,
                bytes: std::fs::metadata(&path).expect("stat").len(),
                min_first_us: -5,
                max_first_us: 1_774_969_200_000_001,
                min_last_us: -5,
                max_last_us: 1_774_969_260_000_002,
            }
        );
    }

    #[test]
    fn an_empty_segment_reads_back_empty() {
        let tmp = TempDir::new("segment-empty");
        let path = tmp.join("s.parquet");
        let info = write(&path, &mut Vec::new()).expect("write");
        assert_eq!(info.records, 0);
        assert_eq!((info.min_first_us, info.max_last_us), (0, 0));
        assert!(read_all(&path).expect("read").is_empty());
    }

    #[test]
    fn foreign_files_are_refused() {
        let tmp = TempDir::new("segment-foreign");
        let text = tmp.join("text.parquet");
        std::fs::write(&text, "not parquet").expect("write");
        assert!(matches!(read_all(&text), Err(SegmentError::Read { .. })));

        // A Parquet file without sekisho's footer key.
        let other = tmp.join("other.parquet");
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type("message m { required int64 x; }")
                .expect("schema"),
        );
        let file = File::create(&other).expect("create");
        let mut w = SerializedFileWriter::new(file, schema, Default::default()).expect("writer");
        let mut g = w.next_row_group().expect("group");
        let mut c = g.next_column().expect("column").expect("column");
        c.typed::<Int64Type>()
            .write_batch(&[1], None, None)
            .expect("values");
        c.close().expect("close");
        g.close().expect("close");
        w.close().expect("close");
        assert!(matches!(
            read_all(&other),
            Err(SegmentError::Version { found: None, .. })
        ));
        assert!(matches!(
            schema_version(&other),
            Err(SegmentError::Version { .. })
        ));
    }

    /// Synthetic traffic with a gap every so often, as the recorder writes them.
    fn with_gaps(n: usize, seed: u64) -> Vec<Record> {
        let mut recs = synthetic(n, seed);
        let gaps: Vec<Record> = recs
            .iter()
            .step_by(5_000)
            .map(|r| Record::gap(r.first_us + 1, r.first_us + 2_000_000, 42))
            .collect();
        recs.extend(gaps);
        recs
    }

    fn filters(recs: &[Record]) -> Vec<Filter> {
        let mid = recs[recs.len() / 2].first_us;
        let asset = |s: &str| Some(s.to_string());
        vec![
            Filter::default(),
            Filter {
                since_us: Some(mid),
                until_us: Some(mid + 60_000_000),
                ..Filter::default()
            },
            Filter {
                asset: asset("term-042"),
                ..Filter::default()
            },
            Filter {
                asset: asset("cs-03"),
                since_us: Some(mid),
                ..Filter::default()
            },
            Filter {
                asset: asset("no-such-asset"),
                ..Filter::default()
            },
            Filter {
                role: asset("cs"),
                verdict: Some(Verdict::Deny),
                ..Filter::default()
            },
            Filter {
                peer: asset("j-lis"),
                until_us: Some(mid),
                ..Filter::default()
            },
            Filter {
                addr: Some("10.1.1.0/24".parse().expect("net")),
                ..Filter::default()
            },
            Filter {
                addr: Some("172.17.0.21/32".parse().expect("net")),
                port: Some(443),
                ..Filter::default()
            },
            Filter {
                port: Some(3389),
                ..Filter::default()
            },
            Filter {
                event: Some(Event::End),
                verdict: Some(Verdict::Allow),
                ..Filter::default()
            },
            Filter {
                verdict: Some(Verdict::Monitor),
                ..Filter::default()
            },
            Filter {
                until_us: Some(recs.iter().map(|r| r.first_us).min().expect("records") - 1),
                ..Filter::default()
            },
        ]
    }

    /// `read` with its pruning and page-level evaluation returns exactly the records that
    /// `Filter::matches` accepts among all of them.
    #[test]
    fn read_agrees_with_the_filter_on_every_field() {
        let tmp = TempDir::new("segment-filters");
        let path = tmp.join("s.parquet");
        let mut recs = with_gaps(60_000, 7);
        // Small row groups, so that several are pruned and several read.
        write_grouped(&path, &mut recs, 10_000).expect("write");
        let all = read_all(&path).expect("read");
        assert_eq!(all, recs);
        for f in filters(&all) {
            let want: Vec<&Record> = all.iter().filter(|r| f.matches(r)).collect();
            let mut got = Vec::new();
            let stats = read(&path, &f, &mut |r| {
                got.push(r);
                true
            })
            .expect("read");
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{f:?}");
            assert_eq!(stats.records_matched, want.len() as u64, "{f:?}");
            assert_eq!(stats.row_groups_total, 7, "{f:?}");
        }
    }

    /// So many distinct addresses that the writer falls back from the dictionary to plain
    /// pages: both kinds are read, filtered and decoded.
    #[test]
    fn plain_pages_after_the_dictionary_read_back() {
        let tmp = TempDir::new("segment-plain");
        let path = tmp.join("s.parquet");
        let mut recs = synthetic(40_000, 13);
        for (i, r) in recs.iter_mut().enumerate() {
            if r.src_peer.is_none() && r.src_asset.is_none() {
                let i = i as u16;
                r.src = Some(IpAddr::from([0x2001, 0x0db8, 0, 0, 0, 0, 1, i]));
            }
            r.rule_name = Some(Arc::from(format!(
                "a rule with a rather long name, number {i}"
            )));
        }
        write(&path, &mut recs).expect("write");
        let reader = open(&path).expect("open");
        let encodings: Vec<Encoding> = reader
            .metadata()
            .row_group(0)
            .column(Col::RuleName.index())
            .encodings()
            .collect();
        assert!(encodings.contains(&Encoding::PLAIN), "{encodings:?}");
        assert_eq!(read_all(&path).expect("read"), recs);
        for f in [
            Filter {
                addr: Some("2001:db8::/32".parse().expect("net")),
                ..Filter::default()
            },
            Filter {
                addr: Some("2001:db8::1:0/112".parse().expect("net")),
                role: Some("cs".into()),
                ..Filter::default()
            },
        ] {
            let want: Vec<&Record> = recs.iter().filter(|r| f.matches(r)).collect();
            assert!(!want.is_empty(), "{f:?}");
            let mut got = Vec::new();
            read(&path, &f, &mut |r| {
                got.push(r);
                true
            })
            .expect("read");
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{f:?}");
        }
    }

    #[test]
    fn gaps_match_every_field_filter_but_not_other_times() {
        let tmp = TempDir::new("segment-gaps");
        let path = tmp.join("s.parquet");
        let mut recs = synthetic(1_000, 3);
        let t = recs[500].first_us;
        recs.push(Record::gap(t, t + 10, 5));
        write(&path, &mut recs).expect("write");
        let f = Filter {
            asset: Some("no-such-asset".into()),
            verdict: Some(Verdict::Monitor),
            event: Some(Event::Start),
            ..Filter::default()
        };
        let mut got = Vec::new();
        read(&path, &f, &mut |r| {
            got.push(r);
            true
        })
        .expect("read");
        assert_eq!(got, vec![Record::gap(t, t + 10, 5)]);
        let later = Filter {
            since_us: Some(t + 11),
            ..f
        };
        let stats = read(&path, &later, &mut |_| panic!("nothing matches")).expect("read");
        assert_eq!(stats.records_matched, 0);
    }

    #[test]
    fn statistics_prune_row_groups_and_pages() {
        let tmp = TempDir::new("segment-prune");
        let path = tmp.join("s.parquet");
        // No gaps: a row group whose statistics exclude an asset is not opened.
        let mut recs = synthetic(100_000, 11);
        write_grouped(&path, &mut recs, 10_000).expect("write");
        let t = recs[55_000].first_us;
        let f = Filter {
            since_us: Some(t),
            until_us: Some(t),
            ..Filter::default()
        };
        let stats = read(&path, &f, &mut |_| true).expect("read");
        assert_eq!(stats.row_groups_total, 10);
        // Flows that end later reach into later groups' ranges only through `last`: the
        // groups before cannot end after `t` by much, the groups after start after it.
        assert!(stats.row_groups_read <= 2, "{stats:?}");
        let stats = read(
            &path,
            &Filter {
                asset: Some("zzz".into()),
                ..Filter::default()
            },
            &mut |_| true,
        )
        .expect("read");
        assert_eq!((stats.row_groups_read, stats.records_scanned), (0, 0));
    }

    #[test]
    fn read_stops_at_the_limit_and_when_asked() {
        let tmp = TempDir::new("segment-limit");
        let path = tmp.join("s.parquet");
        let mut recs = synthetic(20_000, 5);
        write(&path, &mut recs).expect("write");
        let f = Filter {
            limit: Some(3),
            ..Filter::default()
        };
        let mut got = Vec::new();
        let stats = read(&path, &f, &mut |r| {
            got.push(r);
            true
        })
        .expect("read");
        assert_eq!(got, recs[..3]);
        assert!(stats.stopped);
        let mut n = 0;
        let stats = read(&path, &Filter::default(), &mut |_| {
            n += 1;
            n < 10_000
        })
        .expect("read");
        assert_eq!(
            (n, stats.records_matched, stats.stopped),
            (10_000, 10_000, true)
        );
    }

    /// The size budget of issue #6: at most 16 bytes per sealed record.
    #[test]
    fn synthetic_traffic_takes_at_most_16_bytes_per_record() {
        let tmp = TempDir::new("segment-size");
        let path = tmp.join("s.parquet");
        // A busy hour; 1 M or 100 M records give the same figure (14.7) within 0.1 byte.
        let n = 250_000;
        let mut recs = synthetic(n, 1);
        let info = write(&path, &mut recs).expect("write");
        let per_record = info.bytes as f64 / n as f64;
        println!(
            "segment: {n} synthetic records, {} bytes, {per_record:.2} bytes per record",
            info.bytes
        );
        assert!(per_record <= 16.0, "{per_record:.2} bytes per record");
    }
}
