//! `sekishoctl`: the operators' command line for sekisho.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sekisho::audit::Verification;
use sekisho::config::Config;
use sekisho::control::{self, IsolateRequest, Request, Response, StatusReport};
use sekisho::datapath::{DIRECTION_NAMES, VERDICT_NAMES};
use sekisho::history::{manifest, query, store, whatif};
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
    /// Cut a host, a role, a peer or everything off at once, established connections
    /// included, until an explicit restore (R11, R13, R14).
    Isolate {
        /// asset:NAME, role:NAME, peer:NAME or all.
        target: String,
        /// Why (recorded, and carried by the notices).
        #[arg(long, required_unless_present = "plan")]
        reason: Option<String>,
        /// The セキュリティ統括責任者 who approved the cut-off.
        #[arg(long, conflicts_with = "emergency")]
        approved_by: Option<String>,
        /// Cut off without prior approval because it is urgent (承認を得ずに切り離し).
        #[arg(long)]
        emergency: bool,
        /// failure (障害) or misconduct (不正行為).
        #[arg(long)]
        category: Option<String>,
        /// Threat level 1-3 (脅威度).
        #[arg(long)]
        level: Option<u8>,
        /// Show what would be cut and what stays reachable; change nothing.
        #[arg(long)]
        plan: bool,
        /// Run the whole procedure (records, notices marked as a drill) without cutting.
        #[arg(long)]
        drill: bool,
    },
    /// Lift an isolation (only an explicit restore does, R13).
    Restore {
        target: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        approved_by: String,
    },
    /// An external system (IDS, SIEM) reports an incident: isolate TARGET at once.
    Trigger {
        target: String,
        /// The reporting system.
        #[arg(long)]
        source: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        level: Option<u8>,
    },
    /// Planned stops: prior notice now, stop at --start, restore at --end (R16).
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Notices to the prefecture, J-LIS and the officers.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// The operation history (操作履歴).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
    /// The traffic history (通信履歴): every flow, allowed or denied, kept 7 years (R6–R9).
    History {
        /// The history directory (default: the running daemon's, else
        /// /var/lib/sekisho/history). Read directly: works while the daemon is stopped.
        #[arg(long, global = true, env = "SEKISHO_HISTORY_DIR")]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: HistoryCommand,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
struct FilterArgs {
    /// From this time: RFC 3339 (2026-11-23T09:00:00+09:00) or a date (2026-11-23, JST).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time (a date means the end of that day, JST).
    #[arg(long)]
    until: Option<String>,
    /// Flows from or to this asset.
    #[arg(long)]
    asset: Option<String>,
    /// Flows from or to assets of this role.
    #[arg(long)]
    role: Option<String>,
    /// Flows from or to this peer.
    #[arg(long)]
    peer: Option<String>,
    /// Flows from or to this address or network (192.0.2.10, 2001:db8::/64).
    #[arg(long)]
    addr: Option<String>,
    /// Flows with this source or destination port.
    #[arg(long)]
    port: Option<u16>,
    /// allow, deny or monitor.
    #[arg(long)]
    verdict: Option<String>,
    /// start, end or gap.
    #[arg(long)]
    event: Option<String>,
    /// At most N records.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum QueryFormat {
    Table,
    Jsonl,
    Csv,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ExportFormat {
    Parquet,
    Jsonl,
    Csv,
}

#[derive(Subcommand, Debug)]
enum HistoryCommand {
    /// Records matching the filters, oldest first.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// Output: a table, JSON lines or CSV (`-o json` means JSON lines).
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
        /// Print how many segments and row groups were read (to stderr).
        #[arg(long)]
        explain: bool,
        /// Print only how many records match (reads only the columns the filters name).
        #[arg(long)]
        count: bool,
    },
    /// Write the records of a time range to a file for other tools (DuckDB, pandas, Excel).
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Check every sealed segment against the SHA-256 chained manifest; names the first
    /// changed, missing, reordered or truncated one.
    Verify,
    /// Records, bytes on disk and the oldest record, by month.
    Stats,
}

#[derive(Subcommand, Debug)]
enum MaintenanceCommand {
    /// Announce a planned stop (the prior notice goes out at once).
    Schedule {
        /// RFC 3339, e.g. 2026-12-01T21:00:00+09:00.
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
        #[arg(long)]
        reason: String,
        /// What is stopped (default: all).
        #[arg(long)]
        target: Option<String>,
    },
    /// Planned stops, past and future.
    List,
    /// Withdraw a planned stop before it begins (a cancellation notice goes out).
    Cancel { id: i64 },
}

#[derive(Subcommand, Debug)]
enum NotifyCommand {
    /// What waits to be delivered, and why; recent deliveries.
    Outbox,
    /// Send a test notice to one recipient.
    Test { recipient: String },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Show entries, oldest first.
    Show {
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only the newest N entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Check the hash chain; names the first changed, removed or reordered entry.
    Verify,
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
    /// Replay the recorded flows against FILE: what it would have allowed or denied
    /// differently.
    Whatif {
        file: PathBuf,
        /// From this time (RFC 3339 or a date, JST).
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// The history directory (default: the running daemon's).
        #[arg(long, env = "SEKISHO_HISTORY_DIR")]
        dir: Option<PathBuf>,
    },
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

/// Packaging only, not part of the operators' interface: `sekishoctl --generate DIR` writes
/// the man pages and the bash, zsh and fish completions generated from [`Options`]
/// (`cargo xtask package` runs it). A parser of its own rather than a hidden flag of
/// `Options`: there the subcommand is required, and completion scripts list hidden flags too.
#[derive(Parser, Debug)]
#[command(name = "sekishoctl")]
struct Generate {
    /// Where to write `sekishoctl*.8`, `sekishoctl.bash`, `_sekishoctl`, `sekishoctl.fish`.
    #[arg(long = "generate", value_name = "DIR")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    if let Ok(Generate { dir }) = Generate::try_parse() {
        return match generate(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sekishoctl: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekishoctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one section-8 man page per command (`sekishoctl.8`, `sekishoctl-isolate.8`,
/// `sekishoctl-maintenance-schedule.8`, …) and the completion scripts into `dir`.
fn generate(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;
    use clap_complete::Shell;

    fn man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            man_pages(sub, dir)?;
        }
        let page = clap_mangen::Man::new(cmd.clone())
            .section("8")
            .generate_to(dir)
            .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
        println!("{}", page.display());
        Ok(())
    }

    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Built, so that subcommands know their full names (`sekishoctl-isolate`); without the
    // `help` subcommand, which needs no page of its own.
    let mut cmd = Options::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, dir)?;
    let mut cmd = Options::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let script = clap_complete::generate_to(shell, &mut cmd, "sekishoctl", dir)
            .with_context(|| format!("cannot write the {shell} completions"))?;
        println!("{}", script.display());
    }
    Ok(())
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
                || {
                    format!(
                        "{} {generation} {}",
                        l("generation", "世代"),
                        l(
                            "confirmed; it stays in force",
                            "を確定しました。このまま有効です"
                        )
                    )
                },
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
                        None => format!(
                            "{} {generation}",
                            l(
                                "policy reloaded: in force is generation",
                                "ポリシーを再読込しました。有効な世代:"
                            )
                        ),
                    },
                ),
                other => unexpected(other),
            }
        }
        Command::Isolate {
            target,
            reason,
            approved_by,
            emergency,
            category,
            level,
            plan,
            drill,
        } => {
            let request = Request::Isolate(IsolateRequest {
                target: target.clone(),
                reason: reason.clone().unwrap_or_default(),
                approved_by: approved_by.clone(),
                emergency: *emergency,
                category: category.clone(),
                level: *level,
                drill: *drill,
                plan: *plan,
            });
            let ja = japanese();
            match call(options, &request)? {
                Response::Isolated {
                    target,
                    generation,
                    took_us,
                    reference,
                    drill,
                } => emit(
                    options,
                    serde_json::json!({"target": target, "generation": generation, "took_us": took_us, "reference": reference, "drill": drill}),
                    || {
                        let ms = took_us as f64 / 1000.0;
                        match (drill, ja) {
                            (true, true) => format!(
                                "[訓練] {target} の切り離し手順を記録しました(通信は遮断していません)。参照番号 {reference}"
                            ),
                            (true, false) => format!(
                                "[DRILL] isolation of {target} recorded; no traffic was cut. Reference {reference}"
                            ),
                            (false, true) => format!(
                                "{target} を切り離しました: {ms:.1} ms で遮断が有効になりました(世代 {generation}、確立済みの通信も遮断)。参照番号 {reference}\n復旧は sekishoctl restore {target} --reason ... --approved-by ... でのみ行えます。"
                            ),
                            (false, false) => format!(
                                "{target} isolated: in force in the kernel after {ms:.1} ms (generation {generation}, established connections included). Reference {reference}\nIt stays cut off until `sekishoctl restore {target} --reason ... --approved-by ...`."
                            ),
                        }
                    },
                ),
                Response::IsolationPlan(plan) => {
                    emit(options, serde_json::to_value(&plan)?, || {
                        let (h1, h2, h3, h4) = if ja {
                            (
                                "切り離し計画(まだ何も変更していません)",
                                "遮断される対象",
                                "止まる通信",
                                "通信可能なまま残るもの",
                            )
                        } else {
                            (
                                "Isolation plan (nothing has changed yet)",
                                "Cut off",
                                "Flows that stop",
                                "Stays reachable",
                            )
                        };
                        let mut out = format!("{h1}: {}\n\n{h2}:", plan.target);
                        for c in &plan.cut {
                            out.push_str(&format!("\n  - {c}"));
                        }
                        out.push_str(&format!("\n\n{h3}:"));
                        for c in &plan.flows_stopped {
                            out.push_str(&format!("\n  - {c}"));
                        }
                        out.push_str(&format!("\n\n{h4}:"));
                        for c in &plan.stays_open {
                            out.push_str(&format!("\n  - {c}"));
                        }
                        out
                    })
                }
                other => unexpected(other),
            }
        }
        Command::Restore {
            target,
            reason,
            approved_by,
        } => {
            let request = Request::Restore {
                target: target.clone(),
                reason: reason.clone(),
                approved_by: approved_by.clone(),
            };
            match call(options, &request)? {
                Response::Restored {
                    target,
                    generation,
                    reference,
                } => emit(
                    options,
                    serde_json::json!({"target": target, "generation": generation, "reference": reference}),
                    || {
                        if japanese() {
                            format!(
                                "{target} を復旧しました(世代 {generation})。新しい通信はポリシーに従って許可されます。参照番号 {reference}"
                            )
                        } else {
                            format!(
                                "{target} restored (generation {generation}); new connections follow the policy again. Reference {reference}"
                            )
                        }
                    },
                ),
                other => unexpected(other),
            }
        }
        Command::Trigger {
            target,
            source,
            reason,
            category,
            level,
        } => {
            let request = Request::Trigger {
                target: target.clone(),
                source: source.clone(),
                reason: reason.clone(),
                category: category.clone(),
                level: *level,
            };
            match call(options, &request)? {
                Response::Isolated {
                    target,
                    generation,
                    took_us,
                    reference,
                    ..
                } => emit(
                    options,
                    serde_json::json!({"target": target, "generation": generation, "took_us": took_us, "reference": reference}),
                    || {
                        format!(
                            "{target} isolated on the report of {source} ({:.1} ms, generation {generation}). Reference {reference}",
                            took_us as f64 / 1000.0
                        )
                    },
                ),
                other => unexpected(other),
            }
        }
        Command::Maintenance { command } => {
            let request = match command {
                MaintenanceCommand::Schedule {
                    start,
                    end,
                    reason,
                    target,
                } => Request::MaintenanceSchedule {
                    start: start.clone(),
                    end: end.clone(),
                    reason: reason.clone(),
                    target: target.clone(),
                },
                MaintenanceCommand::List => Request::MaintenanceList,
                MaintenanceCommand::Cancel { id } => Request::MaintenanceCancel { id: *id },
            };
            match call(options, &request)? {
                Response::Maintenance { window, notices } => emit(
                    options,
                    serde_json::json!({"window": window, "notices": notices}),
                    || {
                        format!(
                            "maintenance window {} ({}): {} → {}, {} — {}; {notices} notices queued",
                            window.id,
                            window.state.as_str(),
                            window.start,
                            window.end,
                            window.target,
                            window.reason
                        )
                    },
                ),
                Response::MaintenanceList { windows } => {
                    emit(options, serde_json::to_value(&windows)?, || {
                        let mut out = format!(
                            "{:<4} {:<10} {:<31} {:<31} {:<16} REASON",
                            "ID", "STATE", "START", "END", "TARGET"
                        );
                        for w in &windows {
                            out.push_str(&format!(
                                "\n{:<4} {:<10} {:<31} {:<31} {:<16} {}",
                                w.id,
                                w.state.as_str(),
                                w.start,
                                w.end,
                                w.target.to_string(),
                                w.reason
                            ));
                        }
                        out
                    })
                }
                other => unexpected(other),
            }
        }
        Command::Notify {
            command: NotifyCommand::Outbox,
        } => match call(options, &Request::NotifyOutbox)? {
            Response::Outbox { pending, recent } => emit(
                options,
                serde_json::json!({"pending": pending, "recent": recent}),
                || {
                    let mut out = format!(
                        "{} {}",
                        pending.len(),
                        l("notices waiting", "件の通知が送信待ちです")
                    );
                    for e in &pending {
                        out.push_str(&format!(
                            "\n  {} {} → {} ({}): {} attempts, next {}, last error: {}",
                            e.notice.event,
                            e.notice.recipient,
                            e.notice.channel.destination(),
                            e.notice.key,
                            e.attempts,
                            e.next_attempt_at,
                            e.last_error.as_deref().unwrap_or("-")
                        ));
                    }
                    out.push_str("\nrecent:");
                    for e in &recent {
                        out.push_str(&format!(
                            "\n  {} {} → {}: {}",
                            e.notice.event,
                            e.notice.recipient,
                            e.notice.channel.destination(),
                            e.delivered_at
                                .as_deref()
                                .map_or("pending".to_owned(), |t| format!("delivered {t}"))
                        ));
                    }
                    out
                },
            ),
            other => unexpected(other),
        },
        Command::Notify {
            command: NotifyCommand::Test { recipient },
        } => match call(
            options,
            &Request::NotifyTest {
                recipient: recipient.clone(),
            },
        )? {
            Response::NotifyQueued { notices } => {
                emit(options, serde_json::json!({"notices": notices}), || {
                    format!(
                        "{notices} test notices queued for {recipient}; see `sekishoctl notify outbox`"
                    )
                })
            }
            other => unexpected(other),
        },
        Command::Audit {
            command: AuditCommand::Show { since, limit },
        } => match call(
            options,
            &Request::AuditShow {
                since: since.clone(),
                limit: *limit,
            },
        )? {
            Response::Audit { entries } => emit(options, serde_json::to_value(&entries)?, || {
                let mut out = format!(
                    "{:<6} {:<31} {:<12} {:<15} {:<22} {:<10} REASON",
                    "SEQ", "TIME", "OPERATOR", "ACTION", "TARGET", "APPROVAL"
                );
                for e in &entries {
                    let approval = match (&e.entry.approver, e.entry.emergency) {
                        (Some(a), _) => a.clone(),
                        (None, true) => "emergency".to_owned(),
                        (None, false) => "-".to_owned(),
                    };
                    out.push_str(&format!(
                        "\n{:<6} {:<31} {:<12} {:<15} {:<22} {:<10} {}{}",
                        e.seq,
                        e.time,
                        e.entry.operator,
                        e.entry.action,
                        e.entry.target.as_deref().unwrap_or("-"),
                        approval,
                        e.entry.reason.as_deref().unwrap_or(""),
                        if e.entry.outcome == "ok" {
                            String::new()
                        } else {
                            format!(" [{}]", e.entry.outcome)
                        }
                    ));
                }
                out
            }),
            other => unexpected(other),
        },
        Command::Audit {
            command: AuditCommand::Verify,
        } => match call(options, &Request::AuditVerify)? {
            Response::AuditVerified {
                verification: result,
            } => {
                let broken = matches!(result, Verification::Broken { .. });
                emit(options, serde_json::to_value(&result)?, || match &result {
                    Verification::Intact { entries, head } => format!(
                        "{}: {entries} {}, head {}",
                        l("operation history intact", "操作履歴は改ざんされていません"),
                        l("entries", "件"),
                        head.as_deref().unwrap_or("-")
                    ),
                    Verification::Broken { seq, problem } => {
                        format!(
                            "{} {seq}: {problem}",
                            l(
                                "OPERATION HISTORY BROKEN at entry",
                                "操作履歴の改ざん・欠落を検出しました。最初の不正な記録:"
                            )
                        )
                    }
                })?;
                if broken {
                    anyhow::bail!("the operation history failed verification");
                }
                Ok(())
            }
            other => unexpected(other),
        },
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
            command:
                PolicyCommand::Whatif {
                    file,
                    since,
                    until,
                    dir,
                },
        } => {
            let candidate = Config::load(file)?;
            let policy = sekisho::policy::CompiledPolicy::compile(&candidate);
            let root = history_root(options, dir.as_deref());
            let since_us = parse_time(since, false)?;
            let until_us = until.as_deref().map(|u| parse_time(u, true)).transpose()?;
            let report = whatif::replay(&root, &policy, Some(since_us), until_us)?;
            emit(options, serde_json::to_value(&report)?, || {
                whatif_table(&report, file)
            })
        }
        Command::History { dir, command } => {
            let root = history_root(options, dir.as_deref());
            history_command(options, &root, command)
        }
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

/// `en`, or `ja` when the operator's locale is Japanese.
fn l<'a>(en: &'a str, ja: &'a str) -> &'a str {
    if japanese() { ja } else { en }
}

/// Messages in Japanese when the operator's locale is Japanese.
fn japanese() -> bool {
    ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .is_some_and(|l| l.starts_with("ja_JP") || l.starts_with("ja"))
}

fn print_status(s: &StatusReport) {
    println!("sekishod {} (pid {})", s.version, s.pid);
    println!("  {:<11} {}", l("config", "設定"), s.config.display());
    println!("  {:<11} {}", l("mode", "動作モード"), s.mode);
    println!("  {:<11} {}", l("generation", "ポリシー世代"), s.generation);
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
    println!(
        "  notices     {} waiting for delivery",
        s.notifications_pending
    );
    match &s.history {
        Some(h) => println!(
            "  history     {} records since start, {} events lost, {} unrecorded, {:.1} MB on disk{}",
            h.records,
            h.events_lost,
            h.unrecorded,
            h.disk_bytes as f64 / 1e6,
            if h.degraded {
                format!(
                    " — NOT RECORDING: {}",
                    h.last_error.as_deref().unwrap_or("?")
                )
            } else {
                String::new()
            }
        ),
        None => println!("  history     NOT RECORDING (enforcement is not affected)"),
    }
    for w in &s.maintenance {
        println!(
            "  MAINTENANCE {} {} → {} ({}): {}",
            w.state.as_str(),
            w.start,
            w.end,
            w.target,
            w.reason
        );
    }
    if s.isolations.is_empty() {
        println!(
            "  {:<11} {}",
            l("isolations", "切り離し"),
            l("none", "なし")
        );
    }
    for i in &s.isolations {
        let approval = match (&i.approved_by, i.emergency) {
            (Some(a), _) => format!("approved by {a}"),
            (None, _) => "EMERGENCY (no prior approval)".to_owned(),
        };
        println!(
            "  ISOLATED    {} since {} by {} ({approval}): {}",
            i.target, i.since, i.operator, i.reason
        );
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

/// The history directory: `--dir`, else the running daemon's, else the default.
fn history_root(options: &Options, dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_owned();
    }
    if let Ok(Response::Status(s)) = control::call(&options.socket, &Request::Status) {
        if let Some(d) = s.history_dir {
            return d;
        }
    }
    sekisho::history::service::root(Path::new(paths::STATE_DIR))
}

/// Japan Standard Time, in which operators give dates.
fn jst() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::fixed(jiff::tz::offset(9))
}

/// RFC 3339, a date (its start, or with `end_of_day` its last microsecond, JST) or a date
/// and time without offset (JST) → microseconds since the epoch.
fn parse_time(s: &str, end_of_day: bool) -> anyhow::Result<i64> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let start = d.to_zoned(jst())?.timestamp().as_microsecond();
        return Ok(if end_of_day {
            start + 86_400_000_000 - 1
        } else {
            start
        });
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return Ok(dt.to_zoned(jst())?.timestamp().as_microsecond());
    }
    anyhow::bail!(
        "{s:?} is not a time: use RFC 3339 (2026-11-23T09:00:00+09:00) or a date (2026-11-23, JST)"
    )
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<query::Filter> {
        let addr = self
            .addr
            .as_deref()
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| anyhow::anyhow!("--addr {a:?} is not an address or a network"))
            })
            .transpose()?;
        let verdict = self
            .verdict
            .as_deref()
            .map(|v| {
                sekisho::history::Verdict::from_name(v)
                    .ok_or_else(|| anyhow::anyhow!("--verdict {v:?}: use allow, deny or monitor"))
            })
            .transpose()?;
        let event = self
            .event
            .as_deref()
            .map(|e| {
                sekisho::history::Event::from_name(e)
                    .ok_or_else(|| anyhow::anyhow!("--event {e:?}: use start, end or gap"))
            })
            .transpose()?;
        Ok(query::Filter {
            since_us: self
                .since
                .as_deref()
                .map(|t| parse_time(t, false))
                .transpose()?,
            until_us: self
                .until
                .as_deref()
                .map(|t| parse_time(t, true))
                .transpose()?,
            asset: self.asset.clone(),
            role: self.role.clone(),
            peer: self.peer.clone(),
            addr,
            port: self.port,
            verdict,
            event,
            limit: self.limit,
        })
    }
}

/// What a query read, for `--explain`: the evidence that pruning works.
fn explain_stats(stats: &query::QueryStats) {
    eprintln!(
        "segments read {} of {}, row groups read {} of {}, records scanned {}, matched {}",
        stats.segments_read,
        stats.segments_total,
        stats.row_groups_read,
        stats.row_groups_total,
        stats.records_scanned,
        stats.records_matched
    );
}

fn history_command(options: &Options, root: &Path, command: &HistoryCommand) -> anyhow::Result<()> {
    if !root.exists() {
        anyhow::bail!(
            "{}: no traffic history here (give --dir, or run on the gateway)",
            root.display()
        );
    }
    match command {
        HistoryCommand::Query {
            filter,
            format,
            explain,
            count,
        } => {
            let filter = filter.to_filter()?;
            let format = match (format, options.output) {
                (Some(QueryFormat::Jsonl), _) | (None, Output::Json) => query::Format::Jsonl,
                (Some(QueryFormat::Csv), _) => query::Format::Csv,
                _ => query::Format::Table,
            };
            if *count {
                let stats = query::count(root, &filter)?;
                match format {
                    query::Format::Jsonl => println!(
                        "{}",
                        serde_json::json!({ "records": stats.records_matched })
                    ),
                    _ => println!("{}", stats.records_matched),
                }
                if *explain {
                    explain_stats(&stats);
                }
                return Ok(());
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut writer = query::RecordWriter::new(format, &mut out);
            writer.start()?;
            let mut failed = None;
            let stats = query::query(root, &filter, &mut |r| match writer.write(&r) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
            // A closed pipe (`| head`) ends the listing; anything else is an error.
            match failed {
                Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
            use std::io::Write;
            let _ = out.flush();
            if *explain {
                explain_stats(&stats);
            }
            Ok(())
        }
        HistoryCommand::Export {
            format,
            out,
            filter,
        } => {
            let filter = filter.to_filter()?;
            let format = match format {
                ExportFormat::Parquet => query::ExportFormat::Parquet,
                ExportFormat::Jsonl => query::ExportFormat::Jsonl,
                ExportFormat::Csv => query::ExportFormat::Csv,
            };
            let n = query::export(root, &filter, format, out)?.records_matched;
            emit(
                options,
                serde_json::json!({"records": n, "out": out}),
                || format!("{n} records written to {}", out.display()),
            )
        }
        HistoryCommand::Verify => {
            let report = manifest::verify(root);
            let ok = report.ok;
            emit(options, serde_json::to_value(&report)?, || {
                let mut s = if ok {
                    format!(
                        "ok: {} sealed segments ({} records) match the manifest; {} removed by retention; chain head seq {}",
                        report.live_segments,
                        report.records,
                        report.removed_segments,
                        report.head_seq.map_or("-".to_owned(), |n| n.to_string())
                    )
                } else {
                    format!("FAILED: {} problem(s)", report.problems.len())
                };
                for p in &report.problems {
                    s.push_str(&format!("\n  {}", p.message));
                }
                for n in &report.notes {
                    s.push_str(&format!("\n  note: {n}"));
                }
                s
            })?;
            if !ok {
                anyhow::bail!("the traffic history does not verify");
            }
            Ok(())
        }
        HistoryCommand::Stats => {
            let stats = store::stats(root)?;
            emit(options, serde_json::to_value(&stats)?, || {
                let mut s = format!(
                    "{} records, {:.1} MB on disk ({} in the unsealed log), oldest {}",
                    stats.records,
                    stats.bytes_on_disk as f64 / 1e6,
                    stats.wal_records,
                    time_jst(stats.oldest_us)
                );
                s.push_str(&format!(
                    "\n{:<8} {:>12} {:>12}",
                    "MONTH", "RECORDS", "BYTES"
                ));
                for m in &stats.by_month {
                    s.push_str(&format!(
                        "\n{:<8} {:>12} {:>12}",
                        m.month, m.records, m.bytes
                    ));
                }
                s
            })
        }
    }
}

fn time_jst(us: Option<i64>) -> String {
    us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
        .map(|t| {
            t.to_zoned(jst())
                .strftime("%Y-%m-%d %H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

fn whatif_table(r: &whatif::WhatIf, file: &Path) -> String {
    let mut s = format!(
        "{} recorded flows replayed against {} ({} left out: isolations, spoofing; {} gaps in the range)",
        r.flows,
        file.display(),
        r.skipped,
        r.gaps
    );
    if r.changes.is_empty() {
        s.push_str("\nno flow would be decided differently");
        return s;
    }
    s.push_str(&format!(
        "\n{:<12} {:>6} {:<40} {:<40} {:<10} {:<20} {}",
        "CHANGE", "FLOWS", "FROM", "TO", "PROTO/PORT", "WHY", "LAST SEEN"
    ));
    for c in &r.changes {
        let end = |ip: &std::net::IpAddr, name: &Option<String>| match name {
            Some(n) => format!("{ip} ({n})"),
            None => ip.to_string(),
        };
        let why = if c.would == "allow" {
            format!("rule #{}", c.rule_would)
        } else {
            format!("{} (was rule #{})", c.reason, c.rule_was)
        };
        s.push_str(&format!(
            "\n{:<12} {:>6} {:<40} {:<40} {:<10} {:<20} {}",
            format!("{}→{}", c.was, c.would),
            c.flows,
            end(&c.src, &c.src_name),
            end(&c.dst, &c.dst_name),
            format!("{}/{}", c.proto, c.dport),
            why,
            time_jst(Some(c.last_us))
        ));
    }
    s
}
