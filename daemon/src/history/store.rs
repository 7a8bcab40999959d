//! `History`: the traffic history on disk, as the daemon writes it.
//!
//! Under the history root: `wal/<hour>.wal` (the write-ahead log, one file per hour of
//! arrival), `segments/YYYY/MM/DD/HH.parquet` (sealed hours, UTC), `manifest.jsonl` and
//! `manifest.head` (the chained list of segments), and `lock`, held by the one process
//! that writes.
//!
//! # Invariants
//! - Recording never stops enforcement: [`History::append`] has no error. A record that
//!   cannot be written (disk full, I/O error) is counted as unrecorded, and before the next
//!   record that is written, a [`Record::gap`] says how many events are missing and when.
//!   A gap that is itself lost is counted again in the next one, never twice in
//!   [`Health::unrecorded_total`].
//! - A record is durable once [`History::sync`] returns `Ok`. A failed write or sync cuts
//!   the log back to its last sync, so what is unknown is counted as lost rather than
//!   guessed (after a failed fdatasync the kernel may have dropped the pages).
//! - The hour being written is also encoded into its segment as records come
//!   (`wal/<hour>.segment.partial`, a row group at a time), so that sealing need not read
//!   the hour back. The partial segment is used only if it holds exactly what the WAL
//!   holds: its WAL file was created empty by this process and no write to it failed.
//!   Otherwise (a restart within the hour, a failed write, a crash) it is deleted and the
//!   hour is sealed from the WAL.
//! - A WAL hour is sealed only once it is over, and deleted only after its segment is in
//!   the manifest. Every step of sealing can be interrupted: the WAL is the truth until
//!   the manifest lists the segment, so a segment file the manifest does not list is
//!   written again, and a listed one whose WAL is still there just loses the WAL.
//! - Retention enters a `removed` entry before deleting the file, and never removes a
//!   segment with a record younger than the retention.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;

use jiff::Span;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use nix::fcntl::Flock;
use nix::fcntl::FlockArg;

use super::manifest;
use super::manifest::Entry;
use super::manifest::EntryKind;
use super::manifest::ManifestError;
use super::manifest::NewEntry;
use super::record::Record;
use super::segment;
use super::segment::SegmentError;
use super::wal;
use super::wal::Lost;
use super::wal::WalError;
use super::wal::WalWriter;
use crate::config::Retention;

/// The lock file in the history root.
pub const LOCK_FILE: &str = "lock";

const HOUR_US: i64 = 3_600_000_000;

/// Errors are logged at most this often; the counts keep running in between.
const LOG_EVERY_US: i64 = 60_000_000;

/// After the log could not be opened, appends do not try again for this long (each try
/// scans the hour's file).
const RETRY_OPEN_US: i64 = 1_000_000;

/// The time, in microseconds since the Unix epoch. Tests pass a [`ManualClock`].
pub trait Clock: Send + 'static {
    fn now_us(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        Timestamp::now().as_microsecond()
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(now_us: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now_us)))
    }

    pub fn set(&self, now_us: i64) {
        self.0.store(now_us, Ordering::Relaxed);
    }

    pub fn advance(&self, us: i64) {
        self.0.fetch_add(us, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the history could not be opened, synced, sealed or pruned.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot seal write-ahead log {}", .wal.display())]
    Segment {
        wal: PathBuf,
        #[source]
        source: SegmentError,
    },
    #[error("cannot {action} {}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("traffic history {} is in use by another process", .path.display())]
    Locked { path: PathBuf },
    #[error(
        "write-ahead log {} holds {wal_records} records, but {segment} (entry {seq}) is listed \
         with {records} records or does not match its SHA-256; the log is kept, run \
         `sekishoctl history verify`",
        .wal.display()
    )]
    Conflict {
        wal: PathBuf,
        segment: String,
        seq: u64,
        wal_records: u64,
        records: u64,
    },
    #[error(
        "the write-ahead log cannot be opened now; {events} events are waiting to be recorded as a gap"
    )]
    Unavailable { events: u64 },
    #[error("time {us} µs is out of range for retention {retention}")]
    Time { us: i64, retention: Retention },
}

/// How recording is going, for metrics and `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// Records are being lost now (from a failure until a sync succeeds with every loss
    /// accounted for by a gap record).
    pub degraded: bool,
    /// Events that could not be written, since this `History` was opened.
    pub unrecorded_total: u64,
    /// The most recent failure, kept after recovery.
    pub last_error: Option<String>,
    /// Bytes appended but not yet fdatasynced.
    pub wal_bytes_pending: u64,
    /// Clock time of the last successful sync (0: none yet).
    pub last_sync_us: i64,
    /// Records (gaps included) made durable since this `History` was opened.
    pub records_total: u64,
}

/// The traffic history, open for writing by one process.
pub struct History {
    root: PathBuf,
    wal_dir: PathBuf,
    clock: Box<dyn Clock>,
    _lock: Flock<File>,
    writer: Option<WalWriter>,
    /// Segments of the hours being written (the current one, and a finished one until it
    /// is sealed), each holding what its WAL file holds.
    building: Vec<Building>,
    /// A finished segment writer's memory, for the next hour's.
    spare: Option<segment::Buffers>,
    /// The newest hour written to: when the clock goes back, records keep going to it
    /// rather than to an hour that may be sealed already.
    hour: i64,
    /// Lost and not yet covered by a gap record in the log.
    unrecorded: Lost,
    unrecorded_total: u64,
    records_total: u64,
    degraded: bool,
    last_error: Option<String>,
    last_log_us: Option<i64>,
    suppressed: u64,
    last_sync_us: i64,
    retry_open_at_us: i64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("root", &self.root)
            .field("hour", &self.hour)
            .field("health", &self.health())
            .finish()
    }
}

impl History {
    /// Opens (creating if needed) the history at `root` and locks it for this process.
    /// Opens no log file yet: the first append does.
    pub fn open(root: &Path, clock: impl Clock) -> Result<History, HistoryError> {
        let wal_dir = root.join(wal::DIR);
        for dir in [root, &wal_dir, &root.join(manifest::SEGMENTS_DIR)] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|source| HistoryError::Io {
                    path: dir.to_owned(),
                    action: "create directory",
                    source,
                })?;
        }
        let lock_path = root.join(LOCK_FILE);
        let lock_file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| HistoryError::Io {
                path: lock_path.clone(),
                action: "open lock file",
                source,
            })?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| HistoryError::Locked { path: lock_path })?;
        manifest::init(root)?;
        remove_partials(&wal_dir);
        Ok(History {
            root: root.to_owned(),
            wal_dir,
            clock: Box::new(clock),
            _lock: lock,
            writer: None,
            building: Vec::new(),
            spare: None,
            hour: i64::MIN,
            unrecorded: Lost::default(),
            unrecorded_total: 0,
            records_total: 0,
            degraded: false,
            last_error: None,
            last_log_us: None,
            suppressed: 0,
            last_sync_us: 0,
            retry_open_at_us: i64::MIN,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends one record to the log (buffered: durable after the next [`History::sync`]).
    /// Never fails: a record that cannot be written is counted, and a gap record covers it.
    pub fn append(&mut self, rec: &Record) {
        let now = self.clock.now_us();
        let _ = self.put(now, Some(rec));
    }

    /// Writes everything appended so far and fdatasyncs it. First writes the gap record
    /// for earlier losses, if one is waiting.
    pub fn sync(&mut self) -> Result<(), HistoryError> {
        let now = self.clock.now_us();
        if !self.unrecorded.is_empty() {
            self.put(now, None)?;
        }
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        let result = self.sync_writer(now, &mut writer);
        self.keep_writer(now, writer);
        result.map_err(HistoryError::Wal)
    }

    /// How recording is going.
    pub fn health(&self) -> Health {
        Health {
            degraded: self.degraded,
            unrecorded_total: self.unrecorded_total,
            last_error: self.last_error.clone(),
            wal_bytes_pending: self.writer.as_ref().map_or(0, WalWriter::unsynced_bytes),
            last_sync_us: self.last_sync_us,
            records_total: self.records_total,
        }
    }

    /// Writes a pending gap record, then `rec`, to the log of the current hour.
    fn put(&mut self, now: i64, rec: Option<&Record>) -> Result<(), HistoryError> {
        let lost_rec = || {
            let mut lost = Lost::default();
            if let Some(rec) = rec {
                lost.add(rec);
            }
            lost
        };
        let mut writer = match self.writer_for(now) {
            Ok(writer) => writer,
            Err(e) => {
                // While waiting to retry, the error that made the log unavailable stays
                // the one reported.
                let cause = (!matches!(e, HistoryError::Unavailable { .. }))
                    .then_some(&e as &dyn std::error::Error);
                self.lose(now, lost_rec(), cause);
                return Err(e);
            }
        };
        if !self.unrecorded.is_empty() {
            let u = self.unrecorded;
            let gap = Record::gap(u.first_us, u.last_us, u.events());
            match writer.append(&gap) {
                Ok(()) => {
                    self.unrecorded = Lost::default();
                    self.build(writer.hour(), &gap);
                }
                Err(e) => return Err(self.writer_failed(now, writer, e, lost_rec())),
            }
        }
        if let Some(rec) = rec {
            if let Err(e) = writer.append(rec) {
                // A failed write reports what it cut, this record included; a record too
                // large to frame is reported on its own.
                let extra = if matches!(e, WalError::Write { .. }) {
                    Lost::default()
                } else {
                    lost_rec()
                };
                return Err(self.writer_failed(now, writer, e, extra));
            }
            self.build(writer.hour(), rec);
        }
        self.keep_writer(now, writer);
        Ok(())
    }

    /// Adds a record written to the WAL of `hour` to that hour's partial segment.
    fn build(&mut self, hour: i64, rec: &Record) {
        let Some(i) = self.building.iter().position(|b| b.hour == hour) else {
            return;
        };
        if let Err(e) = self.building[i].writer.add(rec) {
            tracing::warn!(error = %error_chain(&e), "partial segment abandoned; the hour will be sealed from its write-ahead log");
            self.abandon(hour);
        }
    }

    /// Deletes the partial segment of `hour`: it no longer holds what the WAL holds.
    fn abandon(&mut self, hour: i64) {
        if let Some(i) = self.building.iter().position(|b| b.hour == hour) {
            let b = self.building.swap_remove(i);
            drop(b.writer);
            let _ = std::fs::remove_file(&b.path);
        }
    }

    /// Starts the partial segment of a WAL file just created.
    fn start_building(&mut self, writer: &WalWriter) {
        self.abandon(writer.hour());
        if !writer.is_fresh() {
            return;
        }
        let path = partial_path(&self.wal_dir, writer.hour());
        match segment::Writer::create_with(&path, self.spare.take()) {
            Ok(w) => self.building.push(Building {
                hour: writer.hour(),
                path,
                writer: w,
            }),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "no partial segment; the hour will be sealed from its write-ahead log");
            }
        }
    }

    /// The writer for the hour `now` is in (or a later one already written to), rotating
    /// away from a finished hour and opening the file when needed.
    fn writer_for(&mut self, now: i64) -> Result<WalWriter, HistoryError> {
        let hour = hour_start_s(now).max(self.hour);
        if let Some(mut old) = self.writer.take() {
            if old.hour() == hour {
                return Ok(old);
            }
            // Rotation: the finished hour is made durable before it can be sealed.
            // (A failure is accounted for by sync_writer.)
            let _ = self.sync_writer(now, &mut old);
        }
        if now < self.retry_open_at_us {
            return Err(HistoryError::Unavailable {
                events: self.unrecorded.events(),
            });
        }
        match WalWriter::open(&self.wal_dir, hour) {
            Ok(writer) => {
                self.hour = hour;
                self.start_building(&writer);
                Ok(writer)
            }
            Err(e) => {
                // A damaged file is left for `history verify` and an operator, never
                // rewritten: this hour goes unrecorded (counted) and the next hour's file
                // begins with the gap. Other errors (disk full) are retried soon.
                let damaged = matches!(
                    e,
                    WalError::Corrupt { .. }
                        | WalError::BadMagic { .. }
                        | WalError::BadRecord { .. }
                );
                self.retry_open_at_us = if damaged {
                    (hour + 3600).saturating_mul(1_000_000)
                } else {
                    now.saturating_add(RETRY_OPEN_US)
                };
                Err(e.into())
            }
        }
    }

    /// Puts a writer back, or drops it (to be reopened later) when a failure left it
    /// unusable.
    fn keep_writer(&mut self, now: i64, writer: WalWriter) {
        if writer.is_usable() {
            self.writer = Some(writer);
        } else {
            self.retry_open_at_us = now.saturating_add(RETRY_OPEN_US);
        }
    }

    fn sync_writer(&mut self, now: i64, writer: &mut WalWriter) -> Result<(), WalError> {
        let before = writer.records_synced();
        match writer.flush_and_sync() {
            Ok(()) => {
                self.records_total += writer.records_synced() - before;
                self.last_sync_us = now;
                if self.degraded && self.unrecorded.is_empty() {
                    self.degraded = false;
                    tracing::info!(
                        unrecorded_total = self.unrecorded_total,
                        "traffic history recording again; the gap is in the history"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.abandon(writer.hour());
                self.lose(now, wal_lost(&e), Some(&e));
                Err(e)
            }
        }
    }

    fn writer_failed(
        &mut self,
        now: i64,
        writer: WalWriter,
        e: WalError,
        extra: Lost,
    ) -> HistoryError {
        self.abandon(writer.hour());
        let mut lost = wal_lost(&e);
        lost.merge(&extra);
        self.lose(now, lost, Some(&e));
        self.keep_writer(now, writer);
        e.into()
    }

    /// Accounts for lost events and logs, at most once a minute. `cause` replaces the
    /// reported error.
    fn lose(&mut self, now: i64, lost: Lost, cause: Option<&dyn std::error::Error>) {
        self.unrecorded.merge(&lost);
        self.unrecorded_total += lost.records;
        self.degraded = true;
        if let Some(cause) = cause {
            self.last_error = Some(error_chain(cause));
        }
        let message = self.last_error.as_deref().unwrap_or("unknown error");
        if self
            .last_log_us
            .is_none_or(|t| now.saturating_sub(t) >= LOG_EVERY_US)
        {
            tracing::error!(
                error = %message,
                waiting = self.unrecorded.events(),
                unrecorded_total = self.unrecorded_total,
                suppressed = self.suppressed,
                "traffic history: records are not being written (enforcement continues)"
            );
            self.last_log_us = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    /// Seals every WAL file of a finished hour into a segment, enters it in the manifest
    /// and deletes the WAL. Goes on past a file that fails, and then returns the first
    /// error (the segments sealed before are in the manifest either way).
    pub fn seal_due(&mut self) -> Result<Vec<Entry>, HistoryError> {
        let now = self.clock.now_us();
        let current = hour_start_s(now);
        if let Some(mut writer) = self.writer.take() {
            if writer.hour() < current {
                // No append since the hour ended: close it here, or its buffer would be
                // written to a deleted file.
                let _ = self.sync_writer(now, &mut writer);
            } else {
                self.writer = Some(writer);
            }
        }
        let open = self.writer.as_ref().map(WalWriter::hour);
        let mut sealed = Vec::new();
        let mut first_error = None;
        for (hour, path) in wal::list(&self.root)? {
            if hour >= current || Some(hour) == open {
                continue;
            }
            let built = self.finish_building(hour);
            match seal(&self.root, hour, &path, now, built) {
                Ok(Some(entry)) => sealed.push(entry),
                Ok(None) => {}
                Err(e) => {
                    let message = error_chain(&e);
                    tracing::error!(wal = %path.display(), error = %message, "cannot seal");
                    self.last_error = Some(message);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(sealed),
        }
    }

    /// The finished partial segment of `hour`, if there is one that holds the hour.
    fn finish_building(&mut self, hour: i64) -> Option<Built> {
        let i = self.building.iter().position(|b| b.hour == hour)?;
        let b = self.building.swap_remove(i);
        match b.writer.finish_keeping(&mut self.spare) {
            Ok(info) => Some(Built { path: b.path, info }),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "partial segment abandoned; the hour is sealed from its write-ahead log");
                let _ = std::fs::remove_file(&b.path);
                None
            }
        }
    }

    /// Removes the segments whose newest record is older than `retention` before now
    /// (calendar years and days in UTC), entering a `removed` entry for each first, and
    /// returns those entries for the operation history. Also finishes removals a crash
    /// interrupted.
    pub fn retain(&mut self, retention: Retention) -> Result<Vec<Entry>, HistoryError> {
        let now = self.clock.now_us();
        let cutoff = retention_cutoff_us(now, retention)?;
        let entries = manifest::read(&self.root)?;
        let (live, removed) = replay(&entries);
        let mut expired: Vec<&Entry> = live
            .values()
            .copied()
            .filter(|e| e.max_last_us < cutoff)
            .collect();
        expired.sort_by_key(|e| e.seq);
        let mut done = Vec::new();
        for entry in expired {
            let reason = format!(
                "retention {retention}: newest record {} is older than {}",
                format_us(entry.max_last_us),
                format_us(cutoff)
            );
            let removal = manifest::append(&self.root, entry.removal(now, reason))?;
            remove_segment(&self.root, &entry.path)?;
            tracing::info!(segment = %entry.path, records = entry.records, %retention, "segment removed by retention");
            done.push(removal);
        }
        for path in removed {
            if self.root.join(path).exists() {
                remove_segment(&self.root, path)?;
            }
        }
        Ok(done)
    }

    /// [`stats`] of this history.
    pub fn stats(&self) -> Result<Stats, HistoryError> {
        stats(&self.root)
    }

    /// [`disk_usage`] of this history.
    pub fn disk_usage(&self) -> u64 {
        disk_usage(&self.root)
    }

    /// Drops the buffered records without writing them, as a crash would.
    #[cfg(test)]
    fn crash(mut self) {
        if let Some(writer) = self.writer.take() {
            std::mem::forget(writer);
        }
    }
}

impl Drop for History {
    /// A clean stop writes what is buffered; the daemon still syncs first, to hear of errors.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.sync();
        }
    }
}

/// What a failed WAL write says was lost.
fn wal_lost(e: &WalError) -> Lost {
    match e {
        WalError::Write { lost, .. } => *lost,
        _ => Lost::default(),
    }
}

/// An error and its sources, `: `-separated, for logs and `Health::last_error`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The start (Unix seconds) of the UTC hour `us` is in.
fn hour_start_s(us: i64) -> i64 {
    us.div_euclid(HOUR_US) * 3600
}

fn format_us(us: i64) -> String {
    Timestamp::from_microsecond(us).map_or_else(|_| format!("{us} µs"), |t| t.to_string())
}

/// `segments/YYYY/MM/DD/HH` of the UTC hour starting at `hour` (Unix seconds): where the
/// log of that hour is sealed.
pub fn segment_stem(hour: i64) -> Option<String> {
    let t = Timestamp::from_second(hour).ok()?.to_zoned(TimeZone::UTC);
    Some(format!(
        "{}/{:04}/{:02}/{:02}/{:02}",
        manifest::SEGMENTS_DIR,
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    ))
}

/// The oldest `max_last_us` a segment may have and be kept.
fn retention_cutoff_us(now: i64, retention: Retention) -> Result<i64, HistoryError> {
    let err = || HistoryError::Time { us: now, retention };
    let span = match retention {
        Retention::Years(n) => Span::new().try_years(n),
        Retention::Days(n) => Span::new().try_days(n),
    }
    .map_err(|_| err())?;
    let cutoff = Timestamp::from_microsecond(now)
        .map_err(|_| err())?
        .to_zoned(TimeZone::UTC)
        .checked_sub(span)
        .map_err(|_| err())?;
    Ok(cutoff.timestamp().as_microsecond())
}

/// The live segments by path, and the paths of removed ones, from the entries in order.
fn replay(entries: &[Entry]) -> (HashMap<&str, &Entry>, Vec<&str>) {
    let mut live: HashMap<&str, &Entry> = HashMap::new();
    let mut removed = Vec::new();
    for entry in entries {
        if !manifest::is_segment_path(&entry.path) {
            continue;
        }
        match entry.kind {
            EntryKind::Sealed => {
                removed.retain(|p| *p != entry.path);
                live.insert(&entry.path, entry);
            }
            EntryKind::Removed => {
                if live
                    .get(entry.path.as_str())
                    .is_some_and(|e| Some(e.seq) == entry.removes)
                {
                    live.remove(entry.path.as_str());
                    removed.push(entry.path.as_str());
                }
            }
        }
    }
    (live, removed)
}

/// The segment of an hour being written (module documentation, "Invariants").
struct Building {
    hour: i64,
    path: PathBuf,
    writer: segment::Writer,
}

/// A finished partial segment: the sealed form of its WAL file, not yet in place.
struct Built {
    path: PathBuf,
    info: segment::SegmentInfo,
}

fn partial_path(wal_dir: &Path, hour: i64) -> PathBuf {
    wal_dir.join(format!("{hour}.segment.partial"))
}

/// Deletes the partial segments a crash left (nobody else writes here: the lock is held).
fn remove_partials(wal_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(wal_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".segment.partial")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Seals one finished hour (module documentation, "Invariants"), from its partial segment
/// when there is one, else from the WAL.
fn seal(
    root: &Path,
    hour: i64,
    wal_path: &Path,
    now: i64,
    built: Option<Built>,
) -> Result<Option<Entry>, HistoryError> {
    let wal_dir = wal_path.parent().unwrap_or(root);
    let discard = |built: &Option<Built>| {
        if let Some(b) = built {
            let _ = std::fs::remove_file(&b.path);
        }
    };
    let (wal_records, mut contents) = match &built {
        Some(b) => (b.info.records, None),
        None => {
            let contents = wal::read(wal_path)?;
            (contents.records.len() as u64, Some(contents))
        }
    };
    if wal_records == 0 {
        discard(&built);
        remove_wal(wal_path, wal_dir)?;
        return Ok(None);
    }
    let stem = segment_stem(hour).ok_or(HistoryError::Time {
        us: hour.saturating_mul(1_000_000),
        retention: Retention::Days(1),
    })?;
    let entries = manifest::read(root)?;
    let (live, _) = replay(&entries);
    let mut rel = format!("{stem}.parquet");
    for n in 1.. {
        let Some(listed) = live.get(rel.as_str()) else {
            break;
        };
        // Listed already: sealed before a crash that kept the WAL, or (the clock went back
        // past a sealed hour) a second batch for the same hour, which gets its own name.
        if listed.records == wal_records {
            let matches = manifest::file_sha256(&root.join(&rel))
                .is_ok_and(|(sha, bytes)| sha == listed.sha256 && bytes == listed.bytes);
            discard(&built);
            if !matches {
                return Err(HistoryError::Conflict {
                    wal: wal_path.to_owned(),
                    segment: rel,
                    seq: listed.seq,
                    wal_records,
                    records: listed.records,
                });
            }
            tracing::info!(segment = %rel, "segment sealed before an interruption; deleting its WAL");
            remove_wal(wal_path, wal_dir)?;
            return Ok(None);
        }
        rel = format!("{stem}.{n}.parquet");
    }

    let path = root.join(&rel);
    let dir = path.parent().unwrap_or(root);
    create_dirs(root, dir)?;
    let tmp = path.with_extension("parquet.tmp");
    let info = match built {
        Some(b) => {
            std::fs::rename(&b.path, &tmp).map_err(|source| {
                let _ = std::fs::remove_file(&b.path);
                HistoryError::Io {
                    path: b.path.clone(),
                    action: "move partial segment",
                    source,
                }
            })?;
            b.info
        }
        None => {
            let mut records = contents.take().map(|c| c.records).unwrap_or_default();
            segment::write(&tmp, &mut records).map_err(|source| {
                let _ = std::fs::remove_file(&tmp);
                HistoryError::Segment {
                    wal: wal_path.to_owned(),
                    source,
                }
            })?
        }
    };
    let io = |action| {
        let tmp = tmp.clone();
        move |source| HistoryError::Io {
            path: tmp,
            action,
            source,
        }
    };
    let (sha256, bytes) = manifest::file_sha256(&tmp).map_err(io("hash segment"))?;
    std::fs::rename(&tmp, &path)
        .and_then(|()| manifest::sync_dir(dir))
        .map_err(io("move segment into place"))?;
    let entry = manifest::append(root, NewEntry::sealed(rel, &info, sha256, bytes, now))?;
    remove_wal(wal_path, wal_dir)?;
    Ok(Some(entry))
}

fn remove_wal(wal_path: &Path, wal_dir: &Path) -> Result<(), HistoryError> {
    std::fs::remove_file(wal_path)
        .and_then(|()| manifest::sync_dir(wal_dir))
        .map_err(|source| HistoryError::Io {
            path: wal_path.to_owned(),
            action: "delete sealed write-ahead log",
            source,
        })
}

/// Creates `dir` and its parents up to `root`, syncing each parent whose entries changed,
/// so that a sealed segment's directory survives a crash.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), HistoryError> {
    if dir.exists() || dir == root {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(root);
    create_dirs(root, parent)?;
    let err = |source| HistoryError::Io {
        path: dir.to_owned(),
        action: "create directory",
        source,
    };
    match std::fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    manifest::sync_dir(parent).map_err(err)
}

/// Deletes a segment file (gone already is fine) and the directories it leaves empty.
fn remove_segment(root: &Path, rel: &str) -> Result<(), HistoryError> {
    let path = root.join(rel);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(HistoryError::Io {
                path,
                action: "remove segment",
                source,
            });
        }
    }
    let segments = root.join(manifest::SEGMENTS_DIR);
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(&segments) && *d != segments) {
        let _ = manifest::sync_dir(d);
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    let _ = manifest::sync_dir(dir.unwrap_or(root));
    Ok(())
}

/// Records and bytes of one calendar month (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MonthStats {
    /// `"2026-11"`.
    pub month: String,
    pub records: u64,
    pub bytes: u64,
}

/// What `sekishoctl history stats` shows. Totals include the unsealed log (`wal_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub records: u64,
    /// Segments and log files.
    pub bytes_on_disk: u64,
    /// Earliest `first_us` and latest `last_us` of any record; `None` when empty.
    pub oldest_us: Option<i64>,
    pub newest_us: Option<i64>,
    /// By month of arrival (the hour a segment or log file holds), oldest first.
    pub by_month: Vec<MonthStats>,
    pub wal_records: u64,
    pub wal_bytes: u64,
}

/// Counts the history from the manifest and the log files, without reading segments.
pub fn stats(root: &Path) -> Result<Stats, HistoryError> {
    let entries = manifest::read(root)?;
    let (live, _) = replay(&entries);
    let mut stats = Stats::default();
    let mut months: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let span = |stats: &mut Stats, first: i64, last: i64| {
        stats.oldest_us = Some(stats.oldest_us.map_or(first, |o| o.min(first)));
        stats.newest_us = Some(stats.newest_us.map_or(last, |n| n.max(last)));
    };
    for entry in live.values() {
        stats.records += entry.records;
        stats.bytes_on_disk += entry.bytes;
        span(&mut stats, entry.min_first_us, entry.max_last_us);
        let month = month_of_path(&entry.path).unwrap_or_else(|| month_of_us(entry.max_last_us));
        let m = months.entry(month).or_default();
        m.0 += entry.records;
        m.1 += entry.bytes;
    }
    for (hour, path) in wal::list(root)? {
        let mut records = 0;
        let mut times: Option<(i64, i64)> = None;
        let scanned = wal::scan(&path, |_, payload| {
            if let Some((first, last)) = wal::times(payload) {
                times = Some(times.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
            }
            records += 1;
            Ok(())
        })?;
        if let Some((first, last)) = times {
            span(&mut stats, first, last);
        }
        stats.wal_records += records;
        stats.wal_bytes += scanned.valid_len;
        let m = months
            .entry(month_of_us(hour.saturating_mul(1_000_000)))
            .or_default();
        m.0 += records;
        m.1 += scanned.valid_len;
    }
    stats.records += stats.wal_records;
    stats.bytes_on_disk += stats.wal_bytes;
    stats.by_month = months
        .into_iter()
        .map(|(month, (records, bytes))| MonthStats {
            month,
            records,
            bytes,
        })
        .collect();
    Ok(stats)
}

/// `"YYYY-MM"` from `segments/YYYY/MM/…`.
fn month_of_path(path: &str) -> Option<String> {
    let mut parts = path.split('/').skip(1);
    let (year, month) = (parts.next()?, parts.next()?);
    let digits = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(year, 4) && digits(month, 2)).then(|| format!("{year}-{month}"))
}

fn month_of_us(us: i64) -> String {
    Timestamp::from_microsecond(us).map_or_else(
        |_| "unknown".to_owned(),
        |t| {
            let t = t.to_zoned(TimeZone::UTC);
            format!("{:04}-{:02}", t.year(), t.month())
        },
    )
}

/// Bytes the history root takes on disk (allocated blocks, as `du` counts them); what
/// cannot be read counts as 0.
pub fn disk_usage(root: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::history::record::Event;
    use crate::history::record::Verdict;
    use crate::testutil::TempDir;

    /// 2026-11-23T15:00:00Z.
    const H15: i64 = 1_795_446_000 * 1_000_000;
    const MINUTE: i64 = 60_000_000;
    const DAY: i64 = 24 * HOUR_US;

    fn rec(i: u64, at_us: i64) -> Record {
        Record {
            event: if i.is_multiple_of(2) {
                Event::Start
            } else {
                Event::End
            },
            first_us: at_us - 1000,
            last_us: at_us,
            verdict: Verdict::Allow,
            reason: 1,
            generation: 7,
            rule: 3,
            rule_name: Some("juki".into()),
            interface: Some("lan0".into()),
            proto: 6,
            src: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 250) as u8))),
            dst: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            sport: (i % 60000) as u16 + 1024,
            dport: 443,
            src_asset: Some("cs01".into()),
            src_role: Some("terminal".into()),
            dst_asset: Some("juki-server".into()),
            packets_fwd: i,
            bytes_fwd: i * 100,
            ..Record::default()
        }
    }

    fn wal_records(root: &Path) -> Vec<Record> {
        wal::list(root)
            .unwrap()
            .iter()
            .flat_map(|(_, path)| wal::read(path).unwrap().records)
            .collect()
    }

    #[test]
    fn appends_are_durable_after_sync_and_health_says_so() {
        let tmp = TempDir::new("history-sync");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        let recs: Vec<Record> = (0..100).map(|i| rec(i, H15 + MINUTE)).collect();
        for r in &recs {
            h.append(r);
        }
        assert!(h.health().wal_bytes_pending > 0);
        h.sync().unwrap();
        let health = h.health();
        assert_eq!(
            health,
            Health {
                degraded: false,
                unrecorded_total: 0,
                last_error: None,
                wal_bytes_pending: 0,
                last_sync_us: H15 + MINUTE,
                records_total: 100,
            }
        );
        assert_eq!(
            wal::list(tmp.path()).unwrap()[0].1,
            tmp.join("wal/1795446000.wal")
        );
        assert_eq!(wal_records(tmp.path()), recs);
        // One writer per history.
        assert!(matches!(
            History::open(tmp.path(), clock),
            Err(HistoryError::Locked { .. })
        ));
    }

    #[test]
    fn crash_keeps_exactly_the_synced_records() {
        let tmp = TempDir::new("history-crash");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        let synced: Vec<Record> = (0..500).map(|i| rec(i, H15 + MINUTE)).collect();
        for r in &synced {
            h.append(r);
        }
        h.sync().unwrap();
        for i in 500..700 {
            h.append(&rec(i, H15 + MINUTE));
        }
        h.crash();
        // And the crash interrupted a write: half a frame at the end of the file.
        let path = wal::list(tmp.path()).unwrap()[0].1.clone();
        let mut payload = Vec::new();
        wal::encode(&rec(700, H15), &mut payload);
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload[..payload.len() / 2]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &frame).unwrap();

        let contents = wal::read(&path).unwrap();
        assert_eq!(contents.records, synced);
        assert!(contents.torn_tail);
        let mut h = History::open(tmp.path(), clock).unwrap();
        let next = rec(701, H15 + 2 * MINUTE);
        h.append(&next);
        h.sync().unwrap();
        let contents = wal::read(&path).unwrap();
        assert!(!contents.torn_tail);
        assert_eq!(contents.records.len(), 501);
        assert_eq!(contents.records[..500], synced[..]);
        assert_eq!(contents.records[500], next);
    }

    #[test]
    fn seal_moves_a_finished_hour_into_a_segment() {
        let tmp = TempDir::new("history-seal");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        for i in 0..1000 {
            h.append(&rec(i, H15 + MINUTE + i as i64));
        }
        h.sync().unwrap();
        // Not before the hour is over.
        clock.set(H15 + HOUR_US - 1);
        assert_eq!(h.seal_due().unwrap(), Vec::new());
        let wal_path = tmp.join("wal/1795446000.wal");
        assert!(wal_path.exists());
        let kept = std::fs::read(&wal_path).unwrap();

        // The next hour: appends go to a new file, the finished one is sealed.
        clock.set(H15 + HOUR_US + MINUTE);
        h.append(&rec(5000, H15 + HOUR_US + MINUTE));
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        let e = &sealed[0];
        assert_eq!(
            (e.seq, e.kind, e.path.as_str(), e.records),
            (1, EntryKind::Sealed, "segments/2026/11/23/15.parquet", 1000)
        );
        assert_eq!(
            (e.min_first_us, e.max_last_us),
            (H15 + MINUTE - 1000, H15 + MINUTE + 999)
        );
        assert_eq!(e.sealed_at_us, H15 + HOUR_US + MINUTE);
        assert!(!wal_path.exists());
        assert!(tmp.join("segments/2026/11/23/15.parquet").exists());
        assert_eq!(manifest::read(tmp.path()).unwrap(), sealed);
        let report = manifest::verify(tmp.path());
        assert!(report.ok, "{report:?}");
        assert_eq!(
            wal::list(tmp.path()).unwrap(),
            vec![(1_795_449_600, tmp.join("wal/1795449600.wal"))],
            "the current hour stays in the log"
        );

        // A crash after the manifest entry, before the WAL was deleted: sealing again only
        // deletes the WAL.
        std::fs::write(&wal_path, &kept).unwrap();
        assert_eq!(h.seal_due().unwrap(), Vec::new());
        assert!(!wal_path.exists());
        assert_eq!(manifest::read(tmp.path()).unwrap().len(), 1);

        // A crash after the segment was moved into place, before the manifest entry: the
        // file is written again and listed.
        clock.set(H15 + 2 * HOUR_US + MINUTE);
        h.append(&rec(6000, H15 + 2 * HOUR_US + MINUTE));
        std::fs::create_dir_all(tmp.join("segments/2026/11/23")).unwrap();
        std::fs::write(tmp.join("segments/2026/11/23/16.parquet"), b"half").unwrap();
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].path, "segments/2026/11/23/16.parquet");
        let report = manifest::verify(tmp.path());
        assert!(report.ok, "{report:?}");

        h.sync().unwrap();
        let stats = h.stats().unwrap();
        assert_eq!(stats.records, 1002);
        assert_eq!(stats.wal_records, 1);
        assert_eq!(stats.oldest_us, Some(H15 + MINUTE - 1000));
        assert_eq!(stats.newest_us, Some(H15 + 2 * HOUR_US + MINUTE));
        assert_eq!(stats.by_month.len(), 1);
        assert_eq!(
            (stats.by_month[0].month.as_str(), stats.by_month[0].records),
            ("2026-11", 1002)
        );
        assert!(h.disk_usage() >= stats.bytes_on_disk);
    }

    #[test]
    fn seal_closes_an_idle_writer_of_a_finished_hour() {
        let tmp = TempDir::new("history-idle");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        h.append(&rec(1, H15 + MINUTE));
        // Buffered, never synced; no append after the hour ended.
        clock.set(H15 + HOUR_US + MINUTE);
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].records, 1);
        assert_eq!(h.health().records_total, 1);
    }

    #[test]
    fn the_clock_going_back_does_not_reopen_a_sealed_hour() {
        let tmp = TempDir::new("history-back");
        let clock = ManualClock::new(H15 + HOUR_US + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        h.append(&rec(1, H15 + HOUR_US + MINUTE));
        clock.set(H15 + MINUTE);
        h.append(&rec(2, H15 + MINUTE));
        h.sync().unwrap();
        assert_eq!(
            wal::list(tmp.path()).unwrap(),
            vec![(1_795_449_600, tmp.join("wal/1795449600.wal"))]
        );
        assert_eq!(wal_records(tmp.path()).len(), 2);
    }

    #[test]
    fn retention_removes_only_what_has_expired() {
        let tmp = TempDir::new("history-retain");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        let newest = H15 + 2 * MINUTE;
        h.append(&rec(1, H15 + MINUTE));
        h.append(&rec(2, newest));
        // A second segment two days later.
        clock.set(H15 + 2 * DAY);
        h.append(&rec(3, H15 + 2 * DAY));
        clock.set(H15 + 2 * DAY + HOUR_US);
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 2);
        assert_eq!(sealed[0].max_last_us, newest);

        let seven_years = |us: i64| {
            Timestamp::from_microsecond(us)
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .checked_add(Span::new().years(7))
                .unwrap()
                .timestamp()
                .as_microsecond()
        };
        // 2033-11-23 is 7 calendar years later: 2557 days, not 7 × 365.
        assert_eq!(seven_years(newest) - newest, 2557 * DAY);
        clock.set(seven_years(newest) - DAY);
        assert_eq!(h.retain(Retention::Years(7)).unwrap(), Vec::new());
        assert!(tmp.join(&sealed[0].path).exists());

        clock.set(seven_years(newest) + DAY);
        let removed = h.retain(Retention::Years(7)).unwrap();
        assert_eq!(removed.len(), 1);
        let r = &removed[0];
        assert_eq!(
            (r.seq, r.kind, r.removes, r.path.as_str()),
            (3, EntryKind::Removed, Some(1), sealed[0].path.as_str())
        );
        assert!(r.reason.as_deref().unwrap().starts_with("retention 7y"));
        assert!(!tmp.join(&sealed[0].path).exists());
        assert!(tmp.join(&sealed[1].path).exists());
        let report = manifest::verify(tmp.path());
        assert!(report.ok && report.notes.is_empty(), "{report:?}");
        assert_eq!((report.live_segments, report.removed_segments), (1, 1));
        // Nothing more to do on a second pass.
        assert_eq!(h.retain(Retention::Years(7)).unwrap(), Vec::new());
        assert_eq!(h.stats().unwrap().records, 1);
        // Days count too.
        assert_eq!(h.retain(Retention::Days(1)).unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_log_is_left_alone_and_its_hour_counted_as_a_gap() {
        let tmp = TempDir::new("history-damaged");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        for i in 0..10 {
            h.append(&rec(i, H15 + MINUTE));
        }
        drop(h);
        let path = tmp.join("wal/1795446000.wal");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 + 8 + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        for i in 10..15 {
            clock.advance(MINUTE);
            h.append(&rec(i, H15 + i as i64 * MINUTE));
        }
        assert!(h.sync().is_err());
        let health = h.health();
        assert!(health.degraded);
        assert_eq!(health.unrecorded_total, 5);
        assert!(
            health
                .last_error
                .as_deref()
                .unwrap()
                .contains("corrupt at byte 8"),
            "{health:?}"
        );

        clock.set(H15 + HOUR_US + MINUTE);
        let next = rec(99, H15 + HOUR_US + MINUTE);
        h.append(&next);
        h.sync().unwrap();
        assert!(!h.health().degraded);
        let fresh = wal::read(&tmp.join("wal/1795449600.wal")).unwrap().records;
        assert_eq!(fresh.len(), 2);
        assert_eq!(
            (
                fresh[0].event,
                fresh[0].lost,
                fresh[0].first_us,
                fresh[0].last_us
            ),
            (Event::Gap, 5, H15 + 10 * MINUTE - 1000, H15 + 14 * MINUTE)
        );
        assert_eq!(fresh[1], next);

        assert!(matches!(
            h.seal_due(),
            Err(HistoryError::Wal(WalError::Corrupt { offset: 8, .. }))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    }

    /// `cargo test --release -p sekisho --lib history::store::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        let tmp = TempDir::new("history-bench");
        let recs: Vec<Record> = (0..1000).map(|i| rec(i, H15 + MINUTE)).collect();
        let mut h = History::open(tmp.path(), SystemClock).unwrap();
        let n = 5_000_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            h.append(&recs[i % recs.len()]);
            if i % 1_000_000 == 999_999 {
                h.sync().unwrap();
            }
        }
        h.sync().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "History::append with the system clock: {n} records in {secs:.2} s: {:.0} records/s",
            n as f64 / secs
        );
    }

    /// A tmpfs mounted for one test, unmounted on drop (needs root).
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: PathBuf, size: &str) -> Tmpfs {
            std::fs::create_dir_all(&dir).unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn disk_full_is_counted_then_written_as_a_gap() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let tmp = TempDir::new("history-full");
        let fs = Tmpfs::mount(tmp.join("history"), "256k");
        let root = fs.0.clone();
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(&root, clock.clone()).unwrap();
        let before: Vec<Record> = (0..10).map(|i| rec(i, H15 + MINUTE)).collect();
        for r in &before {
            h.append(r);
        }
        h.sync().unwrap();

        // Fill the file system.
        let filler = root.join("filler");
        let mut file = File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 4096];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        drop(file);

        // Append (and sync every 50) until the history notices, then some more.
        let mut appended = Vec::new();
        let mut failed_syncs = 0;
        let mut extra = 0;
        while extra < 120 {
            let r = rec(
                10 + appended.len() as u64,
                H15 + MINUTE + appended.len() as i64,
            );
            h.append(&r);
            appended.push(r);
            if appended.len() % 50 == 0 && h.sync().is_err() {
                failed_syncs += 1;
            }
            if h.health().degraded {
                extra += 1;
            }
            assert!(appended.len() < 100_000, "the disk never filled");
        }
        assert!(failed_syncs > 0);
        let health = h.health();
        assert!(health.degraded);
        assert!(health.unrecorded_total > 0);
        assert!(
            health
                .last_error
                .as_deref()
                .unwrap()
                .contains("No space left"),
            "{health:?}"
        );

        // The last attempt failed: nothing is buffered, the loss waits for its gap.
        loop {
            let r = rec(
                10 + appended.len() as u64,
                H15 + MINUTE + appended.len() as i64,
            );
            h.append(&r);
            appended.push(r);
            if h.sync().is_err() {
                break;
            }
        }

        // Space returns: the next record is preceded by a gap with the right count.
        std::fs::remove_file(&filler).unwrap();
        clock.advance(MINUTE);
        let next = rec(999_999, H15 + 2 * MINUTE);
        h.append(&next);
        h.sync().unwrap();
        let health = h.health();
        assert!(!health.degraded, "{health:?}");
        appended.push(next.clone());

        let got = wal_records(&root);
        assert_eq!(got[..10], before[..]);
        assert_eq!(got.last(), Some(&next));
        let gap = &got[got.len() - 2];
        assert_eq!(gap.event, Event::Gap);
        // Every appended record is in the log in order, or counted by the gap right
        // after the last one that is (a gap that was itself lost is counted in the next).
        let mut j = 0;
        let mut covered = 0;
        let mut gaps = 0;
        for r in &got[10..] {
            if r.event == Event::Gap {
                covered += r.lost;
                gaps += r.lost;
                continue;
            }
            let k = j + appended[j..]
                .iter()
                .position(|a| a == r)
                .expect("a record that was appended");
            assert_eq!((k - j) as u64, covered, "records {j}..{k} are missing");
            covered = 0;
            j = k + 1;
        }
        assert_eq!(j, appended.len());
        assert_eq!(gaps, health.unrecorded_total);
        assert!(gap.lost > 0);
        // The gap spans the times of the records it stands for.
        let last_durable = got[got.len() - 3].clone();
        let from = appended.iter().position(|a| *a == last_durable).unwrap() + 1;
        let lost_recs = &appended[from..appended.len() - 1];
        assert_eq!(gap.lost, lost_recs.len() as u64);
        assert_eq!(
            gap.first_us,
            lost_recs.iter().map(|r| r.first_us).min().unwrap()
        );
        assert_eq!(
            gap.last_us,
            lost_recs.iter().map(|r| r.last_us).max().unwrap()
        );

        // The partial segment stopped holding what the WAL holds at the first failure: the
        // hour is sealed from the WAL, gaps included.
        let hour = H15 / 1_000_000;
        assert!(!partial_path(&root.join(wal::DIR), hour).exists());
        let mut want = wal_records(&root);
        want.sort_by_key(|r| (r.first_us, r.last_us));
        clock.set(H15 + HOUR_US + MINUTE);
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        let got = segment::read_all(&root.join(&sealed[0].path)).unwrap();
        assert_eq!(got, want);
        drop(h);
    }

    fn sealed_records(root: &Path, entry: &Entry) -> Vec<Record> {
        segment::read_all(&root.join(&entry.path)).unwrap()
    }

    fn sorted(mut recs: Vec<Record>) -> Vec<Record> {
        recs.sort_by_key(|r| (r.first_us, r.last_us));
        recs
    }

    /// The hour this process wrote from its start is sealed from the segment built as the
    /// records came: here the WAL is emptied behind the history's back before sealing, and
    /// the segment still holds every record.
    #[test]
    fn a_fresh_hour_is_sealed_from_its_partial_segment() {
        let tmp = TempDir::new("history-partial");
        let clock = ManualClock::new(H15 + MINUTE);
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        // Arrival order is not time order: end records of older flows come late.
        let recs: Vec<Record> = (0..3000)
            .map(|i| rec(i, H15 + MINUTE + ((i * 7919) % 3000) as i64 * 1000))
            .collect();
        for r in &recs {
            h.append(r);
        }
        h.sync().unwrap();
        let hour = H15 / 1_000_000;
        let partial = partial_path(&tmp.join(wal::DIR), hour);
        assert!(partial.exists());
        let wal_path = wal::path_for(&tmp.join(wal::DIR), hour);
        assert_eq!(wal::read(&wal_path).unwrap().records, recs);
        std::fs::write(&wal_path, wal::MAGIC).unwrap();

        clock.set(H15 + HOUR_US + MINUTE);
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].records, 3000);
        assert_eq!(sealed_records(tmp.path(), &sealed[0]), sorted(recs));
        assert!(!partial.exists() && !wal_path.exists());
        let report = manifest::verify(tmp.path());
        assert!(report.ok, "{report:?}");
    }

    /// A history reopened within an hour did not see the hour's first records: that hour
    /// is sealed from the WAL. A partial segment a crash left is deleted at open.
    #[test]
    fn an_hour_resumed_after_a_restart_is_sealed_from_the_wal() {
        let tmp = TempDir::new("history-resume");
        let clock = ManualClock::new(H15 + MINUTE);
        let hour = H15 / 1_000_000;
        let partial = partial_path(&tmp.join(wal::DIR), hour);
        let before: Vec<Record> = (0..100).map(|i| rec(i, H15 + MINUTE + i as i64)).collect();
        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        for r in &before {
            h.append(r);
        }
        h.sync().unwrap();
        assert!(partial.exists());
        h.crash();
        assert!(partial.exists(), "a crash leaves the partial segment");

        let mut h = History::open(tmp.path(), clock.clone()).unwrap();
        assert!(!partial.exists(), "deleted at open");
        let after: Vec<Record> = (100..200)
            .map(|i| rec(i, H15 + 2 * MINUTE + i as i64))
            .collect();
        for r in &after {
            h.append(r);
        }
        h.sync().unwrap();
        assert!(
            !partial.exists(),
            "not started for a WAL file that held records"
        );

        clock.set(H15 + HOUR_US + MINUTE);
        let sealed = h.seal_due().unwrap();
        assert_eq!(sealed.len(), 1);
        let mut all = before;
        all.extend(after);
        assert_eq!(sealed_records(tmp.path(), &sealed[0]), sorted(all));
    }
}
