//! The Debian package (`cargo xtask package`): unpacked with `dpkg-deb -x` into a scratch
//! root, its files, control fields and maintainer scripts checked, and what it installs run
//! from there: the binaries, the man pages, the systemd unit.
//!
//! Building the package takes a release build, so these tests use the newest
//! `target/debian/*.deb` rather than build one. Without a package they pass with a
//! "skipped" note, unless SEKISHO_PACKAGE_TEST is set (`cargo xtask test` sets it after
//! building the package): then a missing package fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The newest package in the target directory's `debian/`, or `None` when the test is to
/// be skipped (no package, and SEKISHO_PACKAGE_TEST unset).
fn package() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("debian");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sekisho_"))
        })
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    if newest.is_none() {
        assert!(
            std::env::var_os("SEKISHO_PACKAGE_TEST").is_none(),
            "SEKISHO_PACKAGE_TEST is set but {} holds no sekisho_*.deb: run `cargo xtask package`",
            dir.display()
        );
        eprintln!(
            "skipped: no sekisho_*.deb in {}; `cargo xtask package` builds one \
             (`cargo xtask test` does, and sets SEKISHO_PACKAGE_TEST to require it)",
            dir.display()
        );
    }
    newest
}

/// The package unpacked into a scratch root (`dpkg-deb -x`) and its control archive into
/// `<root>/DEBIAN` (`dpkg-deb -e`); removed on drop, pass or fail.
struct Unpacked {
    deb: PathBuf,
    root: PathBuf,
}

impl Unpacked {
    fn new() -> Option<Unpacked> {
        let deb = package()?;
        let root = sekisho_testbed::Sekishod::scratch_dir().expect("scratch directory");
        let unpacked = Unpacked { deb, root };
        succeed(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&unpacked.deb)
                .arg(&unpacked.root),
        );
        succeed(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(&unpacked.deb)
                .arg(unpacked.path("DEBIAN")),
        );
        Some(unpacked)
    }

    /// `path` under the root (`/usr/sbin/sekishod` → `<root>/usr/sbin/sekishod`).
    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn text(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path))
            .unwrap_or_else(|e| panic!("{path} in {}: {e}", self.deb.display()))
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `cmd`, panics with its output unless it exits 0, and returns its output.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(cmd).stdout).into_owned()
}

/// The lines of a shell script that are not comments.
fn commands(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_package_holds_binaries_unit_configuration_man_pages_and_completions() {
    let Some(pkg) = Unpacked::new() else { return };
    let executables = ["/usr/sbin/sekishod", "/usr/bin/sekishoctl"];
    let files = [
        "/lib/systemd/system/sekishod.service",
        "/etc/sekisho/sekisho.toml",
        "/usr/share/man/man8/sekishod.8.gz",
        "/usr/share/man/man8/sekishoctl.8.gz",
        "/usr/share/man/man8/sekishoctl-isolate.8.gz",
        "/usr/share/bash-completion/completions/sekishoctl",
        "/usr/share/zsh/vendor-completions/_sekishoctl",
        "/usr/share/fish/vendor_completions.d/sekishoctl.fish",
    ];
    for path in executables.iter().chain(&files) {
        assert!(pkg.path(path).is_file(), "{path} missing from the package");
    }
    use std::os::unix::fs::PermissionsExt as _;
    for path in executables {
        let mode = std::fs::metadata(pkg.path(path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{path}");
    }
    // The configuration describes the segment: not world-readable.
    let mode = std::fs::metadata(pkg.path("/etc/sekisho/sekisho.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o007,
        0,
        "/etc/sekisho/sekisho.toml is world-readable"
    );
    // Each notice template of the source tree, and the example configuration, as shipped.
    let configs = sekisho_testbed::daemon::configs_dir();
    for entry in std::fs::read_dir(configs.join("templates")).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy();
        assert_eq!(
            pkg.text(&format!("/etc/sekisho/templates/{name}")),
            std::fs::read_to_string(configs.join("templates").join(&*name)).unwrap(),
            "/etc/sekisho/templates/{name}"
        );
    }
    assert_eq!(
        pkg.text("/etc/sekisho/sekisho.toml"),
        std::fs::read_to_string(configs.join("sekisho.example.toml")).unwrap()
    );
    // The completions are the generated ones, naming the real subcommands.
    for path in [
        "/usr/share/bash-completion/completions/sekishoctl",
        "/usr/share/zsh/vendor-completions/_sekishoctl",
        "/usr/share/fish/vendor_completions.d/sekishoctl.fish",
    ] {
        let text = pkg.text(path);
        for word in ["isolate", "restore", "maintenance", "approved-by"] {
            assert!(text.contains(word), "{path} lacks {word}");
        }
        assert!(
            !text.contains("generate"),
            "{path} offers the packaging flag"
        );
    }
}

#[test]
fn the_packaged_binaries_run() {
    let Some(pkg) = Unpacked::new() else { return };
    let version = stdout(Command::new(pkg.path("/usr/sbin/sekishod")).arg("--version"));
    assert!(
        version.starts_with(&format!("sekishod {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let help = stdout(Command::new(pkg.path("/usr/bin/sekishoctl")).arg("--help"));
    for word in ["isolate", "restore", "status"] {
        assert!(
            help.contains(word),
            "sekishoctl --help lacks {word}:\n{help}"
        );
    }
    let help = help + &stdout(Command::new(pkg.path("/usr/sbin/sekishod")).arg("--help"));
    assert!(
        !help.contains("generate"),
        "the packaging flag shows in --help"
    );
}

#[test]
fn the_packaged_man_pages_render() {
    let Some(pkg) = Unpacked::new() else { return };
    for (page, words) in [
        ("sekishoctl", &["sekishoctl", "isolate", "--socket"][..]),
        ("sekishoctl-isolate", &["--approved-by", "--emergency"][..]),
        ("sekishod", &["sekishod", "--uninstall", "--config"][..]),
    ] {
        let file = pkg.path(&format!("/usr/share/man/man8/{page}.8.gz"));
        let source = stdout(Command::new("zcat").arg(&file));
        assert!(
            source
                .lines()
                .any(|l| l.starts_with(&format!(".TH {page} 8"))),
            "{page}.8.gz is not a section-8 man page:\n{source}"
        );
        // `man sekishoctl` as an administrator would read it, when man-db is there.
        let text = if Command::new("man").arg("--version").output().is_ok() {
            stdout(
                Command::new("man")
                    .arg("-l")
                    .arg(&file)
                    .env("MANPAGER", "cat")
                    .env("MANWIDTH", "100"),
            )
        } else {
            eprintln!("man missing: checking the roff source of {page}.8.gz only");
            source
        };
        for word in words {
            assert!(text.contains(word), "{page}(8) lacks {word}:\n{text}");
        }
    }
}

#[test]
fn the_control_fields_declare_dependencies_conffiles_and_maintainer_scripts() {
    let Some(pkg) = Unpacked::new() else { return };
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&pkg.deb));
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    for dependency in ["nftables", "adduser"] {
        assert!(
            depends.split(',').any(|d| d.trim().starts_with(dependency)),
            "Depends lacks {dependency}: {depends}"
        );
    }
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&pkg.deb)
            .arg("conffiles"),
    );
    for path in [
        "/etc/sekisho/sekisho.toml",
        "/etc/sekisho/templates/emergency_stop.txt",
    ] {
        assert!(
            conffiles.lines().any(|l| l.trim() == path),
            "{path} is not a conffile:\n{conffiles}"
        );
    }
    for script in ["postinst", "prerm", "postrm"] {
        succeed(
            Command::new("sh")
                .arg("-n")
                .arg(pkg.path(&format!("DEBIAN/{script}"))),
        );
    }
    // Stopping never opens the segment; only `sekishod --uninstall` does, explicitly.
    for script in ["prerm", "postrm", "postinst"] {
        let text = pkg.text(&format!("DEBIAN/{script}"));
        assert!(
            commands(&text).iter().all(|l| !l.contains("uninstall")
                && !l.contains("nft ")
                && !l.contains("/sys/fs/bpf")),
            "{script} takes the datapath down"
        );
    }
}

/// Runs a maintainer script of the package with `args`, every command it could call
/// replaced by a stub that records its arguments; `missing_groups` makes `getent group`
/// fail (the group does not exist yet). Returns the calls, one `program args…` a line.
fn run_script(pkg: &Unpacked, script: &str, args: &[&str], missing_groups: bool) -> Vec<String> {
    let stubs = pkg.path("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let log = stubs.join("calls");
    let _ = std::fs::remove_file(&log);
    let programs = [
        "addgroup",
        "groupadd",
        "getent",
        "install",
        "chown",
        "chmod",
        "dpkg-statoverride",
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "sekishod",
        "nft",
        "bpftool",
        "rm",
    ];
    for program in programs {
        let status = match program {
            "getent" if missing_groups => "2",
            // No statoverride yet; adding one succeeds.
            "dpkg-statoverride" => r#"$([ "$1" = --list ] && echo 1 || echo 0)"#,
            _ => "0",
        };
        let stub = stubs.join(program);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{program} $*\" >> '{}'\nexit {status}\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    succeed(
        Command::new("/bin/sh")
            .arg(pkg.path(&format!("DEBIAN/{script}")))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", stubs.display())),
    );
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn postinst_creates_the_groups_and_state_directory_and_enables_without_starting() {
    let Some(pkg) = Unpacked::new() else { return };
    let calls = run_script(&pkg, "postinst", &["configure", ""], true);
    let called = |prefix: &str| calls.iter().any(|c| c.starts_with(prefix));
    for group in ["sekisho", "sekisho-admin"] {
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("addgroup --system") && c.ends_with(&format!(" {group}"))),
            "no addgroup --system {group}: {calls:#?}"
        );
    }
    // Created with its owner and mode when missing (this machine may have one already).
    let state_created = called("install -d -m 0750 -o root -g sekisho /var/lib/sekisho");
    assert_eq!(
        state_created,
        !Path::new("/var/lib/sekisho").is_dir(),
        "{calls:#?}"
    );
    assert!(
        called("deb-systemd-helper enable sekishod.service"),
        "the unit is not enabled: {calls:#?}"
    );
    assert!(
        called("dpkg-statoverride --update --add root sekisho 0640 /etc/sekisho/sekisho.toml"),
        "{calls:#?}"
    );
    // Enabled, not started: the example configuration is not this gateway's policy.
    assert!(
        !calls.iter().any(|c| c.contains("start")),
        "postinst starts the unit: {calls:#?}"
    );

    // Configured again (reinstall, dpkg --configure -a): the groups exist, nothing doubles.
    let calls = run_script(&pkg, "postinst", &["configure", "0.1.0-1"], false);
    assert!(
        !calls.iter().any(|c| c.starts_with("addgroup")),
        "postinst is not idempotent: {calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains(" start ")),
        "an upgrade starts a stopped daemon: {calls:#?}"
    );
}

#[test]
fn removing_the_package_never_opens_the_segment() {
    let Some(pkg) = Unpacked::new() else { return };
    for (script, args) in [
        ("prerm", &["remove"][..]),
        ("prerm", &["upgrade", "0.1.0-1"][..]),
        ("postrm", &["remove"][..]),
        ("postrm", &["purge"][..]),
    ] {
        let calls = run_script(&pkg, script, args, false);
        // Stopping the daemon leaves the pinned datapath and the nftables table enforcing;
        // only `sekishod --uninstall` takes them out, and no script runs it.
        assert!(
            calls.iter().all(|c| !c.starts_with("sekishod")
                && !c.starts_with("nft")
                && !c.starts_with("bpftool")
                && !c.starts_with("rm")),
            "{script} {args:?} touches the datapath or the records: {calls:#?}"
        );
    }
    let prerm = pkg.text("DEBIAN/prerm");
    assert!(
        prerm.contains("sekishod --uninstall"),
        "prerm does not say how to take the datapath out"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_packaged_unit() {
    let Some(pkg) = Unpacked::new() else { return };
    let unit = pkg.path("/lib/systemd/system/sekishod.service");
    let text = pkg.text("/lib/systemd/system/sekishod.service");
    assert!(text.contains("ExecStart=/usr/sbin/sekishod "), "{text}");
    let sekishod = pkg.path("/usr/sbin/sekishod");
    std::fs::write(
        &unit,
        text.replace("/usr/sbin/sekishod", sekishod.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Units it refers to that this machine lacks are not the unit's fault.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sekishod.service") && !l.contains("not found"))
        .collect();
    assert!(problems.is_empty(), "{stderr}");
}
