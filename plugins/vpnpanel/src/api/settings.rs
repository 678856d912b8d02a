//! `server_settings` and `update_ipsec_psk` (main admin only).

use serde_json::{Value, json};
use wasmgate_sdk::Request;

use crate::api::auth;
use crate::api::envelope::{self, Reply};
use crate::domain::caller::Caller;
use crate::domain::{servers, settings};
use crate::fail::refuse;

pub fn server_settings(caller: &Caller) -> Reply {
    auth::require_main(caller)?;
    Ok(envelope::ok_with(
        200,
        json!({ "settings": { "ipsec_psk": settings::psk()? } }),
    ))
}

pub fn update_ipsec_psk(req: &Request, caller: &Caller) -> Reply {
    auth::require_main(caller)?;
    let body = envelope::json_object_or_empty(req)?;
    let Some(Value::String(new)) = body.get("new_psk") else {
        return Err(refuse(400, settings::MSG_BAD_PSK));
    };
    settings::set_psk(new)?;
    // Active nodes are told to sync now (domain::sync, after this answer):
    // they fetch the PSK with their user list (api::traffic::node_users).
    let nodes = servers::servers()?.len() - 1;
    Ok(envelope::ok(&format!(
        "IPsec PSK updated locally and on {nodes} nodes."
    )))
}
