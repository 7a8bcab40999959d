//! The running daemon: puts the policy in force, attaches the datapath, answers the
//! control socket and reloads on request or SIGHUP.
//!
//! Order at start-up matters for failing closed: the policy is written into the kernel
//! before any interface is attached, so the first packet an attached program sees is
//! already decided by the configured policy, never by an empty table.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{self, InterfaceStatus, Request, Response, StatusReport};
use crate::datapath::{Datapath, Side};
use crate::policy::CompiledPolicy;

/// What the daemon holds while it runs.
pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    policy: CompiledPolicy,
    datapath: Datapath,
}

impl Daemon {
    /// Loads the datapath, puts the policy of `config` in force, then attaches.
    pub fn start(config_path: PathBuf, config: Config) -> anyhow::Result<Daemon> {
        let policy = CompiledPolicy::compile(&config);
        let mut datapath = Datapath::load()?;
        datapath.apply(&policy)?;
        for name in &config.interfaces.lan {
            datapath.attach(name, Side::Lan)?;
        }
        for name in &config.interfaces.wan {
            datapath.attach(name, Side::Wan)?;
        }
        Ok(Daemon {
            config_path,
            config,
            policy,
            datapath,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn status(&self) -> anyhow::Result<StatusReport> {
        let attached = self.datapath.attached();
        let interfaces = self
            .config
            .interfaces
            .lan
            .iter()
            .map(|n| (n, Side::Lan))
            .chain(self.config.interfaces.wan.iter().map(|n| (n, Side::Wan)))
            .map(|(name, side)| InterfaceStatus {
                name: name.clone(),
                side: side.as_str().to_owned(),
                attached: attached.iter().any(|(n, s)| n == name && *s == side),
            })
            .collect();
        let (assets, roles, peers) = self.policy.counts();
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            config: self.config_path.clone(),
            mode: self.config.daemon.mode.to_string(),
            generation: self.datapath.generation()?,
            interfaces,
            assets,
            roles,
            peers,
            rules: self.config.rules.len(),
            counters: self.datapath.counters()?,
        })
    }

    /// Re-reads the configuration file; a bad file changes nothing.
    pub fn reload(&mut self) -> anyhow::Result<u32> {
        let config = Config::load(&self.config_path)?;
        if config.interfaces != self.config.interfaces {
            anyhow::bail!(
                "{}: changing [interfaces] needs a restart of sekishod; nothing was changed",
                self.config_path.display()
            );
        }
        let policy = CompiledPolicy::compile(&config);
        let generation = self.datapath.apply(&policy)?;
        self.config = config;
        self.policy = policy;
        info!(generation, "configuration reloaded");
        Ok(generation)
    }

    fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => self.status().map(|s| Response::Status(Box::new(s))),
            Request::Reload => self
                .reload()
                .map(|generation| Response::Reloaded { generation }),
        };
        result.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }
}

/// Serves the control socket until SIGTERM or SIGINT.
pub async fn run(daemon: Daemon, listener: UnixListener) -> anyhow::Result<()> {
    let daemon = Arc::new(Mutex::new(daemon));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let result = daemon.lock().expect("daemon lock").reload();
                if let Err(e) = result {
                    error!(error = %format!("{e:#}"), "reload on SIGHUP refused; the running policy stays in force");
                }
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
                            info!(?request, uid = peer.uid, pid = peer.pid, "control request");
                            // Map updates are short and synchronous; keep them off the reactor.
                            tokio::task::spawn_blocking(move || daemon.lock().expect("daemon lock").handle(request))
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
    info!("stopping");
    Ok(())
}
