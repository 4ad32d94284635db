//! Events as JSON lines: `.runner/runs/<id>/events.jsonl` and `--events PATH`.
//!
//! One line per event, in `seq` order. Lines are flushed as soon as the channel has
//! no more events waiting, so a crash loses at most what was in flight.

use std::io::Write;
use std::path::PathBuf;

use crate::bus::Subscription;

/// Write every event of `rx` to each of `paths` until the bus closes.
pub async fn write_events(mut rx: Subscription, paths: Vec<PathBuf>) -> std::io::Result<()> {
    let mut files = Vec::new();
    for p in &paths {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        files.push(std::io::BufWriter::new(std::fs::File::create(p)?));
    }
    while let Some(event) = rx.recv().await {
        let mut line = serde_json::to_vec(&*event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        for f in &mut files {
            f.write_all(&line)?;
        }
        if rx.is_empty() {
            for f in &mut files {
                f.flush()?;
            }
        }
    }
    for f in &mut files {
        f.flush()?;
    }
    Ok(())
}
