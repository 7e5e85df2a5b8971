//! One private Open vSwitch (ovsdb-server + ovs-vswitchd) running inside a namespace.

use crate::ns::{self, in_ns, run, run_env};
use crate::LabError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(2);

/// An OVS instance whose files all live in `dir` (db, sockets, pidfiles, logs, `<br>.mgmt`).
#[derive(Debug)]
pub struct Ovs {
    ns: String,
    dir: PathBuf,
    /// ovsdb-server, then ovs-vswitchd; stopped in reverse order.
    children: Vec<Child>,
}

impl Ovs {
    /// Create a fresh db in `dir` and start both daemons inside `ns`, waiting (bounded)
    /// until each answers on its socket.
    pub fn start(ns: &str, dir: &Path) -> Result<Ovs, LabError> {
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let mut ovs = Ovs {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            children: Vec::new(),
        };
        let d = dir.display().to_string();
        let db = format!("{d}/conf.db");
        run(&["ovsdb-tool", "create", &db, SCHEMA])?;

        let remote = format!("--remote=punix:{d}/db.sock");
        let ctl = format!("--unixctl={d}/ovsdb.ctl");
        let pid = format!("--pidfile={d}/ovsdb.pid");
        let log = format!("--log-file={d}/ovsdb.log");
        let argv = ["ovsdb-server", &db, &remote, &ctl, &pid, &log, "--no-chdir"];
        ovs.spawn(&argv, "ovsdb.out")?;
        // `init` doubles as the readiness probe: it succeeds once the db socket answers.
        let db_arg = ovs.db_arg();
        ovs.wait_ready("ovsdb-server", "ovsdb.log", || {
            run(&["ovs-vsctl", &db_arg, "--timeout=2", "--no-wait", "init"]).is_ok()
        })?;

        let db_url = format!("unix:{d}/db.sock");
        let ctl = format!("--unixctl={d}/vswitchd.ctl");
        let pid = format!("--pidfile={d}/vswitchd.pid");
        let log = format!("--log-file={d}/vswitchd.log");
        let argv = ["ovs-vswitchd", &db_url, &ctl, &pid, &log, "--no-chdir"];
        ovs.spawn(&argv, "vswitchd.out")?;
        let vctl = ovs.vswitchd_ctl().display().to_string();
        ovs.wait_ready("ovs-vswitchd", "vswitchd.log", || {
            run(&["ovs-appctl", "-t", &vctl, "--timeout=2", "version"]).is_ok()
        })?;
        Ok(ovs)
    }

    /// Env that points OVS tools and daemons at this instance's files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let d = self.dir.display().to_string();
        vec![
            ("OVS_RUNDIR", d.clone()),
            ("OVS_DBDIR", d.clone()),
            ("OVS_LOGDIR", d),
        ]
    }

    fn spawn(&mut self, argv: &[&str], out_name: &str) -> Result<(), LabError> {
        let argv = in_ns(&self.ns, argv);
        let out_path = self.dir.join(out_name);
        let out = File::create(&out_path).map_err(|source| LabError::Io {
            what: format!("create {}", out_path.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::Io {
            what: "dup log fd".into(),
            source,
        })?;
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .envs(self.env())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: argv.join(" "),
                source,
            })?;
        self.children.push(child);
        Ok(())
    }

    fn wait_ready(
        &mut self,
        what: &str,
        log: &str,
        mut probe: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if probe() {
                return Ok(());
            }
            let exited = self
                .children
                .last_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let tail = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(LabError::NotReady {
                    what: format!("{what} in {}", self.ns),
                    detail: match exited {
                        Some(s) => format!("exited {s}; log: {}", tail.join(" | ")),
                        None => {
                            format!("no answer in {READY_TIMEOUT:?}; log: {}", tail.join(" | "))
                        }
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn db_sock(&self) -> PathBuf {
        self.dir.join("db.sock")
    }
    pub fn vswitchd_ctl(&self) -> PathBuf {
        self.dir.join("vswitchd.ctl")
    }
    pub fn ovsdb_ctl(&self) -> PathBuf {
        self.dir.join("ovsdb.ctl")
    }
    /// OpenFlow management socket of a netdev bridge (vswitchd puts it in its rundir).
    pub fn mgmt_sock(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("{bridge}.mgmt"))
    }
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn db_arg(&self) -> String {
        format!("--db=unix:{}", self.db_sock().display())
    }

    /// `ovs-vsctl` against this db (unix sockets work across namespaces, so no netns exec).
    pub fn vsctl(&self, args: &[&str]) -> Result<String, LabError> {
        let db = self.db_arg();
        let mut argv = vec!["ovs-vsctl", &db, "--timeout=10"];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `ovs-appctl` against this ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> Result<String, LabError> {
        let t = self.vswitchd_ctl().display().to_string();
        let mut argv = vec!["ovs-appctl", "-t", &t, "--timeout=10"];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `ovs-ofctl <cmd> <bridge> …`: a bare bridge name in second place is replaced by its
    /// `unix:<dir>/<bridge>.mgmt` socket, since ovs-ofctl would look in the system rundir.
    pub fn ofctl(&self, args: &[&str]) -> Result<String, LabError> {
        let mut owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(br) = owned.get_mut(1) {
            if !br.contains(':') && !br.contains('/') {
                *br = format!("unix:{}", self.mgmt_sock(br).display());
            }
        }
        let mut argv = vec!["ovs-ofctl", "--timeout=10"];
        argv.extend(owned.iter().map(String::as_str));
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_env(&argv, &env)
    }

    /// Stop vswitchd then ovsdb-server (SIGTERM, SIGKILL after a short bound), reaped.
    pub fn stop(&mut self) {
        while let Some(mut c) = self.children.pop() {
            ns::stop_child(&mut c, STOP_GRACE);
        }
    }

    /// Forget the children without stopping them (`xnet-lab up` leaves them running).
    pub(crate) fn detach(&mut self) {
        self.children.clear();
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        self.stop();
    }
}
