//! The one configuration file (`/etc/sekisho/sekisho.toml`): reading, validating, resolving.
//!
//! Two phases, as ripgrep does with `LowArgs` → `HiArgs`: [`raw`] is a serde mirror of the
//! TOML with `deny_unknown_fields` on every table and [`toml::Spanned`] wherever a later
//! check needs a position; [`validate`] turns it into a [`Config`] whose references are
//! resolved and whose values are typed.
//!
//! Invariants of a [`Config`] (every consumer may rely on them):
//! - every `role:`/`asset:`/`peer:` endpoint in `rules` names something that exists, and
//!   every asset's `hours` names an entry of `hours`;
//! - asset addresses are unique host addresses (not unspecified, loopback, multicast or
//!   IPv4-mapped) and none lies inside a peer network; peer networks have no host bits set
//!   and never overlap; asset names, peer names and rule names are unique;
//! - `interfaces.lan` and `interfaces.wan` are non-empty and disjoint;
//! - no rule can be proven never to match (same host on both ends, peer to peer, or no
//!   address family in common);
//! - every recipient has at least one channel, and `notify` can serve it.
//!
//! Errors are reported as `FILE:LINE:COLUMN: message` (1-based, columns in characters),
//! pointing at the offending value; the first error found wins. A parse error never falls
//! back to a default; only keys that are absent take the documented defaults.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::Serialize;

use crate::paths;

mod raw;
#[cfg(test)]
mod tests;
mod validate;

/// A validated configuration, with every reference resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (`<inline>` or whatever the caller named for `parse_str`).
    pub source: PathBuf,
    /// The exact text it was parsed from, to be archived with a hash.
    pub text: String,
    pub daemon: DaemonConfig,
    pub interfaces: Interfaces,
    /// `[[asset]]` entries, in file order.
    pub assets: Vec<Asset>,
    /// `[peer.NAME]` entries, sorted by name.
    pub peers: Vec<Peer>,
    /// `[[allow]]` entries, in file order.
    pub rules: Vec<Rule>,
    /// `[hours.NAME]` entries.
    pub hours: BTreeMap<String, Hours>,
    pub triggers: Triggers,
    /// `[[recipient]]` entries, in file order.
    pub recipients: Vec<Recipient>,
    pub notify: Option<Notify>,
    pub history: HistoryConfig,
    /// Name and role lookups over `assets`, built once by validation.
    index: AssetIndex,
}

impl fmt::Debug for Config {
    /// As `#[derive(Debug)]` would print it, without the lookup index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("text", &self.text)
            .field("daemon", &self.daemon)
            .field("interfaces", &self.interfaces)
            .field("assets", &self.assets)
            .field("peers", &self.peers)
            .field("rules", &self.rules)
            .field("hours", &self.hours)
            .field("triggers", &self.triggers)
            .field("recipients", &self.recipients)
            .field("notify", &self.notify)
            .field("history", &self.history)
            .finish()
    }
}

/// Asset lookups by name and by role, so that resolving a name costs O(1) instead of a
/// scan of every asset.
///
/// `Config::assets` is a public field, so the index may outlive the list it was built
/// for: the accessors use it only while `assets` still has the length it was built with,
/// check that what it points at has the name or role asked for, and otherwise scan.
#[derive(Clone, Default)]
struct AssetIndex {
    /// Asset name → position in `assets`.
    by_name: HashMap<String, usize>,
    /// Role → positions in `assets` of the assets that have it, in file order.
    by_role: HashMap<String, Vec<usize>>,
    /// `assets.len()` when the index was built.
    len: usize,
}

impl AssetIndex {
    fn new(assets: &[Asset]) -> AssetIndex {
        let mut index = AssetIndex {
            by_name: HashMap::with_capacity(assets.len()),
            by_role: HashMap::new(),
            len: assets.len(),
        };
        for (i, asset) in assets.iter().enumerate() {
            index.by_name.entry(asset.name.clone()).or_insert(i);
            index.by_role.entry(asset.role.clone()).or_default().push(i);
        }
        index
    }

    /// Whether the index was built for a list of `assets`' length.
    fn fits(&self, assets: &[Asset]) -> bool {
        self.len == assets.len()
    }
}

/// Derived from `Config::assets`, which [`Config`]'s equality already compares.
impl PartialEq for AssetIndex {
    fn eq(&self, _: &AssetIndex) -> bool {
        true
    }
}

impl Eq for AssetIndex {}

/// `[daemon]`; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Default [`paths::STATE_DIR`].
    pub state_dir: PathBuf,
    /// Default [`paths::CONTROL_SOCKET`].
    pub control_socket: PathBuf,
    /// Default [`paths::METRICS_LISTEN`].
    pub metrics_listen: SocketAddr,
    /// Where programs, links and maps are pinned; must be under /sys/fs/bpf. Default
    /// [`paths::BPF_PIN_DIR`].
    pub pin_dir: PathBuf,
    /// Default [`Mode::Enforce`].
    pub mode: Mode,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            state_dir: PathBuf::from(paths::STATE_DIR),
            control_socket: PathBuf::from(paths::CONTROL_SOCKET),
            metrics_listen: paths::METRICS_LISTEN
                .parse()
                .expect("paths::METRICS_LISTEN is a valid socket address"),
            pin_dir: PathBuf::from(paths::BPF_PIN_DIR),
            mode: Mode::Enforce,
        }
    }
}

/// Whether verdicts are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy denies.
    #[default]
    Enforce,
    /// Decide and record, but drop nothing.
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ParseKeywordError;

    fn from_str(s: &str) -> Result<Mode, ParseKeywordError> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "monitor" => Ok(Mode::Monitor),
            _ => Err(ParseKeywordError::new("mode", s, &["enforce", "monitor"])),
        }
    }
}

/// `[interfaces]`: both lists are non-empty and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// CS / terminal side.
    pub lan: Vec<String>,
    /// 住基ネット side.
    pub wan: Vec<String>,
    /// Dedicated management ports of the gateway itself (optional): the gateway accepts
    /// its own input on these, and forwards nothing from them.
    pub management: Vec<String>,
}

/// One `[[asset]]`: a host of the 情報資産管理簿.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub name: String,
    pub role: String,
    /// Host addresses, in file order; at least one.
    pub addresses: Vec<IpAddr>,
    /// When set, IP and MAC must match together.
    pub mac: Option<[u8; 6]>,
    pub department: Option<String>,
    /// The name of an entry of [`Config::hours`].
    pub hours: Option<String>,
}

/// One `[peer.NAME]` on the 住基ネット side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Networks without host bits, in file order; at least one.
    pub networks: Vec<IpNet>,
    /// A server of the peer the gateway connects to (TCP) to see that it is reachable
    /// (R19); inside one of `networks`.
    pub probe: Option<std::net::SocketAddr>,
}

/// One `[[allow]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// 0-based position among the `[[allow]]` tables.
    pub index: usize,
    /// 1-based line of the `[[allow]]` header.
    pub line: usize,
    pub from: Endpoint,
    pub to: Endpoint,
    /// At least one.
    pub ports: Vec<PortSpec>,
    /// The optional `name` key, unique among rules.
    pub name: Option<String>,
}

/// One side of a rule: `role:NAME`, `asset:NAME` or `peer:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Role(String),
    Asset(String),
    Peer(String),
}

impl Endpoint {
    /// `"role"`, `"asset"` or `"peer"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Role(_) => "role",
            Endpoint::Asset(_) => "asset",
            Endpoint::Peer(_) => "peer",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Endpoint::Role(name) | Endpoint::Asset(name) | Endpoint::Peer(name) => name,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseEndpointError {
    #[error("invalid endpoint {text:?} (expected role:NAME, asset:NAME or peer:NAME)")]
    Syntax { text: String },
    #[error("endpoint {text:?} has an empty name")]
    EmptyName { text: String },
}

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(s: &str) -> Result<Endpoint, ParseEndpointError> {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| ParseEndpointError::Syntax { text: s.to_owned() })?;
        let make = match kind {
            "role" => Endpoint::Role,
            "asset" => Endpoint::Asset,
            "peer" => Endpoint::Peer,
            _ => return Err(ParseEndpointError::Syntax { text: s.to_owned() }),
        };
        if name.is_empty() {
            return Err(ParseEndpointError::EmptyName { text: s.to_owned() });
        }
        Ok(make(name.to_owned()))
    }
}

/// A protocol and destination port range: `tcp/443`, `tcp/8000-8100`, `udp/123`, `icmp`.
/// `icmp` means ICMP for IPv4 and ICMPv6 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    Tcp { first: u16, last: u16 },
    Udp { first: u16, last: u16 },
    Icmp,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (proto, first, last) = match *self {
            PortSpec::Tcp { first, last } => ("tcp", first, last),
            PortSpec::Udp { first, last } => ("udp", first, last),
            PortSpec::Icmp => return f.write_str("icmp"),
        };
        if first == last {
            write!(f, "{proto}/{first}")
        } else {
            write!(f, "{proto}/{first}-{last}")
        }
    }
}

/// Why a string is not a [`PortSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePortSpecError {
    #[error("unknown protocol {proto:?} in {text:?} (expected tcp, udp or icmp)")]
    UnknownProtocol { text: String, proto: String },
    #[error("{text:?} needs a port number (e.g. \"tcp/443\")")]
    MissingPort { text: String },
    #[error("icmp takes no port number in {text:?}")]
    IcmpWithPort { text: String },
    #[error("{part:?} is not a port number in {text:?}")]
    NotANumber { text: String, part: String },
    #[error("port {value} is out of range (1-65535) in {text:?}")]
    OutOfRange { text: String, value: String },
    #[error("port 0 is not a valid port in {text:?}")]
    Zero { text: String },
    #[error("port range {text:?} is reversed ({first} > {last})")]
    Reversed { text: String, first: u16, last: u16 },
}

impl FromStr for PortSpec {
    type Err = ParsePortSpecError;

    fn from_str(s: &str) -> Result<PortSpec, ParsePortSpecError> {
        let text = || s.to_owned();
        let (proto, range) = match s.split_once('/') {
            Some((proto, range)) => (proto, Some(range)),
            None => (s, None),
        };
        let make: fn(u16, u16) -> PortSpec = match proto {
            "icmp" => {
                return match range {
                    None => Ok(PortSpec::Icmp),
                    Some(_) => Err(ParsePortSpecError::IcmpWithPort { text: text() }),
                };
            }
            "tcp" => |first, last| PortSpec::Tcp { first, last },
            "udp" => |first, last| PortSpec::Udp { first, last },
            _ => {
                return Err(ParsePortSpecError::UnknownProtocol {
                    text: text(),
                    proto: proto.to_owned(),
                });
            }
        };
        let range = match range {
            Some(range) if !range.is_empty() => range,
            _ => return Err(ParsePortSpecError::MissingPort { text: text() }),
        };
        let port = |part: &str| -> Result<u16, ParsePortSpecError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParsePortSpecError::NotANumber {
                    text: text(),
                    part: part.to_owned(),
                });
            }
            match part.parse::<u16>() {
                Ok(0) => Err(ParsePortSpecError::Zero { text: text() }),
                Ok(port) => Ok(port),
                Err(_) => Err(ParsePortSpecError::OutOfRange {
                    text: text(),
                    value: part.to_owned(),
                }),
            }
        };
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => {
                let port = port(range)?;
                (port, port)
            }
        };
        if first > last {
            return Err(ParsePortSpecError::Reversed {
                text: text(),
                first,
                last,
            });
        }
        Ok(make(first, last))
    }
}

/// A time of day, minute resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
}

impl TimeOfDay {
    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        u16::from(self.hour) * 60 + u16::from(self.minute)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl FromStr for TimeOfDay {
    type Err = ParseValueError;

    /// Strictly `HH:MM`, 00:00 to 23:59.
    fn from_str(s: &str) -> Result<TimeOfDay, ParseValueError> {
        let err = || ParseValueError::new("time of day", s, "HH:MM, 00:00-23:59");
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' {
            return Err(err());
        }
        let two = |i: usize| -> Result<u8, ParseValueError> {
            if b[i].is_ascii_digit() && b[i + 1].is_ascii_digit() {
                Ok((b[i] - b'0') * 10 + (b[i + 1] - b'0'))
            } else {
                Err(err())
            }
        };
        let (hour, minute) = (two(0)?, two(3)?);
        if hour > 23 || minute > 59 {
            return Err(err());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

/// A same-day window `start`–`end`, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl TimeRange {
    /// Whether `t` is inside `[start, end)`.
    pub fn contains(&self, t: TimeOfDay) -> bool {
        self.start <= t && t < self.end
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One `[hours.NAME]`: when the assets that name it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    /// Monday to Friday.
    pub weekdays: TimeRange,
    /// Later than `weekdays.end` when set: usage allowed until then (残業延長).
    pub extend_until: Option<TimeOfDay>,
    /// `Some("jp")`: closed on Japanese national holidays and 12/29–1/3. Only "jp" exists.
    pub holidays: Option<String>,
    /// Extra closed days, validated `YYYY-MM-DD` strings (zero-padded, so they sort by date).
    pub closed: Vec<String>,
}

/// `[triggers]`: automatic containment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    pub violations: Option<ViolationTrigger>,
    /// Default [`TriggerAction::Alert`].
    pub unknown_source: TriggerAction,
}

impl Default for Triggers {
    fn default() -> Triggers {
        Triggers {
            violations: None,
            unknown_source: TriggerAction::Alert,
        }
    }
}

/// `violations = { count, within, action }`: `count` denies within `within` trigger `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationTrigger {
    /// At least 1.
    pub count: u32,
    /// Longer than zero.
    pub within: Duration,
    pub action: TriggerAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerAction {
    Isolate,
    #[default]
    Alert,
}

impl TriggerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerAction::Isolate => "isolate",
            TriggerAction::Alert => "alert",
        }
    }
}

impl fmt::Display for TriggerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TriggerAction {
    type Err = ParseKeywordError;

    fn from_str(s: &str) -> Result<TriggerAction, ParseKeywordError> {
        match s {
            "isolate" => Ok(TriggerAction::Isolate),
            "alert" => Ok(TriggerAction::Alert),
            _ => Err(ParseKeywordError::new(
                "trigger action",
                s,
                &["isolate", "alert"],
            )),
        }
    }
}

/// One `[[recipient]]`: someone who is told when the network stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Unique among recipients.
    pub name: String,
    pub kind: RecipientKind,
    /// At least one of `email` and `webhook` is set.
    pub email: Option<String>,
    /// An `http://` or `https://` URL.
    pub webhook: Option<String>,
    /// When this contact is reached (night and holiday contacts of the 緊急時連絡網).
    pub reach: Reach,
}

/// When a recipient is reached.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Always (the default).
    #[default]
    Always,
    /// Only within `[hours.NAME]` (`hours = "NAME"`).
    Within(String),
    /// Only outside `[hours.NAME]` (`outside = "NAME"`): the night and holiday contact.
    Outside(String),
}

impl Hours {
    /// Whether `weekday` (Monday = 1 … Sunday = 7) at `time` on `date` (`YYYY-MM-DD`) is
    /// within these hours. National holidays are not known yet (the terminal-hours work
    /// adds them): until then they count as working days, so a holiday contact limited to
    /// out-of-hours is reached at night and at weekends only.
    pub fn contains(&self, date: &str, weekday: u8, time: TimeOfDay) -> bool {
        (1..=5).contains(&weekday)
            && !self.closed.iter().any(|d| d == date)
            && self.weekdays.contains(time)
    }
}

impl Recipient {
    /// Whether the recipient is to be reached at `date`, `weekday`, `time` (JST).
    pub fn reached(
        &self,
        hours: &BTreeMap<String, Hours>,
        date: &str,
        weekday: u8,
        time: TimeOfDay,
    ) -> bool {
        match &self.reach {
            Reach::Always => true,
            Reach::Within(name) => hours
                .get(name)
                .is_none_or(|h| h.contains(date, weekday, time)),
            Reach::Outside(name) => hours
                .get(name)
                .is_none_or(|h| !h.contains(date, weekday, time)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// 都道府県.
    Prefecture,
    /// 地方公共団体情報システム機構.
    Jlis,
    /// セキュリティ責任者.
    SecurityChief,
    /// 本人確認情報管理責任者.
    IdentityManager,
    /// 担当課.
    Department,
}

impl RecipientKind {
    pub const ALL: [RecipientKind; 5] = [
        RecipientKind::Prefecture,
        RecipientKind::Jlis,
        RecipientKind::SecurityChief,
        RecipientKind::IdentityManager,
        RecipientKind::Department,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Prefecture => "prefecture",
            RecipientKind::Jlis => "jlis",
            RecipientKind::SecurityChief => "security_chief",
            RecipientKind::IdentityManager => "identity_manager",
            RecipientKind::Department => "department",
        }
    }
}

impl fmt::Display for RecipientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientKind {
    type Err = ParseKeywordError;

    fn from_str(s: &str) -> Result<RecipientKind, ParseKeywordError> {
        RecipientKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                ParseKeywordError::new(
                    "recipient kind",
                    s,
                    &RecipientKind::ALL.map(RecipientKind::as_str),
                )
            })
    }
}

/// `[notify]`: how notices leave the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The municipality named in every notice.
    pub municipality: String,
    /// `From:` of e-mail notices; contains an address.
    pub sender: String,
    /// Required when any recipient has an `email`.
    pub smtp: Option<Smtp>,
    /// Key for signing webhook bodies.
    pub webhook_secret_file: Option<PathBuf>,
    /// RFC 5424 copy of every notice.
    pub syslog: Option<SyslogTarget>,
}

/// `smtp = { host, port, starttls, user, password_file }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    /// Default 25.
    pub port: u16,
    /// Default [`Starttls::Opportunistic`].
    pub starttls: Starttls,
    /// `user` and `password_file` are either both set or both absent.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Starttls {
    Off,
    #[default]
    Opportunistic,
    Required,
}

impl Starttls {
    pub fn as_str(self) -> &'static str {
        match self {
            Starttls::Off => "off",
            Starttls::Opportunistic => "opportunistic",
            Starttls::Required => "required",
        }
    }
}

impl fmt::Display for Starttls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Starttls {
    type Err = ParseKeywordError;

    fn from_str(s: &str) -> Result<Starttls, ParseKeywordError> {
        match s {
            "off" => Ok(Starttls::Off),
            "opportunistic" => Ok(Starttls::Opportunistic),
            "required" => Ok(Starttls::Required),
            _ => Err(ParseKeywordError::new(
                "starttls",
                s,
                &["off", "opportunistic", "required"],
            )),
        }
    }
}

/// `syslog = "udp://ADDR:PORT" | "tcp://ADDR:PORT" | "unix:///PATH"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogTarget::Udp(addr) => write!(f, "udp://{addr}"),
            SyslogTarget::Tcp(addr) => write!(f, "tcp://{addr}"),
            SyslogTarget::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl FromStr for SyslogTarget {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<SyslogTarget, ParseValueError> {
        let err = || {
            ParseValueError::new(
                "syslog target",
                s,
                "udp://ADDRESS:PORT, tcp://ADDRESS:PORT or unix:///PATH",
            )
        };
        if let Some(addr) = s.strip_prefix("udp://") {
            addr.parse().map(SyslogTarget::Udp).map_err(|_| err())
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            addr.parse().map(SyslogTarget::Tcp).map_err(|_| err())
        } else if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                Ok(SyslogTarget::Unix(PathBuf::from(path)))
            } else {
                Err(err())
            }
        } else {
            Err(err())
        }
    }
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long traffic and operation history are kept. Default 7 years.
    pub retention: Retention,
    /// IPFIX collector to export flow records to.
    pub ipfix: Option<SocketAddr>,
}

impl Default for HistoryConfig {
    fn default() -> HistoryConfig {
        HistoryConfig {
            retention: Retention::Years(7),
            ipfix: None,
        }
    }
}

/// A retention period: calendar years (`"7y"`) or days (`"90d"`), always more than zero.
/// Years stay years (a record from 2026-04-01 kept "7y" goes on 2033-04-01), so they are
/// not converted to days here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retention {
    Years(u32),
    Days(u32),
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Years(n) => write!(f, "{n}y"),
            Retention::Days(n) => write!(f, "{n}d"),
        }
    }
}

impl FromStr for Retention {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Retention, ParseValueError> {
        let err = || {
            ParseValueError::new(
                "retention",
                s,
                "a number of years or days greater than 0, e.g. \"7y\" or \"90d\"",
            )
        };
        let (number, make): (&str, fn(u32) -> Retention) = if let Some(n) = s.strip_suffix('y') {
            (n, Retention::Years)
        } else if let Some(n) = s.strip_suffix('d') {
            (n, Retention::Days)
        } else {
            return Err(err());
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        match number.parse::<u32>() {
            Ok(n) if n > 0 => Ok(make(n)),
            _ => Err(err()),
        }
    }
}

/// A value that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?} (expected {expected})")]
pub struct ParseValueError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl ParseValueError {
    fn new(what: &'static str, value: &str, expected: &'static str) -> ParseValueError {
        ParseValueError {
            what,
            value: value.to_owned(),
            expected,
        }
    }
}

/// A keyword value that is not one of the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected {})", expected_list(.expected))]
pub struct ParseKeywordError {
    pub what: &'static str,
    pub value: String,
    pub expected: Vec<&'static str>,
}

impl ParseKeywordError {
    fn new(what: &'static str, value: &str, expected: &[&'static str]) -> ParseKeywordError {
        ParseKeywordError {
            what,
            value: value.to_owned(),
            expected: expected.to_vec(),
        }
    }
}

fn expected_list(expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        message: String,
    },
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_str(&text, path)
    }

    /// Validates `text`; `source` only names it in errors and in [`Config::source`].
    pub fn parse_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|err| {
            let (line, column) = match err.span() {
                Some(span) => line_column(text, span.start),
                None => (1, 1),
            };
            ConfigError::Invalid {
                path: source.to_owned(),
                line,
                column,
                message: err.message().trim_end().to_owned(),
            }
        })?;
        Config::try_from(validate::Parsed { source, text, raw })
    }

    /// The assets whose role is `role`, in file order.
    pub fn assets_of_role<'a>(&'a self, role: &str) -> impl Iterator<Item = &'a Asset> + use<'a> {
        let (indexed, scanned): (&[usize], &[Asset]) = if self.index.fits(&self.assets) {
            let indexed = self.index.by_role.get(role).map_or(&[][..], Vec::as_slice);
            (indexed, &[])
        } else {
            (&[], &self.assets)
        };
        let role = role.to_owned();
        indexed
            .iter()
            .filter_map(|&i| self.assets.get(i))
            .chain(scanned)
            .filter(move |asset| asset.role == role)
    }

    pub fn asset(&self, name: &str) -> Option<&Asset> {
        if self.index.fits(&self.assets) {
            match self.index.by_name.get(name).map(|&i| self.assets.get(i)) {
                None => return None,
                Some(Some(asset)) if asset.name == name => return Some(asset),
                Some(_) => {}
            }
        }
        self.assets.iter().find(|asset| asset.name == name)
    }

    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers
            .binary_search_by(|peer| peer.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.peers[i])
    }

    /// Every role some asset has.
    pub fn roles(&self) -> BTreeSet<&str> {
        self.assets
            .iter()
            .map(|asset| asset.role.as_str())
            .collect()
    }

    /// What `endpoint` covers: asset addresses as host networks (/32, /128), peer networks
    /// as written. Empty only for a name that does not exist.
    pub fn endpoint_networks(&self, endpoint: &Endpoint) -> Vec<IpNet> {
        let hosts = |asset: &Asset| -> Vec<IpNet> {
            asset.addresses.iter().map(|&a| IpNet::from(a)).collect()
        };
        match endpoint {
            Endpoint::Role(role) => self.assets_of_role(role).flat_map(hosts).collect(),
            Endpoint::Asset(name) => self.asset(name).map(hosts).unwrap_or_default(),
            Endpoint::Peer(name) => self
                .peer(name)
                .map(|peer| peer.networks.clone())
                .unwrap_or_default(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}
