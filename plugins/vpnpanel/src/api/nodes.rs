//! `/nodes...`: routing, the path's id and the answers (the main admin's
//! view of a node, and a sub-admin's: `id`, `name`, `status` of the nodes in
//! its `allowed_servers`). Every write is main-admin only; what it does is
//! [`crate::domain::nodes`].

use serde_json::{Map, Value, json};
use wasmgate_sdk::{Request, Response};

use crate::api::auth;
use crate::api::envelope::{self, Reply};
use crate::domain::caller::Caller;
use crate::domain::nodes::{self, MSG_NODE_NOT_FOUND};
use crate::fail::refuse;
use crate::store;
use crate::store::nodes::{Node, get_node, list_nodes};

pub fn handle(req: &Request, caller: &Caller) -> Response {
    envelope::reply(route(req, caller))
}

fn route(req: &Request, caller: &Caller) -> Reply {
    let path = req.path().trim_end_matches('/');
    let rest = path.strip_prefix("/nodes").unwrap_or("");
    match (req.method(), rest.strip_prefix('/')) {
        ("GET", None) => list(req, caller),
        ("POST", None) => create(req, caller),
        (method @ ("GET" | "PUT" | "DELETE"), Some(segment)) if !segment.contains('/') => {
            auth::require_main(caller)?;
            // A path id that is not a number names no node.
            let id = segment
                .parse::<u64>()
                .map_err(|_| refuse(404, MSG_NODE_NOT_FOUND))?;
            match method {
                "GET" => show(id),
                "PUT" => update(req, id),
                _ => delete(id),
            }
        }
        _ => Ok(envelope::not_found_route()),
    }
}

fn list(req: &Request, caller: &Caller) -> Reply {
    let page = envelope::paging(req)?;
    let nodes = list_nodes()?;
    let views: Vec<Value> = match caller {
        Caller::Main => nodes.iter().map(full_view).collect(),
        Caller::Sub { id } => {
            // A sub-admin limited to some servers sees only those; one
            // without `allowed_servers` may use (and see) every node.
            let allowed = store::users::load_sub_admin(*id)?
                .map(|sa| sa.allowed_servers)
                .unwrap_or_default();
            nodes
                .iter()
                .filter(|n| allowed.is_empty() || allowed.contains(&n.identifier()))
                .map(sub_view)
                .collect()
        }
    };
    envelope::list_answer(page.as_ref(), "nodes", views, Map::new())
}

fn show(id: u64) -> Reply {
    let node = get_node(id)?.ok_or_else(|| refuse(404, MSG_NODE_NOT_FOUND))?;
    Ok(envelope::ok_with(200, json!({ "node": full_view(&node) })))
}

/// The main admin's view.
fn full_view(n: &Node) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "ip_address": n.ip_address,
        "status": n.status,
        "total_traffic_bytes": n.total_traffic_bytes,
        "server_identifier": n.identifier(),
        "api_port": n.api_port,
        "api_scheme": n.api_scheme,
        "openvpn_port": n.openvpn_port,
        "protocol": n.protocol,
        "communication_method": n.communication_method,
        "sync_all_users": n.sync_all_users,
        "status_message": n.status_message,
        "protocols": n.protocols,
        "ports": n.ports,
        "wireguard": n.wireguard,
        "created_at": n.created_at,
        "updated_at": n.updated_at,
    })
}

/// A sub-admin's view: the seed shows `id`, `name`, `status` only.
fn sub_view(n: &Node) -> Value {
    json!({ "id": n.id, "name": n.name, "status": n.status })
}

fn create(req: &Request, caller: &Caller) -> Reply {
    auth::require_main(caller)?;
    let body = envelope::json_object_or_empty(req)?;
    let id = nodes::create(&body)?;
    Ok(envelope::ok_with(
        202,
        json!({ "message": "Node created and installation started in background.", "node_id": id }),
    ))
}

fn update(req: &Request, id: u64) -> Reply {
    let body = envelope::json_object(req)?;
    nodes::update(id, &body)?;
    Ok(envelope::ok(
        "Node updated. Sync triggered only for changed services.",
    ))
}

fn delete(id: u64) -> Reply {
    nodes::delete(id)?;
    Ok(envelope::ok("Deletion started"))
}
