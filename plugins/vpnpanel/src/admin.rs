//! The admin surface (`/plugins/vpnpanel/admin/...`, behind the host's admin
//! token): main-admin API keys.
//!
//! - `POST /keys` `{"label": "ops"}` → 201 `{"id", "label", "api_key"}` (the
//!   secret, shown once)
//! - `GET /keys` → every key (main-admin and sub-admin) without secrets
//! - `DELETE /keys/<id>` → 200 or 404

use serde_json::{Value, json};
use wasmgate_sdk::{Error, Request, Response, keys};

use crate::common::ROLE_MAIN;

pub fn handle(req: &Request) -> Result<Response, Error> {
    let path = req.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segs.as_slice()) {
        ("POST", ["keys"]) => {
            let body: Value = if req.body().is_empty() { json!({}) } else { req.json()? };
            let label = body.get("label").and_then(Value::as_str).unwrap_or("main admin");
            let issued = keys::issue(ROLE_MAIN, label, None)?;
            Ok(Response::json(
                201,
                &json!({ "id": issued.info.id, "role": issued.info.role, "label": issued.info.label, "api_key": issued.secret }),
            ))
        }
        ("GET", ["keys"]) => {
            let list: Vec<Value> = keys::list()?
                .into_iter()
                .map(|k| json!({ "id": k.id, "role": k.role, "label": k.label, "created_at": k.created_at }))
                .collect();
            Ok(Response::json(200, &json!({ "keys": list })))
        }
        ("DELETE", ["keys", id]) => {
            if keys::revoke(id)? {
                Ok(Response::json(200, &json!({ "revoked": id })))
            } else {
                Err(Error::not_found("no such key"))
            }
        }
        _ => Err(Error::not_found("not found")),
    }
}
