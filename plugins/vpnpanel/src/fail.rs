//! The error of every layer: a refusal with the status and the message the
//! API answers (`{"success": false, "message": ...}`, rendered by
//! [`crate::api::envelope`]). A store or domain function returns `Result<_, Fail>`
//! and refuses with the exact message the seed shows; `?` turns an SDK
//! [`Error`] into one (a 5xx becomes "An internal error occurred." and is
//! logged; a 4xx keeps its text).

use wasmgate_sdk::{Error, log};

pub const MSG_INTERNAL: &str = "An internal error occurred.";

/// A refusal: the status and message of the answer.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: u16,
    pub message: String,
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        if err.status >= 500 {
            log::write(log::Level::Error, &format!("vpnpanel: {}", err.message));
            refuse(err.status, MSG_INTERNAL)
        } else {
            refuse(err.status, &err.message)
        }
    }
}

/// A refusal as an `Err`, for `return Err(refuse(400, "..."))` or `?`.
pub fn refuse(status: u16, message: &str) -> Fail {
    Fail {
        status,
        message: message.to_string(),
    }
}

/// A 500 with "An internal error occurred.", logging `detail`.
pub fn internal(detail: impl std::fmt::Display) -> Fail {
    log::write(log::Level::Error, &format!("vpnpanel: {detail}"));
    refuse(500, MSG_INTERNAL)
}
