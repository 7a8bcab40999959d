//! eBPF program tests: sekisho's classifiers run by the kernel over hand-built packets
//! (BPF_PROG_TEST_RUN), one case per parse path and rule shape, IPv4 and IPv6, asserting
//! the verdict and the counters it leaves behind.

mod packets;

use aya::programs::{TestRun as _, TestRunOptions};
use packets::{Frame, L4};
use sekisho::config::Config;
use sekisho::datapath::{Datapath, Side};
use sekisho::policy::CompiledPolicy;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn demo_config(mode: &str) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("mode = \"enforce\"", &format!("mode = \"{mode}\""));
    Config::parse_str(&text, std::path::Path::new(path)).expect("demo.toml is valid")
}

fn datapath(mode: &str) -> Datapath {
    let mut dp = Datapath::load().expect("the kernel accepts sekisho's programs");
    dp.apply(&CompiledPolicy::compile(&demo_config(mode)))
        .expect("policy written");
    dp
}

fn run(dp: &mut Datapath, side: Side, frame: &[u8]) -> u32 {
    let prog = dp.program(side);
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN of {} bytes {frame:02x?}: {e}",
                frame.len()
            )
        });
    result.return_value
}

fn reason_count(dp: &Datapath, name: &str) -> u64 {
    dp.counters().unwrap().by_reason[name]
}

#[test]
fn loads_and_starts_with_generation_one() {
    let dp = datapath("enforce");
    assert_eq!(dp.generation().unwrap(), 1);
}

#[test]
fn no_policy_loaded_drops_everything() {
    let mut dp = Datapath::load().unwrap();
    let f =
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443)).mac_src([2, 0, 0, 0, 0, 0x15]);
    assert_eq!(run(&mut dp, Side::Lan, &f.build()), TC_ACT_SHOT);
    assert_eq!(reason_count(&dp, "no_policy"), 1);
}

const CS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];

fn assert_verdict(dp: &mut Datapath, side: Side, frame: &Frame, expect: u32, reason: &str) {
    let before = reason_count(dp, reason);
    let got = run(dp, side, &frame.build());
    assert_eq!(got, expect, "verdict for {frame:?}");
    assert_eq!(
        reason_count(dp, reason),
        before + 1,
        "reason {reason} counted for {frame:?}"
    );
}

fn allowed(dp: &mut Datapath, side: Side, frame: Frame, reason: &str) {
    assert_verdict(dp, side, &frame, TC_ACT_OK, reason);
}

fn denied(dp: &mut Datapath, side: Side, frame: Frame, reason: &str) {
    assert_verdict(dp, side, &frame, TC_ACT_SHOT, reason);
}

#[test]
fn r2_terminal_to_cs_allowed_on_its_ports_v4_and_v6() {
    let mut dp = datapath("enforce");
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443)),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.22", "192.0.2.10", L4::tcp(40000, 8100)),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::15", "2001:db8:10::a", L4::tcp(40000, 8000)),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::16", "2001:db8:10::a", L4::echo_request(7)),
        "policy",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 8101)),
        "no_rule",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::udp(40000, 443)),
        "no_rule",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::15", "2001:db8:10::a", L4::tcp(40000, 22)),
        "no_rule",
    );
}

#[test]
fn r2_terminal_to_peers_denied_v4_and_v6() {
    let mut dp = datapath("enforce");
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "203.0.113.10", L4::tcp(40000, 443)),
        "no_rule",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "203.0.113.20", L4::tcp(40000, 443)),
        "no_rule",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::15", "2001:db8:ff::a", L4::tcp(40000, 443)),
        "no_rule",
    );
}

#[test]
fn r1_cs_reaches_peers_only_on_allowed_ports_and_nothing_else() {
    let mut dp = datapath("enforce");
    let cs = |f: Frame| f.mac_src(CS_MAC);
    allowed(
        &mut dp,
        Side::Lan,
        cs(Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(40001, 443))),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        cs(Frame::v4("192.0.2.10", "203.0.113.20", L4::udp(40001, 123))),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        cs(Frame::v6(
            "2001:db8:10::a",
            "2001:db8:ff::14",
            L4::tcp(40001, 443),
        )),
        "policy",
    );
    denied(
        &mut dp,
        Side::Lan,
        cs(Frame::v4(
            "192.0.2.10",
            "203.0.113.20",
            L4::tcp(40001, 8000),
        )),
        "no_rule",
    );
    denied(
        &mut dp,
        Side::Lan,
        cs(Frame::v4(
            "192.0.2.10",
            "203.0.113.100",
            L4::tcp(40001, 443),
        )),
        "unknown_destination",
    );
    denied(
        &mut dp,
        Side::Lan,
        cs(Frame::v6(
            "2001:db8:10::a",
            "2001:db8:ff::64",
            L4::tcp(40001, 443),
        )),
        "unknown_destination",
    );
    denied(
        &mut dp,
        Side::Lan,
        cs(Frame::v4("192.0.2.10", "8.8.8.8", L4::udp(40001, 53))),
        "unknown_destination",
    );
}

#[test]
fn replies_of_allowed_flows_pass_and_unsolicited_inbound_is_denied() {
    let mut dp = datapath("enforce");
    let out = Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(40002, 443)).mac_src(CS_MAC);
    allowed(&mut dp, Side::Lan, out.clone(), "policy");
    allowed(&mut dp, Side::Lan, out, "established");
    allowed(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(443, 40002)),
        "reply",
    );
    // The same peer on another source port is not a reply of anything.
    denied(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(443, 40003)),
        "no_rule",
    );
    // Unsolicited from the internet.
    denied(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.100", "192.0.2.10", L4::tcp(443, 40002)),
        "unknown_source",
    );
    denied(
        &mut dp,
        Side::Wan,
        Frame::v6("2001:db8:ff::64", "2001:db8:10::a", L4::tcp(443, 40002)),
        "unknown_source",
    );
    // ICMP echo: the reply matches the request by identifier.
    let ping = Frame::v6("2001:db8:10::a", "2001:db8:ff::a", L4::echo_request(99)).mac_src(CS_MAC);
    allowed(&mut dp, Side::Lan, ping, "policy");
    allowed(
        &mut dp,
        Side::Wan,
        Frame::v6("2001:db8:ff::a", "2001:db8:10::a", L4::echo_reply(99)),
        "reply",
    );
    denied(
        &mut dp,
        Side::Wan,
        Frame::v6("2001:db8:ff::a", "2001:db8:10::a", L4::echo_reply(98)),
        "no_rule",
    );
}

#[test]
fn peer_initiated_flow_needs_its_own_rule() {
    let mut dp = datapath("enforce");
    allowed(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(50000, 8443)),
        "policy",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(8443, 50000)).mac_src(CS_MAC),
        "reply",
    );
    denied(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.20", "192.0.2.10", L4::tcp(50000, 8443)),
        "no_rule",
    );
}

#[test]
fn r5_unknown_and_spoofed_sources_denied() {
    let mut dp = datapath("enforce");
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.29", "192.0.2.10", L4::tcp(40000, 443)),
        "unknown_source",
    );
    denied(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::1d", "2001:db8:10::a", L4::tcp(40000, 443)),
        "unknown_source",
    );
    // The CS's address from another MAC.
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(40000, 443)),
        "spoofed",
    );
    // A peer's address arriving on the LAN side, an asset's on the WAN side.
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(40000, 8443)),
        "spoofed",
    );
    denied(
        &mut dp,
        Side::Wan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443)),
        "spoofed",
    );
}

#[test]
fn no_bypass_l2_vlan_and_ethertypes() {
    let mut dp = datapath("enforce");
    let good = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    denied(&mut dp, Side::Lan, good.clone().vlan(20), "vlan");
    denied(
        &mut dp,
        Side::Lan,
        good.clone().ethertype(0x88cc),
        "ethertype",
    );
    denied(&mut dp, Side::Lan, good.clone().ethertype(0x88a8), "vlan");
    allowed(&mut dp, Side::Lan, good.clone().ethertype(0x0806), "arp");
    // Frames shorter than an Ethernet header, or with a cut IP header, are refused by
    // BPF_PROG_TEST_RUN itself (EINVAL); the truncations below are the ones it can carry.
    denied(&mut dp, Side::Lan, good.truncate(14 + 20 + 3), "malformed");
}

#[test]
fn no_bypass_ipv4_fragments_options_and_malformed_headers() {
    let mut dp = datapath("enforce");
    let good = || Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    denied(&mut dp, Side::Lan, good().frag(0x2000), "fragment"); // first fragment, MF set
    denied(&mut dp, Side::Lan, good().frag(0x0010), "fragment"); // later fragment
    allowed(&mut dp, Side::Lan, good().frag(0x4000), "policy"); // DF alone is no fragment
    allowed(&mut dp, Side::Lan, good().ipv4_options(8), "established");
    denied(&mut dp, Side::Lan, good().ihl(4), "malformed");
    denied(&mut dp, Side::Lan, good().version(5), "malformed");
    denied(
        &mut dp,
        Side::Lan,
        good().ipv4_options(40).truncate(14 + 40),
        "malformed",
    );
    denied(
        &mut dp,
        Side::Lan,
        good().truncate(14 + 20 + 10),
        "malformed",
    ); // TCP cut short
    let udp = Frame::v4("192.0.2.10", "203.0.113.20", L4::udp(40000, 123)).mac_src(CS_MAC);
    denied(&mut dp, Side::Lan, udp.truncate(14 + 20 + 6), "malformed");
}

#[test]
fn no_bypass_ipv6_extension_headers() {
    let mut dp = datapath("enforce");
    let good = || Frame::v6("2001:db8:21::15", "2001:db8:10::a", L4::tcp(40000, 443));
    // Hop-by-hop and destination options are walked; the ports behind them decide.
    allowed(&mut dp, Side::Lan, good().ipv6_ext(&[0, 60]), "policy");
    denied(
        &mut dp,
        Side::Lan,
        Frame::v6("2001:db8:21::15", "2001:db8:10::a", L4::tcp(40000, 22)).ipv6_ext(&[0]),
        "no_rule",
    );
    denied(&mut dp, Side::Lan, good().ipv6_ext(&[43]), "ipv6_extension"); // routing
    denied(&mut dp, Side::Lan, good().ipv6_ext(&[44]), "fragment");
    denied(
        &mut dp,
        Side::Lan,
        good().ipv6_ext(&[60, 60, 60, 60, 60]),
        "ipv6_extension",
    );
    denied(
        &mut dp,
        Side::Lan,
        good().ipv6_ext(&[0, 60]).truncate(14 + 40 + 12),
        "malformed",
    );
    denied(
        &mut dp,
        Side::Lan,
        good().version(4).ethertype(0x86dd),
        "malformed",
    );
}

#[test]
fn no_bypass_unknown_protocols_are_denied() {
    let mut dp = datapath("enforce");
    for proto in [47u8, 50, 132, 255] {
        denied(
            &mut dp,
            Side::Lan,
            Frame::v4("192.0.2.21", "192.0.2.10", L4::Raw { proto }),
            "no_rule",
        );
        denied(
            &mut dp,
            Side::Lan,
            Frame::v6("2001:db8:21::15", "2001:db8:10::a", L4::Raw { proto }),
            "no_rule",
        );
    }
}

#[test]
fn neighbour_discovery_passes_only_with_hop_limit_255() {
    let mut dp = datapath("enforce");
    let ns = |hops| {
        Frame::v6(
            "fe80::1",
            "ff02::1:ff00:a",
            L4::Icmp {
                ty: 135,
                code: 0,
                id: 0,
            },
        )
        .hop_limit(hops)
    };
    allowed(&mut dp, Side::Lan, ns(255), "neighbor_discovery");
    denied(&mut dp, Side::Lan, ns(64), "unknown_source");
}

#[test]
fn monitor_mode_passes_but_counts_would_be_drops() {
    let mut dp = datapath("monitor");
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "203.0.113.10", L4::tcp(40000, 443)),
        "no_rule",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.29", "192.0.2.10", L4::tcp(40000, 443)),
        "unknown_source",
    );
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443)),
        "policy",
    );
    let c = dp.counters().unwrap();
    let from_lan = &c.by_direction[0];
    assert_eq!(from_lan[0].packets, 1, "allowed");
    assert_eq!(from_lan[1].packets, 0, "nothing dropped in monitor mode");
    assert_eq!(from_lan[2].packets, 2, "two would-be drops");
    assert!(from_lan[2].bytes >= 2 * 54);
}

#[test]
fn counters_split_by_direction_and_verdict() {
    let mut dp = datapath("enforce");
    let f = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    let len = f.build().len() as u64;
    run(&mut dp, Side::Lan, &f.build());
    run(
        &mut dp,
        Side::Wan,
        &Frame::v4("203.0.113.100", "192.0.2.10", L4::tcp(1, 2)).build(),
    );
    let c = dp.counters().unwrap();
    assert_eq!(c.by_direction[0][0].packets, 1);
    assert_eq!(c.by_direction[0][0].bytes, len);
    assert_eq!(c.by_direction[1][1].packets, 1);
    assert_eq!(
        c.by_direction[0][1].packets + c.by_direction[1][0].packets,
        0
    );
}

#[test]
fn a_new_generation_cuts_flows_it_no_longer_allows() {
    let mut dp = datapath("enforce");
    let out = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    let other = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40001, 8000));
    allowed(&mut dp, Side::Lan, out.clone(), "policy");
    allowed(&mut dp, Side::Lan, other.clone(), "policy");
    // Same policy without tcp/443 for terminals.
    let text = demo_config("enforce").text.replacen(
        "\"tcp/443\", \"tcp/8000-8100\"",
        "\"tcp/8000-8100\"",
        1,
    );
    let cfg = Config::parse_str(&text, std::path::Path::new("demo-edited.toml")).unwrap();
    assert_eq!(dp.apply(&CompiledPolicy::compile(&cfg)).unwrap(), 2);
    denied(&mut dp, Side::Lan, out.clone(), "no_rule");
    denied(&mut dp, Side::Lan, out, "no_rule");
    allowed(&mut dp, Side::Lan, other, "established");
    let reply = Frame::v4("192.0.2.10", "192.0.2.21", L4::tcp(8000, 40001)).mac_src(CS_MAC);
    allowed(&mut dp, Side::Lan, reply, "reply");
}

/// Demo policy plus an asset rule, optionally with a spare asset listed first so that
/// every asset selector number shifts by one.
fn shifted_policy(shift: bool) -> CompiledPolicy {
    let mut text = demo_config("enforce").text
        + "\n[[allow]]\nfrom = \"asset:term-01\"\nto = \"peer:prefecture\"\nports = [\"tcp/9000\"]\n";
    if shift {
        let at = text.find("[[asset]]").unwrap();
        text.insert_str(
            at,
            "[[asset]]\nname = \"spare\"\nrole = \"terminal\"\naddresses = [\"192.0.2.23\"]\n\n",
        );
    }
    CompiledPolicy::compile(&Config::parse_str(&text, std::path::Path::new("mix.toml")).unwrap())
}

#[test]
fn a_thousand_reloads_under_traffic_never_decide_by_a_mix_of_two_generations() {
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/sekisho-test-mix-{}",
        std::process::id()
    ));
    let _ = sekisho::datapath::unpin_all(&dir);
    let (a, b) = (shifted_policy(false), shifted_policy(true));
    let mut dp = Datapath::load_pinned(&dir).unwrap();
    dp.apply(&a).unwrap();
    let reader = aya::programs::SchedClassifier::from_pin(dir.join("prog_lan")).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (checked, wrong) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            // A packet decided by endpoints of one generation and rules of the other
            // would let term-02 through on term-01's rule, or stop term-01.
            let (mut checked, mut wrong) = (0u32, 0u32);
            let mut sport = 1024u16;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                sport = sport.wrapping_add(1).max(1024);
                for (src, expect) in [("192.0.2.21", TC_ACT_OK), ("192.0.2.22", TC_ACT_SHOT)] {
                    let f = Frame::v4(src, "203.0.113.10", L4::tcp(sport, 9000)).build();
                    let got = reader
                        .test_run(TestRunOptions {
                            data_in: Some(&f),
                            ..TestRunOptions::default()
                        })
                        .unwrap()
                        .return_value;
                    checked += 1;
                    wrong += u32::from(got != expect);
                }
            }
            (checked, wrong)
        });
        for i in 0..1000 {
            dp.apply(if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r.join().unwrap()
    });
    drop(reader);
    drop(dp);
    sekisho::datapath::unpin_all(&dir).unwrap();
    assert!(
        checked > 1000,
        "the reader ran during the reloads: {checked}"
    );
    assert_eq!(wrong, 0, "{wrong} of {checked} packets misjudged");
}

#[test]
fn regression_a_generation_jump_never_writes_the_slot_in_force() {
    // After a reboot the archive's numbering continues; a jump of two would land on the
    // slot packets are reading if it were taken as is.
    let mut dp = datapath("enforce");
    let policy = CompiledPolicy::compile(&demo_config("enforce"));
    let g = dp.apply_after(&policy, 2).unwrap();
    assert_eq!(g, 4, "generation 1 is in slot 1; 3 would reuse it");
    allowed(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443)),
        "policy",
    );
}

#[test]
fn r11_isolation_cuts_established_flows_of_its_target_only() {
    let mut dp = datapath("enforce");
    let cs_pref = || Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(40000, 443)).mac_src(CS_MAC);
    let cs_jlis = || Frame::v4("192.0.2.10", "203.0.113.20", L4::tcp(40000, 443)).mac_src(CS_MAC);
    let term_cs = || Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    allowed(&mut dp, Side::Lan, cs_pref(), "policy");
    allowed(&mut dp, Side::Lan, cs_jlis(), "policy");
    allowed(&mut dp, Side::Lan, term_cs(), "policy");
    let mut policy = CompiledPolicy::compile(&demo_config("enforce"));
    policy.set_isolation(["peer:prefecture"]).unwrap();
    dp.apply(&policy).unwrap();
    // The established flow to the prefecture is cut, in both directions.
    denied(&mut dp, Side::Lan, cs_pref(), "isolated");
    denied(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(443, 40000)),
        "isolated",
    );
    allowed(&mut dp, Side::Lan, cs_jlis(), "established");
    allowed(&mut dp, Side::Lan, term_cs(), "established");
    policy.set_isolation(["all"]).unwrap();
    dp.apply(&policy).unwrap();
    denied(&mut dp, Side::Lan, cs_jlis(), "isolated");
    denied(&mut dp, Side::Lan, term_cs(), "isolated");
    // ARP still works: the links stay up for the gateway's own path.
    allowed(&mut dp, Side::Lan, term_cs().ethertype(0x0806), "arp");
    // Restored: new connections are decided by the rules again.
    policy.set_isolation([]).unwrap();
    dp.apply(&policy).unwrap();
    allowed(&mut dp, Side::Lan, cs_pref(), "policy");
}

#[test]
fn denied_lan_packets_are_counted_per_source_for_the_triggers() {
    let mut dp = datapath("enforce");
    for port in 0..5 {
        let f =
            Frame::v4("192.0.2.10", "203.0.113.100", L4::tcp(40000 + port, 443)).mac_src(CS_MAC);
        run(&mut dp, Side::Lan, &f.build());
    }
    run(
        &mut dp,
        Side::Lan,
        &Frame::v4("192.0.2.29", "192.0.2.10", L4::tcp(1, 443)).build(),
    );
    // Allowed traffic and WAN-side drops are not violations of a LAN host.
    run(
        &mut dp,
        Side::Lan,
        &Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(1, 443)).build(),
    );
    run(
        &mut dp,
        Side::Wan,
        &Frame::v4("203.0.113.100", "192.0.2.10", L4::tcp(1, 443)).build(),
    );
    let mut v = dp.violations().unwrap();
    v.sort();
    assert_eq!(
        v,
        vec![
            ("192.0.2.10".parse().unwrap(), 5),
            ("192.0.2.29".parse().unwrap(), 1)
        ]
    );
}

#[test]
fn traffic_to_the_gateway_itself_is_left_to_its_input_chain() {
    let mut dp = datapath("enforce");
    let to_gw = || Frame::v4("203.0.113.10", "203.0.113.1", L4::tcp(443, 40000));
    denied(&mut dp, Side::Wan, to_gw(), "unknown_destination");
    dp.set_local_addresses(&[
        "203.0.113.1".parse().unwrap(),
        "2001:db8:ff::1".parse().unwrap(),
    ])
    .unwrap();
    allowed(&mut dp, Side::Wan, to_gw(), "local");
    allowed(
        &mut dp,
        Side::Wan,
        Frame::v6("2001:db8:ff::64", "2001:db8:ff::1", L4::tcp(22, 40000)),
        "local",
    );
    dp.set_local_addresses(&[]).unwrap();
    denied(&mut dp, Side::Wan, to_gw(), "unknown_destination");
}

#[test]
fn traffic_is_counted_per_asset_and_per_peer_on_every_path() {
    let mut dp = datapath("enforce");
    let out = Frame::v4("192.0.2.10", "203.0.113.10", L4::tcp(40000, 443)).mac_src(CS_MAC);
    let len = out.build().len() as u64;
    allowed(&mut dp, Side::Lan, out.clone(), "policy");
    allowed(&mut dp, Side::Lan, out, "established");
    allowed(
        &mut dp,
        Side::Wan,
        Frame::v4("203.0.113.10", "192.0.2.10", L4::tcp(443, 40000)),
        "reply",
    );
    // A denied packet is no one's traffic.
    denied(
        &mut dp,
        Side::Lan,
        Frame::v4("192.0.2.21", "203.0.113.10", L4::tcp(40000, 443)),
        "no_rule",
    );
    let policy = CompiledPolicy::compile(&demo_config("enforce"));
    let account = |name: &str| {
        let (sel, _) = policy
            .selector_names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .unwrap();
        let kind = if name.starts_with("peer:") {
            sekisho_common::KIND_PEER
        } else {
            sekisho_common::KIND_ASSET
        };
        sekisho_common::account_of(&sekisho_common::Endpoint {
            asset: *sel,
            peer: *sel,
            kind,
            ..Default::default()
        })
    };
    let cs = dp.account(account("asset:cs01")).unwrap();
    let pref = dp.account(account("peer:prefecture")).unwrap();
    let term = dp.account(account("asset:term-01")).unwrap();
    assert_eq!(cs.packets, 3, "policy, established and reply packets");
    assert_eq!(cs.bytes, 2 * len + len);
    assert_eq!(pref.packets, 3);
    assert_eq!(term.packets, 0);
}
