//! Failing closed (R24): what happens to the segment when sekishod crashes, when someone
//! tampers with either enforcement layer, and when the policy changes — all with the real
//! daemon in the namespace topology and real packets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sekisho_testbed::{
    Host, Sekishod, StreamCheck, TcpServer, Topology, UdpServer, in_netns, tcp_probe,
};

use sekisho_testbed::checks::{DENY, addr, allowed, demo_with, denied};

/// Sends a UDP datagram every 2 ms from `from` to `to` until dropped; counts what it sent.
struct Blaster {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blaster {
    fn start(topo: &Topology, from: Host, to: SocketAddr) -> Blaster {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let ns = topo.ns(from).to_owned();
        let (s, n) = (Arc::clone(&stop), Arc::clone(&sent));
        let thread = std::thread::spawn(move || {
            in_netns(&ns, || {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
                while !s.load(Ordering::Relaxed) {
                    if sock.send_to(b"must never arrive", to).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        });
        Blaster {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("blaster thread");
        }
        self.sent.load(Ordering::Relaxed)
    }
}

fn status(daemon: &Sekishod) -> serde_json::Value {
    daemon.ctl_json(&["status"]).expect("status")
}

/// Waits until `f` holds, up to `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn r24_kill_9_and_restart_keep_the_policy_packet_for_packet() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let trap_tcp = TcpServer::start(&topo, Host::Pref, 9443).unwrap();
    let trap_udp = UdpServer::start(&topo, Host::Internet, 9999).unwrap();
    let generation = status(&daemon)["generation"].clone();

    let stream = StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, 443)).unwrap();
    let denied_udp = Blaster::start(&topo, Host::Cs, addr(Host::Internet, 9999));
    let denied_tcp_attempts = std::thread::scope(|s| {
        let attempts = s.spawn(|| {
            // Denied TCP attempts from a terminal throughout: each is a fresh SYN.
            let mut n = 0;
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                let _ = tcp_probe(&topo, Host::Term1, addr(Host::Pref, 9443), DENY);
                n += 1;
            }
            n
        });
        std::thread::sleep(Duration::from_millis(700));
        daemon.kill9().unwrap();
        // No daemon at all for a while: the kernel keeps enforcing on its own.
        std::thread::sleep(Duration::from_millis(1500));
        daemon.spawn(&topo).unwrap();
        attempts.join().unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let blasted = denied_udp.stop();
    let stats = stream.stop();

    assert!(stats.is_clean(), "allowed stream broken: {stats:?}");
    assert!(stats.echoed > 100, "the stream ran throughout: {stats:?}");
    assert!(stats.max_gap < Duration::from_millis(500), "{stats:?}");
    assert!(blasted > 500, "denied datagrams were sent: {blasted}");
    assert!(denied_tcp_attempts > 3);
    assert_eq!(trap_udp.received(), 0, "not one denied datagram may pass");
    assert_eq!(trap_tcp.accepted(), 0, "not one denied connection may pass");
    // The new daemon adopted the pinned policy: same generation, attached everywhere.
    let s = status(&daemon);
    assert_eq!(s["generation"], generation, "{s}");
    assert!(
        s["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["attached"] == true)
    );
    assert!(
        daemon.log_text().contains("adopted"),
        "{}",
        daemon.log_text()
    );
}

/// Opens the pinned link at `path` and detaches it (BPF_LINK_DETACH), as an intruder
/// with root could.
fn detach_link(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = cpath.as_ptr() as u64;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert!(fd >= 0, "BPF_OBJ_GET {}", path.display());
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert_eq!(r, 0, "BPF_LINK_DETACH {}", path.display());
    unsafe { libc::close(fd as i32) };
}

#[test]
fn ebpf_detached_behind_sekishos_back_nftables_holds_and_sekisho_reattaches() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    for link in ["link_lan_lan-cs", "link_lan_lan-term", "link_wan_wan0"] {
        detach_link(&daemon.pin_dir().join(link));
    }
    // Right after the detach, only nftables stands: the policy still holds.
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    denied(&topo, Host::Term1, addr(Host::Pref, 443));
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    assert!(
        eventually(Duration::from_secs(6), || {
            let s = status(&daemon);
            s["drift"]["ebpf"].as_u64().unwrap() >= 1
                && s["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|i| i["attached"] == true)
        }),
        "sekisho re-attached: {}",
        status(&daemon)
    );
    assert!(daemon.log_text().contains("detached behind sekisho's back"));
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
}

#[test]
fn nftables_alone_enforces_when_the_ebpf_layer_is_gone() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _cs = TcpServer::start(&topo, Host::Cs, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    // Without a daemon to repair it, take the eBPF layer away entirely.
    daemon.kill9().unwrap();
    sekisho::datapath::unpin_all(daemon.pin_dir()).unwrap();
    for interface in ["lan-cs", "lan-term", "wan0"] {
        let attached = topo.in_ns(Host::Gw, || {
            aya::programs::SchedClassifier::query_tcx(
                interface,
                aya::programs::TcAttachType::Ingress,
            )
            .map(|(_, progs)| progs.len())
        });
        assert_eq!(attached.unwrap(), 0, "nothing left on {interface}");
    }
    allowed(&topo, Host::Term1, addr(Host::Cs, 443));
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    denied(&topo, Host::Term1, addr(Host::Pref, 443));
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    denied(&topo, Host::Internet, addr(Host::Cs, 443));
    denied(&topo, Host::Rogue, addr(Host::Cs, 443));
}

#[test]
fn nftables_table_deleted_ebpf_holds_and_sekisho_puts_it_back() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    topo.exec_ok(Host::Gw, &["nft", "delete", "table", "inet", "sekisho"])
        .unwrap();
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    denied(&topo, Host::Term1, addr(Host::Pref, 443));
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    assert!(
        eventually(Duration::from_secs(6), || {
            let s = status(&daemon);
            s["drift"]["nftables"].as_u64().unwrap() >= 1 && s["nftables"] == true
        }),
        "table restored: {}",
        status(&daemon)
    );
    // A rule slipped into the table is noticed too.
    topo.exec_ok(
        Host::Gw,
        &[
            "nft", "insert", "rule", "inet", "sekisho", "forward", "accept",
        ],
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(6), || {
        status(&daemon)["drift"]["nftables"].as_u64().unwrap() >= 2
    }));
    let listing = topo
        .exec_ok(
            Host::Gw,
            &["nft", "list", "chain", "inet", "sekisho", "forward"],
        )
        .unwrap();
    assert!(
        !listing.lines().any(|l| l.trim() == "accept"),
        "the inserted rule is gone:\n{listing}"
    );
}

#[test]
fn wiped_policy_maps_fail_closed_and_are_rewritten() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    // Wipe every rule of the pinned rule table.
    let map = aya::maps::MapData::from_pin(daemon.pin_dir().join("SEKISHO_RULES")).unwrap();
    let mut rules: aya::maps::LpmTrie<_, sekisho_common::RuleKey, sekisho_common::RuleValue> =
        aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(map)).unwrap();
    let keys: Vec<_> = rules.keys().filter_map(Result::ok).collect();
    assert!(!keys.is_empty());
    for k in keys {
        rules.remove(&k).unwrap();
    }
    // Nothing new is allowed while the maps are empty; nothing forbidden either.
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    assert!(
        eventually(Duration::from_secs(6), || {
            status(&daemon)["drift"]["ebpf"].as_u64().unwrap() >= 1
        }),
        "maps rewritten: {}",
        status(&daemon)
    );
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
}

fn edit_config(daemon: &Sekishod, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(text.contains(from), "config has {from}");
    let edited = text.replacen(from, to, 1);
    std::fs::write(daemon.config_path(), &edited).unwrap();
    text
}

const CS_TO_PREF_PORTS: &str =
    "to = \"peer:prefecture\"\nports = [\"tcp/443\", \"tcp/8000-8100\", \"icmp\"]";
const CS_TO_PREF_WITHOUT_443: &str =
    "to = \"peer:prefecture\"\nports = [\"tcp/8000-8100\", \"icmp\"]";

#[test]
fn a_reload_that_removes_a_rule_cuts_its_connections_and_keeps_the_others() {
    let (topo, daemon) = demo_with(|t| t);
    let _p443 = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _p8050 = TcpServer::start(&topo, Host::Pref, 8050).unwrap();
    let removed = StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, 443)).unwrap();
    let kept = StreamCheck::start(&topo, Host::Cs, addr(Host::Pref, 8050)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    edit_config(&daemon, CS_TO_PREF_PORTS, CS_TO_PREF_WITHOUT_443);
    let out = daemon.ctl(&["reload"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1000));
    let cut = removed.stats();
    let survived = kept.stop();
    assert!(
        cut.since_last_echo > Duration::from_millis(700) || cut.errors > 0,
        "the connection on the removed rule must be cut: {cut:?}"
    );
    assert!(survived.is_clean(), "{survived:?}");
    assert!(
        survived.since_last_echo < Duration::from_millis(300),
        "{survived:?}"
    );
    denied(&topo, Host::Cs, addr(Host::Pref, 443));
    let _ = removed.stop();
}

#[test]
fn a_malformed_reload_changes_nothing_and_says_where() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    edit_config(&daemon, "[[allow]]", "[[allow]]\nbogus = 1");
    for attempt in [vec!["reload"], vec!["reload", "--confirm-within", "60s"]] {
        let out = daemon.ctl(&attempt).unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sekisho.toml:") && err.contains("bogus"),
            "{err}"
        );
    }
    // SIGHUP with the same bad file: refused too.
    daemon.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = status(&daemon);
    assert_eq!(s["generation"], 1, "{s}");
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
}

#[test]
fn commit_confirm_rolls_back_by_itself_unless_confirmed() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let original = edit_config(&daemon, CS_TO_PREF_PORTS, CS_TO_PREF_WITHOUT_443);
    let out = daemon.ctl(&["reload", "--confirm-within", "2s"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled back in 2s"));
    denied(&topo, Host::Cs, addr(Host::Pref, 443));
    assert!(status(&daemon)["pending"]["generation"] == 2);
    // Not confirmed: the previous policy comes back as a new generation.
    assert!(eventually(
        Duration::from_secs(5),
        || status(&daemon)["generation"] == 3
    ));
    assert!(status(&daemon)["pending"].is_null());
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    let log = daemon.ctl(&["policy", "log"]).unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("automatic rollback"));

    // Confirmed in time: it stays.
    std::fs::write(
        daemon.config_path(),
        original.replacen(CS_TO_PREF_PORTS, CS_TO_PREF_WITHOUT_443, 1),
    )
    .unwrap();
    assert!(
        daemon
            .ctl(&["reload", "--confirm-within", "3s"])
            .unwrap()
            .status
            .success()
    );
    let ok = daemon.ctl(&["reload", "--confirm"]).unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(status(&daemon)["generation"], 4);
    denied(&topo, Host::Cs, addr(Host::Pref, 443));
    // Nothing left to confirm.
    assert!(
        !daemon
            .ctl(&["reload", "--confirm"])
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn policy_diff_shows_what_a_file_would_change_before_it_is_applied() {
    let (_topo, daemon) = demo_with(|t| t);
    let text = std::fs::read_to_string(daemon.config_path()).unwrap();
    let candidate = daemon.dir().join("candidate.toml");
    std::fs::write(
        &candidate,
        text.replacen(CS_TO_PREF_PORTS, CS_TO_PREF_WITHOUT_443, 1),
    )
    .unwrap();
    let out = daemon
        .ctl(&["policy", "diff", candidate.to_str().unwrap()])
        .unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with("- deny") && l.contains("asset:cs01 → peer:prefecture tcp 443")),
        "{diff}"
    );
    // Nothing was applied.
    assert_eq!(status(&daemon)["generation"], 1);
    // A bad candidate is named with its place.
    std::fs::write(&candidate, text.replacen("tcp/443", "tcp/0", 1)).unwrap();
    let out = daemon
        .ctl(&["policy", "diff", candidate.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("candidate.toml:"));
}

#[test]
fn the_archive_answers_which_policy_applied_at_a_time() {
    let (_topo, daemon) = demo_with(|t| t);
    let before = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_millis(50));
    edit_config(&daemon, CS_TO_PREF_PORTS, CS_TO_PREF_WITHOUT_443);
    assert!(daemon.ctl(&["reload"]).unwrap().status.success());
    let then = daemon
        .ctl_json(&["policy", "at", &before.to_string()])
        .unwrap();
    assert_eq!(then["generation"], 1);
    assert!(then["content"].as_str().unwrap().contains(CS_TO_PREF_PORTS));
    let now = daemon
        .ctl_json(&["policy", "at", &jiff::Timestamp::now().to_string()])
        .unwrap();
    assert_eq!(now["generation"], 2);
    assert!(
        now["content"]
            .as_str()
            .unwrap()
            .contains(CS_TO_PREF_WITHOUT_443)
    );
    assert_eq!(now["operator"], "root");
    assert_eq!(now["sha256"].as_str().unwrap().len(), 64);
    let early = daemon
        .ctl(&["policy", "at", "2001-01-01T00:00:00Z"])
        .unwrap();
    assert!(!early.status.success());
}

#[test]
fn a_bad_file_at_start_up_enforces_the_last_good_policy() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    daemon.stop().unwrap();
    // A reboot: the kernel forgets everything pinned.
    sekisho::datapath::unpin_all(daemon.pin_dir()).unwrap();
    topo.exec_ok(Host::Gw, &["nft", "delete", "table", "inet", "sekisho"])
        .unwrap();
    edit_config(&daemon, "[[allow]]", "[[allow]]\nbroken =");
    daemon.spawn(&topo).unwrap();
    let s = status(&daemon);
    assert!(
        s["degraded"].as_str().unwrap().contains("last good policy"),
        "{s}"
    );
    allowed(&topo, Host::Cs, addr(Host::Pref, 443));
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
}

#[test]
fn uninstall_is_explicit_and_says_the_segment_is_open() {
    let (topo, mut daemon) = demo_with(|t| t);
    let _inet = TcpServer::start(&topo, Host::Internet, 443).unwrap();
    let config = daemon.config_path().to_owned();
    let uninstall = || {
        topo.command(
            Host::Gw,
            sekisho_testbed::daemon::bin("sekishod").to_str().unwrap(),
        )
        .unwrap()
        .arg("--uninstall")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap()
    };
    let refused = uninstall();
    assert!(!refused.status.success(), "refused while sekishod runs");
    // Stopping the service removes nothing: the policy stays.
    daemon.stop().unwrap();
    denied(&topo, Host::Cs, addr(Host::Internet, 443));
    assert!(daemon.pin_dir().join("SEKISHO_RULES").exists());
    let out = uninstall();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("segment is now OPEN"), "{text}");
    assert!(!daemon.pin_dir().exists());
    let tables = topo.exec_ok(Host::Gw, &["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("sekisho"), "{tables}");
    allowed(&topo, Host::Cs, addr(Host::Internet, 443));
}

#[test]
fn reloads_under_traffic_never_break_an_allowed_stream_or_pass_a_denied_packet() {
    let (topo, daemon) = demo_with(|t| t);
    let _pref = TcpServer::start(&topo, Host::Pref, 443).unwrap();
    let trap = UdpServer::start(&topo, Host::Internet, 9999).unwrap();
    let _jlis = TcpServer::start(&topo, Host::Jlis, 9000).unwrap();
    // Two policies that both allow cs01 → J-LIS tcp/9000 by an asset rule and deny the
    // internet, but number the assets differently (a spare terminal listed first): a
    // packet decided by endpoints of one and rules of the other would be misjudged.
    let base = std::fs::read_to_string(daemon.config_path()).unwrap()
        + "\n[[allow]]\nfrom = \"asset:cs01\"\nto = \"peer:jlis\"\nports = [\"tcp/9000\"]\n";
    let first_asset = base.find("[[asset]]").unwrap();
    let mut shifted = base.clone();
    shifted.insert_str(
        first_asset,
        "[[asset]]\nname = \"spare\"\nrole = \"terminal\"\naddresses = [\"192.0.2.23\"]\n\n",
    );
    let (original, reordered) = (base, shifted);
    std::fs::write(daemon.config_path(), &original).unwrap();
    assert!(daemon.ctl(&["reload"]).unwrap().status.success());
    let stream = StreamCheck::start(&topo, Host::Cs, addr(Host::Jlis, 9000)).unwrap();
    let blaster = Blaster::start(&topo, Host::Cs, addr(Host::Internet, 9999));
    for i in 0..100 {
        let text = if i % 2 == 0 { &reordered } else { &original };
        std::fs::write(daemon.config_path(), text).unwrap();
        let out = daemon.ctl(&["reload"]).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let blasted = blaster.stop();
    let stats = stream.stop();
    assert_eq!(status(&daemon)["generation"], 102);
    assert!(stats.is_clean(), "{stats:?}");
    assert!(blasted > 50);
    assert_eq!(trap.received(), 0);
}
