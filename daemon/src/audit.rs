//! The operation history (操作履歴): every action that changes anything — isolate, restore,
//! trigger, reload, daemon start/stop, drift repaired, refused requests — with its time,
//! operator, target, reason, approver (or emergency) and outcome.
//!
//! It lives in its own SQLite file, `<state_dir>/operations.db` (WAL journal,
//! `synchronous=FULL`, schema version in `PRAGMA user_version`, raised one step at a time by
//! [`MIGRATIONS`]; a file newer than this build is refused), beside a one-line head file,
//! `<state_dir>/operations.head`. It is never pruned: the 7-year retention of R7/R10 is
//! "keep everything".
//!
//! # Invariants
//! - Append-only. This module has no `UPDATE` or `DELETE`; triggers on the table make SQLite
//!   refuse both (`RAISE(ABORT)`), so a casual edit through `sqlite3` fails. Someone who
//!   drops the triggers is caught by the hash chain.
//! - `seq` starts at 1 and has no gaps. Each entry carries `prev_hash`, the `hash` of the
//!   entry before it (64 zeros for entry 1), and its own `hash`, defined below.
//! - `time` is RFC 3339 UTC with exactly nine fractional digits
//!   (`2026-04-01T09:00:00.000000000Z`), so text order is time order. The clock may go back;
//!   the order of the history is `seq`, never `time`.
//! - `details` is stored as canonical JSON text (below), and the hash covers those bytes.
//! - [`AuditLog::append`] returns only when the entry is committed (`synchronous=FULL`) and
//!   the head file names it (written to a temporary file, fsynced, renamed, directory
//!   fsynced). The head file is what makes removing the *newest* entries (truncation, or
//!   putting back an old copy of the database) detectable: the chain alone cannot tell a
//!   short history from a shortened one.
//! - A crash between the commit and the head update leaves the head one entry behind; that
//!   is accepted (the head vouches for a prefix) and repaired by the next append. A head
//!   that is ahead of the table, or disagrees with it, is not: [`AuditLog::verify`] reports
//!   it and [`AuditLog::append`] refuses to write, so that new entries cannot paper over
//!   removed ones. Investigate with `verify`; to start afresh, move both files aside (they
//!   are evidence) and a new history begins.
//! - [`AuditLog::open`] on an existing history rewrites nothing. It only creates the head
//!   file when it is missing and the history is empty.
//!
//! # The hash
//! `hash` is the lowercase hex SHA-256 of the concatenation, in this order, of:
//!
//! | field       | encoding                                                           |
//! |-------------|--------------------------------------------------------------------|
//! | tag         | S("sekisho operation history v1")                                  |
//! | `seq`       | 8 bytes, unsigned big-endian                                       |
//! | `time`      | S(time)                                                            |
//! | `operator`  | S(operator)                                                        |
//! | `action`    | S(action)                                                          |
//! | `target`    | O(target)                                                          |
//! | `reason`    | O(reason)                                                          |
//! | `approver`  | O(approver)                                                        |
//! | `emergency` | 1 byte, `0x01` if true, `0x00` if false                            |
//! | `outcome`   | S(outcome)                                                         |
//! | `details`   | S(canonical JSON of details)                                       |
//! | `prev_hash` | S(prev_hash), the 64 lowercase hex characters                      |
//!
//! where S(x) is the length of x's UTF-8 bytes as 8 bytes unsigned big-endian followed by
//! those bytes, and O(x) is the single byte `0x00` when x is absent (`null`) or `0x01`
//! followed by S(x) when present — so an absent field and an empty one differ.
//!
//! Canonical JSON: no whitespace; object keys sorted by their UTF-8 bytes (= by code
//! point); strings escaped minimally (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! control characters as `\u00xx` in lowercase hex, everything else literal UTF-8); numbers
//! as serde_json prints them (integers in decimal; other numbers in their shortest
//! round-trip form — Python prints some of those differently, e.g. `1e16` vs `1e+16`, so
//! prefer integers and strings in details). The stored `details` column is exactly this text.
//!
//! An auditor can recompute every hash from `sekishoctl audit show -o json` (or from the
//! `operations` table) with nothing but Python's standard library:
//!
//! ```text
//! import hashlib, json
//! def s(b): return len(b).to_bytes(8, "big") + b
//! def t(x): return s(x.encode())
//! def o(x): return b"\x00" if x is None else b"\x01" + t(x)
//! def entry_hash(e):
//!     return hashlib.sha256(
//!         t("sekisho operation history v1") + e["seq"].to_bytes(8, "big")
//!         + t(e["time"]) + t(e["operator"]) + t(e["action"])
//!         + o(e["target"]) + o(e["reason"]) + o(e["approver"])
//!         + (b"\x01" if e["emergency"] else b"\x00") + t(e["outcome"])
//!         + t(json.dumps(e["details"], sort_keys=True, separators=(",", ":"),
//!                        ensure_ascii=False))
//!         + t(e["prev_hash"])
//!     ).hexdigest()
//! ```
//!
//! For entry 1 at `2026-04-01T09:00:00.000000000Z` by `tanaka`, action `isolate`, target
//! `asset:cs01`, reason `ウイルス検知`, no approver, emergency, outcome `ok`, details
//! `{"level":2,"category":"misconduct","note":"\"a\"\n"}` (canonical:
//! `{"category":"misconduct","level":2,"note":"\"a\"\n"}`), the hash is
//! `88cee41e22512c544298b6c593a1e40710bb14a3b2e67d191fb9c51e88c09795` (the test
//! `documented_hash_example` checks this).
//!
//! The head file holds one line, `<seq> <hash>\n` (`0 000…0` for an empty history).
//!
//! The chain has no key: someone who can write both files can rewrite the whole history
//! consistently. What anchors it outside the machine is [`Entry::reference`], which carries
//! the start of the hash into every notice sent out.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

use crate::store;
use crate::store::StoreError;

/// The database file inside the state directory.
pub const DB_FILE: &str = "operations.db";

/// The head file inside the state directory: `<seq> <hash>\n` of the last entry.
pub const HEAD_FILE: &str = "operations.head";

/// The first field of every hash input, so that these hashes cannot be confused with others.
const HASH_TAG: &str = "sekisho operation history v1";

/// `prev_hash` of entry 1, and the hash in the head file of an empty history.
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the operation history, append-only.
    "CREATE TABLE operations (
         seq        INTEGER PRIMARY KEY CHECK (seq >= 1),
         time       TEXT NOT NULL,
         operator   TEXT NOT NULL,
         action     TEXT NOT NULL,
         target     TEXT NULL,
         reason     TEXT NULL,
         approver   TEXT NULL,
         emergency  INTEGER NOT NULL CHECK (emergency IN (0, 1)),
         outcome    TEXT NOT NULL,
         details    TEXT NOT NULL,
         prev_hash  TEXT NOT NULL CHECK (length(prev_hash) = 64),
         hash       TEXT NOT NULL CHECK (length(hash) = 64)
     ) STRICT;
     CREATE INDEX operations_time ON operations (time);
     CREATE TRIGGER operations_no_update BEFORE UPDATE ON operations
     BEGIN
         SELECT RAISE(ABORT, 'the operation history is append-only: UPDATE refused');
     END;
     CREATE TRIGGER operations_no_delete BEFORE DELETE ON operations
     BEGIN
         SELECT RAISE(ABORT, 'the operation history is append-only: DELETE refused');
     END;",
];

const COLUMNS: &str = "seq, time, operator, action, target, reason, approver, emergency, \
                       outcome, details, prev_hash, hash";

/// What the caller records; [`AuditLog::append`] adds the sequence number, time and hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEntry {
    /// The Unix user behind the control socket, or `"sekishod"` for automatic actions.
    pub operator: String,
    /// `"isolate"`, `"restore"`, `"trigger"`, `"reload"`, `"start"`, `"stop"`,
    /// `"drift-repaired"`, `"refused"`, …
    pub action: String,
    /// `"asset:cs01"`, `"all"`, …
    pub target: Option<String>,
    pub reason: Option<String>,
    /// `None` with `emergency = true` means "承認を得ずに切り離し".
    pub approver: Option<String>,
    pub emergency: bool,
    /// `"ok"`, `"refused: …"`, `"failed: …"`.
    pub outcome: String,
    /// Anything else: policy diff, evidence, category, level, timing…
    pub details: serde_json::Value,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// 1-based, no gaps.
    pub seq: u64,
    /// RFC 3339 UTC, nine fractional digits.
    pub time: String,
    #[serde(flatten)]
    pub entry: NewEntry,
    /// The `hash` of entry `seq - 1`; 64 zeros for entry 1.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of the encoding in the module documentation.
    pub hash: String,
}

impl Entry {
    /// A short reference for notices and messages: `OP-000042-1a2b3c4d` (the sequence number
    /// and the first 8 hex digits of the hash).
    pub fn reference(&self) -> String {
        let short = self.hash.get(..8).unwrap_or(&self.hash);
        format!("OP-{:06}-{short}", self.seq)
    }
}

/// The verdict of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verification {
    /// Every entry hashes correctly, follows the one before it, and the head file agrees.
    Intact {
        entries: u64,
        /// The hash of the last entry; `None` for an empty history.
        head: Option<String>,
    },
    /// `seq` is the first entry that is wrong, missing, or cannot be vouched for.
    Broken { seq: u64, problem: String },
}

/// Why the operation history could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {action} in operation history {}", .path.display())]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("entry {seq} in operation history {} has details that are not valid JSON", .path.display())]
    Details {
        path: PathBuf,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("operation history {} holds an impossible sequence number {seq}", .path.display())]
    BadSeq { path: PathBuf, seq: i64 },
    #[error("cannot read head file {}", .path.display())]
    ReadHead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write head file {}", .path.display())]
    WriteHead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "entry {seq} was committed, but head file {} could not be updated; the next append \
         repairs it",
        .path.display()
    )]
    HeadNotUpdated {
        path: PathBuf,
        seq: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to append to operation history {}: from entry {seq}: {problem}; run \
         `sekishoctl audit verify`",
        .path.display()
    )]
    HeadMismatch {
        path: PathBuf,
        seq: u64,
        problem: String,
    },
}

/// The operation history of one state directory.
pub struct AuditLog {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
    /// The head file.
    head_path: PathBuf,
    /// The state directory, fsynced after the head file is renamed.
    dir: PathBuf,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

/// One row as stored, before `details` is parsed.
struct Row {
    seq: i64,
    time: String,
    operator: String,
    action: String,
    target: Option<String>,
    reason: Option<String>,
    approver: Option<String>,
    emergency: i64,
    outcome: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl Row {
    /// Reads the [`COLUMNS`].
    fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            seq: row.get(0)?,
            time: row.get(1)?,
            operator: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            reason: row.get(5)?,
            approver: row.get(6)?,
            emergency: row.get(7)?,
            outcome: row.get(8)?,
            details: row.get(9)?,
            prev_hash: row.get(10)?,
            hash: row.get(11)?,
        })
    }

    /// The hash of the stored fields (with `seq` and `emergency` as read; callers check
    /// their range first).
    fn compute_hash(&self) -> String {
        entry_hash(&HashInput {
            seq: self.seq as u64,
            time: &self.time,
            operator: &self.operator,
            action: &self.action,
            target: self.target.as_deref(),
            reason: self.reason.as_deref(),
            approver: self.approver.as_deref(),
            emergency: self.emergency != 0,
            outcome: &self.outcome,
            details: &self.details,
            prev_hash: &self.prev_hash,
        })
    }

    fn into_entry(self, path: &Path) -> Result<Entry, AuditError> {
        let seq = u64::try_from(self.seq).map_err(|_| AuditError::BadSeq {
            path: path.to_owned(),
            seq: self.seq,
        })?;
        let details =
            serde_json::from_str(&self.details).map_err(|source| AuditError::Details {
                path: path.to_owned(),
                seq,
                source,
            })?;
        Ok(Entry {
            seq,
            time: self.time,
            entry: NewEntry {
                operator: self.operator,
                action: self.action,
                target: self.target,
                reason: self.reason,
                approver: self.approver,
                emergency: self.emergency != 0,
                outcome: self.outcome,
                details,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

impl AuditLog {
    /// Opens `<state_dir>/operations.db`, creating the directory (mode 0750), the file
    /// (0640), the schema (see [`crate::store`]) and, for an empty history, the head file
    /// (0640) as needed.
    pub fn open(state_dir: &Path) -> Result<AuditLog, AuditError> {
        let (conn, path) = store::open(state_dir, DB_FILE, MIGRATIONS, "operation history")?;
        let log = AuditLog {
            conn,
            path,
            head_path: state_dir.join(HEAD_FILE),
            dir: state_dir.to_owned(),
        };
        log.create_head_if_empty()?;
        Ok(log)
    }

    /// Writes `0 000…0` to a missing head file of an empty history, never over an existing
    /// one (a hard link, not a rename, so a concurrent append's head wins).
    fn create_head_if_empty(&self) -> Result<(), AuditError> {
        if self.head_path.exists() || self.head()?.is_some() {
            return Ok(());
        }
        let tmp = self
            .write_temp_head(0, ZERO_HASH)
            .map_err(|source| AuditError::WriteHead {
                path: self.head_path.clone(),
                source,
            })?;
        let linked = std::fs::hard_link(&tmp, &self.head_path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(AuditError::WriteHead {
                    path: self.head_path.clone(),
                    source,
                });
            }
        }
        sync_dir(&self.dir).map_err(|source| AuditError::WriteHead {
            path: self.head_path.clone(),
            source,
        })
    }

    /// Records `entry` as the next operation. Returns once the entry is committed and the
    /// head file names it. Refuses when the head file shows that entries were removed or
    /// changed (see the module documentation).
    pub fn append(&mut self, entry: NewEntry) -> Result<Entry, AuditError> {
        let time = timestamp_text(Timestamp::now());
        let details = canonical_json(&entry.details);
        let path = self.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| AuditError::Query {
                path,
                action,
                source,
            }
        };
        // Read the head before the table, as verify() does; a concurrent writer is not
        // expected (sekishod is the only one), but the order keeps the check sound.
        let head_text = read_head(&self.head_path)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin a transaction"))?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM operations ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(err("read the last entry"))?;
        let (last_seq, prev_hash) = match last {
            None => (0, ZERO_HASH.to_owned()),
            Some((seq, hash)) => (
                u64::try_from(seq).map_err(|_| AuditError::BadSeq {
                    path: self.path.clone(),
                    seq,
                })?,
                hash,
            ),
        };
        let problem = head_problem(&self.head_path, head_text.as_deref(), last_seq, |seq| {
            tx.query_row(
                "SELECT hash FROM operations WHERE seq = ?1",
                params![seq as i64],
                |row| row.get::<_, String>(0),
            )
            .optional()
        })
        .map_err(err("read the entry the head file names"))?;
        if let Some((seq, problem)) = problem {
            return Err(AuditError::HeadMismatch {
                path: self.head_path.clone(),
                seq,
                problem,
            });
        }
        let seq = last_seq + 1;
        let hash = entry_hash(&HashInput {
            seq,
            time: &time,
            operator: &entry.operator,
            action: &entry.action,
            target: entry.target.as_deref(),
            reason: entry.reason.as_deref(),
            approver: entry.approver.as_deref(),
            emergency: entry.emergency,
            outcome: &entry.outcome,
            details: &details,
            prev_hash: &prev_hash,
        });
        tx.execute(
            &format!(
                "INSERT INTO operations ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                seq as i64,
                time,
                entry.operator,
                entry.action,
                entry.target,
                entry.reason,
                entry.approver,
                i64::from(entry.emergency),
                entry.outcome,
                details,
                prev_hash,
                hash,
            ],
        )
        .map_err(err("insert the entry"))?;
        tx.commit().map_err(err("commit the entry"))?;
        self.write_head(seq, &hash)
            .map_err(|source| AuditError::HeadNotUpdated {
                path: self.head_path.clone(),
                seq,
                source,
            })?;
        // Give back the details as they will read back (canonical text parsed again).
        let details = serde_json::from_str(&details).map_err(|source| AuditError::Details {
            path: self.path.clone(),
            seq,
            source,
        })?;
        Ok(Entry {
            seq,
            time,
            entry: NewEntry { details, ..entry },
            prev_hash,
            hash,
        })
    }

    /// Entries at or after `since` (by their recorded time), oldest first. With `limit`, the
    /// newest `limit` of them, still oldest first. Entries are returned as stored; whether
    /// they are genuine is [`AuditLog::verify`]'s question.
    pub fn list(
        &self,
        since: Option<Timestamp>,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, AuditError> {
        let err = |source| self.query_err("list entries", source);
        // Negative LIMIT is "no limit" in SQLite.
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let since = since.map(timestamp_text);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM operations WHERE (?1 IS NULL OR time >= ?1) \
                 ORDER BY seq DESC LIMIT ?2"
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(params![since, limit], Row::from_sql)
            .map_err(err)?;
        let mut entries = rows
            .map(|row| row.map_err(err)?.into_entry(&self.path))
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// Entry `seq`, as stored.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, AuditError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM operations WHERE seq = ?1"),
                params![seq],
                Row::from_sql,
            )
            .optional()
            .map_err(|source| self.query_err("read an entry", source))?;
        row.map(|row| row.into_entry(&self.path)).transpose()
    }

    /// The last entry's sequence number and hash, from the table; `None` when empty.
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        let last: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM operations ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|source| self.query_err("read the last entry", source))?;
        last.map(|(seq, hash)| {
            u64::try_from(seq)
                .map(|seq| (seq, hash))
                .map_err(|_| AuditError::BadSeq {
                    path: self.path.clone(),
                    seq,
                })
        })
        .transpose()
    }

    /// Walks the whole history: every entry must hash to its recorded hash, carry the hash
    /// of the entry before it, follow it without a gap, and the head file must name an
    /// entry that exists with that hash. Names the first entry that fails.
    pub fn verify(&self) -> Result<Verification, AuditError> {
        // The head file first, then one consistent snapshot of the table: an append that
        // lands in between makes the table longer than the head, which is accepted, never
        // shorter.
        let head_text = read_head(&self.head_path)?;
        let head_seq = head_text
            .as_deref()
            .and_then(parse_head)
            .map(|(seq, _)| seq);
        let err = |source| self.query_err("read the history", source);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM operations ORDER BY seq"))
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut expected: u64 = 1;
        let mut prev = ZERO_HASH.to_owned();
        let mut hash_at_head = None;
        while let Some(row) = rows.next().map_err(err)? {
            let row = Row::from_sql(row).map_err(err)?;
            if let Some(problem) = row_problem(&row, expected, &prev) {
                return Ok(Verification::Broken {
                    seq: expected,
                    problem,
                });
            }
            if Some(expected) == head_seq {
                hash_at_head = Some(row.hash.clone());
            }
            prev = row.hash;
            expected += 1;
        }
        let last = expected - 1;
        let problem = head_problem(&self.head_path, head_text.as_deref(), last, |_| {
            Ok::<_, std::convert::Infallible>(hash_at_head)
        })
        .unwrap_or_else(|never| match never {});
        if let Some((seq, problem)) = problem {
            return Ok(Verification::Broken { seq, problem });
        }
        if head_seq.is_some_and(|head| head < last) {
            tracing::warn!(
                head = %self.head_path.display(),
                head_seq,
                last,
                "head file is behind the operation history (interrupted append?)"
            );
        }
        Ok(Verification::Intact {
            entries: last,
            head: (last > 0).then_some(prev),
        })
    }

    /// Replaces the head file atomically and durably: temporary file, fsync, rename, fsync
    /// of the directory.
    fn write_head(&self, seq: u64, hash: &str) -> std::io::Result<()> {
        let tmp = self.write_temp_head(seq, hash)?;
        if let Err(err) = std::fs::rename(&tmp, &self.head_path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        sync_dir(&self.dir)
    }

    /// Writes `<seq> <hash>\n` to a fresh temporary file beside the head file and fsyncs it.
    fn write_temp_head(&self, seq: u64, hash: &str) -> std::io::Result<PathBuf> {
        let tmp = self
            .dir
            .join(format!("{HEAD_FILE}.{}.tmp", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        file.write_all(format!("{seq} {hash}\n").as_bytes())?;
        file.sync_all()?;
        Ok(tmp)
    }

    fn query_err(&self, action: &'static str, source: rusqlite::Error) -> AuditError {
        AuditError::Query {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

/// What is wrong with `row` where entry `expected` following hash `prev` should be.
fn row_problem(row: &Row, expected: u64, prev: &str) -> Option<String> {
    if u64::try_from(row.seq).ok() != Some(expected) {
        return Some(if row.seq > expected as i64 {
            format!(
                "entry {expected} is missing (the next entry is {}); an entry was removed",
                row.seq
            )
        } else {
            format!(
                "entry {expected} has the impossible sequence number {}",
                row.seq
            )
        });
    }
    if row.emergency != 0 && row.emergency != 1 {
        return Some(format!(
            "entry {expected} has emergency = {}, neither 0 nor 1",
            row.emergency
        ));
    }
    let actual = row.compute_hash();
    if actual != row.hash {
        return Some(format!(
            "entry {expected} has been changed: its contents hash to {actual}, recorded {}",
            row.hash
        ));
    }
    if row.prev_hash != prev {
        return Some(format!(
            "entry {expected} does not follow entry {}: it records prev_hash {}, but that \
             entry hashes to {prev}; entries were removed, inserted or reordered",
            expected - 1,
            row.prev_hash
        ));
    }
    if let Err(err) = serde_json::from_str::<serde_json::Value>(&row.details) {
        return Some(format!(
            "entry {expected} has details that are not JSON: {err}"
        ));
    }
    None
}

/// What is wrong with the head file `text` (`None`: missing) for a history whose last entry
/// is `last`; `hash_at` looks up the recorded hash of the entry the head file names.
/// `Some((first bad seq, problem))`.
fn head_problem<E>(
    path: &Path,
    text: Option<&str>,
    last: u64,
    hash_at: impl FnOnce(u64) -> Result<Option<String>, E>,
) -> Result<Option<(u64, String)>, E> {
    let path = path.display();
    let Some(text) = text else {
        return Ok((last > 0).then(|| {
            (
                last + 1,
                format!(
                    "head file {path} is missing, so the removal of entries after {last} \
                     cannot be ruled out"
                ),
            )
        }));
    };
    let Some((seq, hash)) = parse_head(text) else {
        return Ok(Some((
            last + 1,
            format!(
                "head file {path} is malformed ({text:?}), so the removal of entries after \
                 {last} cannot be ruled out"
            ),
        )));
    };
    if seq > last {
        return Ok(Some((
            last + 1,
            format!(
                "entries after {last} are missing: head file {path} records entry {seq} \
                 with hash {hash}"
            ),
        )));
    }
    if seq == 0 {
        return Ok((hash != ZERO_HASH).then(|| {
            (
                last + 1,
                format!("head file {path} records entry 0 with hash {hash}, not {ZERO_HASH}"),
            )
        }));
    }
    Ok(match hash_at(seq)? {
        Some(actual) if actual == hash => None,
        Some(actual) => Some((
            seq,
            format!(
                "head file {path} records hash {hash} for entry {seq}, but entry {seq} has \
                 hash {actual}"
            ),
        )),
        None => Some((
            seq,
            format!("entry {seq}, which head file {path} records, is missing"),
        )),
    })
}

/// `<seq> <64 lowercase hex>\n` → its parts.
fn parse_head(text: &str) -> Option<(u64, &str)> {
    let (seq_text, hash) = text.strip_suffix('\n')?.split_once(' ')?;
    // Digits only: `u64::from_str` would also take a leading `+`.
    if seq_text.is_empty() || !seq_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = seq_text.parse().ok()?;
    let is_hex = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    is_hex.then_some((seq, hash))
}

/// The head file's text, or `None` when it does not exist.
fn read_head(path: &Path) -> Result<Option<String>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::ReadHead {
            path: path.to_owned(),
            source,
        }),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The fields the hash covers, `details` already canonical.
struct HashInput<'a> {
    seq: u64,
    time: &'a str,
    operator: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    reason: Option<&'a str>,
    approver: Option<&'a str>,
    emergency: bool,
    outcome: &'a str,
    details: &'a str,
    prev_hash: &'a str,
}

/// The hash of the module documentation, lowercase hex.
fn entry_hash(input: &HashInput<'_>) -> String {
    fn field(hasher: &mut Sha256, bytes: &str) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes.as_bytes());
    }
    fn optional(hasher: &mut Sha256, value: Option<&str>) {
        match value {
            None => hasher.update([0u8]),
            Some(value) => {
                hasher.update([1u8]);
                field(hasher, value);
            }
        }
    }
    let mut hasher = Sha256::new();
    field(&mut hasher, HASH_TAG);
    hasher.update(input.seq.to_be_bytes());
    field(&mut hasher, input.time);
    field(&mut hasher, input.operator);
    field(&mut hasher, input.action);
    optional(&mut hasher, input.target);
    optional(&mut hasher, input.reason);
    optional(&mut hasher, input.approver);
    hasher.update([u8::from(input.emergency)]);
    field(&mut hasher, input.outcome);
    field(&mut hasher, input.details);
    field(&mut hasher, input.prev_hash);
    hex::encode(hasher.finalize())
}

/// Canonical JSON text: no whitespace, object keys sorted by their UTF-8 bytes, strings and
/// numbers as serde_json writes them — whatever the map order of `serde_json::Value`.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(out: &mut String, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
            Value::String(text) => out.push_str(&Value::String(text.clone()).to_string()),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, item);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(out, &map[key]);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// RFC 3339 UTC with exactly nine fractional digits, so that text order is time order.
fn timestamp_text(at: Timestamp) -> String {
    DateTimePrinter::new()
        .precision(Some(9))
        .timestamp_to_string(&at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn open(dir: &Path) -> AuditLog {
        AuditLog::open(dir).unwrap_or_else(|err| panic!("open operation history: {err}"))
    }

    fn new_entry(n: u64) -> NewEntry {
        NewEntry {
            operator: "tanaka".to_owned(),
            action: "isolate".to_owned(),
            target: Some(format!("asset:cs{n:02}")),
            reason: Some(format!("不審な通信 {n}")),
            approver: n.is_multiple_of(2).then(|| "suzuki".to_owned()),
            emergency: n % 2 == 1,
            outcome: "ok".to_owned(),
            details: serde_json::json!({ "level": n, "category": "misconduct", "evidence": ["a", "b"] }),
        }
    }

    /// Appends entries 1, 2, 3.
    fn three(log: &mut AuditLog) -> Vec<Entry> {
        (1..=3)
            .map(|n| {
                log.append(new_entry(n))
                    .unwrap_or_else(|err| panic!("append entry {n}: {err}"))
            })
            .collect()
    }

    /// A plain connection to the database, as an attacker with `sqlite3` would have.
    fn raw(state: &Path) -> Connection {
        Connection::open(state.join(DB_FILE)).expect("open with plain rusqlite")
    }

    /// A determined attacker: drops the append-only triggers.
    fn raw_without_triggers(state: &Path) -> Connection {
        let conn = raw(state);
        conn.execute_batch("DROP TRIGGER IF EXISTS operations_no_update; DROP TRIGGER IF EXISTS operations_no_delete;")
            .expect("drop triggers");
        conn
    }

    fn verify(log: &AuditLog) -> Verification {
        log.verify().unwrap_or_else(|err| panic!("verify: {err}"))
    }

    fn assert_broken(log: &AuditLog, seq: u64, needle: &str) {
        match verify(log) {
            Verification::Broken { seq: got, problem } => {
                assert_eq!(got, seq, "wrong first bad seq: {problem}");
                assert!(problem.contains(needle), "{problem:?} lacks {needle:?}");
            }
            intact => panic!("expected entry {seq} to be reported, got {intact:?}"),
        }
    }

    #[test]
    fn three_entries_verify_intact_with_the_right_head() {
        let tmp = TempDir::new("three");
        let mut log = open(&tmp.state());
        assert_eq!(
            verify(&log),
            Verification::Intact {
                entries: 0,
                head: None
            }
        );
        assert_eq!(log.head().expect("head"), None);
        let entries = three(&mut log);
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1);
            assert_eq!(entry.entry, new_entry(entry.seq));
            assert_eq!(entry.hash.len(), 64);
            assert_eq!(entry.time.len(), "2026-04-01T09:00:00.000000000Z".len());
            assert!(entry.time.ends_with('Z'), "{}", entry.time);
            let expected_prev = if i == 0 {
                ZERO_HASH
            } else {
                &entries[i - 1].hash
            };
            assert_eq!(entry.prev_hash, expected_prev);
            assert_eq!(log.get(entry.seq).expect("get").as_ref(), Some(entry));
        }
        assert_eq!(log.get(4).expect("get"), None);
        assert_eq!(log.get(u64::MAX).expect("get"), None);
        let last = &entries[2].hash;
        assert_eq!(
            verify(&log),
            Verification::Intact {
                entries: 3,
                head: Some(last.clone())
            }
        );
        assert_eq!(log.head().expect("head"), Some((3, last.clone())));
        let head = std::fs::read_to_string(tmp.state().join(HEAD_FILE)).expect("head file");
        assert_eq!(head, format!("3 {last}\n"));
    }

    #[test]
    fn entries_survive_reopening_with_the_same_hashes() {
        let tmp = TempDir::new("reopen");
        let recorded = {
            let mut log = open(&tmp.state());
            three(&mut log)
        };
        let db = std::fs::read(tmp.state().join(DB_FILE)).expect("read db");
        let log = open(&tmp.state());
        assert_eq!(log.list(None, None).expect("list"), recorded);
        assert!(matches!(
            verify(&log),
            Verification::Intact { entries: 3, .. }
        ));
        drop(log);
        // Opening an existing history rewrote nothing.
        let mut log = open(&tmp.state());
        assert_eq!(
            std::fs::read(tmp.state().join(DB_FILE)).expect("read db"),
            db
        );
        let fourth = log.append(new_entry(4)).expect("append after reopening");
        assert_eq!(fourth.seq, 4);
        assert_eq!(fourth.prev_hash, recorded[2].hash);
        assert!(matches!(
            verify(&log),
            Verification::Intact { entries: 4, .. }
        ));
    }

    #[test]
    fn files_have_the_right_modes_and_format() {
        let tmp = TempDir::new("modes");
        let state = tmp.state();
        {
            let mut log = open(&state);
            assert_eq!(
                std::fs::read_to_string(state.join(HEAD_FILE)).expect("head file"),
                format!("0 {ZERO_HASH}\n")
            );
            three(&mut log);
        }
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&state), 0o750);
        assert_eq!(mode(&state.join(DB_FILE)), 0o640);
        assert_eq!(mode(&state.join(HEAD_FILE)), 0o640);
        let header = std::fs::read(state.join(DB_FILE)).expect("read db");
        assert!(header.starts_with(b"SQLite format 3\0"));
        let conn = raw(&state);
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("user_version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let details: String = conn
            .query_row("SELECT details FROM operations WHERE seq = 2", [], |row| {
                row.get(0)
            })
            .expect("details");
        assert_eq!(
            details,
            r#"{"category":"misconduct","evidence":["a","b"],"level":2}"#
        );
        // No temporary head files left behind.
        let names: Vec<_> = std::fs::read_dir(&state)
            .expect("read state dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn sql_update_and_delete_are_refused_by_triggers() {
        let tmp = TempDir::new("triggers");
        let mut log = open(&tmp.state());
        three(&mut log);
        let conn = raw(&tmp.state());
        let err = conn
            .execute("UPDATE operations SET reason = 'nothing' WHERE seq = 2", [])
            .expect_err("UPDATE must be refused");
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn
            .execute("DELETE FROM operations WHERE seq = 3", [])
            .expect_err("DELETE must be refused");
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn
            .execute("DELETE FROM operations", [])
            .expect_err("DELETE of everything must be refused");
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(matches!(
            verify(&log),
            Verification::Intact { entries: 3, .. }
        ));
    }

    #[test]
    fn changed_entry_is_named() {
        let tmp = TempDir::new("changed");
        let mut log = open(&tmp.state());
        three(&mut log);
        raw_without_triggers(&tmp.state())
            .execute(
                "UPDATE operations SET approver = 'yamada' WHERE seq = 2",
                [],
            )
            .expect("tamper");
        assert_broken(&log, 2, "entry 2 has been changed");
    }

    #[test]
    fn changed_details_are_named() {
        let tmp = TempDir::new("details");
        let mut log = open(&tmp.state());
        three(&mut log);
        raw_without_triggers(&tmp.state())
            .execute(
                "UPDATE operations SET details = '{\"level\":1}' WHERE seq = 3",
                [],
            )
            .expect("tamper");
        assert_broken(&log, 3, "entry 3 has been changed");
    }

    #[test]
    fn rehashed_entry_is_caught_by_the_next_one() {
        let tmp = TempDir::new("rehashed");
        let mut log = open(&tmp.state());
        three(&mut log);
        // The attacker changes entry 2 and recomputes its hash, but not the rest of the chain.
        let mut row = log
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM operations WHERE seq = 2"),
                [],
                Row::from_sql,
            )
            .expect("read entry 2");
        row.operator = "intruder".to_owned();
        let forged = row.compute_hash();
        raw_without_triggers(&tmp.state())
            .execute(
                "UPDATE operations SET operator = 'intruder', hash = ?1 WHERE seq = 2",
                params![forged],
            )
            .expect("tamper");
        assert_broken(&log, 3, "entry 3 does not follow entry 2");
    }

    #[test]
    fn deleted_entry_is_named() {
        let tmp = TempDir::new("deleted");
        let mut log = open(&tmp.state());
        three(&mut log);
        raw_without_triggers(&tmp.state())
            .execute("DELETE FROM operations WHERE seq = 2", [])
            .expect("tamper");
        assert_broken(&log, 2, "entry 2 is missing");
    }

    #[test]
    fn reordered_entries_are_named() {
        let tmp = TempDir::new("reordered");
        let mut log = open(&tmp.state());
        three(&mut log);
        raw_without_triggers(&tmp.state())
            .execute_batch(
                "UPDATE operations SET seq = 100 WHERE seq = 2;
                 UPDATE operations SET seq = 2 WHERE seq = 3;
                 UPDATE operations SET seq = 3 WHERE seq = 100;",
            )
            .expect("tamper");
        assert_broken(&log, 2, "entry 2 has been changed");
    }

    #[test]
    fn truncation_is_caught_by_the_head_file() {
        let tmp = TempDir::new("truncated");
        let mut log = open(&tmp.state());
        three(&mut log);
        raw_without_triggers(&tmp.state())
            .execute("DELETE FROM operations WHERE seq = 3", [])
            .expect("tamper");
        assert_broken(&log, 3, "entries after 2 are missing");
        // Appending would hide the truncation, so it is refused.
        let err = log
            .append(new_entry(9))
            .expect_err("append after truncation");
        assert!(
            matches!(err, AuditError::HeadMismatch { seq: 3, .. }),
            "{err:?}"
        );
        assert_eq!(log.head().expect("head").map(|(seq, _)| seq), Some(2));
        // Everything removed is caught too.
        raw_without_triggers(&tmp.state())
            .execute("DELETE FROM operations", [])
            .expect("tamper");
        assert_broken(&log, 1, "entries after 0 are missing");
    }

    #[test]
    fn edited_head_file_is_named() {
        let tmp = TempDir::new("head");
        let mut log = open(&tmp.state());
        let entries = three(&mut log);
        let head = tmp.state().join(HEAD_FILE);
        std::fs::write(&head, format!("3 {}\n", entries[1].hash)).expect("edit head");
        assert_broken(&log, 3, "head file");
        assert!(matches!(
            log.append(new_entry(4)),
            Err(AuditError::HeadMismatch { seq: 3, .. })
        ));
        std::fs::write(&head, format!("7 {}\n", entries[2].hash)).expect("edit head");
        assert_broken(&log, 4, "entries after 3 are missing");
        std::fs::write(&head, "3 not-a-hash\n").expect("edit head");
        assert_broken(&log, 4, "malformed");
        std::fs::write(&head, format!("+3 {}\n", entries[2].hash)).expect("edit head");
        assert_broken(&log, 4, "malformed");
        std::fs::remove_file(&head).expect("remove head");
        assert_broken(&log, 4, "missing");
        // Opening does not recreate the head of a non-empty history.
        drop(log);
        let log = open(&tmp.state());
        assert!(!head.exists());
        assert_broken(&log, 4, "missing");
    }

    #[test]
    fn head_file_one_behind_is_an_interrupted_append() {
        let tmp = TempDir::new("behind");
        let mut log = open(&tmp.state());
        let entries = three(&mut log);
        let head = tmp.state().join(HEAD_FILE);
        // A crash between the commit of entry 3 and the head update.
        std::fs::write(&head, format!("2 {}\n", entries[1].hash)).expect("edit head");
        assert!(matches!(
            verify(&log),
            Verification::Intact { entries: 3, .. }
        ));
        let fourth = log.append(new_entry(4)).expect("append repairs the head");
        assert_eq!(
            std::fs::read_to_string(&head).expect("head"),
            format!("4 {}\n", fourth.hash)
        );
        assert_eq!(
            verify(&log),
            Verification::Intact {
                entries: 4,
                head: Some(fourth.hash)
            }
        );
    }

    #[test]
    fn list_since_and_limit() {
        let tmp = TempDir::new("list");
        let mut log = open(&tmp.state());
        assert_eq!(log.list(None, None).expect("list"), []);
        let entries = three(&mut log);
        let seqs = |since: Option<&str>, limit: Option<usize>| -> Vec<u64> {
            let since = since.map(|t| t.parse::<Timestamp>().expect("timestamp"));
            log.list(since, limit)
                .expect("list")
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(None, None), [1, 2, 3]);
        assert_eq!(seqs(None, Some(2)), [2, 3]);
        assert_eq!(seqs(None, Some(1)), [3]);
        assert_eq!(seqs(None, Some(0)), Vec::<u64>::new());
        assert_eq!(seqs(None, Some(usize::MAX)), [1, 2, 3]);
        // `since` is inclusive, by recorded time.
        assert_eq!(seqs(Some(&entries[1].time), None), [2, 3]);
        assert_eq!(seqs(Some(&entries[0].time), Some(1)), [3]);
        assert_eq!(seqs(Some("1970-01-01T00:00:00Z"), None), [1, 2, 3]);
        assert_eq!(seqs(Some("9999-01-01T00:00:00Z"), None), Vec::<u64>::new());
        assert_eq!(log.list(None, Some(2)).expect("list"), entries[1..]);
    }

    #[test]
    fn reference_names_seq_and_hash_prefix() {
        let tmp = TempDir::new("reference");
        let mut log = open(&tmp.state());
        let entry = log.append(new_entry(1)).expect("append");
        let reference = entry.reference();
        assert_eq!(reference, format!("OP-000001-{}", &entry.hash[..8]));
        assert_eq!(reference.len(), "OP-000042-1a2b3c4d".len());
        let entry = Entry {
            seq: 42,
            hash: "1a2b3c4d".repeat(8),
            ..entry
        };
        assert_eq!(entry.reference(), "OP-000042-1a2b3c4d");
        let entry = Entry {
            seq: 1_234_567,
            ..entry
        };
        assert_eq!(entry.reference(), "OP-1234567-1a2b3c4d");
    }

    #[test]
    fn entry_json_is_flat() {
        let tmp = TempDir::new("json");
        let mut log = open(&tmp.state());
        let entry = log.append(new_entry(2)).expect("append");
        let json = serde_json::to_value(&entry).expect("serialize");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["operator"], "tanaka");
        assert_eq!(json["approver"], "suzuki");
        assert_eq!(json["hash"], entry.hash.as_str());
        let back: Entry = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, entry);
    }

    /// The example of the module documentation, encoded by hand from the table there; the
    /// expected hash was computed with the documented Python function, another tool.
    #[test]
    fn documented_hash_example() {
        fn s(out: &mut Vec<u8>, text: &str) {
            out.extend_from_slice(&(text.len() as u64).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        let details = serde_json::json!({
            "level": 2,
            "category": "misconduct",
            "note": "\"a\"\n",
        });
        let canonical = canonical_json(&details);
        assert_eq!(
            canonical,
            r#"{"category":"misconduct","level":2,"note":"\"a\"\n"}"#
        );
        let mut input = Vec::new();
        s(&mut input, "sekisho operation history v1");
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // seq 1
        s(&mut input, "2026-04-01T09:00:00.000000000Z");
        s(&mut input, "tanaka");
        s(&mut input, "isolate");
        input.push(1); // target present
        s(&mut input, "asset:cs01");
        input.push(1); // reason present
        s(&mut input, "ウイルス検知");
        input.push(0); // no approver
        input.push(1); // emergency
        s(&mut input, "ok");
        s(&mut input, &canonical);
        s(&mut input, &"0".repeat(64));
        let by_hand = hex::encode(Sha256::digest(&input));
        const EXPECTED: &str = "88cee41e22512c544298b6c593a1e40710bb14a3b2e67d191fb9c51e88c09795";
        assert_eq!(by_hand, EXPECTED);
        let by_module = entry_hash(&HashInput {
            seq: 1,
            time: "2026-04-01T09:00:00.000000000Z",
            operator: "tanaka",
            action: "isolate",
            target: Some("asset:cs01"),
            reason: Some("ウイルス検知"),
            approver: None,
            emergency: true,
            outcome: "ok",
            details: &canonical,
            prev_hash: ZERO_HASH,
        });
        assert_eq!(by_module, EXPECTED);
        // An absent field and an empty one hash differently.
        let empty_approver = entry_hash(&HashInput {
            approver: Some(""),
            ..HashInput {
                seq: 1,
                time: "2026-04-01T09:00:00.000000000Z",
                operator: "tanaka",
                action: "isolate",
                target: Some("asset:cs01"),
                reason: Some("ウイルス検知"),
                approver: None,
                emergency: true,
                outcome: "ok",
                details: &canonical,
                prev_hash: ZERO_HASH,
            }
        });
        assert_ne!(empty_approver, EXPECTED);
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let value = serde_json::json!({
            "b": [ { "z": 1, "a": null }, true, 1.5, -3 ],
            "a": { "y": "é\u{1}", "x": {} },
        });
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"x":{},"y":"é\u0001"},"b":[{"a":null,"z":1},true,1.5,-3]}"#
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new("newer");
        drop(open(&tmp.state()));
        raw(&tmp.state())
            .pragma_update(None, "user_version", 99)
            .expect("set version");
        let err = AuditLog::open(&tmp.state()).expect_err("newer schema");
        assert!(
            matches!(err, AuditError::Store(StoreError::TooNew { found: 99, .. })),
            "{err:?}"
        );
    }
}
