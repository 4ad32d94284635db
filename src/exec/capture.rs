//! Bounded output capture: a unit's output (stdout and stderr share one pipe), read
//! into memory and the log.
//!
//! This module owns the memory bound and the log cap. In memory the runner keeps the
//! first `head_bytes` and a ring of the last `tail_bytes`; everything else is only counted.
//! The same stream goes to disk until `log_max_bytes`, then a single
//! `[log truncated at N bytes]` line is written and further output is only counted: to
//! the run's shared log (`runlog`, written at most `FLUSH_AFTER` after it was printed),
//! or to a file of the unit's own when the unit has no run log.
//!
//! The reader never stops draining the pipe while the child is alive (a child blocked on
//! a full pipe would look like a hang), so a unit that prints gigabytes costs the runner
//! one bounded read buffer, the head, the ring and a buffered writer: nothing more.

use std::io;
use std::path::Path;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::runlog::{FLUSH_AFTER, FLUSH_BYTES, RunLog};

/// Size of each read from a pipe (and of the log writer's buffer).
const CHUNK: usize = 64 * 1024;

/// What the runner kept of a unit's combined stdout and stderr.
///
/// Invariant: `head.len() + tail.len() + omitted_bytes == total_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The first bytes of output (at most `head_bytes`).
    pub head: Vec<u8>,
    /// The last bytes of output that did not fit in `head` (at most `tail_bytes`).
    pub tail: Vec<u8>,
    /// Every byte the unit wrote to stdout and stderr.
    pub total_bytes: u64,
    /// Bytes between `head` and `tail` that were counted but not kept.
    pub omitted_bytes: u64,
}

impl CapturedOutput {
    /// The output as text: `head`, then `"\n... N bytes omitted ...\n"` when something
    /// was dropped, then `tail`. Invalid UTF-8 is replaced (lossy).
    pub fn text_lossy(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        let mut tail: &[u8] = &self.tail;
        if self.omitted_bytes > 0 {
            text.push_str(&format!("\n... {} bytes omitted ...\n", self.omitted_bytes));
            // The ring may start in the middle of a UTF-8 sequence: skip the orphaned
            // continuation bytes rather than print replacement characters.
            let skip = tail
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            tail = &tail[skip..];
        }
        text.push_str(&String::from_utf8_lossy(tail));
        text
    }

    /// True when every byte of output is in `head` and `tail`.
    pub fn is_complete(&self) -> bool {
        self.omitted_bytes == 0
    }
}

/// A fixed-capacity ring of the most recent bytes.
#[derive(Debug)]
struct Ring {
    cap: usize,
    /// Grows to `cap`, then is overwritten in place starting at `start`.
    buf: Vec<u8>,
    /// Index of the oldest byte once `buf` is full (0 before).
    start: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            cap,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Appends `data`, returning how many older bytes fell out of the ring.
    fn push(&mut self, mut data: &[u8]) -> u64 {
        let cap = self.cap;
        if data.len() >= cap {
            let evicted = (self.buf.len() + data.len() - cap) as u64;
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - cap..]);
            self.start = 0;
            return evicted;
        }
        if self.buf.len() < cap {
            let fill = (cap - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..fill]);
            data = &data[fill..];
            if data.is_empty() {
                return 0;
            }
        }
        // Full: overwrite the oldest bytes, wrapping at most once (data.len() < cap).
        let first = (cap - self.start).min(data.len());
        self.buf[self.start..self.start + first].copy_from_slice(&data[..first]);
        let rest = data.len() - first;
        self.buf[..rest].copy_from_slice(&data[first..]);
        self.start = (self.start + data.len()) % cap;
        data.len() as u64
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.start..]);
        out.extend_from_slice(&self.buf[..self.start]);
        out
    }
}

/// The in-memory half of the capture: head, tail ring and counters.
#[derive(Debug)]
pub(crate) struct Capture {
    head_limit: usize,
    head: Vec<u8>,
    tail: Ring,
    total: u64,
    omitted: u64,
}

impl Capture {
    /// A capture keeping at most `head_bytes` + `tail_bytes` bytes.
    pub fn new(head_bytes: usize, tail_bytes: usize) -> Self {
        Capture {
            head_limit: head_bytes,
            // Grows with the output: most units print little, and a buffer reserved up
            // front is memory touched (and zeroed by the kernel) for every unit.
            head: Vec::new(),
            tail: Ring::new(tail_bytes),
            total: 0,
            omitted: 0,
        }
    }

    /// Records one chunk of output.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let take = (self.head_limit - self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..take]);
        self.omitted += self.tail.push(&data[take..]);
    }

    /// The captured output.
    pub fn finish(self) -> CapturedOutput {
        CapturedOutput {
            head: self.head,
            tail: self.tail.to_vec(),
            total_bytes: self.total,
            omitted_bytes: self.omitted,
        }
    }
}

/// The on-disk half of the capture: a log file capped at `max` bytes of output.
pub(crate) struct LogFile {
    writer: Option<BufWriter<tokio::fs::File>>,
    max: u64,
    written: u64,
    last_byte: Option<u8>,
    truncated: bool,
}

impl LogFile {
    /// Creates (or truncates) the log at `path`, creating its parent directories.
    pub async fn create(path: &Path, max: u64) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating log directory {}: {e}", parent.display()),
                )
            })?;
        }
        let file = tokio::fs::File::create(path).await.map_err(|e| {
            io::Error::new(e.kind(), format!("creating log {}: {e}", path.display()))
        })?;
        Ok(LogFile {
            writer: Some(BufWriter::with_capacity(CHUNK, file)),
            max,
            written: 0,
            last_byte: None,
            truncated: false,
        })
    }

    /// Appends a chunk, up to the cap. A write error disables the log (the unit's result
    /// does not depend on its log) and is reported once through `tracing`.
    pub async fn write(&mut self, data: &[u8]) {
        if self.truncated || data.is_empty() {
            return;
        }
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let room = usize::try_from(self.max - self.written).unwrap_or(usize::MAX);
        let part = &data[..room.min(data.len())];
        let mut result = writer.write_all(part).await;
        self.written += part.len() as u64;
        if let Some(b) = part.last() {
            self.last_byte = Some(*b);
        }
        if result.is_ok() && part.len() < data.len() {
            self.truncated = true;
            let newline = if matches!(self.last_byte, Some(b'\n') | None) {
                ""
            } else {
                "\n"
            };
            let marker = format!("{newline}[log truncated at {} bytes]\n", self.max);
            result = writer.write_all(marker.as_bytes()).await;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "unit log write failed; further output is not logged");
            self.writer = None;
        }
    }

    /// Flushes buffered output to the file.
    pub async fn finish(&mut self) {
        if let Some(mut writer) = self.writer.take()
            && let Err(e) = writer.flush().await
        {
            tracing::warn!(error = %e, "unit log flush failed");
        }
    }
}

/// Where the capture writes a unit's output on disk.
pub(crate) enum LogSink {
    /// A file of the unit's own (capped at `log_max_bytes`).
    File(LogFile),
    /// Records in the run's shared log (see `runlog`).
    Run(RunSink),
}

impl LogSink {
    async fn write(&mut self, data: &[u8]) {
        match self {
            LogSink::File(f) => f.write(data).await,
            LogSink::Run(r) => r.push(data),
        }
    }

    fn pending(&self) -> usize {
        match self {
            LogSink::File(_) => 0,
            LogSink::Run(r) => r.pending.len(),
        }
    }

    fn flush(&mut self) {
        if let LogSink::Run(r) = self {
            r.flush();
        }
    }

    async fn finish(&mut self) {
        match self {
            LogSink::File(f) => f.finish().await,
            LogSink::Run(r) => r.flush(),
        }
    }
}

/// A unit's output going to the run log: pending bytes, and the segments written.
pub(crate) struct RunSink {
    log: Arc<RunLog>,
    label: String,
    max: u64,
    written: u64,
    truncated: bool,
    failed: bool,
    pending: Vec<u8>,
    /// `(offset, length)` of every record's bytes in the run log.
    pub(crate) segments: Vec<(u64, u64)>,
}

impl RunSink {
    /// Output of the unit `label` to `log`, at most `max` bytes of it.
    pub(crate) fn new(log: Arc<RunLog>, label: String, max: u64) -> Self {
        RunSink {
            log,
            label,
            max,
            written: 0,
            truncated: false,
            failed: false,
            pending: Vec::new(),
            segments: Vec::new(),
        }
    }

    /// The run log.
    pub(crate) fn log(&self) -> &Arc<RunLog> {
        &self.log
    }

    fn push(&mut self, data: &[u8]) {
        if self.truncated || self.failed || data.is_empty() {
            return;
        }
        let room = usize::try_from(self.max - self.written).unwrap_or(usize::MAX);
        let part = &data[..room.min(data.len())];
        self.pending.extend_from_slice(part);
        self.written += part.len() as u64;
        if part.len() < data.len() {
            self.truncated = true;
            let newline = if self.pending.last().is_none_or(|b| *b == b'\n') {
                ""
            } else {
                "\n"
            };
            let marker = format!("{newline}[log truncated at {} bytes]\n", self.max);
            self.pending.extend_from_slice(marker.as_bytes());
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.log.append(&self.label, &self.pending) {
            Ok(offset) => self.segments.push((offset, self.pending.len() as u64)),
            Err(e) => {
                tracing::warn!(error = %e, "run log write failed; further output is not logged");
                self.failed = true;
            }
        }
        self.pending.clear();
    }
}

/// What woke the reader.
enum Read {
    Flush,
    Output(io::Result<usize>),
    Cancelled,
}

/// Reads the unit's output (stdout and stderr share its pipe) until end-of-file, or
/// until `cancel` fires (used when a leftover process we could not kill still holds the
/// pipe open). Every chunk goes to the in-memory capture and to the log.
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    mut output: R,
    mut capture: Capture,
    mut log: LogSink,
    cancel: CancellationToken,
) -> (CapturedOutput, LogSink) {
    // The read buffer starts small and doubles while reads fill it, up to CHUNK: a unit
    // that prints a line costs no 64 KiB of zeroed memory, a flood is read in 64 KiB.
    let mut buf = ReadBuf::default();
    // When pending run-log output must be written (see `runlog::FLUSH_AFTER`).
    let mut flush_at: Option<Instant> = None;
    loop {
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => Read::Cancelled,
            () = sleep_until_some(flush_at), if flush_at.is_some() => Read::Flush,
            r = buf.read(&mut output) => Read::Output(r),
        };
        let chunk = match read {
            Read::Cancelled => break,
            Read::Flush => {
                log.flush();
                flush_at = None;
                continue;
            }
            // A read error on a pipe (EIO and the like) ends the output like EOF does.
            Read::Output(Ok(0) | Err(_)) => break,
            Read::Output(Ok(_)) => buf.data(),
        };
        capture.push(chunk);
        log.write(chunk).await;
        if log.pending() >= FLUSH_BYTES {
            log.flush();
            flush_at = None;
        } else if log.pending() > 0 && flush_at.is_none() {
            flush_at = Some(Instant::now() + FLUSH_AFTER);
        }
    }
    log.finish().await;
    (capture.finish(), log)
}

/// A read buffer that grows from [`READ_START`] to [`CHUNK`] while reads fill it.
#[derive(Default)]
struct ReadBuf {
    buf: Vec<u8>,
}

/// The first read buffer of a stream.
const READ_START: usize = 4 * 1024;

impl ReadBuf {
    /// Read what is available into the buffer (replacing what was there); the count.
    async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let cap = self.buf.capacity();
        if cap == 0 {
            self.buf.reserve_exact(READ_START);
        } else if self.buf.len() == cap && cap < CHUNK {
            self.buf.reserve_exact(cap);
        }
        self.buf.clear();
        // Reads into the spare capacity: nothing is zeroed first.
        r.read_buf(&mut self.buf).await
    }

    /// The bytes of the last read.
    fn data(&self) -> &[u8] {
        &self.buf
    }
}

/// Sleeps until `at` (never when `None`; the caller guards that).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive model of the capture: keep everything, then cut.
    fn model(all: &[u8], head: usize, tail: usize) -> CapturedOutput {
        let h = head.min(all.len());
        let rest = &all[h..];
        let t = tail.min(rest.len());
        CapturedOutput {
            head: all[..h].to_vec(),
            tail: rest[rest.len() - t..].to_vec(),
            total_bytes: all.len() as u64,
            omitted_bytes: (rest.len() - t) as u64,
        }
    }

    #[test]
    fn matches_the_naive_model_for_many_chunkings() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for (head, tail) in [
            (0, 0),
            (0, 7),
            (7, 0),
            (10, 10),
            (100, 33),
            (6000, 6000),
            (1, 4999),
        ] {
            for chunk in [1, 3, 7, 32, 33, 64, 999, 5000] {
                let mut c = Capture::new(head, tail);
                for piece in data.chunks(chunk) {
                    c.push(piece);
                }
                let got = c.finish();
                assert_eq!(
                    got,
                    model(&data, head, tail),
                    "head {head} tail {tail} chunk {chunk}"
                );
                assert_eq!(
                    got.head.len() as u64 + got.tail.len() as u64 + got.omitted_bytes,
                    got.total_bytes
                );
            }
        }
    }

    #[test]
    fn text_lossy_marks_the_gap() {
        let mut c = Capture::new(4, 4);
        c.push(b"head-middle-tail");
        let out = c.finish();
        assert_eq!(out.text_lossy(), "head\n... 8 bytes omitted ...\ntail");
        assert!(!out.is_complete());

        let mut c = Capture::new(4, 40);
        c.push(b"head and all the rest");
        let out = c.finish();
        assert_eq!(out.text_lossy(), "head and all the rest");
        assert!(out.is_complete());
    }

    #[test]
    fn text_lossy_skips_a_split_utf8_sequence_at_the_ring_start() {
        let mut c = Capture::new(0, 3);
        c.push("xé€".as_bytes()); // x, é (2 bytes), € (3 bytes): the ring holds the €
        assert_eq!(c.finish().text_lossy(), "\n... 3 bytes omitted ...\n€");
        let mut c = Capture::new(0, 4);
        c.push("xé€".as_bytes()); // ring = last byte of é + €
        assert_eq!(c.finish().text_lossy(), "\n... 2 bytes omitted ...\n€");
    }

    #[tokio::test]
    async fn log_is_capped_with_one_marker_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/unit.log");
        let mut log = LogFile::create(&path, 10).await.unwrap();
        log.write(b"12345").await;
        log.write(b"67890abc").await;
        log.write(b"more and more").await;
        log.finish().await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "1234567890\n[log truncated at 10 bytes]\n");
    }

    #[tokio::test]
    async fn pump_reads_every_chunk_to_the_end_and_counts_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.log");
        let log = LogFile::create(&path, 1 << 20).await.unwrap();
        let out: &[u8] = b"out-out-out";
        let err: &[u8] = b"err";
        // Two reads' worth: the first part, then the rest.
        let (got, _) = pump(
            out.chain(err),
            Capture::new(100, 100),
            LogSink::File(log),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(got.total_bytes, 14);
        let text = got.text_lossy();
        assert!(
            text.contains("out-out-out") && text.contains("err"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap().len(), 14);
    }

    #[tokio::test]
    async fn pump_stops_when_cancelled_even_if_a_pipe_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(&dir.path().join("u.log"), 100)
            .await
            .unwrap();
        let (_writer_kept_open, reader) = tokio::io::duplex(64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(pump(
            reader,
            Capture::new(10, 10),
            LogSink::File(log),
            cancel.clone(),
        ));
        cancel.cancel();
        let (got, _) = task.await.unwrap();
        assert_eq!(got.total_bytes, 0);
    }
}
