//! sekisho's developer commands: what cargo alone cannot do.
//!
//! - `setup`: install, idempotently, what a fresh machine lacks (Debian packages, the
//!   nightly rust-src, bpf-linker built against the nightly's own LLVM, cargo-deb).
//! - `test`: setup, formatting and lints, unit tests, the package, then the privileged
//!   eBPF, network-namespace and package tests (one at a time: the kernel is shared state).
//! - `demo`: setup, build, and walk through the daemon enforcing in a namespace topology.
//! - `bench`: setup, then the datapath benchmark, written to `docs/benchmarks.md`, and the
//!   traffic history benchmark, written to `docs/benchmarks-history.md`.
//! - `package`: setup, then the Debian package in `target/debian/`, with man pages and
//!   completions generated from the binaries' own command-line definitions.
//!
//! xtask depends on nothing of sekisho's own: building the daemon needs bpf-linker, which
//! `setup` is what installs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sekisho developer commands")]
struct Options {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing sekisho needs (idempotent).
    Setup,
    /// Run every test: lints, unit tests, eBPF program tests, network-namespace tests.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Show sekisho enforcing its policy in a network-namespace topology.
    Demo {
        /// Leave the topology and the daemon running to explore.
        #[arg(long)]
        keep: bool,
        /// Stop a demo left running by --keep and remove its namespaces.
        #[arg(long, conflicts_with = "keep")]
        cleanup: bool,
    },
    /// Measure the per-packet decision cost (docs/benchmarks.md) and the traffic history's
    /// ingest, size and query time (docs/benchmarks-history.md).
    Bench {
        /// Keep the 100-million-record history in target/bench-history/ for the next run.
        #[arg(long)]
        keep: bool,
    },
    /// Build the Debian package target/debian/sekisho_*.deb.
    Package,
}

/// Debian packages the build, the tests and the demo use.
const PACKAGES: &[&str] = &[
    // readelf tells which LLVM an installed bpf-linker was linked against.
    "binutils",
    "iproute2",
    "iputils-ping",
    "nftables",
    "prometheus",
    // systemd-analyze checks the unit file.
    "systemd",
    // The IPFIX export test (tests/tests/ipfix.rs) decodes with Wireshark's dissector and
    // collects with nfdump's nfcapd.
    "tshark",
    "nfdump",
];

/// Answers to the packages' debconf questions, so that an unattended install never stops
/// to ask: tshark asks whether non-root users may capture (no: the tests run as root).
const DEBCONF_SELECTIONS: &str = "wireshark-common wireshark-common/install-setuid boolean false\n";

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match options.command {
        Task::Setup => setup(),
        Task::Test { filter } => {
            setup()?;
            test(filter.as_deref())
        }
        Task::Demo { keep, cleanup } => {
            setup()?;
            demo(keep, cleanup)
        }
        Task::Bench { keep } => {
            setup()?;
            bench(keep)
        }
        Task::Package => {
            setup()?;
            package().map(|deb| println!("{}", deb.display()))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Feeds `selections` to `debconf-set-selections`.
fn preseed(selections: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new("debconf-set-selections");
    eprintln!("+ {cmd:?} <<< {selections:?}");
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    child
        .stdin
        .take()
        .context("debconf-set-selections stdin")?
        .write_all(selections.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        preseed(DEBCONF_SELECTIONS)?;
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    nightly_with_rust_src()?;
    bpf_linker_for_nightly()?;
    if !succeeds(cargo().args(["deb", "--version"])) {
        run(Command::new("cargo").args(["install", "--locked", "cargo-deb"]))?;
    }
    eprintln!("setup: everything sekisho needs is installed");
    Ok(())
}

/// The nightly toolchain with `rust-src`, for `-Z build-std=core`. A nightly already on the
/// machine is kept as it is: installing would move it to the newest one.
fn nightly_with_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let install = || {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
    };
    match installed {
        Some(o) if String::from_utf8_lossy(&o.stdout).contains("rust-src") => Ok(()),
        // An old nightly's rust-src may be gone from the mirror: then the newest nightly.
        Some(_) => run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .or_else(|_| install()),
        None => install(),
    }
}

/// bpf-linker reads the bitcode rustc writes, so its LLVM must be the nightly's own: one
/// major version apart and linking fails ("Not an int attribute"), and Debian's LLVM
/// trails the nightly's. rustup ships rustc's LLVM as a shared library, so bpf-linker is
/// linked against that very file, and rebuilt whenever the nightly's LLVM changes.
fn bpf_linker_for_nightly() -> anyhow::Result<()> {
    let sysroot = command_output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    // The library's file name is its soname: libLLVM.so.23.1-rust-1.101.0-nightly.
    let soname = std::fs::read_dir(&libdir)
        .with_context(|| format!("{}", libdir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    let major = llvm_major(&soname).with_context(|| format!("no LLVM version in {soname}"))?;
    if bpf_linker_links(&soname) {
        return Ok(());
    }
    // bpf-linker's build looks for libLLVM.so under LLVM_PREFIX/lib and sets its runpath
    // there; the soname link is what the loader then finds.
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let prefix = Path::new(&home)
        .join(".cache/sekisho/rust-llvm")
        .join(&soname);
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("{}", lib.display()))?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&soname), &link)
            .with_context(|| format!("{}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_links(&soname) {
        bail!("bpf-linker was installed but does not load {soname}");
    }
    Ok(())
}

/// The major version in a libLLVM soname: 23 in libLLVM.so.23.1-rust-1.101.0-nightly.
fn llvm_major(soname: &str) -> Option<&str> {
    soname
        .strip_prefix("libLLVM.so.")?
        .split('.')
        .next()
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the bpf-linker on PATH starts and is linked against the library `soname`.
fn bpf_linker_links(soname: &str) -> bool {
    let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|p| p.is_file())
    }) else {
        return false;
    };
    let needed = Command::new("readelf")
        .args(["-d", "-W"])
        .arg(&path)
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("Shared library: [{soname}]"))
        });
    needed && succeeds(Command::new(&path).arg("--version"))
}

fn command_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--all-targets",
        "-p",
        "sekisho",
        "-p",
        "sekisho-common",
        "-p",
        "sekisho-testbed",
        "-p",
        "xtask",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The binaries the namespace tests start.
    run(cargo().args(["build", "-p", "sekisho", "--bins"]))?;
    let filter: Vec<&str> = filter.into_iter().collect();
    let mut totals = counted(
        cargo()
            .args([
                "test",
                "-p",
                "sekisho",
                "-p",
                "sekisho-common",
                "-p",
                "xtask",
                "--",
            ])
            .args(&filter),
    )?;
    // What the package test (tests/tests/package.rs) unpacks and checks.
    package()?;
    // Privileged tiers: BPF_PROG_TEST_RUN and network namespaces share the kernel.
    totals += counted(
        cargo()
            .args([
                "test",
                "-p",
                "sekisho-testbed",
                "--tests",
                "--",
                "--test-threads=1",
            ])
            .args(&filter)
            .env("SEKISHO_BIN_DIR", root_target("debug"))
            .env("SEKISHO_PACKAGE_TEST", "1"),
    )?;
    // One line for the whole run, whichever test binary happened to finish last.
    println!(
        "sekisho: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

/// Runs a `cargo test`, passing its output through, and adds up its result lines.
fn counted(cmd: &mut Command) -> anyhow::Result<Totals> {
    use std::io::BufRead as _;
    eprintln!("+ {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            totals.passed += number(" passed");
            totals.failed += number(" failed");
            totals.ignored += number(" ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(totals)
}

fn root_target(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join(profile)
}

fn demo(keep: bool, cleanup: bool) -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "-p", "sekisho", "--bins"]))?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-q",
        "-p",
        "sekisho-testbed",
        "--bin",
        "sekisho-demo",
        "--",
    ])
    .env("SEKISHO_BIN_DIR", root_target("release"));
    if keep {
        cmd.arg("--keep");
    }
    if cleanup {
        cmd.arg("--cleanup");
    }
    run(&mut cmd)
}

fn bench(keep: bool) -> anyhow::Result<()> {
    run(cargo().args([
        "run",
        "--release",
        "-q",
        "-p",
        "sekisho-testbed",
        "--bin",
        "sekisho-bench",
        "--",
        "--out",
        "docs/benchmarks.md",
    ]))?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-q",
        "-p",
        "sekisho-testbed",
        "--bin",
        "sekisho-bench-history",
        "--",
        "--out",
        "docs/benchmarks-history.md",
    ]);
    if keep {
        cmd.arg("--keep");
    }
    run(&mut cmd)
}

/// Where `package` puts the generated man pages and completions. In the workspace's
/// `target/` whatever CARGO_TARGET_DIR says: daemon/Cargo.toml's `[package.metadata.deb]`
/// names them by a path relative to daemon/.
const PACKAGE_ASSETS: &str = "target/package-assets";

/// Builds the release binaries, has them write their man pages and completions into
/// [`PACKAGE_ASSETS`], and packs everything `[package.metadata.deb]` lists with cargo-deb.
/// Returns the path of the .deb.
fn package() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "sekisho", "--bins"]))?;
    let assets = workspace_root().join(PACKAGE_ASSETS);
    // Nothing stale: a subcommand that no longer exists must not keep its man page.
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("cannot empty {}", assets.display()))?;
    }
    let release = root_target("release");
    for bin in ["sekishod", "sekishoctl"] {
        run(Command::new(release.join(bin))
            .arg("--generate")
            .arg(&assets)
            .stdout(std::process::Stdio::null()))?;
    }
    let mut cmd = cargo();
    cmd.args(["deb", "-p", "sekisho", "--no-build"]);
    eprintln!("+ {cmd:?}");
    let out = cmd.output().context("cannot start cargo deb")?;
    // cargo-deb warns that assets under `target/` outside `target/release/` "will not be
    // built": true and intended, they are what the binaries generated above.
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.ends_with("does not match the pattern, and will not be built"))
        .for_each(|l| eprintln!("{l}"));
    if !out.status.success() {
        bail!("cargo deb failed: {}", out.status);
    }
    // cargo-deb prints the path of the package it wrote, last.
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rfind(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not say where the package is")?;
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_is_read_from_rustups_soname() {
        assert_eq!(
            llvm_major("libLLVM.so.23.1-rust-1.101.0-nightly"),
            Some("23")
        );
        assert_eq!(llvm_major("libLLVM.so.22.1"), Some("22"));
        // A soname without a version must not become the feature `llvm-`.
        assert_eq!(llvm_major("libLLVM.so.-rust"), None);
        assert_eq!(llvm_major("libLLVM-23-rust-1.101.0-nightly.so"), None);
    }
}
