//! vpnpanel: the multi-protocol VPN panel v3 API as a wasmgate plugin.
//!
//! Reading order:
//! 1. this file: the dispatch by mount (`/api/v1/`, `/sub/`, `/download/`)
//!    and by path, and the node mode (settings `mode: node`);
//! 2. [`common`]: the `{success, message}` envelope, the seed's messages,
//!    the caller's role from `X-API-KEY`;
//! 3. the endpoints: [`users`], [`sub_admins`], [`settings`], [`traffic`]
//!    (nodes report byte deltas; the periodic enforcement job), [`sub`]
//!    (subscription page and `.ovpn` downloads), [`nodes`] and [`ports`]
//!    (infrastructure), [`node_mode`];
//! 4. keeping servers in step: [`sync`] (after changes; periodic chains),
//!    [`wg`] (WireGuard for `enable_wg1` users on the panel and on nodes);
//! 5. [`store`]: records and kv layout; [`validate`]: pure checks;
//! 6. [`admin`]: main-admin keys on the host's admin surface.

mod admin;
pub mod common;
pub mod fail;
pub mod node_mode;
pub mod nodes;
mod pki;
pub mod ports;
pub mod servers;
mod settings;
mod store;
mod sub;
mod sub_admins;
mod sync;
mod traffic;
mod users;
pub mod util;
mod validate;
mod wg;

use wasmgate_sdk::{Error, Plugin, Request, Response, config};

use crate::common::Reply;

/// The background half of revoke.
pub const JOB_CERT: &str = "vpnpanel.cert";

struct VpnPanel;

impl Plugin for VpnPanel {
    fn handle(req: &Request) -> Result<Response, Error> {
        if config::get("mode").as_deref() == Some("node") {
            return Ok(node_mode::handle(req));
        }
        let answer = common::reply(route(req));
        let api = !(req.prefix().trim_end_matches('/').ends_with("/sub")
            || req.prefix().trim_end_matches('/').ends_with("/download"));
        let segs: Vec<&str> = if api {
            req.path().split('/').filter(|s| !s.is_empty()).collect()
        } else {
            Vec::new()
        };
        Ok(common::within_cap(req, &segs, answer))
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        admin::handle(req)
    }

    fn job(name: &str, payload: &[u8]) -> Result<(), String> {
        if config::get("mode").as_deref() == Some("node") {
            return node_mode::job(name, payload);
        }
        match name {
            sync::JOB_SYNC => sync::panel_job(),
            traffic::JOB_ENFORCE => traffic::enforce_job(payload),
            JOB_CERT => users::cert_job(payload),
            n if n.starts_with("node.") => nodes::job(n, payload),
            other => Err(format!("no job handler for {other:?}")),
        }
    }
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
        return Ok(common::ok_with(
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
    let caller = common::authenticate(req)?;
    // The enforcement chain is restarted from here when it is missing; a
    // failure to queue it is logged, and the request is still served.
    if traffic::ensure_enforcer().is_err() {
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
        _ => return Ok(common::not_found_route()),
    };
    // A change to users, sub-admins or the PSK: the servers follow (the
    // panel's own WireGuard, the nodes).
    if req.method() != "GET" && answer.as_ref().is_ok_and(|r| r.status < 300) {
        sync::changed();
    }
    answer
}

wasmgate_sdk::export_plugin!(VpnPanel);
