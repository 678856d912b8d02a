//! The subscription page (`/sub/<user>?token=`), OpenVPN profiles
//! (`/download/<user>/<name>.ovpn?token=`) and WireGuard client configs
//! (`/download/<user>/<server>.conf?token=`, from the keys
//! [`crate::domain::wg`] gave the user), all behind the user's subscription
//! token. An unknown user and a wrong token get the same 403,
//! so a link reveals nothing about which users exist.

use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response, config};

use crate::api::envelope::{self, Reply};
use crate::domain::servers::{self, Endpoint, Server};
use crate::domain::{pki, settings};
use crate::fail::{Fail, refuse};
use crate::store::{self, pki::Leaf, users::User};
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
        return Ok(envelope::not_found_route());
    };
    if req.method() != "GET" {
        return Ok(envelope::not_found_route());
    }
    let (_, u) = user_with_token(req, name)?;
    let now = util::now_secs();
    let base = envelope::public_base(req);
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
    let psk = settings::psk()?;
    Ok(envelope::ok_with(
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
            "wireguard": wg_subscription(&u, &base)?,
        }),
    ))
}

pub fn download(req: &Request, rest: &[&str]) -> Reply {
    let [name, file] = rest else {
        return Ok(envelope::not_found_route());
    };
    if req.method() != "GET" {
        return Ok(envelope::not_found_route());
    }
    let (key, u) = user_with_token(req, name)?;
    if let Some(server) = file.strip_suffix(".conf") {
        return wg_download(&u, server);
    }
    let Some(profile) = file.strip_suffix(".ovpn") else {
        return Ok(envelope::not_found_route());
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
        return Ok(envelope::fail(
            503,
            "Certificate generation is running; try again in a few seconds.",
        )
        .with_header("retry-after", "2"));
    }
    let ca = pki::ca()?;
    // None: revoked (or deleted) since the token was checked.
    let leaf = pki::client_leaf(&key, &u)?.ok_or_else(|| refuse(403, MSG_BAD_LINK))?;
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
pub fn ovpn_profile(u: &User, e: &Endpoint, ca: &str, leaf: &Leaf) -> String {
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

/// The user's WireGuard in API answers: address and public key, or null.
pub fn wg_user_view(u: &User) -> Value {
    match (&u.wg_address, &u.wg_public_key) {
        (Some(a), Some(k)) if u.enable_wg1 => json!({ "address": a, "public_key": k }),
        _ => Value::Null,
    }
}

/// `host:port`, IPv6 in brackets.
fn wg_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The user's client config for server `s` (`wg-quick` format).
fn wg_client_config(u: &User, s: &Server) -> Option<String> {
    let (Some(private), Some(address), Some((public, port))) =
        (&u.wg_private_key, &u.wg_address, &s.wireguard)
    else {
        return None;
    };
    let allowed = config::get("wg_client_allowed_ips")
        .map(|a| a.trim().to_string())
        .filter(|a| {
            !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_hexdigit() || ".:/, ".contains(c))
        })
        .unwrap_or_else(|| "0.0.0.0/0, ::/0".into());
    let dns = config::get("wg_dns")
        .map(|d| d.trim().to_string())
        .filter(|d| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_hexdigit() || ".:, ".contains(c))
        })
        .map(|d| format!("DNS = {d}\n"))
        .unwrap_or_default();
    Some(format!(
        "# {user} on {server}\n[Interface]\nPrivateKey = {private}\nAddress = {address}/32\n{dns}\n[Peer]\nPublicKey = {public}\nAllowedIPs = {allowed}\nEndpoint = {endpoint}\nPersistentKeepalive = 25\n",
        user = u.username,
        server = s.name,
        endpoint = wg_endpoint(&s.host, *port),
    ))
}

/// The user's WireGuard on the subscription page: address, public key and
/// a config link per server; null when wg1 is off.
fn wg_subscription(u: &User, base: &str) -> Result<Value, Fail> {
    if wg_user_view(u).is_null() {
        return Ok(Value::Null);
    }
    let servers: Vec<Value> = servers::wireguard_servers(u)?
        .iter()
        .filter_map(|s| {
            let (public_key, port) = s.wireguard.as_ref()?;
            Some(json!({
                "server": s.id,
                "name": s.name,
                "endpoint": wg_endpoint(&s.host, *port),
                "public_key": public_key,
                "url": format!("{base}/download/{}/{}.conf?token={}", u.username, s.id, u.token),
            }))
        })
        .collect();
    Ok(json!({ "address": u.wg_address, "public_key": u.wg_public_key, "servers": servers }))
}

/// `/download/<user>/<server>.conf`: the user's client config for that
/// server; 404 when wg1 is off or the server runs no WireGuard for it.
fn wg_download(u: &User, server: &str) -> Reply {
    let config = if wg_user_view(u).is_null() {
        None
    } else {
        servers::wireguard_servers(u)?
            .iter()
            .find(|s| s.id == server)
            .and_then(|s| wg_client_config(u, s))
    };
    let Some(config) = config else {
        return Err(refuse(404, "Profile not found"));
    };
    Ok(
        wasmgate_sdk::Response::bytes(200, "text/plain; charset=utf-8", config).with_header(
            "content-disposition",
            format!("attachment; filename=\"{}-{server}.conf\"", u.username),
        ),
    )
}
