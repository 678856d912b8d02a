//! Warm instances for plugins that opt in with `limits.reuse`: an instance
//! serves requests one after another instead of being dropped after one.
//!
//! An instance is kept after a request only if the call succeeded (no trap,
//! no deadline, no host panic, a usable response), it has served fewer than
//! `max_requests`, its memory stayed under `max_memory_mb`, the plugin keeps
//! fewer than [`super::warm_per_plugin`] idle and the host-wide room for
//! idle instances ([`super::Shared::warm_budget`], what the engine's pool
//! was sized for) is not used up. An idle instance older than `max_idle_ms`
//! is dropped by a sweeper task, or when a request finds it first. Each
//! request gets a new deadline, request id and output buffers; the
//! instance's memory, and what the guest keeps in it, stays.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Instance;

use super::{Ctx, PluginShared};

/// An idle instance and its store.
pub(super) struct Warm {
    pub store: Store<Ctx>,
    pub instance: Instance,
    /// Its exports, looked up once: each lookup adds to the store.
    pub guests: Guests,
    /// Requests it has served.
    pub served: u32,
    idle_since: Instant,
}

/// An instance's `handler` and `admin` exports, once looked up.
#[derive(Default)]
pub(super) struct Guests {
    pub handler: Option<crate::caps::wit::handler::Guest>,
    pub admin: Option<crate::caps::wit::admin::Guest>,
}

/// A plugin's idle instances, newest last. Dropped with its plugin, it
/// gives the room of its idle instances back to the host.
pub(super) struct Pool {
    idle: Mutex<Vec<Warm>>,
    sweeping: std::sync::atomic::AtomicBool,
    host: Arc<super::Shared>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|p| p.into_inner());
        self.host
            .warm_budget
            .fetch_add(idle.len(), Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(host: Arc<super::Shared>) -> Pool {
        Pool {
            idle: Mutex::default(),
            sweeping: Default::default(),
            host,
        }
    }

    /// The newest idle instance that has not expired, if any.
    pub fn take(&self, shared: &PluginShared) -> Option<Warm> {
        let reuse = shared.limits.reuse.as_ref()?;
        let max_idle = Duration::from_millis(reuse.max_idle_ms);
        let (taken, expired) = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let taken = idle.pop();
            match taken {
                // The newest has expired: so have all the others.
                Some(w) if w.idle_since.elapsed() > max_idle => {
                    let mut all = std::mem::take(&mut *idle);
                    all.push(w);
                    (None, all)
                }
                other => (other, Vec::new()),
            }
        };
        let budget = &shared.host.warm_budget;
        budget.fetch_add(
            expired.len() + usize::from(taken.is_some()),
            Ordering::Relaxed,
        );
        drop(expired);
        taken
    }

    /// Keeps `store` and `instance` for the next request when the plugin's
    /// `reuse` allows it; drops them otherwise.
    pub fn keep(
        self: &Arc<Self>,
        shared: &PluginShared,
        store: Store<Ctx>,
        instance: Instance,
        guests: Guests,
        served: u32,
    ) {
        let Some(reuse) = shared.limits.reuse.as_ref() else {
            return;
        };
        if served >= reuse.max_requests
            || store.data().limits.peak_memory > reuse.max_memory_bytes(&shared.limits)
        {
            return;
        }
        let budget = &self.host.warm_budget;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= super::warm_per_plugin()
            || budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            drop(idle);
            return;
        }
        idle.push(Warm {
            store,
            instance,
            guests,
            served,
            idle_since: Instant::now(),
        });
        drop(idle);
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            let every = Duration::from_millis((reuse.max_idle_ms / 2).max(100));
            let max_idle = Duration::from_millis(reuse.max_idle_ms);
            tokio::spawn(sweep(Arc::downgrade(self), every, max_idle));
        }
    }
}

/// Drops instances idle for longer than `max_idle`, until the plugin is gone.
async fn sweep(pool: Weak<Pool>, every: Duration, max_idle: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let expired: Vec<Warm> = {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (old, fresh): (Vec<Warm>, Vec<Warm>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|w| w.idle_since.elapsed() > max_idle);
            *idle = fresh;
            old
        };
        pool.host
            .warm_budget
            .fetch_add(expired.len(), Ordering::Relaxed);
    }
}
