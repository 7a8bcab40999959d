//! The policy archive: every generation that was ever in force, kept in
//! `<state_dir>/sekisho.db` so that "which policy applied on date X" has an answer for
//! seven years.
//!
//! A real SQLite file (WAL journal, `synchronous=FULL`, so a committed record survives a
//! power cut). Its schema version is `PRAGMA user_version`, raised one step at a time by
//! [`MIGRATIONS`]; a file newer than this build is refused rather than guessed at. The
//! version belongs to the whole file: any other table that moves into `sekisho.db` gets its
//! `CREATE` as a new step of the same list.
//!
//! Invariants of `policy_generations`:
//! - generations only grow: [`Archive::record`] refuses one that is not above the last;
//! - at most one row has `superseded_at IS NULL` (the current one), and a row's
//!   `superseded_at` is the `applied_at` of the row that replaced it, written in the same
//!   transaction that inserts the new row;
//! - `applied_at`/`superseded_at` are RFC 3339 UTC with exactly nine fractional digits
//!   (`2026-04-01T09:00:00.000000000Z`), so text order is time order and SQL compares them
//!   directly; years before 0000 are refused;
//! - `sha256` is the lowercase hex SHA-256 of `content`, the exact configuration text;
//!   reading a row checks it, so a row edited behind sekisho's back is an error, not a
//!   policy.
//!
//! Should the clock go back between two records, the archive keeps both: the earlier row
//! then has an empty interval (`superseded_at < applied_at`), [`Archive::at`] prefers the
//! highest generation whose interval contains the instant, and a warning is logged.

use std::path::Path;
use std::path::PathBuf;

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use rusqlite::Connection;
use rusqlite::OptionalExtension;
use rusqlite::TransactionBehavior;
use rusqlite::params;
use sha2::Digest;
use sha2::Sha256;

use crate::config::Config;
use crate::store;
use crate::store::StoreError;

/// The database file inside the state directory.
pub const DB_FILE: &str = "sekisho.db";

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the policy archive.
    "CREATE TABLE policy_generations (
         generation    INTEGER PRIMARY KEY CHECK (generation >= 0),
         applied_at    TEXT NOT NULL,
         sha256        TEXT NOT NULL CHECK (length(sha256) = 64),
         operator      TEXT NOT NULL,
         reason        TEXT NOT NULL,
         source_path   TEXT NOT NULL,
         content       TEXT NOT NULL,
         superseded_at TEXT NULL
     ) STRICT;
     CREATE INDEX policy_generations_applied_at ON policy_generations (applied_at);",
];

/// Seconds from the Unix epoch back to 0000-01-01T00:00:00Z.
const YEAR_ZERO_SECOND: i64 = -62_167_219_200;

const COLUMNS: &str =
    "generation, applied_at, sha256, operator, reason, source_path, superseded_at, content";
const SUMMARY_COLUMNS: &str =
    "generation, applied_at, sha256, operator, reason, source_path, superseded_at";

/// One archived generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub generation: u32,
    /// RFC 3339 UTC, nine fractional digits.
    pub applied_at: String,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
    pub operator: String,
    pub reason: String,
    /// The file the configuration was read from.
    pub source_path: String,
    /// The exact configuration text.
    pub content: String,
    /// When the next generation replaced it; `None` for the current one.
    pub superseded_at: Option<String>,
}

/// An [`Entry`] without its content, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntrySummary {
    pub generation: u32,
    pub applied_at: String,
    pub sha256: String,
    pub operator: String,
    pub reason: String,
    pub source_path: String,
    pub superseded_at: Option<String>,
}

/// Why the archive could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "generation {generation} cannot be archived: generation {last} is already archived \
         and generations only grow"
    )]
    GenerationNotAfter { generation: u32, last: u32 },
    #[error("timestamp {at} is before year 0 and cannot be archived")]
    TimestampOutOfRange { at: Timestamp },
    #[error("cannot {action} in policy archive {}", .path.display())]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "generation {generation} in policy archive {} is corrupt: content hashes to {actual}, \
         recorded {recorded}",
        .path.display()
    )]
    HashMismatch {
        path: PathBuf,
        generation: u32,
        recorded: String,
        actual: String,
    },
}

/// The policy archive of one state directory.
pub struct Archive {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("path", &self.path).finish()
    }
}

impl Archive {
    /// Opens `<state_dir>/sekisho.db`, creating the directory (mode 0750), the file (0640)
    /// and the schema as needed (see [`crate::store`]).
    pub fn open(state_dir: &Path) -> Result<Archive, ArchiveError> {
        let (conn, path) = store::open(state_dir, DB_FILE, MIGRATIONS, "policy archive")?;
        Ok(Archive { conn, path })
    }

    /// Archives `config` as `generation`, in force from `at`, and marks the previous current
    /// generation superseded at `at` — both in one transaction.
    pub fn record(
        &mut self,
        generation: u32,
        config: &Config,
        operator: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<Entry, ArchiveError> {
        if at.as_second() < YEAR_ZERO_SECOND {
            return Err(ArchiveError::TimestampOutOfRange { at });
        }
        let applied_at = timestamp_text(at);
        let entry = Entry {
            generation,
            applied_at: applied_at.clone(),
            sha256: sha256_hex(&config.text),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
            source_path: config.source.display().to_string(),
            content: config.text.clone(),
            superseded_at: None,
        };
        let path = self.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| ArchiveError::Query {
                path,
                action,
                source,
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin a transaction"))?;
        let last: Option<u32> = tx
            .query_row(
                "SELECT MAX(generation) FROM policy_generations",
                [],
                |row| row.get(0),
            )
            .map_err(err("read the last generation"))?;
        if let Some(last) = last.filter(|&last| generation <= last) {
            return Err(ArchiveError::GenerationNotAfter { generation, last });
        }
        let previous: Option<(u32, String)> = tx
            .query_row(
                "SELECT generation, applied_at FROM policy_generations \
                 WHERE superseded_at IS NULL ORDER BY generation DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(err("read the current generation"))?;
        if let Some((previous, previous_at)) = previous.filter(|(_, t)| *t > applied_at) {
            tracing::warn!(
                generation,
                applied_at = %applied_at,
                previous,
                previous_at = %previous_at,
                "policy generation recorded earlier than the one it replaces; has the clock gone back?"
            );
        }
        tx.execute(
            "UPDATE policy_generations SET superseded_at = ?1 WHERE superseded_at IS NULL",
            params![applied_at],
        )
        .map_err(err("supersede the current generation"))?;
        tx.execute(
            "INSERT INTO policy_generations \
             (generation, applied_at, sha256, operator, reason, source_path, content, superseded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
            params![
                entry.generation,
                entry.applied_at,
                entry.sha256,
                entry.operator,
                entry.reason,
                entry.source_path,
                entry.content,
            ],
        )
        .map_err(err("insert the new generation"))?;
        tx.commit().map_err(err("commit the new generation"))?;
        Ok(entry)
    }

    /// The generation in force now (the last one recorded).
    pub fn current(&self) -> Result<Option<Entry>, ArchiveError> {
        self.one(
            "read the current generation",
            &format!(
                "SELECT {COLUMNS} FROM policy_generations \
                 WHERE superseded_at IS NULL ORDER BY generation DESC LIMIT 1"
            ),
            params![],
        )
    }

    /// The generation in force at `when`: applied at or before it and not yet superseded.
    /// `None` before the first generation.
    pub fn at(&self, when: Timestamp) -> Result<Option<Entry>, ArchiveError> {
        // A year before 0000 formats as "-YYYYYY…", which sorts before every stored time.
        let when = timestamp_text(when);
        self.one(
            "find the generation in force at a time",
            &format!(
                "SELECT {COLUMNS} FROM policy_generations \
                 WHERE applied_at <= ?1 AND (superseded_at IS NULL OR superseded_at > ?1) \
                 ORDER BY generation DESC LIMIT 1"
            ),
            params![when],
        )
    }

    pub fn get(&self, generation: u32) -> Result<Option<Entry>, ArchiveError> {
        self.one(
            "read a generation",
            &format!("SELECT {COLUMNS} FROM policy_generations WHERE generation = ?1"),
            params![generation],
        )
    }

    /// Every generation, oldest first, without content.
    pub fn list(&self) -> Result<Vec<EntrySummary>, ArchiveError> {
        let err = |source| self.query_err("list generations", source);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM policy_generations ORDER BY generation"
            ))
            .map_err(err)?;
        let rows = stmt.query_map([], summary_from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// The policy to put in force at boot, before the interfaces carry traffic: the last
    /// generation recorded, which is the last one that was in force. `None` on a fresh
    /// system. The same as [`Archive::current`].
    pub fn last_good(&self) -> Result<Option<Entry>, ArchiveError> {
        self.current()
    }

    fn one(
        &self,
        action: &'static str,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<Entry>, ArchiveError> {
        let entry = self
            .conn
            .query_row(sql, params, |row| {
                let summary = summary_from_row(row)?;
                let content: String = row.get(7)?;
                Ok(Entry {
                    generation: summary.generation,
                    applied_at: summary.applied_at,
                    sha256: summary.sha256,
                    operator: summary.operator,
                    reason: summary.reason,
                    source_path: summary.source_path,
                    content,
                    superseded_at: summary.superseded_at,
                })
            })
            .optional()
            .map_err(|source| self.query_err(action, source))?;
        if let Some(entry) = &entry {
            let actual = sha256_hex(&entry.content);
            if actual != entry.sha256 {
                return Err(ArchiveError::HashMismatch {
                    path: self.path.clone(),
                    generation: entry.generation,
                    recorded: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(entry)
    }

    fn query_err(&self, action: &'static str, source: rusqlite::Error) -> ArchiveError {
        ArchiveError::Query {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

/// Reads the [`SUMMARY_COLUMNS`] (the first seven of [`COLUMNS`]).
fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntrySummary> {
    Ok(EntrySummary {
        generation: row.get(0)?,
        applied_at: row.get(1)?,
        sha256: row.get(2)?,
        operator: row.get(3)?,
        reason: row.get(4)?,
        source_path: row.get(5)?,
        superseded_at: row.get(6)?,
    })
}

/// RFC 3339 UTC with exactly nine fractional digits, so that text order is time order.
fn timestamp_text(at: Timestamp) -> String {
    DateTimePrinter::new()
        .precision(Some(9))
        .timestamp_to_string(&at)
}

/// Lowercase hex SHA-256 of `text`'s UTF-8 bytes.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    const DEMO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));

    fn config(edit: &str) -> Config {
        let text = DEMO.replace("tcp/8443", edit);
        Config::parse_str(&text, Path::new("/etc/sekisho/sekisho.toml"))
            .unwrap_or_else(|err| panic!("test configuration does not parse: {err}"))
    }

    fn ts(text: &str) -> Timestamp {
        text.parse()
            .unwrap_or_else(|err| panic!("bad test timestamp {text}: {err}"))
    }

    fn open(dir: &Path) -> Archive {
        Archive::open(dir).unwrap_or_else(|err| panic!("open archive: {err}"))
    }

    /// Three generations: 1 at 2026-04-01, 2 at 2026-05-01, 3 at 2026-06-01 (00:00 UTC).
    fn three(archive: &mut Archive) -> [Config; 3] {
        let configs = [config("tcp/8443"), config("tcp/8444"), config("tcp/8445")];
        let times = [
            "2026-04-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
        ];
        for (i, (config, at)) in configs.iter().zip(times).enumerate() {
            let generation = i as u32 + 1;
            let entry = archive
                .record(
                    generation,
                    config,
                    "tanaka",
                    &format!("change {generation}"),
                    ts(at),
                )
                .unwrap_or_else(|err| panic!("record generation {generation}: {err}"));
            assert_eq!(entry.generation, generation);
            assert_eq!(entry.superseded_at, None);
        }
        configs
    }

    fn generation_at(archive: &Archive, when: &str) -> Option<u32> {
        archive
            .at(ts(when))
            .unwrap_or_else(|err| panic!("at {when}: {err}"))
            .map(|e| e.generation)
    }

    #[test]
    fn at_answers_which_generation_was_in_force() {
        let tmp = TempDir::new("at");
        let mut archive = open(&tmp.state());
        assert_eq!(archive.current().expect("current"), None);
        three(&mut archive);
        assert_eq!(
            generation_at(&archive, "2026-03-31T23:59:59.999999999Z"),
            None
        );
        assert_eq!(generation_at(&archive, "1969-01-01T00:00:00Z"), None);
        assert_eq!(generation_at(&archive, "2026-04-01T00:00:00Z"), Some(1));
        assert_eq!(generation_at(&archive, "2026-04-15T12:00:00Z"), Some(1));
        // The instant of a switch belongs to the new generation.
        assert_eq!(
            generation_at(&archive, "2026-04-30T23:59:59.999999999Z"),
            Some(1)
        );
        assert_eq!(generation_at(&archive, "2026-05-01T00:00:00Z"), Some(2));
        assert_eq!(generation_at(&archive, "2026-05-01T00:00:00.5Z"), Some(2));
        assert_eq!(generation_at(&archive, "2026-06-01T00:00:00Z"), Some(3));
        assert_eq!(generation_at(&archive, "2033-01-01T00:00:00Z"), Some(3));
        assert_eq!(
            archive.current().expect("current").map(|e| e.generation),
            Some(3)
        );
        assert_eq!(
            archive
                .last_good()
                .expect("last good")
                .map(|e| e.generation),
            Some(3)
        );

        let list = archive.list().expect("list");
        let summary: Vec<_> = list
            .iter()
            .map(|e| {
                (
                    e.generation,
                    e.applied_at.as_str(),
                    e.superseded_at.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    1,
                    "2026-04-01T00:00:00.000000000Z",
                    Some("2026-05-01T00:00:00.000000000Z")
                ),
                (
                    2,
                    "2026-05-01T00:00:00.000000000Z",
                    Some("2026-06-01T00:00:00.000000000Z")
                ),
                (3, "2026-06-01T00:00:00.000000000Z", None),
            ]
        );
    }

    #[test]
    fn content_and_hash_round_trip() {
        let tmp = TempDir::new("content");
        let mut archive = open(&tmp.state());
        let configs = three(&mut archive);
        for (i, config) in configs.iter().enumerate() {
            let entry = archive
                .get(i as u32 + 1)
                .expect("get")
                .unwrap_or_else(|| panic!("generation {} missing", i + 1));
            assert_eq!(entry.content, config.text);
            assert_eq!(entry.sha256, sha256_hex(&config.text));
            assert_eq!(entry.operator, "tanaka");
            assert_eq!(entry.reason, format!("change {}", i + 1));
            assert_eq!(entry.source_path, "/etc/sekisho/sekisho.toml");
        }
        assert_eq!(archive.get(4).expect("get"), None);
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn data_survives_reopening() {
        let tmp = TempDir::new("reopen");
        let recorded = {
            let mut archive = open(&tmp.state());
            three(&mut archive);
            archive.list().expect("list")
        };
        let archive = open(&tmp.state());
        assert_eq!(archive.list().expect("list"), recorded);
        assert_eq!(
            archive.current().expect("current").map(|e| e.generation),
            Some(3)
        );
        assert_eq!(generation_at(&archive, "2026-05-10T00:00:00Z"), Some(2));
    }

    #[test]
    fn generation_going_backwards_is_refused() {
        let tmp = TempDir::new("backwards");
        let mut archive = open(&tmp.state());
        three(&mut archive);
        for generation in [3, 2, 0] {
            let err = archive
                .record(
                    generation,
                    &config("tcp/9000"),
                    "sato",
                    "x",
                    ts("2026-07-01T00:00:00Z"),
                )
                .expect_err("a generation not above the last must be refused");
            assert!(
                matches!(err, ArchiveError::GenerationNotAfter { last: 3, .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().contains("generation 3 is already archived"),
                "{err}"
            );
        }
        // Nothing changed: 3 is still current and not superseded.
        let current = archive.current().expect("current").expect("some current");
        assert_eq!((current.generation, current.superseded_at), (3, None));
        assert_eq!(archive.list().expect("list").len(), 3);
    }

    #[test]
    fn clock_going_back_keeps_every_generation() {
        let tmp = TempDir::new("clock");
        let mut archive = open(&tmp.state());
        three(&mut archive);
        archive
            .record(
                4,
                &config("tcp/9000"),
                "sato",
                "x",
                ts("2026-05-15T00:00:00Z"),
            )
            .expect("an earlier time is recorded, with a warning");
        assert_eq!(archive.list().expect("list").len(), 4);
        assert_eq!(generation_at(&archive, "2026-05-20T00:00:00Z"), Some(4));
        assert_eq!(generation_at(&archive, "2026-05-10T00:00:00Z"), Some(2));
        assert_eq!(
            archive.current().expect("current").map(|e| e.generation),
            Some(4)
        );
    }

    #[test]
    fn file_is_a_real_sqlite_database() {
        let tmp = TempDir::new("sqlite");
        let state = tmp.state();
        {
            let mut archive = open(&state);
            three(&mut archive);
        }
        let mode = std::fs::metadata(&state)
            .expect("state dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        let path = state.join(DB_FILE);
        let header = std::fs::read(&path).expect("read db");
        assert!(header.starts_with(b"SQLite format 3\0"));
        let conn = Connection::open(&path).expect("open with plain rusqlite");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("user_version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM policy_generations", [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(rows, 3);
    }

    #[test]
    fn tampered_content_is_an_error() {
        let tmp = TempDir::new("tamper");
        let mut archive = open(&tmp.state());
        three(&mut archive);
        archive
            .conn
            .execute(
                "UPDATE policy_generations SET content = content || '#' WHERE generation = 2",
                [],
            )
            .expect("tamper");
        let err = archive.get(2).expect_err("hash mismatch");
        assert!(
            matches!(err, ArchiveError::HashMismatch { generation: 2, .. }),
            "{err:?}"
        );
        assert!(archive.get(1).is_ok());
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new("newer");
        drop(open(&tmp.state()));
        let conn = Connection::open(tmp.state().join(DB_FILE)).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
        drop(conn);
        let err = Archive::open(&tmp.state()).expect_err("newer schema");
        assert!(
            matches!(
                err,
                ArchiveError::Store(StoreError::TooNew { found: 99, .. })
            ),
            "{err:?}"
        );
    }
}
