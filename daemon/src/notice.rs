//! What a notice says (R12, R16–R18): the subject, the Japanese-first text and the
//! structured JSON document of every notice sekisho sends, rendered for one recipient.
//! Delivery (SMTP, webhook, syslog, the outbox) lives elsewhere and only carries
//! [`Rendered`].
//!
//! The text comes from editable templates, one file per notice in `configs/templates/`
//! (a `department` variant for stop and restore, R12): see `configs/templates/README.md`.
//! The same files are compiled in as the fallback for a file that is missing. Substitution
//! is plain `{{name}}` replacement; the names a template may use are fixed per notice, and
//! an unknown one is refused at load time with its `file:line`, so a typo never reaches a
//! prefecture as a blank.
//!
//! Invariants, kept in code rather than in the editable templates:
//! - a drill's subject starts with `【訓練】` and its body with a drill banner;
//! - the reference number (the operation-history entry) ends the subject, ` [OP-…]`;
//! - a subject is one line: line breaks in values (an operator's reason) become spaces;
//! - times are Japan Standard Time, the 和暦 date beside the Western one. JST is the fixed
//!   offset +09:00 rather than `Asia/Tokyo` from the system tz database: Japan has had no
//!   daylight saving time since 1951, and a notice must not depend on tzdata being
//!   installed on the appliance.

use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

use jiff::SignedDuration;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::civil::Weekday;
use jiff::fmt::temporal::DateTimePrinter;
use jiff::tz::TimeZone;
use serde_json::json;

use crate::config::RecipientKind;
use crate::isolation::DAEMON_OPERATOR;
use crate::isolation::Isolation;
use crate::isolation::Target;
use crate::maintenance::Window;

/// Japan Standard Time. No DST since 1951, so a fixed offset is exact for every notice.
const JST: TimeZone = TimeZone::fixed(jiff::tz::offset(9));

/// Prepended to the subject of every drill notice.
pub const DRILL_PREFIX: &str = "【訓練】";

/// Opens the body of every drill notice, Japanese and English.
pub const DRILL_BANNER: &str = "【訓練】これは訓練の通知です。実際の通信の停止は行っていません。\n\
                                [DRILL] This is a drill. No traffic has actually been stopped.\n\n";

/// What a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A cut-off is in force (R12, R17): reported at once, to every recipient.
    EmergencyStop {
        isolation: Isolation,
        /// The hosts it cuts off, `"asset:cs01 (192.0.2.10, …)"`, one per entry.
        affected: Vec<String>,
    },
    /// A cut-off was lifted.
    Restore {
        isolation: Isolation,
        restored_by: String,
        reason: String,
        approved_by: String,
    },
    /// Prior notice (事前通知) of a planned stop, sent when it is scheduled (R16).
    MaintenanceNotice { window: Window },
    /// A planned stop has begun.
    MaintenanceStart { window: Window },
    /// A planned stop has ended: the recovery notice (復旧通知).
    MaintenanceEnd { window: Window },
    /// An announced planned stop was withdrawn before it began.
    MaintenanceCancel { window: Window, by: String },
    /// `sekishoctl notify test`.
    Test,
}

impl Event {
    /// The event's name in documents and logs: `"emergency_stop"`, `"restore"`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Event::EmergencyStop { .. } => "emergency_stop",
            Event::Restore { .. } => "restore",
            Event::MaintenanceNotice { .. } => "maintenance_notice",
            Event::MaintenanceStart { .. } => "maintenance_start",
            Event::MaintenanceEnd { .. } => "maintenance_end",
            Event::MaintenanceCancel { .. } => "maintenance_cancel",
            Event::Test => "test",
        }
    }
}

/// Who sends a notice, to whom, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// `[notify] municipality`.
    pub municipality: String,
    /// `[notify] sender`.
    pub sender: String,
    /// The system the segment serves: `"住基ネット"`.
    pub system: String,
    pub recipient_kind: RecipientKind,
    pub recipient_name: String,
    /// The operation-history entry (`OP-000042-1a2b3c4d`); for stop and restore, an
    /// isolation's own `reference` is used when this is `None`.
    pub reference: Option<String>,
    /// When the notice is sent; for a restore, the time of recovery.
    pub now: Timestamp,
    /// A drill: always marked as one. Stop and restore are also drills when the isolation is.
    pub drill: bool,
}

/// One notice for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// Japanese first, English below; ends with a newline.
    pub body: String,
    /// The same content as JSON, for webhooks and the SIEM.
    pub document: serde_json::Value,
}

/// Why templates could not be loaded or a notice rendered.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("cannot read notice template {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read notice template directory {}", .path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: no \"Subject: …\" line (expected one after the leading # comments)")]
    MissingSubject { file: String },
    #[error("{file}:{line}: the subject is empty")]
    EmptySubject { file: String, line: usize },
    #[error(
        "{file}:{line}: unknown placeholder {{{{{name}}}}} in the {event} template \
         (known: {known})"
    )]
    UnknownPlaceholder {
        file: String,
        line: usize,
        name: String,
        event: &'static str,
        known: String,
    },
    #[error("{file}:{line}: \"{{{{\" without a closing \"}}}}\"")]
    UnclosedPlaceholder { file: String, line: usize },
    #[error("{field} {text:?} of the {event} notice is not an RFC 3339 instant")]
    InvalidTime {
        event: &'static str,
        field: &'static str,
        text: String,
        #[source]
        source: jiff::Error,
    },
    #[error("no value for {{{{{name}}}}} in the {event} notice")]
    MissingValue {
        event: &'static str,
        name: &'static str,
    },
}

/// Placeholders of every template.
const COMMON: &[&str] = &[
    "municipality",
    "sender",
    "system",
    "recipient",
    "recipient_kind",
    "recipient_kind_en",
    "reference",
    "sent_at",
    "sent_at_en",
];

/// Placeholders of stop and restore.
const ISOLATION: &[&str] = &[
    "target",
    "target_ja",
    "target_en",
    "category",
    "category_en",
    "level",
    "reason",
    "approval",
    "approval_en",
    "operator",
    "operator_en",
    "source",
    "source_en",
    "occurred_at",
    "occurred_at_en",
    "stopped_at",
    "stopped_at_en",
];

const STOP: &[&str] = &["affected"];

const RESTORE: &[&str] = &[
    "restored_at",
    "restored_at_en",
    "restored_by",
    "restore_reason",
    "restore_approver",
    "stopped_for",
    "stopped_for_en",
];

/// Placeholders of the maintenance notices.
const WINDOW: &[&str] = &[
    "window_id",
    "target",
    "target_ja",
    "target_en",
    "reason",
    "operator",
    "start",
    "start_en",
    "end",
    "end_en",
    "period",
    "period_en",
    "duration",
    "duration_en",
];

const CANCEL: &[&str] = &["cancelled_by"];

/// One template file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EmergencyStop,
    EmergencyStopDepartment,
    Restore,
    RestoreDepartment,
    MaintenanceNotice,
    MaintenanceStart,
    MaintenanceEnd,
    MaintenanceCancel,
    Test,
}

macro_rules! builtin {
    ($file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/templates/",
            $file
        ))
    };
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::EmergencyStop,
        Kind::EmergencyStopDepartment,
        Kind::Restore,
        Kind::RestoreDepartment,
        Kind::MaintenanceNotice,
        Kind::MaintenanceStart,
        Kind::MaintenanceEnd,
        Kind::MaintenanceCancel,
        Kind::Test,
    ];

    fn of(event: &Event, recipient: RecipientKind) -> Kind {
        let department = recipient == RecipientKind::Department;
        match event {
            Event::EmergencyStop { .. } if department => Kind::EmergencyStopDepartment,
            Event::EmergencyStop { .. } => Kind::EmergencyStop,
            Event::Restore { .. } if department => Kind::RestoreDepartment,
            Event::Restore { .. } => Kind::Restore,
            Event::MaintenanceNotice { .. } => Kind::MaintenanceNotice,
            Event::MaintenanceStart { .. } => Kind::MaintenanceStart,
            Event::MaintenanceEnd { .. } => Kind::MaintenanceEnd,
            Event::MaintenanceCancel { .. } => Kind::MaintenanceCancel,
            Event::Test => Kind::Test,
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kind::EmergencyStop => "emergency_stop.txt",
            Kind::EmergencyStopDepartment => "emergency_stop.department.txt",
            Kind::Restore => "restore.txt",
            Kind::RestoreDepartment => "restore.department.txt",
            Kind::MaintenanceNotice => "maintenance_notice.txt",
            Kind::MaintenanceStart => "maintenance_start.txt",
            Kind::MaintenanceEnd => "maintenance_end.txt",
            Kind::MaintenanceCancel => "maintenance_cancel.txt",
            Kind::Test => "test.txt",
        }
    }

    fn builtin(self) -> &'static str {
        match self {
            Kind::EmergencyStop => builtin!("emergency_stop.txt"),
            Kind::EmergencyStopDepartment => builtin!("emergency_stop.department.txt"),
            Kind::Restore => builtin!("restore.txt"),
            Kind::RestoreDepartment => builtin!("restore.department.txt"),
            Kind::MaintenanceNotice => builtin!("maintenance_notice.txt"),
            Kind::MaintenanceStart => builtin!("maintenance_start.txt"),
            Kind::MaintenanceEnd => builtin!("maintenance_end.txt"),
            Kind::MaintenanceCancel => builtin!("maintenance_cancel.txt"),
            Kind::Test => builtin!("test.txt"),
        }
    }

    /// The event name used in error messages.
    fn event(self) -> &'static str {
        match self {
            Kind::EmergencyStop | Kind::EmergencyStopDepartment => "emergency_stop",
            Kind::Restore | Kind::RestoreDepartment => "restore",
            Kind::MaintenanceNotice => "maintenance_notice",
            Kind::MaintenanceStart => "maintenance_start",
            Kind::MaintenanceEnd => "maintenance_end",
            Kind::MaintenanceCancel => "maintenance_cancel",
            Kind::Test => "test",
        }
    }

    /// The placeholders its template may use.
    fn placeholders(self) -> Vec<&'static str> {
        let specific: &[&[&str]] = match self {
            Kind::EmergencyStop | Kind::EmergencyStopDepartment => &[ISOLATION, STOP],
            Kind::Restore | Kind::RestoreDepartment => &[ISOLATION, RESTORE],
            Kind::MaintenanceNotice | Kind::MaintenanceStart | Kind::MaintenanceEnd => &[WINDOW],
            Kind::MaintenanceCancel => &[WINDOW, CANCEL],
            Kind::Test => &[],
        };
        let mut names = COMMON.to_vec();
        for group in specific {
            names.extend_from_slice(group);
        }
        names
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(&'static str),
}

/// One parsed template.
#[derive(Debug, Clone)]
struct Template {
    subject: Vec<Piece>,
    body: Vec<Piece>,
    /// The file it was read from; `None` for the built-in one.
    path: Option<PathBuf>,
}

/// The templates of every notice.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Indexed like [`Kind::ALL`].
    templates: Vec<Template>,
}

impl Templates {
    /// The templates compiled into sekisho (the files of `configs/templates/`).
    pub fn builtin() -> Templates {
        let templates = Kind::ALL
            .into_iter()
            .map(|kind| {
                let name = format!("(built in) {}", kind.file());
                parse(kind, &name, kind.builtin())
                    .unwrap_or_else(|err| panic!("built-in notice template: {err}"))
            })
            .collect();
        Templates { templates }
    }

    /// Reads the templates of `dir`; a file that is not there falls back to the built-in
    /// one, and so does every file when `dir` itself is missing. A `.txt` file sekisho does
    /// not know is logged, as it is probably a misnamed override.
    pub fn load(dir: &Path) -> Result<Templates, NoticeError> {
        let mut templates = Vec::with_capacity(Kind::ALL.len());
        for kind in Kind::ALL {
            let path = dir.join(kind.file());
            let template = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let mut template = parse(kind, &path.display().to_string(), &text)?;
                    template.path = Some(path);
                    template
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    parse(kind, kind.file(), kind.builtin())
                        .unwrap_or_else(|err| panic!("built-in notice template: {err}"))
                }
                Err(source) => return Err(NoticeError::Read { path, source }),
            };
            templates.push(template);
        }
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.ends_with(".txt") && !Kind::ALL.iter().any(|k| k.file() == name) {
                        tracing::warn!(
                            file = %entry.path().display(),
                            "unknown notice template ignored (known: {})",
                            Kind::ALL.map(Kind::file).join(", ")
                        );
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    dir = %dir.display(),
                    "notice template directory missing; using the built-in templates"
                );
            }
            Err(source) => {
                return Err(NoticeError::ReadDir {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
        Ok(Templates { templates })
    }

    /// The template files read from disk, i.e. the ones that override a built-in one.
    pub fn overrides(&self) -> Vec<&Path> {
        self.templates
            .iter()
            .filter_map(|t| t.path.as_deref())
            .collect()
    }

    /// The notice of `event` for the recipient of `ctx`.
    pub fn render(&self, event: &Event, ctx: &Context) -> Result<Rendered, NoticeError> {
        let kind = Kind::of(event, ctx.recipient_kind);
        let index = Kind::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("every kind is in Kind::ALL");
        let template = &self.templates[index];
        let facts = Facts::new(event, ctx)?;

        let mut subject = String::new();
        if facts.drill {
            subject.push_str(DRILL_PREFIX);
        }
        let filled = fill(kind, &template.subject, &facts.values)?;
        subject.push_str(&one_line(&filled));
        if let Some(reference) = &facts.reference {
            write!(subject, " [{}]", one_line(reference)).expect("writing to a String");
        }

        let mut body = String::new();
        if facts.drill {
            body.push_str(DRILL_BANNER);
        }
        body.push_str(&fill(kind, &template.body, &facts.values)?);
        if !body.ends_with('\n') {
            body.push('\n');
        }

        let mut document = facts.document;
        document["subject"] = json!(subject);
        Ok(Rendered {
            subject,
            body,
            document,
        })
    }
}

/// Parses one template: leading `#` comment lines, `Subject: …`, a blank line, the body.
fn parse(kind: Kind, file: &str, text: &str) -> Result<Template, NoticeError> {
    let text = text.replace("\r\n", "\n");
    let known = kind.placeholders();
    let mut lines = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    let (subject_line, subject_text) = loop {
        let Some((number, line)) = lines.next() else {
            return Err(NoticeError::MissingSubject {
                file: file.to_owned(),
            });
        };
        let trimmed = line.trim_end_matches('\n');
        if trimmed.starts_with('#') || trimmed.trim().is_empty() {
            continue;
        }
        let rest = ["Subject:", "件名:", "件名："]
            .iter()
            .find_map(|prefix| trimmed.strip_prefix(prefix));
        match rest {
            Some(rest) => break (number, rest.trim()),
            None => {
                return Err(NoticeError::MissingSubject {
                    file: file.to_owned(),
                });
            }
        }
    };
    if subject_text.is_empty() {
        return Err(NoticeError::EmptySubject {
            file: file.to_owned(),
            line: subject_line,
        });
    }
    let subject = pieces(kind, &known, file, subject_line, subject_text)?;
    let mut body = Vec::new();
    let mut started = false;
    for (number, line) in lines {
        if !started && line.trim().is_empty() {
            continue;
        }
        started = true;
        for piece in pieces(kind, &known, file, number, line)? {
            match (body.last_mut(), piece) {
                (Some(Piece::Text(text)), Piece::Text(more)) => text.push_str(&more),
                (_, piece) => body.push(piece),
            }
        }
    }
    Ok(Template {
        subject,
        body,
        path: None,
    })
}

/// Splits one line into text and `{{placeholders}}`, checking each name against `known`.
fn pieces(
    kind: Kind,
    known: &[&'static str],
    file: &str,
    line: usize,
    mut text: &str,
) -> Result<Vec<Piece>, NoticeError> {
    let mut pieces = Vec::new();
    while let Some(open) = text.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(text[..open].to_owned()));
        }
        let rest = &text[open + 2..];
        let close = rest.find("}}").ok_or(NoticeError::UnclosedPlaceholder {
            file: file.to_owned(),
            line,
        })?;
        let name = rest[..close].trim();
        let field =
            known
                .iter()
                .find(|&&k| k == name)
                .ok_or_else(|| NoticeError::UnknownPlaceholder {
                    file: file.to_owned(),
                    line,
                    name: name.to_owned(),
                    event: kind.event(),
                    known: known.join(", "),
                })?;
        pieces.push(Piece::Field(field));
        text = &rest[close + 2..];
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_owned()));
    }
    Ok(pieces)
}

fn fill(
    kind: Kind,
    pieces: &[Piece],
    values: &[(&'static str, String)],
) -> Result<String, NoticeError> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field(name) => {
                let value = values
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v)
                    .ok_or(NoticeError::MissingValue {
                        event: kind.event(),
                        name,
                    })?;
                out.push_str(value);
            }
        }
    }
    Ok(out)
}

/// Line breaks (and other control characters) as spaces: a subject is one header line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Everything a notice says, as placeholder values and as the JSON document.
struct Facts {
    values: Vec<(&'static str, String)>,
    document: serde_json::Value,
    drill: bool,
    reference: Option<String>,
}

impl Facts {
    fn new(event: &Event, ctx: &Context) -> Result<Facts, NoticeError> {
        let name = event.name();
        let time = |field: &'static str, text: &str| -> Result<Timestamp, NoticeError> {
            text.parse().map_err(|source| NoticeError::InvalidTime {
                event: name,
                field,
                text: text.to_owned(),
                source,
            })
        };
        let isolation = match event {
            Event::EmergencyStop { isolation, .. } | Event::Restore { isolation, .. } => {
                Some(isolation)
            }
            _ => None,
        };
        let drill = ctx.drill || isolation.is_some_and(|i| i.drill);
        let reference = ctx
            .reference
            .clone()
            .or_else(|| isolation.and_then(|i| i.reference.clone()));

        let mut values: Vec<(&'static str, String)> = vec![
            ("municipality", ctx.municipality.clone()),
            ("sender", ctx.sender.clone()),
            ("system", ctx.system.clone()),
            ("recipient", ctx.recipient_name.clone()),
            (
                "recipient_kind",
                recipient_kind_ja(ctx.recipient_kind).to_owned(),
            ),
            (
                "recipient_kind_en",
                recipient_kind_en(ctx.recipient_kind).to_owned(),
            ),
            (
                "reference",
                reference.clone().unwrap_or_else(|| "-".to_owned()),
            ),
            ("sent_at", jst(ctx.now)),
            ("sent_at_en", jst_en(ctx.now)),
        ];
        let mut document = json!({
            "schema": "sekisho.notice/1",
            "event": name,
            "drill": drill,
            "municipality": ctx.municipality,
            "sender": ctx.sender,
            "system": ctx.system,
            "recipient": { "name": ctx.recipient_name, "kind": ctx.recipient_kind.as_str() },
            "reference": reference,
            "sent_at": rfc3339(ctx.now),
        });

        if let Some(isolation) = isolation {
            let since = time("since", &isolation.since)?;
            let (approval, approval_en) = match &isolation.approved_by {
                Some(approver) if !isolation.emergency => (
                    format!("承認済み (承認者: {approver})"),
                    format!("approved by {approver}"),
                ),
                // Why there was no approval: an automatic trigger cuts off on detection; a
                // manual emergency gives its reason.
                _ if isolation.operator == DAEMON_OPERATOR => (
                    "承認を得ずに切り離し(緊急) 理由: 自動検知による即時切断".to_owned(),
                    "cut off without prior approval (emergency); reason: automatic cut-off on \
                     detection"
                        .to_owned(),
                ),
                _ => (
                    format!("承認を得ずに切り離し(緊急) 理由: {}", isolation.reason),
                    format!(
                        "cut off without prior approval (emergency); reason: {}",
                        isolation.reason
                    ),
                ),
            };
            let (operator, operator_en) = if isolation.operator == DAEMON_OPERATOR {
                (
                    format!("{DAEMON_OPERATOR} (自動切断)"),
                    format!("{DAEMON_OPERATOR} (automatic)"),
                )
            } else {
                (isolation.operator.clone(), isolation.operator.clone())
            };
            let (source, source_en) = match &isolation.source {
                Some(source) => (source.clone(), source.clone()),
                None => (
                    "運用者による手動操作".to_owned(),
                    "manual, by an operator".to_owned(),
                ),
            };
            values.extend([
                ("target", isolation.target.to_string()),
                ("target_ja", target_ja(&isolation.target)),
                ("target_en", target_en(&isolation.target)),
                ("category", isolation.category.ja().to_owned()),
                ("category_en", category_en(isolation.category).to_owned()),
                ("level", isolation.level.to_string()),
                ("reason", isolation.reason.clone()),
                ("approval", approval),
                ("approval_en", approval_en),
                ("operator", operator),
                ("operator_en", operator_en),
                ("source", source),
                ("source_en", source_en),
                // The isolation records one instant: detection and cut-off coincide for
                // automatic triggers, and a manual one is recorded when it is done.
                ("occurred_at", jst(since)),
                ("occurred_at_en", jst_en(since)),
                ("stopped_at", jst(since)),
                ("stopped_at_en", jst_en(since)),
            ]);
            let fields = json!({
                "target": isolation.target.to_string(),
                "category": isolation.category.as_str(),
                "category_ja": isolation.category.ja(),
                "level": isolation.level,
                "reason": isolation.reason,
                "approved_by": isolation.approved_by,
                "emergency": isolation.emergency,
                "operator": isolation.operator,
                "source": isolation.source,
                "occurred_at": rfc3339(since),
                "stopped_at": rfc3339(since),
            });
            merge(&mut document, fields);

            match event {
                Event::EmergencyStop { affected, .. } => {
                    values.push(("affected", affected_list(affected)));
                    document["affected"] = json!(affected);
                }
                Event::Restore {
                    restored_by,
                    reason,
                    approved_by,
                    ..
                } => {
                    let stopped_for = ctx.now.duration_since(since);
                    values.extend([
                        ("restored_at", jst(ctx.now)),
                        ("restored_at_en", jst_en(ctx.now)),
                        ("restored_by", restored_by.clone()),
                        ("restore_reason", reason.clone()),
                        ("restore_approver", approved_by.clone()),
                        ("stopped_for", duration_ja(stopped_for)),
                        ("stopped_for_en", duration_en(stopped_for)),
                    ]);
                    merge(
                        &mut document,
                        json!({
                            "restored_at": rfc3339(ctx.now),
                            "restored_by": restored_by,
                            "restore_reason": reason,
                            "restore_approver": approved_by,
                            "stopped_seconds": stopped_for.as_secs().max(0),
                        }),
                    );
                }
                _ => {}
            }
        }

        if let Event::MaintenanceNotice { window }
        | Event::MaintenanceStart { window }
        | Event::MaintenanceEnd { window }
        | Event::MaintenanceCancel { window, .. } = event
        {
            let start = time("start", &window.start)?;
            let end = time("end", &window.end)?;
            let length = end.duration_since(start);
            values.extend([
                ("window_id", window.id.to_string()),
                ("target", window.target.to_string()),
                ("target_ja", target_ja(&window.target)),
                ("target_en", target_en(&window.target)),
                ("reason", window.reason.clone()),
                ("operator", window.operator.clone()),
                ("start", jst(start)),
                ("start_en", jst_en(start)),
                ("end", jst(end)),
                ("end_en", jst_en(end)),
                ("period", period_ja(start, end)),
                ("period_en", period_en(start, end)),
                ("duration", duration_ja(length)),
                ("duration_en", duration_en(length)),
            ]);
            merge(
                &mut document,
                json!({
                    "window": window,
                    "target": window.target.to_string(),
                    "reason": window.reason,
                    "operator": window.operator,
                    "start": rfc3339(start),
                    "end": rfc3339(end),
                    "expected_recovery": rfc3339(end),
                }),
            );
            if let Event::MaintenanceCancel { by, .. } = event {
                values.push(("cancelled_by", by.clone()));
                document["cancelled_by"] = json!(by);
            }
        }

        Ok(Facts {
            values,
            document,
            drill,
            reference,
        })
    }
}

/// Adds the fields of the object `more` to the object `document`.
fn merge(document: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(document), serde_json::Value::Object(more)) = (document.as_object_mut(), more) {
        document.extend(more);
    }
}

/// One host a line, `- asset:cs01 (192.0.2.10)`.
fn affected_list(affected: &[String]) -> String {
    if affected.is_empty() {
        return "- (なし / none)".to_owned();
    }
    affected
        .iter()
        .map(|host| format!("- {}", one_line(host)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn recipient_kind_ja(kind: RecipientKind) -> &'static str {
    match kind {
        RecipientKind::Prefecture => "都道府県",
        RecipientKind::Jlis => "地方公共団体情報システム機構",
        RecipientKind::SecurityChief => "セキュリティ統括責任者",
        RecipientKind::IdentityManager => "本人確認情報管理責任者",
        RecipientKind::Department => "担当課",
    }
}

fn recipient_kind_en(kind: RecipientKind) -> &'static str {
    match kind {
        RecipientKind::Prefecture => "prefecture",
        RecipientKind::Jlis => "J-LIS",
        RecipientKind::SecurityChief => "chief security officer",
        RecipientKind::IdentityManager => "identity information manager",
        RecipientKind::Department => "department",
    }
}

fn category_en(category: crate::isolation::Category) -> &'static str {
    match category {
        crate::isolation::Category::Failure => "failure",
        crate::isolation::Category::Misconduct => "misconduct (unauthorised access, malware)",
    }
}

fn target_ja(target: &Target) -> String {
    match target {
        Target::Asset(name) => format!("機器 {name}"),
        Target::Role(name) => format!("役割 {name} の全機器"),
        Target::Peer(name) => format!("接続先 {name} との通信"),
        Target::All => "住基ネットセグメント全体 (管理用経路を除く)".to_owned(),
    }
}

fn target_en(target: &Target) -> String {
    match target {
        Target::Asset(name) => format!("host {name}"),
        Target::Role(name) => format!("every host of role {name}"),
        Target::Peer(name) => format!("the exchange with peer {name}"),
        Target::All => "the whole segment (except the management path)".to_owned(),
    }
}

/// RFC 3339 UTC with exactly nine fractional digits, as the databases store it.
fn rfc3339(at: Timestamp) -> String {
    DateTimePrinter::new()
        .precision(Some(9))
        .timestamp_to_string(&at)
}

/// The Japanese calendar date: `令和8年11月23日`, `令和元年5月1日`, `平成31年4月30日`.
///
/// Eras by their first day: 令和 2019-05-01, 平成 1989-01-08, 昭和 1926-12-25, 大正
/// 1912-07-30, 明治 from the adoption of the Gregorian calendar, 1873-01-01 (明治6年).
/// Earlier dates have no Gregorian 和暦 and are given in the Western calendar.
pub fn wareki(date: Date) -> String {
    const ERAS: [(Date, i16, &str); 5] = [
        (jiff::civil::date(2019, 5, 1), 2019, "令和"),
        (jiff::civil::date(1989, 1, 8), 1989, "平成"),
        (jiff::civil::date(1926, 12, 25), 1926, "昭和"),
        (jiff::civil::date(1912, 7, 30), 1912, "大正"),
        (jiff::civil::date(1873, 1, 1), 1868, "明治"),
    ];
    let (month, day) = (date.month(), date.day());
    match ERAS.iter().find(|(first, _, _)| date >= *first) {
        Some((_, first_year, era)) => {
            let year = date.year() - first_year + 1;
            if year == 1 {
                format!("{era}元年{month}月{day}日")
            } else {
                format!("{era}{year}年{month}月{day}日")
            }
        }
        None => format!("{}年{month}月{day}日", date.year()),
    }
}

fn weekday_ja(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "月",
        Weekday::Tuesday => "火",
        Weekday::Wednesday => "水",
        Weekday::Thursday => "木",
        Weekday::Friday => "金",
        Weekday::Saturday => "土",
        Weekday::Sunday => "日",
    }
}

fn weekday_en(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

/// A time as the notices print it, to the minute in Japan Standard Time with the 和暦
/// date: `2026年11月23日(月) 21:49 JST (令和8年11月23日)`.
pub fn jst(t: Timestamp) -> String {
    let z = t.to_zoned(JST);
    format!(
        "{}年{}月{}日({}) {:02}:{:02} JST ({})",
        z.year(),
        z.month(),
        z.day(),
        weekday_ja(z.weekday()),
        z.hour(),
        z.minute(),
        wareki(z.date())
    )
}

/// The English part's form: `Mon 2026-11-23 21:49 JST (12:49 UTC)`.
pub fn jst_en(t: Timestamp) -> String {
    let z = t.to_zoned(JST);
    let utc = t.to_zoned(TimeZone::UTC);
    format!(
        "{} {:04}-{:02}-{:02} {:02}:{:02} JST ({:02}:{:02} UTC)",
        weekday_en(z.weekday()),
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute(),
        utc.hour(),
        utc.minute()
    )
}

/// A short period for subjects: `2026年11月30日(月) 21:00〜23:00 JST`, or with the end's
/// date when it is another day.
fn period_ja(start: Timestamp, end: Timestamp) -> String {
    let (s, e) = (start.to_zoned(JST), end.to_zoned(JST));
    let mut out = format!(
        "{}年{}月{}日({}) {:02}:{:02}〜",
        s.year(),
        s.month(),
        s.day(),
        weekday_ja(s.weekday()),
        s.hour(),
        s.minute()
    );
    if e.date() != s.date() {
        if e.year() != s.year() {
            write!(out, "{}年", e.year()).expect("writing to a String");
        }
        write!(
            out,
            "{}月{}日({}) ",
            e.month(),
            e.day(),
            weekday_ja(e.weekday())
        )
        .expect("writing to a String");
    }
    write!(out, "{:02}:{:02} JST", e.hour(), e.minute()).expect("writing to a String");
    out
}

/// `Mon 2026-11-30 21:00-23:00 JST`, or with the end's date when it is another day.
fn period_en(start: Timestamp, end: Timestamp) -> String {
    let (s, e) = (start.to_zoned(JST), end.to_zoned(JST));
    let mut out = format!(
        "{} {:04}-{:02}-{:02} {:02}:{:02}",
        weekday_en(s.weekday()),
        s.year(),
        s.month(),
        s.day(),
        s.hour(),
        s.minute()
    );
    if e.date() != s.date() {
        write!(
            out,
            " - {} {:04}-{:02}-{:02} ",
            weekday_en(e.weekday()),
            e.year(),
            e.month(),
            e.day()
        )
        .expect("writing to a String");
    } else {
        out.push('-');
    }
    write!(out, "{:02}:{:02} JST", e.hour(), e.minute()).expect("writing to a String");
    out
}

/// `1日2時間30分`, `45分`, `1分未満`.
fn duration_ja(d: SignedDuration) -> String {
    let minutes = d.as_secs().max(0) / 60;
    if minutes == 0 {
        return "1分未満".to_owned();
    }
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut out = String::new();
    if days > 0 {
        write!(out, "{days}日").expect("writing to a String");
    }
    if hours > 0 {
        write!(out, "{hours}時間").expect("writing to a String");
    }
    if minutes > 0 {
        write!(out, "{minutes}分").expect("writing to a String");
    }
    out
}

/// `1 d 2 h 30 min`, `45 min`, `under 1 min`.
fn duration_en(d: SignedDuration) -> String {
    let minutes = d.as_secs().max(0) / 60;
    if minutes == 0 {
        return "under 1 min".to_owned();
    }
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days} d"));
    }
    if hours > 0 {
        parts.push(format!("{hours} h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes} min"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::Category;
    use crate::maintenance::WindowState;
    use crate::testutil::TempDir;

    fn ts(text: &str) -> Timestamp {
        text.parse()
            .unwrap_or_else(|err| panic!("bad test time {text}: {err}"))
    }

    fn date(y: i16, m: i8, d: i8) -> Date {
        jiff::civil::date(y, m, d)
    }

    const REFERENCE: &str = "OP-000042-1a2b3c4d";

    fn ctx(kind: RecipientKind) -> Context {
        Context {
            municipality: "宮若市".into(),
            sender: "宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>".into(),
            system: "住基ネット".into(),
            recipient_kind: kind,
            recipient_name: "福岡県 住基ネット担当".into(),
            reference: Some(REFERENCE.into()),
            // 2026-11-23 22:05 JST.
            now: ts("2026-11-23T13:05:00Z"),
            drill: false,
        }
    }

    fn isolation() -> Isolation {
        Isolation {
            target: Target::Asset("cs01".into()),
            reason: "CS から未登録の宛先 198.51.100.7:445 への通信を検知".into(),
            approved_by: None,
            emergency: true,
            category: Category::Misconduct,
            level: 2,
            operator: DAEMON_OPERATOR.into(),
            source: Some("suricata".into()),
            drill: false,
            // 2026-11-23 21:49:13 JST, a Monday.
            since: "2026-11-23T12:49:13.000000000Z".into(),
            reference: None,
        }
    }

    fn stop() -> Event {
        Event::EmergencyStop {
            isolation: isolation(),
            affected: vec![
                "asset:cs01 (192.0.2.10, 2001:db8::10)".into(),
                "asset:cs01-bk (192.0.2.11)".into(),
            ],
        }
    }

    fn restore() -> Event {
        Event::Restore {
            isolation: isolation(),
            restored_by: "tanaka".into(),
            reason: "マルウェア駆除を確認、OS 再インストール済み".into(),
            approved_by: "セキュリティ統括責任者 山田".into(),
        }
    }

    fn window() -> Window {
        Window {
            id: 7,
            // 2026-11-30 21:00 to 23:30 JST, a Monday.
            start: "2026-11-30T12:00:00.000000000Z".into(),
            end: "2026-11-30T14:30:00.000000000Z".into(),
            reason: "CS の OS 月例パッチ適用".into(),
            target: Target::All,
            operator: "suzuki".into(),
            state: WindowState::Scheduled,
            created_at: "2026-11-20T00:00:00.000000000Z".into(),
        }
    }

    fn render(event: &Event, ctx: &Context) -> Rendered {
        Templates::builtin()
            .render(event, ctx)
            .unwrap_or_else(|err| panic!("render {}: {err}", event.name()))
    }

    /// The Japanese part, before the English one.
    fn japanese(body: &str) -> &str {
        let at = body
            .find("[English]")
            .unwrap_or_else(|| panic!("no English part:\n{body}"));
        &body[..at]
    }

    fn english(body: &str) -> &str {
        let at = body
            .find("[English]")
            .unwrap_or_else(|| panic!("no English part:\n{body}"));
        &body[at..]
    }

    fn assert_contains(text: &str, wanted: &[&str]) {
        for want in wanted {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn wareki_era_boundaries() {
        for (d, want) in [
            (date(2026, 11, 23), "令和8年11月23日"),
            (date(2020, 1, 1), "令和2年1月1日"),
            (date(2019, 12, 31), "令和元年12月31日"),
            (date(2019, 5, 1), "令和元年5月1日"),
            (date(2019, 4, 30), "平成31年4月30日"),
            (date(1990, 1, 1), "平成2年1月1日"),
            (date(1989, 1, 8), "平成元年1月8日"),
            (date(1989, 1, 7), "昭和64年1月7日"),
            (date(1926, 12, 25), "昭和元年12月25日"),
            (date(1926, 12, 24), "大正15年12月24日"),
            (date(1912, 7, 30), "大正元年7月30日"),
            (date(1912, 7, 29), "明治45年7月29日"),
            (date(1873, 1, 1), "明治6年1月1日"),
            (date(1872, 12, 31), "1872年12月31日"),
        ] {
            assert_eq!(wareki(d), want, "{d}");
        }
    }

    #[test]
    fn jst_formats_japan_time_with_wareki() {
        assert_eq!(
            jst(ts("2026-11-23T12:49:13Z")),
            "2026年11月23日(月) 21:49 JST (令和8年11月23日)"
        );
        // 15:00 UTC is already the next day in Japan, and the era changes with the JST date.
        assert_eq!(
            jst(ts("2019-04-30T15:00:00Z")),
            "2019年5月1日(水) 00:00 JST (令和元年5月1日)"
        );
        assert_eq!(
            jst(ts("2019-04-30T14:59:59Z")),
            "2019年4月30日(火) 23:59 JST (平成31年4月30日)"
        );
        assert_eq!(
            jst_en(ts("2026-11-23T12:49:13Z")),
            "Mon 2026-11-23 21:49 JST (12:49 UTC)"
        );
        assert_eq!(
            jst_en(ts("2026-11-29T20:05:00Z")),
            "Mon 2026-11-30 05:05 JST (20:05 UTC)"
        );
    }

    #[test]
    fn periods_and_durations() {
        let (s, e) = (ts("2026-11-30T12:00:00Z"), ts("2026-11-30T14:30:00Z"));
        assert_eq!(period_ja(s, e), "2026年11月30日(月) 21:00〜23:30 JST");
        assert_eq!(period_en(s, e), "Mon 2026-11-30 21:00-23:30 JST");
        let e = ts("2026-11-30T17:00:00Z");
        assert_eq!(
            period_ja(s, e),
            "2026年11月30日(月) 21:00〜12月1日(火) 02:00 JST"
        );
        assert_eq!(
            period_en(s, e),
            "Mon 2026-11-30 21:00 - Tue 2026-12-01 02:00 JST"
        );
        let e = ts("2027-01-01T01:00:00Z");
        assert!(period_ja(s, e).ends_with("〜2027年1月1日(金) 10:00 JST"));

        let d = |secs| SignedDuration::from_secs(secs);
        assert_eq!(duration_ja(d(30)), "1分未満");
        assert_eq!(duration_ja(d(45 * 60)), "45分");
        assert_eq!(duration_ja(d(2 * 3600)), "2時間");
        assert_eq!(duration_ja(d(26 * 3600 + 30 * 60)), "1日2時間30分");
        assert_eq!(duration_ja(d(-5)), "1分未満");
        assert_eq!(duration_en(d(26 * 3600 + 30 * 60)), "1 d 2 h 30 min");
        assert_eq!(duration_en(d(59)), "under 1 min");
    }

    #[test]
    fn emergency_stop_report() {
        let r = render(&stop(), &ctx(RecipientKind::Prefecture));
        assert_eq!(
            r.subject,
            "【緊急】住基ネット切断報告 宮若市 asset:cs01 (不正行為・脅威度2) [OP-000042-1a2b3c4d]"
        );
        let ja = japanese(&r.body);
        assert_contains(
            ja,
            &[
                "福岡県 住基ネット担当 御中",
                "団体名:   宮若市",
                "システム: 住基ネット",
                "送信者:   宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>",
                "区分:     不正行為",
                "脅威度:   2",
                "■ 発生した事象",
                "日時:     2026年11月23日(月) 21:49 JST (令和8年11月23日)",
                "内容:     CS から未登録の宛先 198.51.100.7:445 への通信を検知",
                "検知元:   suricata",
                "■ 対応状況",
                "原因:",
                "対応:     2026年11月23日(月) 21:49 JST (令和8年11月23日) に 機器 cs01 (asset:cs01)",
                "承認:     承認を得ずに切り離し(緊急) 理由: 自動検知による即時切断\n",
                "操作者:   sekishod (自動切断)",
                "- asset:cs01 (192.0.2.10, 2001:db8::10)\n- asset:cs01-bk (192.0.2.11)\n",
                "参照番号: OP-000042-1a2b3c4d",
                "2026年11月23日(月) 22:05 JST (令和8年11月23日) に自動送信",
            ],
        );
        assert!(!r.body.contains("{{"), "{}", r.body);
        let en = english(&r.body);
        assert_contains(
            en,
            &[
                "Emergency stop report: 住基ネット, 宮若市",
                "Category:       misconduct",
                "threat level 2",
                "Occurred:       Mon 2026-11-23 21:49 JST (12:49 UTC)",
                "host cs01 (asset:cs01) cut off at Mon 2026-11-23 21:49 JST",
                "cut off without prior approval (emergency); reason: automatic cut-off on detection",
                "Operator:       sekishod (automatic)",
                "Detected by:    suricata",
                "- asset:cs01-bk (192.0.2.11)",
                "Reference:      OP-000042-1a2b3c4d",
            ],
        );
        assert!(r.body.ends_with('\n') && !r.body.starts_with('\n'));
    }

    #[test]
    fn emergency_stop_with_an_approver() {
        let mut isolation = isolation();
        isolation.emergency = false;
        isolation.approved_by = Some("セキュリティ統括責任者 山田".into());
        isolation.operator = "tanaka".into();
        isolation.source = None;
        isolation.category = Category::Failure;
        isolation.level = 1;
        let event = Event::EmergencyStop {
            isolation,
            affected: vec![],
        };
        let r = render(&event, &ctx(RecipientKind::Jlis));
        assert_eq!(
            r.subject,
            "【緊急】住基ネット切断報告 宮若市 asset:cs01 (障害・脅威度1) [OP-000042-1a2b3c4d]"
        );
        assert_contains(
            japanese(&r.body),
            &[
                "承認:     承認済み (承認者: セキュリティ統括責任者 山田)",
                "操作者:   tanaka",
                "検知元:   運用者による手動操作",
                "- (なし / none)",
            ],
        );
        assert!(!r.body.contains("承認を得ずに"), "{}", r.body);
        assert_contains(
            english(&r.body),
            &[
                "approved by セキュリティ統括責任者 山田",
                "Category:       failure",
            ],
        );
        assert_eq!(r.document["approved_by"], "セキュリティ統括責任者 山田");
        assert_eq!(r.document["emergency"], false);
        assert_eq!(r.document["source"], serde_json::Value::Null);
        assert_eq!(r.document["affected"], json!([]));
    }

    #[test]
    fn emergency_stop_document() {
        let r = render(&stop(), &ctx(RecipientKind::Prefecture));
        let d = &r.document;
        assert_eq!(d["schema"], "sekisho.notice/1");
        assert_eq!(d["event"], "emergency_stop");
        assert_eq!(d["drill"], false);
        assert_eq!(d["municipality"], "宮若市");
        assert_eq!(d["system"], "住基ネット");
        assert_eq!(
            d["recipient"],
            json!({"name": "福岡県 住基ネット担当", "kind": "prefecture"})
        );
        assert_eq!(d["reference"], REFERENCE);
        assert_eq!(d["subject"], r.subject.as_str());
        assert_eq!(d["target"], "asset:cs01");
        assert_eq!(d["category"], "misconduct");
        assert_eq!(d["category_ja"], "不正行為");
        assert_eq!(d["level"], 2);
        assert_eq!(d["emergency"], true);
        assert_eq!(d["approved_by"], serde_json::Value::Null);
        assert_eq!(d["operator"], "sekishod");
        assert_eq!(d["source"], "suricata");
        assert_eq!(d["occurred_at"], "2026-11-23T12:49:13.000000000Z");
        assert_eq!(d["stopped_at"], "2026-11-23T12:49:13.000000000Z");
        assert_eq!(d["sent_at"], "2026-11-23T13:05:00.000000000Z");
        assert_eq!(
            d["affected"],
            json!([
                "asset:cs01 (192.0.2.10, 2001:db8::10)",
                "asset:cs01-bk (192.0.2.11)"
            ])
        );
    }

    #[test]
    fn department_is_told_its_terminals_are_stopped() {
        let mut c = ctx(RecipientKind::Department);
        c.recipient_name = "市民課".into();
        let r = render(&stop(), &c);
        assert_eq!(
            r.subject,
            "【緊急】住基ネット端末の使用停止 宮若市 asset:cs01 [OP-000042-1a2b3c4d]"
        );
        assert_contains(
            japanese(&r.body),
            &[
                "市民課 御中",
                "管理者から別途指示があるまで、住基ネット端末は使用できません。",
                "停止日時: 2026年11月23日(月) 21:49 JST (令和8年11月23日)",
                "- asset:cs01 (192.0.2.10, 2001:db8::10)",
            ],
        );
        assert_contains(
            english(&r.body),
            &[
                "cannot be used until further instruction",
                "Stopped at:  Mon 2026-11-23 21:49 JST",
            ],
        );
        // Other recipients get the full report instead.
        assert!(!r.body.contains("■ 対応状況"));
        assert_eq!(r.document["recipient"]["kind"], "department");

        let r = render(&restore(), &c);
        assert_eq!(
            r.subject,
            "【復旧】住基ネット端末の使用再開 宮若市 asset:cs01 [OP-000042-1a2b3c4d]"
        );
        assert_contains(
            japanese(&r.body),
            &[
                "使用停止を解除しました",
                "2026年11月23日(月) 22:05 JST (令和8年11月23日) 以降、住基ネット端末を通常どおり使用できます。",
                "停止時間: 15分",
            ],
        );
        assert_contains(
            english(&r.body),
            &["terminals released", "Stopped for: 15 min"],
        );
    }

    #[test]
    fn restore_report() {
        let r = render(&restore(), &ctx(RecipientKind::SecurityChief));
        assert_eq!(
            r.subject,
            "【復旧】住基ネット切断解除報告 宮若市 asset:cs01 (不正行為・脅威度2) [OP-000042-1a2b3c4d]"
        );
        assert_contains(
            japanese(&r.body),
            &[
                "切断を解除し、通信を再開しました",
                "切断日時: 2026年11月23日(月) 21:49 JST (令和8年11月23日)",
                "復旧日時: 2026年11月23日(月) 22:05 JST (令和8年11月23日)",
                "停止時間: 15分",
                "原因・対応: マルウェア駆除を確認、OS 再インストール済み",
                "承認者:   セキュリティ統括責任者 山田",
                "操作者:   tanaka",
                "切断時の承認: 承認を得ずに切り離し(緊急)",
            ],
        );
        assert_contains(
            english(&r.body),
            &[
                "Recovery report",
                "Restored:       Mon 2026-11-23 22:05 JST (13:05 UTC) after 15 min",
                "Restored by:    tanaka",
            ],
        );
        let d = &r.document;
        assert_eq!(d["event"], "restore");
        assert_eq!(d["restored_at"], "2026-11-23T13:05:00.000000000Z");
        assert_eq!(d["restored_by"], "tanaka");
        assert_eq!(d["restore_approver"], "セキュリティ統括責任者 山田");
        assert_eq!(d["stopped_seconds"], 947);
    }

    #[test]
    fn maintenance_notices() {
        let c = ctx(RecipientKind::IdentityManager);
        let period = "2026年11月30日(月) 21:00〜23:30 JST";
        let cases = [
            (
                Event::MaintenanceNotice { window: window() },
                format!("【事前通知】住基ネット計画停止 宮若市 {period} [OP-000042-1a2b3c4d]"),
                vec![
                    "事前に通知します",
                    "停止時間: 2時間30分",
                    "担当者:   suzuki",
                ],
                vec![
                    "Prior notice",
                    "Expected recovery: Mon 2026-11-30 23:30 JST (14:30 UTC)",
                ],
            ),
            (
                Event::MaintenanceStart { window: window() },
                format!("【停止】住基ネット計画停止開始 宮若市 {period} [OP-000042-1a2b3c4d]"),
                vec![
                    "停止しました",
                    "停止開始: 2026年11月30日(月) 21:00 JST (令和8年11月30日)",
                ],
                vec!["Planned stop started"],
            ),
            (
                Event::MaintenanceEnd { window: window() },
                format!("【復旧】住基ネット計画停止終了 宮若市 {period} [OP-000042-1a2b3c4d]"),
                vec!["復旧しました", "停止時間: 2時間30分"],
                vec!["service restored", "(2 h 30 min)"],
            ),
            (
                Event::MaintenanceCancel {
                    window: window(),
                    by: "suzuki".into(),
                },
                format!("【取消】住基ネット計画停止の取消 宮若市 {period} [OP-000042-1a2b3c4d]"),
                vec!["取り消しました", "取消者:   suzuki"],
                vec!["Planned stop cancelled", "Cancelled by: suzuki"],
            ),
        ];
        for (event, subject, ja, en) in cases {
            let r = render(&event, &c);
            assert_eq!(r.subject, subject);
            let common_ja = [
                "2026年11月30日(月) 21:00 JST (令和8年11月30日)",
                "2026年11月30日(月) 23:30 JST (令和8年11月30日)",
                "住基ネットセグメント全体",
                "CS の OS 月例パッチ適用",
                "予定番号 7",
                "宮若市",
            ];
            assert_contains(japanese(&r.body), &common_ja);
            assert_contains(japanese(&r.body), &ja);
            assert_contains(
                english(&r.body),
                &[
                    "Mon 2026-11-30 21:00 JST (12:00 UTC)",
                    "window 7",
                    "the whole segment",
                ],
            );
            assert_contains(english(&r.body), &en);
            assert!(!r.body.contains("{{"), "{}", r.body);
            let d = &r.document;
            assert_eq!(d["event"], event.name());
            assert_eq!(d["window"]["id"], 7);
            assert_eq!(d["start"], "2026-11-30T12:00:00.000000000Z");
            assert_eq!(d["end"], "2026-11-30T14:30:00.000000000Z");
            assert_eq!(d["expected_recovery"], "2026-11-30T14:30:00.000000000Z");
            assert_eq!(d["target"], "all");
        }
        let r = render(
            &Event::MaintenanceCancel {
                window: window(),
                by: "suzuki".into(),
            },
            &c,
        );
        assert_eq!(r.document["cancelled_by"], "suzuki");
        // Maintenance notices are the same for departments.
        let dept = render(
            &Event::MaintenanceNotice { window: window() },
            &ctx(RecipientKind::Department),
        );
        assert!(dept.subject.starts_with("【事前通知】"));
    }

    #[test]
    fn test_notice() {
        let mut c = ctx(RecipientKind::Jlis);
        c.reference = None;
        c.recipient_name = "地方公共団体情報システム機構".into();
        let r = render(&Event::Test, &c);
        assert_eq!(r.subject, "【試験】住基ネット通知の試験送信 宮若市");
        assert_contains(
            japanese(&r.body),
            &[
                "地方公共団体情報システム機構 御中",
                "試験送信",
                "参照番号: -",
            ],
        );
        assert_contains(english(&r.body), &["Test notice", "(J-LIS)"]);
        assert_eq!(r.document["reference"], serde_json::Value::Null);
        assert_eq!(r.document["event"], "test");
    }

    #[test]
    fn drills_are_marked_in_subject_body_and_document() {
        let mut c = ctx(RecipientKind::Prefecture);
        c.drill = true;
        for event in [
            stop(),
            restore(),
            Event::MaintenanceNotice { window: window() },
            Event::Test,
        ] {
            let r = render(&event, &c);
            assert!(r.subject.starts_with("【訓練】【"), "{}", r.subject);
            assert!(r.body.starts_with(DRILL_BANNER), "{}", r.body);
            assert_eq!(r.document["drill"], true);
        }
        // An isolation recorded as a drill makes a drill notice even without ctx.drill.
        let mut isolation = isolation();
        isolation.drill = true;
        let event = Event::EmergencyStop {
            isolation,
            affected: vec![],
        };
        let r = render(&event, &ctx(RecipientKind::Department));
        assert!(
            r.subject
                .starts_with("【訓練】【緊急】住基ネット端末の使用停止"),
            "{}",
            r.subject
        );
        assert!(r.body.starts_with("【訓練】"));
        let r = render(&stop(), &ctx(RecipientKind::Prefecture));
        assert!(!r.subject.contains("訓練") && !r.body.contains("訓練"));
    }

    #[test]
    fn reference_falls_back_to_the_isolation_and_subjects_stay_one_line() {
        let mut isolation = isolation();
        isolation.reference = Some("OP-000007-deadbeef".into());
        isolation.target = Target::Role("cs".into());
        let event = Event::EmergencyStop {
            isolation: isolation.clone(),
            affected: vec![],
        };
        let mut c = ctx(RecipientKind::Prefecture);
        c.reference = None;
        let r = render(&event, &c);
        assert!(
            r.subject
                .ends_with(" role:cs (不正行為・脅威度2) [OP-000007-deadbeef]"),
            "{}",
            r.subject
        );
        assert_eq!(r.document["reference"], "OP-000007-deadbeef");
        // The context's reference wins.
        let r = render(&event, &ctx(RecipientKind::Prefecture));
        assert!(r.subject.ends_with("[OP-000042-1a2b3c4d]"));

        let mut w = window();
        w.reason = "行1\r\n行2".into();
        let dir = TempDir::new("one-line");
        std::fs::write(
            dir.join("maintenance_start.txt"),
            "Subject: 停止 {{reason}}\n\n{{reason}}\n",
        )
        .unwrap();
        let templates = Templates::load(dir.path()).unwrap();
        let r = templates
            .render(&Event::MaintenanceStart { window: w }, &c)
            .unwrap();
        assert_eq!(r.subject, "停止 行1  行2");
        assert_eq!(r.body, "行1\r\n行2\n");
    }

    #[test]
    fn every_template_uses_only_values_that_exist() {
        // The values each event provides are exactly the placeholders its templates may use.
        let events = [
            stop(),
            restore(),
            Event::MaintenanceNotice { window: window() },
            Event::MaintenanceStart { window: window() },
            Event::MaintenanceEnd { window: window() },
            Event::MaintenanceCancel {
                window: window(),
                by: "x".into(),
            },
            Event::Test,
        ];
        for event in &events {
            for recipient in RecipientKind::ALL {
                let kind = Kind::of(event, recipient);
                let facts = Facts::new(event, &ctx(recipient)).unwrap();
                let mut provided: Vec<_> = facts.values.iter().map(|(k, _)| *k).collect();
                provided.sort_unstable();
                let mut allowed = kind.placeholders();
                allowed.sort_unstable();
                assert_eq!(provided, allowed, "{kind:?}");
                allowed.dedup();
                assert_eq!(provided.len(), allowed.len(), "{kind:?} repeats a name");
            }
        }
        let used: Vec<Kind> = events
            .iter()
            .flat_map(|e| RecipientKind::ALL.map(|r| Kind::of(e, r)))
            .collect();
        for kind in Kind::ALL {
            assert!(used.contains(&kind), "{kind:?} is never rendered");
        }
    }

    #[test]
    fn the_shipped_files_are_the_builtin_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/templates");
        let loaded = Templates::load(&dir).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(loaded.overrides().len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let text = std::fs::read_to_string(dir.join(kind.file())).unwrap();
            assert_eq!(text, kind.builtin(), "{}", kind.file());
        }
    }

    #[test]
    fn an_override_file_replaces_one_template() {
        let dir = TempDir::new("override");
        std::fs::write(
            dir.join("emergency_stop.txt"),
            "# 自治体独自の書式\r\n\
             Subject: 【至急】{{ municipality }} {{target}} 切断\r\n\
             \r\n\
             \r\n\
             {{recipient}} 様\r\n\
             {{stopped_at}} {{approval}}\r\n\
             ---\r\n\
             English: {{stopped_at_en}}",
        )
        .unwrap();
        std::fs::write(dir.join("emergency-stop.txt"), "misnamed").unwrap();
        let templates = Templates::load(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(templates.overrides(), [dir.join("emergency_stop.txt")]);
        // A manual emergency cut-off: the operator's reason is why there was no approval.
        let mut manual = isolation();
        manual.operator = "tanaka".into();
        let event = Event::EmergencyStop {
            isolation: manual,
            affected: vec![],
        };
        let r = templates
            .render(&event, &ctx(RecipientKind::Prefecture))
            .unwrap();
        assert_eq!(
            r.subject,
            "【至急】宮若市 asset:cs01 切断 [OP-000042-1a2b3c4d]"
        );
        assert_eq!(
            r.body,
            "福岡県 住基ネット担当 様\n\
             2026年11月23日(月) 21:49 JST (令和8年11月23日) 承認を得ずに切り離し(緊急) \
             理由: CS から未登録の宛先 198.51.100.7:445 への通信を検知\n\
             ---\n\
             English: Mon 2026-11-23 21:49 JST (12:49 UTC)\n"
        );
        // The others are still the built-in ones.
        let r = templates
            .render(&stop(), &ctx(RecipientKind::Department))
            .unwrap();
        assert_eq!(r, render(&stop(), &ctx(RecipientKind::Department)));
        // A missing directory is all built-in.
        let templates = Templates::load(&dir.join("missing")).unwrap();
        assert!(templates.overrides().is_empty());
    }

    #[test]
    fn an_unknown_placeholder_is_refused_with_file_and_line() {
        let dir = TempDir::new("unknown");
        let path = dir.join("maintenance_notice.txt");
        std::fs::write(
            &path,
            "# comment\nSubject: 【事前通知】{{period}}\n\n{{recipient}} 御中\n開始 {{start}}\n承認 {{approval}}\n",
        )
        .unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        match &err {
            NoticeError::UnknownPlaceholder { line, name, .. } => {
                assert_eq!((*line, name.as_str()), (6, "approval"));
            }
            _ => panic!("expected an unknown placeholder, got {err:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}:6: unknown placeholder {{{{approval}}}} in the maintenance_notice template (known: municipality, ",
                path.display()
            )),
            "{message}"
        );

        std::fs::write(&path, "Subject: {{perod}}\n\nbody\n").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}:1: unknown placeholder {{{{perod}}}}",
                path.display()
            )),
            "{err}"
        );

        std::fs::write(&path, "Subject: x\n\n{{start\n").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:3: \"{{{{\" without a closing \"}}}}\"", path.display())
        );

        std::fs::write(&path, "# only a comment\n本文\n").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(matches!(err, NoticeError::MissingSubject { .. }), "{err:?}");

        std::fs::write(&path, "Subject:   \n\nbody\n").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, NoticeError::EmptySubject { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_unreadable_template_is_an_error() {
        let dir = TempDir::new("unreadable");
        // A directory where a file is expected cannot be read as one.
        std::fs::create_dir(dir.join("test.txt")).unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(matches!(err, NoticeError::Read { .. }), "{err:?}");
    }

    #[test]
    fn a_bad_time_is_an_error() {
        let mut isolation = isolation();
        isolation.since = "yesterday".into();
        let event = Event::EmergencyStop {
            isolation,
            affected: vec![],
        };
        let err = Templates::builtin()
            .render(&event, &ctx(RecipientKind::Prefecture))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("since \"yesterday\" of the emergency_stop notice"),
            "{err}"
        );
    }

    #[test]
    fn events_round_trip_through_json() {
        for event in [
            stop(),
            restore(),
            Event::MaintenanceCancel {
                window: window(),
                by: "x".into(),
            },
            Event::Test,
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["event"], event.name());
            let back: Event = serde_json::from_value(json).unwrap();
            assert_eq!(back, event);
        }
    }
}
