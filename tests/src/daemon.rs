//! Starting the real `sekishod` inside a topology's gateway namespace, and running
//! `sekishoctl` against it.
//!
//! Each [`Sekishod`] gets its own state directory and control socket under a fresh
//! temporary directory, and its own pin directory under /sys/fs/bpf (the configuration's
//! demo paths are rewritten), so runs never share state. Dropping it ends the daemon it
//! started, by PID, removes what it pinned, and removes that directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{Host, Topology};

/// Where the sekisho binaries are: `SEKISHO_BIN_DIR` (set by `cargo xtask`), else the
/// workspace's debug build.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEKISHO_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    dir.join(name)
}

/// The workspace's `configs/` directory.
pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The demo configuration's pin directory.
pub const DEMO_PIN_DIR: &str = "/sys/fs/bpf/sekisho-demo";

/// The demo configuration's text with its files moved under `dir` and its pins under a
/// directory named after `dir`.
pub fn demo_config_text(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(configs_dir().join("demo.toml"))?;
    Ok(text
        .replace("/tmp/sekisho-demo", &dir.display().to_string())
        .replace(DEMO_PIN_DIR, &pin_dir_for(dir).display().to_string()))
}

/// The pin directory a scratch directory's daemon uses.
pub fn pin_dir_for(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    if dir == Path::new("/tmp/sekisho-demo") {
        return PathBuf::from(DEMO_PIN_DIR);
    }
    Path::new("/sys/fs/bpf").join(name.as_ref())
}

/// A running `sekishod`.
pub struct Sekishod {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    pin_dir: PathBuf,
}

static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Sekishod {
    /// A fresh private directory for one daemon's files.
    pub fn scratch_dir() -> Result<PathBuf> {
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sekisho-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Starts `sekishod` in the gateway namespace with the demo configuration, edited by
    /// `edit`, and waits until its control socket answers.
    pub fn start_demo(topo: &Topology, edit: impl FnOnce(String) -> String) -> Result<Sekishod> {
        let dir = Self::scratch_dir()?;
        let text = edit(demo_config_text(&dir)?);
        let config = dir.join("sekisho.toml");
        std::fs::write(&config, text)?;
        Self::start(topo, dir, config)
    }

    /// Starts `sekishod --config CONFIG` in the gateway namespace; `dir` is removed on drop.
    pub fn start(topo: &Topology, dir: PathBuf, config: PathBuf) -> Result<Sekishod> {
        let socket = dir.join("control.sock");
        let log = dir.join("sekishod.log");
        let mut daemon = Sekishod {
            child: None,
            pin_dir: pin_dir_for(&dir),
            dir,
            config,
            socket,
            log,
        };
        daemon.spawn(topo)?;
        Ok(daemon)
    }

    /// Starts (again) a `sekishod` on the same files, and waits until it answers.
    pub fn spawn(&mut self, topo: &Topology) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "sekishod is still running");
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = topo.spawn(
            Host::Gw,
            Command::new(bin("sekishod"))
                .arg("--config")
                .arg(&self.config)
                .arg("--fallback-state-dir")
                .arg(self.dir.join("state"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(logfile.try_clone()?)
                .stderr(logfile),
        )?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20))
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("sekishod is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The daemon's pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("sekishod exited with {status}:\n{}", self.log_text());
            }
            if self.ctl(&["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "sekishod did not answer within {limit:?}:\n{}",
            self.log_text()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `sekishoctl --socket SOCKET ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        Command::new(bin("sekishoctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running sekishoctl")
    }

    /// Runs `sekishoctl -o json ARGS…` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all)?;
        if !out.status.success() {
            bail!(
                "sekishoctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)?;
        Ok(())
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("sekishod already stopped")?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("sekishod ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sekishod {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        // What the daemon pinned outlives it by design; a test removes it.
        let _ = sekisho::datapath::unpin_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
