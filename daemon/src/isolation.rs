//! What is cut off (R11, R13, R14): the isolations in force and every one there ever was,
//! kept in `<state_dir>/isolation.db` so that a cut-off survives daemon restarts, reloads
//! and reboots until an operator restores it.
//!
//! A real SQLite file (WAL journal, `synchronous=FULL`: [`IsolationStore::isolate`] and
//! [`IsolationStore::restore`] return only once the change is on disk). Its schema version
//! is its own `PRAGMA user_version`, raised one step at a time by [`MIGRATIONS`]; a file
//! newer than this build is refused rather than guessed at.
//!
//! Invariants of `isolations` (the database enforces the first four itself):
//! - every row has exactly one of an approver and the emergency flag, a level of 1 to 3,
//!   and a category of `failure` or `misconduct`;
//! - a row is open (in force, or a running drill) while `restored_at` is NULL; restoring
//!   fills `restored_at`, `restored_by`, `restore_reason` and `restore_approver` together
//!   and never deletes the row, so the table is the history;
//! - at most one open real isolation and at most one open drill per target;
//! - drills are never in force: [`IsolationStore::active`] leaves them out, so the
//!   datapath never cuts traffic for one;
//! - `since`/`restored_at` are RFC 3339 UTC with exactly nine fractional digits
//!   (`2026-04-01T09:00:00.000000000Z`), so text order is time order.
//!
//! Targets overlap freely (`asset:cs01` under `role:cs` under `all`): each is its own
//! isolation and is restored on its own.

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

use crate::config::Config;
use crate::store;
use crate::store::StoreError;

/// The database file inside the state directory.
pub const DB_FILE: &str = "isolation.db";

/// The operator recorded for automatic triggers.
pub const DAEMON_OPERATOR: &str = "sekishod";

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: isolations, open and restored.
    "CREATE TABLE isolations (
         id               INTEGER PRIMARY KEY,
         target           TEXT NOT NULL CHECK (length(target) > 0),
         reason           TEXT NOT NULL,
         approved_by      TEXT NULL,
         emergency        INTEGER NOT NULL CHECK (emergency IN (0, 1)),
         category         TEXT NOT NULL CHECK (category IN ('failure', 'misconduct')),
         level            INTEGER NOT NULL CHECK (level BETWEEN 1 AND 3),
         operator         TEXT NOT NULL,
         source           TEXT NULL,
         drill            INTEGER NOT NULL CHECK (drill IN (0, 1)),
         since            TEXT NOT NULL,
         reference        TEXT NULL,
         restored_at      TEXT NULL,
         restored_by      TEXT NULL,
         restore_reason   TEXT NULL,
         restore_approver TEXT NULL,
         CHECK ((approved_by IS NOT NULL) + emergency = 1),
         CHECK ((restored_at IS NULL) = (restored_by IS NULL)
                AND (restored_at IS NULL) = (restore_reason IS NULL)
                AND (restored_at IS NULL) = (restore_approver IS NULL))
     ) STRICT;
     CREATE UNIQUE INDEX isolations_open ON isolations (target, drill)
         WHERE restored_at IS NULL;",
];

const COLUMNS: &str = "id, target, reason, approved_by, emergency, category, level, operator, \
                       source, drill, since, reference, restored_at, restored_by, \
                       restore_reason, restore_approver";

/// What an isolation cuts off.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// `asset:NAME`: one host of the register, both directions.
    Asset(String),
    /// `role:NAME`: every asset of the role.
    Role(String),
    /// `peer:NAME`: the exchange with one 住基ネット peer (R14).
    Peer(String),
    /// `all`: everything but the gateway's own management path.
    All,
}

impl Target {
    /// `"asset"`, `"role"`, `"peer"` or `"all"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Asset(_) => "asset",
            Target::Role(_) => "role",
            Target::Peer(_) => "peer",
            Target::All => "all",
        }
    }

    /// The name after the colon; `None` for [`Target::All`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::Asset(name) | Target::Role(name) | Target::Peer(name) => Some(name),
            Target::All => None,
        }
    }

    /// Whether `config` has what this target names; the error lists what it does have.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        let (what, known): (&str, Vec<&str>) = match self {
            Target::All => return Ok(()),
            Target::Asset(name) => {
                if config.asset(name).is_some() {
                    return Ok(());
                }
                (
                    "asset",
                    config.assets.iter().map(|a| a.name.as_str()).collect(),
                )
            }
            Target::Role(name) => {
                let roles = config.roles();
                if roles.contains(name.as_str()) {
                    return Ok(());
                }
                ("role", roles.into_iter().collect())
            }
            Target::Peer(name) => {
                if config.peer(name).is_some() {
                    return Ok(());
                }
                (
                    "peer",
                    config.peers.iter().map(|p| p.name.as_str()).collect(),
                )
            }
        };
        let name = self.name().unwrap_or_default();
        if known.is_empty() {
            Err(format!(
                "unknown {what} {name:?} in {self}: the configuration has no {what}s"
            ))
        } else {
            Err(format!(
                "unknown {what} {name:?} in {self} (known {what}s: {})",
                known.join(", ")
            ))
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}:{name}", self.kind()),
            None => f.write_str("all"),
        }
    }
}

/// Why a string is not a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTargetError {
    #[error("invalid target {text:?} (expected asset:NAME, role:NAME, peer:NAME or all)")]
    Syntax { text: String },
    #[error("target {text:?} has an empty name")]
    EmptyName { text: String },
}

impl FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Target, ParseTargetError> {
        if s == "all" {
            return Ok(Target::All);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| ParseTargetError::Syntax { text: s.to_owned() })?;
        let make = match kind {
            "asset" => Target::Asset,
            "role" => Target::Role,
            "peer" => Target::Peer,
            _ => return Err(ParseTargetError::Syntax { text: s.to_owned() }),
        };
        if name.is_empty() {
            return Err(ParseTargetError::EmptyName { text: s.to_owned() });
        }
        Ok(make(name.to_owned()))
    }
}

impl TryFrom<String> for Target {
    type Error = ParseTargetError;

    fn try_from(s: String) -> Result<Target, ParseTargetError> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
}

/// What kind of incident an isolation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// 障害: a fault.
    Failure,
    /// 不正行為: misconduct or an attack.
    Misconduct,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Failure => "failure",
            Category::Misconduct => "misconduct",
        }
    }

    /// The word the notices use.
    pub fn ja(&self) -> &'static str {
        match self {
            Category::Failure => "障害",
            Category::Misconduct => "不正行為",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a [`Category`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {text:?} (expected \"failure\" or \"misconduct\")")]
pub struct ParseCategoryError {
    pub text: String,
}

impl FromStr for Category {
    type Err = ParseCategoryError;

    fn from_str(s: &str) -> Result<Category, ParseCategoryError> {
        match s {
            "failure" => Ok(Category::Failure),
            "misconduct" => Ok(Category::Misconduct),
            _ => Err(ParseCategoryError { text: s.to_owned() }),
        }
    }
}

/// One cut-off, as requested and recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    pub target: Target,
    pub reason: String,
    /// Who approved it; exactly one of `approved_by` and `emergency` is set.
    pub approved_by: Option<String>,
    /// Cut off first, approval afterwards (every automatic trigger is one).
    pub emergency: bool,
    pub category: Category,
    /// 脅威度, 1 to 3.
    pub level: u8,
    /// The Unix user, or [`DAEMON_OPERATOR`] for automatic triggers.
    pub operator: String,
    /// What reported it: an IDS name, `"violations"`, `"unknown_source"`, ….
    pub source: Option<String>,
    /// The whole procedure without cutting traffic.
    pub drill: bool,
    /// RFC 3339 UTC; stored (and read back) with exactly nine fractional digits.
    pub since: String,
    /// The operation-history entry that records it, set by the caller.
    pub reference: Option<String>,
}

impl Isolation {
    /// Checks what the database cannot: non-empty texts, one of approver and emergency, a
    /// level of 1 to 3, and a `since` that is an RFC 3339 instant.
    pub fn validate(&self) -> Result<(), IsolationError> {
        let target = || self.target.clone();
        let blank = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(IsolationError::EmptyField {
                    target: target(),
                    field,
                })
            } else {
                Ok(())
            }
        };
        blank("reason", &self.reason)?;
        blank("operator", &self.operator)?;
        if let Some(source) = &self.source {
            blank("source", source)?;
        }
        match (&self.approved_by, self.emergency) {
            (Some(approver), false) => blank("approved_by", approver)?,
            (None, true) => {}
            (Some(_), true) => {
                return Err(IsolationError::ApprovalAndEmergency { target: target() });
            }
            (None, false) => {
                return Err(IsolationError::NoApproval { target: target() });
            }
        }
        if !(1..=3).contains(&self.level) {
            return Err(IsolationError::LevelOutOfRange {
                target: target(),
                level: self.level,
            });
        }
        parse_time(&self.target, &self.since)?;
        Ok(())
    }
}

/// One row of the history: an isolation and, once restored, how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IsolationRecord {
    pub isolation: Isolation,
    /// RFC 3339 UTC, nine fractional digits; `None` while in force.
    pub restored_at: Option<String>,
    pub restored_by: Option<String>,
    pub restore_reason: Option<String>,
    pub restore_approver: Option<String>,
}

/// Why an isolation could not be recorded, restored or read.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {action} in isolation database {}", .path.display())]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("row {id} of isolation database {} is corrupt: {problem}", .path.display())]
    Corrupt {
        path: PathBuf,
        id: i64,
        problem: String,
    },
    #[error("{target} is already isolated")]
    AlreadyIsolated { target: Target },
    #[error("{target} is not isolated")]
    NotIsolated { target: Target },
    #[error("isolation of {target} needs an approver (--approved-by NAME) or --emergency")]
    NoApproval { target: Target },
    #[error("isolation of {target} cannot be both approved and an emergency")]
    ApprovalAndEmergency { target: Target },
    #[error("threat level {level} of {target} is out of range (expected 1, 2 or 3)")]
    LevelOutOfRange { target: Target, level: u8 },
    #[error("{field} of {target} must not be empty")]
    EmptyField { target: Target, field: &'static str },
    #[error("time {text:?} of {target} is not an RFC 3339 instant")]
    InvalidTime {
        target: Target,
        text: String,
        #[source]
        source: jiff::Error,
    },
    #[error("time {text:?} of {target} is before year 0")]
    TimeOutOfRange { target: Target, text: String },
}

/// The isolations of one state directory.
pub struct IsolationStore {
    conn: Connection,
    /// The database file, for error messages.
    path: PathBuf,
}

impl fmt::Debug for IsolationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolationStore")
            .field("path", &self.path)
            .finish()
    }
}

impl IsolationStore {
    /// Opens `<state_dir>/isolation.db`, creating the directory (mode 0750), the file
    /// (0640) and the schema as needed (see [`crate::store`]).
    pub fn open(state_dir: &Path) -> Result<IsolationStore, IsolationError> {
        let (conn, path) = store::open(state_dir, DB_FILE, MIGRATIONS, "isolation database")?;
        Ok(IsolationStore { conn, path })
    }

    /// The isolations in force now, ordered by target. Drills are never among them.
    pub fn active(&self) -> Result<Vec<Isolation>, IsolationError> {
        Ok(self
            .records(
                "list the isolations in force",
                "WHERE restored_at IS NULL AND drill = 0 ORDER BY target, id",
                params![],
            )?
            .into_iter()
            .map(|record| record.isolation)
            .collect())
    }

    /// The drills running now (isolated without cutting traffic), ordered by target.
    pub fn drills(&self) -> Result<Vec<Isolation>, IsolationError> {
        Ok(self
            .records(
                "list the running drills",
                "WHERE restored_at IS NULL AND drill = 1 ORDER BY target, id",
                params![],
            )?
            .into_iter()
            .map(|record| record.isolation)
            .collect())
    }

    /// Records `isolation` as in force (or, for a drill, as running), on disk before it
    /// returns. `since` is stored with nine fractional digits.
    ///
    /// [`IsolationError::AlreadyIsolated`] when the target is already isolated — or, for a
    /// drill, when a drill of it is already running or it is really isolated.
    pub fn isolate(&mut self, mut isolation: Isolation) -> Result<(), IsolationError> {
        isolation.validate()?;
        isolation.since = timestamp_text(parse_time(&isolation.target, &isolation.since)?);
        let target = isolation.target.to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| query_err(&self.path, "begin a transaction", source))?;
        // A drill of something already cut off would train on a state that is not there.
        let conflict: Option<i64> = tx
            .query_row(
                "SELECT id FROM isolations WHERE target = ?1 AND restored_at IS NULL \
                 AND (drill = ?2 OR drill = 0) LIMIT 1",
                params![target, isolation.drill],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| query_err(&self.path, "look for an open isolation", source))?;
        if conflict.is_some() {
            return Err(IsolationError::AlreadyIsolated {
                target: isolation.target,
            });
        }
        tx.execute(
            "INSERT INTO isolations \
             (target, reason, approved_by, emergency, category, level, operator, source, drill, \
              since, reference) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                target,
                isolation.reason,
                isolation.approved_by,
                isolation.emergency,
                isolation.category.as_str(),
                isolation.level,
                isolation.operator,
                isolation.source,
                isolation.drill,
                isolation.since,
                isolation.reference,
            ],
        )
        .map_err(|source| query_err(&self.path, "record the isolation", source))?;
        tx.commit()
            .map_err(|source| query_err(&self.path, "commit the isolation", source))?;
        Ok(())
    }

    /// Ends the isolation of `target` now, keeping its row as history; returns it as it was
    /// recorded. When the target is not really isolated but a drill of it is running, the
    /// drill is ended instead (the returned isolation has `drill` set).
    /// [`IsolationError::NotIsolated`] when neither is open.
    pub fn restore(
        &mut self,
        target: &Target,
        operator: &str,
        reason: &str,
        approved_by: &str,
    ) -> Result<Isolation, IsolationError> {
        self.restore_at(target, operator, reason, approved_by, Timestamp::now())
    }

    /// [`IsolationStore::restore`] at a given instant.
    pub fn restore_at(
        &mut self,
        target: &Target,
        operator: &str,
        reason: &str,
        approved_by: &str,
        at: Timestamp,
    ) -> Result<Isolation, IsolationError> {
        for (field, value) in [
            ("operator", operator),
            ("reason", reason),
            ("approved_by", approved_by),
        ] {
            if value.trim().is_empty() {
                return Err(IsolationError::EmptyField {
                    target: target.clone(),
                    field,
                });
            }
        }
        let restored_at = timestamp_text(at);
        if restored_at.starts_with('-') {
            return Err(IsolationError::TimeOutOfRange {
                target: target.clone(),
                text: restored_at,
            });
        }
        let path = self.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| query_err(&path, action, source)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin a transaction"))?;
        // The real isolation first: ending a drill must never be what a restore of a
        // target that is cut off does.
        let open = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM isolations WHERE target = ?1 AND restored_at IS NULL \
                     ORDER BY drill, id LIMIT 1"
                ),
                params![target.to_string()],
                RawRow::read,
            )
            .optional()
            .map_err(err("look for the open isolation"))?;
        let Some(open) = open else {
            return Err(IsolationError::NotIsolated {
                target: target.clone(),
            });
        };
        let id = open.id;
        let record = open.into_record(&self.path)?;
        if record.isolation.since > restored_at {
            tracing::warn!(
                target = %target,
                since = %record.isolation.since,
                restored_at = %restored_at,
                "isolation restored earlier than it began; has the clock gone back?"
            );
        }
        tx.execute(
            "UPDATE isolations SET restored_at = ?2, restored_by = ?3, restore_reason = ?4, \
             restore_approver = ?5 WHERE id = ?1",
            params![id, restored_at, operator, reason, approved_by],
        )
        .map_err(err("record the restore"))?;
        tx.commit().map_err(err("commit the restore"))?;
        Ok(record.isolation)
    }

    /// The last `limit` isolations recorded, newest first, open and restored, drills
    /// included.
    pub fn history(&self, limit: usize) -> Result<Vec<IsolationRecord>, IsolationError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            "read the isolation history",
            "ORDER BY id DESC LIMIT ?1",
            params![limit],
        )
    }

    fn records(
        &self,
        action: &'static str,
        tail: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<IsolationRecord>, IsolationError> {
        let err = |source| self.query_err(action, source);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM isolations {tail}"))
            .map_err(err)?;
        let rows = stmt
            .query_map(params, RawRow::read)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        rows.into_iter()
            .map(|row| row.into_record(&self.path))
            .collect()
    }

    fn query_err(&self, action: &'static str, source: rusqlite::Error) -> IsolationError {
        query_err(&self.path, action, source)
    }
}

fn query_err(path: &Path, action: &'static str, source: rusqlite::Error) -> IsolationError {
    IsolationError::Query {
        path: path.to_owned(),
        action,
        source,
    }
}

/// A row as stored, before its texts are parsed.
struct RawRow {
    id: i64,
    target: String,
    reason: String,
    approved_by: Option<String>,
    emergency: bool,
    category: String,
    level: u8,
    operator: String,
    source: Option<String>,
    drill: bool,
    since: String,
    reference: Option<String>,
    restored_at: Option<String>,
    restored_by: Option<String>,
    restore_reason: Option<String>,
    restore_approver: Option<String>,
}

impl RawRow {
    /// Reads the [`COLUMNS`].
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: row.get(0)?,
            target: row.get(1)?,
            reason: row.get(2)?,
            approved_by: row.get(3)?,
            emergency: row.get(4)?,
            category: row.get(5)?,
            level: row.get(6)?,
            operator: row.get(7)?,
            source: row.get(8)?,
            drill: row.get(9)?,
            since: row.get(10)?,
            reference: row.get(11)?,
            restored_at: row.get(12)?,
            restored_by: row.get(13)?,
            restore_reason: row.get(14)?,
            restore_approver: row.get(15)?,
        })
    }

    fn into_record(self, path: &Path) -> Result<IsolationRecord, IsolationError> {
        let corrupt = |problem: String| IsolationError::Corrupt {
            path: path.to_owned(),
            id: self.id,
            problem,
        };
        let target: Target = self.target.parse().map_err(|e| corrupt(format!("{e}")))?;
        let category: Category = self.category.parse().map_err(|e| corrupt(format!("{e}")))?;
        Ok(IsolationRecord {
            isolation: Isolation {
                target,
                reason: self.reason,
                approved_by: self.approved_by,
                emergency: self.emergency,
                category,
                level: self.level,
                operator: self.operator,
                source: self.source,
                drill: self.drill,
                since: self.since,
                reference: self.reference,
            },
            restored_at: self.restored_at,
            restored_by: self.restored_by,
            restore_reason: self.restore_reason,
            restore_approver: self.restore_approver,
        })
    }
}

/// `text` as an instant in year 0 or later.
fn parse_time(target: &Target, text: &str) -> Result<Timestamp, IsolationError> {
    let at: Timestamp = text.parse().map_err(|source| IsolationError::InvalidTime {
        target: target.clone(),
        text: text.to_owned(),
        source,
    })?;
    if timestamp_text(at).starts_with('-') {
        return Err(IsolationError::TimeOutOfRange {
            target: target.clone(),
            text: text.to_owned(),
        });
    }
    Ok(at)
}

/// RFC 3339 UTC with exactly nine fractional digits, so that text order is time order.
pub fn timestamp_text(at: Timestamp) -> String {
    DateTimePrinter::new()
        .precision(Some(9))
        .timestamp_to_string(&at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const DEMO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));

    fn open(dir: &Path) -> IsolationStore {
        IsolationStore::open(dir).unwrap_or_else(|err| panic!("open isolation store: {err}"))
    }

    fn target(text: &str) -> Target {
        text.parse()
            .unwrap_or_else(|err| panic!("bad test target {text}: {err}"))
    }

    fn isolation(text: &str) -> Isolation {
        Isolation {
            target: target(text),
            reason: "CS がインターネットへ接続を試みた".to_owned(),
            approved_by: Some("情報政策課長".to_owned()),
            emergency: false,
            category: Category::Misconduct,
            level: 2,
            operator: "tanaka".to_owned(),
            source: None,
            drill: false,
            since: "2026-04-01T09:00:00Z".to_owned(),
            reference: Some("op-17".to_owned()),
        }
    }

    fn targets(list: &[Isolation]) -> Vec<String> {
        list.iter().map(|i| i.target.to_string()).collect()
    }

    #[test]
    fn target_text_round_trips() {
        for text in ["asset:cs01", "role:terminal", "peer:prefecture", "all"] {
            let t = target(text);
            assert_eq!(t.to_string(), text);
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{text}\""));
            let back: Target = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, t);
        }
        assert_eq!(target("asset:a:b"), Target::Asset("a:b".to_owned()));
        for bad in ["", "cs01", "host:cs01", "asset:", "all:", "ALL", "peer"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} must not parse");
        }
        assert!(serde_json::from_str::<Target>("\"asset:\"").is_err());
    }

    #[test]
    fn category_keywords() {
        assert_eq!("failure".parse(), Ok(Category::Failure));
        assert_eq!("misconduct".parse(), Ok(Category::Misconduct));
        assert!("Failure".parse::<Category>().is_err());
        assert_eq!(Category::Failure.ja(), "障害");
        assert_eq!(Category::Misconduct.ja(), "不正行為");
        assert_eq!(
            serde_json::to_string(&Category::Misconduct).expect("json"),
            "\"misconduct\""
        );
    }

    #[test]
    fn target_check_names_what_exists() {
        let config = Config::parse_str(DEMO, Path::new("demo.toml"))
            .unwrap_or_else(|err| panic!("demo config: {err}"));
        for ok in ["asset:cs01", "role:terminal", "peer:prefecture", "all"] {
            assert_eq!(target(ok).check(&config), Ok(()), "{ok}");
        }
        let err = target("asset:cs99")
            .check(&config)
            .expect_err("unknown asset");
        assert!(
            err.contains("\"cs99\"") && err.contains("cs01, term-01"),
            "{err}"
        );
        let err = target("role:printer")
            .check(&config)
            .expect_err("unknown role");
        assert!(err.contains("known roles: cs, terminal"), "{err}");
        let err = target("peer:moon")
            .check(&config)
            .expect_err("unknown peer");
        assert!(err.contains("prefecture"), "{err}");
    }

    #[test]
    fn validation() {
        let ok = isolation("asset:cs01");
        ok.validate().expect("valid");
        let emergency = Isolation {
            approved_by: None,
            emergency: true,
            ..ok.clone()
        };
        emergency
            .validate()
            .expect("emergency without approver is valid");
        /// Whether an error is the one a case expects.
        type Expected = fn(&IsolationError) -> bool;
        let cases: Vec<(Isolation, Expected)> = vec![
            (
                Isolation {
                    approved_by: None,
                    ..ok.clone()
                },
                |e| matches!(e, IsolationError::NoApproval { .. }),
            ),
            (
                Isolation {
                    emergency: true,
                    ..ok.clone()
                },
                |e| matches!(e, IsolationError::ApprovalAndEmergency { .. }),
            ),
            (
                Isolation {
                    level: 0,
                    ..ok.clone()
                },
                |e| matches!(e, IsolationError::LevelOutOfRange { level: 0, .. }),
            ),
            (
                Isolation {
                    level: 4,
                    ..ok.clone()
                },
                |e| matches!(e, IsolationError::LevelOutOfRange { level: 4, .. }),
            ),
            (
                Isolation {
                    reason: "  ".to_owned(),
                    ..ok.clone()
                },
                |e| {
                    matches!(
                        e,
                        IsolationError::EmptyField {
                            field: "reason",
                            ..
                        }
                    )
                },
            ),
            (
                Isolation {
                    approved_by: Some(String::new()),
                    ..ok.clone()
                },
                |e| {
                    matches!(
                        e,
                        IsolationError::EmptyField {
                            field: "approved_by",
                            ..
                        }
                    )
                },
            ),
            (
                Isolation {
                    since: "yesterday".to_owned(),
                    ..ok.clone()
                },
                |e| matches!(e, IsolationError::InvalidTime { .. }),
            ),
        ];
        let tmp = TempDir::new("validation");
        let mut store = open(&tmp.state());
        for (bad, expected) in cases {
            let err = bad.validate().expect_err("invalid");
            assert!(expected(&err), "{bad:?}: {err:?}");
            let err = store
                .isolate(bad.clone())
                .expect_err("refused by the store");
            assert!(expected(&err), "{bad:?}: {err:?}");
        }
        assert_eq!(store.active().expect("active"), []);
        assert_eq!(store.history(10).expect("history"), []);
    }

    #[test]
    fn isolate_restore_and_history() {
        let tmp = TempDir::new("cycle");
        let mut store = open(&tmp.state());
        store
            .isolate(isolation("asset:cs01"))
            .expect("isolate cs01");
        store
            .isolate(Isolation {
                approved_by: None,
                emergency: true,
                operator: DAEMON_OPERATOR.to_owned(),
                source: Some("violations".to_owned()),
                since: "2026-04-01T09:00:01.5+09:00".to_owned(),
                ..isolation("peer:prefecture")
            })
            .expect("isolate prefecture");
        let err = store
            .isolate(isolation("asset:cs01"))
            .expect_err("already isolated");
        assert!(
            matches!(&err, IsolationError::AlreadyIsolated { target: Target::Asset(n) } if n == "cs01"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "asset:cs01 is already isolated");

        let active = store.active().expect("active");
        assert_eq!(targets(&active), ["asset:cs01", "peer:prefecture"]);
        assert_eq!(active[0].since, "2026-04-01T09:00:00.000000000Z");
        assert_eq!(active[1].since, "2026-04-01T00:00:01.500000000Z");
        assert_eq!(active[1].operator, "sekishod");
        assert_eq!(active[0].reference.as_deref(), Some("op-17"));

        let err = store
            .restore(&target("role:cs"), "suzuki", "復旧", "課長")
            .expect_err("not isolated");
        assert!(matches!(err, IsolationError::NotIsolated { .. }), "{err:?}");
        let err = store
            .restore(&target("asset:cs01"), "suzuki", "復旧", " ")
            .expect_err("approver required");
        assert!(
            matches!(
                err,
                IsolationError::EmptyField {
                    field: "approved_by",
                    ..
                }
            ),
            "{err:?}"
        );

        let restored = store
            .restore_at(
                &target("asset:cs01"),
                "suzuki",
                "調査完了",
                "情報政策課長",
                "2026-04-01T10:00:00Z".parse().expect("ts"),
            )
            .expect("restore");
        assert_eq!(restored.target, target("asset:cs01"));
        assert_eq!(restored.operator, "tanaka");
        assert_eq!(
            targets(&store.active().expect("active")),
            ["peer:prefecture"]
        );
        let err = store
            .restore(&target("asset:cs01"), "suzuki", "again", "x")
            .expect_err("restored twice");
        assert!(matches!(err, IsolationError::NotIsolated { .. }), "{err:?}");

        // Isolated again after the restore: a new row, the old one stays as history.
        store
            .isolate(Isolation {
                since: "2026-04-02T09:00:00Z".to_owned(),
                category: Category::Failure,
                level: 1,
                ..isolation("asset:cs01")
            })
            .expect("isolate cs01 again");
        let history = store.history(10).expect("history");
        let summary: Vec<_> = history
            .iter()
            .map(|r| {
                (
                    r.isolation.target.to_string(),
                    r.restored_at.as_deref(),
                    r.restored_by.as_deref(),
                    r.restore_reason.as_deref(),
                    r.restore_approver.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("asset:cs01".to_owned(), None, None, None, None),
                ("peer:prefecture".to_owned(), None, None, None, None),
                (
                    "asset:cs01".to_owned(),
                    Some("2026-04-01T10:00:00.000000000Z"),
                    Some("suzuki"),
                    Some("調査完了"),
                    Some("情報政策課長")
                ),
            ]
        );
        assert_eq!(history[0].isolation.category, Category::Failure);
        assert_eq!(store.history(1).expect("history").len(), 1);
        assert_eq!(store.history(usize::MAX).expect("history").len(), 3);
        let json = serde_json::to_value(&history[2]).expect("json");
        assert_eq!(json["isolation"]["target"], "asset:cs01");
        assert_eq!(json["isolation"]["category"], "misconduct");
        assert_eq!(json["restore_approver"], "情報政策課長");
    }

    #[test]
    fn isolation_survives_reopening() {
        let tmp = TempDir::new("reopen");
        let before = {
            let mut store = open(&tmp.state());
            store.isolate(isolation("all")).expect("isolate all");
            store
                .isolate(isolation("role:terminal"))
                .expect("isolate role");
            store.active().expect("active")
        };
        let mut store = open(&tmp.state());
        assert_eq!(store.active().expect("active"), before);
        store
            .restore(&Target::All, "suzuki", "復旧", "課長")
            .expect("restore after reopening");
        drop(store);
        let store = open(&tmp.state());
        assert_eq!(targets(&store.active().expect("active")), ["role:terminal"]);
        assert_eq!(store.history(10).expect("history").len(), 2);
    }

    #[test]
    fn drills_are_never_in_force() {
        let tmp = TempDir::new("drill");
        let mut store = open(&tmp.state());
        let drill = Isolation {
            drill: true,
            ..isolation("asset:cs01")
        };
        store.isolate(drill.clone()).expect("drill");
        assert_eq!(store.active().expect("active"), []);
        assert_eq!(targets(&store.drills().expect("drills")), ["asset:cs01"]);
        let err = store.isolate(drill.clone()).expect_err("drill running");
        assert!(
            matches!(err, IsolationError::AlreadyIsolated { .. }),
            "{err:?}"
        );
        // A real cut-off is never blocked by a drill, and restore ends it first.
        store
            .isolate(isolation("asset:cs01"))
            .expect("real isolation");
        assert_eq!(targets(&store.active().expect("active")), ["asset:cs01"]);
        let ended = store
            .restore(&target("asset:cs01"), "suzuki", "復旧", "課長")
            .expect("restore");
        assert!(!ended.drill);
        assert_eq!(store.active().expect("active"), []);
        let ended = store
            .restore(&target("asset:cs01"), "suzuki", "訓練終了", "課長")
            .expect("end the drill");
        assert!(ended.drill);
        assert_eq!(store.drills().expect("drills"), []);
        // No drill of something really cut off.
        store.isolate(isolation("role:cs")).expect("isolate");
        let err = store
            .isolate(Isolation {
                drill: true,
                ..isolation("role:cs")
            })
            .expect_err("drill of an isolated target");
        assert!(
            matches!(err, IsolationError::AlreadyIsolated { .. }),
            "{err:?}"
        );
        let history = store.history(10).expect("history");
        assert_eq!(
            history.iter().filter(|r| r.isolation.drill).count(),
            1,
            "{history:?}"
        );
    }

    #[test]
    fn file_is_a_real_sqlite_database() {
        let tmp = TempDir::new("sqlite");
        let state = tmp.state();
        {
            let mut store = open(&state);
            store.isolate(isolation("asset:cs01")).expect("isolate");
        }
        let path = state.join(DB_FILE);
        let header = std::fs::read(&path).expect("read db");
        assert!(header.starts_with(b"SQLite format 3\0"));
        let conn = Connection::open(&path).expect("open with plain rusqlite");
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("user_version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        // The schema itself refuses a second open isolation and a row without approval.
        let dup = conn.execute(
            "INSERT INTO isolations (target, reason, approved_by, emergency, category, level, \
             operator, drill, since) VALUES ('asset:cs01', 'x', 'y', 0, 'failure', 1, 'z', 0, 't')",
            [],
        );
        assert!(dup.is_err(), "second open isolation accepted");
        let unapproved = conn.execute(
            "INSERT INTO isolations (target, reason, approved_by, emergency, category, level, \
             operator, drill, since) VALUES ('all', 'x', NULL, 0, 'failure', 1, 'z', 0, 't')",
            [],
        );
        assert!(unapproved.is_err(), "unapproved isolation accepted");
    }

    #[test]
    fn corrupt_row_is_an_error() {
        let tmp = TempDir::new("corrupt");
        let mut store = open(&tmp.state());
        store.isolate(isolation("asset:cs01")).expect("isolate");
        store
            .conn
            .execute("UPDATE isolations SET target = 'host:cs01'", [])
            .expect("tamper");
        let err = store.active().expect_err("corrupt");
        assert!(
            matches!(err, IsolationError::Corrupt { id: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new("newer");
        drop(open(&tmp.state()));
        let conn = Connection::open(tmp.state().join(DB_FILE)).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
        drop(conn);
        let err = IsolationStore::open(&tmp.state()).expect_err("newer schema");
        assert!(
            matches!(
                err,
                IsolationError::Store(StoreError::TooNew { found: 99, .. })
            ),
            "{err:?}"
        );
    }
}
