//! Emergency cut-off (R11–R15) and the operation history (R7, R10, R22), with the real
//! daemon in the namespace topology and real traffic.

use std::process::Command;
use std::time::{Duration, Instant};

use sekisho_testbed::{Host, Sekishod, StreamCheck, TcpServer, Topology, tcp_probe};

use sekisho_testbed::checks::{ALLOW, addr, allowed, demo_with, denied};

fn setup() -> (Topology, Sekishod) {
    demo_with(|t| t)
}

#[track_caller]
fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(daemon: &Sekishod) -> serde_json::Value {
    daemon.ctl_json(&["status"]).expect("status")
}

#[test]
fn r11_isolating_an_asset_stops_its_running_transfer_at_once() {
    let (topo, daemon) = setup();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let term = StreamCheck::start_with_interval(
        &topo,
        Host::Term1,
        addr(Host::Cs, 443),
        Duration::from_millis(1),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = term.stats();
    let out = daemon
        .ctl_json(&[
            "isolate",
            "asset:term-01",
            "--reason",
            "ウイルス感染の疑い",
            "--approved-by",
            "セキュリティ統括責任者 山田",
        ])
        .unwrap();
    let took = Duration::from_micros(out["took_us"].as_u64().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let after = term.stop();
    assert!(before.echoed > 50, "the transfer was running: {before:?}");
    // Echoes stop: at most what was in flight when the cut-off came into force.
    assert!(
        after.echoed <= before.echoed + 400,
        "echoes kept coming: {before:?} → {after:?}"
    );
    assert!(
        after.since_last_echo >= Duration::from_millis(250),
        "{after:?}"
    );
    assert!(took < Duration::from_millis(500), "cut-off took {took:?}");
    // Only term-01 is cut off.
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    allowed(&topo, Host::Term2, addr(Host::Cs, 443));
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    // Restore lets new connections through.
    ok(daemon
        .ctl(&[
            "restore",
            "asset:term-01",
            "--reason",
            "駆除完了",
            "--approved-by",
            "セキュリティ統括責任者 山田",
        ])
        .unwrap());
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
}

#[test]
fn r14_isolating_a_peer_stops_only_the_exchange_with_that_peer() {
    let (topo, daemon) = setup();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _jlis = TcpServer::start(&topo, Host::Jlis, 443).unwrap();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let pref = StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, 443)).unwrap();
    ok(daemon
        .ctl(&[
            "isolate",
            "peer:prefecture",
            "--reason",
            "不適切な管理",
            "--emergency",
        ])
        .unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let cut = pref.stop();
    assert!(cut.since_last_echo > Duration::from_millis(400), "{cut:?}");
    denied(&topo, Host::Cs, addr(Host::Pref, 443));
    allowed(&topo, Host::Cs, addr(Host::Jlis, 443));
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
}

#[test]
fn isolating_all_stops_everything_but_the_gateways_own_path() {
    let (topo, daemon) = setup();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let plan = ok(daemon.ctl(&["isolate", "all", "--plan"]).unwrap());
    assert!(plan.contains("control socket"), "{plan}");
    assert_eq!(status(&daemon)["isolations"].as_array().unwrap().len(), 0);
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    ok(daemon
        .ctl(&[
            "isolate",
            "all",
            "--reason",
            "大規模障害",
            "--emergency",
            "--category",
            "failure",
            "--level",
            "3",
        ])
        .unwrap());
    denied(&topo, Host::Cs, addr(Host::Pref, 443));
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    // The gateway still answers its operators and reaches its neighbours.
    assert_eq!(status(&daemon)["isolations"][0]["target"], "all");
    assert!(sekisho_testbed::ping(
        &topo,
        Host::Gw,
        Host::Pref.addr(false),
        ALLOW
    ));
}

#[test]
fn r13_isolation_survives_kill_9_restart_and_reload() {
    let (topo, mut daemon) = setup();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    ok(daemon
        .ctl(&[
            "isolate",
            "role:terminal",
            "--reason",
            "点検",
            "--approved-by",
            "統括責任者",
        ])
        .unwrap());
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    daemon.kill9().unwrap();
    denied(&topo, Host::Term2, addr(Host::Cs, 443));
    daemon.spawn(&topo).unwrap();
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    ok(daemon.ctl(&["reload"]).unwrap());
    denied(&topo, Host::Term2, addr(Host::Cs, 443));
    // A reboot: pins and the table gone; the database brings the isolation back.
    daemon.stop().unwrap();
    sekisho::datapath::unpin_all(daemon.pin_dir()).unwrap();
    topo.exec_ok(Host::Gw, &["nft", "delete", "table", "inet", "sekisho"])
        .unwrap();
    daemon.spawn(&topo).unwrap();
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    assert_eq!(status(&daemon)["isolations"][0]["target"], "role:terminal");
    // Removing the isolated role from the configuration is refused until it is restored.
    let text = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        text.replace("role = \"terminal\"", "role = \"desk\"")
            .replace("role:terminal", "role:desk"),
    )
    .unwrap();
    let refused = daemon.ctl(&["reload"]).unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("restore it before"));
}

#[test]
fn a_drill_records_everything_and_cuts_nothing() {
    let (topo, daemon) = setup();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let out = daemon
        .ctl_json(&[
            "isolate",
            "asset:cs01",
            "--reason",
            "訓練",
            "--emergency",
            "--drill",
        ])
        .unwrap();
    assert_eq!(out["drill"], true);
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
    assert!(status(&daemon)["isolations"].as_array().unwrap().is_empty());
    let audit = daemon.ctl_json(&["audit", "show"]).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "isolate-drill" && e["target"] == "asset:cs01"),
        "{audit}"
    );
}

#[test]
fn bad_isolate_requests_are_refused_with_a_clear_line() {
    let (_topo, daemon) = setup();
    for (args, needle) in [
        (
            vec!["isolate", "asset:nobody", "--reason", "x", "--emergency"],
            "nobody",
        ),
        (
            vec!["isolate", "asset:cs01", "--reason", "x"],
            "--approved-by",
        ),
        (
            vec![
                "isolate",
                "asset:cs01",
                "--reason",
                "x",
                "--emergency",
                "--level",
                "4",
            ],
            "level",
        ),
        (
            vec![
                "restore",
                "asset:cs01",
                "--reason",
                "x",
                "--approved-by",
                "y",
            ],
            "not isolated",
        ),
    ] {
        let out = daemon.ctl(&args).unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A Unix user in the given groups, removed on drop.
struct TestUser {
    name: String,
    groups: Vec<String>,
}

impl TestUser {
    fn new(tag: &str, groups: &[&str]) -> TestUser {
        let name = format!("sk{tag}{}", std::process::id() % 100000);
        for g in groups {
            let _ = Command::new("groupadd").arg(g).status();
        }
        let mut cmd = Command::new("useradd");
        cmd.args(["-M", "-s", "/usr/sbin/nologin"]);
        if !groups.is_empty() {
            cmd.arg("-G").arg(groups.join(","));
        }
        assert!(cmd.arg(&name).status().unwrap().success());
        TestUser {
            name,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn ctl(&self, daemon: &Sekishod, args: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt as _;
        let user = nix::unistd::User::from_name(&self.name).unwrap().unwrap();
        let bin = sekisho_testbed::daemon::bin("sekishoctl");
        let socket = daemon.socket().to_owned();
        let gids: Vec<nix::unistd::Gid> = self
            .groups
            .iter()
            .filter_map(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| g.gid)
            .collect();
        let mut cmd = Command::new(bin);
        cmd.arg("--socket").arg(socket).args(args);
        let (uid, gid) = (user.uid, user.gid);
        // Groups, then gid, then uid: once the uid is dropped nothing else may change.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&gids).map_err(std::io::Error::from)?;
                nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        cmd.output().unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

#[test]
fn r22_groups_decide_who_may_isolate_and_restore_and_refusals_are_recorded() {
    let (topo, daemon) = setup();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    // The socket is group-accessible for the operators' group.
    let _ = Command::new("groupadd").arg("sekisho").status();
    let group = nix::unistd::Group::from_name("sekisho").unwrap().unwrap();
    std::os::unix::fs::chown(daemon.socket(), None, Some(group.gid.as_raw())).unwrap();
    std::os::unix::fs::chown(daemon.dir(), None, Some(group.gid.as_raw())).unwrap();
    std::fs::set_permissions(
        daemon.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();

    let outsider = TestUser::new("o", &[]);
    let operator = TestUser::new("p", &["sekisho"]);
    let admin = TestUser::new("a", &["sekisho", "sekisho-admin"]);

    // Someone outside the groups cannot even connect, or is refused if they can.
    let out = outsider.ctl(&daemon, &["status"]);
    assert!(!out.status.success());

    let out = operator.ctl(
        &daemon,
        &[
            "isolate",
            "asset:term-02",
            "--reason",
            "不審な通信",
            "--emergency",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    denied(&topo, Host::Term2, addr(Host::Cs, 443));
    let out = operator.ctl(
        &daemon,
        &[
            "restore",
            "asset:term-02",
            "--reason",
            "x",
            "--approved-by",
            "y",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sekisho-admin"));
    denied(&topo, Host::Term2, addr(Host::Cs, 443));
    let out = admin.ctl(
        &daemon,
        &[
            "restore",
            "asset:term-02",
            "--reason",
            "確認済み",
            "--approved-by",
            "統括責任者",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    allowed(&topo, Host::Term2, addr(Host::Cs, 443));

    let audit = daemon.ctl_json(&["audit", "show"]).unwrap();
    let entries = audit.as_array().unwrap();
    let find = |action: &str, who: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["operator"] == who)
    };
    assert!(find("isolate", &operator.name), "{audit}");
    assert!(find("refused", &operator.name), "{audit}");
    assert!(find("restore", &admin.name), "{audit}");
    let isolate = entries.iter().find(|e| e["action"] == "isolate").unwrap();
    assert_eq!(isolate["emergency"], true);
    assert_eq!(isolate["reason"], "不審な通信");
}

#[test]
fn r15_five_violations_within_the_window_isolate_the_offender() {
    let (topo, daemon) = demo_with(|t| {
        t + "\n[triggers]\nviolations = { count = 5, within = \"60s\", action = \"isolate\" }\n"
    });
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    // The CS tries the internet: the classic sign of a compromised server.
    let start = Instant::now();
    let mut isolated = false;
    while start.elapsed() < Duration::from_secs(8) {
        let _ = tcp_probe(
            &topo,
            Host::Cs,
            addr(Host::Internet, 443),
            Duration::from_millis(200),
        );
        if status(&daemon)["isolations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["target"] == "asset:cs01")
        {
            isolated = true;
            break;
        }
    }
    assert!(
        isolated,
        "cs01 was isolated automatically: {}",
        status(&daemon)
    );
    let s = status(&daemon);
    let i = &s["isolations"][0];
    assert_eq!(i["operator"], "sekishod");
    assert_eq!(i["emergency"], true);
    assert_eq!(i["source"], "violations");
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    let audit = daemon.ctl_json(&["audit", "show"]).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "isolate" && e["operator"] == "sekishod")
    );
}

#[test]
fn an_external_trigger_isolates_as_an_emergency() {
    let (topo, daemon) = setup();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let out = daemon
        .ctl_json(&[
            "trigger",
            "asset:term-01",
            "--source",
            "ids-01",
            "--reason",
            "C2 通信を検知",
        ])
        .unwrap();
    assert_eq!(out["target"], "asset:term-01");
    denied(&topo, Host::Term1, addr(Host::Cs, 443));
    let s = status(&daemon);
    assert_eq!(s["isolations"][0]["source"], "ids-01");
    assert_eq!(s["isolations"][0]["emergency"], true);
}

#[test]
fn the_operation_history_is_chained_and_tampering_is_named() {
    let (_topo, daemon) = setup();
    ok(daemon
        .ctl(&["isolate", "asset:term-01", "--reason", "a", "--emergency"])
        .unwrap());
    ok(daemon
        .ctl(&[
            "restore",
            "asset:term-01",
            "--reason",
            "b",
            "--approved-by",
            "c",
        ])
        .unwrap());
    let verified = ok(daemon.ctl(&["audit", "verify"]).unwrap());
    assert!(verified.contains("intact"), "{verified}");
    // Someone edits entry 2 behind sekisho's back (dropping the guard triggers first).
    let db = daemon.dir().join("state").join("operations.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TRIGGER operations_no_update; UPDATE operations SET reason = 'nothing happened' WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);
    let out = daemon.ctl(&["audit", "verify"]).unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("entry 2"), "{text}");
}

#[test]
fn a_slow_client_never_stalls_the_daemon_and_messages_follow_the_locale() {
    let (_topo, daemon) = setup();
    // A client that connects and says nothing.
    let _idle = std::os::unix::net::UnixStream::connect(daemon.socket()).unwrap();
    let start = Instant::now();
    ok(daemon.ctl(&["status"]).unwrap());
    assert!(start.elapsed() < Duration::from_secs(2));
    let out = Command::new(sekisho_testbed::daemon::bin("sekishoctl"))
        .args(["--socket", daemon.socket().to_str().unwrap()])
        .args([
            "isolate",
            "asset:term-02",
            "--reason",
            "点検",
            "--emergency",
        ])
        .env("LANG", "ja_JP.UTF-8")
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("切り離しました"), "{text}");
    let status = Command::new(sekisho_testbed::daemon::bin("sekishoctl"))
        .args(["--socket", daemon.socket().to_str().unwrap(), "status"])
        .env("LANG", "ja_JP.UTF-8")
        .output()
        .unwrap();
    let status = ok(status);
    assert!(
        status.contains("動作モード") && status.contains("ポリシー世代"),
        "{status}"
    );
    // A reload is recorded with what it changed.
    ok(daemon.ctl(&["reload"]).unwrap());
    let audit = daemon.ctl_json(&["audit", "show", "--limit", "1"]).unwrap();
    assert_eq!(audit[0]["action"], "reload");
    assert!(audit[0]["details"]["diff"].is_object(), "{audit}");
}
