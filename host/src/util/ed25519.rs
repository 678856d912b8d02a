//! Ed25519 public keys in their one text form, `ed25519:<base64>` (standard
//! alphabet, padded: 44 characters for the 32 bytes), as `wasmgate package
//! keygen` prints them, `trust.keys` lists them and `wasmgate package
//! inspect` shows them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The prefix naming the algorithm.
const PREFIX: &str = "ed25519:";

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key whose raw bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<PublicKey, String> {
        let shown = crate::util::text::shown(s, 80);
        let b64 = s.strip_prefix(PREFIX).ok_or_else(|| {
            format!(
                "`{shown}` is not a public key: expected `ed25519:` and 44 characters of base64"
            )
        })?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| format!("`{shown}` is not a public key: its base64 is invalid ({e})"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "`{shown}` is not a public key: an Ed25519 key is 32 bytes, this is {}",
                b.len()
            )
        })?;
        Ok(PublicKey(bytes))
    }
}

impl TryFrom<String> for PublicKey {
    type Error = String;

    fn try_from(s: String) -> Result<PublicKey, String> {
        s.parse()
    }
}

impl From<PublicKey> for String {
    fn from(k: PublicKey) -> String {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    #[test]
    fn the_text_form_round_trips_and_verifies() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = PublicKey::from_bytes(pair.public_key().as_ref().try_into().unwrap());
        let text = key.to_string();
        assert!(
            text.starts_with("ed25519:") && text.len() == 8 + 44,
            "{text}"
        );
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        let sig = pair.sign(b"message");
        assert!(key.verifies(b"message", sig.as_ref()));
        assert!(!key.verifies(b"messagE", sig.as_ref()));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let short = format!("ed25519:{}", STANDARD.encode([1u8; 31]));
        for (text, needle) in [
            ("", "expected `ed25519:`"),
            ("rsa:AAAA", "expected `ed25519:`"),
            ("ed25519:not base64!", "base64 is invalid"),
            (short.as_str(), "32 bytes, this is 31"),
        ] {
            let e = text.parse::<PublicKey>().unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
