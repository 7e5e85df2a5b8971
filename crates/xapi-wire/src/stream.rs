//! Writes a result straight into its wire form, for bulk reads whose value
//! tree would cost more to build than to send (`get_all_records` of 10,000
//! VIFs). The bytes equal those of encoding the equivalent `Value`.

use crate::{jsonrpc, xmlrpc, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Xml,
    Json,
}

/// Structs and arrays are opened and closed explicitly; a member's name is
/// written by `key`, its value by the next `value`/`begin_*` call. Keys must be
/// given in name order, as the `Value::Struct` they stand for would have them.
pub struct Writer {
    fmt: Format,
    out: String,
    /// Per open JSON container: whether it has had an element yet.
    first: Vec<bool>,
}

impl Writer {
    pub fn new(fmt: Format, capacity: usize) -> Writer {
        Writer {
            fmt,
            out: String::with_capacity(capacity),
            first: vec![],
        }
    }

    fn sep(&mut self) {
        if let Some(f) = self.first.last_mut() {
            if !std::mem::replace(f, false) {
                self.out.push(',');
            }
        }
    }

    pub fn begin_struct(&mut self) {
        match self.fmt {
            Format::Xml => self.out.push_str("<value><struct>"),
            Format::Json => {
                self.sep();
                self.out.push('{');
                self.first.push(true);
            }
        }
    }

    pub fn end_struct(&mut self) {
        match self.fmt {
            Format::Xml => self.out.push_str("</struct></value>"),
            Format::Json => {
                self.out.push('}');
                self.first.pop();
            }
        }
    }

    pub fn key(&mut self, k: &str) {
        match self.fmt {
            Format::Xml => {
                self.out.push_str("<member><name>");
                xmlrpc::escape(k, &mut self.out);
                self.out.push_str("</name>");
            }
            Format::Json => {
                self.sep();
                jsonrpc::write_str(k, &mut self.out);
                self.out.push(':');
                // The value that follows must not be preceded by a comma.
                self.first.push(true);
            }
        }
    }

    /// Ends the member whose value was just written.
    pub fn end_member(&mut self) {
        match self.fmt {
            Format::Xml => self.out.push_str("</member>"),
            Format::Json => {
                self.first.pop();
            }
        }
    }

    pub fn value(&mut self, v: &Value) {
        match self.fmt {
            Format::Xml => xmlrpc::encode_into(v, &mut self.out),
            Format::Json => {
                self.sep();
                jsonrpc::write_value(v, &mut self.out);
            }
        }
    }

    /// An array of strings (a set of refs).
    pub fn strings<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) {
        match self.fmt {
            Format::Xml => {
                self.out.push_str("<value><array><data>");
                for s in items {
                    self.out.push_str("<value>");
                    xmlrpc::escape(s, &mut self.out);
                    self.out.push_str("</value>");
                }
                self.out.push_str("</data></array></value>");
            }
            Format::Json => {
                self.sep();
                self.out.push('[');
                for (i, s) in items.into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    jsonrpc::write_str(s, &mut self.out);
                }
                self.out.push(']');
            }
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Joins complete structs written by separate `Writer`s (one per thread)
/// into one struct holding all their members, in the order given.
pub fn merge_structs(fmt: Format, parts: &[String]) -> String {
    let (open, close, sep) = match fmt {
        Format::Xml => ("<value><struct>", "</struct></value>", ""),
        Format::Json => ("{", "}", ","),
    };
    let mut out = String::with_capacity(parts.iter().map(String::len).sum::<usize>() + 32);
    out.push_str(open);
    let mut any = false;
    for p in parts {
        let inner = p
            .strip_prefix(open)
            .and_then(|p| p.strip_suffix(close))
            .expect("a complete struct");
        if inner.is_empty() {
            continue;
        }
        if any {
            out.push_str(sep);
        }
        out.push_str(inner);
        any = true;
    }
    out.push_str(close);
    out
}
