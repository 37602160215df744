//! The disk spool (`[logship] spool`): append-only segment files ([`super::segment`]'s
//! format) in one directory, holding formatted messages the memory queue could not keep
//! while the collector was away, and whatever was undelivered at exit. Segments are replayed
//! oldest first; a segment file is deleted only once every record of it was acknowledged.
//! Leftover segments of a previous run are the oldest backlog of this one. The bound
//! (`spool_bytes`) is kept by deleting the oldest segment not being replayed; its lines are
//! counted as dropped.
//!
//! Writes are buffered and flushed when a segment is closed, when it is read back, and at
//! exit ([`Spool::sync`], which also asks the disk to keep them): a SIGTERM loses nothing,
//! a SIGKILL of muster can lose the buffer (64 KiB at most), a torn record is skipped.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::segment::{self, End};

/// Ids given to spooled messages in flight, apart from the memory queue's sequence numbers.
pub const KEY: u64 = 1 << 63;

/// Whether an id handed to the RELP client is a spooled message's.
pub fn is_key(id: u64) -> bool {
    id & KEY != 0
}

/// Segment ids are allocated this far apart, so that what is undelivered at exit can be
/// written into a segment that sorts between the replayed ones and the backlog.
const ID_STEP: u64 = 1 << 20;

#[derive(Debug)]
struct Seg {
    id: u64,
    bytes: u64,
    /// Records, when known (counted when written, or when read back).
    records: Option<u64>,
    /// Every record was read back and handed out for sending.
    handed: bool,
    /// Records handed out and not acknowledged yet.
    unacked: u64,
}

/// The spool directory, open.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    /// Oldest first; the last is the one written when `writer` is set.
    segs: VecDeque<Seg>,
    writer: Option<BufWriter<File>>,
    next_id: u64,
    /// Bytes of every segment file.
    bytes: u64,
    /// Records read back, not handed out yet: (key, message).
    reading: VecDeque<(u64, Vec<u8>)>,
    next_key: u64,
    /// Every key handed out or read back and not acknowledged, with its segment's id.
    keys: BTreeMap<u64, u64>,
}

/// What a directory held when the spool was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftover {
    /// Segment files of an earlier run.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl Spool {
    /// Opens (creating it if need be) the spool in `dir`, bounded to `max_bytes`; earlier
    /// segments become the backlog.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Spool, Leftover)> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some(id) = segment::parse_name(name) {
                found.push((id, entry.metadata()?.len()));
            } else if name.ends_with(".seg.tmp") {
                // A rewrite cut short at exit: the segment it was to replace is still there.
                let _ = fs::remove_file(entry.path());
            }
        }
        found.sort_unstable();
        let segs: VecDeque<Seg> = found
            .iter()
            .map(|&(id, bytes)| Seg {
                id,
                bytes,
                records: None,
                handed: false,
                unacked: 0,
            })
            .collect();
        let bytes = found.iter().map(|s| s.1).sum();
        let last = found.last().map_or(0, |s| s.0);
        let leftover = Leftover {
            segments: found.len(),
            bytes,
        };
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_max: (max_bytes / 8).clamp(64 << 10, 16 << 20),
            segs,
            writer: None,
            next_id: (last / ID_STEP + 1) * ID_STEP,
            bytes,
            reading: VecDeque::new(),
            next_key: KEY,
            keys: BTreeMap::new(),
        };
        Ok((spool, leftover))
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment::file_name(id))
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether records wait to be handed out (they are older than anything in memory).
    pub fn has_backlog(&self) -> bool {
        !self.reading.is_empty() || self.segs.iter().any(|s| !s.handed)
    }

    /// Appends a message; returns how many lines the bound made it drop (oldest segments).
    pub fn append(&mut self, msg: &[u8]) -> io::Result<u64> {
        let full = self
            .segs
            .back()
            .is_some_and(|s| s.bytes >= self.segment_max);
        if self.writer.is_none() || full {
            self.close_writer()?;
            let id = self.next_id;
            self.next_id += ID_STEP;
            self.create(id)?;
        }
        let mut rec = Vec::with_capacity(msg.len() + segment::RECORD_HEAD);
        segment::encode(&msg[..msg.len().min(segment::MAX_RECORD)], &mut rec);
        if let Some(w) = &mut self.writer {
            w.write_all(&rec)?;
        }
        if let Some(s) = self.segs.back_mut() {
            s.bytes += rec.len() as u64;
            s.records = Some(s.records.unwrap_or(0) + 1);
        }
        self.bytes += rec.len() as u64;
        self.keep_bound()
    }

    /// Starts segment `id` (the last of `segs`) with its header.
    fn create(&mut self, id: u64) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(64 << 10, File::create(self.path(id))?);
        w.write_all(segment::HEADER)?;
        self.writer = Some(w);
        let bytes = segment::HEADER.len() as u64;
        self.segs.push_back(Seg {
            id,
            bytes,
            records: Some(0),
            handed: false,
            unacked: 0,
        });
        self.bytes += bytes;
        Ok(())
    }

    fn close_writer(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// Deletes the oldest segments not being replayed nor written until the spool is within
    /// its bound; returns the lines they held.
    fn keep_bound(&mut self) -> io::Result<u64> {
        let mut dropped = 0;
        while self.bytes > self.max_bytes {
            let last = self.segs.len().saturating_sub(1);
            let Some(i) = self.segs.iter().enumerate().position(|(i, s)| {
                let written = i == last && self.writer.is_some();
                !s.handed && !written
            }) else {
                break;
            };
            let Some(s) = self.segs.remove(i) else { break };
            let records = match s.records {
                Some(n) => n,
                None => segment::decode(&fs::read(self.path(s.id))?).0.len() as u64,
            };
            fs::remove_file(self.path(s.id))?;
            self.bytes -= s.bytes;
            dropped += records;
        }
        Ok(dropped)
    }

    /// Up to `n` records for sending, oldest first, each under a key for [`Spool::acked`].
    pub fn take(&mut self, n: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        if self.reading.is_empty() {
            self.read_next()?;
        }
        let n = n.min(self.reading.len());
        Ok(self.reading.drain(..n).collect())
    }

    /// Puts records taken back at the front, in their order (they were not written).
    pub fn untake(&mut self, records: Vec<(u64, Vec<u8>)>) {
        for r in records.into_iter().rev() {
            self.reading.push_front(r);
        }
    }

    /// Reads back the oldest segment not handed out yet (closing it first if it is the one
    /// being written). Torn or corrupt ends are skipped and logged.
    fn read_next(&mut self) -> io::Result<()> {
        while let Some(i) = self.segs.iter().position(|s| !s.handed) {
            if i + 1 == self.segs.len() && self.writer.is_some() {
                self.close_writer()?;
            }
            let id = self.segs[i].id;
            let bytes = match fs::read(self.path(id)) {
                Ok(b) => b,
                Err(error) => {
                    tracing::warn!(segment = %self.path(id).display(), %error, "log spool: cannot read a segment; skipped");
                    if let Some(s) = self.segs.remove(i) {
                        self.bytes -= s.bytes;
                    }
                    continue;
                }
            };
            let (records, end) = segment::decode(&bytes);
            if end != End::Clean {
                tracing::warn!(
                    segment = %self.path(id).display(),
                    records = records.len(),
                    end = ?end,
                    "log spool: a segment ends in a torn or damaged record; the rest of it is skipped"
                );
            }
            let s = &mut self.segs[i];
            s.handed = true;
            s.records = Some(records.len() as u64);
            s.unacked = records.len() as u64;
            for r in records {
                let key = self.next_key;
                self.next_key += 1;
                self.keys.insert(key, id);
                self.reading.push_back((key, bytes[r].to_vec()));
            }
            if self.segs[i].unacked > 0 {
                return Ok(());
            }
            self.delete(i)?;
        }
        Ok(())
    }

    fn delete(&mut self, i: usize) -> io::Result<()> {
        if let Some(s) = self.segs.remove(i) {
            self.bytes -= s.bytes;
            fs::remove_file(self.path(s.id))?;
        }
        Ok(())
    }

    /// The record under `key` was acknowledged: its segment goes once all of it was.
    pub fn acked(&mut self, key: u64) -> io::Result<()> {
        let Some(id) = self.keys.remove(&key) else {
            return Ok(());
        };
        let Some(i) = self.segs.iter().position(|s| s.id == id) else {
            return Ok(());
        };
        let s = &mut self.segs[i];
        s.unacked = s.unacked.saturating_sub(1);
        if s.handed && s.unacked == 0 {
            self.delete(i)?;
        }
        Ok(())
    }

    /// At exit: `window` is what the RELP window holds unacknowledged, in order (spooled
    /// records and lines taken from memory alike: it is older than anything not handed out).
    /// With the records read back and not handed out yet, it replaces the segments being
    /// replayed by one segment that sorts before the backlog, so a restart sends what was not
    /// acknowledged, once, in order. The memory queue is appended after this, then
    /// [`Spool::sync`].
    pub fn keep_unacked(&mut self, window: Vec<Vec<u8>>) -> io::Result<()> {
        let reading = std::mem::take(&mut self.reading);
        let msgs: Vec<Vec<u8>> = window
            .into_iter()
            .chain(reading.into_iter().map(|r| r.1))
            .collect();
        self.keys.clear();
        let handed: Vec<u64> = self
            .segs
            .iter()
            .filter(|s| s.handed)
            .map(|s| s.id)
            .collect();
        let id = match self.segs.iter().find(|s| !s.handed) {
            Some(b) => b.id.saturating_sub(1),
            None => {
                self.next_id += ID_STEP;
                self.next_id - ID_STEP
            }
        };
        if !msgs.is_empty() {
            self.write_segment(id, &msgs)?;
        }
        for h in handed {
            if h == id && !msgs.is_empty() {
                continue; // replaced by the rename
            }
            if let Some(i) = self.segs.iter().position(|s| s.id == h && s.handed) {
                self.delete(i)?;
            }
        }
        Ok(())
    }

    /// Writes a whole new segment `id` holding `msgs`, in its place in the order (replacing
    /// a segment of the same id).
    fn write_segment(&mut self, id: u64, msgs: &[Vec<u8>]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{}.tmp", segment::file_name(id)));
        let bytes = write_file(&tmp, msgs)?;
        fs::rename(&tmp, self.path(id))?;
        if let Some(i) = self.segs.iter().position(|s| s.id == id) {
            if let Some(old) = self.segs.remove(i) {
                self.bytes -= old.bytes;
            }
        }
        let at = self
            .segs
            .iter()
            .position(|s| s.id > id)
            .unwrap_or(self.segs.len());
        self.segs.insert(
            at,
            Seg {
                id,
                bytes,
                records: Some(msgs.len() as u64),
                handed: false,
                unacked: 0,
            },
        );
        self.bytes += bytes;
        Ok(())
    }

    /// Flushes what is buffered and asks the disk to keep every segment.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Writes a segment holding `msgs` to `path`, synced; returns its size.
fn write_file(path: &Path, msgs: &[Vec<u8>]) -> io::Result<u64> {
    let mut out = segment::HEADER.to_vec();
    for m in msgs {
        segment::encode(&m[..m.len().min(segment::MAX_RECORD)], &mut out);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(&out)?;
    f.sync_data()?;
    Ok(out.len() as u64)
}

/// Whether `dir` can hold the spool: created if missing, and a file can be written in it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".muster-probe-{}", std::process::id()));
    let wrote = File::create(&probe).and_then(|mut f| f.write_all(b"probe"));
    let _ = fs::remove_file(&probe);
    wrote.map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(i: usize) -> Vec<u8> {
        format!("<14>1 - web-1 app - - - line {i}").into_bytes()
    }

    fn take_all(s: &mut Spool) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let got = s.take(1000).unwrap();
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    #[test]
    fn records_come_back_in_order_and_a_segment_goes_once_all_of_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, left) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(left, Leftover::default());
        for i in 0..5000 {
            assert_eq!(s.append(&msg(i)).unwrap(), 0);
        }
        let files = || fs::read_dir(dir.path()).unwrap().count();
        assert!(files() > 1, "segments of 128 KiB: {}", files());
        let got = take_all(&mut s);
        assert_eq!(got.len(), 5000);
        assert!(got.iter().enumerate().all(|(i, (_, m))| *m == msg(i)));
        assert!(!s.has_backlog());
        let before = files();
        for (k, _) in &got[..got.len() - 1] {
            s.acked(*k).unwrap();
        }
        assert_eq!(
            files(),
            1,
            "only the segment with an unacknowledged line is left"
        );
        assert!(before > 1);
        s.acked(got.last().unwrap().0).unwrap();
        assert_eq!((files(), s.bytes()), (0, 0));
    }

    #[test]
    fn the_bound_drops_the_oldest_segments_and_counts_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut dropped = 0;
        for i in 0..100_000 {
            dropped += s.append(&msg(i)).unwrap();
            assert!(s.bytes() <= 1 << 20, "within the bound");
        }
        assert!(dropped > 0);
        let got = take_all(&mut s);
        assert_eq!(
            got.len() as u64 + dropped,
            100_000,
            "every line kept or counted"
        );
        let first = 100_000 - got.len();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, (_, m))| *m == msg(first + i))
        );
    }

    #[test]
    fn a_restart_replays_what_was_not_acknowledged_in_order_and_skips_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 4 << 20).unwrap();
        (0..3000).for_each(|i| assert_eq!(s.append(&msg(i)).unwrap(), 0));
        // The first 1000 acknowledged, the next 200 in the window with two lines from
        // memory, the rest not read back.
        let got = s.take(1200).unwrap();
        got[..1000].iter().for_each(|(k, _)| s.acked(*k).unwrap());
        let mut window: Vec<Vec<u8>> = got[1000..].iter().map(|r| r.1.clone()).collect();
        let memory = [b"from memory 1".to_vec(), b"from memory 2".to_vec()];
        window.extend(memory.clone());
        s.keep_unacked(window).unwrap();
        (3000..3010).for_each(|i| assert_eq!(s.append(&msg(i)).unwrap(), 0));
        s.sync().unwrap();
        drop(s);
        // A torn record at the end of the newest segment (a crash mid-write).
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let newest = names.last().unwrap();
        let mut f = OpenOptions::new().append(true).open(newest).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut s, left) = Spool::open(dir.path(), 4 << 20).unwrap();
        assert!(left.segments >= 2);
        let got: Vec<Vec<u8>> = take_all(&mut s).into_iter().map(|r| r.1).collect();
        let mut want: Vec<Vec<u8>> = (1000..1200).map(msg).collect();
        want.extend(memory);
        want.extend((1200..3010).map(msg));
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "in order, nothing acknowledged twice, nothing lost"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_dir(&dir.path().join("a/b")), Ok(()));
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let e = check_dir(&file.join("spool")).unwrap_err();
        assert!(e.starts_with("cannot create"), "{e}");
    }
}
