//! Bounded command execution and namespace/veth/process helpers (all by forking `ip`).

use crate::LabError;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any single helper command; a hung `ip`/`ovs-vsctl` must not hang a test.
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Run `argv` with `envs`, return its output whatever the exit status; bounded by `timeout`.
pub(crate) fn output(
    argv: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output, LabError> {
    let cmd_s = argv.join(" ");
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| LabError::Invalid("empty command".into()))?;
    let mut child = Command::new(prog)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            cmd: cmd_s.clone(),
            source,
        })?;
    // Drain both pipes in threads so a chatty command cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let t_out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let t_err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let status = match wait_bounded(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::Timeout {
                cmd: cmd_s,
                secs: timeout.as_secs(),
            });
        }
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// Like [`output`] but a non-zero exit is an error carrying stderr; returns stdout.
pub(crate) fn run_env(argv: &[&str], envs: &[(&str, &str)]) -> Result<String, LabError> {
    let out = output(argv, envs, CMD_TIMEOUT)?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn run(argv: &[&str]) -> Result<String, LabError> {
    run_env(argv, &[])
}

/// Poll a child until it exits or `timeout` passes (None). Backs off so short commands
/// return within a millisecond or two.
pub(crate) fn wait_bounded(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(200);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// `ip netns exec <ns>` prefix + argv.
pub(crate) fn in_ns<'a>(ns: &'a str, argv: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(argv);
    v
}

/// Names of all named network namespaces (`/run/netns`), sorted.
pub fn list_netns() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn add_netns(name: &str) -> Result<(), LabError> {
    run(&["ip", "netns", "add", name])?;
    run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Kill whatever still runs in `name` and delete it (its veths go with it).
pub(crate) fn del_netns(name: &str) -> Result<(), LabError> {
    if !Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    kill_pids(&ns_pids(name), Duration::from_millis(500));
    run(&["ip", "netns", "del", name]).map(|_| ())
}

pub(crate) fn ns_pids(name: &str) -> Vec<u32> {
    run(&["ip", "netns", "pids", name])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // State is the field after the parenthesised comm.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. For processes we hold no `Child` of.
pub(crate) fn kill_pids(pids: &[u32], grace: Duration) {
    let me = std::process::id();
    let pids: Vec<String> = pids
        .iter()
        .filter(|&&p| p != me && alive(p))
        .map(|p| p.to_string())
        .collect();
    if pids.is_empty() {
        return;
    }
    let signal = |sig: &str| {
        let mut argv = vec!["kill", sig];
        argv.extend(pids.iter().map(String::as_str));
        let _ = output(&argv, &[], CMD_TIMEOUT);
    };
    signal("-TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|p| alive(p.parse().unwrap_or(0))) {
        thread::sleep(Duration::from_millis(10));
    }
    if pids.iter().any(|p| alive(p.parse().unwrap_or(0))) {
        signal("-KILL");
    }
}

/// Stop a child we own: SIGTERM, up to `grace`, SIGKILL; always reaped.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = output(
        &["kill", "-TERM", &child.id().to_string()],
        &[],
        CMD_TIMEOUT,
    );
    if wait_bounded(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One end of a veth pair.
pub(crate) struct End<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub mac: &'a str,
}

/// Create a veth pair directly between two namespaces (nothing ever appears in the root
/// namespace, so parallel labs cannot clash), turn `tx` checksum offload off on both ends
/// (the userspace datapath forwards packets with unfilled checksums otherwise) and set both
/// up.
pub(crate) fn veth(a: &End, b: &End) -> Result<(), LabError> {
    run(&[
        "ip", "link", "add", a.name, "netns", a.ns, "address", a.mac, "type", "veth", "peer",
        "name", b.name, "netns", b.ns, "address", b.mac,
    ])?;
    for e in [a, b] {
        run(&in_ns(e.ns, &["ethtool", "-K", e.name, "tx", "off"]))?;
        run(&["ip", "-n", e.ns, "link", "set", e.name, "up"])?;
    }
    Ok(())
}

pub(crate) fn link_set(ns: &str, dev: &str, up: bool) -> Result<(), LabError> {
    let state = if up { "up" } else { "down" };
    run(&["ip", "-n", ns, "link", "set", dev, state]).map(|_| ())
}

/// Ping `addr` from namespace `ns`: `count` probes, 1 s per reply, whole run bounded.
/// True if any reply came back.
pub fn ping(ns: &str, addr: &str, count: u32) -> bool {
    let c = count.max(1).to_string();
    let deadline = (count.max(1) + 2).to_string();
    let argv = in_ns(
        ns,
        &[
            "ping", "-n", "-q", "-i", "0.2", "-c", &c, "-W", "1", "-w", &deadline, addr,
        ],
    );
    output(&argv, &[], Duration::from_secs(u64::from(count) + 5))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Locally administered MAC `02:<id>:<id>:<kind>:<x>:<x>`, derived only from the lab id
/// and the object, so re-creating the same lab gives the same MACs.
pub(crate) fn mac(id: &str, kind: u8, x: u16) -> String {
    // A 4-hex-digit id is used as is; any other id is folded into two bytes.
    let h = u16::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() == 4)
        .unwrap_or_else(|| {
            id.bytes()
                .fold(0u16, |h, c| h.rotate_left(5) ^ u16::from(c))
        });
    let [h1, h2] = h.to_be_bytes();
    let [x1, x2] = x.to_be_bytes();
    format!("02:{h1:02x}:{h2:02x}:{kind:02x}:{x1:02x}:{x2:02x}")
}
