//! Reading segments: pruning by statistics, filtering on the page index and dictionaries,
//! decoding only the rows that match.

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
pub(super) fn open(path: &Path) -> Result<SerializedFileReader<File>, SegmentError> {
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
