//! From an event (a cut-off, a restore, a planned stop) to the notices that tell the
//! prefecture, J-LIS and the municipality's officers about it: one notice per recipient
//! and channel, rendered in Japanese (English below), committed to the outbox before the
//! caller goes on. Delivery happens elsewhere ([`crate::notify::deliver_due`]), so a cut-off
//! never waits for a mail server.
//!
//! Idempotency keys are `BASE/RECIPIENT/CHANNEL`, where BASE names the event (the
//! operation-history reference, or `MW-<id>-<event>` for a maintenance window): the same
//! event queued twice is sent once.

use std::path::Path;

use crate::config::{Config, Recipient};
use crate::notice::{Context, Event, Templates};
use crate::notify::{Channel, Notice, Outbox};

/// The system the segment serves, as notices name it.
pub const SYSTEM: &str = "住基ネット";

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot render the {event} notice for {recipient}")]
    Render {
        event: &'static str,
        recipient: String,
        #[source]
        source: Box<crate::notice::NoticeError>,
    },
    #[error("cannot queue the {event} notice for {recipient}")]
    Queue {
        event: &'static str,
        recipient: String,
        #[source]
        source: Box<crate::notify::NotifyError>,
    },
    #[error("no recipient named {name:?} (known: {known})")]
    UnknownRecipient { name: String, known: String },
}

/// The editable templates beside the configuration file (`templates/`), falling back to
/// the built-in ones.
pub fn templates_for(config_path: &Path) -> Templates {
    let dir = config_path
        .parent()
        .map(|d| d.join("templates"))
        .filter(|d| d.is_dir());
    match dir {
        Some(dir) => Templates::load(&dir).unwrap_or_else(|e| {
            tracing::error!(error = %e, "notice templates unusable; using the built-in ones");
            Templates::builtin()
        }),
        None => Templates::builtin(),
    }
}

/// The channels a recipient is reached by.
fn channels(recipient: &Recipient) -> Vec<Channel> {
    let mut out = Vec::new();
    if let Some(to) = &recipient.email {
        out.push(Channel::Email { to: to.clone() });
    }
    if let Some(url) = &recipient.webhook {
        out.push(Channel::Webhook { url: url.clone() });
    }
    out
}

/// Queues `event` for `recipients` (all when `None`), plus one copy to syslog when it is
/// configured. Returns how many notices were queued (a repeat of the same key is not).
pub fn enqueue(
    outbox: &mut Outbox,
    templates: &Templates,
    config: &Config,
    event: &Event,
    base: &str,
    reference: Option<&str>,
    only: Option<&str>,
) -> Result<usize, DispatchError> {
    let Some(notify) = &config.notify else {
        return Ok(0);
    };
    let drill = match event {
        Event::EmergencyStop { isolation, .. } | Event::Restore { isolation, .. } => {
            isolation.drill
        }
        _ => false,
    };
    let recipients: Vec<&Recipient> = match only {
        None => config.recipients.iter().collect(),
        Some(name) => {
            let r = config
                .recipients
                .iter()
                .find(|r| r.name == name)
                .ok_or_else(|| DispatchError::UnknownRecipient {
                    name: name.to_owned(),
                    known: config
                        .recipients
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            vec![r]
        }
    };
    let now = jiff::Timestamp::now();
    let mut queued = 0;
    let mut syslog_done = false;
    for recipient in recipients {
        let ctx = Context {
            municipality: notify.municipality.clone(),
            sender: notify.sender.clone(),
            system: SYSTEM.to_owned(),
            recipient_kind: recipient.kind,
            recipient_name: recipient.name.clone(),
            reference: reference.map(str::to_owned),
            now,
            drill,
        };
        let rendered = templates
            .render(event, &ctx)
            .map_err(|source| DispatchError::Render {
                event: event.name(),
                recipient: recipient.name.clone(),
                source: Box::new(source),
            })?;
        let document = serde_json::json!({
            "event": event.name(),
            "municipality": notify.municipality,
            "system": SYSTEM,
            "recipient": recipient.name,
            "recipient_kind": recipient.kind,
            "reference": reference,
            "drill": drill,
            "sent_at": now.to_string(),
            "details": serde_json::to_value(event).unwrap_or_default(),
        });
        let mut targets = channels(recipient);
        if notify.syslog.is_some() && !syslog_done && only.is_none() {
            targets.push(Channel::Syslog);
            syslog_done = true;
        }
        for channel in targets {
            let notice = Notice {
                key: format!("{base}/{}/{}", recipient.name, channel.kind()),
                event: event.name().to_owned(),
                recipient: recipient.name.clone(),
                channel,
                subject: rendered.subject.clone(),
                body: rendered.body.clone(),
                document: document.clone(),
                reference: reference.map(str::to_owned),
                drill,
            };
            let fresh = outbox
                .enqueue(notice)
                .map_err(|source| DispatchError::Queue {
                    event: event.name(),
                    recipient: recipient.name.clone(),
                    source: Box::new(source),
                })?;
            queued += usize::from(fresh);
        }
    }
    Ok(queued)
}
