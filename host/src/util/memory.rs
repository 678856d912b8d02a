//! Giving freed heap memory back to the system (`memory.release_freed`).
//!
//! glibc's allocator keeps what a burst freed (thousands of connections'
//! buffers, a 14 MB answer) in its arenas for reuse, one arena per thread
//! up to eight per CPU: the process's RSS stays at its peak. Here the arenas
//! are limited to two and trimmed every few seconds. musl's allocator
//! unmaps freed memory by itself; there this does nothing.

use std::time::Duration;

/// How often freed memory is given back.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Limits the allocator's arenas (call before the threads that would each
/// get one are busy).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free memory at the top of every arena and the free pages
/// inside them to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every [`PERIOD`] until `stop`.
pub async fn trim_until(mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // It walks the heap: off the executor threads.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            _ = super::shutdown::stopped(&mut stop) => return,
        }
    }
}
