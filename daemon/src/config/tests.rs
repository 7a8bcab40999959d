//! One test per class of error, each asserting the exact `line:column` and the message;
//! Display round trips; and every file in `configs/` parses.

use std::net::IpAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A small valid configuration that most tests append to.
const PRELUDE: &str = r#"[interfaces]
lan = ["lan0"]
wan = ["wan0"]

[[asset]]
name = "cs01"
role = "cs"
addresses = ["192.0.2.10", "2001:db8:10::a"]

[[asset]]
name = "term-01"
role = "terminal"
addresses = ["192.0.2.21"]

[peer.prefecture]
networks = ["203.0.113.8/29", "2001:db8:ff::8/125"]

[peer.jlis]
networks = ["203.0.113.16/28"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_str(text, Path::new("t.toml"))
}

#[track_caller]
fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid configuration, got: {err}\n---\n{text}"),
    }
}

/// Asserts that `text` fails at `line:column` with a message containing `message`.
#[track_caller]
fn assert_invalid(text: &str, line: usize, column: usize, message: &str) {
    match parse(text) {
        Ok(_) => panic!(
            "expected an error at {line}:{column} ({message}), got a valid config\n---\n{text}"
        ),
        Err(ConfigError::Invalid {
            path,
            line: got_line,
            column: got_column,
            message: got,
        }) => {
            assert_eq!(path, PathBuf::from("t.toml"));
            assert!(
                (got_line, got_column) == (line, column) && got.contains(message),
                "expected {line}:{column}: …{message}…\n     got {got_line}:{got_column}: {got}\n---\n{text}"
            );
        }
        Err(err) => panic!("expected an Invalid error, got: {err}"),
    }
}

/// Like [`assert_invalid`] for `PRELUDE + tail`, with `line` counted within `tail`.
#[track_caller]
fn assert_invalid_tail(tail: &str, line: usize, column: usize, message: &str) {
    let prelude_lines = PRELUDE.lines().count();
    assert_invalid(
        &format!("{PRELUDE}{tail}"),
        prelude_lines + line,
        column,
        message,
    );
}

fn with_prelude(tail: &str) -> String {
    format!("{PRELUDE}{tail}")
}

#[test]
fn prelude_is_valid_and_takes_defaults() {
    let config = parse_ok(PRELUDE);
    assert_eq!(config.source, PathBuf::from("t.toml"));
    assert_eq!(config.text, PRELUDE);
    assert_eq!(config.daemon.state_dir, PathBuf::from(paths::STATE_DIR));
    assert_eq!(
        config.daemon.control_socket,
        PathBuf::from(paths::CONTROL_SOCKET)
    );
    assert_eq!(
        config.daemon.metrics_listen.to_string(),
        paths::METRICS_LISTEN
    );
    assert_eq!(config.daemon.mode, Mode::Enforce);
    assert_eq!(config.history.retention, Retention::Years(7));
    assert_eq!(config.history.ipfix, None);
    assert_eq!(config.triggers.unknown_source, TriggerAction::Alert);
    assert_eq!(config.triggers.violations, None);
    assert!(config.notify.is_none());
    assert!(config.recipients.is_empty());
    assert!(config.rules.is_empty());
    // Peers come out sorted by name.
    let peers: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(peers, ["jlis", "prefecture"]);
}

#[test]
fn accessors_resolve_names() {
    let config = parse_ok(&with_prelude(
        "[[asset]]\nname = \"term-02\"\nrole = \"terminal\"\naddresses = [\"192.0.2.22\"]\n",
    ));
    let terminals: Vec<&str> = config
        .assets_of_role("terminal")
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(terminals, ["term-01", "term-02"]);
    assert_eq!(
        config.roles().into_iter().collect::<Vec<_>>(),
        ["cs", "terminal"]
    );
    assert_eq!(config.asset("cs01").map(|a| a.role.as_str()), Some("cs"));
    assert!(config.asset("cs02").is_none());
    assert_eq!(config.peer("jlis").map(|p| p.networks.len()), Some(1));
    assert!(config.peer("nope").is_none());
    let nets = config.endpoint_networks(&Endpoint::Role("terminal".into()));
    assert_eq!(
        nets,
        [
            "192.0.2.21/32".parse().unwrap(),
            "192.0.2.22/32".parse().unwrap()
        ]
    );
    let nets = config.endpoint_networks(&Endpoint::Peer("prefecture".into()));
    assert_eq!(nets.len(), 2);
}

#[test]
fn rules_keep_file_order_index_line_and_name() {
    let config = parse_ok(&with_prelude(
        r#"
[[allow]]
name = "terminal-to-cs"
from = "role:terminal"
to = "asset:cs01"
ports = ["tcp/443", "tcp/8000-8100", "icmp"]

[[allow]]
from = "role:cs"
to = "peer:jlis"
ports = ["udp/123"]
"#,
    ));
    let prelude_lines = PRELUDE.lines().count();
    assert_eq!(config.rules.len(), 2);
    let first = &config.rules[0];
    assert_eq!(first.index, 0);
    assert_eq!(first.line, prelude_lines + 2);
    assert_eq!(first.name.as_deref(), Some("terminal-to-cs"));
    assert_eq!(first.from, Endpoint::Role("terminal".into()));
    assert_eq!(first.to, Endpoint::Asset("cs01".into()));
    assert_eq!(
        first.ports,
        [
            PortSpec::Tcp {
                first: 443,
                last: 443
            },
            PortSpec::Tcp {
                first: 8000,
                last: 8100
            },
            PortSpec::Icmp
        ]
    );
    let second = &config.rules[1];
    assert_eq!(second.index, 1);
    assert_eq!(second.line, prelude_lines + 8);
    assert_eq!(second.name, None);
    assert_eq!(second.to, Endpoint::Peer("jlis".into()));
}

// ---- TOML syntax and unknown keys -------------------------------------------------

#[test]
fn toml_syntax_error_is_located() {
    assert_invalid(
        "[interfaces]\nlan = [\"lan0\"\nwan = [\"wan0\"]\n",
        3,
        1,
        "",
    );
    assert_invalid("[[allow]\n", 1, 9, "unclosed array table");
}

#[test]
fn unknown_top_level_key() {
    assert_invalid_tail("[bogus]\nx = 1\n", 1, 2, "unknown field `bogus`");
}

#[test]
fn unknown_key_in_daemon() {
    assert_invalid(
        "[daemon]\nmode = \"enforce\"\nstate = \"/x\"\n",
        3,
        1,
        "unknown field `state`",
    );
}

#[test]
fn unknown_key_in_allow() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\nport = [\"tcp/443\"]\n",
        4,
        1,
        "unknown field `port`",
    );
}

#[test]
fn unknown_key_in_inline_table() {
    assert_invalid_tail(
        "[triggers]\nviolations = { count = 5, within = \"60s\", action = \"alert\", per = \"asset\" }\n",
        2,
        61,
        "unknown field `per`",
    );
}

#[test]
fn wrong_type_does_not_fall_back_to_default() {
    assert_invalid("[daemon]\nmode = 5\n", 2, 8, "invalid type");
    assert_invalid_tail(
        "[triggers]\nviolations = { count = -1, within = \"60s\", action = \"alert\" }\n",
        2,
        24,
        "invalid value",
    );
}

#[test]
fn missing_interfaces_section() {
    let err = parse("[daemon]\nmode = \"monitor\"\n").unwrap_err();
    assert!(
        err.to_string().contains("missing field `interfaces`"),
        "{err}"
    );
}

// ---- [daemon] --------------------------------------------------------------------

#[test]
fn bad_mode() {
    assert_invalid(
        "[daemon]\nmode = \"enforcing\"\n[interfaces]\nlan = [\"a\"]\nwan = [\"b\"]\n",
        2,
        8,
        r#"unknown mode "enforcing" (expected "enforce" or "monitor")"#,
    );
}

#[test]
fn daemon_values_are_checked() {
    assert_invalid(
        "[daemon]\nmetrics_listen = \"localhost\"\n[interfaces]\nlan = [\"a\"]\nwan = [\"b\"]\n",
        2,
        18,
        r#"invalid metrics_listen "localhost" (expected ADDRESS:PORT"#,
    );
    assert_invalid(
        "[daemon]\nstate_dir = \"var/lib/sekisho\"\n[interfaces]\nlan = [\"a\"]\nwan = [\"b\"]\n",
        2,
        13,
        r#"state_dir "var/lib/sekisho" must be an absolute path"#,
    );
    let config = parse_ok(
        "[daemon]\nmode = \"monitor\"\nmetrics_listen = \"[::1]:9900\"\n[interfaces]\nlan = [\"a\"]\nwan = [\"b\"]\n",
    );
    assert_eq!(config.daemon.mode, Mode::Monitor);
    assert_eq!(config.daemon.metrics_listen.port(), 9900);
}

// ---- [interfaces] ----------------------------------------------------------------

#[test]
fn empty_lan_list() {
    assert_invalid(
        "[interfaces]\nlan = []\nwan = [\"wan0\"]\n",
        2,
        7,
        "interfaces.lan is empty",
    );
}

#[test]
fn empty_wan_list() {
    assert_invalid(
        "[interfaces]\nlan = [\"lan0\"]\nwan = []\n",
        3,
        7,
        "interfaces.wan is empty",
    );
}

#[test]
fn interface_on_both_sides() {
    assert_invalid(
        "[interfaces]\nlan = [\"eth0\", \"eth1\"]\nwan = [\"eth1\"]\n",
        3,
        8,
        r#"interface "eth1" is in both interfaces.lan and interfaces.wan"#,
    );
}

#[test]
fn duplicate_interface() {
    assert_invalid(
        "[interfaces]\nlan = [\"eth1\", \"eth1\"]\nwan = [\"eth0\"]\n",
        2,
        16,
        r#"interface "eth1" is listed twice in interfaces.lan"#,
    );
}

#[test]
fn bad_interface_name() {
    assert_invalid(
        "[interfaces]\nlan = [\"a-very-long-interface\"]\nwan = [\"eth0\"]\n",
        2,
        8,
        r#"invalid interface name "a-very-long-interface""#,
    );
}

// ---- [[asset]] -------------------------------------------------------------------

#[test]
fn duplicate_asset_name() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs01\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\n",
        2,
        8,
        r#"duplicate asset name "cs01" (first defined on line 6)"#,
    );
}

#[test]
fn asset_address_with_prefix() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11/24\"]\n",
        4,
        14,
        r#"asset "cs02" address "192.0.2.11/24" must be a single host address without a prefix length"#,
    );
}

#[test]
fn asset_address_not_an_address() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.300\"]\n",
        4,
        14,
        r#"asset "cs02" address "192.0.2.300" is not an IP address"#,
    );
}

#[test]
fn asset_address_unusable() {
    for (address, problem) in [
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("127.0.0.5", "is a loopback address"),
        ("::1", "is a loopback address"),
        ("224.0.0.1", "is a multicast address"),
        ("ff02::1", "is a multicast address"),
        ("255.255.255.255", "is the broadcast address"),
        (
            "::ffff:192.0.2.99",
            "is an IPv4-mapped IPv6 address; write it as 192.0.2.99",
        ),
    ] {
        assert_invalid_tail(
            &format!("[[asset]]\nname = \"x\"\nrole = \"cs\"\naddresses = [\"{address}\"]\n"),
            4,
            14,
            problem,
        );
    }
}

#[test]
fn asset_without_addresses() {
    assert_invalid_tail(
        "[[asset]]\nname = \"x\"\nrole = \"cs\"\naddresses = []\n",
        4,
        13,
        r#"asset "x" has no addresses"#,
    );
}

#[test]
fn address_claimed_by_two_assets() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.99\", \"2001:DB8:10::A\"]\n",
        4,
        28,
        r#"address 2001:db8:10::a is claimed by both asset "cs01" and asset "cs02""#,
    );
}

#[test]
fn address_listed_twice_in_one_asset() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.99\", \"192.0.2.99\"]\n",
        4,
        28,
        r#"asset "cs02" lists address 192.0.2.99 twice"#,
    );
}

#[test]
fn asset_address_inside_peer_network() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"203.0.113.9\"]\n",
        4,
        14,
        r#"asset "cs02" address 203.0.113.9 is inside network 203.0.113.8/29 of peer "prefecture""#,
    );
}

#[test]
fn bad_mac() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\nmac = \"52:54:00:12:34\"\n",
        5,
        7,
        r#"asset "cs02" mac "52:54:00:12:34" is not a MAC address"#,
    );
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\nmac = \"52-54-00-12-34-56\"\n",
        5,
        7,
        "is not a MAC address",
    );
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\nmac = \"01:00:5e:00:00:01\"\n",
        5,
        7,
        r#"asset "cs02" mac 01:00:5e:00:00:01 is a multicast address"#,
    );
    let config = parse_ok(&with_prelude(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\nmac = \"52:54:00:AB:cd:0F\"\n",
    ));
    assert_eq!(
        config.asset("cs02").unwrap().mac,
        Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f])
    );
}

#[test]
fn bad_asset_name() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs 02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\n",
        2,
        8,
        r#"invalid asset name "cs 02""#,
    );
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs:x\"\naddresses = [\"192.0.2.11\"]\n",
        3,
        8,
        r#"invalid role name "cs:x""#,
    );
}

#[test]
fn unknown_hours_in_asset() {
    assert_invalid_tail(
        "[[asset]]\nname = \"term-02\"\nrole = \"terminal\"\naddresses = [\"192.0.2.22\"]\nhours = \"busines\"\n\n[hours.business]\nweekdays = \"09:00-17:30\"\n",
        5,
        9,
        r#"unknown hours "busines" in asset "term-02" (known hours: business)"#,
    );
    assert_invalid_tail(
        "[[asset]]\nname = \"term-02\"\nrole = \"terminal\"\naddresses = [\"192.0.2.22\"]\nhours = \"business\"\n",
        5,
        9,
        r#"unknown hours "business" in asset "term-02" (no hours are defined)"#,
    );
}

// ---- [peer.NAME] -----------------------------------------------------------------

#[test]
fn bad_cidr_syntax() {
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"198.51.100.0/33\"]\n",
        2,
        13,
        r#"peer "city" network "198.51.100.0/33" is not a valid CIDR network"#,
    );
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"198.51.100.7\"]\n",
        2,
        13,
        r#"peer "city" network "198.51.100.7" has no prefix length; write 198.51.100.7/32 for a single host"#,
    );
}

#[test]
fn peer_network_with_host_bits() {
    assert_invalid(
        "[interfaces]\nlan = [\"a\"]\nwan = [\"b\"]\n[peer.prefecture]\nnetworks = [\"192.0.2.1/28\"]\n",
        5,
        13,
        "192.0.2.1/28 has host bits set; did you mean 192.0.2.0/28?",
    );
}

#[test]
fn peer_network_unusable() {
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"0.0.0.0/0\"]\n",
        2,
        13,
        r#"peer "city" network 0.0.0.0/0 matches every address"#,
    );
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"127.0.0.0/8\"]\n",
        2,
        13,
        "includes loopback addresses",
    );
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"ff00::/8\"]\n",
        2,
        13,
        "is a multicast network",
    );
}

#[test]
fn peer_without_networks() {
    assert_invalid_tail(
        "[peer.city]\nnetworks = []\n",
        2,
        12,
        r#"peer "city" has no networks"#,
    );
}

#[test]
fn peers_overlap() {
    // jlis (written later in the prelude) already has 203.0.113.16/28; "city" comes
    // later still and is reported, naming both peers.
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"198.51.100.0/24\", \"203.0.113.0/24\"]\n",
        2,
        32,
        r#"peer "city" network 203.0.113.0/24 overlaps network 203.0.113.8/29 of peer "prefecture""#,
    );
}

#[test]
fn peer_overlaps_itself() {
    assert_invalid_tail(
        "[peer.city]\nnetworks = [\"198.51.100.0/24\", \"198.51.100.64/26\"]\n",
        2,
        32,
        r#"peer "city" network 198.51.100.64/26 overlaps its own network 198.51.100.0/24"#,
    );
}

// ---- [[allow]] -------------------------------------------------------------------

#[test]
fn unknown_peer_in_rule() {
    let text = with_prelude(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n\n[[allow]]\nfrom = \"peer:prefectur\"\nto = \"role:cs\"\nports = [\"tcp/8443\"]\n",
    );
    let line = PRELUDE.lines().count() + 7;
    let err = Config::parse_str(&text, Path::new("configs/x.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            r#"configs/x.toml:{line}:8: unknown peer "prefectur" in rule 2 (known peers: jlis, prefecture)"#
        )
    );
}

#[test]
fn unknown_role_in_rule() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminals\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        r#"unknown role "terminals" in rule 1 (known roles: cs, terminal)"#,
    );
}

#[test]
fn unknown_asset_in_rule() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs02\"\nports = [\"tcp/443\"]\n",
        3,
        6,
        r#"unknown asset "cs02" in rule 1 (known assets: cs01, term-01)"#,
    );
}

#[test]
fn bad_endpoint_syntax() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"terminal\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        r#"rule 1: invalid endpoint "terminal" (expected role:NAME, asset:NAME or peer:NAME)"#,
    );
    assert_invalid_tail(
        "[[allow]]\nfrom = \"host:term-01\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        r#"invalid endpoint "host:term-01""#,
    );
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:\"\nports = [\"tcp/443\"]\n",
        3,
        6,
        r#"rule 1: endpoint "asset:" has an empty name"#,
    );
}

#[test]
fn bad_port_syntax() {
    for (port, message) in [
        (
            "sctp/22",
            r#"unknown protocol "sctp" in "sctp/22" (expected tcp, udp or icmp)"#,
        ),
        ("tcp/0", r#"port 0 is not a valid port in "tcp/0""#),
        (
            "tcp/8100-8000",
            r#"port range "tcp/8100-8000" is reversed (8100 > 8000)"#,
        ),
        (
            "tcp/https",
            r#""https" is not a port number in "tcp/https""#,
        ),
        (
            "udp/70000",
            r#"port 70000 is out of range (1-65535) in "udp/70000""#,
        ),
        ("tcp/80-", r#""" is not a port number in "tcp/80-""#),
        ("tcp", r#""tcp" needs a port number"#),
        ("icmp/8", r#"icmp takes no port number in "icmp/8""#),
        ("TCP/443", r#"unknown protocol "TCP""#),
    ] {
        assert_invalid_tail(
            &format!(
                "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\nports = [\"tcp/443\", \"{port}\"]\n"
            ),
            4,
            21,
            &format!("rule 1: {message}"),
        );
    }
}

#[test]
fn empty_ports() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\nports = []\n",
        4,
        9,
        "rule 1 has an empty ports list",
    );
}

#[test]
fn missing_ports() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\n",
        1,
        1,
        "missing field `ports`",
    );
}

#[test]
fn duplicate_rule_name() {
    assert_invalid_tail(
        "[[allow]]\nname = \"a\"\nfrom = \"role:terminal\"\nto = \"asset:cs01\"\nports = [\"icmp\"]\n[[allow]]\nname = \"a\"\nfrom = \"role:cs\"\nto = \"peer:jlis\"\nports = [\"icmp\"]\n",
        7,
        8,
        r#"duplicate rule name "a" in rule 2 (rule 1 has it too)"#,
    );
}

#[test]
fn never_matches_same_asset_both_ends() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"asset:cs01\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        r#"rule 1 can never match: from and to are both asset:cs01, which is the single host "cs01""#,
    );
}

#[test]
fn never_matches_identical_single_host_sets() {
    // Different endpoints, one host: role:cs has cs01 only.
    assert_invalid_tail(
        "[[allow]]\nfrom = \"role:cs\"\nto = \"asset:cs01\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        r#"rule 1 can never match: from role:cs and to asset:cs01 are the same single host "cs01""#,
    );
    // role → same role is fine once the role has two hosts.
    parse_ok(&with_prelude(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\n[[allow]]\nfrom = \"role:cs\"\nto = \"role:cs\"\nports = [\"tcp/443\"]\n",
    ));
}

#[test]
fn never_matches_peer_to_peer() {
    assert_invalid_tail(
        "[[allow]]\nfrom = \"peer:prefecture\"\nto = \"peer:jlis\"\nports = [\"tcp/443\"]\n",
        2,
        8,
        "rule 1 can never match: peer:prefecture → peer:jlis is traffic between two peers, which never crosses the segment",
    );
}

#[test]
fn never_matches_without_common_address_family() {
    assert_invalid_tail(
        "[peer.v6only]\nnetworks = [\"2001:db8:ee::/48\"]\n[[allow]]\nfrom = \"role:terminal\"\nto = \"peer:v6only\"\nports = [\"tcp/443\"]\n",
        4,
        8,
        "rule 1 can never match: from role:terminal is IPv4-only and to peer:v6only is IPv6-only, so they share no address family",
    );
    // cs01 has both families, so it can reach an IPv6-only peer.
    parse_ok(&with_prelude(
        "[peer.v6only]\nnetworks = [\"2001:db8:ee::/48\"]\n[[allow]]\nfrom = \"role:cs\"\nto = \"peer:v6only\"\nports = [\"tcp/443\"]\n",
    ));
}

// ---- [hours.NAME] ----------------------------------------------------------------

#[test]
fn hours_are_parsed_and_checked() {
    let config = parse_ok(&with_prelude(
        "[hours.business]\nweekdays = \"09:00-17:30\"\nextend_until = \"19:30\"\nholidays = \"jp\"\nclosed = [\"2026-08-14\", \"2028-02-29\"]\n",
    ));
    let hours = &config.hours["business"];
    assert_eq!(hours.weekdays.to_string(), "09:00-17:30");
    assert_eq!(hours.weekdays.start.minutes(), 9 * 60);
    assert_eq!(
        hours.extend_until.map(|t| t.to_string()).as_deref(),
        Some("19:30")
    );
    assert_eq!(hours.holidays.as_deref(), Some("jp"));
    assert_eq!(hours.closed, ["2026-08-14", "2028-02-29"]);

    let base = "[hours.business]\n";
    assert_invalid_tail(
        &format!("{base}weekdays = \"9:00-17:30\"\n"),
        2,
        12,
        r#"hours.business weekdays "9:00-17:30" is not HH:MM-HH:MM"#,
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"17:30-09:00\"\n"),
        2,
        12,
        "ends before it starts",
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"09:00-17:30\"\nextend_until = \"17:00\"\n"),
        3,
        16,
        "hours.business extend_until 17:00 is not later than the weekday end 17:30",
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"09:00-17:30\"\nextend_until = \"24:00\"\n"),
        3,
        16,
        r#"hours.business extend_until "24:00" is not HH:MM"#,
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"09:00-17:30\"\nholidays = \"us\"\n"),
        3,
        12,
        r#"unknown holiday calendar "us" in hours.business (only "jp" is supported)"#,
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"09:00-17:30\"\nclosed = [\"2026-08-14\", \"2026-02-29\"]\n"),
        3,
        25,
        r#"hours.business closed date "2026-02-29" is not a valid YYYY-MM-DD date"#,
    );
    assert_invalid_tail(
        &format!("{base}weekdays = \"09:00-17:30\"\nclosed = [\"2026-8-14\"]\n"),
        3,
        11,
        "is not a valid YYYY-MM-DD date",
    );
}

// ---- [triggers] ------------------------------------------------------------------

#[test]
fn triggers_are_parsed_and_checked() {
    let config = parse_ok(&with_prelude(
        "[triggers]\nviolations = { count = 5, within = \"60s\", action = \"isolate\" }\nunknown_source = \"isolate\"\n",
    ));
    assert_eq!(
        config.triggers.violations,
        Some(ViolationTrigger {
            count: 5,
            within: Duration::from_secs(60),
            action: TriggerAction::Isolate
        })
    );
    assert_eq!(config.triggers.unknown_source, TriggerAction::Isolate);

    assert_invalid_tail(
        "[triggers]\nviolations = { count = 0, within = \"60s\", action = \"alert\" }\n",
        2,
        24,
        "triggers.violations count must be at least 1",
    );
    assert_invalid_tail(
        "[triggers]\nviolations = { count = 5, within = \"60\", action = \"alert\" }\n",
        2,
        36,
        r#"invalid duration "60" for triggers.violations within"#,
    );
    assert_invalid_tail(
        "[triggers]\nviolations = { count = 5, within = \"0m\", action = \"alert\" }\n",
        2,
        36,
        "triggers.violations within must be longer than 0s",
    );
    assert_invalid_tail(
        "[triggers]\nviolations = { count = 5, within = \"5m\", action = \"block\" }\n",
        2,
        51,
        r#"unknown trigger action "block" (expected "isolate" or "alert")"#,
    );
    assert_invalid_tail(
        "[triggers]\nunknown_source = \"drop\"\n",
        2,
        18,
        r#"unknown trigger action "drop""#,
    );
}

// ---- [[recipient]] and [notify] --------------------------------------------------

const NOTIFY: &str = "[notify]\nmunicipality = \"宮若市\"\nsender = \"宮若市 <juki@city.example.jp>\"\nsmtp = { host = \"127.0.0.1\" }\n";

#[test]
fn recipient_without_channel() {
    assert_invalid_tail(
        &format!("{NOTIFY}[[recipient]]\nname = \"福岡県\"\nkind = \"prefecture\"\n"),
        5,
        1,
        r#"recipient "福岡県" has no email or webhook (at least one channel is required)"#,
    );
}

#[test]
fn recipients_are_checked() {
    let config = parse_ok(&with_prelude(&format!(
        "{NOTIFY}[[recipient]]\nname = \"福岡県\"\nkind = \"prefecture\"\nemail = \"juki@pref.example.jp\"\n[[recipient]]\nname = \"J-LIS\"\nkind = \"jlis\"\nwebhook = \"https://jlis.example.jp/hooks/sekisho\"\n"
    )));
    assert_eq!(config.recipients.len(), 2);
    assert_eq!(config.recipients[1].kind, RecipientKind::Jlis);
    let smtp = config.notify.as_ref().unwrap().smtp.as_ref().unwrap();
    assert_eq!((smtp.port, smtp.starttls), (25, Starttls::Opportunistic));

    assert_invalid_tail(
        &format!("{NOTIFY}[[recipient]]\nname = \"x\"\nkind = \"mayor\"\nemail = \"a@b.jp\"\n"),
        7,
        8,
        r#"unknown recipient kind "mayor" (expected "prefecture", "jlis", "security_chief", "identity_manager" or "department")"#,
    );
    assert_invalid_tail(
        &format!(
            "{NOTIFY}[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nemail = \"juki at pref\"\n"
        ),
        8,
        9,
        r#"recipient "x" email "juki at pref" is not an email address"#,
    );
    assert_invalid_tail(
        &format!("{NOTIFY}[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nwebhook = \"ftp://x\"\n"),
        8,
        11,
        r#"recipient "x" webhook "ftp://x" is not an http:// or https:// URL"#,
    );
    assert_invalid_tail(
        &format!(
            "{NOTIFY}[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nemail = \"a@b.jp\"\n[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nemail = \"c@b.jp\"\n"
        ),
        10,
        8,
        r#"duplicate recipient name "x" (first defined on line"#,
    );
    assert_invalid_tail(
        "[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nwebhook = \"https://x.example.jp/\"\n",
        1,
        1,
        r#"[[recipient]] needs a [notify] section"#,
    );
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"a@b.jp\"\n[[recipient]]\nname = \"x\"\nkind = \"jlis\"\nemail = \"c@b.jp\"\n",
        7,
        9,
        r#"recipient "x" has an email address but [notify] has no smtp server"#,
    );
}

#[test]
fn notify_is_checked() {
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"宮若市\"\n",
        3,
        10,
        r#"notify sender "宮若市" has no email address"#,
    );
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"a@b.jp\"\nsmtp = { host = \"h\", starttls = \"always\" }\n",
        4,
        33,
        r#"unknown starttls "always" (expected "off", "opportunistic" or "required")"#,
    );
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"a@b.jp\"\nsmtp = { host = \"h\", user = \"u\" }\n",
        4,
        29,
        "smtp user is set but password_file is not",
    );
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"a@b.jp\"\nsyslog = \"127.0.0.1:514\"\n",
        4,
        10,
        r#"invalid syslog target "127.0.0.1:514""#,
    );
    assert_invalid_tail(
        "[notify]\nmunicipality = \"m\"\nsender = \"a@b.jp\"\nwebhook_secret_file = \"webhook.key\"\n",
        4,
        23,
        r#"webhook_secret_file "webhook.key" must be an absolute path"#,
    );
}

// ---- [history] -------------------------------------------------------------------

#[test]
fn history_is_parsed_and_checked() {
    let config = parse_ok(&with_prelude(
        "[history]\nretention = \"90d\"\nipfix = \"192.0.2.50:4739\"\n",
    ));
    assert_eq!(config.history.retention, Retention::Days(90));
    assert_eq!(
        config.history.ipfix,
        Some("192.0.2.50:4739".parse().unwrap())
    );
    assert_eq!(
        parse_ok(&with_prelude("[history]\nretention = \"5y\"\n"))
            .history
            .retention,
        Retention::Years(5)
    );
    for bad in ["7", "0y", "7 years", "-1d", "y"] {
        assert_invalid_tail(
            &format!("[history]\nretention = \"{bad}\"\n"),
            2,
            13,
            &format!("invalid retention {bad:?}"),
        );
    }
    assert_invalid_tail(
        "[history]\nipfix = \"collector\"\n",
        2,
        9,
        r#"invalid ipfix collector "collector" (expected ADDRESS:PORT"#,
    );
}

// ---- positions, Display, round trips ---------------------------------------------

#[test]
fn columns_count_characters_not_bytes() {
    assert_invalid_tail(
        "[[asset]]\nname = \"cs02\"\nrole = \"cs\"\naddresses = [\"192.0.2.11\"]\ndepartment = \"市民課\"; x = 1\n",
        5,
        19,
        "",
    );
}

#[test]
fn read_error_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/sekisho.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/sekisho.toml: "),
        "{err}"
    );
}

#[test]
fn port_spec_display_round_trips() {
    for text in ["tcp/443", "tcp/8000-8100", "udp/123", "udp/1-65535", "icmp"] {
        let spec: PortSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.to_string().parse::<PortSpec>().unwrap(), spec);
    }
    assert_eq!(
        "tcp/443-443".parse::<PortSpec>().unwrap().to_string(),
        "tcp/443"
    );
}

#[test]
fn endpoint_display_round_trips() {
    for text in ["role:terminal", "asset:cs01", "peer:prefecture"] {
        let endpoint: Endpoint = text.parse().unwrap();
        assert_eq!(endpoint.to_string(), text);
    }
    assert_eq!(
        "asset:term-01".parse::<Endpoint>().unwrap(),
        Endpoint::Asset("term-01".into())
    );
}

#[test]
fn keywords_display_round_trip() {
    for mode in [Mode::Enforce, Mode::Monitor] {
        assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
    }
    for kind in RecipientKind::ALL {
        assert_eq!(kind.to_string().parse::<RecipientKind>().unwrap(), kind);
    }
    for retention in [Retention::Years(7), Retention::Days(90)] {
        assert_eq!(
            retention.to_string().parse::<Retention>().unwrap(),
            retention
        );
    }
    for target in ["udp://127.0.0.1:514", "tcp://[::1]:601", "unix:///dev/log"] {
        assert_eq!(target.parse::<SyslogTarget>().unwrap().to_string(), target);
    }
}

#[test]
fn demo_config_has_the_documented_topology() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.interfaces.lan, ["lan-cs", "lan-term"]);
    assert_eq!(config.interfaces.wan, ["wan0"]);
    let cs01 = config.asset("cs01").unwrap();
    assert_eq!(
        cs01.addresses,
        [
            "192.0.2.10".parse::<IpAddr>().unwrap(),
            "2001:db8:10::a".parse().unwrap()
        ]
    );
    assert_eq!(cs01.mac, Some([0x02, 0, 0, 0, 0, 0x0a]));
    assert_eq!(config.assets_of_role("terminal").count(), 2);
    assert_eq!(config.rules.len(), 4);
    assert!(config.rules.iter().all(|rule| rule.name.is_some()));
    assert_eq!(
        config.peer("prefecture").unwrap().networks,
        [
            "203.0.113.8/29".parse::<IpNet>().unwrap(),
            "2001:db8:ff::8/125".parse().unwrap()
        ]
    );
}

#[test]
fn every_file_in_configs_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("demo.toml"))
            && files.iter().any(|f| f.ends_with("sekisho.example.toml")),
        "configs/ is missing demo.toml or sekisho.example.toml: {files:?}"
    );
    for file in &files {
        if let Err(err) = Config::load(file) {
            panic!("{err}");
        }
    }
}

// ---- scale -----------------------------------------------------------------------

/// `n` assets `a{i}` (role `r{i/100}`, one unique 10.x.y.z address each), peers `p0`..`p9`
/// with networks 203.0.{p}.0/24, and `n` rules `asset:a{i}` → `peer:p{i%10}`.
fn large_register(n: usize) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("[interfaces]\nlan = [\"lan0\"]\nwan = [\"wan0\"]\n\n");
    for p in 0..10 {
        writeln!(text, "[peer.p{p}]\nnetworks = [\"203.0.{p}.0/24\"]\n").unwrap();
    }
    for i in 0..n {
        writeln!(
            text,
            "[[asset]]\nname = \"a{i}\"\nrole = \"r{}\"\naddresses = [\"10.{}.{}.{}\"]\n",
            i / 100,
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        )
        .unwrap();
    }
    for i in 0..n {
        writeln!(
            text,
            "[[allow]]\nfrom = \"asset:a{i}\"\nto = \"peer:p{}\"\nports = [\"tcp/{}\"]\n",
            i % 10,
            1000 + i % 60000
        )
        .unwrap();
    }
    text
}

/// Not a timing assertion, but with 20,000 assets and 20,000 rules a validator that
/// scans every asset per rule (or per asset) would take minutes in a debug build.
#[test]
fn validates_a_large_register_quickly_enough() {
    let n = 20_000;
    let config = parse_ok(&large_register(n));
    assert_eq!(config.assets.len(), n);
    assert_eq!(config.peers.len(), 10);
    assert_eq!(config.rules.len(), n);
    assert_eq!(config.roles().len(), n / 100);
    assert_eq!(config.assets_of_role("r42").count(), 100);
    assert_eq!(
        config.asset("a12345").map(|a| a.addresses.clone()),
        Some(vec!["10.0.48.57".parse::<IpAddr>().unwrap()])
    );
    let last = &config.rules[n - 1];
    assert_eq!(last.from, Endpoint::Asset(format!("a{}", n - 1)));
    assert_eq!(last.to, Endpoint::Peer("p9".into()));
    assert_eq!(
        last.ports,
        [PortSpec::Tcp {
            first: 20_999,
            last: 20_999
        }]
    );
    assert_eq!(last.line, config.text.lines().count() - 4);
}

#[test]
fn management_interfaces_are_optional_and_never_on_the_segment() {
    let config =
        parse_ok("[interfaces]\nlan = [\"eth1\"]\nwan = [\"eth0\"]\nmanagement = [\"mgmt0\"]\n");
    assert_eq!(config.interfaces.management, ["mgmt0"]);
    assert!(
        parse_ok("[interfaces]\nlan = [\"eth1\"]\nwan = [\"eth0\"]\n")
            .interfaces
            .management
            .is_empty()
    );
    assert_invalid(
        "[interfaces]\nlan = [\"eth1\"]\nwan = [\"eth0\"]\nmanagement = [\"eth1\"]\n",
        4,
        15,
        r#"interface "eth1" is in both interfaces.lan and interfaces.management"#,
    );
}

#[test]
fn a_peer_probe_must_lie_in_the_peer_networks() {
    let base = "[interfaces]\nlan = [\"eth1\"]\nwan = [\"eth0\"]\n[peer.pref]\nnetworks = [\"192.0.2.0/28\"]\n";
    let ok = parse_ok(&format!("{base}probe = \"192.0.2.10:443\"\n"));
    assert_eq!(ok.peers[0].probe, Some("192.0.2.10:443".parse().unwrap()));
    assert_invalid(
        &format!("{base}probe = \"198.51.100.1:443\"\n"),
        6,
        9,
        "peer \"pref\" probe 198.51.100.1:443 is outside its networks (192.0.2.0/28)",
    );
    assert_invalid(
        &format!("{base}probe = \"nowhere\"\n"),
        6,
        9,
        "invalid probe",
    );
}
