//! `cargo xtask demo`: sekisho enforcing `configs/demo.toml` in a network-namespace copy of
//! a municipality's 住基ネット segment, narrated step by step with the CLI's own output.
//!
//! Every step states what the policy should do and checks that the packets agree; the demo
//! fails loudly if one does not. It removes everything it made on exit, unless `--keep`
//! leaves the daemon and the namespaces running (`--cleanup` removes them later).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sekisho_testbed::daemon::{bin, configs_dir};
use sekisho_testbed::{
    Host, Probe, Sekishod, TcpServer, Topology, UdpServer, ping, tcp_probe, udp_echo,
};

const DEMO_DIR: &str = "/tmp/sekisho-demo";
const WAIT: Duration = Duration::from_millis(700);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--cleanup") {
        return cleanup();
    }
    let keep = args.iter().any(|a| a == "--keep");
    cleanup()?;
    run(keep)
}

/// Ends a kept demo's daemon (by the PID it recorded) and removes its namespaces.
fn cleanup() -> anyhow::Result<()> {
    let pid_file = Path::new(DEMO_DIR).join("sekishod.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let removed = Topology::remove_stale()?;
    if !removed.is_empty() {
        println!("removed {} namespaces of an earlier demo", removed.len());
    }
    let _ = std::fs::remove_dir_all(DEMO_DIR);
    let _ = sekisho::datapath::unpin_all(Path::new(sekisho_testbed::daemon::DEMO_PIN_DIR));
    Ok(())
}

fn heading(text: &str) {
    println!("\n\x1b[1m━━ {text}\x1b[0m");
}

fn say(text: &str) {
    println!("   {text}");
}

fn show(daemon: &Sekishod, args: &[&str]) -> anyhow::Result<()> {
    println!("\n   $ sekishoctl {}", args.join(" "));
    let out = daemon.ctl(args)?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   │ {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("   │ {line}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Traffic {
    Tcp(u16),
    Udp(u16),
    Ping,
}

struct Step {
    from: Host,
    to: Host,
    v6: bool,
    traffic: Traffic,
    allow: bool,
    why: &'static str,
}

fn label(h: Host) -> &'static str {
    match h {
        Host::Gw => "gateway",
        Host::Cs => "CS cs01",
        Host::Term1 => "terminal term-01",
        Host::Term2 => "terminal term-02",
        Host::Rogue => "unlisted host",
        Host::Pref => "prefecture server",
        Host::Jlis => "J-LIS server",
        Host::Internet => "internet host",
    }
}

fn attempt(topo: &Topology, s: &Step) -> bool {
    let to = SocketAddr::new(s.to.addr(s.v6), 0);
    match s.traffic {
        Traffic::Tcp(port) => {
            let to = SocketAddr::new(to.ip(), port);
            tcp_probe(topo, s.from, to, WAIT) == Probe::Connected
        }
        Traffic::Udp(port) => udp_echo(topo, s.from, SocketAddr::new(to.ip(), port), WAIT),
        Traffic::Ping => ping(topo, s.from, to.ip(), WAIT),
    }
}

/// Tries one step and prints it; true when it did not behave as the policy says.
fn report(topo: &Topology, s: &Step) -> bool {
    let proto = match s.traffic {
        Traffic::Tcp(p) => format!("tcp/{p}"),
        Traffic::Udp(p) => format!("udp/{p}"),
        Traffic::Ping => "ping".to_owned(),
    };
    let got = attempt(topo, s);
    let verdict = if got {
        "\x1b[32mALLOWED\x1b[0m"
    } else {
        "\x1b[31mDENIED \x1b[0m"
    };
    let mark = if got == s.allow {
        "✓"
    } else {
        "✗ NOT AS THE POLICY SAYS"
    };
    println!(
        "   {verdict} {:<17} → {:<18} {:<9} {} {mark}\n           {}",
        label(s.from),
        label(s.to),
        proto,
        if s.v6 { "IPv6" } else { "IPv4" },
        s.why
    );
    got != s.allow
}

fn run(keep: bool) -> anyhow::Result<()> {
    heading("sekisho demo: the 住基ネット segment in network namespaces");
    let topo = Topology::build().context("building the demo topology")?;
    say("Built on this machine, isolated from its real network:");
    say("");
    say("  CS cs01 192.0.2.10 ─── lan-cs ┐");
    say(
        "  terminals term-01 .21, term-02 .22 ┐          ├─ gateway (sekishod) ─ wan0 ─┬─ prefecture 203.0.113.10",
    );
    say(
        "  unlisted host .29 ─────────────────┴ lan-term ┘                             ├─ J-LIS 203.0.113.20",
    );
    say(
        "                                                                              └─ internet host 203.0.113.100",
    );
    say(
        "  (each host has an IPv6 address too: 2001:db8:10::a, 2001:db8:21::15, 2001:db8:ff::a, …)",
    );

    let dir = PathBuf::from(DEMO_DIR);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("sekisho.toml");
    std::fs::copy(configs_dir().join("demo.toml"), &config)?;

    heading("1. Check the configuration (情報資産管理簿, peers, allow rules)");
    let out = std::process::Command::new(bin("sekishoctl"))
        .args(["config", "check"])
        .arg(&config)
        .output()?;
    print!(
        "   $ sekishoctl config check {}\n   │ {}",
        config.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }

    heading("2. Start sekishod on the gateway");
    let daemon = Sekishod::start(&topo, dir.clone(), config.clone())?;
    std::fs::write(dir.join("sekishod.pid"), daemon.pid().to_string())?;
    say(&format!(
        "sekishod is running (pid {}), policy in force in the kernel.",
        daemon.pid()
    ));
    show(&daemon, &["status"])?;

    // Servers on every host and port the walk-through touches: a dropped attempt then
    // means the gateway dropped it, never that nobody listened.
    let mut tcp = Vec::new();
    for (host, ports) in [
        (Host::Cs, &[443u16, 22][..]),
        (Host::Pref, &[443, 8080, 22][..]),
        (Host::Jlis, &[443][..]),
        (Host::Internet, &[443][..]),
    ] {
        for p in ports {
            tcp.push(TcpServer::start(&topo, host, *p)?);
        }
    }
    let _ntp = UdpServer::start(&topo, Host::Jlis, 123)?;

    heading("3. Walk through allowed and denied traffic");
    let steps = [
        Step {
            from: Host::Term1,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: true,
            why: "R2: terminals work through the CS",
        },
        Step {
            from: Host::Term2,
            to: Host::Cs,
            v6: true,
            traffic: Traffic::Tcp(443),
            allow: true,
            why: "R2, over IPv6",
        },
        Step {
            from: Host::Term1,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(22),
            allow: false,
            why: "R3: only the ports a rule names",
        },
        Step {
            from: Host::Term1,
            to: Host::Pref,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: false,
            why: "R2: a terminal never reaches the prefecture directly",
        },
        Step {
            from: Host::Cs,
            to: Host::Pref,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: true,
            why: "the CS talks to the prefecture server",
        },
        Step {
            from: Host::Cs,
            to: Host::Pref,
            v6: true,
            traffic: Traffic::Tcp(8080),
            allow: true,
            why: "…on its allowed port range 8000-8100, over IPv6",
        },
        Step {
            from: Host::Cs,
            to: Host::Pref,
            v6: false,
            traffic: Traffic::Tcp(22),
            allow: false,
            why: "R3: but not on ports no rule names",
        },
        Step {
            from: Host::Cs,
            to: Host::Jlis,
            v6: false,
            traffic: Traffic::Udp(123),
            allow: true,
            why: "the CS talks to J-LIS (time, udp/123)",
        },
        Step {
            from: Host::Cs,
            to: Host::Pref,
            v6: false,
            traffic: Traffic::Ping,
            allow: true,
            why: "ICMP echo is allowed to the prefecture",
        },
        Step {
            from: Host::Cs,
            to: Host::Internet,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: false,
            why: "R1: the CS never reaches any other network",
        },
        Step {
            from: Host::Cs,
            to: Host::Internet,
            v6: true,
            traffic: Traffic::Ping,
            allow: false,
            why: "R1, over IPv6",
        },
        Step {
            from: Host::Internet,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: false,
            why: "nothing from outside reaches the CS",
        },
        Step {
            from: Host::Rogue,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: false,
            why: "R5: a host not in the asset register is denied",
        },
    ];
    let mut failures = 0;
    for s in &steps {
        failures += usize::from(report(&topo, s));
    }

    heading("4. What the gateway counted");
    show(&daemon, &["status"])?;
    if failures > 0 {
        bail!("{failures} step(s) did not behave as the policy says");
    }
    say("Every flow above, allowed or denied, is in the traffic history (通信履歴), with the");
    say("rule and the policy generation that decided it (R6–R9):");
    show(
        &daemon,
        &[
            "history",
            "query",
            "--event",
            "start",
            "--verdict",
            "deny",
            "--limit",
            "8",
        ],
    )?;
    show(&daemon, &["history", "stats"])?;

    heading("5. Emergency cut-off (緊急時の切り離し): a terminal is suspected of infection");
    say("First the plan: what would stop, what stays reachable. Nothing changes yet.");
    show(&daemon, &["isolate", "asset:term-01", "--plan"])?;
    show(
        &daemon,
        &[
            "isolate",
            "asset:term-01",
            "--reason",
            "ウイルス感染の疑い",
            "--approved-by",
            "セキュリティ統括責任者",
        ],
    )?;
    let cut = [
        Step {
            from: Host::Term1,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: false,
            why: "R11: the isolated terminal is cut off at once",
        },
        Step {
            from: Host::Term2,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: true,
            why: "the other terminal keeps working",
        },
    ];
    for s in &cut {
        failures += usize::from(report(&topo, s));
    }
    say("It stays cut off across restarts and reboots until an explicit restore (R13).");
    show(
        &daemon,
        &[
            "restore",
            "asset:term-01",
            "--reason",
            "駆除完了を確認",
            "--approved-by",
            "セキュリティ統括責任者",
        ],
    )?;
    failures += usize::from(report(
        &topo,
        &Step {
            from: Host::Term1,
            to: Host::Cs,
            v6: false,
            traffic: Traffic::Tcp(443),
            allow: true,
            why: "restored: new connections follow the policy again",
        },
    ));
    say("Every step is in the operation history (操作履歴), chained by SHA-256:");
    show(&daemon, &["audit", "show", "--limit", "4"])?;
    show(&daemon, &["audit", "verify"])?;
    drop(tcp);
    if failures > 0 {
        bail!("{failures} step(s) did not behave as the policy says");
    }

    if keep {
        let kept = topo.keep();
        let ns = |h: &str| format!("{}{h}", kept.prefix);
        heading("The demo keeps running (--keep)");
        say(&format!(
            "sekishod pid {} · config {}",
            daemon.pid(),
            config.display()
        ));
        say(&format!(
            "sekishoctl --socket {DEMO_DIR}/control.sock status"
        ));
        say(&format!(
            "ip netns exec {} ping -c1 192.0.2.10      # a terminal pings the CS",
            ns("term1")
        ));
        say(&format!(
            "ip netns exec {} ping -c1 203.0.113.100   # the CS tries the internet",
            ns("cs")
        ));
        say("cargo xtask demo --cleanup                     # stop it and remove everything");
        // The daemon outlives this process on purpose; --cleanup ends it by PID.
        std::mem::forget(daemon);
    } else {
        heading("Done: stopping sekishod and removing the namespaces");
    }
    Ok(())
}
