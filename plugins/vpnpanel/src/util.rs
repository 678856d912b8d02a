//! Small helpers of every layer: the clock, the host's RNG as hex, and
//! constant-time equality of secrets.

use wasmgate_sdk::crypto;

/// Unix seconds now.
pub use wasmgate_sdk::time::now_secs;

/// `n` random bytes as lower-case hex (2n characters), from the host's RNG.
pub fn random_hex(n: u32) -> String {
    crypto::hex(&crypto::random_bytes(n))
}

/// Equality of two secrets in constant time.
pub fn secret_eq(a: &str, b: &str) -> bool {
    crypto::constant_time_eq(a.as_bytes(), b.as_bytes())
}
