//! Reading segments: pruning by statistics, filtering on the page index and dictionaries,
//! decoding only the rows that match.

use std::cell::RefCell;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use parquet::column::page::PageMetadata;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use super::*;

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
/// (A few in tests, so that small segments cross batches.)
const BATCH: usize = if cfg!(test) { 5 } else { 8192 };

/// Unselected rows between two selected ones that are decoded rather than skipped: skipping
/// costs about as much as decoding a few dozen values.
const MERGE_GAP: usize = 32;

/// A segment file read with positioned reads (`pread`): one handle serves every column
/// and run of a segment, on any thread. (`File`'s reader duplicates the descriptor, seeks
/// and closes it for every page, and its duplicates share one offset, so two threads
/// reading one segment would read each other's pages.)
#[derive(Clone)]
pub(super) struct SegmentFile {
    file: Arc<File>,
    len: u64,
}

impl SegmentFile {
    fn open(path: &Path) -> Result<SegmentFile, SegmentError> {
        let err = |source| SegmentError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        Ok(SegmentFile {
            file: Arc::new(file),
            len,
        })
    }
}

impl Length for SegmentFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SegmentFile {
    type T = ReadAt;

    fn get_read(&self, start: u64) -> Result<ReadAt, ParquetError> {
        Ok(ReadAt {
            file: Arc::clone(&self.file),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        let mut buf = vec![0; length];
        self.file.read_exact_at(&mut buf, start).map_err(|e| {
            ParquetError::EOF(format!("{length} bytes at {start} of {}: {e}", self.len))
        })?;
        Ok(buf.into())
    }
}

/// A reader of a segment file from an offset of its own.
pub(super) struct ReadAt {
    file: Arc<File>,
    pos: u64,
}

impl std::io::Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

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

/// Opens a segment (for tests' inspection).
#[cfg(test)]
pub(super) fn open(path: &Path) -> Result<SerializedFileReader<SegmentFile>, SegmentError> {
    open_file(path, SegmentFile::open(path)?)
}

/// Reads a segment's footer with its page index and checks that it is one this module
/// wrote: the schema version and every column's name and position.
fn open_file(
    path: &Path,
    file: SegmentFile,
) -> Result<SerializedFileReader<SegmentFile>, SegmentError> {
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
    read_to(path, filter, Out::Each(out))
}

/// How many records of the segment `filter` matches (at most `filter.limit`), in
/// `records_matched`: the filter is evaluated as `read` does it, and no record is decoded, so
/// only the columns the filter names are read.
pub fn count(path: &Path, filter: &Filter) -> Result<ScanStats, SegmentError> {
    read_to(path, filter, Out::Count)
}

/// Where `read` hands the records.
enum Out<'o> {
    Each(&'o mut dyn FnMut(Record) -> bool),
    /// Counted, not decoded.
    Count,
}

fn read_to(path: &Path, filter: &Filter, mut out: Out) -> Result<ScanStats, SegmentError> {
    let limit = filter.limit.unwrap_or(usize::MAX);
    scan_groups(path, filter, limit, |scan, group, first_row, selected| {
        scan.materialize(group, first_row, &selected, &mut out)?;
        Ok(!scan.stats.stopped)
    })
}

/// Opens a segment and calls `each` with every row group whose statistics can match
/// `filter`, in file order, with its first row and the rows that match, until `each`
/// returns `false`.
fn scan_groups(
    path: &Path,
    filter: &Filter,
    limit: usize,
    mut each: impl FnMut(&mut Scan, &Group, u64, Vec<u32>) -> Result<bool, SegmentError>,
) -> Result<ScanStats, SegmentError> {
    let file = SegmentFile::open(path)?;
    let reader = open_file(path, file.clone())?;
    let file = Arc::new(file);
    let meta = reader.metadata();
    let mut scan = Scan {
        path,
        filter,
        stats: ScanStats {
            row_groups_total: meta.num_row_groups() as u64,
            ..ScanStats::default()
        },
        limit,
        dec: Decoder::new(path),
    };
    if limit == 0 {
        scan.stats.stopped = true;
        return Ok(scan.stats);
    }
    let mut first_row = 0u64;
    for i in 0..meta.num_row_groups() {
        let group_meta = meta.row_group(i);
        let rows = group_meta.num_rows() as u64;
        if group_may_match(group_meta, filter) {
            scan.stats.row_groups_read += 1;
            let group = Group {
                reader: reader.get_row_group(i).map_err(|e| scan.err(e))?,
                index: meta.page_index_for_row_group(i),
                file: &file,
            };
            let plan = time_plan(&group.index, rows as usize, filter);
            let selected = scan.select(&group, &plan, may_have_gaps(group_meta))?;
            if !each(&mut scan, &group, first_row, selected)? {
                break;
            }
        }
        first_row += rows;
    }
    Ok(scan.stats)
}

/// A row group of a segment that a query may need, decoded a batch at a time: one run of a
/// query that merges row groups and segments into time order. Its rows are selected on
/// its first batch, so that a segment of many row groups costs memory only for the ones
/// being merged. It can move between threads: each takes it, decodes and hands it back.
pub(crate) struct GroupRun {
    segment: Arc<Opened>,
    group: usize,
    first_row: u64,
    /// The earliest `first` in the row group, by its statistics.
    pub(crate) min_first_us: Option<i64>,
    rows: Option<Selected>,
}

/// A segment whose footer has been read.
struct Opened {
    path: PathBuf,
    reader: SerializedFileReader<SegmentFile>,
    file: Arc<SegmentFile>,
}

/// A row group's matching rows and its column readers.
struct Selected {
    columns: Vec<Column>,
    selected: Vec<u32>,
    /// The selected rows decoded so far.
    at: usize,
    dec: Decoder,
}

impl GroupRun {
    /// Decodes the next `max` (at most a batch) of the rows that match `filter` into
    /// `recs`, which it replaces; in file order, which is time order within a row group
    /// that sekisho wrote. The first call finds those rows, and returns what it read to.
    pub(crate) fn next(
        &mut self,
        filter: &Filter,
        max: usize,
        recs: &mut Vec<Record>,
    ) -> Result<Option<ScanStats>, SegmentError> {
        let mut scanned = None;
        let rows = match &mut self.rows {
            Some(rows) => rows,
            None => {
                let (rows, scan) = self.select(filter)?;
                scanned = Some(scan);
                self.rows.insert(rows)
            }
        };
        let end = rows.selected.len().min(rows.at + max.clamp(1, BATCH));
        let batch = &rows.selected[rows.at..end];
        rows.dec
            .decode(&mut rows.columns, batch, self.first_row, recs)?;
        rows.at = end;
        Ok(scanned)
    }

    /// The rows of the row group that match `filter`, with its columns opened.
    fn select(&self, filter: &Filter) -> Result<(Selected, ScanStats), SegmentError> {
        let Opened { path, reader, file } = &*self.segment;
        let meta = reader.metadata();
        let group_meta = meta.row_group(self.group);
        let mut scan = Scan {
            path,
            filter,
            stats: ScanStats::default(),
            limit: usize::MAX,
            dec: Decoder::new(path),
        };
        let group = Group {
            reader: reader.get_row_group(self.group).map_err(|e| scan.err(e))?,
            index: meta.page_index_for_row_group(self.group),
            file,
        };
        let plan = time_plan(&group.index, group_meta.num_rows() as usize, filter);
        let selected = scan.select(&group, &plan, may_have_gaps(group_meta))?;
        let columns = match selected.is_empty() {
            true => Vec::new(),
            false => scan.columns(&group)?,
        };
        let rows = Selected {
            columns,
            selected,
            at: 0,
            dec: scan.dec,
        };
        Ok((rows, scan.stats))
    }

    /// Whether every matching row has been decoded.
    pub(crate) fn is_done(&self) -> bool {
        self.rows
            .as_ref()
            .is_some_and(|rows| rows.at == rows.selected.len())
    }
}

/// The runs of a segment: its row groups whose statistics can match `filter`, in file
/// order; and what was read to find them (the footer).
pub(crate) fn group_runs(
    path: &Path,
    filter: &Filter,
) -> Result<(Vec<GroupRun>, ScanStats), SegmentError> {
    let file = SegmentFile::open(path)?;
    let reader = open_file(path, file.clone())?;
    let segment = Arc::new(Opened {
        path: path.to_path_buf(),
        reader,
        file: Arc::new(file),
    });
    let meta = segment.reader.metadata();
    let mut stats = ScanStats {
        row_groups_total: meta.num_row_groups() as u64,
        ..ScanStats::default()
    };
    let mut runs = Vec::new();
    let mut first_row = 0u64;
    for (group, group_meta) in meta.row_groups().iter().enumerate() {
        if group_may_match(group_meta, filter) {
            stats.row_groups_read += 1;
            runs.push(GroupRun {
                segment: Arc::clone(&segment),
                group,
                first_row,
                min_first_us: i64_stats(group_meta, Col::First).map(|(min, _)| min),
                rows: None,
            });
        }
        first_row += group_meta.num_rows() as u64;
    }
    Ok((runs, stats))
}

/// A row group being read: its reader and page index, and the file its pages are read from.
struct Group<'a> {
    reader: Box<dyn RowGroupReader + 'a>,
    index: RowGroupPageIndex,
    file: &'a Arc<SegmentFile>,
}

impl Group<'_> {
    fn metadata(&self) -> &RowGroupMetaData {
        self.reader.metadata()
    }

    /// The pages of a column chunk, decompressed. parquet-rs makes a zstd compressor and
    /// decompressor for every column chunk it reads, which costs about as much as
    /// decompressing its pages; zstd pages are read raw instead and decompressed with the
    /// thread's one context.
    fn pages(&self, col: Col) -> Result<Box<dyn PageReader>, ParquetError> {
        let meta = self.metadata().column(col.index());
        if !matches!(meta.compression(), Compression::ZSTD(_)) {
            return Ok(Box::new(SerializedPageReader::new(
                Arc::clone(self.file),
                meta,
                self.metadata().num_rows() as usize,
                self.index.page_locations(col.index()).cloned(),
            )?));
        }
        let raw = meta
            .clone()
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build()?;
        let pages = SerializedPageReader::new(
            Arc::clone(self.file),
            &raw,
            self.metadata().num_rows() as usize,
            self.index.page_locations(col.index()).cloned(),
        )?;
        Ok(Box::new(Unzstd(pages)))
    }
}

/// A column chunk's pages as stored, decompressed as they are read.
struct Unzstd(SerializedPageReader<SegmentFile>);

impl Iterator for Unzstd {
    type Item = Result<Page, ParquetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

impl PageReader for Unzstd {
    fn get_next_page(&mut self) -> Result<Option<Page>, ParquetError> {
        self.0.get_next_page()?.map(unzstd_page).transpose()
    }

    fn peek_next_page(&mut self) -> Result<Option<PageMetadata>, ParquetError> {
        self.0.peek_next_page()
    }

    fn skip_next_page(&mut self) -> Result<(), ParquetError> {
        self.0.skip_next_page()
    }

    fn supports_deferred_dictionary(&self) -> bool {
        self.0.supports_deferred_dictionary()
    }

    fn take_deferred_dictionary(&mut self) -> Result<Option<Page>, ParquetError> {
        self.0
            .take_deferred_dictionary()?
            .map(unzstd_page)
            .transpose()
    }

    fn at_record_boundary(&mut self) -> Result<bool, ParquetError> {
        self.0.at_record_boundary()
    }
}

fn unzstd_page(page: Page) -> Result<Page, ParquetError> {
    Ok(match page {
        Page::DictionaryPage {
            buf,
            num_values,
            encoding,
            is_sorted,
        } => Page::DictionaryPage {
            buf: unzstd(&buf, 0)?,
            num_values,
            encoding,
            is_sorted,
        },
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
        } => Page::DataPage {
            buf: unzstd(&buf, 0)?,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
        },
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls,
            num_rows,
            def_levels_byte_len,
            rep_levels_byte_len,
            is_compressed,
            statistics,
        } => {
            // The levels of a version 2 page are stored as they are.
            let levels = (def_levels_byte_len + rep_levels_byte_len) as usize;
            Page::DataPageV2 {
                buf: if is_compressed {
                    unzstd(&buf, levels)?
                } else {
                    buf
                },
                num_values,
                encoding,
                num_nulls,
                num_rows,
                def_levels_byte_len,
                rep_levels_byte_len,
                is_compressed,
                statistics,
            }
        }
    })
}

thread_local! {
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `buf` with all but its first `keep` bytes decompressed (zstd).
fn unzstd(buf: &Bytes, keep: usize) -> Result<Bytes, ParquetError> {
    let (head, frame) = buf
        .split_at_checked(keep)
        .ok_or_else(|| ParquetError::General("page shorter than its levels".into()))?;
    if frame.is_empty() {
        return Ok(buf.clone());
    }
    let err = |e: std::io::Error| ParquetError::External(Box::new(e));
    // The frame header says how large the page is (zstd's own API writes it).
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(frame)
        && let Ok(size) = usize::try_from(size)
    {
        let mut out = Vec::with_capacity(size);
        let done = ZSTD.with(|cell| {
            let mut cell = cell.borrow_mut();
            let zstd = match &mut *cell {
                Some(zstd) => zstd,
                None => cell.insert(zstd::bulk::Decompressor::new().map_err(err)?),
            };
            zstd.decompress_to_buffer(frame, &mut out).map_err(err)
        });
        if done.is_ok() && out.len() == size {
            if keep == 0 {
                return Ok(out.into());
            }
            let mut page = Vec::with_capacity(keep + size);
            page.extend_from_slice(head);
            page.extend_from_slice(&out);
            return Ok(page.into());
        }
    }
    // No size in the header, or several frames.
    let mut page = head.to_vec();
    zstd::stream::copy_decode(frame, &mut page).map_err(err)?;
    Ok(page.into())
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
    dec: Decoder,
}

/// Turns a row group's selected rows into records: the names and addresses it has met,
/// so that each distinct one is converted once.
struct Decoder {
    path: PathBuf,
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
        corrupt(self.path, column, what)
    }

    /// The readers of every column of a row group, for `Decoder::decode`.
    fn columns(&self, group: &Group) -> Result<Vec<Column>, SegmentError> {
        Col::ALL
            .into_iter()
            .map(|col| Column::new(group, col).map_err(|e| self.err(e)))
            .collect()
    }

    /// The rows of a row group that pass the filter, in order. The other filters go first:
    /// what they leave is usually sparse, and the time bounds are then checked only where
    /// the page index could not decide them.
    fn select(
        &mut self,
        group: &Group,
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
        group: &Group,
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
            let want = Event::Gap.name().as_bytes();
            self.eval_bytes(group, Col::Event, time, &mut |v| v == Some(want), &mut gap)?;
            for ((f, t), g) in fields.iter_mut().zip(time).zip(&gap) {
                *f |= *t && *g;
            }
        }
        Ok(fields)
    }

    /// Clears the rows of `mask` within `check` whose value in an `i64` column fails `keep`.
    fn keep_i64(
        &self,
        group: &Group,
        col: Col,
        mask: &mut [bool],
        check: &[Range<usize>],
        keep: impl Fn(i64) -> bool,
    ) -> Result<(), SegmentError> {
        // Only the pages the page index could not decide: the mask is not scanned whole.
        let mut wanted = Vec::new();
        for r in check {
            let Some(rows) = mask.get(r.clone()) else {
                continue;
            };
            wanted.extend(
                runs(rows)
                    .into_iter()
                    .map(|w| w.start + r.start..w.end + r.start),
            );
        }
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
        group: &Group,
        cols: &[Col],
        mask: &mut [bool],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<(), SegmentError> {
        let mut hits = vec![false; mask.len()];
        for &col in cols {
            self.eval_bytes(group, col, mask, pred, &mut hits)?;
        }
        and(mask, &hits);
        Ok(())
    }

    /// Sets `hits[row]` where `pred` holds for a byte-array column, for at least the rows
    /// set in `wanted`. Works on the pages: a dictionary-encoded page is decided once per
    /// dictionary entry, then per row by its index, without building a value per row.
    /// Pages in an encoding this does not know go through the column reader instead.
    fn eval_bytes(
        &self,
        group: &Group,
        col: Col,
        wanted: &[bool],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
        hits: &mut [bool],
    ) -> Result<(), SegmentError> {
        if !wanted.contains(&true) {
            return Ok(());
        }
        match self.eval_pages(group, col, wanted, pred, hits)? {
            Pages::Done => Ok(()),
            Pages::Unknown => {
                // Hits set so far are right; the column reader sets the rest.
                let mut cursor =
                    Cursor::<ByteArrayType>::new(group, col).map_err(|e| self.err(e))?;
                for r in runs(wanted) {
                    cursor
                        .read(r, |row, v| hits[row] |= pred(v.map(|b| b.data())))
                        .map_err(|e| self.err(e))?;
                }
                Ok(())
            }
        }
    }

    fn eval_pages(
        &self,
        group: &Group,
        col: Col,
        wanted: &[bool],
        pred: &mut dyn FnMut(Option<&[u8]>) -> bool,
        hits: &mut [bool],
    ) -> Result<Pages, SegmentError> {
        if !pages_decodable(group, col) {
            return Ok(Pages::Unknown);
        }
        let optional = is_optional(group, col);
        let null_hit = pred(None);
        let mut pages = group.pages(col).map_err(|e| self.err(e))?;
        let mut dict: Vec<bool> = Vec::new();
        let mut values = Vec::new();
        let mut row = 0usize;
        while let Some(next) = pages.peek_next_page().map_err(|e| self.err(e))? {
            if !next.is_dict
                && let Some(n) = next.num_rows
                && wanted.get(row..row + n).is_some_and(|w| !w.contains(&true))
            {
                pages.skip_next_page().map_err(|e| self.err(e))?;
                row += n;
                continue;
            }
            let Some(page) = pages.get_next_page().map_err(|e| self.err(e))? else {
                break;
            };
            if let Page::DictionaryPage { num_values, .. } = &page {
                let count = *num_values as usize;
                let entries =
                    PlainValues::parse(page, 0, count).ok_or_else(|| self.corrupt(col, "page"))?;
                dict.clear();
                dict.extend(entries.iter().map(|v| pred(Some(v))));
                continue;
            }
            let Some((n, encoding, levels, at)) = page_layout(&page, optional) else {
                return Ok(Pages::Unknown);
            };
            let corrupt = |what| self.corrupt(col, what);
            let buf = &page.buffer()[..];
            let present = match optional {
                true => {
                    let levels = buf.get(levels).ok_or_else(|| corrupt("page"))?;
                    Some(Present::parse(levels, n).ok_or_else(|| corrupt("levels"))?)
                }
                false => None,
            };
            let count = present.as_ref().map_or(n, Present::count);
            // Whether each value (of the rows that have one) matches.
            values.clear();
            match encoding {
                Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                    if count > 0 {
                        let (&width, data) = buf
                            .get(at..)
                            .and_then(<[u8]>::split_first)
                            .ok_or_else(|| corrupt("page"))?;
                        // Decided per run: a repeated index once.
                        let mut bad_index = false;
                        let mut hit = |k: u32| {
                            dict.get(k as usize).copied().unwrap_or_else(|| {
                                bad_index = true;
                                false
                            })
                        };
                        rle_runs(data, usize::from(width), count, |run| match run {
                            Run::Repeat(k, n) => values.extend(std::iter::repeat_n(hit(k), n)),
                            Run::Values(ks) => values.extend(ks.iter().map(|&k| hit(k))),
                        })
                        .ok_or_else(|| corrupt("page"))?;
                        if bad_index {
                            return Err(corrupt("dictionary index"));
                        }
                    }
                }
                Encoding::PLAIN => {
                    let plain =
                        PlainValues::parse(page, at, count).ok_or_else(|| corrupt("values"))?;
                    values.extend(plain.iter().map(|v| pred(Some(v))));
                }
                _ => return Ok(Pages::Unknown),
            }
            let page_hits = hits
                .get_mut(row..row + n)
                .ok_or_else(|| corrupt("page rows"))?;
            match &present {
                None => {
                    for (h, &v) in page_hits.iter_mut().zip(&values) {
                        *h |= v;
                    }
                }
                Some(present) => {
                    let mut values = values.iter();
                    for (w, hits) in page_hits.chunks_mut(64).enumerate() {
                        let word = present.words[w];
                        if word == u64::MAX {
                            // 64 rows with values.
                            for (h, v) in hits.iter_mut().zip(values.by_ref().take(64)) {
                                *h |= *v;
                            }
                            continue;
                        }
                        for (bit, h) in hits.iter_mut().enumerate() {
                            *h |= match (word >> bit) & 1 {
                                1 => *values.next().ok_or_else(|| corrupt("levels"))?,
                                _ => null_hit,
                            };
                        }
                    }
                }
            }
            row += n;
        }
        Ok(Pages::Done)
    }

    /// Decodes the `selected` rows of a row group in full and hands them to `out`.
    fn materialize(
        &mut self,
        group: &Group,
        first_row: u64,
        selected: &[u32],
        out: &mut Out,
    ) -> Result<(), SegmentError> {
        if selected.is_empty() {
            return Ok(());
        }
        if let Out::Count = out {
            let n = selected.len().min(self.limit);
            self.stats.records_matched += n as u64;
            self.limit -= n;
            self.stats.stopped = self.limit == 0;
            return Ok(());
        }
        let mut columns = self.columns(group)?;
        let mut recs = Vec::new();
        for batch in selected.chunks(BATCH) {
            let batch = &batch[..batch.len().min(self.limit)];
            self.dec.decode(&mut columns, batch, first_row, &mut recs)?;
            match out {
                Out::Each(out) => {
                    for rec in recs.drain(..) {
                        self.stats.records_matched += 1;
                        self.limit -= 1;
                        if !out(rec) || self.limit == 0 {
                            self.stats.stopped = true;
                            return Ok(());
                        }
                    }
                }
                Out::Count => return Ok(()),
            }
        }
        Ok(())
    }
}

impl Decoder {
    fn new(path: &Path) -> Decoder {
        Decoder {
            path: path.to_path_buf(),
            names: Interner::default(),
            addrs: FastMap::default(),
        }
    }

    /// Decodes the `batch` rows (in order) of the row group whose `columns` these are into
    /// `recs`, which it replaces.
    fn decode(
        &mut self,
        columns: &mut [Column],
        batch: &[u32],
        first_row: u64,
        recs: &mut Vec<Record>,
    ) -> Result<(), SegmentError> {
        recs.clear();
        if batch.is_empty() {
            return Ok(());
        }
        let readers = columns.iter().any(|c| !matches!(c, Column::Pages(_)));
        // The column readers take runs of rows; the pages are read row by row.
        let wanted: Vec<Range<usize>> = if readers {
            let mut mask = vec![false; (batch[batch.len() - 1] - batch[0]) as usize + 1];
            for &r in batch {
                mask[(r - batch[0]) as usize] = true;
            }
            runs(&mask)
                .into_iter()
                .map(|r| r.start + batch[0] as usize..r.end + batch[0] as usize)
                .collect()
        } else {
            Vec::new()
        };
        recs.resize(batch.len(), Record::default());
        for (col, column) in Col::ALL.into_iter().zip(columns) {
            self.fill(col, column, &wanted, batch, first_row, recs)?;
        }
        Ok(())
    }

    /// Reads one column for the `batch` rows (the column readers: for the rows in
    /// `wanted`) and stores their values in `recs`.
    fn fill(
        &mut self,
        col: Col,
        column: &mut Column,
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
        let path = self.path.as_path();
        let err = |source| SegmentError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bad: Option<(usize, String)> = None;
        match column {
            Column::Pages(c) => {
                bad = c.fill(batch, recs, &mut self.names).map_err(|f| match f {
                    Fault::Read(e) => err(e),
                    Fault::Corrupt(what) => corrupt(path, col, what),
                })?;
            }
            Column::I64(c) => {
                let set = int_field(col, Boxed);
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        if let (Some(i), Some(&v)) = (slot(row), v)
                            && !set(&mut recs[i], v)
                            && bad.is_none()
                        {
                            bad = Some((row, v.to_string()));
                        }
                    })
                    .map_err(err)?;
                }
            }
            Column::I32(c) => {
                let set = int_field(col, Boxed);
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        if let (Some(i), Some(&v)) = (slot(row), v)
                            && !set(&mut recs[i], i64::from(v))
                            && bad.is_none()
                        {
                            bad = Some((row, v.to_string()));
                        }
                    })
                    .map_err(err)?;
                }
            }
            Column::Bytes(c) => {
                let set = val_field(col, Boxed);
                let (names, addrs) = (&mut self.names, &mut self.addrs);
                for r in wanted {
                    c.read(r.clone(), |row, v| {
                        let Some(i) = slot(row) else { return };
                        let v = v.map(|b| b.data());
                        let val = v.map(|b| match (col, addrs.get(b)) {
                            // Parsed once per distinct text: the reader gives every row's.
                            (Col::Src | Col::Dst, Some(&a)) => Some(Val::Addr(a)),
                            (Col::Src | Col::Dst, None) => {
                                let val = convert(col, b, names);
                                if let Some(Val::Addr(a)) = val {
                                    addrs.insert(b.into(), a);
                                }
                                val
                            }
                            _ => convert(col, b, names),
                        });
                        if let Some(None) = val {
                            bad.get_or_insert((
                                row,
                                format!("{:?}", String::from_utf8_lossy(v.unwrap_or_default())),
                            ));
                        } else if !val
                            .flatten()
                            .map_or(nullable(col), |v| set(&mut recs[i], &v))
                        {
                            bad.get_or_insert((row, "null".to_string()));
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

fn corrupt(path: &Path, column: Col, what: &'static str) -> SegmentError {
    SegmentError::Corrupt {
        path: path.to_path_buf(),
        column: column.name(),
        what,
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
            // group is `width` bytes. Every value is one unaligned 8-byte load and a shift,
            // from the data or, near its end, from a zeroed copy of the group.
            for _ in 0..count {
                if left == 0 {
                    break;
                }
                let mut buf = [0u8; 40];
                let group = match data.get(..width + 8) {
                    Some(_) => data,
                    None => {
                        let group = data.get(..width).unwrap_or(data);
                        buf[..group.len()].copy_from_slice(group);
                        &buf[..]
                    }
                };
                let mut values = [0u32; 8];
                for (i, v) in values.iter_mut().enumerate() {
                    let bit = i * width;
                    let word = u64::from_le_bytes(
                        group[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"),
                    );
                    *v = ((word >> (bit % 8)) & mask) as u32;
                }
                data = &data[width.min(data.len())..];
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

/// Decodes `n` values of the RLE/bit-packing hybrid encoding into `out` (for the writer's
/// tests).
#[cfg(test)]
pub(super) fn rle_decode(data: &[u8], width: usize, n: usize, out: &mut Vec<u32>) -> Option<()> {
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
    fn new(group: &Group, col: Col) -> Result<Self, ParquetError> {
        let descr = group.metadata().column(col.index()).column_descr_ptr();
        let optional = descr.max_def_level() > 0;
        let pages = group.pages(col)?;
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

fn is_optional(group: &Group, col: Col) -> bool {
    group
        .metadata()
        .column(col.index())
        .column_descr()
        .max_def_level()
        > 0
}

/// Whether `decode_bytes_page` (for numbers, `PageCursor`) reads every page of the column
/// chunk: the encodings sekisho writes (dictionary, its plain fallback, RLE levels, delta
/// times). Anything else goes through the column reader.
fn pages_decodable(group: &Group, col: Col) -> bool {
    let numbers = physical(col) != Physical::Bytes;
    if numbers && is_optional(group, col) {
        return false;
    }
    group
        .metadata()
        .column(col.index())
        .encodings()
        .all(|e| match e {
            Encoding::PLAIN
            | Encoding::RLE
            | Encoding::RLE_DICTIONARY
            | Encoding::PLAIN_DICTIONARY => true,
            Encoding::DELTA_BINARY_PACKED => numbers,
            _ => false,
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

/// Whether a byte-array column may be null.
fn nullable(col: Col) -> bool {
    !matches!(col, Col::Event | Col::Verdict | Col::Reason)
}

/// Something done with the code that stores a byte-array column's value in its field
/// (`false` when the column may not hold it), given as a closure so that a loop over rows
/// inlines it rather than matching on the column for each row.
trait ValField {
    type Out;
    fn with<F: Fn(&mut Record, &Val) -> bool + 'static>(self, set: F) -> Self::Out;
}

fn val_field<V: ValField>(col: Col, v: V) -> V::Out {
    match col {
        Col::Event => v.with(|r, x| match x {
            Val::Event(e) => {
                r.event = *e;
                true
            }
            _ => false,
        }),
        Col::Verdict => v.with(|r, x| match x {
            Val::Verdict(x) => {
                r.verdict = *x;
                true
            }
            _ => false,
        }),
        Col::Reason => v.with(|r, x| match x {
            Val::Reason(x) => {
                r.reason = *x;
                true
            }
            _ => false,
        }),
        Col::Close => v.with(|r, x| match x {
            Val::Close(c) => {
                r.close = Some(*c);
                true
            }
            _ => false,
        }),
        Col::Src => v.with(|r, x| match x {
            Val::Addr(a) => {
                r.src = Some(*a);
                true
            }
            _ => false,
        }),
        Col::Dst => v.with(|r, x| match x {
            Val::Addr(a) => {
                r.dst = Some(*a);
                true
            }
            _ => false,
        }),
        Col::RuleName => v.with(|r, x| set_name(&mut r.rule_name, x)),
        Col::Interface => v.with(|r, x| set_name(&mut r.interface, x)),
        Col::SrcAsset => v.with(|r, x| set_name(&mut r.src_asset, x)),
        Col::SrcRole => v.with(|r, x| set_name(&mut r.src_role, x)),
        Col::SrcPeer => v.with(|r, x| set_name(&mut r.src_peer, x)),
        Col::DstAsset => v.with(|r, x| set_name(&mut r.dst_asset, x)),
        Col::DstRole => v.with(|r, x| set_name(&mut r.dst_role, x)),
        Col::DstPeer => v.with(|r, x| set_name(&mut r.dst_peer, x)),
        _ => v.with(|_, _| false),
    }
}

/// The same for a 64-bit (or sign-extended 32-bit) column.
trait IntField {
    type Out;
    fn with<F: Fn(&mut Record, i64) -> bool + 'static>(self, set: F) -> Self::Out;
}

fn int_field<V: IntField>(col: Col, v: V) -> V::Out {
    match col {
        Col::First => v.with(|r, x| {
            r.first_us = x;
            true
        }),
        Col::Last => v.with(|r, x| {
            r.last_us = x;
            true
        }),
        Col::PacketsFwd => v.with(|r, x| {
            r.packets_fwd = x as u64;
            true
        }),
        Col::BytesFwd => v.with(|r, x| {
            r.bytes_fwd = x as u64;
            true
        }),
        Col::PacketsRev => v.with(|r, x| {
            r.packets_rev = x as u64;
            true
        }),
        Col::BytesRev => v.with(|r, x| {
            r.bytes_rev = x as u64;
            true
        }),
        Col::Lost => v.with(|r, x| {
            r.lost = x as u64;
            true
        }),
        // Unsigned 32-bit values are stored as their bit pattern.
        Col::Generation => v.with(|r, x| {
            r.generation = x as u32;
            true
        }),
        Col::Rule => v.with(|r, x| {
            r.rule = x as u32;
            true
        }),
        Col::Proto => v.with(|r, x| u8::try_from(x).map(|x| r.proto = x).is_ok()),
        Col::Sport => v.with(|r, x| u16::try_from(x).map(|x| r.sport = x).is_ok()),
        Col::Dport => v.with(|r, x| u16::try_from(x).map(|x| r.dport = x).is_ok()),
        Col::TcpFlags => v.with(|r, x| u8::try_from(x).map(|x| r.tcp_flags = x).is_ok()),
        _ => v.with(|_, _| false),
    }
}

/// The setter itself, for the column readers.
struct Boxed;

impl ValField for Boxed {
    type Out = Box<dyn Fn(&mut Record, &Val) -> bool>;
    fn with<F: Fn(&mut Record, &Val) -> bool + 'static>(self, set: F) -> Self::Out {
        Box::new(set)
    }
}

impl IntField for Boxed {
    type Out = Box<dyn Fn(&mut Record, i64) -> bool>;
    fn with<F: Fn(&mut Record, i64) -> bool + 'static>(self, set: F) -> Self::Out {
        Box::new(set)
    }
}

#[inline]
fn set_name(field: &mut Option<Arc<str>>, v: &Val) -> bool {
    match v {
        Val::Name(n) => {
            *field = Some(n.clone());
            true
        }
        _ => false,
    }
}

/// What went wrong reading a column's pages, before the path and column are known.
enum Fault {
    Read(ParquetError),
    Corrupt(&'static str),
}

impl From<ParquetError> for Fault {
    fn from(e: ParquetError) -> Fault {
        Fault::Read(e)
    }
}

/// The physical type of a column, as `PageCursor` decodes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Physical {
    Bytes,
    Int32,
    Int64,
}

fn physical(col: Col) -> Physical {
    match col {
        Col::First
        | Col::Last
        | Col::PacketsFwd
        | Col::BytesFwd
        | Col::PacketsRev
        | Col::BytesRev
        | Col::Lost => Physical::Int64,
        Col::Generation | Col::Rule | Col::Proto | Col::Sport | Col::Dport | Col::TcpFlags => {
            Physical::Int32
        }
        _ => Physical::Bytes,
    }
}

/// A data page as far as reading one row's value needs.
enum Decoded {
    /// Dictionary indices, unpacked as they are asked for: the values of the page's
    /// present rows (all rows of a required column).
    Indices {
        page: Page,
        present: Option<Present>,
        indices: Hybrid,
    },
    /// Plain byte arrays (a dictionary that grew too large).
    Plain {
        present: Option<Present>,
        values: PlainValues,
    },
    /// Plain fixed-width numbers of a required column: the page and where they start.
    Fixed { page: Page, at: usize, width: usize },
    /// Numbers decoded in full (delta-encoded pages).
    Wide(Vec<i64>),
    /// One number throughout, by the page index.
    Const(i64),
}

/// Where a data page's definition levels and values are, and how many rows it has.
fn page_layout(page: &Page, optional: bool) -> Option<(usize, Encoding, Range<usize>, usize)> {
    match page {
        Page::DictionaryPage { .. } => None,
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            ..
        } => {
            if !optional {
                Some((*num_values as usize, *encoding, 0..0, 0))
            } else if *def_level_encoding == Encoding::RLE {
                let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
                Some((*num_values as usize, *encoding, 4..4 + len, 4 + len))
            } else {
                None
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
            Some((*num_values as usize, *encoding, start..end, end))
        }
    }
}

/// Decodes what a data page needs before its rows are read: the definition levels, the
/// plain byte arrays, delta-encoded numbers. Returns the page and its number of rows.
fn decode_page(page: Page, optional: bool, physical: Physical) -> Result<(Decoded, usize), Fault> {
    let (n, encoding, levels, at) = page_layout(&page, optional).ok_or(Fault::Corrupt("page"))?;
    let buf = &page.buffer()[..];
    let present = match optional {
        true => {
            let levels = buf.get(levels).ok_or(Fault::Corrupt("page"))?;
            Some(Present::parse(levels, n).ok_or(Fault::Corrupt("levels"))?)
        }
        false => None,
    };
    let count = present.as_ref().map_or(n, Present::count);
    // A page without nulls reads its values by row.
    let present = present.filter(|_| count < n);
    let width = if physical == Physical::Int32 { 4 } else { 8 };
    let decoded = match (encoding, physical) {
        (Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY, _) => {
            // No values, no bit width.
            let (width, from) = match buf.get(at) {
                Some(&w) => (usize::from(w), at + 1),
                None if count == 0 => (0, at),
                None => return Err(Fault::Corrupt("page")),
            };
            let indices = Hybrid::new(from..buf.len(), width).ok_or(Fault::Corrupt("page"))?;
            Decoded::Indices {
                page,
                present,
                indices,
            }
        }
        (Encoding::PLAIN, Physical::Bytes) => Decoded::Plain {
            values: PlainValues::parse(page, at, count).ok_or(Fault::Corrupt("values"))?,
            present,
        },
        (Encoding::PLAIN, _) if !optional => {
            if buf.len() < at + n * width {
                return Err(Fault::Corrupt("values"));
            }
            Decoded::Fixed { page, at, width }
        }
        (Encoding::DELTA_BINARY_PACKED, Physical::Int32 | Physical::Int64) if !optional => {
            let mut values = Vec::new();
            delta_decode(&buf[at.min(buf.len())..], n, &mut values)
                .ok_or(Fault::Corrupt("values"))?;
            Decoded::Wide(values)
        }
        _ => return Err(Fault::Corrupt("page encoding")),
    };
    Ok((decoded, n))
}

/// One column of one row group read forward a page at a time: a page is decoded whole when
/// a wanted row falls in it, a page without one is skipped undecompressed, and each
/// dictionary entry is converted once.
struct PageCursor {
    col: Col,
    physical: Physical,
    optional: bool,
    pages: Box<dyn PageReader>,
    /// The dictionary of a byte-array column, converted; the text where it is not a valid
    /// value.
    vals: Vec<Result<Val, String>>,
    /// The dictionary of a number column.
    ints: Vec<i64>,
    page: Option<Decoded>,
    /// The rows of `page`.
    start: usize,
    end: usize,
    /// Data pages passed so far, and the value of each page that has one throughout, by
    /// the page index.
    data_pages: usize,
    constants: Vec<Option<i64>>,
}

impl PageCursor {
    fn new(group: &Group, col: Col) -> Result<PageCursor, ParquetError> {
        // A page of numbers whose smallest and largest are one value, without nulls, is that
        // value throughout (`lost`, outside gaps; `generation`): it is not read at all.
        let constant = |min: Option<i64>, max: Option<i64>, nulls: Option<i64>| {
            min.filter(|_| min == max && nulls == Some(0))
        };
        let constants = match group.index.column_index(col.index()) {
            Some(ColumnIndexMetaData::INT64(index)) => (0..index.num_pages() as usize)
                .map(|i| {
                    let (min, max) = (index.min_value(i), index.max_value(i));
                    constant(min.copied(), max.copied(), index.null_count(i))
                })
                .collect(),
            Some(ColumnIndexMetaData::INT32(index)) => (0..index.num_pages() as usize)
                .map(|i| {
                    let (min, max) = (index.min_value(i), index.max_value(i));
                    constant(
                        min.map(|&v| i64::from(v)),
                        max.map(|&v| i64::from(v)),
                        index.null_count(i),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(PageCursor {
            col,
            physical: physical(col),
            optional: is_optional(group, col),
            pages: group.pages(col)?,
            vals: Vec::new(),
            ints: Vec::new(),
            page: None,
            start: 0,
            end: 0,
            data_pages: 0,
            constants,
        })
    }

    /// Makes `page` the one that holds `row` (at or after the rows asked for before).
    fn seek(&mut self, row: usize, names: &mut Interner) -> Result<(), Fault> {
        while row >= self.end {
            let next = self.pages.peek_next_page()?.ok_or(Fault::Corrupt("rows"))?;
            if !next.is_dict
                && let Some(n) = next.num_rows
            {
                let page = self.data_pages;
                if row >= self.end + n {
                    self.pages.skip_next_page()?;
                    self.data_pages += 1;
                    self.end += n;
                    continue;
                }
                if let Some(&Some(v)) = self.constants.get(page) {
                    self.pages.skip_next_page()?;
                    self.data_pages += 1;
                    self.start = self.end;
                    self.end += n;
                    self.page = Some(Decoded::Const(v));
                    continue;
                }
            }
            let page = self.pages.get_next_page()?.ok_or(Fault::Corrupt("rows"))?;
            if let Page::DictionaryPage { num_values, .. } = &page {
                let count = *num_values as usize;
                match self.physical {
                    Physical::Bytes => {
                        let entries = PlainValues::parse(page, 0, count)
                            .ok_or(Fault::Corrupt("dictionary"))?;
                        let col = self.col;
                        self.vals = entries
                            .iter()
                            .map(|v| {
                                convert(col, v, names)
                                    .ok_or_else(|| String::from_utf8_lossy(v).into_owned())
                            })
                            .collect();
                    }
                    Physical::Int32 | Physical::Int64 => {
                        let width = if self.physical == Physical::Int32 {
                            4
                        } else {
                            8
                        };
                        let buf = page
                            .buffer()
                            .get(..count * width)
                            .ok_or(Fault::Corrupt("dictionary"))?;
                        self.ints = buf.chunks_exact(width).map(int_le).collect();
                    }
                }
                continue;
            }
            let (decoded, rows) = decode_page(page, self.optional, self.physical)?;
            self.data_pages += 1;
            self.start = self.end;
            self.end += rows;
            self.page = Some(decoded);
        }
        Ok(())
    }

    /// Stores the value of each row of `rows` (ascending, at or after the rows asked for
    /// before) in the same place of `recs`. Returns the first row whose value its field
    /// cannot hold, with the value.
    fn fill(
        &mut self,
        rows: &[u32],
        recs: &mut [Record],
        names: &mut Interner,
    ) -> Result<Option<(usize, String)>, Fault> {
        let mut bad = None;
        let mut i = 0;
        while i < rows.len() {
            self.seek(rows[i] as usize, names)?;
            let n = i + rows[i..].partition_point(|&r| (r as usize) < self.end);
            let Some(page) = &mut self.page else {
                return Err(Fault::Corrupt("rows"));
            };
            let fill = Fill {
                page,
                start: self.start,
                rows: &rows[i..n],
                recs: &mut recs[i..n],
                bad: &mut bad,
            };
            match self.physical {
                Physical::Bytes => val_field(
                    self.col,
                    FillVals {
                        fill,
                        col: self.col,
                        dict: &self.vals,
                        names: &mut *names,
                    },
                )?,
                Physical::Int32 | Physical::Int64 => int_field(
                    self.col,
                    FillInts {
                        fill,
                        dict: &self.ints,
                    },
                )?,
            }
            i = n;
        }
        Ok(bad)
    }
}

/// The rows of one page to store in `recs`, and the first value that could not be.
struct Fill<'a> {
    page: &'a mut Decoded,
    start: usize,
    rows: &'a [u32],
    recs: &'a mut [Record],
    bad: &'a mut Option<(usize, String)>,
}

struct FillVals<'a> {
    fill: Fill<'a>,
    col: Col,
    dict: &'a [Result<Val, String>],
    names: &'a mut Interner,
}

impl ValField for FillVals<'_> {
    type Out = Result<(), Fault>;

    fn with<F: Fn(&mut Record, &Val) -> bool>(self, set: F) -> Result<(), Fault> {
        let FillVals {
            fill,
            col,
            dict,
            names,
        } = self;
        let Fill {
            page,
            start,
            rows,
            recs,
            bad,
        } = fill;
        let nullable = nullable(col);
        match page {
            Decoded::Indices {
                page,
                present,
                indices,
            } => {
                let buf = &page.buffer()[..];
                for (&row, rec) in rows.iter().zip(recs) {
                    let k = row as usize - start;
                    let Some(at) = present.as_ref().map_or(Some(k), |p| p.rank(k)) else {
                        if !nullable {
                            bad.get_or_insert((row as usize, "null".to_string()));
                        }
                        continue;
                    };
                    let index = indices.get(buf, at).ok_or(Fault::Corrupt("page"))?;
                    match dict.get(index as usize) {
                        Some(Ok(v)) if set(rec, v) => {}
                        Some(Ok(_)) => {
                            bad.get_or_insert((row as usize, "null".to_string()));
                        }
                        Some(Err(text)) => {
                            bad.get_or_insert((row as usize, format!("{text:?}")));
                        }
                        None => return Err(Fault::Corrupt("dictionary index")),
                    }
                }
            }
            Decoded::Plain { present, values } => {
                for (&row, rec) in rows.iter().zip(recs) {
                    let k = row as usize - start;
                    let Some(at) = present.as_ref().map_or(Some(k), |p| p.rank(k)) else {
                        if !nullable {
                            bad.get_or_insert((row as usize, "null".to_string()));
                        }
                        continue;
                    };
                    let v = values.get(at).ok_or(Fault::Corrupt("values"))?;
                    match convert(col, v, names) {
                        Some(v) if set(rec, &v) => {}
                        Some(_) => {
                            bad.get_or_insert((row as usize, "null".to_string()));
                        }
                        None => {
                            let text = format!("{:?}", String::from_utf8_lossy(v));
                            bad.get_or_insert((row as usize, text));
                        }
                    }
                }
            }
            _ => return Err(Fault::Corrupt("page encoding")),
        }
        Ok(())
    }
}

struct FillInts<'a> {
    fill: Fill<'a>,
    dict: &'a [i64],
}

impl IntField for FillInts<'_> {
    type Out = Result<(), Fault>;

    fn with<F: Fn(&mut Record, i64) -> bool>(self, set: F) -> Result<(), Fault> {
        let FillInts { fill, dict } = self;
        let Fill {
            page,
            start,
            rows,
            recs,
            bad,
        } = fill;
        let mut put = |row: u32, rec: &mut Record, v: i64| {
            if !set(rec, v) {
                bad.get_or_insert((row as usize, v.to_string()));
            }
        };
        match page {
            Decoded::Fixed { page, at, width: 8 } => {
                let buf = &page.buffer()[*at..];
                for (&row, rec) in rows.iter().zip(recs) {
                    let k = (row as usize - start) * 8;
                    let v = i64::from_le_bytes(buf[k..k + 8].try_into().expect("8 bytes"));
                    put(row, rec, v);
                }
            }
            Decoded::Fixed { page, at, .. } => {
                let buf = &page.buffer()[*at..];
                for (&row, rec) in rows.iter().zip(recs) {
                    let k = (row as usize - start) * 4;
                    let v = i32::from_le_bytes(buf[k..k + 4].try_into().expect("4 bytes"));
                    put(row, rec, i64::from(v));
                }
            }
            Decoded::Wide(values) => {
                for (&row, rec) in rows.iter().zip(recs) {
                    put(row, rec, values[row as usize - start]);
                }
            }
            Decoded::Const(v) => {
                for (&row, rec) in rows.iter().zip(recs) {
                    put(row, rec, *v);
                }
            }
            Decoded::Indices { page, indices, .. } => {
                let buf = &page.buffer()[..];
                for (&row, rec) in rows.iter().zip(recs) {
                    let index = indices
                        .get(buf, row as usize - start)
                        .ok_or(Fault::Corrupt("page"))?;
                    let v = *dict
                        .get(index as usize)
                        .ok_or(Fault::Corrupt("dictionary index"))?;
                    put(row, rec, v);
                }
            }
            Decoded::Plain { .. } => return Err(Fault::Corrupt("page encoding")),
        }
        Ok(())
    }
}

/// A little-endian 32-bit (sign-extended) or 64-bit number.
fn int_le(b: &[u8]) -> i64 {
    match b.len() {
        4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[..8]);
            i64::from_le_bytes(w)
        }
    }
}

/// An unsigned LEB128 number.
fn uleb(data: &mut &[u8]) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn zigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Decodes `n` values of Parquet's DELTA_BINARY_PACKED encoding into `out`: blocks of
/// differences, each block's miniblocks bit-packed above the block's smallest difference.
fn delta_decode(mut data: &[u8], n: usize, out: &mut Vec<i64>) -> Option<()> {
    let block = usize::try_from(uleb(&mut data)?).ok()?;
    let minis = usize::try_from(uleb(&mut data)?).ok()?;
    let total = usize::try_from(uleb(&mut data)?).ok()?;
    let mut value = zigzag(uleb(&mut data)?);
    if total != n || minis == 0 || block % minis != 0 || (block / minis) % 8 != 0 {
        return None;
    }
    let per_mini = block / minis;
    out.clear();
    out.reserve(n);
    if n == 0 {
        return Some(());
    }
    out.push(value);
    while out.len() < n {
        let min = zigzag(uleb(&mut data)?);
        let (widths, rest) = data.split_at_checked(minis)?;
        data = rest;
        for &width in widths {
            if out.len() >= n {
                break;
            }
            let width = usize::from(width);
            if width > 64 {
                return None;
            }
            // Every miniblock that holds a value is whole, padded if need be.
            let (body, rest) = data.split_at_checked(per_mini * width / 8)?;
            data = rest;
            let take = per_mini.min(n - out.len());
            unpack(body, width, take, |d| {
                value = value.wrapping_add(min.wrapping_add(d as i64));
                out.push(value);
            });
        }
    }
    Some(())
}

/// Calls `f` with the first `n` values bit-packed at `width` bits (at most 64) in `data`,
/// least significant bits first: groups of 8 values, each `width` bytes.
fn unpack(data: &[u8], width: usize, n: usize, mut f: impl FnMut(u64)) {
    if width == 0 {
        (0..n).for_each(|_| f(0));
        return;
    }
    let mask = u64::MAX >> (64 - width);
    let mut left = n;
    for group in data.chunks(width) {
        if left == 0 {
            break;
        }
        // Copied into a zeroed buffer, so that every value is one unaligned load and a
        // shift: 8 bytes up to 57 bits, 16 above.
        let mut buf = [0u8; 80];
        buf[..group.len()].copy_from_slice(group);
        let take = left.min(8);
        for i in 0..take {
            let bit = i * width;
            let at = bit / 8;
            let v = if width <= 56 {
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[at..at + 8]);
                u64::from_le_bytes(w) >> (bit % 8)
            } else {
                let mut w = [0u8; 16];
                w.copy_from_slice(&buf[at..at + 16]);
                (u128::from_le_bytes(w) >> (bit % 8)) as u64
            };
            f(v & mask);
        }
        left -= take;
    }
}

/// How `materialize` reads a column.
enum Column {
    /// Page by page, decoded here.
    Pages(PageCursor),
    /// An encoding `PageCursor` does not read: through the column reader.
    I32(Cursor<Int32Type>),
    I64(Cursor<Int64Type>),
    Bytes(Cursor<ByteArrayType>),
}

impl Column {
    fn new(group: &Group, col: Col) -> Result<Column, ParquetError> {
        if pages_decodable(group, col) {
            return Ok(Column::Pages(PageCursor::new(group, col)?));
        }
        Ok(match physical(col) {
            Physical::Int64 => Column::I64(Cursor::new(group, col)?),
            Physical::Int32 => Column::I32(Cursor::new(group, col)?),
            Physical::Bytes => Column::Bytes(Cursor::new(group, col)?),
        })
    }
}

/// The definition levels of a page (1: a value, 0: null) as a bitmap, with the number of
/// values before each word: whether a row has a value, and which, in constant time.
struct Present {
    words: Vec<u64>,
    before: Vec<u32>,
}

impl Present {
    /// The levels of `n` rows, in the RLE/bit-packing hybrid encoding at one bit.
    fn parse(levels: &[u8], n: usize) -> Option<Present> {
        let mut words = vec![0u64; n.div_ceil(64)];
        let mut pos = 0;
        hybrid_runs(levels, 1, n, |run| {
            match run {
                RawRun::Repeat(1, count) => set_bits(&mut words, pos, pos + count),
                RawRun::Repeat(_, _) => {}
                // A bit-packed run of levels is already a bitmap: copied 64 rows at a time.
                RawRun::Packed(bytes, count) => {
                    let bytes = &bytes[..count.div_ceil(8).min(bytes.len())];
                    for (k, chunk) in bytes.chunks(8).enumerate() {
                        let word = match chunk.try_into() {
                            Ok(word) => word,
                            Err(_) => {
                                let mut word = [0u8; 8];
                                word[..chunk.len()].copy_from_slice(chunk);
                                word
                            }
                        };
                        let used = (count - 64 * k).min(64);
                        let bits = u64::from_le_bytes(word) & (u64::MAX >> (64 - used));
                        let at = pos + 64 * k;
                        let (w, shift) = (at / 64, at % 64);
                        if let Some(word) = words.get_mut(w) {
                            *word |= bits << shift;
                        }
                        if shift > 0
                            && let Some(word) = words.get_mut(w + 1)
                        {
                            *word |= bits >> (64 - shift);
                        }
                    }
                }
            }
            pos += run.len();
        })?;
        // Padding after the last row is no value.
        if !n.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last &= (1u64 << (n % 64)) - 1;
        }
        let mut before = Vec::with_capacity(words.len());
        let mut count = 0u32;
        for w in &words {
            before.push(count);
            count += w.count_ones();
        }
        Some(Present { words, before })
    }

    /// The index among the page's values of row `i`'s, `None` for a null.
    fn rank(&self, i: usize) -> Option<usize> {
        let (w, bit) = (i / 64, i % 64);
        let word = *self.words.get(w)?;
        if (word >> bit) & 1 == 0 {
            return None;
        }
        let below = word & ((1u64 << bit) - 1);
        Some(self.before[w] as usize + below.count_ones() as usize)
    }

    fn count(&self) -> usize {
        match (self.before.last(), self.words.last()) {
            (Some(&b), Some(w)) => b as usize + w.count_ones() as usize,
            _ => 0,
        }
    }
}

fn set_bits(words: &mut [u64], from: usize, to: usize) {
    let to = to.min(words.len() * 64);
    let mut bit = from;
    while bit < to {
        let (w, shift) = (bit / 64, bit % 64);
        let n = (64 - shift).min(to - bit);
        words[w] |= (u64::MAX >> (64 - n)) << shift;
        bit += n;
    }
}

/// A run of Parquet's RLE/bit-packing hybrid encoding, as stored.
#[derive(Clone, Copy)]
enum RawRun<'d> {
    /// One value, this many times.
    Repeat(u32, usize),
    /// Bit-packed values (groups of 8 in `width` bytes each), this many of them used.
    Packed(&'d [u8], usize),
}

impl RawRun<'_> {
    fn len(&self) -> usize {
        match *self {
            RawRun::Repeat(_, n) | RawRun::Packed(_, n) => n,
        }
    }
}

/// Reads the header and body of the run at the start of `data`, of at most `left` values;
/// returns it and what follows. A bit-packed body cut short is taken as it is (the values
/// past its end read as zeros).
fn raw_run(data: &[u8], width: usize, left: usize) -> Option<(RawRun<'_>, &[u8])> {
    let mut data = data;
    let header = uleb(&mut data)?;
    let count = usize::try_from(header >> 1).ok()?;
    if header & 1 == 1 {
        let bytes = count.checked_mul(width)?;
        let (body, rest) = data.split_at(bytes.min(data.len()));
        Some((RawRun::Packed(body, count.checked_mul(8)?.min(left)), rest))
    } else {
        let (value, rest) = data.split_at_checked(width.div_ceil(8))?;
        let mut word = [0u8; 4];
        word[..value.len()].copy_from_slice(value);
        Some((
            RawRun::Repeat(u32::from_le_bytes(word), count.min(left)),
            rest,
        ))
    }
}

/// Calls `f` with the runs of the first `n` values of the RLE/bit-packing hybrid encoding
/// at `width` bits; `None` if the data ends early.
fn hybrid_runs(mut data: &[u8], width: usize, n: usize, mut f: impl FnMut(RawRun)) -> Option<()> {
    if width > 32 {
        return None;
    }
    let mut left = n;
    while left > 0 {
        let (run, rest) = raw_run(data, width, left)?;
        if run.len() > 0 {
            f(run);
        }
        left -= run.len();
        data = rest;
    }
    Some(())
}

/// The value at one position of an RLE/bit-packing hybrid encoded sequence, positions asked
/// in ascending order: the runs before are passed over by their headers, and only the
/// values asked for are unpacked. Holds offsets into the page it reads, which each call
/// passes.
struct Hybrid {
    width: usize,
    mask: u64,
    /// The encoded values: `at` is where the next run starts.
    at: usize,
    end: usize,
    /// The current run: its positions, and its value or where its bit-packed values start.
    start: usize,
    stop: usize,
    repeat: bool,
    value: u32,
    packed: usize,
}

impl Hybrid {
    fn new(data: Range<usize>, width: usize) -> Option<Hybrid> {
        (width <= 32).then_some(Hybrid {
            width,
            mask: (1u64 << width) - 1,
            at: data.start,
            end: data.end,
            start: 0,
            stop: 0,
            repeat: true,
            value: 0,
            packed: 0,
        })
    }

    /// The value at `pos`, at or after the positions asked for before; `None` past the end.
    #[inline]
    fn get(&mut self, buf: &[u8], pos: usize) -> Option<u32> {
        if pos >= self.stop {
            self.advance(buf, pos)?;
        }
        if self.repeat {
            return Some(self.value);
        }
        let bit = (pos - self.start) * self.width;
        let from = self.packed + bit / 8;
        // Bytes past the run are masked off; a body cut short at the end reads as zeros.
        let word = match buf.get(from..from + 8) {
            Some(b) if from + 8 <= self.end => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            _ => {
                let mut word = [0u8; 8];
                let b = buf.get(from.min(self.end)..self.end)?;
                word[..b.len()].copy_from_slice(b);
                u64::from_le_bytes(word)
            }
        };
        Some(((word >> (bit % 8)) & self.mask) as u32)
    }

    /// Moves to the run that holds `pos`.
    fn advance(&mut self, buf: &[u8], pos: usize) -> Option<()> {
        while pos >= self.stop {
            let data = buf.get(self.at..self.end)?;
            let (run, rest) = raw_run(data, self.width, usize::MAX)?;
            let at = self.end - rest.len();
            match run {
                RawRun::Repeat(v, _) => (self.repeat, self.value) = (true, v),
                RawRun::Packed(body, _) => (self.repeat, self.packed) = (false, at - body.len()),
            }
            self.at = at;
            self.start = self.stop;
            self.stop += run.len();
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use parquet::basic::PageType;
    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::WriterPropertiesBuilder;
    use parquet::schema::types::ColumnPath;

    use super::*;
    use crate::testutil::TempDir;

    /// Writes `recs` as a segment through parquet-rs's own column writers, as sekisho did
    /// before it encoded pages itself (and as other tools may), with `props`.
    fn write_with(path: &Path, recs: &[Record], props: WriterPropertiesBuilder) {
        let props = props
            .set_key_value_metadata(Some(vec![KeyValue::new(
                SCHEMA_KEY.to_string(),
                SCHEMA_VERSION.to_string(),
            )]))
            .build();
        let file = File::create(path).expect("create");
        let mut w = SerializedFileWriter::new(file, schema(), Arc::new(props)).expect("writer");
        for group in recs.chunks(3_000) {
            let mut g = w.next_row_group().expect("row group");
            for col in Col::ALL {
                let mut c = g.next_column().expect("column").expect("a column");
                match physical(col) {
                    Physical::Int64 => {
                        let v: Vec<i64> = group
                            .iter()
                            .map(|r| match col {
                                Col::First => r.first_us,
                                Col::Last => r.last_us,
                                Col::PacketsFwd => r.packets_fwd as i64,
                                Col::BytesFwd => r.bytes_fwd as i64,
                                Col::PacketsRev => r.packets_rev as i64,
                                Col::BytesRev => r.bytes_rev as i64,
                                _ => r.lost as i64,
                            })
                            .collect();
                        c.typed::<Int64Type>().write_batch(&v, None, None)
                    }
                    Physical::Int32 => {
                        let v: Vec<i32> = group
                            .iter()
                            .map(|r| match col {
                                Col::Generation => r.generation as i32,
                                Col::Rule => r.rule as i32,
                                Col::Proto => i32::from(r.proto),
                                Col::Sport => i32::from(r.sport),
                                Col::Dport => i32::from(r.dport),
                                _ => i32::from(r.tcp_flags),
                            })
                            .collect();
                        c.typed::<Int32Type>().write_batch(&v, None, None)
                    }
                    Physical::Bytes => {
                        let text: Vec<Option<String>> = group
                            .iter()
                            .map(|r| match col {
                                Col::Event => Some(r.event.name().to_string()),
                                Col::Verdict => Some(r.verdict.name().to_string()),
                                Col::Reason => Some(reason_text(r.reason)),
                                Col::Src => r.src.map(|a| a.to_string()),
                                Col::Dst => r.dst.map(|a| a.to_string()),
                                Col::Close => r.close.map(|c| c.name().to_string()),
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
                                    name.as_deref().map(str::to_string)
                                }
                            })
                            .collect();
                        let values: Vec<ByteArray> = text
                            .iter()
                            .flatten()
                            .map(|s| ByteArray::from(s.as_str()))
                            .collect();
                        let defs: Vec<i16> = text.iter().map(|t| i16::from(t.is_some())).collect();
                        let optional = !matches!(col, Col::Event | Col::Verdict | Col::Reason);
                        c.typed::<ByteArrayType>().write_batch(
                            &values,
                            optional.then_some(&defs[..]),
                            None,
                        )
                    }
                }
                .expect("write column");
                c.close().expect("close column");
            }
            g.close().expect("close row group");
        }
        w.close().expect("close");
    }

    /// Every number column delta-encoded.
    fn delta(mut b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
        for col in Col::ALL {
            if physical(col) != Physical::Bytes {
                b = b
                    .set_column_dictionary_enabled(ColumnPath::from(col.name()), false)
                    .set_column_encoding(
                        ColumnPath::from(col.name()),
                        Encoding::DELTA_BINARY_PACKED,
                    );
            }
        }
        b
    }

    fn records() -> Vec<Record> {
        let mut recs = synthetic(10_000, 17);
        let t = recs[4_000].first_us;
        recs.push(Record::gap(t, t + 5_000_000, 3));
        recs.sort_by_key(|r| (r.first_us, r.last_us));
        recs
    }

    /// Segments whose pages parquet-rs encoded read back whole and filtered: dictionary
    /// pages of version 1 and 2, dictionaries that overflow into plain pages, delta-encoded
    /// numbers, and encodings the page decoder leaves to the column reader.
    #[test]
    fn pages_encoded_by_parquet_rs_read_back() {
        let tmp = TempDir::new("segment-parquet-rs");
        let recs = records();
        let base = || {
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_statistics_enabled(EnabledStatistics::Page)
                .set_data_page_row_count_limit(700)
                .set_write_batch_size(100)
        };
        let variants = [
            (
                "dictionaries, version 1 pages, some overflowing",
                base()
                    .set_writer_version(WriterVersion::PARQUET_1_0)
                    .set_dictionary_page_size_limit(400),
                (PageType::DATA_PAGE, Encoding::PLAIN),
            ),
            (
                "version 2 pages, delta numbers",
                delta(base().set_writer_version(WriterVersion::PARQUET_2_0)),
                (PageType::DATA_PAGE_V2, Encoding::RLE_DICTIONARY),
            ),
            (
                "plain numbers and strings, no dictionaries",
                base()
                    .set_writer_version(WriterVersion::PARQUET_1_0)
                    .set_dictionary_enabled(false),
                (PageType::DATA_PAGE, Encoding::PLAIN),
            ),
            (
                "strings delta-encoded: the column reader",
                delta(
                    base()
                        .set_writer_version(WriterVersion::PARQUET_1_0)
                        .set_dictionary_enabled(false)
                        .set_encoding(Encoding::DELTA_LENGTH_BYTE_ARRAY),
                ),
                (PageType::DATA_PAGE, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            ),
        ];
        let mid = recs[recs.len() / 2].first_us;
        let filters = [
            Filter::default(),
            Filter {
                asset: Some("cs-02".into()),
                since_us: Some(mid),
                ..Filter::default()
            },
            Filter {
                asset: Some("term-007".into()),
                ..Filter::default()
            },
            Filter {
                addr: Some("172.16.0.0/24".parse().expect("net")),
                port: Some(443),
                until_us: Some(mid),
                ..Filter::default()
            },
        ];
        for (what, props, kind) in variants {
            let path = tmp.join("s.parquet");
            write_with(&path, &recs, props);
            // The page kind each variant is there for is in the file.
            let reader = open(&path).expect("open");
            let group = reader.get_row_group(0).expect("row group");
            let mut pages = group
                .get_column_page_reader(Col::SrcAsset.index())
                .expect("pages");
            let mut kinds = Vec::new();
            while let Some(page) = pages.get_next_page().expect("page") {
                kinds.push((page.page_type(), page.encoding()));
            }
            assert!(kinds.contains(&kind), "{what}: {kinds:?}");
            assert_eq!(read_all(&path).expect("read"), recs, "{what}");
            for f in &filters {
                let want: Vec<&Record> = recs.iter().filter(|r| f.matches(r)).collect();
                let mut got = Vec::new();
                read(&path, f, &mut |r| {
                    got.push(r);
                    true
                })
                .expect("read");
                assert_eq!(got.iter().collect::<Vec<_>>(), want, "{what}: {f:?}");
            }
        }
    }

    #[test]
    fn delta_pages_decode_at_every_width() {
        // Differences from 0 to 2^63 in each miniblock; the writer's encoder is in write.rs,
        // parquet-rs's is checked above.
        let values: Vec<i64> = (0..1_000i64)
            .map(|i| match i % 7 {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => 0,
                _ => i.wrapping_mul(0x1e37_79b9_7f4a_7c15) >> (i % 64),
            })
            .collect();
        let tmp = TempDir::new("segment-delta");
        let path = tmp.join("s.parquet");
        let recs: Vec<Record> = values
            .iter()
            .map(|&v| Record {
                first_us: v,
                last_us: v,
                packets_fwd: v as u64,
                ..Record::default()
            })
            .collect();
        write_with(&path, &recs, delta(WriterProperties::builder()));
        assert_eq!(read_all(&path).expect("read"), recs);
    }

    /// The RLE/bit-packing hybrid encoding: runs of 8 or more equal values repeated, the
    /// rest bit-packed a group of 8 at a time.
    fn hybrid_encode(values: &[u32], width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let uleb = |out: &mut Vec<u8>, mut v: usize| {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        };
        let mut i = 0;
        while i < values.len() {
            let run = values[i..].iter().take_while(|&&v| v == values[i]).count();
            if run >= 8 {
                uleb(&mut out, run << 1);
                out.extend_from_slice(&values[i].to_le_bytes()[..width.div_ceil(8)]);
                i += run;
                continue;
            }
            uleb(&mut out, (1 << 1) | 1);
            let mut acc = 0u128;
            for (k, &v) in values[i..].iter().take(8).enumerate() {
                acc |= u128::from(v) << (k * width);
            }
            out.extend_from_slice(&acc.to_le_bytes()[..width]);
            i += 8;
        }
        out
    }

    #[test]
    fn levels_and_indices_read_forward() {
        // Runs of nulls and values of every length around the group of 8 and the word of 64.
        let mut defs = Vec::new();
        for len in [1usize, 7, 8, 9, 63, 64, 65, 130, 3] {
            defs.extend(std::iter::repeat_n(1u32, len));
            defs.extend(std::iter::repeat_n(0u32, len % 5));
            defs.extend((0..len).map(|i| u32::from(i % 3 == 0)));
        }
        let buf = hybrid_encode(&defs, 1);
        let present = Present::parse(&buf, defs.len()).expect("levels");
        let mut rank = 0;
        for (i, &d) in defs.iter().enumerate() {
            assert_eq!(present.rank(i), (d == 1).then_some(rank), "row {i}");
            rank += d as usize;
        }
        assert_eq!(present.count(), rank);

        let values: Vec<u32> = (0..2_000u32)
            .map(|i| if i % 300 < 40 { 5 } else { i * 7 % 1_000 })
            .collect();
        let mut buf = vec![0u8; 3];
        buf.extend(hybrid_encode(&values, 10));
        let mut h = Hybrid::new(3..buf.len(), 10).expect("width");
        for (i, &v) in values.iter().enumerate().step_by(3) {
            assert_eq!(h.get(&buf, i), Some(v), "value {i}");
        }
        assert_eq!(h.get(&buf, values.len() + 8), None);
    }
}
