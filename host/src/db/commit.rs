//! Group commit: durable writes from concurrent calls share one fsync.
//!
//! [`Db::commit`] hands its work to one committer thread per database and
//! awaits the answer. The thread takes every piece of work waiting, runs each
//! in a write transaction of its own (so an error or a conflict in one
//! rolls back only that one), commits all but the last without syncing
//! (`Durability::None`) and the last with `Durability::Immediate`: one
//! fsync makes the whole batch durable. Only then is each caller answered.
//! A batch is what queued up during the previous one's fsync, so under load
//! batches grow by themselves and a lone writer pays nothing extra.
//!
//! A commit without sync is visible to readers before it is durable. So that
//! no answer shows a write which a crash could still take back, the readers
//! that care note [`Db::applied`] after they read and await
//! [`Db::settled`] before they answer: at most one fsync, and only while
//! writes are in flight.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use redb::{Database, WriteTransaction};

use super::{Db, DbError, Inner, needs_reopen, panic_text, unavailable};

/// Work for the committer: runs the caller's closure in the transaction
/// (or answers the caller the error that stopped it from running) and,
/// when the closure wants its writes kept, returns how to answer once the
/// batch's fate is known.
pub(super) type Work = Box<dyn FnOnce(Result<&WriteTransaction, DbError>) -> Option<Finish> + Send>;
/// Answers a caller whose transaction committed: `Ok` once durable.
type Finish = Box<dyn FnOnce(Result<(), DbError>) + Send>;

/// The most pieces of work in one batch.
const MAX_BATCH: usize = 1024;

/// Durability progress, shared by the committer and the readers.
pub(super) struct Progress {
    /// Sequence of the newest commit applied (visible), durable or not.
    pub applied: std::sync::atomic::AtomicU64,
    /// Sequence of the newest commit known durable (or failed: a reader
    /// then learns it from [`Db::settled`]'s error).
    pub settled: tokio::sync::watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            applied: Default::default(),
            settled: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Db {
    /// Runs `f` in a write transaction of the committer thread and answers
    /// once its writes are durable, together with the other commits of its
    /// batch. An `Err` from `f` rolls back only `f`'s writes and is answered
    /// at once.
    pub async fn commit<R, E>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<R, E>>();
        let work: Work = Box::new(move |tx| {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = answer.send(Err(E::from(e)));
                    return None;
                }
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx))) {
                Ok(Ok(out)) => Some(Box::new(move |durable: Result<(), DbError>| {
                    let _ = answer.send(durable.map(|()| out).map_err(E::from));
                })),
                Ok(Err(e)) => {
                    let _ = answer.send(Err(e));
                    None
                }
                Err(panic) => {
                    let _ = answer.send(Err(E::from(redb::Error::Corrupted(format!(
                        "redb panicked: {}",
                        panic_text(&*panic)
                    )))));
                    None
                }
            }
        });
        if let Err(e) = self.current() {
            return Err(E::from(e));
        }
        if self.committer().send(work).is_err() {
            return Err(E::from(unavailable("the committer thread stopped")));
        }
        match answered.await {
            Ok(out) => out,
            // The committer dropped the work unanswered: it panicked.
            Err(_) => Err(E::from(unavailable("the commit was interrupted"))),
        }
    }

    /// The sequence of the newest commit visible to readers. Read it after
    /// reading, and pass the largest to [`Db::settled`].
    pub fn applied(&self) -> u64 {
        self.inner.progress.applied.load(Ordering::SeqCst)
    }

    /// Waits until every commit up to `seen` is durable, so that an answer
    /// built from what a reader saw shows nothing a crash could take back.
    /// Returns at once when nothing newer than the last fsync was seen. An
    /// error: a batch failed after being read, and the database is reopening.
    pub async fn settled(&self, seen: u64) -> Result<(), DbError> {
        let mut rx = self.inner.progress.settled.subscribe();
        if *rx.borrow() >= seen {
            return Ok(());
        }
        if rx.wait_for(|s| *s >= seen).await.is_err() {
            return Err(unavailable("the committer thread stopped"));
        }
        match self.down_reason() {
            Some(why) => Err(unavailable(&why)),
            None => Ok(()),
        }
    }

    /// The queue of the committer thread, started at the first commit.
    fn committer(&self) -> &mpsc::Sender<Work> {
        self.inner.committer.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Work>();
            let inner = Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("wasmgate-commit".into())
                .spawn(move || run(&inner, &rx));
            if let Err(e) = spawned {
                // The work sent is dropped with the receiver: each caller
                // is answered that its commit was interrupted.
                tracing::error!(error = %e, "cannot start the committer thread");
            }
            tx
        })
    }
}

/// The committer: one batch after another until the database is dropped.
fn run(inner: &Weak<Inner>, rx: &mpsc::Receiver<Work>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // The database is let go before anyone is answered: a caller that
        // then drops the last handle closes the file at once.
        let outcome = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let db = Db { inner };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.run_batch(batch)));
            let progress = &db.inner.progress;
            progress
                .settled
                .send_replace(progress.applied.load(Ordering::SeqCst));
            outcome
        };
        match outcome {
            Ok(settle) => settle.answer(),
            // Callers whose answers were dropped hear that their commit was
            // interrupted.
            Err(panic) => {
                tracing::error!(panic = %panic_text(&*panic), "the committer panicked; the batch's callers were told");
            }
        }
    }
}

/// How a batch ended, to tell its callers.
struct Settle {
    /// Committed pieces of work.
    kept: Vec<Finish>,
    /// Why the batch is not durable, if it is not.
    failed: Option<String>,
    /// Work not run because the batch failed first.
    rest: Vec<Work>,
}

impl Settle {
    fn answer(self) {
        match self.failed {
            None => {
                for finish in self.kept {
                    finish(Ok(()));
                }
            }
            Some(why) => {
                // Nothing of the batch is known durable: every caller hears
                // the failure, including those not yet run.
                for finish in self.kept {
                    finish(Err(unavailable(&why)));
                }
                for work in self.rest {
                    work(Err(unavailable(&why)));
                }
            }
        }
    }
}

impl Db {
    fn run_batch(&self, batch: Vec<Work>) -> Settle {
        let db = match self.current() {
            Ok(db) => db,
            Err(e) => {
                return Settle {
                    kept: Vec::new(),
                    failed: Some(e.to_string()),
                    rest: batch,
                };
            }
        };
        let progress = &self.inner.progress;
        let n = batch.len();
        let mut kept: Vec<Finish> = Vec::with_capacity(n);
        let mut durable = false;
        let mut failed: Option<String> = None;
        let mut rest = batch.into_iter().enumerate();
        for (i, work) in rest.by_ref() {
            let last = i + 1 == n;
            match apply(&db, work, last, progress) {
                Applied::Kept(finish) => {
                    kept.push(finish);
                    durable = last;
                }
                Applied::Dropped => {}
                Applied::Failed(e) => {
                    failed = Some(e.to_string());
                    self.failed(&e);
                    break;
                }
            }
        }
        if failed.is_none() && !durable && !kept.is_empty() {
            // The last piece of work wrote nothing: an empty durable commit
            // syncs what the others committed.
            let synced = db
                .begin_write()
                .map_err(DbError::from)
                .and_then(|tx| tx.commit().map_err(DbError::from));
            if let Err(e) = synced {
                failed = Some(e.to_string());
                if needs_reopen(&e) {
                    self.failed(&e);
                }
            }
        }
        Settle {
            kept,
            failed,
            rest: rest.map(|(_, w)| w).collect(),
        }
    }
}

enum Applied {
    /// Committed; answer when the batch is durable.
    Kept(Finish),
    /// The closure failed or wrote nothing to keep, or its transaction
    /// failed alone; already answered.
    Dropped,
    /// An I/O failure after which redb must be reopened: nothing since the
    /// last fsync survives it. Its caller was answered.
    Failed(DbError),
}

/// Runs one piece of work in a transaction of its own, committed without
/// sync unless it is the batch's `last`.
fn apply(db: &Database, work: Work, last: bool, progress: &Progress) -> Applied {
    let outcome = |e: DbError| {
        if needs_reopen(&e) {
            Applied::Failed(e)
        } else {
            Applied::Dropped
        }
    };
    let mut tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            let e = DbError::from(e);
            work(Err(unavailable(&e.to_string())));
            return outcome(e);
        }
    };
    if !last && tx.set_durability(redb::Durability::None).is_err() {
        // Not expected (no savepoint is ever taken); this one alone fails.
        work(Err(unavailable("cannot commit without sync")));
        return Applied::Dropped;
    }
    let Some(finish) = work(Ok(&tx)) else {
        return Applied::Dropped;
    };
    // Counted before the commit makes it visible: a reader that sees these
    // writes then reads a sequence that covers them.
    progress.applied.fetch_add(1, Ordering::SeqCst);
    match tx.commit() {
        Ok(()) => Applied::Kept(finish),
        Err(e) => {
            let e = DbError::from(e);
            finish(Err(unavailable(&e.to_string())));
            outcome(e)
        }
    }
}
