//! wasmgate: an HTTP API server whose business logic runs in sandboxed
//! WebAssembly component plugins.
//!
//! Reading order: [`config`] (what a deployment says), [`router`] (which
//! plugin answers a path), [`runtime`] (the engine and one call into a
//! plugin), [`caps`] (what a plugin may do, one unit per capability),
//! [`server`] (listeners, admin surface, shutdown).
//!
//! Layers. A module uses only modules of the layers before its own, never
//! one after (`tests/e2e/layers.rs` checks it):
//! 1. leaves: [`util`], [`db`], [`metrics`], [`slots`], [`listener`];
//! 2. [`caps`] (each capability, its WIT bindings, the registry);
//! 3. [`config`] (the file format; grant types come from `caps`);
//! 4. [`router`], [`authoring`] (`wasmgate new`'s projects, and `wasmgate
//!    wit`: the WIT package cut to a plugin's grants), [`package`] (signed
//!    plugin packages: the format, `wasmgate package`, and the check an
//!    install makes);
//! 5. [`aot`] (precompiled plugins: the engine configuration, the signed
//!    artefact format, `wasmgate compile`);
//! 6. [`runtime`] (engine, plugins, the store data that hands out the
//!    capabilities' views);
//! 7. [`scheduler`] (queued jobs);
//! 8. [`server`] (listeners, request path, admin surface);
//! 9. [`dev`] (`wasmgate dev`: build, serve, rebuild and swap), [`remote`]
//!    (`wasmgate plugin`: a running server's plugins through its admin API);
//! 10. `main` (the command line).

pub mod aot;
pub mod authoring;
pub mod caps;
pub mod config;
pub mod db;
pub mod dev;
pub mod listener;
pub mod metrics;
pub mod package;
pub mod remote;
pub mod router;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod slots;
pub mod util;
