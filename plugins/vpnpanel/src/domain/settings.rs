//! The IPsec PSK. There is no default: the first read generates a random
//! one and stores it.

use wasmgate_sdk::kv;

use crate::fail::{Fail, refuse};
use crate::store::meta::PSK_KEY;
use crate::util;
use crate::validate;

/// The refusal of a PSK that is not a string or not [`validate::is_safe_secret`].
pub const MSG_BAD_PSK: &str = "Invalid PSK. Cannot be empty or contain double quotes.";

/// The IPsec PSK, generated (24 random bytes, hex) and stored on first use.
pub fn psk() -> Result<String, Fail> {
    if let Some(p) = kv::get(PSK_KEY)? {
        return Ok(String::from_utf8_lossy(&p).into_owned());
    }
    let fresh = util::random_hex(24);
    Ok(kv::transaction(|txn| match txn.get(PSK_KEY)? {
        Some(p) => Ok(String::from_utf8_lossy(&p).into_owned()),
        None => {
            txn.set(PSK_KEY, fresh.as_bytes())?;
            Ok(fresh.clone())
        }
    })?)
}

/// Replaces the PSK; nodes pick it up with their user list at their next
/// sync (a change queues one at once).
pub fn set_psk(new: &str) -> Result<(), Fail> {
    if !validate::is_safe_secret(new) {
        return Err(refuse(400, MSG_BAD_PSK));
    }
    kv::set(PSK_KEY, new.as_bytes())?;
    Ok(())
}
