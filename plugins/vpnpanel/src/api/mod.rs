//! The API layer: routing by mount and path, the request's caller, fields
//! and pages, and the `{success, message, ...}` envelope of every answer.
//! Handlers hand the caller, path parameters and the body's JSON object to
//! [`crate::domain`] and answer with what it returns; read-only lists and
//! views read [`crate::store`] directly.
//!
//! Reading order: [`envelope`], [`auth`], then the endpoints: [`users`],
//! [`sub_admins`], [`settings`], [`traffic`], [`sub`] (subscription page,
//! `.ovpn` and WireGuard downloads), [`nodes`], [`ports`]; [`node_mode`]
//! (a node's own endpoints) and [`admin`] (the host's admin surface).

pub mod admin;
pub mod auth;
pub mod envelope;
pub mod node_mode;
pub mod nodes;
pub mod ports;
pub mod settings;
pub mod sub;
pub mod sub_admins;
pub mod traffic;
pub mod users;

use wasmgate_sdk::{Request, Response};

use crate::api::envelope::Reply;
use crate::domain;
use crate::validate;

/// The answer to `req` on the panel: routed, in the envelope, and within
/// the response cap.
pub fn handle(req: &Request) -> Response {
    let answer = envelope::reply(route(req));
    let api = !(req.prefix().trim_end_matches('/').ends_with("/sub")
        || req.prefix().trim_end_matches('/').ends_with("/download"));
    let segs: Vec<&str> = if api {
        req.path().split('/').filter(|s| !s.is_empty()).collect()
    } else {
        Vec::new()
    };
    envelope::within_cap(req, &segs, answer)
}

/// `/sub/` and `/download/` mounts serve subscriptions; everything else is
/// the API below `/api/v1/`.
fn route(req: &Request) -> Reply {
    let prefix = req.prefix().trim_end_matches('/');
    let path = req.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if prefix.ends_with("/sub") {
        return sub::subscription(req, &segs);
    }
    if prefix.ends_with("/download") {
        return sub::download(req, &segs);
    }
    if path == "/status" && req.method() == "GET" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return Ok(envelope::ok_with(
            200,
            serde_json::json!({
                "message": "Panel is online",
                "timestamp": validate::format_timestamp(now.as_secs(), now.subsec_micros()),
            }),
        ));
    }
    // Nodes authenticate with their own token.
    if let ["traffic", rest @ ..] = segs.as_slice() {
        return traffic::route(req, rest);
    }
    let caller = auth::authenticate(req)?;
    // The enforcement chain is restarted from here when it is missing; a
    // failure to queue it is logged, and the request is still served.
    if domain::traffic::ensure_enforcer().is_err() {
        wasmgate_sdk::log::write(
            wasmgate_sdk::log::Level::Warn,
            "vpnpanel: cannot queue the enforcement job",
        );
    }
    let answer = match segs.as_slice() {
        ["nodes", ..] => return Ok(nodes::handle(req, &caller)),
        ["public", "ports", ..]
        | ["public", "servers_for_ports"]
        | ["public", "all_selectable_servers"] => {
            return Ok(ports::handle(req, &caller));
        }
        ["users", rest @ ..] => users::route(req, &caller, rest),
        ["sub_admins", rest @ ..] => sub_admins::route(req, &caller, rest),
        ["server_settings"] if req.method() == "GET" => settings::server_settings(&caller),
        ["update_ipsec_psk"] if req.method() == "POST" => settings::update_ipsec_psk(req, &caller),
        _ => return Ok(envelope::not_found_route()),
    };
    // A change to users, sub-admins or the PSK: the servers follow (the
    // panel's own WireGuard, the nodes).
    if req.method() != "GET" && answer.as_ref().is_ok_and(|r| r.status < 300) {
        domain::sync::changed();
    }
    answer
}
