//! `config.yaml`: the schema, parsing and validation.
//!
//! Steps, in order: parse the YAML with unknown keys refused (serde names the
//! key and line), resolve relative paths against the config file's
//! directory, then validate what serde cannot see: plugin names, mounts,
//! duplicate routes and limits. Validation errors name the key path and, where
//! the plugin can be found in the text, its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::caps::Grants;
pub use crate::util::ed25519::PublicKey;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the schema (unknown key, wrong
    /// type); serde's message names the key and the line.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The YAML parsed but a value is not acceptable.
    #[error("{path}{line}: {key}: {message}", line = line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// Where the redb database, the admin token and the compiled-component
    /// cache live. Relative to the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Engine-wide settings.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Timeouts and connection caps of every listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// The plugins to load, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// For `wasmgate dev` only: how to build the plugins and what to watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<DevConfig>,
    /// Whose signatures a plugin package needs (docs/package.md).
    #[serde(default)]
    pub trust: TrustConfig,
    /// How much memory the host keeps: a profile of defaults (`router` for
    /// small boxes) and the knobs that are not in `runtime` or `http`.
    #[serde(default)]
    pub memory: MemoryConfig,
}

/// See [`MemoryConfig::profile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryProfile {
    /// Throughput first: a large storage cache, the instance pool.
    #[default]
    Server,
    /// A router with 128 MB of RAM: small caches and buffers, on-demand
    /// instances, freed memory given back to the system.
    Router,
}

/// The memory knobs (docs/routers.md lists each with both profiles'
/// values). An absent knob takes its profile's value; the profile also
/// sets the defaults of `runtime.allocator`, `runtime.max_instances`,
/// `runtime.max_buffered_body_bytes` and `http.max_connections` when the
/// file does not set them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MemoryConfig {
    #[serde(default)]
    pub profile: MemoryProfile,
    /// The storage engine's page cache (redb), in MiB. Server: 1024, router: 8.
    #[serde(default)]
    pub storage_cache_mb: Option<u64>,
    /// The most a connection buffers of a request head, in KiB (larger heads
    /// are refused with 431). Server: 400, router: 32.
    #[serde(default)]
    pub connection_buffer_kb: Option<u32>,
    /// Give memory freed after a burst (connections, big answers) back to
    /// the system every few seconds instead of keeping it for reuse (glibc
    /// builds; musl returns it by itself). Server: false, router: true.
    #[serde(default)]
    pub release_freed: Option<bool>,
}

impl MemoryConfig {
    fn router(&self) -> bool {
        self.profile == MemoryProfile::Router
    }

    pub fn storage_cache_bytes(&self) -> usize {
        let mb = self
            .storage_cache_mb
            .unwrap_or(if self.router() { 8 } else { 1024 });
        (mb as usize) << 20
    }

    pub fn connection_buffer_bytes(&self) -> usize {
        let kb = self
            .connection_buffer_kb
            .unwrap_or(if self.router() { 32 } else { 400 });
        (kb as usize) << 10
    }

    pub fn release_freed(&self) -> bool {
        self.release_freed.unwrap_or(self.router())
    }
}

/// The router profile's defaults for keys of other sections: on-demand
/// instances, at most 16 at once, 8 MiB of request bodies buffered, 256
/// connections per listener. `set(section, key)`: whether the file sets it
/// (and so keeps its value).
fn router_defaults(config: &mut Config, set: impl Fn(&str, &str) -> bool) {
    if !set("runtime", "allocator") {
        config.runtime.allocator = AllocatorKind::OnDemand;
    }
    if !set("runtime", "max_instances") {
        config.runtime.max_instances = 16;
    }
    if !set("runtime", "max_buffered_body_bytes") {
        config.runtime.max_buffered_body_bytes = 8 << 20;
    }
    if !set("http", "max_connections") {
        config.http.max_connections = 256;
    }
}

/// Applies the router profile's defaults to the keys `text` does not set.
fn apply_profile(config: &mut Config, text: &str) {
    if config.memory.profile != MemoryProfile::Router {
        return;
    }
    let Ok(value) = serde_norway::from_str::<serde_norway::Value>(text) else {
        return;
    };
    router_defaults(config, |section, key| {
        value.get(section).and_then(|s| s.get(key)).is_some()
    });
}

impl Config {
    /// Switches to the router memory profile, its defaults replacing
    /// whatever the file set (`wasmgate bundle --memory-profile router`).
    /// Request bodies stay readable: the buffer keeps room for the largest
    /// `max_body_bytes` of any plugin.
    pub fn use_router_profile(&mut self) {
        self.memory.profile = MemoryProfile::Router;
        router_defaults(self, |_, _| false);
        let largest = self
            .plugins
            .iter()
            .map(|p| p.limits.max_body_bytes as u64)
            .max();
        self.runtime.max_buffered_body_bytes = self
            .runtime
            .max_buffered_body_bytes
            .max(largest.unwrap_or(0));
    }
}

/// Who may sign plugin packages, and whether a package must be signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TrustConfig {
    /// Whether a package without a signature from a listed key is refused.
    /// Absent: true once any key is listed, else false.
    #[serde(default)]
    pub require_signature: Option<bool>,
    /// The vendors' public keys.
    #[serde(default)]
    pub keys: Vec<TrustedKey>,
    /// The keys whose signatures on precompiled plugins (`wasmgate compile
    /// --key`) are accepted; `plugins` pins a key to plugin names as for
    /// `keys`. No key: artefacts are refused (components still load).
    #[serde(default)]
    pub compilers: Vec<TrustedKey>,
}

impl TrustConfig {
    /// [`TrustConfig::require_signature`] with its default resolved.
    pub fn signature_required(&self) -> bool {
        self.require_signature.unwrap_or(!self.keys.is_empty())
    }

    /// The listed key `key`, if any.
    pub fn key(&self, key: &PublicKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key == *key)
    }

    /// The key the plugin name `plugin` is pinned to, if any.
    pub fn pinned(&self, plugin: &str) -> Option<&TrustedKey> {
        self.keys
            .iter()
            .find(|k| k.plugins.iter().any(|p| p == plugin))
    }
}

/// One vendor's key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TrustedKey {
    /// What messages call the key; unique, with the rules of a plugin name.
    pub name: String,
    /// `ed25519:<base64>`, as `wasmgate package keygen` prints it.
    pub key: PublicKey,
    /// The plugin names this key may sign, each then pinned to it (no other
    /// key's signature is accepted for them). Empty: any name not pinned to
    /// another key.
    #[serde(default)]
    pub plugins: Vec<String>,
}

/// `wasmgate dev`'s part of a config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DevConfig {
    /// A shell command run in the config file's directory; it must leave
    /// each plugin's `wasm:` file built.
    pub build: String,
    /// Files and directories whose changes start a build. Relative to the
    /// config file's directory.
    #[serde(default)]
    pub watch: Vec<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// The admin surface: health, plugin list, metrics and each plugin's admin export.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AdminConfig {
    /// Socket address; loopback by default. Every route but `/health` needs
    /// the bearer token from `<data_dir>/admin.token`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_string()
}

/// How the engine allocates instances.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RuntimeConfig {
    /// Instances that may exist at once across all plugins (the pooling
    /// allocator's slots). Requests beyond it wait for a slot.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// `pooling` reserves every slot up front and falls back to on-demand
    /// allocation when the reservation fails; `on_demand` never pools.
    #[serde(default)]
    pub allocator: AllocatorKind,
    /// Request bodies held in memory at once across the host, in bytes. A
    /// request whose body does not fit waits (up to its plugin's
    /// `queue_timeout_ms`) and is then answered 503.
    #[serde(default = "default_max_buffered_body_bytes")]
    pub max_buffered_body_bytes: u64,
    /// Threads for expensive host calls (password hashing); 0: one per CPU.
    /// A plugin may use at most half of them at once (at least one).
    #[serde(default)]
    pub blocking_threads: u32,
    /// Run plugins as Pulley bytecode in wasmtime's interpreter instead of
    /// native code. Always so on architectures without a Cranelift backend
    /// (32-bit ARM, MIPS); elsewhere for comparison and testing.
    #[serde(default)]
    pub pulley: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: default_max_instances(),
            allocator: AllocatorKind::default(),
            max_buffered_body_bytes: default_max_buffered_body_bytes(),
            blocking_threads: 0,
            pulley: false,
        }
    }
}

fn default_max_instances() -> u32 {
    256
}
fn default_max_buffered_body_bytes() -> u64 {
    64 << 20
}

impl RuntimeConfig {
    /// `blocking_threads`, with 0 resolved to the number of CPUs.
    pub fn blocking_threads(&self) -> usize {
        match self.blocking_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        }
    }
}

/// Timeouts and connection caps, the same for every listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct HttpConfig {
    /// A request's head (request line and headers) must be complete this
    /// long after its first byte; else the connection is closed.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A connection with no request in progress and no bytes moving for
    /// this long is closed (keep-alive idle, and a client that stops reading
    /// a response).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A request's whole body must arrive within this; else 408 and the
    /// connection is closed.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Open connections per plugin listener; a connection beyond it is
    /// answered 503 and closed. Lowered at start to fit the process's open
    /// file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Open connections per client IP address on one listener; beyond it, 503
    /// and closed.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// One `info` line per request on the plugin listeners (plugin, method,
    /// path without the query, status, duration, request id, bytes).
    #[serde(default = "default_true")]
    pub log_requests: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_ms: default_header_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            log_requests: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_max_connections() -> u32 {
    1024
}
fn default_max_connections_per_client() -> u32 {
    64
}

/// See [`RuntimeConfig::allocator`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorKind {
    #[default]
    Pooling,
    OnDemand,
}

/// One plugin.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PluginConfig {
    /// Unique; `[a-z0-9_-]`, 1 to 32 characters. Names its storage namespace.
    pub name: String,
    /// The component file, relative to the config file's directory.
    pub wasm: PathBuf,
    /// Where its handler is reachable.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The capabilities it may import; everything is withheld by default.
    #[serde(default)]
    pub grants: Grants,
    /// Resource caps for each request and job.
    #[serde(default)]
    pub limits: Limits,
    /// Free-form values the plugin reads through the `config` capability.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A (listener, path prefix) pair routed to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Mount {
    /// Socket address, e.g. `127.0.0.1:8080`. Mounts with the same string
    /// share one listener.
    pub listen: String,
    /// Path prefix starting with `/`; the longest matching prefix wins.
    pub prefix: String,
}

/// Per-request resource caps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Limits {
    /// Linear memory cap of one instance, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Wall-clock budget of one request or job, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Larger request bodies are answered 413 without running the plugin.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A larger response from the plugin is replaced by a 500.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Instances of this plugin alive at once (requests and jobs). Absent:
    /// as many as its fair share of `runtime.max_instances` allows.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests that may wait for an instance; one more is answered 503.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// How long a request waits for an instance (or for room for its body)
    /// before it is answered 503 with `Retry-After`.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Opt-in: keep warm instances and serve requests one after another on
    /// them instead of a fresh instance per request. Absent: every request
    /// gets a fresh instance (no state survives a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
}

/// `limits.reuse`: when a warm instance is dropped instead of serving
/// another request. Whatever a request leaves in the instance's memory
/// (globals, caches, its heap) is there for the next request of the same
/// plugin; nothing crosses to another plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Reuse {
    /// Requests one instance serves before it is dropped.
    #[serde(default = "default_reuse_max_requests")]
    pub max_requests: u32,
    /// An instance idle for this long is dropped (its memory freed).
    #[serde(default = "default_reuse_max_idle_ms")]
    pub max_idle_ms: u64,
    /// An instance whose linear memory grew past this many MiB is dropped
    /// after its request. Default: half of `memory_mb`.
    #[serde(default)]
    pub max_memory_mb: Option<u32>,
}

impl Reuse {
    /// The memory above which an instance is not kept, in bytes.
    pub fn max_memory_bytes(&self, limits: &Limits) -> usize {
        (self.max_memory_mb.unwrap_or(limits.memory_mb / 2).max(1) as usize) << 20
    }
}

fn default_reuse_max_requests() -> u32 {
    10_000
}

fn default_reuse_max_idle_ms() -> u64 {
    30_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: default_memory_mb(),
            timeout_ms: default_timeout_ms(),
            max_body_bytes: default_max_body_bytes(),
            max_response_bytes: default_max_response_bytes(),
            max_concurrency: None,
            max_queue: default_max_queue(),
            queue_timeout_ms: default_queue_timeout_ms(),
            reuse: None,
        }
    }
}

impl Limits {
    /// What serde cannot check, the caps alone: `(key under limits,
    /// message)`. Whether `max_body_bytes` fits the host's
    /// `runtime.max_buffered_body_bytes` is the whole config's check.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.memory_mb == 0 || self.memory_mb > MAX_MEMORY_MB {
            return Err((
                "memory_mb",
                format!("{} is out of range 1..={MAX_MEMORY_MB}", self.memory_mb),
            ));
        }
        for (key, ms) in [
            ("timeout_ms", self.timeout_ms),
            ("queue_timeout_ms", self.queue_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err((key, format!("{ms} is out of range 1..={MAX_TIMEOUT_MS}")));
            }
        }
        if self.max_response_bytes == 0 {
            return Err(("max_response_bytes", "must be at least 1".into()));
        }
        if self.max_concurrency == Some(0) {
            return Err(("max_concurrency", "must be at least 1".into()));
        }
        if let Some(r) = &self.reuse {
            if r.max_requests == 0 {
                return Err(("reuse.max_requests", "must be at least 1".into()));
            }
            if r.max_idle_ms == 0 || r.max_idle_ms > MAX_TIMEOUT_MS {
                return Err((
                    "reuse.max_idle_ms",
                    format!("{} is out of range 1..={MAX_TIMEOUT_MS}", r.max_idle_ms),
                ));
            }
            if let Some(mb) = r.max_memory_mb
                && (mb == 0 || mb > self.memory_mb)
            {
                return Err((
                    "reuse.max_memory_mb",
                    format!("{mb} is out of range 1..={} (memory_mb)", self.memory_mb),
                ));
            }
        }
        Ok(())
    }
}

impl Mount {
    /// What serde cannot check of one mount alone: its listen address (on
    /// success) or `(key under the mount, message)`. Clashes with other
    /// mounts and the admin listener are the whole config's check.
    pub fn validate(&self) -> Result<SocketAddr, (&'static str, String)> {
        let addr = parse_listen(&self.listen).map_err(|m| ("listen", m))?;
        if !self.prefix.starts_with('/') {
            return Err(("prefix", format!("`{}` must start with `/`", self.prefix)));
        }
        if self.prefix.contains(['?', '#']) || self.prefix.contains("//") {
            return Err((
                "prefix",
                format!("`{}` is not a plain path prefix", self.prefix),
            ));
        }
        Ok(addr)
    }
}

fn default_max_queue() -> u32 {
    256
}
fn default_queue_timeout_ms() -> u64 {
    5_000
}

fn default_memory_mb() -> u32 {
    64
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_body_bytes() -> usize {
    1 << 20
}
fn default_max_response_bytes() -> usize {
    4 << 20
}

/// The largest memory cap a plugin may ask for.
pub const MAX_MEMORY_MB: u32 = 4096;
/// The longest request budget a plugin may ask for.
pub const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;

impl Config {
    /// Reads, parses and validates `path`; relative paths inside it are made
    /// absolute against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, &base)
    }

    /// Parses `text` (named `path` in errors), resolving paths against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        apply_profile(&mut config, text);
        config.data_dir = base.join(&config.data_dir);
        for plugin in &mut config.plugins {
            plugin.wasm = base.join(&plugin.wasm);
        }
        if let Some(dev) = &mut config.dev {
            for w in &mut dev.watch {
                *w = base.join(&*w);
            }
        }
        config.validate(text, path)?;
        Ok(config)
    }

    /// Checks a config assembled in memory (the file's plugins plus those
    /// installed from packages) as a file's would be; errors name `what`.
    pub fn revalidate(&self, what: &str) -> Result<(), ConfigError> {
        self.validate("", Path::new(what))
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |plugin: Option<&str>, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: plugin.and_then(|name| line_of_plugin(text, name)),
            key,
            message,
        };
        parse_listen(&self.admin.listen).map_err(|m| invalid(None, "admin.listen".into(), m))?;
        if self.runtime.max_instances == 0 {
            return Err(invalid(
                None,
                "runtime.max_instances".into(),
                "must be at least 1".into(),
            ));
        }
        let h = &self.http;
        for (key, ms) in [
            ("http.header_timeout_ms", h.header_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.body_timeout_ms", h.body_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err(invalid(
                    None,
                    key.into(),
                    format!("{ms} is out of range 1..={MAX_TIMEOUT_MS}"),
                ));
            }
        }
        for (key, n) in [
            ("http.max_connections", h.max_connections),
            (
                "http.max_connections_per_client",
                h.max_connections_per_client,
            ),
        ] {
            if n == 0 {
                return Err(invalid(None, key.into(), "must be at least 1".into()));
            }
        }
        if self.runtime.max_buffered_body_bytes == 0 {
            return Err(invalid(
                None,
                "runtime.max_buffered_body_bytes".into(),
                "must be at least 1".into(),
            ));
        }
        let admin = parse_listen(&self.admin.listen).ok();
        // Listen strings seen so far: (string, address, plugin).
        let mut listens: Vec<(&str, SocketAddr, &str)> = Vec::new();
        let mut names = BTreeMap::new();
        let mut routes: BTreeMap<(String, String), String> = BTreeMap::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let at = |field: &str| format!("plugins[{i}].{field}");
            let name = Some(p.name.as_str());
            if !valid_plugin_name(&p.name) {
                return Err(invalid(
                    name,
                    at("name"),
                    format!(
                        "`{}` is not a valid name: use 1 to 32 of a-z, 0-9, _ and -",
                        p.name
                    ),
                ));
            }
            if let Some(first) = names.insert(p.name.clone(), i) {
                return Err(invalid(
                    name,
                    at("name"),
                    format!("`{}` is already the name of plugins[{first}]", p.name),
                ));
            }
            for (j, m) in p.mounts.iter().enumerate() {
                let key = at(&format!("mounts[{j}]"));
                let addr = m
                    .validate()
                    .map_err(|(field, msg)| invalid(name, format!("{key}.{field}"), msg))?;
                if let Some(a) = admin
                    && overlap(addr, a)
                {
                    return Err(invalid(
                        name,
                        format!("{key}.listen"),
                        format!(
                            "`{}` takes the admin listener's address (admin.listen: {}): give one of them another port",
                            m.listen, self.admin.listen
                        ),
                    ));
                }
                if let Some((other, _, owner)) = listens
                    .iter()
                    .find(|(l, a, _)| *l != m.listen && overlap(addr, *a))
                {
                    return Err(invalid(
                        name,
                        format!("{key}.listen"),
                        format!(
                            "`{}` and `{other}` (plugin `{owner}`) cannot both be bound: they overlap on port {}; mounts that share a port must use the same listen string",
                            m.listen,
                            addr.port()
                        ),
                    ));
                }
                listens.push((&m.listen, addr, &p.name));
                let route = (m.listen.clone(), normalize_prefix(&m.prefix));
                if let Some(other) = routes.insert(route, p.name.clone()) {
                    return Err(invalid(
                        name,
                        key,
                        format!(
                            "duplicate route: {} {} is already mounted by plugin `{other}`",
                            m.listen, m.prefix
                        ),
                    ));
                }
            }
            let l = &p.limits;
            l.validate()
                .map_err(|(field, msg)| invalid(name, at(&format!("limits.{field}")), msg))?;
            if l.max_body_bytes as u64 > self.runtime.max_buffered_body_bytes {
                return Err(invalid(
                    name,
                    at("limits.max_body_bytes"),
                    format!(
                        "{} is over runtime.max_buffered_body_bytes ({}): such a body could never be read",
                        l.max_body_bytes, self.runtime.max_buffered_body_bytes
                    ),
                ));
            }
            p.grants
                .validate()
                .map_err(|(key, message)| invalid(name, at(&format!("grants.{key}")), message))?;
        }
        self.validate_trust(text, path)
    }

    fn validate_trust(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        for (list, entries) in [
            ("keys", &self.trust.keys),
            ("compilers", &self.trust.compilers),
        ] {
            self.validate_trusted_keys(text, path, list, entries)?;
        }
        Ok(())
    }

    /// `trust.<list>`: names valid and unique, each key once, each plugin
    /// name pinned to one key.
    fn validate_trusted_keys(
        &self,
        text: &str,
        path: &Path,
        list: &str,
        entries: &[TrustedKey],
    ) -> Result<(), ConfigError> {
        let invalid = |index: usize, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_trusted_key(text, list, index),
            key,
            message,
        };
        // Key name, and the key each plugin name is pinned to, by index.
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut pinned: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, k) in entries.iter().enumerate() {
            let at = |field: &str| format!("trust.{list}[{i}].{field}");
            if !valid_plugin_name(&k.name) {
                return Err(invalid(
                    i,
                    at("name"),
                    format!(
                        "`{}` is not a valid name: use 1 to 32 of a-z, 0-9, _ and -",
                        k.name
                    ),
                ));
            }
            if let Some(first) = names.insert(&k.name, i) {
                return Err(invalid(
                    i,
                    at("name"),
                    format!("`{}` is already the name of trust.{list}[{first}]", k.name),
                ));
            }
            if let Some(first) = entries[..i].iter().position(|o| o.key == k.key) {
                return Err(invalid(
                    i,
                    at("key"),
                    format!(
                        "the same key as trust.{list}[{first}] (`{}`): list each key once",
                        entries[first].name
                    ),
                ));
            }
            for (j, plugin) in k.plugins.iter().enumerate() {
                if !valid_plugin_name(plugin) {
                    return Err(invalid(
                        i,
                        at(&format!("plugins[{j}]")),
                        format!("`{plugin}` is not a valid plugin name"),
                    ));
                }
                if let Some(first) = pinned.insert(plugin, i) {
                    let message = if first == i {
                        format!("`{plugin}` is listed twice")
                    } else {
                        format!(
                            "`{plugin}` is already pinned to trust.{list}[{first}] (`{}`): a plugin name is pinned to one key",
                            entries[first].name
                        )
                    };
                    return Err(invalid(i, at(&format!("plugins[{j}]")), message));
                }
            }
        }
        Ok(())
    }

    /// The largest memory cap of any plugin, in bytes.
    pub fn max_memory_bytes(&self) -> usize {
        let mb = self
            .plugins
            .iter()
            .map(|p| p.limits.memory_mb)
            .max()
            .unwrap_or(1);
        (mb as usize) << 20
    }
}

/// `/api` and `/api/` route the same; `/` stays `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    format!("{trimmed}/")
}

/// Whether `name` can name a plugin: 1 to 32 of a-z, 0-9, `_` and `-`.
pub fn valid_plugin_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether listeners on `a` and `b` would clash: the same port (not 0) and
/// the same address, or a wildcard address that covers the other (`[::]`
/// takes IPv4 too).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |w: SocketAddr, x: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    listen
        .parse()
        .map_err(|_| format!("`{listen}` is not a socket address like 127.0.0.1:8080"))
}

/// The 1-based line on which the plugin named `name` is declared.
fn line_of_plugin(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(['"', '\'']) == name)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// The 1-based line on which `trust.<list>[index]` starts: its `- ` line
/// in a block list, else the `<list>:` line (a flow list), else the
/// `trust:` line.
fn line_of_trusted_key(text: &str, list: &str, index: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let trust = lines.iter().position(|l| l.starts_with("trust:"))?;
    let section = |i: &usize| {
        *i > trust && (lines[*i].starts_with([' ', '-']) || lines[*i].trim().is_empty())
    };
    let Some(keys) = (trust + 1..lines.len())
        .take_while(section)
        .find(|i| lines[*i].trim_start().starts_with(&format!("{list}:")))
    else {
        return Some(trust + 1);
    };
    let items: Vec<usize> = (keys + 1..lines.len())
        .take_while(section)
        .filter(|i| lines[*i].trim_start().starts_with("- "))
        .collect();
    // The items of `keys:` are its shallowest `- ` lines.
    let depth = |i: &usize| lines[*i].len() - lines[*i].trim_start().len();
    let top = items.iter().map(depth).min();
    Some(
        items
            .iter()
            .filter(|i| Some(depth(i)) == top)
            .nth(index)
            .copied()
            .unwrap_or(keys)
            + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::wireguard::grant::WireguardBackend;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.yaml"), Path::new("/base"))
    }

    const ONE: &str = "
plugins:
  - name: hello
    wasm: hello.wasm
    mounts:
      - listen: 127.0.0.1:8081
        prefix: /hello/
";

    #[test]
    fn paths_resolve_against_the_config_directory() {
        let c = parse(ONE).unwrap();
        assert_eq!(c.plugins[0].wasm, Path::new("/base/hello.wasm"));
        assert_eq!(c.data_dir, Path::new("/base/data"));
        assert_eq!(c.plugins[0].limits, Limits::default());
        assert_eq!(c.admin.listen, "127.0.0.1:9090");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse(&format!("{ONE}    colour: blue\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn an_unknown_grant_is_refused() {
        let err = parse(&format!(
            "{ONE}    grants: {{ kv: true, teleport: true }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `teleport`"), "{err}");
    }

    #[test]
    fn a_duplicate_route_names_both_plugins_and_the_line() {
        let text = format!(
            "{ONE}  - name: other\n    wasm: o.wasm\n    mounts:\n      - listen: 127.0.0.1:8081\n        prefix: /hello\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("duplicate route"), "{err}");
        assert!(err.contains("`hello`"), "{err}");
        assert!(err.contains("config.yaml:8:"), "{err}");
        assert!(err.contains("plugins[1].mounts[0]"), "{err}");
    }

    #[test]
    fn bad_names_prefixes_and_limits_are_refused() {
        for (bad, needle) in [
            (
                ONE.replace("name: hello", "name: Hello"),
                "not a valid name",
            ),
            (
                ONE.replace("prefix: /hello/", "prefix: hello"),
                "must start with `/`",
            ),
            (
                ONE.replace("127.0.0.1:8081", "localhost"),
                "not a socket address",
            ),
            (
                format!("{ONE}    limits: {{ memory_mb: 0 }}\n"),
                "memory_mb",
            ),
            (
                format!("{ONE}    limits: {{ timeout_ms: 0 }}\n"),
                "timeout_ms",
            ),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn a_net_grant_parses_with_its_defaults() {
        let c = parse(&format!(
            "{ONE}    grants: {{ net: {{ links: [\"guest*\", \"wg?\"] }} }}\n"
        ))
        .unwrap();
        let net = c.plugins[0].grants.net.clone().expect("net granted");
        assert_eq!(net.links, ["guest*", "wg?"]);
        assert!(!net.write, "read-only by default");
        assert_eq!(net.netns_path(), None, "the host's namespace by default");
        assert!(c.plugins[0].grants.names().contains(&"net"));

        let c = parse(&format!(
            "{ONE}    grants: {{ net: {{ links: [br0], write: true, netns: guests }} }}\n"
        ))
        .unwrap();
        let net = c.plugins[0].grants.net.clone().unwrap();
        assert!(net.write);
        assert_eq!(
            net.netns_path(),
            Some(PathBuf::from("/var/run/netns/guests"))
        );
        let c = parse(&format!(
            "{ONE}    grants: {{ net: {{ links: [br0], netns: /proc/1/ns/net }} }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.plugins[0].grants.net.clone().unwrap().netns_path(),
            Some(PathBuf::from("/proc/1/ns/net"))
        );
        assert!(
            !parse(ONE).unwrap().plugins[0]
                .grants
                .names()
                .contains(&"net"),
            "withheld unless given"
        );
    }

    #[test]
    fn a_net_grant_without_patterns_or_with_bad_ones_is_refused() {
        for (net, key, needle) in [
            (
                "{ links: [] }",
                "plugins[0].grants.net.links",
                "at least one pattern",
            ),
            (
                "{ links: [guest0, \"eth/0\"] }",
                "plugins[0].grants.net.links[1]",
                "`eth/0`",
            ),
            (
                "{ links: [\"br 0\"] }",
                "plugins[0].grants.net.links[0]",
                "wildcards",
            ),
            (
                "{ links: [\"\"] }",
                "plugins[0].grants.net.links[0]",
                "empty",
            ),
            (
                "{ links: [\"[a-z]*\"] }",
                "plugins[0].grants.net.links[0]",
                "wildcards",
            ),
            (
                "{ links: [a], netns: \"../etc\" }",
                "plugins[0].grants.net.netns",
                "`../etc`",
            ),
            (
                "{ links: [a], netns: \"a/b\" }",
                "plugins[0].grants.net.netns",
                "absolute path",
            ),
            (
                "{ links: [a], netns: \"..\" }",
                "plugins[0].grants.net.netns",
                "namespace name",
            ),
            (
                "{ links: [a], netns: \"\" }",
                "plugins[0].grants.net.netns",
                "namespace name",
            ),
        ] {
            let err = parse(&format!("{ONE}    grants: {{ net: {net} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{net}: {err}");
            assert!(err.contains(needle), "{net}: {err}");
            assert!(
                err.contains("config.yaml:3:"),
                "{net}: the plugin's line: {err}"
            );
        }
        for (net, needle) in [
            ("{ write: true }", "missing field `links`"),
            ("{ links: [a], colour: blue }", "unknown field `colour`"),
            ("true", "invalid type"),
        ] {
            let err = parse(&format!("{ONE}    grants: {{ net: {net} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{net}: {err}");
        }
    }

    #[test]
    fn a_wireguard_grant_parses_with_its_defaults() {
        let c = parse(&format!(
            "{ONE}    grants: {{ wireguard: {{ devices: [\"wg*\"] }} }}\n"
        ))
        .unwrap();
        let wg = c.plugins[0]
            .grants
            .wireguard
            .clone()
            .expect("wireguard granted");
        assert_eq!(wg.devices, ["wg*"]);
        assert_eq!(wg.backend, WireguardBackend::Auto);
        assert_eq!(wg.userspace_binary, "wireguard-go");
        assert_eq!(wg.netns_path(), None);
        assert!(c.plugins[0].grants.names().contains(&"wireguard"));
        let c = parse(&format!(
            "{ONE}    grants: {{ wireguard: {{ devices: [wg0], backend: userspace, userspace_binary: /opt/wg/wireguard-go, netns: vpn }} }}\n"
        ))
        .unwrap();
        let wg = c.plugins[0].grants.wireguard.clone().unwrap();
        assert_eq!(wg.backend, WireguardBackend::Userspace);
        assert_eq!(wg.userspace_binary, "/opt/wg/wireguard-go");
        assert_eq!(wg.netns_path(), Some(PathBuf::from("/var/run/netns/vpn")));
        assert!(
            !parse(ONE).unwrap().plugins[0]
                .grants
                .names()
                .contains(&"wireguard"),
            "withheld unless given"
        );
    }

    #[test]
    fn a_wireguard_grant_without_patterns_or_with_bad_values_is_refused() {
        for (wg, key, needle) in [
            (
                "{ devices: [] }",
                "plugins[0].grants.wireguard.devices",
                "at least one pattern",
            ),
            (
                "{ devices: [wg0, \"wg 1\"] }",
                "plugins[0].grants.wireguard.devices[1]",
                "wildcards",
            ),
            (
                "{ devices: [wg0], userspace_binary: \"\" }",
                "plugins[0].grants.wireguard.userspace_binary",
                "program name",
            ),
            (
                "{ devices: [wg0], userspace_binary: \"./wg\" }",
                "plugins[0].grants.wireguard.userspace_binary",
                "absolute path",
            ),
            (
                "{ devices: [wg0], netns: \"a/b\" }",
                "plugins[0].grants.wireguard.netns",
                "absolute path",
            ),
        ] {
            let err = parse(&format!("{ONE}    grants: {{ wireguard: {wg} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{wg}: {err}");
            assert!(err.contains(needle), "{wg}: {err}");
            assert!(
                err.contains("config.yaml:3:"),
                "{wg}: the plugin's line: {err}"
            );
        }
        for (wg, needle) in [
            ("{ backend: kernel }", "missing field `devices`"),
            ("{ devices: [a], backend: wasm }", "unknown variant `wasm`"),
            ("{ devices: [a], colour: blue }", "unknown field `colour`"),
        ] {
            let err = parse(&format!("{ONE}    grants: {{ wireguard: {wg} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{wg}: {err}");
        }
    }

    #[test]
    fn settings_keep_their_types() {
        let c = parse(&format!(
            "{ONE}    settings: {{ greeting: hi, max: 3, list: [1, 2] }}\n"
        ))
        .unwrap();
        let s = &c.plugins[0].settings;
        assert_eq!(s["greeting"], serde_json::json!("hi"));
        assert_eq!(s["max"], serde_json::json!(3));
        assert_eq!(s["list"], serde_json::json!([1, 2]));
    }

    const KEY_A: &str = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const KEY_B: &str = "ed25519:PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";

    #[test]
    fn trust_requires_signatures_once_a_key_is_listed_unless_told_otherwise() {
        let c = parse(ONE).unwrap();
        assert_eq!(c.trust, TrustConfig::default());
        assert!(!c.trust.signature_required());
        let c = parse(&format!(
            "trust:\n  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n      plugins: [hello]\n    - name: other\n      key: \"{KEY_B}\"\n{ONE}"
        ))
        .unwrap();
        assert!(c.trust.signature_required());
        let a: PublicKey = KEY_A.parse().unwrap();
        let b: PublicKey = KEY_B.parse().unwrap();
        assert_eq!(c.trust.key(&a).unwrap().name, "acme");
        assert_eq!(c.trust.pinned("hello").unwrap().key, a);
        assert!(c.trust.pinned("other").is_none());
        assert_eq!(c.trust.key(&b).unwrap().plugins, Vec::<String>::new());
        let c = parse(&format!(
            "trust: {{ require_signature: false, keys: [{{ name: acme, key: \"{KEY_A}\" }}] }}\n"
        ))
        .unwrap();
        assert!(!c.trust.signature_required());
        let c = parse("trust: { require_signature: true }\n").unwrap();
        assert!(c.trust.signature_required());
    }

    #[test]
    fn bad_trusted_keys_are_refused_with_key_and_line() {
        for (trust, key, needle) in [
            (
                format!(
                    "  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n    - name: acme\n      key: \"{KEY_B}\"\n"
                ),
                "config.yaml:5: trust.keys[1].name",
                "already the name of trust.keys[0]",
            ),
            (
                format!(
                    "  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n    - name: again\n      key: \"{KEY_A}\"\n"
                ),
                "config.yaml:5: trust.keys[1].key",
                "the same key as trust.keys[0] (`acme`)",
            ),
            (
                format!("  keys:\n    - name: Acme\n      key: \"{KEY_A}\"\n"),
                "config.yaml:3: trust.keys[0].name",
                "not a valid name",
            ),
            (
                format!(
                    "  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n      plugins: [hello, \"He llo\"]\n"
                ),
                "config.yaml:3: trust.keys[0].plugins[1]",
                "not a valid plugin name",
            ),
            (
                format!(
                    "  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n      plugins: [hello]\n    - name: other\n      key: \"{KEY_B}\"\n      plugins: [x, hello]\n"
                ),
                "config.yaml:6: trust.keys[1].plugins[1]",
                "already pinned to trust.keys[0] (`acme`)",
            ),
            (
                format!(
                    "  keys:\n    - name: acme\n      key: \"{KEY_A}\"\n      plugins: [hello, hello]\n"
                ),
                "config.yaml:3: trust.keys[0].plugins[1]",
                "listed twice",
            ),
        ] {
            let err = parse(&format!("trust:\n{trust}")).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
        for (trust, needle) in [
            (
                "keys: [{ name: acme, key: \"rsa:AAAA\" }]",
                "expected `ed25519:`",
            ),
            (
                "keys: [{ name: acme, key: \"ed25519:AAAA\" }]",
                "32 bytes, this is 3",
            ),
            ("keys: [{ name: acme }]", "missing field `key`"),
            (
                "require_signatures: true",
                "unknown field `require_signatures`",
            ),
        ] {
            let err = parse(&format!("plugins: []\ntrust: {{ {trust} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{trust}: {err}");
            assert!(err.contains("line 2"), "{trust}: {err}");
        }
    }

    #[test]
    fn the_router_profile_sets_the_defaults_the_file_leaves_out() {
        let c = parse(ONE).unwrap();
        assert_eq!(c.memory.storage_cache_bytes(), 1024 << 20);
        assert_eq!(c.runtime.allocator, AllocatorKind::Pooling);
        assert!(!c.memory.release_freed());
        let c = parse(&format!("memory: {{ profile: router }}\n{ONE}")).unwrap();
        assert_eq!(c.memory.storage_cache_bytes(), 8 << 20);
        assert_eq!(c.memory.connection_buffer_bytes(), 32 << 10);
        assert!(c.memory.release_freed());
        assert_eq!(c.runtime.allocator, AllocatorKind::OnDemand);
        assert_eq!(c.runtime.max_instances, 16);
        assert_eq!(c.runtime.max_buffered_body_bytes, 8 << 20);
        assert_eq!(c.http.max_connections, 256);
        // What the file sets stays.
        let c = parse(&format!(
            "memory: {{ profile: router, storage_cache_mb: 32 }}\nruntime: {{ max_instances: 64 }}\nhttp: {{ max_connections: 100 }}\n{ONE}"
        ))
        .unwrap();
        assert_eq!(c.memory.storage_cache_bytes(), 32 << 20);
        assert_eq!(c.runtime.max_instances, 64);
        assert_eq!(c.http.max_connections, 100);
        assert_eq!(c.runtime.allocator, AllocatorKind::OnDemand);
        let mut c = c;
        c.use_router_profile();
        assert_eq!(c.runtime.max_instances, 16);
        assert!(parse("memory: { profile: tiny }\n").is_err());
    }

    #[test]
    fn trusted_compilers_are_checked_like_vendor_keys() {
        let e = parse(&format!(
            "trust:\n  compilers:\n    - name: build\n      key: \"{KEY_A}\"\n    - name: build\n      key: \"{KEY_A}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("config.yaml:5: trust.compilers[1].name")
                && e.contains("already the name of trust.compilers[0]"),
            "{e}"
        );
    }

    #[test]
    fn the_readme_reference_parses_and_names_every_key() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("## Configuration reference")
            .nth(1)
            .and_then(|s| s.split("```yaml\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("README has a yaml block under `## Configuration reference`");
        let config = parse(block).expect("the README's reference is a valid config");
        fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        out.push(k.clone());
                        keys(v, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys(&serde_json::to_value(&config).unwrap(), &mut all);
        for key in all {
            assert!(
                block.contains(&format!("{key}:")),
                "README's config reference does not show `{key}`"
            );
        }
    }
}
