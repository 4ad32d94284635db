//! One append-only output log per run, shared by its units: no file is created per unit.
//!
//! Every piece of a unit's output is appended as a record: a header line
//! `>>> <label> +<length>` (the label is the unit id and attempt), then exactly
//! `<length>` bytes of output, then a newline if the output did not end with one. A
//! record is written (`pwrite`, into the page cache) at most [`FLUSH_AFTER`] after its
//! first byte was printed, so `tail -f output.log` shows a hanging unit while it runs,
//! and what was written survives a SIGKILL of the runner. Where a unit's output is in
//! the file is its list of segments (offset and length of each record's bytes): see
//! [`LogLocation`].
//!
//! A unit whose output needs a file of its own (it failed, leaked, or printed more than
//! the capture keeps in memory) gets one at its end, assembled from its segments: the
//! cost of a file creation is paid by the few units someone will read.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

/// Longest time output waits in memory before it is written to the run log.
pub const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Output pending for one unit that is written at once, without waiting.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// The shared output log of a run (see the module docs).
pub struct RunLog {
    path: PathBuf,
    file: File,
    /// The end of the file: where the next record goes.
    end: Mutex<u64>,
}

impl fmt::Debug for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLog").field("path", &self.path).finish()
    }
}

impl PartialEq for RunLog {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for RunLog {}

impl RunLog {
    /// The run log at `path`, shared: every caller naming the same path while it is open
    /// gets the same log (so concurrent layers append to one file without overlapping).
    /// Created (with its directory) on first use; an existing file is appended to.
    ///
    /// # Errors
    ///
    /// The error of creating the directory or the file, naming the path.
    pub fn open(path: &Path) -> io::Result<Arc<RunLog>> {
        static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<RunLog>>>> =
            LazyLock::new(Mutex::default);
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = open.get(path).and_then(Weak::upgrade) {
            return Ok(log);
        }
        open.retain(|_, log| log.strong_count() > 0);
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("creating {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(named)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .read(true)
            .truncate(false)
            .open(path)
            .map_err(named)?;
        let end = file.metadata().map_err(named)?.len();
        let log = Arc::new(RunLog {
            path: path.to_path_buf(),
            file,
            end: Mutex::new(end),
        });
        open.insert(path.to_path_buf(), Arc::downgrade(&log));
        Ok(log)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record of `data` for `label`; returns the offset of its first data byte.
    pub(crate) fn append(&self, label: &str, data: &[u8]) -> io::Result<u64> {
        let header = format!(">>> {label} +{}\n", data.len());
        let newline = !data.ends_with(b"\n");
        let mut record = Vec::with_capacity(header.len() + data.len() + 1);
        record.extend_from_slice(header.as_bytes());
        record.extend_from_slice(data);
        if newline {
            record.push(b'\n');
        }
        let mut end = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        let at = *end;
        self.file.write_all_at(&record, at)?;
        *end += record.len() as u64;
        Ok(at + header.len() as u64)
    }

    /// Copies `segments` of this log, in order, into a new file at `path`.
    pub(crate) fn extract(&self, segments: &[(u64, u64)], path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let out = File::create(path)?;
        let mut at = 0;
        let mut buf = vec![0u8; 64 * 1024];
        for &(offset, len) in segments {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                self.file.read_exact_at(&mut buf[..n], offset + done)?;
                out.write_all_at(&buf[..n], at)?;
                done += n as u64;
                at += n as u64;
            }
        }
        Ok(())
    }
}

/// Where a unit attempt's output can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// A file holding exactly the unit's output.
    File(PathBuf),
    /// Parts of the run log: `(offset, length)` of each piece, in order.
    Segments {
        /// The run log.
        path: PathBuf,
        /// The pieces.
        segments: Vec<(u64, u64)>,
    },
}

impl fmt::Display for LogLocation {
    /// `PATH` for a file; `PATH#OFFSET+LENGTH,OFFSET+LENGTH…` for parts of the run log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLocation::File(path) => write!(f, "{}", path.display()),
            LogLocation::Segments { path, segments } => {
                write!(f, "{}#", path.display())?;
                for (i, (offset, len)) in segments.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{offset}+{len}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_and_segments_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/x/output.log");
        let log = RunLog::open(&path).unwrap();
        assert!(Arc::ptr_eq(&log, &RunLog::open(&path).unwrap()));
        let a = log.append("l/c/a #1", b"hello ").unwrap();
        let b = log.append("l/c/b #1", b"other\n").unwrap();
        let c = log.append("l/c/a #1", b"world").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            ">>> l/c/a #1 +6\nhello \n>>> l/c/b #1 +6\nother\n>>> l/c/a #1 +5\nworld\n"
        );
        let out = dir.path().join("a.log");
        log.extract(&[(a, 6), (c, 5)], &out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello world");
        assert_eq!(&text[b as usize..b as usize + 6], "other\n");
        let loc = LogLocation::Segments {
            path: path.clone(),
            segments: vec![(a, 6), (c, 5)],
        };
        assert!(
            loc.to_string()
                .ends_with(&format!("output.log#{a}+6,{c}+5"))
        );
    }
}
