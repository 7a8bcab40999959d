//! The syslog channel: one RFC 5424 message per notice, for a SIEM.
//!
//! ```text
//! <129>1 2026-04-01T09:00:00.123456Z gw01 sekisho 4242 emergency-stop [sekisho@32473 key="OP-000042-1a2b3c4d/syslog" reference="OP-000042" recipient="福岡県"] BOM【緊急】… {"event":"emergency-stop",…}
//! ```
//! - PRI: facility local0 (16); severity alert (1) for `emergency-stop`, notice (5) for
//!   everything else;
//! - TIMESTAMP: UTC with six fractional digits (RFC 5424's maximum); HOSTNAME from the
//!   kernel, APP-NAME `sekisho`, PROCID the daemon's pid, MSGID the event;
//! - structured data `sekisho@32473` with `key`, `reference` (when there is one),
//!   `recipient` and `drill="yes"` for drills (32473 is the documentation enterprise number
//!   of RFC 5612, until sekisho has its own);
//! - MSG: a UTF-8 byte-order mark (RFC 5424 §6.4), the subject, a space and the JSON
//!   document on one line. Control characters in the subject become spaces, so a message
//!   is always one line.
//!
//! Transports: `udp://` one datagram; `tcp://` one connection per message with
//! octet-counting framing (`LEN SP MESSAGE`, RFC 6587 §3.4.1); `unix://` a datagram to the
//! socket (like `/dev/log`), or, should the socket be a stream socket, octet-counted as for
//! TCP. The send succeeds when the whole message was written.

use std::io::Write;
use std::net::Shutdown;
use std::net::SocketAddr;
use std::net::TcpStream;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::path::Path;

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;

use super::Notice;
use super::NotifyError;
use super::SEND_TIMEOUT;
use crate::config::SyslogTarget;

/// Facility local0.
pub const FACILITY: u8 = 16;
/// Severity of `emergency-stop`.
pub const SEVERITY_ALERT: u8 = 1;
/// Severity of every other event.
pub const SEVERITY_NOTICE: u8 = 5;
/// The structured-data element's id.
pub const SD_ID: &str = "sekisho@32473";
pub const APP_NAME: &str = "sekisho";

/// The RFC 5424 message for `notice`, sent at `at` from `hostname` by process `pid`.
pub fn format(notice: &Notice, at: Timestamp, hostname: &str, pid: u32) -> String {
    let severity = if notice.event == "emergency-stop" {
        SEVERITY_ALERT
    } else {
        SEVERITY_NOTICE
    };
    let pri = u16::from(FACILITY) * 8 + u16::from(severity);
    let timestamp = DateTimePrinter::new()
        .precision(Some(6))
        .timestamp_to_string(&at);
    let mut sd = format!("[{SD_ID} key=\"{}\"", sd_escape(&notice.key));
    if let Some(reference) = &notice.reference {
        sd.push_str(&format!(" reference=\"{}\"", sd_escape(reference)));
    }
    sd.push_str(&format!(" recipient=\"{}\"", sd_escape(&notice.recipient)));
    if notice.drill {
        sd.push_str(" drill=\"yes\"");
    }
    sd.push(']');
    let subject: String = notice
        .subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "<{pri}>1 {timestamp} {} {APP_NAME} {pid} {} {sd} \u{feff}{subject} {}",
        header_field(hostname, 255),
        header_field(&notice.event, 32),
        notice.document,
    )
}

/// A header field: printable US-ASCII, at most `max` characters, or `-` (NILVALUE).
fn header_field(value: &str, max: usize) -> String {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// PARAM-VALUE escaping: `"`, `\` and `]` get a backslash.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The configured target and this host's name.
pub(crate) struct SyslogChannel {
    target: SyslogTarget,
    hostname: String,
}

impl SyslogChannel {
    pub(crate) fn new(target: SyslogTarget) -> SyslogChannel {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        SyslogChannel { target, hostname }
    }

    pub(crate) fn target(&self) -> &SyslogTarget {
        &self.target
    }

    pub(crate) fn send(&self, notice: &Notice, at: Timestamp) -> Result<(), NotifyError> {
        let message = format(notice, at, &self.hostname, std::process::id());
        let result = match &self.target {
            SyslogTarget::Udp(addr) => send_udp(*addr, message.as_bytes()),
            SyslogTarget::Tcp(addr) => send_tcp(*addr, message.as_bytes()),
            SyslogTarget::Unix(path) => send_unix(path, message.as_bytes()),
        };
        result.map_err(|source| NotifyError::Syslog {
            key: notice.key.clone(),
            target: self.target.to_string(),
            source,
        })
    }
}

fn send_udp(addr: SocketAddr, message: &[u8]) -> std::io::Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = socket.send_to(message, addr)?;
    check_whole(sent, message.len())
}

fn send_tcp(addr: SocketAddr, message: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, SEND_TIMEOUT)?;
    stream.set_write_timeout(Some(SEND_TIMEOUT))?;
    write_framed(&mut stream, message)?;
    stream.shutdown(Shutdown::Write)
}

fn send_unix(path: &Path, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    match socket.send_to(message, path) {
        Ok(sent) => check_whole(sent, message.len()),
        Err(err) if err.raw_os_error() == Some(libc::EPROTOTYPE) => {
            let mut stream = UnixStream::connect(path)?;
            stream.set_write_timeout(Some(SEND_TIMEOUT))?;
            write_framed(&mut stream, message)?;
            stream.shutdown(Shutdown::Write)
        }
        Err(err) => Err(err),
    }
}

/// Octet-counting framing (RFC 6587 §3.4.1): `LEN SP MESSAGE`.
fn write_framed(stream: &mut impl Write, message: &[u8]) -> std::io::Result<()> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message);
    stream.write_all(&frame)?;
    stream.flush()
}

fn check_whole(sent: usize, len: usize) -> std::io::Result<()> {
    if sent == len {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "only {sent} of {len} bytes were sent"
        )))
    }
}
