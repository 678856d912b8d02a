//! The panel's background passes that keep its servers in step: the sync
//! job ([`sync::JOB_SYNC`]: the panel's own WireGuard device, then every
//! active node is asked to sync now, `POST /api/v1/node/sync`) and the
//! enforcement pass ([`traffic::JOB_ENFORCE`]).

use std::collections::BTreeMap;

use wasmgate_sdk::{kv, log};

use crate::domain::{nodes, sync, traffic, wg};
use crate::fail::Fail;
use crate::store::{self, users::User};
use crate::util;

/// The panel's [`sync::JOB_SYNC`]: its own device, then the nodes.
pub fn sync_job() -> Result<(), String> {
    sync::started().map_err(|e| e.message)?;
    if sync_main().is_err() {
        // The cause is logged where it happened.
        log::write(
            log::Level::Warn,
            "vpnpanel: the WireGuard sync of this server failed",
        );
    }
    let nodes = store::nodes::list_nodes().map_err(|e| e.message)?;
    for node in nodes
        .iter()
        .filter(|n| n.status == store::nodes::STATUS_ACTIVE)
    {
        if let Err(why) = nodes::call_node(node, "POST", "/node/sync", None) {
            log::write(
                log::Level::Warn,
                &format!("vpnpanel: node {} was not told to sync: {why}", node.id),
            );
        }
    }
    Ok(())
}

/// One pass: expiry and limits of every user, then this server's
/// WireGuard (its peers follow, its traffic is counted).
pub fn enforce_job(payload: &[u8]) -> Result<(), String> {
    traffic::ENFORCER.run(payload, traffic::interval(), || {
        let now = util::now_secs();
        let mut changed = Vec::new();
        store::users::for_each_user("u/", |key, mut u| {
            if u.enforce(now) {
                changed.push(key.to_string());
            }
            Ok(())
        })
        .map_err(|_| "listing users failed".to_string())?;
        for key in &changed {
            kv::transaction(|txn| {
                if let Some(mut u) = txn.get_json::<User>(key)? {
                    u.enforce(now);
                    store::users::put_user(txn, key, &u)?;
                }
                Ok(())
            })
            .map_err(|e| e.message)?;
        }
        log::write(
            log::Level::Info,
            &format!("vpnpanel: enforce pass changed {} user(s)", changed.len()),
        );
        if !changed.is_empty() {
            sync::changed();
        } else if sync_main().is_err() {
            log::write(
                log::Level::Warn,
                "vpnpanel: the WireGuard sync of this server failed",
            );
        }
        Ok(())
    })
}

/// The peers server `server` should have: every active wg1 user allowed on it.
pub fn wants_for(server: &str) -> Result<Vec<wg::Want>, Fail> {
    let mut out = Vec::new();
    store::users::for_each_user("u/", |_, u| {
        if u.may_use(server)
            && let Some(w) = wg::Want::of(&u)
        {
            out.push(w);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The panel's own server: read the device, record the traffic, set the
/// peers.
pub fn sync_main() -> Result<(), Fail> {
    let Some(d) = wg::device() else { return Ok(()) };
    wg::exclusive(|| {
        let reading = wg::read(&d)?;
        if wg::commit(&reading)? {
            let deltas = reading
                .usage
                .iter()
                .filter(|u| u.bytes > 0 || u.connected)
                .map(|u| (u.username.clone(), (u.bytes, Some(u32::from(u.connected)))))
                .collect::<BTreeMap<_, _>>();
            if !deltas.is_empty() {
                traffic::record("main", &deltas)?;
            }
        }
        wg::apply(&d, &reading.device, &wants_for("main")?)?;
        Ok(())
    })
}
