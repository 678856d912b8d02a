//! The engine, the loaded plugins, and one call into a plugin.
//!
//! Steps, in order:
//! 1. [`Runtime::new`]: one `Engine` with epoch interruption, an explicit
//!    wasm stack cap and the pooling allocator, falling back to on-demand
//!    allocation when the pool's address space cannot be reserved.
//! 2. [`Runtime::load`] per plugin: the component from the on-disk cache
//!    ([`Cache`]) or compiled and cached, its imports checked
//!    ([`WASI_INTERFACES`], [`WASI_TRAP_STUBS`] and the granted
//!    capabilities, every other import refused at once), a `Linker` holding
//!    WASI with nothing to reach (no preopened directory, no socket, no
//!    environment or arguments) plus only the granted capabilities, and an
//!    `InstancePre` with the export indices looked up once.
//! 3. [`Plugin::handle`] per request: wait for an instance slot, a fresh
//!    `Store` with explicit `StoreLimits` and a wall-clock deadline checked at
//!    every epoch tick, instantiate, call, drop. A trap or deadline fails
//!    only that call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
#[cfg(feature = "compiler")]
use ring::digest;
use ring::hmac;
use tokio::sync::Semaphore;
use wasmtime::component::{
    Component, InstancePre, Linker, ResourceTable, ResourceType, types::ComponentItem,
};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::aot::{self, EngineSettings};
use crate::caps::log::Output;
use crate::caps::wit::{Request, Response, admin, handler, job_handler};
use crate::caps::{Call, CapsHost, HostCaps, HostEnv, PluginCaps, PluginEnv};
use crate::config::{AllocatorKind, Limits, PluginConfig, RuntimeConfig, TrustedKey};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::slots::{SlotError, Slots};
use crate::util::deadline::DeadlineExceeded;

mod stream;
mod warm;

use stream::Stream;
pub use stream::{Cut, Head, Sink, Streamed, sink};

/// How often the epoch advances; the granularity of deadlines.
pub const TICK: Duration = Duration::from_millis(10);
/// Response headers a plugin may send.
const MAX_RESPONSE_HEADERS: usize = 100;

/// State shared by every plugin and request.
pub struct Shared {
    pub db: Db,
    /// Every capability's host-wide state.
    pub caps: Arc<HostCaps>,
    pub metrics: Metrics,
    /// Instance slots, shared fairly between plugins (see [`crate::slots`]).
    pub slots: Arc<Slots>,
    /// Bytes of request bodies that may be held in memory at once.
    pub body_budget: Arc<Semaphore>,
    /// Threads for expensive host calls, as `runtime.blocking_threads` says.
    pub blocking_threads: usize,
    /// Idle warm instances that may still be kept, host-wide: the room the
    /// engine's pool was given for them ([`warm_instances`]).
    pub warm_budget: std::sync::atomic::AtomicUsize,
}

/// Idle warm instances kept per plugin with `limits.reuse`: one per core
/// (calls run on the cores; more would only sit idle), at most 8.
pub fn warm_per_plugin() -> usize {
    // Asking reads cgroup files: once.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8)))
}

/// Room for idle warm instances that `config` needs, beyond
/// `runtime.max_instances` (which bounds the instances in use).
pub fn warm_instances(config: &crate::config::Config) -> usize {
    config
        .plugins
        .iter()
        .filter(|p| p.limits.reuse.is_some())
        .count()
        * warm_per_plugin()
}

impl Shared {
    /// Shared state for `config`, over `db`.
    pub fn new(config: &crate::config::Config, db: Db) -> Shared {
        let rt = &config.runtime;
        let blocking_threads = rt.blocking_threads();
        Shared {
            caps: HostCaps::new(&HostEnv {
                db: db.clone(),
                blocking_threads,
            }),
            db,
            metrics: Metrics::default(),
            slots: Slots::new(rt.max_instances as usize),
            body_budget: Arc::new(Semaphore::new(
                rt.max_buffered_body_bytes.min(u32::MAX as u64) as usize,
            )),
            blocking_threads,
            warm_budget: warm_instances(config).into(),
        }
    }
}

/// A loaded plugin's part of the host: its capabilities, its limits, its
/// instance slot.
pub struct PluginShared {
    pub name: String,
    pub caps: PluginCaps,
    pub limits: Limits,
    pub host: Arc<Shared>,
    /// Its index in [`Shared::slots`].
    pub slot: usize,
    /// Its counters, kept across versions.
    pub stats: Arc<PluginStats>,
}

/// The data of one `Store`: one request or one job.
pub struct Ctx {
    plugin: Arc<PluginShared>,
    request_id: String,
    /// When the call's `timeout_ms` runs out. The epoch callback enforces it
    /// while wasm runs; an async host function bounds its own waiting by it.
    pub deadline: Instant,
    pub table: ResourceTable,
    pub stdout: Output,
    pub stderr: Output,
    wasi: WasiCtx,
    limits: Limiter,
    /// The newest storage commit the call may have read.
    storage_seen: u64,
    /// Where a streamed answer goes ([`stream`]).
    stream: Stream,
}

/// The store's caps, noting the largest memory asked for (what decides
/// whether a warm instance is kept).
struct Limiter {
    caps: StoreLimits,
    peak_memory: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

impl CapsHost for Ctx {
    fn call(&mut self) -> Call<'_> {
        Call {
            plugin: &self.plugin.caps,
            host: &self.plugin.host.caps,
            request_id: &self.request_id,
            deadline: self.deadline,
            table: &mut self.table,
            storage_seen: &mut self.storage_seen,
        }
    }
}

impl Ctx {
    /// Sends what the plugin printed to the log.
    fn flush_output(&self) {
        crate::caps::log::flush_output(
            &self.plugin.caps,
            &self.request_id,
            &self.stdout,
            &self.stderr,
        );
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A panic inside a host function, caught at the call.
#[derive(Debug, thiserror::Error)]
#[error("a host call panicked: {0}")]
pub struct HostPanic(pub String);

/// Awaits a call, turning a panic that escaped a host function into an
/// error of that call instead of the end of the connection's task.
async fn catch_host_panic<T>(
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(wasmtime::Error::new(HostPanic(what)))
        }
    }
}

/// Why a call into a plugin produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past `timeout_ms`.
    #[error("deadline exceeded")]
    Deadline,
    /// The plugin trapped (panic, out of memory, stack overflow, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The response body is over `max_response_bytes`.
    #[error("response of {size} bytes is over the plugin's cap of {cap}")]
    ResponseTooLarge { size: usize, cap: usize },
    /// The response has an invalid status or header.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The plugin does not export the interface.
    #[error("the plugin does not export `{0}`")]
    NoExport(&'static str),
    /// A host function panicked (a damaged database, say): the request
    /// fails, the connection and the host live on.
    #[error("a host call panicked: {0}")]
    HostPanic(String),
    /// No instance slot came free in time, or the plugin's queue is full.
    #[error("busy: {0}")]
    Busy(#[from] SlotError),
    /// What the call read could not be made durable: the database failed.
    #[error("{0}")]
    Storage(String),
}

/// A plugin the host refuses to load (no such file, not a component, an
/// import its grants withhold, ...): like a config error, the config has to
/// change. The message is the whole chain of causes.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct LoadError(pub anyhow::Error);

/// Counters kept per plugin for `/plugins`.
#[derive(Default)]
pub struct PluginStats {
    pub requests: AtomicU64,
    pub traps: AtomicU64,
    pub deadlines: AtomicU64,
}

/// A loaded plugin, ready to serve.
pub struct Plugin {
    pub shared: Arc<PluginShared>,
    pub config: PluginConfig,
    /// Where its compiled code came from.
    pub origin: Origin,
    /// The SHA-256 of the component file, in hex: which code this version runs.
    pub sha256: String,
    /// When this version was loaded.
    pub loaded_at: std::time::SystemTime,
    engine: Engine,
    pre: InstancePre<Ctx>,
    handler: handler::GuestIndices,
    admin: Option<admin::GuestIndices>,
    jobs: Option<job_handler::GuestIndices>,
    /// Idle warm instances (`limits.reuse`).
    warm: Arc<warm::Pool>,
}

/// The engine and its epoch ticker.
pub struct Runtime {
    pub engine: Engine,
    /// Whether the pooling allocator is in use (false after a fallback).
    pub pooling: bool,
    /// The engine settings that shape compiled code, as in use.
    pub settings: EngineSettings,
    /// What code the engine runs ([`aot::host_code_target`]).
    pub arch: String,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine. `max_memory` is the largest memory cap of any plugin.
    pub fn new(rt: &RuntimeConfig, max_memory: usize) -> anyhow::Result<Runtime> {
        let on_demand = aot::engine_config(rt, max_memory, false, None, false)?;
        let (engine, pooling) = match rt.allocator {
            AllocatorKind::OnDemand => (Engine::new(&on_demand)?, false),
            AllocatorKind::Pooling => {
                match Engine::new(&aot::engine_config(rt, max_memory, true, None, false)?) {
                    Ok(engine) => (engine, true),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reserve the instance pool; using on-demand allocation");
                        (Engine::new(&on_demand)?, false)
                    }
                }
            }
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })?;
        Ok(Runtime {
            engine,
            pooling,
            settings: aot::settings(max_memory, pooling),
            arch: aot::host_code_target(rt.pulley),
            stop_ticker,
        })
    }

    /// Compiles (or loads from `cache`) and links one plugin. Its errors are
    /// [`LoadError`]s: the config names something the host cannot run.
    pub fn load(
        &self,
        config: &PluginConfig,
        host: Arc<Shared>,
        cache: &Cache,
    ) -> anyhow::Result<Plugin> {
        self.load_version(config, host, cache, Arc::default())
    }

    /// Like [`Runtime::load`], counting into `stats` (a previous version's,
    /// so that the counters go on across versions).
    pub fn load_version(
        &self,
        config: &PluginConfig,
        host: Arc<Shared>,
        cache: &Cache,
        stats: Arc<PluginStats>,
    ) -> anyhow::Result<Plugin> {
        self.load_plugin(config, host, cache, stats)
            .map_err(|e| anyhow::Error::new(LoadError(e)))
    }

    fn load_plugin(
        &self,
        config: &PluginConfig,
        host: Arc<Shared>,
        cache: &Cache,
        stats: Arc<PluginStats>,
    ) -> anyhow::Result<Plugin> {
        let name = &config.name;
        let linked = self.link(config, cache)?;
        let slot = host
            .slots
            .register(config.limits.max_concurrency, config.limits.max_queue);
        let env = PluginEnv {
            name,
            settings: &config.settings,
            blocking_threads: host.blocking_threads,
        };
        let shared = Arc::new(PluginShared {
            name: name.clone(),
            caps: PluginCaps::new(&env, config.grants.clone()),
            limits: config.limits.clone(),
            host,
            slot,
            stats,
        });
        Ok(linked.into_plugin(shared, config, &self.engine))
    }

    /// `old`'s component compiled and linked again from its file (rebuilt
    /// since): the same config, capability state, instance slot and
    /// counters; only the code is new. `old` is untouched, so a failure
    /// leaves it serving.
    pub fn reload(&self, old: &Plugin, cache: &Cache) -> anyhow::Result<Plugin> {
        let linked = self
            .link(&old.config, cache)
            .map_err(|e| anyhow::Error::new(LoadError(e)))?;
        Ok(linked.into_plugin(old.shared.clone(), &old.config, &self.engine))
    }

    /// Compiles (or loads from `cache`) plugin `config`'s component and
    /// links it against its grants.
    fn link(&self, config: &PluginConfig, cache: &Cache) -> anyhow::Result<Linked> {
        let name = &config.name;
        let (component, origin, sha256) = cache
            .component(self, name, &config.wasm)
            .with_context(|| format!("plugin `{name}`: cannot load {}", config.wasm.display()))?;
        check_imports(&self.engine, &component, config)?;
        let mut linker: Linker<Ctx> = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        add_trap_stubs(&mut linker, &self.engine, &component)?;
        crate::caps::add_to_linker(&mut linker, &config.grants)?;
        // Every plugin may stream its own answer: no grant.
        crate::caps::wit::streaming::add_to_linker::<Ctx, wasmtime::component::HasSelf<Ctx>>(
            &mut linker,
            |c| c,
        )?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin `{name}`: cannot link"))?;
        let handler = handler::GuestIndices::new(&pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin `{name}`: no `handler` export"))?;
        let admin = admin::GuestIndices::new(&pre).ok();
        let jobs = job_handler::GuestIndices::new(&pre).ok();
        if let Some(ns) = config.grants.net.as_ref().and_then(|n| n.netns_path())
            && !ns.exists()
        {
            // Not an error: the namespace may be made after the host starts.
            tracing::warn!(plugin = %name, netns = %ns.display(), "granted `net` in a network namespace that does not exist (yet)");
        }
        if config.grants.jobs && jobs.is_none() {
            tracing::warn!(plugin = %name, "granted `jobs` but exports no `job-handler`: its jobs will fail");
        }
        Ok(Linked {
            pre,
            handler,
            admin,
            jobs,
            origin,
            sha256,
        })
    }
}

/// A component linked and ready to instantiate, before it becomes a
/// [`Plugin`].
struct Linked {
    pre: InstancePre<Ctx>,
    handler: handler::GuestIndices,
    admin: Option<admin::GuestIndices>,
    jobs: Option<job_handler::GuestIndices>,
    origin: Origin,
    sha256: String,
}

impl Linked {
    fn into_plugin(
        self,
        shared: Arc<PluginShared>,
        config: &PluginConfig,
        engine: &Engine,
    ) -> Plugin {
        Plugin {
            warm: Arc::new(warm::Pool::new(shared.host.clone())),
            shared,
            config: config.clone(),
            origin: self.origin,
            sha256: self.sha256,
            loaded_at: std::time::SystemTime::now(),
            engine: engine.clone(),
            pre: self.pre,
            handler: self.handler,
            admin: self.admin,
            jobs: self.jobs,
        }
    }
}

/// The WASI 0.2 interfaces a plugin may import, without their versions
/// (any `0.2.x` matches). They are what `wasmtime_wasi::p2::add_to_linker_async`
/// links, and what wasi-libc, Rust's std, componentize-py and
/// componentize-js import; `new_store` leaves them nothing to reach: no
/// preopened directory, no environment variable or argument, stdin closed,
/// TCP, UDP and name lookup refused. docs/capabilities.md ("WASI") says
/// what each one does here.
pub const WASI_INTERFACES: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// WASI interfaces linked as stubs whose every function traps: componentize-js
/// imports them (for the types of its `fetch`) whether or not the plugin
/// uses them. A plugin that calls one fails that request.
pub const WASI_TRAP_STUBS: &[&str] = &["wasi:http/types", "wasi:http/outgoing-handler"];

/// `wasi:cli/stdout@0.2.6` as (`wasi:cli/stdout`, `0.2.6`).
fn split_version(import: &str) -> (&str, &str) {
    import.split_once('@').unwrap_or((import, ""))
}

fn is_wasi_0_2(import: &str, names: &[&str]) -> bool {
    let (name, version) = split_version(import);
    version.starts_with("0.2.") && names.contains(&name)
}

/// Refuses a component whose imports the host does not give it, naming every
/// one at once: `wasmgate:plugin` interfaces its grants withhold (with the
/// grants line that would give them, and the `wasmgate wit` command that
/// makes a world importing only what is granted), and interfaces the host
/// does not offer at all. The linker's own message would only name the first
/// missing import.
fn check_imports(
    engine: &Engine,
    component: &Component,
    config: &PluginConfig,
) -> anyhow::Result<()> {
    let mut withheld = Vec::new();
    let mut unknown = Vec::new();
    let ty = component.component_type();
    for (import, item) in ty.imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            unknown.push(import.to_string());
            continue;
        }
        let Some(rest) = import.strip_prefix("wasmgate:plugin/") else {
            if !is_wasi_0_2(import, WASI_INTERFACES) && !is_wasi_0_2(import, WASI_TRAP_STUBS) {
                unknown.push(import.to_string());
            }
            continue;
        };
        let iface = split_version(rest).0;
        match crate::caps::all().iter().find(|c| c.name == iface) {
            Some(cap) if (cap.granted)(&config.grants) => {}
            Some(cap) => withheld.push((import, cap)),
            None if iface == "types" || iface == "streaming" => {}
            None => unknown.push(import.to_string()),
        }
    }
    let name = &config.name;
    let mut problems = Vec::new();
    if !withheld.is_empty() {
        let quote = |names: Vec<&str>| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let imports = quote(withheld.iter().map(|(i, _)| *i).collect());
        let caps: Vec<&crate::caps::Descriptor> = withheld.iter().map(|(_, c)| *c).collect();
        let (them, unused) = if caps.len() == 1 {
            ("it", "does not use it")
        } else {
            ("them", "uses none of them")
        };
        problems.push(format!(
            "plugin `{name}` imports {imports} but its grants do not include {}\n  \
             hint: grant {them}: {}\n  \
             hint: or, if it {unused}, build it against a world that imports only its grants \
             (Python, JavaScript and other whole-world toolchains import every interface of the world): \
             wasmgate wit --config CONFIG --plugin {name} --out DIR",
            quote(caps.iter().map(|c| c.name).collect()),
            grants_hint(&config.grants, &caps),
        ));
    }
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|i| format!("`{i}`")).collect();
        problems.push(format!(
            "plugin `{name}` imports {}, which this host does not offer (docs/capabilities.md lists what it does)",
            names.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", problems.join("\n"))
    }
}

/// One `grants:` line giving what `grants` gives plus `missing`, each
/// missing capability as its example grant: valid config as it stands.
fn grants_hint(grants: &crate::caps::Grants, missing: &[&crate::caps::Descriptor]) -> String {
    let current = serde_json::to_value(grants).unwrap_or_default();
    let entries: Vec<String> = crate::caps::all()
        .iter()
        .filter_map(|cap| {
            if missing.iter().any(|m| m.name == cap.name) {
                Some(format!("{}: {}", cap.name, cap.example))
            } else if (cap.granted)(grants) {
                let value = current.get(cap.name).map(ToString::to_string)?;
                Some(format!("{}: {value}", cap.name))
            } else {
                None
            }
        })
        .collect();
    format!("grants: {{ {} }}", entries.join(", "))
}

/// Links each [`WASI_TRAP_STUBS`] interface `component` imports as functions
/// that trap, with resources of their own (a resource the interface only
/// `use`s from another interface is that one's).
fn add_trap_stubs(
    linker: &mut Linker<Ctx>,
    engine: &Engine,
    component: &Component,
) -> anyhow::Result<()> {
    struct Stub;
    let ty = component.component_type();
    let stubbed = |import: &str| is_wasi_0_2(import, WASI_TRAP_STUBS);
    let mut elsewhere = Vec::new();
    for (import, item) in ty.imports(engine) {
        if let ComponentItem::ComponentInstance(instance) = item.ty
            && !stubbed(import)
        {
            for (_, export) in instance.exports(engine) {
                if let ComponentItem::Resource(r) = export.ty {
                    elsewhere.push(r);
                }
            }
        }
    }
    for (import, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !stubbed(import) {
            continue;
        }
        let mut li = linker.instance(import)?;
        for (name, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{import}#{name}");
                    li.func_new(name, move |_, _, _, _| {
                        Err(wasmtime::format_err!(
                            "`{what}` is not available to plugins (the `outbound` capability makes HTTP requests)"
                        ))
                    })?;
                }
                ComponentItem::Resource(r) if !elsewhere.contains(&r) => {
                    li.resource(name, ResourceType::host::<Stub>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

impl Plugin {
    /// The exports present, for `check` and `/plugins`.
    pub fn exports(&self) -> Vec<&'static str> {
        let mut out = vec!["handler"];
        if self.admin.is_some() {
            out.push("admin");
        }
        if self.jobs.is_some() {
            out.push("job-handler");
        }
        out
    }

    fn new_store(&self, request_id: &str) -> Store<Ctx> {
        let limits = &self.shared.limits;
        let stdout = Output::default();
        let stderr = Output::default();
        // No preopens, environment or arguments (the builder's defaults),
        // and no network at all (see WASI_INTERFACES).
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        let ctx = Ctx {
            plugin: self.shared.clone(),
            request_id: request_id.to_string(),
            deadline,
            table: ResourceTable::new(),
            stdout,
            stderr,
            wasi,
            limits: Limiter {
                caps: StoreLimitsBuilder::new()
                    .memory_size((limits.memory_mb as usize) << 20)
                    .table_elements(100_000)
                    .instances(32)
                    .tables(32)
                    .memories(8)
                    .build(),
                peak_memory: 0,
            },
            storage_seen: 0,
            stream: Stream::None,
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        store.set_epoch_deadline(1);
        // The deadline is read from the store's data: a warm instance gets
        // a new one for each request.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Calls the `handler` export; a streamed answer comes back whole.
    pub async fn handle(&self, req: Request) -> Result<Response, CallError> {
        self.call_http(req, false, None).await
    }

    /// Calls the `admin` export; a streamed answer comes back whole.
    pub async fn admin(&self, req: Request) -> Result<Response, CallError> {
        self.call_http(req, true, None).await
    }

    /// Calls the `handler` (or `admin`) export for a client: if the plugin
    /// starts a streamed answer, its head goes to `sink` at once and the
    /// body follows while this call runs; what this returns is then only
    /// for the log.
    pub async fn call(&self, req: Request, admin: bool, sink: Sink) -> Result<Response, CallError> {
        self.call_http(req, admin, Some(sink)).await
    }

    async fn call_http(
        &self,
        req: Request,
        admin: bool,
        sink: Option<Sink>,
    ) -> Result<Response, CallError> {
        if admin && self.admin.is_none() {
            return Err(CallError::NoExport("admin"));
        }
        let _slot = self.slot().await?;
        let (mut store, warm, served) = match self.warm.take(&self.shared) {
            Some(w) => {
                let mut store = w.store;
                let ctx = store.data_mut();
                ctx.request_id.clone_from(&req.request_id);
                ctx.deadline =
                    Instant::now() + Duration::from_millis(self.shared.limits.timeout_ms);
                ctx.storage_seen = 0;
                ctx.stream = Stream::new(sink);
                store.set_epoch_deadline(1);
                (store, Some((w.instance, w.guests)), w.served)
            }
            None => {
                let mut store = self.new_store(&req.request_id);
                store.data_mut().stream = Stream::new(sink);
                (store, None, 0)
            }
        };
        let name = &self.shared.name;
        let result = async {
            let (instance, mut guests) = match warm {
                Some(warm) => warm,
                None => {
                    let started = Instant::now();
                    let instance = self.pre.instantiate_async(&mut store).await?;
                    self.shared
                        .host
                        .metrics
                        .instantiated(name, started.elapsed());
                    (instance, warm::Guests::default())
                }
            };
            let response = match (&self.admin, admin) {
                (Some(a), true) => {
                    let guest = match guests.admin.take() {
                        Some(g) => g,
                        None => a.load(&mut store, &instance)?,
                    };
                    let r = guest.call_handle(&mut store, &req).await?;
                    guests.admin = Some(guest);
                    r
                }
                _ => {
                    let guest = match guests.handler.take() {
                        Some(g) => g,
                        None => self.handler.load(&mut store, &instance)?,
                    };
                    let r = guest.call_handle(&mut store, &req).await?;
                    guests.handler = Some(guest);
                    r
                }
            };
            wasmtime::Result::Ok((instance, guests, response))
        };
        let result = catch_host_panic(result).await;
        store.data().flush_output();
        // Dropped on a failure: a started answer is then cut.
        let stream = std::mem::take(&mut store.data_mut().stream);
        let (instance, guests, response) = result.map_err(|e| self.classify(e, &req.request_id))?;
        let deadline = store.data().deadline;
        let (response, started) = if stream.started() {
            (response, Some(stream))
        } else {
            (self.check_response(stream.join(response))?, None)
        };
        // Nothing the plugin read may reach the client before it is durable.
        let seen = store.data().storage_seen;
        self.warm
            .keep(&self.shared, store, instance, guests, served + 1);
        drop(_slot);
        if let Err(e) = self.shared.host.db.settled(seen).await {
            return Err(CallError::Storage(e.to_string()));
        }
        if let Some(stream) = started {
            let cap = self.shared.limits.max_response_bytes;
            stream.finish(response.body, cap, deadline).await;
            return Ok(Response {
                status: response.status,
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
        Ok(response)
    }

    #[cfg(feature = "bench")]
    /// One fresh instance and one handler call, timed apart: (store creation
    /// and instantiation, the call and the drop). For `bench-instantiate`.
    pub async fn bench_once(&self, req: Request) -> Result<(Duration, Duration), CallError> {
        let started = Instant::now();
        let mut store = self.new_store(&req.request_id);
        let result = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let instantiated = started.elapsed();
            self.handler
                .load(&mut store, &instance)?
                .call_handle(&mut store, &req)
                .await?;
            wasmtime::Result::Ok(instantiated)
        }
        .await;
        drop(store);
        let instantiated = result.map_err(|e| self.classify(e, &req.request_id))?;
        Ok((instantiated, started.elapsed() - instantiated))
    }

    /// Runs one job through the `job-handler` export.
    pub async fn run_job(&self, name: &str, payload: &[u8]) -> anyhow::Result<()> {
        let Some(jobs) = &self.jobs else {
            anyhow::bail!(CallError::NoExport("job-handler"));
        };
        let _slot = self.slot().await?;
        let request_id = format!("job-{}", crate::util::ids::request_id());
        let mut store = self.new_store(&request_id);
        let result = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            jobs.load(&mut store, &instance)?
                .call_run(&mut store, name, payload)
                .await
        };
        let result = catch_host_panic(result).await;
        store.data().flush_output();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => anyhow::bail!("the job answered an error: {message}"),
            Err(e) => Err(self.classify(e, &request_id).into()),
        }
    }

    /// Waits for an instance slot, at most the plugin's `queue_timeout_ms`.
    async fn slot(&self) -> Result<crate::slots::Slot, CallError> {
        let wait = Duration::from_millis(self.shared.limits.queue_timeout_ms);
        self.shared
            .host
            .slots
            .acquire(self.shared.slot, wait)
            .await
            .map_err(|e| {
                tracing::warn!(plugin = %self.shared.name, error = %e, "no instance slot");
                CallError::Busy(e)
            })
    }

    fn classify(&self, e: wasmtime::Error, request_id: &str) -> CallError {
        let name = &self.shared.name;
        if let Some(stream::StorageFailed(why)) = e.downcast_ref::<stream::StorageFailed>() {
            tracing::warn!(plugin = %name, request_id, error = %why, "storage failed during a streamed answer");
            return CallError::Storage(why.clone());
        }
        if let Some(HostPanic(what)) = e.downcast_ref::<HostPanic>() {
            self.shared.host.metrics.host_panic(name);
            tracing::error!(plugin = %name, request_id, panic = %what, "a host call panicked; the request failed");
            return CallError::HostPanic(what.clone());
        }
        if e.downcast_ref::<DeadlineExceeded>().is_some()
            || e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
        {
            self.shared.stats.deadlines.fetch_add(1, Ordering::Relaxed);
            self.shared.host.metrics.deadline(name);
            tracing::warn!(plugin = %name, request_id, timeout_ms = self.shared.limits.timeout_ms, "deadline exceeded");
            return CallError::Deadline;
        }
        self.shared.stats.traps.fetch_add(1, Ordering::Relaxed);
        self.shared.host.metrics.trap(name);
        let message = trap_summary(&e);
        tracing::error!(plugin = %name, request_id, error = %message, "plugin trapped");
        CallError::Trap(message)
    }

    fn check_response(&self, r: Response) -> Result<Response, CallError> {
        let cap = self.shared.limits.max_response_bytes;
        let fail = |e: CallError| {
            tracing::error!(plugin = %self.shared.name, error = %e, "unusable response");
            Err(e)
        };
        if r.body.len() > cap {
            return fail(CallError::ResponseTooLarge {
                size: r.body.len(),
                cap,
            });
        }
        if let Err(e) = stream::check_head(r.status, &r.headers) {
            return fail(CallError::InvalidResponse(e));
        }
        Ok(r)
    }
}

/// The trap's cause and the innermost frames of its backtrace, bounded: a
/// stack overflow's backtrace alone has thousands of frames.
fn trap_summary(e: &wasmtime::Error) -> String {
    const FRAMES: usize = 8;
    // What went wrong first (a trap code, or the message of the host
    // function that failed, such as a trap stub's), then where.
    let cause = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    let full = format!("{e:?}");
    let frames: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let mut out = cause;
    if !frames.is_empty() {
        out.push_str("; ");
        out.push_str(&frames[..frames.len().min(FRAMES)].join(" | "));
        if frames.len() > FRAMES {
            out.push_str(&format!(" | ... {} more frames", frames.len() - FRAMES));
        }
    }
    out
}

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled at this load (and cached).
    Compiled,
    /// This host's own cache.
    Cache,
    /// An artefact of `wasmgate compile`.
    Artefact,
}

/// Where components come from: precompiled artefacts ([`aot`], signed by a
/// key under `trust.compilers`), or components compiled here and kept on
/// disk under `<data_dir>/cache`, keyed by the engine's
/// precompile-compatibility hash and the component's bytes, and sealed with
/// an HMAC under a key only this host knows. Nothing else is ever
/// deserialized.
pub struct Cache {
    // Only a host with the compiler writes (and so reads) its own cache.
    #[cfg_attr(not(feature = "compiler"), allow(dead_code))]
    dir: PathBuf,
    #[cfg_attr(not(feature = "compiler"), allow(dead_code))]
    key: hmac::Key,
    /// `trust.compilers` of the config in force.
    compilers: arc_swap::ArcSwap<Vec<TrustedKey>>,
}

#[cfg(feature = "compiler")]
const TAG_LEN: usize = 32;

/// The largest file read as a plugin (component or artefact).
const MAX_PLUGIN_FILE: u64 = 512 << 20;

impl Cache {
    pub fn open(data_dir: &Path) -> anyhow::Result<Cache> {
        let dir = data_dir.join("cache");
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key_path = data_dir.join("cache.key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let k = crate::util::ids::random(32)?;
                crate::util::fs::write_private(&key_path, &k)?;
                k
            }
        };
        Ok(Cache {
            dir,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            compilers: Default::default(),
        })
    }

    /// Trusts artefacts signed by `keys` (a config's `trust.compilers`),
    /// and no others, from now on.
    pub fn trust_compilers(&self, keys: &[TrustedKey]) {
        self.compilers.store(Arc::new(keys.to_vec()));
    }

    /// Plugin `name`'s component from the file `wasm` (a component or an
    /// artefact), where its code came from, and the SHA-256 of the file (hex).
    pub fn component(
        &self,
        rt: &Runtime,
        name: &str,
        wasm: &Path,
    ) -> anyhow::Result<(Component, Origin, String)> {
        let bytes =
            aot::read_limited(wasm, MAX_PLUGIN_FILE).map_err(|e| unreadable_artefact(wasm, e))?;
        let sha256 = crate::util::ids::sha256_hex(&bytes);
        if aot::is_artefact(&bytes) {
            let compilers = self.compilers.load();
            let verified = aot::verify(&bytes, name, &compilers, &rt.arch, &rt.settings)?;
            // SAFETY: `verify` checked that a trusted key signed this code
            // as the output of `wasmgate compile` for this wasmtime, code
            // target and engine settings; wasmtime checks the latter again.
            let component =
                unsafe { Component::deserialize(&rt.engine, verified.code) }.map_err(|e| {
                    aot::AotError::Engine {
                        artefact: format!("{} ({e})", verified.header.engine),
                        host: rt.settings.to_string(),
                    }
                })?;
            tracing::info!(plugin = %name, signer = %verified.signer, "loaded a precompiled artefact");
            return Ok((component, Origin::Artefact, sha256));
        }
        check_artefact(&bytes)?;
        self.compiled(rt, name, wasm, &bytes)
            .map(|(c, origin)| (c, origin, sha256))
    }

    #[cfg(not(feature = "compiler"))]
    fn compiled(
        &self,
        rt: &Runtime,
        _: &str,
        wasm: &Path,
        _: &[u8],
    ) -> anyhow::Result<(Component, Origin)> {
        anyhow::bail!(
            "{} is a component, and this wasmgate was built without the compiler: precompile it with `wasmgate compile --target {}` on a machine with a full build, and name the artefact in `wasm:`",
            wasm.display(),
            aot::host_target_hint(&rt.arch)
        )
    }

    /// `bytes` (the component in `wasm`) compiled, from the cache or now.
    #[cfg(feature = "compiler")]
    fn compiled(
        &self,
        rt: &Runtime,
        name: &str,
        wasm: &Path,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, Origin)> {
        let engine = &rt.engine;
        let mut hasher = Sha256Hasher(digest::Context::new(&digest::SHA256));
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        hasher.0.update(bytes);
        let id = crate::util::ids::hex(hasher.0.finish().as_ref());
        let path = self.dir.join(format!("{id}.cwasm"));
        if let Ok(sealed) = std::fs::read(&path) {
            if sealed.len() > TAG_LEN {
                let (tag, artefact) = sealed.split_at(TAG_LEN);
                if hmac::verify(&self.key, artefact, tag).is_ok() {
                    // SAFETY: the HMAC proves this host wrote these bytes from
                    // `precompile_component` with a compatible engine.
                    if let Ok(c) = unsafe { Component::deserialize(engine, artefact) } {
                        return Ok((c, Origin::Cache));
                    }
                }
            }
            tracing::warn!(path = %path.display(), "ignoring an invalid cached component");
        }
        tracing::info!(
            plugin = %name,
            "compiling {} ({:.1} MB); later starts load it from the cache",
            wasm.display(),
            bytes.len() as f64 / 1e6
        );
        let started = Instant::now();
        let artefact = engine
            .precompile_component(bytes)
            .map_err(|e| anyhow::anyhow!("{e:#}").context("not a component this host can run"))?;
        tracing::info!(
            plugin = %name,
            "compiled in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let tag = hmac::sign(&self.key, &artefact);
        let mut sealed = Vec::with_capacity(TAG_LEN + artefact.len());
        sealed.extend_from_slice(tag.as_ref());
        sealed.extend_from_slice(&artefact);
        if let Err(e) = store_artefact(&path, &sealed) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component; it will be compiled again at the next start");
        }
        // SAFETY: produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &artefact)? };
        Ok((component, Origin::Compiled))
    }
}

/// The build command for a Rust plugin, named in hints.
const RUST_BUILD: &str = "cargo build --release --target wasm32-wasip2";

/// Why `wasm` could not be read, with what to do about it: for a missing
/// file, the build command, or the `cdylib` crate type when Cargo built only
/// a library there.
fn unreadable_artefact(wasm: &Path, e: std::io::Error) -> anyhow::Error {
    if e.kind() != std::io::ErrorKind::NotFound {
        return anyhow::Error::new(e);
    }
    let stem = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    let rlib = wasm.with_file_name(format!("lib{stem}.rlib"));
    if rlib.exists() {
        anyhow::anyhow!(
            "no such file, but {} is there: Cargo built the crate as a library only; add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml and build again",
            rlib.display()
        )
    } else {
        anyhow::anyhow!(
            "no such file: build the plugin first (for Rust, `{RUST_BUILD}`); a relative `wasm:` path is read from the config file's directory"
        )
    }
}

/// Refuses, with what to do, a file that is not a WebAssembly component: no
/// wasm at all, or a core module (what `wasm32-unknown-unknown` or
/// `wasm32-wasip1` builds give).
fn check_artefact(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    /// The version and layer fields of a core module (version 1, layer 0).
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        let what = match bytes {
            [] => "it is empty".to_string(),
            b if b.starts_with(b"\x7fELF") => "it is a native executable (ELF)".to_string(),
            b if b.starts_with(b"(component") || b.starts_with(b"(module") => {
                "it is WebAssembly text; compile it to binary first".to_string()
            }
            _ => "it does not start with the WebAssembly magic bytes".to_string(),
        };
        anyhow::bail!(
            "not a WebAssembly file: {what}. Build a component, for Rust with `{RUST_BUILD}`"
        );
    }
    if bytes[4..8] == CORE_MODULE {
        anyhow::bail!(
            "a core WebAssembly module, not a component: build for the wasm32-wasip2 target (`{RUST_BUILD}`), or wrap a module with `wasm-tools component new`"
        );
    }
    Ok(())
}

#[cfg(feature = "compiler")]
/// Writes a sealed artefact to `path` through a temporary file of this
/// process's own; whatever is in the way at `path` (a directory, say) is
/// removed first.
fn store_artefact(path: &Path, sealed: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(m) if !m.is_file() => std::fs::remove_file(path)?,
        _ => {}
    }
    crate::util::fs::write_replacing(path, sealed)
}

#[cfg(feature = "compiler")]
struct Sha256Hasher(digest::Context);

#[cfg(feature = "compiler")]
impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
