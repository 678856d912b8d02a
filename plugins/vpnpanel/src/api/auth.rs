//! The caller behind `X-API-KEY`, and the main-admin-only routes' refusals.

use wasmgate_sdk::Request;

use crate::api::envelope::{MSG_KEY_MISSING, MSG_MAIN_REQUIRED, MSG_PERMISSION_DENIED};
use crate::domain::caller::{self, Caller};
use crate::fail::{Fail, refuse};

/// The caller behind `X-API-KEY`: 401 "API key is missing" without the
/// header, else [`caller::of_key`].
pub fn authenticate(req: &Request) -> Result<Caller, Fail> {
    let secret = req
        .header("x-api-key")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse(401, MSG_KEY_MISSING))?;
    caller::of_key(secret)
}

/// 403 "Permission denied: Main admin API key required." for a sub-admin.
pub fn require_main(caller: &Caller) -> Result<(), Fail> {
    if caller.is_main() {
        Ok(())
    } else {
        Err(refuse(403, MSG_MAIN_REQUIRED))
    }
}

/// 403 "Permission denied" for a sub-admin (the routes where the seed uses
/// the short message: sub_admins, POST/DELETE public/ports, settings).
pub fn require_main_short(caller: &Caller) -> Result<(), Fail> {
    if caller.is_main() {
        Ok(())
    } else {
        Err(refuse(403, MSG_PERMISSION_DENIED))
    }
}
