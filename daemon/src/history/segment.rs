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

use std::collections::HashMap;
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
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{ColumnPath, Type};

use crate::history::query::Filter;
use crate::history::record::{Close, Event, Record, Verdict};

/// The footer key that names the schema version, and the version this module writes.
pub const SCHEMA_KEY: &str = "sekisho.schema";
pub const SCHEMA_VERSION: u32 = 1;

/// Rows per row group: an hour of a busy gateway fits in one, so the row-group statistics
/// prune by hour and the page index prunes within it.
const ROW_GROUP_ROWS: usize = 1 << 20;

const PAGE_ROWS: usize = 1 << 16;

/// zstd level, measured on `synthetic` (2 M records, one core): level 3 gives 14.7 bytes
/// per record and seals 590,000 records/s, 6 gives 14.5 at 505,000/s, 9 gives 13.9 at
/// 400,000/s; reading is as fast at each. Sealing speed bounds sustained ingest, and 3 is
/// well inside the 16-byte budget.
const ZSTD_LEVEL: i32 = 3;

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

fn properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        // Version 1 data pages: every Parquet reader of the last decade reads them.
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("zstd level in range"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        // Pages of 64 Ki rows: a few minutes of a busy hour, so the page index still skips
        // most of a segment for a short time range, while zstd sees long enough runs.
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_data_page_size_limit(4 << 20)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: Col::First.index() as i32,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: Col::Last.index() as i32,
                descending: false,
                nulls_first: false,
            },
        ]))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_KEY.to_string(),
            SCHEMA_VERSION.to_string(),
        )]))
        .set_created_by(format!("sekisho {}", env!("CARGO_PKG_VERSION")));
    // Measured on `synthetic` (bytes per record on disk; milliseconds for one asset over a
    // day of 8 M records, where decompressing every page of every column dominates):
    // - the times delta-encoded: 0.2 bytes more than plain, 16 % faster to read, since a
    //   sparse match needs every page and plain times are 16 of the 68 bytes per record
    //   that zstd must inflate;
    // - source ports and counters plain, then zstd: a flow's start and end records are
    //   neighbours and share the source port, which zstd sees in plain bytes but not
    //   through dictionary bit-packing (0.8 bytes less); delta-encoded counters were 4.3
    //   bytes larger.
    for col in [Col::First, Col::Last] {
        let path = ColumnPath::from(col.name());
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    for col in [
        Col::Sport,
        Col::PacketsFwd,
        Col::BytesFwd,
        Col::PacketsRev,
        Col::BytesRev,
    ] {
        let path = ColumnPath::from(col.name());
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::PLAIN);
    }
    props.build()
}

/// Sorts `records` by (`first_us`, `last_us`), writes them to a new Parquet file at `path`
/// (replacing any file there) and syncs it to disk. The caller makes the file visible
/// atomically (rename, directory sync) and enters it in the manifest.
pub fn write(path: &Path, records: &mut Vec<Record>) -> Result<SegmentInfo, SegmentError> {
    write_grouped(path, records, ROW_GROUP_ROWS)
}

fn write_grouped(
    path: &Path,
    records: &mut Vec<Record>,
    group_rows: usize,
) -> Result<SegmentInfo, SegmentError> {
    sort(records);
    let mut writer = Writer::create(path)?;
    writer.group_rows = group_rows;
    for chunk in records.chunks(group_rows) {
        writer.write_sorted(chunk)?;
    }
    writer.finish()
}

/// A segment written a row group at a time, for more records than fit in memory (a
/// Parquet export). Each row group is sorted by (`first_us`, `last_us`) on its own; the
/// file as a whole is in the order the records were given.
pub struct Writer {
    path: PathBuf,
    inner: SerializedFileWriter<File>,
    strings: Strings,
    pending: Vec<Record>,
    group_rows: usize,
    info: SegmentInfo,
}

impl Writer {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<Writer, SegmentError> {
        let file = File::create(path).map_err(|source| SegmentError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let inner = SerializedFileWriter::new(file, schema(), Arc::new(properties())).map_err(
            |source| SegmentError::Write {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(Writer {
            path: path.to_path_buf(),
            inner,
            strings: Strings::default(),
            pending: Vec::new(),
            group_rows: ROW_GROUP_ROWS,
            info: SegmentInfo::default(),
        })
    }

    /// Adds a record; a full row group is written out.
    pub fn push(&mut self, record: Record) -> Result<(), SegmentError> {
        self.pending.push(record);
        if self.pending.len() >= self.group_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SegmentError> {
        let mut rows = std::mem::take(&mut self.pending);
        sort(&mut rows);
        self.write_sorted(&rows)?;
        rows.clear();
        self.pending = rows;
        Ok(())
    }

    fn write_sorted(&mut self, rows: &[Record]) -> Result<(), SegmentError> {
        if rows.is_empty() {
            return Ok(());
        }
        let wr = |source| SegmentError::Write {
            path: self.path.clone(),
            source,
        };
        let mut group = self.inner.next_row_group().map_err(wr)?;
        write_group(&mut group, rows, &mut self.strings).map_err(wr)?;
        group.close().map_err(wr)?;
        let info = &mut self.info;
        let (first, last) = (rows[0].first_us, rows[rows.len() - 1].first_us);
        let (min_last, max_last) = rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
            (lo.min(r.last_us), hi.max(r.last_us))
        });
        if info.records == 0 {
            (info.min_first_us, info.max_first_us) = (first, last);
            (info.min_last_us, info.max_last_us) = (min_last, max_last);
        } else {
            info.min_first_us = info.min_first_us.min(first);
            info.max_first_us = info.max_first_us.max(last);
            info.min_last_us = info.min_last_us.min(min_last);
            info.max_last_us = info.max_last_us.max(max_last);
        }
        info.records += rows.len() as u64;
        Ok(())
    }

    /// Writes what is pending and the footer, and syncs the file to disk.
    pub fn finish(mut self) -> Result<SegmentInfo, SegmentError> {
        self.flush()?;
        let path = self.path;
        let file = self
            .inner
            .into_inner()
            .map_err(|source| SegmentError::Write {
                path: path.clone(),
                source,
            })?;
        let sync = |source| SegmentError::Sync {
            path: path.clone(),
            source,
        };
        file.sync_all().map_err(sync)?;
        self.info.bytes = file.metadata().map_err(sync)?.len();
        Ok(self.info)
    }
}

/// Sorts by (`first_us`, `last_us`), keeping the order of equal records. Sorting small keys
/// and then moving each record once is several times faster than moving records around
/// in the sort itself (a `Record` is about 200 bytes).
fn sort(records: &mut Vec<Record>) {
    if records.is_sorted_by_key(|r| (r.first_us, r.last_us)) {
        return;
    }
    let mut keys: Vec<(i64, i64, u32)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.first_us, r.last_us, i as u32))
        .collect();
    keys.sort_unstable();
    let mut taken = std::mem::take(records);
    records.extend(
        keys.iter()
            .map(|&(_, _, i)| std::mem::take(&mut taken[i as usize])),
    );
}

/// Byte arrays of the strings already written, so that a name shared by a million records
/// is converted once (the recorder hands out the same `Arc<str>` per name).
#[derive(Default)]
struct Strings {
    /// By the `Arc`'s address; the `Arc` kept here keeps the address from being reused
    /// for another name while the segment is written.
    names: FastMap<usize, (Arc<str>, ByteArray)>,
    addrs: FastMap<IpAddr, ByteArray>,
}

impl Strings {
    fn name(&mut self, s: &Arc<str>) -> ByteArray {
        let key = Arc::as_ptr(s) as *const u8 as usize;
        self.names
            .entry(key)
            .or_insert_with(|| (s.clone(), ByteArray::from(s.as_bytes().to_vec())))
            .1
            .clone()
    }

    fn addr(&mut self, a: IpAddr) -> ByteArray {
        self.addrs
            .entry(a)
            .or_insert_with(|| ByteArray::from(a.to_string().into_bytes()))
            .clone()
    }
}

fn write_group(
    group: &mut SerializedRowGroupWriter<'_, File>,
    rows: &[Record],
    strings: &mut Strings,
) -> parquet::errors::Result<()> {
    use parquet::data_type::{ByteArrayType, Int32Type, Int64Type};

    let statics = |s: &'static str| ByteArray::from(s);
    let events: Vec<ByteArray> = Event::ALL.iter().map(|e| statics(e.name())).collect();
    let verdicts: Vec<ByteArray> = Verdict::ALL.iter().map(|v| statics(v.name())).collect();
    let closes: Vec<ByteArray> = Close::ALL.iter().map(|c| statics(c.name())).collect();
    let mut reasons: HashMap<u8, ByteArray> = HashMap::new();

    for col in Col::ALL {
        let mut w = group.next_column()?.ok_or_else(|| {
            parquet::errors::ParquetError::General("schema has fewer columns".into())
        })?;
        let i64s = |f: fn(&Record) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let i32s = |f: fn(&Record) -> i32| rows.iter().map(f).collect::<Vec<i32>>();
        match col {
            Col::First
            | Col::Last
            | Col::PacketsFwd
            | Col::BytesFwd
            | Col::PacketsRev
            | Col::BytesRev
            | Col::Lost => {
                let v = match col {
                    Col::First => i64s(|r| r.first_us),
                    Col::Last => i64s(|r| r.last_us),
                    Col::PacketsFwd => i64s(|r| r.packets_fwd as i64),
                    Col::BytesFwd => i64s(|r| r.bytes_fwd as i64),
                    Col::PacketsRev => i64s(|r| r.packets_rev as i64),
                    Col::BytesRev => i64s(|r| r.bytes_rev as i64),
                    _ => i64s(|r| r.lost as i64),
                };
                w.typed::<Int64Type>().write_batch(&v, None, None)?;
            }
            Col::Generation | Col::Rule | Col::Proto | Col::Sport | Col::Dport | Col::TcpFlags => {
                // Unsigned logical types: the bits are stored as they are.
                let v = match col {
                    Col::Generation => i32s(|r| r.generation as i32),
                    Col::Rule => i32s(|r| r.rule as i32),
                    Col::Proto => i32s(|r| i32::from(r.proto)),
                    Col::Sport => i32s(|r| i32::from(r.sport)),
                    Col::Dport => i32s(|r| i32::from(r.dport)),
                    _ => i32s(|r| i32::from(r.tcp_flags)),
                };
                w.typed::<Int32Type>().write_batch(&v, None, None)?;
            }
            Col::Event | Col::Verdict | Col::Reason => {
                let v: Vec<ByteArray> = rows
                    .iter()
                    .map(|r| match col {
                        Col::Event => events[r.event as usize].clone(),
                        Col::Verdict => verdicts[r.verdict as usize].clone(),
                        _ => reasons
                            .entry(r.reason)
                            .or_insert_with(|| reason_text(r.reason).into_bytes().into())
                            .clone(),
                    })
                    .collect();
                w.typed::<ByteArrayType>().write_batch(&v, None, None)?;
            }
            _ => {
                let mut values = Vec::with_capacity(rows.len());
                let mut defs = Vec::with_capacity(rows.len());
                for r in rows {
                    let v = match col {
                        Col::Src => r.src.map(|a| strings.addr(a)),
                        Col::Dst => r.dst.map(|a| strings.addr(a)),
                        Col::Close => r.close.map(|c| closes[c as usize].clone()),
                        _ => {
                            let name = match col {
                                Col::RuleName => &r.rule_name,
                                Col::Interface => &r.interface,
                                Col::SrcAsset => &r.src_asset,
                                Col::SrcRole => &r.src_role,
                                Col::SrcPeer => &r.src_peer,
                                Col::DstAsset => &r.dst_asset,
                                Col::DstRole => &r.dst_role,
                                _ => &r.dst_peer,
                            };
                            name.as_ref().map(|s| strings.name(s))
                        }
                    };
                    defs.push(i16::from(v.is_some()));
                    values.extend(v);
                }
                w.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)?;
            }
        }
        w.close()?;
    }
    Ok(())
}

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

/// What `read` looked at: the evidence that pruning works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub row_groups_total: u64,
    /// Row groups whose statistics could match, and which were opened.
    pub row_groups_read: u64,
    /// Rows of those row groups that the page index could not rule out, on which the filter
    /// was evaluated.
    pub records_scanned: u64,
    /// Records handed to `out`.
    pub records_matched: u64,
    /// `out` asked to stop, or the filter's limit was reached.
    pub stopped: bool,
}

impl ScanStats {
    pub fn add(&mut self, other: &ScanStats) {
        self.row_groups_total += other.row_groups_total;
        self.row_groups_read += other.row_groups_read;
        self.records_scanned += other.records_scanned;
        self.records_matched += other.records_matched;
        self.stopped |= other.stopped;
    }
}

/// Rows decoded per batch when materializing: bounds memory and the work wasted when `out`
/// stops early.
const BATCH: usize = 8192;

/// Unselected rows between two selected ones that are decoded rather than skipped: skipping
/// costs about as much as decoding a few dozen values.
const MERGE_GAP: usize = 32;

/// The schema version in a segment's footer, without reading its data.
pub fn schema_version(path: &Path) -> Result<u32, SegmentError> {
    let file = File::open(path).map_err(|source| SegmentError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(|source| SegmentError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let found = footer_version(reader.metadata());
    found
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SegmentError::Version {
            path: path.to_path_buf(),
            found: found.map(str::to_string),
        })
}

fn footer_version(meta: &ParquetMetaData) -> Option<&str> {
    meta.file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == SCHEMA_KEY)?
        .value
        .as_deref()
}

/// Opens a segment with its page index and checks that it is one this module wrote: the
/// schema version in the footer and every column's name and position.
fn open(path: &Path) -> Result<SerializedFileReader<File>, SegmentError> {
    let file = File::open(path).map_err(|source| SegmentError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let reader = SerializedFileReader::new_with_options(file, options).map_err(|source| {
        SegmentError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let found = footer_version(reader.metadata());
    if found != Some("1") {
        return Err(SegmentError::Version {
            path: path.to_path_buf(),
            found: found.map(str::to_string),
        });
    }
    let columns = reader.metadata().file_metadata().schema_descr().columns();
    for index in 0..columns.len().max(Col::ALL.len()) {
        let found = columns.get(index).map(|c| c.name());
        let expected = Col::ALL.get(index).map(|c| c.name());
        if found != expected {
            return Err(SegmentError::Schema {
                path: path.to_path_buf(),
                index,
                found: found.unwrap_or("(none)").to_string(),
                expected: expected.unwrap_or("(none)"),
            });
        }
    }
    Ok(reader)
}

/// Every record of a segment, in file order.
pub fn read_all(path: &Path) -> Result<Vec<Record>, SegmentError> {
    let mut out = Vec::new();
    read(path, &Filter::default(), &mut |r| {
        out.push(r);
        true
    })?;
    Ok(out)
}

/// Calls `out` with each record of the segment that `filter` matches, in file order (by
/// `first_us`), until `out` returns `false` or `filter.limit` records were given.
///
/// Row groups whose statistics rule the filter out are not opened; within a row group the
/// page index of `first` and `last` narrows the rows, the filter is evaluated on the columns
/// it names (string columns on their dictionary, once per distinct value), and only then
/// are the matching rows decoded in full.
pub fn read(
    path: &Path,
    filter: &Filter,
    out: &mut dyn FnMut(Record) -> bool,
) -> Result<ScanStats, SegmentError> {
    let reader = open(path)?;
    let meta = reader.metadata();
    let mut scan = Scan {
        path,
        filter,
        stats: ScanStats {
            row_groups_total: meta.num_row_groups() as u64,
            ..ScanStats::default()
        },
        limit: filter.limit.unwrap_or(usize::MAX),
        names: Interner::default(),
        addrs: HashMap::default(),
    };
    if scan.limit == 0 {
        scan.stats.stopped = true;
        return Ok(scan.stats);
    }
    let mut first_row = 0u64;
    for i in 0..meta.num_row_groups() {
        let group_meta = meta.row_group(i);
        let rows = group_meta.num_rows() as usize;
        if group_may_match(group_meta, filter) {
            scan.stats.row_groups_read += 1;
            let group = reader.get_row_group(i).map_err(|e| scan.err(e))?;
            let index = meta.page_index_for_row_group(i);
            let plan = time_plan(&index, rows, filter);
            let selected = scan.select(&*group, &plan, may_have_gaps(group_meta))?;
            scan.materialize(&*group, first_row, &selected, out)?;
            if scan.stats.stopped {
                break;
            }
        }
        first_row += rows as u64;
    }
    Ok(scan.stats)
}

fn i64_stats(meta: &RowGroupMetaData, col: Col) -> Option<(i64, i64)> {
    match meta.column(col.index()).statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// Whether a value equal to `want` may be in the column chunk, by its statistics.
fn may_contain(meta: &RowGroupMetaData, col: Col, want: &[u8]) -> bool {
    let Some(stats) = meta.column(col.index()).statistics() else {
        return true;
    };
    if stats.null_count_opt() == Some(meta.num_rows() as u64) {
        return false;
    }
    match (stats.min_bytes_opt(), stats.max_bytes_opt()) {
        // Truncated statistics are still bounds: the min a prefix, the max rounded up.
        (Some(min), Some(max)) if stats.physical_type() == parquet::basic::Type::BYTE_ARRAY => {
            min <= want && want <= max
        }
        _ => true,
    }
}

fn may_contain_port(meta: &RowGroupMetaData, col: Col, port: u16) -> bool {
    match meta.column(col.index()).statistics() {
        Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(&min), Some(&max)) => (min..=max).contains(&i32::from(port)),
            _ => true,
        },
        _ => true,
    }
}

/// Gaps have no addresses, and only gaps: a row group whose `src` has no nulls has no gaps.
fn may_have_gaps(meta: &RowGroupMetaData) -> bool {
    meta.column(Col::Src.index())
        .statistics()
        .and_then(|s| s.null_count_opt())
        != Some(0)
}

/// Whether a row group's statistics allow a match.
fn group_may_match(meta: &RowGroupMetaData, f: &Filter) -> bool {
    if let (Some(until), Some((min_first, _))) = (f.until_us, i64_stats(meta, Col::First))
        && min_first > until
    {
        return false;
    }
    if let (Some(since), Some((_, max_last))) = (f.since_us, i64_stats(meta, Col::Last))
        && max_last < since
    {
        return false;
    }
    if may_have_gaps(meta) {
        return true;
    }
    let either = |want: &Option<String>, a: Col, b: Col| {
        want.as_ref().is_none_or(|w| {
            may_contain(meta, a, w.as_bytes()) || may_contain(meta, b, w.as_bytes())
        })
    };
    either(&f.asset, Col::SrcAsset, Col::DstAsset)
        && either(&f.role, Col::SrcRole, Col::DstRole)
        && either(&f.peer, Col::SrcPeer, Col::DstPeer)
        && f.port.is_none_or(|p| {
            may_contain_port(meta, Col::Sport, p) || may_contain_port(meta, Col::Dport, p)
        })
        && f.verdict
            .is_none_or(|v| may_contain(meta, Col::Verdict, v.name().as_bytes()))
        && f.event
            .is_none_or(|e| may_contain(meta, Col::Event, e.name().as_bytes()))
}

/// What the page index of `first` and `last` says about the time range in a row group.
struct TimePlan {
    /// Rows in pages that may overlap the range: a page of `first` that starts after
    /// `until`, or of `last` that ends before `since`, is out.
    candidates: Vec<Range<usize>>,
    /// Candidate rows whose `first` (`last`) must be compared: pages that are neither
    /// wholly out nor wholly within the bound. For a range of whole hours or days that is
    /// a page or two at each end, so the time columns are mostly not decoded at all.
    check_first: Vec<Range<usize>>,
    check_last: Vec<Range<usize>>,
}

/// Where a page's values fall against one bound of the time range.
enum Bound {
    Out,
    In,
    Check,
}

fn time_plan(index: &RowGroupPageIndex, rows: usize, f: &Filter) -> TimePlan {
    let all: Vec<Range<usize>> = std::iter::once(0..rows).collect();
    let mut plan = TimePlan {
        candidates: all,
        check_first: Vec::new(),
        check_last: Vec::new(),
    };
    if let Some(until) = f.until_us {
        let (keep, check) = page_split(index, Col::First, rows, |min, max| {
            if min > until {
                Bound::Out
            } else if max <= until {
                Bound::In
            } else {
                Bound::Check
            }
        });
        plan.candidates = intersect(&plan.candidates, &keep);
        plan.check_first = check;
    }
    if let Some(since) = f.since_us {
        let (keep, check) = page_split(index, Col::Last, rows, |min, max| {
            if max < since {
                Bound::Out
            } else if min >= since {
                Bound::In
            } else {
                Bound::Check
            }
        });
        plan.candidates = intersect(&plan.candidates, &keep);
        plan.check_last = check;
    }
    plan.check_first = intersect(&plan.check_first, &plan.candidates);
    plan.check_last = intersect(&plan.check_last, &plan.candidates);
    plan
}

/// The rows of pages not `Out`, and of those the rows of pages to `Check`. Without a page
/// index every row is to be checked.
fn page_split(
    index: &RowGroupPageIndex,
    col: Col,
    rows: usize,
    bound: impl Fn(i64, i64) -> Bound,
) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let (Some(ColumnIndexMetaData::INT64(values)), Some(locations)) = (
        index.column_index(col.index()),
        index.page_locations(col.index()),
    ) else {
        let all: Vec<Range<usize>> = std::iter::once(0..rows).collect();
        return (all.clone(), all);
    };
    let (mut keep, mut check) = (Vec::new(), Vec::new());
    for (i, loc) in locations.iter().enumerate() {
        let start = loc.first_row_index as usize;
        let end = locations
            .get(i + 1)
            .map_or(rows, |next| next.first_row_index as usize);
        let page = match (values.min_value(i), values.max_value(i)) {
            (Some(&min), Some(&max)) => bound(min, max),
            _ => Bound::Check,
        };
        match page {
            Bound::Out => {}
            Bound::In => push_range(&mut keep, start..end),
            Bound::Check => {
                push_range(&mut keep, start..end);
                push_range(&mut check, start..end);
            }
        }
    }
    (keep, check)
}

fn push_range(ranges: &mut Vec<Range<usize>>, r: Range<usize>) {
    if r.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
        _ => ranges.push(r),
    }
}

fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let r = a[i].start.max(b[j].start)..a[i].end.min(b[j].end);
        push_range(&mut out, r);
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Runs of `true` in `mask`, joined across gaps of at most `MERGE_GAP` rows.
fn runs(mask: &[bool]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while i < mask.len() {
        if !mask[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < mask.len() && mask[i] {
            i += 1;
        }
        match out.last_mut() {
            Some(last) if start - last.end <= MERGE_GAP => last.end = i,
            _ => out.push(start..i),
        }
    }
    out
}

/// Whether any row in `lo..hi` is in `runs` (sorted, disjoint).
fn any_in(runs: &[Range<usize>], lo: usize, hi: usize) -> bool {
    let i = runs.partition_point(|r| r.end <= lo);
    runs.get(i).is_some_and(|r| r.start < hi)
}

/// A `Hasher` for short keys (names, addresses) that does not need to resist flooding:
/// the keys come from files sekisho wrote.
#[derive(Clone, Copy, Default)]
struct FastHash(u64);

impl std::hash::Hasher for FastHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHash>>;

/// One `Arc<str>` per distinct name read, shared by every record that carries it.
#[derive(Default)]
struct Interner(FastMap<Box<[u8]>, Arc<str>>);

impl Interner {
    fn get(&mut self, bytes: &[u8]) -> Option<Arc<str>> {
        if let Some(s) = self.0.get(bytes) {
            return Some(s.clone());
        }
        let s: Arc<str> = Arc::from(std::str::from_utf8(bytes).ok()?);
        self.0.insert(bytes.into(), s.clone());
        Some(s)
    }
}

/// The state of one `read`.
struct Scan<'a> {
    path: &'a Path,
    filter: &'a Filter,
    stats: ScanStats,
    limit: usize,
    names: Interner,
    addrs: FastMap<Box<[u8]>, IpAddr>,
}

impl Scan<'_> {
    fn err(&self, source: ParquetError) -> SegmentError {
        SegmentError::Read {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn corrupt(&self, column: Col, what: &'static str) -> SegmentError {
        SegmentError::Corrupt {
            path: self.path.to_path_buf(),
            column: column.name(),
            what,
        }
    }

    /// The rows of a row group that pass the filter, in order. The other filters go first:
    /// what they leave is usually sparse, and the time bounds are then checked only where
    /// the page index could not decide them.
    fn select(
        &mut self,
        group: &dyn RowGroupReader,
        plan: &TimePlan,
        gaps: bool,
    ) -> Result<Vec<u32>, SegmentError> {
        let f = self.filter;
        let rows = group.metadata().num_rows() as usize;
        let mut time = vec![false; rows];
        for r in &plan.candidates {
            time[r.clone()].fill(true);
            self.stats.records_scanned += r.len() as u64;
        }
        let mut selected = if f.has_field_filter() {
            self.select_fields(group, &time, gaps)?
        } else {
            time
        };
        if let Some(until) = f.until_us {
            let check = &plan.check_first;
            self.keep_i64(group, Col::First, &mut selected, check, |v| v <= until)?;
        }
        if let Some(since) = f.since_us {
            let check = &plan.check_last;
            self.keep_i64(group, Col::Last, &mut selected, check, |v| v >= since)?;
        }
        Ok(positions(&selected))
    }

    /// The rows of `time` that pass the filters other than time, and the gaps among them.
    fn select_fields(
        &mut self,
        group: &dyn RowGroupReader,
        time: &[bool],
        gaps: bool,
    ) -> Result<Vec<bool>, SegmentError> {
        let f = self.filter;
        let rows = time.len();
        let mut fields = time.to_vec();
        let pairs = [
            (&f.asset, Col::SrcAsset, Col::DstAsset),
            (&f.role, Col::SrcRole, Col::DstRole),
            (&f.peer, Col::SrcPeer, Col::DstPeer),
        ];
        for (want, a, b) in pairs {
            if let Some(want) = want {
                let want = want.as_bytes();
                self.keep_bytes(group, &[a, b], &mut fields, &mut |v| v == Some(want))?;
            }
        }
        if let Some(v) = f.verdict {
            let want = v.name().as_bytes();
            self.keep_bytes(group, &[Col::Verdict], &mut fields, &mut |v| {
                v == Some(want)
            })?;
        }
        if let Some(e) = f.event {
            let want = e.name().as_bytes();
            self.keep_bytes(group, &[Col::Event], &mut fields, &mut |v| v == Some(want))?;
        }
        if let Some(net) = f.addr {
            // Decided once per distinct text (per dictionary entry), so the parse is cheap.
            let mut within = |v: Option<&[u8]>| {
                v.and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .is_some_and(|a| net.contains(&a))
            };
            self.keep_bytes(group, &[Col::Src, Col::Dst], &mut fields, &mut within)?;
        }
        if let Some(port) = f.port {
            let port = i32::from(port);
            let mut hits = vec![false; rows];
            let wanted = runs(&fields);
            for col in [Col::Sport, Col::Dport] {
                let mut cursor = Cursor::<Int32Type>::new(group, col).map_err(|e| self.err(e))?;
                for r in &wanted {
                    cursor
                        .read(r.clone(), |row, v| hits[row] |= v == Some(&port))
                        .map_err(|e| self.err(e))?;
                }
            }
            and(&mut fields, &hits);
        }
        if gaps {
            // A gap matches whatever the other filters say: the reader must see it.
            let mut gap = vec![false; rows];
            let wanted = runs(time);
            let want = Event::Gap.name().as_bytes();
            self.eval_bytes(
                group,
                Col::Event,
                &wanted,
                &mut |v| v == Some(want),
                &mut gap,
            )?;
            for ((f, t), g) in fields.iter_mut().zip(time).zip(&gap) {
                *f |= *t && *g;
            }
        }
        Ok(fields)
    }

    /// Clears the rows of `mask` within `check` whose value in an `i64` column fails `keep`.
    fn keep_i64(
        &self,
        group: &dyn RowGroupReader,
        col: Col,
        mask: &mut [bool],
        check: &[Range<usize>],
        keep: impl Fn(i64) -> bool,
    ) -> Result<(), SegmentError> {
        let wanted = intersect(&runs(mask), check);
        if wanted.is_empty() {
            return Ok(());
        }
        let mut cursor = Cursor::<Int64Type>::new(group, col).map_err(|e| self.err(e))?;
        for r in wanted {
            cursor
                .read(r, |row, v| mask[row] &= v.is_some_and(|&v| keep(v)))
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Keeps the rows of `mask` for which `pred` holds in any of `cols`.
    fn keep_bytes(
        &self,
        group: &dyn RowGroupReader,
        cols: &[Col],
        mask: &mut [bool],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<(), SegmentError> {
        let wanted = runs(mask);
        let mut hits = vec![false; mask.len()];
        for &col in cols {
            self.eval_bytes(group, col, &wanted, pred, &mut hits)?;
        }
        and(mask, &hits);
        Ok(())
    }

    /// Sets `hits[row]` where `pred` holds for a byte-array column, for at least the rows
    /// in `wanted`. Works on the pages: a dictionary-encoded page is decided once per
    /// dictionary entry, then per row by its index, without building a value per row.
    /// Pages in an encoding this does not know go through the column reader instead.
    fn eval_bytes(
        &self,
        group: &dyn RowGroupReader,
        col: Col,
        wanted: &[Range<usize>],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
        hits: &mut [bool],
    ) -> Result<(), SegmentError> {
        if wanted.is_empty() {
            return Ok(());
        }
        match self.eval_pages(group, col, wanted, pred, hits)? {
            Pages::Done => Ok(()),
            Pages::Unknown => {
                // Hits set so far are right; the column reader sets the rest.
                let mut cursor =
                    Cursor::<ByteArrayType>::new(group, col).map_err(|e| self.err(e))?;
                for r in wanted {
                    cursor
                        .read(r.clone(), |row, v| hits[row] |= pred(v.map(|b| b.data())))
                        .map_err(|e| self.err(e))?;
                }
                Ok(())
            }
        }
    }

    fn eval_pages(
        &self,
        group: &dyn RowGroupReader,
        col: Col,
        wanted: &[Range<usize>],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
        hits: &mut [bool],
    ) -> Result<Pages, SegmentError> {
        if !pages_decodable(group, col) {
            return Ok(Pages::Unknown);
        }
        let optional = is_optional(group, col);
        let null_hit = pred(None);
        let mut pages = group
            .get_column_page_reader(col.index())
            .map_err(|e| self.err(e))?;
        let mut dict: Vec<bool> = Vec::new();
        let mut row = 0usize;
        while let Some(next) = pages.peek_next_page().map_err(|e| self.err(e))? {
            if !next.is_dict
                && let Some(n) = next.num_rows
                && !any_in(wanted, row, row + n)
            {
                pages.skip_next_page().map_err(|e| self.err(e))?;
                row += n;
                continue;
            }
            let Some(page) = pages.get_next_page().map_err(|e| self.err(e))? else {
                break;
            };
            match decode_bytes_page(page, optional).ok_or_else(|| self.corrupt(col, "page"))? {
                BytesPage::Dictionary(entries) => {
                    dict.clear();
                    dict.extend(entries.iter().map(|v| pred(Some(v))));
                }
                BytesPage::Data(page) => {
                    let n = page.rows.len();
                    let page_hits = hits
                        .get_mut(row..row + n)
                        .ok_or_else(|| self.corrupt(col, "page rows"))?;
                    match &page.plain {
                        None => {
                            for (h, &k) in page_hits.iter_mut().zip(&page.rows) {
                                *h |= if k == NULL {
                                    null_hit
                                } else {
                                    *dict
                                        .get(k as usize)
                                        .ok_or_else(|| self.corrupt(col, "dictionary index"))?
                                };
                            }
                        }
                        Some(plain) => {
                            for (h, &k) in page_hits.iter_mut().zip(&page.rows) {
                                *h |= if k == NULL {
                                    null_hit
                                } else {
                                    pred(plain.get(k as usize))
                                };
                            }
                        }
                    }
                    row += n;
                }
                BytesPage::Unsupported => return Ok(Pages::Unknown),
            }
        }
        Ok(Pages::Done)
    }

    /// Decodes the `selected` rows of a row group in full and hands them to `out`.
    fn materialize(
        &mut self,
        group: &dyn RowGroupReader,
        first_row: u64,
        selected: &[u32],
        out: &mut dyn FnMut(Record) -> bool,
    ) -> Result<(), SegmentError> {
        if selected.is_empty() {
            return Ok(());
        }
        // Dense selections read string columns page by page, each dictionary entry
        // converted once; sparse ones through the column reader, which skips the rows
        // between without unpacking them (about 1 in 32 rows is where the two cost alike).
        let dense = selected.len() * 32 >= group.metadata().num_rows() as usize;
        let mut cursors = Vec::with_capacity(Col::ALL.len());
        for col in Col::ALL {
            cursors.push(AnyCursor::new(group, col, dense).map_err(|e| self.err(e))?);
        }
        for batch in selected.chunks(BATCH) {
            let batch = &batch[..batch.len().min(self.limit)];
            let mut mask = vec![false; (batch[batch.len() - 1] - batch[0]) as usize + 1];
            for &r in batch {
                mask[(r - batch[0]) as usize] = true;
            }
            let wanted: Vec<Range<usize>> = runs(&mask)
                .into_iter()
                .map(|r| r.start + batch[0] as usize..r.end + batch[0] as usize)
                .collect();
            let mut recs = vec![Record::default(); batch.len()];
            for (col, cursor) in Col::ALL.into_iter().zip(&mut cursors) {
                self.fill(col, cursor, &wanted, batch, first_row, &mut recs)?;
            }
            for rec in recs {
                self.stats.records_matched += 1;
                self.limit -= 1;
                if !out(rec) || self.limit == 0 {
                    self.stats.stopped = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Reads one column for the rows in `wanted` and stores the values of the `batch` rows
    /// in `recs`.
    fn fill(
        &mut self,
        col: Col,
        cursor: &mut AnyCursor,
        wanted: &[Range<usize>],
        batch: &[u32],
        first_row: u64,
        recs: &mut [Record],
    ) -> Result<(), SegmentError> {
        let mut k = 0;
        // The index in `batch` of `row`, if the row is in the batch (rows come in order).
        let mut slot = |row: usize| {
            while k < batch.len() && (batch[k] as usize) < row {
                k += 1;
            }
            (k < batch.len() && batch[k] as usize == row).then_some(k)
        };
        let path = self.path;
        let err = |source| SegmentError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bad: Option<(usize, String)> = None;
        match cursor {
            AnyCursor::I64(c) => {
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        if let (Some(i), Some(&v)) = (slot(row), v) {
                            let rec = &mut recs[i];
                            match col {
                                Col::First => rec.first_us = v,
                                Col::Last => rec.last_us = v,
                                Col::PacketsFwd => rec.packets_fwd = v as u64,
                                Col::BytesFwd => rec.bytes_fwd = v as u64,
                                Col::PacketsRev => rec.packets_rev = v as u64,
                                Col::BytesRev => rec.bytes_rev = v as u64,
                                _ => rec.lost = v as u64,
                            }
                        }
                    })
                    .map_err(err)?;
                }
            }
            AnyCursor::I32(c) => {
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        if let (Some(i), Some(&v)) = (slot(row), v) {
                            let rec = &mut recs[i];
                            let ok = match col {
                                Col::Generation => {
                                    rec.generation = v as u32;
                                    true
                                }
                                Col::Rule => {
                                    rec.rule = v as u32;
                                    true
                                }
                                Col::Proto => u8::try_from(v).map(|v| rec.proto = v).is_ok(),
                                Col::Sport => u16::try_from(v).map(|v| rec.sport = v).is_ok(),
                                Col::Dport => u16::try_from(v).map(|v| rec.dport = v).is_ok(),
                                _ => u8::try_from(v).map(|v| rec.tcp_flags = v).is_ok(),
                            };
                            if !ok && bad.is_none() {
                                bad = Some((row, v.to_string()));
                            }
                        }
                    })
                    .map_err(err)?;
                }
            }
            AnyCursor::Pages(c) => {
                let corrupt = |what| SegmentError::Corrupt {
                    path: path.to_path_buf(),
                    column: col.name(),
                    what,
                };
                for (rec, &row) in recs.iter_mut().zip(batch) {
                    let row = row as usize;
                    let text = match c.value(row, &mut self.names, &corrupt, &err)? {
                        Ok(v) if assign(rec, col, v.as_ref()) => continue,
                        Ok(_) => "null".to_string(),
                        Err(text) => format!("{text:?}"),
                    };
                    bad.get_or_insert((row, text));
                }
            }
            AnyCursor::Bytes(c) => {
                let (names, addrs) = (&mut self.names, &mut self.addrs);
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        let Some(i) = slot(row) else { return };
                        let rec = &mut recs[i];
                        let v = v.map(|b| b.data());
                        let ok = match col {
                            Col::Event => v
                                .and_then(|b| Event::from_name(std::str::from_utf8(b).ok()?))
                                .map(|e| rec.event = e)
                                .is_some(),
                            Col::Verdict => v
                                .and_then(|b| Verdict::from_name(std::str::from_utf8(b).ok()?))
                                .map(|x| rec.verdict = x)
                                .is_some(),
                            Col::Reason => v
                                .and_then(|b| reason_code(std::str::from_utf8(b).ok()?))
                                .map(|x| rec.reason = x)
                                .is_some(),
                            Col::Close => match v {
                                None => true,
                                Some(b) => std::str::from_utf8(b)
                                    .ok()
                                    .and_then(Close::from_name)
                                    .map(|x| rec.close = Some(x))
                                    .is_some(),
                            },
                            Col::Src | Col::Dst => match v {
                                None => true,
                                Some(b) => {
                                    let addr = match addrs.get(b) {
                                        Some(a) => Some(*a),
                                        None => {
                                            let a = std::str::from_utf8(b)
                                                .ok()
                                                .and_then(|s| s.parse::<IpAddr>().ok());
                                            if let Some(a) = a {
                                                addrs.insert(b.into(), a);
                                            }
                                            a
                                        }
                                    };
                                    if col == Col::Src {
                                        rec.src = addr;
                                    } else {
                                        rec.dst = addr;
                                    }
                                    addr.is_some()
                                }
                            },
                            _ => {
                                let name = match v {
                                    None => Some(None),
                                    Some(b) => names.get(b).map(Some),
                                };
                                let field = match col {
                                    Col::RuleName => &mut rec.rule_name,
                                    Col::Interface => &mut rec.interface,
                                    Col::SrcAsset => &mut rec.src_asset,
                                    Col::SrcRole => &mut rec.src_role,
                                    Col::SrcPeer => &mut rec.src_peer,
                                    Col::DstAsset => &mut rec.dst_asset,
                                    Col::DstRole => &mut rec.dst_role,
                                    _ => &mut rec.dst_peer,
                                };
                                name.map(|n| *field = n).is_some()
                            }
                        };
                        if !ok && bad.is_none() {
                            bad = Some((row, format!("{:?}", v.map(String::from_utf8_lossy))));
                        }
                    })
                    .map_err(err)?;
                }
            }
        }
        match bad {
            None => Ok(()),
            Some((row, value)) => Err(SegmentError::Value {
                path: self.path.to_path_buf(),
                row: first_row + row as u64,
                column: col.name(),
                value,
            }),
        }
    }
}

/// Whether `eval_pages` decided every wanted row.
enum Pages {
    Done,
    /// A page in an encoding it does not decode: use the column reader.
    Unknown,
}

fn and(mask: &mut [bool], hits: &[bool]) {
    for (m, h) in mask.iter_mut().zip(hits) {
        *m &= *h;
    }
}

fn positions(mask: &[bool]) -> Vec<u32> {
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| i as u32)
        .collect()
}

/// A run of Parquet's RLE/bit-packing hybrid encoding.
enum Run<'v> {
    /// One value, repeated.
    Repeat(u32, usize),
    /// Up to 8 values, unpacked.
    Values(&'v [u32]),
}

/// Calls `f` with the runs of `n` values of Parquet's RLE/bit-packing hybrid encoding (bit
/// width `width`). `None` if the data ends early or is malformed.
fn rle_runs(mut data: &[u8], width: usize, n: usize, mut f: impl FnMut(Run)) -> Option<()> {
    if width > 32 {
        return None;
    }
    let bytes = width.div_ceil(8);
    let mask = if width == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << width) - 1
    };
    let mut left = n;
    while left > 0 {
        let mut header = 0u64;
        let mut shift = 0;
        loop {
            let (&b, rest) = data.split_first()?;
            data = rest;
            header |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        let count = usize::try_from(header >> 1).ok()?;
        if header & 1 == 1 {
            // Bit-packed: `count` groups of 8 values, least significant bits first; each
            // group is `width` bytes. A group is copied into a zeroed buffer so that every
            // value is one unaligned 8-byte load and a shift.
            for _ in 0..count {
                if left == 0 {
                    break;
                }
                let group = data.get(..width).unwrap_or(data);
                data = &data[group.len()..];
                let mut buf = [0u8; 40];
                buf[..group.len()].copy_from_slice(group);
                let mut values = [0u32; 8];
                for (i, v) in values.iter_mut().enumerate() {
                    let bit = i * width;
                    let word =
                        u64::from_le_bytes(buf[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
                    *v = ((word >> (bit % 8)) & mask) as u32;
                }
                let take = left.min(8);
                f(Run::Values(&values[..take]));
                left -= take;
            }
        } else {
            let (value, rest) = (data.get(..bytes)?, &data[bytes..]);
            data = rest;
            let mut word = [0u8; 4];
            word[..bytes].copy_from_slice(value);
            let take = count.min(left);
            f(Run::Repeat(u32::from_le_bytes(word), take));
            left -= take;
        }
    }
    Some(())
}

/// Decodes `n` values of the RLE/bit-packing hybrid encoding into `out`.
fn rle_decode(data: &[u8], width: usize, n: usize, out: &mut Vec<u32>) -> Option<()> {
    out.reserve(n);
    rle_runs(data, width, n, |run| match run {
        Run::Repeat(v, count) => out.extend(std::iter::repeat_n(v, count)),
        Run::Values(vs) => out.extend_from_slice(vs),
    })
}

/// One column of one row group, read forward.
struct Cursor<T: DataType> {
    inner: ColumnReaderImpl<T>,
    pos: usize,
    optional: bool,
    defs: Vec<i16>,
    values: Vec<T::T>,
}

impl<T: DataType> Cursor<T> {
    fn new(group: &dyn RowGroupReader, col: Col) -> Result<Self, ParquetError> {
        let descr = group.metadata().column(col.index()).column_descr_ptr();
        let optional = descr.max_def_level() > 0;
        let pages = group.get_column_page_reader(col.index())?;
        Ok(Cursor {
            inner: ColumnReaderImpl::new(descr, pages),
            pos: 0,
            optional,
            defs: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Calls `f(row, value)` for each row in `rows`, which start at or after the rows read
    /// before (`None` for a null).
    fn read(
        &mut self,
        rows: Range<usize>,
        mut f: impl FnMut(usize, Option<&T::T>),
    ) -> Result<(), ParquetError> {
        let Cursor {
            inner,
            pos,
            optional,
            defs,
            values,
        } = self;
        if rows.start > *pos {
            let skipped = inner.skip_records(rows.start - *pos)?;
            if skipped != rows.start - *pos {
                return Err(ParquetError::EOF("column ends before its row group".into()));
            }
        }
        defs.clear();
        values.clear();
        let mut got = 0;
        while got < rows.len() {
            let levels = if *optional { Some(&mut *defs) } else { None };
            let (records, _, _) = inner.read_records(rows.len() - got, levels, None, values)?;
            if records == 0 {
                return Err(ParquetError::EOF("column ends before its row group".into()));
            }
            got += records;
        }
        *pos = rows.end;
        if *optional {
            let mut v = values.iter();
            for (row, d) in rows.zip(defs.iter()) {
                f(row, if *d > 0 { v.next() } else { None });
            }
        } else {
            for (row, v) in rows.zip(values.iter()) {
                f(row, Some(v));
            }
        }
        Ok(())
    }
}

fn is_optional(group: &dyn RowGroupReader, col: Col) -> bool {
    group
        .metadata()
        .column(col.index())
        .column_descr()
        .max_def_level()
        > 0
}

/// Whether `decode_bytes_page` reads every page of the column chunk: the encodings sekisho
/// writes (dictionary, its plain fallback, RLE levels). Anything else goes through the
/// column reader.
fn pages_decodable(group: &dyn RowGroupReader, col: Col) -> bool {
    group.metadata().column(col.index()).encodings().all(|e| {
        matches!(
            e,
            Encoding::PLAIN | Encoding::RLE | Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY
        )
    })
}

/// The values of a PLAIN byte-array page (or dictionary page), as ranges of its buffer.
struct PlainValues {
    page: Page,
    ranges: Vec<Range<usize>>,
}

impl PlainValues {
    /// `count` values from byte `at` of the page's buffer.
    fn parse(page: Page, at: usize, count: usize) -> Option<PlainValues> {
        let buf = &page.buffer()[..];
        let mut ranges = Vec::with_capacity(count);
        let mut at = at;
        for _ in 0..count {
            let len = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = at + 4 + len;
            if end > buf.len() {
                return None;
            }
            ranges.push(at + 4..end);
            at = end;
        }
        Some(PlainValues { page, ranges })
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.ranges.get(i).map(|r| &self.page.buffer()[r.clone()])
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|r| &self.page.buffer()[r.clone()])
    }
}

/// A data page of a byte-array column, one slot per row: the index of its value in the
/// chunk's dictionary, or in the page's own `plain` values; `NULL` for a null.
struct DataValues {
    rows: Vec<u32>,
    plain: Option<PlainValues>,
}

/// The slot of a null in `DataValues::rows`.
const NULL: u32 = u32::MAX;

enum BytesPage {
    Dictionary(PlainValues),
    Data(DataValues),
    /// An encoding `decode_bytes_page` does not read.
    Unsupported,
}

/// Decodes a page of a byte-array column (`None` when it is malformed): definition levels
/// and dictionary indices are unpacked, values are not converted.
fn decode_bytes_page(page: Page, optional: bool) -> Option<BytesPage> {
    let (n, encoding, levels, values) = match &page {
        Page::DictionaryPage { num_values, .. } => {
            let count = *num_values as usize;
            return PlainValues::parse(page, 0, count).map(BytesPage::Dictionary);
        }
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            ..
        } => {
            if !optional {
                (*num_values as usize, *encoding, 0..0, 0)
            } else if *def_level_encoding == Encoding::RLE {
                let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
                (*num_values as usize, *encoding, 4..4 + len, 4 + len)
            } else {
                return Some(BytesPage::Unsupported);
            }
        }
        Page::DataPageV2 {
            num_values,
            encoding,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            let start = *rep_levels_byte_len as usize;
            let end = start + *def_levels_byte_len as usize;
            (*num_values as usize, *encoding, start..end, end)
        }
    };
    let buf = &page.buffer()[..];
    let levels = buf.get(levels)?;
    let present = if optional {
        let mut present = 0;
        rle_runs(levels, 1, n, |run| match run {
            Run::Repeat(d, count) => present += if d == 1 { count } else { 0 },
            Run::Values(ds) => present += ds.iter().filter(|&&d| d == 1).count(),
        })?;
        present
    } else {
        n
    };
    let (indices, plain) = match encoding {
        Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
            let mut indices = Vec::new();
            if present > 0 {
                let (&width, data) = buf.get(values..)?.split_first()?;
                rle_decode(data, width as usize, present, &mut indices)?;
            }
            (indices, None)
        }
        Encoding::PLAIN => ((0..present as u32).collect(), None),
        _ => return Some(BytesPage::Unsupported),
    };
    if indices.len() != present || indices.contains(&NULL) {
        return None;
    }
    let rows = if optional {
        let mut rows = Vec::with_capacity(n);
        let mut k = 0;
        rle_runs(levels, 1, n, |run| match run {
            Run::Repeat(1, count) => {
                rows.extend_from_slice(&indices[k..k + count]);
                k += count;
            }
            Run::Repeat(_, count) => rows.extend(std::iter::repeat_n(NULL, count)),
            Run::Values(ds) => {
                for &d in ds {
                    if d == 1 {
                        rows.push(indices[k]);
                        k += 1;
                    } else {
                        rows.push(NULL);
                    }
                }
            }
        })?;
        rows
    } else {
        indices
    };
    let plain = match (encoding, plain) {
        (Encoding::PLAIN, _) => Some(PlainValues::parse(page, values, present)?),
        (_, plain) => plain,
    };
    Some(BytesPage::Data(DataValues { rows, plain }))
}

/// A value of a byte-array column, converted from its text once per dictionary entry.
#[derive(Clone)]
enum Val {
    Event(Event),
    Verdict(Verdict),
    Reason(u8),
    Close(Close),
    Addr(IpAddr),
    Name(Arc<str>),
}

fn convert(col: Col, bytes: &[u8], names: &mut Interner) -> Option<Val> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(match col {
        Col::Event => Val::Event(Event::from_name(text)?),
        Col::Verdict => Val::Verdict(Verdict::from_name(text)?),
        Col::Reason => Val::Reason(reason_code(text)?),
        Col::Close => Val::Close(Close::from_name(text)?),
        Col::Src | Col::Dst => Val::Addr(text.parse().ok()?),
        _ => Val::Name(names.get(bytes)?),
    })
}

/// Stores a byte-array column's value (`None`: null) in its field; `false` when the
/// column may not hold it.
fn assign(rec: &mut Record, col: Col, val: Option<&Val>) -> bool {
    match (col, val) {
        (Col::Event, Some(Val::Event(e))) => rec.event = *e,
        (Col::Verdict, Some(Val::Verdict(v))) => rec.verdict = *v,
        (Col::Reason, Some(Val::Reason(r))) => rec.reason = *r,
        (Col::Close, Some(Val::Close(c))) => rec.close = Some(*c),
        (Col::Src, Some(Val::Addr(a))) => rec.src = Some(*a),
        (Col::Dst, Some(Val::Addr(a))) => rec.dst = Some(*a),
        (Col::Event | Col::Verdict | Col::Reason, _) => return false,
        (_, None) => {}
        (col, Some(Val::Name(n))) => {
            let field = match col {
                Col::RuleName => &mut rec.rule_name,
                Col::Interface => &mut rec.interface,
                Col::SrcAsset => &mut rec.src_asset,
                Col::SrcRole => &mut rec.src_role,
                Col::SrcPeer => &mut rec.src_peer,
                Col::DstAsset => &mut rec.dst_asset,
                Col::DstRole => &mut rec.dst_role,
                Col::DstPeer => &mut rec.dst_peer,
                _ => return false,
            };
            *field = Some(n.clone());
        }
        _ => return false,
    }
    true
}

/// A byte-array column of one row group read forward page by page, each dictionary entry
/// converted once: no value is built per row but the record's own.
struct ByteCursor {
    col: Col,
    optional: bool,
    pages: Box<dyn PageReader>,
    /// The dictionary, converted; the text where it is not a valid value.
    dict: Vec<Result<Val, String>>,
    page: DataValues,
    /// The rows of `page`.
    start: usize,
    end: usize,
}

impl ByteCursor {
    fn new(group: &dyn RowGroupReader, col: Col) -> Result<ByteCursor, ParquetError> {
        Ok(ByteCursor {
            col,
            optional: is_optional(group, col),
            pages: group.get_column_page_reader(col.index())?,
            dict: Vec::new(),
            page: DataValues {
                rows: Vec::new(),
                plain: None,
            },
            start: 0,
            end: 0,
        })
    }

    /// The value at `row` (at or after the rows asked for before): `Ok(None)` for a null,
    /// `Err(text)` for text the column may not hold.
    fn value(
        &mut self,
        row: usize,
        names: &mut Interner,
        corrupt: &dyn Fn(&'static str) -> SegmentError,
        err: &dyn Fn(ParquetError) -> SegmentError,
    ) -> Result<Result<Option<Val>, String>, SegmentError> {
        while row >= self.end {
            let next = self
                .pages
                .peek_next_page()
                .map_err(err)?
                .ok_or_else(|| corrupt("rows"))?;
            if !next.is_dict
                && let Some(n) = next.num_rows
                && row >= self.end + n
            {
                self.pages.skip_next_page().map_err(err)?;
                self.end += n;
                continue;
            }
            let page = self
                .pages
                .get_next_page()
                .map_err(err)?
                .ok_or_else(|| corrupt("rows"))?;
            match decode_bytes_page(page, self.optional).ok_or_else(|| corrupt("page"))? {
                BytesPage::Dictionary(entries) => {
                    self.dict = entries
                        .iter()
                        .map(|v| {
                            convert(self.col, v, names)
                                .ok_or_else(|| String::from_utf8_lossy(v).into_owned())
                        })
                        .collect();
                }
                BytesPage::Data(page) => {
                    self.start = self.end;
                    self.end += page.rows.len();
                    self.page = page;
                }
                BytesPage::Unsupported => return Err(corrupt("page encoding")),
            }
        }
        let slot = self
            .page
            .rows
            .get(row - self.start)
            .ok_or_else(|| corrupt("rows"))?;
        Ok(match (*slot, &self.page.plain) {
            (NULL, _) => Ok(None),
            (k, None) => match self.dict.get(k as usize) {
                Some(Ok(v)) => Ok(Some(v.clone())),
                Some(Err(text)) => Err(text.clone()),
                None => return Err(corrupt("dictionary index")),
            },
            (k, Some(plain)) => {
                let v = plain.get(k as usize).ok_or_else(|| corrupt("values"))?;
                convert(self.col, v, names)
                    .map(Some)
                    .ok_or_else(|| String::from_utf8_lossy(v).into_owned())
            }
        })
    }
}

enum AnyCursor {
    I32(Cursor<Int32Type>),
    I64(Cursor<Int64Type>),
    Pages(ByteCursor),
    Bytes(Cursor<ByteArrayType>),
}

impl AnyCursor {
    fn new(group: &dyn RowGroupReader, col: Col, dense: bool) -> Result<AnyCursor, ParquetError> {
        Ok(match col {
            Col::First
            | Col::Last
            | Col::PacketsFwd
            | Col::BytesFwd
            | Col::PacketsRev
            | Col::BytesRev
            | Col::Lost => AnyCursor::I64(Cursor::new(group, col)?),
            Col::Generation | Col::Rule | Col::Proto | Col::Sport | Col::Dport | Col::TcpFlags => {
                AnyCursor::I32(Cursor::new(group, col)?)
            }
            _ if dense && pages_decodable(group, col) => {
                AnyCursor::Pages(ByteCursor::new(group, col)?)
            }
            _ => AnyCursor::Bytes(Cursor::new(group, col)?),
        })
    }
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
