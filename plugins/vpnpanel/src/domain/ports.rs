//! Custom ports and where they are served.
//!
//! A server is `main` (this panel; its default port is the settings
//! `openvpn_port`, default 1194, and `openvpn_protocol`, default udp) or
//! `node_<id>` (its default port is the node's `openvpn_port`/`protocol`).
//! A custom port is a (public_port, protocol) pair; assignments put it on
//! servers. A change to a node's assignments re-provisions that node.
//!
//! The records are [`crate::store::ports`]; the routes and lists
//! [`crate::api::ports`].
//!
//! Every server a port is put on is read in the transaction that writes
//! the assignment: a node being deleted is refused, and a deletion that
//! starts meanwhile makes the transaction run again and refuse it, so the
//! deletion (which removes the node's assignments after it started) never
//! leaves one behind.

use serde::Serialize;
use wasmgate_sdk::{Error, config, kv};

use crate::domain::nodes;
use crate::fail::{Fail, refuse};
use crate::store;
use crate::store::nodes::{MAIN_ID, Node, STATUS_ACTIVE, STATUS_DELETING};
use crate::store::nodes::{list_nodes, node_in, parse_identifier};
use crate::store::ports::{
    Assignment, Port, SEQ_KEY, all_assignments, all_ports, assign_key, by_key, drop_unassigned,
    rec_key, rev_key,
};
use crate::util;

pub const MAIN_NAME: &str = "Main Server";

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
pub fn live_nodes() -> Result<Vec<Node>, Error> {
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

/// Puts custom port `public_port`/`protocol` (made when it is new) on
/// each of `servers`, which must exist and not be being deleted, and
/// re-provisions the nodes that got it.
pub fn configure(public_port: u16, protocol: String, servers: Vec<String>) -> Result<(), Fail> {
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
    Ok(())
}

/// Takes custom port `port_id` off `server`; the port goes when no server
/// has it any more.
pub fn unassign(port_id: u64, server: &str) -> Result<(), Fail> {
    let key = assign_key(port_id, server);
    if !kv::delete(&key)? {
        return Err(refuse(404, "Port assignment not found."));
    }
    drop_unassigned()?;
    resync(&[server.to_string()])?;
    Ok(())
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
