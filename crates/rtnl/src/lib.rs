//! A small synchronous rtnetlink client (links, addresses, routes, link events, veth)
//! plus the ethtool ioctls the host agent needs. The wire encoding is written here
//! (one module per message family) so the public types stay ours.

mod addr;
mod attr;
pub mod ethtool;
mod link;
mod monitor;
pub mod netns;
mod route;
mod socket;

use std::io;

pub use addr::Addr;
pub use link::{Link, LinkStats};
pub use monitor::{Event, Monitor};
pub use route::Route;

/// Errors of the rtnetlink client.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// A socket system call failed.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error (errno is positive).
    #[error("{op}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { op: &'static str, errno: i32 },
    /// The kernel sent bytes that do not parse (or a test fed us some).
    #[error("malformed netlink message: {0}")]
    Parse(String),
    /// The caller passed an argument the kernel could not take (name too long, …).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The monitor socket overflowed (ENOBUFS): events were lost, resync with a dump.
    #[error("netlink receive buffer overrun: events lost")]
    Overrun,
}

impl RtnlError {
    /// The kernel errno for `Kernel` errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            RtnlError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One NETLINK_ROUTE socket, bound in the network namespace of the calling thread at
/// `open` time (it stays in that namespace even if the thread moves later).
pub struct Rtnl {
    sock: socket::NlSocket,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, RtnlError> {
        Ok(Rtnl {
            sock: socket::NlSocket::open(0)?,
        })
    }
}
