//! wasmgate: an HTTP API server whose business logic runs in sandboxed
//! WebAssembly component plugins.
//!
//! Reading order: [`config`] (what a deployment says), [`router`] (which
//! plugin answers a path), [`runtime`] (the engine and one call into a
//! plugin), [`caps`] (what a plugin may do, one module per capability),
//! [`server`] (listeners, admin surface, shutdown).

pub mod caps;
pub mod config;
pub mod db;
pub mod listener;
pub mod metrics;
pub mod router;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod slots;
pub mod util;
