//! API keys for the plugin's own callers (grant `keys`). The host stores only
//! digests; a secret is shown once, by [`issue`].

use crate::bindings::wasmgate::plugin::keys as raw;
use crate::{Error, Request};

pub use raw::{Issued, KeyInfo};

/// A new key; `expires_at` is in unix seconds, `None` for never.
pub fn issue(role: &str, label: &str, expires_at: Option<u64>) -> Result<Issued, Error> {
    Ok(raw::issue(role, label, expires_at)?)
}

/// The key's details when `secret` is known and not expired.
pub fn verify(secret: &str) -> Result<Option<KeyInfo>, Error> {
    Ok(raw::verify(secret)?)
}

/// Returns whether the key existed.
pub fn revoke(id: &str) -> Result<bool, Error> {
    Ok(raw::revoke(id)?)
}

/// Every key, oldest first, without secrets.
pub fn list() -> Result<Vec<KeyInfo>, Error> {
    Ok(raw::list()?)
}

/// The key behind the request's `authorization: Bearer <secret>` header, or
/// a 401 `{"error":"invalid key"}` when it is missing, unknown or expired.
pub fn authenticate(req: &Request) -> Result<KeyInfo, Error> {
    let secret = req
        .header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::unauthorized("invalid key"))?;
    verify(secret)?.ok_or_else(|| Error::unauthorized("invalid key"))
}
