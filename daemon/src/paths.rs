//! Every filesystem location sekisho uses, in one place.

/// The one configuration file.
pub const CONFIG_FILE: &str = "/etc/sekisho/sekisho.toml";
/// State database, operation history and traffic history.
pub const STATE_DIR: &str = "/var/lib/sekisho";
/// The control socket between `sekishod` and `sekishoctl`.
pub const CONTROL_SOCKET: &str = "/run/sekisho/control.sock";
/// Where the eBPF programs, links and maps are pinned.
pub const BPF_PIN_DIR: &str = "/sys/fs/bpf/sekisho";
/// Default Prometheus listen address.
pub const METRICS_LISTEN: &str = "127.0.0.1:9807";
/// Environment variable that names a control socket other than the default.
pub const SOCKET_ENV: &str = "SEKISHO_SOCKET";
