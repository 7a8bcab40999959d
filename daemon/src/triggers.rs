//! Automatic containment (R15): a pure engine that turns the kernel's denied-packet counts
//! into trigger events. It holds no clock and does no I/O; the daemon feeds it, about once
//! a second, each LAN source address's cumulative denied count and what that address is,
//! and acts on the [`Event`]s it returns (isolate or alert, per configuration).
//!
//! Rules:
//! - Repeated violations (`[triggers].violations`): the denies of all of an asset's
//!   addresses within the sliding window `within` (samples older than `within` age out)
//!   reaching `count` fire [`Event::Violations`], once per asset until [`Engine::reset`]
//!   (called after a restore). Without a `violations` trigger, assets never fire.
//! - Unknown source (`[triggers].unknown_source`): denied packets from an address that is
//!   not in the asset register fire [`Event::UnknownSource`] on first sight, then at most
//!   once per [`UNKNOWN_REPEAT`] per address, while new denies keep arriving.
//!
//! Counting: the counts are cumulative since the kernel created the counter, so only the
//! growth between two samples of one address is new. An address's first sample (e.g. the
//! counts left in pinned maps from before a daemon restart) only sets its baseline for the
//! violations rule; a count that goes backwards means the map entry was recreated and sets
//! a new baseline. For an unknown source any count on first sight is evidence enough.
//!
//! Memory: state is kept per address the kernel reports, so it is bounded by the kernel
//! map's size; addresses not reported for [`FORGET_AFTER`] are forgotten.

use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;
use std::time::Instant;

use crate::config::TriggerAction;
use crate::config::Triggers;
use crate::config::ViolationTrigger;

/// How often one unknown address may fire.
pub const UNKNOWN_REPEAT: Duration = Duration::from_secs(3600);

/// An address not observed for this long is forgotten (its next sample is a first one).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How often forgotten addresses are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What a source address is, according to the asset register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One of this asset's addresses.
    Asset(String),
    /// Not in the register.
    Unknown,
}

/// A trigger that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `asset` was denied `count` times within `within` (summed over its addresses);
    /// `address` is the one whose sample crossed the threshold.
    Violations {
        asset: String,
        address: IpAddr,
        count: u64,
        within: Duration,
        action: TriggerAction,
    },
    /// Denied packets from `address`, which is not in the register.
    UnknownSource {
        address: IpAddr,
        action: TriggerAction,
    },
}

/// What is remembered of one source address.
#[derive(Debug)]
struct AddressState {
    /// The last cumulative count.
    total: u64,
    last_seen: Instant,
    /// When it last fired as an unknown source.
    unknown_fired: Option<Instant>,
}

/// The sliding window of one asset.
#[derive(Debug, Default)]
struct Window {
    /// New denies per sample, oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// Sum of `samples`.
    sum: u64,
}

impl Window {
    fn push(&mut self, at: Instant, denies: u64) {
        self.samples.push_back((at, denies));
        self.sum = self.sum.saturating_add(denies);
    }

    /// Drops the samples `within` or more before `now`.
    fn age(&mut self, now: Instant, within: Duration) {
        while let Some(&(at, denies)) = self.samples.front() {
            if now.saturating_duration_since(at) < within {
                break;
            }
            self.samples.pop_front();
            self.sum -= denies;
        }
    }
}

/// The trigger engine; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    violations: Option<ViolationTrigger>,
    unknown_source: TriggerAction,
    addresses: HashMap<IpAddr, AddressState>,
    windows: HashMap<String, Window>,
    /// Assets that fired and have not been reset.
    fired: HashSet<String>,
    last_sweep: Option<Instant>,
}

impl Engine {
    pub fn new(triggers: &Triggers) -> Engine {
        Engine {
            violations: triggers.violations.clone(),
            unknown_source: triggers.unknown_source,
            addresses: HashMap::new(),
            windows: HashMap::new(),
            fired: HashSet::new(),
            last_sweep: None,
        }
    }

    /// Applies a reloaded `[triggers]`. Baselines, windows and fired assets are kept: an
    /// asset that fired stays fired until reset. Without a violations trigger the windows
    /// are dropped.
    pub fn reconfigure(&mut self, triggers: &Triggers) {
        self.violations = triggers.violations.clone();
        self.unknown_source = triggers.unknown_source;
        if self.violations.is_none() {
            self.windows.clear();
        }
    }

    /// Takes one sample: `denied_total` is `address`'s denied count, cumulative since the
    /// kernel counter was created, at `now`. Returns the event it fires, if any.
    pub fn observe(
        &mut self,
        now: Instant,
        address: IpAddr,
        source: Source,
        denied_total: u64,
    ) -> Option<Event> {
        self.sweep(now);
        let (new_denies, first) = match self.addresses.get_mut(&address) {
            Some(state) => {
                let previous = state.total;
                state.total = denied_total;
                state.last_seen = now;
                match denied_total.checked_sub(previous) {
                    Some(growth) => (growth, false),
                    None => {
                        tracing::debug!(%address, previous, denied_total, "denied count went backwards; new baseline");
                        (denied_total, true)
                    }
                }
            }
            None => {
                self.addresses.insert(
                    address,
                    AddressState {
                        total: denied_total,
                        last_seen: now,
                        unknown_fired: None,
                    },
                );
                (denied_total, true)
            }
        };
        match source {
            Source::Unknown => self.unknown(now, address, new_denies),
            Source::Asset(asset) => {
                let new_denies = if first { 0 } else { new_denies };
                self.violation(now, address, asset, new_denies)
            }
        }
    }

    /// Forgets that `asset` fired (after a restore), and its window, so that it can fire
    /// again on new violations.
    pub fn reset(&mut self, asset: &str) {
        self.fired.remove(asset);
        self.windows.remove(asset);
    }

    fn unknown(&mut self, now: Instant, address: IpAddr, new_denies: u64) -> Option<Event> {
        if new_denies == 0 {
            return None;
        }
        let state = self.addresses.get_mut(&address)?;
        if let Some(fired) = state.unknown_fired
            && now.saturating_duration_since(fired) < UNKNOWN_REPEAT
        {
            return None;
        }
        state.unknown_fired = Some(now);
        Some(Event::UnknownSource {
            address,
            action: self.unknown_source,
        })
    }

    fn violation(
        &mut self,
        now: Instant,
        address: IpAddr,
        asset: String,
        new_denies: u64,
    ) -> Option<Event> {
        let trigger = self.violations.as_ref()?;
        if self.fired.contains(&asset) {
            return None;
        }
        let window = match self.windows.get_mut(&asset) {
            Some(window) => window,
            None if new_denies == 0 => return None,
            None => self.windows.entry(asset.clone()).or_default(),
        };
        if new_denies > 0 {
            window.push(now, new_denies);
        }
        window.age(now, trigger.within);
        if window.sum < u64::from(trigger.count) {
            if window.samples.is_empty() {
                self.windows.remove(&asset);
            }
            return None;
        }
        let count = window.sum;
        self.windows.remove(&asset);
        self.fired.insert(asset.clone());
        Some(Event::Violations {
            asset,
            address,
            count,
            within: trigger.within,
            action: trigger.action,
        })
    }

    /// Forgets addresses not observed for [`FORGET_AFTER`], at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        match self.last_sweep {
            Some(last) if now.saturating_duration_since(last) < SWEEP_EVERY => return,
            Some(_) => {}
            None => {
                self.last_sweep = Some(now);
                return;
            }
        }
        self.last_sweep = Some(now);
        self.addresses
            .retain(|_, state| now.saturating_duration_since(state.last_seen) < FORGET_AFTER);
        if let Some(trigger) = &self.violations {
            for window in self.windows.values_mut() {
                window.age(now, trigger.within);
            }
            self.windows.retain(|_, window| !window.samples.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "192.0.2.10";
    const CS6: &str = "2001:db8:10::a";
    const STRANGER: &str = "192.0.2.99";

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn triggers(count: u32, within: u64, action: TriggerAction) -> Triggers {
        Triggers {
            violations: Some(ViolationTrigger {
                count,
                within: Duration::from_secs(within),
                action,
            }),
            unknown_source: TriggerAction::Alert,
        }
    }

    /// An engine and a synthetic clock in whole seconds.
    struct Clock {
        engine: Engine,
        start: Instant,
    }

    impl Clock {
        fn new(triggers: &Triggers) -> Clock {
            Clock {
                engine: Engine::new(triggers),
                start: Instant::now(),
            }
        }

        fn at(&self, second: u64) -> Instant {
            self.start + Duration::from_secs(second)
        }

        fn cs(&mut self, second: u64, total: u64) -> Option<Event> {
            self.sample(second, CS, Source::Asset("cs01".to_owned()), total)
        }

        fn sample(
            &mut self,
            second: u64,
            address: &str,
            source: Source,
            total: u64,
        ) -> Option<Event> {
            let now = self.at(second);
            self.engine.observe(now, addr(address), source, total)
        }
    }

    fn violations(count: u64) -> Option<Event> {
        Some(Event::Violations {
            asset: "cs01".to_owned(),
            address: addr(CS),
            count,
            within: Duration::from_secs(60),
            action: TriggerAction::Isolate,
        })
    }

    #[test]
    fn below_threshold_no_event() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(0, 100), None, "first sample is only the baseline");
        for (second, total) in [(1, 101), (2, 102), (3, 103), (4, 104), (5, 104)] {
            assert_eq!(c.cs(second, total), None, "at {second}s");
        }
    }

    #[test]
    fn reaching_the_threshold_fires_once() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(0, 100), None);
        assert_eq!(c.cs(1, 102), None);
        assert_eq!(c.cs(2, 104), None);
        assert_eq!(c.cs(3, 106), violations(6));
        for second in 4..200 {
            assert_eq!(
                c.cs(second, 106 + second * 10),
                None,
                "fired twice at {second}s"
            );
        }
        // After the restore: the violations that led to it do not count again.
        c.engine.reset("cs01");
        assert_eq!(c.cs(200, 2096), None);
        assert_eq!(c.cs(201, 2100), None);
        assert_eq!(c.cs(202, 2101), violations(5));
    }

    #[test]
    fn a_burst_in_one_sample_fires() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Alert));
        assert_eq!(c.cs(0, 0), None);
        let Some(Event::Violations { count, action, .. }) = c.cs(1, 50) else {
            panic!("a burst of 50 must fire");
        };
        assert_eq!((count, action), (50, TriggerAction::Alert));
    }

    #[test]
    fn window_slides() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(0, 0), None);
        assert_eq!(c.cs(10, 2), None);
        assert_eq!(c.cs(20, 4), None);
        // 60 s after it, the sample of 10 s ages out: 20 s (2) + 70 s (2) = 4, not 6.
        assert_eq!(c.cs(70, 6), None);
        // The one of 20 s ages out at 80 s: 70 s (2) + 90 s (2) = 4.
        assert_eq!(c.cs(80, 6), None);
        assert_eq!(c.cs(90, 8), None);
        // One more within 60 s of 70 and 90: 2 + 2 + 1 = 5.
        assert_eq!(c.cs(129, 9), violations(5));
    }

    #[test]
    fn addresses_of_one_asset_add_up() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        let cs = || Source::Asset("cs01".to_owned());
        assert_eq!(c.sample(0, CS, cs(), 0), None);
        assert_eq!(c.sample(0, CS6, cs(), 0), None);
        assert_eq!(c.sample(1, CS, cs(), 3), None);
        let event = c.sample(1, CS6, cs(), 2);
        assert!(
            matches!(&event, Some(Event::Violations { count: 5, address, .. }) if *address == addr(CS6)),
            "{event:?}"
        );
    }

    #[test]
    fn counter_reset_rebaselines() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(0, 1000), None);
        assert_eq!(c.cs(1, 1003), None);
        // The map was recreated: 2 is not 2 − 1003 (wrapping) nor a burst.
        assert_eq!(c.cs(2, 2), None);
        assert_eq!(c.cs(3, 3), None, "3 + 1 = 4 in the window");
        assert_eq!(c.cs(4, 4), violations(5));
    }

    #[test]
    fn unknown_source_fires_once_per_hour() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        let alert = Some(Event::UnknownSource {
            address: addr(STRANGER),
            action: TriggerAction::Alert,
        });
        assert_eq!(
            c.sample(0, STRANGER, Source::Unknown, 0),
            None,
            "no denies yet"
        );
        assert_eq!(c.sample(1, STRANGER, Source::Unknown, 1), alert);
        for second in 2..3600 {
            assert_eq!(c.sample(second, STRANGER, Source::Unknown, second), None);
        }
        // An hour after the first: fires again while it keeps sending.
        assert_eq!(c.sample(3601, STRANGER, Source::Unknown, 3601), alert);
        assert_eq!(c.sample(3602, STRANGER, Source::Unknown, 3602), None);
        // Silent afterwards: no repeat without new denies.
        for second in (3700..=7300).step_by(600) {
            assert_eq!(c.sample(second, STRANGER, Source::Unknown, 3602), None);
        }
        assert_eq!(c.sample(7301, STRANGER, Source::Unknown, 3603), alert);
    }

    #[test]
    fn unknown_source_fires_on_first_sight_with_its_action() {
        let mut c = Clock::new(&Triggers {
            violations: None,
            unknown_source: TriggerAction::Isolate,
        });
        assert_eq!(
            c.sample(0, STRANGER, Source::Unknown, 7),
            Some(Event::UnknownSource {
                address: addr(STRANGER),
                action: TriggerAction::Isolate,
            })
        );
        let other = "2001:db8:21::99";
        assert!(
            c.sample(0, other, Source::Unknown, 1).is_some(),
            "per address"
        );
        assert_eq!(c.sample(1, STRANGER, Source::Unknown, 9), None);
    }

    #[test]
    fn no_violations_trigger_never_fires_for_assets() {
        let mut c = Clock::new(&Triggers::default());
        assert_eq!(c.cs(0, 0), None);
        for second in 1..500 {
            assert_eq!(c.cs(second, second * 1000), None);
        }
        // Configured later: counts from the kept baseline on.
        c.engine
            .reconfigure(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(500, 499_000 + 4), None);
        assert_eq!(c.cs(501, 499_000 + 5), violations(5));
        // And removed again.
        c.engine.reset("cs01");
        c.engine.reconfigure(&Triggers::default());
        assert_eq!(c.cs(502, 10_000_000), None);
    }

    #[test]
    fn forgotten_addresses_start_over() {
        let mut c = Clock::new(&triggers(5, 60, TriggerAction::Isolate));
        assert_eq!(c.cs(0, 0), None);
        assert_eq!(c.cs(1, 4), None);
        // Another address keeps the engine busy while cs01 is not reported for two hours.
        for second in (2..7300).step_by(30) {
            assert_eq!(
                c.sample(second, "192.0.2.21", Source::Asset("term-01".to_owned()), 0),
                None
            );
        }
        assert!(c.engine.windows.is_empty(), "{:?}", c.engine.windows);
        assert_eq!(c.cs(7300, 100), None, "a first sample again");
        assert_eq!(c.cs(7301, 105), violations(5));
    }
}
