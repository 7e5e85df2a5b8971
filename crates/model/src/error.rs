//! XAPI errors: a code and string parameters, exactly as they go on the wire
//! (`ErrorDescription = [CODE, p1, …]`). Codes are XAPI's (api_errors.ml).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {params:?}")]
pub struct ApiError {
    pub code: String,
    pub params: Vec<String>,
}

impl ApiError {
    pub fn new(code: &str, params: &[&str]) -> Self {
        ApiError {
            code: code.to_string(),
            params: params.iter().map(|s| s.to_string()).collect(),
        }
    }
    pub fn with(code: &str, params: Vec<String>) -> Self {
        ApiError {
            code: code.to_string(),
            params,
        }
    }
    pub fn to_description(&self) -> Vec<String> {
        let mut v = vec![self.code.clone()];
        v.extend(self.params.iter().cloned());
        v
    }
    pub fn handle_invalid(class: &str, r: &str) -> Self {
        Self::new("HANDLE_INVALID", &[class, r])
    }
    pub fn uuid_invalid(class: &str, uuid: &str) -> Self {
        Self::new("UUID_INVALID", &[class, uuid])
    }
    pub fn invalid_value(field: &str, value: &str) -> Self {
        Self::new("INVALID_VALUE", &[field, value])
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::with("INTERNAL_ERROR", vec![msg.into()])
    }
    pub fn operation_not_allowed(why: &str) -> Self {
        Self::new("OPERATION_NOT_ALLOWED", &[why])
    }
    pub fn field_type(field: &str, expected: &str, got: &str) -> Self {
        Self::new("FIELD_TYPE_ERROR", &[field, expected, got])
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
