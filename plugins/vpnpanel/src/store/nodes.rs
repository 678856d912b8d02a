//! Nodes as kv keeps them: `infra/seq/node` (the last id), `node/<id:010>`
//! ([`Node`]), `infra/node_addr/<ip>:<api_port>` (the id of the node at that
//! address); and the server identifiers (`main`, `node_<id>`) that ports and
//! users name servers by.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmgate_sdk::{Error, kv};

/// The server identifier of the panel's own server.
pub const MAIN_ID: &str = "main";

pub const STATUS_INSTALLING: &str = "installing";

pub const STATUS_ACTIVE: &str = "active";

pub const STATUS_FAILED: &str = "failed";

pub const STATUS_DELETING: &str = "deleting";

pub const STATUS_DELETE_FAILED: &str = "delete_failed";

/// One node as kv keeps it at `node/<id:010>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    pub id: u64,
    pub name: String,
    /// The node's address as clients and the panel reach it (IPv4, IPv6 or
    /// a host name, no port).
    pub ip_address: String,
    /// The port of the node's wasmgate API listener.
    pub api_port: u16,
    /// `http` or `https`.
    pub api_scheme: String,
    /// The secret the node's `node_token` setting holds (the seed's
    /// `ssh_password`). Never sent in an answer.
    pub node_token: String,
    /// The secret the node sends as `X-NODE-TOKEN` when it reports traffic
    /// to the panel; made at creation and handed to the node when it is
    /// provisioned. Never sent in an answer.
    pub report_token: String,
    /// The node's default OpenVPN port and protocol (`udp` or `tcp`).
    pub openvpn_port: u16,
    pub protocol: String,
    /// `direct` or `wireguard`: how the node talks back to the panel.
    pub communication_method: String,
    pub sync_all_users: bool,
    /// installing, active, failed, deleting, delete_failed.
    pub status: String,
    /// Why the last provisioning or deletion failed; empty otherwise.
    pub status_message: String,
    /// What the node said it serves, from its provisioning answer.
    pub protocols: Vec<String>,
    /// `[{public_port, protocol, is_default}]` from the node's answer.
    pub ports: Vec<Value>,
    /// `{public_key, port}` of the node's WireGuard, from its answer; null
    /// when it runs none.
    #[serde(default)]
    pub wireguard: Value,
    /// Aggregated traffic the node reported, in bytes ([`crate::domain::nodes::add_traffic`]).
    pub total_traffic_bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
    /// Bumped on every provisioning request, so that a job queued for an
    /// older config does nothing.
    pub generation: u64,
}

impl Node {
    /// `node_<id>`: the server identifier ports and users' `nodes` use.
    pub fn identifier(&self) -> String {
        identifier(self.id)
    }

    /// "Node: <name>", as servers_for_ports shows it.
    pub fn server_name(&self) -> String {
        format!("Node: {}", self.name)
    }

    /// The node API's base URL, e.g. `http://1.2.3.4:8000/api/v1`.
    pub fn api_base(&self) -> String {
        let host = if self.ip_address.contains(':') {
            format!("[{}]", self.ip_address)
        } else {
            self.ip_address.clone()
        };
        format!("{}://{host}:{}/api/v1", self.api_scheme, self.api_port)
    }
}

pub fn identifier(id: u64) -> String {
    format!("node_{id}")
}

/// The id in a `node_<id>` server identifier.
pub fn parse_identifier(s: &str) -> Option<u64> {
    s.strip_prefix("node_")?.parse().ok().filter(|id| *id > 0)
}

pub fn rec_key(id: u64) -> String {
    format!("node/{id:010}")
}

pub const SEQ_KEY: &str = "infra/seq/node";

/// `infra/node_addr/<ip lower-case>:<api_port>` → the node id: one node per
/// address, checked inside the transactions that create or move a node.
pub fn addr_key(ip: &str, api_port: u16) -> String {
    format!("infra/node_addr/{}:{api_port}", ip.to_ascii_lowercase())
}

pub const REC_PREFIX: &str = "node/";

/// Every node, by id.
pub fn list_nodes() -> Result<Vec<Node>, Error> {
    Ok(kv::list_json::<Node>(REC_PREFIX)?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

/// Node `id` as `txn` sees it.
pub fn node_in(txn: &kv::Txn, id: u64) -> Result<Option<Node>, Error> {
    txn.get_json(&rec_key(id))
}

pub fn get_node(id: u64) -> Result<Option<Node>, Error> {
    kv::get_json(&rec_key(id))
}
