//! The pieces of `vif-xnet`, xnet's Xen vif hotplug script. So far: xenstore
//! access behind a trait (the xenstored socket protocol, and a directory
//! store for tests).

pub mod xenstore;
