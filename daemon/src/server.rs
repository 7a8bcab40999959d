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
use crate::audit::{AuditLog, NewEntry};
use crate::authz::{self, Permission};
use crate::config::{Config, TriggerAction};
use crate::control::{
    self, DriftReport, InterfaceStatus, IsolateRequest, IsolationPlan, PendingReport, Request,
    Response, StatusReport,
};
use crate::datapath::{Datapath, Side};
use crate::isolation::{Category, Isolation, IsolationStore, Target};
use crate::maintenance::{Schedule, WindowState};
use crate::notice::{Event, Templates};
use crate::notify::{Outbox, Sender};
use crate::policy::CompiledPolicy;
use crate::{diff, dispatch, nft, triggers};

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
    isolations: IsolationStore,
    audit: AuditLog,
    engine: triggers::Engine,
    outbox: Outbox,
    templates: Templates,
    schedule: Schedule,
    /// Shared with the delivery worker, replaced on reload.
    sender: Arc<Mutex<Option<Sender>>>,
    /// Outcome and time (Unix seconds) of the last reload.
    last_reload: Option<(bool, f64)>,
    /// Control requests by result (`ok`, `error`, `refused`).
    requests: std::collections::BTreeMap<&'static str, u64>,
    /// Last probe result per peer with a `probe` (R19).
    peer_up: std::collections::BTreeMap<String, bool>,
    /// The traffic history's recording thread; `None` if it could not start (enforcement
    /// does not depend on it, and the metrics say so).
    history: Option<crate::history::service::HistoryService>,
}

/// The channels of `config`, or none (notices then wait in the outbox).
fn sender_for(config: &Config) -> Option<Sender> {
    config.notify.as_ref()?;
    match Sender::from_config(config) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "notices cannot be sent; they wait in the outbox");
            None
        }
    }
}

/// The targets cut off now, as the policy names them.
fn targets(store: &IsolationStore) -> anyhow::Result<Vec<String>> {
    Ok(store
        .active()?
        .iter()
        .map(|i| i.target.to_string())
        .collect())
}

/// The permission a request needs: reading and isolating for the `sekisho` group,
/// everything that lifts or changes policy for `sekisho-admin`.
fn required(request: &Request) -> Permission {
    match request {
        Request::Restore { .. }
        | Request::Reload { .. }
        | Request::Confirm
        | Request::MaintenanceSchedule { .. }
        | Request::MaintenanceCancel { .. }
        | Request::NotifyTest { .. } => Permission::Admin,
        _ => Permission::Operator,
    }
}

/// Every address of this network namespace's interfaces.
fn local_addresses() -> Vec<std::net::IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|s| std::net::IpAddr::V4(s.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
                })
                .collect()
        })
        .unwrap_or_default()
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
        let isolations = IsolationStore::open(&config.daemon.state_dir)?;
        let mut audit = AuditLog::open(&config.daemon.state_dir)?;
        // Isolations outlive restarts and reboots (R13): the kernel is reconciled with the
        // database before anything is attached.
        let cut = targets(&isolations)?;
        let mut policy = CompiledPolicy::compile(&config);
        policy
            .set_isolation(cut.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("an isolation in force names {e}"))?;
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
        datapath.set_local_addresses(&local_addresses())?;
        // Recording starts before the programs are attached, so the first flow is in it.
        let history = datapath.take_flow_maps().and_then(|maps| {
            match crate::history::service::HistoryService::start(&config, maps) {
                Ok(h) => Some(h),
                Err(e) => {
                    error!(error = %e, "the traffic history cannot record; enforcement goes on");
                    None
                }
            }
        });
        for (name, side) in side_interfaces(&config) {
            datapath.attach(&name, side)?;
        }
        let nft = Some(nft::apply_with(&config, &cut)?);
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
        audit.append(NewEntry {
            operator: "sekishod".into(),
            action: "start".into(),
            target: None,
            reason: degraded.clone(),
            approver: None,
            emergency: false,
            outcome: "ok".into(),
            details: serde_json::json!({
                "generation": generation,
                "isolations": cut,
                "config": config_path,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        })?;
        let engine = triggers::Engine::new(&config.triggers);
        let outbox = Outbox::open(&config.daemon.state_dir)?;
        let schedule = Schedule::open(&config.daemon.state_dir)?;
        let templates = dispatch::templates_for(&config_path);
        let sender = Arc::new(Mutex::new(sender_for(&config)));
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
            isolations,
            audit,
            engine,
            outbox,
            templates,
            schedule,
            sender,
            last_reload: None,
            requests: std::collections::BTreeMap::new(),
            peer_up: std::collections::BTreeMap::new(),
            history,
        })
    }

    /// Writes what the kernel has reported so far to disk, so that a cut-off is reported
    /// only with the traffic up to it safely recorded.
    fn sync_history(&self) {
        if let Some(h) = &self.history {
            if let Err(e) = h.sync(Duration::from_secs(2)) {
                warn!(error = %e, "traffic history not synced before the report");
            }
        }
    }

    /// Stops recording after a last drain and sync.
    pub fn stop_history(&mut self) {
        self.history.take();
    }

    /// Writes segments removed by the retention to the operation history.
    fn record_retention(&mut self) {
        let removed = match &self.history {
            Some(h) => h.take_removed(),
            None => return,
        };
        for e in removed {
            let entry = Daemon::entry(
                "sekishod",
                "history-retention",
                Some(e.path.clone()),
                None,
                "ok".into(),
                serde_json::json!({
                    "segment": e.path,
                    "records": e.records,
                    "oldest": e.min_first_us,
                    "newest": e.max_last_us,
                    "retention": self.config.history.retention.to_string(),
                }),
            );
            self.record(entry);
        }
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
            isolations: self.isolations.active()?,
            maintenance: self
                .schedule
                .list()?
                .into_iter()
                .filter(|w| matches!(w.state, WindowState::Scheduled | WindowState::Active))
                .collect(),
            notifications_pending: self.outbox.pending_count()?,
            history_dir: Some(crate::history::service::root(&self.config.daemon.state_dir)),
            history: self.history.as_ref().map(|h| h.status()),
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
        let cut = targets(&self.isolations)?;
        for t in &cut {
            let target: Target = t.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Err(e) = target.check(&config) {
                anyhow::bail!(
                    "{}: {t} is isolated but {e}; restore it before removing it from the configuration. Nothing was changed",
                    config.source.display()
                );
            }
        }
        let mut policy = CompiledPolicy::compile(&config);
        policy
            .set_isolation(cut.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // nftables first: if nft refuses the ruleset, nothing has changed anywhere.
        let snapshot = nft::apply_with(&config, &cut)?;
        let generation = self.datapath.apply(&policy)?;
        self.nft = Some(snapshot);
        self.archive.record(
            generation,
            &config,
            operator,
            reason,
            jiff::Timestamp::now(),
        )?;
        *self.sender.lock().expect("sender lock") = sender_for(&config);
        if let Some(h) = &self.history {
            h.set_names(&config);
        }
        self.config = config;
        self.policy = policy;
        self.degraded = None;
        info!(generation, operator, reason, "policy in force");
        Ok(generation)
    }

    /// Puts the isolation set of the store in force over the running configuration: the
    /// kernel first (the cut-off is effective when this store returns), then nftables.
    /// Returns the generation and the instant the kernel switched.
    fn apply_isolation(&mut self, operator: &str, reason: &str) -> anyhow::Result<(u32, Instant)> {
        let cut = targets(&self.isolations)?;
        let mut policy = self.policy.clone();
        policy
            .set_isolation(cut.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let generation = self.datapath.apply(&policy)?;
        let switched = Instant::now();
        self.policy = policy;
        match nft::apply_with(&self.config, &cut) {
            Ok(snapshot) => self.nft = Some(snapshot),
            // The kernel already enforces it; the drift check retries nftables.
            Err(e) => {
                error!(error = %e, "nftables refused the isolation; the eBPF layer enforces it")
            }
        }
        self.archive.record(
            generation,
            &self.config,
            operator,
            reason,
            jiff::Timestamp::now(),
        )?;
        Ok((generation, switched))
    }

    /// Re-reads the configuration file; a bad file changes nothing. With `confirm_within`,
    /// the previous policy comes back by itself unless [`Daemon::confirm`] follows in time.
    pub fn reload(
        &mut self,
        operator: &str,
        confirm_within: Option<Duration>,
    ) -> anyhow::Result<u32> {
        let result = self.reload_inner(operator, confirm_within);
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.last_reload = Some((result.is_ok(), now));
        result
    }

    fn reload_inner(
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
        let changes = diff::diff(&previous, &config);
        let generation = self.enforce(config, operator, &reason)?;
        self.pending = confirm_within.map(|d| Pending {
            previous,
            deadline: Instant::now() + d,
            generation,
        });
        // The operation history keeps what the reload changed, flow by flow (R23).
        let e = Self::entry(
            operator,
            "reload",
            None,
            Some(reason),
            "ok".into(),
            serde_json::json!({
                "generation": generation,
                "confirm_within": confirm_within.map(|d| d.as_secs()),
                "diff": serde_json::to_value(&changes).unwrap_or_default(),
            }),
        );
        self.record(e);
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
                Ok(g) => {
                    warn!(generation = g, "{reason}; previous policy restored");
                    let e = Self::entry(
                        "sekishod",
                        "rollback",
                        None,
                        Some(reason.clone()),
                        "ok".into(),
                        serde_json::json!({"generation": g}),
                    );
                    self.record(e);
                }
                Err(e) => error!(error = %format!("{e:#}"), "rollback failed"),
            }
        }
    }

    /// Compares both layers with what they should be and puts back what was changed.
    pub fn repair_drift(&mut self) {
        // Between requests: the grace period after the last switch, so that the next
        // switch (a cut-off) does not wait for it.
        self.datapath.settle();
        // Addresses come and go (DHCP on a management port, an operator's change).
        if let Err(e) = self.datapath.set_local_addresses(&local_addresses()) {
            error!(error = %e, "cannot update the gateway's own addresses");
        }
        for (name, side) in side_interfaces(&self.config) {
            if !self.datapath.is_attached(&name, side) {
                warn!(interface = %name, "eBPF program was detached behind sekisho's back; re-attaching");
                self.drift.ebpf += 1;
                let e = Self::entry(
                    "sekishod",
                    "drift-repaired",
                    Some(name.clone()),
                    Some("eBPF program detached behind sekisho's back".into()),
                    "ok".into(),
                    serde_json::json!({"layer": "ebpf"}),
                );
                self.record(e);
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
                let e = Self::entry(
                    "sekishod",
                    "drift-repaired",
                    None,
                    Some("eBPF policy maps changed behind sekisho's back".into()),
                    "ok".into(),
                    serde_json::json!({"layer": "ebpf"}),
                );
                self.record(e);
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
            let cut = targets(&self.isolations).unwrap_or_default();
            match nft::apply_with(&self.config, &cut) {
                Ok(s) => self.nft = Some(s),
                Err(e) => error!(error = %e, "restoring the nftables table failed"),
            }
        }
    }

    /// Appends to the operation history; a failure to record is logged loudly, and the
    /// action it describes has already happened.
    fn record(&mut self, entry: NewEntry) -> Option<crate::audit::Entry> {
        match self.audit.append(entry) {
            Ok(e) => Some(e),
            Err(e) => {
                error!(error = %e, "cannot write the operation history");
                None
            }
        }
    }

    fn entry(
        operator: &str,
        action: &str,
        target: Option<String>,
        reason: Option<String>,
        outcome: String,
        details: serde_json::Value,
    ) -> NewEntry {
        NewEntry {
            operator: operator.to_owned(),
            action: action.to_owned(),
            target,
            reason,
            approver: None,
            emergency: false,
            outcome,
            details,
        }
    }

    /// Everything a Prometheus scrape shows, read now.
    pub fn metrics(&mut self) -> anyhow::Result<crate::metrics::Snapshot> {
        use crate::datapath::{DIRECTION_NAMES, VERDICT_NAMES};
        let counters = self.datapath.counters()?;
        let history = self
            .history
            .as_ref()
            .map(|h| h.status())
            .unwrap_or_default();
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for (d, direction) in DIRECTION_NAMES.iter().enumerate() {
            for (v, verdict) in VERDICT_NAMES.iter().enumerate() {
                let c = counters.by_direction[d][v];
                packets.push((*direction, *verdict, c.packets));
                bytes.push((*direction, *verdict, c.bytes));
            }
        }
        let drops: Vec<(String, u64)> = sekisho_common::Reason::ALL
            .iter()
            .filter(|r| !r.is_pass())
            .map(|r| {
                (
                    r.name().to_owned(),
                    counters.by_reason.get(r.name()).copied().unwrap_or(0),
                )
            })
            .collect();
        let mut interfaces = Vec::new();
        for (name, side) in side_interfaces(&self.config) {
            let attached = self.datapath.is_attached(&name, side);
            interfaces.push((name, side.as_str().to_owned(), attached));
        }
        // Per-asset and per-peer traffic, read for the names of the register only.
        let mut assets_traffic = Vec::new();
        let mut peers_traffic = Vec::new();
        for (selector, name) in &self.policy.selector_names {
            let endpoint = sekisho_common::Endpoint {
                asset: *selector,
                peer: *selector,
                kind: if name.starts_with("peer:") {
                    sekisho_common::KIND_PEER
                } else {
                    sekisho_common::KIND_ASSET
                },
                ..Default::default()
            };
            let account = sekisho_common::account_of(&endpoint);
            if account == 0 || name.starts_with("role:") {
                continue;
            }
            let packets = self.datapath.account(account)?.packets;
            match name.split_once(':') {
                Some(("asset", n)) => assets_traffic.push((n.to_owned(), packets)),
                Some(("peer", n)) => peers_traffic.push((n.to_owned(), packets)),
                _ => {}
            }
        }
        let mut known_targets: Vec<String> = self.policy.selector_names.values().cloned().collect();
        known_targets.push("all".to_owned());
        let windows = self.schedule.list()?;
        let count = |state| windows.iter().filter(|w| w.state == state).count() as u64;
        let now = jiff::Timestamp::now();
        let oldest = self
            .outbox
            .oldest_pending()?
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0.0, |t| {
                (now - t).total(jiff::Unit::Second).unwrap_or(0.0).max(0.0)
            });
        let mut notifications = Vec::new();
        for (event, channel, delivered, failed) in self.outbox.delivery_stats()? {
            notifications.push((
                event.clone(),
                channel.clone(),
                "delivered".to_owned(),
                delivered,
            ));
            notifications.push((event, channel, "failed".to_owned(), failed));
        }
        Ok(crate::metrics::Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: self.config.daemon.mode.to_string(),
            generation: self.datapath.generation()?,
            last_reload_ok: self.last_reload.map(|(ok, _)| ok),
            last_reload_time: self.last_reload.map(|(_, t)| t),
            packets,
            bytes,
            flows_new_allowed: counters.by_reason.get("policy").copied().unwrap_or(0),
            flows_denied: drops.iter().map(|(_, n)| n).sum(),
            reasons: drops,
            interfaces,
            nftables_present: nft::snapshot()?.is_some(),
            isolations: targets(&self.isolations)?,
            known_targets,
            maintenance_scheduled: count(WindowState::Scheduled),
            maintenance_active: count(WindowState::Active),
            notifications_pending: self.outbox.pending_count()?,
            oldest_pending_age_seconds: oldest,
            notifications,
            drift_ebpf: self.drift.ebpf,
            drift_nftables: self.drift.nftables,
            assets_traffic,
            peers_traffic,
            peers_up: self
                .peer_up
                .iter()
                .map(|(p, up)| (p.clone(), *up))
                .collect(),
            control_requests: self
                .requests
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            history_records: history.records,
            events_lost: history.events_lost,
            history_recording: self.history.is_some() && !history.degraded,
            history_unrecorded: history.unrecorded,
            history_last_sync: history.last_sync,
            history_disk_bytes: history.disk_bytes,
            flows_tracked: history.flows_open,
            flows_denied_open: history.denied_open,
            ipfix_records: history.ipfix_records,
            ipfix_errors: history.ipfix_errors,
        })
    }

    /// Queues the notices of `event`; a failure is logged and never stops the caller (the
    /// cut-off or restore has already happened).
    fn announce(
        &mut self,
        event: &Event,
        base: &str,
        reference: Option<&str>,
        only: Option<&str>,
    ) -> anyhow::Result<usize> {
        let n = dispatch::enqueue(
            &mut self.outbox,
            &self.templates,
            &self.config,
            event,
            base,
            reference,
            only,
        )?;
        info!(event = event.name(), notices = n, "notices queued");
        Ok(n)
    }

    /// Queues the emergency-stop report of an isolation just put in force (R12, R17).
    fn report_stop(&mut self, mut isolation: Isolation, reference: &str) {
        isolation.reference = Some(reference.to_owned());
        let affected = self.plan(&isolation.target).cut;
        let event = Event::EmergencyStop {
            isolation,
            affected,
        };
        if let Err(e) = self.announce(&event, reference, Some(reference), None) {
            error!(error = %format!("{e:#}"), "cannot queue the emergency-stop report");
        }
    }

    /// Starts and ends the planned stops that are due (R16).
    pub fn check_maintenance(&mut self) {
        let now = jiff::Timestamp::now();
        let starts = self.schedule.due_starts(now).unwrap_or_else(|e| {
            error!(error = %e, "cannot read the maintenance schedule");
            Vec::new()
        });
        for window in starts {
            let isolation = Isolation {
                target: window.target.clone(),
                reason: format!(
                    "計画停止 (maintenance window {}): {}",
                    window.id, window.reason
                ),
                approved_by: Some(format!(
                    "maintenance window {} (scheduled by {})",
                    window.id, window.operator
                )),
                emergency: false,
                category: Category::Failure,
                level: 1,
                operator: "sekishod".into(),
                source: Some("maintenance".into()),
                drill: false,
                since: now.to_string(),
                reference: None,
            };
            match self.isolate(isolation) {
                Ok((g, r, _)) => {
                    info!(id = window.id, generation = g, reference = %r, "maintenance stop in force")
                }
                Err(e) => {
                    error!(id = window.id, error = %format!("{e:#}"), "maintenance stop failed")
                }
            }
            if let Err(e) = self.schedule.set_state(window.id, WindowState::Active) {
                error!(id = window.id, error = %e, "cannot mark the window active");
            }
            let event = Event::MaintenanceStart {
                window: window.clone(),
            };
            if let Err(e) = self.announce(&event, &format!("MW-{}-start", window.id), None, None) {
                error!(error = %format!("{e:#}"), "cannot queue the maintenance-start notice");
            }
        }
        let ends = self.schedule.due_ends(now).unwrap_or_default();
        for window in ends {
            let approver = format!("maintenance window {}", window.id);
            if let Err(e) = self.restore(
                &window.target,
                "sekishod",
                "計画停止の終了 (maintenance window over)",
                &approver,
            ) {
                error!(id = window.id, error = %format!("{e:#}"), "maintenance restore failed");
            }
            if let Err(e) = self.schedule.set_state(window.id, WindowState::Done) {
                error!(id = window.id, error = %e, "cannot mark the window done");
            }
            let event = Event::MaintenanceEnd {
                window: window.clone(),
            };
            if let Err(e) = self.announce(&event, &format!("MW-{}-end", window.id), None, None) {
                error!(error = %format!("{e:#}"), "cannot queue the recovery notice");
            }
        }
    }

    /// What isolating `target` would cut, and what stays reachable.
    fn plan(&self, target: &Target) -> IsolationPlan {
        let mut cut = Vec::new();
        let name = target.to_string();
        match target {
            Target::All => cut.push("every host and peer of the policy".to_owned()),
            Target::Asset(n) => cut.extend(
                self.config
                    .asset(n)
                    .map(|a| format!("asset:{} ({})", a.name, join(&a.addresses))),
            ),
            Target::Role(r) => cut.extend(
                self.config
                    .assets_of_role(r)
                    .map(|a| format!("asset:{} ({})", a.name, join(&a.addresses))),
            ),
            Target::Peer(n) => cut.extend(
                self.config
                    .peer(n)
                    .map(|p| format!("peer:{} ({})", p.name, join(&p.networks))),
            ),
        }
        let involves = |e: &crate::config::Endpoint| -> bool {
            match (target, e) {
                (Target::All, _) => true,
                (Target::Peer(n), crate::config::Endpoint::Peer(m)) => n == m,
                (Target::Role(r), crate::config::Endpoint::Role(m)) => r == m,
                (Target::Role(r), crate::config::Endpoint::Asset(a)) => {
                    self.config.asset(a).is_some_and(|a| &a.role == r)
                }
                (Target::Asset(n), crate::config::Endpoint::Asset(a)) => n == a,
                (Target::Asset(n), crate::config::Endpoint::Role(r)) => {
                    self.config.asset(n).is_some_and(|a| &a.role == r)
                }
                _ => false,
            }
        };
        let flows_stopped = self
            .config
            .rules
            .iter()
            .filter(|r| involves(&r.from) || involves(&r.to))
            .map(|r| {
                let ports: Vec<String> = r.ports.iter().map(ToString::to_string).collect();
                format!(
                    "rule {}: {} → {} ({})",
                    r.index + 1,
                    r.from,
                    r.to,
                    ports.join(", ")
                )
            })
            .collect();
        let mut stays_open = vec![
            "the gateway itself: its control socket and sekishoctl".to_owned(),
            "the gateway's own input on its management interfaces and its own outgoing traffic (notices)"
                .to_owned(),
        ];
        stays_open.extend(
            self.config
                .interfaces
                .management
                .iter()
                .map(|i| format!("management interface {i}")),
        );
        if !matches!(target, Target::All) {
            stays_open.push("every flow of the policy that does not involve the target".to_owned());
        }
        IsolationPlan {
            target: name,
            cut,
            flows_stopped,
            stays_open,
        }
    }

    /// Cuts `isolation.target` off in both layers, established connections included, and
    /// records it. Returns the generation and the operation-history reference.
    fn isolate(&mut self, isolation: Isolation) -> anyhow::Result<(u32, String, Instant)> {
        isolation
            .target
            .check(&self.config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let target = isolation.target.to_string();
        let (generation, switched) = if isolation.drill {
            (self.datapath.generation()?, Instant::now())
        } else {
            self.isolations.isolate(isolation.clone())?;
            match self.apply_isolation(&isolation.operator, &format!("isolate {target}")) {
                Ok(done) => done,
                Err(e) => {
                    // Not in force: do not leave it recorded as if it were.
                    let _ = self.isolations.restore(
                        &isolation.target,
                        "sekishod",
                        &format!("isolation failed: {e:#}"),
                        "sekishod",
                    );
                    return Err(e);
                }
            }
        };
        let entry = NewEntry {
            operator: isolation.operator.clone(),
            action: if isolation.drill {
                "isolate-drill"
            } else {
                "isolate"
            }
            .to_owned(),
            target: Some(target.clone()),
            reason: Some(isolation.reason.clone()),
            approver: isolation.approved_by.clone(),
            emergency: isolation.emergency,
            outcome: "ok".into(),
            details: serde_json::json!({
                "generation": generation,
                "category": isolation.category,
                "level": isolation.level,
                "source": isolation.source,
                "drill": isolation.drill,
            }),
        };
        let reference = self
            .record(entry)
            .map(|e| e.reference())
            .unwrap_or_else(|| "unrecorded".to_owned());
        self.sync_history();
        warn!(%target, generation, drill = isolation.drill, "isolated");
        Ok((generation, reference, switched))
    }

    fn restore(
        &mut self,
        target: &Target,
        operator: &str,
        reason: &str,
        approved_by: &str,
    ) -> anyhow::Result<(u32, String)> {
        let lifted = self
            .isolations
            .restore(target, operator, reason, approved_by)?;
        let (generation, _) = self.apply_isolation(operator, &format!("restore {target}"))?;
        if let Target::Asset(name) = target {
            self.engine.reset(name);
        }
        let lifted_for_notice = lifted.clone();
        let entry = NewEntry {
            operator: operator.to_owned(),
            action: "restore".into(),
            target: Some(target.to_string()),
            reason: Some(reason.to_owned()),
            approver: Some(approved_by.to_owned()),
            emergency: false,
            outcome: "ok".into(),
            details: serde_json::json!({
                "generation": generation,
                "isolated_since": lifted.since,
                "isolated_by": lifted.operator,
            }),
        };
        let reference = self
            .record(entry)
            .map(|e| e.reference())
            .unwrap_or_else(|| "unrecorded".to_owned());
        info!(%target, generation, "restored");
        if lifted_for_notice.source.as_deref() != Some("maintenance") {
            let event = Event::Restore {
                isolation: lifted_for_notice,
                restored_by: operator.to_owned(),
                reason: reason.to_owned(),
                approved_by: approved_by.to_owned(),
            };
            if let Err(e) = self.announce(&event, &reference, Some(&reference), None) {
                error!(error = %format!("{e:#}"), "cannot queue the recovery report");
            }
        }
        Ok((generation, reference))
    }

    /// Reads the kernel's violation counts and acts on what the triggers say (R15).
    pub fn check_triggers(&mut self) {
        let counts = match self.datapath.violations() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot read violation counts");
                return;
            }
        };
        let now = Instant::now();
        for (address, total) in counts {
            // IPv6 housekeeping (MLD, router solicitations from link-local or unspecified
            // sources) is dropped like anything else but is no sign of an intruder.
            let housekeeping = match address {
                std::net::IpAddr::V6(v6) => v6.is_unspecified() || v6.is_unicast_link_local(),
                std::net::IpAddr::V4(v4) => v4.is_unspecified() || v4.is_link_local(),
            };
            if housekeeping {
                continue;
            }
            let asset = self
                .config
                .assets
                .iter()
                .find(|a| a.addresses.contains(&address))
                .map(|a| a.name.clone());
            let source = match &asset {
                Some(name) => triggers::Source::Asset(name.clone()),
                None => triggers::Source::Unknown,
            };
            let Some(event) = self.engine.observe(now, address, source, total) else {
                continue;
            };
            self.act_on(event);
        }
    }

    fn act_on(&mut self, event: triggers::Event) {
        match event {
            triggers::Event::Violations {
                asset,
                address,
                count,
                within,
                action,
            } => {
                let reason = format!(
                    "{count} denied packets from {address} within {}s (triggers.violations)",
                    within.as_secs()
                );
                let target = Target::Asset(asset);
                let already = self
                    .isolations
                    .active()
                    .map(|a| a.iter().any(|i| i.target == target))
                    .unwrap_or(false);
                if action == TriggerAction::Isolate && !already {
                    let isolation = Isolation {
                        target: target.clone(),
                        reason: reason.clone(),
                        approved_by: None,
                        emergency: true,
                        category: Category::Misconduct,
                        level: 2,
                        operator: "sekishod".into(),
                        source: Some("violations".into()),
                        drill: false,
                        since: jiff::Timestamp::now().to_string(),
                        reference: None,
                    };
                    match self.isolate(isolation.clone()) {
                        Ok((g, r, _)) => {
                            self.report_stop(isolation, &r);
                            warn!(%target, generation = g, reference = %r, "{reason}: isolated automatically");
                        }
                        Err(e) => {
                            error!(%target, error = %format!("{e:#}"), "automatic isolation failed")
                        }
                    }
                } else {
                    warn!(%target, "{reason}: alert");
                    let e = Self::entry(
                        "sekishod",
                        "alert",
                        Some(target.to_string()),
                        Some(reason),
                        "ok".into(),
                        serde_json::json!({"trigger": "violations"}),
                    );
                    self.record(e);
                }
            }
            triggers::Event::UnknownSource { address, action } => {
                // An unknown source has no rule: the policy already drops all it sends.
                let reason = format!(
                    "unknown source {address} on the LAN (not in the asset register); everything it sends is dropped"
                );
                warn!(%address, ?action, "{reason}");
                let e = Self::entry(
                    "sekishod",
                    "alert",
                    Some(address.to_string()),
                    Some(reason),
                    "ok".into(),
                    serde_json::json!({"trigger": "unknown_source"}),
                );
                self.record(e);
            }
        }
    }

    fn handle(&mut self, request: Request, peer: control::Peer, received: Instant) -> Response {
        let operator = operator_name(peer.uid);
        let have = authz::permission_of(peer.uid, peer.gid);
        let need = required(&request);
        if have < need {
            *self.requests.entry("refused").or_default() += 1;
            let what = format!("{request:?}");
            let message = format!(
                "{operator} may not do this: it needs membership of group {} (request refused and recorded)",
                if need == Permission::Admin {
                    authz::ADMIN_GROUP
                } else {
                    authz::OPERATOR_GROUP
                }
            );
            let e = Self::entry(
                &operator,
                "refused",
                None,
                None,
                format!("refused: {message}"),
                serde_json::json!({ "request": what }),
            );
            self.record(e);
            return Response::Error { message };
        }
        let result = match request {
            Request::Status => self.status().map(|s| Response::Status(Box::new(s))),
            Request::Reload { confirm_within } => {
                let r = self.reload(&operator, confirm_within.map(Duration::from_secs));
                if let Err(err) = &r {
                    let e = Self::entry(
                        &operator,
                        "reload",
                        None,
                        None,
                        format!("refused: {err:#}"),
                        serde_json::json!({ "confirm_within": confirm_within }),
                    );
                    self.record(e);
                }
                r.map(|generation| Response::Reloaded {
                    generation,
                    confirm_within,
                })
            }
            Request::Confirm => {
                let r = self.confirm();
                if let Ok(g) = &r {
                    let e = Self::entry(
                        &operator,
                        "confirm",
                        None,
                        None,
                        "ok".into(),
                        serde_json::json!({ "generation": g }),
                    );
                    self.record(e);
                }
                r.map(|generation| Response::Confirmed { generation })
            }
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
            Request::Isolate(req) => self.handle_isolate(req, &operator, received),
            Request::Trigger {
                target,
                source,
                reason,
                category,
                level,
            } => {
                let req = IsolateRequest {
                    target,
                    reason,
                    approved_by: None,
                    emergency: true,
                    category,
                    level,
                    drill: false,
                    plan: false,
                };
                self.handle_isolate_from(req, &operator, Some(source), received)
            }
            Request::Restore {
                target,
                reason,
                approved_by,
            } => target
                .parse::<Target>()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|t| {
                    let (generation, reference) =
                        self.restore(&t, &operator, &reason, &approved_by)?;
                    Ok(Response::Restored {
                        target: t.to_string(),
                        generation,
                        reference,
                    })
                }),
            Request::AuditShow { since, limit } => since
                .map(|s| {
                    s.parse::<jiff::Timestamp>()
                        .map_err(|e| anyhow::anyhow!("invalid time {s:?}: {e} (expected RFC 3339)"))
                })
                .transpose()
                .and_then(|since| Ok(self.audit.list(since, limit)?))
                .map(|entries| Response::Audit { entries }),
            Request::MaintenanceSchedule {
                start,
                end,
                reason,
                target,
            } => self.schedule_maintenance(&start, &end, &reason, target.as_deref(), &operator),
            Request::MaintenanceList => self
                .schedule
                .list()
                .map_err(Into::into)
                .map(|windows| Response::MaintenanceList { windows }),
            Request::MaintenanceCancel { id } => self.cancel_maintenance(id, &operator),
            Request::NotifyOutbox => self
                .outbox
                .pending()
                .and_then(|pending| Ok((pending, self.outbox.recent(20)?)))
                .map_err(Into::into)
                .map(|(pending, recent)| Response::Outbox { pending, recent }),
            Request::NotifyTest { recipient } => {
                let base = format!("TEST-{}", jiff::Timestamp::now().as_millisecond());
                self.announce(&Event::Test, &base, None, Some(&recipient))
                    .map(|notices| Response::NotifyQueued { notices })
            }
            Request::AuditVerify => self
                .audit
                .verify()
                .map_err(Into::into)
                .map(|verification| Response::AuditVerified { verification }),
        };
        *self
            .requests
            .entry(if result.is_ok() { "ok" } else { "error" })
            .or_default() += 1;
        result.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }

    fn handle_isolate(
        &mut self,
        req: IsolateRequest,
        operator: &str,
        received: Instant,
    ) -> anyhow::Result<Response> {
        self.handle_isolate_from(req, operator, None, received)
    }

    fn handle_isolate_from(
        &mut self,
        req: IsolateRequest,
        operator: &str,
        source: Option<String>,
        received: Instant,
    ) -> anyhow::Result<Response> {
        let target: Target = req.target.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        target
            .check(&self.config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if req.plan {
            return Ok(Response::IsolationPlan(Box::new(self.plan(&target))));
        }
        if req.emergency == req.approved_by.is_some() {
            anyhow::bail!(
                "give either --approved-by NAME (the セキュリティ統括責任者 who approved) or --emergency (cut off without prior approval), not both or neither"
            );
        }
        let category = match req.category.as_deref() {
            None => Category::Misconduct,
            Some(c) => c.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let level = req.level.unwrap_or(2);
        if !(1..=3).contains(&level) {
            anyhow::bail!("--level must be 1, 2 or 3 (脅威度), not {level}");
        }
        let isolation = Isolation {
            target,
            reason: req.reason,
            approved_by: req.approved_by,
            emergency: req.emergency,
            category,
            level,
            operator: operator.to_owned(),
            source,
            drill: req.drill,
            since: jiff::Timestamp::now().to_string(),
            reference: None,
        };
        let (generation, reference, switched) = self.isolate(isolation.clone())?;
        // Reported at once after the cut-off, never before it (R17).
        self.report_stop(isolation.clone(), &reference);
        Ok(Response::Isolated {
            target: isolation.target.to_string(),
            generation,
            took_us: switched.saturating_duration_since(received).as_micros() as u64,
            reference,
            drill: isolation.drill,
        })
    }
}

impl Daemon {
    fn schedule_maintenance(
        &mut self,
        start: &str,
        end: &str,
        reason: &str,
        target: Option<&str>,
        operator: &str,
    ) -> anyhow::Result<Response> {
        let time = |t: &str| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                anyhow::anyhow!(
                    "invalid time {t:?}: {e} (expected RFC 3339, e.g. 2026-12-01T21:00:00+09:00)"
                )
            })
        };
        let target: Target = target
            .unwrap_or("all")
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        target
            .check(&self.config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let window = self.schedule.schedule(
            time(start)?,
            time(end)?,
            reason,
            target,
            operator,
            jiff::Timestamp::now(),
        )?;
        let e = Self::entry(
            operator,
            "maintenance-schedule",
            Some(window.target.to_string()),
            Some(reason.to_owned()),
            "ok".into(),
            serde_json::json!({"window": window.id, "start": window.start, "end": window.end}),
        );
        self.record(e);
        // The prior notice goes out now (R16).
        let event = Event::MaintenanceNotice {
            window: window.clone(),
        };
        let notices = self.announce(&event, &format!("MW-{}-notice", window.id), None, None)?;
        Ok(Response::Maintenance {
            window: Box::new(window),
            notices,
        })
    }

    fn cancel_maintenance(&mut self, id: i64, operator: &str) -> anyhow::Result<Response> {
        let window = self.schedule.cancel(id, operator)?;
        let e = Self::entry(
            operator,
            "maintenance-cancel",
            Some(window.target.to_string()),
            None,
            "ok".into(),
            serde_json::json!({"window": id}),
        );
        self.record(e);
        let event = Event::MaintenanceCancel {
            window: window.clone(),
            by: operator.to_owned(),
        };
        let notices = self.announce(&event, &format!("MW-{id}-cancel"), None, None)?;
        Ok(Response::Maintenance {
            window: Box::new(window),
            notices,
        })
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
    let mut triggers = tokio::time::interval(Duration::from_secs(1));
    // Without a systemd watchdog the tick is harmless (notify does nothing).
    let mut watchdog = tokio::time::interval(
        crate::systemd::watchdog_interval().unwrap_or(Duration::from_secs(3600)),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = probe_in_background(Arc::clone(&daemon), Arc::clone(&stop));
    let metrics = {
        let listen = daemon
            .lock()
            .expect("daemon lock")
            .config
            .daemon
            .metrics_listen;
        let d = Arc::clone(&daemon);
        let source: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(move || match d.lock().expect("daemon lock").metrics() {
                Ok(snapshot) => crate::metrics::render(&snapshot),
                Err(e) => {
                    error!(error = %format!("{e:#}"), "cannot read the metrics");
                    String::new()
                }
            });
        match crate::metrics::MetricsServer::start(listen, source) {
            Ok(server) => {
                info!(%listen, "metrics served at /metrics");
                Some(server)
            }
            Err(e) => {
                error!(%listen, error = %e, "cannot serve metrics");
                None
            }
        }
    };
    let worker = {
        let d = daemon.lock().expect("daemon lock");
        deliver_in_background(
            d.config.daemon.state_dir.clone(),
            Arc::clone(&d.sender),
            Arc::clone(&stop),
        )
    };
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
            _ = watchdog.tick() => {
                // Alive means the daemon can still take its own lock.
                let d = Arc::clone(&daemon);
                tokio::task::spawn_blocking(move || {
                    let _held = d.lock().expect("daemon lock");
                    crate::systemd::notify("WATCHDOG=1");
                }).await?;
            }
            _ = triggers.tick() => {
                let d = Arc::clone(&daemon);
                tokio::task::spawn_blocking(move || {
                    let mut d = d.lock().expect("daemon lock");
                    d.check_triggers();
                    d.check_maintenance();
                    d.record_retention();
                }).await?;
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
                            let received = Instant::now();
                            info!(?request, uid = peer.uid, pid = peer.pid, "control request");
                            // Map and nft updates are synchronous; keep them off the reactor.
                            tokio::task::spawn_blocking(move || daemon.lock().expect("daemon lock").handle(request, peer, received))
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = worker.join();
    let _ = prober.join();
    drop(metrics);
    let mut d = daemon.lock().expect("daemon lock");
    d.stop_history();
    let e = Daemon::entry(
        "sekishod",
        "stop",
        None,
        None,
        "ok".into(),
        serde_json::json!({"enforcement": "stays in force (pinned)"}),
    );
    d.record(e);
    Ok(())
}

/// How often the peers' probe servers are tried.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(15);

/// Connects to each peer's probe server from the gateway itself until `stop` (R19): a
/// completed TCP handshake means the peer is up. Never holds the daemon lock while
/// connecting.
fn probe_in_background(
    daemon: Arc<Mutex<Daemon>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + PROBE_INTERVAL;
                let probes: Vec<(String, std::net::SocketAddr)> = {
                    let d = daemon.lock().expect("daemon lock");
                    d.config
                        .peers
                        .iter()
                        .filter_map(|p| p.probe.map(|a| (p.name.clone(), a)))
                        .collect()
                };
                let results: std::collections::BTreeMap<String, bool> = probes
                    .into_iter()
                    .map(|(name, addr)| {
                        let up =
                            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                                .is_ok();
                        (name, up)
                    })
                    .collect();
                let mut d = daemon.lock().expect("daemon lock");
                for (name, up) in &results {
                    if d.peer_up.get(name) != Some(up) {
                        if *up {
                            info!(peer = %name, "peer reachable");
                        } else {
                            warn!(peer = %name, "peer unreachable");
                        }
                    }
                }
                d.peer_up = results;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Delivers queued notices until `stop`: its own connection to the outbox, so a slow
/// mail server never holds up the daemon; retried with backoff across restarts.
fn deliver_in_background(
    state_dir: PathBuf,
    sender: Arc<Mutex<Option<Sender>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut outbox = match Outbox::open(&state_dir) {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "notice delivery cannot open the outbox");
                return;
            }
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(sender) = sender.lock().expect("sender lock").as_ref() {
                match crate::notify::deliver_due(&mut outbox, sender, jiff::Timestamp::now()) {
                    Ok((0, 0)) => {}
                    Ok((delivered, failed)) => info!(delivered, failed, "notices delivered"),
                    Err(e) => error!(error = %e, "notice delivery failed"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
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
