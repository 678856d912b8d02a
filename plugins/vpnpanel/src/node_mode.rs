//! The plugin running as a node (settings `mode: node`): the agent a panel
//! provisions over `outbound`. Every endpoint needs
//! `Authorization: Bearer <token>` where the token equals the setting
//! `node_token` (16 to 256 printable characters); without that setting the
//! node refuses everything (503), so a node is never an open agent (the
//! original's node agent was unauthenticated).
//!
//! | method | path below the mount | answer |
//! | --- | --- | --- |
//! | GET | `/node/health` | `{success, message: "Node is online", provisioned, node_id, name, status, protocols, ports, wireguard, ipsec_psk_sha256, last_sync}` |
//! | POST | `/node/provision` | stores the panel's config; `{success, message: "Node provisioned.", status: "active", protocols, ports, wireguard}` |
//! | DELETE | `/node/provision` | forgets it and empties its WireGuard device; `{success, message: "Node deprovisioned."}` |
//! | POST | `/node/sync` | queues a sync now; 202 `{success, message: "Sync queued."}` |
//!
//! `protocols` comes from the setting `protocols` (a list; default openvpn,
//! l2tp, cisco, wireguard); `ports` is the default port from the config
//! followed by the custom ports the panel assigned; `wireguard` is
//! `{public_key, port}` when the node runs WireGuard (setting `wg_device`,
//! [`crate::wg`]), else null.
//!
//! The sync, every `sync_interval_secs` (default 60) once provisioned and
//! whenever the panel asks: the node reads its WireGuard counters and
//! reports its users' traffic and connections to the panel
//! (`POST <panel_url>/api/v1/traffic/report`, header `X-NODE-TOKEN`), then
//! fetches the users it serves and the IPsec PSK
//! (`GET <panel_url>/api/v1/traffic/users`) and sets its WireGuard peers to
//! them. Counters are marked counted only after the panel took the report,
//! so an unreachable panel loses no traffic. The node's `outbound` grant
//! must list the panel's address. `ipsec_psk_sha256` in health is the
//! SHA-256 of the PSK the node has (never the PSK itself).
//!
//! kv: `infra/self` ([`NodeConfig`]), `infra/ipsec_psk`, `infra/last_sync`,
//! `infra/sync_next` and the WireGuard records of [`crate::wg`].

use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response, config, crypto, kv, log};

use crate::common::{self, Reply};
use crate::fail::{self, Fail, refuse};
use crate::store::node_mode::{LAST_SYNC_KEY, NodeConfig, PSK_KEY, SELF_KEY, SYNC_NEXT_KEY};
use crate::sync::{self, Periodic};
use crate::util;
use crate::wg;

/// The periodic sync.
pub const JOB_PERIODIC: &str = "vpnpanel.node_sync";
const PERIODIC: Periodic = Periodic {
    job: JOB_PERIODIC,
    next_key: SYNC_NEXT_KEY,
};
/// How long one call to the panel may take.
const PANEL_TIMEOUT_MS: u32 = 10_000;
/// Most users in one traffic report (the panel's limit).
const REPORT_CHUNK: usize = 10_000;
/// Users per page of the panel's user list: about 300 KB, well within the
/// usual outbound answer cap.
const USERS_PAGE: usize = 1000;
const DEFAULT_PROTOCOLS: &[&str] = &["openvpn", "l2tp", "cisco", "wireguard"];

pub fn handle(req: &Request) -> Response {
    common::reply(route(req))
}

fn route(req: &Request) -> Reply {
    authenticate(req)?;
    if kv::get(SELF_KEY)?.is_some() && PERIODIC.ensure(interval()).is_err() {
        log::write(
            log::Level::Warn,
            "vpnpanel node: cannot queue the periodic sync",
        );
    }
    match (req.method(), req.path().trim_end_matches('/')) {
        ("GET", "/node/health") => health(),
        ("POST", "/node/provision") => provision(req),
        ("DELETE", "/node/provision") => deprovision(),
        ("POST", "/node/sync") => {
            sync::changed();
            Ok(common::ok_with(202, json!({ "message": "Sync queued." })))
        }
        _ => Ok(common::not_found_route()),
    }
}

fn interval() -> u64 {
    config::get("sync_interval_secs")
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// A node's jobs: the sync the panel asked for, and the periodic one.
pub fn job(name: &str, payload: &[u8]) -> Result<(), String> {
    match name {
        sync::JOB_SYNC => {
            sync::started().map_err(|e| e.message)?;
            run_sync()
        }
        JOB_PERIODIC => PERIODIC.run(payload, interval(), run_sync),
        other => Err(format!("no job handler for {other:?} in node mode")),
    }
}

/// One sync, recorded for health. A failure is logged and recorded, not
/// retried: the next one starts from the same counters.
fn run_sync() -> Result<(), String> {
    let Some(c) = kv::get_json::<NodeConfig>(SELF_KEY).map_err(|e| e.message)? else {
        return Ok(());
    };
    let outcome = match c.panel_url.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(panel) => wg::exclusive(|| sync_with(&c, panel.trim_end_matches('/')))
            .map_err(|_| "see the log".to_string()),
        None => Err("the panel sent no panel_url (set its public_url setting)".to_string()),
    };
    if let Err(why) = &outcome {
        log::write(
            log::Level::Warn,
            &format!("vpnpanel node: sync failed: {why}"),
        );
    }
    kv::set_json(
        LAST_SYNC_KEY,
        &json!({ "at": util::now_secs(), "ok": outcome.is_ok() }),
    )
    .map_err(|e| e.message)?;
    Ok(())
}

/// One call to the panel with the report token: the JSON answer of a 2xx
/// with `success: true`.
fn call_panel(
    c: &NodeConfig,
    url: &str,
    method: &str,
    body: Option<&Value>,
) -> Result<Value, Fail> {
    common::call_peer(
        "panel",
        method,
        url,
        ("x-node-token", &c.report_token),
        body,
        PANEL_TIMEOUT_MS,
    )
    .map_err(|why| fail::internal(format!("node sync: {method} {url}: {why}")))
}

fn sync_with(c: &NodeConfig, panel: &str) -> Result<(), Fail> {
    let device = wg::device();
    let reading = device.as_ref().map(wg::read).transpose()?;
    if let Some(r) = &reading {
        let users: Vec<Value> = r
            .usage
            .iter()
            .map(|u| json!({ "username": u.username, "bytes": u.bytes, "connections": u32::from(u.connected) }))
            .collect();
        for chunk in users.chunks(REPORT_CHUNK) {
            call_panel(
                c,
                &format!("{panel}/api/v1/traffic/report"),
                "POST",
                Some(&json!({ "users": chunk })),
            )?;
        }
        wg::commit(r)?;
    }
    let (psk, served) = served_users(c, panel)?;
    if let Some(psk) = psk {
        kv::set(PSK_KEY, psk.as_bytes())?;
    }
    if let (Some(d), Some(r)) = (&device, &reading) {
        let wants: Vec<wg::Want> = served
            .iter()
            .filter_map(|u| {
                Some(wg::Want {
                    username: u.get("username")?.as_str()?.to_string(),
                    public_key: u.get("wg_public_key")?.as_str()?.to_string(),
                    address: u.get("wg_address")?.as_str()?.to_string(),
                })
            })
            .collect();
        wg::apply(d, &r.device, &wants)?;
    }
    Ok(())
}

/// The users the panel says this node serves, a page at a time (one page
/// of a large panel's list fits the outbound grant's answer cap where the
/// whole list would not), and the IPsec PSK.
fn served_users(c: &NodeConfig, panel: &str) -> Result<(Option<String>, Vec<Value>), Fail> {
    let mut users = Vec::new();
    let mut psk = None;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{panel}/api/v1/traffic/users?limit={USERS_PAGE}");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(&query_escape(c));
        }
        let page = call_panel(c, &url, "GET", None)?;
        if psk.is_none() {
            psk = page
                .get("ipsec_psk")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        users.extend(
            page.get("users")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        // A panel that does not page answers everything and no cursor; one
        // that hands out a cursor that does not move on would loop forever.
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if cursor.as_deref().is_none_or(|c| next > c) => {
                cursor = Some(next.to_string())
            }
            _ => return Ok((psk, users)),
        }
    }
}

/// `s` for a query string value: everything but unreserved characters and
/// `/` percent-encoded.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The panel's bearer token checked against the `node_token` setting.
fn authenticate(req: &Request) -> Result<(), Fail> {
    let expected = config::get("node_token")
        .map(|t| t.trim().to_string())
        .filter(|t| crate::nodes::valid_node_setting(t))
        .ok_or_else(|| refuse(503, "Node token is not configured."))?;
    let given = req
        .header("authorization")
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse(401, "Node token is missing"))?;
    if util::secret_eq(given, &expected) {
        Ok(())
    } else {
        Err(refuse(401, "Invalid node token"))
    }
}

fn protocols() -> Vec<String> {
    config::get("protocols")
        .and_then(|p| serde_json::from_str::<Vec<String>>(&p).ok())
        .unwrap_or_else(|| DEFAULT_PROTOCOLS.iter().map(|s| s.to_string()).collect())
}

fn ports(c: &NodeConfig) -> Vec<Value> {
    let mut ports =
        vec![json!({ "public_port": c.openvpn_port, "protocol": c.protocol, "is_default": true })];
    for p in &c.custom_ports {
        ports.push(json!({ "public_port": p.get("public_port"), "protocol": p.get("protocol"), "is_default": false }));
    }
    ports
}

fn health() -> Reply {
    let current = kv::get_json::<NodeConfig>(SELF_KEY)?;
    Ok(common::ok_with(
        200,
        json!({
            "message": "Node is online",
            "provisioned": current.is_some(),
            "node_id": current.as_ref().map(|c| c.node_id),
            "name": current.as_ref().map(|c| c.name.clone()),
            "status": if current.is_some() { "active" } else { "unprovisioned" },
            "protocols": protocols(),
            "ports": current.as_ref().map(ports).unwrap_or_default(),
            "wireguard": wg::server_info()?,
            "ipsec_psk_sha256": kv::get(PSK_KEY)?.map(|p| crypto::hex(&crypto::sha256(&p))),
            "last_sync": kv::get_json::<Value>(LAST_SYNC_KEY)?,
        }),
    ))
}

fn provision(req: &Request) -> Reply {
    let body = common::json_object(req)?;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let node_id = body
        .get("node_id")
        .and_then(Value::as_u64)
        .filter(|id| *id > 0);
    let openvpn_port = body
        .get("openvpn_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
    let protocol = text("protocol");
    let (Some(node_id), Some(openvpn_port)) = (node_id, openvpn_port) else {
        return Err(refuse(
            400,
            "Invalid provisioning request: node_id and openvpn_port are required.",
        ));
    };
    if protocol != "udp" && protocol != "tcp" {
        return Err(refuse(
            400,
            "Invalid provisioning request: protocol must be udp or tcp.",
        ));
    }
    let c = NodeConfig {
        node_id,
        server_identifier: text("server_identifier"),
        name: text("name"),
        openvpn_port,
        protocol,
        communication_method: text("communication_method"),
        sync_all_users: body
            .get("sync_all_users")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        custom_ports: body
            .get("custom_ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        report_token: text("report_token"),
        panel_url: body
            .get("panel_url")
            .and_then(Value::as_str)
            .map(str::to_string),
        provisioned_at: util::now_secs(),
    };
    kv::set_json(SELF_KEY, &c)?;
    log::write(
        log::Level::Info,
        &format!("vpnpanel node: provisioned as node {node_id} ({})", c.name),
    );
    PERIODIC.ensure(interval())?;
    // The first sync now: the panel knows this node's report token already.
    sync::changed();
    Ok(common::ok_with(
        200,
        json!({
            "message": "Node provisioned.", "status": "active", "protocols": protocols(), "ports": ports(&c),
            "wireguard": wg::server_info()?,
        }),
    ))
}

fn deprovision() -> Reply {
    kv::delete(SELF_KEY)?;
    // Nobody is served any more.
    if let Some(d) = wg::device()
        && let Ok(device) = wasmgate_sdk::wireguard::get_device(&d.name)
    {
        wg::apply(&d, &device, &[])?;
    }
    log::write(log::Level::Info, "vpnpanel node: deprovisioned");
    Ok(common::ok("Node deprovisioned."))
}
