//! The one way sekisho opens its SQLite files (`sekisho.db`, `isolation.db`,
//! `operations.db`, `outbox.db`, `maintenance.db`), so that every record it keeps gets the
//! same durability and the same schema discipline.
//!
//! [`open`] does, in this order:
//! - creates the state directory (mode 0750) if it is missing;
//! - creates the database file (mode 0640) before SQLite does: SQLite would create it with
//!   the umask's mode, and its `-wal`/`-shm` files take their mode from it;
//! - opens it with a busy timeout ([`BUSY_TIMEOUT`]), so a second connection (`sekishoctl`
//!   reading while `sekishod` writes, a worker beside the control socket) waits rather than
//!   fails;
//! - switches to the WAL journal and checks that it took (a file system that cannot hold a
//!   WAL is refused, not silently run in another mode), then sets `synchronous=FULL`, so
//!   a committed transaction survives a power cut;
//! - brings the schema up to date. The schema version is the file's `PRAGMA user_version`;
//!   `migrations[i]` takes it from `i` to `i + 1`, each step in its own exclusive
//!   transaction together with the version bump, so a crash leaves the file at a whole
//!   version. The list is append only. A file whose version is higher than the list is
//!   long was written by a newer sekisho and is refused rather than guessed at.
//!
//! Opening a file that is already at the current version writes nothing to it (its
//! journal mode is already WAL and no migration runs).
//!
//! Each caller keeps its own file name, its own migration list and the documentation of its
//! schema; `what` names the file in error messages and log lines ("policy archive").

use std::fs::DirBuilder;
use std::fs::OpenOptions;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::TransactionBehavior;

/// How long a writer waits for another connection to the same file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Mode of a state directory created by [`open`].
pub const DIR_MODE: u32 = 0o750;

/// Mode of a database file created by [`open`].
pub const FILE_MODE: u32 = 0o640;

/// Why a database file could not be opened or brought up to date. `what` is the name the
/// caller gave the file ("policy archive").
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {what} {}", .path.display())]
    CreateFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {what} {}", .path.display())]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what} {} would not switch to WAL journal mode (got {mode:?})", .path.display())]
    NotWal {
        what: &'static str,
        path: PathBuf,
        mode: String,
    },
    #[error("cannot read the schema version in {what} {}", .path.display())]
    ReadVersion {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{what} {} has schema version {found}, newer than this sekisho knows ({known})",
        .path.display()
    )]
    TooNew {
        what: &'static str,
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot migrate {what} {} to schema version {to}", .path.display())]
    Migrate {
        what: &'static str,
        path: PathBuf,
        to: i64,
        #[source]
        source: rusqlite::Error,
    },
}

/// Opens `<state_dir>/<file>`, creating the directory (mode 0750), the file (0640) and the
/// schema as needed (see the module documentation). Returns the connection and the path of
/// the file.
pub fn open(
    state_dir: &Path,
    file: &str,
    migrations: &[&str],
    what: &'static str,
) -> Result<(Connection, PathBuf), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(state_dir)
        .map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
    let path = state_dir.join(file);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
    {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(StoreError::CreateFile { what, path, source }),
    }
    let open_err = |source| StoreError::Open {
        what,
        path: path.clone(),
        source,
    };
    let mut conn = Connection::open(&path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal { what, path, mode });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    migrate(&mut conn, &path, migrations, what)?;
    Ok((conn, path))
}

/// Brings the schema up to `migrations.len()`, one exclusive transaction per step.
fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
    what: &'static str,
) -> Result<(), StoreError> {
    let known = migrations.len() as i64;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::ReadVersion {
            what,
            path: path.to_owned(),
            source,
        })?;
    if found > known {
        return Err(StoreError::TooNew {
            what,
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (step, sql) in migrations.iter().enumerate().skip(found.max(0) as usize) {
        let to = step as i64 + 1;
        let err = |source| StoreError::Migrate {
            what,
            path: path.to_owned(),
            to,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", to).map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %path.display(), version = to, "{what} schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const FILE: &str = "test.db";
    const WHAT: &str = "test database";
    const V1: &[&str] = &["CREATE TABLE a (x INTEGER NOT NULL) STRICT;"];
    const V2: &[&str] = &[
        "CREATE TABLE a (x INTEGER NOT NULL) STRICT;",
        "CREATE TABLE b (y TEXT NOT NULL) STRICT; INSERT INTO a (x) VALUES (1);",
    ];

    fn open_ok(state: &Path, migrations: &[&str]) -> (Connection, PathBuf) {
        open(state, FILE, migrations, WHAT).unwrap_or_else(|err| panic!("open: {err}"))
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn creates_directory_and_file_with_their_modes() {
        let tmp = TempDir::new("modes");
        let state = tmp.state().join("nested");
        let (_conn, path) = open_ok(&state, V1);
        assert_eq!(path, state.join(FILE));
        assert_eq!(mode_of(&state), 0o750);
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn keeps_the_mode_of_an_existing_file() {
        let tmp = TempDir::new("existing");
        drop(open_ok(&tmp.state(), V1));
        let path = tmp.state().join(FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        drop(open_ok(&tmp.state(), V1));
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn uses_wal_and_full_sync() {
        let tmp = TempDir::new("wal");
        let (conn, _) = open_ok(&tmp.state(), V1);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        // 2 = FULL.
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .expect("synchronous");
        assert_eq!(sync, 2);
        // A fresh connection sees WAL too: it is a property of the file.
        let other = Connection::open(tmp.state().join(FILE)).expect("reopen");
        let mode: String = other
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn applies_each_migration_once() {
        let tmp = TempDir::new("migrate");
        let (conn, _) = open_ok(&tmp.state(), V1);
        assert_eq!(user_version(&conn), 1);
        conn.execute("INSERT INTO a (x) VALUES (0)", [])
            .expect("insert");
        drop(conn);

        // Same list again: nothing runs (a second CREATE TABLE a would fail).
        let (conn, _) = open_ok(&tmp.state(), V1);
        assert_eq!(user_version(&conn), 1);
        drop(conn);

        // One more step: only that one runs.
        let (conn, _) = open_ok(&tmp.state(), V2);
        assert_eq!(user_version(&conn), 2);
        drop(conn);
        let (conn, _) = open_ok(&tmp.state(), V2);
        assert_eq!(user_version(&conn), 2);
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM a ORDER BY rowid")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, [0, 1]);
        let b: i64 = conn
            .query_row("SELECT count(*) FROM b", [], |row| row.get(0))
            .expect("table b");
        assert_eq!(b, 0);
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version() {
        let tmp = TempDir::new("failing");
        drop(open_ok(&tmp.state(), V1));
        let broken = &[V1[0], "CREATE TABLE c (z INTEGER); NOT SQL AT ALL;"];
        let err = open(&tmp.state(), FILE, broken, WHAT).expect_err("broken step");
        assert!(matches!(err, StoreError::Migrate { to: 2, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot migrate test database {} to schema version 2",
                tmp.state().join(FILE).display()
            )
        );
        let conn = Connection::open(tmp.state().join(FILE)).expect("reopen");
        assert_eq!(user_version(&conn), 1);
        let c: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'c'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!(c, 0, "the failed step was rolled back");
    }

    #[test]
    fn refuses_a_newer_file() {
        let tmp = TempDir::new("too-new");
        drop(open_ok(&tmp.state(), V2));
        let err = open(&tmp.state(), FILE, V1, WHAT).expect_err("newer schema");
        assert!(
            matches!(
                err,
                StoreError::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "test database {} has schema version 2, newer than this sekisho knows (1)",
                tmp.state().join(FILE).display()
            )
        );
        // Refusing wrote nothing.
        let conn = Connection::open(tmp.state().join(FILE)).expect("reopen");
        assert_eq!(user_version(&conn), 2);
    }

    #[test]
    fn a_state_directory_that_is_a_file_is_an_error() {
        let tmp = TempDir::new("not-a-dir");
        std::fs::write(tmp.state(), b"").expect("write");
        let err = open(&tmp.state(), FILE, V1, WHAT).expect_err("not a directory");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot create state directory {}", tmp.state().display())
        );
    }
}
