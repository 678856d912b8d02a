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
use crate::runtime::{Cache, CallError, Plugin, Runtime, Shared};
use crate::scheduler::Scheduler;

type Body = Full<Bytes>;
type HttpResponse = hyper::Response<Body>;

/// Admin requests that are not for a plugin may carry at most this much body.
const ADMIN_BODY_BYTES: usize = 1 << 20;
/// How long an admin request that is not for a plugin waits for body budget.
const ADMIN_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight requests beyond the longest plugin timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `serve`, `call` and `check` share: the engine and the loaded plugins.
pub struct Host {
    pub config: Config,
    pub shared: Arc<Shared>,
    pub runtime: Runtime,
    pub plugins: Vec<Arc<Plugin>>,
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
            host.plugins.push(Arc::new(plugin));
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

    /// The plugin with this name.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.shared.name == name)
    }

    /// Binds every listener and prints where. `bench_native` adds a listener
    /// answering natively, for benchmarks.
    pub async fn bind(self, bench_native: Option<&str>) -> anyhow::Result<Bound> {
        let host = Arc::new(self);
        let token = admin_token(&host.config.data_dir)?;
        let routers = Router::from_config(&host.config);
        let http = &host.config.http;
        let (per_listener, per_client) = connection_caps(http, routers.len());
        let mut listeners = Vec::new();
        for (listen, router) in routers {
            let l = crate::listener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("listening plugins {} {listen}", l.local_addr()?);
            let caps = ConnCaps::new(per_listener, per_client);
            listeners.push((l, Kind::Plugins(Arc::new(router)), caps));
        }
        let l = crate::listener::bind(&host.config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", host.config.admin.listen))?;
        println!("listening admin {}", l.local_addr()?);
        listeners.push((
            l,
            Kind::Admin(Arc::new(token)),
            ConnCaps::new(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS_PER_CLIENT),
        ));
        if let Some(addr) = bench_native {
            let l = crate::listener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            println!("listening native {}", l.local_addr()?);
            let caps = ConnCaps::new(per_listener, per_client);
            listeners.push((l, Kind::Native, caps));
        }
        let signals = ShutdownSignals::register().context("cannot handle SIGINT and SIGTERM")?;
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

/// Reads `<data_dir>/admin.token`, creating it (mode 0600) on first start.
fn admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let token = crate::util::ids::hex(&crate::util::ids::random(32)?);
            crate::util::fs::write_private(&path, format!("{token}\n").as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
    }
}

#[derive(Clone)]
enum Kind {
    Plugins(Arc<Router>),
    Admin(Arc<String>),
    Native,
}

/// Bound listeners, ready to serve.
pub struct Bound {
    host: Arc<Host>,
    listeners: Vec<(TcpListener, Kind, Arc<ConnCaps>)>,
    signals: ShutdownSignals,
}

impl Bound {
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

fn json_response(status: StatusCode, value: serde_json::Value) -> HttpResponse {
    let mut r = hyper::Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn dispatch(
    host: Arc<Host>,
    kind: Kind,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let id = crate::util::ids::request_id();
    let (plugin_name, mut response) = match protocol_error(&req) {
        Some(r) => (None, r),
        None => match kind {
            Kind::Plugins(router) => plugin_request(&host, &router, peer, &id, req).await,
            Kind::Admin(token) => admin_request(&host, &token, peer, &id, req).await,
            Kind::Native => native_request(&host, req).await,
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    host.shared.metrics.request(
        plugin_name.unwrap_or("-"),
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}

/// A response after which the connection is closed: what follows a request
/// the host could not read to its end cannot be trusted to be a request.
fn closing(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Requests refused before routing because their framing is ambiguous: an
/// HTTP/1.1 request without `Host`, and a `Transfer-Encoding` other than
/// plain `chunked`, which proxies in front of the host might read
/// differently (request smuggling). (hyper itself refuses one that does not
/// end in `chunked`, and reads one that also has a `Content-Length` by its
/// `Transfer-Encoding` alone, closing the connection after the answer.)
fn protocol_error(req: &hyper::Request<Incoming>) -> Option<HttpResponse> {
    let h = req.headers();
    if req.version() == http::Version::HTTP_11 && !h.contains_key(header::HOST) {
        return Some(closing(json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "an HTTP/1.1 request needs a Host header"}),
        )));
    }
    let te = h.get_all(header::TRANSFER_ENCODING);
    // No Transfer-Encoding: nothing more to check.
    te.iter().next()?;
    let codings: Vec<String> = te
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let error = if codings.last().map(String::as_str) != Some("chunked") {
        Some((
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding must end with chunked",
        ))
    } else if codings.len() != 1 {
        Some((
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is supported",
        ))
    } else if h.contains_key(header::CONTENT_LENGTH) {
        Some((
            StatusCode::BAD_REQUEST,
            "a request may not have both Transfer-Encoding and Content-Length",
        ))
    } else {
        None
    };
    error.map(|(status, message)| closing(json_response(status, json!({"error": message}))))
}

/// A request body in memory, holding its share of the host's body budget
/// until it is dropped.
struct ReadBody {
    parts: http::request::Parts,
    bytes: Bytes,
    budget: Option<OwnedSemaphorePermit>,
}

/// Takes `n` bytes of the body budget, waiting until `until`.
async fn take_budget(
    budget: &Arc<Semaphore>,
    n: usize,
    until: tokio::time::Instant,
) -> Result<OwnedSemaphorePermit, HttpResponse> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(until, budget.clone().acquire_many_owned(n)).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(unavailable(
            "too many request bodies in memory; retry later",
        )),
    }
}

fn unavailable(message: &str) -> HttpResponse {
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Reads the body up to `limit` bytes within `http.body_timeout_ms`, holding
/// as many bytes of the host's body budget (waiting up to `queue_timeout`
/// for them); `Err` is the response to send.
async fn read_body(
    host: &Host,
    req: hyper::Request<Incoming>,
    limit: usize,
    queue_timeout: Duration,
) -> Result<ReadBody, HttpResponse> {
    let too_large = || {
        closing(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "request body too large", "limit": limit}),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let budget = &host.shared.body_budget;
    let queue_until = tokio::time::Instant::now() + queue_timeout;
    let mut permit = match declared {
        Some(n) if n > 0 => Some(take_budget(budget, n as usize, queue_until).await?),
        _ => None,
    };
    let (parts, mut body) = req.into_parts();
    let body_timeout = Duration::from_millis(host.config.http.body_timeout_ms);
    let read = async {
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                closing(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("cannot read the request body: {e}")}),
                ))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            if declared.is_none() && !data.is_empty() {
                let more = take_budget(budget, data.len(), queue_until).await?;
                match &mut permit {
                    Some(p) => p.merge(more),
                    None => permit = Some(more),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf)
    };
    match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(buf)) => Ok(ReadBody {
            parts,
            bytes: Bytes::from(buf),
            budget: permit,
        }),
        Ok(Err(r)) => Err(r),
        Err(_) => Err(closing(json_response(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "the request body did not arrive in time", "timeout_ms": body_timeout.as_millis() as u64}),
        ))),
    }
}

fn to_wit_request(
    parts: &http::request::Parts,
    body: Bytes,
    peer: SocketAddr,
    prefix: &str,
    id: &str,
) -> Request {
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body: body.into(),
        client_addr: peer.to_string(),
        prefix: prefix.to_string(),
        request_id: id.to_string(),
    }
}

/// Turns a plugin's answer or failure into the HTTP response.
fn plugin_response(
    result: Result<crate::caps::wit::Response, CallError>,
    id: &str,
) -> HttpResponse {
    match result {
        Ok(r) => {
            let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
            // `check_response` already validated status and headers.
            *out.status_mut() =
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in r.headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    out.headers_mut().append(k, v);
                }
            }
            out
        }
        Err(e) => {
            let (status, body) = call_error_body(&e, id);
            let mut r = json_response(status, body);
            if matches!(e, CallError::Busy(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}

/// What the client gets when a call produced no usable response.
pub fn call_error_body(e: &CallError, id: &str) -> (StatusCode, serde_json::Value) {
    match e {
        CallError::Deadline => (
            StatusCode::GATEWAY_TIMEOUT,
            json!({"error": "deadline exceeded", "request_id": id}),
        ),
        CallError::NoExport(what) => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("the plugin has no `{what}` export"), "request_id": id}),
        ),
        CallError::HostPanic(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "internal error", "request_id": id}),
        ),
        CallError::Busy(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("busy: {why}; retry later"), "request_id": id}),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "plugin failed", "request_id": id}),
        ),
    }
}

/// Whether `plugin` may touch the database (so cannot work while it is down).
fn uses_storage(plugin: &Plugin) -> bool {
    let g = &plugin.shared.caps.grants;
    g.kv || g.keys || g.jobs
}

/// 503 while the database is down, the same for every plugin.
fn storage_unavailable(why: &str, id: &str) -> HttpResponse {
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": format!("storage unavailable: {why}; retry later"), "request_id": id}),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Reads the body and calls the plugin's `handler` (or `admin`). While the
/// database is down, a plugin that uses it is not called: 503. One whose
/// call failed (5xx) because the database went down meanwhile gets the same
/// 503 rather than its own error text; a success is never replaced.
async fn call_plugin(
    host: &Host,
    plugin: &Plugin,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    prefix: &str,
    id: &str,
    admin: bool,
) -> HttpResponse {
    let storage = uses_storage(plugin);
    if storage && let Some(why) = host.shared.db.down_reason() {
        return storage_unavailable(&why, id);
    }
    let limits = &plugin.shared.limits;
    let queue_timeout = Duration::from_millis(limits.queue_timeout_ms);
    let ReadBody {
        parts,
        bytes,
        budget,
    } = match read_body(host, req, limits.max_body_bytes, queue_timeout).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let wit = to_wit_request(&parts, bytes, peer, prefix, id);
    let result = if admin {
        plugin.admin(wit).await
    } else {
        plugin.handle(wit).await
    };
    // The body lived in the call's memory until now.
    drop(budget);
    let response = plugin_response(result, id);
    if storage
        && response.status().is_server_error()
        && let Some(why) = host.shared.db.down_reason()
    {
        return storage_unavailable(&why, id);
    }
    response
}

async fn plugin_request<'h>(
    host: &'h Host,
    router: &Router,
    peer: SocketAddr,
    id: &str,
    req: hyper::Request<Incoming>,
) -> (Option<&'h str>, HttpResponse) {
    let path = req.uri().path().to_string();
    let Some(m) = router.route(&path) else {
        return (
            None,
            json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "no route", "path": path}),
            ),
        );
    };
    let plugin = &host.plugins[m.plugin];
    let name = Some(plugin.shared.name.as_str());
    plugin.stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = call_plugin(host, plugin, req, peer, m.prefix, id, false).await;
    (name, response)
}

async fn native_request(
    host: &Host,
    req: hyper::Request<Incoming>,
) -> (Option<&str>, HttpResponse) {
    let limit = host
        .plugins
        .first()
        .map_or(ADMIN_BODY_BYTES, |p| p.shared.limits.max_body_bytes);
    if let Err(r) = read_body(host, req, limit, ADMIN_QUEUE_TIMEOUT).await {
        return (Some("native"), r);
    }
    (
        Some("native"),
        json_response(StatusCode::OK, json!({"message": "hello"})),
    )
}

fn authorized(token: &str, req: &hyper::Request<Incoming>) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::caps::crypto::constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

async fn admin_request<'h>(
    host: &'h Host,
    token: &str,
    peer: SocketAddr,
    id: &str,
    req: hyper::Request<Incoming>,
) -> (Option<&'h str>, HttpResponse) {
    let path = req.uri().path().to_string();
    if path == "/health" && req.method() == Method::GET {
        return (
            None,
            match host.shared.db.down_reason() {
                None => json_response(StatusCode::OK, json!({"status": "ok"})),
                Some(why) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "degraded", "storage": format!("unavailable: {why}")}),
                ),
            },
        );
    }
    if !authorized(token, &req) {
        let mut r = json_response(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return (None, r);
    }
    if let Some(rest) = path.strip_prefix("/plugins/")
        && let Some((name, tail)) = rest.split_once('/')
        && (tail == "admin" || tail.starts_with("admin/"))
    {
        let Some(plugin) = host.plugin(name) else {
            return (
                None,
                json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such plugin", "plugin": name}),
                ),
            );
        };
        let prefix = format!("/plugins/{name}/admin");
        let response = call_plugin(host, plugin, req, peer, &prefix, id, true).await;
        return (Some(plugin.shared.name.as_str()), response);
    }
    if path == "/backup" && req.method() == Method::POST {
        return (None, backup(host));
    }
    if req.method() != Method::GET {
        return (
            None,
            json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            ),
        );
    }
    if let Err(r) = read_body(host, req, ADMIN_BODY_BYTES, ADMIN_QUEUE_TIMEOUT).await {
        return (None, r);
    }
    match path.as_str() {
        "/plugins" => (None, json_response(StatusCode::OK, plugins_json(host))),
        "/metrics" => {
            let db = &host.shared.db;
            host.shared
                .metrics
                .storage(db.down_reason().is_none(), db.failures());
            let mut r = hyper::Response::new(Full::new(Bytes::from(host.shared.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            (None, r)
        }
        _ => (
            None,
            json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "no route", "path": path}),
            ),
        ),
    }
}

/// `POST /backup`: a consistent copy of the database, taken while serving,
/// into `<data_dir>/backups/wasmgate-<unix ms>.redb`.
fn backup(host: &Host) -> HttpResponse {
    let dir = host.config.data_dir.join("backups");
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let path = dir.join(format!("wasmgate-{ms}.redb"));
    let made =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| host.shared.db.backup(&path).map_err(|e| e.to_string()));
    match made {
        Ok(()) => {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            tracing::info!(path = %path.display(), bytes, "database backed up");
            json_response(StatusCode::OK, json!({"path": path, "bytes": bytes}))
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("backup failed: {e}")}),
            )
        }
    }
}

fn plugins_json(host: &Host) -> serde_json::Value {
    let plugins: Vec<_> = host
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.shared.name,
                "wasm": p.config.wasm,
                "mounts": p.config.mounts,
                "grants": p.config.grants.names(),
                "limits": p.config.limits,
                "exports": p.exports(),
                "state": "running",
                "requests": p.stats.requests.load(Ordering::Relaxed),
                "traps": p.stats.traps.load(Ordering::Relaxed),
                "deadline_hits": p.stats.deadlines.load(Ordering::Relaxed),
            })
        })
        .collect();
    json!({
        "plugins": plugins,
        "allocator": if host.runtime.pooling { "pooling" } else { "on_demand" },
    })
}

/// The prefix of the plugin's first mount that matches `path`, else its first
/// mount's prefix, else `/` (for `wasmgate call`).
pub fn prefix_for(plugin: &Plugin, path: &str) -> String {
    let mounts = &plugin.config.mounts;
    let mut matching: Vec<_> = mounts
        .iter()
        .filter(|m| {
            let mut r = Router::default();
            r.add(&m.prefix, 0);
            r.route(path).is_some()
        })
        .collect();
    matching.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
    matching
        .first()
        .copied()
        .or(mounts.first())
        .map_or_else(|| "/".to_string(), |m| m.prefix.clone())
}

/// A request for `wasmgate call` and `bench-instantiate`.
pub fn local_request(
    method: &str,
    path_and_query: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    prefix: String,
) -> Request {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    Request {
        method: method.to_ascii_uppercase(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        client_addr: "127.0.0.1:0".to_string(),
        prefix,
        request_id: crate::util::ids::request_id(),
    }
}

/// Rows for `wasmgate check`.
pub fn check_rows(config: &Config) -> (Vec<[String; 5]>, bool) {
    let mut rows = Vec::new();
    let mut ok = true;
    let db = match Db::in_memory() {
        Ok(db) => db,
        Err(e) => {
            return (
                vec![[
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("error: {e}"),
                ]],
                false,
            );
        }
    };
    let host = match Host::empty(config.clone(), db) {
        Ok(h) => h,
        Err(e) => {
            return (
                vec![[
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("error: {e:#}"),
                ]],
                false,
            );
        }
    };
    let cache = match Cache::open(&config.data_dir) {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![[
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("error: {e:#}"),
                ]],
                false,
            );
        }
    };
    for p in &config.plugins {
        let mounts = p
            .mounts
            .iter()
            .map(|m| format!("{}{}", m.listen, m.prefix))
            .collect::<Vec<_>>()
            .join(" ");
        let grants = match p.grants.names() {
            names if names.is_empty() => "-".to_string(),
            names => names.join(","),
        };
        let status = match host.runtime.load(p, host.shared.clone(), &cache) {
            Ok(loaded) => format!(
                "ok ({}; exports {})",
                if loaded.from_cache {
                    "cached"
                } else {
                    "compiled"
                },
                loaded.exports().join(", ")
            ),
            Err(e) => {
                ok = false;
                format!("error: {e:#}")
            }
        };
        rows.push([
            p.name.clone(),
            p.wasm.display().to_string(),
            mounts,
            grants,
            status,
        ]);
    }
    (rows, ok)
}
