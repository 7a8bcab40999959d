//! The compiled nftables JSON for `configs/demo.toml`, checked without running `nft`.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");

fn demo_text() -> String {
    std::fs::read_to_string(DEMO).expect("demo.toml is readable")
}

fn config(text: &str) -> Config {
    Config::parse_str(text, Path::new(DEMO)).expect("valid configuration")
}

fn demo() -> Config {
    Config::load(Path::new(DEMO)).expect("demo.toml is valid")
}

/// The batch as JSON commands: `[("add", {"table": …}), …]`.
fn commands(config: &Config) -> Vec<(String, Value)> {
    let doc = serde_json::to_value(compile(config)).expect("serialisable");
    doc["nftables"]
        .as_array()
        .expect("an nftables array")
        .iter()
        .map(|cmd| {
            let (verb, obj) = cmd
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one command per object");
            (verb.clone(), obj.clone())
        })
        .collect()
}

fn chain(config: &Config, name: &str) -> Value {
    commands(config)
        .into_iter()
        .find(|(verb, obj)| verb == "add" && obj["chain"]["name"] == name)
        .map(|(_, obj)| obj["chain"].clone())
        .unwrap_or_else(|| panic!("no chain {name}"))
}

/// The expressions of every rule added to `chain`, with its comment.
fn rules(config: &Config, chain: &str) -> Vec<(Vec<Value>, Option<String>)> {
    commands(config)
        .into_iter()
        .filter(|(verb, obj)| verb == "add" && obj["rule"]["chain"] == chain)
        .map(|(_, obj)| {
            let rule = &obj["rule"];
            assert_eq!(rule["family"], "inet");
            assert_eq!(rule["table"], "sekisho");
            let comment = rule["comment"].as_str().map(str::to_owned);
            (rule["expr"].as_array().unwrap().clone(), comment)
        })
        .collect()
}

fn m(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn field(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn set(items: Value) -> Value {
    json!({ "set": items })
}

fn accept() -> Value {
    json!({"accept": null})
}

fn lan() -> Value {
    set(json!(["lan-cs", "lan-term"]))
}

fn prefix(addr: &str, len: u32) -> Value {
    json!({"prefix": {"addr": addr, "len": len}})
}

#[test]
fn the_table_is_replaced_in_one_batch_add_delete_add() {
    let cmds = commands(&demo());
    let table = json!({"table": {"family": "inet", "name": "sekisho"}});
    let head: Vec<(&str, &Value)> = cmds.iter().take(3).map(|(v, o)| (v.as_str(), o)).collect();
    assert_eq!(
        head,
        vec![("add", &table), ("delete", &table), ("add", &table)]
    );
    // Nothing else touches a table, and nothing but this table is touched.
    assert!(cmds[3..].iter().all(|(verb, obj)| {
        verb == "add"
            && obj.get("table").is_none()
            && obj
                .as_object()
                .unwrap()
                .values()
                .all(|o| o["table"] == "sekisho" && o["family"] == "inet")
    }));
    assert_eq!(FAMILY_TABLE, ("inet", "sekisho"));
}

#[test]
fn no_owner_flag_and_no_counters() {
    let text = serde_json::to_string(&compile(&demo())).unwrap();
    assert!(!text.contains("owner"), "{text}");
    assert!(!text.contains("persist"), "{text}");
    assert!(!text.contains("counter"), "{text}");
}

#[test]
fn chains_hook_forward_and_input_with_policy_drop() {
    let config = demo();
    assert_eq!(
        chain(&config, "forward"),
        json!({"family": "inet", "table": "sekisho", "name": "forward", "type": "filter",
               "hook": "forward", "prio": 0, "policy": "drop"})
    );
    assert_eq!(
        chain(&config, "input"),
        json!({"family": "inet", "table": "sekisho", "name": "input", "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"})
    );
    let names: Vec<Value> = commands(&config)
        .into_iter()
        .filter_map(|(_, obj)| obj.get("chain").map(|c| c["name"].clone()))
        .collect();
    assert_eq!(
        names,
        vec![json!("forward"), json!("input")],
        "no output chain"
    );
}

#[test]
fn monitor_mode_accepts_by_policy_with_the_same_rules() {
    let enforce = demo();
    let monitor = config(&demo_text().replace("mode = \"enforce\"", "mode = \"monitor\""));
    assert_eq!(monitor.daemon.mode, Mode::Monitor);
    assert_eq!(chain(&monitor, "forward")["policy"], "accept");
    assert_eq!(rules(&monitor, "forward"), rules(&enforce, "forward"));
    assert_eq!(rules(&monitor, "input"), rules(&enforce, "input"));
}

#[test]
fn forward_starts_with_invalid_drop_then_replies_only() {
    let fw = rules(&demo(), "forward");
    assert_eq!(
        fw[0].0,
        vec![
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}),
            json!({"drop": null}),
        ]
    );
    assert_eq!(
        fw[1].0,
        vec![
            m(json!({"ct": {"key": "direction"}}), json!("reply")),
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                             "right": ["established", "related"]}}),
            accept(),
        ]
    );
    // No other rule accepts by state: the original direction meets the rules every time.
    for (expr, _) in &fw[2..] {
        let text = Value::Array(expr.clone()).to_string();
        assert!(!text.contains("\"ct\""), "{text}");
    }
}

/// The accept rules of config rule `n` (1-based), by their comment.
fn accept_rules(config: &Config, n: usize) -> Vec<Vec<Value>> {
    rules(config, "forward")
        .into_iter()
        .filter(|(_, c)| {
            c.as_deref()
                .is_some_and(|c| c.starts_with(&format!("rule {n}: ")))
        })
        .map(|(e, _)| e)
        .collect()
}

#[test]
fn every_accept_rule_is_commented_with_its_config_rule() {
    let fw = rules(&demo(), "forward");
    let comments: std::collections::BTreeSet<String> = fw[2..]
        .iter()
        .map(|(_, c)| c.clone().expect("commented"))
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "rule 1: role:terminal → asset:cs01 (terminal-to-cs)",
        "rule 2: role:cs → peer:prefecture (cs-to-prefecture)",
        "rule 3: role:cs → peer:jlis (cs-to-jlis)",
        "rule 4: peer:prefecture → role:cs (prefecture-to-cs)",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(comments, expected);
    // (2 terminals × 2 families × 2 protocols) + (1 cs × 2 × 2) + (1 × 2 × 3) + (1 × 2 × 1)
    assert_eq!(fw.len() - 2, 8 + 4 + 6 + 2);
}

#[test]
fn rule_1_terminals_to_cs_one_rule_per_terminal_family_and_protocol() {
    let r = accept_rules(&demo(), 1);
    let cs_dst_v4 = [
        m(meta("oifname"), lan()),
        m(field("ip", "daddr"), json!("192.0.2.10")),
    ];
    let tcp = m(
        field("tcp", "dport"),
        set(json!([443, {"range": [8000, 8100]}])),
    );
    let expected_term1_v4 = [
        vec![
            m(meta("iifname"), lan()),
            m(field("ip", "saddr"), json!("192.0.2.21")),
        ],
        cs_dst_v4.to_vec(),
        vec![tcp.clone(), accept()],
    ]
    .concat();
    assert_eq!(r[0], expected_term1_v4);
    assert_eq!(
        r[1][4],
        m(meta("l4proto"), json!("icmp")),
        "icmp in IPv4 is ICMP"
    );
    let term1_v6 = &r[2];
    assert_eq!(
        term1_v6[1],
        m(field("ip6", "saddr"), json!("2001:db8:21::15"))
    );
    assert_eq!(
        term1_v6[3],
        m(field("ip6", "daddr"), json!("2001:db8:10::a"))
    );
    assert_eq!(
        r[3][4],
        m(meta("l4proto"), json!("ipv6-icmp")),
        "icmp in IPv6 is ICMPv6"
    );
    assert_eq!(r[4][1], m(field("ip", "saddr"), json!("192.0.2.22")));
    assert_eq!(r.len(), 8);
    // Terminals have no MAC in the demo: no ether match.
    assert!(!Value::Array(r.concat()).to_string().contains("ether"));
}

#[test]
fn rule_2_cs_to_prefecture_matches_the_cs_mac_and_the_peer_networks() {
    let r = accept_rules(&demo(), 2);
    assert_eq!(r.len(), 4, "cs01 × 2 families × (tcp, icmp)");
    assert_eq!(
        r[0],
        vec![
            m(meta("iifname"), lan()),
            m(field("ip", "saddr"), json!("192.0.2.10")),
            m(field("ether", "saddr"), json!("02:00:00:00:00:0a")),
            m(meta("oifname"), json!("wan0")),
            m(field("ip", "daddr"), prefix("203.0.113.8", 29)),
            m(
                field("tcp", "dport"),
                set(json!([443, {"range": [8000, 8100]}]))
            ),
            accept(),
        ]
    );
    assert_eq!(
        r[2][..5],
        [
            m(meta("iifname"), lan()),
            m(field("ip6", "saddr"), json!("2001:db8:10::a")),
            m(field("ether", "saddr"), json!("02:00:00:00:00:0a")),
            m(meta("oifname"), json!("wan0")),
            m(field("ip6", "daddr"), prefix("2001:db8:ff::8", 125)),
        ]
    );
}

#[test]
fn rule_3_udp_and_single_ports_are_plain_values() {
    let r = accept_rules(&demo(), 3);
    let protos: Vec<&Value> = r.iter().map(|e| &e[5]).collect();
    assert_eq!(
        protos,
        vec![
            &m(field("tcp", "dport"), json!(443)),
            &m(field("udp", "dport"), json!(123)),
            &m(meta("l4proto"), json!("icmp")),
            &m(field("tcp", "dport"), json!(443)),
            &m(field("udp", "dport"), json!(123)),
            &m(meta("l4proto"), json!("ipv6-icmp")),
        ]
    );
}

#[test]
fn rule_4_peer_source_comes_in_on_the_wan_and_goes_out_on_the_lan() {
    let r = accept_rules(&demo(), 4);
    assert_eq!(
        r,
        vec![
            vec![
                m(meta("iifname"), json!("wan0")),
                m(field("ip", "saddr"), prefix("203.0.113.8", 29)),
                m(meta("oifname"), lan()),
                m(field("ip", "daddr"), json!("192.0.2.10")),
                m(field("tcp", "dport"), json!(8443)),
                accept(),
            ],
            vec![
                m(meta("iifname"), json!("wan0")),
                m(field("ip6", "saddr"), prefix("2001:db8:ff::8", 125)),
                m(meta("oifname"), lan()),
                m(field("ip6", "daddr"), json!("2001:db8:10::a")),
                m(field("tcp", "dport"), json!(8443)),
                accept(),
            ],
        ]
    );
}

#[test]
fn a_family_is_skipped_when_either_side_has_no_address_of_it() {
    // term-01 loses its IPv6 address, prefecture its IPv6 network.
    let text = demo_text()
        .replace(
            "addresses = [\"192.0.2.21\", \"2001:db8:21::15\"]",
            "addresses = [\"192.0.2.21\"]",
        )
        .replace(
            "networks = [\"203.0.113.8/29\", \"2001:db8:ff::8/125\"]",
            "networks = [\"203.0.113.8/29\"]",
        );
    let config = config(&text);
    let r1 = accept_rules(&config, 1);
    let sources: Vec<&Value> = r1.iter().map(|e| &e[1]["match"]["right"]).collect();
    assert_eq!(
        sources,
        vec![
            &json!("192.0.2.21"),
            &json!("192.0.2.21"),
            &json!("192.0.2.22"),
            &json!("192.0.2.22"),
            &json!("2001:db8:21::16"),
            &json!("2001:db8:21::16"),
        ]
    );
    for n in [2, 4] {
        let text = Value::Array(accept_rules(&config, n).concat()).to_string();
        assert!(!text.contains("ip6"), "rule {n}: {text}");
        assert!(!text.is_empty());
    }
}

#[test]
fn several_addresses_and_networks_become_anonymous_sets_and_ranges_merge() {
    let text = demo_text()
        .replace(
            "networks = [\"203.0.113.16/28\", \"2001:db8:ff::10/124\"]",
            "networks = [\"203.0.113.16/28\", \"203.0.113.64/27\", \"2001:db8:ff::10/124\"]",
        )
        .replace(
            "ports = [\"tcp/443\", \"udp/123\", \"icmp\"]",
            "ports = [\"tcp/443\", \"tcp/440-444\", \"tcp/445\", \"udp/123\", \"icmp\"]",
        );
    let config = config(&text);
    let r3 = accept_rules(&config, 3);
    assert_eq!(
        r3[0][4],
        m(
            field("ip", "daddr"),
            set(json!([
                prefix("203.0.113.16", 28),
                prefix("203.0.113.64", 27)
            ]))
        )
    );
    assert_eq!(
        r3[0][5],
        m(field("tcp", "dport"), json!({"range": [440, 445]}))
    );
}

#[test]
fn a_role_destination_lists_every_address_of_the_role() {
    let text = demo_text().replace("to = \"asset:cs01\"", "to = \"role:terminal\"");
    // terminal → terminal rule: from cs instead, so it is not a rule to itself.
    let text = text.replacen("from = \"role:terminal\"", "from = \"role:cs\"", 1);
    let r1 = accept_rules(&config(&text), 1);
    assert_eq!(
        r1[0][3..5],
        [
            m(meta("oifname"), lan()),
            m(
                field("ip", "daddr"),
                set(json!(["192.0.2.21", "192.0.2.22"]))
            ),
        ]
    );
}

#[test]
fn input_allows_loopback_state_neighbour_discovery_and_no_metrics_on_loopback() {
    let input = rules(&demo(), "input");
    let exprs: Vec<Vec<Value>> = input.into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        exprs,
        vec![
            vec![m(meta("iif"), json!("lo")), accept()],
            vec![
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}),
                json!({"drop": null}),
            ],
            vec![
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                 "right": ["established", "related"]}}),
                accept(),
            ],
            vec![
                m(
                    field("icmpv6", "type"),
                    set(json!([
                        "nd-router-solicit",
                        "nd-router-advert",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert"
                    ]))
                ),
                m(field("ip6", "hoplimit"), json!(255)),
                accept(),
            ],
        ],
        "metrics on 127.0.0.1 need no rule"
    );
}

#[test]
fn input_allows_metrics_on_its_configured_address() {
    let metrics = |listen: &str| {
        let text = demo_text().replace(
            "metrics_listen = \"127.0.0.1:9807\"",
            &format!("metrics_listen = \"{listen}\""),
        );
        rules(&config(&text), "input").pop().unwrap().0
    };
    assert_eq!(
        metrics("192.0.2.1:9807"),
        vec![
            m(field("tcp", "dport"), json!(9807)),
            m(field("ip", "daddr"), json!("192.0.2.1")),
            accept(),
        ]
    );
    assert_eq!(
        metrics("[2001:db8:10::1]:9100"),
        vec![
            m(field("tcp", "dport"), json!(9100)),
            m(field("ip6", "daddr"), json!("2001:db8:10::1")),
            accept(),
        ]
    );
    assert_eq!(
        metrics("0.0.0.0:9807"),
        vec![
            m(field("tcp", "dport"), json!(9807)),
            m(meta("nfproto"), json!("ipv4")),
            accept(),
        ]
    );
    let loopback = demo_text().replace(
        "metrics_listen = \"127.0.0.1:9807\"",
        "metrics_listen = \"[::1]:9807\"",
    );
    assert_eq!(
        rules(&config(&loopback), "input").len(),
        4,
        "loopback needs no rule of its own"
    );
}

#[test]
fn snapshots_ignore_metainfo_and_handles() {
    let a = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "sekisho", "handle": 3}},
        {"rule": {"family": "inet", "table": "sekisho", "chain": "forward", "handle": 7,
                  "expr": [{"accept": null}]}}]}"#;
    let b = a
        .replace("\"handle\": 3", "\"handle\": 12")
        .replace("\"handle\": 7", "\"handle\": 99")
        .replace("1.0.6", "1.0.9");
    let c = a.replace("accept", "drop");
    let [a, b, c] = [a, &b, &c].map(|listing| Snapshot::from_listing(listing).unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(!a.as_str().contains("handle"), "{a}");
    assert!(!a.as_str().contains("metainfo"), "{a}");
    assert!(Snapshot::from_listing("not json").is_err());
}

#[test]
fn long_rule_names_are_cut_to_fit_an_nft_comment() {
    let long = "名".repeat(60);
    let text = demo_text().replace("name = \"terminal-to-cs\"", &format!("name = \"{long}\""));
    let r = rules(&config(&text), "forward");
    let comment = r[2].1.clone().unwrap();
    assert!(comment.len() <= COMMENT_MAX, "{}", comment.len());
    assert!(comment.starts_with("rule 1: role:terminal → asset:cs01 ("));
}

#[test]
fn errors_name_the_nft_command_and_carry_its_stderr() {
    let failed = || {
        Box::new(NftablesError::NftFailed {
            program: "nft".into(),
            hint: "applying ruleset".into(),
            stdout: String::new(),
            stderr: "Error: Could not process rule: Operation not permitted\n".into(),
        })
    };
    let err = NftError::Apply {
        stderr: stderr_of(&failed()),
        source: failed(),
    };
    assert_eq!(
        err.to_string(),
        "`nft -j -f -` (replacing table inet sekisho) failed: \
         Error: Could not process rule: Operation not permitted"
    );
    assert!(std::error::Error::source(&err).is_some());
    let err = NftError::List {
        command: LIST_TABLE,
        stderr: None,
        source: failed(),
    };
    assert_eq!(err.to_string(), "`nft -j list table inet sekisho` failed");
}

#[test]
fn input_accepts_everything_on_management_interfaces_only() {
    let text = demo_text().replace(
        "wan = [\"wan0\"]",
        "wan = [\"wan0\"]\nmanagement = [\"mgmt0\"]",
    );
    let managed = config(&text);
    let with = rules(&managed, "input");
    let without = rules(&demo(), "input");
    assert_eq!(with.len(), without.len() + 1);
    let added: Vec<_> = with.iter().filter(|r| !without.contains(r)).collect();
    assert_eq!(added.len(), 1);
    let rule = serde_json::to_string(&added[0].0).unwrap();
    assert!(
        rule.contains("iifname") && rule.contains("mgmt0") && rule.contains("accept"),
        "{rule}"
    );
    // Nothing from a management port is forwarded.
    assert_eq!(rules(&managed, "forward"), rules(&demo(), "forward"));
}
