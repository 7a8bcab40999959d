//! `cargo xtask bench`: the per-packet decision cost of sekisho's classifier, measured by
//! the kernel (BPF_PROG_TEST_RUN with `repeat`), minus an empty classifier's cost measured
//! in the same run, at 10, 1,000 and 100,000 rules and assets.
//!
//! Two paths are timed: an established flow (parse + one flow-table hit, the path almost
//! every packet takes) and a denied first packet (parse + flow-table misses + endpoint
//! lookups + all four rule lookups missing: the most a decision ever costs).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use sekisho::config::Config;
use sekisho::datapath::{Datapath, Side};
use sekisho::policy::CompiledPolicy;

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const REPEAT: u32 = 200_000;
const ROUNDS: usize = 7;

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .map(PathBuf::from);
    let mut rows = Vec::new();
    for n in SIZES {
        eprintln!("bench: {n} rules and assets");
        rows.push(measure(n)?);
    }
    let report = render(&rows);
    print!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: written to {}", path.display());
    }
    Ok(())
}

struct Row {
    n: usize,
    baseline: f64,
    established: f64,
    denied: f64,
}

/// N assets (one address each, one role per 100), 10 peers, N rules: asset i may reach
/// peer i % 10 on its own TCP port.
fn config(n: usize) -> anyhow::Result<Config> {
    let mut t = String::from("[interfaces]\nlan = [\"lan0\"]\nwan = [\"wan0\"]\n\n");
    for p in 0..10 {
        writeln!(t, "[peer.p{p}]\nnetworks = [\"203.0.{p}.0/24\"]\n")?;
    }
    for i in 0..n {
        let a = 10 << 24 | (i as u32 + 1);
        let ip = std::net::Ipv4Addr::from(a);
        writeln!(
            t,
            "[[asset]]\nname = \"a{i}\"\nrole = \"r{}\"\naddresses = [\"{ip}\"]\n",
            i / 100
        )?;
    }
    for i in 0..n {
        writeln!(
            t,
            "[[allow]]\nfrom = \"asset:a{i}\"\nto = \"peer:p{}\"\nports = [\"tcp/{}\"]\n",
            i % 10,
            1000 + i % 60_000
        )?;
    }
    Ok(Config::parse_str(&t, std::path::Path::new("bench.toml"))?)
}

fn frame(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    f.extend_from_slice(&tcp);
    f
}

/// Median over rounds of the kernel's mean time per run, in nanoseconds.
fn time(prog: &SchedClassifier, data: &[u8]) -> anyhow::Result<f64> {
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let r = prog.test_run(TestRunOptions {
            data_in: Some(data),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })?;
        samples.push(r.duration);
    }
    samples.sort();
    Ok(duration_ns(samples[ROUNDS / 2]))
}

fn duration_ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn measure(n: usize) -> anyhow::Result<Row> {
    let policy = CompiledPolicy::compile(&config(n)?);
    let mut dp = Datapath::load()?;
    dp.apply(&policy)?;
    // The last asset and its rule: the deepest entries of the tables.
    let i = n - 1;
    let src = (10u32 << 24 | (i as u32 + 1)).to_be_bytes();
    let peer = [203, 0, (i % 10) as u8, 9];
    let port = (1000 + i % 60_000) as u16;
    let allowed = frame(src, peer, port);
    let denied = frame(src, peer, port.wrapping_add(1).max(1));
    let baseline = time(dp.baseline_program(), &allowed)?;
    let prog = dp.program(Side::Lan);
    // One run to create the flow; every timed run after it takes the established path.
    let first = prog.test_run(TestRunOptions {
        data_in: Some(&allowed),
        ..TestRunOptions::default()
    })?;
    anyhow::ensure!(first.return_value == 0, "the allowed packet was dropped");
    let established = time(prog, &allowed)?;
    let check = prog.test_run(TestRunOptions {
        data_in: Some(&denied),
        ..TestRunOptions::default()
    })?;
    anyhow::ensure!(check.return_value == 2, "the denied packet was passed");
    let denied = time(prog, &denied)?;
    Ok(Row {
        n,
        baseline,
        established,
        denied,
    })
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# sekisho datapath benchmark\n");
    let _ = writeln!(
        s,
        "Measured by `cargo xtask bench` with BPF_PROG_TEST_RUN (median of {ROUNDS} rounds of \
         {REPEAT} runs each), on this machine's kernel. \"Net\" is the time above an empty \
         classifier measured in the same run. A policy of N rules and N assets: asset i may \
         reach one of 10 peers on its own TCP port.\n"
    );
    let _ = writeln!(
        s,
        "| rules = assets | empty program (ns) | established flow (ns) | net | denied first packet (ns) | net | net vs 10 rules (established / denied) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    let base = &rows[0];
    for r in rows {
        let e = r.established - r.baseline;
        let d = r.denied - r.baseline;
        let e0 = base.established - base.baseline;
        let d0 = base.denied - base.baseline;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× / {:.2}× |",
            r.n,
            r.baseline,
            r.established,
            e,
            r.denied,
            d,
            e / e0,
            d / d0
        );
    }
    let _ = writeln!(
        s,
        "\nTargets (issue 2): the established path under 60 ns above the empty program; \
         100,000 rules cost less than 1.2× of 10 rules. Lookups are keyed (hash and LPM \
         trie), never a loop over rules, so the cost stays flat while a linear chain would \
         grow with the rule count. The established path is the IPv4 fast path (one bounds \
         check, one 16-byte flow-key lookup, the flow's packet and byte counts for the \
         traffic history); the denied first packet also pays for the full parse, the \
         flow-table misses, the endpoint and rule lookups, the per-source violation count \
         the automatic triggers read, and the denied flow's entry and ring-buffer event for \
         the traffic history. Figures vary by a few ns from run to run (more on a shared \
         machine); compare the ratios."
    );
    s
}
