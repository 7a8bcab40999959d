//! The second enforcement layer: the policy compiled into the nftables table `inet sekisho`,
//! independent of the eBPF datapath, so that detaching the classifiers or wiping their maps
//! still leaves the segment closed.
//!
//! The table is built as JSON with the `nftables` crate and applied by the real `nft`
//! (`nft -j -f -`), which runs one batch as one transaction: [`compile`] emits "add table,
//! delete table, add table, chains, rules", so a load replaces the whole table atomically
//! and there is never a moment without it, nor one with half of it.
//!
//! Invariants of the compiled table:
//! - It means exactly what [`crate::policy`] means (see `sekisho_common::decide`): a source
//!   is an asset only when it arrives on a LAN interface (with its MAC, when the asset has
//!   one) and a peer only when it arrives on the WAN; the destination must be one of the
//!   rule's assets or lie in one of its peer networks; the protocol and destination port
//!   must be among the rule's ports. Everything else is dropped by the chain policy.
//! - Original-direction packets are checked against the rules on every packet, not only
//!   the first one: only replies (`ct direction reply`) of flows this chain let through are
//!   accepted by state, so a reload that removes a rule cuts its established connections.
//! - No owner or persist flag (the table outlives `sekishod`, as issue 3 requires) and no
//!   `counter` statement, so two listings of an unchanged table compare equal
//!   ([`Snapshot`]) and any difference is drift.
//! - `nft` acts on the network namespace of the calling thread (child processes inherit
//!   it).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::config::{Asset, Config, Endpoint, Mode, Peer, PortSpec};

/// The family and name of sekisho's table.
pub const FAMILY_TABLE: (&str, &str) = ("inet", "sekisho");

const FAMILY: NfFamily = NfFamily::INet;
const TABLE: &str = FAMILY_TABLE.1;
const FORWARD: &str = "forward";
const INPUT: &str = "input";
/// nft rejects longer comments.
const COMMENT_MAX: usize = 127;

/// What went wrong running `nft`; every message names the command.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("`nft -j -f -` (replacing table inet sekisho) failed{}", detail(.stderr))]
    Apply {
        stderr: Option<String>,
        #[source]
        source: Box<NftablesError>,
    },
    #[error("`nft -j -f -` (deleting table inet sekisho) failed{}", detail(.stderr))]
    Delete {
        stderr: Option<String>,
        #[source]
        source: Box<NftablesError>,
    },
    #[error("`nft -j {command}` failed{}", detail(.stderr))]
    List {
        command: &'static str,
        stderr: Option<String>,
        #[source]
        source: Box<NftablesError>,
    },
    #[error("`nft -j {command}` printed json sekisho cannot read")]
    Json {
        command: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("table inet sekisho is missing right after `nft -j -f -` applied it")]
    Vanished,
}

fn detail(stderr: &Option<String>) -> String {
    match stderr {
        Some(stderr) if !stderr.trim().is_empty() => format!(": {}", stderr.trim()),
        _ => String::new(),
    }
}

/// `nft`'s standard error, when it ran and failed.
fn stderr_of(err: &NftablesError) -> Option<String> {
    match err {
        NftablesError::NftFailed { stderr, .. } => Some(stderr.clone()),
        _ => None,
    }
}

/// The table as `nft -j list table inet sekisho` shows it, normalised: the metainfo
/// object and every handle removed, so that two listings of the same rules compare equal
/// even across a reload that recreated them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(String);

impl Snapshot {
    /// Normalises the output of `nft -j list table inet sekisho`.
    pub fn from_listing(json: &str) -> Result<Snapshot, serde_json::Error> {
        let mut doc: serde_json::Value = serde_json::from_str(json)?;
        let mut objects = match doc.get_mut("nftables").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(objects)) => objects,
            _ => Vec::new(),
        };
        objects.retain(|obj| obj.get("metainfo").is_none());
        for obj in &mut objects {
            if let Some(serde_json::Value::Object(fields)) =
                obj.as_object_mut().and_then(|o| o.values_mut().next())
            {
                fields.remove("handle");
            }
        }
        Ok(Snapshot(serde_json::Value::Array(objects).to_string()))
    }

    /// The normalised JSON.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// --- Compiling ---------------------------------------------------------------------------

/// One batch that atomically replaces table `inet sekisho` with the policy of `config`.
pub fn compile(config: &Config) -> Nftables<'static> {
    compile_with(config, &[])
}

/// [`compile`] with `cut` ("asset:NAME", "role:NAME", "peer:NAME", "all") cut off: drop
/// rules ahead of everything else in the forward chain, so established connections of an
/// isolated target stop too, whatever the mode.
pub fn compile_with(config: &Config, cut: &[String]) -> Nftables<'static> {
    let mut batch = Batch::new();
    // "add" of an existing table is a no-op and "delete" of a missing one an error: the
    // first add makes the delete always succeed, the second add starts afresh.
    batch.add(NfListObject::Table(table()));
    batch.delete(NfListObject::Table(table()));
    batch.add(NfListObject::Table(table()));
    let forward_policy = match config.daemon.mode {
        Mode::Enforce => NfChainPolicy::Drop,
        // Monitor: decide and record, drop nothing the policy would deny.
        Mode::Monitor => NfChainPolicy::Accept,
    };
    batch.add(NfListObject::Chain(base_chain(
        FORWARD,
        NfHook::Forward,
        forward_policy,
    )));
    batch.add(NfListObject::Chain(base_chain(
        INPUT,
        NfHook::Input,
        NfChainPolicy::Drop,
    )));
    for (expr, comment) in isolation_rules(config, cut)
        .into_iter()
        .chain(forward_rules(config))
    {
        batch.add(NfListObject::Rule(rule(FORWARD, expr, comment)));
    }
    for expr in input_rules(config) {
        batch.add(NfListObject::Rule(rule(INPUT, expr, None)));
    }
    batch.to_nftables()
}

fn table() -> Table<'static> {
    Table {
        family: FAMILY,
        name: Cow::Borrowed(TABLE),
        handle: None,
    }
}

fn base_chain(name: &'static str, hook: NfHook, policy: NfChainPolicy) -> Chain<'static> {
    Chain {
        family: FAMILY,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(name),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        // `priority filter`.
        prio: Some(0),
        dev: None,
        policy: Some(policy),
    }
}

fn rule(
    chain: &'static str,
    expr: Vec<Statement<'static>>,
    comment: Option<String>,
) -> Rule<'static> {
    Rule {
        family: FAMILY,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: comment.map(Cow::Owned),
    }
}

/// The address families, each with its payload protocol and its ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The payload protocol of its header: `ip` or `ip6`.
    fn header(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// What the configuration's `icmp` means in this family.
    fn icmp(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "ipv6-icmp",
        }
    }
}

fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn equals(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

/// One value as itself, several as an anonymous set. `values` is never empty.
fn one_or_set(mut values: Vec<Expression<'static>>) -> Expression<'static> {
    if values.len() == 1 {
        values.remove(0)
    } else {
        Expression::Named(NamedExpression::Set(
            values.into_iter().map(SetItem::Element).collect(),
        ))
    }
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

/// `iifname`/`oifname` is one of `names` (validation keeps the list non-empty; a name
/// written twice would make nft refuse the set).
fn interfaces(key: MetaKey, names: &[String]) -> Statement<'static> {
    let unique: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    equals(
        meta(key),
        one_or_set(unique.into_iter().map(string).collect()),
    )
}

fn network(net: &IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn mac(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// The source matches of a forward rule for one asset in one family (LAN side, its
/// addresses, its MAC); `None` when it has no address of that family.
fn asset_source(config: &Config, asset: &Asset, family: Family) -> Option<Vec<Statement<'static>>> {
    let addrs: Vec<Expression<'static>> = asset
        .addresses
        .iter()
        .filter(|a| Family::of(**a) == family)
        .map(|a| string(a.to_string()))
        .collect();
    if addrs.is_empty() {
        return None;
    }
    let mut expr = vec![
        interfaces(MetaKey::Iifname, &config.interfaces.lan),
        equals(payload(family.header(), "saddr"), one_or_set(addrs)),
    ];
    if let Some(m) = &asset.mac {
        expr.push(equals(payload("ether", "saddr"), string(mac(m))));
    }
    Some(expr)
}

fn peer_networks(peer: &Peer, family: Family) -> Vec<Expression<'static>> {
    peer.networks
        .iter()
        .filter(|n| Family::of(n.addr()) == family)
        .map(network)
        .collect()
}

/// The source matches for a peer in one family (WAN side, its networks); `None` when it has
/// no network of that family.
fn peer_source(config: &Config, peer: &Peer, family: Family) -> Option<Vec<Statement<'static>>> {
    let nets = peer_networks(peer, family);
    if nets.is_empty() {
        return None;
    }
    Some(vec![
        interfaces(MetaKey::Iifname, &config.interfaces.wan),
        equals(payload(family.header(), "saddr"), one_or_set(nets)),
    ])
}

/// The destination matches in one family: an asset or role is reached through the LAN, a
/// peer through the WAN; `None` when the destination has no address of that family.
fn destination(config: &Config, to: &Endpoint, family: Family) -> Option<Vec<Statement<'static>>> {
    let (ifaces, addrs) = match to {
        Endpoint::Asset(_) | Endpoint::Role(_) => {
            let assets: Vec<&Asset> = match to {
                Endpoint::Asset(name) => config.asset(name).into_iter().collect(),
                _ => config.assets_of_role(to.name()).collect(),
            };
            let addrs: Vec<Expression<'static>> = assets
                .iter()
                .flat_map(|a| a.addresses.iter())
                .filter(|a| Family::of(**a) == family)
                .map(|a| string(a.to_string()))
                .collect();
            (&config.interfaces.lan, addrs)
        }
        Endpoint::Peer(name) => (
            &config.interfaces.wan,
            config
                .peer(name)
                .map(|p| peer_networks(p, family))
                .unwrap_or_default(),
        ),
    };
    if addrs.is_empty() {
        return None;
    }
    Some(vec![
        interfaces(MetaKey::Oifname, ifaces),
        equals(payload(family.header(), "daddr"), one_or_set(addrs)),
    ])
}

/// Drop rules for what is cut off: everything for "all", else every address of each
/// target as source and as destination, per family.
fn isolation_rules(
    config: &Config,
    cut: &[String],
) -> Vec<(Vec<Statement<'static>>, Option<String>)> {
    let mut out = Vec::new();
    if cut.iter().any(|t| t == "all") {
        out.push((vec![drop_()], Some("isolated: all".to_owned())));
        return out;
    }
    for target in cut {
        let endpoint: Endpoint = match target.parse() {
            Ok(e) => e,
            Err(_) => continue,
        };
        for family in Family::BOTH {
            let addrs: Vec<Expression<'static>> = match &endpoint {
                Endpoint::Asset(_) | Endpoint::Role(_) => {
                    let assets: Vec<&Asset> = match &endpoint {
                        Endpoint::Asset(name) => config.asset(name).into_iter().collect(),
                        _ => config.assets_of_role(endpoint.name()).collect(),
                    };
                    assets
                        .iter()
                        .flat_map(|a| a.addresses.iter())
                        .filter(|a| Family::of(**a) == family)
                        .map(|a| string(a.to_string()))
                        .collect()
                }
                Endpoint::Peer(name) => config
                    .peer(name)
                    .map(|p| peer_networks(p, family))
                    .unwrap_or_default(),
            };
            if addrs.is_empty() {
                continue;
            }
            for field in ["saddr", "daddr"] {
                out.push((
                    vec![
                        equals(payload(family.header(), field), one_or_set(addrs.clone())),
                        drop_(),
                    ],
                    Some(format!("isolated: {target}")),
                ));
            }
        }
    }
    out
}

/// Inclusive port ranges, sorted, with overlapping and adjacent ones merged (nft refuses
/// overlapping intervals in one set).
fn merge_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// The protocol matches of a rule in one family: one per protocol it names
/// (`tcp dport {…}`, `udp dport {…}`, `meta l4proto icmp|ipv6-icmp`), in that order.
fn protocols(ports: &[PortSpec], family: Family) -> Vec<Statement<'static>> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut icmp = false;
    for spec in ports {
        match *spec {
            PortSpec::Tcp { first, last } => tcp.push((first, last)),
            PortSpec::Udp { first, last } => udp.push((first, last)),
            PortSpec::Icmp => icmp = true,
        }
    }
    let dport = |proto: &'static str, ranges: Vec<(u16, u16)>| {
        let values = merge_ranges(ranges)
            .into_iter()
            .map(|(first, last)| {
                if first == last {
                    Expression::Number(u32::from(first))
                } else {
                    Expression::Range(Box::new(Range {
                        range: [
                            Expression::Number(u32::from(first)),
                            Expression::Number(u32::from(last)),
                        ],
                    }))
                }
            })
            .collect();
        equals(payload(proto, "dport"), one_or_set(values))
    };
    let mut out = Vec::new();
    if !tcp.is_empty() {
        out.push(dport("tcp", tcp));
    }
    if !udp.is_empty() {
        out.push(dport("udp", udp));
    }
    if icmp {
        out.push(equals(meta(MetaKey::L4proto), string(family.icmp())));
    }
    out
}

/// `comment` of every rule compiled from config rule `rule`.
fn rule_comment(rule: &crate::config::Rule) -> String {
    let mut comment = format!("rule {}: {} → {}", rule.index + 1, rule.from, rule.to);
    if let Some(name) = &rule.name {
        comment.push_str(&format!(" ({name})"));
    }
    if comment.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        comment.truncate(end);
    }
    comment
}

/// The forward chain: state rules, then one accept rule per (config rule, source asset or
/// peer, family, protocol), in that order, each commented with its config rule.
fn forward_rules(config: &Config) -> Vec<(Vec<Statement<'static>>, Option<String>)> {
    let mut out = vec![
        (
            vec![
                matches(ct("state"), Operator::IN, string("invalid")),
                drop_(),
            ],
            None,
        ),
        // Replies of flows this chain accepted, and ICMP errors about them. The original
        // direction is not accepted by state: it meets the rules below on every packet.
        (
            vec![
                equals(ct("direction"), string("reply")),
                matches(
                    ct("state"),
                    Operator::IN,
                    Expression::List(vec![string("established"), string("related")]),
                ),
                accept(),
            ],
            None,
        ),
    ];
    for rule in &config.rules {
        let comment = rule_comment(rule);
        let sources: Vec<Source<'_>> = match &rule.from {
            Endpoint::Asset(name) => config.asset(name).map(Source::Asset).into_iter().collect(),
            Endpoint::Role(role) => config.assets_of_role(role).map(Source::Asset).collect(),
            Endpoint::Peer(name) => config.peer(name).map(Source::Peer).into_iter().collect(),
        };
        for source in sources {
            for family in Family::BOTH {
                let from = match source {
                    Source::Asset(asset) => asset_source(config, asset, family),
                    Source::Peer(peer) => peer_source(config, peer, family),
                };
                let (Some(from), Some(to)) = (from, destination(config, &rule.to, family)) else {
                    continue;
                };
                for proto in protocols(&rule.ports, family) {
                    let mut expr = from.clone();
                    expr.extend(to.iter().cloned());
                    expr.push(proto);
                    expr.push(accept());
                    out.push((expr, Some(comment.clone())));
                }
            }
        }
    }
    out
}

/// One source host or network of a rule.
#[derive(Clone, Copy)]
enum Source<'a> {
    Asset(&'a Asset),
    Peer(&'a Peer),
}

/// The gateway's own input: loopback, replies to its own traffic, IPv6 neighbour
/// discovery, the management interfaces, and the metrics listener when it is reachable
/// from outside.
fn input_rules(config: &Config) -> Vec<Vec<Statement<'static>>> {
    let mut out = vec![
        vec![equals(meta(MetaKey::Iif), string("lo")), accept()],
        vec![
            matches(ct("state"), Operator::IN, string("invalid")),
            drop_(),
        ],
        vec![
            matches(
                ct("state"),
                Operator::IN,
                Expression::List(vec![string("established"), string("related")]),
            ),
            accept(),
        ],
        vec![
            equals(
                payload("icmpv6", "type"),
                one_or_set(
                    [
                        "nd-router-solicit",
                        "nd-router-advert",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                    ]
                    .into_iter()
                    .map(string)
                    .collect(),
                ),
            ),
            // Hop limit 255: sent on this link, never routed.
            equals(payload("ip6", "hoplimit"), Expression::Number(255)),
            accept(),
        ],
    ];
    if !config.interfaces.management.is_empty() {
        // The administrators' own port: everything the gateway itself serves.
        out.push(vec![
            equals(
                meta(MetaKey::Iifname),
                one_or_set(
                    config
                        .interfaces
                        .management
                        .iter()
                        .map(|i| string(i.clone()))
                        .collect(),
                ),
            ),
            accept(),
        ]);
    }
    out.extend(metrics_rule(config.daemon.metrics_listen));
    out
}

/// `tcp dport PORT ip[6] daddr ADDR accept` for a metrics listener outside loopback; for an
/// unspecified address, any local address of the families it accepts (`[::]` takes IPv4
/// too).
fn metrics_rule(listen: SocketAddr) -> Option<Vec<Statement<'static>>> {
    let ip = listen.ip();
    if ip.is_loopback() {
        return None;
    }
    let port = equals(
        payload("tcp", "dport"),
        Expression::Number(u32::from(listen.port())),
    );
    let family = Family::of(ip);
    let mut expr = vec![port];
    if ip.is_unspecified() {
        if family == Family::V4 {
            expr.push(equals(meta(MetaKey::Nfproto), string("ipv4")));
        }
    } else {
        expr.push(equals(
            payload(family.header(), "daddr"),
            string(ip.to_string()),
        ));
    }
    expr.push(accept());
    Some(expr)
}

// --- Running nft -------------------------------------------------------------------------

/// Replaces table `inet sekisho` with the policy of `config` in one transaction, and
/// returns the table as it now stands.
pub fn apply(config: &Config) -> Result<Snapshot, NftError> {
    apply_with(config, &[])
}

/// [`apply`] with `cut` cut off (see [`compile_with`]).
pub fn apply_with(config: &Config, cut: &[String]) -> Result<Snapshot, NftError> {
    helper::apply_ruleset(&compile_with(config, cut)).map_err(|source| NftError::Apply {
        stderr: stderr_of(&source),
        source: Box::new(source),
    })?;
    snapshot()?.ok_or(NftError::Vanished)
}

const LIST_TABLE: &str = "list table inet sekisho";
const LIST_TABLES: &str = "list tables inet";

/// The current table, normalised; `None` when there is none.
pub fn snapshot() -> Result<Option<Snapshot>, NftError> {
    let args = ["list", "table", FAMILY_TABLE.0, TABLE];
    match helper::get_current_ruleset_raw(helper::DEFAULT_NFT, args) {
        Ok(json) => Snapshot::from_listing(&json)
            .map(Some)
            .map_err(|source| NftError::Json {
                command: LIST_TABLE,
                source,
            }),
        // The usual failure is a missing table; anything else must not read as one.
        Err(source) => match exists() {
            Ok(false) => Ok(None),
            _ => Err(NftError::List {
                command: LIST_TABLE,
                stderr: stderr_of(&source),
                source: Box::new(source),
            }),
        },
    }
}

/// Whether table `inet sekisho` exists (`nft -j list tables inet`).
fn exists() -> Result<bool, NftError> {
    let json = helper::get_current_ruleset_raw(helper::DEFAULT_NFT, ["list", "tables", "inet"])
        .map_err(|source| NftError::List {
            command: LIST_TABLES,
            stderr: stderr_of(&source),
            source: Box::new(source),
        })?;
    let doc: serde_json::Value = serde_json::from_str(&json).map_err(|source| NftError::Json {
        command: LIST_TABLES,
        source,
    })?;
    let tables = doc
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(tables.iter().any(|obj| {
        obj.get("table").is_some_and(|t| {
            t.get("family").and_then(serde_json::Value::as_str) == Some(FAMILY_TABLE.0)
                && t.get("name").and_then(serde_json::Value::as_str) == Some(TABLE)
        })
    }))
}

/// Deletes table `inet sekisho` if it exists; true if it did. This opens the segment as far
/// as this layer is concerned.
pub fn remove() -> Result<bool, NftError> {
    if !exists()? {
        return Ok(false);
    }
    let mut batch = Batch::new();
    batch.delete(NfListObject::Table(table()));
    match helper::apply_ruleset(&batch.to_nftables()) {
        Ok(()) => Ok(true),
        // Gone in the meantime: someone else removed it.
        Err(_) if !exists()? => Ok(false),
        Err(source) => Err(NftError::Delete {
            stderr: stderr_of(&source),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests;
