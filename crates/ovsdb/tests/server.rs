//! Against a real ovsdb-server: transactions, errors, select, reconnect.

use serde_json::json;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use xnet_ovsdb::{atom, Client};

struct Server {
    dir: std::path::PathBuf,
    child: Option<Child>,
}
impl Server {
    fn start(dir: &std::path::Path) -> Child {
        let c = Command::new("ovsdb-server")
            .arg(dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(format!("--unixctl={}", dir.join("ctl").display()))
            .arg("--no-chdir")
            .arg(format!("--log-file={}", dir.join("log").display()))
            .spawn()
            .expect("ovsdb-server");
        let t = Instant::now();
        while !dir.join("db.sock").exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }
    fn new(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("xnet-ovsdb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("ovsdb-tool")
            .args(["create"])
            .arg(dir.join("conf.db"))
            .arg("/usr/share/openvswitch/vswitch.ovsschema")
            .status()
            .unwrap();
        assert!(ok.success());
        let child = Some(Self::start(&dir));
        Server { dir, child }
    }
    fn addr(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }
    fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("db.sock"));
        self.child = Some(Self::start(&self.dir));
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn transact_select_error_and_reconnect() {
    let mut srv = Server::new("t");
    let c = Client::connect(&srv.addr()).unwrap();
    c.transact(
        "Open_vSwitch",
        vec![json!({"op": "insert", "table": "Open_vSwitch", "row": {}})],
    )
    .unwrap();
    let r = c
        .transact(
            "Open_vSwitch",
            vec![
                json!({"op": "insert", "table": "Interface", "row": {"name": "br0", "type": "internal"}, "uuid-name": "i"}),
                json!({"op": "insert", "table": "Port", "row": {"name": "br0", "interfaces": atom::named("i")}, "uuid-name": "p"}),
                json!({"op": "insert", "table": "Bridge", "row": {"name": "br0", "ports": atom::named("p")}, "uuid-name": "b"}),
                json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", atom::set(vec![atom::named("b")])]]}),
            ],
        )
        .unwrap();
    assert_eq!(r.len(), 4);
    let bridges = c.select("Open_vSwitch", "Bridge").unwrap();
    assert_eq!(bridges.len(), 1);
    assert_eq!(bridges[0]["name"], "br0");
    // A failed operation fails the call and changes nothing.
    let bad = c.transact(
        "Open_vSwitch",
        vec![json!({"op": "insert", "table": "NoSuchTable", "row": {}})],
    );
    assert!(bad.is_err());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = srv.addr();
            std::thread::spawn(move || {
                let c = Client::connect(&a).unwrap();
                for _ in 0..20 {
                    c.select("Open_vSwitch", "Bridge").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    srv.restart();
    // The first call after the restart may fail; the next reconnects.
    let _ = c.echo();
    assert_eq!(c.select("Open_vSwitch", "Bridge").unwrap().len(), 1);
}

fn bridge_names(c: &Client) -> Vec<String> {
    c.replica(|r| {
        r.rows("Bridge")
            .map(|(_, row)| row["name"].as_str().unwrap_or("").to_string())
            .collect()
    })
}

fn add_bridge(c: &Client, name: &str) {
    c.transact(
        "Open_vSwitch",
        vec![
            json!({"op": "insert", "table": "Bridge", "row": {"name": name}, "uuid-name": "b"}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", atom::set(vec![atom::named("b")])]]}),
        ],
    )
    .unwrap();
}

#[test]
fn monitor_replica_follows_changes_and_restarts() {
    let mut srv = Server::new("m");
    let c = Client::connect(&srv.addr()).unwrap();
    c.transact(
        "Open_vSwitch",
        vec![json!({"op": "insert", "table": "Open_vSwitch", "row": {}})],
    )
    .unwrap();
    add_bridge(&c, "before");
    c.monitor(
        "Open_vSwitch",
        json!({"Bridge": {"columns": ["name", "ports"]}, "Open_vSwitch": {"columns": ["bridges"]}}),
    )
    .unwrap();
    // The initial contents arrive with the monitor.
    assert_eq!(bridge_names(&c), vec!["before"]);
    // Our own transaction is in the replica when transact returns: the
    // server sends the update before the reply.
    add_bridge(&c, "own");
    let mut names = bridge_names(&c);
    names.sort();
    assert_eq!(names, vec!["before", "own"]);
    // Another client's change arrives as a notification, read by poll.
    let other = Client::connect(&srv.addr()).unwrap();
    add_bridge(&other, "other");
    let t = Instant::now();
    while bridge_names(&c).len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(5), "no update");
        std::thread::sleep(Duration::from_millis(10));
        c.poll().unwrap();
    }
    // A deleted row leaves the replica (unreferenced bridges are
    // garbage-collected by the server).
    let u = c
        .replica(|r| {
            r.rows("Bridge")
                .find(|(_, row)| row["name"] == "other")
                .map(|(u, _)| u.clone())
        })
        .unwrap();
    other
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "delete", atom::set(vec![atom::uuid(&u)])]]})],
        )
        .unwrap();
    let t = Instant::now();
    while bridge_names(&c).len() != 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "no delete update");
        std::thread::sleep(Duration::from_millis(10));
        c.poll().unwrap();
    }
    let g = c.replica(|r| r.generation);
    // After a server restart the monitor is re-established with the
    // database's contents, changes made while disconnected included.
    srv.restart();
    let t = Instant::now();
    while c.poll().is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "no reconnect");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.replica(|r| r.generation) > g);
    let _ = other.echo(); // its first call after the restart may fail
    add_bridge(&other, "later");
    let t = Instant::now();
    while !bridge_names(&c).contains(&"later".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no update after restart"
        );
        std::thread::sleep(Duration::from_millis(10));
        let _ = c.poll();
    }
}
