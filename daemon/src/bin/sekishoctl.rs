//! `sekishoctl`: the operators' command line for sekisho.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sekisho::config::Config;
use sekisho::control::{self, Request, Response, StatusReport};
use sekisho::datapath::{DIRECTION_NAMES, VERDICT_NAMES};
use sekisho::paths;

#[derive(Parser, Debug)]
#[command(name = "sekishoctl", version, about = "Operate sekisho, the 住基ネット segregation gateway")]
struct Options {
    /// The daemon's control socket.
    #[arg(long, global = true, env = paths::SOCKET_ENV, default_value = paths::CONTROL_SOCKET)]
    socket: PathBuf,
    /// Output format: a table for people, json for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mode, interfaces, policy generation and traffic counters of the running daemon.
    Status,
    /// Re-read the configuration file and apply it atomically (a bad file changes nothing).
    Reload,
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration file without touching the running daemon.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekishoctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> anyhow::Result<()> {
    match &options.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(file, options.output),
        Command::Status => match call(options, &Request::Status)? {
            Response::Status(report) => {
                if options.output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_status(&report);
                }
                Ok(())
            }
            other => unexpected(other),
        },
        Command::Reload => match call(options, &Request::Reload)? {
            Response::Reloaded { generation } => {
                if options.output == Output::Json {
                    println!("{}", serde_json::json!({ "generation": generation }));
                } else {
                    println!("policy reloaded: generation {generation} in force");
                }
                Ok(())
            }
            other => unexpected(other),
        },
    }
}

fn call(options: &Options, request: &Request) -> anyhow::Result<Response> {
    match control::call(&options.socket, request)? {
        Response::Error { message } => anyhow::bail!("{message}"),
        response => Ok(response),
    }
}

fn unexpected(response: Response) -> anyhow::Result<()> {
    anyhow::bail!("unexpected answer from sekishod: {response:?}")
}

fn check(file: &Path, output: Output) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let roles = config.roles().len();
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "file": file,
                "valid": true,
                "assets": config.assets.len(),
                "roles": roles,
                "peers": config.peers.len(),
                "rules": config.rules.len(),
                "mode": config.daemon.mode.to_string(),
            })
        );
    } else {
        println!(
            "{}: ok ({} assets in {} roles, {} peers, {} rules, mode {})",
            file.display(),
            config.assets.len(),
            roles,
            config.peers.len(),
            config.rules.len(),
            config.daemon.mode
        );
    }
    Ok(())
}

fn print_status(s: &StatusReport) {
    println!("sekishod {} (pid {})", s.version, s.pid);
    println!("  config      {}", s.config.display());
    println!("  mode        {}", s.mode);
    println!("  generation  {}", s.generation);
    println!(
        "  policy      {} assets, {} roles, {} peers, {} rules",
        s.assets, s.roles, s.peers, s.rules
    );
    println!();
    println!("{:<12} {:<5} {}", "INTERFACE", "SIDE", "DATAPATH");
    for i in &s.interfaces {
        let state = if i.attached { "attached" } else { "NOT ATTACHED" };
        println!("{:<12} {:<5} {}", i.name, i.side, state);
    }
    println!();
    print!("{:<10}", "TRAFFIC");
    for v in VERDICT_NAMES {
        print!(" {:>22}", format!("{v} pkts/bytes"));
    }
    println!();
    for (d, name) in DIRECTION_NAMES.iter().enumerate() {
        print!("{name:<10}");
        for c in &s.counters.by_direction[d] {
            print!(" {:>22}", format!("{}/{}", c.packets, c.bytes));
        }
        println!();
    }
    let reasons: Vec<_> = s
        .counters
        .by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .collect();
    if !reasons.is_empty() {
        println!();
        println!("{:<22} {:>10}", "REASON", "PACKETS");
        for (r, n) in reasons {
            println!("{r:<22} {n:>10}");
        }
    }
}
