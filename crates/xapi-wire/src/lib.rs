//! The XenAPI wire dialect: XML-RPC (`POST /`, `/RPC2`) and JSON-RPC 1.0/2.0
//! (`POST /jsonrpc`). Codecs over byte slices and strings, and the HTTP
//! framing of a call over any reader; no sockets.

pub mod http;
pub mod jsonrpc;
pub mod stream;
mod value;
pub mod xmlrpc;

pub use value::Value;

/// A decoded call: `method` as sent (e.g. `Async.PIF.plug`), positional params.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    pub method: String,
    pub params: Vec<Value>,
}

/// XAPI's result envelope: `Status=Success` + `Value`, or `Status=Failure` +
/// `ErrorDescription = [CODE, p1, …]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Success(Value),
    Failure(Vec<String>),
}

/// Limits applied while decoding untrusted input.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("not a valid XML-RPC/JSON-RPC message: {0}")]
    Shape(String),
}
