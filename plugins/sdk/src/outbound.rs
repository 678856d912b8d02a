//! HTTP requests to the hosts the plugin's `outbound` grant lists.
//!
//! The host checks the URL against the grant before connecting, pins the
//! connection to the addresses the name resolves to, follows no redirect (a
//! 3xx comes back as it is), strips hop-by-hop headers and bounds the whole
//! exchange by a timeout (the least of the grant's, the request's and the
//! plugin's remaining deadline) and the body by the grant's
//! `max_response_bytes`.
//!
//! A non-2xx status is not an error here: it is the server's answer. Errors
//! map to responses: outside the grant 403, a malformed request 400, no
//! answer in time 504, too large or the connection failed 502.
//!
//! ```no_run
//! use wasmgate_sdk::{outbound, Error};
//!
//! fn latest() -> Result<String, Error> {
//!     let (status, body) = outbound::get_json("http://127.0.0.1:2084/portal/releases/latest")?;
//!     if status != 200 {
//!         return Err(Error::new(502, format!("the portal answered {status}")));
//!     }
//!     Ok(body["release"]["version"].as_str().unwrap_or_default().to_string())
//! }
//! ```

use serde::Serialize;

use crate::bindings::wasmgate::plugin::outbound as raw;

pub use raw::{Error as OutboundError, IncomingResponse as Response, OutgoingRequest as Request};

/// Sends one request and reads the whole answer.
pub fn send(request: &Request) -> Result<Response, OutboundError> {
    raw::send(request)
}

/// A `GET` with `accept: application/json`; the status and the body parsed
/// as JSON (`null` for an empty body).
pub fn get_json(url: &str) -> Result<(u16, serde_json::Value), crate::Error> {
    json_exchange("GET", url, &[], None)
}

/// A `POST` of `body` as JSON; the status and the answer parsed as JSON.
pub fn post_json<T: Serialize + ?Sized>(
    url: &str,
    body: &T,
) -> Result<(u16, serde_json::Value), crate::Error> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| crate::Error::internal(format!("encoding JSON: {e}")))?;
    json_exchange("POST", url, &[], Some(bytes))
}

/// A JSON exchange with extra headers, e.g. `("authorization", ...)`.
pub fn json_exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, serde_json::Value), crate::Error> {
    let mut all = vec![("accept".to_string(), "application/json".to_string())];
    if body.is_some() {
        all.push(("content-type".into(), "application/json".into()));
    }
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let response = send(&Request {
        method: method.into(),
        url: url.into(),
        headers: all,
        body: body.unwrap_or_default(),
        timeout_ms: None,
    })?;
    let value = if response.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&response.body).map_err(|e| {
            crate::Error::new(
                502,
                format!("the answer (status {}) is not JSON: {e}", response.status),
            )
        })?
    };
    Ok((response.status, value))
}

impl Response {
    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl From<OutboundError> for crate::Error {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Denied(m) => crate::Error::forbidden(m),
            OutboundError::Invalid(m) => crate::Error::bad_request(m),
            OutboundError::Timeout => crate::Error::new(504, "the upstream did not answer in time"),
            OutboundError::TooLarge(cap) => {
                crate::Error::new(502, format!("the upstream's answer is over {cap} bytes"))
            }
            OutboundError::Connect(m) => crate::Error::new(502, m),
        }
    }
}
