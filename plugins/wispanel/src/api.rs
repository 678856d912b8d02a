//! The answer shapes every endpoint shares: the seed's error envelope
//! `{success:false, code, error, message, status}` and the JSON success
//! answers.

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::{Error, Response};

/// An error the client gets as the envelope, with a machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult = Result<Response, ApiError>;

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "VALIDATION_ERROR", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHORIZED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "INTERNAL_ERROR", message)
    }

    /// The portal could not be reached or answered something unusable.
    pub fn portal(message: impl Into<String>) -> Self {
        Self::new(502, "PORTAL_UNAVAILABLE", message)
    }

    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            success: false,
            code: self.code,
            error: &self.message,
            message: &self.message,
            status: self.status,
        }
    }
}

/// The seed's error envelope, its fields in the seed's order.
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub success: bool,
    pub code: &'a str,
    pub error: &'a str,
    pub message: &'a str,
    pub status: u16,
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        Response::json(e.status, &e.envelope())
    }
}

/// The SDK's errors (kv, keys, a bad JSON body) in the envelope, with a code
/// chosen by their status.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match e.status {
            400 => "VALIDATION_ERROR",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            409 => "CONFLICT",
            413 => "PAYLOAD_TOO_LARGE",
            429 => "RATE_LIMITED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL_ERROR",
        };
        ApiError::new(e.status, code, e.message)
    }
}

/// 200 with `value` as JSON.
pub fn ok<T: Serialize + ?Sized>(value: &T) -> ApiResult {
    Ok(Response::json(200, value))
}

/// The body as a JSON object; an empty body is `{}` (the seed's POSTs have
/// no body). Anything else that is not an object is a VALIDATION_ERROR.
pub fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation("Request body must be a JSON object")),
        Err(_) => Err(ApiError::validation("Request body is not valid JSON")),
    }
}

/// A string field of a body object: absent, null or blank is None; another
/// type is a VALIDATION_ERROR naming the field.
pub fn opt_str(
    map: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(ApiError::validation(format!("{field} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_is_the_seeds() {
        let r = Response::from(ApiError::validation("License key is required"));
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({ "success": false, "code": "VALIDATION_ERROR", "error": "License key is required",
                    "message": "License key is required", "status": 400 })
        );
        // In the seed's order, too.
        assert!(
            String::from_utf8_lossy(&r.body)
                .starts_with(r#"{"success":false,"code":"VALIDATION_ERROR","error""#)
        );
    }

    #[test]
    fn bodies() {
        assert!(body_object(b"").unwrap().is_empty());
        assert!(body_object(b"  \n").unwrap().is_empty());
        assert_eq!(body_object(b"[]").unwrap_err().code, "VALIDATION_ERROR");
        assert_eq!(body_object(b"{").unwrap_err().code, "VALIDATION_ERROR");
        let m = body_object(br#"{"key":" WISP-1 ","n":1,"e":""}"#).unwrap();
        assert_eq!(opt_str(&m, "key").unwrap().as_deref(), Some("WISP-1"));
        assert_eq!(opt_str(&m, "e").unwrap(), None);
        assert_eq!(opt_str(&m, "x").unwrap(), None);
        assert!(opt_str(&m, "n").is_err());
    }
}
