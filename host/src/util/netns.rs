//! Work done inside a network namespace: a socket made there belongs to it
//! for good, so a short-lived thread enters the namespace (`setns`), makes
//! the socket and ends; nothing else ever runs in the namespace.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Opens the namespace file at `path`, naming it in the error.
pub fn open(path: &Path) -> io::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {}: {e}", path.display()),
        )
    })
}

/// Runs `make` on a thread of its own inside the namespace `ns` and returns
/// what it made (a socket), waiting for the thread.
pub fn make_in<T: Send + 'static>(
    ns: std::fs::File,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("wasmgate-netns".into())
        .spawn(move || {
            enter(ns.as_raw_fd())?;
            make()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Like [`make_in`], awaited without blocking the executor.
pub async fn make_in_async<T: Send + 'static>(
    ns: std::fs::File,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wasmgate-netns".into())
        .spawn(move || {
            let _ = tx.send(enter(ns.as_raw_fd()).and_then(|()| make()));
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))?
}

/// Moves the calling thread into the namespace `ns`. Also for a child
/// process between fork and exec (async-signal-safe: one system call).
pub fn enter(ns: RawFd) -> io::Result<()> {
    // SAFETY: setns with a descriptor the caller holds open.
    if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
