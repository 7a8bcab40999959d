//! The second phase: [`RawConfig`] → [`Config`], checking values and resolving references.
//!
//! Sections are checked in dependency order (daemon, interfaces, hours, assets, peers,
//! assets against peers, rules, triggers, recipients, notify, history) and the first
//! failure is returned, located at the span of the value that caused it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::Asset;
use super::AssetIndex;
use super::Config;
use super::ConfigError;
use super::DaemonConfig;
use super::Endpoint;
use super::HistoryConfig;
use super::Hours;
use super::Interfaces;
use super::Mode;
use super::Notify;
use super::Peer;
use super::PortSpec;
use super::Recipient;
use super::RecipientKind;
use super::Retention;
use super::Rule;
use super::Smtp;
use super::Starttls;
use super::SyslogTarget;
use super::TimeOfDay;
use super::TimeRange;
use super::TriggerAction;
use super::Triggers;
use super::ViolationTrigger;
use super::line_column;
use super::raw::RawAsset;
use super::raw::RawConfig;
use super::raw::RawDaemon;
use super::raw::RawHistory;
use super::raw::RawHours;
use super::raw::RawInterfaces;
use super::raw::RawNotify;
use super::raw::RawPeer;
use super::raw::RawRecipient;
use super::raw::RawRule;
use super::raw::RawTriggers;

/// The output of the first phase, with what the second needs to report positions.
pub(super) struct Parsed<'a> {
    pub source: &'a Path,
    pub text: &'a str,
    pub raw: RawConfig,
}

impl TryFrom<Parsed<'_>> for Config {
    type Error = ConfigError;

    fn try_from(parsed: Parsed<'_>) -> Result<Config, ConfigError> {
        let Parsed { source, text, raw } = parsed;
        let checker = Checker::new(text);
        checker.config(raw, source).map_err(|fail| {
            let (line, column) = line_column(text, fail.at);
            ConfigError::Invalid {
                path: source.to_owned(),
                line,
                column,
                message: fail.message,
            }
        })
    }
}

/// A validation failure at byte offset `at`.
struct Fail {
    at: usize,
    message: String,
}

type Check<T> = Result<T, Fail>;

fn fail<T>(span: Range<usize>, message: impl Into<String>) -> Check<T> {
    Err(Fail {
        at: span.start,
        message: message.into(),
    })
}

/// Where an asset address was written, for checks that need all assets and peers.
struct AddressSite {
    address: IpAddr,
    span: Range<usize>,
    asset: usize,
}

struct Checker<'a> {
    text: &'a str,
    /// Byte offsets of every `\n` in `text`, ascending.
    newlines: Vec<usize>,
}

impl Checker<'_> {
    fn new(text: &str) -> Checker<'_> {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Checker { text, newlines }
    }

    /// The line of [`line_column`], found by binary search: rules ask for theirs one by one.
    fn line(&self, span: &Range<usize>) -> usize {
        self.newlines.partition_point(|&at| at < span.start) + 1
    }

    fn config(&self, raw: RawConfig, source: &Path) -> Check<Config> {
        let daemon = daemon(raw.daemon)?;
        let interfaces = interfaces(raw.interfaces.into_inner())?;
        let hours = hours(&raw.hours)?;
        let (assets, sites) = self.assets(&raw.assets, &hours)?;
        let peers = peers(&raw.peers)?;
        assets_outside_peers(&assets, &sites, &peers)?;
        let index = AssetIndex::new(&assets);
        let rules = self.rules(&raw.rules, &Names::new(&assets, &index, &peers))?;
        let triggers = triggers(raw.triggers)?;
        let recipients = self.recipients(&raw.recipients, &hours)?;
        let notify = match &raw.notify {
            Some(notify) => Some(notify_section(notify.get_ref())?),
            None => None,
        };
        recipients_reachable(&raw.recipients, notify.as_ref())?;
        let history = history(raw.history)?;
        Ok(Config {
            source: source.to_owned(),
            text: self.text.to_owned(),
            daemon,
            interfaces,
            assets,
            peers,
            rules,
            hours,
            triggers,
            recipients,
            notify,
            history,
            index,
        })
    }

    fn assets(
        &self,
        raw: &[Spanned<RawAsset>],
        hours: &BTreeMap<String, Hours>,
    ) -> Check<(Vec<Asset>, Vec<AddressSite>)> {
        let mut assets: Vec<Asset> = Vec::with_capacity(raw.len());
        let mut first_seen: BTreeMap<&str, Range<usize>> = BTreeMap::new();
        let mut owners: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut sites = Vec::new();
        for (index, entry) in raw.iter().enumerate() {
            let entry = entry.get_ref();
            check_name("asset", &entry.name)?;
            let name = entry.name.get_ref();
            if let Some(first) = first_seen.get(name.as_str()) {
                return fail(
                    entry.name.span(),
                    format!(
                        "duplicate asset name {name:?} (first defined on line {})",
                        self.line(first)
                    ),
                );
            }
            first_seen.insert(name, entry.name.span());
            check_name("role", &entry.role)?;
            if entry.addresses.get_ref().is_empty() {
                return fail(
                    entry.addresses.span(),
                    format!("asset {name:?} has no addresses"),
                );
            }
            let mut addresses = Vec::new();
            for written in entry.addresses.get_ref() {
                let address = host_address(name, written)?;
                if let Some(&owner) = owners.get(&address) {
                    let message = if owner == index {
                        format!("asset {name:?} lists address {address} twice")
                    } else {
                        format!(
                            "address {address} is claimed by both asset {:?} and asset {name:?}",
                            assets[owner].name
                        )
                    };
                    return fail(written.span(), message);
                }
                owners.insert(address, index);
                addresses.push(address);
                sites.push(AddressSite {
                    address,
                    span: written.span(),
                    asset: index,
                });
            }
            let mac = match &entry.mac {
                Some(mac) => Some(mac_address(name, mac)?),
                None => None,
            };
            let department = match &entry.department {
                Some(department) => Some(text_value(
                    &format!("asset {name:?} department"),
                    department,
                )?),
                None => None,
            };
            let hours_name = match &entry.hours {
                Some(wanted) if !hours.contains_key(wanted.get_ref()) => {
                    return fail(
                        wanted.span(),
                        format!(
                            "unknown hours {:?} in asset {name:?} ({})",
                            wanted.get_ref(),
                            known("hours", hours.keys().map(String::as_str))
                        ),
                    );
                }
                Some(wanted) => Some(wanted.get_ref().clone()),
                None => None,
            };
            assets.push(Asset {
                name: name.clone(),
                role: entry.role.get_ref().clone(),
                addresses,
                mac,
                department,
                hours: hours_name,
            });
        }
        Ok((assets, sites))
    }

    fn rules(&self, raw: &[Spanned<RawRule>], resolve: &Names<'_>) -> Check<Vec<Rule>> {
        let mut rules = Vec::with_capacity(raw.len());
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, entry) in raw.iter().enumerate() {
            let number = index + 1;
            let line = self.line(&entry.span());
            let entry = entry.get_ref();
            let name = match &entry.name {
                Some(name) => {
                    let value = text_value(&format!("rule {number} name"), name)?;
                    if let Some(first) = names.get(value.as_str()) {
                        return fail(
                            name.span(),
                            format!(
                                "duplicate rule name {value:?} in rule {number} (rule {first} has it too)"
                            ),
                        );
                    }
                    names.insert(name.get_ref(), number);
                    Some(value)
                }
                None => None,
            };
            let from = endpoint(&entry.from, number, resolve)?;
            let to = endpoint(&entry.to, number, resolve)?;
            if entry.ports.get_ref().is_empty() {
                return fail(
                    entry.ports.span(),
                    format!("rule {number} has an empty ports list (e.g. ports = [\"tcp/443\"])"),
                );
            }
            let mut ports = Vec::with_capacity(entry.ports.get_ref().len());
            for port in entry.ports.get_ref() {
                match port.get_ref().parse::<PortSpec>() {
                    Ok(spec) => ports.push(spec),
                    Err(err) => return fail(port.span(), format!("rule {number}: {err}")),
                }
            }
            can_match(&from, &to, resolve).or_else(|message| {
                fail(
                    entry.from.span(),
                    format!("rule {number} can never match: {message}"),
                )
            })?;
            rules.push(Rule {
                index,
                line,
                from,
                to,
                ports,
                name,
            });
        }
        Ok(rules)
    }

    fn recipients(
        &self,
        raw: &[Spanned<RawRecipient>],
        hours: &BTreeMap<String, Hours>,
    ) -> Check<Vec<Recipient>> {
        let mut recipients = Vec::with_capacity(raw.len());
        let mut first_seen: BTreeMap<&str, Range<usize>> = BTreeMap::new();
        for spanned in raw {
            let entry = spanned.get_ref();
            let name = text_value("recipient name", &entry.name)?;
            if let Some(first) = first_seen.get(name.as_str()) {
                return fail(
                    entry.name.span(),
                    format!(
                        "duplicate recipient name {name:?} (first defined on line {})",
                        self.line(first)
                    ),
                );
            }
            first_seen.insert(entry.name.get_ref(), entry.name.span());
            let kind = keyword::<RecipientKind>(&entry.kind)?;
            let email = match &entry.email {
                Some(email) if !is_email_address(email.get_ref()) => {
                    return fail(
                        email.span(),
                        format!(
                            "recipient {name:?} email {:?} is not an email address",
                            email.get_ref()
                        ),
                    );
                }
                Some(email) => Some(email.get_ref().clone()),
                None => None,
            };
            let webhook = match &entry.webhook {
                Some(url) if !is_http_url(url.get_ref()) => {
                    return fail(
                        url.span(),
                        format!(
                            "recipient {name:?} webhook {:?} is not an http:// or https:// URL",
                            url.get_ref()
                        ),
                    );
                }
                Some(url) => Some(url.get_ref().clone()),
                None => None,
            };
            if email.is_none() && webhook.is_none() {
                return fail(
                    spanned.span(),
                    format!(
                        "recipient {name:?} has no email or webhook (at least one channel is required)"
                    ),
                );
            }
            let known = |written: &Spanned<String>| -> Check<String> {
                if hours.contains_key(written.get_ref()) {
                    return Ok(written.get_ref().clone());
                }
                let names: Vec<&str> = hours.keys().map(String::as_str).collect();
                fail(
                    written.span(),
                    format!(
                        "unknown hours {:?} in recipient {name:?} (known hours: {})",
                        written.get_ref(),
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            };
            let reach = match (&entry.hours, &entry.outside) {
                (Some(_), Some(outside)) => {
                    return fail(
                        outside.span(),
                        format!("recipient {name:?} has both hours and outside; give one"),
                    );
                }
                (Some(within), None) => crate::config::Reach::Within(known(within)?),
                (None, Some(outside)) => crate::config::Reach::Outside(known(outside)?),
                (None, None) => crate::config::Reach::Always,
            };
            recipients.push(Recipient {
                reach,
                name,
                kind,
                email,
                webhook,
            });
        }
        Ok(recipients)
    }
}

fn daemon(raw: Option<RawDaemon>) -> Check<DaemonConfig> {
    let mut daemon = DaemonConfig::default();
    let Some(raw) = raw else {
        return Ok(daemon);
    };
    if let Some(dir) = &raw.state_dir {
        daemon.state_dir = absolute_path("state_dir", dir)?;
    }
    if let Some(socket) = &raw.control_socket {
        daemon.control_socket = absolute_path("control_socket", socket)?;
    }
    if let Some(listen) = &raw.metrics_listen {
        daemon.metrics_listen =
            socket_address(listen, "invalid metrics_listen", "e.g. \"127.0.0.1:9807\"")?;
    }
    if let Some(dir) = &raw.pin_dir {
        let path = absolute_path("pin_dir", dir)?;
        if !path.starts_with("/sys/fs/bpf/") || path.components().count() < 5 {
            return fail(
                dir.span(),
                format!(
                    "pin_dir {:?} must be a directory under /sys/fs/bpf/ (e.g. \"/sys/fs/bpf/sekisho\")",
                    dir.get_ref()
                ),
            );
        }
        daemon.pin_dir = path;
    }
    if let Some(mode) = &raw.mode {
        daemon.mode = keyword::<Mode>(mode)?;
    }
    Ok(daemon)
}

fn interfaces(raw: RawInterfaces) -> Check<Interfaces> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut lists = Vec::with_capacity(3);
    let management = raw.management.as_ref();
    for (side, list, meaning) in [
        ("lan", Some(&raw.lan), "CS / terminal side"),
        ("wan", Some(&raw.wan), "住基ネット side"),
        ("management", management, ""),
    ] {
        let Some(list) = list else {
            lists.push(Vec::new());
            continue;
        };
        if list.get_ref().is_empty() && side != "management" {
            return fail(
                list.span(),
                format!("interfaces.{side} is empty (list at least one {meaning} interface)"),
            );
        }
        let mut names = Vec::with_capacity(list.get_ref().len());
        for name in list.get_ref() {
            let value = name.get_ref();
            if !is_interface_name(value) {
                return fail(
                    name.span(),
                    format!(
                        "invalid interface name {value:?} (1-15 characters, no '/', ':' or whitespace)"
                    ),
                );
            }
            match seen.get(value) {
                Some(&other) if other == side => {
                    return fail(
                        name.span(),
                        format!("interface {value:?} is listed twice in interfaces.{side}"),
                    );
                }
                Some(&other) => {
                    return fail(
                        name.span(),
                        format!(
                            "interface {value:?} is in both interfaces.{other} and interfaces.{side}"
                        ),
                    );
                }
                None => {}
            }
            seen.insert(value.clone(), side);
            names.push(value.clone());
        }
        lists.push(names);
    }
    let management = lists.pop().unwrap_or_default();
    let wan = lists.pop().unwrap_or_default();
    let lan = lists.pop().unwrap_or_default();
    Ok(Interfaces {
        lan,
        wan,
        management,
    })
}

fn hours(raw: &BTreeMap<Spanned<String>, Spanned<RawHours>>) -> Check<BTreeMap<String, Hours>> {
    let mut all = BTreeMap::new();
    for (name, entry) in raw {
        check_name("hours", name)?;
        let name = name.get_ref();
        let entry = entry.get_ref();
        let written = entry.weekdays.get_ref();
        let weekdays = written
            .split_once('-')
            .and_then(|(start, end)| Some((start.parse().ok()?, end.parse().ok()?)))
            .map(|(start, end)| TimeRange { start, end });
        let Some(weekdays) = weekdays else {
            return fail(
                entry.weekdays.span(),
                format!("hours.{name} weekdays {written:?} is not HH:MM-HH:MM (00:00-23:59)"),
            );
        };
        if weekdays.start >= weekdays.end {
            return fail(
                entry.weekdays.span(),
                format!(
                    "hours.{name} weekdays {written:?} ends before it starts (a window cannot cross midnight)"
                ),
            );
        }
        let extend_until = match &entry.extend_until {
            Some(until) => {
                let Ok(time) = until.get_ref().parse::<TimeOfDay>() else {
                    return fail(
                        until.span(),
                        format!(
                            "hours.{name} extend_until {:?} is not HH:MM (00:00-23:59)",
                            until.get_ref()
                        ),
                    );
                };
                if time <= weekdays.end {
                    return fail(
                        until.span(),
                        format!(
                            "hours.{name} extend_until {time} is not later than the weekday end {}",
                            weekdays.end
                        ),
                    );
                }
                Some(time)
            }
            None => None,
        };
        let holidays = match &entry.holidays {
            Some(calendar) if calendar.get_ref() != "jp" => {
                return fail(
                    calendar.span(),
                    format!(
                        "unknown holiday calendar {:?} in hours.{name} (only \"jp\" is supported)",
                        calendar.get_ref()
                    ),
                );
            }
            Some(calendar) => Some(calendar.get_ref().clone()),
            None => None,
        };
        let mut closed = Vec::with_capacity(entry.closed.len());
        for date in &entry.closed {
            if !is_date(date.get_ref()) {
                return fail(
                    date.span(),
                    format!(
                        "hours.{name} closed date {:?} is not a valid YYYY-MM-DD date",
                        date.get_ref()
                    ),
                );
            }
            closed.push(date.get_ref().clone());
        }
        all.insert(
            name.clone(),
            Hours {
                weekdays,
                extend_until,
                holidays,
                closed,
            },
        );
    }
    Ok(all)
}

fn peers(raw: &BTreeMap<Spanned<String>, Spanned<RawPeer>>) -> Check<Vec<Peer>> {
    let mut peers = Vec::with_capacity(raw.len());
    // (network, where written, index into `peers`)
    let mut sites: Vec<(IpNet, Range<usize>, usize)> = Vec::new();
    for (name, entry) in raw {
        check_name("peer", name)?;
        let name = name.get_ref();
        let list = &entry.get_ref().networks;
        if list.get_ref().is_empty() {
            return fail(list.span(), format!("peer {name:?} has no networks"));
        }
        let mut networks = Vec::with_capacity(list.get_ref().len());
        for written in list.get_ref() {
            let network = peer_network(name, written)?;
            sites.push((network, written.span(), peers.len()));
            networks.push(network);
        }
        let probe = match &entry.get_ref().probe {
            None => None,
            Some(written) => {
                let addr = socket_address(written, "invalid probe", "e.g. \"192.0.2.10:443\"")?;
                if !networks.iter().any(|n| n.contains(&addr.ip())) {
                    return fail(
                        written.span(),
                        format!(
                            "peer {name:?} probe {addr} is outside its networks ({})",
                            networks
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                Some(addr)
            }
        };
        peers.push(Peer {
            name: name.clone(),
            networks,
            probe,
        });
    }
    // Report each overlap at whichever of the two networks comes later in the file: the
    // first network in the file that overlaps an earlier one, and of the earlier ones it
    // overlaps, the first.
    sites.sort_by_key(|(_, span, _)| span.start);
    let networks: Vec<IpNet> = sites.iter().map(|(network, _, _)| *network).collect();
    let first_overlap = first_overlaps(&networks);
    let found = first_overlap
        .iter()
        .enumerate()
        .find(|&(later, &earlier)| earlier < later);
    if let Some((later, &earlier)) = found {
        let (network, span, owner) = &sites[later];
        let (earlier, _, earlier_owner) = &sites[earlier];
        let name = &peers[*owner].name;
        let message = if owner != earlier_owner {
            format!(
                "peer {name:?} network {network} overlaps network {earlier} of peer {:?}",
                peers[*earlier_owner].name
            )
        } else if network == earlier {
            format!("peer {name:?} lists network {network} twice")
        } else {
            format!("peer {name:?} network {network} overlaps its own network {earlier}")
        };
        return fail(span.clone(), message);
    }
    Ok(peers)
}

/// For each of `networks`, the lowest position of another network that overlaps it
/// (`usize::MAX` for none), in O(n log n).
///
/// Two CIDR networks overlap exactly when one contains the other, so the networks form
/// a forest under containment. Sorted by (family, start, prefix length), a network's
/// ancestors come before it and are on a stack when it is reached, and its descendants
/// follow it until the stack drops it.
fn first_overlaps(networks: &[IpNet]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..networks.len()).collect();
    order.sort_by_key(|&i| (network_key(&networks[i]), i));
    // Lowest position among the strict ancestors, and among the strict descendants.
    let mut above = vec![usize::MAX; networks.len()];
    let mut below = vec![usize::MAX; networks.len()];
    let mut stack: Vec<usize> = Vec::new();
    let close = |stack: &mut Vec<usize>, below: &mut [usize]| {
        if let Some(done) = stack.pop() {
            if let Some(&parent) = stack.last() {
                below[parent] = below[parent].min(below[done]).min(done);
            }
        }
    };
    for &next in &order {
        while let Some(&top) = stack.last() {
            if overlaps(&networks[top], &networks[next]) {
                break;
            }
            close(&mut stack, &mut below);
        }
        if let Some(&parent) = stack.last() {
            above[next] = above[parent].min(parent);
        }
        stack.push(next);
    }
    while !stack.is_empty() {
        close(&mut stack, &mut below);
    }
    above
        .into_iter()
        .zip(below)
        .map(|(above, below)| above.min(below))
        .collect()
}

/// Orders networks by family, then first address, then prefix length (wider first).
fn network_key(network: &IpNet) -> (bool, u128, u8) {
    let (v6, start) = address_key(network.network());
    (v6, start, network.prefix_len())
}

/// Orders addresses by family, then value.
fn address_key(address: IpAddr) -> (bool, u128) {
    match address {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

/// Peer networks never overlap once [`peers`] has accepted them, so the only one that can
/// contain an address is the last that starts at or before it.
fn assets_outside_peers(assets: &[Asset], sites: &[AddressSite], peers: &[Peer]) -> Check<()> {
    let mut networks: Vec<(&IpNet, &Peer)> = peers
        .iter()
        .flat_map(|peer| peer.networks.iter().map(move |network| (network, peer)))
        .collect();
    networks.sort_by_key(|(network, _)| network_key(network));
    for site in sites {
        let key = address_key(site.address);
        let after = networks.partition_point(|(network, _)| address_key(network.network()) <= key);
        let Some(&(network, peer)) = after.checked_sub(1).and_then(|i| networks.get(i)) else {
            continue;
        };
        if network.contains(&site.address) {
            return fail(
                site.span.clone(),
                format!(
                    "asset {:?} address {} is inside network {network} of peer {:?}",
                    assets[site.asset].name, site.address, peer.name
                ),
            );
        }
    }
    Ok(())
}

fn triggers(raw: Option<RawTriggers>) -> Check<Triggers> {
    let mut triggers = Triggers::default();
    let Some(raw) = raw else {
        return Ok(triggers);
    };
    if let Some(spanned) = &raw.violations {
        let violations = spanned.get_ref();
        let count = *violations.count.get_ref();
        if count == 0 {
            return fail(
                violations.count.span(),
                "triggers.violations count must be at least 1",
            );
        }
        let written = violations.within.get_ref();
        let Some(within) = parse_duration(written) else {
            return fail(
                violations.within.span(),
                format!(
                    "invalid duration {written:?} for triggers.violations within (expected a number and s, m, h or d, e.g. \"60s\")"
                ),
            );
        };
        if within.is_zero() {
            return fail(
                violations.within.span(),
                "triggers.violations within must be longer than 0s",
            );
        }
        let action = keyword::<TriggerAction>(&violations.action)?;
        triggers.violations = Some(ViolationTrigger {
            count,
            within,
            action,
        });
    }
    if let Some(action) = &raw.unknown_source {
        triggers.unknown_source = keyword::<TriggerAction>(action)?;
    }
    Ok(triggers)
}

fn notify_section(raw: &RawNotify) -> Check<Notify> {
    let municipality = text_value("notify municipality", &raw.municipality)?;
    let sender = text_value("notify sender", &raw.sender)?;
    if !sender_has_address(&sender) {
        return fail(
            raw.sender.span(),
            format!(
                "notify sender {sender:?} has no email address (e.g. \"宮若市 住基ネット担当 <juki@city.example.jp>\")"
            ),
        );
    }
    let smtp = match &raw.smtp {
        Some(spanned) => {
            let smtp = spanned.get_ref();
            let host = smtp.host.get_ref();
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return fail(
                    smtp.host.span(),
                    format!("smtp host {host:?} is not a host name or address"),
                );
            }
            let port = match &smtp.port {
                Some(port) if *port.get_ref() == 0 => {
                    return fail(port.span(), "smtp port 0 is not a valid port");
                }
                Some(port) => *port.get_ref(),
                None => 25,
            };
            let starttls = match &smtp.starttls {
                Some(mode) => keyword::<Starttls>(mode)?,
                None => Starttls::default(),
            };
            let (user, password_file) = match (&smtp.user, &smtp.password_file) {
                (Some(user), Some(file)) => (
                    Some(text_value("smtp user", user)?),
                    Some(absolute_path("smtp password_file", file)?),
                ),
                (Some(user), None) => {
                    return fail(user.span(), "smtp user is set but password_file is not");
                }
                (None, Some(file)) => {
                    return fail(file.span(), "smtp password_file is set but user is not");
                }
                (None, None) => (None, None),
            };
            Some(Smtp {
                host: host.clone(),
                port,
                starttls,
                user,
                password_file,
            })
        }
        None => None,
    };
    let webhook_secret_file = match &raw.webhook_secret_file {
        Some(file) => Some(absolute_path("webhook_secret_file", file)?),
        None => None,
    };
    let syslog = match &raw.syslog {
        Some(target) => match target.get_ref().parse::<SyslogTarget>() {
            Ok(target) => Some(target),
            Err(err) => return fail(target.span(), err.to_string()),
        },
        None => None,
    };
    Ok(Notify {
        municipality,
        sender,
        smtp,
        webhook_secret_file,
        syslog,
    })
}

/// Every recipient must be reachable through what `[notify]` configures.
fn recipients_reachable(raw: &[Spanned<RawRecipient>], notify: Option<&Notify>) -> Check<()> {
    let Some(first) = raw.first() else {
        return Ok(());
    };
    let Some(notify) = notify else {
        return fail(
            first.span(),
            "[[recipient]] needs a [notify] section (municipality, sender) to send notices",
        );
    };
    let emailed = raw.iter().map(Spanned::get_ref).find(|r| r.email.is_some());
    if let (None, Some(entry)) = (&notify.smtp, emailed) {
        let email = entry.email.as_ref().map_or(0..0, Spanned::span);
        return fail(
            email,
            format!(
                "recipient {:?} has an email address but [notify] has no smtp server",
                entry.name.get_ref()
            ),
        );
    }
    Ok(())
}

fn history(raw: Option<RawHistory>) -> Check<HistoryConfig> {
    let mut history = HistoryConfig::default();
    let Some(raw) = raw else {
        return Ok(history);
    };
    if let Some(retention) = &raw.retention {
        match retention.get_ref().parse::<Retention>() {
            Ok(value) => history.retention = value,
            Err(err) => return fail(retention.span(), err.to_string()),
        }
    }
    if let Some(ipfix) = &raw.ipfix {
        history.ipfix = Some(socket_address(
            ipfix,
            "invalid ipfix collector",
            "e.g. \"192.0.2.50:4739\"",
        )?);
    }
    Ok(history)
}

/// The address families some addresses or networks cover.
#[derive(Debug, Clone, Copy, Default)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    fn note(&mut self, is_v4: bool) {
        if is_v4 {
            self.v4 = true
        } else {
            self.v6 = true
        }
    }

    fn of_addresses<'a>(addresses: impl IntoIterator<Item = &'a IpAddr>) -> Families {
        let mut families = Families::default();
        addresses
            .into_iter()
            .for_each(|a| families.note(a.is_ipv4()));
        families
    }
}

/// What rule endpoints resolve against, each name found without scanning every asset.
struct Names<'a> {
    assets: &'a [Asset],
    index: &'a AssetIndex,
    /// Sorted by name, as [`Config::peers`].
    peers: &'a [Peer],
    peer_by_name: HashMap<&'a str, (&'a Peer, Families)>,
    /// Per asset, in `assets` order.
    asset_families: Vec<Families>,
    /// The families of all the assets of a role together.
    role_families: HashMap<&'a str, Families>,
}

impl<'a> Names<'a> {
    fn new(assets: &'a [Asset], index: &'a AssetIndex, peers: &'a [Peer]) -> Names<'a> {
        let asset_families: Vec<Families> = assets
            .iter()
            .map(|asset| Families::of_addresses(&asset.addresses))
            .collect();
        let mut role_families: HashMap<&str, Families> = HashMap::new();
        for (asset, families) in assets.iter().zip(&asset_families) {
            let role = role_families.entry(asset.role.as_str()).or_default();
            role.v4 |= families.v4;
            role.v6 |= families.v6;
        }
        let peer_by_name = peers
            .iter()
            .map(|peer| {
                let mut families = Families::default();
                peer.networks
                    .iter()
                    .for_each(|n| families.note(matches!(n, IpNet::V4(_))));
                (peer.name.as_str(), (peer, families))
            })
            .collect();
        Names {
            assets,
            index,
            peers,
            peer_by_name,
            asset_families,
            role_families,
        }
    }

    fn exists(&self, endpoint: &Endpoint) -> bool {
        match endpoint {
            Endpoint::Role(role) => self.index.by_role.contains_key(role.as_str()),
            Endpoint::Asset(name) => self.index.by_name.contains_key(name.as_str()),
            Endpoint::Peer(name) => self.peer_by_name.contains_key(name.as_str()),
        }
    }

    /// `known roles: …` for the kind of `endpoint`; only built for an error.
    fn known(&self, endpoint: &Endpoint) -> String {
        let sorted = |names: Vec<&'a str>| {
            let mut names = names;
            names.sort_unstable();
            names.dedup();
            names
        };
        match endpoint {
            Endpoint::Role(_) => known(
                "roles",
                sorted(self.assets.iter().map(|a| a.role.as_str()).collect()).into_iter(),
            ),
            Endpoint::Asset(_) => known(
                "assets",
                sorted(self.assets.iter().map(|a| a.name.as_str()).collect()).into_iter(),
            ),
            Endpoint::Peer(_) => known("peers", self.peers.iter().map(|p| p.name.as_str())),
        }
    }

    /// The name of the one asset `endpoint` covers, if it covers exactly one.
    fn single_host<'e>(&self, endpoint: &'e Endpoint) -> Option<&'e str>
    where
        'a: 'e,
    {
        match endpoint {
            Endpoint::Role(role) => match self.index.by_role.get(role.as_str())?.as_slice() {
                [one] => self.assets.get(*one).map(|asset| asset.name.as_str()),
                _ => None,
            },
            Endpoint::Asset(name) => Some(name.as_str()),
            Endpoint::Peer(_) => None,
        }
    }

    fn families(&self, endpoint: &Endpoint) -> Families {
        let found = match endpoint {
            Endpoint::Role(role) => self.role_families.get(role.as_str()).copied(),
            Endpoint::Asset(name) => self
                .index
                .by_name
                .get(name.as_str())
                .and_then(|&i| self.asset_families.get(i).copied()),
            Endpoint::Peer(name) => self
                .peer_by_name
                .get(name.as_str())
                .map(|&(_, families)| families),
        };
        found.unwrap_or_default()
    }
}

/// Parses and resolves one side of rule `number`.
fn endpoint(written: &Spanned<String>, number: usize, names: &Names<'_>) -> Check<Endpoint> {
    let endpoint = match written.get_ref().parse::<Endpoint>() {
        Ok(endpoint) => endpoint,
        Err(err) => return fail(written.span(), format!("rule {number}: {err}")),
    };
    if !names.exists(&endpoint) {
        return fail(
            written.span(),
            format!(
                "unknown {} {:?} in rule {number} ({})",
                endpoint.kind(),
                endpoint.name(),
                names.known(&endpoint)
            ),
        );
    }
    Ok(endpoint)
}

/// `Err(reason)` when a rule from `from` to `to` can be proven never to match a packet.
/// Both endpoints exist.
fn can_match(from: &Endpoint, to: &Endpoint, names: &Names<'_>) -> Result<(), String> {
    if let (Endpoint::Peer(_), Endpoint::Peer(_)) = (from, to) {
        return Err(format!(
            "{from} → {to} is traffic between two peers, which never crosses the segment"
        ));
    }
    if let (Some(one), Some(other)) = (names.single_host(from), names.single_host(to)) {
        if one == other && from == to {
            return Err(format!(
                "from and to are both {from}, which is the single host {one:?}"
            ));
        }
        if one == other {
            return Err(format!(
                "from {from} and to {to} are the same single host {one:?}"
            ));
        }
    }
    let (from_families, to_families) = (names.families(from), names.families(to));
    let shared = (from_families.v4 && to_families.v4) || (from_families.v6 && to_families.v6);
    if !shared {
        let only = |v4: bool| if v4 { "IPv4-only" } else { "IPv6-only" };
        return Err(format!(
            "from {from} is {} and to {to} is {}, so they share no address family",
            only(from_families.v4),
            only(to_families.v4)
        ));
    }
    Ok(())
}

fn check_name(what: &str, name: &Spanned<String>) -> Check<()> {
    let value = name.get_ref();
    if value.is_empty() {
        return fail(name.span(), format!("{what} name is empty"));
    }
    if !value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return fail(
            name.span(),
            format!("invalid {what} name {value:?} (use letters, digits, '-', '_' and '.')"),
        );
    }
    Ok(())
}

/// Free text: not empty, no control characters.
fn text_value(what: &str, value: &Spanned<String>) -> Check<String> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        return fail(value.span(), format!("{what} is empty"));
    }
    if text.chars().any(char::is_control) {
        return fail(
            value.span(),
            format!("{what} {text:?} contains a control character"),
        );
    }
    Ok(text.clone())
}

fn keyword<T>(value: &Spanned<String>) -> Check<T>
where
    T: std::str::FromStr<Err = super::ParseKeywordError>,
{
    value
        .get_ref()
        .parse::<T>()
        .or_else(|err| fail(value.span(), err.to_string()))
}

fn absolute_path(key: &str, value: &Spanned<String>) -> Check<PathBuf> {
    let path = value.get_ref();
    if path.is_empty() {
        return fail(value.span(), format!("{key} is empty"));
    }
    if !path.starts_with('/') {
        return fail(
            value.span(),
            format!("{key} {path:?} must be an absolute path"),
        );
    }
    Ok(PathBuf::from(path))
}

fn socket_address(value: &Spanned<String>, what: &str, example: &str) -> Check<SocketAddr> {
    value.get_ref().parse().or_else(|_| {
        fail(
            value.span(),
            format!(
                "{what} {:?} (expected ADDRESS:PORT, {example})",
                value.get_ref()
            ),
        )
    })
}

/// An asset address: one host, usable on a LAN.
fn host_address(asset: &str, written: &Spanned<String>) -> Check<IpAddr> {
    let text = written.get_ref();
    if text.contains('/') {
        return fail(
            written.span(),
            format!(
                "asset {asset:?} address {text:?} must be a single host address without a prefix length"
            ),
        );
    }
    let Ok(address) = text.parse::<IpAddr>() else {
        return fail(
            written.span(),
            format!("asset {asset:?} address {text:?} is not an IP address"),
        );
    };
    let problem = if address.is_unspecified() {
        Some("the unspecified address")
    } else if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_multicast() {
        Some("a multicast address")
    } else if address == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address")
    } else {
        None
    };
    if let Some(problem) = problem {
        return fail(
            written.span(),
            format!("asset {asset:?} address {address} is {problem}"),
        );
    }
    let mapped = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    };
    if let Some(v4) = mapped {
        return fail(
            written.span(),
            format!(
                "asset {asset:?} address {address} is an IPv4-mapped IPv6 address; write it as {v4}"
            ),
        );
    }
    Ok(address)
}

fn mac_address(asset: &str, written: &Spanned<String>) -> Check<[u8; 6]> {
    let text = written.get_ref();
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    let parsed = mac.iter_mut().all(|byte| match parts.next() {
        Some(part) if part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit()) => {
            *byte = u8::from_str_radix(part, 16).unwrap_or_default();
            true
        }
        _ => false,
    }) && parts.next().is_none();
    if !parsed {
        return fail(
            written.span(),
            format!(
                "asset {asset:?} mac {text:?} is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)"
            ),
        );
    }
    if mac == [0; 6] {
        return fail(
            written.span(),
            format!("asset {asset:?} mac {text} is the all-zero address"),
        );
    }
    if mac[0] & 1 != 0 {
        return fail(
            written.span(),
            format!("asset {asset:?} mac {text} is a multicast address"),
        );
    }
    Ok(mac)
}

fn peer_network(peer: &str, written: &Spanned<String>) -> Check<IpNet> {
    let text = written.get_ref();
    let bare_address = match text.contains('/') {
        true => None,
        false => text.parse::<IpAddr>().ok(),
    };
    if let Some(address) = bare_address {
        let host = if address.is_ipv4() { 32 } else { 128 };
        return fail(
            written.span(),
            format!(
                "peer {peer:?} network {text:?} has no prefix length; write {address}/{host} for a single host"
            ),
        );
    }
    let Ok(network) = text.parse::<IpNet>() else {
        return fail(
            written.span(),
            format!(
                "peer {peer:?} network {text:?} is not a valid CIDR network (e.g. \"192.0.2.0/28\")"
            ),
        );
    };
    if network.trunc() != network {
        return fail(
            written.span(),
            format!(
                "peer {peer:?} network {network} has host bits set; did you mean {}?",
                network.trunc()
            ),
        );
    }
    let problem = if network.prefix_len() == 0 {
        Some("matches every address; list the peer's own networks")
    } else if network.network().is_unspecified() {
        Some("includes the unspecified address")
    } else if network.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST))
        || network.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST))
    {
        Some("includes loopback addresses")
    } else if network.network().is_multicast() {
        Some("is a multicast network")
    } else {
        None
    };
    if let Some(problem) = problem {
        return fail(
            written.span(),
            format!("peer {peer:?} network {network} {problem}"),
        );
    }
    Ok(network)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `known peers: jlis, prefecture`, or `no peers are defined`.
fn known<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        format!("no {what} are defined")
    } else {
        format!("known {what}: {}", names.join(", "))
    }
}

/// A Linux interface name: 1 to 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// `YYYY-MM-DD`, a real calendar day.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let number = |range: Range<usize>| -> Option<u32> {
        let part = &text[range];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// `60s`, `5m`, `1h`, `1d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    if number.is_empty() {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

fn is_email_address(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
}

/// `addr@example.jp` or `Display Name <addr@example.jp>`.
fn sender_has_address(text: &str) -> bool {
    match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => is_email_address(&inner[open + 1..]),
        _ => is_email_address(text),
    }
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            !rest.is_empty()
                && !rest.starts_with('/')
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}
