//! Notices with the real daemon (R12, R16–R18): the prefecture's mail server and J-LIS's
//! webhook receiver run inside the gateway's namespace on its loopback, as real servers
//! (aiosmtpd, and a receiver that checks the HMAC signature).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sekisho_testbed::servers::{self, KillOnDrop};
use sekisho_testbed::{Host, Probe, Sekishod, TcpServer, Topology, tcp_probe};

const SECRET: &str = "sekisho-notices-test-secret";

struct Receivers {
    _smtp: Option<KillOnDrop>,
    _hook: KillOnDrop,
    mail: PathBuf,
    hooks: PathBuf,
    smtp_port: u16,
    scratch: PathBuf,
}

impl Receivers {
    fn start(topo: &Topology, scratch: &Path, with_smtp: bool) -> Receivers {
        let mail = scratch.join("mail");
        let hooks = scratch.join("hooks");
        std::fs::create_dir_all(&mail).unwrap();
        std::fs::create_dir_all(&hooks).unwrap();
        let key = scratch.join("webhook.key");
        std::fs::write(&key, format!("{SECRET}\n")).unwrap();
        let ns = topo.ns(Host::Gw);
        let (hook, port) = servers::start_webhook(scratch, &key, &hooks, Some(ns));
        let smtp_port = 2525;
        let smtp = with_smtp.then(|| servers::start_smtp(scratch, smtp_port, &mail, Some(ns)));
        let r = Receivers {
            _smtp: smtp,
            _hook: hook,
            mail,
            hooks,
            smtp_port,
            scratch: scratch.to_owned(),
        };
        std::fs::write(scratch.join("hook.port"), port.to_string()).unwrap();
        r
    }

    fn hook_port(&self) -> u16 {
        std::fs::read_to_string(self.scratch.join("hook.port"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The demo configuration with a prefecture reached by mail and J-LIS by webhook.
fn with_recipients(text: String, smtp_port: u16, hook_port: u16, key: &Path) -> String {
    format!(
        "{text}
[[recipient]]
name = \"福岡県 住基ネット担当\"
kind = \"prefecture\"
email = \"juki@pref.example.jp\"

[[recipient]]
name = \"地方公共団体情報システム機構\"
kind = \"jlis\"
webhook = \"http://127.0.0.1:{hook_port}/hooks/sekisho\"

[notify]
municipality = \"宮若市\"
sender = \"宮若市 住基ネット システム管理者 <juki-admin@city.example.jp>\"
smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, starttls = \"off\" }}
webhook_secret_file = \"{}\"
",
        key.display()
    )
}

fn setup(with_smtp: bool) -> (Topology, Receivers, Sekishod) {
    Topology::remove_stale().expect("stale topologies removed");
    servers::ensure_aiosmtpd();
    let topo = Topology::build().expect("topology");
    let scratch = Sekishod::scratch_dir().unwrap();
    let receivers = Receivers::start(&topo, &scratch, with_smtp);
    let (smtp, hook) = (receivers.smtp_port, receivers.hook_port());
    let key = scratch.join("webhook.key");
    let daemon = Sekishod::start_demo(&topo, |t| with_recipients(t, smtp, hook, &key))
        .expect("sekishod starts");
    (topo, receivers, daemon)
}

fn addr(host: Host, port: u16) -> SocketAddr {
    SocketAddr::new(host.addr(false), port)
}

#[test]
fn r17_an_emergency_stop_is_reported_to_the_prefecture_and_jlis_within_2_s() {
    let (_topo, rx, daemon) = setup(true);
    let start = Instant::now();
    let out = daemon
        .ctl_json(&[
            "isolate",
            "asset:cs01",
            "--reason",
            "不審な通信を検知",
            "--emergency",
            "--level",
            "2",
        ])
        .unwrap();
    let reference = out["reference"].as_str().unwrap().to_owned();
    let mail = servers::wait_for_json(&rx.mail, 1, Duration::from_secs(2));
    let hooks = servers::wait_for_json(&rx.hooks, 1, Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(3));
    let m = &mail[0];
    let subject = m["subject"].as_str().unwrap();
    assert!(subject.starts_with("【緊急】"), "{subject}");
    assert!(
        subject.contains("宮若市") && subject.contains(&reference),
        "{subject}"
    );
    let body = m["body"].as_str().unwrap();
    for needle in [
        "承認を得ずに切り離し",
        "不正行為",
        "脅威度",
        "令和",
        "JST",
        "不審な通信を検知",
        "[English]",
    ] {
        assert!(body.contains(needle), "mail lacks {needle}:\n{body}");
    }
    assert_eq!(m["rcpt_tos"][0], "juki@pref.example.jp");
    assert!(m["key"].as_str().unwrap().starts_with(&reference));
    let h = &hooks[0];
    assert!(h["signature"].as_str().unwrap().starts_with("sha256="));
    assert_eq!(h["body"]["event"], "emergency_stop");
    assert_eq!(h["body"]["reference"], reference.as_str());
    // Delivered: nothing waits.
    let outbox = daemon.ctl_json(&["notify", "outbox"]).unwrap();
    assert!(
        wait_until(
            || daemon.ctl_json(&["notify", "outbox"]).unwrap()["pending"]
                .as_array()
                .unwrap()
                .is_empty()
        ),
        "{outbox}"
    );
    // The restore is reported too.
    daemon
        .ctl_json(&[
            "restore",
            "asset:cs01",
            "--reason",
            "確認済み",
            "--approved-by",
            "統括責任者",
        ])
        .unwrap();
    let mail = servers::wait_for_json(&rx.mail, 2, Duration::from_secs(3));
    assert!(
        mail.iter()
            .any(|m| m["subject"].as_str().unwrap().starts_with("【復旧】"))
    );
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_notice_waits_out_a_dead_mail_server_and_a_kill_9_and_arrives_once() {
    let (topo, rx, mut daemon) = setup(false);
    daemon
        .ctl_json(&[
            "isolate",
            "peer:prefecture",
            "--reason",
            "管理不備",
            "--emergency",
        ])
        .unwrap();
    // The webhook goes out; the mail waits.
    servers::wait_for_json(&rx.hooks, 1, Duration::from_secs(2));
    assert!(wait_until(|| {
        let o = daemon.ctl_json(&["notify", "outbox"]).unwrap();
        o["pending"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["attempts"].as_u64().unwrap() >= 1)
    }));
    assert!(
        daemon.ctl_json(&["status"]).unwrap()["notifications_pending"]
            .as_u64()
            .unwrap()
            >= 1
    );
    daemon.kill9().unwrap();
    // The mail server comes back while sekishod is down; then sekishod comes back.
    let _smtp = servers::start_smtp(&rx.scratch, rx.smtp_port, &rx.mail, Some(topo.ns(Host::Gw)));
    daemon.spawn(&topo).unwrap();
    let mail = servers::wait_for_json(&rx.mail, 1, Duration::from_secs(20));
    assert!(mail[0]["subject"].as_str().unwrap().starts_with("【緊急】"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        servers::files(&rx.mail, "eml").len(),
        1,
        "delivered exactly once"
    );
}

#[test]
fn r16_a_maintenance_window_gives_notice_stops_and_recovers_in_order() {
    let (topo, rx, daemon) = setup(true);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let now = jiff::Timestamp::now();
    let start = now + jiff::SignedDuration::from_secs(3);
    let end = now + jiff::SignedDuration::from_secs(6);
    let w = daemon
        .ctl_json(&[
            "maintenance",
            "schedule",
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--reason",
            "CS の定期保守",
            "--target",
            "peer:prefecture",
        ])
        .unwrap();
    assert_eq!(w["window"]["state"], "scheduled");
    // Bad schedules are refused, each with a clear line.
    for (s, e, needle) in [
        (
            (now - jiff::SignedDuration::from_secs(60)).to_string(),
            end.to_string(),
            "past",
        ),
        (
            (now + jiff::SignedDuration::from_secs(600)).to_string(),
            (now + jiff::SignedDuration::from_secs(300)).to_string(),
            "end",
        ),
        (
            (now + jiff::SignedDuration::from_secs(4)).to_string(),
            (now + jiff::SignedDuration::from_secs(30)).to_string(),
            "overlap",
        ),
    ] {
        let out = daemon
            .ctl(&[
                "maintenance",
                "schedule",
                "--start",
                &s,
                "--end",
                &e,
                "--reason",
                "x",
            ])
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prior = servers::wait_for_json(&rx.mail, 1, Duration::from_secs(2));
    assert!(
        prior[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("【事前通知】"),
        "{}",
        prior[0]["subject"]
    );
    // During the window the prefecture is cut off.
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(
        tcp_probe(
            &topo,
            Host::Cs,
            addr(Host::Pref, 443),
            Duration::from_millis(400)
        ),
        Probe::TimedOut
    );
    // After it, the exchange is back and the recovery notice has gone out.
    let all = servers::wait_for_json(&rx.mail, 3, Duration::from_secs(8));
    let subjects: Vec<&str> = all.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert!(
        subjects[1].contains("計画停止")
            || subjects[1].starts_with("【停止】")
            || subjects[1].starts_with("【"),
        "{subjects:?}"
    );
    assert!(subjects[2].starts_with("【復旧】"), "{subjects:?}");
    assert!(wait_until(|| tcp_probe(
        &topo,
        Host::Cs,
        addr(Host::Pref, 443),
        Duration::from_millis(400)
    ) == Probe::Connected));
    let list = daemon.ctl_json(&["maintenance", "list"]).unwrap();
    assert_eq!(list[0]["state"], "done");
}
