//! `kv`: each plugin's private key-value namespace in the host's redb file.
//!
//! Single operations are their own durable write transaction. A `txn`
//! resource buffers writes in host memory and applies them in one redb write
//! transaction at commit, after checking that nothing it read has changed
//! (optimistic concurrency). So no plugin ever holds redb's writer lock across
//! guest code, and two requests that read-check-write the same key cannot
//! both commit. Writes go through the group committer ([`Db::commit`]):
//! concurrent calls share an fsync, each answered once its batch is durable.
//! What a call reads is noted, and its answer waits until that is durable
//! too ([`Db::settled`]).

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};
use ring::digest::{SHA256, digest};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::wit::kv::{Error, Host, HostTxn, Page, ValuesPage};
use super::{Call, Capability, CapsHost, HostEnv, OrTrap, PluginCaps, PluginEnv, Trappable};
use crate::db::{Db, DbError, KV};

type KvError = Trappable<Error>;

pub struct Kv;

impl Capability for Kv {
    const NAME: &'static str = "kv";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = Db;
    type PluginState = ();

    fn state(env: &HostEnv) -> Db {
        env.db.clone()
    }

    fn plugin_state(_: &PluginEnv<'_>, _: &bool) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::kv::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's namespace in the database, and its open
/// transactions.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    db: &'a Db,
    table: &'a mut ResourceTable,
    /// The newest commit this call may have read.
    seen: &'a mut u64,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            db: &call.host.kv,
            table: call.table,
            seen: call.storage_seen,
        }
    }

    fn granted(&self) -> Result<(), KvError> {
        if !self.plugin.grants.kv {
            return Err(Trappable::trap(self.plugin.not_granted(Kv::NAME)));
        }
        Ok(())
    }
}

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: u32 = 1024;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: u32 = 1 << 20;
/// The most entries one `list` call returns.
pub const MAX_PAGE: u32 = 1000;
/// The data a `list-values` page holds before it ends early.
pub const MAX_VALUES_PAGE_BYTES: usize = 1 << 20;
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

impl View<'_> {
    /// A read transaction; what it sees is noted so that the answer waits
    /// until that is durable (see [`crate::db::Db::settled`]).
    fn read(&mut self) -> Result<redb::ReadTransaction, Error> {
        let tx = self.db.read().map_err(storage)?;
        *self.seen = (*self.seen).max(self.db.applied());
        Ok(tx)
    }

    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.read()?;
        let table = tx.open_table(KV).map_err(storage)?;
        let value = table
            .get((self.plugin.name.as_str(), key))
            .map_err(storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Runs `f` in a write transaction of the group committer, with the
    /// plugin's name; answers once durable. The future borrows nothing of
    /// the view.
    fn kv_write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction, &str) -> Result<R, Error> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, Error>> + Send + 'static {
        let db = self.db.clone();
        let plugin = self.plugin.name.clone();
        async move {
            db.commit(move |tx| f(tx, &plugin).map_err(KvWriteError))
                .await
                .map_err(|e| e.0)
        }
    }
}

/// Lets [`crate::db::Db::commit`] carry a WIT error out of its closure.
struct KvWriteError(Error);

impl From<DbError> for KvWriteError {
    fn from(e: DbError) -> Self {
        KvWriteError(storage(e))
    }
}

impl Host for View<'_> {
    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.granted()?;
        check_key(&key)?;
        Ok(self.kv_get(&key)?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.granted()?;
        check_key(&key).and_then(|()| check_value(&value))?;
        Ok(self
            .kv_write(move |tx, plugin| {
                let mut t = tx.open_table(KV).map_err(storage)?;
                t.insert((plugin, key.as_str()), value.as_slice())
                    .map_err(storage)?;
                Ok(())
            })
            .await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        self.granted()?;
        check_key(&key)?;
        Ok(self
            .kv_write(move |tx, plugin| {
                let mut t = tx.open_table(KV).map_err(storage)?;
                let existed = t.remove((plugin, key.as_str())).map_err(storage)?.is_some();
                Ok(existed)
            })
            .await?)
    }

    async fn list(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Page, KvError> {
        self.granted()?;
        Ok(self.kv_list(&prefix, cursor.as_deref(), limit)?)
    }

    async fn list_values(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ValuesPage, KvError> {
        self.granted()?;
        Ok(self.kv_list_values(&prefix, cursor.as_deref(), limit)?)
    }

    async fn count(&mut self, prefix: String) -> Result<u64, KvError> {
        self.granted()?;
        let mut n = 0u64;
        self.kv_walk(&prefix, None, || true, |_, _| n += 1)?;
        Ok(n)
    }

    async fn next_id(&mut self, name: String, at_least: u64) -> Result<u64, KvError> {
        self.granted()?;
        check_key(&name)?;
        let (db, plugin) = (self.db.clone(), self.plugin.name.clone());
        match db.next_id(&plugin, &name, at_least).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => {
                Err(Error::Storage(format!("the sequence `{name}` has no numbers left")).into())
            }
            Err(e) => Err(storage(e).into()),
        }
    }
}

impl View<'_> {
    /// Walks the plugin's keys under `prefix` after `cursor`, in order,
    /// handing each entry to `take` while `room` says the page has room;
    /// returns the cursor of the next page (the last key taken) when an
    /// entry is left over. What `list`, `list-values` and `count` share.
    fn kv_walk(
        &mut self,
        prefix: &str,
        cursor: Option<&str>,
        mut room: impl FnMut() -> bool,
        mut take: impl FnMut(&str, &[u8]),
    ) -> Result<Option<String>, Error> {
        let tx = self.read()?;
        let plugin = self.plugin.name.as_str();
        let t = tx.open_table(KV).map_err(storage)?;
        let start = match cursor {
            Some(c) if c >= prefix => Bound::Excluded((plugin, c)),
            _ => Bound::Included((plugin, prefix)),
        };
        let mut last = String::new();
        for item in t
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(storage)?
        {
            let (k, v) = item.map_err(storage)?;
            let (p, key) = k.value();
            if p != plugin || !key.starts_with(prefix) {
                break;
            }
            if !room() {
                return Ok(Some(last));
            }
            take(key, v.value());
            last.clear();
            last.push_str(key);
        }
        Ok(None)
    }

    fn kv_list(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let mut entries = Vec::new();
        let full = std::cell::Cell::new(0usize);
        let next = self.kv_walk(
            prefix,
            cursor,
            || full.get() < limit,
            |key, value| {
                entries.push((key.to_string(), value.to_vec()));
                full.set(full.get() + 1);
            },
        )?;
        Ok(Page { entries, next })
    }

    /// [`Self::kv_list`]'s values, packed, the page ending early at
    /// [`MAX_VALUES_PAGE_BYTES`]: no allocation per entry here, one buffer
    /// each for the guest.
    fn kv_list_values(
        &mut self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ValuesPage, Error> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let page = std::cell::RefCell::new((Vec::new(), Vec::new()));
        let next = self.kv_walk(
            prefix,
            cursor,
            || {
                let (data, lengths) = &*page.borrow();
                lengths.len() < limit && data.len() < MAX_VALUES_PAGE_BYTES
            },
            |_, value| {
                let (data, lengths) = &mut *page.borrow_mut();
                data.extend_from_slice(value);
                lengths.push(value.len() as u32);
            },
        )?;
        let (data, lengths) = page.into_inner();
        Ok(ValuesPage {
            data,
            lengths,
            next,
        })
    }
}

impl HostTxn for View<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<Txn>> {
        Ok(self.table.push(Txn::default())?)
    }

    async fn get(&mut self, txn: Resource<Txn>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.granted()?;
        check_key(&key)?;
        let t = self.table.get(&txn).or_trap()?;
        if t.closed {
            return Err(Error::Closed.into());
        }
        if let Some(w) = t.writes.get(&key) {
            return Ok(w.clone());
        }
        let value = self.kv_get(&key)?;
        let t = self.table.get_mut(&txn).or_trap()?;
        t.reads
            .entry(key)
            .or_insert_with(|| value.as_deref().map(value_digest));
        Ok(value)
    }

    async fn set(
        &mut self,
        txn: Resource<Txn>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        self.granted()?;
        check_key(&key).and_then(|()| check_value(&value))?;
        let t = self.table.get_mut(&txn).or_trap()?;
        Ok(t.buffer(key, Some(value))?)
    }

    async fn delete(&mut self, txn: Resource<Txn>, key: String) -> Result<(), KvError> {
        self.granted()?;
        check_key(&key)?;
        let t = self.table.get_mut(&txn).or_trap()?;
        Ok(t.buffer(key, None)?)
    }

    async fn commit(&mut self, txn: Resource<Txn>) -> Result<(), KvError> {
        self.granted()?;
        let t = self.table.get_mut(&txn).or_trap()?;
        if t.closed {
            return Err(Error::Closed.into());
        }
        t.closed = true;
        let writes = std::mem::take(&mut t.writes);
        let reads = std::mem::take(&mut t.reads);
        Ok(self
            .kv_write(move |tx, plugin| {
                let mut table = tx.open_table(KV).map_err(storage)?;
                // Validated in the committer, in commit order: a transaction
                // that read what an earlier one of the batch wrote conflicts.
                for (key, seen) in &reads {
                    let now = table.get((plugin, key.as_str())).map_err(storage)?;
                    if now.map(|v| value_digest(v.value())) != *seen {
                        return Err(Error::Conflict);
                    }
                }
                for (key, value) in &writes {
                    let k = (plugin, key.as_str());
                    match value {
                        Some(v) => {
                            table.insert(k, v.as_slice()).map_err(storage)?;
                        }
                        None => {
                            table.remove(k).map_err(storage)?;
                        }
                    }
                }
                Ok(())
            })
            .await?)
    }

    async fn drop(&mut self, txn: Resource<Txn>) -> wasmtime::Result<()> {
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
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;

    /// The interface as a plugin sees it: each call through a fresh view,
    /// its error as the WIT error (or a trap).
    struct P(Fixture);

    fn wit<T>(r: Result<T, KvError>) -> wasmtime::Result<Result<T, Error>> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) => e.into_wit().map(Err),
        }
    }

    /// Runs a host call's future to its end (writes wait for the committer
    /// thread, which answers through a channel any runtime can await).
    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    impl P {
        fn v(&mut self) -> View<'_> {
            View::new(self.0.call())
        }
        fn get(&mut self, k: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
            wit(block(Host::get(&mut self.v(), k)))
        }
        fn set(&mut self, k: String, v: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
            wit(block(Host::set(&mut self.v(), k, v)))
        }
        fn delete(&mut self, k: String) -> wasmtime::Result<Result<bool, Error>> {
            wit(block(Host::delete(&mut self.v(), k)))
        }
        fn list(
            &mut self,
            p: String,
            c: Option<String>,
            l: u32,
        ) -> wasmtime::Result<Result<Page, Error>> {
            wit(block(Host::list(&mut self.v(), p, c, l)))
        }
        fn count(&mut self, p: String) -> wasmtime::Result<Result<u64, Error>> {
            wit(block(Host::count(&mut self.v(), p)))
        }
        fn next_id(&mut self, name: &str, at_least: u64) -> wasmtime::Result<Result<u64, Error>> {
            wit(block(Host::next_id(&mut self.v(), name.into(), at_least)))
        }
        fn txn_new(&mut self) -> wasmtime::Result<Resource<Txn>> {
            block(HostTxn::new(&mut self.v()))
        }
        fn txn_get(
            &mut self,
            t: Resource<Txn>,
            k: String,
        ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
            wit(block(HostTxn::get(&mut self.v(), t, k)))
        }
        fn txn_set(
            &mut self,
            t: Resource<Txn>,
            k: String,
            v: Vec<u8>,
        ) -> wasmtime::Result<Result<(), Error>> {
            wit(block(HostTxn::set(&mut self.v(), t, k, v)))
        }
        fn txn_commit(&mut self, t: Resource<Txn>) -> wasmtime::Result<Result<(), Error>> {
            wit(block(HostTxn::commit(&mut self.v(), t)))
        }
        fn txn_drop(&mut self, t: Resource<Txn>) -> wasmtime::Result<()> {
            block(HostTxn::drop(&mut self.v(), t))
        }
    }

    fn plugin(host: &std::sync::Arc<crate::caps::HostCaps>, name: &str, grants: Grants) -> P {
        P(Fixture::on(host, name, grants))
    }

    fn kv_only() -> Grants {
        Grants {
            kv: true,
            ..Grants::default()
        }
    }

    #[test]
    fn a_plugin_cannot_read_or_list_another_plugins_keys() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        let mut b = plugin(&host, "b", kv_only());
        a.set("secret".into(), b"a's".to_vec()).unwrap().unwrap();
        assert_eq!(b.get("secret".into()).unwrap().unwrap(), None);
        assert!(
            b.list("".into(), None, 100)
                .unwrap()
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(b.count("".into()).unwrap().unwrap(), 0);
        assert!(!b.delete("secret".into()).unwrap().unwrap());
        assert_eq!(
            a.get("secret".into()).unwrap().unwrap(),
            Some(b"a's".to_vec())
        );
    }

    #[test]
    fn listing_pages_through_a_prefix_with_a_cursor() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        for i in 0..25 {
            a.set(format!("n/{i:03}"), vec![i]).unwrap().unwrap();
        }
        a.set("o/x".into(), vec![]).unwrap().unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = a.list("n/".into(), cursor, 10).unwrap().unwrap();
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
        assert_eq!(a.count("n/".into()).unwrap().unwrap(), 25);
    }

    #[test]
    fn sizes_are_checked_with_typed_errors() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        let long_key = "k".repeat(MAX_KEY_BYTES as usize + 1);
        assert!(matches!(
            a.set(long_key, vec![]).unwrap(),
            Err(Error::KeyTooLarge(MAX_KEY_BYTES))
        ));
        let big = vec![0; MAX_VALUE_BYTES as usize + 1];
        assert!(matches!(
            a.set("k".into(), big).unwrap(),
            Err(Error::ValueTooLarge(_))
        ));
        assert!(matches!(a.get("".into()).unwrap(), Err(Error::EmptyKey)));
    }

    #[test]
    fn without_the_grant_every_call_traps() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", Grants::default());
        assert!(a.get("k".into()).is_err());
        assert!(a.set("k".into(), vec![]).is_err());
        assert!(a.list("".into(), None, 10).is_err());
    }

    #[test]
    fn a_transaction_commits_all_or_nothing_and_sees_its_own_writes() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        let t = a.txn_new().unwrap();
        a.txn_set(Resource::new_borrow(t.rep()), "x".into(), b"1".to_vec())
            .unwrap()
            .unwrap();
        a.txn_set(Resource::new_borrow(t.rep()), "y".into(), b"2".to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(
            a.txn_get(Resource::new_borrow(t.rep()), "x".into())
                .unwrap()
                .unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            a.get("x".into()).unwrap().unwrap(),
            None,
            "nothing is visible before commit"
        );
        a.txn_commit(Resource::new_borrow(t.rep()))
            .unwrap()
            .unwrap();
        assert!(matches!(
            a.txn_commit(Resource::new_borrow(t.rep())).unwrap(),
            Err(Error::Closed)
        ));
        a.txn_drop(t).unwrap();
        assert_eq!(a.get("y".into()).unwrap().unwrap(), Some(b"2".to_vec()));

        let t = a.txn_new().unwrap();
        a.txn_set(Resource::new_borrow(t.rep()), "z".into(), b"3".to_vec())
            .unwrap()
            .unwrap();
        a.txn_drop(t).unwrap();
        assert_eq!(
            a.get("z".into()).unwrap().unwrap(),
            None,
            "a dropped transaction writes nothing"
        );
    }

    #[test]
    fn a_commit_fails_with_conflict_when_a_key_it_read_changed() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        let mut a2 = plugin(&host, "a", kv_only());
        a.set("quota".into(), b"1".to_vec()).unwrap().unwrap();
        let t = a.txn_new().unwrap();
        let read = a
            .txn_get(Resource::new_borrow(t.rep()), "quota".into())
            .unwrap()
            .unwrap();
        assert_eq!(read, Some(b"1".to_vec()));
        // Another request changes the key between the read and the commit.
        a2.set("quota".into(), b"2".to_vec()).unwrap().unwrap();
        a.txn_set(Resource::new_borrow(t.rep()), "quota".into(), b"0".to_vec())
            .unwrap()
            .unwrap();
        a.txn_set(Resource::new_borrow(t.rep()), "other".into(), b"x".to_vec())
            .unwrap()
            .unwrap();
        assert!(matches!(
            a.txn_commit(Resource::new_borrow(t.rep())).unwrap(),
            Err(Error::Conflict)
        ));
        assert_eq!(a.get("quota".into()).unwrap().unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            a.get("other".into()).unwrap().unwrap(),
            None,
            "a conflicted commit writes nothing"
        );
    }

    #[test]
    fn ids_increase_per_plugin_and_name_from_the_floor_given() {
        let host = Fixture::host();
        let mut a = plugin(&host, "a", kv_only());
        let mut b = plugin(&host, "b", kv_only());
        assert_eq!(a.next_id("orders", 1).unwrap().unwrap(), 1);
        assert_eq!(a.next_id("orders", 1).unwrap().unwrap(), 2);
        assert_eq!(b.next_id("orders", 1).unwrap().unwrap(), 1, "b's own");
        assert_eq!(a.next_id("invoices", 1000).unwrap().unwrap(), 1000);
        assert_eq!(a.next_id("invoices", 1).unwrap().unwrap(), 1001);
        assert!(matches!(a.next_id("", 1).unwrap(), Err(Error::EmptyKey)));
        let mut none = plugin(&host, "n", Grants::default());
        assert!(none.next_id("orders", 1).is_err(), "no grant: a trap");
    }
}
