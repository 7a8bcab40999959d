//! A query's records in time order, by (`first`, `last`).
//!
//! Each row group of a segment, and each unsealed write-ahead log, is a run sorted by time,
//! but runs overlap: a segment holds the flows that ended in its hour (a long flow began
//! hours before), and the row groups of an hour written as it went are sorted each alone.
//! So the runs are merged. A source (segment or log) joins the merge only when the merge
//! reaches the earliest time in it, which the manifest gives, and each of a segment's row
//! groups when it reaches the row group's (its statistics); a row group's rows are found
//! on its first batch, so memory follows the runs being merged, not the segment's size.
//! On threads, segments are opened and runs decoded ahead of the merge, within a bound.
//!
//! What the merge gives, and the statistics of what it read, are the same on one thread
//! or many: runs of equal times are taken in source order, and a source counts as read
//! when it joins the merge, not when a thread happened to open it ahead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};

use super::Record;
use super::query::{Filter, QueryError, QueryStats};
use super::segment::{self, GroupRun, ScanStats, SegmentError};

/// A run moves between the merge and the threads; boxed, so that what carries it stays small.
type Run = Box<GroupRun>;

/// Where a query's records come from.
pub(crate) enum Source {
    /// A sealed segment, in which no record starts before `min_first_us`.
    Segment { path: PathBuf, min_first_us: i64 },
    /// The records of an unsealed write-ahead log that match, sorted; `scanned` were read.
    Records { records: Vec<Record>, scanned: u64 },
}

impl Source {
    pub(crate) fn min_first_us(&self) -> i64 {
        match self {
            Source::Segment { min_first_us, .. } => *min_first_us,
            // A log without matches only adds its statistics: it joins last.
            Source::Records { records, .. } => records.first().map_or(i64::MAX, |r| r.first_us),
        }
    }
}

type Key = (i64, i64);

/// A live run's next record in the merge: its time, the run's order, its slot.
type Head = (Key, (usize, usize), usize);

/// A run waiting to join the merge: its earliest time, its order, its slot.
type Pending = (i64, (usize, usize), usize);

fn key(r: &Record) -> Key {
    (r.first_us, r.last_us)
}

/// Batches a run may hold decoded ahead of the merge (a batch is up to 8,192 records, about
/// 1.6 MB). A run is given to a thread again once half of them are taken: decoding many
/// batches in one go keeps its pages in one core's cache, and few at a time measured 30 %
/// slower.
const AHEAD: usize = 8;

/// Batches decoded ahead, or being decoded, per thread, in all runs together.
const BUDGET: usize = 24;

/// Work for a thread: open a segment (find its runs), or decode a run's next batches (as
/// many as `bufs` holds: a run's decoded pages stay in one core's cache a while).
enum Job {
    Open(usize, PathBuf),
    Next {
        slot: usize,
        run: Run,
        bufs: Vec<Vec<Record>>,
        max: usize,
    },
}

enum Done {
    Opened(usize, Result<(Vec<GroupRun>, ScanStats), SegmentError>),
    /// The batches decoded of the `count` asked for, and the error that stopped the decoding.
    Batches {
        slot: usize,
        run: Run,
        count: usize,
        batches: Vec<Vec<Record>>,
        failed: Option<SegmentError>,
        /// What finding the run's rows read, on its first batch.
        scan: Option<ScanStats>,
    },
    /// A thread's job panicked: passed on to the caller rather than leaving it waiting.
    Panic(Box<dyn std::any::Any + Send>),
}

fn work(job: Job, filter: &Filter) -> Done {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
        Job::Open(source, path) => Done::Opened(source, segment::group_runs(&path, filter)),
        Job::Next {
            slot,
            mut run,
            bufs,
            max,
        } => {
            let count = bufs.len();
            let mut batches = Vec::with_capacity(count);
            let (mut failed, mut scan) = (None, None);
            for mut recs in bufs {
                if run.is_done() {
                    break;
                }
                match run.next(filter, max, &mut recs) {
                    Ok(found) => scan = scan.or(found),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                batches.push(recs);
            }
            Done::Batches {
                slot,
                run,
                count,
                batches,
                failed,
                scan,
            }
        }
    }));
    done.unwrap_or_else(Done::Panic)
}

/// Runs jobs: on this thread as they are waited for, or on a pool of threads.
trait Exec {
    fn send(&mut self, job: Job);
    fn recv(&mut self) -> Done;
    /// A finished job, if one is waiting.
    fn try_recv(&mut self) -> Option<Done>;
}

struct Inline<'f> {
    queue: VecDeque<Job>,
    filter: &'f Filter,
}

impl Exec for Inline<'_> {
    fn send(&mut self, job: Job) {
        self.queue.push_back(job);
    }

    fn recv(&mut self) -> Done {
        let job = self.queue.pop_front();
        work(
            job.expect("a job is waited for after it is sent"),
            self.filter,
        )
    }

    fn try_recv(&mut self) -> Option<Done> {
        None
    }
}

struct Pool {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

impl Exec for Pool {
    fn send(&mut self, job: Job) {
        // The threads end only when this sender is dropped.
        let _ = self.jobs.send(job);
    }

    fn recv(&mut self) -> Done {
        // Every job is answered (a panic too), and the threads outlive this receiver.
        self.done.recv().expect("a query thread answers every job")
    }

    fn try_recv(&mut self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}

/// Hands `out` the records of `sources` in time order, until `out` returns `false` or
/// `remaining` (decremented as records are given) reaches 0. Segments are read on `threads`
/// threads, or on this one for 1.
pub(crate) fn merge(
    sources: Vec<Source>,
    filter: &Filter,
    threads: usize,
    remaining: &mut usize,
    stats: &mut QueryStats,
    out: &mut dyn FnMut(Record) -> bool,
) -> Result<(), QueryError> {
    let mut merge = Merge::new(sources);
    if threads <= 1 {
        let mut exec = Inline {
            queue: VecDeque::new(),
            filter,
        };
        return merge.run(&mut exec, 0, remaining, stats, out);
    }
    let stop = AtomicBool::new(false);
    let (jobs, queue) = mpsc::channel::<Job>();
    let (done_tx, done) = mpsc::channel::<Done>();
    let queue = Mutex::new(queue);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (queue, stop, done_tx) = (&queue, &stop, done_tx.clone());
            s.spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // Jobs sent ahead of a query that has ended are dropped unread.
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    if done_tx.send(work(job, filter)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut exec = Pool { jobs, done };
        let result = merge.run(&mut exec, threads, remaining, stats, out);
        stop.store(true, Ordering::Relaxed);
        drop(exec);
        result
    })
}

/// A run in the merge, or decoded ahead of it.
struct Slot {
    /// Its place among runs whose next records are equal: source, then row group.
    order: (usize, usize),
    /// `None` while a thread decodes it, and once it is done.
    run: Option<Run>,
    busy: bool,
    /// Rows not yet decoded.
    more: bool,
    /// A batch failed: the error, for when the merge needs the batch.
    failed: Option<SegmentError>,
    /// Decoded batches (a vector's buffer taken as is: records leave from the front).
    batches: VecDeque<VecDeque<Record>>,
    /// In the merge: the merge has reached `min_first`, its earliest time.
    live: bool,
    min_first: i64,
    /// What finding its rows read, until it joins the merge and is counted.
    scan: Option<ScanStats>,
}

impl Slot {
    fn head(&self) -> Option<&Record> {
        self.batches.front().and_then(|b| b.front())
    }
}

/// A source opened (by a thread, maybe ahead of the merge) and not yet joined.
enum Opened {
    Segment(Vec<usize>, ScanStats),
    Failed(SegmentError),
    Records(usize, u64),
}

struct Merge {
    min_first: Vec<i64>,
    paths: Vec<Option<PathBuf>>,
    opened: Vec<Option<Opened>>,
    /// Where opening ahead of the merge has got to (a source is opened once: its path is
    /// taken).
    sent: usize,
    /// Sources `..joined` are in the merge.
    joined: usize,
    slots: Vec<Slot>,
    /// Slots `..lo` are done with.
    lo: usize,
    /// The live slots with a record to give, by that record.
    heap: BinaryHeap<Reverse<Head>>,
    /// Runs of joined sources that have not joined the merge yet, by their earliest time.
    pending: BinaryHeap<Reverse<Pending>>,
    /// Live slots whose next batch is being decoded: the merge cannot go on without them.
    needy: Vec<usize>,
    in_flight: usize,
    /// Batches held decoded, and being decoded.
    held: usize,
    spare: Vec<Vec<Record>>,
}

impl Merge {
    fn new(mut sources: Vec<Source>) -> Merge {
        // Stable: a log after the segments that start with it.
        sources.sort_by_key(Source::min_first_us);
        let mut merge = Merge {
            min_first: sources.iter().map(Source::min_first_us).collect(),
            paths: Vec::with_capacity(sources.len()),
            opened: Vec::with_capacity(sources.len()),
            sent: 0,
            joined: 0,
            slots: Vec::new(),
            lo: 0,
            heap: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            needy: Vec::new(),
            in_flight: 0,
            held: 0,
            spare: Vec::new(),
        };
        for (i, source) in sources.into_iter().enumerate() {
            match source {
                Source::Segment { path, .. } => {
                    merge.paths.push(Some(path));
                    merge.opened.push(None);
                }
                Source::Records { records, scanned } => {
                    let slot = merge.slots.len();
                    merge.held += 1;
                    merge.slots.push(Slot {
                        order: (i, 0),
                        run: None,
                        busy: false,
                        more: false,
                        failed: None,
                        batches: VecDeque::from([VecDeque::from(records)]),
                        live: false,
                        min_first: merge.min_first[i],
                        scan: None,
                    });
                    merge.paths.push(None);
                    merge.opened.push(Some(Opened::Records(slot, scanned)));
                }
            }
        }
        merge
    }

    fn run(
        &mut self,
        exec: &mut dyn Exec,
        ahead: usize,
        remaining: &mut usize,
        stats: &mut QueryStats,
        out: &mut dyn FnMut(Record) -> bool,
    ) -> Result<(), QueryError> {
        while *remaining > 0 {
            // Finished jobs are taken as they come, so that the threads get new ones.
            while let Some(done) = exec.try_recv() {
                self.take(done, stats)?;
            }
            self.schedule(exec, ahead, *remaining);
            if !self.needy.is_empty() {
                self.receive(exec, stats)?;
                continue;
            }
            // Every live run shows its next record: the next run or source joins if it may
            // hold an earlier one (a run first: it comes from an earlier source).
            let next_source = self.min_first.get(self.joined).copied();
            let next_run = self.pending.peek().map(|Reverse((m, ..))| *m);
            let next = match (next_source, next_run) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(min_first) = next
                && self
                    .heap
                    .peek()
                    .is_none_or(|Reverse((k, ..))| min_first <= k.0)
            {
                if next_run == Some(min_first) {
                    self.join_run(stats)?;
                } else if self.opened[self.joined].is_none() {
                    if self.paths[self.joined].is_some() {
                        self.open(exec, self.joined);
                    }
                    self.receive(exec, stats)?;
                } else {
                    self.join(stats)?;
                }
                continue;
            }
            let Some(Reverse((_, order, slot))) = self.heap.pop() else {
                return Ok(());
            };
            let bound = self.heap.peek().map(|Reverse((k, o, _))| (*k, *o));
            let s = &mut self.slots[slot];
            let batch = s
                .batches
                .front_mut()
                .expect("a run in the heap has a batch");
            // The popped run's first record passes both bounds: the heap gave its least,
            // and the next run or source starts after it.
            while let Some(r) = batch.front() {
                if next.is_some_and(|m| r.first_us >= m)
                    || bound.is_some_and(|b| (key(r), order) > b)
                {
                    break;
                }
                let rec = batch.pop_front().expect("a record was seen");
                stats.records_matched += 1;
                *remaining -= 1;
                if !out(rec) || *remaining == 0 {
                    return Ok(());
                }
            }
            if batch.is_empty() {
                self.held -= 1;
                let empty = s.batches.pop_front().expect("the batch emptied");
                self.spare.push(Vec::from(empty));
            }
            self.settle(slot)?;
        }
        Ok(())
    }

    /// Puts a live slot back in the heap by its next record, or counts it as waiting for
    /// its next batch, or raises the error that batch met.
    fn settle(&mut self, slot: usize) -> Result<(), QueryError> {
        let s = &mut self.slots[slot];
        if let Some(r) = s.head() {
            self.heap.push(Reverse((key(r), s.order, slot)));
        } else if let Some(source) = s.failed.take() {
            return Err(QueryError::Segment { source });
        } else if s.more {
            self.needy.push(slot);
        }
        Ok(())
    }

    /// The earliest run waiting joins the merge, and what finding its rows read is counted.
    fn join_run(&mut self, stats: &mut QueryStats) -> Result<(), QueryError> {
        let Some(Reverse((_, _, slot))) = self.pending.pop() else {
            return Ok(());
        };
        let s = &mut self.slots[slot];
        s.live = true;
        if let Some(scan) = s.scan.take() {
            stats.add_scan(&scan);
        }
        self.settle(slot)
    }

    /// The next source joins the merge, and its statistics are counted.
    fn join(&mut self, stats: &mut QueryStats) -> Result<(), QueryError> {
        let source = self.joined;
        self.joined += 1;
        let slots = match self.opened[source].take() {
            Some(Opened::Segment(slots, scan)) => {
                stats.segments_read += 1;
                stats.add_scan(&ScanStats {
                    records_matched: 0,
                    ..scan
                });
                slots
            }
            Some(Opened::Records(slot, scanned)) => {
                stats.wal_files += 1;
                stats.records_scanned += scanned;
                vec![slot]
            }
            Some(Opened::Failed(source)) => return Err(QueryError::Segment { source }),
            None => unreachable!("a source joins once opened"),
        };
        for slot in slots {
            let s = &self.slots[slot];
            self.pending.push(Reverse((s.min_first, s.order, slot)));
        }
        Ok(())
    }

    fn open(&mut self, exec: &mut dyn Exec, source: usize) {
        let path = self.paths[source].take().expect("a segment is opened once");
        exec.send(Job::Open(source, path));
        self.in_flight += 1;
    }

    /// Sends `slot`'s run to be decoded, `count` batches of at most `max` records.
    fn decode(&mut self, exec: &mut dyn Exec, slot: usize, count: usize, max: usize) {
        let s = &mut self.slots[slot];
        let run = s.run.take().expect("an idle run is decoded");
        s.busy = true;
        let spare = &mut self.spare;
        let bufs = (0..count)
            .map(|_| spare.pop().unwrap_or_default())
            .collect();
        self.held += count;
        exec.send(Job::Next {
            slot,
            run,
            bufs,
            max,
        });
        self.in_flight += 1;
    }

    /// Sends the jobs the merge waits for, then, with `ahead` threads, keeps them busy: the
    /// earliest run with room for another batch, else the next segment (at most `ahead`
    /// segments opened ahead of the merge).
    fn schedule(&mut self, exec: &mut dyn Exec, ahead: usize, remaining: usize) {
        while self.lo < self.slots.len() && {
            let s = &self.slots[self.lo];
            s.live && !s.busy && !s.more && s.batches.is_empty()
        } {
            self.lo += 1;
        }
        // On this thread, no more is decoded than is still wanted.
        let max = if ahead == 0 { remaining } else { usize::MAX };
        for i in 0..self.needy.len() {
            let slot = self.needy[i];
            let s = &self.slots[slot];
            if s.more && !s.busy && s.failed.is_none() {
                self.decode(exec, slot, 1, max);
            }
        }
        while self.in_flight < 2 * ahead {
            let room = (self.lo..self.slots.len()).find(|&i| {
                let s = &self.slots[i];
                s.more && !s.busy && s.failed.is_none() && s.batches.len() <= AHEAD / 2
            });
            if let Some(slot) = room {
                let count = AHEAD - self.slots[slot].batches.len();
                if self.held + count > BUDGET * ahead {
                    break;
                }
                self.decode(exec, slot, count, max);
            } else if self.sent < self.paths.len() && self.sent <= self.joined + 2 * ahead {
                // A log, or a segment the merge opened itself, is passed over.
                if self.paths[self.sent].is_some() {
                    self.open(exec, self.sent);
                }
                self.sent += 1;
            } else {
                break;
            }
        }
    }

    /// Waits for a finished job and takes it.
    fn receive(&mut self, exec: &mut dyn Exec, stats: &mut QueryStats) -> Result<(), QueryError> {
        let done = exec.recv();
        self.take(done, stats)
    }

    fn take(&mut self, done: Done, stats: &mut QueryStats) -> Result<(), QueryError> {
        self.in_flight -= 1;
        match done {
            Done::Opened(source, Ok((runs, scan))) => {
                let mut slots = Vec::with_capacity(runs.len());
                // No record of the segment starts before the manifest says.
                let floor = self.min_first[source];
                for (group, run) in runs.into_iter().enumerate() {
                    slots.push(self.slots.len());
                    self.slots.push(Slot {
                        order: (source, group),
                        min_first: run.min_first_us.map_or(floor, |m| m.max(floor)),
                        run: Some(Box::new(run)),
                        busy: false,
                        more: true,
                        failed: None,
                        batches: VecDeque::new(),
                        live: false,
                        scan: None,
                    });
                }
                self.opened[source] = Some(Opened::Segment(slots, scan));
            }
            Done::Opened(source, Err(e)) => self.opened[source] = Some(Opened::Failed(e)),
            Done::Batches {
                slot,
                run,
                count,
                batches,
                failed,
                scan,
            } => {
                let s = &mut self.slots[slot];
                if let Some(scan) = scan {
                    match s.live {
                        true => stats.add_scan(&scan),
                        false => s.scan = Some(scan),
                    }
                }
                s.busy = false;
                s.more = !run.is_done() && failed.is_none();
                // A run done with is dropped: its page readers hold buffers.
                s.run = s.more.then_some(run);
                s.failed = failed;
                let had_head = s.head().is_some();
                // Asked for `count`; a run that ended or failed gave fewer.
                self.held -= count - batches.len();
                for recs in batches {
                    match recs.is_empty() {
                        true => {
                            self.held -= 1;
                            self.spare.push(recs);
                        }
                        false => s.batches.push_back(VecDeque::from(recs)),
                    }
                }
                if s.live && !had_head {
                    if let Some(i) = self.needy.iter().position(|&n| n == slot) {
                        self.needy.swap_remove(i);
                    }
                    self.settle(slot)?;
                }
            }
            Done::Panic(payload) => std::panic::resume_unwind(payload),
        }
        Ok(())
    }
}
