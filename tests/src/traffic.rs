//! Real traffic between the hosts of a [`Topology`]: echo servers, one-shot probes and a
//! long-running TCP stream check.
//!
//! Invariants: every probe is bounded by the timeout it is given (keep it ≤ 1 s) and sends a
//! bounded number of packets; every server and stream check owns its threads and joins them
//! on `Drop`, so nothing outlives the value. Sockets are created inside the source host's
//! namespace with [`in_netns`](crate::in_netns) and then used from ordinary threads. Echo payloads carry a
//! token unique to the process and call, so a stray late reply is never mistaken for a
//! fresh one.

use std::fmt;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike as _};

use crate::netns::command_in;
use crate::topology::{Host, Topology};

/// How often server and stream threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);
/// At most this many echo connections are served at once per [`TcpServer`].
const MAX_CONNECTIONS: usize = 64;

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// A payload unique to this process and call.
fn token() -> Vec<u8> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("sekisho-testbed {} {n} {nanos}\n", std::process::id()).into_bytes()
}

/// Time left until `deadline`, at least 1 ms (socket timeouts must not be zero).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn dual_stack(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

// --- Servers ----------------------------------------------------------------------------

/// A TCP echo server listening inside one host's namespace; dropping it stops it.
#[derive(Debug)]
pub struct TcpServer {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `[::]:port` in `host`, which accepts IPv4 and IPv6 alike (port 0: any).
    pub fn start(topo: &Topology, host: Host, port: u16) -> Result<TcpServer> {
        TcpServer::bind(topo, host, dual_stack(port))
    }

    /// Listens on `addr` in `host`.
    pub fn bind(topo: &Topology, host: Host, addr: SocketAddr) -> Result<TcpServer> {
        let listener = topo
            .in_ns(host, || -> io::Result<TcpListener> {
                let listener = TcpListener::bind(addr)?;
                // accept(2) honours SO_RCVTIMEO: the loop wakes up to look at its stop flag.
                setsockopt(&listener, sockopt::ReceiveTimeout, &poll_timeval())?;
                Ok(listener)
            })
            .with_context(|| format!("tcp server on {addr} in {host}"))?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let thread = thread::Builder::new()
            .name(format!("tcp echo {host} {local}"))
            .spawn({
                let (stop, accepted) = (stop.clone(), accepted.clone());
                move || accept_loop(&listener, &stop, &accepted)
            })?;
        Ok(TcpServer {
            local,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the actual port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn poll_timeval() -> TimeVal {
    TimeVal::milliseconds(POLL.as_millis() as i64)
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, accepted: &AtomicU64) {
    thread::scope(|scope| {
        let mut handlers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    handlers.retain(|h: &thread::ScopedJoinHandle<'_, ()>| !h.is_finished());
                    if handlers.len() < MAX_CONNECTIONS {
                        handlers.push(scope.spawn(move || echo_connection(stream, stop)));
                    }
                }
                Err(e) if is_timeout(&e) => {}
                // E.g. ECONNABORTED or EMFILE: back off, keep serving.
                Err(_) => thread::sleep(POLL),
            }
        }
        // Leaving the scope joins the handlers, which see the stop flag within POLL.
    });
}

fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(POLL)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

/// A UDP echo server inside one host's namespace; dropping it stops it.
#[derive(Debug)]
pub struct UdpServer {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Serves `[::]:port` in `host`, IPv4 and IPv6 alike (port 0: any).
    ///
    /// Replies leave with the source address the routing table picks, so on the
    /// multi-homed gateway a client should address the gateway's address on its own
    /// segment ([`Host::v4_from`]).
    pub fn start(topo: &Topology, host: Host, port: u16) -> Result<UdpServer> {
        UdpServer::bind(topo, host, dual_stack(port))
    }

    /// Serves `addr` in `host`.
    pub fn bind(topo: &Topology, host: Host, addr: SocketAddr) -> Result<UdpServer> {
        let socket = topo
            .in_ns(host, || UdpSocket::bind(addr))
            .with_context(|| format!("udp server on {addr} in {host}"))?;
        socket.set_read_timeout(Some(POLL))?;
        let local = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let thread = thread::Builder::new()
            .name(format!("udp echo {host} {local}"))
            .spawn({
                let (stop, received) = (stop.clone(), received.clone());
                move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv_from(&mut buf) {
                            Ok((n, peer)) => {
                                received.fetch_add(1, Ordering::Relaxed);
                                let _ = socket.send_to(&buf[..n], peer);
                            }
                            Err(e) if is_timeout(&e) => {}
                            // E.g. ECONNREFUSED from an earlier reply's ICMP error.
                            Err(_) => {}
                        }
                    }
                }
            })?;
        Ok(UdpServer {
            local,
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The port it is bound to.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// How many datagrams it has received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// --- One-shot probes --------------------------------------------------------------------

/// The outcome of a TCP connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The handshake completed.
    Connected,
    /// Refused: a TCP RST, or an ICMP port unreachable (`ECONNREFUSED`).
    Refused,
    /// An ICMP host/network unreachable or administratively prohibited came back, or there
    /// is no route (`EHOSTUNREACH`, `ENETUNREACH`).
    Unreachable,
    /// No answer within the timeout: the SYN (or its answer) was silently dropped.
    TimedOut,
    /// Some other error.
    Failed(ErrorKind),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Connected => f.write_str("connected"),
            Probe::Refused => f.write_str("refused"),
            Probe::Unreachable => f.write_str("unreachable"),
            Probe::TimedOut => f.write_str("timed out"),
            Probe::Failed(kind) => write!(f, "failed ({kind})"),
        }
    }
}

impl Probe {
    fn from_error(e: &io::Error) -> Probe {
        match (e.kind(), e.raw_os_error()) {
            (ErrorKind::ConnectionRefused, _) => Probe::Refused,
            (ErrorKind::TimedOut | ErrorKind::WouldBlock, _) => Probe::TimedOut,
            (ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable, _) => Probe::Unreachable,
            (_, Some(libc::EHOSTUNREACH | libc::ENETUNREACH)) => Probe::Unreachable,
            (kind, _) => Probe::Failed(kind),
        }
    }
}

/// Tries a TCP handshake from `from` to `to` and reports how it went (at most `timeout`).
pub fn tcp_probe(topo: &Topology, from: Host, to: SocketAddr, timeout: Duration) -> Probe {
    topo.in_ns(from, || match TcpStream::connect_timeout(&to, timeout) {
        Ok(_) => Probe::Connected,
        Err(e) => Probe::from_error(&e),
    })
}

/// Connects from `from` to the echo server at `to`, sends a unique token and checks that
/// it comes back intact, all within `timeout`; the error says which step failed.
pub fn tcp_echo(topo: &Topology, from: Host, to: SocketAddr, timeout: Duration) -> Result<()> {
    topo.in_ns(from, || tcp_echo_here(to, timeout))
        .with_context(|| format!("tcp echo {from} -> {to}"))
}

fn tcp_echo_here(to: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&to, timeout)
        .map_err(|e| anyhow::anyhow!("connect: {} ({e})", Probe::from_error(&e)))?;
    stream.set_nodelay(true)?;
    let token = token();
    stream.set_write_timeout(Some(left(deadline)))?;
    stream.write_all(&token).context("send")?;
    let mut echo = vec![0u8; token.len()];
    let mut got = 0;
    while got < echo.len() {
        if Instant::now() >= deadline {
            bail!(
                "only {got} of {} bytes echoed within {timeout:?}",
                token.len()
            );
        }
        stream.set_read_timeout(Some(left(deadline)))?;
        match stream.read(&mut echo[got..]) {
            Ok(0) => bail!("connection closed after {got} of {} bytes", token.len()),
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("receive"),
        }
    }
    ensure!(echo == token, "echo differs from what was sent");
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// Sends a unique datagram from `from` to the echo server at `to` (re-sent up to three
/// times) and reports whether it came back within `timeout`.
pub fn udp_echo(topo: &Topology, from: Host, to: SocketAddr, timeout: Duration) -> bool {
    topo.in_ns(from, || udp_echo_here(to, timeout))
        .unwrap_or(false)
}

fn udp_echo_here(to: SocketAddr, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    // Not connected: the multi-homed gateway may answer from another of its addresses.
    let socket = UdpSocket::bind(unspecified_like(to))?;
    let token = token();
    let mut buf = vec![0u8; token.len() + 1];
    let resend_every = timeout / 4;
    for _ in 0..4 {
        let _ = socket.send_to(&token, to);
        let round_end = (Instant::now() + resend_every).min(deadline);
        while Instant::now() < round_end {
            socket.set_read_timeout(Some(left(round_end)))?;
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if buf[..n] == token[..] => return Ok(true),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(false)
}

/// Sends one ICMP(v6) echo request from `from` to `to` with iputils `ping` and reports
/// whether the reply came within `timeout`.
pub fn ping(topo: &Topology, from: Host, to: IpAddr, timeout: Duration) -> bool {
    ping_in(topo.ns(from), to, timeout)
}

/// [`ping`] from the network namespace named `ns`.
pub(crate) fn ping_in(ns: &str, to: IpAddr, timeout: Duration) -> bool {
    let Ok(mut cmd) = command_in(ns, "ping") else {
        return false;
    };
    let wait = format!("{:.3}", timeout.as_secs_f64().max(0.001));
    let family = if to.is_ipv6() { "-6" } else { "-4" };
    cmd.env("LC_ALL", "C")
        .args([family, "-n", "-q", "-c", "1", "-W", &wait, &to.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// --- Long-running stream ----------------------------------------------------------------

/// A snapshot of a [`StreamCheck`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Messages (8 bytes each) written.
    pub sent: u64,
    /// Messages echoed back, in order and intact.
    pub echoed: u64,
    /// I/O errors seen (each side stops at its first one; the connection is not reopened).
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// The longest time between two consecutive echoes (or from the start to the first).
    pub max_gap: Duration,
    /// Time since the last echo (or the start) at the moment of the snapshot.
    pub since_last_echo: Duration,
    /// Time since the check started.
    pub elapsed: Duration,
}

impl StreamStats {
    /// True when no error occurred and every message sent came back.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.sent == self.echoed
    }
}

#[derive(Debug)]
struct StreamShared {
    /// Tells the writer to stop.
    stop: AtomicBool,
    /// Set right before the connection is shut down: the reader's EOF is expected.
    closing: AtomicBool,
    sent: AtomicU64,
    echoed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// (last echo, longest gap)
    gaps: Mutex<(Instant, Duration)>,
    started: Instant,
}

impl StreamShared {
    fn fail(&self, what: &str, e: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// One TCP connection that sends a small numbered message every few milliseconds to an
/// echo server and counts the echoes, until stopped — to watch an established flow survive
/// (or not) while the gateway changes underneath it.
#[derive(Debug)]
pub struct StreamCheck {
    shared: Arc<StreamShared>,
    stream: TcpStream,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

impl StreamCheck {
    /// Connects from `from` to the echo server at `to` (within 1 s) and starts sending one
    /// message every 5 ms.
    pub fn start(topo: &Topology, from: Host, to: SocketAddr) -> Result<StreamCheck> {
        StreamCheck::start_with_interval(topo, from, to, Duration::from_millis(5))
    }

    /// Like [`StreamCheck::start`], with one message every `interval`.
    pub fn start_with_interval(
        topo: &Topology,
        from: Host,
        to: SocketAddr,
        interval: Duration,
    ) -> Result<StreamCheck> {
        let stream = topo
            .in_ns(from, || {
                TcpStream::connect_timeout(&to, Duration::from_secs(1))
            })
            .map_err(|e| {
                anyhow::anyhow!("stream check {from} -> {to}: {}", Probe::from_error(&e))
            })?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(POLL))?;
        let now = Instant::now();
        let shared = Arc::new(StreamShared {
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            echoed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            gaps: Mutex::new((now, Duration::ZERO)),
            started: now,
        });
        let writer = thread::Builder::new()
            .name(format!("stream {from}->{to} tx"))
            .spawn({
                let (shared, stream) = (shared.clone(), stream.try_clone()?);
                move || stream_writer(stream, &shared, interval)
            })?;
        let reader = thread::Builder::new()
            .name(format!("stream {from}->{to} rx"))
            .spawn({
                let (shared, stream) = (shared.clone(), stream.try_clone()?);
                move || stream_reader(stream, &shared)
            });
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                let _ = writer.join();
                return Err(e.into());
            }
        };
        Ok(StreamCheck {
            shared,
            stream,
            writer: Some(writer),
            reader: Some(reader),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        let s = &self.shared;
        let (last, max_gap) = *s.gaps.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        StreamStats {
            sent: s.sent.load(Ordering::Relaxed),
            echoed: s.echoed.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            first_error: s
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            max_gap,
            since_last_echo: now - last,
            elapsed: now - s.started,
        }
    }

    /// Stops sending, gives in-flight messages up to 200 ms to come back, closes the
    /// connection and returns the final counters.
    pub fn stop(mut self) -> StreamStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        // Stop the writer first, then give the last echoes a moment to come back.
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline
            && self.shared.errors.load(Ordering::Relaxed) == 0
            && self.shared.echoed.load(Ordering::Relaxed) < self.shared.sent.load(Ordering::Relaxed)
        {
            thread::sleep(Duration::from_millis(2));
        }
        self.shared.closing.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for StreamCheck {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn stream_writer(mut stream: TcpStream, shared: &StreamShared, interval: Duration) {
    let mut seq: u64 = 0;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let msg = seq.to_be_bytes();
        let mut off = 0;
        while off < msg.len() {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            match stream.write(&msg[off..]) {
                Ok(0) => return shared.fail("send", "connection closed"),
                Ok(n) => off += n,
                // Send buffer full (the path stalls): keep the message, try again.
                Err(e) if is_timeout(&e) => {}
                Err(e) => return shared.fail("send", e),
            }
        }
        seq += 1;
        shared.sent.store(seq, Ordering::Relaxed);
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn stream_reader(mut stream: TcpStream, shared: &StreamShared) {
    let mut expected: u64 = 0;
    let mut frame = [0u8; 8];
    let mut have = 0;
    loop {
        match stream.read(&mut frame[have..]) {
            Ok(0) => {
                if !shared.closing.load(Ordering::Relaxed) {
                    shared.fail("receive", "connection closed by peer");
                }
                return;
            }
            Ok(n) => have += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                if !shared.closing.load(Ordering::Relaxed) {
                    shared.fail("receive", e);
                }
                return;
            }
        }
        if have < frame.len() {
            continue;
        }
        have = 0;
        let seq = u64::from_be_bytes(frame);
        if seq != expected {
            return shared.fail("receive", format!("echo #{seq} where #{expected} was due"));
        }
        expected += 1;
        let now = Instant::now();
        {
            let mut gaps = shared.gaps.lock().unwrap_or_else(PoisonError::into_inner);
            gaps.1 = gaps.1.max(now - gaps.0);
            gaps.0 = now;
        }
        shared.echoed.store(expected, Ordering::Relaxed);
    }
}
