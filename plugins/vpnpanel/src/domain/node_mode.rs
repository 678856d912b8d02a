//! The plugin running as a node (settings `mode: node`): what it does with
//! the config a panel provisioned ([`crate::api::node_mode`]).
//!
//! The sync, every `sync_interval_secs` (default 60) once provisioned and
//! whenever the panel asks: the node reads its WireGuard counters and
//! reports its users' traffic and connections to the panel
//! (`POST <panel_url>/api/v1/traffic/report`, header `X-NODE-TOKEN`), then
//! fetches the users it serves and the IPsec PSK
//! (`GET <panel_url>/api/v1/traffic/users`) and sets its WireGuard peers to
//! them. Counters are marked counted only after the panel took the report,
//! so an unreachable panel loses no traffic. The node's `outbound` grant
//! must list the panel's address. `ipsec_psk_sha256` in health is the
//! SHA-256 of the PSK the node has (never the PSK itself).
//!
//! Its records are [`crate::store::node_mode`] and the WireGuard records
//! of [`crate::store::wg`].

use serde_json::{Value, json};
use wasmgate_sdk::{config, kv, log};

use crate::domain::periodic::Periodic;
use crate::domain::{peer, sync, wg};
use crate::fail::{self, Fail};
use crate::store::node_mode::{LAST_SYNC_KEY, NodeConfig, PSK_KEY, SELF_KEY, SYNC_NEXT_KEY};
use crate::util;

/// The periodic sync.
pub const JOB_PERIODIC: &str = "vpnpanel.node_sync";

const PERIODIC: Periodic = Periodic {
    job: JOB_PERIODIC,
    next_key: SYNC_NEXT_KEY,
};

/// How long one call to the panel may take.
const PANEL_TIMEOUT_MS: u32 = 10_000;

/// Most users in one traffic report (the panel's limit).
const REPORT_CHUNK: usize = 10_000;

/// Users per page of the panel's user list: about 300 KB, well within the
/// usual outbound answer cap.
const USERS_PAGE: usize = 1000;

fn interval() -> u64 {
    config::get("sync_interval_secs")
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// Restarts the periodic sync of a provisioned node when it is missing; a
/// failure to queue it is logged, and the request is still served.
pub fn keep_periodic() -> Result<(), Fail> {
    if kv::get(SELF_KEY)?.is_some() && PERIODIC.ensure(interval()).is_err() {
        log::write(
            log::Level::Warn,
            "vpnpanel node: cannot queue the periodic sync",
        );
    }
    Ok(())
}

/// A node's jobs: the sync the panel asked for, and the periodic one.
pub fn job(name: &str, payload: &[u8]) -> Result<(), String> {
    match name {
        sync::JOB_SYNC => {
            sync::started().map_err(|e| e.message)?;
            run_sync()
        }
        JOB_PERIODIC => PERIODIC.run(payload, interval(), run_sync),
        other => Err(format!("no job handler for {other:?} in node mode")),
    }
}

/// One sync, recorded for health. A failure is logged and recorded, not
/// retried: the next one starts from the same counters.
fn run_sync() -> Result<(), String> {
    let Some(c) = kv::get_json::<NodeConfig>(SELF_KEY).map_err(|e| e.message)? else {
        return Ok(());
    };
    let outcome = match c.panel_url.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(panel) => wg::exclusive(|| sync_with(&c, panel.trim_end_matches('/')))
            .map_err(|_| "see the log".to_string()),
        None => Err("the panel sent no panel_url (set its public_url setting)".to_string()),
    };
    if let Err(why) = &outcome {
        log::write(
            log::Level::Warn,
            &format!("vpnpanel node: sync failed: {why}"),
        );
    }
    kv::set_json(
        LAST_SYNC_KEY,
        &json!({ "at": util::now_secs(), "ok": outcome.is_ok() }),
    )
    .map_err(|e| e.message)?;
    Ok(())
}

/// One call to the panel with the report token: the JSON answer of a 2xx
/// with `success: true`.
fn call_panel(
    c: &NodeConfig,
    url: &str,
    method: &str,
    body: Option<&Value>,
) -> Result<Value, Fail> {
    peer::call_peer(
        "panel",
        method,
        url,
        ("x-node-token", &c.report_token),
        body,
        PANEL_TIMEOUT_MS,
    )
    .map_err(|why| fail::internal(format!("node sync: {method} {url}: {why}")))
}

fn sync_with(c: &NodeConfig, panel: &str) -> Result<(), Fail> {
    let device = wg::device();
    let reading = device.as_ref().map(wg::read).transpose()?;
    if let Some(r) = &reading {
        let users: Vec<Value> = r
            .usage
            .iter()
            .map(|u| json!({ "username": u.username, "bytes": u.bytes, "connections": u32::from(u.connected) }))
            .collect();
        for chunk in users.chunks(REPORT_CHUNK) {
            call_panel(
                c,
                &format!("{panel}/api/v1/traffic/report"),
                "POST",
                Some(&json!({ "users": chunk })),
            )?;
        }
        wg::commit(r)?;
    }
    let (psk, served) = served_users(c, panel)?;
    if let Some(psk) = psk {
        kv::set(PSK_KEY, psk.as_bytes())?;
    }
    if let (Some(d), Some(r)) = (&device, &reading) {
        let wants: Vec<wg::Want> = served
            .iter()
            .filter_map(|u| {
                Some(wg::Want {
                    username: u.get("username")?.as_str()?.to_string(),
                    public_key: u.get("wg_public_key")?.as_str()?.to_string(),
                    address: u.get("wg_address")?.as_str()?.to_string(),
                })
            })
            .collect();
        wg::apply(d, &r.device, &wants)?;
    }
    Ok(())
}

/// The users the panel says this node serves, a page at a time (one page
/// of a large panel's list fits the outbound grant's answer cap where the
/// whole list would not), and the IPsec PSK.
fn served_users(c: &NodeConfig, panel: &str) -> Result<(Option<String>, Vec<Value>), Fail> {
    let mut users = Vec::new();
    let mut psk = None;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{panel}/api/v1/traffic/users?limit={USERS_PAGE}");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(&query_escape(c));
        }
        let page = call_panel(c, &url, "GET", None)?;
        if psk.is_none() {
            psk = page
                .get("ipsec_psk")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        users.extend(
            page.get("users")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        // A panel that does not page answers everything and no cursor; one
        // that hands out a cursor that does not move on would loop forever.
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if cursor.as_deref().is_none_or(|c| next > c) => {
                cursor = Some(next.to_string())
            }
            _ => return Ok((psk, users)),
        }
    }
}

/// `s` for a query string value: everything but unreserved characters and
/// `/` percent-encoded.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Keeps what the panel told this node, starts its periodic sync and
/// queues the first sync now.
pub fn provision(c: &NodeConfig) -> Result<(), Fail> {
    kv::set_json(SELF_KEY, c)?;
    log::write(
        log::Level::Info,
        &format!(
            "vpnpanel node: provisioned as node {} ({})",
            c.node_id, c.name
        ),
    );
    PERIODIC.ensure(interval())?;
    // The first sync now: the panel knows this node's report token already.
    sync::changed();
    Ok(())
}

/// Forgets the panel's config and empties the WireGuard device: nobody is
/// served any more.
pub fn deprovision() -> Result<(), Fail> {
    kv::delete(SELF_KEY)?;
    // Nobody is served any more.
    if let Some(d) = wg::device()
        && let Ok(device) = wasmgate_sdk::wireguard::get_device(&d.name)
    {
        wg::apply(&d, &device, &[])?;
    }
    log::write(log::Level::Info, "vpnpanel node: deprovisioned");
    Ok(())
}
