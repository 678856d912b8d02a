//! `server_settings` and `update_ipsec_psk` (main admin only). There is no
//! default PSK: the first read generates a random one and stores it.

use serde_json::{Value, json};
use wasmgate_sdk::{Request, kv};

use crate::common::{self, Caller, Reply};
use crate::fail::{Fail, refuse};
use crate::store::meta::PSK_KEY;
use crate::util;
use crate::validate;

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

pub fn server_settings(caller: &Caller) -> Reply {
    common::require_main(caller)?;
    Ok(common::ok_with(
        200,
        json!({ "settings": { "ipsec_psk": psk()? } }),
    ))
}

pub fn update_ipsec_psk(req: &Request, caller: &Caller) -> Reply {
    common::require_main(caller)?;
    let body = common::json_object_or_empty(req)?;
    let new = match body.get("new_psk") {
        Some(Value::String(s)) if validate::is_safe_secret(s) => s.clone(),
        _ => {
            return Err(refuse(
                400,
                "Invalid PSK. Cannot be empty or contain double quotes.",
            ));
        }
    };
    kv::set(PSK_KEY, new.as_bytes())?;
    // Active nodes are told to sync now (crate::sync, after this answer):
    // they fetch the PSK with their user list (traffic::node_users).
    let nodes = crate::servers::servers()?.len() - 1;
    Ok(common::ok(&format!(
        "IPsec PSK updated locally and on {nodes} nodes."
    )))
}
