//! Xenstore access for the hotplug script: the xenstored socket protocol, and
//! a directory tree (one file per key) that tests and dry runs feed.
//!
//! Relative paths (libxl's `XENBUS_PATH` is `backend/vif/<domid>/<devid>`)
//! are relative to the caller's domain home, `/local/domain/0` in dom0:
//! xenstored resolves them itself; the directory store does the same.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const XS_READ: u32 = 2;
const XS_WRITE: u32 = 11;
const XS_RM: u32 = 13;
const XS_ERROR: u32 = 16;
/// xenstored refuses larger payloads (XENSTORE_PAYLOAD_MAX).
const PAYLOAD_MAX: usize = 4096;
const DOM0_HOME: &str = "/local/domain/0";

#[derive(Debug, thiserror::Error)]
pub enum XsError {
    #[error("xenstore: {0}")]
    Io(#[from] std::io::Error),
    #[error("xenstore refused {op} {path}: {errno}")]
    Refused {
        op: &'static str,
        path: String,
        errno: String,
    },
    #[error("xenstore: malformed reply: {0}")]
    Protocol(String),
    #[error("xenstore: bad path {0:?}")]
    BadPath(String),
}

/// What the hotplug script needs of xenstore.
pub trait XenStore {
    /// `None` when the key does not exist.
    fn read(&mut self, path: &str) -> Result<Option<String>, XsError>;
    fn write(&mut self, path: &str, value: &str) -> Result<(), XsError>;
    /// Removing a key that does not exist is fine.
    fn rm(&mut self, path: &str) -> Result<(), XsError>;
}

fn check_path(path: &str) -> Result<(), XsError> {
    let bad = path.is_empty()
        || path.contains('\0')
        || path
            .split('/')
            .skip(usize::from(path.starts_with('/')))
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(XsError::BadPath(path.into()));
    }
    Ok(())
}

/// One request as xenstored reads it: four native-endian u32 (type, req_id,
/// tx_id, len), then the payload.
pub fn encode(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + payload.len());
    for v in [ty, req_id, 0, payload.len() as u32] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(payload);
    b
}

/// The xenstored unix socket (`/var/run/xenstored/socket`).
pub struct SocketStore {
    s: UnixStream,
    next: u32,
}

impl SocketStore {
    pub fn connect(path: &Path) -> Result<SocketStore, XsError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(SocketStore { s, next: 1 })
    }

    fn request(
        &mut self,
        op: &'static str,
        ty: u32,
        path: &str,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, XsError> {
        check_path(path)?;
        if payload.len() > PAYLOAD_MAX {
            return Err(XsError::Protocol(format!("{} byte request", payload.len())));
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.s.write_all(&encode(ty, id, payload))?;
        // Watch events (type 15) are not asked for, so the next reply is ours.
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        let word = |i: usize| u32::from_ne_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
        let (rty, rid, len) = (word(0), word(1), word(3) as usize);
        if len > PAYLOAD_MAX {
            return Err(XsError::Protocol(format!("{len} byte reply")));
        }
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body)?;
        if rid != id {
            return Err(XsError::Protocol(format!("reply {rid} to request {id}")));
        }
        if rty == XS_ERROR {
            let errno =
                String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned();
            if errno == "ENOENT" {
                return Ok(None);
            }
            return Err(XsError::Refused {
                op,
                path: path.into(),
                errno,
            });
        }
        if rty != ty {
            return Err(XsError::Protocol(format!("reply of type {rty} to {op}")));
        }
        Ok(Some(body))
    }
}

fn with_nul(path: &str) -> Vec<u8> {
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p
}

impl XenStore for SocketStore {
    fn read(&mut self, path: &str) -> Result<Option<String>, XsError> {
        Ok(self
            .request("read", XS_READ, path, &with_nul(path))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
    fn write(&mut self, path: &str, value: &str) -> Result<(), XsError> {
        let mut p = with_nul(path);
        p.extend_from_slice(value.as_bytes());
        match self.request("write", XS_WRITE, path, &p)? {
            Some(_) => Ok(()),
            None => Err(XsError::Refused {
                op: "write",
                path: path.into(),
                errno: "ENOENT".into(),
            }),
        }
    }
    fn rm(&mut self, path: &str) -> Result<(), XsError> {
        self.request("rm", XS_RM, path, &with_nul(path)).map(|_| ())
    }
}

/// Keys as files under a root directory: `/local/domain/5/name` is
/// `<root>/local/domain/5/name`.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> DirStore {
        DirStore { root: root.into() }
    }
    fn file(&self, path: &str) -> Result<PathBuf, XsError> {
        check_path(path)?;
        let abs = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{DOM0_HOME}/{path}")
        };
        Ok(self.root.join(abs.trim_start_matches('/')))
    }
}

impl XenStore for DirStore {
    fn read(&mut self, path: &str) -> Result<Option<String>, XsError> {
        let f = self.file(path)?;
        match std::fs::read_to_string(&f) {
            Ok(v) => Ok(Some(v.strip_suffix('\n').unwrap_or(&v).to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn write(&mut self, path: &str, value: &str) -> Result<(), XsError> {
        let f = self.file(path)?;
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(f, value)?;
        Ok(())
    }
    fn rm(&mut self, path: &str) -> Result<(), XsError> {
        let f = self.file(path)?;
        let r = if f.is_dir() {
            std::fs::remove_dir_all(&f)
        } else {
            std::fs::remove_file(&f)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        // XS_READ of "backend/vif/5/0/mac", request id 7, no transaction.
        let b = encode(XS_READ, 7, &with_nul("backend/vif/5/0/mac"));
        assert_eq!(&b[0..4], &2u32.to_ne_bytes());
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(&b[8..12], &0u32.to_ne_bytes());
        assert_eq!(&b[12..16], &20u32.to_ne_bytes());
        assert_eq!(&b[16..], b"backend/vif/5/0/mac\0");
    }

    /// A socket peer that answers like xenstored: values for reads it knows,
    /// ENOENT for others, EACCES for writes under /tool.
    fn serve(mut s: UnixStream) {
        loop {
            let mut h = [0u8; 16];
            if s.read_exact(&mut h).is_err() {
                return;
            }
            let w = |i: usize| u32::from_ne_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
            let mut body = vec![0u8; w(3) as usize];
            s.read_exact(&mut body).unwrap();
            let path =
                String::from_utf8_lossy(body.split(|c| *c == 0).next().unwrap()).into_owned();
            let (ty, reply): (u32, Vec<u8>) = match (w(0), path.as_str()) {
                (XS_READ, "backend/vif/5/0/mac") => (XS_READ, b"00:16:3e:00:00:05".to_vec()),
                (XS_READ, _) => (XS_ERROR, b"ENOENT\0".to_vec()),
                (XS_WRITE, p) if p.starts_with("/tool") => (XS_ERROR, b"EACCES\0".to_vec()),
                (t, _) => (t, b"OK\0".to_vec()),
            };
            let mut out = Vec::new();
            for v in [ty, w(1), 0, reply.len() as u32] {
                out.extend_from_slice(&v.to_ne_bytes());
            }
            out.extend_from_slice(&reply);
            s.write_all(&out).unwrap();
        }
    }

    #[test]
    fn socket_read_write_rm_and_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(b));
        let mut xs = SocketStore { s: a, next: 1 };
        assert_eq!(
            xs.read("backend/vif/5/0/mac").unwrap().as_deref(),
            Some("00:16:3e:00:00:05")
        );
        assert_eq!(xs.read("backend/vif/5/0/ip").unwrap(), None);
        xs.write("backend/vif/5/0/hotplug-status", "connected")
            .unwrap();
        xs.rm("backend/vif/5/0/hotplug-error").unwrap();
        let e = xs.write("/tool/x", "y").unwrap_err();
        assert!(
            matches!(&e, XsError::Refused { errno, .. } if errno == "EACCES"),
            "{e}"
        );
        assert!(matches!(xs.read("a//b"), Err(XsError::BadPath(_))));
        assert!(matches!(xs.read("../etc"), Err(XsError::BadPath(_))));
        drop(xs);
        t.join().unwrap();
    }

    #[test]
    fn dir_store_resolves_relative_paths_to_dom0() {
        let root = std::env::temp_dir().join(format!("xnet-xs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut xs = DirStore::new(&root);
        xs.write("backend/vif/5/0/bridge", "xenbr0").unwrap();
        assert_eq!(
            xs.read("/local/domain/0/backend/vif/5/0/bridge")
                .unwrap()
                .as_deref(),
            Some("xenbr0")
        );
        assert_eq!(xs.read("backend/vif/5/0/mac").unwrap(), None);
        xs.rm("backend/vif/5/0/bridge").unwrap();
        xs.rm("backend/vif/5/0/bridge").unwrap();
        assert_eq!(xs.read("backend/vif/5/0/bridge").unwrap(), None);
        assert!(xs.write("../x", "y").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
