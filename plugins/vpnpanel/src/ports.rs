//! Public ports and the server lists: `public/ports` (list, create with
//! assignments, delete an assignment), `public/servers_for_ports` and
//! `public/all_selectable_servers`. All main-admin only, with the message
//! the seed shows per route.
//!
//! A server is `main` (this panel; its default port is the settings
//! `openvpn_port`, default 1194, and `openvpn_protocol`, default udp) or
//! `node_<id>` (its default port is the node's `openvpn_port`/`protocol`).
//! A custom port is a (public_port, protocol) pair; assignments put it on
//! servers. A change to a node's assignments re-provisions that node.
//!
//! kv: `infra/seq/port` (the last id), `port/<port_id:010>` ([`Port`]),
//! `infra/port_by/<protocol>/<public_port:05>` (the port id),
//! `assign/<port_id:010>/<server_identifier>` ([`Assignment`]),
//! `infra/port_rev/<port_id:010>` (a number every new assignment of the
//! port changes, so that [`drop_unassigned`] cannot miss one).
//!
//! Every server a port is put on is read in the transaction that writes
//! the assignment: a node being deleted is refused, and a deletion that
//! starts meanwhile makes the transaction run again and refuse it, so the
//! deletion (which removes the node's assignments after it started) never
//! leaves one behind.

use serde::Serialize;
use serde_json::{Value, json};
use wasmgate_sdk::{Error, Request, Response, config, kv};

use crate::common::{self, Caller, Reply};
use crate::fail::refuse;
use crate::nodes;
use crate::store;
use crate::store::nodes::{MAIN_ID, Node, STATUS_ACTIVE, STATUS_DELETING};
use crate::store::nodes::{list_nodes, node_in, parse_identifier};
use crate::store::ports::{
    Assignment, Port, SEQ_KEY, all_assignments, all_ports, assign_key, by_key, drop_unassigned,
    rec_key, rev_key,
};
use crate::util;

pub const MAIN_NAME: &str = "Main Server";
pub const MSG_MISSING_INFO: &str = "Missing info.";

/// Where a client can connect: one line of an .ovpn's `remote` list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Remote {
    /// `main` or `node_<id>`.
    pub server_identifier: String,
    /// "Main Server" or "Node: <name>".
    pub server_name: String,
    /// The node's `ip_address`; None for `main` (use the panel's public host).
    pub host: Option<String>,
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// The server's default port rather than a custom one.
    pub is_default: bool,
}

/// The main server's default port and protocol, from the settings.
pub fn main_default() -> (u16, String) {
    let port = config::get("openvpn_port")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1194);
    let protocol = config::get("openvpn_protocol")
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| p == "udp" || p == "tcp")
        .unwrap_or_else(|| "udp".into());
    (port, protocol)
}

/// Nodes a port can be put on: every node not being deleted.
fn live_nodes() -> Result<Vec<Node>, Error> {
    Ok(list_nodes()?
        .into_iter()
        .filter(|n| n.status != STATUS_DELETING)
        .collect())
}

/// Every place a client can connect to: the main server's default port,
/// then each active node's default port, then the custom ports, for the
/// servers in `allowed` (None: all). For .ovpn `remote` lines and
/// subscriptions.
pub fn remotes(allowed: Option<&[String]>) -> Result<Vec<Remote>, Error> {
    let wanted = |id: &str| allowed.is_none_or(|a| a.iter().any(|x| x == id));
    let active: Vec<Node> = list_nodes()?
        .into_iter()
        .filter(|n| n.status == STATUS_ACTIVE)
        .collect();
    let mut out = Vec::new();
    if wanted(MAIN_ID) {
        let (port, protocol) = main_default();
        out.push(Remote {
            server_identifier: MAIN_ID.into(),
            server_name: MAIN_NAME.into(),
            host: None,
            port,
            protocol,
            is_default: true,
        });
    }
    for n in active.iter().filter(|n| wanted(&n.identifier())) {
        out.push(Remote {
            server_identifier: n.identifier(),
            server_name: n.server_name(),
            host: Some(n.ip_address.clone()),
            port: n.openvpn_port,
            protocol: n.protocol.clone(),
            is_default: true,
        });
    }
    let ports = all_ports()?;
    for a in all_assignments()? {
        if !wanted(&a.server_identifier) {
            continue;
        }
        let Some(p) = ports.iter().find(|p| p.port_id == a.port_id) else {
            continue;
        };
        let (name, host) = if a.server_identifier == MAIN_ID {
            (MAIN_NAME.to_string(), None)
        } else {
            match active
                .iter()
                .find(|n| n.identifier() == a.server_identifier)
            {
                Some(n) => (n.server_name(), Some(n.ip_address.clone())),
                None => continue,
            }
        };
        out.push(Remote {
            server_identifier: a.server_identifier.clone(),
            server_name: name,
            host,
            port: p.public_port,
            protocol: p.protocol.clone(),
            is_default: false,
        });
    }
    Ok(out)
}

pub fn handle(req: &Request, caller: &Caller) -> Response {
    common::reply(route(req, caller))
}

fn route(req: &Request, caller: &Caller) -> Reply {
    match (req.method(), req.path().trim_end_matches('/')) {
        ("GET", "/public/ports") => {
            common::require_main(caller)?;
            list(req)
        }
        ("POST", "/public/ports") => {
            common::require_main_short(caller)?;
            create(req)
        }
        ("DELETE", "/public/ports/assignment") => {
            common::require_main_short(caller)?;
            delete_assignment(req)
        }
        ("GET", "/public/servers_for_ports" | "/public/all_selectable_servers") => {
            common::require_main(caller)?;
            servers(req)
        }
        _ => Ok(common::not_found_route()),
    }
}

fn server_name(server: &str, nodes: &[Node]) -> String {
    if server == MAIN_ID {
        return MAIN_NAME.into();
    }
    nodes
        .iter()
        .find(|n| n.identifier() == server)
        .map(Node::server_name)
        .unwrap_or_else(|| server.to_string())
}

fn list(req: &Request) -> Reply {
    let page = common::paging(req)?;
    let nodes = live_nodes()?;
    let (port, protocol) = main_default();
    let mut defaults = vec![json!({
        "is_default": true,
        "name": MAIN_NAME,
        "server_identifier": MAIN_ID,
        "public_port": port,
        "protocol": protocol,
    })];
    for n in &nodes {
        defaults.push(json!({
            "is_default": true,
            "name": n.server_name(),
            "server_identifier": n.identifier(),
            "public_port": n.openvpn_port,
            "protocol": n.protocol,
        }));
    }
    let ports = all_ports()?;
    let custom: Vec<Value> = all_assignments()?
        .into_iter()
        .filter_map(|a| {
            let p = ports.iter().find(|p| p.port_id == a.port_id)?;
            Some(json!({
                "port_id": p.port_id,
                "server_identifier": a.server_identifier,
                "public_port": p.public_port,
                "protocol": p.protocol,
                "server_name": server_name(&a.server_identifier, &nodes),
            }))
        })
        .collect();
    let Some(page) = page else {
        return Ok(common::ok_with(
            200,
            json!({ "default_ports": defaults, "custom_ports": custom }),
        ));
    };
    // Pages run through the default ports, then the custom ones; a page
    // has both fields, either of them possibly empty.
    let all: Vec<(bool, Value)> = defaults
        .into_iter()
        .map(|d| (false, d))
        .chain(custom.into_iter().map(|c| (true, c)))
        .collect();
    let total = all.len();
    let (all, start) = common::window(all, &page)?;
    let body = common::fitting(all.len(), |k| {
        let pick = |custom: bool| {
            all[..k]
                .iter()
                .filter(|(c, _)| *c == custom)
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        let next = (start + k < total).then(|| (start + k).to_string());
        json!({ "success": true, "default_ports": pick(false), "custom_ports": pick(true), "next_cursor": next })
            .to_string()
            .into_bytes()
    });
    Ok(Response::bytes(200, "application/json", body))
}

fn servers(req: &Request) -> Reply {
    let page = common::paging(req)?;
    let mut servers = vec![json!({ "id": MAIN_ID, "name": MAIN_NAME })];
    for n in live_nodes()? {
        servers.push(json!({ "id": n.identifier(), "name": n.server_name(), "status": n.status }));
    }
    common::list_answer(page.as_ref(), "servers", servers, serde_json::Map::new())
}

fn create(req: &Request) -> Reply {
    let body = common::json_object_or_empty(req).map_err(|_| refuse(400, MSG_MISSING_INFO))?;
    let port = body.get("public_port").filter(|v| !v.is_null());
    let protocol = body.get("protocol").filter(|v| !v.is_null());
    let ids = body.get("server_ids").and_then(Value::as_array);
    let (Some(port), Some(protocol), Some(ids)) = (port, protocol, ids) else {
        return Err(refuse(400, MSG_MISSING_INFO));
    };
    if ids.is_empty() {
        return Err(refuse(400, MSG_MISSING_INFO));
    }
    let public_port = port
        .as_u64()
        .or_else(|| port.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| refuse(400, "Invalid public_port. Use a port from 1 to 65535."))?;
    let protocol = protocol
        .as_str()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| s == "tcp" || s == "udp")
        .ok_or_else(|| refuse(400, "Invalid protocol. Use tcp or udp."))?;
    let mut servers: Vec<String> = Vec::new();
    for id in ids {
        let id = id.as_str().map(str::trim).unwrap_or_default();
        if !servers.iter().any(|s| s == id) {
            servers.push(id.to_string());
        }
    }
    let now = util::now_secs();
    let added: Vec<String> = store::transaction(|txn| {
        // Each server is read here, so a deletion that starts before the
        // commit makes it run again (and refuse).
        for server in &servers {
            if !is_live_in(txn, server)? {
                return Err(refuse(400, &format!("Unknown server: {server}")));
            }
        }
        let port_id = match txn.get_json::<u64>(&by_key(&protocol, public_port))? {
            Some(id) => id,
            None => {
                let id = txn.get_json::<u64>(SEQ_KEY)?.unwrap_or(0) + 1;
                txn.set_json(SEQ_KEY, &id)?;
                txn.set_json(&by_key(&protocol, public_port), &id)?;
                txn.set_json(
                    &rec_key(id),
                    &Port {
                        port_id: id,
                        public_port,
                        protocol: protocol.clone(),
                        created_at: now,
                    },
                )?;
                id
            }
        };
        let mut added = Vec::new();
        for server in &servers {
            let key = assign_key(port_id, server);
            if txn.get(&key)?.is_none() {
                txn.set_json(
                    &key,
                    &Assignment {
                        port_id,
                        server_identifier: server.clone(),
                        created_at: now,
                    },
                )?;
                added.push(server.clone());
            }
        }
        if !added.is_empty() {
            let rev = txn.get_json::<u64>(&rev_key(port_id))?.unwrap_or(0);
            txn.set_json(&rev_key(port_id), &(rev + 1))?;
        }
        Ok(added)
    })?;
    resync(&added)?;
    Ok(common::ok("Port configured on selected servers."))
}

fn delete_assignment(req: &Request) -> Reply {
    let body = common::json_object_or_empty(req).map_err(|_| refuse(400, MSG_MISSING_INFO))?;
    let port_id = body.get("port_id").and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    let server = body
        .get("server_identifier")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (Some(port_id), Some(server)) = (port_id, server) else {
        return Err(refuse(400, MSG_MISSING_INFO));
    };
    let key = assign_key(port_id, server);
    if !kv::delete(&key)? {
        return Err(refuse(404, "Port assignment not found."));
    }
    drop_unassigned()?;
    resync(&[server.to_string()])?;
    Ok(common::ok("Port assignment deleted."))
}

/// Whether a port can be put on `server` (`main` or `node_<id>`) as `txn`
/// sees it: the main server, or a node that is not being deleted (the
/// nodes [`live_nodes`] lists).
fn is_live_in(txn: &kv::Txn, server: &str) -> Result<bool, Error> {
    if server == MAIN_ID {
        return Ok(true);
    }
    let Some(id) = parse_identifier(server) else {
        return Ok(false);
    };
    Ok(node_in(txn, id)?.is_some_and(|n| n.identifier() == server && n.status != STATUS_DELETING))
}

/// Re-provisions the nodes among `servers` so they serve their new ports.
fn resync(servers: &[String]) -> Result<(), Error> {
    for id in servers.iter().filter_map(|s| parse_identifier(s)) {
        nodes::resync(id)?;
    }
    Ok(())
}
