//! The servers users connect to: the main one (this panel, from the
//! settings) and every active node, with the OpenVPN endpoints and the
//! WireGuard of each.

use std::collections::BTreeMap;

use serde_json::Value;
use wasmgate_sdk::{config, kv};

use crate::domain::wg;
use crate::fail::Fail;
use crate::store::{self, users::User};

/// One OpenVPN endpoint a user may connect to.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `main_udp`, `node_1_tcp_443`: the profile's file name without `.ovpn`.
    pub name: String,
    /// `main` or `node_<id>`.
    pub server: String,
    pub server_name: String,
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
}

/// A server: the main one or an active node.
#[derive(Clone, Debug)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: String,
    /// Its WireGuard public key and port, when it runs WireGuard.
    pub wireguard: Option<(String, u16)>,
}

fn proto(s: Option<&str>) -> String {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => "tcp".into(),
        _ => "udp".into(),
    }
}

/// The main server and every node whose status is `active`.
pub fn servers() -> Result<Vec<Server>, Fail> {
    let mut out = vec![Server {
        id: "main".into(),
        name: "Main Server".into(),
        host: config::get("server_address").unwrap_or_else(|| "127.0.0.1".into()),
        port: config::get("openvpn_port")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(1194),
        protocol: proto(config::get("openvpn_protocol").as_deref()),
        wireguard: wireguard_of(&wg::server_info()?),
    }];
    for (_, node) in kv::list_json::<Value>(store::nodes::REC_PREFIX)? {
        if node.get("status").and_then(Value::as_str) != Some("active") {
            continue;
        }
        let (Some(id), Some(host)) = (
            node.get("id").and_then(Value::as_u64),
            node.get("ip_address").and_then(Value::as_str),
        ) else {
            continue;
        };
        out.push(Server {
            id: format!("node_{id}"),
            name: format!(
                "Node: {}",
                node.get("name").and_then(Value::as_str).unwrap_or("")
            ),
            host: host.to_string(),
            port: node
                .get("openvpn_port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(1194),
            protocol: proto(node.get("protocol").and_then(Value::as_str)),
            wireguard: node.get("wireguard").and_then(wireguard_of),
        });
    }
    Ok(out)
}

/// `{public_key, port}` as a server reports its WireGuard.
fn wireguard_of(v: &Value) -> Option<(String, u16)> {
    let key = v.get("public_key")?.as_str()?.to_string();
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some((key, port))
}

/// The OpenVPN endpoints of `user`: the default port of every server it may
/// use, then the custom ports assigned to those servers.
pub fn endpoints(user: &User) -> Result<Vec<Endpoint>, Fail> {
    let servers: Vec<Server> = servers()?
        .into_iter()
        .filter(|s| user.may_use(&s.id))
        .collect();
    let mut out: Vec<Endpoint> = servers
        .iter()
        .map(|s| Endpoint {
            name: format!("{}_{}", s.id, s.protocol),
            server: s.id.clone(),
            server_name: s.name.clone(),
            host: s.host.clone(),
            port: s.port,
            protocol: s.protocol.clone(),
        })
        .collect();
    let ports: BTreeMap<String, Value> = kv::list_json::<Value>(store::ports::REC_PREFIX)?
        .into_iter()
        .collect();
    for (key, _) in kv::list(store::ports::ASSIGN_PREFIX)? {
        let mut parts = key
            .trim_start_matches(store::ports::ASSIGN_PREFIX)
            .splitn(2, '/');
        let (Some(port_id), Some(server_id)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(server) = servers.iter().find(|s| s.id == server_id) else {
            continue;
        };
        let Some(port) = ports.get(&format!("{}{port_id}", store::ports::REC_PREFIX)) else {
            continue;
        };
        let Some(public_port) = port
            .get("public_port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        let protocol = proto(port.get("protocol").and_then(Value::as_str));
        let name = format!("{}_{}_{}", server.id, protocol, public_port);
        if out
            .iter()
            .any(|e| e.server == server.id && e.port == public_port && e.protocol == protocol)
        {
            continue;
        }
        out.push(Endpoint {
            name,
            server: server.id.clone(),
            server_name: server.name.clone(),
            host: server.host.clone(),
            port: public_port,
            protocol,
        });
    }
    Ok(out)
}

/// The servers a user's WireGuard can reach: those it may use that run
/// WireGuard.
pub fn wireguard_servers(u: &User) -> Result<Vec<Server>, Fail> {
    Ok(servers()?
        .into_iter()
        .filter(|s| s.wireguard.is_some() && u.may_use(&s.id))
        .collect())
}
