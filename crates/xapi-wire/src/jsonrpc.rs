//! JSON-RPC 1.0 and 2.0 in XAPI's dialect (`POST /jsonrpc`).

use crate::{MethodCall, Response, Value, WireError, MAX_DEPTH};
use serde_json::{json, Map as JMap, Value as J};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub version: Version,
    pub id: J,
    pub call: MethodCall,
}

pub fn to_json(v: &Value) -> J {
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::String(s) | Value::DateTime(s) => J::String(s.clone()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Struct(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// A string as serde_json writes it (same escapes), appended to `out`.
pub(crate) fn write_str(s: &str, out: &mut String) {
    out.push('"');
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        if rep.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(rep);
        }
        last = i + 1;
    }
    out.push_str(&s[last..]);
    out.push('"');
}

/// `to_json(v).to_string()` without building the tree.
pub(crate) fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::String(s) | Value::DateTime(s) => write_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(x, out);
            }
            out.push(']');
        }
        Value::Struct(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_value(x, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&to_json(scalar).to_string()),
    }
}

/// A success envelope around a result already in JSON form.
pub fn encode_success_raw(version: Version, id: &J, result: &str) -> String {
    let id = id.to_string();
    let mut out = String::with_capacity(result.len() + id.len() + 40);
    // Members in the order serde_json's sorted map writes them.
    match version {
        Version::V1 => {
            out.push_str("{\"error\":null,\"id\":");
            out.push_str(&id);
            out.push_str(",\"result\":");
            out.push_str(result);
        }
        Version::V2 => {
            out.push_str("{\"id\":");
            out.push_str(&id);
            out.push_str(",\"jsonrpc\":\"2.0\",\"result\":");
            out.push_str(result);
        }
    }
    out.push('}');
    out
}

fn depth_of(j: &J, limit: usize) -> bool {
    // Iterative, so a hostile document cannot exhaust the stack here either.
    let mut stack = vec![(j, 0usize)];
    while let Some((j, d)) = stack.pop() {
        if d > limit {
            return false;
        }
        match j {
            J::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            J::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    true
}

pub fn from_json(j: &J) -> Result<Value, WireError> {
    if !depth_of(j, MAX_DEPTH) {
        return Err(WireError::TooDeep);
    }
    Ok(convert(j))
}

fn convert(j: &J) -> Value {
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(convert).collect()),
        J::Object(m) => Value::Struct(
            m.iter()
                .map(|(k, v)| (k.clone(), convert(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

fn parse_json(body: &[u8]) -> Result<J, WireError> {
    // serde_json stops at 128 levels itself; our own bound is checked after.
    serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))
}

pub fn parse_request(body: &[u8]) -> Result<Request, WireError> {
    let j = parse_json(body)?;
    let J::Object(mut m) = j else {
        return Err(WireError::Shape("request is not an object".into()));
    };
    let version = match m.get("jsonrpc") {
        None => Version::V1,
        Some(J::String(s)) if s == "2.0" => Version::V2,
        Some(other) => {
            return Err(WireError::Shape(format!(
                "unsupported jsonrpc version {other}"
            )))
        }
    };
    let id = m
        .remove("id")
        .ok_or_else(|| WireError::Shape("notifications (no id) are not accepted".into()))?;
    let method = match m.remove("method") {
        Some(J::String(s)) if !s.is_empty() => s,
        _ => return Err(WireError::Shape("method must be a non-empty string".into())),
    };
    let params = match m.remove("params") {
        None | Some(J::Null) => vec![],
        Some(J::Array(a)) => a.iter().map(from_json).collect::<Result<_, _>>()?,
        Some(_) => return Err(WireError::Shape("params must be an array".into())),
    };
    Ok(Request {
        version,
        id,
        call: MethodCall { method, params },
    })
}

pub fn encode_response(version: Version, id: &J, r: &Response) -> String {
    let j = match (version, r) {
        (Version::V1, Response::Success(v)) => {
            json!({"result": to_json(v), "error": null, "id": id})
        }
        (Version::V1, Response::Failure(d)) => json!({"result": null, "error": d, "id": id}),
        (Version::V2, Response::Success(v)) => {
            json!({"jsonrpc": "2.0", "result": to_json(v), "id": id})
        }
        (Version::V2, Response::Failure(d)) => json!({
            "jsonrpc": "2.0",
            "error": {"code": 1, "message": d.first().cloned().unwrap_or_default(), "data": d.get(1..).unwrap_or(&[])},
            "id": id
        }),
    };
    j.to_string()
}

pub fn encode_error(version: Version, id: &J, code: i64, message: &str) -> String {
    let mut m = JMap::new();
    if version == Version::V2 {
        m.insert("jsonrpc".into(), J::String("2.0".into()));
    } else {
        m.insert("result".into(), J::Null);
    }
    m.insert("error".into(), json!({"code": code, "message": message}));
    m.insert("id".into(), id.clone());
    J::Object(m).to_string()
}

pub fn encode_request(req: &Request) -> String {
    let params: Vec<J> = req.call.params.iter().map(to_json).collect();
    let j = match req.version {
        Version::V1 => json!({"method": req.call.method, "params": params, "id": req.id}),
        Version::V2 => {
            json!({"jsonrpc": "2.0", "method": req.call.method, "params": params, "id": req.id})
        }
    };
    j.to_string()
}

fn strings(j: &J) -> Vec<String> {
    match j {
        J::Array(a) => a
            .iter()
            .map(|x| match x {
                J::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => vec![],
    }
}

pub fn parse_response(body: &[u8]) -> Result<Response, WireError> {
    let j = parse_json(body)?;
    let J::Object(m) = j else {
        return Err(WireError::Shape("response is not an object".into()));
    };
    match m.get("error") {
        None | Some(J::Null) => Ok(Response::Success(from_json(
            m.get("result").unwrap_or(&J::Null),
        )?)),
        Some(J::Array(_)) => Ok(Response::Failure(strings(&m["error"]))),
        Some(J::Object(e)) => match (e.get("message"), e.get("data")) {
            (Some(J::String(code)), data) if e.get("code") == Some(&J::from(1)) => {
                let mut d = vec![code.clone()];
                d.extend(data.map(strings).unwrap_or_default());
                Ok(Response::Failure(d))
            }
            _ => Err(WireError::Shape(format!(
                "protocol error: {}",
                J::Object(e.clone())
            ))),
        },
        Some(other) => Err(WireError::Shape(format!("bad error member {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_v1_v2() {
        let ok = Response::Success(Value::Int(3));
        assert_eq!(
            encode_response(Version::V1, &json!(1), &ok),
            r#"{"error":null,"id":1,"result":3}"#
        );
        assert_eq!(
            encode_response(Version::V2, &json!("a"), &ok),
            r#"{"id":"a","jsonrpc":"2.0","result":3}"#
        );
        let f = Response::Failure(vec!["HANDLE_INVALID".into(), "PIF".into(), "x".into()]);
        assert_eq!(
            encode_response(Version::V1, &json!(2), &f),
            r#"{"error":["HANDLE_INVALID","PIF","x"],"id":2,"result":null}"#
        );
        assert_eq!(
            encode_response(Version::V2, &json!(2), &f),
            r#"{"error":{"code":1,"data":["PIF","x"],"message":"HANDLE_INVALID"},"id":2,"jsonrpc":"2.0"}"#
        );
    }

    #[test]
    fn requests() {
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"PIF.get_all","params":["s",{"a":[1,2.5,null,true]}],"id":7}"#).unwrap();
        assert_eq!(r.version, Version::V2);
        assert_eq!(r.call.method, "PIF.get_all");
        assert_eq!(r.call.params[0], Value::String("s".into()));
        assert!(
            parse_request(br#"{"method":"x","params":[]}"#).is_err(),
            "notification"
        );
        assert!(parse_request(br#"{"method":"x","params":"s","id":1}"#).is_err());
        assert!(parse_request(b"[1]").is_err());
        assert!(parse_request(b"{").is_err());
        let deep = "[".repeat(100) + &"]".repeat(100);
        let body = format!(r#"{{"method":"x","params":[{deep}],"id":1}}"#);
        assert!(parse_request(body.as_bytes()).is_err());
        assert!(parse_request(&b"[".repeat(1_000_000)).is_err());
    }

    #[test]
    fn client_round_trip() {
        let req = Request {
            version: Version::V1,
            id: json!(5),
            call: MethodCall {
                method: "m".into(),
                params: vec![Value::Bool(true)],
            },
        };
        assert_eq!(parse_request(encode_request(&req).as_bytes()).unwrap(), req);
        for v in [Version::V1, Version::V2] {
            let f = Response::Failure(vec!["X".into(), "p".into()]);
            assert_eq!(
                parse_response(encode_response(v, &json!(1), &f).as_bytes()).unwrap(),
                f
            );
            let s = Response::Success(Value::Struct(BTreeMap::new()));
            assert_eq!(
                parse_response(encode_response(v, &json!(1), &s).as_bytes()).unwrap(),
                s
            );
        }
        assert!(
            parse_response(encode_error(Version::V2, &J::Null, -32700, "parse").as_bytes())
                .is_err()
        );
    }
}
