//! Keys: X25519 key pairs from the OS RNG, and their encodings (base64 in the WIT, hex in UAPI).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// Keys

/// A fresh X25519 private key, clamped as `wg genkey` prints it.
pub(super) fn new_private_key() -> wasmtime::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    key.copy_from_slice(&crate::util::ids::random(32)?);
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    Ok(key)
}

pub(super) fn public_of(private: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

pub(super) fn encode_key(key: &[u8; 32]) -> String {
    BASE64.encode(key)
}

/// A base64 key of 32 bytes; `what` names it in the error.
pub(super) fn decode_key(what: &str, text: &str) -> Result<[u8; 32], Error> {
    BASE64
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| Error::Invalid(format!("{what} is not the base64 of 32 bytes")))
}

pub(super) fn hex_key(key: &[u8; 32]) -> String {
    crate::util::ids::hex(key)
}

pub(super) fn unhex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
