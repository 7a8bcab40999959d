//! Loads sekisho's eBPF object, attaches its classifiers at ingress of the LAN and WAN
//! interfaces (TCX where the kernel has it, clsact otherwise), writes compiled policies
//! into the kernel's tables and reads the counters back.
//!
//! Policy writes follow the slot protocol of `sekisho_common::SLOTS`: the slot not in
//! force is cleared and filled, then the generation is bumped in one 4-byte store, so a
//! packet sees either the whole old policy or the whole new one. The old slot is left
//! intact until the next write (a packet that read the old generation may still be using
//! it).

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use sekisho_common::{
    Counter, DIRECTIONS, EndpointKey, REASONS, Reason, RuleKey, RuleValue, SLOTS, Settings, State,
    VERDICTS, counter_index, names,
};
use tracing::info;

use crate::policy::{CompiledPolicy, endpoint_key_bits};

/// The eBPF object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sekisho"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}")]
    Missing { what: &'static str, name: &'static str },
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
    attached: Vec<(String, Side)>,
}

impl Datapath {
    /// Loads the object and both programs into the kernel; attaches nothing yet.
    pub fn load() -> Result<Datapath> {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(DatapathError::Load)?;
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
        Ok(Datapath {
            ebpf,
            state,
            settings,
            endpoints,
            rules,
            counters,
            reasons,
            attached: Vec::new(),
        })
    }

    /// Attaches the classifier of `side` at ingress of `interface`.
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
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: program,
            })?
            .try_into()
            .map_err(attach_err)?;
        prog.attach(interface, TcAttachType::Ingress)
            .map_err(attach_err)?;
        info!(interface, side = side.as_str(), "datapath attached");
        self.attached.push((interface.to_owned(), side));
        Ok(())
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

    /// The generation in force (0: none, everything dropped).
    pub fn generation(&self) -> Result<u32> {
        Ok(self
            .state
            .get(&0, 0)
            .map_err(map_err(names::STATE, "read"))?
            .generation)
    }

    /// Writes `policy` into the slot not in force and switches to it. Returns the new
    /// generation.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<u32> {
        let generation = self.generation()? + 1;
        let slot = (generation % SLOTS) as u8;
        self.clear_slot(slot)?;
        self.settings
            .set(
                u32::from(slot),
                Settings {
                    mode: policy.mode,
                    _pad: 0,
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
        // The switch: one aligned 4-byte store of the generation.
        self.state
            .set(
                0,
                State {
                    generation,
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err(names::STATE, "write"))?;
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
