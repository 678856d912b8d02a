//! `ratelimit`: fixed-window counters per plugin and bucket, in host memory.
//!
//! Counters do not survive a restart; a window is at most a few minutes in
//! practice, so a restart costs a client at most one fresh window. Each
//! plugin has its own counters, sharded, with windows dropped a few at a
//! time as they end: a check costs the same with ten buckets or fifty
//! thousand, and one plugin's buckets never slow another's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::{HasData, Linker};

use super::wit::ratelimit::{Decision, Host};
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv};
use crate::util::time::unix_now_ms;

pub struct RateLimit;

impl Capability for RateLimit {
    const NAME: &'static str = "ratelimit";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = ();
    type PluginState = RateLimiter;

    fn state(_: &HostEnv) {}

    fn plugin_state(_: &PluginEnv<'_>, _: &bool) -> RateLimiter {
        RateLimiter::default()
    }

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::ratelimit::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's counters.
pub struct View<'a> {
    plugin: &'a PluginCaps,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
        }
    }
}

/// Live buckets one plugin may have. Past it, a check on a new bucket
/// counts in one of [`OVERFLOW_BUCKETS`] shared buckets chosen by the name's
/// hash: limits stay enforced (more strictly, the names sharing a count)
/// while host memory stays bounded, whatever names a plugin mints.
pub const MAX_BUCKETS: usize = 50_000;
/// Shared buckets for names past [`MAX_BUCKETS`].
pub const OVERFLOW_BUCKETS: u64 = 1024;
/// The longest bucket name kept; longer names are hashed down to it.
const MAX_BUCKET_BYTES: usize = 256;
/// Locks a check takes one of; they spread contention between buckets.
const SHARDS: usize = 16;
/// Expired windows removed per check, at most: the cost of a check does not
/// grow with the number of buckets.
const EXPIRE_PER_CHECK: usize = 8;

/// One plugin's counters.
pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    live: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    windows: HashMap<String, Window>,
    /// Window ends, soonest first, to drop windows once they are over. An
    /// entry whose window was reset since is stale and skipped.
    ends: BinaryHeap<Reverse<(u64, String)>>,
}

struct Window {
    start_ms: u64,
    len_ms: u64,
    count: u32,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            live: AtomicUsize::new(0),
        }
    }
}

impl RateLimiter {
    /// Counts one hit at `now_ms`.
    pub fn check(&self, bucket: &str, limit: u32, window_ms: u64, now_ms: u64) -> Decision {
        let window_ms = window_ms.max(1);
        let mut bucket = if bucket.len() > MAX_BUCKET_BYTES {
            crate::util::ids::hex(
                ring::digest::digest(&ring::digest::SHA256, bucket.as_bytes()).as_ref(),
            )
        } else {
            bucket.to_string()
        };
        let hash = self.hasher.hash_one(&bucket);
        let mut shard = self.shard(hash);
        self.expire(&mut shard, now_ms);
        if !shard.windows.contains_key(&bucket) && self.live.load(Ordering::Relaxed) >= MAX_BUCKETS
        {
            // A plugin that names one of these itself only shares its count.
            let overflow = format!("\0overflow/{}", hash % OVERFLOW_BUCKETS);
            let overflow_hash = self.hasher.hash_one(&overflow);
            drop(shard);
            bucket = overflow;
            shard = self.shard(overflow_hash);
        }
        let fresh = Window {
            start_ms: now_ms,
            len_ms: window_ms,
            count: 0,
        };
        let w = match shard.windows.get_mut(&bucket) {
            Some(w) if now_ms < w.start_ms + w.len_ms && w.len_ms == window_ms => w,
            Some(w) => {
                *w = fresh;
                shard
                    .ends
                    .push(Reverse((now_ms + window_ms, bucket.clone())));
                shard.windows.get_mut(&bucket).expect("present")
            }
            None => {
                self.live.fetch_add(1, Ordering::Relaxed);
                shard
                    .ends
                    .push(Reverse((now_ms + window_ms, bucket.clone())));
                shard.windows.entry(bucket).or_insert(fresh)
            }
        };
        let allowed = w.count < limit;
        if allowed {
            w.count += 1;
        }
        Decision {
            allowed,
            limit,
            remaining: limit - w.count.min(limit),
            reset_at: (w.start_ms + w.len_ms).div_ceil(1000),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Drops up to [`EXPIRE_PER_CHECK`] windows that are over.
    fn expire(&self, shard: &mut Shard, now_ms: u64) {
        for _ in 0..EXPIRE_PER_CHECK {
            match shard.ends.peek() {
                Some(Reverse((end, _))) if *end <= now_ms => {}
                _ => return,
            }
            let Some(Reverse((end, name))) = shard.ends.pop() else {
                return;
            };
            let over = shard
                .windows
                .get(&name)
                .is_some_and(|w| w.start_ms + w.len_ms == end);
            if over {
                shard.windows.remove(&name);
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Live buckets.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

impl Host for View<'_> {
    fn check(&mut self, bucket: String, limit: u32, window_ms: u64) -> wasmtime::Result<Decision> {
        if !self.plugin.grants.ratelimit {
            return Err(self.plugin.not_granted(RateLimit::NAME));
        }
        Ok(self
            .plugin
            .states
            .ratelimit
            .check(&bucket, limit, window_ms, unix_now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_grant_a_check_traps() {
        use crate::caps::Grants;
        use crate::caps::testing::Fixture;
        let mut f = Fixture::new("p", Grants::default());
        assert!(Host::check(&mut View::new(f.call()), "b".into(), 1, 1000).is_err());
        let mut f = Fixture::new(
            "p",
            Grants {
                ratelimit: true,
                ..Grants::default()
            },
        );
        assert!(
            Host::check(&mut View::new(f.call()), "b".into(), 1, 1000)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn a_window_allows_its_limit_then_refuses_until_it_ends() {
        let rl = RateLimiter::default();
        for left in (0..3).rev() {
            let d = rl.check("b", 3, 60_000, 1_000_000);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.reset_at, 1_060);
        }
        assert!(!rl.check("b", 3, 60_000, 1_030_000).allowed);
        let d = rl.check("b", 3, 60_000, 1_060_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn buckets_are_counted_apart() {
        let rl = RateLimiter::default();
        assert!(rl.check("a", 1, 1000, 0).allowed);
        assert!(!rl.check("a", 1, 1000, 0).allowed);
        assert!(rl.check("b", 1, 1000, 0).allowed);
        // Another plugin has a limiter of its own.
        assert!(RateLimiter::default().check("a", 1, 1000, 0).allowed);
    }

    #[test]
    fn ended_windows_are_dropped_as_checks_go_on() {
        let rl = RateLimiter::default();
        for i in 0..1000 {
            rl.check(&format!("b{i}"), 5, 1000, 0);
        }
        assert_eq!(rl.live(), 1000);
        // Every later check drops a few ended windows in its shard.
        for i in 0..2000 {
            rl.check(&format!("c{}", i % 200), 5, 100_000, 2000 + i);
        }
        assert_eq!(rl.live(), 200, "only the live windows are left")
    }

    #[test]
    fn past_the_cap_new_names_share_overflow_buckets_and_memory_stays_bounded() {
        let rl = RateLimiter::default();
        for i in 0..MAX_BUCKETS + 10_000 {
            let d = rl.check(&format!("user{i}"), 1, 60_000, 0);
            assert!(d.limit == 1);
        }
        assert!(
            rl.live() <= MAX_BUCKETS + OVERFLOW_BUCKETS as usize,
            "{}",
            rl.live()
        );
        // Names past the cap are still limited: each overflow bucket allows
        // one hit per window, so most of 10,000 new names are refused.
        let allowed = (0..10_000)
            .filter(|i| rl.check(&format!("late{i}"), 1, 60_000, 0).allowed)
            .count();
        assert!(allowed <= OVERFLOW_BUCKETS as usize, "{allowed}");
        // A bucket from before the cap keeps its own count.
        assert!(!rl.check("user0", 1, 60_000, 0).allowed);
        assert!(rl.check("user0", 1, 60_000, 60_000).allowed);
    }
}
