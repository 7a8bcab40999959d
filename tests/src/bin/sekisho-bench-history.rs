//! `cargo xtask bench`, second part: the traffic history (issue #6), every figure against
//! a target or a baseline measured in the same run.
//!
//! 1. Ingest on one thread: prepared kernel `FlowEvent`s → `recorder::event_record` →
//!    `History::append` → `History::sync` every second → `History::seal_due` at each hour
//!    of a `ManualClock` that follows the records' arrival times, so the hourly sealing
//!    into Parquet happens inside the timed loop. Baseline: writing the same WAL frames'
//!    bytes to one file with `std::fs::File` and one fdatasync.
//! 2. The kernel's ring buffer drained by `Recorder::poll` into `History::append` (events
//!    made by BPF_PROG_TEST_RUN in batches; the filling is not timed).
//! 3. Bytes on disk per sealed record, against the 16-byte target.
//! 4. One asset over one day in a history of at least 100 million records: `query::query`
//!    against DuckDB reading the same Parquet files; both counts must agree.
//!
//! The 100-million-record history is kept under `target/bench-history/` between runs only
//! with `--keep` (then a rerun reuses it); everything else is deleted on the way out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions};
use jiff::Timestamp;
use sekisho::config::Config;
use sekisho::datapath::{Datapath, Side};
use sekisho::history::manifest::{self, NewEntry};
use sekisho::history::query::{self, Filter};
use sekisho::history::recorder::{self, ClockMap, Names, Recorder, Timeouts};
use sekisho::history::segment;
use sekisho::history::store::{History, ManualClock};
use sekisho::history::wal;
use sekisho::history::{Event, Record, Verdict};
use sekisho::policy::CompiledPolicy;
use sekisho_common::{Counter, EVENT_ALLOW, EVENT_CUT, EVENT_DENY, FlowEvent};

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// Records through the ingest pipeline: about 18 hours of `segment::synthetic` traffic,
/// so about 18 seals inside the timed loop.
const INGEST_RECORDS: usize = 6_000_000;
/// Ingest target (IPFIXcol2 writes about 1 M records/s to binary files).
const INGEST_TARGET: f64 = 1_000_000.0;
/// Bytes-per-sealed-record target (nfdump's zstd files hold about 29).
const BYTES_TARGET: f64 = 16.0;

/// Ring-buffer drain: batches below the ring's ~37,000-event capacity.
const RING_BATCHES: usize = 6;
const RING_BATCH: usize = 30_000;

/// The query history: 13 days of hourly segments, 325,000 records each (about the
/// synthetic traffic's own rate), 101.4 million records.
const DATASET_HOURS: usize = 13 * 24;
const DATASET_PER_HOUR: usize = 325_000;
/// `segment::synthetic`'s first record: 2026-04-01T00:00+09:00, an hour boundary in UTC.
const SYNTHETIC_START_US: i64 = 1_774_969_200_000_000;
/// The queried day (UTC), in the middle of the 13.
const QUERY_DAY: &str = "2026-04-06T00:00:00Z";
/// A terminal (about 0.2 % of the records) and a communication server (about 20 %).
const QUERY_ASSETS: [&str; 2] = ["term-042", "cs-01"];
const QUERY_RUNS: usize = 5;
const DATASET_MARK: &str = "bench-dataset";

struct Options {
    out: Option<PathBuf>,
    dir: PathBuf,
    keep: bool,
    /// `ingest` or `query`: one part alone, its figures printed briefly (for work on it).
    only: Option<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        out: None,
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-history"),
        keep: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => o.out = Some(args.next().context("--out FILE")?.into()),
            "--dir" => o.dir = args.next().context("--dir DIR")?.into(),
            "--keep" => o.keep = true,
            "--only" => match args.next().as_deref() {
                Some(part @ ("ingest" | "query")) => o.only = Some(part.to_owned()),
                _ => bail!("--only ingest|query"),
            },
            other => bail!(
                "unknown argument {other:?} (--out FILE, --dir DIR, --keep, --only ingest|query)"
            ),
        }
    }
    Ok(o)
}

/// Deletes a directory on the way out, unless told to keep it.
struct Cleanup {
    path: PathBuf,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    std::fs::create_dir_all(&o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    let dataset_root = o.dir.join("dataset");
    let _dataset = Cleanup {
        path: dataset_root.clone(),
        keep: o.keep,
    };
    let work = o.dir.join(format!("work-{}", std::process::id()));
    let _work = Cleanup {
        path: work.clone(),
        keep: false,
    };
    std::fs::create_dir_all(&work)?;

    match o.only.as_deref() {
        Some("ingest") => {
            let i = ingest(&work)?;
            println!(
                "ingest: {:.0} records/s ({} records, {:.2} s, CPU {:.2} s, sealing {:.2} s \
                 (CPU {:.2} s), syncing {:.2} s), {:.2} bytes/record; raw write {:.0} records/s",
                i.rate(),
                i.records,
                i.seconds,
                i.cpu_seconds,
                i.seal_seconds,
                i.seal_cpu_seconds,
                i.sync_seconds,
                i.bytes_per_record(),
                i.baseline_rate()
            );
            return Ok(());
        }
        Some(_) => {
            dataset(&dataset_root)?;
            for asset in QUERY_ASSETS {
                let q = compare_query(&dataset_root, asset)?;
                println!(
                    "{asset}: {} records; sekisho query {:.1} ms, count {:.1} ms; DuckDB \
                     every column {:.1} ms, count(*) all files {:.1} ms; paired ratios \
                     {:.2}× and {:.2}×",
                    q.sekisho.count,
                    q.sekisho.median * 1e3,
                    q.sekisho_count.median * 1e3,
                    q.duckdb_columns.median * 1e3,
                    q.duckdb_all.median * 1e3,
                    q.query_ratio,
                    q.count_ratio
                );
            }
            return Ok(());
        }
        None => {}
    }

    let load_before = load_average();
    let ingest = ingest(&work)?;
    let load_ingest = load_average();
    let ring = match ring_drain(&work) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("bench-history: ring buffer drain not measured: {e:#}");
            None
        }
    };
    let dataset = dataset(&dataset_root)?;
    let queries = QUERY_ASSETS
        .iter()
        .map(|asset| compare_query(&dataset_root, asset))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let load = [load_before, load_ingest];
    let report = render(&ingest, ring.as_ref(), &dataset, &queries, load)?;
    print!("{report}");
    if let Some(path) = o.out {
        std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench-history: written to {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Synthetic traffic as the kernel would hand it over
// ---------------------------------------------------------------------------------------

/// The policy `segment::synthetic` describes: its assets, peers and rules (in its rule
/// numbering), so that `Names` gives back the names it wrote.
fn synthetic_config() -> anyhow::Result<Config> {
    let mut t = String::from("[interfaces]\nlan = [\"lan0\"]\nwan = [\"wan0\"]\n\n");
    t.push_str("[peer.prefecture]\nnetworks = [\"172.16.0.0/24\"]\n\n");
    t.push_str("[peer.j-lis]\nnetworks = [\"172.17.0.0/24\"]\n\n");
    for i in 1..=4 {
        writeln!(
            t,
            "[[asset]]\nname = \"cs-{i:02}\"\nrole = \"cs\"\naddresses = [\"10.1.0.{i}\"]\n"
        )?;
    }
    for i in 1..=300u32 {
        writeln!(
            t,
            "[[asset]]\nname = \"term-{i:03}\"\nrole = \"terminal\"\naddresses = [\"10.1.{}.{}\"]\n",
            1 + i / 250,
            i % 250 + 1
        )?;
    }
    for (name, from, to, ports) in [
        (
            "cs-to-prefecture",
            "role:cs",
            "peer:prefecture",
            "\"tcp/443\", \"tcp/700\"",
        ),
        ("cs-to-jlis", "role:cs", "peer:j-lis", "\"tcp/443\""),
        (
            "terminals-to-cs",
            "role:terminal",
            "role:cs",
            "\"tcp/443\", \"tcp/8443\"",
        ),
        (
            "prefecture-to-cs",
            "peer:prefecture",
            "role:cs",
            "\"tcp/443\"",
        ),
    ] {
        writeln!(
            t,
            "[[allow]]\nname = \"{name}\"\nfrom = \"{from}\"\nto = \"{to}\"\nports = [{ports}]\n"
        )?;
    }
    Config::parse_str(&t, Path::new("synthetic.toml")).context("the synthetic policy")
}

fn addr16(a: Option<std::net::IpAddr>) -> [u8; 16] {
    match a {
        Some(std::net::IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(std::net::IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

/// What the ingest loop is given: kernel events, and for each what an end record needs
/// beyond the event.
struct Prepared {
    events: Vec<FlowEvent>,
    /// When the record arrives (the `ManualClock`), non-decreasing.
    arrival_us: Vec<i64>,
    /// End records only: their verdict and close reason (see `ingest`).
    end_fixup: Vec<Option<(Verdict, Option<sekisho::history::Close>)>>,
}

/// `segment::synthetic` records as kernel events, shifted by `shift_us`. Starts are
/// `EVENT_ALLOW`/`EVENT_DENY` as the kernel writes them; ends are `EVENT_CUT`, the one
/// ring-buffer event that carries totals (`Timeouts`' sweep writes the others from the flow
/// tables through the same conversion).
fn prepare(records: &[Record], clock: &ClockMap, shift_us: i64) -> Prepared {
    let base_us = clock.to_us(0);
    let mono = |us: i64| ((us + shift_us - base_us) as u64) * 1000;
    let (lan, wan) = (
        1,
        if nix::net::if_::if_nametoindex("eth0").is_ok() {
            4
        } else {
            1
        },
    );
    let mut p = Prepared {
        events: Vec::with_capacity(records.len()),
        arrival_us: Vec::with_capacity(records.len()),
        end_fixup: Vec::with_capacity(records.len()),
    };
    let mut arrival = i64::MIN;
    for r in records {
        let kind = match (r.event, r.verdict) {
            (Event::End, _) => EVENT_CUT,
            (_, Verdict::Allow) => EVENT_ALLOW,
            _ => EVENT_DENY,
        };
        let verdict = match r.verdict {
            Verdict::Allow => sekisho_common::VERDICT_ALLOW,
            Verdict::Deny => sekisho_common::VERDICT_DENY,
            Verdict::Monitor => sekisho_common::VERDICT_MONITOR,
        } as u8;
        p.events.push(FlowEvent {
            kind,
            reason: r.reason,
            verdict,
            proto: r.proto,
            ifindex: if r.interface.as_deref() == Some("wan0") {
                wan
            } else {
                lan
            },
            generation: r.generation,
            rule: r.rule,
            src: addr16(r.src),
            dst: addr16(r.dst),
            sport: r.sport,
            dport: r.dport,
            tcp_flags: r.tcp_flags,
            from_lan: u8::from(r.interface.as_deref() != Some("wan0")),
            _pad: [0; 2],
            first_ns: mono(r.first_us),
            last_ns: mono(r.last_us),
            fwd: Counter {
                packets: r.packets_fwd,
                bytes: r.bytes_fwd,
            },
            rev: Counter {
                packets: r.packets_rev,
                bytes: r.bytes_rev,
            },
        });
        // As `synthetic` orders them: a start when it begins, an end when it is written.
        let at = match (r.event, r.verdict) {
            (Event::End, Verdict::Allow) => r.last_us,
            (Event::End, _) => r.last_us + 30_000_000,
            _ => r.first_us,
        };
        arrival = arrival.max(at + shift_us);
        p.arrival_us.push(arrival);
        p.end_fixup
            .push((r.event == Event::End).then_some((r.verdict, r.close)));
    }
    p
}

// ---------------------------------------------------------------------------------------
// 1. Ingest
// ---------------------------------------------------------------------------------------

struct Ingest {
    records: u64,
    seconds: f64,
    syncs: u64,
    seals: u64,
    /// Of `seconds`: in `History::seal_due`, and in `History::sync`.
    seal_seconds: f64,
    sync_seconds: f64,
    /// CPU time (user and system, every thread of the process) over `seconds`.
    cpu_seconds: f64,
    /// Of `cpu_seconds`: in `History::seal_due`.
    seal_cpu_seconds: f64,
    segments: u64,
    segment_bytes: u64,
    wal_bytes: u64,
    baseline_seconds: f64,
}

impl Ingest {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn baseline_rate(&self) -> f64 {
        self.records as f64 / self.baseline_seconds
    }
    fn bytes_per_record(&self) -> f64 {
        self.segment_bytes as f64 / self.records as f64
    }
}

fn ingest(work: &Path) -> anyhow::Result<Ingest> {
    eprintln!("bench-history: preparing {INGEST_RECORDS} synthetic kernel events");
    let config = synthetic_config()?;
    let names = Names::from_config(&config);
    let clock_map = ClockMap::now();
    let records = segment::synthetic(INGEST_RECORDS, 1);
    // Times after the machine booted (the kernel's clock starts there), hour-aligned as
    // `synthetic` is.
    let now = Timestamp::now().as_microsecond();
    let shift_us = (now.div_euclid(HOUR_US) + 1) * HOUR_US - SYNTHETIC_START_US;
    let p = prepare(&records, &clock_map, shift_us);
    // The conversion gives back what `synthetic` wrote (interfaces aside: real ones here).
    for (i, r) in records.iter().enumerate().step_by(997) {
        let mut got = recorder::event_record(&names, &clock_map, &p.events[i]);
        if let Some((v, c)) = p.end_fixup[i] {
            (got.verdict, got.close) = (v, c);
        }
        got.first_us -= shift_us;
        got.last_us -= shift_us;
        got.interface.clone_from(&r.interface);
        ensure!(got == *r, "event {i} converts to {got:?}, not {r:?}");
    }

    // The baseline's bytes: the WAL frames of the same records (header, length, CRC-32C
    // and payload, as `WalWriter` frames them), encoded before timing.
    let mut frames = Vec::with_capacity(records.len() * 80);
    frames.extend_from_slice(wal::MAGIC);
    let mut payload = Vec::new();
    for (i, e) in p.events.iter().enumerate() {
        let mut r = recorder::event_record(&names, &clock_map, e);
        if let Some((v, c)) = p.end_fixup[i] {
            (r.verdict, r.close) = (v, c);
        }
        payload.clear();
        wal::encode(&r, &mut payload);
        frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frames.extend_from_slice(&[0; 4]);
        frames.extend_from_slice(&payload);
    }
    drop(records);

    let root = work.join("ingest");
    let clock = ManualClock::new(p.arrival_us[0]);
    let mut history = History::open(&root, clock.clone())?;
    eprintln!("bench-history: ingest, one thread");
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut last_sync = start;
    let (mut syncs, mut seals) = (0u64, 0u64);
    let (mut seal_time, mut sync_time) = (Duration::ZERO, Duration::ZERO);
    let mut seal_cpu = 0.0;
    let mut hour = p.arrival_us[0].div_euclid(HOUR_US);
    for (i, e) in p.events.iter().enumerate() {
        let at = p.arrival_us[i];
        clock.set(at);
        if at.div_euclid(HOUR_US) != hour {
            hour = at.div_euclid(HOUR_US);
            let t = Instant::now();
            let c = cpu_seconds();
            seals += history.seal_due()?.len() as u64;
            seal_cpu += cpu_seconds() - c;
            seal_time += t.elapsed();
        }
        let mut r = recorder::event_record(&names, &clock_map, e);
        // Ends: the verdict and close reason a sweep would give (a cut fixes them).
        if let Some((v, c)) = p.end_fixup[i] {
            (r.verdict, r.close) = (v, c);
        }
        history.append(&r);
        if i.is_multiple_of(1024) && last_sync.elapsed() >= Duration::from_secs(1) {
            let t = Instant::now();
            history.sync()?;
            syncs += 1;
            last_sync = Instant::now();
            sync_time += last_sync - t;
        }
    }
    let t = Instant::now();
    history.sync()?;
    syncs += 1;
    sync_time += t.elapsed();
    // The last (partial) hour is sealed inside the timing too: every record has reached
    // Parquet when the clock stops.
    clock.set((hour + 1) * HOUR_US);
    let t = Instant::now();
    let c = cpu_seconds();
    seals += history.seal_due()?.len() as u64;
    seal_cpu += cpu_seconds() - c;
    seal_time += t.elapsed();
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;

    let health = history.health();
    ensure!(
        health.unrecorded_total == 0 && !health.degraded,
        "records were lost: {health:?}"
    );
    let stats = history.stats()?;
    drop(history);
    ensure!(
        stats.records == p.events.len() as u64 && stats.wal_records == 0,
        "sealed {} of {} records ({} in the WAL)",
        stats.records,
        p.events.len(),
        stats.wal_records
    );
    let entries = manifest::read(&root)?;
    let segment_bytes: u64 = entries.iter().map(|e| e.bytes).sum();
    let records = p.events.len() as u64;
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
    eprintln!(
        "bench-history: ingest {:.0} records/s, {seals} seals",
        records as f64 / seconds
    );

    let baseline_seconds = raw_write(&work.join("baseline.wal"), &frames)?;
    Ok(Ingest {
        records,
        seconds,
        syncs,
        seals,
        seal_seconds: seal_time.as_secs_f64(),
        sync_seconds: sync_time.as_secs_f64(),
        cpu_seconds: cpu,
        seal_cpu_seconds: seal_cpu,
        segments: entries.len() as u64,
        segment_bytes,
        wal_bytes: frames.len() as u64,
        baseline_seconds,
    })
}

/// User and system CPU time of the whole process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given and keeps no pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Median of three: write `bytes` sequentially (1 MiB writes) and fdatasync once.
fn raw_write(path: &Path, bytes: &[u8]) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let mut samples = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(path);
        let start = Instant::now();
        let mut f = std::fs::File::create(path)?;
        for chunk in bytes.chunks(1 << 20) {
            f.write_all(chunk)?;
        }
        f.sync_data()?;
        drop(f);
        samples.push(start.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(path);
    samples.sort_by(f64::total_cmp);
    Ok(samples[1])
}

// ---------------------------------------------------------------------------------------
// 2. The kernel's ring buffer
// ---------------------------------------------------------------------------------------

struct Ring {
    events: u64,
    lost: u64,
    drain_seconds: f64,
    fill_seconds: f64,
}

/// A denied UDP packet of demo.toml's term-01 to the prefecture: each distinct
/// (destination, source port) is a new denied flow, so one ring-buffer event.
fn udp_frame(dst_last: u8, sport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0x99, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[192, 0, 2, 21]);
    f.extend_from_slice(&[203, 0, 113, dst_last]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&9999u16.to_be_bytes());
    f.extend_from_slice(&12u16.to_be_bytes());
    f.extend_from_slice(&[0; 6]);
    f
}

fn ring_drain(work: &Path) -> anyhow::Result<Ring> {
    eprintln!("bench-history: ring buffer drain");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
    let config = Config::parse_str(&std::fs::read_to_string(path)?, Path::new(path))?;
    let mut dp = Datapath::load()?;
    dp.apply(&CompiledPolicy::compile(&config))?;
    let maps = dp.take_flow_maps().context("flow maps")?;
    let mut recorder = Recorder::new(
        maps,
        Arc::new(Names::from_config(&config)),
        Timeouts::default(),
    );
    let root = work.join("ring");
    let mut history = History::open(&root, ManualClock::new(Timestamp::now().as_microsecond()))?;
    let (mut events, mut drain, mut fill) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut out = vec![0u8; 256];
    let mut flow = 0usize;
    for _ in 0..RING_BATCHES {
        let start = Instant::now();
        for _ in 0..RING_BATCH {
            // 203.0.113.9..=14: prefecture addresses; source ports 1024..
            let frame = udp_frame(9 + (flow / 60_000) as u8, 1024 + (flow % 60_000) as u16);
            flow += 1;
            let rv = dp
                .program(Side::Lan)
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ..TestRunOptions::default()
                })?
                .return_value;
            ensure!(rv == 2, "the demo policy denies the packet (returned {rv})");
        }
        fill += start.elapsed();
        let start = Instant::now();
        events += recorder.poll(&mut |r| history.append(&r)) as u64;
        history.sync()?;
        drain += start.elapsed();
    }
    let lost = recorder.events_lost();
    drop(history);
    let _ = std::fs::remove_dir_all(&root);
    Ok(Ring {
        events,
        lost,
        drain_seconds: drain.as_secs_f64(),
        fill_seconds: fill.as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------
// 3. The 100-million-record history
// ---------------------------------------------------------------------------------------

struct Dataset {
    records: u64,
    segments: u64,
    bytes: u64,
    generated_seconds: Option<f64>,
}

fn dataset_mark() -> String {
    format!(
        "sekisho-bench-history v1: {DATASET_HOURS} hours x {DATASET_PER_HOUR} synthetic records, seeds 1000+hour\n"
    )
}

/// The segment path of the hour starting at `us`, as the store names it.
fn segment_rel(us: i64) -> anyhow::Result<String> {
    let stem = sekisho::history::store::segment_stem(us.div_euclid(1_000_000))
        .context("hour out of range")?;
    Ok(format!("{stem}.parquet"))
}

/// Hour `h` of the history: `synthetic` traffic (its own seed) moved to that hour.
fn dataset(root: &Path) -> anyhow::Result<Dataset> {
    let summary = |generated_seconds| -> anyhow::Result<Dataset> {
        let entries = manifest::read(root)?;
        Ok(Dataset {
            records: entries.iter().map(|e| e.records).sum(),
            segments: entries.len() as u64,
            bytes: entries.iter().map(|e| e.bytes).sum(),
            generated_seconds,
        })
    };
    if std::fs::read_to_string(root.join(DATASET_MARK)).ok() == Some(dataset_mark()) {
        let d = summary(None)?;
        if d.segments == DATASET_HOURS as u64
            && d.records == (DATASET_HOURS * DATASET_PER_HOUR) as u64
        {
            eprintln!("bench-history: reusing the history in {}", root.display());
            return Ok(d);
        }
    }
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    manifest::init(root)?;
    eprintln!(
        "bench-history: writing {} records in {DATASET_HOURS} hourly segments to {}",
        DATASET_HOURS * DATASET_PER_HOUR,
        root.display()
    );
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<NewEntry>>> = Mutex::new((0..DATASET_HOURS).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let h = next.fetch_add(1, Ordering::Relaxed);
                        if h >= DATASET_HOURS {
                            return Ok(());
                        }
                        let entry = dataset_hour(root, h)?;
                        done.lock().unwrap_or_else(|e| e.into_inner())[h] = Some(entry);
                        if (h + 1).is_multiple_of(24) {
                            eprintln!(
                                "bench-history: day {} of {}",
                                h / 24 + 1,
                                DATASET_HOURS / 24
                            );
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    for entry in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
        manifest::append(root, entry.context("every hour written")?)?;
    }
    std::fs::write(root.join(DATASET_MARK), dataset_mark())?;
    summary(Some(start.elapsed().as_secs_f64()))
}

fn dataset_hour(root: &Path, h: usize) -> anyhow::Result<NewEntry> {
    let hour_us = SYNTHETIC_START_US + h as i64 * HOUR_US;
    let mut records = segment::synthetic(DATASET_PER_HOUR, 1000 + h as u64);
    for r in &mut records {
        r.first_us += hour_us - SYNTHETIC_START_US;
        r.last_us += hour_us - SYNTHETIC_START_US;
    }
    let rel = segment_rel(hour_us)?;
    let path = root.join(&rel);
    std::fs::create_dir_all(path.parent().context("segment directory")?)?;
    let info = segment::write(&path, &mut records)?;
    let (sha256, bytes) = manifest::file_sha256(&path)?;
    Ok(NewEntry::sealed(
        rel,
        &info,
        sha256,
        bytes,
        hour_us + HOUR_US,
    ))
}

// ---------------------------------------------------------------------------------------
// 4. One asset over one day: sekisho against DuckDB
// ---------------------------------------------------------------------------------------

struct Timed {
    count: u64,
    first: f64,
    median: f64,
}

impl Timed {
    /// From (seconds, count) runs, whose counts must all agree.
    fn of(runs: &[(f64, u64)], what: &str) -> anyhow::Result<Timed> {
        let count = runs.first().context("a run")?.1;
        ensure!(
            runs.iter().all(|r| r.1 == count),
            "{what}: the counts differ between runs: {runs:?}"
        );
        Ok(Timed {
            count,
            first: runs[0].0,
            median: median(runs.iter().map(|r| r.0).collect()),
        })
    }
}

struct QueryRow {
    asset: String,
    sekisho: Timed,
    /// `query::count`: the filter's columns only, as DuckDB's `count(*)`.
    sekisho_count: Timed,
    /// Median of the rounds' sekisho/DuckDB time: `query` against every column, `count`
    /// against `count(*)` over all files.
    query_ratio: f64,
    count_ratio: f64,
    segments_read: u64,
    row_groups_read: u64,
    row_groups_total: u64,
    records_scanned: u64,
    duckdb_all: Timed,
    duckdb_all_1thread: Timed,
    duckdb_day: Timed,
    duckdb_columns: Timed,
    day_files: usize,
    duckdb_version: String,
    duckdb_threads: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare_query(root: &Path, asset: &str) -> anyhow::Result<QueryRow> {
    let since: Timestamp = QUERY_DAY.parse()?;
    let since_us = since.as_microsecond();
    let until_us = since_us + DAY_US - 1;
    let filter = Filter {
        since_us: Some(since_us),
        until_us: Some(until_us),
        asset: Some(asset.to_owned()),
        ..Filter::default()
    };
    let ts = |us: i64| -> anyhow::Result<String> {
        Ok(Timestamp::from_microsecond(us)?
            .strftime("%Y-%m-%d %H:%M:%S%.6f+00")
            .to_string())
    };
    let (lo, hi) = (ts(since_us)?, ts(until_us)?);
    let where_ = format!(
        "\"first\" <= TIMESTAMPTZ '{hi}' AND \"last\" >= TIMESTAMPTZ '{lo}' \
         AND (src_asset = '{asset}' OR dst_asset = '{asset}')"
    );
    let all = format!(
        "SELECT count(*) FROM read_parquet('{}/segments/**/*.parquet') WHERE {where_}",
        root.display()
    );
    let day_files: Vec<String> = manifest::read(root)?
        .into_iter()
        .filter(|e| e.min_first_us <= until_us && e.max_last_us >= since_us)
        .map(|e| format!("'{}'", root.join(&e.path).display()))
        .collect();
    let day = format!(
        "SELECT count(*) FROM read_parquet([{}]) WHERE {where_}",
        day_files.join(", ")
    );
    // Every column of the matching rows read, as `query` decodes whole records.
    let columns = format!(
        "SELECT count(*), max(hash(t)) FROM (SELECT * FROM read_parquet('{}/segments/**/*.parquet') \
         WHERE {where_}) t",
        root.display()
    );
    const ALL: usize = 0;
    const ONE_THREAD: usize = 1;
    const DAY: usize = 2;
    const COLUMNS: usize = 3;
    let mut duck = DuckDb::start(&[(all.clone(), 0), (all, 1), (day, 0), (columns, 0)])?;

    // Rounds interleave sekisho and DuckDB, so that whatever else the machine does in a
    // round weighs on both sides of a ratio.
    eprintln!("bench-history: query {asset} over {QUERY_DAY} + 1 day, sekisho and DuckDB");
    let mut runs = [(); 6].map(|()| Vec::with_capacity(QUERY_RUNS));
    let [s_query, s_count, d_all, d_one, d_day, d_columns] = &mut runs;
    let mut stats = None;
    for _ in 0..QUERY_RUNS {
        let mut n = 0u64;
        let start = Instant::now();
        let s = query::query(root, &filter, &mut |_| {
            n += 1;
            true
        })?;
        s_query.push((start.elapsed().as_secs_f64(), n));
        stats = Some(s);
        d_columns.push(duck.run(COLUMNS)?);
        let start = Instant::now();
        let s = query::count(root, &filter)?;
        s_count.push((start.elapsed().as_secs_f64(), s.records_matched));
        d_all.push(duck.run(ALL)?);
        d_one.push(duck.run(ONE_THREAD)?);
        d_day.push(duck.run(DAY)?);
    }
    let stats = stats.context("a query ran")?;
    let sekisho = Timed::of(s_query, "sekisho's query")?;
    let sekisho_count = Timed::of(s_count, "sekisho's count")?;
    ensure!(
        sekisho_count.count == sekisho.count,
        "sekisho's count {} differs from its query's {}",
        sekisho_count.count,
        sekisho.count
    );
    let query_ratio = paired_ratio(s_query, d_columns);
    let count_ratio = paired_ratio(s_count, d_all);
    let duckdb = |what: &str, runs: &[(f64, u64)]| -> anyhow::Result<Timed> {
        let t = Timed::of(runs, &format!("DuckDB ({what})"))?;
        ensure!(
            t.count == sekisho.count,
            "DuckDB ({what}) counts {} records, sekisho {}",
            t.count,
            sekisho.count
        );
        Ok(t)
    };
    let duckdb_all = duckdb("all files", d_all)?;
    let duckdb_all_1thread = duckdb("one thread", d_one)?;
    let duckdb_day = duckdb("day's files", d_day)?;
    let duckdb_columns = duckdb("every column", d_columns)?;
    let (duckdb_version, duckdb_threads) = duck.finish()?;
    Ok(QueryRow {
        asset: asset.to_owned(),
        sekisho,
        sekisho_count,
        query_ratio,
        count_ratio,
        segments_read: stats.segments_read,
        row_groups_read: stats.row_groups_read,
        row_groups_total: stats.row_groups_total,
        records_scanned: stats.records_scanned,
        duckdb_all,
        duckdb_all_1thread,
        duckdb_day,
        duckdb_columns,
        day_files: day_files.len(),
        duckdb_version,
        duckdb_threads,
    })
}

/// The median over rounds of sekisho's time over DuckDB's in the same round.
fn paired_ratio(sekisho: &[(f64, u64)], duckdb: &[(f64, u64)]) -> f64 {
    median(
        sekisho
            .iter()
            .zip(duckdb)
            .map(|((s, _), (d, _))| s / d)
            .collect(),
    )
}

/// Makes `import duckdb` work, installing it from PyPI when missing.
fn ensure_duckdb() -> anyhow::Result<()> {
    let import = || {
        Command::new("python3")
            .args(["-c", "import duckdb"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if import() {
        return Ok(());
    }
    eprintln!("bench-history: installing DuckDB from PyPI");
    let ok = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    ensure!(ok && import(), "cannot install DuckDB from PyPI");
    Ok(())
}

/// One DuckDB connection in a `python3` process, opened before any timing, that runs the
/// queries it was given one at a time on request (threads: the default, or the given
/// number), timing only `execute` + `fetchall`.
struct DuckDb {
    child: std::process::Child,
    requests: std::process::ChildStdin,
    answers: std::io::BufReader<std::process::ChildStdout>,
    version: String,
    threads: String,
}

impl DuckDb {
    const SCRIPT: &str = r#"
import duckdb, json, sys, time
queries = json.loads(sys.stdin.readline())
con = duckdb.connect()
threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
print(json.dumps({"version": duckdb.__version__, "threads": str(threads)}), flush=True)
for line in sys.stdin:
    q, t = queries[int(line)]
    con.execute("RESET threads" if t == 0 else f"SET threads = {t}")
    start = time.perf_counter()
    rows = con.execute(q).fetchall()
    elapsed = time.perf_counter() - start
    print(json.dumps({"time": elapsed, "count": rows[0][0]}), flush=True)
"#;

    fn start(queries: &[(String, u32)]) -> anyhow::Result<DuckDb> {
        use std::io::Write as _;
        ensure_duckdb()?;
        let mut child = Command::new("python3")
            .args(["-c", Self::SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("python3 runs")?;
        let mut requests = child.stdin.take().context("stdin")?;
        let mut answers = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        serde_json::to_writer(&mut requests, queries)?;
        requests.write_all(b"\n")?;
        requests.flush()?;
        let hello = Self::answer(&mut answers)?;
        let text = |key: &str| hello[key].as_str().unwrap_or("?").to_owned();
        Ok(DuckDb {
            version: text("version"),
            threads: text("threads"),
            child,
            requests,
            answers,
        })
    }

    /// Runs query `i` once: (seconds, the count it answered).
    fn run(&mut self, i: usize) -> anyhow::Result<(f64, u64)> {
        use std::io::Write as _;
        writeln!(self.requests, "{i}")?;
        self.requests.flush()?;
        let a = Self::answer(&mut self.answers)?;
        Ok((
            a["time"].as_f64().context("DuckDB's time")?,
            a["count"].as_u64().context("DuckDB's count")?,
        ))
    }

    /// The next line DuckDB's process printed, as JSON.
    fn answer(
        answers: &mut std::io::BufReader<std::process::ChildStdout>,
    ) -> anyhow::Result<serde_json::Value> {
        use std::io::BufRead as _;
        let mut line = String::new();
        answers.read_line(&mut line)?;
        ensure!(!line.is_empty(), "DuckDB failed (its process ended)");
        Ok(serde_json::from_str(&line)?)
    }

    /// Ends the process (its stdin closed); DuckDB's version and default thread count.
    fn finish(self) -> anyhow::Result<(String, String)> {
        let DuckDb {
            mut child,
            requests,
            version,
            threads,
            ..
        } = self;
        drop(requests);
        ensure!(child.wait()?.success(), "DuckDB failed");
        Ok((version, threads))
    }
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn render(
    i: &Ingest,
    ring: Option<&Ring>,
    d: &Dataset,
    queries: &[QueryRow],
    [load_before, load_ingest]: [String; 2],
) -> anyhow::Result<String> {
    let mut t = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(t, "# Traffic history benchmark")?;
    writeln!(t)?;
    writeln!(
        t,
        "Written by `cargo xtask bench` (`sekisho-bench-history`); issue #6's targets. \
         Machine: {nproc} CPUs ({cpu}), Linux {}. Figures from one run; the machine is \
         shared, so they move between runs. Load average (1 min) before the run: \
         {load_before}; after the ingest: {load_ingest} (its own thread counts about 1; \
         more than that on this machine means other work took CPU from it).",
        kernel.trim(),
    )?;
    writeln!(t)?;
    writeln!(t, "| figure | measured | target or baseline | ratio |")?;
    writeln!(t, "|---|---|---|---|")?;
    writeln!(
        t,
        "| ingest, one thread (event → WAL → Parquet) | {} records/s | 1,000,000 records/s | {:.2}× target |",
        group(i.rate() as u64),
        i.rate() / INGEST_TARGET
    )?;
    writeln!(
        t,
        "| same, per CPU-second (user + system time of the process) | {} records | 1,000,000 records | {:.2}× target |",
        group((i.records as f64 / i.cpu_seconds) as u64),
        i.records as f64 / i.cpu_seconds / INGEST_TARGET
    )?;
    writeln!(
        t,
        "| same bytes written raw (`File::write_all` + fdatasync) | {} records/s | — | ingest at {:.2}× of raw write |",
        group(i.baseline_rate() as u64),
        i.rate() / i.baseline_rate()
    )?;
    if let Some(r) = ring {
        writeln!(
            t,
            "| kernel ring buffer drained (`Recorder::poll` → append, sync per batch) | {} records/s | 1,000,000 records/s | {:.2}× target |",
            group((r.events as f64 / r.drain_seconds) as u64),
            r.events as f64 / r.drain_seconds / INGEST_TARGET
        )?;
    }
    writeln!(
        t,
        "| bytes on disk per sealed record (ingest's segments) | {:.2} B | 16 B (nfdump zstd ≈ 29 B) | {:.2}× target |",
        i.bytes_per_record(),
        i.bytes_per_record() / BYTES_TARGET
    )?;
    writeln!(
        t,
        "| bytes on disk per sealed record (query history) | {:.2} B | 16 B | {:.2}× target |",
        d.bytes as f64 / d.records as f64,
        d.bytes as f64 / d.records as f64 / BYTES_TARGET
    )?;
    for q in queries {
        writeln!(
            t,
            "| one day of `{}` ({} records) in {} records, the records: `history query`, median of {QUERY_RUNS} | {} | DuckDB, every column of the same rows: {} | {:.2}× DuckDB's time |",
            q.asset,
            group(q.sekisho.count),
            group(d.records),
            ms(q.sekisho.median),
            ms(q.duckdb_columns.median),
            q.query_ratio
        )?;
        writeln!(
            t,
            "| same, how many: `history query --count`, median of {QUERY_RUNS} | {} | DuckDB `count(*)` over all files: {} | {:.2}× DuckDB's time |",
            ms(q.sekisho_count.median),
            ms(q.duckdb_all.median),
            q.count_ratio
        )?;
    }
    writeln!(t)?;

    writeln!(t, "## Ingest")?;
    writeln!(t)?;
    writeln!(
        t,
        "{} records of `segment::synthetic` traffic (a 住基ネット segment: 4 CS, 300 terminals, \
         two peers; 70 % allowed, 30 % denied; a start and an end record per flow), made into \
         kernel `FlowEvent`s before timing. Timed, on one thread: `recorder::event_record` \
         (address → asset, role and peer; rule and interface names; kernel clock → wall \
         clock), `History::append` (WAL frame: encoding, CRC-32C, buffered write; the record \
         added to the hour's partial segment, whose row groups of 262,144 records are \
         sorted, encoded, zstd-compressed and written as they fill), `History::sync` \
         (fdatasync) once per second of wall time ({} syncs), and `History::seal_due` each \
         time the `ManualClock` — set to each record's arrival time — enters a new hour: the \
         partial segment's last row group and footer, fsync, SHA-256, rename into place, \
         manifest append, delete the WAL ({} seals, the last, partial hour included, so \
         every record is in Parquet when the clock stops; each hour's writer takes the \
         finished one's buffers, as in the daemon). {:.2} s in all, of which sealing {:.2} s \
         and syncing {:.2} s: appending (WAL and partial segment) runs at {} records/s, \
         sealing at {} records/s. CPU time (user and system) {:.2} s, {:.2} s of it \
         sealing; the rest of the wall time is waiting for the disk (fsync): {} records per \
         CPU-second. An hour at 1 M/s holds 3.6 billion records; here an hour holds about \
         333,000, so the fixed cost of a seal (two fsyncs, the manifest entry, deleting the \
         WAL) weighs about ten thousand times more than it would.",
        group(i.records),
        i.syncs,
        i.seals,
        i.seconds,
        i.seal_seconds,
        i.sync_seconds,
        group((i.records as f64 / (i.seconds - i.seal_seconds - i.sync_seconds)) as u64),
        group((i.records as f64 / i.seal_seconds) as u64),
        i.cpu_seconds,
        i.seal_cpu_seconds,
        group((i.records as f64 / i.cpu_seconds) as u64)
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "End records come, in the daemon, from `Recorder::sweep` reading the flow tables, not \
         from the ring buffer; here they pass as `EVENT_CUT` events through the same \
         `event_record` conversion, and their verdict and close reason are set from the \
         synthetic record (a cut would fix them to allow/cut). A sample of the converted \
         records is checked equal to `synthetic`'s. Interfaces are real ones of this machine \
         (`lo`, `eth0`), not `lan0`/`wan0`."
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "Baseline: the same records' WAL frames ({} MB, encoded before timing) written to one \
         file in 1 MiB `write_all`s and one fdatasync, median of 3: {:.2} s. It is the disk's \
         floor for the WAL alone; the ingest also encodes and writes the Parquet segments.",
        i.wal_bytes / 1_000_000,
        i.baseline_seconds
    )?;
    writeln!(t)?;
    if let Some(r) = ring {
        writeln!(t, "## The kernel's ring buffer")?;
        writeln!(t)?;
        writeln!(
            t,
            "sekisho's programs loaded (unpinned) with configs/demo.toml; {} distinct denied \
             UDP flows (192.0.2.21 → 203.0.113.9–14, one event each) made with \
             BPF_PROG_TEST_RUN in batches of {} (the ring holds about 37,000 events), each \
             batch then drained by `Recorder::poll` into `History::append` and one \
             `History::sync`. {} events read, {} lost. Drain: {:.3} s ({} records/s). \
             Filling the ring through one syscall per packet took {:.2} s and is not the \
             recorder's cost, so it is left out. Denied first packets are the events whose \
             names all resolve (asset and peer). The drain includes one fdatasync per batch of \
             {} records; at a sustained 1 M/s the daemon syncs once per about 1 M.",
            group((RING_BATCHES * RING_BATCH) as u64),
            group(RING_BATCH as u64),
            group(r.events),
            r.lost,
            r.drain_seconds,
            group((r.events as f64 / r.drain_seconds) as u64),
            r.fill_seconds,
            group(RING_BATCH as u64)
        )?;
        writeln!(t)?;
    }
    writeln!(t, "## Bytes on disk")?;
    writeln!(t)?;
    writeln!(
        t,
        "Ingest: {} sealed segments, {} bytes for {} records. Query history: {} segments, {} \
         bytes for {} records. Bytes are the Parquet files' sizes as the manifest lists them \
         (footer and statistics included; the manifest itself, about 0.5 KB per segment, not). \
         nfdump was not measured in this run: the 29-byte figure is the issue's.",
        i.segments,
        group(i.segment_bytes),
        group(i.records),
        d.segments,
        group(d.bytes),
        group(d.records)
    )?;
    writeln!(t)?;
    writeln!(t, "## One asset over one day")?;
    writeln!(t)?;
    let origin = match d.generated_seconds {
        Some(s) => format!("written in this run in {s:.0} s on 2 threads"),
        None => "reused from an earlier run (`--keep`), unchanged".to_owned(),
    };
    writeln!(
        t,
        "The history: {} records in {} hourly segments (13 days from 2026-03-31T15:00Z; each \
         hour `segment::synthetic` with its own seed, written by `segment::write` and entered \
         in the manifest), {origin}. The query: records of the asset (source or destination) \
         overlapping {QUERY_DAY} + 24 h, asked two ways: the records themselves (what \
         `history query` prints) and how many there are (`history query --count`). sekisho: \
         `query::query` and `query::count` in this process (manifest, segment pruning by \
         time, row-group and page statistics, dictionary test of the asset columns; \
         `query` decodes every column of the matching records and hands them over in \
         order, `count` reads only the filter's columns), segments on as many threads as \
         the machine has cores. DuckDB {}: `python3`, one connection opened before timing, \
         `execute(...).fetchall()` of",
        group(d.records),
        d.segments,
        queries.first().map_or("?", |q| q.duckdb_version.as_str())
    )?;
    writeln!(t)?;
    writeln!(t, "```sql")?;
    writeln!(
        t,
        "SELECT count(*) FROM read_parquet('<root>/segments/**/*.parquet')\n WHERE \"first\" <= TIMESTAMPTZ '<day end>' AND \"last\" >= TIMESTAMPTZ '<day start>'\n   AND (src_asset = '<asset>' OR dst_asset = '<asset>')"
    )?;
    writeln!(t, "```")?;
    writeln!(t)?;
    writeln!(
        t,
        "timed in {QUERY_RUNS} rounds, each running sekisho's `query`, DuckDB's every column, \
         sekisho's `count` and DuckDB's three counts once, in that order, so that whatever \
         else the machine does in a round weighs on both sides (times are medians; a ratio \
         is the median of the rounds' ratios; \"first\" is the first run in the process, \
         with the files in the page cache either way). DuckDB runs with its default {} threads, and \
         again with one; \"day's files\" gives DuckDB the list of segments overlapping the \
         day instead of the glob; \"every column\" makes DuckDB read all columns of the \
         matching rows (`SELECT count(*), max(hash(t)) FROM (SELECT * … WHERE …) t`), the \
         work `query` does to return whole records, where `count(*)` reads only the \
         filter's columns, as `count` does. The counts agree in every row (the bench fails \
         otherwise).",
        queries.first().map_or("?", |q| q.duckdb_threads.as_str())
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "| asset | records | sekisho `query` median (first) | DuckDB every column | `query` / DuckDB every column | sekisho `count` median (first) | DuckDB `count(*)` all files (first) | DuckDB all files, 1 thread | DuckDB day's {} files | `count` / DuckDB all files |",
        queries.first().map_or(0, |q| q.day_files)
    )?;
    writeln!(t, "|---|---|---|---|---|---|---|---|---|---|")?;
    for q in queries {
        writeln!(
            t,
            "| `{}` | {} | {} ({}) | {} | {:.2}× | {} ({}) | {} ({}) | {} | {} | {:.2}× |",
            q.asset,
            group(q.sekisho.count),
            ms(q.sekisho.median),
            ms(q.sekisho.first),
            ms(q.duckdb_columns.median),
            q.query_ratio,
            ms(q.sekisho_count.median),
            ms(q.sekisho_count.first),
            ms(q.duckdb_all.median),
            ms(q.duckdb_all.first),
            ms(q.duckdb_all_1thread.median),
            ms(q.duckdb_day.median),
            q.count_ratio
        )?;
    }
    writeln!(t)?;
    for q in queries {
        writeln!(
            t,
            "`{}`: sekisho read {} of {} segments, {} of {} row groups, scanned {} records.",
            q.asset,
            q.segments_read,
            d.segments,
            q.row_groups_read,
            q.row_groups_total,
            group(q.records_scanned)
        )?;
    }
    Ok(t)
}
