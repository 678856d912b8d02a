//! The host's one redb database and every table in it.
//!
//! Plugin data is keyed by `(plugin name, key)`. The plugin name always comes
//! from the host's own state, never from the guest, so a plugin can neither
//! name nor reach another plugin's rows.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

/// `kv`: (plugin, key) -> value.
pub const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// `keys`: (plugin, key id) -> JSON [`crate::caps::keys::KeyRecord`].
pub const KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("keys");
/// `keys`: SHA-256 digest of a secret -> (plugin, key id).
pub const KEY_DIGESTS: TableDefinition<&[u8], (&str, &str)> = TableDefinition::new("key_digests");
/// `jobs`: (due, unix ms; sequence) -> JSON [`crate::caps::jobs::JobRecord`].
pub const JOBS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("jobs");

/// Storage failures, flattened to text at the WIT boundary.
pub type DbError = redb::Error;

/// The open database.
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens or creates `<dir>/wasmgate.redb` and makes sure every table exists,
    /// so that read transactions never meet a missing table.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        Db::init(Database::create(dir.join("wasmgate.redb"))?)
    }

    /// A database in memory, for `wasmgate check`, which must not take the
    /// lock of a database a running server holds.
    pub fn in_memory() -> Result<Db, DbError> {
        Db::init(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?)
    }

    fn init(db: Database) -> Result<Db, DbError> {
        let tx = db.begin_write()?;
        {
            tx.open_table(KV)?;
            tx.open_table(KEYS)?;
            tx.open_table(KEY_DIGESTS)?;
            tx.open_table(JOBS)?;
        }
        tx.commit()?;
        Ok(Db { db })
    }

    /// Runs `f` in a write transaction and commits durably when it returns
    /// `Ok`; an `Err` aborts (dropping the transaction rolls it back).
    pub fn write<R, E>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<R, E>) -> Result<R, E>
    where
        E: From<DbError>,
    {
        let tx = self.db.begin_write().map_err(DbError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(DbError::from)?;
        Ok(out)
    }

    pub fn read(&self) -> Result<redb::ReadTransaction, DbError> {
        Ok(self.db.begin_read()?)
    }
}
