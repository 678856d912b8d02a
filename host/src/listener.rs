//! What keeps slow or greedy clients from holding a listener: connection
//! caps, per-connection timeouts, and an accept loop that backs off when the
//! process runs out of file descriptors.
//!
//! Steps, per connection:
//! 1. [`ConnCaps::admit`] at accept: a connection beyond the listener's cap
//!    or its client address's cap is answered 503 and closed at once.
//! 2. Its socket is wrapped in [`Watched`], which notes when bytes move and
//!    when a request's head starts; the service marks when a request is in
//!    the plugin's hands ([`Activity::enter`]).
//! 3. [`watchdog`] runs beside the connection and resolves when the head
//!    took longer than `header_timeout_ms`, or when nothing moved for
//!    `idle_timeout_ms` while no request was in progress; the connection is
//!    then dropped. (The body timeout is the request path's: a 408.)

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The answer to a connection over a cap, written before closing it.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 35\r\n\r\n{\"error\":\"too many open connections\"}";

/// Open connections of one listener, in all and per client address.
pub struct ConnCaps {
    max: usize,
    per_client: usize,
    open: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    caps: Arc<ConnCaps>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::Relaxed);
        let mut clients = self.caps.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

impl ConnCaps {
    pub fn new(max: usize, per_client: usize) -> Arc<ConnCaps> {
        Arc::new(ConnCaps {
            max: max.max(1),
            per_client: per_client.max(1),
            open: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = clients.entry(ip).or_insert(0);
        if *n >= self.per_client || self.open.load(Ordering::Relaxed) >= self.max {
            if *n == 0 {
                clients.remove(&ip);
            }
            return None;
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            caps: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Answers a refused connection without waiting on it, then closes it.
pub fn refuse(stream: TcpStream) {
    // Best effort: a full send buffer just means the client sees the close.
    let _ = stream.try_write(OVER_CAP);
}

/// What a connection is doing, shared by its socket wrapper, its service
/// and its watchdog. Times are milliseconds since `origin`.
pub struct Activity {
    origin: Instant,
    /// The last time bytes moved either way.
    last_progress: AtomicU64,
    /// When the current request's head began arriving; [`NONE`] when no head
    /// is in progress.
    head_started: AtomicU64,
    /// Requests the service is working on (0 or 1 on HTTP/1.1).
    in_service: AtomicUsize,
    /// Wakes the watchdog when a head begins: the header timeout is
    /// shorter than the idle one it may be sleeping on.
    head_began: tokio::sync::Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_progress: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            in_service: AtomicUsize::new(0),
            head_began: tokio::sync::Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn progressed(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    fn read_bytes(&self) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        if self.in_service.load(Ordering::Relaxed) == 0 {
            let began = self
                .head_started
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if began {
                self.head_began.notify_one();
            }
        }
    }

    /// The service got a request (its head is complete); the guard marks the
    /// end of its work.
    pub fn enter(self: &Arc<Self>) -> InService {
        self.in_service.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        InService(self.clone())
    }
}

/// See [`Activity::enter`].
pub struct InService(Arc<Activity>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.progressed();
        self.0.in_service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why [`watchdog`] closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Header,
    Idle,
}

/// Resolves when the connection has outstayed a timeout.
pub async fn watchdog(
    activity: &Activity,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Expired {
    let (header_ms, idle_ms) = (
        header_timeout.as_millis() as u64,
        idle_timeout.as_millis() as u64,
    );
    loop {
        let now = activity.now();
        let wake_at = if activity.in_service.load(Ordering::Relaxed) > 0 {
            // The request path bounds its own work (body timeout, plugin deadline).
            now + idle_ms
        } else {
            let head = activity.head_started.load(Ordering::Relaxed);
            if head != NONE {
                if now >= head + header_ms {
                    return Expired::Header;
                }
                head + header_ms
            } else {
                let last = activity.last_progress.load(Ordering::Relaxed);
                if now >= last + idle_ms {
                    return Expired::Idle;
                }
                last + idle_ms
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wake_at - now)) => {}
            _ = activity.head_began.notified() => {}
        }
    }
}

/// A socket that reports its traffic to an [`Activity`].
pub struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Watched {
        activity.progressed();
        Watched { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_bytes();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Connections the kernel may hold for `accept` (the default of 128 is
/// overrun by a burst of clients in the time one accept loop turn takes).
const BACKLOG: u32 = 1024;

/// Binds a listener on `addr` (`host:port`) with a deep accept queue.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{addr}` resolves to no address"),
        )
    }))
}

/// Accepts the next connection. Errors that concern one connection only are
/// skipped; running out of file descriptors backs off (doubling from 10 ms
/// to 1 s, one warning per episode) instead of spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    let mut backoff = Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok(x) => {
                if !backoff.is_zero() {
                    tracing::info!(listener = ?listener.local_addr().ok(), "accepting connections again");
                }
                return x;
            }
            Err(e) if is_out_of_files(&e) => {
                if backoff.is_zero() {
                    tracing::warn!(listener = ?listener.local_addr().ok(), error = %e, "cannot accept: out of file descriptors; backing off");
                    backoff = Duration::from_millis(10);
                } else {
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                tokio::time::sleep(backoff).await;
            }
            Err(e) => tracing::debug!(error = %e, "accept failed for one connection"),
        }
    }
}

fn is_out_of_files(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Raises the soft open-file limit to the hard one and returns it.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // `rlim_t` is 32 bits wide on 32-bit ARM.
    #[allow(clippy::unnecessary_cast)]
    let limit = lim.rlim_cur as u64;
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_and_in_all_and_free_on_drop() {
        let caps = ConnCaps::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert!(caps.admit(a).is_none(), "a's own cap");
        let _b1 = caps.admit(b).unwrap();
        assert!(caps.admit(b).is_none(), "the listener's cap");
        drop(a1);
        let _b2 = caps.admit(b).expect("a's freed place");
        assert_eq!(caps.open(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_tells_a_slow_head_from_an_idle_connection() {
        let act = Activity::new();
        let (h, i) = (Duration::from_secs(2), Duration::from_secs(10));
        // Idle from the start: the idle timeout applies.
        let started = tokio::time::Instant::now();
        assert_eq!(watchdog(&act, h, i).await, Expired::Idle);
        assert!(started.elapsed() >= i);
        // A byte of a head arrives: the header timeout applies.
        act.read_bytes();
        let started = tokio::time::Instant::now();
        assert_eq!(watchdog(&act, h, i).await, Expired::Header);
        assert!(started.elapsed() < i);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_begins_while_the_watchdog_waits_out_the_idle_time_is_timed() {
        let act = Activity::new();
        let (h, i) = (Duration::from_secs(2), Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let watch = {
            let act = act.clone();
            tokio::spawn(async move { watchdog(&act, h, i).await })
        };
        // The watchdog sleeps towards the idle deadline; a head begins.
        tokio::time::sleep(Duration::from_secs(3)).await;
        act.read_bytes();
        assert_eq!(watch.await.unwrap(), Expired::Header);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "closed after {took:?}: the head's deadline is 3 s + 2 s"
        );

        // Requests served back to back: each head is timed from its own start.
        let act = Activity::new();
        let watch = {
            let act = act.clone();
            tokio::spawn(async move { watchdog(&act, h, i).await })
        };
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            act.read_bytes();
            let in_service = act.enter();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(in_service);
        }
        assert!(!watch.is_finished(), "busy, never idle or slow");
        // Then a head that never ends.
        let began = tokio::time::Instant::now();
        act.read_bytes();
        assert_eq!(watch.await.unwrap(), Expired::Header);
        let took = began.elapsed();
        assert!(
            took >= h && took < h + Duration::from_millis(100),
            "the stuck head was closed after {took:?}"
        );
    }
}
