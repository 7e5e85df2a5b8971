//! Named network namespaces (`ip netns` style, /run/netns/<name>).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn path(name: &str) -> io::Result<String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("netns name {name:?}"),
        ));
    }
    Ok(format!("/run/netns/{name}"))
}

/// Opens the namespace file; its fd is what `Rtnl::move_to_netns` takes.
pub fn open(name: &str) -> io::Result<File> {
    File::open(path(name)?)
}

/// Runs `f` on a new thread that has joined the namespace, and returns its result.
/// Sockets opened inside `f` stay bound to that namespace. A panic in `f` is
/// re-raised in the caller.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = open(name)?;
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            // setns only changes this thread, which is why it is a fresh one.
            // SAFETY: valid fd; CLONE_NEWNET is a per-thread switch.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(ns);
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}
