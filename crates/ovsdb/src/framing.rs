//! ovsdb-server writes JSON texts back to back with no separator and reads
//! may split them anywhere: this splitter finds message boundaries by
//! tracking strings, escapes and nesting depth.

const MAX_MESSAGE: usize = 64 << 20;

#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    start: Option<usize>,
    done: Vec<Vec<u8>>,
}

impl Splitter {
    pub fn push(&mut self, data: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            let i = self.scanned;
            self.scanned += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.start = Some(i);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err("unbalanced JSON from OVSDB".into());
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        let s = self.start.take().unwrap_or(0);
                        self.done.push(self.buf[s..=i].to_vec());
                        self.buf.drain(..=i);
                        self.scanned = 0;
                    }
                }
                _ => {}
            }
        }
        if self.buf.len() > MAX_MESSAGE {
            return Err("OVSDB message too large".into());
        }
        if self.depth == 0 && !self.in_string {
            // Whitespace between messages.
            self.buf.clear();
            self.scanned = 0;
        }
        Ok(())
    }

    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        if self.done.is_empty() {
            None
        } else {
            Some(self.done.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replies as ovsdb-server sent them back to back (captured from
    /// `ovsdb-client transact` traffic with `{"id":1,…}` and `{"id":2,…}`),
    /// including a brace inside a string.
    const TWO: &[u8] = br#"{"id":1,"result":[{"rows":[{"name":"br}{0\"x"}]}],"error":null}{"id":2,"result":[],"error":null}"#;

    #[test]
    fn splits_at_every_offset() {
        for cut in 0..=TWO.len() {
            let mut s = Splitter::default();
            s.push(&TWO[..cut]).unwrap();
            s.push(&TWO[cut..]).unwrap();
            let a = s.next_message().unwrap();
            let b = s.next_message().unwrap();
            assert!(s.next_message().is_none());
            let a: serde_json::Value = serde_json::from_slice(&a).unwrap();
            let b: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!((a["id"].as_u64(), b["id"].as_u64()), (Some(1), Some(2)));
            assert_eq!(a["result"][0]["rows"][0]["name"], "br}{0\"x");
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut s = Splitter::default();
        assert!(s.push(b"]").is_err());
    }
}
