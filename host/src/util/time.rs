//! Unix time.

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// The current Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
