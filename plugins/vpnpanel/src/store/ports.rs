//! Custom ports as kv keeps them: `infra/seq/port` (the last id),
//! `port/<port_id:010>` ([`Port`]), `infra/port_by/<protocol>/<public_port:05>`
//! (the port id), `assign/<port_id:010>/<server_identifier>`
//! ([`Assignment`]), `infra/port_rev/<port_id:010>` (a number every new
//! assignment of the port changes, so that [`drop_unassigned`] cannot miss
//! one).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmgate_sdk::{Error, kv};

/// A custom public port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Port {
    pub port_id: u64,
    pub public_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A custom port on one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    pub port_id: u64,
    /// `main` or `node_<id>`.
    pub server_identifier: String,
    pub created_at: u64,
}

pub const REC_PREFIX: &str = "port/";
pub const ASSIGN_PREFIX: &str = "assign/";
pub const SEQ_KEY: &str = "infra/seq/port";

pub fn rec_key(id: u64) -> String {
    format!("port/{id:010}")
}

pub fn by_key(protocol: &str, port: u16) -> String {
    format!("infra/port_by/{protocol}/{port:05}")
}

pub fn assign_key(port_id: u64, server: &str) -> String {
    format!("assign/{port_id:010}/{server}")
}

pub fn rev_key(port_id: u64) -> String {
    format!("infra/port_rev/{port_id:010}")
}

pub fn all_ports() -> Result<Vec<Port>, Error> {
    Ok(kv::list_json::<Port>(REC_PREFIX)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

pub fn all_assignments() -> Result<Vec<Assignment>, Error> {
    Ok(kv::list_json::<Assignment>(ASSIGN_PREFIX)?
        .into_iter()
        .map(|(_, a)| a)
        .collect())
}

/// The custom ports on `server` (`main` or `node_<id>`), as
/// `[{port_id, public_port, protocol}]`.
pub fn assigned_to(server: &str) -> Result<Vec<Value>, Error> {
    let ports = all_ports()?;
    Ok(all_assignments()?
        .into_iter()
        .filter(|a| a.server_identifier == server)
        .filter_map(|a| ports.iter().find(|p| p.port_id == a.port_id))
        .map(|p| json!({ "port_id": p.port_id, "public_port": p.public_port, "protocol": p.protocol }))
        .collect())
}

/// The kv keys of `server`'s assignments (to delete them with the node).
pub fn assignment_keys_of(server: &str) -> Result<Vec<String>, Error> {
    Ok(kv::list(ASSIGN_PREFIX)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.rsplit('/').next() == Some(server))
        .collect())
}

/// Deletes every port that no server has any more. Whether a port has
/// none is decided in the transaction that deletes it: the port's
/// `infra/port_rev` is read in it before its assignments are counted, so
/// an assignment added after the count makes the commit conflict (and the
/// port is counted again), and one added before it is counted.
pub fn drop_unassigned() -> Result<(), Error> {
    for port in all_ports()? {
        let id = port.port_id;
        kv::transaction(|txn| {
            txn.get(&rev_key(id))?;
            if kv::count(&format!("assign/{id:010}/"))? > 0 {
                return Ok(());
            }
            let Some(current) = txn.get_json::<Port>(&rec_key(id))? else {
                return Ok(());
            };
            txn.delete(&rec_key(id))?;
            txn.delete(&by_key(&current.protocol, current.public_port))?;
            txn.delete(&rev_key(id))?;
            Ok(())
        })?;
    }
    Ok(())
}
