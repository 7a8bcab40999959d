//! `sekishoctl`: the operators' command line for sekisho.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sekisho::config::Config;
use sekisho::control::{self, Request, Response, StatusReport};
use sekisho::datapath::{DIRECTION_NAMES, VERDICT_NAMES};
use sekisho::paths;

#[derive(Parser, Debug)]
#[command(
    name = "sekishoctl",
    version,
    about = "Operate sekisho, the 住基ネット segregation gateway"
)]
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
    Reload {
        /// Roll back to the previous policy unless `reload --confirm` follows within this
        /// time (e.g. 120s, 5m): protects a remote administrator from locking themselves out.
        #[arg(long, value_parser = parse_duration, conflicts_with = "confirm")]
        confirm_within: Option<u64>,
        /// Keep the reload that waits for confirmation.
        #[arg(long)]
        confirm: bool,
    },
    /// Policy commands: what a file would change, which policy applied when.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Which flows FILE would allow or deny that the running policy does not, before
    /// anything is applied.
    Diff { file: PathBuf },
    /// The policy generation in force at a time (RFC 3339, e.g. 2026-04-01T09:00:00+09:00).
    At { time: String },
    /// Every policy generation ever in force.
    Log,
}

/// Parses "120", "120s", "5m", "1h" into seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 120s, 5m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m or h)")),
    };
    if secs == 0 {
        return Err("the confirmation window must be longer than 0s".into());
    }
    Ok(secs)
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
        Command::Reload { confirm: true, .. } => match call(options, &Request::Confirm)? {
            Response::Confirmed { generation } => emit(
                options,
                serde_json::json!({ "confirmed": generation }),
                || format!("generation {generation} confirmed; it stays in force"),
            ),
            other => unexpected(other),
        },
        Command::Reload { confirm_within, .. } => {
            let request = Request::Reload {
                confirm_within: *confirm_within,
            };
            match call(options, &request)? {
                Response::Reloaded {
                    generation,
                    confirm_within,
                } => emit(
                    options,
                    serde_json::json!({ "generation": generation, "confirm_within": confirm_within }),
                    || match confirm_within {
                        Some(s) => format!(
                            "policy reloaded: generation {generation} in force; it is rolled back in {s}s unless `sekishoctl reload --confirm` follows"
                        ),
                        None => format!("policy reloaded: generation {generation} in force"),
                    },
                ),
                other => unexpected(other),
            }
        }
        Command::Policy {
            command: PolicyCommand::Diff { file },
        } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            // Validate here too, so a bad file gets its file:line:column without a daemon.
            Config::parse_str(&text, file)?;
            let request = Request::PolicyDiff {
                text,
                source: file.clone(),
            };
            match call(options, &request)? {
                Response::PolicyDiff(d) => {
                    emit(options, serde_json::to_value(&d)?, || d.to_string())
                }
                other => unexpected(other),
            }
        }
        Command::Policy {
            command: PolicyCommand::At { time },
        } => match call(options, &Request::PolicyAt { at: time.clone() })? {
            Response::Policy { entry: Some(e) } => emit(options, serde_json::to_value(&e)?, || {
                format!(
                    "generation {} in force since {} (applied by {}: {}; sha256 {})\n\n{}",
                    e.generation, e.applied_at, e.operator, e.reason, e.sha256, e.content
                )
            }),
            Response::Policy { entry: None } => anyhow::bail!("no policy was in force at {time}"),
            other => unexpected(other),
        },
        Command::Policy {
            command: PolicyCommand::Log,
        } => match call(options, &Request::PolicyList)? {
            Response::PolicyList { generations: list } => {
                emit(options, serde_json::to_value(&list)?, || {
                    let mut out = format!(
                        "{:<10} {:<32} {:<14} {:<16} REASON",
                        "GENERATION", "APPLIED", "SHA256", "OPERATOR"
                    );
                    for e in &list {
                        out.push_str(&format!(
                            "\n{:<10} {:<32} {:<14} {:<16} {}",
                            e.generation,
                            e.applied_at,
                            &e.sha256[..12.min(e.sha256.len())],
                            e.operator,
                            e.reason
                        ));
                    }
                    out
                })
            }
            other => unexpected(other),
        },
    }
}

/// Prints `json` for scripts or the text `human` makes for people.
fn emit(
    options: &Options,
    json: serde_json::Value,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if options.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{}", human());
    }
    Ok(())
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
    println!(
        "  nftables    {}",
        if s.nftables {
            "table inet sekisho in force"
        } else {
            "TABLE MISSING"
        }
    );
    println!("  pinned at   {}", s.pin_dir.display());
    println!(
        "  drift       repaired {} times (eBPF), {} times (nftables)",
        s.drift.ebpf, s.drift.nftables
    );
    if let Some(p) = &s.pending {
        println!(
            "  PENDING     generation {} is rolled back in {}s unless `sekishoctl reload --confirm`",
            p.generation, p.seconds_left
        );
    }
    if let Some(why) = &s.degraded {
        println!("  DEGRADED    {why}");
    }
    println!();
    println!("{:<12} {:<5} DATAPATH", "INTERFACE", "SIDE");
    for i in &s.interfaces {
        let state = if i.attached {
            "attached"
        } else {
            "NOT ATTACHED"
        };
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
