//! Listeners, the request path, the admin surface, reloads and graceful
//! shutdown.
//!
//! Steps, in order: [`Host::load`] opens the data directory, the database,
//! the engine and every plugin (one that fails to load is reported and its
//! routes answer 503, unless [`OnLoadError::Stop`]); [`Host::bind`] binds
//! every listener (printing `listening ...` lines and `ready`);
//! [`Bound::serve`] accepts connections (a task each, HTTP/1.1 keep-alive)
//! and applies reloads (SIGHUP, `POST /reload`: [`live`]) until SIGINT or
//! SIGTERM, then stops accepting, lets in-flight requests finish and
//! returns, closing redb.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
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
use crate::runtime::{Cache, CallError, Plugin, Runtime, Shared};
use crate::scheduler::Scheduler;

mod admin;
pub mod live;
mod local;
mod request;
pub mod state;

use live::{Changes, Entry, Live, ReloadError};
use state::PluginState;

pub use admin::APPROVE_HEADER;
use admin::*;
pub use local::{CheckRow, admin_call, check_rows, local_request, prefix_for};
pub use request::call_error_body;
use request::*;

/// A whole answer, or a plugin's streamed one ([`crate::runtime::Streamed`]).
type Body = http_body_util::Either<Full<Bytes>, crate::runtime::Streamed>;

/// A whole body.
fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Either::Left(Full::new(bytes.into()))
}

type HttpResponse = hyper::Response<Body>;

/// How long shutdown waits for in-flight requests beyond the longest plugin timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What to do when a plugin fails to load at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLoadError {
    /// Fail: `check`, `call`, `serve --strict`.
    Stop,
    /// Report it (log, `/plugins`, `/metrics`), answer 503 on its routes,
    /// and serve the others: `serve`.
    Report,
}

/// What a reload applies.
#[derive(Debug, Clone)]
pub enum Reload {
    /// The config file as it is now.
    File,
    /// The config in effect, with plugin `.0` switched on (`true`) or off.
    Enable(String, bool),
    /// A package to install (or upgrade to), with the grants the operator
    /// approved; `force` allows a downgrade.
    Install {
        package: Box<crate::package::Package>,
        approved: crate::caps::Grants,
        force: bool,
    },
    /// Back to the installed plugin's previous version.
    Rollback(String),
    /// An installed plugin removed, its packages deleted, and its stored
    /// data too unless `keep_data`.
    Remove { name: String, keep_data: bool },
}

/// A reload asked of the serving loop, and where its outcome goes.
pub struct ReloadRequest {
    pub what: Reload,
    pub reply: tokio::sync::oneshot::Sender<Result<Changes, ReloadError>>,
}

/// Everything `serve`, `call` and `check` share: the engine and the plugins.
pub struct Host {
    /// The config the host started with. Its `data_dir`, `admin`, `http`
    /// and `runtime` hold until the next start; its plugins and mounts are
    /// what [`Host::live`] serves until a reload changes them.
    pub config: Config,
    /// The file a reload re-reads (`None`: reloads are refused).
    pub config_path: Option<PathBuf>,
    pub shared: Arc<Shared>,
    pub runtime: Runtime,
    pub cache: Cache,
    live: arc_swap::ArcSwap<Live>,
    /// Which plugins the admin API disabled (saved in the data directory).
    state: std::sync::Mutex<PluginState>,
    /// The serving loop's reload queue, while it serves.
    reloads: OnceLock<tokio::sync::mpsc::Sender<ReloadRequest>>,
}

impl Host {
    /// Opens `config.data_dir` (creating it) and loads the plugins named by
    /// `only`, or all of them.
    /// `accept_empty_db` lets a 0-byte database file be started afresh.
    pub fn load(
        config: Config,
        only: Option<&str>,
        accept_empty_db: bool,
        on_error: OnLoadError,
    ) -> anyhow::Result<Host> {
        let dir = &config.data_dir;
        crate::util::fs::prepare_data_dir(dir)
            .with_context(|| format!("cannot prepare the data directory {}", dir.display()))?;
        let db = Db::open(dir, accept_empty_db, config.memory.storage_cache_bytes())?;
        Host::with_db(config, db, only, on_error)
    }

    /// Like [`Host::load`], with a database of the caller's choosing.
    pub fn with_db(
        config: Config,
        db: Db,
        only: Option<&str>,
        on_error: OnLoadError,
    ) -> anyhow::Result<Host> {
        let mut host = Host::empty(config, db)?;
        let state = PluginState::load(&host.config.data_dir)?;
        // The file's plugins and those installed from packages.
        let effective = match live::effective(&host.config, &state) {
            Ok(c) => c,
            // An installed plugin that clashes with what the file defines
            // now (a route, a listener) must not keep the rest from serving.
            Err(e) if on_error == OnLoadError::Report => {
                tracing::error!(
                    error = %e,
                    "the installed plugins do not fit the config file; serving the config file's plugins only until that is fixed"
                );
                host.config.clone()
            }
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::new();
        for p in &effective.plugins {
            if only.is_some_and(|name| name != p.name) {
                continue;
            }
            if state.disabled.contains(&p.name) {
                host.shared.metrics.plugin_up(&p.name, false);
                entries.push(Entry::Disabled { config: p.clone() });
                continue;
            }
            match host.runtime.load(p, host.shared.clone(), &host.cache) {
                Ok(plugin) => {
                    host.shared.metrics.plugin_up(&p.name, true);
                    entries.push(Entry::Serving {
                        config: p.clone(),
                        plugin: Arc::new(plugin),
                    });
                }
                Err(e) if on_error == OnLoadError::Report => {
                    let reason = format!("{e:#}");
                    tracing::error!(
                        plugin = %p.name,
                        error = %reason,
                        "plugin failed to load: its routes answer 503 until a reload loads it"
                    );
                    host.shared.metrics.plugin_up(&p.name, false);
                    entries.push(Entry::Failed {
                        config: p.clone(),
                        reason,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(name) = only
            && entries.is_empty()
        {
            anyhow::bail!("no plugin named `{name}` in the config");
        }
        host.switch(Live::new(host.config.clone(), entries));
        host.state = std::sync::Mutex::new(state);
        Ok(host)
    }

    /// The engine and shared state sized for `config`, with no plugin loaded.
    pub fn empty(config: Config, db: Db) -> anyhow::Result<Host> {
        let shared = Arc::new(Shared::new(&config, db));
        // The pool holds the instances in use (`runtime.max_instances`) and
        // the idle warm instances of plugins with `limits.reuse`.
        let mut rt = config.runtime.clone();
        rt.max_instances = rt
            .max_instances
            .saturating_add(crate::runtime::warm_instances(&config) as u32);
        let runtime = Runtime::new(&rt, config.max_memory_bytes())?;
        let cache = Cache::open(&config.data_dir)?;
        cache.trust_compilers(&config.trust.compilers);
        let live = Live::new(config.clone(), Vec::new());
        Ok(Host {
            config,
            config_path: None,
            shared,
            runtime,
            cache,
            live: arc_swap::ArcSwap::from_pointee(live),
            state: Default::default(),
            reloads: OnceLock::new(),
        })
    }

    /// The version of the plugin with this name that serves now.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.live
            .load()
            .entry(name)
            .and_then(|e| e.plugin().cloned())
    }

    /// Installed plugin `name`'s versions, if it was installed from packages.
    pub fn installed(&self, name: &str) -> Option<state::Installed> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .installed
            .get(name)
            .cloned()
    }

    /// Every plugin that serves now.
    pub fn serving(&self) -> Vec<Arc<Plugin>> {
        self.live
            .load()
            .plugins
            .iter()
            .filter_map(|e| e.plugin().cloned())
            .collect()
    }

    /// Re-reads the config file and applies the difference, through the
    /// serving loop (which owns the listeners): what changed, or why
    /// nothing did.
    pub async fn reload(&self, what: Reload) -> Result<Changes, ReloadError> {
        let tx = self.reloads.get().ok_or(ReloadError::NotServing)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(ReloadRequest { what, reply })
            .await
            .map_err(|_| ReloadError::NotServing)?;
        rx.await.map_err(|_| ReloadError::NotServing)?
    }

    /// Binds every listener and prints where. `bench_native` adds a listener
    /// answering natively, for benchmarks.
    pub async fn bind(self, bench_native: Option<&str>) -> anyhow::Result<Bound> {
        #[cfg(not(feature = "bench"))]
        let _ = bench_native;
        let host = Arc::new(self);
        let token = admin_token(&host.config.data_dir)?;
        let live = host.live();
        let http = &host.config.http;
        let (per_listener, per_client) = connection_caps(http, live.routers.len());
        let mut listeners = Vec::new();
        // (where, what answers there) for the table printed before `ready`.
        let mut table: Vec<(String, String)> = Vec::new();
        for listen in live.routers.keys() {
            let l = crate::listener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let actual = l.local_addr()?;
            if actual.to_string() == *listen {
                println!("listening plugins {actual}");
            } else {
                println!("listening plugins {actual} {listen}");
            }
            for e in &live.plugins {
                let what = match e {
                    Entry::Serving { .. } => e.name().to_string(),
                    Entry::Failed { .. } => format!("{} (failed to load: 503)", e.name()),
                    Entry::Disabled { .. } => format!("{} (disabled: 503)", e.name()),
                };
                for m in e.config().mounts.iter().filter(|m| m.listen == *listen) {
                    table.push((format!("http://{actual}{}", m.prefix), what.clone()));
                }
            }
            let caps = ConnCaps::new(per_listener, per_client);
            listeners.push((l, Kind::Plugins(Arc::from(listen.as_str())), caps));
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
        let signals =
            ShutdownSignals::register().context("cannot handle SIGINT, SIGTERM and SIGHUP")?;
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
            caps: (per_listener, per_client),
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
    /// A plugin listener, by its configured address (its routes are the
    /// live table's).
    Plugins(Arc<str>),
    Admin(Arc<String>),
    #[cfg(feature = "bench")]
    Native,
}

/// Bound listeners, ready to serve.
pub struct Bound {
    host: Arc<Host>,
    listeners: Vec<(TcpListener, Kind, Arc<ConnCaps>)>,
    signals: ShutdownSignals,
    /// Connection caps of a plugin listener: in all, per client address.
    caps: (usize, usize),
}

/// A plugin listener's accept loop and how to stop it alone.
struct AcceptLoop {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What every accept loop shares.
#[derive(Clone)]
struct Accepting {
    host: Arc<Host>,
    stop: tokio::sync::watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The most a connection buffers (`memory.connection_buffer_kb`).
    buffer: usize,
}

impl Accepting {
    /// Accepts on `listener` until shutdown or until `own_stop` says so.
    fn spawn(
        &self,
        listener: TcpListener,
        kind: Kind,
        caps: Arc<ConnCaps>,
        mut own_stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let Accepting {
            host,
            mut stop,
            graceful,
            header_timeout,
            idle_timeout,
            buffer,
        } = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    x = crate::listener::accept(&listener) => x,
                    _ = crate::util::shutdown::stopped(&mut stop) => return,
                    _ = crate::util::shutdown::stopped(&mut own_stop) => return,
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
                    .max_buf_size(buffer)
                    // The watchdog below times heads and idle connections.
                    .header_read_timeout(None)
                    .serve_connection(
                        TokioIo::new(Watched::new(stream, activity.clone())),
                        service,
                    );
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
        })
    }
}

impl Bound {
    /// The host being served.
    pub fn host(&self) -> Arc<Host> {
        self.host.clone()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully. SIGHUP
    /// and `POST /reload` re-read the config file and apply it.
    pub async fn serve(self) -> anyhow::Result<()> {
        // A watch, not a Notify: a loop busy when shutdown starts must still
        // see it on its next turn.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let lookup: crate::scheduler::Lookup = {
            let host = self.host.clone();
            Arc::new(move |name: &str| host.plugin(name))
        };
        let scheduler = Scheduler::new(self.host.shared.clone(), lookup);
        let scheduler = tokio::spawn(scheduler.run(stop.clone()));
        if self.host.config.memory.release_freed() {
            crate::util::memory::limit_arenas();
            tokio::spawn(crate::util::memory::trim_until(stop.clone()));
        }
        let http = &self.host.config.http;
        let accepting = Accepting {
            host: self.host.clone(),
            stop: stop.clone(),
            graceful: graceful.clone(),
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
            // hyper's floor is 8 KiB.
            buffer: self.host.config.memory.connection_buffer_bytes().max(8192),
        };
        // Plugin listeners by configured address: a reload opens and closes them.
        let mut plugin_loops: BTreeMap<String, AcceptLoop> = BTreeMap::new();
        let mut other_loops = Vec::new();
        for (listener, kind, caps) in self.listeners {
            let (own_tx, own_rx) = tokio::sync::watch::channel(false);
            let listen = match &kind {
                Kind::Plugins(listen) => Some(listen.to_string()),
                _ => None,
            };
            let task = accepting.spawn(listener, kind, caps, own_rx);
            match listen {
                Some(listen) => {
                    plugin_loops.insert(listen, AcceptLoop { stop: own_tx, task });
                }
                None => other_loops.push((own_tx, task)),
            }
        }
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
        let _ = self.host.reloads.set(reload_tx);
        let mut reloader = Reloader {
            host: self.host.clone(),
            accepting,
            loops: plugin_loops,
            caps: self.caps,
        };
        let ShutdownSignals {
            mut int,
            mut term,
            mut hup,
        } = self.signals;
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = reloader.reload(Reload::File).await;
                }
                Some(req) = reload_rx.recv() => {
                    let _ = req.reply.send(reloader.reload(req.what).await);
                }
            }
        }
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stop_tx.send(true);
        // Its handle on the graceful shutdown goes first (see below).
        let Reloader {
            loops, accepting, ..
        } = reloader;
        drop(accepting);
        for (_, l) in loops {
            let _ = l.task.await;
        }
        for (_, task) in other_loops {
            let _ = task.await;
        }
        let longest = self
            .host
            .serving()
            .iter()
            .map(|p| p.shared.limits.timeout_ms)
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
        #[cfg(feature = "wireguard")]
        self.host.shared.caps.wireguard.stop_all();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Applies reloads for the serving loop, which owns the plugin listeners.
struct Reloader {
    host: Arc<Host>,
    accepting: Accepting,
    loops: BTreeMap<String, AcceptLoop>,
    caps: (usize, usize),
}

impl Reloader {
    /// Re-reads the config file, prepares everything it changes, binds the
    /// listeners it adds, then switches and closes the listeners it drops;
    /// prints and logs the outcome. Any error before the switch changes
    /// nothing.
    async fn reload(&mut self, what: Reload) -> Result<Changes, ReloadError> {
        let started = Instant::now();
        let result = self.apply(what).await;
        match &result {
            Ok(changes) => {
                for line in changes.lines() {
                    println!("reload: {line}");
                }
                let _ = std::io::stdout().flush();
                tracing::info!(ms = started.elapsed().as_millis() as u64, "reload applied");
            }
            Err(e) => {
                println!("reload: refused, nothing changed: {e}");
                let _ = std::io::stdout().flush();
                tracing::error!(error = %e, "reload refused; nothing changed");
            }
        }
        result
    }

    async fn apply(&mut self, what: Reload) -> Result<Changes, ReloadError> {
        let old_state = self
            .host
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut state = old_state.clone();
        let file = match &what {
            Reload::File => {
                let path = self.host.config_path.clone().ok_or_else(|| {
                    ReloadError::Config(anyhow::anyhow!(
                        "the host was started without a config file"
                    ))
                })?;
                let mut new = Config::load(&path).map_err(|e| ReloadError::Config(e.into()))?;
                // `--data-dir` overrides the file's, as at start.
                new.data_dir = self.host.config.data_dir.clone();
                new
            }
            _ => self.host.live().config.clone(),
        };
        let data_dir = self.host.config.data_dir.clone();
        // Files to delete once the switch is made, and a plugin whose data goes.
        let mut obsolete: Vec<PathBuf> = Vec::new();
        // Files this reload wrote, deleted again unless it applies.
        let mut written = Unwritten(Vec::new());
        let mut purge: Option<String> = None;
        match what {
            Reload::File => {}
            Reload::Enable(name, on) => {
                // The table has every plugin of the config in effect.
                if self.host.live().entry(&name).is_none() {
                    return Err(ReloadError::NoSuchPlugin(name));
                }
                if on {
                    state.disabled.remove(&name);
                } else {
                    state.disabled.insert(name);
                }
            }
            Reload::Install {
                package,
                approved,
                force,
            } => {
                let name = &package.manifest().name;
                let version = package.manifest().version.to_string();
                let had = state
                    .installed
                    .get(name)
                    .is_some_and(|i| i.versions.iter().any(|v| v.version == version));
                let dropped = install(&file, &mut state, &data_dir, &package, &approved, force)?;
                if !had {
                    written.0 = state::version_files(&data_dir, name, &version).to_vec();
                }
                for v in dropped {
                    obsolete.extend(state::version_files(&data_dir, name, &v.version));
                }
            }
            Reload::Rollback(name) => {
                let installed = installed_only(&file, &mut state, &name)?;
                if installed.versions.len() < 2 {
                    return Err(ReloadError::Refused(format!(
                        "plugin `{name}` has no earlier version to roll back to"
                    )));
                }
                let undone = installed.versions.pop().expect("two versions");
                obsolete.extend(state::version_files(&data_dir, &name, &undone.version));
            }
            Reload::Remove { name, keep_data } => {
                installed_only(&file, &mut state, &name)?;
                state.installed.remove(&name);
                obsolete.push(state::packages_dir(&data_dir, &name));
                if !keep_data {
                    purge = Some(name);
                }
            }
        }
        let new = live::effective(&file, &state)?;
        let host = self.host.clone();
        let next_state = state.clone();
        let mut prepared = tokio::task::spawn_blocking(move || host.prepare(&new, &next_state))
            .await
            .map_err(|e| ReloadError::Config(anyhow::anyhow!("the reload task failed: {e}")))??;
        // What a later reload starts from: the file, not what packages add.
        prepared.live.config = file;
        let mut changes = prepared.changes;
        let mut opened = Vec::new();
        for listen in prepared.live.routers.keys() {
            if !self.loops.contains_key(listen) {
                let l = crate::listener::bind(listen)
                    .await
                    .map_err(|e| ReloadError::Listen {
                        listen: listen.clone(),
                        error: e.into(),
                    })?;
                opened.push((listen.clone(), l));
            }
        }
        let closed: Vec<String> = self
            .loops
            .keys()
            .filter(|l| !prepared.live.routers.contains_key(*l))
            .cloned()
            .collect();
        if state != old_state {
            // Saved before the switch: a state that cannot be kept is not applied.
            state
                .save(&self.host.config.data_dir)
                .map_err(ReloadError::State)?;
            *self.host.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        }
        let metrics = &self.host.shared.metrics;
        for name in &changes.removed {
            metrics.plugin_removed(name);
        }
        for e in &prepared.live.plugins {
            metrics.plugin_up(e.name(), e.plugin().is_some());
        }
        self.host.switch(prepared.live);
        written.0.clear();
        for path in obsolete {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete an obsolete package file");
            }
        }
        if let Some(name) = purge {
            match crate::caps::purge_plugin(&self.host.shared.db, &name) {
                Ok(n) => {
                    tracing::info!(plugin = %name, records = n, "deleted the removed plugin's data")
                }
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "cannot delete the removed plugin's data")
                }
            }
        }
        for (listen, l) in opened {
            let actual = l
                .local_addr()
                .map_or_else(|_| listen.clone(), |a| a.to_string());
            let (own_tx, own_rx) = tokio::sync::watch::channel(false);
            let caps = ConnCaps::new(self.caps.0, self.caps.1);
            let task =
                self.accepting
                    .spawn(l, Kind::Plugins(Arc::from(listen.as_str())), caps, own_rx);
            self.loops
                .insert(listen.clone(), AcceptLoop { stop: own_tx, task });
            changes.opened.push((listen, actual));
        }
        for listen in closed {
            if let Some(l) = self.loops.remove(&listen) {
                // Connections it accepted finish their requests; new ones
                // find no route there.
                let _ = l.stop.send(true);
            }
            changes.closed.push(listen);
        }
        Ok(changes)
    }
}

/// Files deleted when dropped, unless emptied first: what a refused install
/// wrote.
struct Unwritten(Vec<PathBuf>);

impl Drop for Unwritten {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Installed plugin `name` in `state`, refusing one the config file defines
/// or that is not installed.
fn installed_only<'s>(
    file: &Config,
    state: &'s mut PluginState,
    name: &str,
) -> Result<&'s mut state::Installed, ReloadError> {
    if file.plugins.iter().any(|p| p.name == name) {
        return Err(ReloadError::Refused(format!(
            "plugin `{name}` is defined in the config file, not installed from a package: change it there"
        )));
    }
    state
        .installed
        .get_mut(name)
        .ok_or_else(|| ReloadError::NoSuchPlugin(name.to_string()))
}

/// Verifies `package` under the config's trust policy, the approved grants
/// and the installed version, writes its files (private) and makes it the
/// plugin's current version in `state`; the versions dropped to stay within
/// [`state::KEEP_VERSIONS`].
fn install(
    file: &Config,
    state: &mut PluginState,
    data_dir: &Path,
    package: &crate::package::Package,
    approved: &crate::caps::Grants,
    force: bool,
) -> Result<Vec<state::InstalledVersion>, ReloadError> {
    let m = package.manifest();
    let name = m.name.as_str();
    if file.plugins.iter().any(|p| p.name == name) {
        return Err(ReloadError::Refused(format!(
            "plugin `{name}` is defined in the config file, which takes precedence: remove it there to install it from a package"
        )));
    }
    let installed = state
        .installed
        .get(name)
        .and_then(|i| i.current())
        .and_then(|v| crate::package::Version::parse(&v.version).ok());
    let verified = package
        .verify(&file.trust, Some(approved), installed.as_ref(), force)
        .map_err(|r| ReloadError::Refused(r.to_string()))?;
    let dir = state::packages_dir(data_dir, name);
    let version = m.version.to_string();
    if let Some(same) = state
        .installed
        .get(name)
        .and_then(|i| i.versions.iter().find(|v| v.version == version))
        && same.sha256 != package.component_sha256()
    {
        return Err(ReloadError::Refused(format!(
            "plugin `{name}` {version} is installed with another component: give the package a new version"
        )));
    }
    let [pkg_path, wasm_path] = state::version_files(data_dir, name, &version);
    let written = crate::util::fs::create_private_dir(&data_dir.join("packages"))
        .and_then(|()| crate::util::fs::create_private_dir(&dir))
        .and_then(|()| crate::util::fs::write_private(&pkg_path, &package.to_bytes()))
        .and_then(|()| crate::util::fs::write_private(&wasm_path, package.component()));
    written
        .map_err(|e| ReloadError::State(anyhow::anyhow!("cannot write {}: {e}", dir.display())))?;
    let entry = state::InstalledVersion {
        version,
        vendor: m.vendor.clone(),
        sha256: package.component_sha256(),
        signer: verified.signer.clone(),
        installed_at_ms: crate::util::time::unix_now_ms(),
        grants: m.grants.clone(),
        mounts: m.mounts.clone(),
        settings: m.settings.clone(),
        limits: m.limits.clone(),
    };
    Ok(state
        .installed
        .entry(name.to_string())
        .or_default()
        .push(entry))
}

/// SIGINT, SIGTERM and SIGHUP, registered before `ready` is printed so that
/// a signal arriving right after it cannot take the default action (dying).
struct ShutdownSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// Reload, not shutdown.
    hup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}
