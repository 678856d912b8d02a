//! Keeping servers in step with the panel: after every change to users,
//! sub-admins or settings the panel queues one [`JOB_SYNC`] (several changes
//! in a row share it), so a disabled user loses its peers and a new IPsec
//! PSK reaches the nodes within seconds, not at their next period. What the
//! job does is [`crate::domain::panel_jobs`] on the panel and
//! [`crate::domain::node_mode`] on a node.

use std::time::Duration;

use wasmgate_sdk::{Error, jobs, kv, log};

use crate::domain::wg;
use crate::store;
use crate::util;

pub const JOB_SYNC: &str = "vpnpanel.sync";

/// Queues one [`JOB_SYNC`] unless one is queued already, or a panel has
/// nothing to keep in step (no WireGuard device of its own, no node). A
/// failure is logged: the change itself stands, and the periodic passes
/// catch up.
pub fn changed() {
    let node = wasmgate_sdk::config::get("mode").as_deref() == Some("node");
    if !node && wg::device().is_none() && kv::count(store::nodes::REC_PREFIX).is_ok_and(|n| n == 0)
    {
        return;
    }
    let queued = kv::transaction(|txn| {
        if txn.get(store::meta::SYNC_QUEUED_KEY)?.is_some() {
            return Ok(false);
        }
        txn.set_json(store::meta::SYNC_QUEUED_KEY, &util::now_secs())?;
        Ok(true)
    });
    let outcome = match queued {
        Ok(true) => jobs::enqueue(JOB_SYNC, b"", Duration::ZERO).map(drop),
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        log::write(
            log::Level::Warn,
            &format!("vpnpanel: cannot queue a sync: {}", e.message),
        );
    }
}

/// Marks the queued sync as started, so that a change from now on queues
/// another.
pub fn started() -> Result<(), Error> {
    kv::delete(store::meta::SYNC_QUEUED_KEY).map(drop)
}
