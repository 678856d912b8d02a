//! [`Periodic`]: the self-renewing chain of a periodic job (the panel's
//! enforcement pass, a node's sync): one due time in kv, a job per due
//! time; a job whose due time is not the current one belongs to a chain
//! that was replaced and stops.

use std::time::Duration;

use wasmgate_sdk::{Error, jobs, kv};

use crate::util;

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
