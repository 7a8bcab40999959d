//! The webhook channel: a signed HTTPS POST of the notice's JSON document.
//!
//! # The receiver's contract
//!
//! sekisho sends `POST <recipient webhook URL>` with the body: the notice's JSON
//! `document` (an object; anything else is wrapped as `{"document": …}`) with these fields
//! set by sekisho: `key` (the idempotency key), `subject`, `body` (the rendered Japanese +
//! English text), and, unless the document has them already, `event`, `recipient`,
//! `reference` and `drill`. Headers:
//!
//! | header | value |
//! | --- | --- |
//! | `Content-Type` | `application/json` |
//! | `X-Sekisho-Timestamp` | Unix time in seconds when this attempt was signed, e.g. `1775001600` |
//! | `X-Sekisho-Signature` | `sha256=` + lowercase hex HMAC-SHA256(secret, TIMESTAMP + `.` + BODY) |
//! | `Idempotency-Key` | the key; bytes outside visible ASCII and `%` percent-encoded (UTF-8) |
//!
//! The secret is the content of `[notify] webhook_secret_file` with trailing whitespace
//! removed, shared with the receiver out of band. The receiver must
//! 1. compute the HMAC over the *raw* body bytes as received (not a re-serialisation),
//!    compare it in constant time, and answer 401 when it differs;
//! 2. reject a timestamp more than 5 minutes from its own clock (replay of a captured
//!    request), also with 401;
//! 3. treat a second request with an already-seen `Idempotency-Key` as success without
//!    acting on it again: a retry after a lost response carries the same key (with a fresh
//!    timestamp and signature);
//! 4. answer 2xx only once it has stored the notice. Any other status, a redirect or no
//!    answer within 10 s is a failure and sekisho retries with backoff, for ever.
//!
//! Verifying in Python:
//! ```python
//! import hmac, hashlib, time
//! def verify(secret: bytes, headers, raw_body: bytes) -> bool:
//!     ts = headers["X-Sekisho-Timestamp"]
//!     if abs(time.time() - int(ts)) > 300:
//!         return False
//!     mac = hmac.new(secret, ts.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest("sha256=" + mac, headers["X-Sekisho-Signature"])
//! ```
//!
//! sekisho connects directly (proxy environment variables are ignored: the gateway talks
//! only to the configured addresses) and follows no redirects.

use std::io::Read;

use hmac::Hmac;
use hmac::Mac;
use jiff::Timestamp;
use sha2::Sha256;

use super::Notice;
use super::NotifyError;
use super::SEND_TIMEOUT;

/// The header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "X-Sekisho-Timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Sekisho-Signature";
/// How much of an error response body is kept for the outbox listing.
const DETAIL_LEN: usize = 200;

/// `sha256=` + lowercase hex HMAC-SHA256(`secret`, `timestamp` + "." + `body`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body posted for `notice`.
pub fn payload(notice: &Notice) -> serde_json::Value {
    let mut object = match &notice.document {
        serde_json::Value::Object(object) => object.clone(),
        other => {
            let mut object = serde_json::Map::new();
            object.insert("document".to_owned(), other.clone());
            object
        }
    };
    object.insert("key".to_owned(), notice.key.clone().into());
    object.insert("subject".to_owned(), notice.subject.clone().into());
    object.insert("body".to_owned(), notice.body.clone().into());
    object
        .entry("event")
        .or_insert_with(|| notice.event.clone().into());
    object
        .entry("recipient")
        .or_insert_with(|| notice.recipient.clone().into());
    object
        .entry("reference")
        .or_insert_with(|| notice.reference.clone().into());
    object.entry("drill").or_insert(notice.drill.into());
    serde_json::Value::Object(object)
}

/// `key` with bytes outside visible ASCII, and `%`, percent-encoded: a valid header value.
pub fn header_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The HTTP client and the signing secret.
pub(crate) struct WebhookChannel {
    agent: ureq::Agent,
    secret: Option<Vec<u8>>,
}

impl WebhookChannel {
    pub(crate) fn new(secret: Option<Vec<u8>>) -> WebhookChannel {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(SEND_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(format!("sekisho/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        WebhookChannel { agent, secret }
    }

    pub(crate) fn is_signed(&self) -> bool {
        self.secret.is_some()
    }

    pub(crate) fn send(
        &self,
        notice: &Notice,
        url: &str,
        now: Timestamp,
    ) -> Result<(), NotifyError> {
        let key = || notice.key.clone();
        let secret = self
            .secret
            .as_deref()
            .ok_or_else(|| NotifyError::WebhookSecretMissing { key: key() })?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NotifyError::InvalidWebhookUrl {
                key: key(),
                url: url.to_owned(),
            });
        }
        let body = serde_json::to_vec(&payload(notice))
            .map_err(|source| NotifyError::Serialize { key: key(), source })?;
        let timestamp = now.as_second();
        let http_err = |source| NotifyError::Http {
            key: key(),
            url: url.to_owned(),
            source: Box::new(source),
        };
        let mut response = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
            .header("Idempotency-Key", header_key(&notice.key))
            .send(&body[..])
            .map_err(http_err)?;
        let status = response.status();
        if status.is_success() {
            tracing::debug!(key = %notice.key, %url, status = status.as_u16(), "webhook accepted notice");
            return Ok(());
        }
        let mut raw = Vec::new();
        // The detail is a courtesy: a body that cannot be read leaves it empty.
        let _ = response
            .body_mut()
            .as_reader()
            .take(4096)
            .read_to_end(&mut raw);
        let detail: String = String::from_utf8_lossy(&raw)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(DETAIL_LEN)
            .collect();
        Err(NotifyError::HttpStatus {
            key: key(),
            url: url.to_owned(),
            status: status.as_u16(),
            detail: detail.trim().to_owned(),
        })
    }
}
