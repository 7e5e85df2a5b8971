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
