//! Entering named network namespaces (the `ip netns` kind, bind-mounted under
//! [`NETNS_DIR`]) from Rust code and from child processes.
//!
//! Invariants: only the *network* namespace is ever switched. The calling thread is never
//! moved — [`in_netns`] runs its closure on a fresh scoped thread — and child processes enter
//! the namespace between `fork` and `exec`. Unlike `ip netns exec`, nothing here unshares the
//! mount namespace or remounts `/sys`, so a child sees the host's `/sys/fs/bpf` (pins made by
//! a daemon in the gateway namespace stay visible and survive its restart), while
//! `/sys/class/net` still lists the *host's* interfaces; netlink and `/proc/sys/net` do
//! follow the namespace, and so does `/proc/net` in a child process — but inside
//! [`in_netns`] read `/proc/thread-self/net`, since `/proc/net` is `/proc/self/net`, the
//! main thread's view. Sockets keep the namespace they were created in,
//! so a socket made inside [`in_netns`] may be used from any thread afterwards.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` bind-mounts named network namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Creates [`NETNS_DIR`] if it does not exist yet.
pub fn ensure_netns_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_DIR)
}

/// The bind-mount path of the named network namespace `ns`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

fn open_netns(ns: &str) -> io::Result<File> {
    if ns.is_empty() || ns.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {ns:?}"),
        ));
    }
    File::open(netns_path(ns))
        .map_err(|e| io::Error::new(e.kind(), format!("opening network namespace {ns}: {e}")))
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns`, and returns its
/// result; a panic in `f` is propagated to the caller.
///
/// # Panics
/// If the namespace cannot be opened or entered; see [`try_in_netns`] for a fallible form.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    try_in_netns(ns, f).unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"))
}

/// Like [`in_netns`], but returns an error instead of panicking when the namespace cannot
/// be entered.
pub fn try_in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = open_netns(ns)?;
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn_scoped(scope, move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                drop(file);
                Ok(f())
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Arranges for `cmd`, when spawned, to run in the network namespace `ns` (the namespace
/// is opened now, and entered in the child right before `exec`).
pub fn enter_on_exec<'c>(cmd: &'c mut Command, ns: &str) -> io::Result<&'c mut Command> {
    let fd: OwnedFd = open_netns(ns)?.into();
    // SAFETY: the hook runs in the forked child before exec and only makes the setns(2)
    // system call on a descriptor opened in the parent: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || setns(&fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    Ok(cmd)
}

/// A [`Command`] for `program` that will run in the network namespace `ns`.
pub fn command_in(ns: &str, program: impl AsRef<OsStr>) -> io::Result<Command> {
    let mut cmd = Command::new(program);
    enter_on_exec(&mut cmd, ns)?;
    Ok(cmd)
}

/// Names of all network namespaces under [`NETNS_DIR`] that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        match name.to_str() {
            Some(name) if name.starts_with(prefix) => names.push(name.to_owned()),
            _ => {}
        }
    }
    names.sort();
    Ok(names)
}
