//! Keeping servers in step with the panel, and the job chains that do it.
//!
//! After every change to users, sub-admins or settings the panel queues one
//! [`JOB_SYNC`] (several changes in a row share it): the panel's own
//! WireGuard device is synced ([`crate::wg::sync_main`]) and every active
//! node is asked to sync now (`POST /api/v1/node/sync`), so a disabled user
//! loses its peers and a new IPsec PSK reaches the nodes within seconds, not
//! at their next period. On a node the same job name runs the node's sync
//! ([`crate::node_mode`]).
//!
//! [`Periodic`] is the self-renewing chain of a periodic job (the panel's
//! enforcement pass, a node's sync): one due time in kv, a job per due
//! time; a job whose due time is not the current one belongs to a chain
//! that was replaced and stops.

use std::time::Duration;

use wasmgate_sdk::{Error, jobs, kv, log};

use crate::store;
use crate::util;

pub const JOB_SYNC: &str = "vpnpanel.sync";
/// Queues one [`JOB_SYNC`] unless one is queued already, or a panel has
/// nothing to keep in step (no WireGuard device of its own, no node). A
/// failure is logged: the change itself stands, and the periodic passes
/// catch up.
pub fn changed() {
    let node = wasmgate_sdk::config::get("mode").as_deref() == Some("node");
    if !node
        && crate::wg::device().is_none()
        && kv::count(store::nodes::REC_PREFIX).is_ok_and(|n| n == 0)
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

/// The panel's [`JOB_SYNC`]: its own device, then the nodes.
pub fn panel_job() -> Result<(), String> {
    started().map_err(|e| e.message)?;
    if crate::wg::sync_main().is_err() {
        // The cause is logged where it happened.
        log::write(
            log::Level::Warn,
            "vpnpanel: the WireGuard sync of this server failed",
        );
    }
    let nodes = crate::store::nodes::list_nodes().map_err(|e| e.message)?;
    for node in nodes
        .iter()
        .filter(|n| n.status == crate::store::nodes::STATUS_ACTIVE)
    {
        if let Err(why) = crate::nodes::call_node(node, "POST", "/node/sync", None) {
            log::write(
                log::Level::Warn,
                &format!("vpnpanel: node {} was not told to sync: {why}", node.id),
            );
        }
    }
    Ok(())
}

/// A periodic job that re-queues itself.
pub struct Periodic {
    pub job: &'static str,
    /// Where the current due time (unix seconds) is kept.
    pub next_key: &'static str,
}

impl Periodic {
    /// Starts the chain when none is due: none queued yet, or the last one
    /// is more than two periods late (its job was lost).
    pub fn ensure(&self, every: u64) -> Result<(), Error> {
        let now = util::now_secs();
        let due = kv::get_json::<u64>(self.next_key)?;
        if due.is_some_and(|d| d + 2 * every >= now) {
            return Ok(());
        }
        let next = now + every;
        let started = kv::transaction(|txn| {
            if txn.get_json::<u64>(self.next_key)? != due {
                return Ok(false);
            }
            txn.set_json(self.next_key, &next)?;
            Ok(true)
        })?;
        if started {
            jobs::enqueue(
                self.job,
                next.to_string().as_bytes(),
                Duration::from_secs(every),
            )?;
        }
        Ok(())
    }

    /// Runs `pass` when `payload` names the current due time, then queues
    /// the next run `every` seconds on. A superseded chain's job does
    /// nothing.
    pub fn run(
        &self,
        payload: &[u8],
        every: u64,
        pass: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        let due: u64 = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad payload")?;
        if kv::get_json::<u64>(self.next_key).map_err(|e| e.message)? != Some(due) {
            return Ok(());
        }
        let outcome = pass();
        let next = util::now_secs() + every;
        let mine = kv::transaction(|txn| {
            if txn.get_json::<u64>(self.next_key)? != Some(due) {
                return Ok(false);
            }
            txn.set_json(self.next_key, &next)?;
            Ok(true)
        })
        .map_err(|e| e.message)?;
        if mine {
            jobs::enqueue(
                self.job,
                next.to_string().as_bytes(),
                Duration::from_secs(every),
            )
            .map_err(|e| e.message)?;
        }
        outcome
    }
}
