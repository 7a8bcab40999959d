//! The datapath's flow accounting for the traffic history, run by the kernel over
//! hand-built packets (BPF_PROG_TEST_RUN): a flow's first packet is one event, its later
//! packets are counted in the flow table, a flood of denied packets is one aggregated flow,
//! a cut flow reports its totals, and a full ring buffer is counted and becomes a gap
//! record — never silence.

#[expect(
    dead_code,
    reason = "the packet builder is shared with datapath.rs, which uses all of it"
)]
mod packets;

use std::sync::Arc;
use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions};
use packets::{Frame, L4};
use sekisho::config::Config;
use sekisho::datapath::{Datapath, Side};
use sekisho::history::recorder::{Names, Recorder, Timeouts};
use sekisho::history::{Close, Event, Record, Verdict};
use sekisho::policy::CompiledPolicy;

const CS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];

fn demo_config() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse_str(&text, std::path::Path::new(path)).expect("demo.toml is valid")
}

/// Every flow ends at the first sweep.
fn at_once() -> Timeouts {
    Timeouts {
        tcp_closed: Duration::ZERO,
        tcp: Duration::ZERO,
        udp: Duration::ZERO,
        other: Duration::ZERO,
        denied_idle: Duration::ZERO,
        denied_max: Duration::ZERO,
    }
}

fn setup(timeouts: Timeouts) -> (Datapath, Recorder, Config) {
    let config = demo_config();
    let mut dp = Datapath::load().expect("the kernel accepts sekisho's programs");
    dp.apply(&CompiledPolicy::compile(&config)).unwrap();
    let maps = dp.take_flow_maps().expect("flow maps");
    let recorder = Recorder::new(maps, Arc::new(Names::from_config(&config)), timeouts);
    (dp, recorder, config)
}

fn run(dp: &mut Datapath, side: Side, frame: &Frame) -> u32 {
    let bytes = frame.build();
    let mut out = vec![0u8; bytes.len() + 256];
    dp.program(side)
        .test_run(TestRunOptions {
            data_in: Some(&bytes),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

fn poll(rec: &mut Recorder) -> Vec<Record> {
    let mut out = Vec::new();
    rec.poll(&mut |r| out.push(r));
    out
}

fn sweep(rec: &mut Recorder) -> Vec<Record> {
    let mut out = Vec::new();
    rec.sweep(&mut |r| out.push(r));
    out
}

#[test]
fn r6_an_allowed_flow_is_one_start_event_and_one_end_with_both_directions() {
    let (mut dp, mut rec, _) = setup(at_once());
    let fwd = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40000, 443));
    let rev = Frame::v4("192.0.2.10", "192.0.2.21", L4::tcp(443, 40000)).mac_src(CS_MAC);
    for _ in 0..3 {
        assert_eq!(run(&mut dp, Side::Lan, &fwd), 0);
    }
    for _ in 0..2 {
        assert_eq!(run(&mut dp, Side::Lan, &rev), 0);
    }
    let starts = poll(&mut rec);
    assert_eq!(starts.len(), 1, "one event for five packets: {starts:?}");
    let s = &starts[0];
    assert_eq!((s.event, s.verdict), (Event::Start, Verdict::Allow));
    assert_eq!(s.src, Some("192.0.2.21".parse().unwrap()));
    assert_eq!(s.dst, Some("192.0.2.10".parse().unwrap()));
    assert_eq!((s.sport, s.dport, s.proto), (40000, 443, 6));
    assert_eq!(s.rule, 1);
    assert_eq!(s.rule_name.as_deref(), Some("terminal-to-cs"));
    assert_eq!(s.generation, 1);
    assert_eq!(s.src_asset.as_deref(), Some("term-01"));
    assert_eq!(s.dst_asset.as_deref(), Some("cs01"));
    assert_eq!(s.reason_name(), "policy");
    let now = jiff::Timestamp::now().as_microsecond();
    assert!(
        (now - s.first_us).abs() < 10_000_000,
        "wall-clock time: {s:?}"
    );

    let ends = sweep(&mut rec);
    assert_eq!(ends.len(), 1, "{ends:?}");
    let e = &ends[0];
    assert_eq!(e.event, Event::End);
    assert_eq!(e.close, Some(Close::Idle));
    assert_eq!((e.packets_fwd, e.packets_rev), (3, 2), "{e:?}");
    assert_eq!(e.bytes_fwd, 3 * fwd.build().len() as u64);
    assert_eq!(e.tcp_flags & 0x02, 0x02, "SYN seen");
    assert!(e.last_us >= e.first_us);
    // The flow is gone from the kernel's table: a second sweep has nothing more.
    assert!(sweep(&mut rec).is_empty());
}

#[test]
fn r6_a_flood_of_denied_packets_is_one_flow_with_its_count() {
    let (mut dp, mut rec, _) = setup(at_once());
    let f = Frame::v4("192.0.2.21", "203.0.113.9", L4::udp(5000, 9999));
    for _ in 0..500 {
        assert_eq!(run(&mut dp, Side::Lan, &f), 2);
    }
    let starts = poll(&mut rec);
    assert_eq!(starts.len(), 1, "one event, not one per packet");
    assert_eq!(starts[0].verdict, Verdict::Deny);
    assert_eq!(starts[0].reason_name(), "no_rule");
    assert_eq!(starts[0].dst_peer.as_deref(), Some("prefecture"));
    let ends = sweep(&mut rec);
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0].packets_fwd, 500);
    assert_eq!(ends[0].verdict, Verdict::Deny);
    assert_eq!(ends[0].event, Event::End);
}

#[test]
fn r6_a_flow_cut_by_an_isolation_reports_its_totals() {
    let (mut dp, mut rec, config) = setup(Timeouts::default());
    let fwd = Frame::v4("192.0.2.21", "192.0.2.10", L4::tcp(40001, 443));
    for _ in 0..4 {
        assert_eq!(run(&mut dp, Side::Lan, &fwd), 0);
    }
    assert_eq!(poll(&mut rec).len(), 1);
    let mut policy = CompiledPolicy::compile(&config);
    policy.set_isolation(["asset:term-01"]).unwrap();
    dp.apply(&policy).unwrap();
    assert_eq!(run(&mut dp, Side::Lan, &fwd), 2, "cut");
    let records = poll(&mut rec);
    let cut = records
        .iter()
        .find(|r| r.event == Event::End)
        .expect("the cut flow's end");
    assert_eq!(cut.close, Some(Close::Cut));
    assert_eq!(cut.reason_name(), "isolated");
    assert_eq!(cut.packets_fwd, 4);
    assert_eq!(cut.generation, 1, "the generation that had allowed it");
    let denied = records
        .iter()
        .find(|r| r.event == Event::Start)
        .expect("the packet after the cut, denied");
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.generation, 2);
    // A cut flow is not reported again as evicted.
    assert!(
        sweep(&mut rec)
            .iter()
            .all(|r| r.close != Some(Close::Evicted)),
        "no eviction"
    );
}

#[test]
fn r6_a_full_ring_buffer_is_counted_and_becomes_a_gap_record() {
    let (mut dp, mut rec, _) = setup(Timeouts::default());
    // More distinct denied flows than the ring buffer holds, without reading it.
    let flows: u64 = 50_000;
    for port in 0..flows {
        let f = Frame::v4(
            "192.0.2.21",
            "203.0.113.9",
            L4::udp(10_000 + port as u16, 9999),
        );
        assert_eq!(run(&mut dp, Side::Lan, &f), 2);
    }
    let read = poll(&mut rec).len() as u64;
    let lost = rec.events_lost();
    assert!(lost > 0, "the ring buffer overflowed");
    assert_eq!(
        read + lost,
        flows,
        "every event either read or counted as lost"
    );
    let gaps: Vec<Record> = sweep(&mut rec)
        .into_iter()
        .filter(|r| r.event == Event::Gap)
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].lost, lost);
    assert!(gaps[0].last_us >= gaps[0].first_us);
    // Counted once: the next sweep has no new gap.
    assert!(sweep(&mut rec).iter().all(|r| r.event != Event::Gap));
}
