use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xnet_store::{Change, EventsLost, Op, Options, Store, WriteError};

type S = Store<String>;

fn put(s: &S, table: &str, key: &str, val: &str) -> u64 {
    s.write(|t| {
        t.put(table, key, val.to_owned());
        Ok::<_, ()>(())
    })
    .unwrap()
    .1
    .generation
}

fn dump(s: &S, table: &str) -> Vec<(String, String)> {
    s.read(|v| {
        v.iter(table)
            .map(|(k, r)| (k.to_owned(), r.clone()))
            .collect()
    })
}

fn volatile() -> Options {
    Options {
        volatile_tables: vec!["session".into()],
        ..Options::default()
    }
}

fn journal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("journal")).unwrap().len()
}

#[test]
fn put_get_delete_commit_and_events() {
    let s = S::in_memory(Options::default());
    assert_eq!(s.generation(), 0);
    let (v, c) = s
        .write(|t| {
            t.put("PIF", "OpaqueRef:1", "a".into());
            t.put("PIF", "OpaqueRef:2", "b".into());
            t.put("VIF", "OpaqueRef:3", "c".into());
            Ok::<_, ()>(42)
        })
        .unwrap();
    assert_eq!(v, 42);
    assert_eq!(c.generation, 1);
    assert_eq!(c.changes.len(), 3);
    assert!(c.changes.iter().all(|c| c.before.is_none()));
    assert_eq!(s.generation(), 1);

    let (_, c) = s
        .write(|t| {
            t.put("PIF", "OpaqueRef:1", "a2".into());
            assert!(t.delete("VIF", "OpaqueRef:3"));
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(c.generation, 2);
    assert_eq!(
        c.changes,
        vec![
            Change {
                table: "PIF".into(),
                key: "OpaqueRef:1".into(),
                before: Some("a".into()),
                after: Some("a2".into()),
            },
            Change {
                table: "VIF".into(),
                key: "OpaqueRef:3".into(),
                before: Some("c".into()),
                after: None,
            },
        ]
    );
    s.read(|v| {
        assert_eq!(v.get("PIF", "OpaqueRef:1").unwrap(), "a2");
        assert_eq!(v.get("VIF", "OpaqueRef:3"), None);
        assert_eq!(v.len("PIF"), 2);
        assert_eq!(v.len("VIF"), 0);
        assert_eq!(v.tables(), ["PIF"]);
        assert_eq!(v.generation(), 2);
    });
    assert_eq!(
        dump(&s, "PIF"),
        [
            ("OpaqueRef:1".into(), "a2".into()),
            ("OpaqueRef:2".into(), "b".into())
        ]
    );

    let ev = s.events_since(0).unwrap();
    let got: Vec<(u64, &str, &str, Op)> = ev
        .iter()
        .map(|e| (e.generation, e.table.as_str(), e.key.as_str(), e.op))
        .collect();
    assert_eq!(
        got,
        [
            (1, "PIF", "OpaqueRef:1", Op::Add),
            (1, "PIF", "OpaqueRef:2", Op::Add),
            (1, "VIF", "OpaqueRef:3", Op::Add),
            (2, "PIF", "OpaqueRef:1", Op::Mod),
            (2, "VIF", "OpaqueRef:3", Op::Del),
        ]
    );
    assert_eq!(s.events_since(1).unwrap().len(), 2);
    assert!(s.events_since(2).unwrap().is_empty());
}

#[test]
fn failing_or_empty_transactions_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = S::open(dir.path(), Options::default()).unwrap();
    put(&s, "T", "k", "v");
    let len = journal_len(dir.path());
    let r = s.write(|t| {
        t.put("T", "k", "changed".into());
        t.put("T", "new", "x".into());
        assert!(t.delete("T", "k"), "the key exists in this transaction");
        Err::<(), _>("nope")
    });
    assert!(matches!(r, Err(WriteError::Aborted("nope"))));
    assert_eq!(dump(&s, "T"), [("k".into(), "v".into())]);
    assert_eq!(s.generation(), 1);
    assert_eq!(s.events_since(0).unwrap().len(), 1);
    assert_eq!(journal_len(dir.path()), len);

    // Nothing changed, or put-then-delete of a new key: no generation bump, no I/O.
    let (_, c) = s
        .write(|t| {
            assert!(!t.delete("T", "absent"));
            t.put("T", "tmp", "x".into());
            assert!(t.delete("T", "tmp"));
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!((c.generation, c.changes.len()), (1, 0));
    assert_eq!(s.generation(), 1);
    assert_eq!(journal_len(dir.path()), len);
    drop(s);
    let s = S::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.generation(), 1);
    assert_eq!(dump(&s, "T"), [("k".into(), "v".into())]);
}

#[test]
fn reopen_keeps_durable_tables_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let s = S::open(dir.path(), volatile()).unwrap();
    for i in 0..10 {
        put(&s, "PIF", &format!("p{i}"), &format!("v{i}"));
    }
    s.write(|t| {
        t.delete("PIF", "p3");
        t.put("PIF", "p4", "changed".into());
        t.put("session", "s1", "volatile".into());
        Ok::<_, ()>(())
    })
    .unwrap();
    // A volatile-only transaction produces events but no disk I/O.
    let len = journal_len(dir.path());
    let (_, c) = s
        .write(|t| {
            t.put("session", "s2", "x".into());
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(c.generation, 12);
    assert_eq!(journal_len(dir.path()), len);
    assert_eq!(s.events_since(11).unwrap()[0].key, "s2");
    assert_eq!(s.read(|v| v.len("session")), 2);
    let before = dump(&s, "PIF");
    drop(s);

    let s = S::open(dir.path(), volatile()).unwrap();
    assert_eq!(dump(&s, "PIF"), before);
    assert_eq!(s.read(|v| v.get("PIF", "p4").cloned()).unwrap(), "changed");
    assert_eq!(s.read(|v| v.len("session")), 0);
    s.read(|v| assert_eq!(v.tables(), ["PIF"]));
    // Volatile-only generations are not persisted; the durable one is.
    assert_eq!(s.generation(), 11);
    assert_eq!(s.events_since(10), Err(EventsLost));
    assert_eq!(s.events_since(11), Ok(vec![]));
    // A token from before the restart that is now "in the future" forces a resync.
    assert_eq!(s.events_since(12), Err(EventsLost));
    assert_eq!(s.wait_newer(12, Duration::from_secs(10)), 11);
    assert_eq!(put(&s, "PIF", "p99", "x"), 12);
}

/// Writes `n` one-record transactions; returns journal lengths after each.
fn write_entries(dir: &Path, n: usize) -> Vec<u64> {
    let s = S::open(dir, Options::default()).unwrap();
    (0..n)
        .map(|i| {
            put(&s, "T", &format!("k{i}"), &format!("value {i}"));
            journal_len(dir)
        })
        .collect()
}

fn check_first(dir: &Path, n: usize, why: &str) {
    let s = S::open(dir, Options::default()).unwrap();
    let want: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k{i}"), format!("value {i}")))
        .collect();
    let mut got = dump(&s, "T");
    got.sort_by_key(|(k, _)| k[1..].parse::<usize>().unwrap());
    assert_eq!(got, want, "{why}");
    assert_eq!(s.generation(), n as u64, "{why}");
}

#[test]
fn torn_tail_is_dropped_and_truncated() {
    const N: usize = 5;
    let src = tempfile::tempdir().unwrap();
    let lens = write_entries(src.path(), N);
    let full = std::fs::read(src.path().join("journal")).unwrap();
    let (prev, last) = (lens[N - 2] as usize, lens[N - 1] as usize);
    assert_eq!(full.len(), last);
    for cut in prev..last {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal"), &full[..cut]).unwrap();
        check_first(dir.path(), N - 1, &format!("cut at {cut}"));
        assert_eq!(journal_len(dir.path()), prev as u64, "cut at {cut}");
        // New writes append after the intact prefix and survive another reopen.
        {
            let s = S::open(dir.path(), Options::default()).unwrap();
            put(&s, "T", &format!("k{}", N - 1), &format!("value {}", N - 1));
        }
        check_first(dir.path(), N, &format!("write after cut at {cut}"));
    }
}

#[test]
fn flipped_byte_in_last_entry_drops_it() {
    const N: usize = 4;
    let src = tempfile::tempdir().unwrap();
    let lens = write_entries(src.path(), N);
    let full = std::fs::read(src.path().join("journal")).unwrap();
    for pos in lens[N - 2] as usize..full.len() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = full.clone();
        bad[pos] ^= 0x10;
        std::fs::write(dir.path().join("journal"), &bad).unwrap();
        check_first(dir.path(), N - 1, &format!("flip at {pos}"));
    }
    // Control: the unmodified file has all N.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journal"), &full).unwrap();
    check_first(dir.path(), N, "intact");
}

#[test]
fn compaction_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        compact_after_bytes: 512,
        ..volatile()
    };
    let s = S::open(dir.path(), opts.clone()).unwrap();
    let mut max_len = 0;
    for i in 0..300 {
        s.write(|t| {
            t.put("T", &format!("k{i:03}"), format!("v{i}"));
            if i % 3 == 0 && i > 0 {
                t.delete("T", &format!("k{:03}", i - 1));
            }
            t.put("session", &format!("s{i}"), "x".into());
            Ok::<_, ()>(())
        })
        .unwrap();
        max_len = max_len.max(journal_len(dir.path()));
    }
    assert!(max_len < 1024, "journal grew to {max_len}");
    assert!(dir.path().join("snapshot").exists());
    let before = dump(&s, "T");
    assert_eq!(before.len(), 300 - 99);
    let gen = s.generation();
    drop(s);
    let s = S::open(dir.path(), opts).unwrap();
    assert_eq!(dump(&s, "T"), before);
    assert_eq!(s.generation(), gen);
    assert_eq!(s.read(|v| v.len("session")), 0);
}

#[test]
fn stale_journal_next_to_newer_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = S::open(dir.path(), Options::default()).unwrap();
    for i in 0..20 {
        put(&s, "T", &format!("k{i:02}"), "v");
    }
    s.write(|t| {
        t.delete("T", "k05");
        t.put("T", "k06", "changed".into());
        Ok::<_, ()>(())
    })
    .unwrap();
    let old_journal = std::fs::read(dir.path().join("journal")).unwrap();
    s.compact().unwrap();
    assert_eq!(journal_len(dir.path()), 0);
    let want = dump(&s, "T");
    drop(s);
    // Crash after the snapshot rename, before the journal reset; plus a torn tmp file.
    std::fs::write(dir.path().join("journal"), &old_journal).unwrap();
    std::fs::write(dir.path().join("snapshot.tmp"), b"garbage").unwrap();
    let s = S::open(dir.path(), Options::default()).unwrap();
    assert_eq!(dump(&s, "T"), want);
    assert_eq!(s.generation(), 21);
    assert_eq!(put(&s, "T", "k05", "back"), 22);
    drop(s);
    let s = S::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.generation(), 22);
    assert_eq!(s.read(|v| v.get("T", "k05").cloned()).unwrap(), "back");
    assert_eq!(s.read(|v| v.get("T", "k06").cloned()).unwrap(), "changed");
    assert_eq!(s.read(|v| v.len("T")), 20);
}

#[test]
fn corrupt_snapshot_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = S::open(dir.path(), Options::default()).unwrap();
    put(&s, "T", "k", "v");
    s.compact().unwrap();
    drop(s);
    let path = dir.path().join("snapshot");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(
        S::open(dir.path(), Options::default()),
        Err(xnet_store::StoreError::CorruptSnapshot { .. })
    ));
}

#[test]
fn undecodable_entry_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = S::open(dir.path(), Options::default()).unwrap();
    put(&s, "T", "k", "v");
    drop(s);
    // Same bytes read back as a different record type: an error, not silent data loss.
    assert!(matches!(
        Store::<u64>::open(dir.path(), Options::default()),
        Err(xnet_store::StoreError::CorruptJournal { .. })
    ));
}

#[test]
fn events_lost_with_small_ring() {
    let s = S::in_memory(Options {
        event_log_capacity: 5,
        ..Options::default()
    });
    for g in 1..=3 {
        s.write(|t| {
            t.put("T", &format!("a{g}"), "x".into());
            t.put("T", &format!("b{g}"), "x".into());
            Ok::<_, ()>(())
        })
        .unwrap();
    }
    // 6 events, 5 kept: generation 1 is incomplete.
    assert_eq!(s.events_since(0), Err(EventsLost));
    let ev = s.events_since(1).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.generation).collect::<Vec<_>>(),
        [2, 2, 3, 3]
    );
    assert_eq!(s.events_since(2).unwrap().len(), 2);
    assert_eq!(s.events_since(3), Ok(vec![]));
    assert_eq!(s.events_since(4), Err(EventsLost));
}

#[test]
fn wait_newer_wakes_and_times_out() {
    let s = Arc::new(S::in_memory(Options::default()));
    let t0 = Instant::now();
    assert_eq!(s.wait_newer(0, Duration::from_millis(150)), 0);
    assert!(t0.elapsed() >= Duration::from_millis(150));

    let writer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            put(&s, "T", "k", "v")
        })
    };
    let t0 = Instant::now();
    assert_eq!(s.wait_newer(0, Duration::from_secs(20)), 1);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(writer.join().unwrap(), 1);
    // Already newer: returns at once.
    let t0 = Instant::now();
    assert_eq!(s.wait_newer(0, Duration::from_secs(20)), 1);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn readers_run_concurrently() {
    let s = Arc::new(S::in_memory(Options::default()));
    put(&s, "T", "k", "v");
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            s.read(|_| {
                entered_tx.send(()).unwrap();
                release_rx.recv_timeout(Duration::from_secs(20)).ok();
            })
        })
    };
    entered_rx.recv().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let s = Arc::clone(&s);
        std::thread::spawn(move || done_tx.send(s.read(|v| v.len("T"))).unwrap());
    }
    let second = done_rx.recv_timeout(Duration::from_secs(5));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(second, Ok(1), "second reader blocked by the first");
}
