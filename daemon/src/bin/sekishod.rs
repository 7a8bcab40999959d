//! `sekishod`: the sekisho daemon. Loads the configuration, puts the policy in force in the
//! kernel, attaches the datapath and serves the control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sekisho::{config::Config, control, paths, server};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(name = "sekishod", version, about = "sekisho daemon: 住基ネット segregation gateway")]
struct Options {
    /// The configuration file.
    #[arg(long, short, default_value = paths::CONFIG_FILE)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match options.log_format {
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
    let config = Config::load(&options.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let socket = config.daemon.control_socket.clone();
    let daemon = server::Daemon::start(options.config.clone(), config)?;
    runtime.block_on(async move {
        let listener = control::bind(&socket)?;
        info!(
            socket = %socket.display(),
            mode = %daemon.config().daemon.mode,
            "sekishod ready"
        );
        server::run(daemon, listener).await
    })
}
