//! Unit tests of the outbox, the signature, the syslog line and the e-mail message. No
//! network: the one delivery test goes through a Unix datagram socket in a temp directory.

use crate::testutil::TempDir;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use super::*;

const DEMO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));

fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|err| panic!("bad test timestamp {text}: {err}"))
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir).unwrap_or_else(|err| panic!("open outbox: {err}"))
}

fn notice(key: &str, channel: Channel) -> Notice {
    Notice {
        key: key.to_owned(),
        event: "emergency-stop".to_owned(),
        recipient: "福岡県 住基ネット担当".to_owned(),
        channel,
        subject: "【緊急】住基ネット 切り離しのお知らせ (宮若市)".to_owned(),
        body: "宮若市の住基ネットを切り離しました。\n\nThe 住基ネット segment of Miyawaka was cut off."
            .to_owned(),
        document: serde_json::json!({ "event": "emergency-stop", "target": "all", "level": 2 }),
        reference: Some("OP-000042".to_owned()),
        drill: false,
    }
}

fn email(key: &str, to: &str) -> Notice {
    notice(key, Channel::Email { to: to.to_owned() })
}

fn enqueue(outbox: &mut Outbox, notice: Notice) -> bool {
    outbox
        .enqueue(notice)
        .unwrap_or_else(|err| panic!("enqueue: {err}"))
}

fn ids(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.notice.key.as_str()).collect()
}

fn due(outbox: &Outbox, at: &str) -> Vec<OutboxEntry> {
    outbox
        .due(ts(at))
        .unwrap_or_else(|err| panic!("due: {err}"))
}

#[test]
fn outbox_survives_reopen() {
    let tmp = TempDir::new("reopen");
    let original = email("OP-1/prefecture-email", "juki@pref.example.jp");
    {
        let mut outbox = open(&tmp.state());
        assert!(enqueue(&mut outbox, original.clone()));
        let id = outbox.pending().expect("pending")[0].id;
        outbox
            .mark_failed(id, ts("2026-04-01T00:00:00Z"), "connection refused")
            .expect("mark failed");
    }
    let mode = std::fs::metadata(tmp.state().join(DB_FILE))
        .expect("outbox file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "outbox.db mode");

    let outbox = open(&tmp.state());
    let pending = outbox.pending().expect("pending after reopen");
    assert_eq!(pending.len(), 1);
    let entry = &pending[0];
    assert_eq!(
        entry.notice, original,
        "notice round-trips through the database"
    );
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.next_attempt_at, "2026-04-01T00:00:01.000000000Z");
    assert_eq!(entry.last_error.as_deref(), Some("connection refused"));
    assert_eq!(entry.delivered_at, None);
    assert_eq!(
        entry.created_at.len(),
        "2026-04-01T00:00:00.000000000Z".len()
    );
    assert!(entry.created_at.ends_with('Z'));
}

#[test]
fn same_key_is_queued_once() {
    let tmp = TempDir::new("idempotent");
    let mut outbox = open(&tmp.state());
    let first = email("OP-2/prefecture-email", "juki@pref.example.jp");
    assert!(enqueue(&mut outbox, first.clone()));
    let mut again = first.clone();
    again.subject = "a different rendering".to_owned();
    assert!(!enqueue(&mut outbox, again), "same key queued twice");
    let pending = outbox.pending().expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].notice, first, "the first notice stands");

    // Delivered notices still hold their key.
    outbox
        .mark_delivered(pending[0].id, ts("2026-04-01T00:00:00Z"))
        .expect("mark delivered");
    assert!(!enqueue(&mut outbox, first), "delivered key queued again");
    assert_eq!(outbox.pending_count().expect("count"), 0);
    assert_eq!(outbox.recent(10).expect("recent").len(), 1);
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let secs: Vec<u64> = (0..=12).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(
        secs,
        [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300],
        "backoff schedule"
    );
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);

    let tmp = TempDir::new("backoff");
    let mut outbox = open(&tmp.state());
    enqueue(&mut outbox, email("OP-3/a", "a@example.jp"));
    let id = outbox.pending().expect("pending")[0].id;
    let start = ts("2026-04-01T00:00:00Z");
    let mut at = start;
    for (attempt, wait) in [1u32, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        .into_iter()
        .enumerate()
    {
        outbox
            .mark_failed(id, at, &format!("failure {attempt}"))
            .expect("mark failed");
        let entry = &outbox.pending().expect("pending")[0];
        assert_eq!(entry.attempts as usize, attempt + 1);
        let next: Timestamp = entry.next_attempt_at.parse().expect("next attempt");
        assert_eq!(
            next.duration_since(at).as_secs(),
            i64::from(wait),
            "wait after attempt {}",
            attempt + 1
        );
        // Not due a nanosecond early, due exactly at the time.
        let early = next.checked_sub(Duration::from_nanos(1)).expect("early");
        assert!(outbox.due(early).expect("due").is_empty());
        assert_eq!(outbox.due(next).expect("due").len(), 1);
        at = next;
    }
    assert_eq!(
        outbox.pending().expect("pending")[0].last_error.as_deref(),
        Some("failure 10")
    );
    outbox.mark_delivered(id, at).expect("deliver");
    let entry = &outbox.recent(1).expect("recent")[0];
    assert_eq!(entry.attempts, 12);
    assert_eq!(entry.last_error, None);
    assert!(entry.delivered_at.is_some());
}

#[test]
fn due_keeps_order_per_destination() {
    let tmp = TempDir::new("due");
    let mut outbox = open(&tmp.state());
    enqueue(&mut outbox, email("stop/pref", "juki@pref.example.jp"));
    enqueue(
        &mut outbox,
        notice(
            "stop/jlis",
            Channel::Webhook {
                url: "https://jlis.example.jp/hooks".to_owned(),
            },
        ),
    );
    enqueue(&mut outbox, email("restore/pref", "juki@pref.example.jp"));
    enqueue(&mut outbox, notice("stop/syslog", Channel::Syslog));
    let far = "2100-01-01T00:00:00Z";

    // The restore waits behind the stop to the same address.
    assert_eq!(
        ids(&due(&outbox, far)),
        ["stop/pref", "stop/jlis", "stop/syslog"]
    );
    // Nothing is due before it was queued.
    assert!(due(&outbox, "2000-01-01T00:00:00Z").is_empty());

    let pending = outbox.pending().expect("pending");
    let id = |key: &str| {
        pending
            .iter()
            .find(|e| e.notice.key == key)
            .map(|e| e.id)
            .expect("entry")
    };
    let t0 = ts("2099-01-01T00:00:00Z");
    outbox
        .mark_failed(id("stop/pref"), t0, "refused")
        .expect("fail");
    outbox.mark_delivered(id("stop/jlis"), t0).expect("deliver");
    assert_eq!(
        ids(&due(&outbox, "2099-01-01T00:00:00.5Z")),
        ["stop/syslog"],
        "the failed stop is backing off, the restore still waits behind it"
    );
    assert_eq!(
        ids(&due(&outbox, "2099-01-01T00:00:01Z")),
        ["stop/pref", "stop/syslog"]
    );
    outbox.mark_delivered(id("stop/pref"), t0).expect("deliver");
    assert_eq!(
        ids(&due(&outbox, "2099-01-01T00:00:01Z")),
        ["restore/pref", "stop/syslog"]
    );
    assert_eq!(
        ids(&outbox.pending().expect("pending")),
        ["restore/pref", "stop/syslog"]
    );
    assert_eq!(
        ids(&outbox.recent(2).expect("recent")),
        ["stop/syslog", "restore/pref"],
        "recent is newest first"
    );
}

#[test]
fn marking_checks_state() {
    let tmp = TempDir::new("marks");
    let mut outbox = open(&tmp.state());
    enqueue(&mut outbox, email("OP-4/x", "x@example.jp"));
    let id = outbox.pending().expect("pending")[0].id;
    let at = ts("2026-04-01T00:00:00Z");
    assert!(matches!(
        outbox.mark_delivered(id + 100, at),
        Err(NotifyError::NotFound { .. })
    ));
    outbox.mark_delivered(id, at).expect("deliver");
    assert!(matches!(
        outbox.mark_delivered(id, at),
        Err(NotifyError::AlreadyDelivered { .. })
    ));
    assert!(matches!(
        outbox.mark_failed(id, at, "late"),
        Err(NotifyError::AlreadyDelivered { .. })
    ));
}

#[test]
fn bad_keys_are_refused() {
    let tmp = TempDir::new("keys");
    let mut outbox = open(&tmp.state());
    for key in ["", "OP-1\r\nBcc: x@example.jp", &"k".repeat(513)] {
        assert!(
            matches!(
                outbox.enqueue(email(key, "x@example.jp")),
                Err(NotifyError::InvalidKey { .. })
            ),
            "key {key:?} accepted"
        );
    }
    // Japanese is fine: it is encoded where it travels.
    assert!(enqueue(
        &mut outbox,
        email("OP-5/福岡県/email", "x@example.jp")
    ));
}

#[test]
fn newer_schema_is_refused() {
    let tmp = TempDir::new("too-new");
    drop(open(&tmp.state()));
    let conn = rusqlite::Connection::open(tmp.state().join(DB_FILE)).expect("open db");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    assert!(matches!(
        Outbox::open(&tmp.state()),
        Err(NotifyError::Store(crate::store::StoreError::TooNew {
            found: 99,
            ..
        }))
    ));
}

#[test]
fn signature_matches_known_vector() {
    // Computed independently with Python's hmac module:
    // hmac.new(b"sekisho-test-secret", b"1775001600." + body, hashlib.sha256).hexdigest()
    let body = r#"{"key":"OP-000042/jlis-webhook","subject":"【緊急】切り離し"}"#;
    assert_eq!(
        webhook::signature(b"sekisho-test-secret", 1_775_001_600, body.as_bytes()),
        "sha256=cd2be2bdd3b14989d9e454038f3ee621ee46bdc0f3c17cd112e092f82d2d9a50"
    );
}

#[test]
fn webhook_payload_and_headers() {
    let mut n = notice(
        "OP-6/福岡県",
        Channel::Webhook {
            url: "http://127.0.0.1/".to_owned(),
        },
    );
    n.drill = true;
    let payload = webhook::payload(&n);
    assert_eq!(payload["key"], "OP-6/福岡県");
    assert_eq!(payload["subject"], n.subject.as_str());
    assert_eq!(payload["body"], n.body.as_str());
    assert_eq!(payload["target"], "all", "document fields kept");
    assert_eq!(payload["reference"], "OP-000042");
    assert_eq!(payload["drill"], true);
    n.document = serde_json::json!([1, 2]);
    assert_eq!(webhook::payload(&n)["document"], serde_json::json!([1, 2]));
    assert_eq!(
        webhook::header_key("OP-6/福岡 %"),
        "OP-6/%E7%A6%8F%E5%B2%A1%20%25"
    );
}

#[test]
fn syslog_line_is_rfc5424() {
    let mut n = notice("OP-000042-1a2b3c4d/syslog", Channel::Syslog);
    n.recipient = "SIEM \"main\" [x]".to_owned();
    let line = syslog::format(&n, ts("2026-04-01T09:00:00.123456789Z"), "gw01", 4242);
    assert_eq!(
        line,
        "<129>1 2026-04-01T09:00:00.123456Z gw01 sekisho 4242 emergency-stop \
         [sekisho@32473 key=\"OP-000042-1a2b3c4d/syslog\" reference=\"OP-000042\" \
         recipient=\"SIEM \\\"main\\\" [x\\]\"] \u{feff}【緊急】住基ネット 切り離しのお知らせ (宮若市) \
         {\"event\":\"emergency-stop\",\"level\":2,\"target\":\"all\"}"
    );

    n.event = "restore".to_owned();
    n.reference = None;
    n.drill = true;
    n.subject = "復旧\nのお知らせ".to_owned();
    let line = syslog::format(&n, ts("2026-04-01T09:00:00Z"), "", 1);
    assert!(
        line.starts_with(
            "<133>1 2026-04-01T09:00:00.000000Z - sekisho 1 restore \
             [sekisho@32473 key=\"OP-000042-1a2b3c4d/syslog\" recipient="
        ),
        "{line}"
    );
    assert!(
        line.contains(" drill=\"yes\"] \u{feff}復旧 のお知らせ {"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn email_message_headers() {
    let from: lettre::message::Mailbox =
        "宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>"
            .parse()
            .expect("sender");
    let mut n = email(
        "OP-000042-1a2b3c4d/prefecture-email",
        "juki@pref.example.jp",
    );
    n.drill = true;
    let message = smtp::message(&n, &from, "juki@pref.example.jp").expect("message");
    let text = String::from_utf8(message.formatted()).expect("ascii message");
    assert!(
        text.is_ascii(),
        "headers and body are MIME-encoded:\n{text}"
    );
    assert!(
        text.contains(
            "Message-ID: <b8ec13878c1ed8cc4c560c3e24cef5ff99dda455ba667ef152bebcb9c7ee5dc1@sekisho>\r\n"
        ),
        "{text}"
    );
    assert_eq!(
        smtp::message_id(&n.key),
        "<b8ec13878c1ed8cc4c560c3e24cef5ff99dda455ba667ef152bebcb9c7ee5dc1@sekisho>"
    );
    assert!(text.contains("X-Sekisho-Key: OP-000042-1a2b3c4d/prefecture-email\r\n"));
    assert!(text.contains("X-Sekisho-Reference: OP-000042\r\n"));
    assert!(text.contains("X-Sekisho-Drill: yes\r\n"));
    assert!(text.contains("Subject: =?utf-8?"), "{text}");
    assert!(
        text.contains("Content-Type: text/plain; charset=utf-8"),
        "{text}"
    );

    n.drill = false;
    let text = String::from_utf8(
        smtp::message(&n, &from, "juki@pref.example.jp")
            .expect("message")
            .formatted(),
    )
    .expect("ascii");
    assert!(!text.contains("X-Sekisho-Drill"));
    assert!(matches!(
        smtp::message(&n, &from, "not an address"),
        Err(NotifyError::InvalidAddress { .. })
    ));
}

fn config_with(notify: &str) -> crate::config::Config {
    let text = format!(
        "{DEMO}\n[[recipient]]\nname = \"SIEM\"\nkind = \"security_chief\"\nemail = \"siem@city.example.jp\"\n\n{notify}"
    );
    crate::config::Config::parse_str(&text, Path::new("/etc/sekisho/sekisho.toml"))
        .unwrap_or_else(|err| panic!("test configuration does not parse: {err}"))
}

#[test]
fn sender_reads_secrets_and_reports_missing_channels() {
    let tmp = TempDir::new("sender");
    let missing = tmp.join("missing.key");
    let config = config_with(&format!(
        "[notify]\nmunicipality = \"宮若市\"\nsender = \"宮若市 <juki-admin@city.example.jp>\"\n\
         smtp = {{ host = \"127.0.0.1\", port = 25, starttls = \"off\" }}\n\
         webhook_secret_file = \"{}\"\n",
        missing.display()
    ));
    assert!(matches!(
        Sender::from_config(&config),
        Err(NotifyError::ReadSecret { .. })
    ));
    std::fs::write(&missing, "\n").expect("write key");
    assert!(matches!(
        Sender::from_config(&config),
        Err(NotifyError::EmptySecret { .. })
    ));
    std::fs::write(&missing, "s3cret\n").expect("write key");
    let sender = Sender::from_config(&config).expect("sender");
    assert!(!format!("{sender:?}").contains("s3cret"));
    assert!(matches!(
        sender.send(&notice("k", Channel::Syslog)),
        Err(NotifyError::SyslogNotConfigured { .. })
    ));
}

#[test]
fn deliver_due_over_unix_syslog() {
    let tmp = TempDir::new("deliver");
    let socket_path = tmp.join("log.sock");
    let config = config_with(&format!(
        "[notify]\nmunicipality = \"宮若市\"\nsender = \"宮若市 <juki-admin@city.example.jp>\"\n\
         smtp = {{ host = \"127.0.0.1\", port = 25 }}\nsyslog = \"unix://{}\"\n",
        socket_path.display()
    ));
    let sender = Sender::from_config(&config).expect("sender");
    let mut outbox = open(&tmp.state());
    enqueue(&mut outbox, notice("OP-7/syslog", Channel::Syslog));
    let mut second = notice("OP-8/syslog", Channel::Syslog);
    second.event = "restore".to_owned();
    enqueue(&mut outbox, second);

    // No listener yet: the first fails, the second waits behind it.
    let t0 = Timestamp::now();
    assert_eq!(
        deliver_due(&mut outbox, &sender, t0).expect("deliver"),
        (0, 1)
    );
    let pending = outbox.pending().expect("pending");
    assert_eq!(pending[0].attempts, 1);
    assert!(
        pending[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot write to syslog unix://")),
        "{:?}",
        pending[0].last_error
    );
    assert_eq!(pending[1].attempts, 0);
    // Still backing off.
    assert_eq!(
        deliver_due(&mut outbox, &sender, t0).expect("deliver"),
        (0, 0)
    );

    let listener = UnixDatagram::bind(&socket_path).expect("bind syslog socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let later = t0.checked_add(Duration::from_secs(1)).expect("later");
    assert_eq!(
        deliver_due(&mut outbox, &sender, later).expect("deliver"),
        (2, 0),
        "both delivered in one call, in order"
    );
    let mut buf = vec![0; 65536];
    let mut events = Vec::new();
    for _ in 0..2 {
        let n = listener.recv(&mut buf).expect("syslog message");
        let line = std::str::from_utf8(&buf[..n]).expect("utf-8");
        events.push(line.split(' ').nth(5).expect("msgid").to_owned());
    }
    assert_eq!(events, ["emergency-stop", "restore"]);
    assert!(outbox.pending().expect("pending").is_empty());
    assert_eq!(
        deliver_due(&mut outbox, &sender, later).expect("deliver"),
        (0, 0)
    );
}

#[test]
fn worker_thread_can_own_outbox_and_sender() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Outbox>();
    send::<Sender>();
    sync::<Sender>();
}
