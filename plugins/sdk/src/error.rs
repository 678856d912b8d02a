use std::fmt;

use crate::Response;
use crate::bindings::wasmgate::plugin::{jobs, keys, kv, net, wireguard};

/// The message of every [`Error::internal`].
pub const INTERNAL: &str = "internal error";

/// The message of a size error from `kv`, `jobs`: what the client sent was
/// too large to store, without saying how the plugin keys it.
pub const TOO_LARGE: &str = "a value in the request is too large";

/// An error answer: becomes `status` with the body `{"error": message}`.
///
/// Return it from a handler with `?` or `Err(...)`; [`kv`](crate::kv),
/// [`keys`](crate::keys), [`jobs`](crate::jobs) and [`net`](crate::net)
/// errors convert into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: u16,
    pub message: String,
}

impl Error {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "method not allowed")
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, message)
    }

    /// 429.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, message)
    }

    /// 500 with the message [`INTERNAL`]. `detail` goes to the host log
    /// (the plugin's stderr, which the host tags with the plugin and the
    /// request id), never to the client: it may name keys, settings or the
    /// host's own errors. For a 500 whose text the client should see, use
    /// [`Error::new`].
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("internal error: {detail}");
        Self::new(500, INTERNAL)
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for Response {
    fn from(err: Error) -> Response {
        Response::json(err.status, &serde_json::json!({ "error": err.message }))
    }
}

/// Size errors are usually caused by what the client sent (a long key taken
/// from the path, a big body stored as is), so they answer 413; the rest are
/// the plugin's or the host's fault, answered as [`Error::internal`] with the
/// details in the host log.
impl From<kv::Error> for Error {
    fn from(err: kv::Error) -> Self {
        match err {
            kv::Error::KeyTooLarge(limit) => {
                eprintln!("kv: key longer than {limit} bytes");
                Self::payload_too_large(TOO_LARGE)
            }
            kv::Error::ValueTooLarge(limit) => {
                eprintln!("kv: value longer than {limit} bytes");
                Self::payload_too_large(TOO_LARGE)
            }
            kv::Error::EmptyKey => Self::bad_request("empty key"),
            kv::Error::Conflict => Self::conflict("conflicting concurrent update, retry"),
            kv::Error::Closed => Self::internal("kv transaction already committed"),
            kv::Error::Storage(detail) => Self::internal(format!("kv storage: {detail}")),
        }
    }
}

impl From<keys::Error> for Error {
    fn from(err: keys::Error) -> Self {
        match err {
            keys::Error::Invalid(why) => Self::bad_request(why),
            keys::Error::Storage(detail) => Self::internal(format!("keys storage: {detail}")),
        }
    }
}

impl From<jobs::Error> for Error {
    fn from(err: jobs::Error) -> Self {
        match err {
            jobs::Error::TooLarge(limit) => {
                eprintln!("jobs: name or payload longer than {limit} bytes");
                Self::payload_too_large(TOO_LARGE)
            }
            jobs::Error::Storage(detail) => Self::internal(format!("jobs storage: {detail}")),
        }
    }
}

/// A link outside the grant (or a change without `write`) is the caller's
/// request for something this plugin may not touch: 403. The host's text
/// names the link, never anything outside the grant; a kernel refusal
/// (`os`) keeps the host's text too (an address already on the link, a
/// kernel without WireGuard): it is about the granted links, and it is what
/// the operator needs to act on.
impl From<net::Error> for Error {
    fn from(err: net::Error) -> Self {
        match err {
            net::Error::Denied(why) => Self::forbidden(why),
            net::Error::NotFound(why) => Self::not_found(why),
            net::Error::Invalid(why) => Self::bad_request(why),
            net::Error::Os(why) => Self::new(500, format!("net: {why}")),
        }
    }
}

/// A device outside the grant is 403, as for `net`; a device that already
/// exists is 409. The host's text names the device, never one outside the grant.
impl From<wireguard::Error> for Error {
    fn from(err: wireguard::Error) -> Self {
        match err {
            wireguard::Error::Denied(why) => Self::forbidden(why),
            wireguard::Error::NotFound(why) => Self::not_found(why),
            wireguard::Error::Exists(why) => Self::conflict(why),
            wireguard::Error::Invalid(why) => Self::bad_request(why),
            wireguard::Error::Os(why) => Self::new(500, format!("wireguard: {why}")),
        }
    }
}
