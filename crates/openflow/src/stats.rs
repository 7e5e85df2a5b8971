//! Reading state back: the `OFPMP_FLOW` and `OFPMP_METER_CONFIG` multipart
//! requests, with replies that span several messages (`OFPMPF_REPLY_MORE`)
//! gathered into one list.

use crate::{
    error_type_code, finish_header, pad8, put_header, Action, Conn, Field, Instruction, OfError,
    GROUP_ANY, OFPAT_OUTPUT, OFPIT_APPLY_ACTIONS, OFPIT_GOTO_TABLE, OFPIT_METER, OFPMF_BURST,
    OFPMF_KBPS, OFPMT_OXM, OFPT_ECHO_REPLY, OFPT_ECHO_REQUEST, OFPT_ERROR, OFPT_MULTIPART_REPLY,
    OFPT_MULTIPART_REQUEST, OFPXMC_OPENFLOW_BASIC, PORT_ANY, TABLE_ALL,
};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

const OFPMP_FLOW: u16 = 1;
const OFPMP_METER_CONFIG: u16 = 10;
const OFPMPF_REPLY_MORE: u16 = 1;

/// Which flows an `OFPMP_FLOW` request selects: OpenFlow's non-strict
/// matching (a flow is selected when its match is at least as specific as
/// `matches`), restricted by table, output port and cookie bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFilter {
    /// A table, or [`TABLE_ALL`].
    pub table: u8,
    /// Only flows that output to this port; [`PORT_ANY`] for all.
    pub out_port: u32,
    pub cookie: u64,
    /// Which cookie bits must equal `cookie` (0 = any cookie).
    pub cookie_mask: u64,
    pub matches: Vec<Field>,
}

impl Default for FlowFilter {
    fn default() -> FlowFilter {
        FlowFilter {
            table: TABLE_ALL,
            out_port: PORT_ANY,
            cookie: 0,
            cookie_mask: 0,
            matches: Vec::new(),
        }
    }
}

/// One flow as the switch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub packet_count: u64,
    pub byte_count: u64,
    /// The match fields this crate knows, in the switch's order.
    pub matches: Vec<Field>,
    /// The instructions this crate knows, in the switch's order.
    pub instructions: Vec<Instruction>,
    /// Some match field, instruction or action was of a kind this crate
    /// does not model and is missing from `matches`/`instructions`.
    pub undecoded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterBand {
    /// `OFPMBT_*`: 1 drop, 2 DSCP remark, 0xffff experimenter.
    pub type_: u16,
    pub rate: u32,
    pub burst_size: u32,
}

/// One meter's configuration (`ofp_meter_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterConfig {
    pub meter_id: u32,
    pub flags: u16,
    pub bands: Vec<MeterBand>,
}

impl MeterConfig {
    /// Rates are in kbit/s (rather than packets per second).
    pub fn kbps(&self) -> bool {
        self.flags & OFPMF_KBPS != 0
    }
    /// The bands' burst sizes apply.
    pub fn burst(&self) -> bool {
        self.flags & OFPMF_BURST != 0
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}
fn short(what: &str) -> OfError {
    OfError::Protocol(format!("truncated {what}"))
}

/// One OXM TLV's value and mask → a [`Field`], if it is one this crate knows.
fn decode_field(field: u8, value: &[u8], mask: Option<&[u8]>) -> Option<Field> {
    fn mac(v: &[u8]) -> Option<[u8; 6]> {
        v.try_into().ok()
    }
    fn v4(v: &[u8]) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
    }
    fn v6(v: &[u8]) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(v).ok().map(Ipv6Addr::from)
    }
    let u16v = || (value.len() == 2).then(|| be16(value, 0));
    let u8v = || (value.len() == 1).then(|| value[0]);
    let nomask = |f: Option<Field>| if mask.is_some() { None } else { f };
    match field {
        0 => nomask((value.len() == 4).then(|| Field::InPort(be32(value, 0)))),
        3 => Some(Field::EthDst(
            mac(value)?,
            mask.map(mac).map(Option::unwrap_or_default),
        )),
        4 => Some(Field::EthSrc(
            mac(value)?,
            mask.map(mac).map(Option::unwrap_or_default),
        )),
        5 => nomask(u16v().map(Field::EthType)),
        6 => nomask(u16v().map(Field::VlanVid)),
        10 => nomask(u8v().map(Field::IpProto)),
        11 => Some(Field::Ipv4Src(v4(value)?, mask.and_then(v4))),
        12 => Some(Field::Ipv4Dst(v4(value)?, mask.and_then(v4))),
        13 => nomask(u16v().map(Field::TcpSrc)),
        14 => nomask(u16v().map(Field::TcpDst)),
        15 => nomask(u16v().map(Field::UdpSrc)),
        16 => nomask(u16v().map(Field::UdpDst)),
        21 => nomask(u16v().map(Field::ArpOp)),
        22 => Some(Field::ArpSpa(v4(value)?, mask.and_then(v4))),
        23 => Some(Field::ArpTpa(v4(value)?, mask.and_then(v4))),
        24 => nomask(mac(value).map(Field::ArpSha)),
        26 => Some(Field::Ipv6Src(v6(value)?, mask.and_then(v6))),
        27 => Some(Field::Ipv6Dst(v6(value)?, mask.and_then(v6))),
        29 => nomask(u8v().map(Field::Icmpv6Type)),
        31 => nomask(v6(value).map(Field::Ipv6NdTarget)),
        32 => nomask(mac(value).map(Field::Ipv6NdSll)),
        _ => None,
    }
}

/// Decodes an `ofp_match` at the start of `b`; returns the fields, whether
/// any was left undecoded, and the padded length consumed.
fn decode_match(b: &[u8]) -> Result<(Vec<Field>, bool, usize), OfError> {
    if b.len() < 4 {
        return Err(short("match"));
    }
    let (type_, len) = (be16(b, 0), be16(b, 2) as usize);
    let padded = len.div_ceil(8) * 8;
    if type_ != OFPMT_OXM || len < 4 || padded > b.len() {
        return Err(OfError::Protocol(format!(
            "match of type {type_} and length {len}"
        )));
    }
    let mut fields = Vec::new();
    let mut undecoded = false;
    let mut at = 4;
    while at + 4 <= len {
        let class = be16(b, at);
        let fh = b[at + 2];
        let l = b[at + 3] as usize;
        let body = b
            .get(at + 4..at + 4 + l)
            .ok_or_else(|| short("OXM field"))?;
        at += 4 + l;
        if at > len {
            return Err(short("OXM field"));
        }
        let (field, hasmask) = (fh >> 1, fh & 1 == 1);
        let decoded = (class == OFPXMC_OPENFLOW_BASIC)
            .then(|| {
                let (v, m) = if hasmask {
                    body.split_at(l / 2)
                } else {
                    (body, &[][..])
                };
                decode_field(field, v, hasmask.then_some(m))
            })
            .flatten();
        match decoded {
            Some(f) => fields.push(f),
            None => undecoded = true,
        }
    }
    Ok((fields, undecoded, padded))
}

fn decode_actions(mut b: &[u8], out: &mut Vec<Action>) -> Result<bool, OfError> {
    let mut undecoded = false;
    while b.len() >= 4 {
        let (t, len) = (be16(b, 0), be16(b, 2) as usize);
        if len < 4 || len > b.len() {
            return Err(short("action"));
        }
        if t == OFPAT_OUTPUT && len >= 8 {
            out.push(Action::Output(be32(b, 4)));
        } else {
            undecoded = true;
        }
        b = &b[len..];
    }
    Ok(undecoded)
}

fn decode_instructions(mut b: &[u8]) -> Result<(Vec<Instruction>, bool), OfError> {
    let mut out = Vec::new();
    let mut undecoded = false;
    while b.len() >= 4 {
        let (t, len) = (be16(b, 0), be16(b, 2) as usize);
        if len < 4 || len > b.len() {
            return Err(short("instruction"));
        }
        match t {
            OFPIT_GOTO_TABLE if len >= 8 => out.push(Instruction::GotoTable(b[4])),
            OFPIT_METER if len >= 8 => out.push(Instruction::Meter(be32(b, 4))),
            OFPIT_APPLY_ACTIONS if len >= 8 => {
                let mut actions = Vec::new();
                undecoded |= decode_actions(&b[8..len], &mut actions)?;
                out.push(Instruction::Apply(actions));
            }
            _ => undecoded = true,
        }
        b = &b[len..];
    }
    Ok((out, undecoded))
}

/// The `ofp_flow_stats` entries of one reply body (after the multipart
/// header).
fn decode_flow_stats(mut b: &[u8], out: &mut Vec<FlowStats>) -> Result<(), OfError> {
    while !b.is_empty() {
        if b.len() < 48 {
            return Err(short("flow stats"));
        }
        let len = be16(b, 0) as usize;
        if len < 48 || len > b.len() {
            return Err(short("flow stats"));
        }
        let entry = &b[..len];
        let (matches, m_undecoded, mlen) = decode_match(&entry[48..])?;
        let (instructions, i_undecoded) = decode_instructions(&entry[48 + mlen..])?;
        out.push(FlowStats {
            table: entry[2],
            priority: be16(entry, 12),
            idle_timeout: be16(entry, 14),
            hard_timeout: be16(entry, 16),
            cookie: be64(entry, 24),
            packet_count: be64(entry, 32),
            byte_count: be64(entry, 40),
            matches,
            instructions,
            undecoded: m_undecoded || i_undecoded,
        });
        b = &b[len..];
    }
    Ok(())
}

fn decode_meter_configs(mut b: &[u8], out: &mut Vec<MeterConfig>) -> Result<(), OfError> {
    while !b.is_empty() {
        if b.len() < 8 {
            return Err(short("meter config"));
        }
        let len = be16(b, 0) as usize;
        if len < 8 || len > b.len() {
            return Err(short("meter config"));
        }
        let mut bands = Vec::new();
        let mut rest = &b[8..len];
        while rest.len() >= 12 {
            let blen = be16(rest, 2) as usize;
            if blen < 12 || blen > rest.len() {
                return Err(short("meter band"));
            }
            bands.push(MeterBand {
                type_: be16(rest, 0),
                rate: be32(rest, 4),
                burst_size: be32(rest, 8),
            });
            rest = &rest[blen..];
        }
        out.push(MeterConfig {
            flags: be16(b, 2),
            meter_id: be32(b, 4),
            bands,
        });
        b = &b[len..];
    }
    Ok(())
}

impl FlowFilter {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.table);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.out_port.to_be_bytes());
        out.extend_from_slice(&GROUP_ANY.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.cookie_mask.to_be_bytes());
        crate::encode_match(&self.matches, out);
    }
}

impl Conn {
    /// Sends one multipart request of `mp_type` with `body` and returns the
    /// bodies (after the multipart header) of all reply parts.
    fn multipart(&mut self, mp_type: u16, body: &[u8]) -> Result<Vec<Vec<u8>>, OfError> {
        let xid = self.xid();
        let mut buf = Vec::with_capacity(16 + body.len());
        let start = put_header(&mut buf, OFPT_MULTIPART_REQUEST, xid);
        buf.extend_from_slice(&mp_type.to_be_bytes());
        buf.extend_from_slice(&[0; 6]); // flags, pad[4]
        buf.extend_from_slice(body);
        pad8(&mut buf, start);
        finish_header(&mut buf, start);
        self.write(&buf)?;
        let deadline = Instant::now() + self.timeout;
        let mut parts = Vec::new();
        loop {
            let m = self.read(deadline)?;
            match m.type_ {
                OFPT_MULTIPART_REPLY if m.xid == xid => {
                    if m.body.len() < 8 || be16(&m.body, 0) != mp_type {
                        return Err(OfError::Protocol(format!(
                            "multipart reply of {} bytes for type {mp_type}",
                            m.body.len()
                        )));
                    }
                    let more = be16(&m.body, 2) & OFPMPF_REPLY_MORE != 0;
                    parts.push(m.body[8..].to_vec());
                    if !more {
                        return Ok(parts);
                    }
                }
                OFPT_ERROR if m.xid == xid => {
                    let (type_, code) = error_type_code(&m.body);
                    return Err(OfError::Refused {
                        type_,
                        code,
                        xid_index: 0,
                    });
                }
                OFPT_ECHO_REQUEST => {
                    let mut reply = Vec::with_capacity(8 + m.body.len());
                    let s = put_header(&mut reply, OFPT_ECHO_REPLY, m.xid);
                    reply.extend_from_slice(&m.body);
                    finish_header(&mut reply, s);
                    self.write(&reply)?;
                }
                _ => {} // late errors of earlier batches, async messages
            }
        }
    }

    /// The flows `filter` selects (`OFPMP_FLOW`), across every reply part.
    pub fn dump_flows(&mut self, filter: &FlowFilter) -> Result<Vec<FlowStats>, OfError> {
        let mut body = Vec::new();
        filter.encode(&mut body);
        let mut out = Vec::new();
        for part in self.multipart(OFPMP_FLOW, &body)? {
            decode_flow_stats(&part, &mut out)?;
        }
        Ok(out)
    }

    /// The configuration of every meter (`OFPMP_METER_CONFIG` for
    /// `OFPM_ALL`).
    pub fn dump_meters(&mut self) -> Result<Vec<MeterConfig>, OfError> {
        let mut body = Vec::new();
        body.extend_from_slice(&crate::METER_ALL.to_be_bytes());
        body.extend_from_slice(&[0; 4]);
        let mut out = Vec::new();
        for part in self.multipart(OFPMP_METER_CONFIG, &body)? {
            decode_meter_configs(&part, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlowMod, Msg, PORT_NORMAL};

    /// A FLOW_MOD's tail (match + instructions) is laid out like a flow
    /// stats entry's: decoding what we encode gives it back.
    #[test]
    fn flow_stats_entry_round_trips() {
        let fm = FlowMod {
            table: 2,
            priority: 7000,
            cookie: 0xabcd,
            matches: vec![
                Field::InPort(5),
                Field::EthType(0x0806),
                Field::ArpSpa(
                    Ipv4Addr::new(10, 0, 0, 0),
                    Some(Ipv4Addr::new(255, 255, 0, 0)),
                ),
                Field::ArpSha([2, 0, 0, 0, 0, 1]),
            ],
            instructions: vec![
                Instruction::Meter(5),
                Instruction::Apply(vec![Action::Output(PORT_NORMAL)]),
            ],
            ..FlowMod::default()
        };
        let mut wire = Vec::new();
        Msg::Flow(fm.clone()).encode(1, &mut wire);
        // flow_mod: header 8 + 40 fixed bytes, then the match.
        let tail = &wire[48..];
        let mut entry = vec![0u8; 48];
        entry[0..2].copy_from_slice(&((48 + tail.len()) as u16).to_be_bytes());
        entry[2] = 2;
        entry[12..14].copy_from_slice(&7000u16.to_be_bytes());
        entry[24..32].copy_from_slice(&0xabcdu64.to_be_bytes());
        entry[32..40].copy_from_slice(&9u64.to_be_bytes());
        entry.extend_from_slice(tail);
        let mut twice = entry.clone();
        twice.extend_from_slice(&entry);
        let mut out = Vec::new();
        decode_flow_stats(&twice, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        let f = &out[1];
        assert_eq!(
            (f.table, f.priority, f.cookie, f.packet_count),
            (2, 7000, 0xabcd, 9)
        );
        assert_eq!(f.matches, fm.matches);
        assert_eq!(f.instructions, fm.instructions);
        assert!(!f.undecoded);
    }

    #[test]
    fn unknown_oxm_and_truncation() {
        // match: type 1, length 4 + 8 (an experimenter-class field)
        let mut m = vec![0, 1, 0, 12, 0xff, 0xff, 0x02, 4, 1, 2, 3, 4];
        m.extend_from_slice(&[0; 4]);
        let (fields, undecoded, len) = decode_match(&m).unwrap();
        assert!(fields.is_empty() && undecoded);
        assert_eq!(len, 16);
        assert!(decode_match(&m[..10]).is_err());
        let mut out = Vec::new();
        assert!(decode_flow_stats(&[0, 48, 0], &mut out).is_err());
    }

    #[test]
    fn meter_config_entries() {
        let mut b = vec![0, 24, 0, 5, 0, 0, 0, 9];
        b.extend_from_slice(&[0, 1, 0, 16, 0, 0, 3, 232, 0, 0, 0, 50, 0, 0, 0, 0]);
        let mut out = Vec::new();
        decode_meter_configs(&b, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].meter_id, 9);
        assert!(out[0].kbps() && out[0].burst());
        assert_eq!(
            out[0].bands,
            vec![MeterBand {
                type_: 1,
                rate: 1000,
                burst_size: 50
            }]
        );
    }
}
