//! vif-xnet: `vif=['mac=…,bridge=xenbr0,script=vif-xnet']` in an xl domain
//! config makes libxl run this for each of the domain's network devices.
//!
//! Environment besides libxl's: `XNET_SOCKET` (xnetd's socket, default
//! /run/xnet/xapi.sock), `XENSTORED_PATH` (default
//! /var/run/xenstored/socket), `XNET_XENSTORE_DIR` (read and write a
//! directory tree instead of xenstored: tests, dry runs).

use std::path::PathBuf;
use xnet_hotplug::client::Xnetd;
use xnet_hotplug::script::{self, Call};
use xnet_hotplug::xenstore::{DirStore, SocketStore, XenStore};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |k: &str| std::env::var(k).ok();
    let call = match Call::parse(&args, &env) {
        Ok(c) => c,
        Err(e) => fail(&e.to_string()),
    };
    let mut xs: Box<dyn XenStore> = match env("XNET_XENSTORE_DIR") {
        Some(dir) => Box::new(DirStore::new(dir)),
        None => {
            let path = env("XENSTORED_PATH").unwrap_or_else(|| "/var/run/xenstored/socket".into());
            match SocketStore::connect(std::path::Path::new(&path)) {
                Ok(s) => Box::new(s),
                Err(e) => fail(&e.to_string()),
            }
        }
    };
    let sock = PathBuf::from(env("XNET_SOCKET").unwrap_or_else(|| "/run/xnet/xapi.sock".into()));
    let mut api = match Xnetd::connect(&sock) {
        Ok(a) => a,
        Err(e) => {
            // libxl waits for hotplug-status: say why before giving up.
            let _ = script::report_failure(&call, xs.as_mut(), &e.to_string());
            fail(&e.to_string())
        }
    };
    let exists = |d: &str| std::path::Path::new("/sys/class/net").join(d).exists();
    if let Err(e) = script::run(&call, xs.as_mut(), &mut api, &exists) {
        fail(&format!("{} {}: {e}", args[0], call.dev));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("vif-xnet: {msg}");
    std::process::exit(1);
}
