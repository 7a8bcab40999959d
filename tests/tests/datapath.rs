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
        .expect("BPF_PROG_TEST_RUN");
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
