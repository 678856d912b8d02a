//! Signed documents from the license portal: licenses and release
//! manifests share one envelope (`/tmp/spec/license-portal.md`, mirrored in
//! the README):
//!
//! ```json
//! {"alg":"ed25519","key_id":"9f86d081884c7d65","payload":"<base64>","signature":"<base64>"}
//! ```
//!
//! The signature covers exactly the decoded payload bytes. [`open`] checks, in
//! this order: the envelope parses, `alg` is ed25519 (anything else is
//! refused), `key_id` is trusted, both base64 fields decode, the signature
//! verifies — and only then parses the payload, whose `alg`, `key_id` and
//! `type` must match. Nothing of the payload is looked at before its
//! signature is checked.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

/// The only algorithm accepted.
pub const ALG: &str = "ed25519";

/// A public key the panel trusts, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key_id: String,
    pub public_key: Vec<u8>,
}

/// Why a signed document was refused. Each maps to a code the client sees,
/// with the document's kind (`LICENSE_...` or `UPDATE_...`) in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not the envelope: not JSON, a field missing or not a string, bad base64.
    Malformed(String),
    /// `alg` is not ed25519.
    UnsupportedAlgorithm(String),
    /// `key_id` names no trusted key.
    UnknownKey(String),
    /// The signature does not verify with the named key: forged or tampered.
    BadSignature,
    /// Verified, but the payload is not a JSON object, or its `alg`/`key_id`
    /// differ from the envelope's.
    BadPayload(String),
    /// Verified, but it is another kind of document (a release manifest
    /// offered as a license, or the reverse).
    WrongType(String),
}

impl Refusal {
    pub fn message(&self, what: &str) -> String {
        match self {
            Refusal::Malformed(why) => format!("The {what} is malformed: {why}"),
            Refusal::UnsupportedAlgorithm(alg) => {
                format!(
                    "The {what} uses an unsupported signature algorithm {alg:?}; only ed25519 is accepted"
                )
            }
            Refusal::UnknownKey(id) => format!("The {what} is signed with an unknown key {id:?}"),
            Refusal::BadSignature => {
                format!("The {what}'s signature is invalid: it was forged or tampered with")
            }
            Refusal::BadPayload(why) => format!("The {what}'s payload is invalid: {why}"),
            Refusal::WrongType(t) => format!("The document is a {t:?}, not a {what}"),
        }
    }
}

/// An opened document: its verified payload and the key that signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub key_id: String,
    pub payload: Map<String, Value>,
}

/// Verifies `document` (the envelope's JSON text) against `trusted` with
/// `verify(public_key, message, signature)` and returns its payload, which
/// must have `type == expected_type`.
pub fn open(
    document: &[u8],
    trusted: &[TrustedKey],
    expected_type: &str,
    verify: impl Fn(&[u8], &[u8], &[u8]) -> bool,
) -> Result<Opened, Refusal> {
    let envelope: Map<String, Value> = match serde_json::from_slice(document) {
        Ok(Value::Object(m)) => m,
        _ => return Err(Refusal::Malformed("not a JSON object".into())),
    };
    let field = |name: &str| -> Result<&str, Refusal> {
        envelope
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Malformed(format!("{name} is missing or not a string")))
    };
    let alg = field("alg")?;
    if alg != ALG {
        return Err(Refusal::UnsupportedAlgorithm(alg.to_string()));
    }
    let key_id = field("key_id")?;
    let key = trusted
        .iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| Refusal::UnknownKey(key_id.to_string()))?;
    let payload = B64
        .decode(field("payload")?)
        .map_err(|_| Refusal::Malformed("payload is not base64".into()))?;
    let signature = B64
        .decode(field("signature")?)
        .map_err(|_| Refusal::Malformed("signature is not base64".into()))?;
    if signature.len() != 64 || !verify(&key.public_key, &payload, &signature) {
        return Err(Refusal::BadSignature);
    }
    // Only now is the payload trusted enough to parse.
    let payload: Map<String, Value> = match serde_json::from_slice(&payload) {
        Ok(Value::Object(m)) => m,
        _ => return Err(Refusal::BadPayload("not a JSON object".into())),
    };
    for (name, want) in [("alg", alg), ("key_id", key_id)] {
        if payload.get(name).and_then(Value::as_str) != Some(want) {
            return Err(Refusal::BadPayload(format!(
                "its {name} differs from the envelope's"
            )));
        }
    }
    match payload.get("type").and_then(Value::as_str) {
        Some(t) if t == expected_type => {}
        Some(t) => return Err(Refusal::WrongType(t.to_string())),
        None => return Err(Refusal::BadPayload("type is missing".into())),
    }
    Ok(Opened {
        key_id: key_id.to_string(),
        payload,
    })
}

/// The portal's key id: the first 8 bytes of SHA-256(public key), in hex.
pub fn key_id(sha256_of_key: &[u8]) -> String {
    wasmgate_sdk::crypto::hex(&sha256_of_key[..8.min(sha256_of_key.len())])
}

/// Standard base64 with padding, as the portal writes it; tolerates
/// surrounding whitespace.
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A stand-in for Ed25519 in native tests: a "signature" is the key's
    /// first byte followed by 63 copies of the message's length mod 256.
    pub fn fake_sign(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut s = vec![key[0]];
        s.extend(std::iter::repeat_n(msg.len() as u8, 63));
        s
    }

    pub fn fake_verify(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        fake_sign(key, msg) == sig
    }

    pub fn trusted() -> Vec<TrustedKey> {
        vec![TrustedKey {
            key_id: "k1".into(),
            public_key: vec![7; 32],
        }]
    }

    pub fn envelope(payload: &Value, key: &[u8], key_id: &str) -> Vec<u8> {
        let bytes = serde_json::to_vec(payload).unwrap();
        json!({
            "alg": "ed25519",
            "key_id": key_id,
            "payload": B64.encode(&bytes),
            "signature": B64.encode(fake_sign(key, &bytes)),
        })
        .to_string()
        .into_bytes()
    }

    fn doc(t: &str) -> Value {
        json!({ "type": t, "alg": "ed25519", "key_id": "k1", "n": 1 })
    }

    #[test]
    fn a_good_document_opens() {
        let d = envelope(&doc("license"), &[7; 32], "k1");
        let o = open(&d, &trusted(), "license", fake_verify).unwrap();
        assert_eq!(o.payload["n"], 1);
    }

    #[test]
    fn refusals_in_order() {
        let t = trusted();
        let o = |d: &[u8]| open(d, &t, "license", fake_verify).unwrap_err();
        assert!(matches!(o(b"nope"), Refusal::Malformed(_)));
        let mut v: Value =
            serde_json::from_slice(&envelope(&doc("license"), &[7; 32], "k1")).unwrap();
        v["alg"] = json!("rsa");
        assert_eq!(
            o(v.to_string().as_bytes()),
            Refusal::UnsupportedAlgorithm("rsa".into())
        );
        // A key nobody trusts.
        assert_eq!(
            o(&envelope(&doc("license"), &[9; 32], "k9")),
            Refusal::UnknownKey("k9".into())
        );
        // Forged: claims the trusted key, signed with another.
        assert_eq!(
            o(&envelope(&doc("license"), &[9; 32], "k1")),
            Refusal::BadSignature
        );
        // Tampered: the payload changed after signing.
        let mut v: Value =
            serde_json::from_slice(&envelope(&doc("license"), &[7; 32], "k1")).unwrap();
        let mut p = doc("license");
        p["n"] = json!(2000);
        v["payload"] = json!(B64.encode(serde_json::to_vec(&p).unwrap()));
        assert_eq!(o(v.to_string().as_bytes()), Refusal::BadSignature);
        // A release manifest offered as a license.
        assert_eq!(
            o(&envelope(&doc("release"), &[7; 32], "k1")),
            Refusal::WrongType("release".into())
        );
        let mut p = doc("license");
        p["key_id"] = json!("k2");
        assert!(matches!(
            o(&envelope(&p, &[7; 32], "k1")),
            Refusal::BadPayload(_)
        ));
    }
}
