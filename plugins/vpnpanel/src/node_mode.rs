//! The plugin running as a node (settings `mode: node`): the agent a panel
//! provisions over `outbound`. Every endpoint needs
//! `Authorization: Bearer <token>` where the token equals the setting
//! `node_token` (16 to 256 printable characters); without that setting the
//! node refuses everything (503), so a node is never an open agent (the
//! original's node agent was unauthenticated).
//!
//! | method | path below the mount | answer |
//! | --- | --- | --- |
//! | GET | `/node/health` | `{success, message: "Node is online", provisioned, node_id, name, status, protocols, ports}` |
//! | POST | `/node/provision` | stores the panel's config; `{success, message: "Node provisioned.", status: "active", protocols, ports}` |
//! | DELETE | `/node/provision` | forgets it; `{success, message: "Node deprovisioned."}` |
//!
//! `protocols` comes from the setting `protocols` (a list; default openvpn,
//! l2tp, cisco, wireguard); `ports` is the default port from the config
//! followed by the custom ports the panel assigned.
//!
//! kv: `infra/self` ([`NodeConfig`]) (a node's kv holds nothing else of
//! this plugin).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response, config, kv, log};

use crate::common::{self, Reply, refuse};

const SELF_KEY: &str = "infra/self";
const DEFAULT_PROTOCOLS: &[&str] = &["openvpn", "l2tp", "cisco", "wireguard"];

/// What the panel told this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_id: u64,
    pub server_identifier: String,
    pub name: String,
    pub openvpn_port: u16,
    pub protocol: String,
    pub communication_method: String,
    pub sync_all_users: bool,
    /// `[{port_id, public_port, protocol}]`.
    pub custom_ports: Vec<Value>,
    /// What to send as `X-NODE-TOKEN` to the panel's traffic report.
    #[serde(default)]
    pub report_token: String,
    /// The panel's public URL, when the panel has one set.
    #[serde(default)]
    pub panel_url: Option<String>,
    /// Unix seconds.
    pub provisioned_at: u64,
}

pub fn handle(req: &Request) -> Response {
    common::reply(route(req))
}

fn route(req: &Request) -> Reply {
    authenticate(req)?;
    match (req.method(), req.path().trim_end_matches('/')) {
        ("GET", "/node/health") => health(),
        ("POST", "/node/provision") => provision(req),
        ("DELETE", "/node/provision") => deprovision(),
        _ => Ok(common::not_found_route()),
    }
}

/// The panel's bearer token checked against the `node_token` setting.
fn authenticate(req: &Request) -> Result<(), common::Fail> {
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
    if common::secret_eq(given, &expected) {
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
    let mut ports = vec![json!({ "public_port": c.openvpn_port, "protocol": c.protocol, "is_default": true })];
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
        }),
    ))
}

fn provision(req: &Request) -> Reply {
    let body = common::json_object(req)?;
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let node_id = body.get("node_id").and_then(Value::as_u64).filter(|id| *id > 0);
    let openvpn_port = body
        .get("openvpn_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
    let protocol = text("protocol");
    let (Some(node_id), Some(openvpn_port)) = (node_id, openvpn_port) else {
        return Err(refuse(400, "Invalid provisioning request: node_id and openvpn_port are required."));
    };
    if protocol != "udp" && protocol != "tcp" {
        return Err(refuse(400, "Invalid provisioning request: protocol must be udp or tcp."));
    }
    let c = NodeConfig {
        node_id,
        server_identifier: text("server_identifier"),
        name: text("name"),
        openvpn_port,
        protocol,
        communication_method: text("communication_method"),
        sync_all_users: body.get("sync_all_users").and_then(Value::as_bool).unwrap_or(false),
        custom_ports: body.get("custom_ports").and_then(Value::as_array).cloned().unwrap_or_default(),
        report_token: text("report_token"),
        panel_url: body.get("panel_url").and_then(Value::as_str).map(str::to_string),
        provisioned_at: common::now_secs(),
    };
    kv::set_json(SELF_KEY, &c)?;
    log::write(log::Level::Info, &format!("vpnpanel node: provisioned as node {node_id} ({})", c.name));
    Ok(common::ok_with(
        200,
        json!({ "message": "Node provisioned.", "status": "active", "protocols": protocols(), "ports": ports(&c) }),
    ))
}

fn deprovision() -> Reply {
    kv::delete(SELF_KEY)?;
    log::write(log::Level::Info, "vpnpanel node: deprovisioned");
    Ok(common::ok("Node deprovisioned."))
}
