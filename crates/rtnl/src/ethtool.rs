//! SIOCETHTOOL ioctls on an AF_INET datagram socket of the current namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSET: u32 = 0x01;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETHTOOL_GLINKSETTINGS: u32 = 0x4c;
const ETHTOOL_SLINKSETTINGS: u32 = 0x4d;
// struct ethtool_link_settings: cmd, speed u32, then u8 fields; the masks
// (supported, advertising, lp_advertising) follow the 48-byte header.
const LS_DUPLEX: usize = 8;
const LS_AUTONEG: usize = 11;
const LS_NWORDS: usize = 15;
const LS_LEN: usize = 48;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// SFEATURES result bit: the driver could not apply every requested change.
const ETHTOOL_F_WISH: i32 = 1 << 1;
const SPEED_UNKNOWN: u32 = u32::MAX;
const DUPLEX_HALF: u8 = 0;
const DUPLEX_FULL: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    #[error("socket(AF_INET): {0}")]
    Socket(#[source] io::Error),
    #[error("{op} on {ifname}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel {
        op: &'static str,
        ifname: String,
        errno: i32,
    },
    #[error("{ifname}: offload {feature:?} not supported by the driver")]
    Unsupported { ifname: String, feature: Offload },
    #[error("{ifname}: offload {feature:?} could not be set to {on}")]
    NotApplied {
        ifname: String,
        feature: Offload,
        on: bool,
    },
    #[error("{ifname}: the driver cannot change speed, duplex or autonegotiation")]
    LinkUnsupported { ifname: String },
    #[error("malformed ethtool answer: {0}")]
    Parse(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplex {
    Half,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// None when the driver does not know (SPEED_UNKNOWN, 0). veth reports 10000.
    pub speed_mbps: Option<u32>,
    pub duplex: Option<Duplex>,
}

/// What `ethtool -s` sets (`None` = leave as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkRequest {
    pub speed_mbps: Option<u32>,
    pub duplex: Option<Duplex>,
    pub autoneg: Option<bool>,
    /// The advertised link modes, low 64 bits (ethtool's `advertise 0x…`).
    pub advertise: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    pub driver: String,
    pub version: String,
    pub bus_info: String,
}

/// The offloads `ethtool -K` names, each a group of kernel features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offload {
    Tx,
    Rx,
    Sg,
    Tso,
    Gso,
    Gro,
    Lro,
    Ufo,
}

impl Offload {
    /// Whether a kernel feature name (ETH_SS_FEATURES) belongs to this offload, with
    /// ethtool's own patterns ("tx" = "tx-checksum-*", "tso" = "tx-tcp*-segmentation").
    fn matches(self, name: &str) -> bool {
        match self {
            Offload::Tx => name.starts_with("tx-checksum-"),
            Offload::Rx => name == "rx-checksum",
            Offload::Sg => name.starts_with("tx-scatter-gather"),
            Offload::Tso => name.starts_with("tx-tcp") && name.ends_with("-segmentation"),
            Offload::Gso => name == "tx-generic-segmentation",
            Offload::Gro => name == "rx-gro",
            Offload::Lro => name == "rx-lro",
            Offload::Ufo => name == "tx-udp-fragmentation",
        }
    }
}

struct Ctl {
    fd: OwnedFd,
    name: [u8; libc::IFNAMSIZ],
    ifname: String,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

impl Ctl {
    fn open(ifname: &str) -> Result<Ctl, EthtoolError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
            return Err(EthtoolError::InvalidName(ifname.into()));
        }
        let mut name = [0u8; libc::IFNAMSIZ];
        name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        // SAFETY: plain syscall; fd owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(EthtoolError::Socket(io::Error::last_os_error()));
        }
        Ok(Ctl {
            // SAFETY: fresh valid fd.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            name,
            ifname: ifname.into(),
        })
    }

    /// Runs one ethtool command; `buf` starts with the u32 cmd. Returns the ioctl's
    /// non-negative result or the errno.
    fn ioctl(&self, buf: &mut [u8]) -> Result<i32, i32> {
        let mut req = IfReq {
            name: self.name,
            data: buf.as_mut_ptr() as *mut libc::c_void,
            _pad: [0; 16],
        };
        // SAFETY: req and buf outlive the call; each caller sizes buf for its command.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if r < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(r)
        }
    }

    fn err(&self, op: &'static str, errno: i32) -> EthtoolError {
        EthtoolError::Kernel {
            op,
            ifname: self.ifname.clone(),
            errno,
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn not_supported(errno: i32) -> bool {
    errno == libc::EOPNOTSUPP || errno == libc::EINVAL
}

fn settings(speed: u32, duplex: u8) -> LinkSettings {
    LinkSettings {
        speed_mbps: (speed != 0 && speed != SPEED_UNKNOWN && speed != u16::MAX as u32)
            .then_some(speed),
        duplex: match duplex {
            DUPLEX_HALF => Some(Duplex::Half),
            DUPLEX_FULL => Some(Duplex::Full),
            _ => None,
        },
    }
}

/// The whole struct ethtool_link_settings with its masks, or `None` if the
/// driver does not answer ETHTOOL_GLINKSETTINGS (or not its handshake).
fn get_ksettings(ctl: &Ctl) -> Result<Option<Vec<u8>>, EthtoolError> {
    // The first call (nwords = 0) is the handshake: the kernel answers -nwords.
    let mut b = vec![0u8; LS_LEN];
    b[0..4].copy_from_slice(&ETHTOOL_GLINKSETTINGS.to_ne_bytes());
    match ctl.ioctl(&mut b) {
        Ok(_) => {
            let nwords = -(b[LS_NWORDS] as i8);
            if nwords <= 0 {
                return Ok(None);
            }
            let mut b2 = vec![0u8; LS_LEN + 3 * 4 * nwords as usize];
            b2[0..4].copy_from_slice(&ETHTOOL_GLINKSETTINGS.to_ne_bytes());
            b2[LS_NWORDS] = nwords as u8;
            ctl.ioctl(&mut b2)
                .map_err(|e| ctl.err("ETHTOOL_GLINKSETTINGS", e))?;
            Ok(Some(b2))
        }
        Err(e) if not_supported(e) => Ok(None),
        Err(e) => Err(ctl.err("ETHTOOL_GLINKSETTINGS", e)),
    }
}

/// Applies what `req` asks where it differs from the device; returns whether
/// anything was written. A driver without the setting gives `LinkUnsupported`.
pub fn set_link(ifname: &str, req: &LinkRequest) -> Result<bool, EthtoolError> {
    let ctl = Ctl::open(ifname)?;
    let unsupported = || EthtoolError::LinkUnsupported {
        ifname: ifname.into(),
    };
    let mut b = get_ksettings(&ctl)?.ok_or_else(unsupported)?;
    let before = b.clone();
    if let Some(sp) = req.speed_mbps {
        b[4..8].copy_from_slice(&sp.to_ne_bytes());
    }
    if let Some(d) = req.duplex {
        b[LS_DUPLEX] = match d {
            Duplex::Half => DUPLEX_HALF,
            Duplex::Full => DUPLEX_FULL,
        };
    }
    if let Some(a) = req.autoneg {
        b[LS_AUTONEG] = a as u8;
    }
    if let Some(adv) = req.advertise {
        let nwords = b[LS_NWORDS] as usize;
        let off = LS_LEN + 4 * nwords;
        b[off..off + 4].copy_from_slice(&(adv as u32).to_ne_bytes());
        if nwords > 1 {
            b[off + 4..off + 8].copy_from_slice(&((adv >> 32) as u32).to_ne_bytes());
        }
    }
    if b == before {
        return Ok(false);
    }
    b[0..4].copy_from_slice(&ETHTOOL_SLINKSETTINGS.to_ne_bytes());
    match ctl.ioctl(&mut b) {
        Ok(_) => Ok(true),
        Err(e) if not_supported(e) => Err(unsupported()),
        Err(e) => Err(ctl.err("ETHTOOL_SLINKSETTINGS", e)),
    }
}

/// Speed and duplex; `None` if the driver answers neither ETHTOOL_GLINKSETTINGS nor
/// ETHTOOL_GSET.
pub fn link_settings(ifname: &str) -> Result<Option<LinkSettings>, EthtoolError> {
    let ctl = Ctl::open(ifname)?;
    // struct ethtool_link_settings is 48 bytes, then 3 masks of nwords u32 each. The
    // first call (nwords = 0) is the handshake: the kernel answers -nwords.
    if let Some(b) = get_ksettings(&ctl)? {
        return Ok(Some(settings(u32_at(&b, 4), b[LS_DUPLEX])));
    }
    // struct ethtool_cmd: speed u16 at 12, duplex at 14, speed_hi u16 at 28.
    let mut c = vec![0u8; 44];
    c[0..4].copy_from_slice(&ETHTOOL_GSET.to_ne_bytes());
    match ctl.ioctl(&mut c) {
        Ok(_) => {
            let lo = u16::from_ne_bytes([c[12], c[13]]) as u32;
            let hi = u16::from_ne_bytes([c[28], c[29]]) as u32;
            Ok(Some(settings(hi << 16 | lo, c[14])))
        }
        Err(e) if not_supported(e) => Ok(None),
        Err(e) => Err(ctl.err("ETHTOOL_GSET", e)),
    }
}

/// Driver name, version and bus address; `None` if the driver does not say.
pub fn driver_info(ifname: &str) -> Result<Option<DriverInfo>, EthtoolError> {
    let ctl = Ctl::open(ifname)?;
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32],
    // bus_info[32], erom_version[32], reserved2[12], 5 u32 = 196 bytes.
    let mut b = vec![0u8; 196];
    b[0..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    match ctl.ioctl(&mut b) {
        Ok(_) => Ok(Some(DriverInfo {
            driver: cstr(&b[4..36]),
            version: cstr(&b[36..68]),
            bus_info: cstr(&b[100..132]),
        })),
        Err(e) if e == libc::EOPNOTSUPP => Ok(None),
        Err(e) => Err(ctl.err("ETHTOOL_GDRVINFO", e)),
    }
}

/// The kernel's feature names (ETH_SS_FEATURES), indexed by feature bit.
fn feature_names(ctl: &Ctl) -> Result<Vec<String>, EthtoolError> {
    // struct ethtool_sset_info: cmd, reserved, u64 sset_mask, then one u32 per set.
    let mut b = vec![0u8; 20];
    b[0..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    b[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ctl.ioctl(&mut b)
        .map_err(|e| ctl.err("ETHTOOL_GSSET_INFO", e))?;
    if u64::from_ne_bytes(b[8..16].try_into().unwrap()) & (1 << ETH_SS_FEATURES) == 0 {
        return Err(EthtoolError::Parse("no ETH_SS_FEATURES string set".into()));
    }
    let n = u32_at(&b, 16) as usize;
    if n > 4096 {
        return Err(EthtoolError::Parse(format!("{n} feature strings")));
    }
    // struct ethtool_gstrings: cmd, string_set, len, data[len * 32].
    let mut s = vec![0u8; 12 + n * ETH_GSTRING_LEN];
    s[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    s[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    s[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    ctl.ioctl(&mut s)
        .map_err(|e| ctl.err("ETHTOOL_GSTRINGS", e))?;
    let got = (u32_at(&s, 8) as usize).min(n);
    Ok(s[12..12 + got * ETH_GSTRING_LEN]
        .chunks(ETH_GSTRING_LEN)
        .map(cstr)
        .collect())
}

/// Per feature bit: (changeable, active), from ETHTOOL_GFEATURES.
fn features(ctl: &Ctl, n: usize) -> Result<Vec<(bool, bool)>, EthtoolError> {
    let blocks = n.div_ceil(32);
    // struct ethtool_gfeatures: cmd, size, then {available, requested, active,
    // never_changed} per 32-bit block.
    let mut b = vec![0u8; 8 + blocks * 16];
    b[0..4].copy_from_slice(&ETHTOOL_GFEATURES.to_ne_bytes());
    b[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    ctl.ioctl(&mut b)
        .map_err(|e| ctl.err("ETHTOOL_GFEATURES", e))?;
    Ok((0..n)
        .map(|i| {
            let off = 8 + (i / 32) * 16;
            let bit = 1u32 << (i % 32);
            (u32_at(&b, off) & bit != 0, u32_at(&b, off + 8) & bit != 0)
        })
        .collect())
}

/// Whether an offload is on: all of its features active (as `ethtool -k` says "on").
/// `None` if the kernel has no feature of that name.
pub fn get_offload(ifname: &str, feature: Offload) -> Result<Option<bool>, EthtoolError> {
    let ctl = Ctl::open(ifname)?;
    let names = feature_names(&ctl)?;
    let state = features(&ctl, names.len())?;
    let mine: Vec<bool> = names
        .iter()
        .zip(&state)
        .filter(|(n, _)| feature.matches(n))
        .map(|(_, s)| s.1)
        .collect();
    Ok((!mine.is_empty()).then(|| mine.iter().any(|&a| a)))
}

/// Turns an offload on or off (ETHTOOL_SFEATURES), changing only the features the
/// driver lets change. Setting it to the state it already has is a no-op.
pub fn set_offload(ifname: &str, feature: Offload, on: bool) -> Result<(), EthtoolError> {
    let ctl = Ctl::open(ifname)?;
    let names = feature_names(&ctl)?;
    let state = features(&ctl, names.len())?;
    let blocks = names.len().div_ceil(32);
    // struct ethtool_sfeatures: cmd, size, then {valid, requested} per block.
    let mut b = vec![0u8; 8 + blocks * 8];
    b[0..4].copy_from_slice(&ETHTOOL_SFEATURES.to_ne_bytes());
    b[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    // `fixed_on`: a feature the driver will not turn off is on; `usable`: some
    // feature of the group can be (or already is) on.
    let (mut any, mut fixed_on, mut usable) = (false, false, false);
    for (i, (name, &(changeable, active))) in names.iter().zip(&state).enumerate() {
        if !feature.matches(name) {
            continue;
        }
        any = true;
        if !changeable {
            // Fixed features (e.g. tx-checksum-ipv4 on a generic-checksum driver)
            // only matter if they contradict an "off".
            fixed_on |= active;
            usable |= active;
            continue;
        }
        usable = true;
        let off = 8 + (i / 32) * 8;
        let bit = 1u32 << (i % 32);
        let valid = u32_at(&b, off) | bit;
        b[off..off + 4].copy_from_slice(&valid.to_ne_bytes());
        if on {
            let req = u32_at(&b, off + 4) | bit;
            b[off + 4..off + 8].copy_from_slice(&req.to_ne_bytes());
        }
    }
    let unsupported = || EthtoolError::Unsupported {
        ifname: ifname.into(),
        feature,
    };
    if !any || (on && !usable) {
        return Err(unsupported());
    }
    let r = ctl
        .ioctl(&mut b)
        .map_err(|e| ctl.err("ETHTOOL_SFEATURES", e))?;
    if r & ETHTOOL_F_WISH != 0 || (fixed_on && !on) {
        return Err(EthtoolError::NotApplied {
            ifname: ifname.into(),
            feature,
            on,
        });
    }
    Ok(())
}
