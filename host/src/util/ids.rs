//! Random bytes, hex, and request ids.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::{SecureRandom, SystemRandom};

/// The OS random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed")]
pub struct RandomFailed;

/// `n` bytes from the OS RNG.
pub fn random(n: usize) -> Result<Vec<u8>, RandomFailed> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RandomFailed)?;
    Ok(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A process-unique request id: a random prefix and a counter.
pub fn request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        random(4)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    });
    format!(
        "{prefix:08x}{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}
