//! Live data: the guest network's neighbour table (`get_guest_hosts`, through
//! the host's `net` capability) and the active sessions (`get_active_guests`).

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::{Error, Response, config};

use crate::api::failure;
use crate::paging::{self, Paging};
use crate::store::{self, Session};
use crate::time;

#[derive(Serialize)]
struct ActiveGuest {
    logins: String,
    address: String,
    #[serde(rename = "mac-address")]
    mac_address: String,
    uptime: String,
    #[serde(rename = "idle-time")]
    idle_time: String,
    #[serde(rename = "bytes-out")]
    bytes_out: String,
    #[serde(rename = "bytes-in")]
    bytes_in: String,
}

/// Every active session in MAC order, uptime from its login, idle time from
/// the last traffic accounting reported, counters as strings (the seed's
/// shape). Paged by MAC: `next` is the last MAC listed.
pub fn active_guests(paging: Option<Paging>) -> Result<Response, Error> {
    let now = time::now_secs();
    let list = paging::KvList {
        action: "get_active_guests",
        field: "data",
        prefix: store::SESSION_PREFIX,
        cursor: |mac| Value::String(mac.to_string()),
        start: |after| store::normalize_mac(after).ok_or_else(paging::bad_after),
    };
    paging::kv_list(&list, paging, |value| {
        let s: Session = serde_json::from_slice(value)
            .map_err(|e| Error::internal(format!("a stored session is not a session: {e}")))?;
        serde_json::to_vec(&ActiveGuest {
            logins: s.login,
            address: s.address,
            mac_address: s.mac,
            uptime: time::hms(now.saturating_sub(s.started_at)),
            idle_time: time::hms(now.saturating_sub(s.last_activity)),
            bytes_out: s.bytes_out.to_string(),
            bytes_in: s.bytes_in.to_string(),
        })
        .map_err(|e| Error::internal(e.to_string()))
    })
}

/// The guest links from the `guest_links` setting: a YAML list, or one name,
/// or names separated by commas.
pub fn guest_links() -> Vec<String> {
    let Some(raw) = config::get("guest_links") else {
        return Vec::new();
    };
    if let Ok(list) = serde_json::from_str::<Vec<String>>(&raw) {
        return list;
    }
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Serialize)]
#[cfg_attr(not(feature = "net"), allow(dead_code))]
struct GuestHost {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "MAC")]
    mac: Option<String>,
    link: String,
    state: &'static str,
}

#[cfg(not(feature = "net"))]
pub fn guest_hosts(_: Option<Paging>) -> Result<Response, Error> {
    Ok(failure(
        "Guest hosts are not available: this build of the hotspot plugin has no net capability",
    ))
}

/// The neighbour entries of every guest link, in the kernel's order per
/// link. Entries that are not a host (failed or still unresolved) are left
/// out. A guest link that does not exist (a bridge not up yet) is skipped; a
/// link the grant does not cover is an error that names it. Paged by
/// "<link>/<IP>" (a live table has no stable order of its own).
#[cfg(feature = "net")]
pub fn guest_hosts(paging: Option<Paging>) -> Result<Response, Error> {
    use wasmgate_sdk::bindings::wasmgate::plugin::net::{self, NeighbourState};

    let links = guest_links();
    if links.is_empty() {
        return Ok(failure("No guest links configured (setting guest_links)"));
    }
    let mut hosts = Vec::new();
    for link in &links {
        let entries = match net::list_neighbours(Some(link)) {
            Ok(entries) => entries,
            Err(net::Error::NotFound(_)) => continue,
            Err(net::Error::Denied(why)) => {
                return Ok(failure(&format!(
                    "Guest link {link:?} is not allowed by the plugin's net grant: {why}"
                )));
            }
            Err(net::Error::Invalid(why) | net::Error::Os(why)) => {
                return Err(Error::internal(format!("net on {link:?}: {why}")));
            }
        };
        for n in entries {
            let state = match n.state {
                NeighbourState::Failed | NeighbourState::Incomplete => continue,
                NeighbourState::Reachable => "reachable",
                NeighbourState::Stale => "stale",
                NeighbourState::Delay => "delay",
                NeighbourState::Probe => "probe",
                NeighbourState::Noarp => "noarp",
                NeighbourState::Permanent => "permanent",
                NeighbourState::None => "none",
            };
            let host = GuestHost {
                ip: n.address,
                mac: n.mac.map(|m| m.to_ascii_uppercase()),
                link: n.link,
                state,
            };
            let entry = serde_json::to_vec(&host).map_err(|e| Error::internal(e.to_string()))?;
            hosts.push((format!("{}/{}", host.link, host.ip), entry));
        }
    }
    paging::memory_list("get_guest_hosts", "hosts", hosts, paging)
}
