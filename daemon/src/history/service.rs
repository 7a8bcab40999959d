//! The daemon's history thread: kernel events → records → write-ahead log → hourly
//! segments, on a thread of its own so that a slow disk never delays a control request or
//! a packet (the kernel decides packets without it either way).
//!
//! Every 100 ms it drains the ring buffer; every second it sweeps ended flows, syncs the
//! log and flushes IPFIX; every minute it seals finished hours; every hour it applies the
//! retention. A cut-off asks for a sync and waits for it before it is reported.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::ipfix::Exporter;
use super::manifest::Entry;
use super::record::{Event, Record};
use super::recorder::{FlowMaps, Names, Recorder, Timeouts};
use super::store::{History, SystemClock};
use crate::config::{Config, Retention};

/// Where the traffic history of a state directory lives.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("history")
}

/// What the metrics and `status` show of the history.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct HistoryStatus {
    /// Records appended since the daemon started.
    pub records: u64,
    /// Events the kernel's ring buffer had no room for (since the maps were created).
    pub events_lost: u64,
    /// Records that could not be written (disk full, I/O error) since the daemon started.
    pub unrecorded: u64,
    /// Recording is failing now; enforcement is not affected.
    pub degraded: bool,
    pub last_error: Option<String>,
    /// Unix time (seconds) of the last successful sync of the log.
    pub last_sync: f64,
    /// Bytes of the history directory on disk.
    pub disk_bytes: u64,
    /// Flows being tracked and denied flows being aggregated in the kernel.
    pub flows_open: u64,
    pub denied_open: u64,
    /// IPFIX records sent and send errors, when a collector is configured.
    pub ipfix_records: u64,
    pub ipfix_errors: u64,
}

enum Command {
    Sync(mpsc::Sender<Result<(), String>>),
    Names(Arc<Names>),
    Stop,
}

/// The running history thread.
pub struct HistoryService {
    tx: mpsc::Sender<Command>,
    status: Arc<Mutex<HistoryStatus>>,
    /// Segments removed by retention, waiting to be written to the operation history.
    removed: Arc<Mutex<Vec<Entry>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(100);
const SWEEP: Duration = Duration::from_secs(1);
const SEAL: Duration = Duration::from_secs(60);
const RETAIN: Duration = Duration::from_secs(3600);

impl HistoryService {
    /// Opens the history under `state_dir` and starts recording from `maps`.
    pub fn start(
        config: &Config,
        maps: FlowMaps,
    ) -> Result<HistoryService, super::store::HistoryError> {
        let root = root(&config.daemon.state_dir);
        let history = History::open(&root, SystemClock)?;
        let names = Arc::new(Names::from_config(config));
        let recorder = Recorder::new(maps, names, Timeouts::default());
        let exporter =
            config
                .history
                .ipfix
                .and_then(|collector| match Exporter::new(collector, 0) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        error!(%collector, error = %e, "cannot export IPFIX");
                        None
                    }
                });
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(HistoryStatus::default()));
        let removed = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker {
            root,
            history,
            recorder,
            exporter,
            retention: config.history.retention,
            status: Arc::clone(&status),
            removed: Arc::clone(&removed),
            records: 0,
            disk_bytes: 0,
        };
        let thread = std::thread::Builder::new()
            .name("sekisho-history".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the history thread");
        info!("traffic history recording");
        Ok(HistoryService {
            tx,
            status,
            removed,
            thread: Some(thread),
        })
    }

    /// Drains the kernel's events and syncs the log; returns when both are done (or after
    /// `timeout`, with an error).
    pub fn sync(&self, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Sync(tx))
            .map_err(|_| "the history thread has stopped".to_owned())?;
        rx.recv_timeout(timeout)
            .map_err(|_| "the history did not sync in time".to_owned())?
    }

    /// Names records with the policy now in force.
    pub fn set_names(&self, config: &Config) {
        let _ = self
            .tx
            .send(Command::Names(Arc::new(Names::from_config(config))));
    }

    pub fn status(&self) -> HistoryStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Segments removed by retention since the last call.
    pub fn take_removed(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.removed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for HistoryService {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    root: PathBuf,
    history: History,
    recorder: Recorder,
    exporter: Option<Exporter>,
    retention: Retention,
    status: Arc<Mutex<HistoryStatus>>,
    removed: Arc<Mutex<Vec<Entry>>>,
    records: u64,
    /// Bytes on disk, walked once a minute (seven years are tens of thousands of files).
    disk_bytes: u64,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut last_sweep = Instant::now();
        let mut last_seal = Instant::now() - SEAL;
        let mut last_retain = Instant::now() - RETAIN;
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Command::Sync(reply)) => {
                    self.drain();
                    let result = self.history.sync().map_err(|e| e.to_string());
                    self.publish(None);
                    let _ = reply.send(result);
                }
                Ok(Command::Names(names)) => self.recorder.set_names(names),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.drain();
                    if let Err(e) = self.history.sync() {
                        error!(error = %e, "last sync of the traffic history failed");
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.drain(),
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                let mut out = Vec::new();
                let stats = self.recorder.sweep(&mut |r| out.push(r));
                for r in &out {
                    self.append(r);
                }
                if let Err(e) = self.history.sync() {
                    warn!(error = %e, "traffic history sync failed");
                }
                if let Some(x) = self.exporter.as_mut() {
                    x.flush(jiff::Timestamp::now().as_millisecond() as u64);
                }
                self.publish(Some((stats.flows_open, stats.denied_open)));
            }
            if last_seal.elapsed() >= SEAL {
                last_seal = Instant::now();
                self.disk_bytes = super::store::disk_usage(&self.root);
                match self.history.seal_due() {
                    Ok(sealed) => {
                        for e in sealed {
                            info!(segment = %e.path, records = e.records, "traffic history sealed");
                        }
                    }
                    Err(e) => error!(error = %e, "cannot seal the traffic history"),
                }
            }
            if last_retain.elapsed() >= RETAIN {
                last_retain = Instant::now();
                match self.history.retain(self.retention) {
                    Ok(gone) if !gone.is_empty() => {
                        self.removed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(gone);
                    }
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "cannot apply the history retention"),
                }
            }
        }
    }

    fn drain(&mut self) {
        let mut out = Vec::new();
        self.recorder.poll(&mut |r| out.push(r));
        for r in &out {
            self.append(r);
        }
    }

    fn append(&mut self, r: &Record) {
        self.history.append(r);
        self.records += 1;
        if let Some(x) = self.exporter.as_mut() {
            if r.event == Event::End {
                x.push(r);
            }
        }
    }

    fn publish(&mut self, open: Option<(u64, u64)>) {
        let health = self.history.health();
        let lost = self.recorder.events_lost();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.records = self.records;
        s.events_lost = lost;
        s.unrecorded = health.unrecorded_total;
        s.degraded = health.degraded;
        s.last_error = health.last_error.clone();
        s.last_sync = health.last_sync_us as f64 / 1e6;
        s.disk_bytes = self.disk_bytes;
        if let Some((flows, denied)) = open {
            s.flows_open = flows;
            s.denied_open = denied;
        }
        if let Some(x) = self.exporter.as_ref() {
            s.ipfix_records = x.records_sent();
            s.ipfix_errors = x.send_errors();
        }
    }
}
