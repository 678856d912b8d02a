//! Nodes: creation, edit and deletion, background provisioning and
//! background deletion.
//!
//! A node is another wasmgate running this plugin in node mode
//! ([`crate::domain::node_mode`]). The panel reaches it over the `outbound`
//! capability at `{api_scheme}://{ip_address}:{api_port}/api/v1/node/...`
//! with `Authorization: Bearer <node token>`; the grant's `hosts` must list
//! the node's `ip_address:api_port`.
//!
//! Steps, in order:
//! 1. `POST /nodes` (main admin) stores the node as `installing` and queues
//!    the job [`JOB_PROVISION`]; the answer is 202 with `node_id`.
//! 2. The job sends the node's config to `POST /api/v1/node/provision`; the
//!    node's answer (protocols, ports) is stored and the state becomes
//!    `active`, or `failed` with `status_message` when the node cannot be
//!    reached or refuses.
//! 3. `PUT /nodes/<id>` changes the record; when a field the node serves
//!    changed, the node goes back to `installing` and step 2 runs again.
//! 4. `DELETE /nodes/<id>` marks it `deleting` (423 to every write while it
//!    runs) and queues [`JOB_DELETE`], which asks the node to drop its config
//!    (`DELETE /api/v1/node/provision`) and then removes the record and its
//!    port assignments. When the node cannot be reached the state becomes
//!    `delete_failed`; the next DELETE forces the removal.
//!
//! Every write is main-admin only (the original let any key PUT and
//! DELETE); a missing node is 404 `success: false` (the original's DELETE
//! answered `success: true`). A sub-admin's list shows `id`, `name` and
//! `status` only, as the seed shows, and only of the nodes in its
//! `allowed_servers` (all of them when that list is empty).
//!
//! The records are [`crate::store::nodes`]; the routes and views
//! [`crate::api::nodes`].

use std::time::Duration;

use serde_json::{Map, Value, json};
use wasmgate_sdk::{Error, jobs, kv, log};

use crate::domain::peer;
use crate::fail::{Fail, refuse};
use crate::store::nodes::{
    MAIN_ID, Node, SEQ_KEY, STATUS_ACTIVE, STATUS_DELETE_FAILED, STATUS_DELETING, STATUS_FAILED,
    STATUS_INSTALLING, addr_key, get_node, parse_identifier, rec_key,
};
use crate::store::{self, ports};
use crate::util;

pub const JOB_PROVISION: &str = "node.provision";

pub const JOB_DELETE: &str = "node.delete";

pub const MSG_NODE_NOT_FOUND: &str = "Node not found";

pub const MSG_DELETION_IN_PROGRESS: &str = "Deletion in progress...";

pub const MSG_DUPLICATE_ADDRESS: &str = "A node with this ip_address and api_port already exists.";

pub const MSG_MISSING_FIELDS: &str = "Missing required fields: name, ip_address, ssh_password";

/// How long one call to a node may take (the grant's timeout caps it too).
const NODE_CALL_TIMEOUT_MS: u32 = 10_000;

/// Whether `server` (`main` or `node_<id>`) is a server users can be put
/// on, as `txn` sees it: a node being deleted no longer is.
pub fn server_exists_in(txn: &kv::Txn, server: &str) -> Result<bool, Error> {
    if server == MAIN_ID {
        return Ok(true);
    }
    let Some(id) = parse_identifier(server) else {
        return Ok(false);
    };
    Ok(txn
        .get_json::<Node>(&rec_key(id))?
        .is_some_and(|n| n.status != STATUS_DELETING && n.status != STATUS_DELETE_FAILED))
}

/// Adds `bytes` to a node's `total_traffic_bytes` (for the traffic report
/// endpoint); false when there is no such node.
pub fn add_traffic(id: u64, bytes: u64) -> Result<bool, Error> {
    kv::transaction(|txn| {
        let Some(mut node) = txn.get_json::<Node>(&rec_key(id))? else {
            return Ok(false);
        };
        node.total_traffic_bytes = node.total_traffic_bytes.saturating_add(bytes);
        txn.set_json(&rec_key(id), &node)?;
        Ok(true)
    })
}

/// A string field, trimmed; None when absent, null or blank.
fn text(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Checks the node's address: a host name or an IP literal, no port, no
/// path, no user info.
pub fn valid_address(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !s.starts_with(['-', '.'])
        && (s.parse::<std::net::IpAddr>().is_ok() || !s.contains(':'))
}

/// Checks a node token as the panel stores it: 1 to 256 printable ASCII
/// characters without spaces (it goes into a header). A node only accepts a
/// token of [`MIN_NODE_TOKEN`] characters or more ([`valid_node_setting`]),
/// so a shorter one, like the seed's `"pass"`, is stored but provisioning
/// with it ends `failed`.
pub fn valid_token(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The shortest `node_token` a node accepts in its settings.
pub const MIN_NODE_TOKEN: usize = 16;

/// Checks a node's own `node_token` setting: [`valid_token`] and at least
/// [`MIN_NODE_TOKEN`] characters, so a node's agent is never guarded by a
/// guessable secret.
pub fn valid_node_setting(s: &str) -> bool {
    valid_token(s) && s.len() >= MIN_NODE_TOKEN
}

/// A port field: absent is `default`; anything but an integer in 1..=65535
/// is an error naming the field.
fn port_field(body: &Map<String, Value>, key: &str, default: u16) -> Result<u16, Fail> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| refuse(400, &format!("Invalid {key}. Use a port from 1 to 65535."))),
    }
}

fn choice(
    body: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
    default: &str,
) -> Result<String, Fail> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(v) => v
            .as_str()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| allowed.contains(&s.as_str()))
            .ok_or_else(|| {
                refuse(
                    400,
                    &format!("Invalid {key}. Use one of: {}.", allowed.join(", ")),
                )
            }),
    }
}

fn bool_field(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, Fail> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(refuse(400, &format!("Invalid {key}. Use true or false."))),
    }
}

const PROTOCOLS: &[&str] = &["udp", "tcp"];

const METHODS: &[&str] = &["direct", "wireguard"];

const SCHEMES: &[&str] = &["http", "https"];

pub const DEFAULT_API_PORT: u16 = 8000;

/// The node token from the body: `node_token`, or the seed's `ssh_password`.
fn token_field(body: &Map<String, Value>) -> Option<String> {
    text(body, "node_token").or_else(|| text(body, "ssh_password"))
}

/// Stores the node `body` describes as `installing` and queues its
/// provisioning: its id.
pub fn create(body: &Map<String, Value>) -> Result<u64, Fail> {
    let (Some(name), Some(ip), Some(token)) = (
        text(body, "name"),
        text(body, "ip_address"),
        token_field(body),
    ) else {
        return Err(refuse(400, MSG_MISSING_FIELDS));
    };
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(refuse(400, "Invalid name."));
    }
    if !valid_address(&ip) {
        return Err(refuse(
            400,
            "Invalid ip_address. Use an IP address or a host name without a port.",
        ));
    }
    if !valid_token(&token) {
        return Err(refuse(
            400,
            "Invalid ssh_password (the node token): use up to 256 printable characters without spaces.",
        ));
    }
    let api_port = port_field(body, "api_port", DEFAULT_API_PORT)?;
    let api_scheme = choice(body, "api_scheme", SCHEMES, "http")?;
    let openvpn_port = port_field(body, "openvpn_port", 1194)?;
    let protocol = choice(body, "protocol", PROTOCOLS, "udp")?;
    let communication_method = choice(body, "communication_method", METHODS, "direct")?;
    let sync_all_users = bool_field(body, "sync_all_users", false)?;
    let now = util::now_secs();
    let report_token = util::random_hex(32);

    let node = kv::transaction(|txn| {
        let addr = addr_key(&ip, api_port);
        if txn.get(&addr)?.is_some() {
            return Err(Error::conflict(MSG_DUPLICATE_ADDRESS));
        }
        let id = txn.get_json::<u64>(SEQ_KEY)?.unwrap_or(0) + 1;
        txn.set_json(&addr, &id)?;
        let node = Node {
            id,
            name: name.clone(),
            ip_address: ip.clone(),
            api_port,
            api_scheme: api_scheme.clone(),
            node_token: token.clone(),
            report_token: report_token.clone(),
            openvpn_port,
            protocol: protocol.clone(),
            communication_method: communication_method.clone(),
            sync_all_users,
            status: STATUS_INSTALLING.into(),
            status_message: String::new(),
            protocols: Vec::new(),
            ports: Vec::new(),
            wireguard: Value::Null,
            total_traffic_bytes: 0,
            created_at: now,
            updated_at: now,
            generation: 1,
        };
        txn.set_json(SEQ_KEY, &id)?;
        txn.set_json(&rec_key(id), &node)?;
        Ok(node)
    })?;
    queue_provision(&node)?;
    Ok(node.id)
}

/// The fields whose change the node must hear about.
const SERVICE_FIELDS: &[&str] = &[
    "ip_address",
    "api_port",
    "api_scheme",
    "node_token",
    "openvpn_port",
    "protocol",
    "communication_method",
    "sync_all_users",
];

/// `node` with the fields of `body` applied, and the fields its node must
/// hear about that changed.
fn edited(body: &Map<String, Value>, node: &Node) -> Result<(Node, Vec<&'static str>), Fail> {
    let mut next = node.clone();
    if body.contains_key("name") {
        next.name = text(body, "name").ok_or_else(|| refuse(400, "Invalid name."))?;
        if next.name.chars().count() > 100 || next.name.chars().any(char::is_control) {
            return Err(refuse(400, "Invalid name."));
        }
    }
    if body.contains_key("ip_address") {
        next.ip_address = text(body, "ip_address")
            .filter(|ip| valid_address(ip))
            .ok_or_else(|| {
                refuse(
                    400,
                    "Invalid ip_address. Use an IP address or a host name without a port.",
                )
            })?;
    }
    if body.contains_key("node_token") || body.contains_key("ssh_password") {
        next.node_token = token_field(body).filter(|t| valid_token(t)).ok_or_else(|| {
            refuse(400, "Invalid ssh_password (the node token): use up to 256 printable characters without spaces.")
        })?;
    }
    next.api_port = port_field(body, "api_port", node.api_port)?;
    next.api_scheme = choice(body, "api_scheme", SCHEMES, &node.api_scheme)?;
    next.openvpn_port = port_field(body, "openvpn_port", node.openvpn_port)?;
    next.protocol = choice(body, "protocol", PROTOCOLS, &node.protocol)?;
    next.communication_method = choice(
        body,
        "communication_method",
        METHODS,
        &node.communication_method,
    )?;
    next.sync_all_users = bool_field(body, "sync_all_users", node.sync_all_users)?;

    let old = serde_json::to_value(node).unwrap_or(Value::Null);
    let new = serde_json::to_value(&next).unwrap_or(Value::Null);
    let changed: Vec<&str> = SERVICE_FIELDS
        .iter()
        .copied()
        .filter(|f| old.get(f) != new.get(f))
        .collect();
    Ok((next, changed))
}

/// Applies `body` to node `id`; when a field the node serves changed, it
/// is provisioned again.
pub fn update(id: u64, body: &Map<String, Value>) -> Result<(), Fail> {
    // The edit applies to the node as this transaction reads it: fields
    // another edit changed meanwhile are kept, and whether the node must be
    // provisioned again is decided against them.
    let (saved, changed) = store::transaction(|txn| {
        let Some(current) = txn.get_json::<Node>(&rec_key(id))? else {
            return Err(refuse(404, MSG_NODE_NOT_FOUND));
        };
        if current.status == STATUS_DELETING {
            return Err(refuse(423, MSG_DELETION_IN_PROGRESS));
        }
        let (mut n, changed) = edited(body, &current)?;
        let (old_addr, new_addr) = (
            addr_key(&current.ip_address, current.api_port),
            addr_key(&n.ip_address, n.api_port),
        );
        if old_addr != new_addr {
            if txn.get(&new_addr)?.is_some() {
                return Err(refuse(409, MSG_DUPLICATE_ADDRESS));
            }
            txn.delete(&old_addr)?;
            txn.set_json(&new_addr, &id)?;
        }
        let sync = !changed.is_empty();
        n.updated_at = util::now_secs();
        if sync {
            n.status = STATUS_INSTALLING.into();
            n.status_message = String::new();
            n.generation += 1;
        }
        txn.set_json(&rec_key(id), &n)?;
        Ok((n, changed))
    })?;
    if !changed.is_empty() {
        log::write(
            log::Level::Info,
            &format!("vpnpanel: node {id} changed {changed:?}; re-provisioning"),
        );
        queue_provision(&saved)?;
    }
    Ok(())
}

/// Marks node `id` `deleting` and queues [`JOB_DELETE`]; after a failed
/// deletion, the next one forces the removal.
pub fn delete(id: u64) -> Result<(), Fail> {
    let force = kv::transaction(|txn| {
        let Some(mut node) = txn.get_json::<Node>(&rec_key(id))? else {
            return Err(Error::not_found(MSG_NODE_NOT_FOUND));
        };
        if node.status == STATUS_DELETING {
            return Err(Error::new(423, MSG_DELETION_IN_PROGRESS));
        }
        let force = node.status == STATUS_DELETE_FAILED;
        node.status = STATUS_DELETING.into();
        node.status_message = String::new();
        node.updated_at = util::now_secs();
        txn.set_json(&rec_key(id), &node)?;
        Ok(force)
    })?;
    let payload = json!({ "id": id, "force": force }).to_string();
    jobs::enqueue(JOB_DELETE, payload.as_bytes(), Duration::ZERO)?;
    Ok(())
}

/// Sends a node its config again (its port assignments changed): back to
/// `installing` with a new generation. A node being deleted is left alone.
pub fn resync(id: u64) -> Result<(), Error> {
    let node = kv::transaction(|txn| {
        let Some(mut n) = txn.get_json::<Node>(&rec_key(id))? else {
            return Ok(None);
        };
        if n.status == STATUS_DELETING || n.status == STATUS_DELETE_FAILED {
            return Ok(None);
        }
        n.status = STATUS_INSTALLING.into();
        n.status_message = String::new();
        n.generation += 1;
        n.updated_at = util::now_secs();
        txn.set_json(&rec_key(id), &n)?;
        Ok(Some(n))
    })?;
    match node {
        Some(n) => queue_provision(&n),
        None => Ok(()),
    }
}

/// Queues the provisioning job for the node's current generation.
fn queue_provision(node: &Node) -> Result<(), Error> {
    let payload = json!({ "id": node.id, "generation": node.generation }).to_string();
    jobs::enqueue(JOB_PROVISION, payload.as_bytes(), Duration::ZERO)?;
    Ok(())
}

/// Runs a job of this module ([`JOB_PROVISION`], [`JOB_DELETE`]). A node
/// that cannot be reached is an outcome (failed), not an error; only kv
/// errors are returned, so that the host retries the job.
pub fn job(name: &str, payload: &[u8]) -> Result<(), String> {
    let p: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let id = p.get("id").and_then(Value::as_u64).unwrap_or(0);
    let r = match name {
        JOB_PROVISION => provision(id, p.get("generation").and_then(Value::as_u64).unwrap_or(0)),
        JOB_DELETE => remove(id, p.get("force").and_then(Value::as_bool).unwrap_or(false)),
        _ => return Err(format!("no job handler for {name:?}")),
    };
    r.map_err(|e| e.message)
}

/// What the node is told when it is provisioned.
fn provision_request(node: &Node) -> Result<Value, Error> {
    let ports = ports::assigned_to(&node.identifier())?;
    Ok(json!({
        "node_id": node.id,
        "server_identifier": node.identifier(),
        "name": node.name,
        "openvpn_port": node.openvpn_port,
        "protocol": node.protocol,
        "communication_method": node.communication_method,
        "sync_all_users": node.sync_all_users,
        "custom_ports": ports,
        "report_token": node.report_token,
        "panel_url": wasmgate_sdk::config::get("public_url").map(|u| u.trim().trim_end_matches('/').to_string()),
    }))
}

/// One call to the node: the parsed answer of a 2xx with `success: true`,
/// or why not, in words for `status_message`.
pub fn call_node(
    node: &Node,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let token = format!("Bearer {}", node.node_token);
    let url = format!("{}{path}", node.api_base());
    peer::call_peer(
        "node",
        method,
        &url,
        ("authorization", &token),
        body,
        NODE_CALL_TIMEOUT_MS,
    )
}

fn provision(id: u64, generation: u64) -> Result<(), Error> {
    let Some(node) = get_node(id)? else {
        return Ok(());
    };
    if node.status != STATUS_INSTALLING || node.generation != generation {
        return Ok(()); // deleted, or a newer config has its own job
    }
    let request = provision_request(&node)?;
    let outcome = call_node(&node, "POST", "/node/provision", Some(&request));
    kv::transaction(|txn| {
        let Some(mut n) = txn.get_json::<Node>(&rec_key(id))? else {
            return Ok(());
        };
        if n.status != STATUS_INSTALLING || n.generation != generation {
            return Ok(());
        }
        match &outcome {
            Ok(answer) => {
                n.status = STATUS_ACTIVE.into();
                n.status_message = String::new();
                n.protocols = answer
                    .get("protocols")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                n.ports = answer
                    .get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                n.wireguard = answer.get("wireguard").cloned().unwrap_or(Value::Null);
            }
            Err(why) => {
                n.status = STATUS_FAILED.into();
                n.status_message = why.clone();
            }
        }
        n.updated_at = util::now_secs();
        txn.set_json(&rec_key(id), &n)?;
        Ok(())
    })?;
    match &outcome {
        Ok(_) => log::write(
            log::Level::Info,
            &format!("vpnpanel: node {id} provisioned"),
        ),
        Err(why) => log::write(
            log::Level::Warn,
            &format!("vpnpanel: node {id} provisioning failed: {why}"),
        ),
    }
    Ok(())
}

fn remove(id: u64, force: bool) -> Result<(), Error> {
    let Some(node) = get_node(id)? else {
        return Ok(());
    };
    if node.status != STATUS_DELETING {
        return Ok(());
    }
    let outcome = call_node(&node, "DELETE", "/node/provision", None);
    if let Err(why) = &outcome {
        if !force {
            kv::transaction(|txn| {
                let Some(mut n) = txn.get_json::<Node>(&rec_key(id))? else {
                    return Ok(());
                };
                if n.status != STATUS_DELETING {
                    return Ok(());
                }
                n.status = STATUS_DELETE_FAILED.into();
                n.status_message = why.clone();
                n.updated_at = util::now_secs();
                txn.set_json(&rec_key(id), &n)?;
                Ok(())
            })?;
            log::write(
                log::Level::Warn,
                &format!("vpnpanel: node {id} deletion failed: {why}"),
            );
            return Ok(());
        }
        log::write(
            log::Level::Warn,
            &format!("vpnpanel: node {id} removed by force; the node said: {why}"),
        );
    }
    let assignments = ports::assignment_keys_of(&node.identifier())?;
    kv::transaction(|txn| {
        txn.delete(&rec_key(id))?;
        txn.delete(&addr_key(&node.ip_address, node.api_port))?;
        for key in &assignments {
            txn.delete(key)?;
        }
        Ok(())
    })?;
    ports::drop_unassigned()?;
    log::write(log::Level::Info, &format!("vpnpanel: node {id} deleted"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nodes::identifier;

    #[test]
    fn addresses() {
        for ok in ["1.2.3.4", "127.0.0.1", "::1", "node-1.example.com"] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3.4:80",
            "a b",
            "x/y",
            "user@host",
            "-x",
            "http://x",
            "1:2",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        assert_eq!(identifier(7), "node_7");
        assert_eq!(parse_identifier("node_7"), Some(7));
        assert_eq!(parse_identifier("node_0"), None);
        assert_eq!(parse_identifier("main"), None);
        assert_eq!(parse_identifier("node_x"), None);
    }

    #[test]
    fn tokens() {
        assert!(valid_token("0123456789abcdef"));
        assert!(valid_token("pass"));
        assert!(!valid_token(""));
        assert!(!valid_token("0123456789abcdef with space"));
        assert!(valid_node_setting("0123456789abcdef"));
        assert!(!valid_node_setting("pass"));
    }
}
