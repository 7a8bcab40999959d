//! The running daemon: puts the policy in force in both layers (eBPF, nftables), answers
//! the control socket, reloads atomically, and repairs drift.
//!
//! Failing closed is the rule everywhere here:
//! - The policy is written into the kernel before any interface is attached, so the first
//!   packet an attached program sees is decided by the configured policy.
//! - Programs, links and maps are pinned: when the daemon exits or dies, the kernel goes
//!   on enforcing. A new daemon adopts the pins and swaps its program in atomically.
//! - A configuration is validated in full before anything changes; a bad one changes
//!   nothing. If the file is bad at start-up, the last good policy from the archive is
//!   enforced instead, so a reboot never comes up open.
//! - Every few seconds both layers are compared with what they should be, and put back
//!   (counted and logged) when someone changed them behind sekisho's back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::archive::Archive;
use crate::config::Config;
use crate::control::{
    self, DriftReport, InterfaceStatus, PendingReport, Request, Response, StatusReport,
};
use crate::datapath::{Datapath, Side};
use crate::policy::CompiledPolicy;
use crate::{diff, nft};

/// How often both layers are checked against what they should be.
pub const DRIFT_INTERVAL: Duration = Duration::from_secs(2);

/// A reload that rolls itself back unless confirmed in time.
struct Pending {
    previous: Config,
    deadline: Instant,
    generation: u32,
}

/// What the daemon holds while it runs.
pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    policy: CompiledPolicy,
    datapath: Datapath,
    archive: Archive,
    nft: Option<nft::Snapshot>,
    drift: DriftReport,
    pending: Option<Pending>,
    /// Why the configuration file is not what runs, when it is not (bad file at start-up).
    degraded: Option<String>,
}

fn side_interfaces(config: &Config) -> Vec<(String, Side)> {
    let lan = config.interfaces.lan.iter().map(|n| (n.clone(), Side::Lan));
    let wan = config.interfaces.wan.iter().map(|n| (n.clone(), Side::Wan));
    lan.chain(wan).collect()
}

/// The configuration to enforce at start-up: the file when it is valid, else the last good
/// policy of the archive in `fallback_state_dir` (with the reason it was needed).
pub fn startup_config(
    path: &Path,
    fallback_state_dir: &Path,
) -> anyhow::Result<(Config, Option<String>)> {
    match Config::load(path) {
        Ok(config) => Ok((config, None)),
        Err(bad) => {
            let archive = Archive::open(fallback_state_dir);
            let last = archive
                .as_ref()
                .ok()
                .and_then(|a| a.last_good().ok().flatten());
            let Some(entry) = last else {
                return Err(bad.into());
            };
            let config = Config::parse_str(&entry.content, Path::new(&entry.source_path))?;
            let why = format!(
                "{bad}; enforcing the last good policy instead (generation {}, applied {} by {})",
                entry.generation, entry.applied_at, entry.operator
            );
            error!("{why}");
            Ok((config, Some(why)))
        }
    }
}

impl Daemon {
    /// Adopts or loads the pinned datapath, puts the policy of `config` in force in both
    /// layers, then attaches.
    pub fn start(
        config_path: PathBuf,
        config: Config,
        degraded: Option<String>,
    ) -> anyhow::Result<Daemon> {
        let policy = CompiledPolicy::compile(&config);
        let mut archive = Archive::open(&config.daemon.state_dir)?;
        let mut datapath = Datapath::load_pinned(&config.daemon.pin_dir)?;
        let last_archived = archive.current()?.map(|e| e.generation).unwrap_or(0);
        let generation = if datapath.in_force(&policy)? {
            let g = datapath.generation()?;
            info!(
                generation = g,
                "pinned policy matches the configuration; adopted"
            );
            g
        } else {
            datapath.apply_after(&policy, last_archived)?
        };
        for (name, side) in side_interfaces(&config) {
            datapath.attach(&name, side)?;
        }
        let nft = Some(nft::apply(&config)?);
        let archived = archive.current()?;
        let same = archived.as_ref().is_some_and(|e| {
            e.generation == generation && e.sha256 == crate::archive::sha256_hex(&config.text)
        });
        if !same && generation > last_archived {
            archive.record(
                generation,
                &config,
                "sekishod",
                "start-up",
                jiff::Timestamp::now(),
            )?;
        }
        Ok(Daemon {
            config_path,
            config,
            policy,
            datapath,
            archive,
            nft,
            drift: DriftReport::default(),
            pending: None,
            degraded,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn status(&mut self) -> anyhow::Result<StatusReport> {
        let mut interfaces = Vec::new();
        for (name, side) in side_interfaces(&self.config) {
            interfaces.push(InterfaceStatus {
                attached: self.datapath.is_attached(&name, side),
                name,
                side: side.as_str().to_owned(),
            });
        }
        let (assets, roles, peers) = self.policy.counts();
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            config: self.config_path.clone(),
            mode: self.config.daemon.mode.to_string(),
            generation: self.datapath.generation()?,
            interfaces,
            nftables: nft::snapshot()?.is_some(),
            pin_dir: self.config.daemon.pin_dir.clone(),
            assets,
            roles,
            peers,
            rules: self.config.rules.len(),
            counters: self.datapath.counters()?,
            drift: self.drift.clone(),
            pending: self.pending.as_ref().map(|p| PendingReport {
                generation: p.generation,
                seconds_left: p
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs(),
            }),
            degraded: self.degraded.clone(),
        })
    }

    /// Puts `config` in force in both layers as a new generation and archives it.
    fn enforce(&mut self, config: Config, operator: &str, reason: &str) -> anyhow::Result<u32> {
        if config.interfaces != self.config.interfaces {
            anyhow::bail!(
                "{}: changing [interfaces] needs a restart of sekishod; nothing was changed",
                config.source.display()
            );
        }
        if config.daemon.pin_dir != self.config.daemon.pin_dir
            || config.daemon.state_dir != self.config.daemon.state_dir
        {
            anyhow::bail!(
                "{}: changing pin_dir or state_dir needs a restart of sekishod; nothing was changed",
                config.source.display()
            );
        }
        let policy = CompiledPolicy::compile(&config);
        // nftables first: if nft refuses the ruleset, nothing has changed anywhere.
        let snapshot = nft::apply(&config)?;
        let generation = self.datapath.apply(&policy)?;
        self.nft = Some(snapshot);
        self.archive.record(
            generation,
            &config,
            operator,
            reason,
            jiff::Timestamp::now(),
        )?;
        self.config = config;
        self.policy = policy;
        self.degraded = None;
        info!(generation, operator, reason, "policy in force");
        Ok(generation)
    }

    /// Re-reads the configuration file; a bad file changes nothing. With `confirm_within`,
    /// the previous policy comes back by itself unless [`Daemon::confirm`] follows in time.
    pub fn reload(
        &mut self,
        operator: &str,
        confirm_within: Option<Duration>,
    ) -> anyhow::Result<u32> {
        let config = Config::load(&self.config_path)?;
        let previous = self.config.clone();
        let reason = match confirm_within {
            Some(d) => format!("reload, to be confirmed within {}s", d.as_secs()),
            None => "reload".to_owned(),
        };
        let generation = self.enforce(config, operator, &reason)?;
        self.pending = confirm_within.map(|d| Pending {
            previous,
            deadline: Instant::now() + d,
            generation,
        });
        Ok(generation)
    }

    /// Keeps a reload that waits for confirmation.
    pub fn confirm(&mut self) -> anyhow::Result<u32> {
        match self.pending.take() {
            Some(p) => {
                info!(generation = p.generation, "reload confirmed");
                Ok(p.generation)
            }
            None => anyhow::bail!("no reload is waiting for confirmation"),
        }
    }

    /// Rolls back an unconfirmed reload whose time is up.
    fn expire_pending(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| Instant::now() >= p.deadline)
        {
            let p = self.pending.take().expect("checked above");
            let reason = format!(
                "automatic rollback: generation {} was not confirmed in time",
                p.generation
            );
            match self.enforce(p.previous, "sekishod", &reason) {
                Ok(g) => warn!(generation = g, "{reason}; previous policy restored"),
                Err(e) => error!(error = %format!("{e:#}"), "rollback failed"),
            }
        }
    }

    /// Compares both layers with what they should be and puts back what was changed.
    pub fn repair_drift(&mut self) {
        for (name, side) in side_interfaces(&self.config) {
            if !self.datapath.is_attached(&name, side) {
                warn!(interface = %name, "eBPF program was detached behind sekisho's back; re-attaching");
                self.drift.ebpf += 1;
                if let Err(e) = self.datapath.attach(&name, side) {
                    error!(interface = %name, error = %e, "re-attaching failed");
                }
            }
        }
        match self.datapath.in_force(&self.policy) {
            Ok(true) => {}
            Ok(false) => {
                warn!("eBPF policy maps differ from the policy in force; rewriting them");
                self.drift.ebpf += 1;
                if let Err(e) = self.datapath.apply(&self.policy) {
                    error!(error = %e, "rewriting the policy maps failed");
                }
            }
            Err(e) => error!(error = %e, "cannot read the policy maps"),
        }
        let now = nft::snapshot();
        let changed = match (&now, &self.nft) {
            (Ok(now), want) => now.as_ref() != want.as_ref(),
            (Err(e), _) => {
                error!(error = %e, "cannot list the nftables table");
                false
            }
        };
        if changed {
            warn!(
                "nftables table inet sekisho was changed or removed behind sekisho's back; restoring it"
            );
            self.drift.nftables += 1;
            match nft::apply(&self.config) {
                Ok(s) => self.nft = Some(s),
                Err(e) => error!(error = %e, "restoring the nftables table failed"),
            }
        }
    }

    fn handle(&mut self, request: Request, operator: &str) -> Response {
        let result = match request {
            Request::Status => self.status().map(|s| Response::Status(Box::new(s))),
            Request::Reload { confirm_within } => self
                .reload(operator, confirm_within.map(Duration::from_secs))
                .map(|generation| Response::Reloaded {
                    generation,
                    confirm_within,
                }),
            Request::Confirm => self
                .confirm()
                .map(|generation| Response::Confirmed { generation }),
            Request::PolicyDiff { text, source } => Config::parse_str(&text, &source)
                .map_err(anyhow::Error::from)
                .map(|new| Response::PolicyDiff(Box::new(diff::diff(&self.config, &new)))),
            Request::PolicyAt { at } => at
                .parse::<jiff::Timestamp>()
                .map_err(|e| anyhow::anyhow!("invalid time {at:?}: {e} (expected RFC 3339)"))
                .and_then(|t| Ok(self.archive.at(t)?))
                .map(|entry| Response::Policy {
                    entry: entry.map(Box::new),
                }),
            Request::PolicyList => self
                .archive
                .list()
                .map_err(Into::into)
                .map(|generations| Response::PolicyList { generations }),
        };
        result.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }
}

fn operator_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Serves the control socket until SIGTERM or SIGINT. Nothing pinned is removed on exit:
/// the kernel goes on enforcing.
pub async fn run(daemon: Daemon, listener: UnixListener) -> anyhow::Result<()> {
    let daemon = Arc::new(Mutex::new(daemon));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut drift = tokio::time::interval(DRIFT_INTERVAL);
    let mut pending = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let d = Arc::clone(&daemon);
                let result = tokio::task::spawn_blocking(move || d.lock().expect("daemon lock").reload("SIGHUP", None)).await?;
                if let Err(e) = result {
                    error!(error = %format!("{e:#}"), "reload on SIGHUP refused; the running policy stays in force");
                }
            }
            _ = drift.tick() => {
                let d = Arc::clone(&daemon);
                tokio::task::spawn_blocking(move || d.lock().expect("daemon lock").repair_drift()).await?;
            }
            _ = pending.tick() => {
                let d = Arc::clone(&daemon);
                tokio::task::spawn_blocking(move || d.lock().expect("daemon lock").expire_pending()).await?;
            }
            accepted = listener.accept() => {
                let (mut stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => { warn!(error = %e, "control socket accept failed"); continue; }
                };
                let daemon = Arc::clone(&daemon);
                tokio::spawn(async move {
                    let response = match control::read_request(&mut stream).await {
                        Ok((request, peer)) => {
                            let operator = operator_name(peer.uid);
                            info!(?request, %operator, pid = peer.pid, "control request");
                            // Map and nft updates are synchronous; keep them off the reactor.
                            tokio::task::spawn_blocking(move || daemon.lock().expect("daemon lock").handle(request, &operator))
                                .await
                                .unwrap_or_else(|e| Response::Error { message: format!("internal error: {e}") })
                        }
                        Err(message) => Response::Error { message },
                    };
                    control::write_response(&mut stream, &response).await;
                });
            }
        }
    }
    info!("stopping; the pinned datapath and the nftables table stay in force");
    Ok(())
}

/// Removes everything sekisho installed for `config`: pinned programs, links and maps and
/// the nftables table. Returns a report for the operator.
pub fn uninstall(config: &Config) -> anyhow::Result<String> {
    if std::os::unix::net::UnixStream::connect(&config.daemon.control_socket).is_ok() {
        anyhow::bail!(
            "sekishod is running (control socket {} answers); stop it first, or it will restore what --uninstall removes",
            config.daemon.control_socket.display()
        );
    }
    let removed = crate::datapath::unpin_all(&config.daemon.pin_dir)?;
    let table = nft::remove()?;
    let mut report = String::new();
    for p in &removed {
        report.push_str(&format!("removed {}\n", p.display()));
    }
    if table {
        report.push_str("removed nftables table inet sekisho\n");
    }
    report.push_str(
        "sekisho is uninstalled: NOTHING FILTERS TRAFFIC ANY MORE — the segment is now OPEN.\n\
         sekisho の遮断は解除されました。セグメントは現在 開放 されています。\n",
    );
    Ok(report)
}
