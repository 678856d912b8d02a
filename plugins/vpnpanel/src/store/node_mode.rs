//! What a node (settings `mode: node`) keeps about itself: the panel's
//! config (`infra/self`, [`NodeConfig`]), the IPsec PSK the panel sent
//! (`infra/ipsec_psk`), the outcome of the last sync (`infra/last_sync`)
//! and the due time of its periodic sync (`infra/sync_next`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SELF_KEY: &str = "infra/self";
pub const PSK_KEY: &str = "infra/ipsec_psk";
pub const LAST_SYNC_KEY: &str = "infra/last_sync";
pub const SYNC_NEXT_KEY: &str = "infra/sync_next";

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
