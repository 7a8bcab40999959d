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
    let now = jiff::Timestamp::now();
    let recipients: Vec<&Recipient> = match only {
        // Day contacts by day, night and holiday contacts outside working hours.
        None => {
            let (date, weekday, time) = jst_clock(now);
            config
                .recipients
                .iter()
                .filter(|r| r.reached(&config.hours, &date, weekday, time))
                .collect()
        }
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

/// Date (`YYYY-MM-DD`), weekday (Monday = 1) and time of day in Japan at `t`.
pub fn jst_clock(t: jiff::Timestamp) -> (String, u8, crate::config::TimeOfDay) {
    let jst = jiff::tz::TimeZone::fixed(jiff::tz::offset(9));
    let z = t.to_zoned(jst);
    (
        z.date().to_string(),
        z.weekday().to_monday_one_offset() as u8,
        crate::config::TimeOfDay {
            hour: z.hour() as u8,
            minute: z.minute() as u8,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
        let text = std::fs::read_to_string(path).unwrap() + extra;
        Config::parse_str(&text, Path::new(path)).expect("valid")
    }

    const CONTACTS: &str = r#"
[hours.office]
weekdays = "09:00-17:30"

[[recipient]]
name = "日中の担当"
kind = "security_chief"
email = "day@city.example.jp"
hours = "office"

[[recipient]]
name = "夜間・休日の担当"
kind = "security_chief"
email = "night@city.example.jp"
outside = "office"

[[recipient]]
name = "J-LIS"
kind = "jlis"
webhook = "https://jlis.example.jp/hooks"

[notify]
municipality = "宮若市"
sender = "宮若市 <juki-admin@city.example.jp>"
smtp = { host = "127.0.0.1", port = 25 }
"#;

    fn reached(c: &Config, t: &str) -> Vec<String> {
        let (date, weekday, time) = jst_clock(t.parse().unwrap());
        c.recipients
            .iter()
            .filter(|r| r.reached(&c.hours, &date, weekday, time))
            .map(|r| r.name.clone())
            .collect()
    }

    #[test]
    fn night_and_holiday_contacts_are_reached_outside_office_hours_only() {
        let c = config(CONTACTS);
        // Monday 2026-11-23 10:00 JST.
        assert_eq!(reached(&c, "2026-11-23T01:00:00Z"), ["日中の担当", "J-LIS"]);
        // Monday 22:00 JST.
        assert_eq!(
            reached(&c, "2026-11-23T13:00:00Z"),
            ["夜間・休日の担当", "J-LIS"]
        );
        // Saturday 10:00 JST.
        assert_eq!(
            reached(&c, "2026-11-28T01:00:00Z"),
            ["夜間・休日の担当", "J-LIS"]
        );
    }

    #[test]
    fn a_contact_hours_must_exist_and_be_one_of_within_or_outside() {
        let bad = CONTACTS.replace("outside = \"office\"", "outside = \"nights\"");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
        let text = std::fs::read_to_string(path).unwrap() + &bad;
        let err = Config::parse_str(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown hours \"nights\" in recipient"),
            "{err}"
        );
        let both = CONTACTS.replace(
            "outside = \"office\"",
            "outside = \"office\"\nhours = \"office\"",
        );
        let err = Config::parse_str(
            &(std::fs::read_to_string(path).unwrap() + &both),
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("both hours and outside"), "{err}");
    }
}
