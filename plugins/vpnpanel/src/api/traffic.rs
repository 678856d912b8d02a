//! `/traffic...`: what the servers (a node with its `X-NODE-TOKEN`, or the
//! main server with a main-admin `X-API-KEY`) send and fetch.
//!
//! - `POST /api/v1/traffic/report`: per user, the bytes used since the last
//!   report and the active connections ([`crate::domain::traffic::record`]).
//! - `GET /api/v1/traffic/users`: what a node serves.
//! - `GET /api/v1/traffic/openvpn`: the calling server's OpenVPN material
//!   (CA, its server certificate and key, the CRL).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wasmgate_sdk::{Request, kv};

use crate::api::auth;
use crate::api::envelope::{self, MSG_MAIN_REQUIRED, Reply};
use crate::domain::caller::Caller;
use crate::domain::{pki, settings, traffic};
use crate::fail::{self, Fail, refuse};
use crate::store::{self, users::User};
use crate::util;

/// Most entries in one report.
const MAX_ENTRIES: usize = 10_000;

/// Which server is calling: `main` for a main-admin key, `node_<id>` for a
/// node token.
fn reporter(req: &Request) -> Result<String, Fail> {
    if let Some(token) = req
        .header("x-node-token")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        for (_, node) in kv::list_json::<Value>(store::nodes::REC_PREFIX)? {
            let known = node
                .get("report_token")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !known.is_empty()
                && util::secret_eq(known, token)
                && let Some(id) = node.get("id").and_then(Value::as_u64)
            {
                return Ok(format!("node_{id}"));
            }
        }
        return Err(refuse(401, "Invalid node token"));
    }
    match auth::authenticate(req)? {
        Caller::Main => Ok("main".into()),
        Caller::Sub { .. } => Err(refuse(403, MSG_MAIN_REQUIRED)),
    }
}

pub fn route(req: &Request, rest: &[&str]) -> Reply {
    match (req.method(), rest) {
        ("POST", ["report"]) => report(req),
        ("GET", ["users"]) => node_users(req),
        ("GET", ["openvpn"]) => openvpn(&reporter(req)?),
        _ => Ok(envelope::not_found_route()),
    }
}

fn report(req: &Request) -> Reply {
    let server = reporter(req)?;
    let body = envelope::json_object(req)?;
    let entries = body
        .get("users")
        .and_then(Value::as_array)
        .filter(|a| a.len() <= MAX_ENTRIES)
        .ok_or_else(|| {
            refuse(
                400,
                "Invalid users: expected a list of at most 10000 {username, bytes, connections}.",
            )
        })?;
    // username -> (bytes, connections)
    let mut deltas: BTreeMap<String, (u64, Option<u32>)> = BTreeMap::new();
    for e in entries {
        let name = e.get("username").and_then(Value::as_str);
        let bytes = e
            .get("bytes")
            .map_or(Some(0), Value::as_u64)
            .filter(|b| *b < 1 << 50);
        let conns = match e.get("connections") {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_u64().filter(|c| *c <= 100_000).map(|c| Some(c as u32)),
        };
        let (Some(name), Some(bytes), Some(conns)) = (name, bytes, conns) else {
            return Err(refuse(
                400,
                "Invalid users: each entry is {username, bytes >= 0, connections >= 0}.",
            ));
        };
        let slot = deltas.entry(name.to_string()).or_insert((0, None));
        slot.0 += bytes;
        if conns.is_some() {
            slot.1 = conns;
        }
    }
    let accepted = traffic::record(&server, &deltas)?;
    Ok(envelope::ok_with(
        200,
        json!({ "message": "Traffic recorded.", "accepted": accepted }),
    ))
}

/// The users a node serves: active users allowed on it, with what its
/// daemons need, and the IPsec PSK. Pages ([`envelope::paging`]) run in kv
/// key order; the cursor is the last user's key.
fn node_users(req: &Request) -> Reply {
    let server = reporter(req)?;
    let page = envelope::paging(req)?;
    let after = page.as_ref().and_then(|p| p.cursor.clone());
    if after.as_ref().is_some_and(|a| !a.starts_with("u/")) {
        return Err(envelope::bad_cursor());
    }
    // One more than the page: whether there is a next page.
    let want = page.as_ref().map_or(usize::MAX, |p| p.limit + 1);
    let mut users: Vec<(String, Value)> = Vec::new();
    store::scan("u/", after.as_deref(), |key, bytes| {
        let u: User = serde_json::from_slice(&bytes)
            .map_err(|e| fail::internal(format!("user record {key}: {e}")))?;
        if u.is_active() && u.may_use(&server) {
            users.push((
                key,
                json!({
                    "username": u.username,
                    "max_clients": u.max_clients,
                    "openvpn": u.enable_openvpn,
                    "l2tp_password": u.enable_l2tp.then_some(u.l2tp_password.clone()).flatten(),
                    "cisco_password": u.enable_cisco.then_some(u.cisco_password.clone()).flatten(),
                    "wg1": u.enable_wg1,
                    "wg_public_key": u.enable_wg1.then_some(u.wg_public_key.clone()).flatten(),
                    "wg_address": u.enable_wg1.then_some(u.wg_address.clone()).flatten(),
                }),
            ));
        }
        Ok(users.len() < want)
    })?;
    let psk = settings::psk()?;
    let all = users.len();
    let render = |k: usize| {
        let mut answer = json!({
            "success": true,
            "server": server,
            "ipsec_psk": psk,
            "users": users[..k].iter().map(|(_, v)| v).collect::<Vec<_>>(),
        });
        if page.is_some() {
            // The key of the page's last user, when users follow it.
            let next = (k < all)
                .then(|| k.checked_sub(1).map(|i| users[i].0.clone()))
                .flatten();
            answer["next_cursor"] = json!(next);
        }
        answer.to_string().into_bytes()
    };
    let body = match &page {
        None => render(all),
        Some(p) => envelope::fitting(all.min(p.limit), render),
    };
    Ok(wasmgate_sdk::Response::bytes(200, "application/json", body))
}

/// `GET /api/v1/traffic/openvpn` for server `server` (`main`, `node_<id>`):
/// the CA, the server's certificate and key and the CRL.
fn openvpn(server: &str) -> Reply {
    let leaf = pki::server_leaf(server)?;
    Ok(envelope::ok_with(
        200,
        serde_json::json!({
            "server": server,
            "ca": pki::ca()?.cert_pem,
            "cert": leaf.cert_pem,
            "key": leaf.key_pem,
            "crl": pki::crl_pem()?,
        }),
    ))
}
