//! `jobs`: background work. `enqueue` stores the job in redb (so it survives
//! a restart); the scheduler (`crate::scheduler`) later runs the plugin's
//! exported `job-handler.run` in a fresh instance with the plugin's limits.

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use crate::bindings::jobs::{Error, Host};
use crate::db::{DbError, JOBS};
use crate::runtime::Ctx;
use crate::util::ids::{hex, random};
use crate::util::time::unix_now_ms;

pub const CAP: Capability = Capability {
    name: "jobs",
    granted: |g| g.jobs,
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::jobs::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

pub const MAX_NAME_BYTES: u32 = 128;
pub const MAX_PAYLOAD_BYTES: u32 = 1 << 20;
/// The longest delay accepted: 400 days.
const MAX_DELAY_MS: u64 = 400 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub plugin: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub attempts: u32,
}

/// A job's key in [`JOBS`]: (due, unix ms; random sequence).
pub type JobKey = (u64, u64);

/// Puts a job in the table, due at `due_ms`.
pub fn store(db: &crate::db::Db, due_ms: u64, job: &JobRecord) -> Result<(), DbError> {
    let seq = u64::from_le_bytes(
        random(8)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .try_into()
            .unwrap_or([0; 8]),
    );
    let json = serde_json::to_vec(job).map_err(std::io::Error::other)?;
    db.write(|tx| -> Result<(), DbError> {
        tx.open_table(JOBS)?
            .insert((due_ms, seq), json.as_slice())?;
        Ok(())
    })
}

impl Host for Ctx {
    fn enqueue(
        &mut self,
        name: String,
        payload: Vec<u8>,
        delay_ms: u64,
    ) -> wasmtime::Result<Result<String, Error>> {
        if !self.plugin.grants.jobs {
            return Ok(Err(Error::Denied));
        }
        if name.len() > MAX_NAME_BYTES as usize {
            return Ok(Err(Error::TooLarge(MAX_NAME_BYTES)));
        }
        if payload.len() > MAX_PAYLOAD_BYTES as usize {
            return Ok(Err(Error::TooLarge(MAX_PAYLOAD_BYTES)));
        }
        let job = JobRecord {
            id: hex(&random(8)?),
            plugin: self.plugin.name.clone(),
            name,
            payload,
            attempts: 0,
        };
        let due = unix_now_ms().saturating_add(delay_ms.min(MAX_DELAY_MS));
        if let Err(e) = store(&self.plugin.host.db, due, &job) {
            return Ok(Err(Error::Storage(e.to_string())));
        }
        self.plugin.host.jobs_wake.notify_one();
        Ok(Ok(job.id))
    }
}
