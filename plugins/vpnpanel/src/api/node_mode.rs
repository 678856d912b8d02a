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
//! [`crate::domain::wg`]), else null.
//!
//! What the node does is [`crate::domain::node_mode`].

use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response, config, crypto, kv};

use crate::api::envelope::{self, Reply};
use crate::domain::{node_mode, nodes, sync, wg};
use crate::fail::{Fail, refuse};
use crate::store::node_mode::{LAST_SYNC_KEY, NodeConfig, PSK_KEY, SELF_KEY};
use crate::util;

const DEFAULT_PROTOCOLS: &[&str] = &["openvpn", "l2tp", "cisco", "wireguard"];

pub fn handle(req: &Request) -> Response {
    envelope::reply(route(req))
}

fn route(req: &Request) -> Reply {
    authenticate(req)?;
    node_mode::keep_periodic()?;
    match (req.method(), req.path().trim_end_matches('/')) {
        ("GET", "/node/health") => health(),
        ("POST", "/node/provision") => provision(req),
        ("DELETE", "/node/provision") => deprovision(),
        ("POST", "/node/sync") => {
            sync::changed();
            Ok(envelope::ok_with(202, json!({ "message": "Sync queued." })))
        }
        _ => Ok(envelope::not_found_route()),
    }
}

/// The panel's bearer token checked against the `node_token` setting.
fn authenticate(req: &Request) -> Result<(), Fail> {
    let expected = config::get("node_token")
        .map(|t| t.trim().to_string())
        .filter(|t| nodes::valid_node_setting(t))
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
    Ok(envelope::ok_with(
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
    let body = envelope::json_object(req)?;
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
    node_mode::provision(&c)?;
    Ok(envelope::ok_with(
        200,
        json!({
            "message": "Node provisioned.", "status": "active", "protocols": protocols(), "ports": ports(&c),
            "wireguard": wg::server_info()?,
        }),
    ))
}

fn deprovision() -> Reply {
    node_mode::deprovision()?;
    Ok(envelope::ok("Node deprovisioned."))
}
