//! The original's answer: `{"data": ..., "message": ..., "status": bool}`,
//! keys in sorted order (a struct whose fields are declared in that order,
//! so the order never depends on serde_json's map features).
//!
//! Business failures are HTTP 200 with `status: false`; only a missing or
//! invalid session or API key is a 401, as in the original.

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::{Error, Response, log};

#[derive(Serialize)]
struct Envelope<'a, T: Serialize + ?Sized> {
    data: &'a T,
    message: &'a Value,
    status: bool,
}

/// Any envelope.
pub fn answer<T: Serialize + ?Sized>(
    http: u16,
    status: bool,
    message: &Value,
    data: &T,
) -> Response {
    Response::json(
        http,
        &Envelope {
            data,
            message,
            status,
        },
    )
}

/// `status: true`, no message.
pub fn ok<T: Serialize + ?Sized>(data: &T) -> Response {
    answer(200, true, &Value::Null, data)
}

/// `status: true`, data null, no message.
pub fn done() -> Response {
    ok(&Value::Null)
}

/// `status: false`, HTTP 200, data null.
pub fn fail(message: impl Into<String>) -> Response {
    answer(200, false, &Value::String(message.into()), &Value::Null)
}

/// `status: false`, HTTP 200, with data.
pub fn fail_with<T: Serialize + ?Sized>(message: impl Into<String>, data: &T) -> Response {
    answer(200, false, &Value::String(message.into()), data)
}

/// The 401 the original answers at every endpoint.
pub fn unauthorized(message: &str) -> Response {
    answer(
        401,
        false,
        &Value::String(message.to_string()),
        &Value::Null,
    )
}

/// An SDK error (kv, keys, a bad body) as an envelope. Client errors keep
/// their text and status; the host's failures are logged and answered with
/// a generic message so that no storage detail leaks.
pub fn from_error(err: &Error) -> Response {
    if (400..500).contains(&err.status) {
        answer(
            err.status,
            false,
            &Value::String(err.message.clone()),
            &Value::Null,
        )
    } else {
        log::error!("wgdashboard: {}", err.message);
        answer(
            err.status,
            false,
            &Value::String("An error occurred, see the server log".into()),
            &Value::Null,
        )
    }
}
