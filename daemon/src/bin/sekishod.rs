//! `sekishod`: the sekisho daemon. Loads the configuration, puts the policy in force in the
//! kernel, attaches the datapath and serves the control socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sekisho::{config::Config, control, paths, server};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "sekishod",
    version,
    about = "sekisho daemon: 住基ネット segregation gateway"
)]
struct Options {
    /// The configuration file.
    #[arg(long, short, default_value = paths::CONFIG_FILE)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where the policy archive is when the configuration file itself is unreadable at
    /// start-up (the last good policy is then enforced from it).
    #[arg(long, default_value = paths::STATE_DIR)]
    fallback_state_dir: PathBuf,
    /// Remove everything sekisho installed (pinned programs, links, maps, the nftables
    /// table). The segment is OPEN afterwards. Stopping the service does not do this.
    #[arg(long)]
    uninstall: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// Packaging only, not part of the daemon's interface: `sekishod --generate DIR` writes the
/// man page generated from [`Options`] (`cargo xtask package` runs it). A parser of its own
/// rather than a hidden flag of `Options`, so that nothing generated from `Options` (man
/// page, completion scripts, which list hidden flags too) mentions it.
#[derive(Parser, Debug)]
#[command(name = "sekishod")]
struct Generate {
    /// Where to write `sekishod.8`.
    #[arg(long = "generate", value_name = "DIR")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    if let Ok(Generate { dir }) = Generate::try_parse() {
        return match generate(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sekishod: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match options.log_format {
        // Under systemd the journal adds timestamps and shows no colours.
        LogFormat::Text if sekisho::systemd::journal() => {
            builder.with_ansi(false).without_time().init()
        }
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("sekishod: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(options: Options) -> anyhow::Result<()> {
    if options.uninstall {
        let config = Config::load(&options.config)?;
        print!("{}", server::uninstall(&config)?);
        return Ok(());
    }
    let (config, degraded) = server::startup_config(&options.config, &options.fallback_state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let socket = config.daemon.control_socket.clone();
    let daemon = server::Daemon::start(options.config.clone(), config, degraded)?;
    runtime.block_on(async move {
        let listener = control::bind(&socket)?;
        // Ready only now: the policy is in force and the control socket answers.
        sekisho::systemd::notify("READY=1");
        info!(
            socket = %socket.display(),
            mode = %daemon.config().daemon.mode,
            "sekishod ready"
        );
        server::run(daemon, listener).await
    })
}

/// Writes `sekishod.8` (administration commands) into `dir`.
fn generate(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let page = clap_mangen::Man::new(Options::command())
        .section("8")
        .generate_to(dir)
        .with_context(|| format!("cannot write the man page into {}", dir.display()))?;
    println!("{}", page.display());
    Ok(())
}
