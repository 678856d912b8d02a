//! The subscription page (`/sub/<user>?token=`), OpenVPN profiles
//! (`/download/<user>/<name>.ovpn?token=`) and WireGuard client configs
//! (`/download/<user>/<server>.conf?token=`, [`crate::wg`]), all behind the user's
//! subscription token. An unknown user and a wrong token get the same 403,
//! so a link reveals nothing about which users exist.

use serde_json::json;
use wasmgate_sdk::{Request, Response};

use crate::common::{self, Reply};
use crate::fail::{Fail, refuse};
use crate::servers::{self, Endpoint};
use crate::store::{self, users::User};
use crate::util;
use crate::validate;

const MSG_BAD_LINK: &str = "Invalid or revoked subscription link";

/// The user `name` and its kv key, when `token` is its subscription token.
fn user_with_token(req: &Request, name: &str) -> Result<(String, User), Fail> {
    let token = req.query("token").unwrap_or_default();
    if token.is_empty() || !validate::is_valid_name(name) {
        return Err(refuse(403, MSG_BAD_LINK));
    }
    match store::users::load_user(name)? {
        Some((key, u)) if util::secret_eq(&u.token, &token) => Ok((key, u)),
        _ => Err(refuse(403, MSG_BAD_LINK)),
    }
}

pub fn subscription(req: &Request, rest: &[&str]) -> Reply {
    let [name] = rest else {
        return Ok(common::not_found_route());
    };
    if req.method() != "GET" {
        return Ok(common::not_found_route());
    }
    let (_, u) = user_with_token(req, name)?;
    let now = util::now_secs();
    let base = common::public_base(req);
    let endpoints = if u.enable_openvpn {
        servers::endpoints(&u)?
    } else {
        Vec::new()
    };
    let hosts: Vec<String> = servers::servers()?
        .into_iter()
        .filter(|s| u.may_use(&s.id))
        .map(|s| s.host)
        .collect();
    let psk = crate::settings::psk()?;
    Ok(common::ok_with(
        200,
        json!({
            "username": u.username,
            "is_active": u.is_active(),
            "active_connections": u.active_connections(now),
            "max_clients": u.max_clients,
            "total_traffic_bytes": u.traffic_bytes,
            "data_limit_bytes": u.data_limit_bytes,
            "expiry_date": u.expiry_at.map(validate::format_date),
            "activation_type": u.activation_type,
            "pending_activation_days": u.pending_activation_days,
            "openvpn": endpoints.iter().map(|e| json!({
                "name": e.name, "server": e.server_name, "host": e.host, "port": e.port, "protocol": e.protocol,
                "url": format!("{base}/download/{}/{}.ovpn?token={}", u.username, e.name, u.token),
            })).collect::<Vec<_>>(),
            "l2tp": u.enable_l2tp.then(|| json!({ "servers": hosts, "username": u.username, "password": u.l2tp_password, "psk": psk })),
            "cisco": u.enable_cisco.then(|| json!({ "servers": hosts, "username": u.username, "password": u.cisco_password })),
            "wg1": u.enable_wg1,
            "wireguard": crate::wg::subscription(&u, &base)?,
        }),
    ))
}

pub fn download(req: &Request, rest: &[&str]) -> Reply {
    let [name, file] = rest else {
        return Ok(common::not_found_route());
    };
    if req.method() != "GET" {
        return Ok(common::not_found_route());
    }
    let (key, u) = user_with_token(req, name)?;
    if let Some(server) = file.strip_suffix(".conf") {
        return crate::wg::download(&u, server);
    }
    let Some(profile) = file.strip_suffix(".ovpn") else {
        return Ok(common::not_found_route());
    };
    let endpoint = if u.enable_openvpn {
        servers::endpoints(&u)?
            .into_iter()
            .find(|e| e.name == profile)
    } else {
        None
    };
    let Some(endpoint) = endpoint else {
        return Err(refuse(404, "Profile not found"));
    };
    if u.cert_issued < u.cert_generation {
        // Revoked: the old certificate is on the CRL, the new one is being made.
        return Ok(common::fail(
            503,
            "Certificate generation is running; try again in a few seconds.",
        )
        .with_header("retry-after", "2"));
    }
    let ca = crate::pki::ca()?;
    // None: revoked (or deleted) since the token was checked.
    let leaf = crate::pki::client_leaf(&key, &u)?.ok_or_else(|| refuse(403, MSG_BAD_LINK))?;
    let text = ovpn_profile(&u, &endpoint, &ca.cert_pem, &leaf);
    Ok(
        Response::bytes(200, "application/x-openvpn-profile", text).with_header(
            "content-disposition",
            format!(
                "attachment; filename=\"{}-{}.ovpn\"",
                u.username, endpoint.name
            ),
        ),
    )
}

/// A client profile: one remote, the panel's CA, the user's certificate
/// and key inline; the server must present a server certificate of that CA.
pub fn ovpn_profile(u: &User, e: &Endpoint, ca: &str, leaf: &crate::store::pki::Leaf) -> String {
    let proto = if e.protocol == "tcp" {
        "tcp-client"
    } else {
        "udp"
    };
    format!(
        "# {user} on {server} ({name})\n\
         client\n\
         dev tun\n\
         proto {proto}\n\
         remote {host} {port}\n\
         resolv-retry infinite\n\
         nobind\n\
         persist-key\n\
         persist-tun\n\
         remote-cert-tls server\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n\
         verb 3\n\
         <ca>\n{ca}\n</ca>\n\
         <cert>\n{cert}\n</cert>\n\
         <key>\n{key}\n</key>\n",
        user = u.username,
        server = e.server_name,
        name = e.name,
        host = e.host,
        port = e.port,
        ca = ca.trim(),
        cert = leaf.cert_pem.trim(),
        key = leaf.key_pem.trim(),
    )
}
