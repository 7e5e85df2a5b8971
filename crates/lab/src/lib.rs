//! xnet-lab: simulated Xen hosts, a switch and VMs as network namespaces.
//!
//! Each host is a namespace with its own `ovsdb-server` + `ovs-vswitchd` (userspace
//! datapath); NICs are veth pairs into a switch namespace whose OVS bridge `seg<k>` is
//! the wire of segment k. This is a test harness: it forks `ip`, `ovs-vsctl` & co.
//!
//! ```no_run
//! use xnet_lab::{Lab, LabSpec};
//! let mut lab = Lab::new(LabSpec { hosts: 2, nics: 2, ..LabSpec::default() })?;
//! lab.vsctl(0, &["add-br", "xenbr0", "--", "set", "bridge", "xenbr0", "datapath_type=netdev"])?;
//! let vm = lab.add_vm(0, 1, 0)?; // VM eth0 <-> vif1.0 in host 0
//! lab.vm_exec(&vm, &["ip", "addr", "add", "10.0.0.5/24", "dev", "eth0"])?;
//! // dropping `lab` kills its processes and removes its namespaces and run dir
//! # Ok::<(), xnet_lab::LabError>(())
//! ```

mod lab;
mod ns;
mod ovs;

pub use lab::{cleanup_all, cleanup_id, list_labs, Host, Lab, LabSpec, LabState, Peer, Vm};
pub use ns::{list_netns, ping};
pub use ovs::Ovs;

/// Root of every lab's run dir (and what `cleanup_all` sweeps).
pub const RUN_ROOT: &str = "/run/xnet-lab";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` did not finish within {secs} s")]
    Timeout { cmd: String, secs: u64 },
    #[error("{what} not ready: {detail}")]
    NotReady { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("lab state: {0}")]
    State(#[from] serde_json::Error),
    #[error("invalid argument: {0}")]
    Invalid(String),
}
