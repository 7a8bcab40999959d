//! The control socket between `sekishod` and `sekishoctl`: one JSON request per
//! connection, one JSON line back.
//!
//! The socket is a Unix stream socket (mode 0660, group `sekisho` when that group
//! exists); the operator is whoever the kernel says is on the other end (SO_PEERCRED),
//! never a name the client sends. Requests are bounded in size and time, so a slow or
//! malformed client gets an error and never stalls the daemon.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use crate::datapath::Counters;

/// Largest request accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Re-read the configuration file and apply it atomically; with `confirm_within`
    /// (seconds), roll back unless [`Request::Confirm`] follows in time.
    Reload {
        #[serde(default)]
        confirm_within: Option<u64>,
    },
    /// Keep the reload that waits for confirmation.
    Confirm,
    /// Which flows `text` would allow or deny that the running policy does not.
    PolicyDiff {
        text: String,
        source: PathBuf,
    },
    /// The archived policy generation in force at an RFC 3339 instant.
    PolicyAt {
        at: String,
    },
    /// Every archived generation, without content.
    PolicyList,
    /// Cut a target off (R11, R14); `plan` only shows what would change, `drill` records
    /// and notifies without cutting.
    Isolate(IsolateRequest),
    /// Lift an isolation (R13: only explicitly).
    Restore {
        target: String,
        reason: String,
        approved_by: String,
    },
    /// An external system (IDS, SIEM) reports an incident: an emergency isolation.
    Trigger {
        target: String,
        source: String,
        reason: String,
        category: Option<String>,
        level: Option<u8>,
    },
    /// The operation history.
    AuditShow {
        since: Option<String>,
        limit: Option<usize>,
    },
    /// Check the operation history's hash chain.
    AuditVerify,
    /// Plan a maintenance stop: prior notice now, stop at `start`, restore at `end` (R16).
    MaintenanceSchedule {
        start: String,
        end: String,
        reason: String,
        target: Option<String>,
    },
    MaintenanceList,
    /// Withdraw a planned stop before it begins (a cancellation notice goes out).
    MaintenanceCancel {
        id: i64,
    },
    /// Notices waiting to be delivered, and recent ones.
    NotifyOutbox,
    /// Send a test notice to one recipient.
    NotifyTest {
        recipient: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolateRequest {
    pub target: String,
    pub reason: String,
    pub approved_by: Option<String>,
    pub emergency: bool,
    pub category: Option<String>,
    pub level: Option<u8>,
    #[serde(default)]
    pub drill: bool,
    #[serde(default)]
    pub plan: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReport>),
    Reloaded {
        generation: u32,
        confirm_within: Option<u64>,
    },
    Confirmed {
        generation: u32,
    },
    PolicyDiff(Box<crate::diff::PolicyDiff>),
    // Struct variants: an internally tagged enum cannot carry a bare Option or sequence.
    Policy {
        entry: Option<Box<crate::archive::Entry>>,
    },
    PolicyList {
        generations: Vec<crate::archive::EntrySummary>,
    },
    Isolated {
        target: String,
        generation: u32,
        /// From the request's arrival to the cut-off being in force in the kernel.
        took_us: u64,
        reference: String,
        drill: bool,
    },
    IsolationPlan(Box<IsolationPlan>),
    Restored {
        target: String,
        generation: u32,
        reference: String,
    },
    Audit {
        entries: Vec<crate::audit::Entry>,
    },
    AuditVerified {
        verification: crate::audit::Verification,
    },
    Maintenance {
        window: Box<crate::maintenance::Window>,
        notices: usize,
    },
    MaintenanceList {
        windows: Vec<crate::maintenance::Window>,
    },
    Outbox {
        pending: Vec<crate::notify::OutboxEntry>,
        recent: Vec<crate::notify::OutboxEntry>,
    },
    NotifyQueued {
        notices: usize,
    },
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub config: PathBuf,
    pub mode: String,
    pub generation: u32,
    pub interfaces: Vec<InterfaceStatus>,
    /// Whether the nftables table `inet sekisho` is present.
    pub nftables: bool,
    pub pin_dir: PathBuf,
    pub assets: usize,
    pub roles: usize,
    pub peers: usize,
    pub rules: usize,
    pub counters: Counters,
    pub drift: DriftReport,
    /// A reload waiting for confirmation.
    pub pending: Option<PendingReport>,
    /// Set when the configuration file is not what runs (it was bad at start-up).
    pub degraded: Option<String>,
    /// Isolations in force.
    pub isolations: Vec<crate::isolation::Isolation>,
    /// Planned stops not yet over.
    pub maintenance: Vec<crate::maintenance::Window>,
    /// Notices not yet accepted by their server.
    pub notifications_pending: u64,
    /// Where the traffic history is (read directly by `sekishoctl history`).
    #[serde(default)]
    pub history_dir: Option<PathBuf>,
    /// The traffic history's health; `None` when it is not recording.
    #[serde(default)]
    pub history: Option<crate::history::service::HistoryStatus>,
}

/// What an isolation would do, shown before anything changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationPlan {
    pub target: String,
    /// The hosts and networks cut off, with their addresses.
    pub cut: Vec<String>,
    /// The allowed flows (rules) that stop.
    pub flows_stopped: Vec<String>,
    /// What stays reachable during the cut-off.
    pub stays_open: Vec<String>,
}

/// How often each layer was found changed behind sekisho's back and put back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    pub ebpf: u64,
    pub nftables: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReport {
    pub generation: u32,
    pub seconds_left: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub side: String,
    pub attached: bool,
}

/// The Unix user and group on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the control socket directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach sekishod at {path} (is it running? --socket or SEKISHO_SOCKET name another socket)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sekishod sent an answer this sekishoctl does not understand")]
    Decode(#[source] serde_json::Error),
}

/// Binds the control socket at `path`, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ControlError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // A socket file left by a daemon that was killed refuses new binds.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let bind_err = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("sekisho") {
        std::os::unix::fs::chown(path, None, Some(group.gid.as_raw())).map_err(bind_err)?;
        // The operators' group must be able to reach the socket through its own runtime
        // directory (systemd creates /run/sekisho root-only); never touch a shared one.
        if let Some(dir) = path
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "sekisho"))
        {
            std::os::unix::fs::chown(dir, None, Some(group.gid.as_raw())).map_err(bind_err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(bind_err)?;
        }
    }
    Ok(listener)
}

/// Reads one request from `stream`, bounded in size and time.
pub async fn read_request(stream: &mut UnixStream) -> Result<(Request, Peer), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot identify the caller: {e}"))?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().unwrap_or(0),
    };
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST + 1);
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err("request timed out".into()),
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() as u64 > MAX_REQUEST {
        return Err(format!("request larger than {MAX_REQUEST} bytes"));
    }
    let request =
        serde_json::from_str(line.trim_end()).map_err(|e| format!("malformed request: {e}"))?;
    debug!(?request, uid = peer.uid, pid = peer.pid, "control request");
    Ok((request, peer))
}

/// Writes `response` as one JSON line.
pub async fn write_response(stream: &mut UnixStream, response: &Response) {
    let mut bytes = serde_json::to_vec(response).expect("responses always serialise");
    bytes.push(b'\n');
    if let Err(e) = stream.write_all(&bytes).await {
        warn!(error = %e, "cannot answer a control request");
    }
}

/// Sends `request` to the daemon at `path` and returns its answer (client side).
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    use std::io::{BufRead as _, Write as _};
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let mut bytes = serde_json::to_vec(request).expect("requests always serialise");
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(io_err)?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io_err)?;
    serde_json::from_str(&line).map_err(ControlError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_command() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"command":"status"}"#
        );
        let r: Request = serde_json::from_str(r#"{"command":"reload"}"#).unwrap();
        assert_eq!(
            r,
            Request::Reload {
                confirm_within: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"open_everything"}"#).is_err());
    }

    #[test]
    fn every_response_shape_serialises() {
        for response in [
            Response::Policy { entry: None },
            Response::PolicyList {
                generations: Vec::new(),
            },
            Response::Confirmed { generation: 3 },
            Response::Error {
                message: "x".into(),
            },
        ] {
            let text = serde_json::to_string(&response).expect("serialises");
            let back: Response = serde_json::from_str(&text).expect("parses back");
            assert_eq!(back, response);
        }
    }

    #[tokio::test]
    async fn malformed_oversized_and_slow_requests_get_an_error() {
        let dir = std::env::temp_dir().join(format!("sekisho-control-{}", std::process::id()));
        let path = dir.join("control.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let server = tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                answers.push(read_request(&mut s).await.map(|(r, _)| r));
            }
            answers
        });
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(b"not json\n").unwrap();
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            let big = vec![b'x'; (MAX_REQUEST + 10) as usize];
            let _ = s.write_all(&big);
        })
        .await
        .unwrap();
        let answers = server.await.unwrap();
        assert!(
            answers[0]
                .as_ref()
                .unwrap_err()
                .contains("malformed request")
        );
        assert!(answers[1].as_ref().unwrap_err().contains("larger than"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
