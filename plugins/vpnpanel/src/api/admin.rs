//! The admin surface (`/plugins/vpnpanel/admin/...`, behind the host's admin
//! token): main-admin API keys and the main server's OpenVPN material.
//!
//! - `POST /keys` `{"label": "ops"}` → 201 `{"id", "label", "api_key"}` (the
//!   secret, shown once)
//! - `GET /keys` → every key (main-admin and sub-admin) without secrets
//! - `DELETE /keys/<id>` → 200 or 404
//! - `GET /openvpn/ca` → the CA certificate (PEM)
//! - `GET /openvpn/crl` → the CRL as of now (PEM; [`crate::domain::pki`])
//! - `POST /openvpn/server-cert` `{"name": "main"}` → 201 `{"name", "serial",
//!   "cert", "key", "ca"}`: a new server certificate and key for an OpenVPN
//!   server (the key is in this answer only)

use serde_json::{Value, json};
use wasmgate_sdk::{Error, Request, Response, keys};

use crate::domain::caller::ROLE_MAIN;
use crate::domain::pki;
use crate::fail::Fail;
use crate::validate;

pub fn handle(req: &Request) -> Result<Response, Error> {
    let path = req.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segs.as_slice()) {
        ("POST", ["keys"]) => {
            let body: Value = if req.body().is_empty() {
                json!({})
            } else {
                req.json()?
            };
            let label = body
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("main admin");
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
        ("GET", ["openvpn", "ca"]) => Ok(pem(pki::ca().map(|ca| ca.cert_pem))),
        ("GET", ["openvpn", "crl"]) => Ok(pem(pki::crl_pem())),
        ("POST", ["openvpn", "server-cert"]) => {
            let body: Value = if req.body().is_empty() {
                json!({})
            } else {
                req.json()?
            };
            let name = body.get("name").and_then(Value::as_str).unwrap_or("main");
            if !validate::is_valid_name(name) {
                return Err(Error::bad_request(
                    "name: 3 to 32 letters, digits, '_', '.' or '-'",
                ));
            }
            let made = pki::issue(name, true).and_then(|leaf| Ok((leaf, pki::ca()?)));
            Ok(match made {
                Ok((leaf, ca)) => Response::json(
                    201,
                    &json!({ "name": name, "serial": leaf.serial, "cert": leaf.cert_pem, "key": leaf.key_pem, "ca": ca.cert_pem }),
                ),
                Err(f) => f.into(),
            })
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

/// A PEM answer, or the failure's.
fn pem(made: Result<String, Fail>) -> Response {
    match made {
        Ok(text) => Response::bytes(200, "application/x-pem-file", text),
        Err(f) => f.into(),
    }
}
