//! The license portal, over the host's `outbound` capability (the grant's
//! `hosts` must include the portal's address). The portal answers JSON with
//! the same error envelope as this API; its error codes are passed on to the
//! client as they are.

use serde_json::Value;
use wasmgate_sdk::outbound::{self as ob, OutboundError};

use crate::api::ApiError;
use crate::settings;

/// An answer from the portal or another allowed host.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The portal's error envelope as our error (its status and code), or a
    /// PORTAL_UNAVAILABLE when the answer is not the envelope.
    pub fn error(&self) -> ApiError {
        let v = self.json().unwrap_or(Value::Null);
        match (
            v.get("code").and_then(Value::as_str),
            v.get("message").and_then(Value::as_str),
        ) {
            (Some(code), Some(message)) => {
                ApiError::new(self.status, portal_code(code), message.to_string())
            }
            _ => ApiError::portal(format!("the license portal answered HTTP {}", self.status)),
        }
    }
}

/// The portal's codes, named as this API names them where they mean the
/// same thing; the rest as they are.
fn portal_code(code: &str) -> &'static str {
    match code {
        "VALIDATION_ERROR" => "VALIDATION_ERROR",
        "LICENSE_NOT_FOUND" => "LICENSE_NOT_FOUND",
        "LICENSE_REVOKED" => "LICENSE_REVOKED",
        "LICENSE_EXPIRED" => "LICENSE_EXPIRED",
        "INSTANCE_MISMATCH" => "LICENSE_INSTANCE_MISMATCH",
        "NOT_ACTIVATED" => "LICENSE_NOT_ACTIVATED",
        "NO_RELEASE" => "NO_RELEASE",
        "NO_SIGNING_KEY" => "PORTAL_NO_SIGNING_KEY",
        _ => "PORTAL_ERROR",
    }
}

/// One request to any URL the grant allows. A refused URL is 403
/// URL_NOT_ALLOWED; the rest of the failures are 502 PORTAL_UNAVAILABLE.
pub fn send(method: &str, url: &str, body: Option<&Value>) -> Result<Answer, ApiError> {
    let mut headers = vec![("accept".to_string(), "application/json".to_string())];
    let body = match body {
        Some(v) => {
            headers.push(("content-type".to_string(), "application/json".to_string()));
            v.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    let req = ob::Request {
        method: method.to_string(),
        url: url.to_string(),
        headers,
        body,
        timeout_ms: None,
    };
    match ob::send(&req) {
        Ok(r) => Ok(Answer {
            status: r.status,
            body: r.body,
        }),
        Err(OutboundError::Denied(why)) => Err(ApiError::new(
            403,
            "URL_NOT_ALLOWED",
            format!("The URL is not allowed by the outbound grant: {why}"),
        )),
        Err(OutboundError::Invalid(why)) => {
            Err(ApiError::validation(format!("Invalid URL: {why}")))
        }
        Err(OutboundError::Timeout) => Err(ApiError::new(
            504,
            "PORTAL_TIMEOUT",
            "The remote host did not answer in time",
        )),
        Err(OutboundError::TooLarge(cap)) => Err(ApiError::new(
            502,
            "DOWNLOAD_TOO_LARGE",
            format!("The answer is larger than the outbound grant's cap of {cap} bytes"),
        )),
        Err(OutboundError::Connect(why)) => Err(ApiError::portal(format!(
            "Cannot reach the remote host: {why}"
        ))),
    }
}

/// A request to `path` under the portal's base URL.
pub fn call(method: &str, path: &str, body: Option<&Value>) -> Result<Answer, ApiError> {
    let url = format!("{}{path}", settings::portal_url()?);
    send(method, &url, body)
}

/// `scheme://host[:port]` of the portal's URL, to join its absolute paths
/// (`download_url`) with.
pub fn origin() -> Result<String, ApiError> {
    let url = settings::portal_url()?;
    Ok(origin_of(&url).unwrap_or(url))
}

pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins() {
        assert_eq!(
            super::origin_of("http://127.0.0.1:2084/portal").as_deref(),
            Some("http://127.0.0.1:2084")
        );
        assert_eq!(
            super::origin_of("https://x.example").as_deref(),
            Some("https://x.example")
        );
        assert_eq!(super::origin_of("nope"), None);
    }
}
