//! Planned stops (R16): maintenance windows, kept in `<state_dir>/maintenance.db` so that a
//! schedule survives daemon restarts and reboots.
//!
//! A window is announced when it is scheduled (事前通知), put in force at its start, lifted
//! at its end (復旧通知), or cancelled before it starts (取消). This module only keeps the
//! windows and their state; the daemon performs the stop and sends the notices.
//!
//! A real SQLite file (WAL journal, `synchronous=FULL`: a call returns once the change is on
//! disk). Its schema version is its own `PRAGMA user_version`, raised one step at a time by
//! [`MIGRATIONS`]; a file newer than this build is refused rather than guessed at.
//!
//! Invariants of `windows`:
//! - `start_at` < `end_at` (the database checks it), both RFC 3339 UTC with exactly nine
//!   fractional digits (`2026-04-01T09:00:00.000000000Z`), so text order is time order and
//!   SQL compares them directly;
//! - no two windows that are `scheduled` or `active` overlap: [`Schedule::schedule`] checks
//!   and inserts in one immediate transaction;
//! - the state only moves forward: `scheduled` → `active` → `done`, or `scheduled` →
//!   `cancelled`; rows are never deleted, so the table is the history.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use rusqlite::Connection;
use rusqlite::OptionalExtension;
use rusqlite::TransactionBehavior;
use rusqlite::params;

use crate::isolation::Target;
use crate::store;
use crate::store::StoreError;

/// The database file inside the state directory.
pub const DB_FILE: &str = "maintenance.db";

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: maintenance windows.
    "CREATE TABLE windows (
         id           INTEGER PRIMARY KEY,
         start_at     TEXT NOT NULL,
         end_at       TEXT NOT NULL,
         reason       TEXT NOT NULL CHECK (length(reason) > 0),
         target       TEXT NOT NULL CHECK (length(target) > 0),
         operator     TEXT NOT NULL CHECK (length(operator) > 0),
         state        TEXT NOT NULL
                      CHECK (state IN ('scheduled', 'active', 'done', 'cancelled')),
         created_at   TEXT NOT NULL,
         cancelled_by TEXT NULL,
         CHECK (start_at < end_at),
         CHECK ((state = 'cancelled') = (cancelled_by IS NOT NULL))
     ) STRICT;
     CREATE INDEX windows_state_start ON windows (state, start_at);",
];

/// Seconds from the Unix epoch back to 0000-01-01T00:00:00Z.
const YEAR_ZERO_SECOND: i64 = -62_167_219_200;

const COLUMNS: &str = "id, start_at, end_at, reason, target, operator, state, created_at";

/// Where a window is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowState {
    /// Announced, not yet started.
    Scheduled,
    /// The stop is in force.
    Active,
    /// Ended and restored.
    Done,
    /// Withdrawn before it started.
    Cancelled,
}

impl WindowState {
    pub const ALL: [WindowState; 4] = [
        WindowState::Scheduled,
        WindowState::Active,
        WindowState::Done,
        WindowState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WindowState::Scheduled => "scheduled",
            WindowState::Active => "active",
            WindowState::Done => "done",
            WindowState::Cancelled => "cancelled",
        }
    }

    /// The word the notices use.
    pub fn ja(self) -> &'static str {
        match self {
            WindowState::Scheduled => "予定",
            WindowState::Active => "停止中",
            WindowState::Done => "終了",
            WindowState::Cancelled => "取消",
        }
    }

    /// Whether `self` may become `to`: `scheduled` → `active` → `done`, `scheduled` →
    /// `cancelled`, and any state to itself (so a step retried after a crash is harmless).
    pub fn can_become(self, to: WindowState) -> bool {
        use WindowState::*;
        self == to
            || matches!(
                (self, to),
                (Scheduled, Active) | (Active, Done) | (Scheduled, Cancelled)
            )
    }
}

impl fmt::Display for WindowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a [`WindowState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown window state {text:?} (expected scheduled, active, done or cancelled)")]
pub struct ParseWindowStateError {
    pub text: String,
}

impl FromStr for WindowState {
    type Err = ParseWindowStateError;

    fn from_str(s: &str) -> Result<WindowState, ParseWindowStateError> {
        WindowState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseWindowStateError { text: s.to_owned() })
    }
}

fn all_target() -> Target {
    Target::All
}

/// One maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub id: i64,
    /// RFC 3339 UTC, nine fractional digits.
    pub start: String,
    /// RFC 3339 UTC, nine fractional digits; after `start`.
    pub end: String,
    pub reason: String,
    /// What is stopped; `all` unless the operator named a narrower target.
    #[serde(default = "all_target")]
    pub target: Target,
    /// Who scheduled it.
    pub operator: String,
    pub state: WindowState,
    /// RFC 3339 UTC, nine fractional digits.
    pub created_at: String,
}

impl Window {
    /// `start` as an instant.
    pub fn start_time(&self) -> Result<Timestamp, jiff::Error> {
        self.start.parse()
    }

    /// `end` as an instant.
    pub fn end_time(&self) -> Result<Timestamp, jiff::Error> {
        self.end.parse()
    }
}

/// Why a window could not be scheduled, changed or read.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {action} in maintenance database {}", .path.display())]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("row {id} of maintenance database {} is corrupt: {problem}", .path.display())]
    Corrupt {
        path: PathBuf,
        id: i64,
        problem: String,
    },
    #[error("maintenance start {start} is in the past (now {now})")]
    StartInPast { start: String, now: String },
    #[error("maintenance end {end} is not after its start {start}")]
    EndNotAfterStart { start: String, end: String },
    #[error(
        "maintenance window {start} to {end} overlaps window {} ({}, {} to {}: {})",
        .other.id, .other.state, .other.start, .other.end, .other.reason
    )]
    Overlap {
        start: String,
        end: String,
        /// The scheduled or active window it overlaps (boxed: a window is large).
        other: Box<Window>,
    },
    #[error("{field} of a maintenance window must not be empty")]
    EmptyField { field: &'static str },
    #[error("time {at} is before year 0 and cannot be scheduled")]
    TimestampOutOfRange { at: Timestamp },
    #[error("there is no maintenance window {id}")]
    NotFound { id: i64 },
    #[error(
        "maintenance window {id} has already started and cannot be cancelled; it ends at {end}"
    )]
    AlreadyStarted { id: i64, end: String },
    #[error("maintenance window {id} is already over and cannot be cancelled")]
    AlreadyDone { id: i64 },
    #[error("maintenance window {id} is already cancelled")]
    AlreadyCancelled { id: i64 },
    #[error("maintenance window {id} cannot go from {from} to {to}")]
    InvalidTransition {
        id: i64,
        from: WindowState,
        to: WindowState,
    },
}

/// The maintenance windows of one state directory.
pub struct Schedule {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("path", &self.path)
            .finish()
    }
}

impl Schedule {
    /// Opens `<state_dir>/maintenance.db`, creating the directory (mode 0750), the file
    /// (0640) and the schema as needed (see [`crate::store`]).
    pub fn open(state_dir: &Path) -> Result<Schedule, MaintenanceError> {
        let (conn, path) = store::open(state_dir, DB_FILE, MIGRATIONS, "maintenance database")?;
        Ok(Schedule { conn, path })
    }

    /// Records a new window in state `scheduled`. Refuses a start before `now`, an end not
    /// after the start, an empty reason or operator, and an overlap with any window that is
    /// scheduled or active (naming it).
    pub fn schedule(
        &mut self,
        start: Timestamp,
        end: Timestamp,
        reason: &str,
        target: Target,
        operator: &str,
        now: Timestamp,
    ) -> Result<Window, MaintenanceError> {
        for at in [start, end, now] {
            if at.as_second() < YEAR_ZERO_SECOND {
                return Err(MaintenanceError::TimestampOutOfRange { at });
            }
        }
        if reason.trim().is_empty() {
            return Err(MaintenanceError::EmptyField { field: "reason" });
        }
        if operator.trim().is_empty() {
            return Err(MaintenanceError::EmptyField { field: "operator" });
        }
        let (start_text, end_text) = (timestamp_text(start), timestamp_text(end));
        if start < now {
            return Err(MaintenanceError::StartInPast {
                start: start_text,
                now: timestamp_text(now),
            });
        }
        if end <= start {
            return Err(MaintenanceError::EndNotAfterStart {
                start: start_text,
                end: end_text,
            });
        }
        // The transaction borrows the connection mutably: errors name a copy of the path.
        let path = self.path.clone();
        let err = |action| query_err_at(path.clone(), action);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin a transaction"))?;
        // Half-open intervals: a window may start at the instant another ends.
        let other = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM windows \
                     WHERE state IN ('scheduled', 'active') AND start_at < ?2 AND ?1 < end_at \
                     ORDER BY start_at, id LIMIT 1"
                ),
                params![start_text, end_text],
                read_row,
            )
            .optional()
            .map_err(err("look for overlapping windows"))?;
        if let Some(other) = other {
            return Err(MaintenanceError::Overlap {
                start: start_text,
                end: end_text,
                other: Box::new(decode(&self.path, other)?),
            });
        }
        let created_at = timestamp_text(now);
        tx.execute(
            "INSERT INTO windows (start_at, end_at, reason, target, operator, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'scheduled', ?6)",
            params![
                start_text,
                end_text,
                reason,
                target.to_string(),
                operator,
                created_at
            ],
        )
        .map_err(err("insert a window"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(err("commit a window"))?;
        Ok(Window {
            id,
            start: start_text,
            end: end_text,
            reason: reason.to_owned(),
            target,
            operator: operator.to_owned(),
            state: WindowState::Scheduled,
            created_at,
        })
    }

    /// Every window ever scheduled, by start time.
    pub fn list(&self) -> Result<Vec<Window>, MaintenanceError> {
        self.windows("list windows", "ORDER BY start_at, id", params![])
    }

    /// One window, `None` if there is no such id.
    pub fn get(&self, id: i64) -> Result<Option<Window>, MaintenanceError> {
        Ok(self
            .windows("read a window", "WHERE id = ?1", params![id])?
            .pop())
    }

    /// Withdraws a window that has not started; records who did. Returns it as it is now.
    pub fn cancel(&mut self, id: i64, operator: &str) -> Result<Window, MaintenanceError> {
        if operator.trim().is_empty() {
            return Err(MaintenanceError::EmptyField { field: "operator" });
        }
        let mut window = self.get(id)?.ok_or(MaintenanceError::NotFound { id })?;
        match window.state {
            WindowState::Scheduled => {}
            WindowState::Active => {
                return Err(MaintenanceError::AlreadyStarted {
                    id,
                    end: window.end,
                });
            }
            WindowState::Done => return Err(MaintenanceError::AlreadyDone { id }),
            WindowState::Cancelled => return Err(MaintenanceError::AlreadyCancelled { id }),
        }
        // The state guard makes a concurrent start win cleanly: then nothing changes here.
        let changed = self
            .conn
            .execute(
                "UPDATE windows SET state = 'cancelled', cancelled_by = ?2 \
                 WHERE id = ?1 AND state = 'scheduled'",
                params![id, operator],
            )
            .map_err(|source| self.query_err("cancel a window", source))?;
        if changed == 0 {
            return match self.get(id)? {
                None => Err(MaintenanceError::NotFound { id }),
                Some(now) => Err(MaintenanceError::InvalidTransition {
                    id,
                    from: now.state,
                    to: WindowState::Cancelled,
                }),
            };
        }
        window.state = WindowState::Cancelled;
        Ok(window)
    }

    /// Scheduled windows whose start has come, earliest first: to be put in force.
    pub fn due_starts(&self, now: Timestamp) -> Result<Vec<Window>, MaintenanceError> {
        self.windows(
            "list windows due to start",
            "WHERE state = 'scheduled' AND start_at <= ?1 ORDER BY start_at, id",
            params![timestamp_text(now)],
        )
    }

    /// Active windows whose end has come, earliest first: to be lifted.
    pub fn due_ends(&self, now: Timestamp) -> Result<Vec<Window>, MaintenanceError> {
        self.windows(
            "list windows due to end",
            "WHERE state = 'active' AND end_at <= ?1 ORDER BY end_at, id",
            params![timestamp_text(now)],
        )
    }

    /// Moves a window along `scheduled` → `active` → `done` (or to `cancelled` while
    /// scheduled); setting the state it already has is a no-op.
    pub fn set_state(&mut self, id: i64, state: WindowState) -> Result<(), MaintenanceError> {
        // The transaction borrows the connection mutably: errors name a copy of the path.
        let path = self.path.clone();
        let err = |action| query_err_at(path.clone(), action);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin a transaction"))?;
        let from: String = tx
            .query_row(
                "SELECT state FROM windows WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(err("read a window's state"))?
            .ok_or(MaintenanceError::NotFound { id })?;
        let from: WindowState = from.parse().map_err(|_| MaintenanceError::Corrupt {
            path: self.path.clone(),
            id,
            problem: format!("unknown state {from:?}"),
        })?;
        if from == state {
            return Ok(());
        }
        if !from.can_become(state) {
            return Err(MaintenanceError::InvalidTransition {
                id,
                from,
                to: state,
            });
        }
        // Cancelling this way records the daemon as the one who did.
        let cancelled_by =
            (state == WindowState::Cancelled).then_some(crate::isolation::DAEMON_OPERATOR);
        tx.execute(
            "UPDATE windows SET state = ?2, cancelled_by = ?3 WHERE id = ?1",
            params![id, state.as_str(), cancelled_by],
        )
        .map_err(err("change a window's state"))?;
        tx.commit().map_err(err("commit a window's state"))?;
        Ok(())
    }

    fn windows(
        &self,
        action: &'static str,
        clause: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Window>, MaintenanceError> {
        let err = |source| self.query_err(action, source);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM windows {clause}"))
            .map_err(err)?;
        let rows = stmt.query_map(params, read_row).map_err(err)?;
        let mut windows = Vec::new();
        for row in rows {
            windows.push(decode(&self.path, row.map_err(err)?)?);
        }
        Ok(windows)
    }

    fn query_err(&self, action: &'static str, source: rusqlite::Error) -> MaintenanceError {
        query_err_at(self.path.clone(), action)(source)
    }
}

/// The error of a failed query `action` on the schedule at `path`.
fn query_err_at(
    path: PathBuf,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> MaintenanceError {
    move |source| MaintenanceError::Query {
        path,
        action,
        source,
    }
}

/// The [`COLUMNS`] of one row, as stored.
type Row = (i64, String, String, String, String, String, String, String);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

/// A stored row as a [`Window`], checking what the schema cannot: the target, the state
/// and the times parse.
fn decode(path: &Path, row: Row) -> Result<Window, MaintenanceError> {
    let (id, start, end, reason, target, operator, state, created_at) = row;
    let corrupt = |problem: String| MaintenanceError::Corrupt {
        path: path.to_owned(),
        id,
        problem,
    };
    let target: Target = target
        .parse()
        .map_err(|e| corrupt(format!("target {target:?}: {e}")))?;
    let state: WindowState = state.parse().map_err(|e| corrupt(format!("state: {e}")))?;
    for (field, text) in [
        ("start", &start),
        ("end", &end),
        ("created_at", &created_at),
    ] {
        text.parse::<Timestamp>()
            .map_err(|e| corrupt(format!("{field} {text:?}: {e}")))?;
    }
    Ok(Window {
        id,
        start,
        end,
        reason,
        target,
        operator,
        state,
        created_at,
    })
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

    fn ts(text: &str) -> Timestamp {
        text.parse()
            .unwrap_or_else(|err| panic!("bad test time {text}: {err}"))
    }

    const NOW: &str = "2026-11-20T00:00:00Z";

    fn open(dir: &TempDir) -> Schedule {
        Schedule::open(&dir.state()).unwrap_or_else(|err| panic!("open: {err}"))
    }

    fn add(schedule: &mut Schedule, start: &str, end: &str) -> Window {
        schedule
            .schedule(
                ts(start),
                ts(end),
                "OS の月例パッチ適用",
                Target::All,
                "tanaka",
                ts(NOW),
            )
            .unwrap_or_else(|err| panic!("schedule {start}..{end}: {err}"))
    }

    #[test]
    fn schedules_and_lists_windows() {
        let dir = TempDir::new("list");
        let mut schedule = open(&dir);
        assert!(schedule.list().unwrap().is_empty());
        let second = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        let first = schedule
            .schedule(
                ts("2026-11-30T12:00:00Z"),
                ts("2026-11-30T14:00:00Z"),
                "CS 更新",
                Target::Asset("cs01".into()),
                "suzuki",
                ts(NOW),
            )
            .unwrap();
        assert_eq!(
            first,
            Window {
                id: first.id,
                start: "2026-11-30T12:00:00.000000000Z".into(),
                end: "2026-11-30T14:00:00.000000000Z".into(),
                reason: "CS 更新".into(),
                target: Target::Asset("cs01".into()),
                operator: "suzuki".into(),
                state: WindowState::Scheduled,
                created_at: "2026-11-20T00:00:00.000000000Z".into(),
            }
        );
        assert_ne!(first.id, second.id);
        assert_eq!(schedule.list().unwrap(), [first.clone(), second.clone()]);
        assert_eq!(schedule.get(first.id).unwrap(), Some(first));
        assert_eq!(schedule.get(9999).unwrap(), None);
    }

    #[test]
    fn refuses_a_start_in_the_past() {
        let dir = TempDir::new("past");
        let mut schedule = open(&dir);
        let err = schedule
            .schedule(
                ts("2026-11-19T23:59:59Z"),
                ts("2026-11-20T02:00:00Z"),
                "x",
                Target::All,
                "tanaka",
                ts(NOW),
            )
            .unwrap_err();
        assert!(
            matches!(err, MaintenanceError::StartInPast { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "maintenance start 2026-11-19T23:59:59.000000000Z is in the past \
             (now 2026-11-20T00:00:00.000000000Z)"
        );
        // Starting right now is allowed.
        add(&mut schedule, NOW, "2026-11-20T01:00:00Z");
    }

    #[test]
    fn refuses_an_end_not_after_the_start() {
        let dir = TempDir::new("end");
        let mut schedule = open(&dir);
        for end in ["2026-12-01T12:00:00Z", "2026-12-01T11:00:00Z"] {
            let err = schedule
                .schedule(
                    ts("2026-12-01T12:00:00Z"),
                    ts(end),
                    "x",
                    Target::All,
                    "tanaka",
                    ts(NOW),
                )
                .unwrap_err();
            assert!(
                matches!(err, MaintenanceError::EndNotAfterStart { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().starts_with("maintenance end 2026-12-01T1"),
                "{err}"
            );
        }
        assert!(schedule.list().unwrap().is_empty());
    }

    #[test]
    fn refuses_empty_reason_and_operator() {
        let dir = TempDir::new("empty");
        let mut schedule = open(&dir);
        let (start, end) = (ts("2026-12-01T12:00:00Z"), ts("2026-12-01T13:00:00Z"));
        let err = schedule
            .schedule(start, end, " ", Target::All, "tanaka", ts(NOW))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reason of a maintenance window must not be empty"
        );
        let err = schedule
            .schedule(start, end, "x", Target::All, "", ts(NOW))
            .unwrap_err();
        assert!(
            matches!(err, MaintenanceError::EmptyField { field: "operator" }),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_overlaps_and_names_the_other_window() {
        let dir = TempDir::new("overlap");
        let mut schedule = open(&dir);
        let existing = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        for (start, end) in [
            ("2026-12-01T11:00:00Z", "2026-12-01T12:00:01Z"), // overlaps its start
            ("2026-12-01T13:59:59Z", "2026-12-01T15:00:00Z"), // overlaps its end
            ("2026-12-01T12:30:00Z", "2026-12-01T13:00:00Z"), // inside
            ("2026-12-01T11:00:00Z", "2026-12-01T15:00:00Z"), // around
            ("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z"), // the same
        ] {
            let err = schedule
                .schedule(ts(start), ts(end), "x", Target::All, "suzuki", ts(NOW))
                .unwrap_err();
            match &err {
                MaintenanceError::Overlap { other, .. } => assert_eq!(**other, existing),
                _ => panic!("{start}..{end}: expected an overlap, got {err:?}"),
            }
            let message = err.to_string();
            assert!(
                message.contains(&format!("overlaps window {} (scheduled", existing.id))
                    && message.contains("OS の月例パッチ適用"),
                "{message}"
            );
        }
        // Back to back is not an overlap.
        add(
            &mut schedule,
            "2026-12-01T10:00:00Z",
            "2026-12-01T12:00:00Z",
        );
        add(
            &mut schedule,
            "2026-12-01T14:00:00Z",
            "2026-12-01T16:00:00Z",
        );
        assert_eq!(schedule.list().unwrap().len(), 3);
    }

    #[test]
    fn active_windows_block_overlaps_but_cancelled_and_done_ones_do_not() {
        let dir = TempDir::new("overlap-states");
        let mut schedule = open(&dir);
        let a = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        schedule.set_state(a.id, WindowState::Active).unwrap();
        let err = schedule
            .schedule(
                ts("2026-12-01T13:00:00Z"),
                ts("2026-12-01T15:00:00Z"),
                "x",
                Target::All,
                "suzuki",
                ts(NOW),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("overlaps window {} (active", a.id)),
            "{err}"
        );
        schedule.set_state(a.id, WindowState::Done).unwrap();
        add(
            &mut schedule,
            "2026-12-01T13:00:00Z",
            "2026-12-01T15:00:00Z",
        );

        let c = add(
            &mut schedule,
            "2026-12-02T12:00:00Z",
            "2026-12-02T14:00:00Z",
        );
        schedule.cancel(c.id, "suzuki").unwrap();
        add(
            &mut schedule,
            "2026-12-02T12:00:00Z",
            "2026-12-02T14:00:00Z",
        );
    }

    #[test]
    fn cancels_only_scheduled_windows() {
        let dir = TempDir::new("cancel");
        let mut schedule = open(&dir);
        let w = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        let cancelled = schedule.cancel(w.id, "suzuki").unwrap();
        assert_eq!(cancelled.state, WindowState::Cancelled);
        assert_eq!(cancelled.id, w.id);
        assert_eq!(schedule.get(w.id).unwrap(), Some(cancelled));
        let err = schedule.cancel(w.id, "suzuki").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("maintenance window {} is already cancelled", w.id)
        );

        let err = schedule.cancel(4242, "suzuki").unwrap_err();
        assert!(
            matches!(err, MaintenanceError::NotFound { id: 4242 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "there is no maintenance window 4242");

        let w = add(
            &mut schedule,
            "2026-12-02T12:00:00Z",
            "2026-12-02T14:00:00Z",
        );
        schedule.set_state(w.id, WindowState::Active).unwrap();
        let err = schedule.cancel(w.id, "suzuki").unwrap_err();
        assert!(
            matches!(err, MaintenanceError::AlreadyStarted { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "maintenance window {} has already started and cannot be cancelled; \
                 it ends at 2026-12-02T14:00:00.000000000Z",
                w.id
            )
        );
        schedule.set_state(w.id, WindowState::Done).unwrap();
        let err = schedule.cancel(w.id, "suzuki").unwrap_err();
        assert!(
            matches!(err, MaintenanceError::AlreadyDone { .. }),
            "{err:?}"
        );
        assert_eq!(
            schedule.get(w.id).unwrap().unwrap().state,
            WindowState::Done
        );
    }

    #[test]
    fn due_starts_and_ends_follow_the_clock_and_the_state() {
        let dir = TempDir::new("due");
        let mut schedule = open(&dir);
        let a = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        let b = add(
            &mut schedule,
            "2026-12-01T15:00:00Z",
            "2026-12-01T16:00:00Z",
        );
        const NONE: [i64; 0] = [];
        let ids = |windows: Vec<Window>| windows.into_iter().map(|w| w.id).collect::<Vec<_>>();

        assert_eq!(
            ids(schedule.due_starts(ts("2026-12-01T11:59:59Z")).unwrap()),
            NONE
        );
        assert_eq!(
            ids(schedule.due_starts(ts("2026-12-01T12:00:00Z")).unwrap()),
            [a.id]
        );
        // A daemon that was down through both starts finds both, earliest first.
        assert_eq!(
            ids(schedule.due_starts(ts("2026-12-01T15:30:00Z")).unwrap()),
            [a.id, b.id]
        );
        assert_eq!(
            ids(schedule.due_ends(ts("2026-12-02T00:00:00Z")).unwrap()),
            NONE
        );

        schedule.set_state(a.id, WindowState::Active).unwrap();
        assert_eq!(
            ids(schedule.due_starts(ts("2026-12-01T12:00:00Z")).unwrap()),
            NONE
        );
        assert_eq!(
            ids(schedule.due_ends(ts("2026-12-01T13:59:59Z")).unwrap()),
            NONE
        );
        assert_eq!(
            ids(schedule.due_ends(ts("2026-12-01T14:00:00Z")).unwrap()),
            [a.id]
        );
        schedule.set_state(a.id, WindowState::Done).unwrap();
        assert_eq!(
            ids(schedule.due_ends(ts("2026-12-01T14:00:00Z")).unwrap()),
            NONE
        );

        schedule.cancel(b.id, "suzuki").unwrap();
        assert_eq!(
            ids(schedule.due_starts(ts("2026-12-31T00:00:00Z")).unwrap()),
            NONE
        );
    }

    #[test]
    fn state_moves_only_forward() {
        use WindowState::*;
        let dir = TempDir::new("transitions");
        let mut schedule = open(&dir);
        let w = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        let err = schedule.set_state(w.id, Done).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "maintenance window {} cannot go from scheduled to done",
                w.id
            )
        );
        schedule.set_state(w.id, Scheduled).unwrap();
        schedule.set_state(w.id, Active).unwrap();
        schedule.set_state(w.id, Active).unwrap(); // a retried step
        for to in [Scheduled, Cancelled] {
            let err = schedule.set_state(w.id, to).unwrap_err();
            assert!(
                matches!(
                    err,
                    MaintenanceError::InvalidTransition { from: Active, .. }
                ),
                "{err:?}"
            );
        }
        schedule.set_state(w.id, Done).unwrap();
        for to in [Scheduled, Active, Cancelled] {
            assert!(schedule.set_state(w.id, to).is_err());
        }
        let err = schedule.set_state(77, Active).unwrap_err();
        assert!(
            matches!(err, MaintenanceError::NotFound { id: 77 }),
            "{err:?}"
        );

        let c = add(
            &mut schedule,
            "2026-12-02T12:00:00Z",
            "2026-12-02T14:00:00Z",
        );
        schedule.set_state(c.id, Cancelled).unwrap();
        for to in [Scheduled, Active, Done] {
            assert!(schedule.set_state(c.id, to).is_err());
        }

        let all = [Scheduled, Active, Done, Cancelled];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|&from| all.iter().map(move |&to| (from, to)))
            .filter(|&(from, to)| from != to && from.can_become(to))
            .collect();
        assert_eq!(
            allowed,
            [(Scheduled, Active), (Scheduled, Cancelled), (Active, Done)]
        );
    }

    #[test]
    fn windows_survive_reopening() {
        let dir = TempDir::new("reopen");
        let (a, b, c) = {
            let mut schedule = open(&dir);
            let a = add(
                &mut schedule,
                "2026-12-01T12:00:00Z",
                "2026-12-01T14:00:00Z",
            );
            let b = add(
                &mut schedule,
                "2026-12-02T12:00:00Z",
                "2026-12-02T14:00:00Z",
            );
            let c = add(
                &mut schedule,
                "2026-12-03T12:00:00Z",
                "2026-12-03T14:00:00Z",
            );
            schedule.set_state(a.id, WindowState::Active).unwrap();
            schedule.cancel(c.id, "suzuki").unwrap();
            (a, b, c)
        };
        let mut schedule = open(&dir);
        let listed = schedule.list().unwrap();
        assert_eq!(
            listed.iter().map(|w| (w.id, w.state)).collect::<Vec<_>>(),
            [
                (a.id, WindowState::Active),
                (b.id, WindowState::Scheduled),
                (c.id, WindowState::Cancelled)
            ]
        );
        assert_eq!(listed[1], b);
        assert_eq!(
            schedule
                .due_ends(ts("2026-12-01T14:00:00Z"))
                .unwrap()
                .into_iter()
                .map(|w| w.id)
                .collect::<Vec<_>>(),
            [a.id]
        );
        // The overlap check sees the reopened windows too.
        assert!(matches!(
            schedule.schedule(
                ts("2026-12-02T13:00:00Z"),
                ts("2026-12-02T15:00:00Z"),
                "x",
                Target::All,
                "suzuki",
                ts(NOW)
            ),
            Err(MaintenanceError::Overlap { other, .. }) if *other == b
        ));
        let version: i64 = schedule
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = schedule
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let perms = std::fs::metadata(dir.state().join(DB_FILE))
            .unwrap()
            .permissions();
        assert_eq!(perms.mode() & 0o777, 0o640);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = TempDir::new("too-new");
        drop(open(&dir));
        let conn = Connection::open(dir.state().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Schedule::open(&dir.state()).unwrap_err();
        assert!(
            matches!(
                err,
                MaintenanceError::Store(StoreError::TooNew { found: 99, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_row_edited_behind_our_back_is_an_error() {
        let dir = TempDir::new("corrupt");
        let mut schedule = open(&dir);
        let w = add(
            &mut schedule,
            "2026-12-01T12:00:00Z",
            "2026-12-01T14:00:00Z",
        );
        schedule
            .conn
            .execute(
                "UPDATE windows SET target = 'nonsense' WHERE id = ?1",
                params![w.id],
            )
            .unwrap();
        let err = schedule.list().unwrap_err();
        assert!(
            matches!(err, MaintenanceError::Corrupt { id, .. } if id == w.id),
            "{err:?}"
        );
    }

    #[test]
    fn window_serializes_with_a_default_target() {
        let json = serde_json::json!({
            "id": 1,
            "start": "2026-12-01T12:00:00.000000000Z",
            "end": "2026-12-01T14:00:00.000000000Z",
            "reason": "x",
            "operator": "tanaka",
            "state": "scheduled",
            "created_at": "2026-11-20T00:00:00.000000000Z",
        });
        let window: Window = serde_json::from_value(json).unwrap();
        assert_eq!(window.target, Target::All);
        let back = serde_json::to_value(&window).unwrap();
        assert_eq!(back["target"], "all");
        assert_eq!(back["state"], "scheduled");
    }
}
