#![doc = include_str!("../README.md")]
//!
//! ## The code
//!
//! license-portal: the vendor's side of WisPanel licensing and updates, as a
//! wasmgate plugin. The contract is the README's `### license-portal`
//! section (and /tmp/spec/license-portal.md while it is being built).
//!
//! Reading order:
//! 1. [`public`]: what panels call (license activate, refresh, verify;
//!    releases, downloads; the public keys);
//! 2. [`admin`]: what the operator calls on the host's admin listener
//!    (signing keys, license keys, publishing releases);
//! 3. [`signing`]: the signed envelope shared by license files and release
//!    manifests, and the signing keys;
//! 4. [`store`]: records, their kv keys and the small helpers;
//!    [`paging`]: how every list pages past the response cap.
//!
//! Signing runs in the guest (ed25519-dalek): the host's crypto capability
//! verifies only, and the private seed never leaves this plugin's kv
//! namespace, which no other plugin can read.

mod admin;
mod paging;
mod public;
mod signing;
mod store;

use serde_json::json;
use wasmgate_sdk::{Error, Plugin, Request, Response};

struct Portal;

impl Plugin for Portal {
    fn handle(req: &Request) -> Result<Response, Error> {
        Ok(public::handle(req).unwrap_or_else(enveloped))
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        Ok(admin::handle(req).unwrap_or_else(enveloped))
    }
}

wasmgate_sdk::export_plugin!(Portal);

/// The WisPanel error envelope.
pub(crate) fn fail(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({ "success": false, "code": code, "error": message, "message": message, "status": status }),
    )
}

/// An SDK error (router 404/405, kv failure, bad JSON) in the envelope.
fn enveloped(e: Error) -> Response {
    let code = match e.status {
        400 => "VALIDATION_ERROR",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        503 => "UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    };
    fail(e.status, code, &e.message)
}
