//! Bounding a host call that waits (netlink, a UAPI socket, an HTTP
//! exchange, a thread of the blocking pool).
//!
//! While a call waits, no wasm runs, so the epoch callback that enforces the
//! request's `timeout_ms` cannot fire: the call bounds its own wait by the
//! request's deadline, and running into it traps the call as a deadline,
//! like wasm code running past it. A capability also has a timeout of its
//! own (a kernel that does not answer), which is its error to report.

use std::future::Future;
use std::time::{Duration, Instant};

/// Raised when a call runs past its request's deadline; the runtime turns
/// it into a 504.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// Runs `work` for at most `own` and at most until `deadline`: `Ok(Some)`
/// with its output, `Ok(None)` when `own` ran out first, `Err` when the
/// deadline came first.
pub async fn bound<T>(
    deadline: Instant,
    own: Duration,
    work: impl Future<Output = T>,
) -> Result<Option<T>, DeadlineExceeded> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(DeadlineExceeded);
    }
    if left <= own {
        return tokio::time::timeout(left, work)
            .await
            .map(Some)
            .map_err(|_| DeadlineExceeded);
    }
    Ok(tokio::time::timeout(own, work).await.ok())
}

/// Runs `work` until `deadline` at most.
pub async fn until<T>(
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Result<T, DeadlineExceeded> {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, work)
        .await
        .map_err(|_| DeadlineExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_nearer_of_the_two_bounds_wins() {
        let soon = Instant::now() + Duration::from_millis(20);
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert!(
            bound(soon, Duration::from_secs(1), slow).await.is_err(),
            "the deadline"
        );
        let later = Instant::now() + Duration::from_secs(10);
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert!(
            matches!(
                bound(later, Duration::from_millis(20), slow).await,
                Ok(None)
            ),
            "its own timeout"
        );
        assert_eq!(
            bound(later, Duration::from_secs(1), async { 7 })
                .await
                .unwrap(),
            Some(7)
        );
        assert!(
            bound(Instant::now(), Duration::from_secs(1), async { 7 })
                .await
                .is_err(),
            "already past"
        );
    }
}
