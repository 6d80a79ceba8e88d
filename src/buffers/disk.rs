//! The disk buffer: a checksummed append-only log of batches that survives crashes.
//!
//! Layout under `<data_dir>/buffers/<sink>/`: segment files `<id>.log` (ids increase) and
//! `reader.pos`, the position up to which the sink has acknowledged. A record is
//!
//! ```text
//! length u32 LE | events u32 LE | crc32 u32 LE (of events + payload) | payload
//! ```
//!
//! with the payload being the batch's events as JSON Lines (`docs/schema.md`). The writer
//! thread appends records, syncs the file every `sync_interval` and only then drops the
//! upstream batches (acknowledging them to their sources). It always starts a new segment,
//! so a tail torn by a crash is never appended to; segments roll at an eighth of `max_size`.
//! The reader thread reads records in order, hands them to the sink as batches with their own
//! acknowledgement handles, and moves `reader.pos` forward as the sink acknowledges them,
//! deleting segments it has left behind. After a restart it starts at `reader.pos`: what was
//! written but not acknowledged is sent again (at least once).
//!
//! A record whose checksum does not match, whose length is impossible, or that is cut short
//! in a segment nobody writes any more, is corruption: it is reported, counted
//! (`kollate_buffer_corrupted_records_total`) and the rest of that segment is skipped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::WhenFull;
use crate::batch::{AckTracker, Batch};
use crate::event::Event;
use crate::metrics::ComponentMetrics;
use crate::topology::BoxError;

/// Bytes before each record's payload.
const HEADER: usize = 12;
/// Largest record accepted when reading (anything larger is corruption).
const MAX_RECORD: u32 = 1 << 30;
/// How often the reader persists its position at most.
const POSITION_EVERY: Duration = Duration::from_millis(100);
/// How long a waiting thread sleeps before looking at the world again.
const POLL: Duration = Duration::from_millis(20);

/// A position in the log: segment id and byte offset in it.
type Position = (u64, u64);

/// What the writer and the reader share.
#[derive(Debug, Default)]
struct State {
    /// The segment being written and how many bytes of it are complete records.
    writing: Position,
    /// Bytes of every segment file on disk.
    disk_bytes: u64,
    /// The writer is done: nothing more will be appended.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Set when the pipeline gives up on draining (the task was dropped).
    abort: AtomicBool,
}

/// An opened disk buffer, ready to run.
pub struct DiskBuffer {
    dir: PathBuf,
    max_size: u64,
    segment_size: u64,
    start: Position,
    metrics: Arc<ComponentMetrics>,
}

/// Sets the abort flag when the buffer's task is dropped (the pipeline's drain deadline).
struct AbortOnDrop(Arc<Shared>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::SeqCst);
        self.0.changed.notify_all();
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// Ids of the segment files in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, reading where the sink left off.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, max_size: u64, metrics: Arc<ComponentMetrics>) -> io::Result<Self> {
        if max_size < 1 << 20 {
            return Err(io::Error::other("`buffer.max_size` must be at least 1MiB"));
        }
        std::fs::create_dir_all(dir)?;
        let ids = segments(dir)?;
        let saved = std::fs::read_to_string(dir.join("reader.pos"))
            .ok()
            .and_then(|text| {
                let (seg, off) = text.trim().split_once(' ')?;
                Some((seg.parse().ok()?, off.parse().ok()?))
            });
        let start = match (saved, ids.first()) {
            (Some(pos), _) => pos,
            (None, Some(&first)) => (first, 0),
            (None, None) => (0, 0),
        };
        metrics.buffer_max_bytes.store(max_size, Ordering::Relaxed);
        Ok(DiskBuffer {
            dir: dir.to_owned(),
            max_size,
            segment_size: (max_size / 8).clamp(256 << 10, 128 << 20),
            start,
            metrics,
        })
    }

    /// Runs the writer and the reader until the input closes and the sink has acknowledged
    /// everything read.
    pub async fn run(
        self,
        input: mpsc::Receiver<Batch>,
        output: mpsc::Sender<Batch>,
        when_full: WhenFull,
        sync_interval: Duration,
    ) -> Result<(), BoxError> {
        let ids = segments(&self.dir)?;
        let mut disk_bytes = 0;
        for id in &ids {
            disk_bytes += std::fs::metadata(segment_path(&self.dir, *id))?.len();
        }
        let first_new = ids
            .last()
            .map_or(self.start.0, |last| last + 1)
            .max(self.start.0);
        let backlog = count_backlog(&self.dir, self.start, &ids);
        self.metrics.buffer_events.store(backlog, Ordering::Relaxed);
        if backlog > 0 {
            tracing::info!(buffer = %self.dir.display(), events = backlog, "Disk buffer holds events from an earlier run; sending them first.");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                writing: (first_new, 0),
                disk_bytes,
                closed: false,
            }),
            changed: Condvar::new(),
            abort: AtomicBool::new(false),
        });
        // The writer's first segment exists before the reader looks for it.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, first_new))?;
        let _guard = AbortOnDrop(shared.clone());
        let writer = Writer {
            dir: self.dir.clone(),
            max_size: self.max_size,
            segment_size: self.segment_size,
            file,
            shared: shared.clone(),
            metrics: self.metrics.clone(),
        };
        let reader = Reader {
            dir: self.dir.clone(),
            at: self.start,
            shared: shared.clone(),
            metrics: self.metrics.clone(),
        };
        let w = tokio::task::spawn_blocking(move || writer.run(input, when_full, sync_interval));
        let r = tokio::task::spawn_blocking(move || reader.run(output));
        let (w, r) = tokio::join!(w, r);
        w??;
        r??;
        Ok(())
    }
}

/// Events in the valid records from `start` on (the backlog of an earlier run).
fn count_backlog(dir: &Path, start: Position, ids: &[u64]) -> u64 {
    let mut events = 0u64;
    for &id in ids.iter().filter(|&&id| id >= start.0) {
        let Ok(mut file) = File::open(segment_path(dir, id)) else {
            continue;
        };
        let mut offset = if id == start.0 { start.1 } else { 0 };
        let mut header = [0u8; HEADER];
        while file.seek(SeekFrom::Start(offset)).is_ok() && file.read_exact(&mut header).is_ok() {
            let (len, n) = (u32_at(&header, 0), u32_at(&header, 4));
            if len > MAX_RECORD {
                break;
            }
            events += u64::from(n);
            offset += (HEADER as u64) + u64::from(len);
        }
    }
    events
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

struct Writer {
    dir: PathBuf,
    max_size: u64,
    segment_size: u64,
    file: File,
    shared: Arc<Shared>,
    metrics: Arc<ComponentMetrics>,
}

impl Writer {
    fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        when_full: WhenFull,
        sync_interval: Duration,
    ) -> Result<(), BoxError> {
        let mut record = Vec::with_capacity(1 << 20);
        // Batches written but not yet synced: acknowledged upstream after the next sync.
        let mut unsynced: Vec<Batch> = Vec::new();
        let mut last_sync = Instant::now();
        loop {
            let batch = if unsynced.is_empty() {
                input.blocking_recv()
            } else {
                match input.try_recv() {
                    Ok(b) => Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if last_sync.elapsed() >= sync_interval {
                            self.sync(&mut unsynced)?;
                            last_sync = Instant::now();
                            continue;
                        }
                        std::thread::sleep(POLL.min(sync_interval));
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(batch) = batch else { break };
            if batch.is_empty() {
                continue;
            }
            encode_record(&batch.events, &mut record);
            if !self.make_room(record.len() as u64, when_full)? {
                ComponentMetrics::add(&self.metrics.buffer_discarded, batch.len() as u64);
                ComponentMetrics::add(&self.metrics.discarded, batch.len() as u64);
                continue;
            }
            self.file.write_all(&record)?;
            {
                let mut state = self.shared.state.lock().expect("buffer lock");
                state.writing.1 += record.len() as u64;
                state.disk_bytes += record.len() as u64;
                self.metrics
                    .buffer_bytes
                    .store(state.disk_bytes, Ordering::Relaxed);
            }
            self.metrics
                .buffer_events
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.shared.changed.notify_all();
            unsynced.push(batch);
            if last_sync.elapsed() >= sync_interval {
                self.sync(&mut unsynced)?;
                last_sync = Instant::now();
            }
        }
        self.sync(&mut unsynced)?;
        self.shared.state.lock().expect("buffer lock").closed = true;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Syncs the segment, then acknowledges what it holds.
    fn sync(&mut self, unsynced: &mut Vec<Batch>) -> io::Result<()> {
        if !unsynced.is_empty() {
            self.file.sync_data()?;
            unsynced.clear();
        }
        Ok(())
    }

    /// Waits until `len` more bytes fit (rolling the segment so the reader can free space);
    /// false when the record is to be dropped instead.
    fn make_room(&mut self, len: u64, when_full: WhenFull) -> io::Result<bool> {
        let shared = self.shared.clone();
        let mut state = shared.state.lock().expect("buffer lock");
        if state.writing.1 > 0 && state.writing.1 + len > self.segment_size {
            state = self.roll(state)?;
        }
        loop {
            // An empty buffer takes any record, however large.
            if state.disk_bytes + len <= self.max_size || state.disk_bytes == 0 {
                return Ok(true);
            }
            if when_full == WhenFull::DropNewest {
                return Ok(false);
            }
            if shared.abort.load(Ordering::SeqCst) {
                return Err(io::Error::other("aborted while the buffer was full"));
            }
            if state.writing.1 > 0 {
                // Let the reader finish this segment and delete it.
                state = self.roll(state)?;
            }
            state = shared
                .changed
                .wait_timeout(state, POLL)
                .expect("buffer lock")
                .0;
        }
    }

    /// Starts the next segment.
    fn roll<'a>(
        &mut self,
        mut state: std::sync::MutexGuard<'a, State>,
    ) -> io::Result<std::sync::MutexGuard<'a, State>> {
        self.file.sync_data()?;
        let next = state.writing.0 + 1;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next))?;
        state.writing = (next, 0);
        self.shared.changed.notify_all();
        Ok(state)
    }
}

/// One record: header and the events as JSON Lines.
fn encode_record(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER]);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        e.encode_json(out);
    }
    let len = (out.len() - HEADER) as u32;
    let count = (events.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&count);
    crc.update(&out[HEADER..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&count);
    out[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Why a record could not be read.
enum ReadOutcome {
    /// A good record: its events and where the next one starts.
    Record(Vec<Event>, u64),
    /// Nothing more in this segment yet.
    End,
    /// The rest of the segment cannot be trusted.
    Corrupt(String),
}

struct Reader {
    dir: PathBuf,
    at: Position,
    shared: Arc<Shared>,
    metrics: Arc<ComponentMetrics>,
}

impl Reader {
    fn run(mut self, output: mpsc::Sender<Batch>) -> Result<(), BoxError> {
        let mut tracker: AckTracker<(Position, u64)> = AckTracker::new();
        let mut file: Option<(u64, File)> = None;
        let mut acked = self.at;
        let mut saved = self.at;
        let mut last_save = Instant::now();
        loop {
            if self.shared.abort.load(Ordering::SeqCst) {
                break;
            }
            tracker.poll(|(pos, events)| {
                acked = pos;
                ComponentMetrics::sub(&self.metrics.buffer_events, events);
            });
            if acked != saved && last_save.elapsed() >= POSITION_EVERY {
                self.save(acked)?;
                saved = acked;
                last_save = Instant::now();
            }
            let (writing, closed) = {
                let s = self.shared.state.lock().expect("buffer lock");
                (s.writing, s.closed)
            };
            // How far this segment may be read: complete records only in the live one.
            let limit = if self.at.0 == writing.0 {
                Some(writing.1)
            } else {
                None
            };
            if file.as_ref().is_none_or(|(id, _)| *id != self.at.0) {
                file = match File::open(segment_path(&self.dir, self.at.0)) {
                    Ok(f) => Some((self.at.0, f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if self.at.0 < writing.0 {
                            self.next_segment(writing.0);
                            continue;
                        }
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
            }
            let outcome = match &mut file {
                Some((_, f)) => read_record(f, self.at.1, limit),
                None => ReadOutcome::End,
            };
            match outcome {
                ReadOutcome::Record(events, next) => {
                    let n = events.len() as u64;
                    self.at.1 = next;
                    let mut batch = Batch::new(events);
                    batch.notifiers.push(tracker.notifier((self.at, n)));
                    if !self.send(&output, batch) {
                        break;
                    }
                }
                ReadOutcome::Corrupt(why) => {
                    ComponentMetrics::add(&self.metrics.buffer_corrupted, 1);
                    ComponentMetrics::add(&self.metrics.errors, 1);
                    tracing::error!(buffer = %self.dir.display(), segment = self.at.0, offset = self.at.1, reason = %why, "Corrupted disk buffer record; skipping the rest of this segment.");
                    self.next_segment(writing.0);
                    file = None;
                }
                ReadOutcome::End if self.at.0 < writing.0 => {
                    self.next_segment(writing.0);
                    file = None;
                }
                ReadOutcome::End if closed => break,
                ReadOutcome::End => {
                    let state = self.shared.state.lock().expect("buffer lock");
                    if state.writing == writing && !state.closed {
                        let _ = self.shared.changed.wait_timeout(state, POLL);
                    }
                }
            }
        }
        drop(output);
        let metrics = self.metrics.clone();
        let shared = self.shared.clone();
        // Wait for the sink to acknowledge what it holds, unless the pipeline gave up.
        while tracker.outstanding() > 0 && !shared.abort.load(Ordering::SeqCst) {
            tracker.poll(|(pos, events)| {
                acked = pos;
                ComponentMetrics::sub(&metrics.buffer_events, events);
            });
            std::thread::sleep(POLL);
        }
        tracker.poll(|(pos, _)| acked = pos);
        self.save(acked)?;
        Ok(())
    }

    /// Hands a batch to the sink, waiting while it is busy; false when it is gone.
    fn send(&self, output: &mpsc::Sender<Batch>, mut batch: Batch) -> bool {
        loop {
            match output.try_send(batch) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(b)) => {
                    if self.shared.abort.load(Ordering::SeqCst) {
                        return false;
                    }
                    batch = b;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Moves to the next segment that exists (or the one being written).
    fn next_segment(&mut self, writing: u64) {
        let next = segments(&self.dir)
            .ok()
            .and_then(|ids| ids.into_iter().find(|&id| id > self.at.0))
            .unwrap_or(writing)
            .min(writing);
        self.at = (next, 0);
    }

    /// Persists the acknowledged position and deletes the segments before it.
    fn save(&self, acked: Position) -> io::Result<()> {
        let tmp = self.dir.join("reader.pos.tmp");
        std::fs::write(&tmp, format!("{} {}\n", acked.0, acked.1))?;
        std::fs::rename(&tmp, self.dir.join("reader.pos"))?;
        let mut freed = 0;
        for id in segments(&self.dir)?.into_iter().filter(|&id| id < acked.0) {
            let path = segment_path(&self.dir, id);
            freed += std::fs::metadata(&path).map_or(0, |m| m.len());
            std::fs::remove_file(&path)?;
        }
        if freed > 0 {
            let mut state = self.shared.state.lock().expect("buffer lock");
            state.disk_bytes = state.disk_bytes.saturating_sub(freed);
            self.metrics
                .buffer_bytes
                .store(state.disk_bytes, Ordering::Relaxed);
            drop(state);
            self.shared.changed.notify_all();
        }
        Ok(())
    }
}

/// Reads the record at `offset`; `limit` bounds how far the file holds complete records
/// (the segment being written), `None` for a finished segment.
fn read_record(file: &mut File, offset: u64, limit: Option<u64>) -> ReadOutcome {
    let available = match limit {
        Some(l) => l,
        None => match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return ReadOutcome::Corrupt(e.to_string()),
        },
    };
    if offset >= available {
        return ReadOutcome::End;
    }
    let finished = limit.is_none();
    if available - offset < HEADER as u64 {
        return if finished {
            ReadOutcome::Corrupt(format!("{} stray bytes at the end", available - offset))
        } else {
            ReadOutcome::End
        };
    }
    let mut header = [0u8; HEADER];
    if let Err(e) = file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut header))
    {
        return ReadOutcome::Corrupt(e.to_string());
    }
    let (len, count, crc) = (u32_at(&header, 0), u32_at(&header, 4), u32_at(&header, 8));
    if len > MAX_RECORD {
        return ReadOutcome::Corrupt(format!("impossible record length {len}"));
    }
    let end = offset + HEADER as u64 + u64::from(len);
    if end > available {
        return if finished {
            ReadOutcome::Corrupt(format!(
                "record of {len} bytes cut short at {} bytes",
                available - offset - HEADER as u64
            ))
        } else {
            ReadOutcome::End
        };
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = file.read_exact(&mut payload) {
        return ReadOutcome::Corrupt(e.to_string());
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..8]);
    hasher.update(&payload);
    if hasher.finalize() != crc {
        return ReadOutcome::Corrupt("checksum mismatch".into());
    }
    let mut events = Vec::with_capacity(count as usize);
    for line in payload.split(|&b| b == b'\n') {
        match sonic_rs::from_slice::<Event>(line) {
            Ok(e) => events.push(e),
            Err(e) => return ReadOutcome::Corrupt(format!("undecodable event: {e}")),
        }
    }
    ReadOutcome::Record(events, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event {
            reason: format!("R{i}").into(),
            message: format!("message {i}"),
            count: 1,
            ..Event::default()
        }
    }

    /// Writes `batches` batches of `per` events through a buffer and returns what the sink
    /// side read, acknowledging the first `ack` batches only.
    async fn pass(dir: &Path, batches: usize, per: usize, ack: usize) -> Vec<Vec<Event>> {
        let metrics = Arc::new(ComponentMetrics::default());
        let buffer = DiskBuffer::open(dir, 64 << 20, metrics).unwrap();
        let (in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let runner = tokio::spawn(buffer.run(in_rx, out_tx, WhenFull::Block, Duration::ZERO));
        let feeder = tokio::spawn(async move {
            for b in 0..batches {
                let events = (0..per).map(|i| event(b * per + i)).collect();
                in_tx.send(Batch::new(events)).await.unwrap();
            }
        });
        let mut got = Vec::new();
        let mut kept = Vec::new();
        while let Some(batch) = out_rx.recv().await {
            got.push(batch.events.clone());
            if got.len() > ack {
                // Not acknowledged: held until the run is abandoned.
                kept.push(batch);
                if got.len() == batches {
                    break;
                }
            }
        }
        feeder.await.unwrap();
        if kept.is_empty() {
            runner.await.unwrap().unwrap();
        } else {
            // A crash: the task is dropped with batches unacknowledged.
            runner.abort();
            let _ = runner.await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unacknowledged_records_are_read_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = pass(dir.path(), 10, 50, 4).await;
        assert_eq!(first.len(), 10);
        // Everything acknowledged this time; the first run's last six batches come first.
        let second = pass(dir.path(), 2, 50, usize::MAX).await;
        let reasons: Vec<String> = second
            .iter()
            .flatten()
            .map(|e| e.reason.to_string())
            .collect();
        assert_eq!(reasons.len(), 8 * 50, "six old batches, then two new");
        assert_eq!(reasons[0], "R200");
        assert_eq!(reasons[6 * 50 - 1], "R499");
        assert_eq!(reasons[6 * 50], "R0", "the new run's own events follow");
        // A third run has nothing left over.
        let third = pass(dir.path(), 1, 5, usize::MAX).await;
        assert_eq!(third.iter().flatten().count(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupted_tail_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let _ = pass(dir.path(), 6, 10, 0).await;
        // Damage the last record of the segment, then append half a record.
        let id = segments(dir.path()).unwrap()[0];
        let path = segment_path(dir.path(), id);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0xff;
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&path, bytes).unwrap();

        let metrics = Arc::new(ComponentMetrics::default());
        let buffer = DiskBuffer::open(dir.path(), 64 << 20, metrics.clone()).unwrap();
        let (in_tx, in_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        drop(in_tx);
        let runner = tokio::spawn(buffer.run(in_rx, out_tx, WhenFull::Block, Duration::ZERO));
        let mut read = 0;
        while let Some(batch) = out_rx.recv().await {
            read += batch.len();
        }
        runner.await.unwrap().unwrap();
        assert_eq!(read, 50, "five good records, the damaged one skipped");
        assert_eq!(ComponentMetrics::get(&metrics.buffer_corrupted), 1);
    }
}
