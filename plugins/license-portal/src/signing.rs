//! The signed envelope `{alg, key_id, payload, signature}` shared by license
//! files and release manifests: plain Ed25519 over the exact payload bytes
//! (a UTF-8 JSON object whose `type` says which of the two it is), and the
//! signing keys themselves.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use serde_json::json;
use std::cmp::Reverse;

use wasmgate_sdk::{Error, Request, Response, crypto, kv};

use crate::paging;
use crate::store::{self, ACTIVE_KEY, SIGNING_PREFIX, SigningRecord};

pub const ALG: &str = "ed25519";

/// First 8 bytes of SHA-256(public key), lower-case hex.
pub fn key_id(public_key: &[u8]) -> String {
    crypto::hex(&crypto::sha256(public_key)[..8])
}

/// The signing key in use, if the operator has created one.
pub struct Active {
    pub key_id: String,
    key: SigningKey,
}

impl Active {
    pub fn load() -> Result<Option<Active>, Error> {
        let Some(id) = kv::get(ACTIVE_KEY)? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let Some(record) = kv::get_json::<SigningRecord>(&format!("{SIGNING_PREFIX}{id}"))? else {
            return Err(Error::internal("the active signing key is missing"));
        };
        let seed: [u8; 32] = B64
            .decode(&record.seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::internal("the active signing key is corrupt"))?;
        Ok(Some(Active {
            key_id: record.key_id,
            key: SigningKey::from_bytes(&seed),
        }))
    }

    /// The envelope of `payload`, serialised exactly once: those bytes are
    /// what the signature covers.
    pub fn seal<T: Serialize>(&self, payload: &T) -> Result<serde_json::Value, Error> {
        let bytes =
            serde_json::to_vec(payload).map_err(|e| Error::internal(format!("encoding: {e}")))?;
        let signature = self.key.sign(&bytes);
        Ok(json!({
            "alg": ALG,
            "key_id": self.key_id,
            "payload": B64.encode(&bytes),
            "signature": B64.encode(signature.to_bytes()),
        }))
    }
}

/// Makes a new signing key from the host's OS random generator and makes it
/// the active one. The seed is stored, never returned.
pub fn generate() -> Result<serde_json::Value, Error> {
    let seed: [u8; 32] = crypto::random_bytes(32)
        .try_into()
        .map_err(|_| Error::internal("the host returned a short random buffer"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    let record = SigningRecord {
        key_id: key_id(&public),
        public_key: B64.encode(public),
        seed: B64.encode(seed),
        created_at: store::now(),
    };
    kv::transaction(|t| {
        t.set_json(&format!("{SIGNING_PREFIX}{}", record.key_id), &record)?;
        t.set(ACTIVE_KEY, record.key_id.as_bytes())
    })?;
    Ok(public_view(&record, true))
}

/// Where a signing key is in the list: newest first, then by key id.
type Order = (Reverse<u64>, String);

fn order(r: &SigningRecord) -> Order {
    (Reverse(r.created_at), r.key_id.clone())
}

fn record(key_id: &str) -> Result<Option<SigningRecord>, Error> {
    kv::get_json::<SigningRecord>(&format!("{SIGNING_PREFIX}{key_id}"))
}

/// `{"keys":[...],"success":true}`: every signing key's public part,
/// newest first; pages with `limit` and `cursor` (a key id).
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = match paging::paging(req) {
        Ok(p) => p,
        Err(refused) => return Ok(refused),
    };
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) => match record(c)? {
            Some(r) => Some(order(&r)),
            None => return Ok(paging::bad_cursor()),
        },
        None => None,
    };
    let active = kv::get(ACTIVE_KEY)?.map(|v| String::from_utf8_lossy(&v).into_owned());
    let mut items = Vec::new();
    paging::walk(SIGNING_PREFIX, paging::MAX_LIMIT as u32, |key, value| {
        let r: SigningRecord =
            serde_json::from_slice(value).map_err(|e| Error::internal(format!("{key}: {e}")))?;
        items.push((order(&r), r.key_id));
        Ok(())
    })?;
    paging::sorted(
        "keys",
        paging.as_ref(),
        items,
        after,
        |_, id| id.to_string(),
        |id| Ok(record(id)?.map(|r| public_view(&r, active.as_deref() == Some(r.key_id.as_str())))),
    )
}

fn public_view(r: &SigningRecord, active: bool) -> serde_json::Value {
    json!({
        "key_id": r.key_id,
        "alg": ALG,
        "public_key": r.public_key,
        "created_at": r.created_at,
        "active": active,
    })
}
