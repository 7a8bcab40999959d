//! Notices leaving the box (R12, R16–R18): a durable outbox and the three delivery channels.
//!
//! Every notice is first committed to `<state_dir>/outbox.db` by [`Outbox::enqueue`], then
//! sent by [`deliver_due`] from the daemon's worker loop through a [`Sender`] built from
//! `[notify]`. The content (subject, body, JSON document) is rendered elsewhere; this
//! module only stores and delivers a ready [`Notice`].
//!
//! Invariants:
//! - a notice is in the outbox, committed with `synchronous=FULL`, before any attempt to send
//!   it; it is marked delivered only after the server accepted it (SMTP `250` after `DATA`,
//!   HTTP 2xx, the syslog message written to the socket);
//! - the idempotency key ([`Notice::key`]) is unique in the outbox: enqueueing it again is a
//!   no-op, so a notice is never queued twice;
//! - a failed notice is retried with exponential backoff (1 s, 2 s, 4 s … capped at
//!   [`MAX_BACKOFF`]) for ever, across daemon restarts: a notice to the prefecture is never
//!   dropped;
//! - per destination (one e-mail address, one webhook URL, the syslog target) notices go out
//!   in the order they were enqueued: a later notice waits while an earlier one to the same
//!   destination is undelivered, so a recovery notice never overtakes the stop it answers;
//! - delivery is at least once: should the daemon die between the server's acceptance and
//!   [`Outbox::mark_delivered`], the notice is sent again. Every channel carries the key
//!   (`Message-ID`/`X-Sekisho-Key`, `Idempotency-Key`, the syslog structured data), so the
//!   receiver recognises the repeat.
//!
//! Channels: [`smtp`] (e-mail), [`webhook`] (signed HTTPS POST; its module documentation is
//! the receiver's contract) and [`syslog`] (RFC 5424 over UDP, TCP or a Unix socket).

use std::path::Path;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::config::Config;

mod outbox;
pub mod smtp;
pub mod syslog;
pub mod webhook;

#[cfg(test)]
mod tests;

pub use outbox::DB_FILE;
pub use outbox::MAX_BACKOFF;
pub use outbox::Outbox;
pub use outbox::OutboxEntry;
pub use outbox::backoff;

/// The upper bound of every network operation of one [`Sender::send`] step (connect, each
/// SMTP command, the whole HTTP exchange, a syslog write).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One notice to one recipient over one channel, ready to send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    /// Idempotency key, unique per (event, recipient, channel), e.g.
    /// `OP-000042-1a2b3c4d/prefecture-email`. Not empty, no control characters.
    pub key: String,
    /// `emergency-stop`, `restore`, `maintenance-notice`, `maintenance-start`,
    /// `maintenance-end`, `maintenance-cancel`, `test`, …
    pub event: String,
    /// The [`crate::config::Recipient::name`] it is addressed to.
    pub recipient: String,
    pub channel: Channel,
    /// Rendered subject (Japanese); a drill's prefix is already in it.
    pub subject: String,
    /// Rendered body: Japanese first, English below.
    pub body: String,
    /// The structured notice, for the webhook and syslog channels.
    pub document: serde_json::Value,
    /// The operation-history reference this notice reports on.
    pub reference: Option<String>,
    /// A drill: delivered like a real notice, marked as a drill on every channel.
    pub drill: bool,
}

/// How a notice travels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Channel {
    Email { to: String },
    Webhook { url: String },
    Syslog,
}

impl Channel {
    /// `email`, `webhook` or `syslog`, for metrics labels and listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email { .. } => "email",
            Channel::Webhook { .. } => "webhook",
            Channel::Syslog => "syslog",
        }
    }

    /// The destination notices are ordered by: `email:ADDRESS`, `webhook:URL`, `syslog`.
    pub fn destination(&self) -> String {
        match self {
            Channel::Email { to } => format!("email:{to}"),
            Channel::Webhook { url } => format!("webhook:{url}"),
            Channel::Syslog => "syslog".to_owned(),
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.destination())
    }
}

/// Why a notice could not be queued or delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot {action} in notification outbox {}", .path.display())]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("notice {id} in notification outbox {} is unreadable", .path.display())]
    Corrupt {
        path: PathBuf,
        id: i64,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot serialise notice {key:?}")]
    Serialize {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid idempotency key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("timestamp {at} is before year 0 and cannot be stored")]
    TimestampOutOfRange { at: Timestamp },
    #[error("no notice {id} in the notification outbox")]
    NotFound { id: i64 },
    #[error("notice {id} was already delivered at {delivered_at}")]
    AlreadyDelivered { id: i64, delivered_at: String },

    #[error("the configuration has no [notify] section")]
    NotConfigured,
    #[error("cannot read the {what} file {}", .path.display())]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {} is empty", .path.display())]
    EmptySecret { what: &'static str, path: PathBuf },
    #[error("notify sender {sender:?} is not a valid mailbox")]
    InvalidSender {
        sender: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("notice {key:?}: e-mail address {to:?} is not valid")]
    InvalidAddress {
        key: String,
        to: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("notice {key:?}: cannot build the e-mail message")]
    BuildEmail {
        key: String,
        #[source]
        source: lettre::error::Error,
    },
    #[error("notice {key:?} is an e-mail but [notify] has no smtp server")]
    SmtpNotConfigured { key: String },
    #[error("cannot prepare TLS for smtp server {host}")]
    SmtpTls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("notice {key:?}: smtp server {server} did not accept the message")]
    Smtp {
        key: String,
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("notice {key:?} is a webhook but [notify] has no webhook_secret_file to sign it")]
    WebhookSecretMissing { key: String },
    #[error("notice {key:?}: webhook URL {url:?} is not http:// or https://")]
    InvalidWebhookUrl { key: String, url: String },
    #[error("notice {key:?}: webhook {url} could not be reached")]
    Http {
        key: String,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("notice {key:?}: webhook {url} answered HTTP {status}{}", fmt_detail(.detail))]
    HttpStatus {
        key: String,
        url: String,
        status: u16,
        /// The start of the response body, for the outbox listing.
        detail: String,
    },
    #[error("notice {key:?} is for syslog but [notify] has no syslog target")]
    SyslogNotConfigured { key: String },
    #[error("notice {key:?}: cannot write to syslog {target}")]
    Syslog {
        key: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl NotifyError {
    /// The error and its sources on one line, as stored in [`OutboxEntry::last_error`].
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            let next = err.to_string();
            if !text.ends_with(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            source = err.source();
        }
        text
    }
}

/// The channels of one `[notify]` section, ready to send.
pub struct Sender {
    smtp: Option<smtp::SmtpChannel>,
    webhook: webhook::WebhookChannel,
    syslog: Option<syslog::SyslogChannel>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password or the webhook secret.
        f.debug_struct("Sender")
            .field("smtp", &self.smtp.as_ref().map(smtp::SmtpChannel::server))
            .field("webhook_signed", &self.webhook.is_signed())
            .field(
                "syslog",
                &self.syslog.as_ref().map(|s| s.target().to_string()),
            )
            .finish()
    }
}

impl Sender {
    /// Builds the channels of `config.notify`, reading the SMTP password and the webhook
    /// secret from their files now (so a missing file is reported at start and on reload,
    /// not at the first emergency).
    pub fn from_config(config: &Config) -> Result<Sender, NotifyError> {
        let notify = config.notify.as_ref().ok_or(NotifyError::NotConfigured)?;
        let smtp = notify
            .smtp
            .as_ref()
            .map(|smtp| smtp::SmtpChannel::new(smtp, &notify.sender))
            .transpose()?;
        let secret = notify
            .webhook_secret_file
            .as_deref()
            .map(|path| read_secret("webhook secret", path))
            .transpose()?;
        let webhook = webhook::WebhookChannel::new(secret);
        let syslog = notify.syslog.clone().map(syslog::SyslogChannel::new);
        Ok(Sender {
            smtp,
            webhook,
            syslog,
        })
    }

    /// Sends `notice` once over its channel. Blocks for at most a few [`SEND_TIMEOUT`]s;
    /// `Ok` only when the server accepted it.
    pub fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        match &notice.channel {
            Channel::Email { to } => self
                .smtp
                .as_ref()
                .ok_or_else(|| NotifyError::SmtpNotConfigured {
                    key: notice.key.clone(),
                })?
                .send(notice, to),
            Channel::Webhook { url } => self.webhook.send(notice, url, Timestamp::now()),
            Channel::Syslog => self
                .syslog
                .as_ref()
                .ok_or_else(|| NotifyError::SyslogNotConfigured {
                    key: notice.key.clone(),
                })?
                .send(notice, Timestamp::now()),
        }
    }
}

/// Reads a secret file: its content with trailing whitespace (the editor's newline)
/// removed. Warns when the file is readable by others.
pub(crate) fn read_secret(what: &'static str, path: &Path) -> Result<Vec<u8>, NotifyError> {
    use std::os::unix::fs::PermissionsExt;

    let err = |source| NotifyError::ReadSecret {
        what,
        path: path.to_owned(),
        source,
    };
    let mut bytes = std::fs::read(path).map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(path = %path.display(), "{what} file is readable by every user");
    }
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(NotifyError::EmptySecret {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Sends every notice that is due at `now` once, marking it delivered or failed (with its
/// next attempt after [`backoff`]); returns (delivered, failed).
///
/// When a notice is delivered, the next one queued for the same destination becomes due at
/// once and is sent in the same call; a destination whose notice failed is not tried again
/// until its backoff has passed. Send errors are recorded in the outbox, not returned; the
/// `Err` case is the outbox itself failing.
pub fn deliver_due(
    outbox: &mut Outbox,
    sender: &Sender,
    now: Timestamp,
) -> Result<(usize, usize), NotifyError> {
    let mut delivered = 0;
    let mut failed = 0;
    let mut tried = std::collections::HashSet::new();
    loop {
        let due: Vec<OutboxEntry> = outbox
            .due(now)?
            .into_iter()
            .filter(|entry| !tried.contains(&entry.id))
            .collect();
        if due.is_empty() {
            break;
        }
        for entry in due {
            tried.insert(entry.id);
            let notice = &entry.notice;
            match sender.send(notice) {
                Ok(()) => {
                    outbox.mark_delivered(entry.id, now)?;
                    delivered += 1;
                    tracing::info!(
                        id = entry.id,
                        key = %notice.key,
                        event = %notice.event,
                        recipient = %notice.recipient,
                        channel = %notice.channel,
                        attempts = entry.attempts + 1,
                        "notice delivered"
                    );
                }
                Err(err) => {
                    let error = err.chain();
                    outbox.mark_failed(entry.id, now, &error)?;
                    failed += 1;
                    tracing::warn!(
                        id = entry.id,
                        key = %notice.key,
                        event = %notice.event,
                        recipient = %notice.recipient,
                        channel = %notice.channel,
                        attempts = entry.attempts + 1,
                        retry_in = ?backoff(entry.attempts + 1),
                        error = %error,
                        "notice not delivered; will retry"
                    );
                }
            }
        }
    }
    Ok((delivered, failed))
}
