//! `keys`: API keys for a plugin's callers.
//!
//! A secret is 256 bits from the OS RNG, shown once. The host stores only its
//! SHA-256 digest, indexed for lookup; `verify` hashes the presented secret,
//! finds the record, compares digests in constant time and checks expiry on
//! every call.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::ReadableTable;
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use super::crypto::constant_time_eq;
use crate::bindings::keys::{Error, Host, Issued, KeyInfo};
use crate::db::{DbError, KEY_DIGESTS, KEYS};
use crate::runtime::Ctx;
use crate::util::ids::{hex, random};
use crate::util::time::{unix_now, unix_now_ms};

pub const CAP: Capability = Capability {
    name: "keys",
    granted: |g| g.keys,
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::keys::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

const MAX_ROLE_BYTES: usize = 64;
const MAX_LABEL_BYTES: usize = 256;
/// Keys per plugin, so a plugin cannot fill the disk through this capability.
const MAX_KEYS_PER_PLUGIN: usize = 100_000;

/// What is stored per key. Never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub role: String,
    pub label: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Hex SHA-256 of the secret.
    pub digest: String,
}

impl KeyRecord {
    fn info(&self, id: &str) -> KeyInfo {
        KeyInfo {
            id: id.to_string(),
            role: self.role.clone(),
            label: self.label.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

fn storage(e: impl Into<DbError>) -> Error {
    Error::Storage(e.into().to_string())
}

struct KeysWriteError(Error);

impl From<DbError> for KeysWriteError {
    fn from(e: DbError) -> Self {
        KeysWriteError(storage(e))
    }
}

fn check_text(what: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::Invalid(format!("{what} is longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

impl Ctx {
    fn keys_denied(&self) -> Option<Error> {
        (!self.plugin.grants.keys).then_some(Error::Denied)
    }

    fn keys_issue(
        &self,
        role: String,
        label: String,
        expires_at: Option<u64>,
    ) -> wasmtime::Result<Result<Issued, Error>> {
        if let Err(e) = check_text("role", &role, MAX_ROLE_BYTES)
            .and_then(|()| check_text("label", &label, MAX_LABEL_BYTES))
        {
            return Ok(Err(e));
        }
        let now = unix_now();
        if expires_at.is_some_and(|t| t <= now) {
            return Ok(Err(Error::Invalid(
                "expires-at is not in the future".into(),
            )));
        }
        let secret = URL_SAFE_NO_PAD.encode(random(32)?);
        // Time first, so ids sort in issue order.
        let id = format!("{:012x}{}", unix_now_ms(), hex(&random(4)?));
        let digest_bytes = digest(&SHA256, secret.as_bytes());
        let record = KeyRecord {
            role,
            label,
            created_at: now,
            expires_at,
            digest: hex(digest_bytes.as_ref()),
        };
        let json = serde_json::to_vec(&record)?;
        let plugin = self.plugin.name.as_str();
        let r = self
            .plugin
            .host
            .db
            .write(|tx| -> Result<(), KeysWriteError> {
                let mut keys = tx.open_table(KEYS).map_err(DbError::from)?;
                let existing = keys
                    .range((plugin, "")..)
                    .map_err(DbError::from)?
                    .take_while(|r| {
                        r.as_ref()
                            .map(|(k, _)| k.value().0 == plugin)
                            .unwrap_or(false)
                    })
                    .count();
                if existing >= MAX_KEYS_PER_PLUGIN {
                    return Err(KeysWriteError(Error::Invalid(format!(
                        "a plugin holds at most {MAX_KEYS_PER_PLUGIN} keys"
                    ))));
                }
                keys.insert((plugin, id.as_str()), json.as_slice())
                    .map_err(DbError::from)?;
                let mut digests = tx.open_table(KEY_DIGESTS).map_err(DbError::from)?;
                digests
                    .insert(digest_bytes.as_ref(), (plugin, id.as_str()))
                    .map_err(DbError::from)?;
                Ok(())
            });
        Ok(r.map_err(|e| e.0).map(|()| Issued {
            info: record.info(&id),
            secret,
        }))
    }

    fn keys_verify(&self, secret: &str) -> Result<Option<KeyInfo>, Error> {
        let presented = digest(&SHA256, secret.as_bytes());
        let tx = self.plugin.host.db.read().map_err(storage)?;
        let digests = tx.open_table(KEY_DIGESTS).map_err(storage)?;
        let Some(owner) = digests.get(presented.as_ref()).map_err(storage)? else {
            return Ok(None);
        };
        let (plugin, id) = owner.value();
        if plugin != self.plugin.name {
            return Ok(None);
        }
        let keys = tx.open_table(KEYS).map_err(storage)?;
        let Some(raw) = keys.get((plugin, id)).map_err(storage)? else {
            return Ok(None);
        };
        let record: KeyRecord =
            serde_json::from_slice(raw.value()).map_err(|e| Error::Storage(e.to_string()))?;
        if !constant_time_eq(record.digest.as_bytes(), hex(presented.as_ref()).as_bytes()) {
            return Ok(None);
        }
        if record.expires_at.is_some_and(|t| t <= unix_now()) {
            return Ok(None);
        }
        Ok(Some(record.info(id)))
    }
}

impl Host for Ctx {
    fn issue(
        &mut self,
        role: String,
        label: String,
        expires_at: Option<u64>,
    ) -> wasmtime::Result<Result<Issued, Error>> {
        if let Some(e) = self.keys_denied() {
            return Ok(Err(e));
        }
        self.keys_issue(role, label, expires_at)
    }

    fn verify(&mut self, secret: String) -> wasmtime::Result<Result<Option<KeyInfo>, Error>> {
        if let Some(e) = self.keys_denied() {
            return Ok(Err(e));
        }
        Ok(self.keys_verify(&secret))
    }

    fn revoke(&mut self, id: String) -> wasmtime::Result<Result<bool, Error>> {
        if let Some(e) = self.keys_denied() {
            return Ok(Err(e));
        }
        let plugin = self.plugin.name.as_str();
        let r = self
            .plugin
            .host
            .db
            .write(|tx| -> Result<bool, KeysWriteError> {
                let mut keys = tx.open_table(KEYS).map_err(DbError::from)?;
                let Some(raw) = keys.remove((plugin, id.as_str())).map_err(DbError::from)? else {
                    return Ok(false);
                };
                let record: Result<KeyRecord, _> = serde_json::from_slice(raw.value());
                drop(raw);
                if let Ok(record) = record {
                    let digest_bytes: Vec<u8> = (0..record.digest.len() / 2)
                        .filter_map(|i| {
                            u8::from_str_radix(&record.digest[2 * i..2 * i + 2], 16).ok()
                        })
                        .collect();
                    let mut digests = tx.open_table(KEY_DIGESTS).map_err(DbError::from)?;
                    digests
                        .remove(digest_bytes.as_slice())
                        .map_err(DbError::from)?;
                }
                Ok(true)
            });
        Ok(r.map_err(|e| e.0))
    }

    fn list(&mut self) -> wasmtime::Result<Result<Vec<KeyInfo>, Error>> {
        if let Some(e) = self.keys_denied() {
            return Ok(Err(e));
        }
        let plugin = self.plugin.name.as_str();
        let r = (|| {
            let tx = self.plugin.host.db.read().map_err(storage)?;
            let keys = tx.open_table(KEYS).map_err(storage)?;
            let mut out = Vec::new();
            for item in keys.range((plugin, "")..).map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                let (p, id) = k.value();
                if p != plugin {
                    break;
                }
                let record: KeyRecord =
                    serde_json::from_slice(v.value()).map_err(|e| Error::Storage(e.to_string()))?;
                out.push(record.info(id));
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grants;
    use crate::runtime::{test_ctx, test_shared};

    fn keys_only() -> Grants {
        Grants {
            keys: true,
            ..Grants::default()
        }
    }

    #[test]
    fn an_issued_secret_verifies_until_revoked_and_is_stored_only_as_a_digest() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", keys_only());
        let issued = Host::issue(&mut a, "admin".into(), "ci".into(), None)
            .unwrap()
            .unwrap();
        assert!(issued.secret.len() >= 43, "at least 256 bits");
        let info = Host::verify(&mut a, issued.secret.clone())
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((info.role.as_str(), info.label.as_str()), ("admin", "ci"));
        assert!(
            Host::verify(&mut a, "wrong".into())
                .unwrap()
                .unwrap()
                .is_none()
        );

        let tx = host.db.read().unwrap();
        let keys = tx.open_table(KEYS).unwrap();
        for row in keys.iter().unwrap() {
            let (_, v) = row.unwrap();
            let text = String::from_utf8_lossy(v.value()).into_owned();
            assert!(!text.contains(&issued.secret), "the secret is never stored");
        }
        drop((keys, tx));

        let listed = Host::list(&mut a).unwrap().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(Host::revoke(&mut a, info.id.clone()).unwrap().unwrap());
        assert!(
            Host::verify(&mut a, issued.secret)
                .unwrap()
                .unwrap()
                .is_none()
        );
        assert!(!Host::revoke(&mut a, info.id).unwrap().unwrap());
    }

    #[test]
    fn another_plugin_cannot_verify_or_revoke_a_key() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", keys_only());
        let mut b = test_ctx(&host, "b", keys_only());
        let issued = Host::issue(&mut a, "r".into(), "l".into(), None)
            .unwrap()
            .unwrap();
        assert!(
            Host::verify(&mut b, issued.secret.clone())
                .unwrap()
                .unwrap()
                .is_none()
        );
        assert!(
            !Host::revoke(&mut b, issued.info.id.clone())
                .unwrap()
                .unwrap()
        );
        assert!(Host::list(&mut b).unwrap().unwrap().is_empty());
        assert!(
            Host::verify(&mut a, issued.secret)
                .unwrap()
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn expiry_is_checked_on_every_verify_and_past_expiry_is_refused_at_issue() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", keys_only());
        let past = unix_now() - 1;
        assert!(matches!(
            Host::issue(&mut a, "r".into(), "l".into(), Some(past)).unwrap(),
            Err(Error::Invalid(_))
        ));
        let issued = Host::issue(&mut a, "r".into(), "l".into(), Some(unix_now() + 1))
            .unwrap()
            .unwrap();
        assert!(
            Host::verify(&mut a, issued.secret.clone())
                .unwrap()
                .unwrap()
                .is_some()
        );
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(
            Host::verify(&mut a, issued.secret)
                .unwrap()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn roles_and_labels_with_control_characters_are_refused() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", keys_only());
        assert!(matches!(
            Host::issue(&mut a, "a\nb".into(), "l".into(), None).unwrap(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Host::issue(&mut a, "r".into(), "x".repeat(300), None).unwrap(),
            Err(Error::Invalid(_))
        ));
    }
}
