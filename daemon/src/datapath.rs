//! Loads sekisho's eBPF object, attaches its classifiers at ingress of the LAN and WAN
//! interfaces (TCX where the kernel has it, clsact otherwise), writes compiled policies
//! into the kernel's tables and reads the counters back.
//!
//! With a pin directory (the daemon always has one), maps, programs and TCX links are
//! pinned there, so the policy stays enforced when the daemon exits or dies: the kernel
//! keeps a pinned link, and with it the program and its maps, until the pin is removed
//! (`sekishod --uninstall`). A new daemon reuses the pinned maps (after checking their
//! layout version) and swaps its freshly loaded program into each pinned link with one
//! `bpf_link_update`, so there is never a moment without a program on an interface.
//!
//! Policy writes follow the slot protocol of `sekisho_common::SLOTS`: the slot not in
//! force is cleared and filled, then the generation is bumped in one 4-byte store, so a
//! packet sees either the whole old policy or the whole new one. The old slot is left
//! intact until the next write (a packet that read the old generation may still be using
//! it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    pin::PinError,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use sekisho_common::{
    ABI_VERSION, Counter, DIRECTIONS, EndpointKey, IsolationKey, REASONS, Reason, RuleKey,
    RuleValue, SLOTS, Settings, State, VERDICTS, Violations, counter_index, names,
};
use tracing::{info, warn};

use crate::policy::{CompiledPolicy, endpoint_key_bits};

/// The eBPF object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sekisho"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("cannot load program {name} into the kernel")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach {program} to interface {interface}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot mount bpffs at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create the pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot reopen the pinned link {path}")]
    PinnedLink {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error(
        "the pinned datapath in {path} was written by a sekishod with map layout {found}, this one \
         uses {expected}; it keeps enforcing the old policy. Stop, run `sekishod --uninstall` \
         (which opens the segment) and start again"
    )]
    Abi {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("map {map}: {operation} failed")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: MapError,
    },
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(map: &'static str, operation: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map {
        map,
        operation,
        source,
    }
}

/// Which side of the gateway an interface is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Lan,
    Wan,
}

impl Side {
    pub fn program(self) -> &'static str {
        match self {
            Side::Lan => names::PROG_LAN,
            Side::Wan => names::PROG_WAN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Lan => "lan",
            Side::Wan => "wan",
        }
    }
}

/// Counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// `[direction][verdict]`: from_lan/from_wan × allow/deny/monitor.
    pub by_direction: [[Counter2; VERDICTS as usize]; DIRECTIONS as usize],
    /// Packets per reason name.
    pub by_reason: BTreeMap<String, u64>,
}

/// Serialisable form of [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counter2 {
    pub packets: u64,
    pub bytes: u64,
}

pub const DIRECTION_NAMES: [&str; DIRECTIONS as usize] = ["from_lan", "from_wan"];
pub const VERDICT_NAMES: [&str; VERDICTS as usize] = ["allow", "deny", "monitor"];

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    state: Array<MapData, State>,
    settings: Array<MapData, Settings>,
    endpoints: LpmTrie<MapData, EndpointKey, sekisho_common::Endpoint>,
    rules: LpmTrie<MapData, RuleKey, RuleValue>,
    counters: PerCpuArray<MapData, Counter>,
    reasons: PerCpuArray<MapData, u64>,
    isolated: HashMap<MapData, IsolationKey, u8>,
    violations: PerCpuHashMap<MapData, [u8; 16], Violations>,
    local: HashMap<MapData, [u8; 16], u8>,
    accounts: PerCpuArray<MapData, Counter>,
    /// The traffic history's maps, until the recorder takes them.
    flow_maps: Option<crate::history::recorder::FlowMaps>,
    /// A generation switch happened and no grace period has passed since.
    unsettled: bool,
    attached: Vec<(String, Side)>,
    pin_dir: Option<PathBuf>,
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::BPF_FS_MAGIC;

/// Mounts bpffs at [`BPFFS`] unless it is there already.
pub fn ensure_bpffs() -> Result<()> {
    let mounted =
        nix::sys::statfs::statfs(BPFFS).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    if !mounted {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| DatapathError::Mount {
            path: BPFFS.into(),
            source,
        })?;
        info!(path = BPFFS, "mounted bpffs");
    }
    Ok(())
}

fn link_pin(dir: &Path, interface: &str, side: Side) -> PathBuf {
    dir.join(format!("link_{}_{interface}", side.as_str()))
}

fn program_pin(dir: &Path, side: Side) -> PathBuf {
    dir.join(format!("prog_{}", side.as_str()))
}

/// Waits for an RCU grace period: every eBPF program run that began before this call has
/// ended. `membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()` in the kernel; where
/// it is refused (`nohz_full` kernels), a pause far longer than any program run.
fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Removes everything pinned under `dir` (links first, so the programs come off the
/// interfaces, then programs and maps). Returns what was removed.
pub fn unpin_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        (!name.starts_with("link_"), name)
    });
    for path in entries {
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    std::fs::remove_dir(dir)?;
    Ok(removed)
}

impl Datapath {
    /// Loads the object and the programs into the kernel with fresh, unpinned maps;
    /// attaches nothing yet. For tests and benchmarks: it all goes when this is dropped.
    pub fn load() -> Result<Datapath> {
        Self::load_with(None)
    }

    /// Loads the object reusing (or creating and pinning) the maps under `dir`, and pins
    /// the programs there. The policy found in pinned maps stays in force until
    /// [`Datapath::apply`] replaces it.
    pub fn load_pinned(dir: &Path) -> Result<Datapath> {
        ensure_bpffs()?;
        std::fs::create_dir_all(dir).map_err(|source| DatapathError::PinDir {
            path: dir.to_owned(),
            source,
        })?;
        let dp = Self::load_with(Some(dir))?;
        let state = dp.state()?;
        if state.generation != 0 && state.abi != ABI_VERSION {
            return Err(DatapathError::Abi {
                path: dir.to_owned(),
                found: state.abi,
                expected: ABI_VERSION,
            });
        }
        Ok(dp)
    }

    fn load_with(pin_dir: Option<&Path>) -> Result<Datapath> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = pin_dir
            .map(|dir| names::MAPS.iter().map(|m| (*m, dir.join(m))).collect())
            .unwrap_or_default();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(DatapathError::Load)?;
        for name in [names::PROG_LAN, names::PROG_WAN, names::PROG_BASELINE] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing {
                    what: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        if let Some(dir) = pin_dir {
            for side in [Side::Lan, Side::Wan] {
                let path = program_pin(dir, side);
                // The previous daemon's program stays alive through its link until the
                // link is switched over; only the name is reused here.
                let _ = std::fs::remove_file(&path);
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(side.program())
                    .and_then(|p| p.try_into().ok())
                    .expect("loaded above");
                prog.pin(&path)
                    .map_err(|source| DatapathError::Pin { path, source })?;
            }
        }
        fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map> {
            ebpf.take_map(name)
                .ok_or(DatapathError::Missing { what: "map", name })
        }
        let state = Array::try_from(take(&mut ebpf, names::STATE)?)
            .map_err(map_err(names::STATE, "open"))?;
        let settings = Array::try_from(take(&mut ebpf, names::SETTINGS)?)
            .map_err(map_err(names::SETTINGS, "open"))?;
        let endpoints = LpmTrie::try_from(take(&mut ebpf, names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS, "open"))?;
        let rules = LpmTrie::try_from(take(&mut ebpf, names::RULES)?)
            .map_err(map_err(names::RULES, "open"))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS)?)
            .map_err(map_err(names::COUNTERS, "open"))?;
        let reasons = PerCpuArray::try_from(take(&mut ebpf, names::REASONS)?)
            .map_err(map_err(names::REASONS, "open"))?;
        let isolated = HashMap::try_from(take(&mut ebpf, names::ISOLATED)?)
            .map_err(map_err(names::ISOLATED, "open"))?;
        let violations = PerCpuHashMap::try_from(take(&mut ebpf, names::VIOLATIONS)?)
            .map_err(map_err(names::VIOLATIONS, "open"))?;
        let local = HashMap::try_from(take(&mut ebpf, names::LOCAL)?)
            .map_err(map_err(names::LOCAL, "open"))?;
        let accounts = PerCpuArray::try_from(take(&mut ebpf, names::ACCOUNTS)?)
            .map_err(map_err(names::ACCOUNTS, "open"))?;
        let flow_maps = crate::history::recorder::FlowMaps {
            events: aya::maps::RingBuf::try_from(take(&mut ebpf, names::EVENTS)?)
                .map_err(map_err(names::EVENTS, "open"))?,
            flows4: HashMap::try_from(take(&mut ebpf, names::FLOWS4)?)
                .map_err(map_err(names::FLOWS4, "open"))?,
            flows6: HashMap::try_from(take(&mut ebpf, names::FLOWS)?)
                .map_err(map_err(names::FLOWS, "open"))?,
            denied: HashMap::try_from(take(&mut ebpf, names::DENIED)?)
                .map_err(map_err(names::DENIED, "open"))?,
            lost: PerCpuArray::try_from(take(&mut ebpf, names::LOST)?)
                .map_err(map_err(names::LOST, "open"))?,
        };
        Ok(Datapath {
            ebpf,
            state,
            settings,
            endpoints,
            rules,
            counters,
            reasons,
            isolated,
            violations,
            local,
            accounts,
            flow_maps: Some(flow_maps),
            unsettled: true,
            attached: Vec::new(),
            pin_dir: pin_dir.map(Path::to_owned),
        })
    }

    /// Attaches the classifier of `side` at ingress of `interface`. With a pin directory,
    /// a link pinned by an earlier daemon is taken over in place (its program replaced
    /// atomically); otherwise a new link is created and pinned.
    pub fn attach(&mut self, interface: &str, side: Side) -> Result<()> {
        let program = side.program();
        let attach_err = |source| DatapathError::Attach {
            program,
            interface: interface.to_owned(),
            source,
        };
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if !tcx {
            // Before TCX the classifier hangs off a clsact qdisc; it may already exist.
            let _ = tc::qdisc_add_clsact(interface);
        }
        let pin = self
            .pin_dir
            .as_deref()
            .filter(|_| tcx)
            .map(|d| link_pin(d, interface, side));
        let prog = self.program(side);
        let mut adopted = false;
        if let Some(path) = pin.as_deref().filter(|p| p.exists()) {
            let old = PinnedLink::from_pin(path).map_err(|source| DatapathError::PinnedLink {
                path: path.to_owned(),
                source,
            })?;
            let link = SchedClassifierLink::try_from(FdLink::from(old)).map_err(|source| {
                DatapathError::PinnedLink {
                    path: path.to_owned(),
                    source,
                }
            })?;
            match prog.attach_to_link(link) {
                Ok(_) => adopted = true,
                Err(e) => warn!(interface, error = %e, "pinned link unusable; attaching anew"),
            }
        }
        if adopted && !self.is_attached(interface, side) {
            // The link outlived its interface (deleted and recreated): start over.
            warn!(
                interface,
                "pinned link no longer on the interface; attaching anew"
            );
            adopted = false;
        }
        if !adopted {
            if let Some(path) = pin.as_deref() {
                let _ = std::fs::remove_file(path);
            }
            let prog = self.program(side);
            let options = if tcx {
                TcAttachOptions::TcxOrder(LinkOrder::default())
            } else {
                TcAttachOptions::Netlink(tc::NlOptions::default())
            };
            let id = prog
                .attach_with_options(interface, TcAttachType::Ingress, options)
                .map_err(attach_err)?;
            if let Some(path) = pin.clone() {
                let link = prog.take_link(id).map_err(attach_err)?;
                let fd = FdLink::try_from(link).map_err(|source| DatapathError::PinnedLink {
                    path: path.clone(),
                    source,
                })?;
                fd.pin(&path).map_err(|source| DatapathError::Pin {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        info!(
            interface,
            side = side.as_str(),
            adopted,
            pinned = pin.is_some(),
            "datapath attached"
        );
        self.attached
            .retain(|(i, s)| !(i == interface && *s == side));
        self.attached.push((interface.to_owned(), side));
        Ok(())
    }

    /// Whether this datapath's program of `side` is attached at ingress of `interface`
    /// right now (asks the kernel).
    pub fn is_attached(&mut self, interface: &str, side: Side) -> bool {
        let Ok(ours) = self.program(side).info().map(|i| i.id()) else {
            return false;
        };
        SchedClassifier::query_tcx(interface, TcAttachType::Ingress)
            .is_ok_and(|(_, progs)| progs.iter().any(|p| p.id() == ours))
    }

    pub fn attached(&self) -> &[(String, Side)] {
        &self.attached
    }

    /// A loaded program, for BPF_PROG_TEST_RUN in tests and benchmarks.
    pub fn program(&mut self, side: Side) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(side.program())
            .and_then(|p| p.try_into().ok())
            .expect("both programs are loaded by Datapath::load")
    }

    /// The empty baseline program, for benchmarks.
    pub fn baseline_program(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(names::PROG_BASELINE)
            .and_then(|p| p.try_into().ok())
            .expect("the baseline program is loaded by Datapath::load")
    }

    fn state(&self) -> Result<State> {
        self.state.get(&0, 0).map_err(map_err(names::STATE, "read"))
    }

    /// Waits, if a switch happened since the last wait, until no program run can still be
    /// reading the slot the switch left (see [`Datapath::apply_after`]). The daemon calls
    /// it between requests, so that a cut-off rarely has to.
    pub fn settle(&mut self) {
        if self.unsettled {
            wait_for_readers();
            self.unsettled = false;
        }
    }

    /// The flow tables, ring buffer and lost-event counter, for the traffic history's
    /// recorder (which reads them on its own thread). `None` once taken.
    pub fn take_flow_maps(&mut self) -> Option<crate::history::recorder::FlowMaps> {
        self.flow_maps.take()
    }

    /// The generation in force (0: none, everything dropped).
    pub fn generation(&self) -> Result<u32> {
        Ok(self.state()?.generation)
    }

    /// Whether the policy in force is exactly `policy` (same mode, endpoints and rules).
    pub fn in_force(&self, policy: &CompiledPolicy) -> Result<bool> {
        let generation = self.generation()?;
        if generation == 0 {
            return Ok(false);
        }
        let slot = (generation % SLOTS) as u8;
        let settings = self
            .settings
            .get(&u32::from(slot), 0)
            .map_err(map_err(names::SETTINGS, "read"))?;
        let mut isolated = std::collections::BTreeSet::new();
        for k in self.isolated.keys() {
            let k = k.map_err(map_err(names::ISOLATED, "read"))?;
            if k.slot == slot {
                isolated.insert(k.selector);
            }
        }
        let mut endpoints = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(map_err(names::ENDPOINTS, "read"))?;
            if k.data().slot == slot {
                endpoints.push((k.prefix_len(), k.data().addr, v));
            }
        }
        let mut rules = Vec::new();
        for item in self.rules.iter() {
            let (k, v) = item.map_err(map_err(names::RULES, "read"))?;
            let mut key = k.data();
            if key.bytes[0] == slot {
                key.bytes[0] = 0;
                rules.push((k.prefix_len(), key.bytes, v.rule));
            }
        }
        let mut want_endpoints: Vec<_> = policy
            .endpoints
            .iter()
            .map(|e| (endpoint_key_bits(e.prefix_len), e.addr, e.endpoint))
            .collect();
        let mut want_rules: Vec<_> = policy
            .rules
            .iter()
            .map(|r| (r.prefix_len, r.key.bytes, r.rule))
            .collect();
        let by_key = |a: &(u32, [u8; 16], sekisho_common::Endpoint)| (a.0, a.1);
        endpoints.sort_by_key(by_key);
        want_endpoints.sort_by_key(by_key);
        rules.sort();
        want_rules.sort();
        Ok(settings.mode == policy.mode
            && settings.flags == policy.flags
            && isolated == policy.isolated
            && endpoints == want_endpoints
            && rules == want_rules)
    }

    /// Writes `policy` into the slot not in force and switches to it. Returns the new
    /// generation.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<u32> {
        self.apply_after(policy, 0)
    }

    /// [`Datapath::apply`] with a generation above `last_known` too (generations continue
    /// the archive's numbering after a reboot emptied the kernel).
    pub fn apply_after(&mut self, policy: &CompiledPolicy, last_known: u32) -> Result<u32> {
        let current = self.generation()?;
        let mut generation = current.max(last_known) + 1;
        if current != 0 && generation % SLOTS == current % SLOTS {
            // Never write into the slot packets are reading.
            generation += 1;
        }
        let slot = (generation % SLOTS) as u8;
        // A packet that read the previous generation may still be deciding with this slot
        // (a program can be preempted mid-run under a loaded, preemptible kernel). The
        // programs run inside RCU read-side sections, so one grace period after the last
        // switch guarantees that none is left before the slot is rewritten.
        self.settle();
        self.clear_slot(slot)?;
        self.settings
            .set(
                u32::from(slot),
                Settings {
                    mode: policy.mode,
                    flags: policy.flags,
                },
                0,
            )
            .map_err(map_err(names::SETTINGS, "write"))?;
        for e in &policy.endpoints {
            let key = Key::new(
                endpoint_key_bits(e.prefix_len),
                EndpointKey {
                    slot,
                    addr: e.addr,
                    _pad: [0; 3],
                },
            );
            self.endpoints
                .insert(&key, e.endpoint, 0)
                .map_err(map_err(names::ENDPOINTS, "write"))?;
        }
        for r in &policy.rules {
            let mut key = r.key;
            key.bytes[0] = slot;
            self.rules
                .insert(
                    &Key::new(r.prefix_len, key),
                    RuleValue {
                        rule: r.rule,
                        _pad: 0,
                    },
                    0,
                )
                .map_err(map_err(names::RULES, "write"))?;
        }
        for selector in &policy.isolated {
            let key = IsolationKey {
                slot,
                _pad: [0; 3],
                selector: *selector,
            };
            self.isolated
                .insert(key, 1, 0)
                .map_err(map_err(names::ISOLATED, "write"))?;
        }
        // The switch: the generation is one aligned 4-byte word of the value.
        self.state
            .set(
                0,
                State {
                    generation,
                    abi: ABI_VERSION,
                },
                0,
            )
            .map_err(map_err(names::STATE, "write"))?;
        self.unsettled = true;
        info!(
            generation,
            slot,
            endpoints = policy.endpoints.len(),
            rule_prefixes = policy.rules.len(),
            "policy in force"
        );
        Ok(generation)
    }

    fn clear_slot(&mut self, slot: u8) -> Result<()> {
        let stale: Vec<_> = self
            .isolated
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.slot == slot)
            .collect();
        for k in stale {
            self.isolated
                .remove(&k)
                .map_err(map_err(names::ISOLATED, "clear"))?;
        }
        let stale: Vec<_> = self
            .endpoints
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data().slot == slot)
            .collect();
        for k in stale {
            self.endpoints
                .remove(&k)
                .map_err(map_err(names::ENDPOINTS, "clear"))?;
        }
        let stale: Vec<_> = self
            .rules
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data().bytes[0] == slot)
            .collect();
        for k in stale {
            self.rules
                .remove(&k)
                .map_err(map_err(names::RULES, "clear"))?;
        }
        Ok(())
    }

    /// Makes `addresses` the gateway's own addresses: packets to them are left to the
    /// nftables input chain. Returns whether anything changed.
    pub fn set_local_addresses(&mut self, addresses: &[std::net::IpAddr]) -> Result<bool> {
        let want: std::collections::BTreeSet<[u8; 16]> = addresses
            .iter()
            .map(|ip| crate::policy::addr16(*ip).0)
            .collect();
        let have: std::collections::BTreeSet<[u8; 16]> =
            self.local.keys().filter_map(|k| k.ok()).collect();
        for stale in have.difference(&want) {
            self.local
                .remove(stale)
                .map_err(map_err(names::LOCAL, "clear"))?;
        }
        for new in want.difference(&have) {
            self.local
                .insert(*new, 1, 0)
                .map_err(map_err(names::LOCAL, "write"))?;
        }
        Ok(want != have)
    }

    /// Packets and bytes counted against traffic account `account` (an asset's or a
    /// peer's, see `sekisho_common::account_of`), summed over CPUs.
    pub fn account(&self, account: u32) -> Result<Counter2> {
        let per_cpu = self
            .accounts
            .get(&account, 0)
            .map_err(map_err(names::ACCOUNTS, "read"))?;
        let mut c = Counter2::default();
        for x in per_cpu.iter() {
            c.packets += x.packets;
            c.bytes += x.bytes;
        }
        Ok(c)
    }

    /// Denied packets per LAN source address since the map was created, summed over CPUs.
    pub fn violations(&self) -> Result<Vec<(std::net::IpAddr, u64)>> {
        let mut out = Vec::new();
        for item in self.violations.iter() {
            let (addr, per_cpu) = item.map_err(map_err(names::VIOLATIONS, "read"))?;
            let total = per_cpu.iter().map(|v| v.packets).sum();
            let v6 = std::net::Ipv6Addr::from(addr);
            let ip = match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(v6),
            };
            out.push((ip, total));
        }
        Ok(out)
    }

    /// Counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let mut out = Counters::default();
        for d in 0..DIRECTIONS {
            for v in 0..VERDICTS {
                let per_cpu = self
                    .counters
                    .get(&counter_index(d, v), 0)
                    .map_err(map_err(names::COUNTERS, "read"))?;
                let c = &mut out.by_direction[d as usize][v as usize];
                for x in per_cpu.iter() {
                    c.packets += x.packets;
                    c.bytes += x.bytes;
                }
            }
        }
        for r in Reason::ALL {
            let idx = u32::from(r as u8);
            if idx >= REASONS {
                continue;
            }
            let per_cpu = self
                .reasons
                .get(&idx, 0)
                .map_err(map_err(names::REASONS, "read"))?;
            out.by_reason
                .insert(r.name().to_owned(), per_cpu.iter().sum());
        }
        Ok(out)
    }
}
