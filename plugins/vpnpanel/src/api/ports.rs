//! Public ports and the server lists: `public/ports` (list, create with
//! assignments, delete an assignment), `public/servers_for_ports` and
//! `public/all_selectable_servers`. All main-admin only, with the message
//! the seed shows per route; what a change does is
//! [`crate::domain::ports`].

use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response};

use crate::api::auth;
use crate::api::envelope::{self, Reply};
use crate::domain::caller::Caller;
use crate::domain::ports::{self, MAIN_NAME, live_nodes, main_default};
use crate::fail::refuse;
use crate::store::nodes::{MAIN_ID, Node};
use crate::store::ports::{all_assignments, all_ports};

pub const MSG_MISSING_INFO: &str = "Missing info.";

pub fn handle(req: &Request, caller: &Caller) -> Response {
    envelope::reply(route(req, caller))
}

fn route(req: &Request, caller: &Caller) -> Reply {
    match (req.method(), req.path().trim_end_matches('/')) {
        ("GET", "/public/ports") => {
            auth::require_main(caller)?;
            list(req)
        }
        ("POST", "/public/ports") => {
            auth::require_main_short(caller)?;
            create(req)
        }
        ("DELETE", "/public/ports/assignment") => {
            auth::require_main_short(caller)?;
            delete_assignment(req)
        }
        ("GET", "/public/servers_for_ports" | "/public/all_selectable_servers") => {
            auth::require_main(caller)?;
            servers(req)
        }
        _ => Ok(envelope::not_found_route()),
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
    let page = envelope::paging(req)?;
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
        return Ok(envelope::ok_with(
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
    let (all, start) = envelope::window(all, &page)?;
    let body = envelope::fitting(all.len(), |k| {
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
    let page = envelope::paging(req)?;
    let mut servers = vec![json!({ "id": MAIN_ID, "name": MAIN_NAME })];
    for n in live_nodes()? {
        servers.push(json!({ "id": n.identifier(), "name": n.server_name(), "status": n.status }));
    }
    envelope::list_answer(page.as_ref(), "servers", servers, serde_json::Map::new())
}

fn create(req: &Request) -> Reply {
    let body = envelope::json_object_or_empty(req).map_err(|_| refuse(400, MSG_MISSING_INFO))?;
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
    ports::configure(public_port, protocol, servers)?;
    Ok(envelope::ok("Port configured on selected servers."))
}

fn delete_assignment(req: &Request) -> Reply {
    let body = envelope::json_object_or_empty(req).map_err(|_| refuse(400, MSG_MISSING_INFO))?;
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
    ports::unassign(port_id, server)?;
    Ok(envelope::ok("Port assignment deleted."))
}
