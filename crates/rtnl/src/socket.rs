//! The NETLINK_ROUTE socket: framing (struct nlmsghdr), sequence numbers, ACKs and
//! multi-part dumps.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Reply messages: (type, payload).
type Messages = Vec<(u16, Vec<u8>)>;

use crate::RtnlError;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

/// Kernel dump skbs are at most 32 KiB today; 64 KiB leaves room, and larger
/// datagrams are detected with MSG_PEEK|MSG_TRUNC and the buffer grown.
const RECV_BUF: usize = 64 * 1024;
/// A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried this often.
const DUMP_RETRIES: usize = 5;

/// One netlink message, borrowed from a receive buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MsgRef<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram into messages, checking every length.
pub(crate) fn split(buf: &[u8]) -> Result<Vec<MsgRef<'_>>, RtnlError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            return Err(RtnlError::Parse(format!(
                "{} trailing bytes, shorter than a header",
                rest.len()
            )));
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(RtnlError::Parse(format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        out.push(MsgRef {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        let next = crate::attr::align4(len).min(rest.len());
        rest = &rest[next..];
    }
    Ok(out)
}

/// The errno of an NLMSG_ERROR payload (struct nlmsgerr: int error, then the request
/// header); 0 is an ACK.
pub(crate) fn error_code(payload: &[u8]) -> Result<i32, RtnlError> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| RtnlError::Parse("short NLMSG_ERROR".into()))?;
    Ok(-i32::from_ne_bytes(b))
}

pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn last_os(op: &'static str) -> RtnlError {
    RtnlError::Io {
        op,
        source: io::Error::last_os_error(),
    }
}

impl NlSocket {
    /// Opens and binds a socket; `groups` is an RTMGRP_* bitmask (0 for requests only).
    pub(crate) fn open(groups: u32) -> Result<NlSocket, RtnlError> {
        // SAFETY: plain syscalls; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(last_os("socket(AF_NETLINK)"));
        }
        // SAFETY: fd is a fresh valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = groups;
        // SAFETY: sa lives across the call and the length matches.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(last_os("bind(AF_NETLINK)"));
        }
        // ACKs need not echo our whole request back.
        let one: libc::c_int = 1;
        // SAFETY: option value is an int that outlives the call. Failure is harmless.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_CAP_ACK,
                &one as *const _ as *const libc::c_void,
                4,
            );
        }
        Ok(NlSocket {
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Raises the receive buffer (as root SO_RCVBUFFORCE passes the rmem_max cap) so
    /// bursts of events do not overrun.
    pub(crate) fn set_rcvbuf(&self, bytes: i32) {
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: option value is an int that outlives the call.
            let r = unsafe {
                libc::setsockopt(
                    self.raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &bytes as *const _ as *const libc::c_void,
                    4,
                )
            };
            if r == 0 {
                return;
            }
        }
    }

    fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<u32, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: sockaddr_nl zeroed = the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: msg and sa outlive the call; lengths match.
            let r = unsafe {
                libc::sendto(
                    self.raw_fd(),
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r >= 0 {
                return Ok(seq);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(RtnlError::Io {
                    op: "sendto(netlink)",
                    source: e,
                });
            }
        }
    }

    /// Receives one datagram into the internal buffer and returns its length, or
    /// `None` if `nonblock` and nothing is queued. Grows the buffer for datagrams that
    /// would be truncated.
    pub(crate) fn recv(&mut self, nonblock: bool) -> Result<Option<usize>, RtnlError> {
        let dontwait = if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let peek = unsafe {
                libc::recv(
                    self.raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC | dontwait,
                )
            };
            if peek < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) if nonblock => return Ok(None),
                    Some(libc::ENOBUFS) => return Err(RtnlError::Overrun),
                    _ => {
                        return Err(RtnlError::Io {
                            op: "recv(netlink)",
                            source: e,
                        })
                    }
                }
            }
            if peek as usize > self.buf.len() {
                self.buf.resize(peek as usize, 0);
            }
            // SAFETY: as above.
            let n = unsafe {
                libc::recv(
                    self.raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                    Some(libc::ENOBUFS) => return Err(RtnlError::Overrun),
                    _ => {
                        return Err(RtnlError::Io {
                            op: "recv(netlink)",
                            source: e,
                        })
                    }
                }
            }
            return Ok(Some(n as usize));
        }
    }

    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// Sends a request with NLM_F_ACK and collects the reply messages `(type,
    /// payload)` until the ACK, NLMSG_DONE or an error. Works for dumps and for plain
    /// requests alike.
    fn transact(
        &mut self,
        op: &'static str,
        ty: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<(Messages, bool), RtnlError> {
        let seq = self.send(ty, NLM_F_REQUEST | NLM_F_ACK | flags, payload)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv(false)?.unwrap_or(0);
            for m in split(&self.buf[..n])? {
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let errno = error_code(m.payload)?;
                        if errno == 0 {
                            return Ok((out, interrupted));
                        }
                        return Err(RtnlError::Kernel { op, errno });
                    }
                    NLMSG_DONE => {
                        // NLMSG_DONE carries an int: a negative errno if the dump failed.
                        if m.payload.len() >= 4 {
                            let errno = error_code(m.payload)?;
                            if errno > 0 {
                                return Err(RtnlError::Kernel { op, errno });
                            }
                        }
                        return Ok((out, interrupted));
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => out.push((m.ty, m.payload.to_vec())),
                }
            }
        }
    }

    /// A request answered by an ACK (or an error).
    pub(crate) fn request(
        &mut self,
        op: &'static str,
        ty: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, RtnlError> {
        Ok(self.transact(op, ty, flags, payload)?.0)
    }

    /// A dump; retried when the kernel flags it as interrupted by a concurrent change.
    pub(crate) fn dump(
        &mut self,
        op: &'static str,
        ty: u16,
        payload: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, RtnlError> {
        for _ in 0..DUMP_RETRIES {
            let (msgs, interrupted) = self.transact(op, ty, NLM_F_DUMP, payload)?;
            if !interrupted {
                return Ok(msgs);
            }
        }
        Err(RtnlError::Kernel {
            op,
            errno: libc::EINTR,
        })
    }
}
