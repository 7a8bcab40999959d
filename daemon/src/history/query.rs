//! History queries and exports: sealed segments and the unsealed write-ahead log.
//!
//! A query takes the live segments of the manifest whose time range can overlap the
//! filter, and the WAL files not sealed yet; `segment::runs` prunes row groups and pages by
//! their statistics, and `merge` gives the matching records in time order (by `first`,
//! then `last`) across row groups, segments and the WAL.
//!
//! Gap records match every filter except the time range, so that a reader of a filtered
//! history still sees where records are missing.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use jiff::tz::TimeZone;

use crate::history::manifest::{self, Entry, EntryKind, ManifestError};
use crate::history::merge::{self, Source};
use crate::history::record::{Event, Record, Verdict};
use crate::history::segment::{self, ScanStats, SegmentError};
use crate::history::wal::{self, WalError};

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

/// What a query looked at: the evidence that pruning works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Live segments in the manifest.
    pub segments_total: u64,
    /// Segments whose time range could match, and which were opened.
    pub segments_read: u64,
    /// Row groups in the segments opened, and those whose statistics could match.
    pub row_groups_total: u64,
    pub row_groups_read: u64,
    /// Records the filter was evaluated on (segments after page pruning, and the WAL).
    pub records_scanned: u64,
    /// Records handed to `out`.
    pub records_matched: u64,
    /// Unsealed write-ahead log files read.
    pub wal_files: u64,
}

impl QueryStats {
    pub(crate) fn add_scan(&mut self, scan: &ScanStats) {
        self.row_groups_total += scan.row_groups_total;
        self.row_groups_read += scan.row_groups_read;
        self.records_scanned += scan.records_scanned;
        self.records_matched += scan.records_matched;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot read the history manifest")]
    Manifest {
        #[source]
        source: ManifestError,
    },
    #[error("segment {} is listed in the manifest but missing; run `sekishoctl history verify`", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read a history segment")]
    Segment {
        #[source]
        source: SegmentError,
    },
    #[error("cannot read the history write-ahead log")]
    Wal {
        #[source]
        source: WalError,
    },
    #[error("cannot write {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the Parquet export")]
    Export {
        #[source]
        source: SegmentError,
    },
}

impl From<ManifestError> for QueryError {
    fn from(source: ManifestError) -> QueryError {
        QueryError::Manifest { source }
    }
}

impl From<WalError> for QueryError {
    fn from(source: WalError) -> QueryError {
        QueryError::Wal { source }
    }
}

/// The live segments in manifest order: sealed and not removed since. A path sealed
/// again (a repaired seal) counts once, at its latest entry.
fn live(entries: &[Entry]) -> Vec<&Entry> {
    let mut live: Vec<Option<&Entry>> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for entry in entries {
        match entry.kind {
            EntryKind::Sealed => {
                if let Some(i) = at.insert(&entry.path, live.len()) {
                    live[i] = None;
                }
                live.push(Some(entry));
            }
            EntryKind::Removed => {
                if let Some(&i) = at.get(entry.path.as_str())
                    && live[i].is_some_and(|e| Some(e.seq) == entry.removes)
                {
                    live[i] = None;
                    at.remove(entry.path.as_str());
                }
            }
        }
    }
    live.into_iter().flatten().collect()
}

/// Calls `out` with every record `filter` matches, in time order (by `first`, then
/// `last`): sealed segments and the write-ahead log merged. Stops when `out` returns
/// `false` or `filter.limit` records were given.
pub fn query(
    root: &Path,
    filter: &Filter,
    out: &mut dyn FnMut(Record) -> bool,
) -> Result<QueryStats, QueryError> {
    run(root, filter, &mut Sink::Records(out))
}

/// How many records `query` would give, in `records_matched`. Only the columns the filter
/// names are read: no record is decoded.
pub fn count(root: &Path, filter: &Filter) -> Result<QueryStats, QueryError> {
    run(root, filter, &mut Sink::Count)
}

/// What a query does with the records it finds.
enum Sink<'o> {
    Records(&'o mut dyn FnMut(Record) -> bool),
    Count,
}

fn run(root: &Path, filter: &Filter, sink: &mut Sink) -> Result<QueryStats, QueryError> {
    let mut stats = QueryStats::default();
    let mut remaining = filter.limit.unwrap_or(usize::MAX);
    if remaining == 0 {
        return Ok(stats);
    }
    let sources = sources(root, filter, &mut stats)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match sink {
        Sink::Records(out) => {
            let threads = match remaining >= PARALLEL_FROM {
                true => cores,
                false => 1,
            };
            merge::merge(sources, filter, threads, &mut remaining, &mut stats, *out)?;
        }
        // A count has no order: without a limit, segments are counted on every core.
        Sink::Count if remaining == usize::MAX => {
            count_parallel(sources, filter, cores, &mut stats)?
        }
        Sink::Count => count_sources(sources, filter, &mut remaining, &mut stats)?,
    }
    Ok(stats)
}

/// What a query reads: the live segments whose time range can overlap the filter's, and
/// the write-ahead logs not sealed yet (their records that match, sorted).
fn sources(
    root: &Path,
    filter: &Filter,
    stats: &mut QueryStats,
) -> Result<Vec<Source>, QueryError> {
    let mut entries = manifest::read(root)?;
    let mut seen = entries.last().map_or(0, |e| e.seq);
    let mut sources = Vec::new();
    {
        let segments = live(&entries);
        stats.segments_total = segments.len() as u64;
        segment_sources(root, &segments, filter, &mut sources)?;
    }
    for (hour, path) in wal::list(root)? {
        let contents = match wal::read(&path) {
            Ok(c) => c,
            Err(WalError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // Sealed since the manifest was read: its segment is in the manifest now.
                entries = manifest::read(root)?;
                let fresh: Vec<&Entry> = live(&entries)
                    .into_iter()
                    .filter(|e| e.seq > seen)
                    .collect();
                seen = entries.last().map_or(seen, |e| e.seq);
                stats.segments_total += fresh.len() as u64;
                segment_sources(root, &fresh, filter, &mut sources)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut records = contents.records;
        // Sealed, but the store stopped before deleting the WAL: the segment has them.
        let stem = crate::history::store::segment_stem(hour);
        let sealed = live(&entries).into_iter().any(|e| {
            e.records == records.len() as u64
                && stem.as_deref().is_some_and(|stem| {
                    e.path
                        .strip_prefix(stem)
                        .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".parquet"))
                })
        });
        if sealed {
            continue;
        }
        let scanned = records.len() as u64;
        records.retain(|r| filter.matches(r));
        records.sort_by_key(|r| (r.first_us, r.last_us));
        sources.push(Source::Records { records, scanned });
    }
    Ok(sources)
}

/// The segments of `entries` whose time range can overlap the filter's.
fn segment_sources(
    root: &Path,
    entries: &[&Entry],
    filter: &Filter,
    sources: &mut Vec<Source>,
) -> Result<(), QueryError> {
    for entry in entries {
        if filter
            .since_us
            .is_some_and(|since| entry.max_last_us < since)
            || filter
                .until_us
                .is_some_and(|until| entry.min_first_us > until)
        {
            continue;
        }
        let path = root.join(&entry.path);
        if !path.exists() {
            return Err(QueryError::Missing { path });
        }
        sources.push(Source::Segment {
            path,
            min_first_us: entry.min_first_us,
        });
    }
    Ok(())
}

/// Below this many records still wanted, segments are read one at a time on the calling
/// thread: a small limit is met within a segment or two, and reading ahead would be waste.
const PARALLEL_FROM: usize = 50_000;

/// Counts the matches of `sources` in the order a query reads them, up to `remaining`.
fn count_sources(
    mut sources: Vec<Source>,
    filter: &Filter,
    remaining: &mut usize,
    stats: &mut QueryStats,
) -> Result<(), QueryError> {
    sources.sort_by_key(Source::min_first_us);
    for source in sources {
        if *remaining == 0 {
            break;
        }
        let matched = match source {
            Source::Segment { path, .. } => {
                let f = Filter {
                    limit: Some(*remaining),
                    ..filter.clone()
                };
                stats.segments_read += 1;
                let scan =
                    segment::count(&path, &f).map_err(|source| QueryError::Segment { source })?;
                stats.add_scan(&scan);
                scan.records_matched
            }
            Source::Records { records, scanned } => {
                stats.wal_files += 1;
                stats.records_scanned += scanned;
                let n = records.len().min(*remaining) as u64;
                stats.records_matched += n;
                n
            }
        };
        *remaining -= matched as usize;
    }
    Ok(())
}

/// Counts every match of `sources`, the segments on `threads` threads, each taking the
/// next segment not yet counted. The first failure in source order is the error.
fn count_parallel(
    sources: Vec<Source>,
    filter: &Filter,
    threads: usize,
    stats: &mut QueryStats,
) -> Result<(), QueryError> {
    let mut paths = Vec::new();
    for source in sources {
        match source {
            Source::Segment { path, .. } => paths.push(path),
            Source::Records { records, scanned } => {
                stats.wal_files += 1;
                stats.records_scanned += scanned;
                stats.records_matched += records.len() as u64;
            }
        }
    }
    let next = AtomicUsize::new(0);
    let mut counted: Vec<(usize, Result<ScanStats, SegmentError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(paths.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return mine;
                        };
                        mine.push((i, segment::count(path, filter)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    counted.sort_by_key(|(i, _)| *i);
    for (_, scan) in counted {
        let scan = scan.map_err(|source| QueryError::Segment { source })?;
        stats.segments_read += 1;
        stats.add_scan(&scan);
    }
    Ok(())
}

/// How `write_records` shows records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people: one line per record, times in Japan Standard Time.
    Table,
    /// One JSON object per line, with the Parquet column names.
    Jsonl,
    /// A header line, then one line per record, with the Parquet column names.
    Csv,
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A segment-shaped Parquet file (the same schema as sealed segments).
    Parquet,
    Jsonl,
    Csv,
}

const JST: TimeZone = TimeZone::fixed(jiff::tz::offset(9));

/// RFC 3339 UTC with microseconds: `2026-03-31T15:00:00.000001Z`.
pub fn utc_text(us: i64) -> String {
    match Timestamp::from_microsecond(us) {
        Ok(t) => DateTimePrinter::new()
            .precision(Some(6))
            .timestamp_to_string(&t),
        Err(_) => us.to_string(),
    }
}

/// Japan Standard Time with microseconds: `2026-04-01 00:00:00.000001+09:00`.
fn jst_text(us: i64) -> String {
    match Timestamp::from_microsecond(us) {
        Ok(t) => t
            .to_zoned(JST)
            .strftime("%Y-%m-%d %H:%M:%S%.6f%:z")
            .to_string(),
        Err(_) => us.to_string(),
    }
}

/// Writes records one at a time in one format: the CSV header and the table heading
/// before the first.
pub struct RecordWriter<'w> {
    format: Format,
    w: &'w mut dyn Write,
    started: bool,
    line: String,
}

impl<'w> RecordWriter<'w> {
    pub fn new(format: Format, w: &'w mut dyn Write) -> RecordWriter<'w> {
        RecordWriter {
            format,
            w,
            started: false,
            line: String::new(),
        }
    }

    /// Writes the heading (table, CSV) if nothing was written yet: an empty result still
    /// has its header.
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        match self.format {
            Format::Jsonl => Ok(()),
            Format::Csv => writeln!(
                self.w,
                "{}",
                segment::column_names().collect::<Vec<_>>().join(",")
            ),
            Format::Table => writeln!(
                self.w,
                "{:<32}  {:<5}  {:<7}  {:<19}  {:>4}  {:<5}  {:<40}  {:<40}  PACKETS/BYTES",
                "TIME (JST)",
                "EVENT",
                "VERDICT",
                "REASON",
                "RULE",
                "PROTO",
                "SOURCE",
                "DESTINATION"
            ),
        }
    }

    pub fn write(&mut self, rec: &Record) -> std::io::Result<()> {
        self.start()?;
        self.line.clear();
        match self.format {
            Format::Jsonl => {
                self.line = json_line(rec);
            }
            Format::Csv => csv_line(rec, &mut self.line),
            Format::Table => table_line(rec, &mut self.line),
        }
        self.line.push('\n');
        self.w.write_all(self.line.as_bytes())
    }
}

/// Writes `records` in `format`, with the heading even when there are none.
pub fn write_records<'r>(
    format: Format,
    records: impl IntoIterator<Item = &'r Record>,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let mut out = RecordWriter::new(format, w);
    out.start()?;
    for rec in records {
        out.write(rec)?;
    }
    Ok(())
}

fn name(s: &Option<std::sync::Arc<str>>) -> Option<&str> {
    s.as_deref()
}

fn addr_text(a: Option<IpAddr>) -> Option<String> {
    a.map(|a| a.to_string())
}

fn json_line(rec: &Record) -> String {
    let value = serde_json::json!({
        "event": rec.event.name(),
        "first": utc_text(rec.first_us),
        "last": utc_text(rec.last_us),
        "verdict": rec.verdict.name(),
        "reason": reason_text(rec),
        "generation": rec.generation,
        "rule": rec.rule,
        "rule_name": name(&rec.rule_name),
        "interface": name(&rec.interface),
        "proto": rec.proto,
        "src": addr_text(rec.src),
        "dst": addr_text(rec.dst),
        "sport": rec.sport,
        "dport": rec.dport,
        "src_asset": name(&rec.src_asset),
        "src_role": name(&rec.src_role),
        "src_peer": name(&rec.src_peer),
        "dst_asset": name(&rec.dst_asset),
        "dst_role": name(&rec.dst_role),
        "dst_peer": name(&rec.dst_peer),
        "packets_fwd": rec.packets_fwd,
        "bytes_fwd": rec.bytes_fwd,
        "packets_rev": rec.packets_rev,
        "bytes_rev": rec.bytes_rev,
        "tcp_flags": rec.tcp_flags,
        "close": rec.close.map(|c| c.name()),
        "lost": rec.lost,
    });
    value.to_string()
}

/// The reason as the Parquet column holds it: its name, or the code when this build
/// does not know it.
fn reason_text(rec: &Record) -> String {
    match rec.reason_name() {
        "" if rec.reason != 0 => rec.reason.to_string(),
        name => name.to_string(),
    }
}

fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

fn csv_line(rec: &Record, out: &mut String) {
    let fields: [String; 27] = [
        rec.event.name().into(),
        utc_text(rec.first_us),
        utc_text(rec.last_us),
        rec.verdict.name().into(),
        reason_text(rec),
        rec.generation.to_string(),
        rec.rule.to_string(),
        name(&rec.rule_name).unwrap_or_default().into(),
        name(&rec.interface).unwrap_or_default().into(),
        rec.proto.to_string(),
        addr_text(rec.src).unwrap_or_default(),
        addr_text(rec.dst).unwrap_or_default(),
        rec.sport.to_string(),
        rec.dport.to_string(),
        name(&rec.src_asset).unwrap_or_default().into(),
        name(&rec.src_role).unwrap_or_default().into(),
        name(&rec.src_peer).unwrap_or_default().into(),
        name(&rec.dst_asset).unwrap_or_default().into(),
        name(&rec.dst_role).unwrap_or_default().into(),
        name(&rec.dst_peer).unwrap_or_default().into(),
        rec.packets_fwd.to_string(),
        rec.bytes_fwd.to_string(),
        rec.packets_rev.to_string(),
        rec.bytes_rev.to_string(),
        rec.tcp_flags.to_string(),
        rec.close.map(|c| c.name()).unwrap_or_default().into(),
        rec.lost.to_string(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
}

fn proto_text(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        p => p.to_string(),
    }
}

/// `addr:port (asset/role)`, or `(peer)` for a peer end; IPv6 in brackets.
fn end_text(
    addr: Option<IpAddr>,
    port: u16,
    asset: &Option<std::sync::Arc<str>>,
    role: &Option<std::sync::Arc<str>>,
    peer: &Option<std::sync::Arc<str>>,
) -> String {
    let mut s = match addr {
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => "-".into(),
    };
    let who = match (name(asset), name(role), name(peer)) {
        (Some(a), Some(r), _) => Some(format!("{a}/{r}")),
        (Some(a), None, _) => Some(a.to_string()),
        (None, _, Some(p)) => Some(p.to_string()),
        _ => None,
    };
    if let Some(who) = who {
        s.push_str(&format!(" ({who})"));
    }
    s
}

fn table_line(rec: &Record, out: &mut String) {
    use std::fmt::Write as _;
    let traffic = if rec.event == Event::Gap {
        format!(
            "{} events not recorded until {}",
            rec.lost,
            jst_text(rec.last_us)
        )
    } else {
        format!(
            "{}/{} ⇄ {}/{}",
            rec.packets_fwd, rec.bytes_fwd, rec.packets_rev, rec.bytes_rev
        )
    };
    let (src, dst) = if rec.event == Event::Gap {
        (String::new(), String::new())
    } else {
        (
            end_text(
                rec.src,
                rec.sport,
                &rec.src_asset,
                &rec.src_role,
                &rec.src_peer,
            ),
            end_text(
                rec.dst,
                rec.dport,
                &rec.dst_asset,
                &rec.dst_role,
                &rec.dst_peer,
            ),
        )
    };
    let _ = write!(
        out,
        "{:<32}  {:<5}  {:<7}  {:<19}  {:>4}  {:<5}  {:<40}  {:<40}  {}",
        jst_text(rec.first_us),
        rec.event.name(),
        if rec.event == Event::Gap {
            ""
        } else {
            rec.verdict.name()
        },
        reason_text(rec),
        if rec.rule == 0 {
            "-".to_string()
        } else {
            rec.rule.to_string()
        },
        if rec.event == Event::Gap {
            String::new()
        } else {
            proto_text(rec.proto)
        },
        src,
        dst,
        traffic
    );
}

/// Writes every record `filter` matches to a new file at `out_path`; the Parquet form has
/// the schema of sealed segments. The file is written under a temporary name and renamed
/// when complete, so a failed export leaves nothing that looks whole.
pub fn export(
    root: &Path,
    filter: &Filter,
    format: ExportFormat,
    out_path: &Path,
) -> Result<QueryStats, QueryError> {
    let tmp = {
        let mut name = out_path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        out_path.with_file_name(name)
    };
    let result = export_to(root, filter, format, &tmp);
    match result {
        Ok(stats) => {
            std::fs::rename(&tmp, out_path).map_err(|source| QueryError::Output {
                path: out_path.to_path_buf(),
                source,
            })?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn export_to(
    root: &Path,
    filter: &Filter,
    format: ExportFormat,
    path: &Path,
) -> Result<QueryStats, QueryError> {
    let io_err = |source| QueryError::Output {
        path: path.to_path_buf(),
        source,
    };
    match format {
        ExportFormat::Parquet => {
            let mut writer =
                segment::Writer::create(path).map_err(|source| QueryError::Export { source })?;
            let mut failed = None;
            let stats = query(root, filter, &mut |rec| match writer.push(rec) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
            if let Some(source) = failed {
                return Err(QueryError::Export { source });
            }
            writer
                .finish()
                .map_err(|source| QueryError::Export { source })?;
            Ok(stats)
        }
        ExportFormat::Jsonl | ExportFormat::Csv => {
            let file = std::fs::File::create(path).map_err(io_err)?;
            let mut buf = std::io::BufWriter::new(file);
            let text = if format == ExportFormat::Csv {
                Format::Csv
            } else {
                Format::Jsonl
            };
            let mut out = RecordWriter::new(text, &mut buf);
            out.start().map_err(io_err)?;
            let mut failed = None;
            let stats = query(root, filter, &mut |rec| match out.write(&rec) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
            if let Some(source) = failed {
                return Err(io_err(source));
            }
            let file = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
            file.sync_all().map_err(io_err)?;
            Ok(stats)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::history::manifest::NewEntry;
    use crate::history::record::Close;
    use crate::history::wal::WalWriter;
    use crate::testutil::TempDir;

    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;
    /// 2026-04-01T00:00:00Z
    const START: i64 = 1_775_001_600_000_000;

    fn name(s: &str) -> Option<Arc<str>> {
        Some(Arc::from(s))
    }

    /// Seals `records` as one segment of the history under `root`, as the store does.
    fn seal(root: &Path, rel: &str, mut records: Vec<Record>) -> Entry {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let info = segment::write(&path, &mut records).expect("segment");
        let (sha256, bytes) = manifest::file_sha256(&path).expect("hash");
        manifest::append(
            root,
            NewEntry::sealed(rel.to_string(), &info, sha256, bytes, info.max_last_us),
        )
        .expect("manifest")
    }

    /// Seals `records` as the segment of `hour` the way the store builds it as records come:
    /// in the order given, row groups of `group_rows` each sorted alone.
    fn seal_as_written(root: &Path, hour: i64, records: &[Record], group_rows: usize) {
        let stem = crate::history::store::segment_stem(hour).expect("stem");
        let rel = format!("{stem}.parquet");
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut w = segment::Writer::create(&path).expect("create");
        w.set_group_rows(group_rows);
        for r in records {
            w.push(r.clone()).expect("push");
        }
        let info = w.finish().expect("finish");
        let (sha256, bytes) = manifest::file_sha256(&path).expect("hash");
        let entry = NewEntry::sealed(rel, &info, sha256, bytes, info.max_last_us);
        manifest::append(root, entry).expect("manifest");
    }

    /// `days` days of synthetic traffic from `START`, `per_hour` records an hour, sealed
    /// every `hours` hours (each record in the segment of the hour it arrived in: its last
    /// packet; the store seals every hour, fewer segments keep the test fast). Returns the
    /// records in the order a query returns them.
    fn history(root: &Path, days: i64, per_hour: usize, hours: i64) -> Vec<Record> {
        std::fs::create_dir_all(root).expect("mkdir");
        manifest::init(root).expect("init");
        let mut recs = segment::synthetic((days * 24) as usize * per_hour, 9);
        // Spread the flows' starts over the days; durations stay as they are.
        let (t0, t1) = (recs[0].first_us, recs[recs.len() - 1].first_us);
        let span = (days * DAY - 10 * 60_000_000) as f64;
        for r in &mut recs {
            let d = r.last_us - r.first_us;
            r.first_us = START + ((r.first_us - t0) as f64 / (t1 - t0) as f64 * span) as i64;
            r.last_us = r.first_us + d;
        }
        let segments = (days * 24 / hours) as usize;
        let mut by_segment: Vec<Vec<Record>> = vec![Vec::new(); segments + 1];
        for r in recs {
            by_segment[((r.last_us - START) / (hours * HOUR)) as usize].push(r);
        }
        let mut all = Vec::new();
        for (i, mut recs) in by_segment.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let hour = START / 1_000_000 + i as i64 * hours * 3600;
            let rel = format!(
                "{}.parquet",
                crate::history::store::segment_stem(hour).expect("stem")
            );
            recs.sort_by_key(|r| (r.first_us, r.last_us));
            all.extend(recs.iter().cloned());
            seal(root, &rel, recs);
        }
        // A segment holds flows that started in the hours before it too: the query merges.
        all.sort_by_key(|r| (r.first_us, r.last_us));
        all
    }

    fn collect(root: &Path, f: &Filter) -> (Vec<Record>, QueryStats) {
        let mut got = Vec::new();
        let stats = query(root, f, &mut |r| {
            got.push(r);
            true
        })
        .expect("query");
        (got, stats)
    }

    #[test]
    fn one_day_of_thirty_reads_only_that_day() {
        let tmp = TempDir::new("query-prune");
        let all = history(tmp.path(), 30, 40, 3);
        let day = 17;
        let f = Filter {
            since_us: Some(START + day * DAY),
            until_us: Some(START + (day + 1) * DAY - 1),
            asset: Some("term-042".into()),
            ..Filter::default()
        };
        let (got, stats) = collect(tmp.path(), &f);
        let want: Vec<Record> = all.iter().filter(|r| f.matches(r)).cloned().collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);
        assert_eq!(stats.segments_total, 30 * 8);
        // The day's 8 segments, and the next one, which holds the end records of flows
        // that started before midnight.
        assert!((8..=9).contains(&stats.segments_read), "{stats:?}");
        assert_eq!(stats.row_groups_read, stats.segments_read);
        assert_eq!(stats.records_matched, want.len() as u64);
        assert!(stats.records_scanned < all.len() as u64 / 25, "{stats:?}");
    }

    /// Segments merged on several threads come out as on one: the same records in the same
    /// (time) order, the same statistics, whatever the limit and wherever `out` stops, in
    /// batches and with segments opened ahead.
    #[test]
    fn segments_read_on_threads_come_out_in_order() {
        let tmp = TempDir::new("query-threads");
        let root = tmp.path();
        let all = history(root, 1, 250, 2);
        let entries = manifest::read(root).expect("manifest");
        let segments = live(&entries);
        assert!(segments.len() >= 10, "{}", segments.len());
        let filters = [
            Filter::default(),
            Filter {
                asset: Some("cs-02".into()),
                ..Filter::default()
            },
            Filter {
                since_us: Some(START + 5 * HOUR),
                until_us: Some(START + 9 * HOUR),
                role: Some("terminal".into()),
                ..Filter::default()
            },
        ];
        for f in filters {
            let want: Vec<&Record> = all.iter().filter(|r| f.matches(r)).collect();
            assert!(want.len() > 100, "{f:?}");
            for limit in [0, 1, 2, 8, 99, want.len() - 1, want.len(), usize::MAX] {
                for stop_after in [None, Some(1), Some(7), Some(60)] {
                    let run = |threads| {
                        let (mut got, mut stats) = (Vec::new(), QueryStats::default());
                        let mut sources = Vec::new();
                        segment_sources(root, &segments, &f, &mut sources).expect("sources");
                        let mut remaining = limit;
                        let mut out = |r| {
                            got.push(r);
                            stop_after.is_none_or(|n| got.len() < n)
                        };
                        if limit > 0 {
                            merge::merge(
                                sources,
                                &f,
                                threads,
                                &mut remaining,
                                &mut stats,
                                &mut out,
                            )
                            .expect("read");
                        }
                        (got, stats, remaining)
                    };
                    let one = run(1);
                    let n = limit.min(want.len()).min(stop_after.unwrap_or(usize::MAX));
                    assert_eq!(
                        one.0.iter().collect::<Vec<_>>(),
                        want[..n],
                        "{f:?} {limit} {stop_after:?}"
                    );
                    for threads in [2, 3, 8] {
                        let many = run(threads);
                        assert!(
                            many == one,
                            "{threads} threads, {f:?}, limit {limit}, stop after {stop_after:?}: \
                             {} records, {:?}; one thread: {} records, {:?}",
                            many.0.len(),
                            many.1,
                            one.0.len(),
                            one.1
                        );
                    }
                }
            }
        }
    }

    /// `count` gives the number of records `query` gives, with the same statistics, for
    /// each kind of filter, with limits, over segments (counted on threads) and the WAL,
    /// gaps included.
    #[test]
    fn a_count_is_the_number_of_records_a_query_gives() {
        let tmp = TempDir::new("query-count");
        let root = tmp.path();
        let all = history(root, 1, 250, 2);
        let wal_hour = (START + DAY) / 1_000_000;
        let mut w = WalWriter::open(&root.join(wal::DIR), wal_hour).expect("wal");
        let mut unsealed = segment::synthetic(500, 31);
        for (i, r) in unsealed.iter_mut().enumerate() {
            r.first_us = START + DAY + i as i64 * 1_000;
            r.last_us = r.first_us + 10;
        }
        unsealed.insert(250, Record::gap(START + DAY + 5, START + DAY + 7, 12));
        for r in &unsealed {
            w.append(r).expect("append");
        }
        w.flush_and_sync().expect("sync");
        let filters = [
            Filter::default(),
            Filter {
                asset: Some("cs-02".into()),
                ..Filter::default()
            },
            Filter {
                since_us: Some(START + 5 * HOUR),
                until_us: Some(START + 9 * HOUR),
                role: Some("terminal".into()),
                verdict: Some(Verdict::Deny),
                ..Filter::default()
            },
            Filter {
                peer: Some("j-lis".into()),
                port: Some(443),
                ..Filter::default()
            },
            Filter {
                addr: Some("10.1.1.0/24".parse().expect("net")),
                event: Some(Event::End),
                ..Filter::default()
            },
            Filter {
                asset: Some("no-such-asset".into()),
                ..Filter::default()
            },
        ];
        for base in filters {
            let want = all
                .iter()
                .chain(&unsealed)
                .filter(|r| base.matches(r))
                .count();
            // Each filter but the last matches more than the WAL's gap.
            assert!(
                want > 1 || base.asset.as_deref() == Some("no-such-asset"),
                "{base:?}"
            );
            for limit in [None, Some(0), Some(1), Some(want / 2), Some(want + 1)] {
                let f = Filter {
                    limit,
                    ..base.clone()
                };
                let (got, stats) = collect(root, &f);
                assert_eq!(got.len(), want.min(limit.unwrap_or(usize::MAX)), "{f:?}");
                let counted = count(root, &f).expect("count");
                assert_eq!(counted, stats, "{f:?}");
            }
        }
    }

    /// A segment's row groups join the merge one by one, at their own earliest time, and
    /// their rows are found only then: the first records of a segment of ten row groups
    /// read one of them, on one thread or several (threads reading ahead count nothing).
    #[test]
    fn row_groups_join_the_merge_at_their_own_time() {
        let tmp = TempDir::new("query-lazy");
        let root = tmp.path();
        manifest::init(root).expect("init");
        let mut recs = segment::synthetic(1_000, 3);
        for (i, r) in recs.iter_mut().enumerate() {
            r.first_us = START + i as i64 * 1_000_000;
            r.last_us = r.first_us + 500_000;
        }
        seal_as_written(root, START / 1_000_000, &recs, 100);
        let f = Filter::default();
        for threads in [1, 3] {
            let mut stats = QueryStats::default();
            let sources = sources(root, &f, &mut stats).expect("sources");
            let (mut got, mut remaining) = (Vec::new(), 3);
            merge::merge(sources, &f, threads, &mut remaining, &mut stats, &mut |r| {
                got.push(r);
                true
            })
            .expect("merge");
            assert!(got.iter().eq(recs[..3].iter()), "{threads} threads");
            assert_eq!(
                (stats.row_groups_total, stats.records_scanned),
                (10, 100),
                "{threads} threads: {stats:?}"
            );
        }
        let (got, stats) = collect(root, &f);
        assert_eq!(got, recs);
        assert_eq!(stats.records_scanned, 1_000);
    }

    /// Records come out in time order where the runs overlap: an hour's row groups written
    /// as records arrived (each sorted alone), flows that began hours before the segment
    /// they ended in, and a write-ahead log holding flows older than the last segment; on
    /// one thread or several, with any limit, every record once, and the same statistics.
    #[test]
    fn overlapping_runs_are_merged_into_time_order() {
        let tmp = TempDir::new("query-merge");
        let root = tmp.path();
        manifest::init(root).expect("init");
        let n = 2_400;
        let mut all = segment::synthetic(n, 5);
        for (i, r) in all.iter_mut().enumerate() {
            // Distinct starts spread over three hours; one flow in ten lasts up to two hours.
            let i = i as i64;
            r.first_us = START + (i * 7_919 % n as i64) * (3 * HOUR / n as i64) + i % 3;
            let long = if i % 10 == 0 {
                (i * 104_729) % (2 * HOUR)
            } else {
                0
            };
            r.last_us = r.first_us + (i * 31 % 60) * 1_000_000 + long;
        }
        // Each record arrives at its last packet: the hour it ended in holds it.
        all.sort_by_key(|r| r.last_us);
        let mut hours: Vec<Vec<Record>> = vec![Vec::new(); 6];
        for r in &all {
            hours[((r.last_us - START) / HOUR) as usize].push(r.clone());
        }
        let wal_hour = hours.iter().rposition(|h| !h.is_empty()).expect("records");
        for (h, recs) in hours.iter().enumerate().take(wal_hour) {
            seal_as_written(root, START / 1_000_000 + h as i64 * 3600, recs, 150);
        }
        let hour = START / 1_000_000 + wal_hour as i64 * 3600;
        let mut w = WalWriter::open(&root.join(wal::DIR), hour).expect("wal");
        for r in &hours[wal_hour] {
            w.append(r).expect("append");
        }
        w.flush_and_sync().expect("sync");
        all.sort_by_key(|r| (r.first_us, r.last_us));
        let starts = all
            .iter()
            .map(|r| r.first_us)
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(starts.len(), n, "distinct starts: the order is one");
        let filters = [
            Filter::default(),
            Filter {
                asset: Some("cs-01".into()),
                ..Filter::default()
            },
            Filter {
                since_us: Some(START + HOUR + 600_000_000),
                until_us: Some(START + 2 * HOUR),
                verdict: Some(Verdict::Deny),
                ..Filter::default()
            },
        ];
        for f in filters {
            let want: Vec<&Record> = all.iter().filter(|r| f.matches(r)).collect();
            assert!(want.len() > 40, "{f:?}: {}", want.len());
            let (got, stats) = collect(root, &f);
            assert!(got.iter().eq(want.iter().copied()), "{f:?}");
            assert_eq!(stats.wal_files, 1, "{stats:?}");
            assert!(stats.row_groups_read > stats.segments_read * 2, "{stats:?}");
            for limit in [1, 7, 150, want.len() - 1, usize::MAX] {
                let run = |threads| {
                    let mut stats = QueryStats::default();
                    let sources = sources(root, &f, &mut stats).expect("sources");
                    let (mut got, mut remaining) = (Vec::new(), limit);
                    let mut out = |r| {
                        got.push(r);
                        true
                    };
                    merge::merge(sources, &f, threads, &mut remaining, &mut stats, &mut out)
                        .expect("merge");
                    (got, stats)
                };
                let one = run(1);
                assert!(
                    one.0
                        .iter()
                        .eq(want[..limit.min(want.len())].iter().copied()),
                    "{f:?}, limit {limit}"
                );
                for threads in [2, 3] {
                    assert!(
                        run(threads) == one,
                        "{f:?}, limit {limit}, {threads} threads"
                    );
                }
            }
        }

        // A segment that cannot be read ends the query with its name, whichever thread
        // opened it.
        let entries = manifest::read(root).expect("manifest");
        let broken = root.join(&live(&entries)[1].path);
        let len = std::fs::metadata(&broken).expect("stat").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&broken)
            .and_then(|f| f.set_len(len / 2))
            .expect("truncate");
        for threads in [1, 3] {
            let mut stats = QueryStats::default();
            let f = Filter::default();
            let sources = sources(root, &f, &mut stats).expect("sources");
            let (mut remaining, mut n) = (usize::MAX, 0);
            let err = merge::merge(
                sources,
                &f,
                threads,
                &mut remaining,
                &mut stats,
                &mut |_| {
                    n += 1;
                    true
                },
            )
            .expect_err("a truncated segment");
            let QueryError::Segment { source } = err else {
                panic!("{err:?}");
            };
            let text = source.to_string();
            assert!(text.contains(&*broken.to_string_lossy()), "{text}");
            assert!(n < all.len(), "{threads} threads: {n}");
        }
    }

    fn record(first_us: i64, asset: &str, verdict: Verdict) -> Record {
        Record {
            event: Event::Start,
            first_us,
            last_us: first_us,
            verdict,
            proto: 6,
            src: Some(IpAddr::from([10, 1, 1, 7])),
            dst: Some(IpAddr::from([10, 1, 0, 1])),
            sport: 40_000,
            dport: 443,
            src_asset: name(asset),
            dst_asset: name("cs-01"),
            ..Record::default()
        }
    }

    #[test]
    fn the_write_ahead_log_follows_the_segments_in_time_order() {
        let tmp = TempDir::new("query-wal");
        let root = tmp.path();
        manifest::init(root).expect("init");
        let hour = START / 1_000_000;
        seal(
            root,
            &format!(
                "{}.parquet",
                crate::history::store::segment_stem(hour).expect("stem")
            ),
            vec![
                record(START + 2, "a", Verdict::Allow),
                record(START + 1, "b", Verdict::Deny),
            ],
        );
        let mut w = WalWriter::open(&root.join(wal::DIR), hour + 3600).expect("wal");
        let later = START + HOUR;
        for rec in [
            record(later + 5, "c", Verdict::Allow),
            Record::gap(later + 1, later + 3, 9),
            record(later + 2, "d", Verdict::Deny),
        ] {
            w.append(&rec).expect("append");
        }
        w.flush_and_sync().expect("sync");
        let (got, stats) = collect(root, &Filter::default());
        let firsts: Vec<i64> = got.iter().map(|r| r.first_us).collect();
        assert_eq!(
            firsts,
            [START + 1, START + 2, later + 1, later + 2, later + 5]
        );
        assert_eq!((stats.segments_read, stats.wal_files), (1, 1));

        // The gap is in every filtered answer that covers its time.
        let f = Filter {
            asset: Some("d".into()),
            verdict: Some(Verdict::Deny),
            ..Filter::default()
        };
        let (got, _) = collect(root, &f);
        assert_eq!(
            got.iter().map(|r| r.event).collect::<Vec<_>>(),
            [Event::Gap, Event::Start]
        );

        // The limit counts across segments and the WAL, gaps included.
        let (got, stats) = collect(
            root,
            &Filter {
                limit: Some(3),
                ..Filter::default()
            },
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].event, Event::Gap);
        assert_eq!(stats.records_matched, 3);
    }

    #[test]
    fn a_wal_already_sealed_is_not_read_twice() {
        let tmp = TempDir::new("query-sealed-wal");
        let root = tmp.path();
        manifest::init(root).expect("init");
        let hour = START / 1_000_000;
        let recs = vec![
            record(START + 1, "a", Verdict::Allow),
            record(START + 2, "b", Verdict::Allow),
        ];
        // The store appended the entry, then stopped before deleting the WAL.
        let mut w = WalWriter::open(&root.join(wal::DIR), hour).expect("wal");
        for r in &recs {
            w.append(r).expect("append");
        }
        w.flush_and_sync().expect("sync");
        seal(
            root,
            &format!(
                "{}.parquet",
                crate::history::store::segment_stem(hour).expect("stem")
            ),
            recs.clone(),
        );
        let (got, stats) = collect(root, &Filter::default());
        assert_eq!(got, recs);
        assert_eq!(stats.wal_files, 0);
    }

    #[test]
    fn a_removed_segment_is_not_read_and_a_missing_one_is_an_error() {
        let tmp = TempDir::new("query-removed");
        let root = tmp.path();
        manifest::init(root).expect("init");
        let hour = START / 1_000_000;
        let old = seal(
            root,
            &format!(
                "{}.parquet",
                crate::history::store::segment_stem(hour).expect("stem")
            ),
            vec![record(START, "a", Verdict::Allow)],
        );
        let rel = format!(
            "{}.parquet",
            crate::history::store::segment_stem(hour + 3600).expect("stem")
        );
        seal(root, &rel, vec![record(START + HOUR, "b", Verdict::Allow)]);
        manifest::append(root, old.removal(START + 2 * HOUR, "retention 7y".into()))
            .expect("removal");
        std::fs::remove_file(root.join(&old.path)).expect("remove");
        let (got, stats) = collect(root, &Filter::default());
        assert_eq!(got.len(), 1);
        assert_eq!(stats.segments_total, 1);

        std::fs::remove_file(root.join(&rel)).expect("remove");
        let err = query(root, &Filter::default(), &mut |_| true).expect_err("missing");
        assert!(matches!(err, QueryError::Missing { .. }), "{err}");
    }

    #[test]
    fn an_empty_history_has_no_records() {
        let tmp = TempDir::new("query-empty");
        let (got, stats) = collect(tmp.path(), &Filter::default());
        assert!(got.is_empty());
        assert_eq!(stats, QueryStats::default());
    }

    #[test]
    fn each_filter_field_narrows_as_documented() {
        let base = Record {
            src_role: name("terminal"),
            dst_role: name("cs"),
            ..record(100, "term-001", Verdict::Allow)
        };
        let peer = Record {
            src_asset: None,
            src_role: None,
            src_peer: name("j-lis"),
            src: Some(IpAddr::from([172, 17, 0, 20])),
            sport: 443,
            dport: 50_000,
            ..base.clone()
        };
        let gap = Record::gap(50, 150, 3);
        let cases: Vec<(Filter, [bool; 3])> = vec![
            (Filter::default(), [true, true, true]),
            (
                Filter {
                    since_us: Some(101),
                    ..Filter::default()
                },
                [false, false, true],
            ),
            (
                Filter {
                    since_us: Some(100),
                    ..Filter::default()
                },
                [true, true, true],
            ),
            (
                Filter {
                    until_us: Some(99),
                    ..Filter::default()
                },
                [false, false, true],
            ),
            (
                Filter {
                    until_us: Some(49),
                    ..Filter::default()
                },
                [false, false, false],
            ),
            (
                Filter {
                    since_us: Some(151),
                    ..Filter::default()
                },
                [false, false, false],
            ),
            (
                Filter {
                    asset: Some("cs-01".into()),
                    ..Filter::default()
                },
                [true, true, true],
            ),
            (
                Filter {
                    asset: Some("term-001".into()),
                    ..Filter::default()
                },
                [true, false, true],
            ),
            (
                Filter {
                    role: Some("terminal".into()),
                    ..Filter::default()
                },
                [true, false, true],
            ),
            (
                Filter {
                    role: Some("cs".into()),
                    ..Filter::default()
                },
                [true, true, true],
            ),
            (
                Filter {
                    peer: Some("j-lis".into()),
                    ..Filter::default()
                },
                [false, true, true],
            ),
            (
                Filter {
                    addr: Some("10.1.1.0/24".parse().expect("net")),
                    ..Filter::default()
                },
                [true, false, true],
            ),
            (
                Filter {
                    addr: Some("10.1.0.1/32".parse().expect("net")),
                    ..Filter::default()
                },
                [true, true, true],
            ),
            (
                Filter {
                    addr: Some("::/0".parse().expect("net")),
                    ..Filter::default()
                },
                [false, false, true],
            ),
            (
                Filter {
                    port: Some(40_000),
                    ..Filter::default()
                },
                [true, false, true],
            ),
            (
                Filter {
                    port: Some(443),
                    ..Filter::default()
                },
                [true, true, true],
            ),
            (
                Filter {
                    port: Some(50_000),
                    ..Filter::default()
                },
                [false, true, true],
            ),
            (
                Filter {
                    verdict: Some(Verdict::Deny),
                    ..Filter::default()
                },
                [false, false, true],
            ),
            (
                Filter {
                    event: Some(Event::End),
                    ..Filter::default()
                },
                [false, false, true],
            ),
            (
                Filter {
                    event: Some(Event::Start),
                    ..Filter::default()
                },
                [true, true, true],
            ),
        ];
        for (f, want) in cases {
            let got = [&base, &peer, &gap].map(|r| f.matches(r));
            assert_eq!(got, want, "{f:?}");
        }
    }

    fn sample() -> Record {
        Record {
            event: Event::End,
            first_us: START + 1,
            last_us: START + 2_500_000,
            verdict: Verdict::Allow,
            reason: sekisho_common::Reason::Policy as u8,
            generation: 7,
            rule: 3,
            rule_name: name("terminals, to \"cs\""),
            interface: name("lan0"),
            proto: 6,
            src: Some("2001:db8::7".parse().expect("address")),
            dst: Some(IpAddr::from([10, 1, 0, 1])),
            sport: 51_234,
            dport: 443,
            src_asset: name("term-007"),
            src_role: name("terminal"),
            dst_asset: name("cs-01"),
            dst_role: name("cs"),
            packets_fwd: 12,
            bytes_fwd: 3456,
            packets_rev: 10,
            bytes_rev: 9876,
            tcp_flags: 0x1b,
            close: Some(Close::Fin),
            ..Record::default()
        }
    }

    #[test]
    fn json_lines_carry_the_parquet_column_names_and_utc_times() {
        let mut out = Vec::new();
        write_records(
            Format::Jsonl,
            [&sample(), &Record::gap(START, START + 1, 4)],
            &mut out,
        )
        .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        let keys: Vec<&str> = lines[0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = segment::column_names().collect();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(lines[0]["first"], "2026-04-01T00:00:00.000001Z");
        assert_eq!(lines[0]["last"], "2026-04-01T00:00:02.500000Z");
        assert_eq!(lines[0]["reason"], "policy");
        assert_eq!(lines[0]["src"], "2001:db8::7");
        assert_eq!(lines[0]["close"], "fin");
        assert_eq!(lines[0]["src_peer"], serde_json::Value::Null);
        assert_eq!(lines[1]["event"], "gap");
        assert_eq!(lines[1]["lost"], 4);
        assert_eq!(lines[1]["src"], serde_json::Value::Null);
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let mut out = Vec::new();
        write_records(Format::Csv, [&sample()], &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                segment::column_names()
                    .collect::<Vec<_>>()
                    .join(",")
                    .as_str()
            )
        );
        assert_eq!(
            lines.next(),
            Some(
                "end,2026-04-01T00:00:00.000001Z,2026-04-01T00:00:02.500000Z,allow,policy,7,3,\
                 \"terminals, to \"\"cs\"\"\",lan0,6,2001:db8::7,10.1.0.1,51234,443,term-007,\
                 terminal,,cs-01,cs,,12,3456,10,9876,27,fin,0"
            )
        );
        assert_eq!(lines.next(), None);

        let mut out = Vec::new();
        write_records(Format::Csv, [], &mut out).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8").lines().count(), 1);
    }

    #[test]
    fn the_table_shows_japan_time_and_both_ends() {
        let mut out = Vec::new();
        write_records(
            Format::Table,
            [&sample(), &Record::gap(START, START + 1, 4)],
            &mut out,
        )
        .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TIME (JST)"), "{text}");
        assert!(
            lines[1].starts_with("2026-04-01 09:00:00.000001+09:00  end    allow    policy"),
            "{text}"
        );
        assert!(
            lines[1].contains("[2001:db8::7]:51234 (term-007/terminal)"),
            "{text}"
        );
        assert!(lines[1].contains("10.1.0.1:443 (cs-01/cs)"), "{text}");
        assert!(lines[1].ends_with("12/3456 ⇄ 10/9876"), "{text}");
        assert!(lines[2].contains("gap"), "{text}");
        assert!(
            lines[2].ends_with("4 events not recorded until 2026-04-01 09:00:00.000001+09:00"),
            "{text}"
        );
    }

    #[test]
    fn exports_hold_what_the_query_returns() {
        let tmp = TempDir::new("query-export");
        let root = tmp.join("history");
        let all = history(&root, 1, 200, 1);
        let f = Filter {
            since_us: Some(START + 3 * HOUR),
            until_us: Some(START + 9 * HOUR),
            role: Some("cs".into()),
            ..Filter::default()
        };
        let want: Vec<Record> = all.iter().filter(|r| f.matches(r)).cloned().collect();
        assert!(!want.is_empty());

        let parquet = tmp.join("out.parquet");
        let stats = export(&root, &f, ExportFormat::Parquet, &parquet).expect("export");
        assert_eq!(stats.records_matched, want.len() as u64);
        let mut sorted = want.clone();
        sorted.sort_by_key(|r| (r.first_us, r.last_us));
        assert_eq!(segment::read_all(&parquet).expect("read"), sorted);

        let jsonl = tmp.join("out.jsonl");
        export(&root, &f, ExportFormat::Jsonl, &jsonl).expect("export");
        let text = std::fs::read_to_string(&jsonl).expect("read");
        assert_eq!(text.lines().count(), want.len());
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("json");
        assert_eq!(first["first"], utc_text(want[0].first_us));

        let csv = tmp.join("out.csv");
        export(&root, &f, ExportFormat::Csv, &csv).expect("export");
        let text = std::fs::read_to_string(&csv).expect("read");
        assert_eq!(text.lines().count(), want.len() + 1);
        assert!(!tmp.join("out.csv.partial").exists());
    }
}
