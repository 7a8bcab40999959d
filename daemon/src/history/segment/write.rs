//! Writing segments.

use super::*;

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

pub(super) fn write_grouped(
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
