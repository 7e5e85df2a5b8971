//! Generic durable, transactional record store with an in-memory event log.
//!
//! Records of type `R` live in named tables, keyed by string. Every committed transaction
//! gets the next generation number. Files in the directory given to [`Store::open`]:
//! - `journal`: one framed entry (length, CRC32, JSON) per transaction that touched a
//!   durable table, carrying that transaction's generation;
//! - `snapshot`: all durable tables at some generation, written when the journal grows
//!   past [`Options::compact_after_bytes`], after which the journal is emptied.
//!
//! Recovery loads the snapshot and replays journal entries with a higher generation, so a
//! crash at any point of compaction (even leaving a stale journal behind the new
//! snapshot) loads a consistent state. One process at a time may open a directory (not
//! enforced).
//!
//! Don't call [`Store::write`] from inside a `read` or `write` closure: it deadlocks.

mod journal;
mod snapshot;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use journal::Journal;

type Tables<R> = BTreeMap<String, BTreeMap<String, R>>;

const JOURNAL_FILE: &str = "journal";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    /// The entry's checksum is right but it does not decode as `R` (e.g. an incompatible
    /// record type): refuse to open rather than silently drop it and all that follows.
    #[error("undecodable journal entry #{index} in {path}: {reason}")]
    CorruptJournal {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("serialize: {0}")]
    Serialize(serde_json::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    #[error("transaction aborted: {0}")]
    Aborted(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The requested events are no longer (or not yet) in the log: resync from a full read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events lost; resync from a full read")]
pub struct EventsLost;

#[derive(Debug, Clone)]
pub struct Options {
    /// Tables applied in memory and reported as events but never written to disk.
    pub volatile_tables: Vec<String>,
    /// Journal size that triggers a snapshot + journal reset.
    pub compact_after_bytes: u64,
    /// Events kept in memory for [`Store::events_since`].
    pub event_log_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            volatile_tables: Vec::new(),
            compact_after_bytes: 64 << 20,
            event_log_capacity: 200_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Mod,
    Del,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub generation: u64,
    pub table: String,
    pub key: String,
    pub op: Op,
}

/// One record changed by a transaction: `before` None = created, `after` None = deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<R> {
    pub table: String,
    pub key: String,
    pub before: Option<R>,
    pub after: Option<R>,
}

/// What a transaction did. `changes` is sorted by (table, key); empty if nothing changed,
/// in which case `generation` is the unchanged current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit<R> {
    pub generation: u64,
    pub changes: Vec<Change<R>>,
}

/// A consistent read-only view of all tables at one generation.
pub struct View<R> {
    tables: Tables<R>,
    generation: u64,
}

impl<R> View<R> {
    pub fn get(&self, table: &str, key: &str) -> Option<&R> {
        self.tables.get(table)?.get(key)
    }

    /// Records of `table`, sorted by key.
    pub fn iter(&self, table: &str) -> impl Iterator<Item = (&str, &R)> + '_ {
        self.tables
            .get(table)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    pub fn is_empty(&self, table: &str) -> bool {
        self.len(table) == 0
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Names of the tables holding at least one record, sorted.
    pub fn tables(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }
}

/// A transaction: reads see the committed state plus this transaction's own writes.
pub struct Txn<'a, R> {
    base: &'a View<R>,
    /// Pending writes: Some = put, None = delete.
    overlay: BTreeMap<String, BTreeMap<String, Option<R>>>,
}

impl<'a, R> Txn<'a, R> {
    pub fn get(&self, table: &str, key: &str) -> Option<&R> {
        match self.overlay.get(table).and_then(|t| t.get(key)) {
            Some(pending) => pending.as_ref(),
            None => self.base.get(table, key),
        }
    }

    /// Records of `table` (with this transaction's writes), sorted by key.
    pub fn iter(&self, table: &str) -> impl Iterator<Item = (&str, &R)> + '_ {
        Merge {
            base: self.base.iter(table).peekable(),
            over: self
                .overlay
                .get(table)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_ref()))
                .peekable(),
        }
    }

    pub fn len(&self, table: &str) -> usize {
        let mut n = self.base.len(table);
        for (k, v) in self.overlay.get(table).into_iter().flatten() {
            match (self.base.get(table, k).is_some(), v.is_some()) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
        }
        n
    }

    pub fn is_empty(&self, table: &str) -> bool {
        self.len(table) == 0
    }

    /// The generation the transaction started from (it commits as this + 1).
    pub fn generation(&self) -> u64 {
        self.base.generation
    }

    /// Names of the tables holding at least one record, sorted.
    pub fn tables(&self) -> Vec<&str> {
        let names: std::collections::BTreeSet<&str> = self
            .base
            .tables
            .keys()
            .chain(self.overlay.keys())
            .map(String::as_str)
            .collect();
        names.into_iter().filter(|t| self.len(t) > 0).collect()
    }

    /// Creates or replaces a record. Any put counts as a change, even of an equal value.
    pub fn put(&mut self, table: &str, key: &str, record: R) {
        self.pending_table(table)
            .insert(key.to_owned(), Some(record));
    }

    /// Deletes a record; returns whether it existed (as seen by this transaction).
    pub fn delete(&mut self, table: &str, key: &str) -> bool {
        let existed = self.get(table, key).is_some();
        if existed {
            self.pending_table(table).insert(key.to_owned(), None);
        }
        existed
    }

    fn pending_table(&mut self, table: &str) -> &mut BTreeMap<String, Option<R>> {
        if !self.overlay.contains_key(table) {
            self.overlay.insert(table.to_owned(), BTreeMap::new());
        }
        self.overlay.get_mut(table).unwrap()
    }

    /// The net writes, sorted by (table, key), without deletes of records that never
    /// existed before the transaction (put-then-delete of a new key).
    fn into_pending(self) -> Vec<(String, String, Option<R>)> {
        let mut out = Vec::new();
        for (table, recs) in self.overlay {
            for (key, v) in recs {
                if v.is_some() || self.base.get(&table, &key).is_some() {
                    out.push((table.clone(), key, v));
                }
            }
        }
        out
    }
}

/// Merges a table's committed records with a transaction's pending writes, by key.
struct Merge<'a, R, B, O>
where
    B: Iterator<Item = (&'a str, &'a R)>,
    O: Iterator<Item = (&'a str, Option<&'a R>)>,
    R: 'a,
{
    base: Peekable<B>,
    over: Peekable<O>,
}

impl<'a, R: 'a, B, O> Iterator for Merge<'a, R, B, O>
where
    B: Iterator<Item = (&'a str, &'a R)>,
    O: Iterator<Item = (&'a str, Option<&'a R>)>,
{
    type Item = (&'a str, &'a R);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_over = match (self.base.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ok, _))) => {
                    if bk == ok {
                        self.base.next(); // shadowed by the pending write
                        true
                    } else {
                        ok < bk
                    }
                }
            };
            if !take_over {
                return self.base.next();
            }
            if let (k, Some(v)) = self.over.next().unwrap() {
                return Some((k, v));
            }
            // pending delete: skip
        }
    }
}

struct Disk {
    dir: PathBuf,
    journal: Journal,
    /// Journal length at which to try compacting next (pushed out after a failure so a
    /// broken disk doesn't make every write serialize a full snapshot).
    compact_at: u64,
}

struct EventLog {
    generation: u64,
    /// Events with generation > floor are all in `ring`.
    floor: u64,
    ring: VecDeque<Event>,
}

/// The store. `Sync`: share it behind an `Arc`.
pub struct Store<R> {
    state: RwLock<View<R>>,
    /// Also the writer lock: writers hold it for the whole transaction.
    disk: Mutex<Option<Disk>>,
    events: Mutex<EventLog>,
    wake: Condvar,
    volatile: HashSet<String>,
    opts: Options,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking closure leaves the state untouched, so poisoning carries no meaning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<R> Store<R>
where
    R: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Opens (creating) the store in `dir`: loads the snapshot and replays the journal,
    /// truncating a torn or corrupt tail.
    pub fn open(dir: &Path, opts: Options) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        // A leftover tmp file is a snapshot that was never renamed into place.
        let _ = std::fs::remove_file(dir.join(snapshot::TMP));
        let volatile: HashSet<String> = opts.volatile_tables.iter().cloned().collect();
        let (mut generation, mut tables) = match snapshot::load(dir)? {
            None => (0, Tables::new()),
            Some(payload) => serde_json::from_slice::<(u64, Tables<R>)>(&payload).map_err(|e| {
                StoreError::CorruptSnapshot {
                    path: dir.join(snapshot::FILE),
                    reason: e.to_string(),
                }
            })?,
        };
        tables.retain(|t, _| !volatile.contains(t));
        let journal_path = dir.join(JOURNAL_FILE);
        let (journal, entries) = Journal::open(&journal_path)?;
        for (index, payload) in entries.iter().enumerate() {
            type Entry<R> = (u64, Vec<(String, String, Option<R>)>);
            let (gen, changes): Entry<R> =
                serde_json::from_slice(payload).map_err(|e| StoreError::CorruptJournal {
                    path: journal_path.clone(),
                    index,
                    reason: e.to_string(),
                })?;
            // Entries already contained in the snapshot (compaction crashed before the reset).
            if gen <= generation {
                continue;
            }
            for (table, key, after) in changes {
                if !volatile.contains(&table) {
                    apply_one(&mut tables, table, key, after);
                }
            }
            generation = gen;
        }
        let compact_at = journal.len().max(opts.compact_after_bytes);
        let disk = Disk {
            dir: dir.to_owned(),
            journal,
            compact_at,
        };
        Ok(Self::build(tables, generation, Some(disk), volatile, opts))
    }

    /// A store without files (tests, benches).
    pub fn in_memory(opts: Options) -> Self {
        let volatile = opts.volatile_tables.iter().cloned().collect();
        Self::build(Tables::new(), 0, None, volatile, opts)
    }

    fn build(
        tables: Tables<R>,
        generation: u64,
        disk: Option<Disk>,
        volatile: HashSet<String>,
        opts: Options,
    ) -> Self {
        Store {
            state: RwLock::new(View { tables, generation }),
            disk: Mutex::new(disk),
            events: Mutex::new(EventLog {
                generation,
                // History is not persisted: nothing before the open is available.
                floor: generation,
                ring: VecDeque::new(),
            }),
            wake: Condvar::new(),
            volatile,
            opts,
        }
    }

    /// Runs `f` on a consistent view; readers run concurrently with each other and with
    /// a writer's closure and fsync (not with the brief apply step).
    pub fn read<T>(&self, f: impl FnOnce(&View<R>) -> T) -> T {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&state)
    }

    /// Runs `f` as a transaction, exclusive among writers. On `Err` nothing changes. On
    /// `Ok` with changes, the durable part is journaled and fdatasynced before it is
    /// applied, then the generation bumps by one and one event per record is logged.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Txn<'_, R>) -> Result<T, E>,
    ) -> Result<(T, Commit<R>), WriteError<E>> {
        let mut disk = lock(&self.disk);
        let (value, pending, base_gen) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let mut txn = Txn {
                base: &state,
                overlay: BTreeMap::new(),
            };
            let value = f(&mut txn).map_err(WriteError::Aborted)?;
            (value, txn.into_pending(), state.generation)
        };
        if pending.is_empty() {
            let commit = Commit {
                generation: base_gen,
                changes: Vec::new(),
            };
            return Ok((value, commit));
        }
        let generation = base_gen + 1;
        if let Some(disk) = disk.as_mut() {
            let durable: Vec<(&str, &str, Option<&R>)> = pending
                .iter()
                .filter(|(t, _, _)| !self.volatile.contains(t))
                .map(|(t, k, v)| (t.as_str(), k.as_str(), v.as_ref()))
                .collect();
            if !durable.is_empty() {
                let payload =
                    serde_json::to_vec(&(generation, &durable)).map_err(StoreError::Serialize)?;
                disk.journal.append(&payload).map_err(StoreError::Io)?;
            }
        }
        let changes = self.apply(generation, pending);
        if let Some(disk) = disk.as_mut() {
            if disk.journal.len() > disk.compact_at {
                // The commit is already durable; a failed compaction only postpones the next.
                if self.compact_locked(disk).is_err() {
                    disk.compact_at = disk.journal.len() + self.opts.compact_after_bytes;
                }
            }
        }
        Ok((
            value,
            Commit {
                generation,
                changes,
            },
        ))
    }

    fn apply(&self, generation: u64, pending: Vec<(String, String, Option<R>)>) -> Vec<Change<R>> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::with_capacity(pending.len());
        for (table, key, after) in pending {
            let before = apply_one(&mut state.tables, table.clone(), key.clone(), after.clone());
            changes.push(Change {
                table,
                key,
                before,
                after,
            });
        }
        state.generation = generation;
        // Log events while still holding the state lock, so a reader that saw this
        // generation in a View also finds the log at (at least) this generation.
        let mut log = lock(&self.events);
        for c in &changes {
            let op = match (&c.before, &c.after) {
                (None, _) => Op::Add,
                (_, None) => Op::Del,
                _ => Op::Mod,
            };
            log.ring.push_back(Event {
                generation,
                table: c.table.clone(),
                key: c.key.clone(),
                op,
            });
        }
        while log.ring.len() > self.opts.event_log_capacity {
            let dropped = log.ring.pop_front().unwrap();
            log.floor = log.floor.max(dropped.generation);
        }
        log.generation = generation;
        drop(log);
        drop(state);
        self.wake.notify_all();
        changes
    }

    /// Writes a snapshot now and empties the journal (no-op for in-memory stores).
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut disk = lock(&self.disk);
        match disk.as_mut() {
            Some(disk) => self.compact_locked(disk),
            None => Ok(()),
        }
    }

    fn compact_locked(&self, disk: &mut Disk) -> Result<(), StoreError> {
        let payload = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let durable: BTreeMap<&str, &BTreeMap<String, R>> = state
                .tables
                .iter()
                .filter(|(t, _)| !self.volatile.contains(*t))
                .map(|(t, recs)| (t.as_str(), recs))
                .collect();
            serde_json::to_vec(&(state.generation, durable)).map_err(StoreError::Serialize)?
        };
        snapshot::store(&disk.dir, &payload)?;
        // A crash here leaves the old journal; its entries are <= the snapshot's generation.
        disk.journal.reset()?;
        disk.compact_at = self.opts.compact_after_bytes;
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        lock(&self.events).generation
    }

    /// Events with generation > `gen`, oldest first. `Err(EventsLost)` if some of them
    /// were dropped from the ring or predate the open, and also if `gen` is newer than
    /// the current generation (a token from before a restart: volatile-only generations
    /// are not persisted, so the numbers may have been reused).
    pub fn events_since(&self, gen: u64) -> Result<Vec<Event>, EventsLost> {
        let log = lock(&self.events);
        if gen < log.floor || gen > log.generation {
            return Err(EventsLost);
        }
        let start = log.ring.partition_point(|e| e.generation <= gen);
        Ok(log.ring.range(start..).cloned().collect())
    }

    /// Blocks until the generation is > `gen` or `timeout` passes; returns the current
    /// generation. Returns at once if `gen` is already newer than the current generation
    /// (see [`Store::events_since`]), so the caller can resync instead of hanging.
    pub fn wait_newer(&self, gen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.events);
        let start = log.generation;
        if gen > start {
            return start;
        }
        while log.generation <= gen {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            log = self
                .wake
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        log.generation
    }
}

/// Puts or deletes one record; returns the previous value. Empty tables are removed so
/// `tables()` lists only tables with records.
fn apply_one<R>(tables: &mut Tables<R>, table: String, key: String, after: Option<R>) -> Option<R> {
    match after {
        Some(r) => tables.entry(table).or_default().insert(key, r),
        None => {
            let recs = tables.get_mut(&table)?;
            let old = recs.remove(&key);
            if recs.is_empty() {
                tables.remove(&table);
            }
            old
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_reads_see_own_writes_in_key_order() {
        let s: Store<u32> = Store::in_memory(Options::default());
        s.write(|t| {
            for (k, v) in [("b", 2), ("d", 4), ("f", 6)] {
                t.put("T", k, v);
            }
            Ok::<_, ()>(())
        })
        .unwrap();
        s.write(|t| {
            t.put("T", "a", 1);
            t.put("T", "d", 40);
            assert!(t.delete("T", "f"));
            assert!(!t.delete("T", "zz"));
            t.put("T", "g", 7);
            let got: Vec<(&str, u32)> = t.iter("T").map(|(k, v)| (k, *v)).collect();
            assert_eq!(got, [("a", 1), ("b", 2), ("d", 40), ("g", 7)]);
            assert_eq!(t.len("T"), 4);
            assert_eq!(t.get("T", "f"), None);
            assert_eq!(t.get("T", "d"), Some(&40));
            t.put("U", "x", 0);
            assert!(t.delete("U", "x"));
            assert_eq!(t.tables(), ["T"]);
            Ok::<_, ()>(())
        })
        .unwrap();
        s.read(|v| {
            let got: Vec<(&str, u32)> = v.iter("T").map(|(k, v)| (k, *v)).collect();
            assert_eq!(got, [("a", 1), ("b", 2), ("d", 40), ("g", 7)]);
            assert_eq!(v.tables(), ["T"]);
        });
    }
}
