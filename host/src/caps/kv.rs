//! `kv`: each plugin's private key-value namespace in the host's redb file.
//!
//! Single operations are their own durable write transaction. A `txn`
//! resource buffers writes in host memory and applies them in one redb write
//! transaction at commit, after checking that nothing it read has changed
//! (optimistic concurrency). So no plugin ever holds redb's writer lock across
//! guest code, and two requests that read-check-write the same key cannot
//! both commit.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};
use ring::digest::{SHA256, digest};
use wasmtime::component::{HasSelf, Linker, Resource};

use super::Capability;
use crate::bindings::kv::{Error, Host, HostTxn, Page};
use crate::db::{DbError, KV};
use crate::runtime::Ctx;

pub const CAP: Capability = Capability {
    name: "kv",
    granted: |g| g.kv,
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::kv::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: u32 = 1024;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: u32 = 1 << 20;
/// The most entries one `list` call returns.
pub const MAX_PAGE: u32 = 1000;
/// The most distinct keys one transaction may write.
pub const MAX_TXN_WRITES: usize = 100_000;
/// The most bytes (keys and values) one transaction may buffer.
pub const MAX_TXN_BYTES: usize = 64 << 20;

/// A transaction in progress: buffered writes and what was read.
#[derive(Default)]
pub struct Txn {
    /// Key -> new value, or `None` for a delete.
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Key -> digest of the value first read (`None`: absent).
    reads: BTreeMap<String, Option<[u8; 32]>>,
    bytes: usize,
    closed: bool,
}

fn storage(e: impl Into<DbError>) -> Error {
    Error::Storage(e.into().to_string())
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES as usize {
        return Err(Error::KeyTooLarge(MAX_KEY_BYTES));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE_BYTES as usize {
        return Err(Error::ValueTooLarge(MAX_VALUE_BYTES));
    }
    Ok(())
}

fn value_digest(v: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, v).as_ref());
    out
}

impl Ctx {
    fn kv_denied(&self) -> Option<Error> {
        (!self.plugin.grants.kv).then_some(Error::Denied)
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.plugin.host.db.read().map_err(storage)?;
        let table = tx.open_table(KV).map_err(storage)?;
        let value = table
            .get((self.plugin.name.as_str(), key))
            .map_err(storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn kv_write(
        &self,
        f: impl FnOnce(&WriteTransaction, &str) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        self.plugin
            .host
            .db
            .write(|tx| f(tx, &self.plugin.name).map_err(KvWriteError))
            .map_err(|e| e.0)
    }
}

/// Lets [`crate::db::Db::write`] carry a WIT error out of its closure.
struct KvWriteError(Error);

impl From<DbError> for KvWriteError {
    fn from(e: DbError) -> Self {
        KvWriteError(storage(e))
    }
}

impl From<Error> for KvWriteError {
    fn from(e: Error) -> Self {
        KvWriteError(e)
    }
}

impl Host for Ctx {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        Ok(check_key(&key).and_then(|()| self.kv_get(&key)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        if let Err(e) = check_key(&key).and_then(|()| check_value(&value)) {
            return Ok(Err(e));
        }
        let r = self.plugin.host.db.write(|tx| -> Result<(), KvWriteError> {
            let mut t = tx.open_table(KV).map_err(DbError::from)?;
            t.insert((self.plugin.name.as_str(), key.as_str()), value.as_slice())
                .map_err(DbError::from)?;
            Ok(())
        });
        Ok(r.map_err(|e| e.0))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self.kv_write(|tx, plugin| {
            let mut t = tx.open_table(KV).map_err(storage)?;
            let existed = t.remove((plugin, key.as_str())).map_err(storage)?.is_some();
            Ok(existed)
        }))
    }

    fn list(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Page, Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        Ok(self.kv_list(&prefix, cursor.as_deref(), limit))
    }

    fn count(&mut self, prefix: String) -> wasmtime::Result<Result<u64, Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        let plugin = self.plugin.name.as_str();
        let r = (|| {
            let tx = self.plugin.host.db.read().map_err(storage)?;
            let t = tx.open_table(KV).map_err(storage)?;
            let mut n = 0u64;
            for item in t.range((plugin, prefix.as_str())..).map_err(storage)? {
                let (k, _) = item.map_err(storage)?;
                let (p, key) = k.value();
                if p != plugin || !key.starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })();
        Ok(r)
    }
}

impl Ctx {
    fn kv_list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
        let plugin = self.plugin.name.as_str();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let tx = self.plugin.host.db.read().map_err(storage)?;
        let t = tx.open_table(KV).map_err(storage)?;
        let start = match cursor {
            Some(c) if c >= prefix => Bound::Excluded((plugin, c)),
            _ => Bound::Included((plugin, prefix)),
        };
        let mut entries = Vec::new();
        let mut next = None;
        for item in t
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(storage)?
        {
            let (k, v) = item.map_err(storage)?;
            let (p, key) = k.value();
            if p != plugin || !key.starts_with(prefix) {
                break;
            }
            if entries.len() == limit {
                next = entries.last().map(|(k, _): &(String, Vec<u8>)| k.clone());
                break;
            }
            entries.push((key.to_string(), v.value().to_vec()));
        }
        Ok(Page { entries, next })
    }
}

impl HostTxn for Ctx {
    fn new(&mut self) -> wasmtime::Result<Resource<Txn>> {
        Ok(self.table.push(Txn::default())?)
    }

    fn get(
        &mut self,
        txn: Resource<Txn>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let t = self.table.get(&txn)?;
        if t.closed {
            return Ok(Err(Error::Closed));
        }
        if let Some(w) = t.writes.get(&key) {
            return Ok(Ok(w.clone()));
        }
        let value = match self.kv_get(&key) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let t = self.table.get_mut(&txn)?;
        t.reads
            .entry(key)
            .or_insert_with(|| value.as_deref().map(value_digest));
        Ok(Ok(value))
    }

    fn set(
        &mut self,
        txn: Resource<Txn>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        if let Err(e) = check_key(&key).and_then(|()| check_value(&value)) {
            return Ok(Err(e));
        }
        let t = self.table.get_mut(&txn)?;
        Ok(t.buffer(key, Some(value)))
    }

    fn delete(&mut self, txn: Resource<Txn>, key: String) -> wasmtime::Result<Result<(), Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let t = self.table.get_mut(&txn)?;
        Ok(t.buffer(key, None))
    }

    fn commit(&mut self, txn: Resource<Txn>) -> wasmtime::Result<Result<(), Error>> {
        if let Some(e) = self.kv_denied() {
            return Ok(Err(e));
        }
        let t = self.table.get_mut(&txn)?;
        if t.closed {
            return Ok(Err(Error::Closed));
        }
        t.closed = true;
        let writes = std::mem::take(&mut t.writes);
        let reads = std::mem::take(&mut t.reads);
        let plugin = self.plugin.name.clone();
        let r = self.plugin.host.db.write(|tx| -> Result<(), KvWriteError> {
            let mut table = tx.open_table(KV).map_err(DbError::from)?;
            for (key, seen) in &reads {
                let now = table
                    .get((plugin.as_str(), key.as_str()))
                    .map_err(DbError::from)?;
                if now.map(|v| value_digest(v.value())) != *seen {
                    return Err(KvWriteError(Error::Conflict));
                }
            }
            for (key, value) in &writes {
                let k = (plugin.as_str(), key.as_str());
                match value {
                    Some(v) => {
                        table.insert(k, v.as_slice()).map_err(DbError::from)?;
                    }
                    None => {
                        table.remove(k).map_err(DbError::from)?;
                    }
                }
            }
            Ok(())
        });
        Ok(r.map_err(|e| e.0))
    }

    fn drop(&mut self, txn: Resource<Txn>) -> wasmtime::Result<()> {
        self.table.delete(txn)?;
        Ok(())
    }
}

impl Txn {
    fn buffer(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        let added = key.len() + value.as_ref().map_or(0, Vec::len);
        if !self.writes.contains_key(&key) && self.writes.len() >= MAX_TXN_WRITES {
            return Err(Error::Storage(format!(
                "a transaction writes at most {MAX_TXN_WRITES} keys"
            )));
        }
        if self.bytes + added > MAX_TXN_BYTES {
            return Err(Error::Storage(format!(
                "a transaction buffers at most {MAX_TXN_BYTES} bytes"
            )));
        }
        self.bytes += added;
        self.writes.insert(key, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grants;
    use crate::runtime::{test_ctx, test_shared};

    fn kv_only() -> Grants {
        Grants {
            kv: true,
            ..Grants::default()
        }
    }

    #[test]
    fn a_plugin_cannot_read_or_list_another_plugins_keys() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", kv_only());
        let mut b = test_ctx(&host, "b", kv_only());
        Host::set(&mut a, "secret".into(), b"a's".to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(Host::get(&mut b, "secret".into()).unwrap().unwrap(), None);
        assert!(
            Host::list(&mut b, "".into(), None, 100)
                .unwrap()
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(Host::count(&mut b, "".into()).unwrap().unwrap(), 0);
        assert!(!Host::delete(&mut b, "secret".into()).unwrap().unwrap());
        assert_eq!(
            Host::get(&mut a, "secret".into()).unwrap().unwrap(),
            Some(b"a's".to_vec())
        );
    }

    #[test]
    fn listing_pages_through_a_prefix_with_a_cursor() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", kv_only());
        for i in 0..25 {
            Host::set(&mut a, format!("n/{i:03}"), vec![i])
                .unwrap()
                .unwrap();
        }
        Host::set(&mut a, "o/x".into(), vec![]).unwrap().unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = Host::list(&mut a, "n/".into(), cursor, 10)
                .unwrap()
                .unwrap();
            seen.extend(page.entries.into_iter().map(|(k, _)| k));
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(
            seen,
            (0..25).map(|i| format!("n/{i:03}")).collect::<Vec<_>>()
        );
        assert_eq!(Host::count(&mut a, "n/".into()).unwrap().unwrap(), 25);
    }

    #[test]
    fn sizes_are_checked_with_typed_errors() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", kv_only());
        let long_key = "k".repeat(MAX_KEY_BYTES as usize + 1);
        assert!(matches!(
            Host::set(&mut a, long_key, vec![]).unwrap(),
            Err(Error::KeyTooLarge(MAX_KEY_BYTES))
        ));
        let big = vec![0; MAX_VALUE_BYTES as usize + 1];
        assert!(matches!(
            Host::set(&mut a, "k".into(), big).unwrap(),
            Err(Error::ValueTooLarge(_))
        ));
        assert!(matches!(
            Host::get(&mut a, "".into()).unwrap(),
            Err(Error::EmptyKey)
        ));
    }

    #[test]
    fn without_the_grant_every_call_is_denied() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", Grants::default());
        assert!(matches!(
            Host::get(&mut a, "k".into()).unwrap(),
            Err(Error::Denied)
        ));
        assert!(matches!(
            Host::set(&mut a, "k".into(), vec![]).unwrap(),
            Err(Error::Denied)
        ));
    }

    #[test]
    fn a_transaction_commits_all_or_nothing_and_sees_its_own_writes() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", kv_only());
        let t = HostTxn::new(&mut a).unwrap();
        HostTxn::set(
            &mut a,
            Resource::new_borrow(t.rep()),
            "x".into(),
            b"1".to_vec(),
        )
        .unwrap()
        .unwrap();
        HostTxn::set(
            &mut a,
            Resource::new_borrow(t.rep()),
            "y".into(),
            b"2".to_vec(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            HostTxn::get(&mut a, Resource::new_borrow(t.rep()), "x".into())
                .unwrap()
                .unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            Host::get(&mut a, "x".into()).unwrap().unwrap(),
            None,
            "nothing is visible before commit"
        );
        HostTxn::commit(&mut a, Resource::new_borrow(t.rep()))
            .unwrap()
            .unwrap();
        assert!(matches!(
            HostTxn::commit(&mut a, Resource::new_borrow(t.rep())).unwrap(),
            Err(Error::Closed)
        ));
        HostTxn::drop(&mut a, t).unwrap();
        assert_eq!(
            Host::get(&mut a, "y".into()).unwrap().unwrap(),
            Some(b"2".to_vec())
        );

        let t = HostTxn::new(&mut a).unwrap();
        HostTxn::set(
            &mut a,
            Resource::new_borrow(t.rep()),
            "z".into(),
            b"3".to_vec(),
        )
        .unwrap()
        .unwrap();
        HostTxn::drop(&mut a, t).unwrap();
        assert_eq!(
            Host::get(&mut a, "z".into()).unwrap().unwrap(),
            None,
            "a dropped transaction writes nothing"
        );
    }

    #[test]
    fn a_commit_fails_with_conflict_when_a_key_it_read_changed() {
        let host = test_shared();
        let mut a = test_ctx(&host, "a", kv_only());
        let mut a2 = test_ctx(&host, "a", kv_only());
        Host::set(&mut a, "quota".into(), b"1".to_vec())
            .unwrap()
            .unwrap();
        let t = HostTxn::new(&mut a).unwrap();
        let read = HostTxn::get(&mut a, Resource::new_borrow(t.rep()), "quota".into())
            .unwrap()
            .unwrap();
        assert_eq!(read, Some(b"1".to_vec()));
        // Another request changes the key between the read and the commit.
        Host::set(&mut a2, "quota".into(), b"2".to_vec())
            .unwrap()
            .unwrap();
        HostTxn::set(
            &mut a,
            Resource::new_borrow(t.rep()),
            "quota".into(),
            b"0".to_vec(),
        )
        .unwrap()
        .unwrap();
        HostTxn::set(
            &mut a,
            Resource::new_borrow(t.rep()),
            "other".into(),
            b"x".to_vec(),
        )
        .unwrap()
        .unwrap();
        assert!(matches!(
            HostTxn::commit(&mut a, Resource::new_borrow(t.rep())).unwrap(),
            Err(Error::Conflict)
        ));
        assert_eq!(
            Host::get(&mut a, "quota".into()).unwrap().unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(
            Host::get(&mut a, "other".into()).unwrap().unwrap(),
            None,
            "a conflicted commit writes nothing"
        );
    }
}
