//! Append-only journal of framed entries: `len: u32 LE | crc32(payload): u32 LE | payload`.
//!
//! One entry per committed transaction. Recovery keeps the longest intact prefix and
//! truncates the rest: a torn or corrupt tail is a write that was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

const HEADER: usize = 8;

pub(crate) struct Journal {
    file: File,
    /// Length of the intact, synced prefix; the file is never longer than this between calls.
    len: u64,
    /// Set when a failed append could not be rolled back: appending behind a half-written
    /// frame would hide every later entry from recovery, so refuse instead.
    poisoned: bool,
}

impl Journal {
    /// Opens (creating) the journal; returns the payloads of the intact prefix, after
    /// truncating whatever follows it.
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let (payloads, valid) = parse(&buf);
        if valid < buf.len() {
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(valid as u64))?;
        if created {
            // Make the new directory entry durable, or a later fdatasync protects nothing.
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let journal = Journal {
            file,
            len: valid as u64,
            poisoned: false,
        };
        Ok((journal, payloads))
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one entry and fdatasyncs it: one write(2) + one fdatasync(2).
    pub(crate) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "journal unusable after an earlier failed write",
            ));
        }
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "journal entry too large"))?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        match self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Roll back so the next append does not land behind a partial frame.
                if self.truncate_to_len().is_err() {
                    self.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Empties the journal (after a snapshot made its contents redundant).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.len = 0;
        let r = self.truncate_to_len();
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn truncate_to_len(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.sync_data()
    }
}

/// Splits `buf` into entry payloads; returns them and the length of the intact prefix.
fn parse(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= HEADER {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap());
        let start = pos + HEADER;
        // Empty payloads are never written; a zero header is preallocated/zeroed space.
        if len == 0 || buf.len() - start < len {
            break;
        }
        let payload = &buf[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload.to_vec());
        pos = start + len;
    }
    (out, pos)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stops_at_bad_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, got) = Journal::open(&path).unwrap();
        assert!(got.is_empty());
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        let full = std::fs::read(&path).unwrap();
        assert_eq!(
            parse(&full),
            (vec![b"one".to_vec(), b"two".to_vec()], full.len())
        );
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&zeros).1, full.len());
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&flipped), (vec![b"one".to_vec()], 11));
        j.reset().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
