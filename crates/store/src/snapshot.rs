//! Snapshot file: `MAGIC | len: u64 LE | crc32(payload): u32 LE | payload`.
//!
//! Written atomically (tmp file, fsync, rename, fsync dir), so a reader sees either the
//! old snapshot or the new one; anything else is real corruption and refuses to load.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::journal::sync_dir;
use crate::StoreError;

const MAGIC: &[u8; 8] = b"XNSNAP1\n";
const HEADER: usize = MAGIC.len() + 8 + 4;
pub(crate) const FILE: &str = "snapshot";
pub(crate) const TMP: &str = "snapshot.tmp";

/// Returns the verified payload of `dir/snapshot`, or None if there is none.
pub(crate) fn load(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join(FILE);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: &str| StoreError::CorruptSnapshot {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    if buf.len() < HEADER || &buf[..MAGIC.len()] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let len = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let crc = u32::from_le_bytes(buf[16..20].try_into().unwrap());
    let payload = &buf[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupt("length mismatch"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(buf[HEADER..].to_vec()))
}

/// Atomically replaces `dir/snapshot` with `payload`.
pub(crate) fn store(dir: &Path, payload: &[u8]) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f = File::create(&tmp)?;
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    f.write_all(&head)?;
    f.write_all(payload)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)
}
