//! Fixed-window rate limiting counted by the host (grant `ratelimit`).

use std::time::Duration;

use crate::Error;
use crate::bindings::wasmgate::plugin::ratelimit as raw;

pub use raw::Decision;

/// Counts one request against `bucket`.
pub fn check(bucket: &str, limit: u32, window: Duration) -> Decision {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    raw::check(bucket, limit, window_ms)
}

/// [`check`], answering 429 `{"error":"rate limit exceeded"}` when the
/// request is over the limit.
pub fn enforce(bucket: &str, limit: u32, window: Duration) -> Result<Decision, Error> {
    let decision = check(bucket, limit, window);
    if decision.allowed {
        Ok(decision)
    } else {
        Err(Error::too_many_requests("rate limit exceeded"))
    }
}
