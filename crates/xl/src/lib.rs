//! Parser for the network part of Xen `xl` domain configs: the `vif = [ ... ]`
//! setting, described in Xen's `xl-network-configuration(5)`. Each list element
//! is a comma-separated `key=value` string; it becomes a typed [`VifSpec`], and a
//! bad string becomes an [`XlError`] that names the offending key or value.
//!
//! Where the doc and xl's own parser (`xl_parse.c`, `libxlu_vif.c`) disagree or
//! are looser than the doc, this crate follows the doc and says so at the spot.

mod config;
mod rate;
mod vif;

use std::fmt;
use std::net::IpAddr;

pub use config::parse_vif_setting;
pub use rate::parse_rate;
pub use vif::{parse_mac, parse_vif};

/// The `type=` of a vif.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VifType {
    /// `type=vif`: a paravirtual device only.
    #[default]
    Vif,
    /// `type=ioemu`: also an emulated NIC, backed in dom0 by a tap device
    /// (`tap<domid>.<devid>`, or `<vifname>-emu` when vifname is set).
    Ioemu,
}

/// An outgoing rate limit (`rate=`). Netback replenishes a credit of
/// [`Rate::bytes_per_interval`] bytes every `interval_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_sec: u64,
    pub interval_us: u64,
}

impl Rate {
    /// The credit per interval, computed as libxl does (`1MB/s@20ms` -> 20000).
    /// Never overflows: [`parse_rate`] rejects rates where the product would.
    pub fn bytes_per_interval(&self) -> u64 {
        let product = u128::from(self.bytes_per_sec) * u128::from(self.interval_us);
        u64::try_from(product / 1_000_000).unwrap_or(u64::MAX)
    }
}

/// One parsed vif list element. `None` / empty means "not given": xl's default applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VifSpec {
    pub mac: Option<[u8; 6]>,
    pub bridge: Option<String>,
    pub kind: VifType,
    pub model: Option<String>,
    pub vifname: Option<String>,
    pub script: Option<String>,
    pub ip: Vec<IpAddr>,
    pub rate: Option<Rate>,
    pub backend: Option<String>,
    pub devid: Option<u32>,
    pub mtu: Option<u32>,
    pub gatewaydev: Option<String>,
}

impl VifSpec {
    /// The rate in XAPI's `qos_algorithm_params:kbps` unit, which is KiB/s:
    /// rounded up so a small limit never becomes "0 = unlimited".
    pub fn rate_kib_per_sec(&self) -> Option<u64> {
        self.rate.map(|r| r.bytes_per_sec.div_ceil(1024).max(1))
    }
}

/// Why a `rate=` value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateFault {
    /// Not `<number><unit>/s[@<number><us|ms|s>]`.
    Malformed,
    /// The unit before `/s` is not one of B, KB, MB, GB, b, Kb, Mb, Gb.
    UnknownUnit,
    /// The rate or interval is zero (after converting bits to bytes).
    Zero,
    /// A number is out of range, or the credit per interval overflows.
    Overflow,
    /// The part after `@` is not `<number>us`, `<number>ms` or `<number>s`.
    BadInterval,
}

impl fmt::Display for RateFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateFault::Malformed => "expected <number><unit>/s[@<interval>]",
            RateFault::UnknownUnit => "unknown unit",
            RateFault::Zero => "zero rate or interval",
            RateFault::Overflow => "overflow",
            RateFault::BadInterval => "bad interval (expected <number>us, ms or s)",
        })
    }
}

/// Every way a vif string or config text can be rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XlError {
    #[error("vif: '{0}' is not key=value")]
    MissingEquals(String),
    #[error("vif: unknown key '{0}'")]
    UnknownKey(String),
    #[error("vif: empty value for '{0}'")]
    EmptyValue(String),
    #[error("vif: duplicate key '{0}'")]
    DuplicateKey(String),
    #[error("vif: bad mac '{0}'")]
    BadMac(String),
    #[error("vif: mac '{0}' is a multicast address")]
    MulticastMac(String),
    #[error("vif: bad type '{0}' (expected vif or ioemu)")]
    BadType(String),
    #[error("vif: bad model '{0}'")]
    BadModel(String),
    #[error("vif: bad {key} '{value}': not a valid interface name")]
    BadIfname { key: &'static str, value: String },
    #[error("vif: bad ip '{0}'")]
    BadIp(String),
    #[error("vif: rate '{rate}': {fault}")]
    BadRate { rate: String, fault: RateFault },
    #[error("vif: bad devid '{0}'")]
    BadDevid(String),
    #[error("vif: mtu '{0}' is not a number in 68..=65535")]
    BadMtu(String),
    /// The config text itself does not scan or parse.
    #[error("config line {line}: {msg}")]
    Syntax { line: usize, msg: &'static str },
    /// One element of a config's vif list is bad; `index` counts from 0.
    #[error("vif[{index}] at line {line}: {error}")]
    Element {
        index: usize,
        line: usize,
        error: Box<XlError>,
    },
}
