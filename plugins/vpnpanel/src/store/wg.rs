//! WireGuard's records: this server's key pair (`wg/server`), the peers'
//! counted traffic (`wg/seen`), the sync lock (`wg/lock`), the next client
//! address to try (`meta/wg_next`) and the user of each address in use
//! (`wgaddr/<ip>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SERVER_KEY: &str = "wg/server";
pub const SEEN_KEY: &str = "wg/seen";
pub const LOCK_KEY: &str = "wg/lock";
pub const NEXT_ADDR_KEY: &str = "meta/wg_next";

/// This server's key pair.
#[derive(Serialize, Deserialize, Clone)]
pub struct ServerKey {
    pub private_key: String,
    pub public_key: String,
}

/// Per peer: its user and the counter total already counted.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub peers: BTreeMap<String, (String, u64)>,
}

/// The kv key that holds the user of address `ip`.
pub fn addr_key(ip: &str) -> String {
    format!("wgaddr/{ip}")
}
