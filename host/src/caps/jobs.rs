//! `jobs`: background work. `enqueue` stores the job in redb (so it survives
//! a restart); the scheduler (`crate::scheduler`) later runs the plugin's
//! exported `job-handler.run` in a fresh instance with the plugin's limits.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wasmtime::component::{HasData, Linker};

use super::wit::jobs::{Error, Host};
use super::{Call, Capability, CapsHost, HostEnv, OrTrap, PluginCaps, PluginEnv, Trappable};
use crate::db::{Db, DbError, JOBS};

type JobsError = Trappable<Error>;
use crate::util::ids::{hex, random};
use crate::util::time::unix_now_ms;

pub struct Jobs;

/// Where jobs are queued, and how the scheduler learns of a new one.
pub struct Queue {
    pub db: Db,
    /// Notified at each `enqueue`, so a job due now does not wait for the
    /// scheduler's next turn.
    pub wake: Arc<Notify>,
}

impl Capability for Jobs {
    const NAME: &'static str = "jobs";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = Queue;
    type PluginState = ();

    fn state(env: &HostEnv) -> Queue {
        Queue {
            db: env.db.clone(),
            wake: Arc::new(Notify::new()),
        }
    }

    fn plugin_state(_: &PluginEnv<'_>, _: &bool) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::jobs::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin and the queue.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    queue: &'a Queue,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            queue: &call.host.jobs,
        }
    }
}

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

impl Host for View<'_> {
    fn convert_error(&mut self, err: JobsError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    fn enqueue(
        &mut self,
        name: String,
        payload: Vec<u8>,
        delay_ms: u64,
    ) -> Result<String, JobsError> {
        if !self.plugin.grants.jobs {
            return Err(Trappable::trap(self.plugin.not_granted(Jobs::NAME)));
        }
        if name.len() > MAX_NAME_BYTES as usize {
            return Err(Error::TooLarge(MAX_NAME_BYTES).into());
        }
        if payload.len() > MAX_PAYLOAD_BYTES as usize {
            return Err(Error::TooLarge(MAX_PAYLOAD_BYTES).into());
        }
        let job = JobRecord {
            id: hex(&random(8).or_trap()?),
            plugin: self.plugin.name.clone(),
            name,
            payload,
            attempts: 0,
        };
        let due = unix_now_ms().saturating_add(delay_ms.min(MAX_DELAY_MS));
        if let Err(e) = store(&self.queue.db, due, &job) {
            return Err(Error::Storage(e.to_string()).into());
        }
        self.queue.wake.notify_one();
        Ok(job.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;

    #[test]
    fn a_job_is_stored_due_after_its_delay_and_without_the_grant_a_call_traps() {
        let mut f = Fixture::new("p", Grants::default());
        assert!(Host::enqueue(&mut View::new(f.call()), "j".into(), vec![], 0).is_err());
        let mut f = Fixture::new(
            "p",
            Grants {
                jobs: true,
                ..Grants::default()
            },
        );
        let before = unix_now_ms();
        let id =
            Host::enqueue(&mut View::new(f.call()), "j".into(), b"x".to_vec(), 60_000).unwrap();
        let tx = f.host.jobs.db.read().unwrap();
        let table = tx.open_table(JOBS).unwrap();
        let (k, v) = redb::ReadableTable::iter(&table)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let job: JobRecord = serde_json::from_slice(v.value()).unwrap();
        assert_eq!(
            (job.id.as_str(), job.plugin.as_str(), job.name.as_str()),
            (id.as_str(), "p", "j")
        );
        assert!(k.value().0 >= before + 60_000);
        let big = vec![0; MAX_PAYLOAD_BYTES as usize + 1];
        let err = Host::enqueue(&mut View::new(f.call()), "j".into(), big, 0).unwrap_err();
        assert!(matches!(
            err.into_wit().unwrap(),
            Error::TooLarge(MAX_PAYLOAD_BYTES)
        ));
    }
}
