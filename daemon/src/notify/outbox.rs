//! The durable outbox: `<state_dir>/outbox.db`, every notice ever queued and its fate.
//!
//! A real SQLite file (WAL journal, `synchronous=FULL`: [`Outbox::enqueue`] returns only
//! once the notice is on disk). Its schema version is its own `PRAGMA user_version`, raised
//! one step at a time by [`MIGRATIONS`]; a file newer than this build is refused.
//!
//! Invariants of `outbox` (the first three enforced by the database):
//! - `key` is unique: a notice is queued at most once, whatever the caller retries;
//! - `attempts` counts failed and successful sends; it never goes down;
//! - a row is pending while `delivered_at` is NULL; delivering fills `delivered_at` once and
//!   rows are never deleted, so the table is the delivery record;
//! - `notice` is the [`Notice`] as JSON; its key equals the `key` column;
//! - `created_at`, `next_attempt_at`, `delivered_at` are RFC 3339 UTC with exactly nine
//!   fractional digits, so text order is time order and SQL compares them directly;
//! - a failed row's `next_attempt_at` is the failure time plus [`backoff`] of its attempts.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use rusqlite::Connection;
use rusqlite::OptionalExtension;
use rusqlite::TransactionBehavior;
use rusqlite::params;

use super::Notice;
use super::NotifyError;
use crate::store;

/// The database file inside the state directory.
pub const DB_FILE: &str = "outbox.db";

/// The longest wait between two attempts of one notice.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox.
    "CREATE TABLE outbox (
         id              INTEGER PRIMARY KEY,
         key             TEXT NOT NULL UNIQUE CHECK (length(key) > 0),
         event           TEXT NOT NULL,
         recipient       TEXT NOT NULL,
         destination     TEXT NOT NULL,
         notice          TEXT NOT NULL,
         created_at      TEXT NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
         next_attempt_at TEXT NOT NULL,
         last_error      TEXT NULL,
         delivered_at    TEXT NULL
     ) STRICT;
     CREATE INDEX outbox_pending ON outbox (destination, id) WHERE delivered_at IS NULL;",
];

/// Seconds from the Unix epoch back to 0000-01-01T00:00:00Z.
const YEAR_ZERO_SECOND: i64 = -62_167_219_200;

const COLUMNS: &str = "id, notice, created_at, attempts, next_attempt_at, last_error, delivered_at";

/// The longest idempotency key accepted (it travels in mail and HTTP headers).
const MAX_KEY_LEN: usize = 512;

/// One queued notice and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub notice: Notice,
    /// RFC 3339 UTC, nine fractional digits.
    pub created_at: String,
    /// Sends tried so far, failed or not.
    pub attempts: u32,
    /// When the next attempt is due (for a delivered notice: when it was last due).
    pub next_attempt_at: String,
    /// Why the last attempt failed; cleared on delivery.
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
}

/// The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s … capped at
/// [`MAX_BACKOFF`]. `backoff(0)` is zero (never tried: due at once).
pub fn backoff(attempts: u32) -> Duration {
    match attempts {
        0 => Duration::ZERO,
        // 2^9 s already exceeds the cap.
        n if n > 9 => MAX_BACKOFF,
        n => Duration::from_secs(1 << (n - 1)).min(MAX_BACKOFF),
    }
}

/// The outbox of one state directory.
pub struct Outbox {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens `<state_dir>/outbox.db`, creating the directory (mode 0750), the file (0640)
    /// and the schema as needed (see [`crate::store`]).
    pub fn open(state_dir: &Path) -> Result<Outbox, NotifyError> {
        let (conn, path) = store::open(state_dir, DB_FILE, MIGRATIONS, "notification outbox")?;
        Ok(Outbox { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `notice`, due at once. Returns `false`, changing nothing, when a notice with
    /// the same key is already in the outbox (delivered or not). The row is committed with
    /// `synchronous=FULL` before this returns.
    pub fn enqueue(&mut self, notice: Notice) -> Result<bool, NotifyError> {
        check_key(&notice.key)?;
        let json = serde_json::to_string(&notice).map_err(|source| NotifyError::Serialize {
            key: notice.key.clone(),
            source,
        })?;
        let now = timestamp_text(Timestamp::now())?;
        let inserted = self
            .conn
            .execute(
                "INSERT INTO outbox (key, event, recipient, destination, notice, created_at,
                                     attempts, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?6)
                 ON CONFLICT (key) DO NOTHING",
                params![
                    notice.key,
                    notice.event,
                    notice.recipient,
                    notice.channel.destination(),
                    json,
                    now
                ],
            )
            .map_err(self.query_err("queue a notice"))?;
        if inserted == 0 {
            tracing::debug!(key = %notice.key, "notice already in the outbox");
        }
        Ok(inserted == 1)
    }

    /// Every notice not yet delivered, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, NotifyError> {
        self.select(
            &format!("SELECT {COLUMNS} FROM outbox WHERE delivered_at IS NULL ORDER BY id"),
            [],
            "list pending notices",
        )
    }

    /// How many notices are not yet delivered (the `sekisho_notifications_pending` gauge).
    pub fn pending_count(&self) -> Result<u64, NotifyError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
                [],
                |row| row.get(0),
            )
            .map_err(self.query_err("count pending notices"))
    }

    /// Per event and channel kind: notices delivered, and failed attempts (every attempt
    /// but the one that delivered), for the metrics.
    pub fn delivery_stats(&self) -> Result<Vec<(String, String, u64, u64)>, NotifyError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT event,
                        CASE WHEN instr(destination, ':') > 0
                             THEN substr(destination, 1, instr(destination, ':') - 1)
                             ELSE destination END AS channel,
                        count(delivered_at),
                        sum(attempts) - count(delivered_at)
                 FROM outbox GROUP BY event, channel ORDER BY event, channel",
            )
            .map_err(self.query_err("count deliveries"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)? as u64,
                    row.get::<_, i64>(3)?.max(0) as u64,
                ))
            })
            .map_err(self.query_err("count deliveries"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.query_err("count deliveries"))
    }

    /// When the oldest notice still waiting was queued (RFC 3339), if any.
    pub fn oldest_pending(&self) -> Result<Option<String>, NotifyError> {
        self.conn
            .query_row(
                "SELECT min(created_at) FROM outbox WHERE delivered_at IS NULL",
                [],
                |row| row.get(0),
            )
            .map_err(self.query_err("find the oldest pending notice"))
    }

    /// The last `limit` notices queued, delivered or not, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<OutboxEntry>, NotifyError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.select(
            &format!("SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"),
            [limit],
            "list recent notices",
        )
    }

    /// The notices to try at `now`, oldest first: for each destination, its oldest pending
    /// notice, when its next attempt is not after `now`. Later notices to a destination wait
    /// until the earlier one is delivered.
    pub fn due(&self, now: Timestamp) -> Result<Vec<OutboxEntry>, NotifyError> {
        let now = timestamp_text(now)?;
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM outbox AS o
                 WHERE o.delivered_at IS NULL
                   AND o.next_attempt_at <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox AS e
                                   WHERE e.destination = o.destination
                                     AND e.delivered_at IS NULL
                                     AND e.id < o.id)
                 ORDER BY o.id"
            ),
            [now],
            "list due notices",
        )
    }

    /// Records that notice `id` was accepted by its server at `at`.
    pub fn mark_delivered(&mut self, id: i64, at: Timestamp) -> Result<(), NotifyError> {
        let at = timestamp_text(at)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(query_err(&self.path, "begin a transaction"))?;
        check_pending(&tx, &self.path, id)?;
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, delivered_at = ?2, last_error = NULL
             WHERE id = ?1",
            params![id, at],
        )
        .map_err(query_err(&self.path, "mark a notice delivered"))?;
        tx.commit()
            .map_err(query_err(&self.path, "mark a notice delivered"))?;
        Ok(())
    }

    /// Records that an attempt to send notice `id` failed at `at` with `error`; the next
    /// attempt is due [`backoff`]`(attempts)` later. Never gives up.
    pub fn mark_failed(&mut self, id: i64, at: Timestamp, error: &str) -> Result<(), NotifyError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(query_err(&self.path, "begin a transaction"))?;
        let attempts = check_pending(&tx, &self.path, id)?.saturating_add(1);
        let next = at.checked_add(backoff(attempts)).unwrap_or(Timestamp::MAX);
        tx.execute(
            "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
            params![id, attempts, timestamp_text(next)?, error],
        )
        .map_err(query_err(&self.path, "mark a notice failed"))?;
        tx.commit()
            .map_err(query_err(&self.path, "mark a notice failed"))?;
        Ok(())
    }

    fn select<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        action: &'static str,
    ) -> Result<Vec<OutboxEntry>, NotifyError> {
        let mut stmt = self.conn.prepare(sql).map_err(self.query_err(action))?;
        let rows = stmt
            .query_map(params, |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(self.query_err(action))?;
        let mut entries = Vec::new();
        for row in rows {
            let (id, json, created_at, attempts, next_attempt_at, last_error, delivered_at) =
                row.map_err(self.query_err(action))?;
            let notice = serde_json::from_str(&json).map_err(|source| NotifyError::Corrupt {
                path: self.path.clone(),
                id,
                source,
            })?;
            entries.push(OutboxEntry {
                id,
                notice,
                created_at,
                attempts,
                next_attempt_at,
                last_error,
                delivered_at,
            });
        }
        Ok(entries)
    }

    fn query_err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> NotifyError {
        query_err(&self.path, action)
    }
}

fn query_err(path: &Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> NotifyError {
    let path = path.to_owned();
    move |source| NotifyError::Query {
        path,
        action,
        source,
    }
}

/// [`NotifyError`] keeps its own variants for the failures of [`store::open`] (with the
/// same messages); this maps one onto the other.
/// The attempts so far of pending notice `id`; an error when it is unknown or delivered.
fn check_pending(conn: &Connection, path: &Path, id: i64) -> Result<u32, NotifyError> {
    let row: Option<(u32, Option<String>)> = conn
        .query_row(
            "SELECT attempts, delivered_at FROM outbox WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(query_err(path, "look up a notice"))?;
    match row {
        None => Err(NotifyError::NotFound { id }),
        Some((_, Some(delivered_at))) => Err(NotifyError::AlreadyDelivered { id, delivered_at }),
        Some((attempts, None)) => Ok(attempts),
    }
}

/// Keys travel in mail and HTTP headers and syslog structured data: no control characters.
fn check_key(key: &str) -> Result<(), NotifyError> {
    let invalid = |reason| {
        Err(NotifyError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        invalid("it is empty")
    } else if key.len() > MAX_KEY_LEN {
        invalid("it is longer than 512 bytes")
    } else if key.chars().any(char::is_control) {
        invalid("it contains a control character")
    } else {
        Ok(())
    }
}

/// RFC 3339 UTC with exactly nine fractional digits.
pub(crate) fn timestamp_text(at: Timestamp) -> Result<String, NotifyError> {
    if at.as_second() < YEAR_ZERO_SECOND {
        return Err(NotifyError::TimestampOutOfRange { at });
    }
    Ok(DateTimePrinter::new()
        .precision(Some(9))
        .timestamp_to_string(&at))
}
