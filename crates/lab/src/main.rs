//! `xnet-lab up|down|status`: bring a lab up and leave it running, find it again, remove it.

use std::error::Error;
use std::process::ExitCode;
use xnet_lab::{cleanup_all, cleanup_id, list_labs, list_netns, Lab, LabSpec};

const USAGE: &str = "usage:
  xnet-lab up [--hosts N] [--nics K] [--id ID] [--host-cmd 'CMD {host} {ns} {db} {dir}']
  xnet-lab down [--id ID | --all]
  xnet-lab status";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnet-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--flag value` pairs after the subcommand; `--all` is the only bare flag.
fn opts(args: &[String]) -> Result<Vec<(String, String)>, Box<dyn Error>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" => out.push((a.clone(), String::new())),
            "--hosts" | "--nics" | "--id" | "--host-cmd" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
                out.push((a.clone(), v.clone()));
            }
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}").into()),
        }
    }
    Ok(out)
}

fn dispatch(args: &[String]) -> Result<(), Box<dyn Error>> {
    let (cmd, rest) = args.split_first().ok_or(USAGE)?;
    let opts = opts(rest)?;
    let get = |k: &str| opts.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match cmd.as_str() {
        "up" => up(LabSpec {
            hosts: get("--hosts").map(str::parse).transpose()?.unwrap_or(2),
            nics: get("--nics").map(str::parse).transpose()?.unwrap_or(2),
            id: get("--id").map(String::from),
            host_cmd: get("--host-cmd").map(|c| c.split_whitespace().map(String::from).collect()),
            run_dir: None,
        }),
        "down" => {
            if get("--all").is_some() {
                cleanup_all()?;
                println!("all labs removed");
                return Ok(());
            }
            let id = match get("--id") {
                Some(id) => id.to_string(),
                None => match list_labs().as_slice() {
                    [one] => one.id.clone(),
                    [] => return Err("no lab found; use --all to sweep leftovers".into()),
                    many => {
                        let ids: Vec<&str> = many.iter().map(|l| l.id.as_str()).collect();
                        return Err(format!(
                            "several labs ({}): pick one with --id",
                            ids.join(", ")
                        )
                        .into());
                    }
                },
            };
            cleanup_id(&id)?;
            println!("lab {id} removed");
            Ok(())
        }
        "status" => {
            status();
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command {cmd:?}\n{USAGE}").into()),
    }
}

fn up(spec: LabSpec) -> Result<(), Box<dyn Error>> {
    let lab = Lab::new(spec)?;
    let st = lab.detach();
    println!("lab {} up, run dir {}", st.id, st.run_dir.display());
    println!(
        "switch  {}  (bridges seg<k>: NIC k of every host)",
        st.switch_ns
    );
    for (i, h) in st.hosts.iter().enumerate() {
        println!("host {i}  {}  db unix:{}", h.ns, h.db_sock.display());
    }
    if let Some(h) = st.hosts.first() {
        let d = h.dir.display();
        println!("exec into host 0:");
        println!(
            "  ip netns exec {} env OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} bash",
            h.ns
        );
        println!(
            "  (ovs-vsctl then uses unix:{d}/db.sock; ovs-appctl -t {})",
            h.vswitchd_ctl.display()
        );
    }
    println!("remove with: xnet-lab down --id {}", st.id);
    Ok(())
}

fn status() {
    let netns = list_netns();
    let labs = list_labs();
    if labs.is_empty() {
        println!("no labs");
    }
    for l in &labs {
        let present = l.namespaces.iter().filter(|n| netns.contains(n)).count();
        let alive = l
            .pids
            .iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .count();
        println!(
            "lab {}: {} hosts, {present}/{} namespaces, {alive}/{} daemons alive, run dir {}",
            l.id,
            l.hosts.len(),
            l.namespaces.len(),
            l.pids.len(),
            l.run_dir.display()
        );
        for h in &l.hosts {
            println!("  {}  db unix:{}", h.ns, h.db_sock.display());
        }
    }
    let known: Vec<&String> = labs.iter().flat_map(|l| &l.namespaces).collect();
    let stray: Vec<&String> = netns
        .iter()
        .filter(|n| n.starts_with("xl") && !known.contains(n))
        .collect();
    if !stray.is_empty() {
        println!("namespaces without a state file: {stray:?} (xnet-lab down --all removes them)");
    }
}
