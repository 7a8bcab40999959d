//! The notification channels against real servers on loopback: an SMTP server (Python's
//! `aiosmtpd`), an HTTP receiver that checks the HMAC signature (Python's `http.server`),
//! and syslog receivers (UDP and TCP sockets in the test). No root needed.
//!
//! Every process started here is killed by its PID when its guard drops, every wait is
//! bounded, and everything listens on 127.0.0.1 only.

use std::io::Read;
use std::net::TcpListener;
use std::net::TcpStream;
use std::net::UdpSocket;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use jiff::Timestamp;
use sekisho::config::Config;
use sekisho::notify::Channel;
use sekisho::notify::Notice;
use sekisho::notify::NotifyError;
use sekisho::notify::Outbox;
use sekisho::notify::Sender;
use sekisho::notify::deliver_due;

const DEMO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml"));
const SECRET: &str = "sekisho-webhook-test-secret";
const WAIT: Duration = Duration::from_secs(20);

use sekisho_testbed::servers::{self, KillOnDrop, ensure_aiosmtpd, files};

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sekisho-notify-channels-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("find a free port: {err}"))
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo configuration with recipients and `notify` (a TOML `[notify]` body; an SMTP
/// server on the discard port unless it names one, since the prefecture has an address).
fn config(notify: &str, webhook: &str) -> Config {
    let notify = if notify.contains("smtp =") {
        notify.to_owned()
    } else {
        format!("smtp = {{ host = \"127.0.0.1\", port = 9 }}\n{notify}")
    };
    let text = format!(
        "{DEMO}\n\
         [[recipient]]\nname = \"福岡県 住基ネット担当\"\nkind = \"prefecture\"\n\
         email = \"juki@pref.example.jp\"\n\n\
         [[recipient]]\nname = \"地方公共団体情報システム機構\"\nkind = \"jlis\"\n\
         webhook = \"{webhook}\"\n\n\
         [notify]\nmunicipality = \"宮若市\"\n\
         sender = \"宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>\"\n{notify}"
    );
    Config::parse_str(&text, Path::new("/etc/sekisho/sekisho.toml"))
        .unwrap_or_else(|err| panic!("test configuration does not parse: {err}\n{text}"))
}

fn sender(config: &Config) -> Sender {
    Sender::from_config(config).unwrap_or_else(|err| panic!("sender: {}", err.chain()))
}

fn notice(key: &str, channel: Channel) -> Notice {
    Notice {
        key: key.to_owned(),
        event: "emergency-stop".to_owned(),
        recipient: "福岡県 住基ネット担当".to_owned(),
        channel,
        subject: "【緊急・第2報】宮若市 住基ネット 緊急切り離しのお知らせ（令和8年4月1日）"
            .to_owned(),
        body: "福岡県 住基ネット担当 御中\n\n\
               宮若市の住基ネットを、令和8年4月1日 9時00分に緊急切り離ししました。\n\
               発生した事象: 不正アクセスの疑い（脅威度2）\n対応状況: 調査中\n\n\
               --- English ---\n\
               Miyawaka cut off its 住基ネット segment on 2026-04-01 09:00 JST.\n"
            .to_owned(),
        document: serde_json::json!({
            "event": "emergency-stop",
            "municipality": "宮若市",
            "target": "all",
            "category": "misconduct",
            "level": 2,
        }),
        reference: Some("OP-000042".to_owned()),
        drill: false,
    }
}

/// Waits until `dir` holds `count` `*.json` files; returns them parsed.
fn wait_for_json(dir: &Path, count: usize) -> Vec<serde_json::Value> {
    servers::wait_for_json(dir, count, WAIT)
}

fn start_smtp(tmp: &TempDir, port: u16, out: &Path) -> KillOnDrop {
    let guard = servers::start_smtp(&tmp.0, port, out, None);
    wait_for_port(port);
    guard
}

#[test]
fn email_arrives_in_japanese_with_its_key() {
    ensure_aiosmtpd();
    let tmp = TempDir::new("smtp");
    let out = tmp.subdir("mail");
    let port = free_port();
    let _smtp = start_smtp(&tmp, port, &out);
    let config = config(
        &format!(
            "smtp = {{ host = \"127.0.0.1\", port = {port}, starttls = \"opportunistic\" }}\n"
        ),
        "http://127.0.0.1:9/hook",
    );
    let sender = sender(&config);

    let mut n = notice(
        "OP-000042-1a2b3c4d/prefecture-email",
        Channel::Email {
            to: "juki@pref.example.jp".to_owned(),
        },
    );
    n.drill = true;
    sender
        .send(&n)
        .unwrap_or_else(|err| panic!("send: {}", err.chain()));
    let mails = wait_for_json(&out, 1);
    let mail = &mails[0];
    assert_eq!(mail["subject"], n.subject.as_str(), "subject decodes");
    assert_eq!(
        mail["body"].as_str().map(|b| b.replace("\r\n", "\n")),
        Some(n.body.clone()),
        "body decodes"
    );
    assert_eq!(mail["key"], n.key.as_str());
    assert_eq!(mail["reference"], "OP-000042");
    assert_eq!(mail["drill"], "yes");
    assert_eq!(mail["charset"], "utf-8");
    assert_eq!(mail["content_type"], "text/plain");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["juki@pref.example.jp"])
    );
    assert_eq!(mail["mail_from"], "juki-admin@city.example.jp");
    assert_eq!(
        mail["from"],
        "宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>"
    );
    assert_eq!(
        mail["message_id"],
        sekisho::notify::smtp::message_id(&n.key).as_str()
    );
    // The raw message is 7-bit: the Japanese travels MIME-encoded.
    let raw = std::fs::read(out.join("1.eml")).expect("raw message");
    assert!(raw.is_ascii(), "raw message is not 7-bit");
}

#[test]
fn email_waits_in_the_outbox_until_the_server_is_back() {
    ensure_aiosmtpd();
    let tmp = TempDir::new("smtp-down");
    let out = tmp.subdir("mail");
    let state = tmp.path("state");
    let port = free_port();
    let config = config(
        &format!("smtp = {{ host = \"127.0.0.1\", port = {port}, starttls = \"off\" }}\n"),
        "http://127.0.0.1:9/hook",
    );
    let sender = sender(&config);
    let n = notice(
        "OP-000043-5e6f7a8b/prefecture-email",
        Channel::Email {
            to: "juki@pref.example.jp".to_owned(),
        },
    );

    // Server down: the notice is queued, the attempt fails, a retry is scheduled.
    let t0 = Timestamp::now();
    {
        let mut outbox = Outbox::open(&state).expect("open outbox");
        assert!(outbox.enqueue(n.clone()).expect("enqueue"));
        assert!(!outbox.enqueue(n.clone()).expect("enqueue again"));
        let err = sender.send(&n).expect_err("send with the server down");
        assert!(matches!(err, NotifyError::Smtp { .. }), "{}", err.chain());
        let id = outbox.pending().expect("pending")[0].id;
        outbox
            .mark_failed(id, t0, &err.chain())
            .expect("mark failed");
        let entry = &outbox.pending().expect("pending")[0];
        assert_eq!(entry.attempts, 1);
        assert!(
            entry
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("smtp"))
        );
        assert!(
            outbox.due(t0).expect("due").is_empty(),
            "retry is backing off"
        );
        assert_eq!(
            deliver_due(&mut outbox, &sender, t0).expect("deliver"),
            (0, 0)
        );
    }

    // The daemon restarts (the outbox is reopened) and the server comes back.
    let _smtp = start_smtp(&tmp, port, &out);
    let mut outbox = Outbox::open(&state).expect("reopen outbox");
    let later = t0.checked_add(Duration::from_secs(1)).expect("later");
    assert_eq!(
        deliver_due(&mut outbox, &sender, later).expect("deliver"),
        (1, 0)
    );
    let mails = wait_for_json(&out, 1);
    assert_eq!(mails[0]["key"], n.key.as_str());
    assert!(outbox.pending().expect("pending").is_empty());
    let entry = &outbox.recent(1).expect("recent")[0];
    assert_eq!(entry.attempts, 2);
    assert!(entry.delivered_at.is_some());

    // Nothing more goes out: exactly one message.
    let much_later = t0
        .checked_add(Duration::from_secs(3600))
        .expect("much later");
    assert_eq!(
        deliver_due(&mut outbox, &sender, much_later).expect("deliver"),
        (0, 0)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(files(&out, "eml").len(), 1, "delivered exactly once");
}

#[test]
fn webhook_is_signed_and_a_wrong_secret_is_rejected() {
    let tmp = TempDir::new("webhook");
    let out = tmp.subdir("hooks");
    let receiver_key = tmp.path("receiver.key");
    std::fs::write(&receiver_key, format!("{SECRET}\n")).expect("write receiver key");
    let (_receiver, port) = servers::start_webhook(&tmp.0, &receiver_key, &out, None);
    let url = format!("http://127.0.0.1:{port}/hooks/sekisho");

    let sekisho_key = tmp.path("webhook.key");
    std::fs::write(&sekisho_key, format!("{SECRET}\n")).expect("write key");
    let good = config(
        &format!("webhook_secret_file = \"{}\"\n", sekisho_key.display()),
        &url,
    );
    let mut n = notice(
        "OP-000042-1a2b3c4d/jlis-webhook",
        Channel::Webhook { url: url.clone() },
    );
    n.recipient = "地方公共団体情報システム機構".to_owned();

    // Through the outbox, as the daemon does it.
    let mut outbox = Outbox::open(&tmp.path("state")).expect("open outbox");
    assert!(outbox.enqueue(n.clone()).expect("enqueue"));
    let before = Timestamp::now();
    assert_eq!(
        deliver_due(&mut outbox, &sender(&good), Timestamp::now()).expect("deliver"),
        (1, 0),
        "{:?}",
        outbox.recent(1).expect("recent")[0].last_error
    );
    let hooks = wait_for_json(&out, 1);
    let hook = &hooks[0];
    assert_eq!(hook["path"], "/hooks/sekisho");
    assert_eq!(hook["content_type"], "application/json");
    assert_eq!(hook["idempotency_key"], n.key.as_str());
    let ts: i64 = hook["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("timestamp header");
    assert!((ts - before.as_second()).abs() <= 5, "timestamp is now");
    assert!(
        hook["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256=") && s.len() == 7 + 64)
    );
    let body = &hook["body"];
    assert_eq!(body["key"], n.key.as_str());
    assert_eq!(body["subject"], n.subject.as_str());
    assert_eq!(body["body"], n.body.as_str());
    assert_eq!(body["municipality"], "宮若市");
    assert_eq!(body["level"], 2);
    assert_eq!(body["reference"], "OP-000042");
    assert_eq!(body["drill"], false);

    // A sender with the wrong secret is refused with 401, and the notice stays pending.
    let wrong_key = tmp.path("wrong.key");
    std::fs::write(&wrong_key, "not-the-secret").expect("write wrong key");
    let wrong = sender(&config(
        &format!("webhook_secret_file = \"{}\"\n", wrong_key.display()),
        &url,
    ));
    let mut second = n.clone();
    second.key = "OP-000044-9c0d1e2f/jlis-webhook".to_owned();
    match wrong.send(&second) {
        Err(NotifyError::HttpStatus { status: 401, .. }) => {}
        other => panic!("wrong secret: expected HTTP 401, got {other:?}"),
    }
    assert!(outbox.enqueue(second).expect("enqueue"));
    assert_eq!(
        deliver_due(&mut outbox, &wrong, Timestamp::now()).expect("deliver"),
        (0, 1)
    );
    let pending = outbox.pending().expect("pending");
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 401")),
        "{:?}",
        pending[0].last_error
    );
    assert_eq!(
        files(&out, "json").len(),
        1,
        "nothing stored for the bad signature"
    );
}

/// The fields of an RFC 5424 line: (PRI, VERSION, TIMESTAMP, HOSTNAME, APP-NAME, PROCID,
/// MSGID, SD-PARAMs of the one element, MSG).
struct Syslog {
    pri: u8,
    version: String,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

fn parse_syslog(line: &str) -> Syslog {
    let rest = line.strip_prefix('<').expect("PRI opens with <");
    let (pri, rest) = rest.split_once('>').expect("PRI closes with >");
    let mut fields = rest.splitn(7, ' ');
    let mut next = || fields.next().expect("header field").to_owned();
    let (version, timestamp, hostname, app, procid, msgid) =
        (next(), next(), next(), next(), next(), next());
    let rest = next();
    // One SD-ELEMENT: [ID NAME="VALUE" …] with \" \\ \] escapes.
    let mut chars = rest.strip_prefix('[').expect("SD-ELEMENT").chars();
    let sd_id: String = chars.by_ref().take_while(|c| *c != ' ').collect();
    let mut params = Vec::new();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "PARAM-VALUE opens with a quote");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated PARAM-VALUE") {
                '\\' => value.push(chars.next().expect("escaped character")),
                '"' => break,
                c => value.push(c),
            }
        }
        params.push((name, value));
        match chars.next() {
            Some(' ') => continue,
            Some(']') => break,
            other => panic!("after PARAM-VALUE: {other:?}"),
        }
    }
    let msg: String = chars.collect();
    Syslog {
        pri: pri.parse().expect("PRI is a number"),
        version,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd_id,
        params,
        msg: msg.strip_prefix(' ').expect("SP before MSG").to_owned(),
    }
}

fn check_syslog(line: &str, n: &Notice, before: Timestamp) {
    let parsed = parse_syslog(line);
    assert_eq!(parsed.pri, 16 * 8 + 1, "local0.alert");
    assert_eq!(parsed.version, "1");
    let at: Timestamp = parsed.timestamp.parse().expect("RFC 3339 timestamp");
    assert!(parsed.timestamp.ends_with('Z') && parsed.timestamp.len() == 27);
    assert!(at >= before.checked_sub(Duration::from_secs(1)).expect("before"));
    assert!(!parsed.hostname.is_empty());
    assert_eq!(parsed.app, "sekisho");
    assert_eq!(parsed.procid, std::process::id().to_string());
    assert_eq!(parsed.msgid, "emergency-stop");
    assert_eq!(parsed.sd_id, "sekisho@32473");
    assert_eq!(
        parsed.params,
        [
            ("key".to_owned(), n.key.clone()),
            ("reference".to_owned(), "OP-000042".to_owned()),
            ("recipient".to_owned(), n.recipient.clone()),
        ]
    );
    let msg = parsed
        .msg
        .strip_prefix('\u{feff}')
        .expect("MSG starts with a BOM");
    let json = msg
        .strip_prefix(n.subject.as_str())
        .and_then(|rest| rest.strip_prefix(' '))
        .expect("MSG starts with the subject");
    let document: serde_json::Value = serde_json::from_str(json).expect("JSON document");
    assert_eq!(document, n.document);
}

#[test]
fn syslog_over_udp_is_one_rfc5424_line() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let addr = socket.local_addr().expect("local addr");
    let config = config(
        &format!("syslog = \"udp://{addr}\"\n"),
        "http://127.0.0.1:9/hook",
    );
    let n = notice("OP-000042-1a2b3c4d/syslog", Channel::Syslog);
    let before = Timestamp::now();
    sender(&config)
        .send(&n)
        .unwrap_or_else(|err| panic!("send: {}", err.chain()));
    let mut buf = vec![0; 65536];
    let len = socket.recv(&mut buf).expect("syslog datagram within 5 s");
    let line = std::str::from_utf8(&buf[..len]).expect("UTF-8 line");
    assert!(!line.contains('\n'), "one line");
    check_syslog(line, &n, before);
}

#[test]
fn syslog_over_tcp_is_octet_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = listener.local_addr().expect("local addr");
    let config = config(
        &format!("syslog = \"tcp://{addr}\"\n"),
        "http://127.0.0.1:9/hook",
    );
    let n = notice("OP-000042-1a2b3c4d/syslog-tcp", Channel::Syslog);
    let before = Timestamp::now();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut frame = Vec::new();
        stream.read_to_end(&mut frame).expect("read frame");
        frame
    });
    sender(&config)
        .send(&n)
        .unwrap_or_else(|err| panic!("send: {}", err.chain()));
    let frame = reader.join().expect("reader thread");
    let frame = String::from_utf8(frame).expect("UTF-8 frame");
    let (len, message) = frame.split_once(' ').expect("LEN SP MSG");
    assert_eq!(len.parse::<usize>().expect("octet count"), message.len());
    check_syslog(message, &n, before);
}
