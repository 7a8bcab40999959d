//! The configuration file exactly as TOML spells it: the first of the two phases.
//!
//! Every table denies unknown keys. Values that a later check must point at are
//! [`Spanned`]; values are kept as strings here whenever the second phase can give a
//! better message than serde would (addresses, ports, keywords, durations).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub daemon: Option<RawDaemon>,
    pub interfaces: Spanned<RawInterfaces>,
    #[serde(default, rename = "asset")]
    pub assets: Vec<Spanned<RawAsset>>,
    #[serde(default, rename = "peer")]
    pub peers: BTreeMap<Spanned<String>, Spanned<RawPeer>>,
    #[serde(default, rename = "allow")]
    pub rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub hours: BTreeMap<Spanned<String>, Spanned<RawHours>>,
    pub triggers: Option<RawTriggers>,
    #[serde(default, rename = "recipient")]
    pub recipients: Vec<Spanned<RawRecipient>>,
    pub notify: Option<Spanned<RawNotify>>,
    pub history: Option<RawHistory>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub state_dir: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub pin_dir: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterfaces {
    pub lan: SpannedList,
    pub wan: SpannedList,
    pub management: Option<SpannedList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAsset {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub addresses: SpannedList,
    pub mac: Option<Spanned<String>>,
    pub department: Option<Spanned<String>>,
    pub hours: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub networks: SpannedList,
    pub probe: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Option<Spanned<String>>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub ports: SpannedList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHours {
    pub weekdays: Spanned<String>,
    pub extend_until: Option<Spanned<String>>,
    pub holidays: Option<Spanned<String>>,
    #[serde(default)]
    pub closed: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTriggers {
    pub violations: Option<Spanned<RawViolations>>,
    pub unknown_source: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawViolations {
    pub count: Spanned<u32>,
    pub within: Spanned<String>,
    pub action: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecipient {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub email: Option<Spanned<String>>,
    pub webhook: Option<Spanned<String>>,
    pub hours: Option<Spanned<String>>,
    pub outside: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub municipality: Spanned<String>,
    pub sender: Spanned<String>,
    pub smtp: Option<Spanned<RawSmtp>>,
    pub webhook_secret_file: Option<Spanned<String>>,
    pub syslog: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub host: Spanned<String>,
    pub port: Option<Spanned<u16>>,
    pub starttls: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub retention: Option<Spanned<String>>,
    pub ipfix: Option<Spanned<String>>,
}
