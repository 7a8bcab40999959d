//! The write-ahead log: records as they arrive, checksummed, until they are sealed.
//!
//! `<root>/wal/<hour>.wal` holds the records that *arrived* in the UTC hour starting at
//! `<hour>` (Unix seconds, e.g. `1795392000.wal`). A file is the magic `SKSHWAL1` followed
//! by frames `[len: u32 LE][crc32c(payload): u32 LE][payload]`.
//!
//! # Invariants
//! - Only appended to. The one exception is recovery: [`WalWriter::open`] cuts a torn tail
//!   (an incomplete or checksum-failing last frame left by a crash), and a failed write or
//!   sync cuts the file back to what was last synced, so that a frame on disk is never
//!   followed by garbage and then by more frames.
//! - A bad frame followed by a good one is not a torn tail: [`read`] reports it as
//!   [`WalError::Corrupt`] and nothing here ever truncates or rewrites such a file.
//! - [`read`] may run in another process while the daemon appends: it reads up to the
//!   length the file had when it was opened, and a partial last frame is a torn tail.
//!
//! # Payload
//! All integers little-endian; `V` is unsigned LEB128; strings are `V(len + 1)` then the
//! UTF-8 bytes, `V(0)` for `None`; addresses are a tag byte `0` (none), `4` + 4 bytes or
//! `6` + 16 bytes.
//!
//! | field | encoding |
//! |---|---|
//! | event, verdict, reason, proto, tcp_flags, close | 1 byte each (enums in [`event_code`] order, close 0 = none) |
//! | first_us | i64 |
//! | last_us | `V(zigzag(last_us − first_us))` |
//! | generation, rule | `V` |
//! | sport, dport | u16 |
//! | src, dst | address |
//! | rule_name, interface, src_asset, src_role, src_peer, dst_asset, dst_role, dst_peer | string |
//! | packets_fwd, bytes_fwd, packets_rev, bytes_rev, lost | `V` |
//!
//! The file magic versions this layout: a change means `SKSHWAL2`.

use std::collections::HashSet;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::Close;
use super::record::Event;
use super::record::Record;
use super::record::Verdict;

/// The first bytes of every WAL file.
pub const MAGIC: &[u8; 8] = b"SKSHWAL1";

/// The directory under the history root.
pub const DIR: &str = "wal";

/// Frame header: length and checksum.
const FRAME_HEADER: usize = 8;

/// The shortest payload [`encode`] writes (every option `None`, every number small). A
/// shorter "frame" is not one, which keeps runs of zeros from looking like records.
pub const MIN_PAYLOAD: usize = 36;

/// The longest payload accepted: far beyond any real record (names come from the policy),
/// small enough that a corrupted length cannot make a reader allocate much.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Writes are batched up to this size; [`WalWriter::flush_and_sync`] writes the rest.
const WRITE_BUFFER: usize = 256 * 1024;

/// Why the write-ahead log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot open write-ahead log {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read write-ahead log {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write write-ahead log {}; {} events since the last sync were discarded",
        .path.display(), .lost.events()
    )]
    Write {
        path: PathBuf,
        /// What was appended since the last successful sync and is not in the file.
        lost: Lost,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot cut the torn tail of write-ahead log {} at byte {offset}", .path.display())]
    Truncate {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "write-ahead log {} could not be cut back after a failed write; reopen it",
        .path.display()
    )]
    Unusable { path: PathBuf },
    #[error("{} is not a sekisho write-ahead log (bad magic)", .path.display())]
    BadMagic { path: PathBuf },
    #[error(
        "write-ahead log {} is corrupt at byte {offset}: a bad frame is followed by good ones",
        .path.display()
    )]
    Corrupt { path: PathBuf, offset: u64 },
    #[error(
        "write-ahead log {} has a record at byte {offset} that does not decode: {what}",
        .path.display()
    )]
    BadRecord {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("record payload does not decode: {what}")]
    Malformed { what: &'static str },
    #[error("record of {len} bytes is larger than the limit of {MAX_PAYLOAD}")]
    TooLarge { len: usize },
    #[error("cannot list write-ahead log directory {}", .path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Events appended but not durably written: what a gap record has to account for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Records other than gaps.
    pub records: u64,
    /// The `lost` counts of gap records among them (already counted once as unrecorded).
    pub in_gaps: u64,
    /// Earliest `first_us` and latest `last_us` of those records.
    pub first_us: i64,
    pub last_us: i64,
}

impl Lost {
    /// How many events a gap record for this should report.
    pub fn events(&self) -> u64 {
        self.records + self.in_gaps
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.in_gaps == 0
    }

    /// Accounts for one more record.
    pub fn add(&mut self, rec: &Record) {
        let empty = self.is_empty();
        if rec.event == Event::Gap {
            self.in_gaps += rec.lost;
        } else {
            self.records += 1;
        }
        self.span(rec.first_us, rec.last_us, empty);
    }

    /// Adds everything in `other`.
    pub fn merge(&mut self, other: &Lost) {
        if other.is_empty() {
            return;
        }
        let empty = self.is_empty();
        self.records += other.records;
        self.in_gaps += other.in_gaps;
        self.span(other.first_us, other.last_us, empty);
    }

    fn span(&mut self, first_us: i64, last_us: i64, empty: bool) {
        if empty {
            self.first_us = first_us;
            self.last_us = last_us;
        } else {
            self.first_us = self.first_us.min(first_us);
            self.last_us = self.last_us.max(last_us);
        }
    }
}

/// Appends the payload encoding of `rec` (module documentation) to `buf`.
pub fn encode(rec: &Record, buf: &mut Vec<u8>) {
    buf.reserve(MIN_PAYLOAD + 64);
    buf.extend_from_slice(&[
        event_code(rec.event),
        verdict_code(rec.verdict),
        rec.reason,
        rec.proto,
        rec.tcp_flags,
        close_code(rec.close),
    ]);
    buf.extend_from_slice(&rec.first_us.to_le_bytes());
    let delta = rec.last_us.wrapping_sub(rec.first_us);
    put_varint(buf, ((delta << 1) ^ (delta >> 63)) as u64);
    put_varint(buf, u64::from(rec.generation));
    put_varint(buf, u64::from(rec.rule));
    buf.extend_from_slice(&rec.sport.to_le_bytes());
    buf.extend_from_slice(&rec.dport.to_le_bytes());
    put_addr(buf, rec.src);
    put_addr(buf, rec.dst);
    for s in [
        &rec.rule_name,
        &rec.interface,
        &rec.src_asset,
        &rec.src_role,
        &rec.src_peer,
        &rec.dst_asset,
        &rec.dst_role,
        &rec.dst_peer,
    ] {
        match s {
            None => buf.push(0),
            Some(s) => {
                put_varint(buf, s.len() as u64 + 1);
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }
    for n in [
        rec.packets_fwd,
        rec.bytes_fwd,
        rec.packets_rev,
        rec.bytes_rev,
        rec.lost,
    ] {
        put_varint(buf, n);
    }
}

/// Decodes one payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Record, WalError> {
    decode_with(payload, &mut Interner::default()).map_err(|what| WalError::Malformed { what })
}

/// Stable on-disk codes, independent of the enums' declaration order.
pub const fn event_code(event: Event) -> u8 {
    match event {
        Event::Start => 0,
        Event::End => 1,
        Event::Gap => 2,
    }
}

const fn verdict_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::Monitor => 2,
    }
}

const fn close_code(close: Option<Close>) -> u8 {
    match close {
        None => 0,
        Some(Close::Fin) => 1,
        Some(Close::Rst) => 2,
        Some(Close::Idle) => 3,
        Some(Close::Cut) => 4,
        Some(Close::Evicted) => 5,
    }
}

fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn put_addr(buf: &mut Vec<u8>, addr: Option<IpAddr>) {
    match addr {
        None => buf.push(0),
        Some(IpAddr::V4(a)) => {
            buf.push(4);
            buf.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            buf.push(6);
            buf.extend_from_slice(&a.octets());
        }
    }
}

/// Shares one `Arc<str>` per distinct name while reading a file: an hour of records repeats
/// the same few hundred asset, role and interface names millions of times.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.0.get(s) {
            return Arc::clone(found);
        }
        let new: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&new));
        new
    }
}

/// A cursor over a payload; errors name the field that did not decode.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err(what);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], &'static str> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, &'static str> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(what)
    }

    fn varint_u32(&mut self, what: &'static str) -> Result<u32, &'static str> {
        u32::try_from(self.varint(what)?).map_err(|_| what)
    }

    fn addr(&mut self, what: &'static str) -> Result<Option<IpAddr>, &'static str> {
        match self.u8(what)? {
            0 => Ok(None),
            4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?)))),
            6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?)))),
            _ => Err(what),
        }
    }

    fn string(
        &mut self,
        interner: &mut Interner,
        what: &'static str,
    ) -> Result<Option<Arc<str>>, &'static str> {
        let n = self.varint(what)?;
        if n == 0 {
            return Ok(None);
        }
        let len = usize::try_from(n - 1).map_err(|_| what)?;
        let bytes = self.take(len, what)?;
        let s = std::str::from_utf8(bytes).map_err(|_| what)?;
        Ok(Some(interner.get(s)))
    }
}

fn decode_with(payload: &[u8], interner: &mut Interner) -> Result<Record, &'static str> {
    let mut c = Cursor(payload);
    let [event, verdict, reason, proto, tcp_flags, close] = c.array::<6>("header")?;
    let event = match event {
        0 => Event::Start,
        1 => Event::End,
        2 => Event::Gap,
        _ => return Err("event"),
    };
    let verdict = match verdict {
        0 => Verdict::Allow,
        1 => Verdict::Deny,
        2 => Verdict::Monitor,
        _ => return Err("verdict"),
    };
    let close = match close {
        0 => None,
        1 => Some(Close::Fin),
        2 => Some(Close::Rst),
        3 => Some(Close::Idle),
        4 => Some(Close::Cut),
        5 => Some(Close::Evicted),
        _ => return Err("close"),
    };
    let first_us = i64::from_le_bytes(c.array("first_us")?);
    let zigzag = c.varint("last_us")?;
    let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
    let last_us = first_us.wrapping_add(delta);
    let generation = c.varint_u32("generation")?;
    let rule = c.varint_u32("rule")?;
    let sport = u16::from_le_bytes(c.array("sport")?);
    let dport = u16::from_le_bytes(c.array("dport")?);
    let src = c.addr("src")?;
    let dst = c.addr("dst")?;
    let rule_name = c.string(interner, "rule_name")?;
    let interface = c.string(interner, "interface")?;
    let src_asset = c.string(interner, "src_asset")?;
    let src_role = c.string(interner, "src_role")?;
    let src_peer = c.string(interner, "src_peer")?;
    let dst_asset = c.string(interner, "dst_asset")?;
    let dst_role = c.string(interner, "dst_role")?;
    let dst_peer = c.string(interner, "dst_peer")?;
    let packets_fwd = c.varint("packets_fwd")?;
    let bytes_fwd = c.varint("bytes_fwd")?;
    let packets_rev = c.varint("packets_rev")?;
    let bytes_rev = c.varint("bytes_rev")?;
    let lost = c.varint("lost")?;
    if !c.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Record {
        event,
        first_us,
        last_us,
        verdict,
        reason,
        generation,
        rule,
        rule_name,
        interface,
        proto,
        src,
        dst,
        sport,
        dport,
        src_asset,
        src_role,
        src_peer,
        dst_asset,
        dst_role,
        dst_peer,
        packets_fwd,
        bytes_fwd,
        packets_rev,
        bytes_rev,
        tcp_flags,
        close,
        lost,
    })
}

/// `first_us` and `last_us` of a payload, without decoding the rest (for statistics).
pub(crate) fn times(payload: &[u8]) -> Option<(i64, i64)> {
    let mut c = Cursor(payload.get(6..)?);
    let first_us = i64::from_le_bytes(c.array("first_us").ok()?);
    let zigzag = c.varint("last_us").ok()?;
    let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
    Some((first_us, first_us.wrapping_add(delta)))
}

/// The path of the WAL file for the hour starting at `hour` (Unix seconds).
pub fn path_for(dir: &Path, hour: i64) -> PathBuf {
    dir.join(format!("{hour}.wal"))
}

/// The WAL files under `<root>/wal/`, as (hour start in Unix seconds, path), oldest first.
/// Other files there (e.g. a file set aside by hand) are ignored.
pub fn list(root: &Path) -> Result<Vec<(i64, PathBuf)>, WalError> {
    let dir = root.join(DIR);
    let err = |source| WalError::List {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(hour) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        found.push((hour, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// What [`read`] found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalContents {
    pub records: Vec<Record>,
    /// Bytes up to the end of the last good frame (0 when even the magic is incomplete).
    pub valid_len: u64,
    /// Bytes after `valid_len`: a frame being written, or one a crash interrupted.
    pub torn_tail: bool,
}

/// Reads every record of a WAL file, stopping at a torn tail (module documentation).
pub fn read(path: &Path) -> Result<WalContents, WalError> {
    let mut records = Vec::new();
    let mut interner = Interner::default();
    let scanned = scan(path, |offset, payload| {
        let rec = decode_with(payload, &mut interner).map_err(|what| WalError::BadRecord {
            path: path.to_owned(),
            offset,
            what,
        })?;
        records.push(rec);
        Ok(())
    })?;
    Ok(WalContents {
        records,
        valid_len: scanned.valid_len,
        torn_tail: scanned.torn_tail,
    })
}

/// What [`scan`] found: frames, not records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    pub valid_len: u64,
    pub torn_tail: bool,
    pub frames: u64,
}

/// Walks the good frames of a file, calling `each(offset, payload)` for every one, up to a
/// torn tail. Reads at most the length the file had when it was opened, so that frames a
/// concurrent writer appends meanwhile cannot make a partial frame look like corruption.
pub(crate) fn scan(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), WalError>,
) -> Result<Scanned, WalError> {
    let read_err = |source| WalError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let limit = file.metadata().map_err(read_err)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file.take(limit));
    let mut magic = [0u8; 8];
    let n = read_full(&mut r, &mut magic).map_err(read_err)?;
    if magic[..n] != MAGIC[..n] {
        return Err(WalError::BadMagic {
            path: path.to_owned(),
        });
    }
    if n < MAGIC.len() {
        return Ok(Scanned {
            valid_len: 0,
            torn_tail: n > 0,
            frames: 0,
        });
    }
    let mut offset = MAGIC.len() as u64;
    let mut frames = 0;
    let mut payload = Vec::with_capacity(256);
    loop {
        let mut header = [0u8; FRAME_HEADER];
        let n = read_full(&mut r, &mut header).map_err(read_err)?;
        if n == 0 {
            return Ok(Scanned {
                valid_len: offset,
                torn_tail: false,
                frames,
            });
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let good = n == FRAME_HEADER
            && (MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            && {
                payload.resize(len, 0);
                read_full(&mut r, &mut payload).map_err(read_err)? == len
            }
            && crc32c::crc32c(&payload) == crc;
        if !good {
            // Torn tail, unless a good frame follows: then the file was damaged in place.
            return match find_frame_after(path, offset, limit)? {
                Some(_) => Err(WalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                }),
                None => Ok(Scanned {
                    valid_len: offset,
                    torn_tail: true,
                    frames,
                }),
            };
        }
        each(offset, &payload)?;
        frames += 1;
        offset += (FRAME_HEADER + len) as u64;
    }
}

/// The offset of the first frame that starts after `bad` (before `limit`), checks out and
/// decodes. Only runs when a frame is bad, so it can afford to try every byte.
fn find_frame_after(path: &Path, bad: u64, limit: u64) -> Result<Option<u64>, WalError> {
    let read_err = |source| WalError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(bad)).map_err(read_err)?;
    let mut rest = Vec::new();
    file.take(limit.saturating_sub(bad))
        .read_to_end(&mut rest)
        .map_err(read_err)?;
    let mut interner = Interner::default();
    for start in 1..rest.len().saturating_sub(FRAME_HEADER + MIN_PAYLOAD - 1) {
        let h = &rest[start..start + FRAME_HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || start + FRAME_HEADER + len > rest.len() {
            continue;
        }
        let payload = &rest[start + FRAME_HEADER..start + FRAME_HEADER + len];
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if crc32c::crc32c(payload) == crc && decode_with(payload, &mut interner).is_ok() {
            return Ok(Some(bad + start as u64));
        }
    }
    Ok(None)
}

/// Reads until `buf` is full or the end of the input; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Appends to the WAL file of one hour. Writes are buffered; nothing is durable before
/// [`WalWriter::flush_and_sync`].
#[derive(Debug)]
pub struct WalWriter {
    path: PathBuf,
    hour: i64,
    file: File,
    buf: Vec<u8>,
    /// File length known to be on disk (fdatasync returned).
    synced_len: u64,
    /// File length written so far, not counting `buf`.
    written_len: u64,
    /// What was appended since the last successful sync.
    pending: Lost,
    pending_frames: u64,
    /// Records made durable by this writer.
    records_synced: u64,
    /// A failed write could not be cut back: the file may end in garbage.
    unusable: bool,
    /// The file held no record when opened: this writer appends every record it will hold.
    fresh: bool,
}

impl WalWriter {
    /// Opens (or creates) the file for `hour` in `dir`, creating `dir` if needed, and cuts a
    /// torn tail. A file corrupt in the middle is refused and left as it is.
    pub fn open(dir: &Path, hour: i64) -> Result<WalWriter, WalError> {
        let path = path_for(dir, hour);
        let open_err = |source| WalError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let valid_len = if len == 0 {
            0
        } else {
            let scanned = scan(&path, |_, _| Ok(()))?;
            if scanned.torn_tail {
                tracing::warn!(
                    path = %path.display(),
                    cut = len - scanned.valid_len,
                    at = scanned.valid_len,
                    "cutting the torn tail of a write-ahead log (interrupted write)"
                );
                file.set_len(scanned.valid_len)
                    .and_then(|()| file.sync_data())
                    .map_err(|source| WalError::Truncate {
                        path: path.clone(),
                        offset: scanned.valid_len,
                        source,
                    })?;
            }
            scanned.valid_len
        };
        let mut writer = WalWriter {
            path: path.clone(),
            hour,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER + MAX_PAYLOAD / 16),
            synced_len: valid_len,
            written_len: valid_len,
            pending: Lost::default(),
            pending_frames: 0,
            records_synced: 0,
            unusable: false,
            fresh: valid_len == 0,
        };
        if valid_len == 0 {
            // A new file: the magic and the directory entry are made durable now, so that a
            // crash never leaves a synced record in a file that does not exist.
            writer.buf.extend_from_slice(MAGIC);
            writer.flush_and_sync()?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(open_err)?;
        }
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hour (Unix seconds of its start) this file holds.
    pub fn hour(&self) -> i64 {
        self.hour
    }

    /// Whether the file was created by this writer, so that every record in it came
    /// through [`WalWriter::append`].
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Adds one record to the buffer, writing the buffer out when it is full. On error the
    /// file is cut back to its last synced length; [`WalError::Write`] says what was lost.
    pub fn append(&mut self, rec: &Record) -> Result<(), WalError> {
        if self.unusable {
            return Err(WalError::Unusable {
                path: self.path.clone(),
            });
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME_HEADER]);
        encode(rec, &mut self.buf);
        let len = self.buf.len() - start - FRAME_HEADER;
        if len > MAX_PAYLOAD {
            self.buf.truncate(start);
            return Err(WalError::TooLarge { len });
        }
        let crc = crc32c::crc32c(&self.buf[start + FRAME_HEADER..]);
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.pending.add(rec);
        self.pending_frames += 1;
        if self.buf.len() >= WRITE_BUFFER {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes the buffer and fdatasyncs the file: everything appended so far is durable
    /// when this returns `Ok`.
    pub fn flush_and_sync(&mut self) -> Result<(), WalError> {
        if self.unusable {
            return Err(WalError::Unusable {
                path: self.path.clone(),
            });
        }
        self.write_buffer()?;
        if self.written_len == self.synced_len {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fdatasync the kernel may have dropped the dirty pages: what
            // follows the last good sync is unknown, so it is cut and counted as lost.
            return Err(self.fail(e));
        }
        self.synced_len = self.written_len;
        self.records_synced += self.pending_frames;
        self.pending = Lost::default();
        self.pending_frames = 0;
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            return Err(self.fail(e));
        }
        self.written_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Cuts the file back to its synced length after a failed write or sync.
    fn fail(&mut self, source: std::io::Error) -> WalError {
        let lost = std::mem::take(&mut self.pending);
        self.pending_frames = 0;
        self.buf.clear();
        if let Err(e) = self.file.set_len(self.synced_len) {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot cut a write-ahead log back after a failed write"
            );
            self.unusable = true;
        }
        self.written_len = self.synced_len;
        if self.synced_len == 0 {
            // Even the magic was lost; the file needs reopening to get it back.
            self.unusable = true;
        }
        WalError::Write {
            path: self.path.clone(),
            lost,
            source,
        }
    }

    /// File length including what is still buffered.
    pub fn bytes_written(&self) -> u64 {
        self.written_len + self.buf.len() as u64
    }

    /// Bytes appended but not yet fdatasynced.
    pub fn unsynced_bytes(&self) -> u64 {
        self.bytes_written() - self.synced_len
    }

    /// Records (frames) this writer has made durable.
    pub fn records_synced(&self) -> u64 {
        self.records_synced
    }

    /// What is appended but not yet durable.
    pub fn pending(&self) -> Lost {
        self.pending
    }

    /// False after a failed write that could not be cut back: reopen the file.
    pub fn is_usable(&self) -> bool {
        !self.unusable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn full_record() -> Record {
        Record {
            event: Event::End,
            first_us: 1_795_392_000_123_456,
            last_us: 1_795_392_061_000_001,
            verdict: Verdict::Monitor,
            reason: 3,
            generation: 4_000_000_000,
            rule: 17,
            rule_name: Some("juki-to-cs".into()),
            interface: Some("lan0".into()),
            proto: 6,
            src: Some("10.1.2.3".parse().unwrap()),
            dst: Some("2001:db8::1".parse().unwrap()),
            sport: 51_234,
            dport: 443,
            src_asset: Some("cs01".into()),
            src_role: Some("端末".into()),
            src_peer: None,
            dst_asset: None,
            dst_role: Some("".into()),
            dst_peer: Some("prefecture".into()),
            packets_fwd: 12,
            bytes_fwd: u64::MAX,
            packets_rev: 0,
            bytes_rev: 1 << 40,
            tcp_flags: 0x1b,
            close: Some(Close::Evicted),
            lost: 7,
        }
    }

    /// A sequence of distinct records, with every enum value used.
    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                event: Event::ALL[i % 3],
                verdict: Verdict::ALL[i % 3],
                close: [None, Some(Close::ALL[i % 5])][i % 2],
                first_us: 1_795_392_000_000_000 + i as i64,
                last_us: 1_795_392_000_000_000 - (i as i64) * 1000,
                sport: i as u16,
                src: Some(IpAddr::V4(Ipv4Addr::from(i as u32))),
                src_asset: Some(format!("asset{i}").into()),
                ..full_record()
            })
            .collect()
    }

    fn write_file(path: &Path, recs: &[Record]) -> Vec<u64> {
        let mut bytes = MAGIC.to_vec();
        let mut offsets = Vec::new();
        for rec in recs {
            offsets.push(bytes.len() as u64);
            let mut payload = Vec::new();
            encode(rec, &mut payload);
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        std::fs::write(path, bytes).unwrap();
        offsets
    }

    #[test]
    fn every_field_round_trips() {
        let full = full_record();
        let mut buf = Vec::new();
        encode(&full, &mut buf);
        assert_eq!(decode(&buf).unwrap(), full);
        // Extremes: times far apart in both directions, the largest numbers, IPv4/none.
        let extreme = Record {
            first_us: i64::MAX,
            last_us: i64::MIN,
            generation: u32::MAX,
            rule: u32::MAX,
            src: None,
            dst: Some("255.255.255.255".parse().unwrap()),
            packets_fwd: u64::MAX,
            lost: u64::MAX,
            ..full.clone()
        };
        let mut buf = Vec::new();
        encode(&extreme, &mut buf);
        assert_eq!(decode(&buf).unwrap(), extreme);
        for rec in records(30) {
            let mut buf = Vec::new();
            encode(&rec, &mut buf);
            assert_eq!(decode(&buf).unwrap(), rec);
        }
    }

    #[test]
    fn the_smallest_record_is_min_payload() {
        let mut buf = Vec::new();
        encode(&Record::default(), &mut buf);
        assert_eq!(buf.len(), MIN_PAYLOAD);
        assert_eq!(decode(&buf).unwrap(), Record::default());
    }

    /// An allowed IPv4 TCP flow's end record with the usual names: 92 bytes of payload (51
    /// of them the names), 100 with the frame header.
    #[test]
    fn typical_record_size() {
        let typical = Record {
            event: Event::End,
            first_us: 1_795_446_060_000_000,
            last_us: 1_795_446_072_345_678,
            verdict: Verdict::Allow,
            reason: 1,
            generation: 42,
            rule: 3,
            rule_name: Some("juki-to-cs".into()),
            interface: Some("lan0".into()),
            proto: 6,
            src: Some("10.1.2.3".parse().unwrap()),
            dst: Some("10.9.0.1".parse().unwrap()),
            sport: 51_234,
            dport: 443,
            src_asset: Some("cs01".into()),
            src_role: Some("terminal".into()),
            dst_asset: Some("juki-server".into()),
            dst_role: Some("server".into()),
            packets_fwd: 12,
            bytes_fwd: 2_345,
            packets_rev: 10,
            bytes_rev: 15_000,
            tcp_flags: 0x1b,
            close: Some(Close::Fin),
            ..Record::default()
        };
        let mut buf = Vec::new();
        encode(&typical, &mut buf);
        assert_eq!(buf.len(), 92);
    }

    #[test]
    fn malformed_payloads_are_named() {
        let mut buf = Vec::new();
        encode(&full_record(), &mut buf);
        let err = |bytes: &[u8]| match decode(bytes) {
            Err(WalError::Malformed { what }) => what,
            other => panic!("expected Malformed, got {other:?}"),
        };
        assert_eq!(err(&buf[..buf.len() - 1]), "lost");
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(err(&long), "trailing bytes");
        let mut bad = buf.clone();
        bad[0] = 9;
        assert_eq!(err(&bad), "event");
        let mut bad = buf.clone();
        bad[5] = 6;
        assert_eq!(err(&bad), "close");
    }

    #[test]
    fn writer_appends_and_reader_reads_back() {
        let tmp = TempDir::new("wal-rw");
        let recs = records(1000);
        let mut w = WalWriter::open(tmp.path(), 1_795_392_000).unwrap();
        assert_eq!(w.path(), tmp.join("1795392000.wal"));
        for rec in &recs[..600] {
            w.append(rec).unwrap();
        }
        w.flush_and_sync().unwrap();
        assert_eq!(w.unsynced_bytes(), 0);
        drop(w);
        // Reopening appends after what is there.
        let mut w = WalWriter::open(tmp.path(), 1_795_392_000).unwrap();
        for rec in &recs[600..] {
            w.append(rec).unwrap();
        }
        assert!(w.unsynced_bytes() > 0);
        w.flush_and_sync().unwrap();
        assert_eq!(w.records_synced(), 400);
        let got = read(w.path()).unwrap();
        assert_eq!(got.records, recs);
        assert!(!got.torn_tail);
        assert_eq!(got.valid_len, w.bytes_written());
    }

    #[test]
    fn list_sorts_hours_and_ignores_other_files() {
        let tmp = TempDir::new("wal-list");
        let dir = tmp.join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "1795395600.wal",
            "1795392000.wal",
            "x.wal",
            "1795392000.wal.bad",
            ".wal",
        ] {
            std::fs::write(dir.join(name), MAGIC).unwrap();
        }
        assert_eq!(
            list(tmp.path()).unwrap(),
            vec![
                (1_795_392_000, dir.join("1795392000.wal")),
                (1_795_395_600, dir.join("1795395600.wal")),
            ]
        );
    }

    #[test]
    fn torn_tail_is_tolerated_and_cut_on_reopen() {
        let tmp = TempDir::new("wal-torn");
        let path = path_for(tmp.path(), 0);
        let recs = records(5);
        write_file(&path, &recs);
        let whole = std::fs::read(&path).unwrap();
        // Every possible cut inside the last frame, and garbage (zeros) after a good frame.
        let last = write_file(&tmp.join("probe"), &recs)[4] as usize;
        for cut in last + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let got = read(&path).unwrap();
            assert_eq!(got.records, recs[..4], "cut at {cut}");
            assert!(got.torn_tail);
            assert_eq!(got.valid_len, last as u64);
        }
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &zeros).unwrap();
        let got = read(&path).unwrap();
        assert_eq!((got.records.len(), got.torn_tail), (5, true));

        // Reopen cuts the tail, and new records follow the good ones.
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let mut w = WalWriter::open(tmp.path(), 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
        w.append(&recs[4]).unwrap();
        w.flush_and_sync().unwrap();
        let got = read(&path).unwrap();
        assert_eq!(got.records, recs);
        assert!(!got.torn_tail);

        // A torn magic is an empty file.
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        let got = read(&path).unwrap();
        assert_eq!(
            (got.records.len(), got.valid_len, got.torn_tail),
            (0, 0, true)
        );
        drop(WalWriter::open(tmp.path(), 0).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
    }

    #[test]
    fn bit_flip_in_the_middle_is_corruption_with_its_offset() {
        let tmp = TempDir::new("wal-flip");
        let path = path_for(tmp.path(), 0);
        let offsets = write_file(&path, &records(10));
        let whole = std::fs::read(&path).unwrap();
        // A flipped bit in the payload, the checksum and the length of frame 3.
        for at in [offsets[3] + 20, offsets[3] + 5, offsets[3] + 1] {
            let mut bad = whole.clone();
            bad[at as usize] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            match read(&path) {
                Err(WalError::Corrupt { path: p, offset }) => {
                    assert_eq!((p, offset), (path.clone(), offsets[3]), "flip at {at}")
                }
                other => panic!("flip at {at}: expected Corrupt, got {other:?}"),
            }
            // And the writer refuses to touch it.
            assert!(matches!(
                WalWriter::open(tmp.path(), 0),
                Err(WalError::Corrupt { .. })
            ));
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
        std::fs::write(&path, b"SKSHWAL9").unwrap();
        assert!(matches!(read(&path), Err(WalError::BadMagic { .. })));
    }

    #[test]
    fn a_reader_sees_a_prefix_while_the_writer_appends() {
        let tmp = TempDir::new("wal-live");
        let recs = records(20_000);
        let mut w = WalWriter::open(tmp.path(), 0).unwrap();
        let path = w.path().to_owned();
        let reader = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 20_000 {
                let got = read(&path).unwrap();
                assert!(got.records.len() >= seen);
                seen = got.records.len();
            }
        });
        for (i, rec) in recs.iter().enumerate() {
            w.append(rec).unwrap();
            if i % 1000 == 999 {
                w.flush_and_sync().unwrap();
            }
        }
        w.flush_and_sync().unwrap();
        reader.join().unwrap();
    }

    #[test]
    fn lost_accounts_records_and_earlier_gaps() {
        let mut lost = Lost::default();
        lost.add(&Record {
            first_us: 50,
            last_us: 70,
            ..Record::default()
        });
        lost.add(&Record::gap(10, 20, 5));
        assert_eq!(
            lost,
            Lost {
                records: 1,
                in_gaps: 5,
                first_us: 10,
                last_us: 70
            }
        );
        assert_eq!(lost.events(), 6);
    }

    /// `cargo test --release -p sekisho history::wal::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        let tmp = TempDir::new("wal-bench");
        let recs = records(1000);
        let mut w = WalWriter::open(tmp.path(), 0).unwrap();
        let n = 5_000_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            w.append(&recs[i % recs.len()]).unwrap();
            if i % 1_000_000 == 999_999 {
                w.flush_and_sync().unwrap();
            }
        }
        w.flush_and_sync().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{n} records, {} bytes ({:.1} bytes/record), {:.2} s: {:.0} records/s",
            w.bytes_written(),
            w.bytes_written() as f64 / n as f64,
            secs,
            n as f64 / secs
        );
    }
}
