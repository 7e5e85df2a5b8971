//! A minimal OpenFlow 1.3 (wire version 0x04) client for Open vSwitch's
//! per-bridge management socket (`<ovs rundir>/<bridge>.mgmt`): it sends
//! batches of `OFPT_FLOW_MOD` and `OFPT_METER_MOD` messages, each batch
//! followed by an `OFPT_BARRIER_REQUEST`, and reports any `OFPT_ERROR` the
//! switch returned for the batch, and reads state back with the flow and
//! meter-config multipart requests ([`Conn::dump_flows`],
//! [`Conn::dump_meters`]). Knows nothing of xnet.
//!
//! # Match prerequisites
//!
//! OpenFlow requires every match field's prerequisites to be present in the
//! same match, and this crate does not add them: the caller must. For example
//! `Ipv4Src` needs `EthType(0x0800)`, `UdpDst` needs `EthType(0x0800)` (or
//! `0x86dd`) and `IpProto(17)`, `ArpOp` needs `EthType(0x0806)`,
//! `Icmpv6Type` needs `EthType(0x86dd)` and `IpProto(58)`, `Ipv6NdTarget`
//! additionally `Icmpv6Type(135 or 136)` and `Ipv6NdSll` `Icmpv6Type(135)`.
//! Open vSwitch refuses a flow whose prerequisites are missing with
//! `OFPET_BAD_MATCH`/`OFPBMC_BAD_PREREQ` (type 4, code 9).
//!
//! # Batches are not transactions
//!
//! Open vSwitch processes the messages of a batch one by one: a refused
//! message does not undo the ones before it, nor stop the ones after it.
//! [`Conn::send`] reports the first refused message; everything else in the
//! batch took effect.

pub mod framing;
pub mod stats;

pub use stats::{FlowFilter, FlowStats, MeterBand, MeterConfig};

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use framing::{Framer, RawMsg, HEADER_LEN};

/// OpenFlow 1.3 wire version.
pub const OFP_VERSION: u8 = 0x04;

/// Reserved port: the switch's normal L2/L3 processing.
pub const PORT_NORMAL: u32 = 0xffff_fffa;
/// Reserved port: send to the controller.
pub const PORT_CONTROLLER: u32 = 0xffff_fffd;
/// Reserved port: wildcard (in `FlowMod::out_port`, no filtering).
pub const PORT_ANY: u32 = 0xffff_ffff;
/// Reserved port: back out of the port the packet came in on.
pub const PORT_IN_PORT: u32 = 0xffff_fff8;
/// Reserved port: the local (bridge-internal) port.
pub const PORT_LOCAL: u32 = 0xffff_fffe;
/// Reserved port: flood.
pub const PORT_FLOOD: u32 = 0xffff_fffb;

/// Table id meaning "all tables" (`OFPTT_ALL`), for `Delete`/`DeleteStrict`.
pub const TABLE_ALL: u8 = 0xff;

/// Group wildcard (`OFPG_ANY`).
pub const GROUP_ANY: u32 = 0xffff_ffff;
/// Meter id meaning "all meters" (`OFPM_ALL`), for `MeterCommand::Delete`.
pub const METER_ALL: u32 = 0xffff_ffff;

/// `OFPVID_PRESENT`: OR it into a VLAN id to match tagged packets with that
/// id (see [`Field::vlan`]); `VlanVid(0)` (`OFPVID_NONE`) matches untagged.
pub const VID_PRESENT: u16 = 0x1000;

/// Ethertypes, for the prerequisites.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
/// IP protocols, for the prerequisites.
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;
pub const IP_PROTO_ICMPV6: u8 = 58;

// Message types (enum ofp_type).
const OFPT_HELLO: u8 = 0;
const OFPT_ERROR: u8 = 1;
const OFPT_ECHO_REQUEST: u8 = 2;
const OFPT_ECHO_REPLY: u8 = 3;
const OFPT_FLOW_MOD: u8 = 14;
const OFPT_BARRIER_REQUEST: u8 = 20;
const OFPT_BARRIER_REPLY: u8 = 21;
const OFPT_METER_MOD: u8 = 29;
const OFPT_MULTIPART_REQUEST: u8 = 18;
const OFPT_MULTIPART_REPLY: u8 = 19;

const OFPHET_VERSIONBITMAP: u16 = 1;
const OFPMT_OXM: u16 = 1;
const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
const OFP_NO_BUFFER: u32 = 0xffff_ffff;
const OFPCML_NO_BUFFER: u16 = 0xffff;

const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_METER: u16 = 6;
const OFPAT_OUTPUT: u16 = 0;

const OFPMF_KBPS: u16 = 1;
const OFPMF_BURST: u16 = 4;
const OFPMBT_DROP: u16 = 1;

/// `OFPET_EXPERIMENTER`: the error carries an experimenter-defined type.
pub const ERROR_TYPE_EXPERIMENTER: u16 = 0xffff;

#[derive(Debug, thiserror::Error)]
pub enum OfError {
    #[error("OpenFlow I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("OpenFlow protocol: {0}")]
    Protocol(String),
    /// The switch answered message `xid_index` of the batch with an
    /// `OFPT_ERROR`. For experimenter errors (`type_` 0xffff) `code` is the
    /// experimenter's `exp_type`.
    #[error("switch refused message #{xid_index} of the batch: error type {type_}, code {code}")]
    Refused {
        type_: u16,
        code: u16,
        xid_index: usize,
    },
    #[error("OpenFlow: timed out waiting for the switch")]
    Timeout,
}

impl OfError {
    fn from_io(e: std::io::Error) -> OfError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => OfError::Timeout,
            _ => OfError::Io(e),
        }
    }
}

/// One OXM match field (class `OFPXMC_OPENFLOW_BASIC`). Masked fields take
/// an optional mask; value bits outside the mask are cleared when encoding
/// (OpenFlow forbids them). Prerequisites are the caller's job (see the crate
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    InPort(u32),
    EthDst([u8; 6], Option<[u8; 6]>),
    EthSrc([u8; 6], Option<[u8; 6]>),
    EthType(u16),
    /// The 13-bit `vlan_vid` OXM value: include [`VID_PRESENT`] for tagged
    /// traffic ([`Field::vlan`] does it), 0 for untagged.
    VlanVid(u16),
    IpProto(u8),
    Ipv4Src(Ipv4Addr, Option<Ipv4Addr>),
    Ipv4Dst(Ipv4Addr, Option<Ipv4Addr>),
    TcpSrc(u16),
    TcpDst(u16),
    UdpSrc(u16),
    UdpDst(u16),
    ArpOp(u16),
    ArpSpa(Ipv4Addr, Option<Ipv4Addr>),
    ArpTpa(Ipv4Addr, Option<Ipv4Addr>),
    ArpSha([u8; 6]),
    Ipv6Src(Ipv6Addr, Option<Ipv6Addr>),
    Ipv6Dst(Ipv6Addr, Option<Ipv6Addr>),
    Icmpv6Type(u8),
    Ipv6NdTarget(Ipv6Addr),
    Ipv6NdSll([u8; 6]),
}

impl Field {
    /// Matches packets tagged with VLAN `vid` (0..=4095).
    pub fn vlan(vid: u16) -> Field {
        Field::VlanVid((vid & 0x0fff) | VID_PRESENT)
    }

    /// OXM field number (enum oxm_ofb_match_fields).
    fn oxm_field(&self) -> u8 {
        match self {
            Field::InPort(_) => 0,
            Field::EthDst(..) => 3,
            Field::EthSrc(..) => 4,
            Field::EthType(_) => 5,
            Field::VlanVid(_) => 6,
            Field::IpProto(_) => 10,
            Field::Ipv4Src(..) => 11,
            Field::Ipv4Dst(..) => 12,
            Field::TcpSrc(_) => 13,
            Field::TcpDst(_) => 14,
            Field::UdpSrc(_) => 15,
            Field::UdpDst(_) => 16,
            Field::ArpOp(_) => 21,
            Field::ArpSpa(..) => 22,
            Field::ArpTpa(..) => 23,
            Field::ArpSha(_) => 24,
            Field::Ipv6Src(..) => 26,
            Field::Ipv6Dst(..) => 27,
            Field::Icmpv6Type(_) => 29,
            Field::Ipv6NdTarget(_) => 31,
            Field::Ipv6NdSll(_) => 32,
        }
    }

    /// Value and optional mask, big-endian, value already masked.
    fn value_mask(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        fn masked(v: &[u8], m: Option<&[u8]>) -> (Vec<u8>, Option<Vec<u8>>) {
            match m {
                None => (v.to_vec(), None),
                Some(m) => (
                    v.iter().zip(m).map(|(a, b)| a & b).collect(),
                    Some(m.to_vec()),
                ),
            }
        }
        match self {
            Field::InPort(p) => (p.to_be_bytes().to_vec(), None),
            Field::EthDst(v, m) | Field::EthSrc(v, m) => masked(v, m.as_ref().map(|m| &m[..])),
            Field::EthType(v)
            | Field::VlanVid(v)
            | Field::TcpSrc(v)
            | Field::TcpDst(v)
            | Field::UdpSrc(v)
            | Field::UdpDst(v)
            | Field::ArpOp(v) => (v.to_be_bytes().to_vec(), None),
            Field::IpProto(v) | Field::Icmpv6Type(v) => (vec![*v], None),
            Field::Ipv4Src(v, m)
            | Field::Ipv4Dst(v, m)
            | Field::ArpSpa(v, m)
            | Field::ArpTpa(v, m) => {
                masked(&v.octets(), m.map(|m| m.octets()).as_ref().map(|m| &m[..]))
            }
            Field::ArpSha(v) | Field::Ipv6NdSll(v) => (v.to_vec(), None),
            Field::Ipv6Src(v, m) | Field::Ipv6Dst(v, m) => {
                masked(&v.octets(), m.map(|m| m.octets()).as_ref().map(|m| &m[..]))
            }
            Field::Ipv6NdTarget(v) => (v.octets().to_vec(), None),
        }
    }

    /// The OXM TLV as sent on the wire (value bits outside the mask
    /// cleared): a canonical form for comparing matches.
    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Appends the OXM TLV: class, field<<1|hasmask, length, value[, mask].
    fn encode(&self, out: &mut Vec<u8>) {
        let (value, mask) = self.value_mask();
        let hasmask = mask.is_some() as u8;
        let len = value.len() + mask.as_ref().map_or(0, Vec::len);
        out.extend_from_slice(&OFPXMC_OPENFLOW_BASIC.to_be_bytes());
        out.push((self.oxm_field() << 1) | hasmask);
        out.push(len as u8);
        out.extend_from_slice(&value);
        if let Some(m) = mask {
            out.extend_from_slice(&m);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Output to a port (or a reserved port such as [`PORT_NORMAL`]);
    /// packets sent to the controller are not buffered (max_len 0xffff).
    Output(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Apply(Vec<Action>),
    GotoTable(u8),
    Meter(u32),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowCommand {
    #[default]
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
}

/// An `OFPT_FLOW_MOD`. Idle and hard timeouts are 0 (permanent), the buffer
/// id is `OFP_NO_BUFFER`, `out_group` is `OFPG_ANY` and flags are 0 (no
/// `OFPFF_SEND_FLOW_REM`). `out_port` only filters `Delete`/`DeleteStrict`;
/// leave it [`PORT_ANY`] (the `Default`) otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMod {
    pub command: FlowCommand,
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// For modify/delete: which cookie bits must equal `cookie`
    /// (0 = any cookie). Ignored by `Add`.
    pub cookie_mask: u64,
    pub matches: Vec<Field>,
    pub instructions: Vec<Instruction>,
    pub out_port: u32,
}

impl Default for FlowMod {
    fn default() -> FlowMod {
        FlowMod {
            command: FlowCommand::Add,
            table: 0,
            priority: 0,
            cookie: 0,
            cookie_mask: 0,
            matches: Vec::new(),
            instructions: Vec::new(),
            out_port: PORT_ANY,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MeterCommand {
    #[default]
    Add,
    Modify,
    Delete,
}

/// An `OFPT_METER_MOD` with flags `OFPMF_KBPS` (plus `OFPMF_BURST` when
/// `burst_kb > 0`) and a single `OFPMBT_DROP` band. `Delete` sends no band
/// (rate and burst are ignored); `meter_id` [`METER_ALL`] deletes all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterMod {
    pub command: MeterCommand,
    pub meter_id: u32,
    pub rate_kbps: u32,
    pub burst_kb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Flow(FlowMod),
    Meter(MeterMod),
}

fn put_header(out: &mut Vec<u8>, type_: u8, xid: u32) -> usize {
    let start = out.len();
    out.push(OFP_VERSION);
    out.push(type_);
    out.extend_from_slice(&[0, 0]); // length, patched by finish_header
    out.extend_from_slice(&xid.to_be_bytes());
    start
}

fn finish_header(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn pad8(out: &mut Vec<u8>, start: usize) {
    while !(out.len() - start).is_multiple_of(8) {
        out.push(0);
    }
}

fn encode_match(fields: &[Field], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&OFPMT_OXM.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for f in fields {
        f.encode(out);
    }
    // ofp_match.length excludes the padding.
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    pad8(out, start);
}

fn encode_instruction(inst: &Instruction, out: &mut Vec<u8>) {
    let start = out.len();
    match inst {
        Instruction::GotoTable(t) => {
            out.extend_from_slice(&OFPIT_GOTO_TABLE.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[*t, 0, 0, 0]);
        }
        Instruction::Meter(id) => {
            out.extend_from_slice(&OFPIT_METER.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        Instruction::Apply(actions) => {
            out.extend_from_slice(&OFPIT_APPLY_ACTIONS.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // length, pad[4]
            for a in actions {
                match a {
                    Action::Output(port) => {
                        out.extend_from_slice(&OFPAT_OUTPUT.to_be_bytes());
                        out.extend_from_slice(&16u16.to_be_bytes());
                        out.extend_from_slice(&port.to_be_bytes());
                        out.extend_from_slice(&OFPCML_NO_BUFFER.to_be_bytes());
                        out.extend_from_slice(&[0; 6]);
                    }
                }
            }
            let len = (out.len() - start) as u16;
            out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
}

impl FlowMod {
    fn encode(&self, xid: u32, out: &mut Vec<u8>) {
        let start = put_header(out, OFPT_FLOW_MOD, xid);
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.cookie_mask.to_be_bytes());
        out.push(self.table);
        out.push(match self.command {
            FlowCommand::Add => 0,
            FlowCommand::Modify => 1,
            FlowCommand::ModifyStrict => 2,
            FlowCommand::Delete => 3,
            FlowCommand::DeleteStrict => 4,
        });
        out.extend_from_slice(&0u16.to_be_bytes()); // idle_timeout
        out.extend_from_slice(&0u16.to_be_bytes()); // hard_timeout
        out.extend_from_slice(&self.priority.to_be_bytes());
        out.extend_from_slice(&OFP_NO_BUFFER.to_be_bytes());
        out.extend_from_slice(&self.out_port.to_be_bytes());
        out.extend_from_slice(&GROUP_ANY.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // flags: no SEND_FLOW_REM
        out.extend_from_slice(&[0, 0]);
        encode_match(&self.matches, out);
        for i in &self.instructions {
            encode_instruction(i, out);
        }
        finish_header(out, start);
    }
}

impl MeterMod {
    fn encode(&self, xid: u32, out: &mut Vec<u8>) {
        let start = put_header(out, OFPT_METER_MOD, xid);
        let (command, flags, band) = match self.command {
            MeterCommand::Add => (0u16, self.flags(), true),
            MeterCommand::Modify => (1, self.flags(), true),
            MeterCommand::Delete => (2, 0, false),
        };
        out.extend_from_slice(&command.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&self.meter_id.to_be_bytes());
        if band {
            out.extend_from_slice(&OFPMBT_DROP.to_be_bytes());
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&self.rate_kbps.to_be_bytes());
            out.extend_from_slice(&self.burst_kb.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        finish_header(out, start);
    }

    fn flags(&self) -> u16 {
        if self.burst_kb > 0 {
            OFPMF_KBPS | OFPMF_BURST
        } else {
            OFPMF_KBPS
        }
    }
}

impl Msg {
    /// Appends the wire encoding with transaction id `xid`.
    pub fn encode(&self, xid: u32, out: &mut Vec<u8>) {
        match self {
            Msg::Flow(f) => f.encode(xid, out),
            Msg::Meter(m) => m.encode(xid, out),
        }
    }
}

/// Messages written by [`Conn::submit`] whose answer is still to be read.
#[must_use = "a submitted batch is finished to learn whether it took effect"]
pub struct Batch {
    xids: Vec<u32>,
    barrier: u32,
}

/// One OpenFlow 1.3 connection to a switch.
pub struct Conn {
    stream: UnixStream,
    framer: Framer,
    next_xid: u32,
    timeout: Duration,
}

impl Conn {
    /// Connects to a unix socket (e.g. `<rundir>/<bridge>.mgmt`), sends a
    /// HELLO offering only OpenFlow 1.3 and checks the peer's HELLO allows
    /// it. `timeout` bounds every later wait for the switch (each socket
    /// read and write, and the whole of one [`Conn::send`]).
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Conn, OfError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut c = Conn {
            stream,
            framer: Framer::default(),
            next_xid: 1,
            timeout,
        };
        let xid = c.xid();
        let mut hello = Vec::with_capacity(16);
        let start = put_header(&mut hello, OFPT_HELLO, xid);
        hello.extend_from_slice(&OFPHET_VERSIONBITMAP.to_be_bytes());
        hello.extend_from_slice(&8u16.to_be_bytes());
        hello.extend_from_slice(&(1u32 << OFP_VERSION).to_be_bytes());
        finish_header(&mut hello, start);
        c.write(&hello)?;

        let deadline = Instant::now() + timeout;
        loop {
            let m = c.read(deadline)?;
            match m.type_ {
                OFPT_HELLO => {
                    check_hello(&m)?;
                    return Ok(c);
                }
                OFPT_ERROR => {
                    let (t, code) = error_type_code(&m.body);
                    return Err(OfError::Protocol(format!(
                        "switch answered HELLO with error type {t} code {code}"
                    )));
                }
                _ => {} // Nothing else should precede HELLO; skip it.
            }
        }
    }

    fn xid(&mut self) -> u32 {
        let x = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        x
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), OfError> {
        self.stream.write_all(bytes).map_err(OfError::from_io)
    }

    fn read(&mut self, deadline: Instant) -> Result<RawMsg, OfError> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(OfError::Timeout)?;
        self.stream.set_read_timeout(Some(left))?;
        framing::read_message(&mut self.stream, &mut self.framer)
    }

    /// Sends `msgs` in one write followed by a BARRIER_REQUEST and waits for
    /// the BARRIER_REPLY, answering ECHO_REQUESTs meanwhile. If the switch
    /// refused any of `msgs`, returns [`OfError::Refused`] for the first
    /// refused one (by index); the others took effect regardless.
    pub fn send(&mut self, msgs: &[Msg]) -> Result<(), OfError> {
        let b = self.submit(msgs)?;
        self.finish(b)
    }

    /// The first half of [`Conn::send`]: writes `msgs` and the barrier
    /// without waiting, so the caller can do other work while the switch
    /// takes them; [`Conn::finish`] waits for the answer.
    pub fn submit(&mut self, msgs: &[Msg]) -> Result<Batch, OfError> {
        let mut buf = Vec::new();
        let mut xids = Vec::with_capacity(msgs.len());
        for m in msgs {
            let x = self.xid();
            xids.push(x);
            m.encode(x, &mut buf);
        }
        let barrier = self.xid();
        let start = put_header(&mut buf, OFPT_BARRIER_REQUEST, barrier);
        finish_header(&mut buf, start);
        self.write(&buf)?;
        Ok(Batch { xids, barrier })
    }

    /// The second half of [`Conn::send`]: waits for a submitted batch's
    /// barrier reply and reports the first refused message.
    pub fn finish(&mut self, batch: Batch) -> Result<(), OfError> {
        let Batch { xids, barrier } = batch;
        let deadline = Instant::now() + self.timeout;
        let mut refused: Option<(usize, u16, u16)> = None;
        loop {
            let m = self.read(deadline)?;
            match m.type_ {
                OFPT_BARRIER_REPLY if m.xid == barrier => break,
                OFPT_ERROR => {
                    let Some(i) = xids.iter().position(|&x| x == m.xid) else {
                        if m.xid == barrier {
                            return Err(OfError::Protocol(
                                "switch refused the barrier request".into(),
                            ));
                        }
                        continue; // not ours (an earlier batch's late error)
                    };
                    let (t, code) = error_type_code(&m.body);
                    if refused.is_none_or(|(j, _, _)| i < j) {
                        refused = Some((i, t, code));
                    }
                }
                OFPT_ECHO_REQUEST => {
                    let mut reply = Vec::with_capacity(HEADER_LEN + m.body.len());
                    let s = put_header(&mut reply, OFPT_ECHO_REPLY, m.xid);
                    reply.extend_from_slice(&m.body);
                    finish_header(&mut reply, s);
                    self.write(&reply)?;
                }
                _ => {} // asynchronous messages are of no interest here
            }
        }
        match refused {
            Some((xid_index, type_, code)) => Err(OfError::Refused {
                type_,
                code,
                xid_index,
            }),
            None => Ok(()),
        }
    }
}

fn check_hello(m: &RawMsg) -> Result<(), OfError> {
    // A version bitmap, if present, is authoritative; otherwise the peer
    // supports every version up to its header version.
    let mut body = &m.body[..];
    while body.len() >= 4 {
        let t = u16::from_be_bytes([body[0], body[1]]);
        let len = u16::from_be_bytes([body[2], body[3]]) as usize;
        if len < 4 || len > body.len() {
            break;
        }
        if t == OFPHET_VERSIONBITMAP && len >= 8 {
            let bitmap0 = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            if bitmap0 & (1 << OFP_VERSION) == 0 {
                return Err(OfError::Protocol(format!(
                    "switch does not offer OpenFlow 1.3 (version bitmap {bitmap0:#x})"
                )));
            }
            return Ok(());
        }
        // Elements are padded to a multiple of 8 bytes.
        let advance = len.div_ceil(8) * 8;
        body = &body[advance.min(body.len())..];
    }
    if m.version < OFP_VERSION {
        return Err(OfError::Protocol(format!(
            "switch speaks OpenFlow wire version {:#x}, need {OFP_VERSION:#x}",
            m.version
        )));
    }
    Ok(())
}

/// `(type, code)` of an OFPT_ERROR body; for experimenter errors the code is
/// the `exp_type`.
fn error_type_code(body: &[u8]) -> (u16, u16) {
    if body.len() < 4 {
        return (0, 0);
    }
    (
        u16::from_be_bytes([body[0], body[1]]),
        u16::from_be_bytes([body[2], body[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_mod_layout() {
        let f = FlowMod {
            table: 3,
            priority: 0x1234,
            cookie: 0x0102030405060708,
            cookie_mask: 0,
            matches: vec![
                Field::EthType(ETH_TYPE_IPV4),
                Field::Ipv4Src(
                    Ipv4Addr::new(10, 1, 2, 3),
                    Some(Ipv4Addr::new(255, 0, 0, 0)),
                ),
            ],
            instructions: vec![
                Instruction::Apply(vec![Action::Output(PORT_NORMAL)]),
                Instruction::GotoTable(4),
            ],
            ..FlowMod::default()
        };
        let mut b = Vec::new();
        Msg::Flow(f).encode(9, &mut b);
        // header
        assert_eq!(&b[..2], &[4, 14]);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, b.len());
        assert_eq!(&b[4..8], &9u32.to_be_bytes());
        assert_eq!(&b[8..16], &0x0102030405060708u64.to_be_bytes());
        assert_eq!(b[24], 3); // table
        assert_eq!(b[25], 0); // ADD
        assert_eq!(&b[30..32], &[0x12, 0x34]);
        assert_eq!(&b[32..36], &[0xff; 4]); // buffer_id
        assert_eq!(&b[36..40], &[0xff; 4]); // out_port
        assert_eq!(&b[40..44], &[0xff; 4]); // out_group
        assert_eq!(&b[44..48], &[0; 4]); // flags, pad
                                         // match: type 1, length 4 + 6 + 12 = 22, padded to 24
        assert_eq!(&b[48..52], &[0, 1, 0, 22]);
        assert_eq!(&b[52..58], &[0x80, 0x00, 5 << 1, 2, 0x08, 0x00]);
        assert_eq!(
            &b[58..70],
            &[0x80, 0x00, (11 << 1) | 1, 8, 10, 0, 0, 0, 255, 0, 0, 0]
        );
        assert_eq!(&b[70..72], &[0, 0]);
        // apply-actions: 8 + 16
        assert_eq!(&b[72..80], &[0, 4, 0, 24, 0, 0, 0, 0]);
        assert_eq!(
            &b[80..96],
            &[0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfa, 0xff, 0xff, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&b[96..104], &[0, 1, 0, 8, 4, 0, 0, 0]);
        assert_eq!(b.len(), 104);
    }

    #[test]
    fn meter_mod_layout() {
        let mut b = Vec::new();
        Msg::Meter(MeterMod {
            command: MeterCommand::Add,
            meter_id: 7,
            rate_kbps: 1000,
            burst_kb: 0,
        })
        .encode(1, &mut b);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(&b[16..20], &[0, 1, 0, 16]);
        assert_eq!(&b[20..24], &1000u32.to_be_bytes());
        let mut d = Vec::new();
        Msg::Meter(MeterMod {
            command: MeterCommand::Delete,
            meter_id: 7,
            ..MeterMod::default()
        })
        .encode(2, &mut d);
        assert_eq!(d.len(), 16);
        assert_eq!(&d[8..12], &[0, 2, 0, 0]);
    }

    fn raw(type_: u8, xid: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let s = put_header(&mut v, type_, xid);
        v.extend_from_slice(body);
        finish_header(&mut v, s);
        v
    }

    fn socket_path(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("xnet-of-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A fake switch: answers HELLO, then for the batch sends an echo
    /// request (checking the reply), an error for the second message and
    /// the barrier reply, all split over odd writes.
    #[test]
    fn send_answers_echo_and_maps_error_to_index() {
        use std::io::Write as _;
        let path = socket_path("fake");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let switch = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut f = Framer::default();
            let hello = framing::read_message(&mut s, &mut f).unwrap();
            assert_eq!((hello.version, hello.type_), (4, OFPT_HELLO));
            s.write_all(&raw(OFPT_HELLO, 1, &[0, 1, 0, 8, 0, 0, 0, 0x12]))
                .unwrap();
            let a = framing::read_message(&mut s, &mut f).unwrap();
            let b = framing::read_message(&mut s, &mut f).unwrap();
            let barrier = framing::read_message(&mut s, &mut f).unwrap();
            assert_eq!((a.type_, b.type_), (OFPT_FLOW_MOD, OFPT_METER_MOD));
            assert_eq!(barrier.type_, OFPT_BARRIER_REQUEST);
            s.write_all(&raw(OFPT_ECHO_REQUEST, 77, b"abc")).unwrap();
            let echo = framing::read_message(&mut s, &mut f).unwrap();
            assert_eq!((echo.type_, echo.xid), (OFPT_ECHO_REPLY, 77));
            assert_eq!(echo.body, b"abc");
            let mut rest = raw(OFPT_ERROR, b.xid, &[0, 12, 0, 5, 1, 2, 3]);
            rest.extend(raw(OFPT_BARRIER_REPLY, barrier.xid, &[]));
            for piece in rest.chunks(5) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            // Keep the connection open until the client is done.
            let _ = framing::read_message(&mut s, &mut f);
        });
        let mut c = Conn::connect_unix(&path, Duration::from_secs(5)).unwrap();
        let r = c.send(&[
            Msg::Flow(FlowMod::default()),
            Msg::Meter(MeterMod::default()),
        ]);
        assert!(
            matches!(
                r,
                Err(OfError::Refused {
                    type_: 12,
                    code: 5,
                    xid_index: 1
                })
            ),
            "{r:?}"
        );
        drop(c);
        switch.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn silent_peer_times_out() {
        let path = socket_path("silent");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t0 = Instant::now();
        let r = Conn::connect_unix(&path, Duration::from_millis(200));
        assert!(matches!(r, Err(OfError::Timeout)), "{:?}", r.err());
        assert!(t0.elapsed() < Duration::from_secs(3));
        drop(listener);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn hello_without_version_1_3_is_refused() {
        let path = socket_path("of10");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || {
            use std::io::Write as _;
            let (mut s, _) = listener.accept().unwrap();
            let mut h = raw(OFPT_HELLO, 1, &[]);
            h[0] = 1; // OpenFlow 1.0, no bitmap
            s.write_all(&h).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        let r = Conn::connect_unix(&path, Duration::from_secs(2));
        assert!(matches!(r, Err(OfError::Protocol(_))), "{:?}", r.err());
        peer.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
