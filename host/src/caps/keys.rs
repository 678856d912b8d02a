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
use wasmtime::component::{HasData, Linker};

use super::crypto::constant_time_eq;
use super::wit::keys::{Error, Host, Issued, KeyInfo};
use super::{Call, Capability, CapsHost, HostEnv, OrTrap, PluginCaps, PluginEnv, Trappable};
use crate::db::{Db, DbError, KEY_DIGESTS, KEYS};

type KeysError = Trappable<Error>;
use crate::util::ids::{hex, random};
use crate::util::time::{unix_now, unix_now_ms};

pub struct Keys;

impl Capability for Keys {
    const NAME: &'static str = "keys";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = Db;
    type PluginState = ();

    fn state(env: &HostEnv) -> Db {
        env.db.clone()
    }

    fn plugin_state(_: &PluginEnv<'_>, _: &bool) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::keys::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's keys in the database.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    db: &'a Db,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            db: &call.host.keys,
        }
    }

    fn granted(&self) -> Result<(), KeysError> {
        if !self.plugin.grants.keys {
            return Err(Trappable::trap(self.plugin.not_granted(Keys::NAME)));
        }
        Ok(())
    }
}

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

impl View<'_> {
    fn keys_issue(
        &self,
        role: String,
        label: String,
        expires_at: Option<u64>,
    ) -> Result<Issued, KeysError> {
        if let Err(e) = check_text("role", &role, MAX_ROLE_BYTES)
            .and_then(|()| check_text("label", &label, MAX_LABEL_BYTES))
        {
            return Err(e.into());
        }
        let now = unix_now();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(Error::Invalid("expires-at is not in the future".into()).into());
        }
        let secret = URL_SAFE_NO_PAD.encode(random(32).or_trap()?);
        // Time first, so ids sort in issue order.
        let id = format!("{:012x}{}", unix_now_ms(), hex(&random(4).or_trap()?));
        let digest_bytes = digest(&SHA256, secret.as_bytes());
        let record = KeyRecord {
            role,
            label,
            created_at: now,
            expires_at,
            digest: hex(digest_bytes.as_ref()),
        };
        let json = serde_json::to_vec(&record).or_trap()?;
        let plugin = self.plugin.name.as_str();
        let r = self.db.write(|tx| -> Result<(), KeysWriteError> {
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
        r.map_err(|e| e.0)?;
        Ok(Issued {
            info: record.info(&id),
            secret,
        })
    }

    fn keys_verify(&self, secret: &str) -> Result<Option<KeyInfo>, Error> {
        let presented = digest(&SHA256, secret.as_bytes());
        let tx = self.db.read().map_err(storage)?;
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

impl Host for View<'_> {
    fn convert_error(&mut self, err: KeysError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    fn issue(
        &mut self,
        role: String,
        label: String,
        expires_at: Option<u64>,
    ) -> Result<Issued, KeysError> {
        self.granted()?;
        self.keys_issue(role, label, expires_at)
    }

    fn verify(&mut self, secret: String) -> Result<Option<KeyInfo>, KeysError> {
        self.granted()?;
        Ok(self.keys_verify(&secret)?)
    }

    fn revoke(&mut self, id: String) -> Result<bool, KeysError> {
        self.granted()?;
        let plugin = self.plugin.name.as_str();
        let r = self.db.write(|tx| -> Result<bool, KeysWriteError> {
            let mut keys = tx.open_table(KEYS).map_err(DbError::from)?;
            let Some(raw) = keys.remove((plugin, id.as_str())).map_err(DbError::from)? else {
                return Ok(false);
            };
            let record: Result<KeyRecord, _> = serde_json::from_slice(raw.value());
            drop(raw);
            if let Ok(record) = record {
                let digest_bytes: Vec<u8> = (0..record.digest.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&record.digest[2 * i..2 * i + 2], 16).ok())
                    .collect();
                let mut digests = tx.open_table(KEY_DIGESTS).map_err(DbError::from)?;
                digests
                    .remove(digest_bytes.as_slice())
                    .map_err(DbError::from)?;
            }
            Ok(true)
        });
        Ok(r.map_err(|e| e.0)?)
    }

    fn list(&mut self) -> Result<Vec<KeyInfo>, KeysError> {
        self.granted()?;
        let plugin = self.plugin.name.as_str();
        let r = (|| -> Result<Vec<KeyInfo>, Error> {
            let tx = self.db.read().map_err(storage)?;
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
        Ok(r?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;

    /// The interface as a plugin sees it: each call through a fresh view,
    /// its error as the WIT error (or a trap).
    struct P(Fixture);

    fn wit<T>(r: Result<T, KeysError>) -> wasmtime::Result<Result<T, Error>> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) => e.into_wit().map(Err),
        }
    }

    impl P {
        fn v(&mut self) -> View<'_> {
            View::new(self.0.call())
        }
        fn issue(
            &mut self,
            r: String,
            l: String,
            e: Option<u64>,
        ) -> wasmtime::Result<Result<Issued, Error>> {
            wit(Host::issue(&mut self.v(), r, l, e))
        }
        fn verify(&mut self, s: String) -> wasmtime::Result<Result<Option<KeyInfo>, Error>> {
            wit(Host::verify(&mut self.v(), s))
        }
        fn revoke(&mut self, id: String) -> wasmtime::Result<Result<bool, Error>> {
            wit(Host::revoke(&mut self.v(), id))
        }
        fn list(&mut self) -> wasmtime::Result<Result<Vec<KeyInfo>, Error>> {
            wit(Host::list(&mut self.v()))
        }
    }

    fn plugin(host: &std::sync::Arc<crate::caps::HostCaps>, name: &str, grants: Grants) -> P {
        P(Fixture::on(host, name, grants))
    }

    #[test]
    fn without_the_grant_every_call_traps() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", Grants::default());
        assert!(a.issue("r".into(), "l".into(), None).is_err());
        assert!(a.verify("x".into()).is_err());
        assert!(a.list().is_err());
    }

    fn keys_only() -> Grants {
        Grants {
            keys: true,
            ..Grants::default()
        }
    }

    #[test]
    fn an_issued_secret_verifies_until_revoked_and_is_stored_only_as_a_digest() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", keys_only());
        let issued = a.issue("admin".into(), "ci".into(), None).unwrap().unwrap();
        assert!(issued.secret.len() >= 43, "at least 256 bits");
        let info = a.verify(issued.secret.clone()).unwrap().unwrap().unwrap();
        assert_eq!((info.role.as_str(), info.label.as_str()), ("admin", "ci"));
        assert!(a.verify("wrong".into()).unwrap().unwrap().is_none());

        let tx = host.keys.read().unwrap();
        let keys = tx.open_table(KEYS).unwrap();
        for row in keys.iter().unwrap() {
            let (_, v) = row.unwrap();
            let text = String::from_utf8_lossy(v.value()).into_owned();
            assert!(!text.contains(&issued.secret), "the secret is never stored");
        }
        drop((keys, tx));

        let listed = a.list().unwrap().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(a.revoke(info.id.clone()).unwrap().unwrap());
        assert!(a.verify(issued.secret).unwrap().unwrap().is_none());
        assert!(!a.revoke(info.id).unwrap().unwrap());
    }

    #[test]
    fn another_plugin_cannot_verify_or_revoke_a_key() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", keys_only());
        let mut b = plugin(&host, "b", keys_only());
        let issued = a.issue("r".into(), "l".into(), None).unwrap().unwrap();
        assert!(b.verify(issued.secret.clone()).unwrap().unwrap().is_none());
        assert!(!b.revoke(issued.info.id.clone()).unwrap().unwrap());
        assert!(b.list().unwrap().unwrap().is_empty());
        assert!(a.verify(issued.secret).unwrap().unwrap().is_some());
    }

    #[test]
    fn expiry_is_checked_on_every_verify_and_past_expiry_is_refused_at_issue() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", keys_only());
        let past = unix_now() - 1;
        assert!(matches!(
            a.issue("r".into(), "l".into(), Some(past)).unwrap(),
            Err(Error::Invalid(_))
        ));
        let issued = a
            .issue("r".into(), "l".into(), Some(unix_now() + 1))
            .unwrap()
            .unwrap();
        assert!(a.verify(issued.secret.clone()).unwrap().unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(a.verify(issued.secret).unwrap().unwrap().is_none());
    }

    #[test]
    fn roles_and_labels_with_control_characters_are_refused() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", keys_only());
        assert!(matches!(
            a.issue("a\nb".into(), "l".into(), None).unwrap(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            a.issue("r".into(), "x".repeat(300), None).unwrap(),
            Err(Error::Invalid(_))
        ));
    }
}
