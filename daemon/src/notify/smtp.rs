//! The e-mail channel: one message per notice, over SMTP to `[notify] smtp`.
//!
//! `starttls = "off"` talks plain SMTP; `"opportunistic"` upgrades with STARTTLS when the
//! server offers it and stays plain otherwise (but a failed TLS handshake, e.g. an
//! untrusted certificate, fails the attempt); `"required"` fails unless STARTTLS succeeds.
//! Certificates are checked against the Mozilla roots (webpki-roots). With `user` and
//! `password_file`, sekisho authenticates (PLAIN or LOGIN, as the server offers).
//!
//! The message: `From` is `[notify] sender`, `To` the recipient's address, subject and
//! body UTF-8 (RFC 2047 encoded-words for the subject, base64 or quoted-printable for the
//! `text/plain; charset=utf-8` body, whichever is shorter), and these headers:
//! - `Message-ID: <SHA256-OF-KEY@sekisho>` — the same for every retry of one notice, so a
//!   mail system or an officer recognises a repeat;
//! - `X-Sekisho-Key: <idempotency key>`, `X-Sekisho-Event: <event>`;
//! - `X-Sekisho-Reference: <operation-history reference>` when there is one;
//! - `X-Sekisho-Drill: yes` for drills.
//!
//! A send succeeds only when the server answered `250` to the end of `DATA`.

use lettre::Message;
use lettre::SmtpTransport;
use lettre::Transport;
use lettre::message::Mailbox;
use lettre::message::SinglePart;
use lettre::message::header::ContentType;
use lettre::message::header::HeaderName;
use lettre::message::header::HeaderValue;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::client::TlsParameters;
use sha2::Digest;

use super::Notice;
use super::NotifyError;
use super::SEND_TIMEOUT;
use crate::config::Smtp;
use crate::config::Starttls;

/// The domain part of every `Message-ID`.
pub const MESSAGE_ID_DOMAIN: &str = "sekisho";

/// A configured SMTP relay and the `From` mailbox.
pub(crate) struct SmtpChannel {
    transport: SmtpTransport,
    from: Mailbox,
    server: String,
}

impl SmtpChannel {
    pub(crate) fn new(smtp: &Smtp, sender: &str) -> Result<SmtpChannel, NotifyError> {
        let from: Mailbox = sender
            .parse()
            .map_err(|source| NotifyError::InvalidSender {
                sender: sender.to_owned(),
                source,
            })?;
        let tls_params = || {
            TlsParameters::new(smtp.host.clone()).map_err(|source| NotifyError::SmtpTls {
                host: smtp.host.clone(),
                source,
            })
        };
        let tls = match smtp.starttls {
            Starttls::Off => Tls::None,
            Starttls::Opportunistic => Tls::Opportunistic(tls_params()?),
            Starttls::Required => Tls::Required(tls_params()?),
        };
        let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(password_file)) = (&smtp.user, &smtp.password_file) {
            let password = super::read_secret("smtp password", password_file)?;
            let password = String::from_utf8_lossy(&password).into_owned();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(SmtpChannel {
            transport: builder.build(),
            from,
            server: format!("{}:{} (starttls {})", smtp.host, smtp.port, smtp.starttls),
        })
    }

    /// `HOST:PORT (starttls MODE)`.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn send(&self, notice: &Notice, to: &str) -> Result<(), NotifyError> {
        let message = message(notice, &self.from, to)?;
        let response = self
            .transport
            .send(&message)
            .map_err(|source| NotifyError::Smtp {
                key: notice.key.clone(),
                server: self.server.clone(),
                source,
            })?;
        tracing::debug!(key = %notice.key, code = %response.code(), "smtp server accepted notice");
        Ok(())
    }
}

/// `<HEX-SHA256-OF-KEY@sekisho>`.
pub fn message_id(key: &str) -> String {
    format!(
        "<{}@{MESSAGE_ID_DOMAIN}>",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

/// The e-mail for `notice`, from `from` to `to`.
pub fn message(notice: &Notice, from: &Mailbox, to: &str) -> Result<Message, NotifyError> {
    let to: Mailbox = to.parse().map_err(|source| NotifyError::InvalidAddress {
        key: notice.key.clone(),
        to: to.to_owned(),
        source,
    })?;
    let header = |name: &'static str, value: &str| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_owned())
    };
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(notice.subject.as_str())
        .message_id(Some(message_id(&notice.key)))
        .user_agent(format!("sekisho/{}", env!("CARGO_PKG_VERSION")))
        .raw_header(header("X-Sekisho-Key", &notice.key))
        .raw_header(header("X-Sekisho-Event", &notice.event));
    if let Some(reference) = &notice.reference {
        builder = builder.raw_header(header("X-Sekisho-Reference", reference));
    }
    if notice.drill {
        builder = builder.raw_header(header("X-Sekisho-Drill", "yes"));
    }
    builder
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(notice.body.clone()),
        )
        .map_err(|source| NotifyError::BuildEmail {
            key: notice.key.clone(),
            source,
        })
}
