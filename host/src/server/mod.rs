//! Listeners, the request path, the admin surface and graceful shutdown.
//!
//! Steps, in order: [`Host::load`] opens the data directory, the database,
//! the engine and every plugin; [`Host::bind`] binds every listener (printing
//! `listening ...` lines and `ready`); [`Bound::serve`] accepts connections
//! (a task each, HTTP/1.1 keep-alive) until SIGINT or SIGTERM, then stops
//! accepting, lets in-flight requests finish and returns, closing redb.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::caps::wit::Request;
use crate::config::Config;
use crate::db::Db;
use crate::listener::{Activity, ConnCaps, Watched, watchdog};
use crate::router::Router;
use crate::runtime::{Cache, CallError, Loaded, Plugin, Runtime, Shared};
use crate::scheduler::Scheduler;

mod admin;
mod local;
mod request;

use admin::*;
pub use local::{CheckRow, check_rows, local_request, prefix_for};
pub use request::call_error_body;
use request::*;

type Body = Full<Bytes>;

type HttpResponse = hyper::Response<Body>;

/// How long shutdown waits for in-flight requests beyond the longest plugin timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `serve`, `call` and `check` share: the engine and the loaded plugins.
pub struct Host {
    pub config: Config,
    pub shared: Arc<Shared>,
    pub runtime: Runtime,
    /// Each loaded plugin's current version.
    pub plugins: Vec<Arc<Loaded>>,
}

impl Host {
    /// Opens `config.data_dir` (creating it) and loads the plugins named by
    /// `only`, or all of them.
    /// `accept_empty_db` lets a 0-byte database file be started afresh.
    pub fn load(config: Config, only: Option<&str>, accept_empty_db: bool) -> anyhow::Result<Host> {
        let dir = &config.data_dir;
        crate::util::fs::prepare_data_dir(dir)
            .with_context(|| format!("cannot prepare the data directory {}", dir.display()))?;
        let db = Db::open(dir, accept_empty_db)?;
        Host::with_db(config, db, only)
    }

    /// Like [`Host::load`], with a database of the caller's choosing.
    pub fn with_db(config: Config, db: Db, only: Option<&str>) -> anyhow::Result<Host> {
        let mut host = Host::empty(config, db)?;
        let cache = Cache::open(&host.config.data_dir)?;
        for p in &host.config.plugins {
            if only.is_some_and(|name| name != p.name) {
                continue;
            }
            let plugin = host.runtime.load(p, host.shared.clone(), &cache)?;
            host.plugins.push(Arc::new(Loaded::new(plugin)));
        }
        if let Some(name) = only
            && host.plugins.is_empty()
        {
            anyhow::bail!("no plugin named `{name}` in the config");
        }
        Ok(host)
    }

    /// The engine and shared state sized for `config`, with no plugin loaded.
    pub fn empty(config: Config, db: Db) -> anyhow::Result<Host> {
        let shared = Arc::new(Shared::new(&config, db));
        let runtime = Runtime::new(&config.runtime, config.max_memory_bytes())?;
        Ok(Host {
            config,
            shared,
            runtime,
            plugins: Vec::new(),
        })
    }

    /// The current version of the plugin with this name.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.loaded(name).map(|l| l.get())
    }

    /// The plugin with this name, whose version may change.
    pub fn loaded(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// Binds every listener and prints where. `bench_native` adds a listener
    /// answering natively, for benchmarks.
    pub async fn bind(self, bench_native: Option<&str>) -> anyhow::Result<Bound> {
        #[cfg(not(feature = "bench"))]
        let _ = bench_native;
        let host = Arc::new(self);
        let token = admin_token(&host.config.data_dir)?;
        let routers = Router::from_config(&host.config);
        let http = &host.config.http;
        let (per_listener, per_client) = connection_caps(http, routers.len());
        let mut listeners = Vec::new();
        // (where, what answers there) for the table printed before `ready`.
        let mut table: Vec<(String, String)> = Vec::new();
        for (listen, router) in routers {
            let l = crate::listener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let actual = l.local_addr()?;
            if actual.to_string() == listen {
                println!("listening plugins {actual}");
            } else {
                println!("listening plugins {actual} {listen}");
            }
            for p in &host.config.plugins {
                for m in p.mounts.iter().filter(|m| m.listen == listen) {
                    table.push((format!("http://{actual}{}", m.prefix), p.name.clone()));
                }
            }
            let caps = ConnCaps::new(per_listener, per_client);
            listeners.push((l, Kind::Plugins(Arc::new(router)), caps));
        }
        let l = crate::listener::bind(&host.config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", host.config.admin.listen))?;
        let admin_addr = l.local_addr()?;
        println!("listening admin {admin_addr}");
        table.push((
            format!("http://{admin_addr}/"),
            "admin API (bearer token in the data directory's admin.token)".into(),
        ));
        listeners.push((
            l,
            Kind::Admin(Arc::new(token)),
            ConnCaps::new(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS_PER_CLIENT),
        ));
        #[cfg(feature = "bench")]
        if let Some(addr) = bench_native {
            let l = crate::listener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            println!("listening native {}", l.local_addr()?);
            let caps = ConnCaps::new(per_listener, per_client);
            listeners.push((l, Kind::Native, caps));
        }
        let signals = ShutdownSignals::register().context("cannot handle SIGINT and SIGTERM")?;
        table.sort();
        let width = table.iter().map(|(url, _)| url.len()).max().unwrap_or(0);
        println!("routes:");
        for (url, what) in &table {
            println!("  {url:<width$}  {what}");
        }
        println!("ready");
        std::io::stdout().flush()?;
        Ok(Bound {
            host,
            listeners,
            signals,
        })
    }
}

/// Connections the admin listener takes, in all and per client address: an
/// operator's surface, kept apart so that it answers while plugin listeners
/// are saturated.
const ADMIN_CONNECTIONS: usize = 64;

const ADMIN_CONNECTIONS_PER_CLIENT: usize = 16;

/// File descriptors kept out of the connection budget: the database, the
/// cache, the admin listener's connections, `outbound` and netlink sockets.
const FD_RESERVE: usize = 128 + ADMIN_CONNECTIONS;

/// The caps of each plugin listener, in all and per client address: the
/// configured ones, lowered so that all `listeners` together stay within the
/// open file limit (raised to its hard limit first) less [`FD_RESERVE`]; so
/// the process never runs out of descriptors because of clients, and the
/// admin listener keeps answering. Where the limit lowers them, one client
/// address may hold at most a quarter of a listener's connections.
fn connection_caps(http: &crate::config::HttpConfig, listeners: usize) -> (usize, usize) {
    let (configured, per_client) = (
        http.max_connections as usize,
        http.max_connections_per_client as usize,
    );
    let limit = crate::listener::raise_fd_limit() as usize;
    let budget = limit.saturating_sub(FD_RESERVE).max(16);
    let fit = (budget / listeners.max(1)).max(4);
    if fit >= configured {
        return (configured, per_client);
    }
    let per_client = per_client.min((fit / 4).max(1));
    tracing::warn!(
        open_file_limit = limit,
        configured,
        per_listener = fit,
        per_client,
        "the open file limit is too low for http.max_connections on every listener; lowered"
    );
    (fit, per_client)
}

#[derive(Clone)]
enum Kind {
    Plugins(Arc<Router>),
    Admin(Arc<String>),
    #[cfg(feature = "bench")]
    Native,
}

/// Bound listeners, ready to serve.
pub struct Bound {
    host: Arc<Host>,
    listeners: Vec<(TcpListener, Kind, Arc<ConnCaps>)>,
    signals: ShutdownSignals,
}

impl Bound {
    /// The host being served.
    pub fn host(&self) -> Arc<Host> {
        self.host.clone()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn serve(self) -> anyhow::Result<()> {
        // A watch, not a Notify: a loop busy when shutdown starts must still
        // see it on its next turn.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let scheduler = Scheduler::new(self.host.shared.clone(), &self.host.plugins);
        let scheduler = tokio::spawn(scheduler.run(stop.clone()));
        let mut accept_loops = Vec::new();
        let http = &self.host.config.http;
        let header_timeout = Duration::from_millis(http.header_timeout_ms);
        let idle_timeout = Duration::from_millis(http.idle_timeout_ms);
        for (listener, kind, caps) in self.listeners {
            let host = self.host.clone();
            let mut stop = stop.clone();
            let graceful = graceful.clone();
            accept_loops.push(tokio::spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        x = crate::listener::accept(&listener) => x,
                        _ = crate::util::shutdown::stopped(&mut stop) => return,
                    };
                    let Some(admitted) = caps.admit(peer.ip()) else {
                        tracing::debug!(%peer, open = caps.open(), "connection refused: over a connection cap");
                        crate::listener::refuse(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let activity = Activity::new();
                    let (host, kind, act) = (host.clone(), kind.clone(), activity.clone());
                    let service = service_fn(move |req| {
                        let in_service = act.enter();
                        let (host, kind) = (host.clone(), kind.clone());
                        async move {
                            let r = dispatch(host, kind, peer, req).await;
                            drop(in_service);
                            r
                        }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        // The watchdog below times heads and idle connections.
                        .header_read_timeout(None)
                        .serve_connection(TokioIo::new(Watched::new(stream, activity.clone())), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        tokio::select! {
                            r = conn => if let Err(e) = r {
                                tracing::debug!(error = %e, %peer, "connection ended with an error");
                            },
                            why = watchdog(&activity, header_timeout, idle_timeout) => {
                                tracing::debug!(%peer, ?why, "connection closed by a timeout");
                            }
                        }
                        drop(admitted);
                    });
                }
            }));
        }
        let mut signals = self.signals;
        signals.recv().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stop_tx.send(true);
        for l in accept_loops {
            let _ = l.await;
        }
        let longest = self
            .host
            .config
            .plugins
            .iter()
            .map(|p| p.limits.timeout_ms)
            .max()
            .unwrap_or(0);
        let grace = Duration::from_millis(longest) + SHUTDOWN_GRACE;
        let graceful = Arc::try_unwrap(graceful)
            .map_err(|_| anyhow::anyhow!("listener tasks still hold the shutdown handle"))?;
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
        }
        let _ = scheduler.await;
        self.host.shared.caps.wireguard.stop_all();
        tracing::info!("stopped");
        Ok(())
    }
}

/// SIGINT and SIGTERM, registered before `ready` is printed so that a signal
/// arriving right after it cannot take the default action (dying).
struct ShutdownSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
