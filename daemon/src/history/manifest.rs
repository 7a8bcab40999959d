//! The manifest: every sealed segment, in order, chained by SHA-256.
//!
//! `<root>/manifest.jsonl` holds one JSON [`Entry`] per line; `<root>/manifest.head` holds
//! one line, `<seq> <hash>\n`, naming the last entry (`0 000…0` before the first). Paths
//! in entries are relative to the root (`segments/2026/11/23/15.parquet`).
//!
//! # Invariants
//! - Append-only, `seq` from 1 without gaps. Each entry records the segment file's SHA-256
//!   and size, its `prev` (the `hash` of the entry before it, 64 zeros for entry 1) and its
//!   own `hash` (below). A segment is live from its `sealed` entry until a `removed` entry
//!   names it (retention); only then may its file be gone.
//! - [`append`] returns once the line is fdatasynced and the head file names it (temporary
//!   file, fsync, rename, directory fsync). The head is what makes removing the *newest*
//!   entries detectable: the chain alone cannot tell a short manifest from a shortened one.
//!   A crash between the two leaves the head one entry behind, which is accepted and
//!   repaired by the next append; a head ahead of the manifest, or naming a different hash,
//!   makes [`append`] refuse, so that new entries cannot paper over removed ones.
//! - A line without its final newline is an append in progress (or one a crash cut): [`read`]
//!   skips it, [`append`] cuts it before writing.
//!
//! # The hash
//! `hash` is the lowercase hex SHA-256 of, in this order: S(prev), S(tag), U(seq), S(kind),
//! S(path), U(records), U(bytes), I(min_first_us), I(max_last_us), I(min_last_us),
//! I(max_first_us), S(sha256), I(sealed_at_us), OU(removes), OS(reason) — where the tag is
//! `sekisho traffic history manifest v1`, S(x) is the length of x's UTF-8 bytes as 8 bytes
//! unsigned big-endian followed by those bytes, U and I are 8 bytes big-endian (unsigned,
//! two's complement), and OU/OS are the byte `0x00` for `null` or `0x01` followed by U/S.
//! An auditor can recompute it from `manifest.jsonl` with Python's standard library:
//!
//! ```text
//! import hashlib, json
//! def s(x): b = x.encode(); return len(b).to_bytes(8, "big") + b
//! def u(n): return n.to_bytes(8, "big")
//! def i(n): return n.to_bytes(8, "big", signed=True)
//! def o(x, f): return b"\x00" if x is None else b"\x01" + f(x)
//! def entry_hash(e):
//!     return hashlib.sha256(
//!         s(e["prev"]) + s("sekisho traffic history manifest v1") + u(e["seq"])
//!         + s(e["kind"]) + s(e["path"]) + u(e["records"]) + u(e["bytes"])
//!         + i(e["min_first_us"]) + i(e["max_last_us"]) + i(e["min_last_us"])
//!         + i(e["max_first_us"]) + s(e["sha256"]) + i(e["sealed_at_us"])
//!         + o(e.get("removes"), u) + o(e.get("reason"), s)
//!     ).hexdigest()
//! ```
//!
//! The test `documented_hash_example` pins one value of this function. The chain has no
//! key: whoever can write every file can rewrite it consistently; the hashes travel out of
//! the machine through the operation history, which records each removal.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Component;
use std::path::Path;
use std::path::PathBuf;

use sha2::Digest;
use sha2::Sha256;

/// The manifest file in the history root.
pub const FILE: &str = "manifest.jsonl";

/// The head file in the history root: `<seq> <hash>\n` of the last entry.
pub const HEAD_FILE: &str = "manifest.head";

/// Where segment files live, relative to the root; every entry's path is under it.
pub const SEGMENTS_DIR: &str = "segments";

const HASH_TAG: &str = "sekisho traffic history manifest v1";

/// `prev` of entry 1 and the hash in the head file of an empty manifest.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry says about its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The segment was written and is live.
    Sealed,
    /// The segment was removed (retention); `removes` names its `sealed` entry.
    Removed,
}

impl EntryKind {
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::Sealed => "sealed",
            EntryKind::Removed => "removed",
        }
    }
}

/// What the caller records; [`append`] adds `seq`, `prev` and `hash`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEntry {
    pub kind: EntryKind,
    /// Relative to the root, under `segments/`, `/`-separated.
    pub path: String,
    pub records: u64,
    /// Size of the segment file.
    pub bytes: u64,
    pub min_first_us: i64,
    pub max_last_us: i64,
    pub min_last_us: i64,
    pub max_first_us: i64,
    /// Lowercase hex SHA-256 of the segment file.
    pub sha256: String,
    /// When this entry was made: the segment sealed, or (for `removed`) removed.
    pub sealed_at_us: i64,
    /// `removed` only: the `seq` of the segment's `sealed` entry.
    pub removes: Option<u64>,
    /// `removed` only: why (e.g. the retention that expired).
    pub reason: Option<String>,
}

impl NewEntry {
    /// The entry of a segment just written at `path` (relative to the root): its
    /// statistics, size and hash.
    pub fn sealed(
        path: String,
        info: &crate::history::segment::SegmentInfo,
        sha256: String,
        bytes: u64,
        sealed_at_us: i64,
    ) -> NewEntry {
        NewEntry {
            kind: EntryKind::Sealed,
            path,
            records: info.records,
            bytes,
            min_first_us: info.min_first_us,
            max_last_us: info.max_last_us,
            min_last_us: info.min_last_us,
            max_first_us: info.max_first_us,
            sha256,
            sealed_at_us,
            removes: None,
            reason: None,
        }
    }
}

/// One line of the manifest. A `removed` entry repeats the removed segment's path, counts,
/// times and hash, so that it says on its own what went.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    pub path: String,
    pub records: u64,
    pub bytes: u64,
    pub min_first_us: i64,
    pub max_last_us: i64,
    pub min_last_us: i64,
    pub max_first_us: i64,
    pub sha256: String,
    pub sealed_at_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `hash` of entry `seq - 1`; 64 zeros for entry 1.
    pub prev: String,
    /// See the module documentation.
    pub hash: String,
}

impl Entry {
    fn new(seq: u64, new: NewEntry, prev: String) -> Entry {
        let mut entry = Entry {
            seq,
            kind: new.kind,
            path: new.path,
            records: new.records,
            bytes: new.bytes,
            min_first_us: new.min_first_us,
            max_last_us: new.max_last_us,
            min_last_us: new.min_last_us,
            max_first_us: new.max_first_us,
            sha256: new.sha256,
            sealed_at_us: new.sealed_at_us,
            removes: new.removes,
            reason: new.reason,
            prev,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// The hash of the entry's fields (everything but `hash`), as the module documents.
    pub fn compute_hash(&self) -> String {
        fn s(h: &mut Sha256, x: &str) {
            h.update((x.len() as u64).to_be_bytes());
            h.update(x.as_bytes());
        }
        let mut h = Sha256::new();
        s(&mut h, &self.prev);
        s(&mut h, HASH_TAG);
        h.update(self.seq.to_be_bytes());
        s(&mut h, self.kind.name());
        s(&mut h, &self.path);
        h.update(self.records.to_be_bytes());
        h.update(self.bytes.to_be_bytes());
        for t in [
            self.min_first_us,
            self.max_last_us,
            self.min_last_us,
            self.max_first_us,
        ] {
            h.update(t.to_be_bytes());
        }
        s(&mut h, &self.sha256);
        h.update(self.sealed_at_us.to_be_bytes());
        match self.removes {
            None => h.update([0]),
            Some(seq) => {
                h.update([1]);
                h.update(seq.to_be_bytes());
            }
        }
        match &self.reason {
            None => h.update([0]),
            Some(reason) => {
                h.update([1]);
                s(&mut h, reason);
            }
        }
        hex::encode(h.finalize())
    }

    /// The fields a `removed` entry for this (sealed) entry repeats.
    pub fn removal(&self, removed_at_us: i64, reason: String) -> NewEntry {
        NewEntry {
            kind: EntryKind::Removed,
            path: self.path.clone(),
            records: self.records,
            bytes: self.bytes,
            min_first_us: self.min_first_us,
            max_last_us: self.max_last_us,
            min_last_us: self.min_last_us,
            max_first_us: self.max_first_us,
            sha256: self.sha256.clone(),
            sealed_at_us: removed_at_us,
            removes: Some(self.seq),
            reason: Some(reason),
        }
    }
}

/// Why the manifest could not be read or appended to.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} of manifest {} is not an entry", .path.display())]
    Parse {
        path: PathBuf,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write manifest {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("head file {} does not hold `<seq> <hash>`: {text:?}", .path.display())]
    BadHead { path: PathBuf, text: String },
    #[error(
        "entry {seq} was written, but head file {} could not be updated; the next append \
         repairs it",
        .path.display()
    )]
    HeadNotUpdated {
        path: PathBuf,
        seq: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to append to manifest {}: {problem}; run `sekishoctl history verify`",
        .path.display()
    )]
    Refused { path: PathBuf, problem: String },
    #[error("entry path {path:?} is not a relative path under {SEGMENTS_DIR}/")]
    BadPath { path: String },
}

/// Every complete entry, in file order, without checking hashes: what the query path
/// uses to find segments by time. A torn last line is skipped.
pub fn read(root: &Path) -> Result<Vec<Entry>, ManifestError> {
    Ok(read_lines(root)?.0)
}

/// The entries and the length of the file up to the end of the last complete line.
fn read_lines(root: &Path) -> Result<(Vec<Entry>, u64, u64), ManifestError> {
    let path = root.join(FILE);
    let mut text = Vec::new();
    match File::open(&path) {
        Ok(mut file) => file.read_to_end(&mut text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
    .map_err(|source| ManifestError::Read {
        path: path.clone(),
        source,
    })?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut entries = Vec::new();
    for (i, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry = serde_json::from_slice(line).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            line: i as u64 + 1,
            source,
        })?;
        entries.push(entry);
    }
    Ok((entries, complete as u64, text.len() as u64))
}

/// The last complete entry, the length up to the end of its line, and the file's length,
/// from the end of the file alone. `None` when that is not enough (an unparseable or empty
/// last line, or one longer than the window): the caller reads the whole file.
fn read_tail(path: &Path) -> Result<Option<(Option<Entry>, u64, u64)>, ManifestError> {
    const WINDOW: u64 = 64 * 1024;
    let read_err = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some((None, 0, 0))),
        Err(e) => return Err(read_err(e)),
    };
    let len = file.metadata().map_err(read_err)?.len();
    let start = len.saturating_sub(WINDOW);
    let mut buf = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(read_err)?;
    file.take(len - start)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok((start == 0).then_some((None, 0, len)));
    };
    let line_start = match buf[..end].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        None => return Ok(None),
    };
    Ok(serde_json::from_slice(&buf[line_start..end])
        .ok()
        .map(|entry| (Some(entry), start + end as u64 + 1, len)))
}

/// Reads the head file: `None` when it does not exist.
pub fn read_head(root: &Path) -> Result<Option<(u64, String)>, ManifestError> {
    let path = root.join(HEAD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ManifestError::Read { path, source }),
    };
    parse_head(&text)
        .map(Some)
        .ok_or(ManifestError::BadHead { path, text })
}

fn parse_head(text: &str) -> Option<(u64, String)> {
    let (seq, hash) = text.strip_suffix('\n')?.split_once(' ')?;
    let valid = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    Some((seq.parse().ok()?, hash.to_owned())).filter(|_| valid)
}

/// Writes the head file of an empty manifest when there is neither a manifest nor a head,
/// so that a manifest that later loses all its lines is caught.
pub fn init(root: &Path) -> Result<(), ManifestError> {
    if root.join(HEAD_FILE).exists() || root.join(FILE).exists() {
        return Ok(());
    }
    write_head(root, 0, ZERO_HASH).map_err(|source| ManifestError::Write {
        path: root.join(HEAD_FILE),
        source,
    })
}

/// Appends one entry, durably, and points the head file at it. Refuses when the head file
/// shows entries were removed, or when the path is not under `segments/`.
pub fn append(root: &Path, new: NewEntry) -> Result<Entry, ManifestError> {
    if !is_segment_path(&new.path) {
        return Err(ManifestError::BadPath { path: new.path });
    }
    let path = root.join(FILE);
    let refuse = |problem: String| ManifestError::Refused {
        path: path.clone(),
        problem,
    };
    // Only the last line is read: retention may append thousands of entries in one pass
    // to a manifest of seven years.
    let (last, complete, len) = match read_tail(&path)? {
        Some(tail) => tail,
        None => {
            let (entries, complete, len) = read_lines(root)?;
            (entries.last().cloned(), complete, len)
        }
    };
    let last_seq = last.as_ref().map_or(0, |e| e.seq);
    match read_head(root)? {
        None if last.is_some() => {
            return Err(refuse("the head file is missing".to_owned()));
        }
        None => {}
        Some((seq, _)) if seq > last_seq => {
            return Err(refuse(format!(
                "the head file names entry {seq}, but the manifest ends at entry {last_seq}"
            )));
        }
        Some((seq, hash)) => {
            let recorded = if seq == 0 {
                ZERO_HASH.to_owned()
            } else if seq == last_seq {
                last.as_ref().map_or_else(String::new, |e| e.hash.clone())
            } else {
                // The head is behind (an interrupted append): find the entry it names.
                read(root)?
                    .into_iter()
                    .find(|e| e.seq == seq)
                    .map_or_else(String::new, |e| e.hash)
            };
            if recorded != hash {
                return Err(refuse(format!(
                    "the head file names entry {seq} with hash {hash}, the manifest records \
                     {recorded:?}"
                )));
            }
        }
    }
    let seq = last_seq + 1;
    let prev = last.map_or_else(|| ZERO_HASH.to_owned(), |e| e.hash);
    let entry = Entry::new(seq, new, prev);
    let mut line = serde_json::to_vec(&entry).expect("an entry serializes");
    line.push(b'\n');

    let write_err = |source| ManifestError::Write {
        path: path.clone(),
        source,
    };
    let created = len == 0;
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&path)
        .map_err(write_err)?;
    if complete < len {
        tracing::warn!(
            path = %path.display(),
            cut = len - complete,
            "cutting an incomplete last line of the manifest (interrupted append)"
        );
        file.set_len(complete).map_err(write_err)?;
    }
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(write_err)?;
    if created {
        sync_dir(root).map_err(write_err)?;
    }
    write_head(root, seq, &entry.hash).map_err(|source| ManifestError::HeadNotUpdated {
        path: root.join(HEAD_FILE),
        seq,
        source,
    })?;
    Ok(entry)
}

/// Replaces the head file atomically and durably.
fn write_head(root: &Path, seq: u64, hash: &str) -> std::io::Result<()> {
    let tmp = root.join(format!("{HEAD_FILE}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        file.write_all(format!("{seq} {hash}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, root.join(HEAD_FILE))?;
        sync_dir(root)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A relative path under `segments/` with nothing but plain components, so that an edited
/// manifest cannot make retention delete (or verify read) anything else.
pub fn is_segment_path(path: &str) -> bool {
    let mut components = Path::new(path).components();
    components.next() == Some(Component::Normal(SEGMENTS_DIR.as_ref()))
        && components.clone().next().is_some()
        && components.all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\\')
}

/// Lowercase hex SHA-256 of a file and its size.
pub fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// One thing [`verify`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The manifest or a file could not be read at all.
    Unreadable {
        path: String,
        error: String,
    },
    /// A line is not an entry.
    BadLine {
        line: u64,
        error: String,
    },
    /// The entry at position `seq` is another one, which also appears later.
    Reordered {
        seq: u64,
        found: u64,
    },
    /// Entry `seq` is not in the manifest; the next line holds `found`.
    EntryMissing {
        seq: u64,
        found: u64,
    },
    /// Entry `seq`'s fields do not hash to its recorded hash.
    EntryChanged {
        seq: u64,
        recorded: String,
        actual: String,
    },
    /// Entry `seq`'s `prev` is not the hash of the entry before it.
    Unchained {
        seq: u64,
    },
    /// The head file names an entry after the last one.
    Truncated {
        after: u64,
        head: u64,
    },
    HeadMissing {
        last: u64,
    },
    HeadMismatch {
        seq: u64,
        head: String,
        recorded: String,
    },
    BadHead {
        text: String,
    },
    /// An entry names a path outside `segments/`.
    BadPath {
        seq: u64,
        path: String,
    },
    /// A `removed` entry names no live segment at its path.
    BadRemoval {
        seq: u64,
        removes: Option<u64>,
        path: String,
    },
    /// A live segment's file is gone.
    MissingSegment {
        seq: u64,
        path: String,
    },
    /// A live segment's file is not what was sealed.
    ChangedSegment {
        seq: u64,
        path: String,
        recorded_sha256: String,
        actual_sha256: String,
        recorded_bytes: u64,
        actual_bytes: u64,
    },
    /// A file under `segments/` that no entry lists.
    UnlistedSegment {
        path: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreadable { path, error } => write!(f, "cannot read {path}: {error}"),
            Problem::BadLine { line, error } => {
                write!(f, "manifest line {line} is not an entry: {error}")
            }
            Problem::Reordered { seq, found } => write!(
                f,
                "entries reordered at seq {seq}: entry {found} stands where entry {seq} belongs"
            ),
            Problem::EntryMissing { seq, found } => write!(
                f,
                "entry {seq} is missing from the manifest (the next line holds entry {found})"
            ),
            Problem::EntryChanged {
                seq,
                recorded,
                actual,
            } => write!(
                f,
                "entry {seq} has been changed: its fields hash to {actual}, it records {recorded}"
            ),
            Problem::Unchained { seq } => write!(
                f,
                "entry {seq} does not follow entry {}: its prev is not that entry's hash; \
                 entries were removed, inserted or reordered",
                seq - 1
            ),
            Problem::Truncated { after, head } => write!(
                f,
                "manifest truncated after seq {after}: the head file names entry {head}"
            ),
            Problem::HeadMissing { last } => write!(
                f,
                "the head file is missing, so the removal of entries after seq {last} cannot \
                 be ruled out"
            ),
            Problem::HeadMismatch {
                seq,
                head,
                recorded,
            } => write!(
                f,
                "the head file names entry {seq} with hash {head}, the manifest records {recorded}"
            ),
            Problem::BadHead { text } => write!(f, "the head file is not `<seq> <hash>`: {text:?}"),
            Problem::BadPath { seq, path } => {
                write!(
                    f,
                    "entry {seq} names {path:?}, not a path under {SEGMENTS_DIR}/"
                )
            }
            Problem::BadRemoval { seq, removes, path } => write!(
                f,
                "entry {seq} removes {path} (entry {}), which is not a live segment",
                removes.map_or_else(|| "none".to_owned(), |s| s.to_string())
            ),
            Problem::MissingSegment { seq, path } => {
                write!(f, "missing segment {path} (entry {seq})")
            }
            Problem::ChangedSegment {
                seq,
                path,
                recorded_sha256,
                actual_sha256,
                recorded_bytes,
                actual_bytes,
            } => write!(
                f,
                "changed segment {path} (entry {seq}): SHA-256 {actual_sha256} ({actual_bytes} \
                 bytes), the manifest records {recorded_sha256} ({recorded_bytes} bytes)"
            ),
            Problem::UnlistedSegment { path } => {
                write!(
                    f,
                    "unlisted segment {path}: on disk, but not in the manifest"
                )
            }
        }
    }
}

/// A problem and its message, as `history verify -o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    #[serde(flatten)]
    pub problem: Problem,
    pub message: String,
}

/// What [`verify`] found. `problems[0]` is the first problem, in this order: the chain
/// (by seq), the head file, the segment files (by seq), unlisted files (by path).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: u64,
    pub live_segments: u64,
    pub removed_segments: u64,
    /// Records in live segments.
    pub records: u64,
    /// What the head file names.
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    pub problems: Vec<Finding>,
    /// Not problems: an interrupted append or removal that the daemon completes.
    pub notes: Vec<String>,
}

impl VerifyReport {
    fn problem(&mut self, problem: Problem) {
        self.problems.push(Finding {
            message: problem.to_string(),
            problem,
        });
    }

    /// The first problem, if any.
    pub fn first(&self) -> Option<&Finding> {
        self.problems.first()
    }
}

/// Checks the chain, the head file, and every segment file against the manifest: each live
/// segment exists with the recorded SHA-256 and size, and no other file is under
/// `segments/`. Hashes every segment, so it reads the whole history.
pub fn verify(root: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    let path = root.join(FILE);
    // The head before the manifest: an append in between makes the manifest longer than
    // the head (accepted), never shorter.
    let head = read_head(root);
    let (entries, complete, len) = match read_lines(root) {
        Ok(lines) => lines,
        Err(ManifestError::Parse { line, source, .. }) => {
            report.problem(Problem::BadLine {
                line,
                error: source.to_string(),
            });
            report.ok = false;
            return report;
        }
        Err(e) => {
            report.problem(Problem::Unreadable {
                path: path.display().to_string(),
                error: std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string()),
            });
            return report;
        }
    };
    report.entries = entries.len() as u64;
    if complete < len {
        report.notes.push(format!(
            "the manifest ends in {} bytes of an incomplete line (an interrupted append); the \
             next append cuts them",
            len - complete
        ));
    }

    // The chain.
    let mut prev = ZERO_HASH;
    for (i, entry) in entries.iter().enumerate() {
        let expected = i as u64 + 1;
        if entry.seq != expected {
            let later = entries[i + 1..].iter().any(|e| e.seq == expected);
            report.problem(if later {
                Problem::Reordered {
                    seq: expected,
                    found: entry.seq,
                }
            } else {
                Problem::EntryMissing {
                    seq: expected,
                    found: entry.seq,
                }
            });
            break;
        }
        let actual = entry.compute_hash();
        if actual != entry.hash {
            report.problem(Problem::EntryChanged {
                seq: expected,
                recorded: entry.hash.clone(),
                actual,
            });
            break;
        }
        if entry.prev != prev {
            report.problem(Problem::Unchained { seq: expected });
            break;
        }
        prev = &entry.hash;
    }

    // The head file.
    let last = entries.len() as u64;
    match head {
        Ok(None) if last > 0 => report.problem(Problem::HeadMissing { last }),
        Ok(None) => {}
        Err(ManifestError::BadHead { text, .. }) => report.problem(Problem::BadHead { text }),
        Err(e) => report.problem(Problem::Unreadable {
            path: root.join(HEAD_FILE).display().to_string(),
            error: std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string()),
        }),
        Ok(Some((seq, hash))) => {
            report.head_seq = Some(seq);
            report.head_hash = Some(hash.clone());
            let recorded = match seq {
                0 => Some(ZERO_HASH),
                seq => entries.get(seq as usize - 1).map(|e| e.hash.as_str()),
            };
            match recorded {
                None => report.problem(Problem::Truncated {
                    after: last,
                    head: seq,
                }),
                Some(recorded) if recorded != hash => report.problem(Problem::HeadMismatch {
                    seq,
                    head: hash,
                    recorded: recorded.to_owned(),
                }),
                Some(_) if seq < last => report.notes.push(format!(
                    "the head file names entry {seq}, the manifest ends at {last} (an \
                     interrupted append; the next append repairs it)"
                )),
                Some(_) => {}
            }
        }
    }

    // Which segments are live: replay the entries.
    let mut live: HashMap<&str, &Entry> = HashMap::new();
    let mut removed: HashSet<&str> = HashSet::new();
    for entry in &entries {
        if !is_segment_path(&entry.path) {
            report.problem(Problem::BadPath {
                seq: entry.seq,
                path: entry.path.clone(),
            });
            continue;
        }
        match entry.kind {
            EntryKind::Sealed => {
                removed.remove(entry.path.as_str());
                live.insert(&entry.path, entry);
            }
            EntryKind::Removed => match live.get(entry.path.as_str()) {
                Some(sealed) if Some(sealed.seq) == entry.removes => {
                    live.remove(entry.path.as_str());
                    removed.insert(&entry.path);
                }
                _ => report.problem(Problem::BadRemoval {
                    seq: entry.seq,
                    removes: entry.removes,
                    path: entry.path.clone(),
                }),
            },
        }
    }
    report.live_segments = live.len() as u64;
    report.removed_segments = removed.len() as u64;
    let mut live_sorted: Vec<&Entry> = live.values().copied().collect();
    live_sorted.sort_by_key(|e| e.seq);
    for entry in live_sorted {
        report.records += entry.records;
        let file = root.join(&entry.path);
        match file_sha256(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.problem(Problem::MissingSegment {
                    seq: entry.seq,
                    path: entry.path.clone(),
                })
            }
            Err(e) => report.problem(Problem::Unreadable {
                path: file.display().to_string(),
                error: e.to_string(),
            }),
            Ok((sha256, bytes)) if sha256 != entry.sha256 || bytes != entry.bytes => report
                .problem(Problem::ChangedSegment {
                    seq: entry.seq,
                    path: entry.path.clone(),
                    recorded_sha256: entry.sha256.clone(),
                    actual_sha256: sha256,
                    recorded_bytes: entry.bytes,
                    actual_bytes: bytes,
                }),
            Ok(_) => {}
        }
    }

    // Files nobody listed.
    let mut on_disk = Vec::new();
    if let Err(e) = walk(root, Path::new(SEGMENTS_DIR), &mut on_disk) {
        report.problem(Problem::Unreadable {
            path: root.join(SEGMENTS_DIR).display().to_string(),
            error: e.to_string(),
        });
    }
    on_disk.sort();
    for rel in on_disk {
        if live.contains_key(rel.as_str()) {
            continue;
        }
        if removed.contains(rel.as_str()) {
            report.notes.push(format!(
                "{rel} was removed from the manifest but is still on disk (an interrupted \
                 removal; the next retention pass deletes it)"
            ));
        } else if rel.ends_with(".tmp") {
            report.notes.push(format!(
                "{rel} is a segment being written, or one an interrupted seal left (the WAL \
                 it came from is kept and sealed again)"
            ));
        } else {
            report.problem(Problem::UnlistedSegment { path: rel });
        }
    }
    report.ok = report.problems.is_empty();
    report
}

/// Collects the files under `root/rel`, as `/`-separated paths relative to `root`.
pub(crate) fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let dir = match std::fs::read_dir(root.join(rel)) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(root, &rel, out)?;
        } else {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn sealed(path: &str, contents: &[u8], root: &Path, n: i64) -> NewEntry {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, contents).unwrap();
        let (sha256, bytes) = file_sha256(&file).unwrap();
        NewEntry {
            kind: EntryKind::Sealed,
            path: path.to_owned(),
            records: 10 + n as u64,
            bytes,
            min_first_us: n * 3_600_000_000,
            max_last_us: n * 3_600_000_000 + 3_599_000_000,
            min_last_us: n * 3_600_000_000 + 1,
            max_first_us: n * 3_600_000_000 + 3_500_000_000,
            sha256,
            sealed_at_us: (n + 1) * 3_600_000_000,
            removes: None,
            reason: None,
        }
    }

    /// A manifest of four sealed segments.
    fn four(root: &Path) -> Vec<Entry> {
        init(root).unwrap();
        (0..4)
            .map(|n| {
                let path = format!("segments/2026/11/23/{n:02}.parquet");
                append(
                    root,
                    sealed(&path, format!("segment {n}").as_bytes(), root, n),
                )
                .unwrap()
            })
            .collect()
    }

    fn first_problem(root: &Path) -> Problem {
        let report = verify(root);
        assert!(!report.ok, "{report:?}");
        report.problems[0].problem.clone()
    }

    fn lines(root: &Path) -> Vec<String> {
        std::fs::read_to_string(root.join(FILE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(root: &Path, lines: &[String]) {
        std::fs::write(root.join(FILE), lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn append_chains_and_verify_passes() {
        let tmp = TempDir::new("manifest-chain");
        let entries = four(tmp.path());
        assert_eq!(read(tmp.path()).unwrap(), entries);
        assert_eq!(entries[0].prev, ZERO_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        assert_eq!(
            read_head(tmp.path()).unwrap(),
            Some((4, entries[3].hash.clone()))
        );
        let report = verify(tmp.path());
        assert!(report.ok, "{report:?}");
        assert_eq!(
            (report.entries, report.live_segments, report.records),
            (4, 4, 10 + 11 + 12 + 13)
        );
        // Serializable for `history verify -o json`.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], true);
    }

    #[test]
    fn documented_hash_example() {
        let entry = Entry::new(
            1,
            NewEntry {
                kind: EntryKind::Sealed,
                path: "segments/2026/11/23/15.parquet".to_owned(),
                records: 1234,
                bytes: 56789,
                min_first_us: 1_795_446_000_000_000,
                max_last_us: 1_795_449_599_999_999,
                min_last_us: 1_795_446_000_000_001,
                max_first_us: -1,
                sha256: "ab".repeat(32),
                sealed_at_us: 1_795_449_600_500_000,
                removes: None,
                reason: Some("理由".to_owned()),
            },
            ZERO_HASH.to_owned(),
        );
        assert_eq!(entry.hash, DOCUMENTED_HASH);
    }

    /// Computed with the Python function in the module documentation.
    const DOCUMENTED_HASH: &str =
        "a02e4c40580c9745953c774f434c12226da1e9fca8fcaad7e3b8caf21371a7d1";

    #[test]
    fn changed_segment_is_named() {
        let tmp = TempDir::new("manifest-changed");
        four(tmp.path());
        let file = tmp.join("segments/2026/11/23/02.parquet");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let problem = first_problem(tmp.path());
        assert!(
            matches!(&problem, Problem::ChangedSegment { seq: 3, path, .. }
                if path == "segments/2026/11/23/02.parquet"),
            "{problem:?}"
        );
        assert!(
            problem
                .to_string()
                .starts_with("changed segment segments/2026/11/23/02.parquet (entry 3)")
        );
    }

    #[test]
    fn missing_segment_is_named() {
        let tmp = TempDir::new("manifest-missing");
        four(tmp.path());
        std::fs::remove_file(tmp.join("segments/2026/11/23/01.parquet")).unwrap();
        assert_eq!(
            first_problem(tmp.path()),
            Problem::MissingSegment {
                seq: 2,
                path: "segments/2026/11/23/01.parquet".to_owned()
            }
        );
    }

    #[test]
    fn swapped_lines_are_named() {
        let tmp = TempDir::new("manifest-swapped");
        four(tmp.path());
        let mut l = lines(tmp.path());
        l.swap(1, 2);
        write_lines(tmp.path(), &l);
        let problem = first_problem(tmp.path());
        assert_eq!(problem, Problem::Reordered { seq: 2, found: 3 });
        assert!(
            problem
                .to_string()
                .starts_with("entries reordered at seq 2")
        );
    }

    #[test]
    fn removed_last_line_is_truncation() {
        let tmp = TempDir::new("manifest-truncated");
        four(tmp.path());
        let mut l = lines(tmp.path());
        l.pop();
        write_lines(tmp.path(), &l);
        let problem = first_problem(tmp.path());
        assert_eq!(problem, Problem::Truncated { after: 3, head: 4 });
        assert!(
            problem
                .to_string()
                .starts_with("manifest truncated after seq 3")
        );
        // The segment of entry 4 is now unlisted too, named after the truncation.
        let report = verify(tmp.path());
        assert_eq!(
            report.problems[1].problem,
            Problem::UnlistedSegment {
                path: "segments/2026/11/23/03.parquet".to_owned()
            }
        );
        // And nothing can be appended over the gap.
        let err = append(
            tmp.path(),
            sealed("segments/x.parquet", b"x", tmp.path(), 9),
        )
        .unwrap_err();
        assert!(matches!(err, ManifestError::Refused { .. }), "{err}");
    }

    #[test]
    fn removed_middle_line_is_named() {
        let tmp = TempDir::new("manifest-gap");
        four(tmp.path());
        let mut l = lines(tmp.path());
        l.remove(1);
        write_lines(tmp.path(), &l);
        assert_eq!(
            first_problem(tmp.path()),
            Problem::EntryMissing { seq: 2, found: 3 }
        );
    }

    #[test]
    fn unlisted_segment_is_named() {
        let tmp = TempDir::new("manifest-unlisted");
        four(tmp.path());
        std::fs::write(tmp.join("segments/2026/11/23/99.parquet"), b"planted").unwrap();
        let problem = first_problem(tmp.path());
        assert_eq!(
            problem,
            Problem::UnlistedSegment {
                path: "segments/2026/11/23/99.parquet".to_owned()
            }
        );
        assert!(
            problem
                .to_string()
                .starts_with("unlisted segment segments/2026/11/23/99.parquet")
        );
    }

    #[test]
    fn edited_entry_field_is_named() {
        let tmp = TempDir::new("manifest-edited");
        four(tmp.path());
        let mut l = lines(tmp.path());
        l[1] = l[1].replace("\"records\":11,", "\"records\":12,");
        write_lines(tmp.path(), &l);
        let problem = first_problem(tmp.path());
        assert!(
            matches!(problem, Problem::EntryChanged { seq: 2, .. }),
            "{problem:?}"
        );
        assert!(problem.to_string().starts_with("entry 2 has been changed"));
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        let tmp = TempDir::new("manifest-rehashed");
        four(tmp.path());
        let mut entries = read(tmp.path()).unwrap();
        entries[1].records = 99;
        entries[1].hash = entries[1].compute_hash();
        let l: Vec<String> = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        write_lines(tmp.path(), &l);
        assert_eq!(first_problem(tmp.path()), Problem::Unchained { seq: 3 });
    }

    #[test]
    fn torn_last_line_is_skipped_then_cut() {
        let tmp = TempDir::new("manifest-torn");
        let entries = four(tmp.path());
        let mut file = OpenOptions::new()
            .append(true)
            .open(tmp.join(FILE))
            .unwrap();
        file.write_all(b"{\"seq\":5,\"kind\":\"sea").unwrap();
        assert_eq!(read(tmp.path()).unwrap(), entries);
        let report = verify(tmp.path());
        assert!(report.ok && report.notes.len() == 1, "{report:?}");
        let e = append(
            tmp.path(),
            sealed("segments/2026/11/23/04.parquet", b"4", tmp.path(), 4),
        )
        .unwrap();
        assert_eq!((e.seq, e.prev.as_str()), (5, entries[3].hash.as_str()));
        let report = verify(tmp.path());
        assert!(report.ok && report.notes.is_empty(), "{report:?}");
    }

    #[test]
    fn head_one_behind_is_accepted_and_repaired() {
        let tmp = TempDir::new("manifest-behind");
        let entries = four(tmp.path());
        write_head(tmp.path(), 3, &entries[2].hash).unwrap();
        let report = verify(tmp.path());
        assert!(report.ok && report.notes.len() == 1, "{report:?}");
        append(
            tmp.path(),
            sealed("segments/2026/11/23/04.parquet", b"4", tmp.path(), 4),
        )
        .unwrap();
        assert_eq!(read_head(tmp.path()).unwrap().unwrap().0, 5);
    }

    #[test]
    fn removal_makes_a_missing_file_legitimate() {
        let tmp = TempDir::new("manifest-removed");
        let entries = four(tmp.path());
        let removal = entries[0].removal(99, "retention 7y".to_owned());
        let e = append(tmp.path(), removal).unwrap();
        assert_eq!((e.kind, e.removes), (EntryKind::Removed, Some(1)));
        // Still on disk: a note, not a problem.
        let report = verify(tmp.path());
        assert!(report.ok && report.notes.len() == 1, "{report:?}");
        std::fs::remove_file(tmp.join(&entries[0].path)).unwrap();
        let report = verify(tmp.path());
        assert!(report.ok && report.notes.is_empty(), "{report:?}");
        assert_eq!((report.live_segments, report.removed_segments), (3, 1));
        // Removing it twice is not.
        append(tmp.path(), entries[0].removal(100, "again".to_owned())).unwrap();
        assert!(matches!(
            first_problem(tmp.path()),
            Problem::BadRemoval { seq: 6, .. }
        ));
    }

    #[test]
    fn paths_outside_segments_are_refused() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "segments/../x",
            "segments",
            "x/y",
        ] {
            assert!(!is_segment_path(bad), "{bad}");
        }
        assert!(is_segment_path("segments/2026/11/23/15.parquet"));
        let tmp = TempDir::new("manifest-paths");
        let mut new = sealed("segments/a", b"a", tmp.path(), 0);
        new.path = "segments/../../a".to_owned();
        assert!(matches!(
            append(tmp.path(), new),
            Err(ManifestError::BadPath { .. })
        ));
    }
}
