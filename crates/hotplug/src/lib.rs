//! vif-xnet, xnet's Xen vif hotplug script: the script contract
//! ([`script`]), xenstore access behind a trait ([`xenstore`]: the xenstored
//! socket protocol, and a directory store tests and dry runs feed) and the
//! call to xnetd ([`client`]).

pub mod client;
pub mod script;
pub mod xenstore;
