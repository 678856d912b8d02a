//! Runs queued jobs: the plugin's exported `job-handler.run` in a fresh
//! instance with the plugin's limits. A job is removed only after it ran, so
//! it runs at least once; a failure is retried with a doubling back-off up
//! to [`MAX_ATTEMPTS`] times. Jobs are queued by the `jobs` capability
//! ([`crate::caps::jobs`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::ReadableTable;

use crate::caps::jobs::{JobKey, JobRecord, store};
use crate::db::{DbError, JOBS};
use crate::runtime::Plugin;
use crate::util::time::unix_now_ms;

/// A job that failed this many times is dropped with an error in the log.
pub const MAX_ATTEMPTS: u32 = 5;
/// Jobs run at once across the host.
const CONCURRENCY: usize = 4;

/// The version of a plugin that serves now, by name (`None` when no plugin
/// of that name serves): the server's, which changes on reload.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Arc<Plugin>> + Send + Sync>;

/// Runs due jobs until shutdown.
pub struct Scheduler {
    host: Arc<crate::runtime::Shared>,
    plugins: Lookup,
    running: Arc<Mutex<HashSet<JobKey>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Scheduler {
    pub fn new(host: Arc<crate::runtime::Shared>, plugins: Lookup) -> Scheduler {
        Scheduler {
            host,
            plugins,
            running: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(CONCURRENCY)),
        }
    }

    /// The loop: start what is due, then sleep until the next due job, a
    /// wake-up from `enqueue`, or a second, whichever comes first.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let wake = self.host.caps.jobs.wake.clone();
        loop {
            // A damaged table must not end the scheduler's task.
            let started =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start_due()));
            let next = match started {
                Ok(Ok(next)) => next,
                // The database says so on /health; no need to repeat it each second.
                Ok(Err(_)) if self.host.db.down_reason().is_some() => Some(unix_now_ms() + 1000),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "job scheduler cannot read the jobs table");
                    Some(unix_now_ms() + 1000)
                }
                Err(_) => {
                    tracing::error!(
                        "job scheduler panicked reading the jobs table; the database may be damaged"
                    );
                    Some(unix_now_ms() + 1000)
                }
            };
            let sleep_ms =
                next.map_or(1000, |due| due.saturating_sub(unix_now_ms()).clamp(1, 1000));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = wake.notified() => {}
                _ = crate::util::shutdown::stopped(&mut shutdown) => return,
            }
        }
    }

    /// Starts every due job that is not already running; returns when the
    /// next job not yet due is due.
    fn start_due(&self) -> Result<Option<u64>, DbError> {
        let now = unix_now_ms();
        let tx = self.host.db.read()?;
        let table = tx.open_table(JOBS)?;
        for item in table.iter()?.take(1000) {
            let (k, v) = item?;
            let key = k.value();
            if key.0 > now {
                return Ok(Some(key.0));
            }
            let Ok(job) = serde_json::from_slice::<JobRecord>(v.value()) else {
                tracing::error!(?key, "unreadable job record skipped");
                continue;
            };
            // The version current now runs the job, whichever queued it.
            let Some(plugin) = (self.plugins)(&job.plugin) else {
                continue; // its plugin is not loaded now; it stays queued
            };
            if !self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key)
            {
                continue;
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                return Ok(Some(now + 10));
            };
            let host = self.host.clone();
            let running = self.running.clone();
            tokio::spawn(async move {
                run_one(&host, &plugin, key, job).await;
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                drop(permit);
                host.caps.jobs.wake.notify_one();
            });
        }
        Ok(None)
    }
}

async fn run_one(host: &crate::runtime::Shared, plugin: &Plugin, key: JobKey, mut job: JobRecord) {
    let outcome = plugin.run_job(&job.name, &job.payload).await;
    let retry = match outcome {
        Ok(()) => {
            tracing::debug!(plugin = %job.plugin, job = %job.name, id = %job.id, "job done");
            None
        }
        Err(e)
            if matches!(
                e.downcast_ref::<crate::runtime::CallError>(),
                Some(crate::runtime::CallError::Busy(_))
            ) =>
        {
            // The plugin is saturated: try again soon, without counting an attempt.
            tracing::debug!(plugin = %job.plugin, job = %job.name, id = %job.id, "no instance slot for a job; later");
            Some(unix_now_ms() + 1000)
        }
        Err(e) => {
            job.attempts += 1;
            if job.attempts >= MAX_ATTEMPTS {
                tracing::error!(plugin = %job.plugin, job = %job.name, id = %job.id, error = %e, "job failed for the last time; dropped");
                None
            } else {
                tracing::warn!(plugin = %job.plugin, job = %job.name, id = %job.id, attempt = job.attempts, error = %e, "job failed; will retry");
                Some(unix_now_ms() + 1000 * (1 << job.attempts))
            }
        }
    };
    let r = host.db.write(|tx| -> Result<(), DbError> {
        tx.open_table(JOBS)?.remove(key)?;
        Ok(())
    });
    if let Err(e) = r.and_then(|()| retry.map_or(Ok(()), |due| store(&host.db, due, &job))) {
        tracing::error!(plugin = %job.plugin, id = %job.id, error = %e, "cannot update the jobs table");
    }
}
