//! Writing segments.
//!
//! Records are gathered as fixed-size rows of numbers as they come, a row group at a time;
//! each row group is sorted, turned into columns in one pass, and its pages encoded here (dictionary, delta and plain encodings, zstd) and
//! handed to parquet-rs, which frames them into the file with the footer, the statistics
//! and the page index. Encoding by hand is what lets sealing keep up with ingest: the
//! generic column writer hashes and compares every string value, where here a record's
//! names are numbers from the first time they are seen (the recorder hands out one
//! `Arc<str>` per name) and a page's statistics come from those numbers.

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, PageType};
use parquet::column::page::{CompressedPage, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use super::*;

/// A column chunk's dictionary larger than this is not used: its values are written plain
/// (a flood of distinct addresses), as parquet-rs's writer does at the same size.
const DICTIONARY_LIMIT: usize = 1 << 20;

/// The file-level properties; the columns are encoded by `Encoder`.
fn properties() -> WriterProperties {
    WriterProperties::builder()
        // Version 1 data pages: every Parquet reader of the last decade reads them.
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("zstd level in range"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
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
        .set_created_by(format!("sekisho {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sorts `records` by (`first_us`, `last_us`), writes them to a new Parquet file at `path`
/// (replacing any file there) and syncs it to disk. The caller makes the file visible
/// atomically (rename, directory sync) and enters it in the manifest.
pub fn write(path: &Path, records: &mut Vec<Record>) -> Result<SegmentInfo, SegmentError> {
    write_grouped(path, records, ROW_GROUP_ROWS)
}

pub(super) fn write_grouped(
    path: &Path,
    records: &mut Vec<Record>,
    group_rows: usize,
) -> Result<SegmentInfo, SegmentError> {
    sort(records);
    let mut writer = Writer::create(path)?;
    writer.group_rows = group_rows;
    for r in records.iter() {
        writer.add(r)?;
    }
    writer.finish()
}

/// A segment written a row group at a time, so that memory holds one row group and not
/// the hour. Each row group is sorted by (`first_us`, `last_us`) on its own; records given
/// in arrival order are nearly sorted, so the row groups of an hour barely overlap in time.
pub struct Writer {
    path: PathBuf,
    inner: SerializedFileWriter<File>,
    texts: Texts,
    rows: Rows,
    /// The rows of the row group being written, in order, a vector per column.
    columns: Columns,
    group_rows: usize,
    encoder: Encoder,
    info: SegmentInfo,
}

/// The memory of a finished writer, for the next one: a row group's rows and columns are
/// about 70 MB, which a new writer would otherwise fault in page by page again.
pub struct Buffers {
    rows: Rows,
    columns: Columns,
    encoder: Encoder,
}

impl Writer {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<Writer, SegmentError> {
        Writer::create_with(path, None)
    }

    /// `create`, with the buffers a finished writer left (`finish_keeping`).
    pub fn create_with(path: &Path, spare: Option<Buffers>) -> Result<Writer, SegmentError> {
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
        let Buffers {
            mut rows,
            columns,
            encoder,
        } = spare.unwrap_or_else(|| Buffers {
            rows: Rows::default(),
            columns: Columns::default(),
            encoder: Encoder::new(),
        });
        rows.clear();
        Ok(Writer {
            path: path.to_path_buf(),
            inner,
            texts: Texts::new(),
            rows,
            columns,
            group_rows: ROW_GROUP_ROWS,
            encoder,
            info: SegmentInfo::default(),
        })
    }

    /// Row groups of `rows` records: tests cross row groups with few records.
    #[cfg(test)]
    pub(crate) fn set_group_rows(&mut self, rows: usize) {
        self.group_rows = rows;
    }

    /// Adds a record; a full row group is written out.
    pub fn push(&mut self, record: Record) -> Result<(), SegmentError> {
        self.add(&record)
    }

    /// Adds a record; a full row group is written out.
    pub fn add(&mut self, r: &Record) -> Result<(), SegmentError> {
        self.rows.push(r, &mut self.texts);
        if self.rows.len() >= self.group_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Records added and not yet written out.
    pub fn pending(&self) -> usize {
        self.rows.len()
    }

    /// Records in the file so far, written out or pending.
    pub fn records(&self) -> u64 {
        self.info.records + self.rows.len() as u64
    }

    /// Writes the pending records out as a row group.
    pub fn flush(&mut self) -> Result<(), SegmentError> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let wr = |source| SegmentError::Write {
            path: self.path.clone(),
            source,
        };
        self.columns.fill(&mut self.rows);
        let descrs: Vec<ColumnDescPtr> = (0..Col::ALL.len())
            .map(|i| self.inner.schema_descr().column(i))
            .collect();
        let mut group = self.inner.next_row_group().map_err(wr)?;
        for col in Col::ALL {
            let chunk = self
                .encoder
                .column(&descrs[col.index()], col, &self.columns, &self.texts)
                .map_err(wr)?;
            group.append_column(&chunk.0, chunk.1).map_err(wr)?;
        }
        group.close().map_err(wr)?;
        self.note_written();
        self.rows.clear();
        Ok(())
    }

    fn note_written(&mut self) {
        let rows = &self.columns;
        let range = |v: &[i64]| {
            v.iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
        };
        let (min_first, max_first) = range(&rows.first);
        let (min_last, max_last) = range(&rows.last);
        let info = &mut self.info;
        if info.records == 0 {
            (info.min_first_us, info.max_first_us) = (min_first, max_first);
            (info.min_last_us, info.max_last_us) = (min_last, max_last);
        } else {
            info.min_first_us = info.min_first_us.min(min_first);
            info.max_first_us = info.max_first_us.max(max_first);
            info.min_last_us = info.min_last_us.min(min_last);
            info.max_last_us = info.max_last_us.max(max_last);
        }
        info.records += rows.len() as u64;
    }

    /// Writes what is pending and the footer, and syncs the file to disk.
    pub fn finish(self) -> Result<SegmentInfo, SegmentError> {
        self.finish_keeping(&mut None)
    }

    /// `finish`, leaving the writer's buffers in `spare` once its rows are written (a
    /// writer that failed midway leaves none: its state is not known to be clean).
    pub fn finish_keeping(
        mut self,
        spare: &mut Option<Buffers>,
    ) -> Result<SegmentInfo, SegmentError> {
        let flushed = self.flush();
        let Writer {
            path,
            inner,
            rows,
            columns,
            encoder,
            mut info,
            ..
        } = self;
        flushed?;
        *spare = Some(Buffers {
            rows,
            columns,
            encoder,
        });
        let file = inner.into_inner().map_err(|source| SegmentError::Write {
            path: path.clone(),
            source,
        })?;
        let sync = |source| SegmentError::Sync {
            path: path.clone(),
            source,
        };
        file.sync_all().map_err(sync)?;
        info.bytes = file.metadata().map_err(sync)?.len();
        Ok(info)
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

/// Every string a writer has seen, numbered from 1 (0 is null), with each number's bytes.
/// Names are found by the `Arc`'s address first, so a name shared by a million records is
/// looked up by its text once.
struct Texts {
    bytes: Vec<Box<[u8]>>,
    by_text: FastMap<Box<[u8]>, u32>,
    /// The `Arc` kept here keeps its address from being reused for another name while the
    /// segment is written.
    by_name: FastMap<usize, (Arc<str>, u32)>,
    /// Per name column: the last name's address and number (address 0: none yet).
    last: [(usize, u32); 8],
    by_v4: FastMap<u32, u32>,
    by_v6: FastMap<u128, u32>,
    events: Vec<u32>,
    verdicts: Vec<u32>,
    closes: Vec<u32>,
    /// By reason code; 0 until first seen.
    reasons: [u32; 256],
}

impl Texts {
    fn new() -> Texts {
        let mut t = Texts {
            bytes: vec![Box::from(&b""[..])],
            by_text: FastMap::default(),
            by_name: FastMap::default(),
            last: [(0, 0); 8],
            by_v4: FastMap::default(),
            by_v6: FastMap::default(),
            events: Vec::new(),
            verdicts: Vec::new(),
            closes: Vec::new(),
            reasons: [0; 256],
        };
        t.events = Event::ALL
            .iter()
            .map(|e| t.id(e.name().as_bytes()))
            .collect();
        t.verdicts = Verdict::ALL
            .iter()
            .map(|v| t.id(v.name().as_bytes()))
            .collect();
        t.closes = Close::ALL
            .iter()
            .map(|c| t.id(c.name().as_bytes()))
            .collect();
        t
    }

    fn id(&mut self, text: &[u8]) -> u32 {
        if let Some(&id) = self.by_text.get(text) {
            return id;
        }
        let id = self.bytes.len() as u32;
        self.bytes.push(text.into());
        self.by_text.insert(text.into(), id);
        id
    }

    /// The number of a name in column `slot`; the slot's last name is checked first
    /// (neighbouring records often share a role, an interface, a rule).
    fn name(&mut self, slot: usize, name: &Option<Arc<str>>) -> u32 {
        let Some(s) = name else { return 0 };
        let key = Arc::as_ptr(s) as *const u8 as usize;
        if self.last[slot].0 == key {
            return self.last[slot].1;
        }
        let id = match self.by_name.get(&key) {
            Some(&(_, id)) => id,
            None => {
                let id = self.id(s.as_bytes());
                self.by_name.insert(key, (s.clone(), id));
                id
            }
        };
        self.last[slot] = (key, id);
        id
    }

    fn addr(&mut self, addr: Option<IpAddr>) -> u32 {
        // By number: hashing an `IpAddr` as such takes several hasher calls.
        match addr {
            None => 0,
            Some(IpAddr::V4(a)) => {
                let key = a.to_bits();
                if let Some(&id) = self.by_v4.get(&key) {
                    return id;
                }
                let id = self.id(a.to_string().as_bytes());
                self.by_v4.insert(key, id);
                id
            }
            Some(IpAddr::V6(a)) => {
                let key = a.to_bits();
                if let Some(&id) = self.by_v6.get(&key) {
                    return id;
                }
                let id = self.id(a.to_string().as_bytes());
                self.by_v6.insert(key, id);
                id
            }
        }
    }

    fn reason(&mut self, code: u8) -> u32 {
        match self.reasons[code as usize] {
            0 => {
                let id = self.id(reason_text(code).as_bytes());
                self.reasons[code as usize] = id;
                id
            }
            id => id,
        }
    }
}

/// One record as the columns take it: numbers only, strings as `Texts` numbers (0: null).
/// A row group is kept as rows until it is written: a record is then one store when it
/// comes, and reordering the row group reads each record once, where reordering column
/// vectors reads every column at random (measured: the gathers were a third of writing).
#[derive(Clone, Copy)]
struct Row {
    first: i64,
    last: i64,
    /// The `i64` columns other than the times, by `COUNTER_COLS` position.
    counters: [i64; 5],
    /// The `i32` columns, by `I32_COLS` position.
    ints: [i32; 6],
    /// The byte-array columns, by `TEXT_COLS` position.
    texts: [u32; 14],
}

/// One row group's records, in the order they came, and their sort keys (kept apart:
/// collecting them from the rows would read every row once more).
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    /// (`first`, `last`, position) of each row.
    keys: Vec<(i64, i64, u32)>,
    /// Whether the keys came in order.
    unsorted: bool,
}

/// One row group's records, a vector per column, sorted.
#[derive(Default)]
struct Columns {
    first: Vec<i64>,
    last: Vec<i64>,
    counters: [Vec<i64>; 5],
    ints: [Vec<i32>; 6],
    texts: [Vec<u32>; 14],
}

const COUNTER_COLS: [Col; 5] = [
    Col::PacketsFwd,
    Col::BytesFwd,
    Col::PacketsRev,
    Col::BytesRev,
    Col::Lost,
];
const I32_COLS: [Col; 6] = [
    Col::Generation,
    Col::Rule,
    Col::Proto,
    Col::Sport,
    Col::Dport,
    Col::TcpFlags,
];
const TEXT_COLS: [Col; 14] = [
    Col::Event,
    Col::Verdict,
    Col::Reason,
    Col::RuleName,
    Col::Interface,
    Col::Src,
    Col::Dst,
    Col::SrcAsset,
    Col::SrcRole,
    Col::SrcPeer,
    Col::DstAsset,
    Col::DstRole,
    Col::DstPeer,
    Col::Close,
];

impl Rows {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.keys.clear();
        self.unsorted = false;
    }

    fn push(&mut self, r: &Record, t: &mut Texts) {
        let key = (r.first_us, r.last_us, self.rows.len() as u32);
        if let Some(last) = self.keys.last() {
            self.unsorted |= (last.0, last.1) > (key.0, key.1);
        }
        self.keys.push(key);
        self.rows.push(Row {
            first: r.first_us,
            last: r.last_us,
            // Unsigned values are stored by their bits, as the logical types say.
            counters: [
                r.packets_fwd as i64,
                r.bytes_fwd as i64,
                r.packets_rev as i64,
                r.bytes_rev as i64,
                r.lost as i64,
            ],
            ints: [
                r.generation as i32,
                r.rule as i32,
                i32::from(r.proto),
                i32::from(r.sport),
                i32::from(r.dport),
                i32::from(r.tcp_flags),
            ],
            texts: [
                t.events[r.event as usize],
                t.verdicts[r.verdict as usize],
                t.reason(r.reason),
                t.name(0, &r.rule_name),
                t.name(1, &r.interface),
                t.addr(r.src),
                t.addr(r.dst),
                t.name(2, &r.src_asset),
                t.name(3, &r.src_role),
                t.name(4, &r.src_peer),
                t.name(5, &r.dst_asset),
                t.name(6, &r.dst_role),
                t.name(7, &r.dst_peer),
                r.close.map_or(0, |c| t.closes[c as usize]),
            ],
        });
    }

    /// Sorts the keys: the rows in (`first`, `last`) order, equal rows in arrival order.
    /// `false` when they were in order already.
    fn sort_keys(&mut self) -> bool {
        if self.unsorted {
            self.keys.sort_unstable();
        }
        self.unsorted
    }
}

impl Columns {
    fn len(&self) -> usize {
        self.first.len()
    }

    /// Sets these columns to `rows`, sorted: one pass over the rows in order.
    fn fill(&mut self, rows: &mut Rows) {
        let n = rows.len();
        // Sized first and then written in place: no capacity check per value.
        self.first.resize(n, 0);
        self.last.resize(n, 0);
        self.counters.iter_mut().for_each(|v| v.resize(n, 0));
        self.ints.iter_mut().for_each(|v| v.resize(n, 0));
        self.texts.iter_mut().for_each(|v| v.resize(n, 0));
        let mut put = |k: usize, r: &Row| {
            self.first[k] = r.first;
            self.last[k] = r.last;
            for (v, &x) in self.counters.iter_mut().zip(&r.counters) {
                v[k] = x;
            }
            for (v, &x) in self.ints.iter_mut().zip(&r.ints) {
                v[k] = x;
            }
            for (v, &x) in self.texts.iter_mut().zip(&r.texts) {
                v[k] = x;
            }
        };
        match rows.sort_keys() {
            false => rows.rows.iter().enumerate().for_each(|(k, r)| put(k, r)),
            true => {
                for (k, &(_, _, i)) in rows.keys.iter().enumerate() {
                    put(k, &rows.rows[i as usize]);
                }
            }
        }
    }
}

/// How a column is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Delta-encoded: the times, sorted, take a few bits each (and 16 % less time to read
    /// than plain, measured: a sparse match needs every page).
    Delta,
    /// Plain, left to zstd: a flow's start and end records are neighbours and share the
    /// source port and often the counts, which zstd sees in plain bytes but not through
    /// dictionary bit-packing (measured 0.8 bytes per record less; delta-encoded counters
    /// were 4.3 bytes larger).
    Plain,
    /// Dictionary-encoded: names, addresses and small sets of numbers.
    Dictionary,
}

fn kind(col: Col) -> Kind {
    match col {
        Col::First | Col::Last => Kind::Delta,
        Col::Sport | Col::PacketsFwd | Col::BytesFwd | Col::PacketsRev | Col::BytesRev => {
            Kind::Plain
        }
        // Nearly always 0 (only gaps count lost events).
        Col::Lost => Kind::Dictionary,
        _ => Kind::Dictionary,
    }
}

/// A page's statistics, as the column index and the chunk's statistics take them.
struct PageStats {
    min: Vec<u8>,
    max: Vec<u8>,
    nulls: u64,
}

/// Encodes column chunks; keeps its buffers and compressor from one chunk to the next.
struct Encoder {
    zstd: zstd::bulk::Compressor<'static>,
    page: Vec<u8>,
    levels: Vec<u8>,
    /// Scratch for one page: dictionary indices, definition levels; compressed bytes.
    scratch: Vec<u32>,
    level_bits: Vec<u32>,
    compressed: Vec<u8>,
    i64s: Vec<i64>,
    ids: Vec<u32>,
    /// By `Texts` number (or 32-bit value's position in `values`): the column's
    /// dictionary index plus one, 0 when not in this chunk.
    local: Vec<u32>,
    values: FastMap<i64, u32>,
    /// By value below `SMALL`: dictionary index plus one; all 0 between chunks.
    small: Vec<u32>,
}

const SMALL: usize = 1 << 16;

impl Encoder {
    fn new() -> Encoder {
        Encoder {
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd level in range"),
            page: Vec::new(),
            levels: Vec::new(),
            scratch: Vec::new(),
            level_bits: Vec::new(),
            compressed: Vec::new(),
            i64s: Vec::new(),
            ids: Vec::new(),
            local: Vec::new(),
            values: FastMap::default(),
            small: Vec::new(),
        }
    }

    /// One column chunk of `rows`: its bytes and what parquet-rs needs to splice them into
    /// the row group.
    fn column(
        &mut self,
        descr: &ColumnDescPtr,
        col: Col,
        rows: &Columns,
        texts: &Texts,
    ) -> parquet::errors::Result<(Bytes, ColumnCloseResult)> {
        let mut chunk = Chunk::new(descr.clone());
        let n = rows.len();
        match col {
            Col::First | Col::Last => {
                let values = if col == Col::First {
                    &rows.first
                } else {
                    &rows.last
                };
                for range in pages(n) {
                    let page = &values[range];
                    self.page.clear();
                    delta_encode(page, &mut self.page);
                    let stats = i64_stats(page);
                    chunk.data_page(self, page.len(), Encoding::DELTA_BINARY_PACKED, stats)?;
                }
                if col == Col::First {
                    chunk.index.set_boundary_order(BoundaryOrder::ASCENDING);
                }
            }
            _ if COUNTER_COLS.contains(&col) => {
                let k = COUNTER_COLS.iter().position(|&c| c == col).unwrap_or(0);
                let values = &rows.counters[k];
                if kind(col) == Kind::Dictionary {
                    self.int_dictionary(&mut chunk, values, 8)?;
                } else {
                    for range in pages(n) {
                        let page = &values[range];
                        self.page.clear();
                        for v in page {
                            self.page.extend_from_slice(&v.to_le_bytes());
                        }
                        chunk.data_page(self, page.len(), Encoding::PLAIN, i64_stats(page))?;
                    }
                }
            }
            _ if I32_COLS.contains(&col) => {
                let k = I32_COLS.iter().position(|&c| c == col).unwrap_or(0);
                let values = &rows.ints[k];
                if kind(col) == Kind::Plain {
                    for range in pages(n) {
                        let page = &values[range];
                        self.page.clear();
                        for v in page {
                            self.page.extend_from_slice(&v.to_le_bytes());
                        }
                        chunk.data_page(self, page.len(), Encoding::PLAIN, u32_stats(page))?;
                    }
                } else {
                    let mut wide = std::mem::take(&mut self.i64s);
                    wide.clear();
                    wide.extend(values.iter().map(|&v| i64::from(v as u32)));
                    self.int_dictionary(&mut chunk, &wide, 4)?;
                    self.i64s = wide;
                }
            }
            _ => {
                let k = TEXT_COLS.iter().position(|&c| c == col).unwrap_or(0);
                self.text_dictionary(&mut chunk, &rows.texts[k], texts)?;
            }
        }
        chunk.finish(n)
    }

    /// A byte-array column through a dictionary of the values it holds, sorted, so that a
    /// page's smallest and largest dictionary index are its smallest and largest value.
    fn text_dictionary(
        &mut self,
        chunk: &mut Chunk,
        ids: &[u32],
        texts: &Texts,
    ) -> parquet::errors::Result<()> {
        self.local.clear();
        self.local.resize(texts.bytes.len(), 0);
        let mut used: Vec<u32> = Vec::new();
        for &id in ids {
            if id != 0 && self.local[id as usize] == 0 {
                self.local[id as usize] = 1;
                used.push(id);
            }
        }
        used.sort_unstable_by(|&a, &b| texts.bytes[a as usize].cmp(&texts.bytes[b as usize]));
        for (i, &id) in used.iter().enumerate() {
            self.local[id as usize] = i as u32 + 1;
        }
        let text = |i: u32| -> &[u8] { &texts.bytes[used[i as usize] as usize] };
        let plain_bytes: usize = used
            .iter()
            .map(|&id| 4 + texts.bytes[id as usize].len())
            .sum();
        let dictionary = plain_bytes <= DICTIONARY_LIMIT;
        if dictionary {
            self.page.clear();
            for i in 0..used.len() as u32 {
                put_bytes(&mut self.page, text(i));
            }
            chunk.dictionary_page(self, used.len())?;
        }
        let optional = chunk.optional;
        for range in pages(ids.len()) {
            let page = &ids[range];
            let (nulls, lo, hi) = self.page_indices(page);
            self.page.clear();
            if optional {
                self.put_levels(page, nulls);
            }
            let encoding = if dictionary {
                self.put_indices(used.len());
                Encoding::RLE_DICTIONARY
            } else {
                for &id in page.iter().filter(|&&id| id != 0) {
                    put_bytes(&mut self.page, &texts.bytes[id as usize]);
                }
                Encoding::PLAIN
            };
            let stats = PageStats {
                min: lo.map_or(Vec::new(), |i| text(i).to_vec()),
                max: hi.map_or(Vec::new(), |i| text(i).to_vec()),
                nulls,
            };
            chunk.data_page(self, page.len(), encoding, stats)?;
        }
        Ok(())
    }

    /// A number column of few distinct values through a sorted dictionary; plain if
    /// there are many. `width` is the physical type's size: 4-byte values come
    /// zero-extended, so that their order here is the unsigned order their logical type
    /// (`INTEGER(_, false)`) says.
    fn int_dictionary(
        &mut self,
        chunk: &mut Chunk,
        values: &[i64],
        width: usize,
    ) -> parquet::errors::Result<()> {
        self.values.clear();
        let mut used: Vec<i64> = Vec::new();
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        let mut last: Option<(i64, u32)> = None;
        // Values below 65,536 (ports, protocols, flags, rule numbers) by table.
        self.small.resize(SMALL, 0);
        let mut touched: Vec<usize> = Vec::new();
        for &v in values {
            let id = match last {
                Some((lv, id)) if lv == v => id,
                _ if (0..SMALL as i64).contains(&v) => {
                    let slot = &mut self.small[v as usize];
                    if *slot == 0 {
                        used.push(v);
                        *slot = used.len() as u32;
                        touched.push(v as usize);
                    }
                    last = Some((v, *slot));
                    *slot
                }
                _ => {
                    let next = used.len() as u32 + 1;
                    let id = *self.values.entry(v).or_insert(next);
                    if id == next {
                        used.push(v);
                    }
                    last = Some((v, id));
                    id
                }
            };
            ids.push(id);
        }
        for t in touched {
            self.small[t] = 0;
        }
        let bytes = |v: i64| v.to_le_bytes()[..width].to_vec();
        if used.len() * width > DICTIONARY_LIMIT {
            for range in pages(values.len()) {
                let page = &values[range];
                self.page.clear();
                for &v in page {
                    self.page.extend_from_slice(&v.to_le_bytes()[..width]);
                }
                let (lo, hi) = page
                    .iter()
                    .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let stats = PageStats {
                    min: bytes(lo),
                    max: bytes(hi),
                    nulls: 0,
                };
                chunk.data_page(self, page.len(), Encoding::PLAIN, stats)?;
            }
            self.ids = ids;
            return Ok(());
        }
        let mut sorted: Vec<u32> = (0..used.len() as u32).collect();
        sorted.sort_unstable_by_key(|&i| used[i as usize]);
        self.local.clear();
        self.local.resize(used.len() + 1, 0);
        for (rank, &i) in sorted.iter().enumerate() {
            self.local[i as usize + 1] = rank as u32 + 1;
        }
        for id in &mut ids {
            *id = self.local[*id as usize];
        }
        self.page.clear();
        for &i in &sorted {
            self.page
                .extend_from_slice(&used[i as usize].to_le_bytes()[..width]);
        }
        chunk.dictionary_page(self, used.len())?;
        // Every local index is its own rank now.
        self.local.clear();
        self.local.extend(0..=used.len() as u32);
        let value = |rank: u32| bytes(used[sorted[rank as usize] as usize]);
        for range in pages(ids.len()) {
            let page = &ids[range];
            let (nulls, lo, hi) = self.page_indices(page);
            self.page.clear();
            self.put_indices(used.len());
            let stats = PageStats {
                min: lo.map_or(Vec::new(), value),
                max: hi.map_or(Vec::new(), value),
                nulls,
            };
            chunk.data_page(self, page.len(), Encoding::RLE_DICTIONARY, stats)?;
        }
        self.ids = ids;
        Ok(())
    }

    /// The dictionary indices (0-based) of the values among `ids` into `scratch`, in one
    /// pass with the nulls and the smallest and largest index.
    fn page_indices(&mut self, ids: &[u32]) -> (u64, Option<u32>, Option<u32>) {
        let (mut nulls, mut lo, mut hi) = (0u64, u32::MAX, 0u32);
        self.scratch.clear();
        self.scratch.reserve(ids.len());
        for &id in ids {
            let l = self.local[id as usize];
            if l == 0 {
                nulls += 1;
            } else {
                lo = lo.min(l);
                hi = hi.max(l);
                self.scratch.push(l - 1);
            }
        }
        if lo == u32::MAX {
            (nulls, None, None)
        } else {
            (nulls, Some(lo - 1), Some(hi - 1))
        }
    }

    /// Definition levels of a page (1: a value, 0: null), with the length that version 1
    /// data pages put before them.
    fn put_levels(&mut self, ids: &[u32], nulls: u64) {
        self.levels.clear();
        if nulls == 0 && ids.len() >= 8 {
            // No nulls (most pages of most columns): one run of ones, as `rle_encode`
            // writes it, without a level per row.
            put_uleb(&mut self.levels, (ids.len() as u64) << 1);
            self.levels.push(1);
        } else {
            self.level_bits.clear();
            self.level_bits
                .extend(ids.iter().map(|&id| u32::from(id != 0)));
            rle_encode(&self.level_bits, 1, &mut self.levels);
        }
        self.page
            .extend_from_slice(&(self.levels.len() as u32).to_le_bytes());
        self.page.extend_from_slice(&self.levels);
    }

    /// The dictionary indices `page_indices` left in `scratch`, for a dictionary of
    /// `entries` values.
    fn put_indices(&mut self, entries: usize) {
        let width = (u32::BITS - (entries.max(2) as u32 - 1).leading_zeros()) as u8;
        self.page.push(width);
        rle_encode(&self.scratch, width, &mut self.page);
    }
}

/// The row ranges of the pages of `n` rows.
fn pages(n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n)
        .step_by(PAGE_ROWS)
        .map(move |start| start..(start + PAGE_ROWS).min(n))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn i64_stats(page: &[i64]) -> PageStats {
    let (lo, hi) = page
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    PageStats {
        min: lo.to_le_bytes().to_vec(),
        max: hi.to_le_bytes().to_vec(),
        nulls: 0,
    }
}

/// By unsigned order, as the `INTEGER(_, false)` logical types say.
fn u32_stats(page: &[i32]) -> PageStats {
    let (lo, hi) = page.iter().fold((u32::MAX, 0u32), |(lo, hi), &v| {
        (lo.min(v as u32), hi.max(v as u32))
    });
    PageStats {
        min: lo.to_le_bytes().to_vec(),
        max: hi.to_le_bytes().to_vec(),
        nulls: 0,
    }
}

/// A column chunk being written: its pages, page index and statistics.
struct Chunk {
    descr: ColumnDescPtr,
    optional: bool,
    out: TrackedWrite<Vec<u8>>,
    index: ColumnIndexBuilder,
    offsets: OffsetIndexBuilder,
    encodings: Vec<Encoding>,
    uncompressed: u64,
    dictionary_offset: Option<i64>,
    data_offset: Option<i64>,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
    nulls: u64,
}

impl Chunk {
    fn new(descr: ColumnDescPtr) -> Chunk {
        let optional = descr.max_def_level() > 0;
        let physical = descr.physical_type();
        Chunk {
            descr,
            optional,
            out: TrackedWrite::new(Vec::new()),
            index: ColumnIndexBuilder::new(physical),
            offsets: OffsetIndexBuilder::new(),
            encodings: Vec::new(),
            uncompressed: 0,
            dictionary_offset: None,
            data_offset: None,
            min: None,
            max: None,
            nulls: 0,
        }
    }

    fn note(&mut self, encoding: Encoding) {
        if !self.encodings.contains(&encoding) {
            self.encodings.push(encoding);
        }
    }

    fn compressed(enc: &mut Encoder) -> parquet::errors::Result<(Bytes, usize)> {
        let raw = enc.page.len();
        enc.compressed.clear();
        enc.compressed.reserve(zstd::zstd_safe::compress_bound(raw));
        enc.zstd
            .compress_to_buffer(&enc.page, &mut enc.compressed)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok((Bytes::copy_from_slice(&enc.compressed), raw))
    }

    /// The dictionary page, from `enc.page` (plain values).
    fn dictionary_page(
        &mut self,
        enc: &mut Encoder,
        entries: usize,
    ) -> parquet::errors::Result<()> {
        let (buf, raw) = Self::compressed(enc)?;
        let page = Page::DictionaryPage {
            buf,
            num_values: entries as u32,
            encoding: Encoding::PLAIN,
            is_sorted: true,
        };
        let spec =
            SerializedPageWriter::new(&mut self.out).write_page(CompressedPage::new(page, raw))?;
        debug_assert_eq!(spec.page_type, PageType::DICTIONARY_PAGE);
        self.dictionary_offset = Some(spec.offset as i64);
        self.uncompressed += spec.uncompressed_size as u64;
        self.note(Encoding::PLAIN);
        Ok(())
    }

    /// A data page of `rows` rows, from `enc.page` (levels and values).
    fn data_page(
        &mut self,
        enc: &mut Encoder,
        rows: usize,
        encoding: Encoding,
        stats: PageStats,
    ) -> parquet::errors::Result<()> {
        let (buf, raw) = Self::compressed(enc)?;
        let page = Page::DataPage {
            buf,
            num_values: rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec =
            SerializedPageWriter::new(&mut self.out).write_page(CompressedPage::new(page, raw))?;
        self.data_offset.get_or_insert(spec.offset as i64);
        self.uncompressed += spec.uncompressed_size as u64;
        self.offsets
            .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        self.offsets.append_row_count(rows as i64);
        self.note(encoding);
        if self.optional {
            self.note(Encoding::RLE);
        }
        let null_page = stats.nulls == rows as u64;
        self.nulls += stats.nulls;
        if !null_page {
            let lower = |a: &Vec<u8>, b: &Vec<u8>| self.less(b, a);
            if self.min.as_ref().is_none_or(|m| lower(m, &stats.min)) {
                self.min = Some(stats.min.clone());
            }
            if self.max.as_ref().is_none_or(|m| self.less(m, &stats.max)) {
                self.max = Some(stats.max.clone());
            }
        }
        self.index
            .append(null_page, stats.min, stats.max, stats.nulls as i64, None);
        Ok(())
    }

    /// Whether statistics value `a` orders before `b` in this column's sort order.
    fn less(&self, a: &[u8], b: &[u8]) -> bool {
        let int = |v: &[u8]| -> i128 {
            match v.len() {
                8 => i128::from(i64::from_le_bytes(v.try_into().unwrap_or_default())),
                4 => i128::from(u32::from_le_bytes(v.try_into().unwrap_or_default())),
                _ => 0,
            }
        };
        match self.descr.physical_type() {
            parquet::basic::Type::BYTE_ARRAY => a < b,
            _ => int(a) < int(b),
        }
    }

    fn finish(self, rows: usize) -> parquet::errors::Result<(Bytes, ColumnCloseResult)> {
        let statistics = self.statistics();
        let bytes = self.out.bytes_written();
        let data = Bytes::from(self.out.into_inner()?);
        let metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(ZSTD_LEVEL).expect("zstd level in range"),
            ))
            .set_encodings(self.encodings.clone())
            .set_num_values(rows as i64)
            .set_total_compressed_size(bytes as i64)
            .set_total_uncompressed_size(self.uncompressed as i64)
            .set_data_page_offset(self.data_offset.unwrap_or(0))
            .set_dictionary_page_offset(self.dictionary_offset)
            .set_statistics(statistics)
            .build()?;
        Ok((
            data,
            ColumnCloseResult {
                bytes_written: bytes as u64,
                rows_written: rows as u64,
                metadata,
                bloom_filter: None,
                column_index: Some(self.index.build()?),
                offset_index: Some(self.offsets.build()),
            },
        ))
    }

    fn statistics(&self) -> Statistics {
        let nulls = Some(self.nulls);
        let i64_of = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .and_then(|b| b.try_into().ok())
                .map(i64::from_le_bytes)
        };
        let i32_of = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .and_then(|b| b.try_into().ok())
                .map(i32::from_le_bytes)
        };
        match self.descr.physical_type() {
            parquet::basic::Type::INT64 => {
                Statistics::int64(i64_of(&self.min), i64_of(&self.max), None, nulls, false)
            }
            parquet::basic::Type::INT32 => {
                Statistics::int32(i32_of(&self.min), i32_of(&self.max), None, nulls, false)
            }
            _ => Statistics::byte_array(
                self.min.clone().map(ByteArray::from),
                self.max.clone().map(ByteArray::from),
                None,
                nulls,
                false,
            ),
        }
    }
}

fn put_uleb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_uleb(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends `values` at `width` bits each, least significant bit first (Parquet's
/// bit-packing), padded to a whole byte.
fn bit_pack(values: impl Iterator<Item = u64>, width: u32, out: &mut Vec<u8>) {
    if width <= 32 {
        // The common case, in a 64-bit accumulator: names, levels, small differences.
        let (mut acc, mut bits) = (0u64, 0u32);
        for v in values {
            acc |= v << bits;
            bits += width;
            if bits >= 32 {
                out.extend_from_slice(&(acc as u32).to_le_bytes());
                acc = if bits == 32 {
                    0
                } else {
                    v >> (width - (bits - 32))
                };
                bits -= 32;
            }
        }
        while bits > 0 {
            out.push(acc as u8);
            acc >>= 8;
            bits = bits.saturating_sub(8);
        }
        return;
    }
    let (mut acc, mut bits) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v) << bits;
        bits += width;
        while bits >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            bits -= 64;
        }
    }
    while bits > 0 {
        out.push(acc as u8);
        acc >>= 8;
        bits = bits.saturating_sub(8);
    }
}

/// Eight values bit-packed at `width` bits: `width` bytes. Up to 16 bits (dictionary
/// indices, levels) in one register.
fn pack8(group: &[u32], width: u8, out: &mut Vec<u8>) {
    let w = usize::from(width);
    if w <= 8 {
        let mut acc = 0u64;
        for (j, &v) in group.iter().enumerate() {
            acc |= u64::from(v) << (j * w);
        }
        out.extend_from_slice(&acc.to_le_bytes()[..w]);
    } else if w <= 16 {
        let mut acc = 0u128;
        for (j, &v) in group.iter().enumerate() {
            acc |= u128::from(v) << (j * w);
        }
        out.extend_from_slice(&acc.to_le_bytes()[..w]);
    } else {
        bit_pack(group.iter().map(|&v| u64::from(v)), u32::from(width), out);
    }
}

/// Parquet's RLE/bit-packing hybrid encoding of `values` at `width` bits: runs of eight or
/// more equal values as one repeated value, the rest bit-packed in groups of eight.
fn rle_encode(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let value_bytes = usize::from(width).div_ceil(8);
    let literal = |out: &mut Vec<u8>, vals: &[u32]| {
        // At most 63 groups per header: some readers take the header as one byte.
        for chunk in vals.chunks(63 * 8) {
            let groups = chunk.len().div_ceil(8);
            put_uleb(out, ((groups as u64) << 1) | 1);
            let mut eights = chunk.chunks_exact(8);
            for group in &mut eights {
                pack8(group, width, out);
            }
            let rest = eights.remainder();
            if !rest.is_empty() {
                let mut group = [0u32; 8];
                group[..rest.len()].copy_from_slice(rest);
                pack8(&group, width, out);
            }
        }
    };
    let (mut start, mut i) = (0, 0);
    while i < values.len() {
        let v = values[i];
        let mut j = i + 1;
        while j < values.len() && values[j] == v {
            j += 1;
        }
        // Literals before a run must fill whole groups of eight: take the run's first
        // values into them.
        let fill = (8 - (i - start) % 8) % 8;
        if j - i >= fill + 8 {
            let run_start = i + fill;
            literal(out, &values[start..run_start]);
            put_uleb(out, ((j - run_start) as u64) << 1);
            out.extend_from_slice(&v.to_le_bytes()[..value_bytes]);
            start = j;
        }
        i = j;
    }
    literal(out, &values[start..]);
}

/// Parquet's DELTA_BINARY_PACKED encoding: blocks of 128 differences, each in four
/// miniblocks of 32 bit-packed at the narrowest width that holds them above the block's
/// smallest difference.
fn delta_encode(values: &[i64], out: &mut Vec<u8>) {
    const BLOCK: usize = 128;
    const MINIBLOCKS: usize = 4;
    const MINIBLOCK: usize = BLOCK / MINIBLOCKS;
    put_uleb(out, BLOCK as u64);
    put_uleb(out, MINIBLOCKS as u64);
    put_uleb(out, values.len() as u64);
    put_zigzag(out, values.first().copied().unwrap_or(0));
    let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    for block in deltas.chunks(BLOCK) {
        let min = block.iter().copied().min().unwrap_or(0);
        put_zigzag(out, min);
        let widths = out.len();
        out.extend_from_slice(&[0; MINIBLOCKS]);
        for (m, mini) in block.chunks(MINIBLOCK).enumerate() {
            let max = mini
                .iter()
                .map(|d| d.wrapping_sub(min) as u64)
                .max()
                .unwrap_or(0);
            let width = u64::BITS - max.leading_zeros();
            out[widths + m] = width as u8;
            let padded = mini
                .iter()
                .map(|d| d.wrapping_sub(min) as u64)
                .chain(std::iter::repeat(0))
                .take(MINIBLOCK);
            bit_pack(padded, width, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer made on another's buffers (`finish_keeping`, `create_with`) writes exactly
    /// its own records, and the first writer's file is whole.
    #[test]
    fn a_writer_on_a_finished_writers_buffers_writes_only_its_own_records() {
        let tmp = crate::testutil::TempDir::new("segment-spare");
        let tmp = tmp.path();
        let mut spare = None;
        let mut first = Writer::create(&tmp.join("a.parquet")).expect("create");
        first.group_rows = 1000;
        let a = synthetic(5_500, 3);
        for r in &a {
            first.add(r).expect("add");
        }
        first.finish_keeping(&mut spare).expect("finish");
        assert!(spare.is_some());
        // Fewer records, other names and times: nothing of the first may show through.
        let mut b = synthetic(700, 4);
        for r in &mut b {
            r.first_us += 86_400_000_000;
            r.last_us += 86_400_000_000;
            r.src_asset = r.src_asset.as_ref().map(|n| Arc::from(format!("{n}-b")));
        }
        let path = tmp.join("b.parquet");
        let mut second = Writer::create_with(&path, spare.take()).expect("create");
        for r in &b {
            second.add(r).expect("add");
        }
        let info = second.finish_keeping(&mut spare).expect("finish");
        assert_eq!(info.records, 700);
        sort(&mut b);
        assert_eq!(read::read_all(&path).expect("read"), b);
        let mut a_sorted: Vec<Record> = Vec::new();
        for chunk in a.chunks(1000) {
            let mut c = chunk.to_vec();
            sort(&mut c);
            a_sorted.extend(c);
        }
        assert_eq!(
            read::read_all(&tmp.join("a.parquet")).expect("read"),
            a_sorted
        );
    }

    #[test]
    fn levels_without_nulls_are_the_run_the_hybrid_encoder_writes() {
        let mut enc = Encoder::new();
        for n in [8usize, 9, 63, 64, 65_536] {
            let ids: Vec<u32> = (1..=n as u32).collect();
            enc.page.clear();
            enc.put_levels(&ids, 0);
            let mut want = Vec::new();
            rle_encode(&vec![1; n], 1, &mut want);
            let mut page = (want.len() as u32).to_le_bytes().to_vec();
            page.extend_from_slice(&want);
            assert_eq!(enc.page, page, "{n} rows");
        }
    }

    /// The hybrid encoding decodes back, by the reader's decoder, for runs and literals of
    /// every length around the group size and every width.
    #[test]
    fn rle_round_trips() {
        let mut cases: Vec<Vec<u32>> = vec![vec![], vec![0], vec![1; 7], vec![1; 8], vec![3; 9]];
        for lead in 0..10 {
            for run in [1, 7, 8, 9, 16, 100] {
                let mut v: Vec<u32> = (0..lead).map(|i| i % 3).collect();
                v.extend(std::iter::repeat_n(2, run));
                v.extend((0..lead).map(|i| (i * 7) % 4));
                cases.push(v);
            }
        }
        cases.push(
            (0..5000)
                .map(|i| (i * 2_654_435_761u64 % 1000) as u32)
                .collect(),
        );
        for v in cases {
            for width in [1u8, 2, 3, 8, 10, 17, 32] {
                let mask = if width == 32 {
                    u32::MAX
                } else {
                    (1 << width) - 1
                };
                let v: Vec<u32> = v.iter().map(|x| x & mask).collect();
                let mut buf = Vec::new();
                rle_encode(&v, width, &mut buf);
                let mut back = Vec::new();
                read::rle_decode(&buf, usize::from(width), v.len(), &mut back).expect("decodes");
                assert_eq!(back, v, "width {width}");
            }
        }
    }

    /// Delta-encoded pages read back through parquet-rs, including extreme differences.
    #[test]
    fn delta_pages_read_back() {
        let tmp = crate::testutil::TempDir::new("segment-delta");
        let path = tmp.join("s.parquet");
        let mut recs = synthetic(70_000, 9);
        recs[10].first_us = i64::MIN + 1;
        recs[11].last_us = i64::MAX;
        recs[12].first_us = -1;
        write(&path, &mut recs).expect("write");
        assert_eq!(read_all(&path).expect("read"), recs);
    }
}
