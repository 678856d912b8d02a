//! `ratelimit`: fixed-window counters per plugin and bucket, in host memory.
//!
//! Counters do not survive a restart; a window is at most a few minutes in
//! practice, so a restart costs a client at most one fresh window.

use std::collections::HashMap;
use std::sync::Mutex;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, unix_now_ms};
use crate::bindings::ratelimit::{Decision, Host};
use crate::runtime::Ctx;

pub const CAP: Capability = Capability {
    name: "ratelimit",
    granted: |g| g.ratelimit,
    add_to_linker: |l: &mut Linker<Ctx>| crate::bindings::ratelimit::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c),
};

/// Buckets beyond this many per host trigger a sweep of expired windows, so
/// a plugin minting bucket names cannot grow host memory without bound.
const SWEEP_AT: usize = 100_000;
/// The longest bucket name kept; longer names are hashed down to it.
const MAX_BUCKET_BYTES: usize = 256;

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<(String, String), Window>>,
}

struct Window {
    start_ms: u64,
    len_ms: u64,
    count: u32,
}

impl RateLimiter {
    /// Counts one hit at `now_ms`.
    pub fn check(&self, plugin: &str, bucket: &str, limit: u32, window_ms: u64, now_ms: u64) -> Decision {
        let window_ms = window_ms.max(1);
        let bucket = if bucket.len() > MAX_BUCKET_BYTES {
            crate::caps::crypto::hex(ring::digest::digest(&ring::digest::SHA256, bucket.as_bytes()).as_ref())
        } else {
            bucket.to_string()
        };
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, w| w.start_ms + w.len_ms > now_ms);
        }
        let w = windows.entry((plugin.to_string(), bucket)).or_insert(Window {
            start_ms: now_ms,
            len_ms: window_ms,
            count: 0,
        });
        if now_ms >= w.start_ms + w.len_ms || w.len_ms != window_ms {
            *w = Window {
                start_ms: now_ms,
                len_ms: window_ms,
                count: 0,
            };
        }
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
}

impl Host for Ctx {
    fn check(&mut self, bucket: String, limit: u32, window_ms: u64) -> wasmtime::Result<Decision> {
        if !self.plugin.grants.ratelimit {
            return Ok(Decision { allowed: false, limit, remaining: 0, reset_at: 0 });
        }
        Ok(self.plugin.host.ratelimiter.check(&self.plugin.name, &bucket, limit, window_ms, unix_now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_limit_then_refuses_until_it_ends() {
        let rl = RateLimiter::default();
        for left in (0..3).rev() {
            let d = rl.check("p", "b", 3, 60_000, 1_000_000);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.reset_at, 1_060);
        }
        assert!(!rl.check("p", "b", 3, 60_000, 1_030_000).allowed);
        let d = rl.check("p", "b", 3, 60_000, 1_060_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn buckets_and_plugins_are_counted_apart() {
        let rl = RateLimiter::default();
        assert!(rl.check("p", "a", 1, 1000, 0).allowed);
        assert!(!rl.check("p", "a", 1, 1000, 0).allowed);
        assert!(rl.check("p", "b", 1, 1000, 0).allowed);
        assert!(rl.check("q", "a", 1, 1000, 0).allowed);
    }
}
