//! The traffic history read by an ordinary tool: DuckDB (from PyPI, installed here when
//! missing) reads a sealed segment and a Parquet export and agrees with `history query` on
//! the column types, on counts by verdict, on one asset over a time range, and on the time
//! of the first record; and decodes every column of sekisho's own page encoding to the
//! values written, pruning by its statistics exactly. No root needed.
//!
//! Run with `cargo test -p sekisho-testbed --test history_duckdb`.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use sekisho::history::Record;
use sekisho::history::manifest;
use sekisho::history::manifest::NewEntry;
use sekisho::history::query;
use sekisho::history::query::ExportFormat;
use sekisho::history::query::Filter;
use sekisho::history::segment;

const HOUR: i64 = 3_600_000_000;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sekisho-duckdb-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `import duckdb` work, installing DuckDB from PyPI if needed.
fn ensure_duckdb() {
    let import = || {
        Command::new("python3")
            .args(["-c", "import duckdb"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if import() {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "duckdb"])
        .status()
        .expect("python3 runs");
    assert!(
        status.success() && import(),
        "cannot install DuckDB from PyPI"
    );
}

/// Runs each SQL statement in DuckDB and returns its rows, every value as text.
fn duckdb(queries: &[String]) -> Vec<Vec<Vec<String>>> {
    const SCRIPT: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
out = []
for q in json.load(sys.stdin):
    out.append([[None if v is None else str(v) for v in row] for row in con.execute(q).fetchall()])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    serde_json::to_writer(child.stdin.take().expect("stdin"), queries).expect("queries");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(out.status.success(), "DuckDB failed on {queries:#?}");
    let rows: Vec<Vec<Vec<Option<String>>>> =
        serde_json::from_slice(&out.stdout).expect("DuckDB's answer is JSON");
    rows.into_iter()
        .map(|q| {
            q.into_iter()
                .map(|row| row.into_iter().map(|v| v.unwrap_or_default()).collect())
                .collect()
        })
        .collect()
}

/// A history of two days of synthetic traffic from `start` sealed every six hours, with a
/// 90-second gap 20 hours in, as the store seals it. Returns the segment paths.
fn history(root: &Path, start: i64) -> Vec<PathBuf> {
    manifest::init(root).expect("manifest");
    let mut recs = segment::synthetic(80_000, 21);
    // Spread over two days, durations as they are.
    let (t0, t1) = (recs[0].first_us, recs[recs.len() - 1].first_us);
    for r in &mut recs {
        let d = r.last_us - r.first_us;
        r.first_us =
            start + ((r.first_us - t0) as f64 / (t1 - t0) as f64 * (47 * HOUR) as f64) as i64;
        r.last_us = r.first_us + d;
    }
    let t = start + 20 * HOUR;
    recs.push(Record::gap(t, t + 90_000_000, 17));
    let mut segments: BTreeMap<i64, Vec<Record>> = BTreeMap::new();
    for r in recs {
        segments
            .entry((r.last_us - start) / (6 * HOUR))
            .or_default()
            .push(r);
    }
    let mut paths = Vec::new();
    for (i, mut recs) in segments {
        let rel = format!("segments/2026/04/01/{i:02}.parquet");
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("segment directory");
        let info = segment::write(&path, &mut recs).expect("seal");
        let (sha256, bytes) = manifest::file_sha256(&path).expect("hash");
        manifest::append(
            root,
            NewEntry::sealed(rel, &info, sha256, bytes, info.max_last_us),
        )
        .expect("manifest entry");
        paths.push(path);
    }
    paths
}

fn by_verdict(records: &[Record]) -> Vec<Vec<String>> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records {
        *counts.entry(r.verdict.name()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(v, n)| vec![v.to_string(), n.to_string()])
        .collect()
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

#[test]
fn duckdb_reads_segments_and_exports_as_history_query_does() {
    ensure_duckdb();
    let tmp = TempDir::new("history");
    let root = tmp.0.join("history");
    std::fs::create_dir_all(&root).expect("history root");
    // 2026-04-01T00:00:00+09:00
    let start = 1_774_969_200_000_000;
    let segments = history(&root, start);
    let one = &segments[2];
    let sealed = segment::read_all(one).expect("read the segment");

    let mut all = Vec::new();
    query::query(&root, &Filter::default(), &mut |r| {
        all.push(r);
        true
    })
    .expect("query");
    assert!(all.len() > 80_000);
    let since = start + 16 * HOUR;
    let f = Filter {
        since_us: Some(since),
        until_us: Some(since + 12 * HOUR),
        asset: Some("term-042".into()),
        ..Filter::default()
    };
    let mut asset = Vec::new();
    let stats = query::query(&root, &f, &mut |r| {
        asset.push(r);
        true
    })
    .expect("query");
    assert!(asset.len() > 10, "{stats:?}");
    assert!(stats.segments_read < stats.segments_total, "{stats:?}");
    let export = tmp.0.join("export.parquet");
    let exported = query::export(&root, &f, ExportFormat::Parquet, &export).expect("export");
    assert_eq!(exported.records_matched, asset.len() as u64);

    let files = segments
        .iter()
        .map(|p| quoted(p))
        .collect::<Vec<_>>()
        .join(",");
    let where_asset = format!(
        "(src_asset = 'term-042' OR dst_asset = 'term-042' OR event = 'gap') \
         AND epoch_us(\"last\") >= {} AND epoch_us(\"first\") <= {}",
        since,
        since + 12 * HOUR
    );
    let answers = duckdb(&[
        format!(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({})) \
             WHERE column_name IN ('event', 'first', 'sport', 'proto', 'generation', 'packets_fwd') \
             ORDER BY column_name",
            quoted(one)
        ),
        format!(
            "SELECT verdict, count(*) FROM read_parquet({}) GROUP BY verdict ORDER BY verdict",
            quoted(one)
        ),
        format!(
            "SELECT epoch_us(\"first\"), src, sport FROM read_parquet({}) LIMIT 1",
            quoted(one)
        ),
        format!(
            "SELECT verdict, count(*) FROM read_parquet([{files}]) WHERE {where_asset} \
             GROUP BY verdict ORDER BY verdict"
        ),
        format!(
            "SELECT verdict, count(*) FROM read_parquet({}) GROUP BY verdict ORDER BY verdict",
            quoted(&export)
        ),
        format!(
            "SELECT min(epoch_us(\"first\")), count(*) FROM read_parquet({}) WHERE event = 'gap'",
            quoted(&export)
        ),
        format!(
            "SELECT decode(value) FROM parquet_kv_metadata({}) WHERE decode(key) = 'sekisho.schema'",
            quoted(one)
        ),
    ]);
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();

    // Column types as the schema declares them, not raw integers.
    assert_eq!(
        answers[0],
        [
            row(&["event", "VARCHAR"]),
            row(&["first", "TIMESTAMP WITH TIME ZONE"]),
            row(&["generation", "UINTEGER"]),
            row(&["packets_fwd", "BIGINT"]),
            row(&["proto", "UTINYINT"]),
            row(&["sport", "USMALLINT"]),
        ]
    );
    // A sealed segment.
    assert_eq!(answers[1], by_verdict(&sealed));
    assert_eq!(
        answers[2],
        [row(&[
            &sealed[0].first_us.to_string(),
            &sealed[0].src.map(|a| a.to_string()).unwrap_or_default(),
            &sealed[0].sport.to_string(),
        ])]
    );
    // One asset over twelve hours: DuckDB over every segment, the query, and the export.
    assert_eq!(answers[3], by_verdict(&asset));
    assert_eq!(answers[4], by_verdict(&asset));
    let gaps: Vec<&Record> = asset
        .iter()
        .filter(|r| r.event == sekisho::history::Event::Gap)
        .collect();
    assert_eq!(gaps.len(), 1, "the gap is in the asset's history");
    assert_eq!(answers[5], [row(&[&gaps[0].first_us.to_string(), "1"])]);
    assert_eq!(answers[6], [row(&["1"])]);
}

/// A value as the SQL below renders it: nulls as `∅`, so that they differ from empty text.
fn text(v: &Option<std::sync::Arc<str>>) -> String {
    v.as_deref().unwrap_or("∅").to_string()
}

/// The row the SQL below returns for a record: every column, times as microseconds.
fn expected_row(i: usize, r: &Record) -> Vec<String> {
    let reason = match sekisho_common::Reason::from_u8(r.reason) {
        Some(reason) => reason.name().to_string(),
        None if r.reason == 0 => String::new(),
        None => r.reason.to_string(),
    };
    let addr = |a: Option<std::net::IpAddr>| a.map_or("∅".to_string(), |a| a.to_string());
    vec![
        i.to_string(),
        r.event.name().to_string(),
        r.first_us.to_string(),
        r.last_us.to_string(),
        r.verdict.name().to_string(),
        reason,
        r.generation.to_string(),
        r.rule.to_string(),
        text(&r.rule_name),
        text(&r.interface),
        r.proto.to_string(),
        addr(r.src),
        addr(r.dst),
        r.sport.to_string(),
        r.dport.to_string(),
        text(&r.src_asset),
        text(&r.src_role),
        text(&r.src_peer),
        text(&r.dst_asset),
        text(&r.dst_role),
        text(&r.dst_peer),
        // Counters are plain int64 in the schema: DuckDB shows the bits as signed.
        (r.packets_fwd as i64).to_string(),
        (r.bytes_fwd as i64).to_string(),
        (r.packets_rev as i64).to_string(),
        (r.bytes_rev as i64).to_string(),
        r.tcp_flags.to_string(),
        r.close.map_or("∅".to_string(), |c| c.name().to_string()),
        (r.lost as i64).to_string(),
    ]
}

/// Every column of sekisho's own page encoding (sorted dictionaries, delta times, plain
/// counters, several row groups and pages, a dictionary too large to use) decodes in
/// DuckDB to the values written, and DuckDB's pruning by sekisho's statistics and page
/// index keeps exactly the rows that match.
#[test]
fn duckdb_reads_every_value_of_every_column() {
    use std::net::IpAddr;
    use std::sync::Arc;

    use sekisho::history::{Close, Event, Verdict};

    ensure_duckdb();
    let tmp = TempDir::new("columns");
    let path = tmp.0.join("s.parquet");
    let mut recs = segment::synthetic(600_000, 5);
    let t = recs[300_000].first_us;
    let v6: IpAddr = "2001:db8::1:0:0:1".parse().expect("address");
    recs.push(Record {
        event: Event::End,
        first_us: t,
        last_us: t + 60_000_000,
        verdict: Verdict::Monitor,
        reason: 99,
        generation: u32::MAX,
        rule: u32::MAX - 1,
        rule_name: Some(Arc::from("規則-住基")),
        interface: Some(Arc::from("lan0")),
        proto: u8::MAX,
        src: Some(v6),
        dst: Some(IpAddr::from([203, 0, 113, 9])),
        sport: u16::MAX,
        dport: 0,
        src_asset: Some(Arc::from("端末-001")),
        src_role: Some(Arc::from("terminal")),
        dst_peer: Some(Arc::from("j-lis")),
        packets_fwd: u64::MAX,
        bytes_fwd: i64::MAX as u64,
        packets_rev: 1,
        bytes_rev: 2,
        tcp_flags: u8::MAX,
        close: Some(Close::Evicted),
        ..Record::default()
    });
    recs.push(Record::gap(t + 1, t + 2, 12_345));
    // Many distinct source addresses in the last part: a dictionary too large for one
    // row group's `src` column, written plain.
    for (i, r) in recs.iter_mut().enumerate().skip(548_000).take(52_000) {
        r.src = Some(IpAddr::from([
            0x2001,
            0xdb8,
            2,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ]));
    }
    let info = segment::write(&path, &mut recs).expect("write");
    assert_eq!(info.records, recs.len() as u64);

    let mut rows: Vec<usize> = (0..recs.len()).step_by(997).collect();
    rows.extend(
        recs.iter()
            .enumerate()
            .filter(|(_, r)| r.generation == u32::MAX || r.event == Event::Gap)
            .map(|(i, _)| i),
    );
    rows.extend(recs.len() - 3..recs.len());
    rows.sort_unstable();
    rows.dedup();
    let list = rows
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let file = quoted(&path);
    let n = |s: &str| format!("coalesce({s}, '∅')");
    let select = format!(
        "SELECT file_row_number, event, epoch_us(\"first\"), epoch_us(\"last\"), verdict, \
         reason, generation, rule, {}, {}, proto, {}, {}, sport, dport, {}, {}, {}, {}, {}, {}, \
         packets_fwd, bytes_fwd, packets_rev, bytes_rev, tcp_flags, {}, lost \
         FROM read_parquet({file}, file_row_number = true) \
         WHERE file_row_number IN ({list}) ORDER BY file_row_number",
        n("rule_name"),
        n("interface"),
        n("src"),
        n("dst"),
        n("src_asset"),
        n("src_role"),
        n("src_peer"),
        n("dst_asset"),
        n("dst_role"),
        n("dst_peer"),
        n("close"),
    );
    let (lo, hi) = (recs[100_000].first_us, recs[420_000].first_us);
    let plain_src = recs[500_000..]
        .iter()
        .filter_map(|r| r.src)
        .find(|a| a.to_string().starts_with("2001:db8:2:"))
        .expect("an address of the plain pages");
    let counted: Vec<(String, usize)> = vec![
        (
            "src_asset = 'cs-01' OR dst_asset = 'cs-01'".into(),
            recs.iter()
                .filter(|r| {
                    r.src_asset.as_deref() == Some("cs-01")
                        || r.dst_asset.as_deref() == Some("cs-01")
                })
                .count(),
        ),
        (
            "generation = 4294967295".into(),
            recs.iter().filter(|r| r.generation == u32::MAX).count(),
        ),
        (
            format!("epoch_us(\"first\") >= {lo} AND epoch_us(\"first\") < {hi}"),
            recs.iter()
                .filter(|r| (lo..hi).contains(&r.first_us))
                .count(),
        ),
        (
            "dport = 443 AND verdict = 'deny'".into(),
            recs.iter()
                .filter(|r| r.dport == 443 && r.verdict == Verdict::Deny)
                .count(),
        ),
        (
            format!("src = '{plain_src}'"),
            recs.iter().filter(|r| r.src == Some(plain_src)).count(),
        ),
        (
            "close IS NULL".into(),
            recs.iter().filter(|r| r.close.is_none()).count(),
        ),
    ];
    let mut queries = vec![
        select,
        format!(
            "SELECT row_group_id, encodings FROM parquet_metadata({file}) \
             WHERE path_in_schema = 'src' ORDER BY row_group_id"
        ),
    ];
    queries.extend(
        counted
            .iter()
            .map(|(w, _)| format!("SELECT count(*) FROM read_parquet({file}) WHERE {w}")),
    );
    let answers = duckdb(&queries);
    let want: Vec<Vec<String>> = rows.iter().map(|&i| expected_row(i, &recs[i])).collect();
    assert_eq!(answers[0].len(), want.len());
    for (got, want) in answers[0].iter().zip(&want) {
        assert_eq!(got, want);
    }
    let encodings: Vec<&str> = answers[1].iter().map(|row| row[1].as_str()).collect();
    assert_eq!(encodings.len(), 3, "row groups: {encodings:?}");
    assert!(
        encodings[..2].iter().all(|e| e.contains("RLE_DICTIONARY"))
            && !encodings[2].contains("DICTIONARY"),
        "{encodings:?}"
    );
    for ((condition, count), answer) in counted.iter().zip(&answers[2..]) {
        assert!(*count > 0, "{condition} matches something");
        assert_eq!(answer, &[vec![count.to_string()]], "{condition}");
    }
}
