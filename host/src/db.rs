//! The host's one redb database and every table in it.
//!
//! Plugin data is keyed by `(plugin name, key)`. The plugin name always comes
//! from the host's own state, never from the guest, so a plugin can neither
//! name nor reach another plugin's rows.
//!
//! After an I/O error (a full disk, say) redb refuses every later write
//! until the database is opened again. So [`Db`] notices the first one,
//! answers [`unavailable`] at once while it is down (the request path turns
//! that into a 503, `/health` and `/metrics` report it), and reopens the
//! file in the background every second until that works, without a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

mod commit;
mod sequence;

pub use sequence::SEQ;

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

/// The database file's name in the data directory.
pub const FILE: &str = "wasmgate.redb";
/// How often a failed database is reopened.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Why [`Db::open`] refused.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the file.
    #[error(
        "the database {0} is in use by another wasmgate process; stop it or pass another --data-dir"
    )]
    InUse(PathBuf),
    /// The file exists but is empty: what an interrupted copy or a full disk
    /// at the first start leaves, not a database.
    #[error(
        "the database {0} is an empty file (0 bytes), not a wasmgate database; restore it from a backup, or remove it or pass --accept-empty-database to start with an empty one"
    )]
    Empty(PathBuf),
    /// The disk is full.
    #[error("cannot create the database {0}: the disk is full (no space left on device)")]
    DiskFull(PathBuf),
    /// The file is damaged (or redb panicked reading it).
    #[error(
        "the database {path} is damaged: {detail}; run `wasmgate db check` on it, or restore it from a backup"
    )]
    Damaged { path: PathBuf, detail: String },
    /// Anything else.
    #[error("cannot open the database {path}: {source}")]
    Other {
        path: PathBuf,
        #[source]
        source: DbError,
    },
}

/// The open database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` while it is being reopened.
    db: RwLock<Option<Arc<Database>>>,
    /// The file; `None` for a database in memory.
    path: Option<PathBuf>,
    /// Why storage is unavailable, while it is.
    down: Mutex<Option<String>>,
    is_down: AtomicBool,
    /// I/O failures seen since start.
    failures: AtomicU64,
    /// The group committer's queue ([`Db::commit`]), once started.
    committer: std::sync::OnceLock<std::sync::mpsc::Sender<commit::Work>>,
    /// What is visible and what is durable.
    progress: commit::Progress,
    /// Sequences' blocks in memory ([`Db::next_id`]).
    sequences: sequence::Sequences,
}

/// The error answered while the database is down.
pub fn unavailable(why: &str) -> DbError {
    redb::StorageError::Io(std::io::Error::other(format!("storage unavailable: {why}"))).into()
}

/// Whether `e` is the kind after which redb must be reopened.
fn needs_reopen(e: &DbError) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

impl Db {
    /// Opens or creates `<dir>/wasmgate.redb` (mode 0600) and makes sure every
    /// table exists, so that read transactions never meet a missing table.
    /// An empty file is refused unless `accept_empty`. `cache_bytes`: the
    /// page cache (`memory.storage_cache_mb`).
    pub fn open(dir: &Path, accept_empty: bool, cache_bytes: usize) -> Result<Db, OpenError> {
        let path = dir.join(FILE);
        let existed = match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 && !accept_empty => return Err(OpenError::Empty(path)),
            Ok(_) => true,
            Err(_) => false,
        };
        let opened = std::panic::catch_unwind(|| -> Result<Database, DbError> {
            let db = Database::builder()
                .set_cache_size(cache_bytes)
                .create(&path)?;
            // Plugins keep secrets in it: private even where the umask is not.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(redb::StorageError::from)?;
            init(&db)?;
            Ok(db)
        });
        let err = match opened {
            Ok(Ok(db)) => return Ok(Db::wrap(db, Some(path))),
            Ok(Err(e)) => e,
            Err(panic) => {
                return Err(OpenError::Damaged {
                    detail: format!("reading it panicked: {}", panic_text(&*panic)),
                    path,
                });
            }
        };
        if !existed {
            // Nothing of a database we could not make may stay behind to be
            // refused as empty at the next start.
            let _ = std::fs::remove_file(&path);
        }
        Err(match err {
            redb::Error::DatabaseAlreadyOpen => OpenError::InUse(path),
            e if is_disk_full(&e) => OpenError::DiskFull(path),
            redb::Error::Corrupted(detail) => OpenError::Damaged { path, detail },
            source => OpenError::Other { path, source },
        })
    }

    /// A database in memory, for `wasmgate check`, which must not take the
    /// lock of a database a running server holds.
    pub fn in_memory() -> Result<Db, DbError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        init(&db)?;
        Ok(Db::wrap(db, None))
    }

    fn wrap(db: Database, path: Option<PathBuf>) -> Db {
        Db {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(Arc::new(db))),
                path,
                down: Mutex::new(None),
                is_down: AtomicBool::new(false),
                failures: AtomicU64::new(0),
                committer: Default::default(),
                progress: Default::default(),
                sequences: Default::default(),
            }),
        }
    }

    fn current(&self) -> Result<Arc<Database>, DbError> {
        if self.inner.is_down.load(Ordering::Relaxed) {
            return Err(unavailable(
                self.down_reason().as_deref().unwrap_or("reopening"),
            ));
        }
        let db = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        db.clone().ok_or_else(|| unavailable("reopening"))
    }

    /// Runs `f` in a write transaction on this thread and commits durably
    /// when it returns `Ok`; an `Err` aborts (dropping the transaction rolls
    /// it back). A panic inside redb is an error, not a dropped connection.
    /// For the host's own rare writes; what plugins write under load goes
    /// through [`Db::commit`], which shares fsyncs between callers.
    pub fn write<R, E>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<DbError>,
    {
        let db = self.current()?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<Result<R, E>, DbError> {
                let tx = db.begin_write()?;
                let out = match f(&tx) {
                    Ok(out) => out,
                    Err(e) => return Ok(Err(e)),
                };
                tx.commit()?;
                Ok(Ok(out))
            },
        ));
        match result {
            Ok(Ok(Ok(out))) => Ok(out),
            // An I/O failure inside `f` (a page that could not be allocated)
            // is remembered by redb: the next write fails with `PreviousIo`.
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => {
                if needs_reopen(&e) {
                    self.failed(&e);
                }
                Err(e.into())
            }
            Err(panic) => Err(E::from(redb::Error::Corrupted(format!(
                "redb panicked: {}",
                panic_text(&*panic)
            )))),
        }
    }

    /// A read transaction.
    pub fn read(&self) -> Result<redb::ReadTransaction, DbError> {
        let db = self.current()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.begin_read())) {
            Ok(Ok(tx)) => Ok(tx),
            Ok(Err(e)) => {
                let e = DbError::from(e);
                if needs_reopen(&e) {
                    self.failed(&e);
                }
                Err(e)
            }
            Err(panic) => Err(redb::Error::Corrupted(format!(
                "redb panicked: {}",
                panic_text(&*panic)
            ))),
        }
    }

    /// Why storage is unavailable now, or `None` when it works.
    pub fn down_reason(&self) -> Option<String> {
        if !self.inner.is_down.load(Ordering::Relaxed) {
            return None;
        }
        self.inner
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// I/O failures seen since start.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Marks the database down and starts reopening it (once).
    fn failed(&self, e: &DbError) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        let reason = if is_disk_full(e) {
            "the disk is full".to_string()
        } else {
            e.to_string()
        };
        {
            let mut down = self.inner.down.lock().unwrap_or_else(|p| p.into_inner());
            if down.is_some() {
                return;
            }
            *down = Some(reason.clone());
            self.inner.is_down.store(true, Ordering::Relaxed);
        }
        let Some(path) = self.inner.path.clone() else {
            return;
        };
        tracing::error!(error = %e, path = %path.display(), "storage failed; answering 503 and reopening the database every second");
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("wasmgate-reopen".into())
            .spawn(move || reopen(&inner, &path));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that reopens the database");
        }
    }

    /// Copies every table into a new database at `to`, from one read
    /// transaction: a consistent snapshot, taken while the host serves.
    pub fn backup(&self, to: &Path) -> Result<(), DbError> {
        let src = self.read()?;
        if to.exists() {
            return Err(redb::StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", to.display()),
            ))
            .into());
        }
        let tmp = to.with_extension("partial");
        let copied = (|| -> Result<(), DbError> {
            let dst = Database::create(&tmp)?;
            let tx = dst.begin_write()?;
            {
                copy(&src.open_table(KV)?, &mut tx.open_table(KV)?)?;
                copy(&src.open_table(KEYS)?, &mut tx.open_table(KEYS)?)?;
                let from = src.open_table(KEY_DIGESTS)?;
                let mut into = tx.open_table(KEY_DIGESTS)?;
                for item in from.iter()? {
                    let (k, v) = item?;
                    into.insert(k.value(), v.value())?;
                }
                let from = src.open_table(JOBS)?;
                let mut into = tx.open_table(JOBS)?;
                for item in from.iter()? {
                    let (k, v) = item?;
                    into.insert(k.value(), v.value())?;
                }
                let from = src.open_table(SEQ)?;
                let mut into = tx.open_table(SEQ)?;
                for item in from.iter()? {
                    let (k, v) = item?;
                    into.insert(k.value(), v.value())?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        match copied
            .and_then(|()| std::fs::rename(&tmp, to).map_err(|e| redb::StorageError::Io(e).into()))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

fn copy(
    from: &redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    into: &mut redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
) -> Result<(), DbError> {
    for item in from.iter()? {
        let (k, v) = item?;
        into.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn init(db: &Database) -> Result<(), DbError> {
    let tx = db.begin_write()?;
    {
        tx.open_table(KV)?;
        tx.open_table(KEYS)?;
        tx.open_table(KEY_DIGESTS)?;
        tx.open_table(JOBS)?;
        tx.open_table(SEQ)?;
    }
    tx.commit()?;
    Ok(())
}

fn is_disk_full(e: &DbError) -> bool {
    match e {
        redb::Error::Io(io) => {
            io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull
        }
        _ => false,
    }
}

/// Drops the failed handle and opens the file again until that works.
fn reopen(inner: &Inner, path: &Path) {
    *inner.db.write().unwrap_or_else(|p| p.into_inner()) = None;
    let mut attempts = 0u64;
    loop {
        std::thread::sleep(REOPEN_EVERY);
        attempts += 1;
        // Transactions begun before the failure still hold the old file
        // (and its lock) until they end; until then the open says in use.
        let opened = std::panic::catch_unwind(|| -> Result<Database, DbError> {
            let db = Database::create(path)?;
            init(&db)?;
            Ok(db)
        });
        match opened {
            Ok(Ok(db)) => {
                *inner.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                *inner.down.lock().unwrap_or_else(|p| p.into_inner()) = None;
                inner.is_down.store(false, Ordering::Relaxed);
                tracing::info!(path = %path.display(), attempts, "storage is back: the database reopened");
                return;
            }
            Ok(Err(redb::Error::DatabaseAlreadyOpen)) => {}
            Ok(Err(e)) => {
                if attempts == 1 || attempts.is_multiple_of(60) {
                    tracing::warn!(error = %e, attempts, "the database cannot be reopened yet");
                }
                let reason = if is_disk_full(&e) {
                    "the disk is full".to_string()
                } else {
                    e.to_string()
                };
                *inner.down.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            }
            Err(panic) => {
                tracing::error!(panic = %panic_text(&*panic), "reopening the database panicked; it is damaged");
                *inner.down.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some("the database is damaged; see `wasmgate db check`".to_string());
            }
        }
    }
}

/// `wasmgate db check`: opens the file (no server may hold it), checks every
/// page and repairs what redb can. `Ok(true)`: it was consistent.
pub fn check_file(path: &Path) -> anyhow::Result<bool> {
    let outcome = std::panic::catch_unwind(|| -> Result<bool, DbError> {
        let mut db = Database::open(path)?;
        let ok = db.check_integrity()?;
        // Reading every row catches damage inside values' keys too (text
        // that is not UTF-8), which the page check does not look at.
        let tx = db.begin_read()?;
        for table in [KV, KEYS] {
            for item in tx.open_table(table)?.iter()? {
                let (k, v) = item?;
                let _ = (k.value(), v.value());
            }
        }
        for item in tx.open_table(KEY_DIGESTS)?.iter()? {
            let (k, v) = item?;
            let _ = (k.value(), v.value());
        }
        for item in tx.open_table(JOBS)?.iter()? {
            let (k, v) = item?;
            let _ = (k.value(), v.value());
        }
        // Older files have no sequences until a server opens them.
        match tx.open_table(SEQ) {
            Ok(table) => {
                for item in table.iter()? {
                    let (k, v) = item?;
                    let _ = (k.value(), v.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(ok)
    });
    match outcome {
        Ok(Ok(ok)) => Ok(ok),
        Ok(Err(redb::Error::DatabaseAlreadyOpen)) => {
            anyhow::bail!(
                "{} is in use by a running wasmgate; stop it first",
                path.display()
            )
        }
        Ok(Err(e)) => anyhow::bail!("{} is damaged: {e}", path.display()),
        Err(panic) => anyhow::bail!(
            "{} is damaged: reading it panicked: {}",
            path.display(),
            panic_text(&*panic)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_refused_unless_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"").unwrap();
        assert!(matches!(
            Db::open(dir.path(), false, 1 << 20),
            Err(OpenError::Empty(_))
        ));
        let db = Db::open(dir.path(), true, 1 << 20).expect("accepted");
        db.write(|tx| -> Result<(), DbError> {
            tx.open_table(KV)?.insert(("p", "k"), b"v".as_slice())?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_backup_is_a_database_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), false, 1 << 20).unwrap();
        db.write(|tx| -> Result<(), DbError> {
            tx.open_table(KV)?.insert(("p", "k"), b"v".as_slice())?;
            tx.open_table(JOBS)?.insert((1, 2), b"j".as_slice())?;
            Ok(())
        })
        .unwrap();
        let to = dir.path().join("backup.redb");
        db.backup(&to).unwrap();
        assert!(
            db.backup(&to).is_err(),
            "an existing file is never overwritten"
        );
        drop(db);
        let copy = Database::open(&to).unwrap();
        let tx = copy.begin_read().unwrap();
        assert_eq!(
            tx.open_table(KV)
                .unwrap()
                .get(("p", "k"))
                .unwrap()
                .unwrap()
                .value(),
            b"v"
        );
        assert_eq!(
            tx.open_table(JOBS)
                .unwrap()
                .get((1, 2))
                .unwrap()
                .unwrap()
                .value(),
            b"j"
        );
        drop(tx);
        drop(copy);
        assert!(check_file(&to).unwrap());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn concurrent_commits_each_roll_back_alone_and_all_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), false, 1 << 20).unwrap();
        let rt = runtime();
        let answers = rt.block_on(async {
            let tasks: Vec<_> = (0..200u32)
                .map(|i| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        db.commit(move |tx| -> Result<u32, DbError> {
                            let key = format!("k{i:03}");
                            tx.open_table(KV)?
                                .insert(("p", key.as_str()), b"v".as_slice())?;
                            if i % 3 == 0 {
                                // Written, then refused: only this one is undone.
                                return Err(unavailable("refused"));
                            }
                            Ok(i)
                        })
                        .await
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a.is_ok(), i % 3 != 0, "commit {i}: {a:?}");
        }
        let applied = db.applied();
        assert!(applied >= 133, "{applied}");
        rt.block_on(db.settled(applied)).unwrap();
        drop(db);
        // Reopened from the file: every acknowledged write, nothing else.
        let db = Db::open(dir.path(), false, 1 << 20).unwrap();
        let tx = db.read().unwrap();
        let t = tx.open_table(KV).unwrap();
        for i in 0..200u32 {
            let key = format!("k{i:03}");
            assert_eq!(
                t.get(("p", key.as_str())).unwrap().is_some(),
                i % 3 != 0,
                "{key}"
            );
        }
    }

    #[test]
    fn sequences_never_repeat_or_go_down_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut seen = Vec::new();
        for round in 0..3 {
            let db = Db::open(dir.path(), false, 1 << 20).unwrap();
            for _ in 0..100 {
                seen.push(rt.block_on(db.next_id("p", "ids", 1)).unwrap().unwrap());
            }
            if round == 0 {
                // Another plugin's sequence of the same name is its own.
                assert_eq!(rt.block_on(db.next_id("q", "ids", 1)).unwrap(), Some(1));
            }
        }
        assert_eq!(&seen[..3], &[1, 2, 3]);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(
            *seen.last().unwrap() <= 300 + 2 * sequence::BLOCK,
            "at most a block skipped per restart: {seen:?}"
        );

        let db = Db::open(dir.path(), false, 1 << 20).unwrap();
        let next = rt.block_on(db.next_id("p", "ids", 1)).unwrap().unwrap();
        // A floor above the sequence moves it up for good.
        let floor = next + 10_000;
        assert_eq!(
            rt.block_on(db.next_id("p", "ids", floor)).unwrap(),
            Some(floor)
        );
        assert_eq!(
            rt.block_on(db.next_id("p", "ids", 1)).unwrap(),
            Some(floor + 1)
        );
        assert_eq!(rt.block_on(db.next_id("p", "ids", u64::MAX)).unwrap(), None);

        // Taken concurrently: all distinct.
        let ids = rt.block_on(async {
            let tasks: Vec<_> = (0..300)
                .map(|_| {
                    let db = db.clone();
                    tokio::spawn(async move { db.next_id("p", "many", 1).await })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap().unwrap().unwrap());
            }
            out
        });
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 300);

        // Purging the plugin starts its sequences again.
        crate::caps::purge_plugin(&db, "p").unwrap();
        assert_eq!(rt.block_on(db.next_id("p", "ids", 1)).unwrap(), Some(1));
    }
}
