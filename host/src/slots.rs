//! Instance slots: how many plugin instances may be alive at once, shared
//! fairly between plugins, with a bounded wait.
//!
//! The pool has `runtime.max_instances` slots. A request or job takes one for
//! as long as its instance lives, including while it waits inside a host
//! call (an `outbound` request to another plugin on the same host, say). So
//! that such a wait can never starve the plugin it waits for:
//! 1. a plugin that holds no slot may take any free one;
//! 2. a plugin that already holds one may take another only while one stays
//!    free for every other plugin that holds none, and only up to its own
//!    `limits.max_concurrency`;
//! 3. a request that cannot take a slot queues behind its plugin's earlier
//!    ones (at most `limits.max_queue` of them) for at most
//!    `limits.queue_timeout_ms`, then is answered 503;
//! 4. a freed slot goes to the plugins' queues in turn (round robin), so one
//!    busy plugin cannot keep the others' queues waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The plugin's queue is full.
    #[error("too many requests waiting for this plugin")]
    QueueFull,
    /// No slot came free within the plugin's `queue_timeout_ms`.
    #[error("no instance came free in time")]
    Timeout,
}

/// What the pool knows about one plugin.
struct PluginSlots {
    in_use: usize,
    max: usize,
    max_queue: usize,
    /// Waiters in arrival order: (ticket, where to hand the slot).
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

struct State {
    free: usize,
    plugins: Vec<PluginSlots>,
    next_ticket: u64,
    /// Where the round robin over queues starts next.
    turn: usize,
}

/// The pool. Plugins are registered once, in load order, and known by index.
pub struct Slots {
    state: Mutex<State>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    plugin: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.plugin);
    }
}

impl Slots {
    pub fn new(total: usize) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(State {
                free: total,
                plugins: Vec::new(),
                next_ticket: 0,
                turn: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a plugin; `max_concurrency` of `None` means no cap of its own.
    pub fn register(&self, max_concurrency: Option<u32>, max_queue: u32) -> usize {
        let mut s = self.lock();
        s.plugins.push(PluginSlots {
            in_use: 0,
            max: max_concurrency.map_or(usize::MAX, |n| n as usize),
            max_queue: max_queue as usize,
            waiting: VecDeque::new(),
        });
        s.plugins.len() - 1
    }

    /// Takes a slot for `plugin`, waiting at most `timeout`.
    pub async fn acquire(
        self: &Arc<Self>,
        plugin: usize,
        timeout: Duration,
    ) -> Result<Slot, SlotError> {
        let (ticket, rx) = {
            let mut s = self.lock();
            if s.plugins[plugin].waiting.is_empty() && s.may_take(plugin) {
                s.take(plugin);
                return Ok(Slot {
                    slots: self.clone(),
                    plugin,
                });
            }
            if s.plugins[plugin].waiting.len() >= s.plugins[plugin].max_queue {
                return Err(SlotError::QueueFull);
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            s.plugins[plugin].waiting.push_back((ticket, tx));
            // Its predecessors may have left the queue since the last hand-out.
            s.hand_out();
            (ticket, rx)
        };
        let mut waiter = Waiter {
            slots: self,
            plugin,
            ticket,
            rx: Some(rx),
        };
        let rx = waiter.rx.as_mut().expect("set above");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => {
                waiter.rx = None;
                Ok(Slot {
                    slots: self.clone(),
                    plugin,
                })
            }
            // The sender is only dropped with the pool itself.
            Ok(Err(_)) | Err(_) => Err(SlotError::Timeout),
        }
    }

    fn release(&self, plugin: usize) {
        let mut s = self.lock();
        s.plugins[plugin].in_use -= 1;
        s.free += 1;
        s.hand_out();
    }

    /// Slots in use by `plugin`, for `/plugins` and tests.
    pub fn in_use(&self, plugin: usize) -> usize {
        self.lock().plugins[plugin].in_use
    }

    /// Requests waiting for `plugin`.
    pub fn waiting(&self, plugin: usize) -> usize {
        self.lock().plugins[plugin].waiting.len()
    }
}

impl State {
    fn may_take(&self, plugin: usize) -> bool {
        let p = &self.plugins[plugin];
        if self.free == 0 || p.in_use >= p.max {
            return false;
        }
        if p.in_use == 0 {
            return true;
        }
        let idle_others = self
            .plugins
            .iter()
            .enumerate()
            .filter(|(i, q)| *i != plugin && q.in_use == 0)
            .count();
        self.free > idle_others
    }

    fn take(&mut self, plugin: usize) {
        self.free -= 1;
        self.plugins[plugin].in_use += 1;
    }

    /// Gives free slots to waiters, one plugin's queue at a time in turn,
    /// until no waiter may take one.
    fn hand_out(&mut self) {
        let n = self.plugins.len();
        loop {
            let mut progressed = false;
            for k in 0..n {
                let i = (self.turn + k) % n;
                while !self.plugins[i].waiting.is_empty() && self.may_take(i) {
                    let (_, tx) = self.plugins[i].waiting.pop_front().expect("not empty");
                    self.take(i);
                    if tx.send(()).is_ok() {
                        self.turn = (i + 1) % n;
                        progressed = true;
                        break;
                    }
                    // The waiter gave up in the same instant: undo and go on.
                    self.plugins[i].in_use -= 1;
                    self.free += 1;
                }
            }
            if !progressed || self.free == 0 {
                return;
            }
        }
    }
}

/// A queued request; leaving the queue without a slot (timeout, the
/// request dropped) removes it, and gives back a slot handed over in the
/// same instant.
struct Waiter<'a> {
    slots: &'a Arc<Slots>,
    plugin: usize,
    ticket: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut s = self.slots.lock();
        let before = s.plugins[self.plugin].waiting.len();
        s.plugins[self.plugin]
            .waiting
            .retain(|(t, _)| *t != self.ticket);
        if s.plugins[self.plugin].waiting.len() == before && rx.try_recv().is_ok() {
            // Handed a slot after the timeout fired: free it for the next.
            s.plugins[self.plugin].in_use -= 1;
            s.free += 1;
            s.hand_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_busy_plugin_leaves_a_slot_for_each_idle_one() {
        let slots = Slots::new(3);
        let (a, b, c) = (
            slots.register(None, 8),
            slots.register(None, 8),
            slots.register(None, 8),
        );
        let a1 = slots.acquire(a, WAIT).await.unwrap();
        // Two slots left, two idle plugins: `a` may not take a second.
        assert_eq!(slots.acquire(a, WAIT).await.err(), Some(SlotError::Timeout));
        let _b1 = slots.acquire(b, WAIT).await.unwrap();
        // One left, one idle plugin (`c`): still no second for `a`.
        assert_eq!(slots.acquire(a, WAIT).await.err(), Some(SlotError::Timeout));
        let _c1 = slots.acquire(c, WAIT).await.unwrap();
        drop(a1);
        assert_eq!(slots.in_use(a), 0);
        let _a = slots.acquire(a, WAIT).await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_plugin_may_use_every_slot_but_its_own_cap() {
        let slots = Slots::new(4);
        let a = slots.register(Some(3), 8);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slots.acquire(a, WAIT).await.unwrap());
        }
        assert_eq!(
            slots.acquire(a, WAIT).await.err(),
            Some(SlotError::Timeout),
            "its max_concurrency"
        );
    }

    #[tokio::test]
    async fn a_full_queue_answers_at_once_and_a_timed_out_waiter_leaves_it() {
        let slots = Slots::new(1);
        let a = slots.register(None, 1);
        let held = slots.acquire(a, WAIT).await.unwrap();
        let s2 = slots.clone();
        let waiting =
            tokio::spawn(async move { s2.acquire(a, Duration::from_secs(5)).await.map(|_| ()) });
        while slots.waiting(a) == 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        assert_eq!(
            slots.acquire(a, Duration::from_secs(5)).await.err(),
            Some(SlotError::QueueFull)
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused without waiting"
        );
        drop(held);
        assert_eq!(
            waiting.await.unwrap(),
            Ok(()),
            "the queued request got the freed slot"
        );
        assert_eq!(slots.in_use(a), 0, "and freed it when done");
        assert_eq!(slots.acquire(a, WAIT).await.err(), None);
    }

    #[tokio::test]
    async fn freed_slots_go_to_the_plugins_queues_in_turn() {
        let slots = Slots::new(2);
        let (a, b) = (slots.register(None, 64), slots.register(None, 64));
        let a1 = slots.acquire(a, WAIT).await.unwrap();
        let b1 = slots.acquire(b, WAIT).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (plugin, label) in [(a, "a"), (a, "a"), (a, "a"), (b, "b")] {
            let (pool, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = pool.acquire(plugin, Duration::from_secs(5)).await.unwrap();
                order.lock().unwrap().push(label);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            while slots.waiting(plugin) == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(a1);
        drop(b1);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 4);
        assert!(
            order[..2].contains(&"b"),
            "b's one waiter is not left behind a's queue: {order:?}"
        );
    }
}
