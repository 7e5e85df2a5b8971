//! The local user database: `name:role:salt:hash` lines, PBKDF2-HMAC-SHA256
//! hashes. Roles: `pool-admin` (everything) and `read-only` (no writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ITERATIONS: u32 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("user database {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user database line {line}: {why}")]
    Parse { line: usize, why: String },
    #[error("unknown role '{0}' (pool-admin or read-only)")]
    Role(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    PoolAdmin,
    ReadOnly,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, UsersError> {
        match s {
            "pool-admin" => Ok(Role::PoolAdmin),
            "read-only" => Ok(Role::ReadOnly),
            _ => Err(UsersError::Role(s.into())),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::PoolAdmin => "pool-admin",
            Role::ReadOnly => "read-only",
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    role: Role,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
    path: Option<PathBuf>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
fn derive(password: &str, salt: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, ITERATIONS, &mut out);
    out.to_vec()
}
/// Constant-time comparison: the time must not tell how much of a hash matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let io = |source| UsersError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut u = Users {
            users: BTreeMap::new(),
            path: Some(path.to_path_buf()),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(u),
            Err(e) => return Err(io(e)),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split(':').collect();
            let bad = |why: &str| UsersError::Parse {
                line: n + 1,
                why: why.into(),
            };
            if parts.len() != 4 {
                return Err(bad("expected name:role:salt:hash"));
            }
            let user = User {
                role: Role::parse(parts[1])?,
                salt: unhex(parts[2]).ok_or_else(|| bad("salt is not hex"))?,
                hash: unhex(parts[3]).ok_or_else(|| bad("hash is not hex"))?,
            };
            u.users.insert(parts[0].to_string(), user);
        }
        Ok(u)
    }

    /// Adds or replaces a user and writes the file atomically (mode 0600).
    pub fn set(&mut self, name: &str, password: &str, role: Role) -> Result<(), UsersError> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).expect("getrandom");
        self.users.insert(
            name.to_string(),
            User {
                role,
                salt: salt.to_vec(),
                hash: derive(password, &salt),
            },
        );
        self.save()
    }

    fn save(&self) -> Result<(), UsersError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| UsersError::Io {
            path: path.clone(),
            source,
        };
        let mut text = String::from("# xnet users: name:role:salt:pbkdf2-sha256\n");
        for (n, u) in &self.users {
            text.push_str(&format!(
                "{n}:{}:{}:{}\n",
                u.role.name(),
                hex(&u.salt),
                hex(&u.hash)
            ));
        }
        crate::private_file::write(path, &text).map_err(io)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// The user's role if the password is right.
    pub fn check(&self, name: &str, password: &str) -> Option<Role> {
        let u = self.users.get(name)?;
        same(&derive(password, &u.salt), &u.hash).then_some(u.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn set_check_reload() {
        let dir = std::env::temp_dir().join(format!("xnet-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let mut u = Users::load(&path).unwrap();
        u.set("root", "s3cret", Role::PoolAdmin).unwrap();
        u.set("viewer", "v", Role::ReadOnly).unwrap();
        let u2 = Users::load(&path).unwrap();
        assert_eq!(u2.check("root", "s3cret"), Some(Role::PoolAdmin));
        assert_eq!(u2.check("root", "wrong"), None);
        assert_eq!(u2.check("viewer", "v"), Some(Role::ReadOnly));
        assert_eq!(u2.check("nobody", ""), None);
        std::fs::write(&path, "x:pool-admin:zz:00\n").unwrap();
        assert!(Users::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
