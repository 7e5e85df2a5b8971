//! XML-RPC in XAPI's dialect. Decoding uses a small tokenizer and an explicit
//! depth bound, so hostile bodies fail fast instead of recursing.

use crate::{MethodCall, Response, Value, WireError, MAX_DEPTH};
use std::borrow::Cow;
use std::collections::BTreeMap;

// ---------------------------------------------------------------- encoding

pub(crate) fn escape(s: &str, out: &mut String) {
    // Most values need no escaping: find the first special byte with a
    // table lookup, and copy the runs between special bytes whole.
    const fn table() -> [bool; 256] {
        let mut t = [false; 256];
        t[b'&' as usize] = true;
        t[b'<' as usize] = true;
        t[b'>' as usize] = true;
        t[b'"' as usize] = true;
        t
    }
    static SPECIAL: [bool; 256] = table();
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| SPECIAL[b as usize]) else {
        out.push_str(s);
        return;
    };
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// `%.16g` formatting of doubles, as XAPI writes them.
fn format_g16(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let exp = x.abs().log10().floor() as i32;
    if (-5..16).contains(&exp) {
        let decimals = (15 - exp).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.15e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        let ev: i32 = e.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if ev < 0 { '-' } else { '+' }, ev.abs())
    }
}

pub(crate) fn encode_into(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Nil => {}
        Value::String(s) => escape(s, out),
        Value::Int(i) => {
            use std::fmt::Write;
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Float(x) => {
            out.push_str("<double>");
            out.push_str(&format_g16(*x));
            out.push_str("</double>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape(s, out);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for it in items {
                encode_into(it, out);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(m) => {
            out.push_str("<struct>");
            for (k, it) in m {
                out.push_str("<member><name>");
                escape(k, out);
                out.push_str("</name>");
                encode_into(it, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// One value as XAPI writes it (also the form of `task.result`).
pub fn encode_value(v: &Value) -> String {
    let mut s = String::new();
    encode_into(v, &mut s);
    s
}

pub fn encode_response(r: &Response) -> String {
    // Written around the value rather than via a struct, to avoid copying a
    // large result; members in name order as a struct would have them.
    let mut out = String::from("<methodResponse><params><param><value><struct>");
    match r {
        Response::Success(v) => {
            out.push_str("<member><name>Status</name><value>Success</value></member><member><name>Value</name>");
            encode_into(v, &mut out);
            out.push_str("</member>");
        }
        Response::Failure(desc) => {
            out.push_str("<member><name>ErrorDescription</name><value><array><data>");
            for d in desc {
                out.push_str("<value>");
                escape(d, &mut out);
                out.push_str("</value>");
            }
            out.push_str("</data></array></value></member><member><name>Status</name><value>Failure</value></member>");
        }
    }
    out.push_str("</struct></value></param></params></methodResponse>");
    out
}

/// A success envelope around a value already in XML-RPC form.
pub fn encode_success_raw(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 200);
    out.push_str("<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>");
    out.push_str(value);
    out.push_str("</member></struct></value></param></params></methodResponse>");
    out
}

pub fn encode_fault(code: i32, message: &str) -> String {
    let mut m = BTreeMap::new();
    m.insert("faultCode".to_string(), Value::Int(code as i64));
    m.insert("faultString".to_string(), Value::String(message.into()));
    let mut out = String::from("<methodResponse><fault>");
    // Fault codes are typed <int>, as XML-RPC requires.
    let mut body = String::new();
    encode_into(&Value::Struct(m), &mut body);
    out.push_str(&body.replacen(
        &format!("<value>{code}</value>"),
        &format!("<value><int>{code}</int></value>"),
        1,
    ));
    out.push_str("</fault></methodResponse>");
    out
}

pub fn encode_call(c: &MethodCall) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodCall><methodName>");
    escape(&c.method, &mut out);
    out.push_str("</methodName><params>");
    for p in &c.params {
        out.push_str("<param>");
        // Typed strings and ints on the client side, like Python's xmlrpc.client.
        let mut s = String::new();
        encode_typed(p, &mut s);
        out.push_str(&s);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

fn encode_typed(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str("<value><string>");
            escape(s, out);
            out.push_str("</string></value>");
        }
        Value::Int(i) => out.push_str(&format!("<value><int>{i}</int></value>")),
        Value::Array(items) => {
            out.push_str("<value><array><data>");
            for it in items {
                encode_typed(it, out);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(m) => {
            out.push_str("<value><struct>");
            for (k, it) in m {
                out.push_str("<member><name>");
                escape(k, out);
                out.push_str("</name>");
                encode_typed(it, out);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
        other => encode_into(other, out),
    }
}

// ---------------------------------------------------------------- decoding

/// Tokens borrow from the body; only text with entities is copied.
#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Open(&'a str),
    Close(&'a str),
    Empty(&'a str),
    Text(Cow<'a, str>),
}

fn err(m: impl Into<String>) -> WireError {
    WireError::Xml(m.into())
}

fn unescape(s: &str) -> Result<Cow<'_, str>, WireError> {
    if !s.contains('&') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').ok_or_else(|| err("unterminated entity"))?;
        let name = &after[..end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ if name.starts_with("#x") || name.starts_with("#X") => {
                u32::from_str_radix(&name[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| err("bad character reference"))?
            }
            _ if name.starts_with('#') => name[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| err("bad character reference"))?,
            _ => return Err(err(format!("unknown entity &{name};"))),
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn tokenize(src: &str) -> Result<Vec<Tok<'_>>, WireError> {
    let mut toks = Vec::new();
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or_else(|| err("unterminated CDATA"))?;
            toks.push(Tok::Text(Cow::Borrowed(&r[..end])));
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or_else(|| err("unterminated comment"))?;
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<?") {
            let end = r
                .find("?>")
                .ok_or_else(|| err("unterminated declaration"))?;
            rest = &r[end + 2..];
        } else if rest.starts_with("<!") {
            return Err(err("DTDs are not accepted"));
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').ok_or_else(|| err("unterminated tag"))?;
            let inner = r[..end].trim();
            if let Some(name) = inner.strip_prefix('/') {
                toks.push(Tok::Close(name.trim()));
            } else if let Some(name) = inner.strip_suffix('/') {
                toks.push(Tok::Empty(tag_name(name)?));
            } else {
                toks.push(Tok::Open(tag_name(inner)?));
            }
            rest = &r[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            toks.push(Tok::Text(unescape(&rest[..end])?));
            rest = &rest[end..];
        }
    }
    Ok(toks)
}

fn tag_name(inner: &str) -> Result<&str, WireError> {
    let name = inner.split_whitespace().next().unwrap_or("");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(err(format!("bad tag <{inner}>")));
    }
    Ok(name)
}

struct P<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
}

impl<'a> P<'a> {
    /// Skips whitespace-only text between elements.
    fn skip_ws(&mut self) {
        while let Some(Tok::Text(t)) = self.toks.get(self.pos) {
            if t.trim().is_empty() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }
    fn peek(&mut self) -> Option<&Tok<'a>> {
        self.skip_ws();
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_ws();
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect_open(&mut self, name: &str) -> Result<bool, WireError> {
        match self.next() {
            Some(Tok::Open(n)) if n == name => Ok(true),
            Some(Tok::Empty(n)) if n == name => Ok(false),
            other => Err(err(format!("expected <{name}>, got {other:?}"))),
        }
    }
    fn expect_close(&mut self, name: &str) -> Result<(), WireError> {
        match self.next() {
            Some(Tok::Close(n)) if n == name => Ok(()),
            other => Err(err(format!("expected </{name}>, got {other:?}"))),
        }
    }
    /// Text up to the closing tag (whitespace kept: it is data here).
    fn text_until(&mut self, name: &str) -> Result<String, WireError> {
        let mut s = String::new();
        loop {
            match self.toks.get(self.pos).cloned() {
                Some(Tok::Text(t)) => {
                    s.push_str(&t);
                    self.pos += 1;
                }
                Some(Tok::Close(n)) if n == name => {
                    self.pos += 1;
                    return Ok(s);
                }
                other => return Err(err(format!("expected text in <{name}>, got {other:?}"))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        if !self.expect_open("value")? {
            return Ok(Value::String(String::new()));
        }
        // Untyped text (or nothing) means a string.
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Text(_)) | Some(Tok::Close(_)) => {
                let save = self.pos;
                let t = self.text_until("value");
                match t {
                    Ok(s) => return Ok(Value::String(s)),
                    Err(_) => self.pos = save,
                }
            }
            _ => {}
        }
        let v = match self.next() {
            Some(Tok::Empty(t)) => match t {
                "nil" => Value::Nil,
                "string" | "base64" => Value::String(String::new()),
                "struct" => Value::Struct(BTreeMap::new()),
                "array" => Value::Array(vec![]),
                _ => return Err(err(format!("empty <{t}/>"))),
            },
            Some(Tok::Open(t)) => match t {
                "string" | "base64" => Value::String(self.text_until(t)?),
                "int" | "i4" | "i8" => {
                    let s = self.text_until(t)?;
                    Value::Int(
                        s.trim()
                            .parse()
                            .map_err(|_| err(format!("bad <{t}> {s:?}")))?,
                    )
                }
                "boolean" => match self.text_until(t)?.trim() {
                    "1" | "true" => Value::Bool(true),
                    "0" | "false" => Value::Bool(false),
                    s => return Err(err(format!("bad boolean {s:?}"))),
                },
                "double" => {
                    let s = self.text_until(t)?;
                    Value::Float(
                        s.trim()
                            .parse()
                            .map_err(|_| err(format!("bad double {s:?}")))?,
                    )
                }
                "dateTime.iso8601" => Value::DateTime(self.text_until(t)?.trim().to_string()),
                "nil" => {
                    self.expect_close("nil")?;
                    Value::Nil
                }
                "array" => {
                    let mut items = vec![];
                    if self.expect_open("data")? {
                        while let Some(Tok::Open(n)) | Some(Tok::Empty(n)) = self.peek().cloned() {
                            if n != "value" {
                                break;
                            }
                            items.push(self.value(depth + 1)?);
                        }
                        self.expect_close("data")?;
                    }
                    self.expect_close("array")?;
                    Value::Array(items)
                }
                "struct" => {
                    let mut m = BTreeMap::new();
                    while let Some(Tok::Open(n)) = self.peek().cloned() {
                        if n != "member" {
                            break;
                        }
                        self.next();
                        self.expect_open("name")?;
                        let k = self.text_until("name")?;
                        let v = self.value(depth + 1)?;
                        self.expect_close("member")?;
                        m.insert(k, v);
                    }
                    self.expect_close("struct")?;
                    Value::Struct(m)
                }
                other => return Err(err(format!("unknown type <{other}>"))),
            },
            other => return Err(err(format!("bad value content {other:?}"))),
        };
        self.expect_close("value")?;
        Ok(v)
    }

    fn params(&mut self) -> Result<Vec<Value>, WireError> {
        let mut out = vec![];
        match self.peek().cloned() {
            Some(Tok::Empty("params")) => {
                self.next();
            }
            Some(Tok::Open("params")) => {
                self.next();
                while let Some(Tok::Open(n)) = self.peek().cloned() {
                    if n != "param" {
                        break;
                    }
                    self.next();
                    out.push(self.value(1)?);
                    self.expect_close("param")?;
                }
                self.expect_close("params")?;
            }
            _ => {}
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<(), WireError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(err(format!("trailing content {t:?}"))),
        }
    }
}

/// Rejects bodies whose nesting exceeds the bound before building anything.
fn check_depth(toks: &[Tok<'_>]) -> Result<(), WireError> {
    let mut depth = 0usize;
    for t in toks {
        match t {
            Tok::Open(_) => {
                depth += 1;
                if depth > MAX_DEPTH * 4 + 8 {
                    return Err(WireError::TooDeep);
                }
            }
            Tok::Close(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn start(body: &[u8]) -> Result<P<'_>, WireError> {
    let s = std::str::from_utf8(body).map_err(|_| err("body is not UTF-8"))?;
    let toks = tokenize(s)?;
    check_depth(&toks)?;
    Ok(P { toks, pos: 0 })
}

pub fn parse_call(body: &[u8]) -> Result<MethodCall, WireError> {
    let mut p = start(body)?;
    p.expect_open("methodCall")?;
    p.expect_open("methodName")?;
    let method = p.text_until("methodName")?.trim().to_string();
    if method.is_empty() {
        return Err(WireError::Shape("empty methodName".into()));
    }
    let params = p.params()?;
    p.expect_close("methodCall")?;
    p.end()?;
    Ok(MethodCall { method, params })
}

pub fn parse_response(body: &[u8]) -> Result<Response, WireError> {
    let mut p = start(body)?;
    p.expect_open("methodResponse")?;
    if let Some(Tok::Open(n)) = p.peek().cloned() {
        if n == "fault" {
            p.next();
            let v = p.value(1)?;
            let msg = match &v {
                Value::Struct(m) => format!(
                    "{}: {}",
                    m.get("faultCode")
                        .map(|c| format!("{c:?}"))
                        .unwrap_or_default(),
                    m.get("faultString").and_then(|s| s.as_str()).unwrap_or("")
                ),
                _ => "fault".into(),
            };
            return Err(WireError::Shape(format!("XML-RPC fault {msg}")));
        }
    }
    let params = p.params()?;
    p.expect_close("methodResponse")?;
    p.end()?;
    let v = params
        .into_iter()
        .next()
        .ok_or_else(|| WireError::Shape("no result".into()))?;
    response_of_value(v)
}

/// XAPI's envelope: `{Status, Value}` or `{Status, ErrorDescription}`.
pub fn response_of_value(v: Value) -> Result<Response, WireError> {
    let Value::Struct(mut m) = v else {
        return Err(WireError::Shape("result is not a struct".into()));
    };
    match m.get("Status").and_then(|s| s.as_str()) {
        Some("Success") => Ok(Response::Success(m.remove("Value").unwrap_or(Value::Nil))),
        Some("Failure") => match m.remove("ErrorDescription") {
            Some(Value::Array(items)) => Ok(Response::Failure(
                items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => s,
                        Value::Int(n) => n.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
            )),
            _ => Err(WireError::Shape("Failure without ErrorDescription".into())),
        },
        _ => Err(WireError::Shape("no Status".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_success_and_failure() {
        let ok = encode_response(&Response::Success(Value::String("OpaqueRef:a".into())));
        assert_eq!(
            ok,
            "<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>OpaqueRef:a</value></member></struct></value></param></params></methodResponse>"
        );
        let fail = encode_response(&Response::Failure(vec![
            "HANDLE_INVALID".into(),
            "PIF".into(),
            "x".into(),
        ]));
        assert_eq!(
            fail,
            "<methodResponse><params><param><value><struct><member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>PIF</value><value>x</value></data></array></value></member><member><name>Status</name><value>Failure</value></member></struct></value></param></params></methodResponse>"
        );
        assert_eq!(encode_value(&Value::Nil), "<value></value>");
        assert_eq!(encode_value(&Value::Int(-5)), "<value>-5</value>");
        assert_eq!(
            encode_value(&Value::Bool(true)),
            "<value><boolean>1</boolean></value>"
        );
        assert_eq!(
            encode_value(&Value::Float(1.5)),
            "<value><double>1.5</double></value>"
        );
        assert_eq!(
            encode_value(&Value::Float(0.1)),
            "<value><double>0.1</double></value>"
        );
        assert_eq!(
            encode_value(&Value::String("a<&>".into())),
            "<value>a&lt;&amp;&gt;</value>"
        );
    }

    /// Captured from Python 3.11:
    /// `xmlrpc.client.dumps(("OpaqueRef:s", {"a": [1, True, 2.5]}, None), "VLAN.create", allow_none=True)`
    #[test]
    fn parses_python_request() {
        let body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>VLAN.create</methodName>\n<params>\n<param>\n<value><string>OpaqueRef:s</string></value>\n</param>\n<param>\n<value><struct>\n<member>\n<name>a</name>\n<value><array><data>\n<value><int>1</int></value>\n<value><boolean>1</boolean></value>\n<value><double>2.5</double></value>\n</data></array></value>\n</member>\n</struct></value>\n</param>\n<param>\n<value><nil/></value></param>\n</params>\n</methodCall>\n";
        let c = parse_call(body.as_bytes()).unwrap();
        assert_eq!(c.method, "VLAN.create");
        assert_eq!(c.params[0], Value::String("OpaqueRef:s".into()));
        let mut m = BTreeMap::new();
        m.insert(
            "a".into(),
            Value::Array(vec![Value::Int(1), Value::Bool(true), Value::Float(2.5)]),
        );
        assert_eq!(c.params[1], Value::Struct(m));
        assert_eq!(c.params[2], Value::Nil);
    }

    #[test]
    fn entities_untyped_and_empty() {
        let c = parse_call(b"<methodCall><methodName>m</methodName><params><param><value>a &amp; &#x41;&#66;</value></param><param><value/></param><param><value><array><data/></array></value></param><param><value><![CDATA[<x>]]></value></param></params></methodCall>").unwrap();
        assert_eq!(c.params[0], Value::String("a & AB".into()));
        assert_eq!(c.params[1], Value::String("".into()));
        assert_eq!(c.params[2], Value::Array(vec![]));
        assert_eq!(c.params[3], Value::String("<x>".into()));
        let c = parse_call(b"<methodCall><methodName>m</methodName></methodCall>").unwrap();
        assert!(c.params.is_empty());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            &b""[..],
            b"<methodCall>",
            b"<methodCall><methodName>m</methodName><params><param><value><int>1x</int></value></param></params></methodCall>",
            b"<methodCall><methodName>m</methodName><params><param><value><foo>1</foo></value></param></params></methodCall>",
            b"<methodCall><methodName>m</methodName></methodCall>trailing",
            b"<methodCall><methodName>m&bogus;</methodName></methodCall>",
            b"<!DOCTYPE x><methodCall/>",
            b"\xff\xfe",
        ] {
            assert!(parse_call(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let bomb = "<methodCall><methodName>x</methodName><params><param>".to_string()
            + &"<value><array><data>".repeat(100_000);
        assert_eq!(parse_call(bomb.as_bytes()), Err(WireError::TooDeep));
    }

    #[test]
    fn round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "k".to_string(),
            Value::Array(vec![Value::Int(i64::MIN), Value::String(" sp ".into())]),
        );
        m.insert(
            "d".to_string(),
            Value::DateTime("20260101T00:00:00Z".into()),
        );
        let call = MethodCall {
            method: "x.y".into(),
            params: vec![Value::Struct(m), Value::Bool(false), Value::Float(-2.25)],
        };
        assert_eq!(parse_call(encode_call(&call).as_bytes()).unwrap(), call);
        let r = Response::Success(Value::Array(vec![Value::String("a".into())]));
        assert_eq!(parse_response(encode_response(&r).as_bytes()).unwrap(), r);
        let f = Response::Failure(vec!["X".into(), "y".into()]);
        assert_eq!(parse_response(encode_response(&f).as_bytes()).unwrap(), f);
        assert!(parse_response(encode_fault(-32700, "bad").as_bytes()).is_err());
    }
}
