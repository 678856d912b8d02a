//! The guest side of wasmgate: write an HTTP API plugin in plain Rust and
//! build it as a WebAssembly component with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! A whole plugin:
//!
//! ```no_run
//! use wasmgate_sdk::{config, Error, Params, Plugin, Request, Response, Router};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn handle(req: &Request) -> Result<Response, Error> {
//!         Router::new().get("/", greet).get("/echo/:word", echo).handle(req)
//!     }
//! }
//!
//! fn greet(_req: &Request, _params: &Params) -> Result<Response, Error> {
//!     let greeting = config::get_or("greeting", "hello");
//!     Ok(Response::json(200, &serde_json::json!({ "message": greeting })))
//! }
//!
//! fn echo(_req: &Request, params: &Params) -> Result<Response, Error> {
//!     Ok(Response::text(200, &params["word"]))
//! }
//!
//! wasmgate_sdk::export_plugin!(Hello);
//! ```
//!
//! Reading order: [`Plugin`] and [`export_plugin!`], then [`Request`],
//! [`Response`], [`Error`] and [`Router`], then the capability modules
//! ([`kv`], [`config`], [`log`], [`keys`], [`crypto`], [`jobs`],
//! [`ratelimit`], [`net`], [`wireguard`], [`outbound`]), [`stream`] for
//! answers too big to build whole, and [`time`]
//! (UTC clock and calendar helpers; std's wasi clocks, no capability grant).
//!
//! A capability's WIT interface becomes an import of the component only when
//! the plugin calls into it, and the host refuses to load a component that
//! imports an interface its config does not grant. No helper here calls into a
//! capability other than its own, so a plugin that only uses `kv` needs only
//! the `kv` grant.

// Lets the generated bindings and the exported macros name this crate the
// same way from inside and outside it.
extern crate self as wasmgate_sdk;

/// The raw bindings of the `wasmgate:plugin/plugin` world, for what the
/// helpers do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "wasmgate_sdk::bindings",
        runtime_path: "wasmgate_sdk::__private::wit_bindgen::rt",
    });
}

mod error;
mod http;
mod router;

pub mod config;
pub mod crypto;
pub mod jobs;
pub mod keys;
pub mod kv;
pub mod log;
pub mod net;
pub mod outbound;
pub mod paging;
pub mod ratelimit;
pub mod stream;
pub mod time;
pub mod wireguard;

pub use error::Error;
pub use http::{Request, Response};
pub use router::{Handler, Params, Router};

/// What a plugin implements. Every call runs in a fresh instance, so there is
/// no `self`: keep state in [`kv`].
pub trait Plugin {
    /// The public HTTP surface, mounted under the plugin's prefix.
    fn handle(req: &Request) -> Result<Response, Error>;

    /// The admin surface, reached through the host's admin listener at
    /// `/plugins/<name>/admin/...`; [`Request::path`] is relative to that
    /// prefix. Answers 404 unless overridden.
    fn admin(req: &Request) -> Result<Response, Error> {
        let _ = req;
        Err(Error::not_found("not found"))
    }

    /// Runs a job queued earlier with [`jobs::enqueue`]. An `Err` is logged
    /// by the host and the job retried later. Fails unless overridden.
    fn job(name: &str, payload: &[u8]) -> Result<(), String> {
        let _ = payload;
        Err(format!("no job handler for {name:?}"))
    }
}

/// Exports a [`Plugin`] implementation as the component's `handler`, `admin`
/// and `job-handler`. Use it once per plugin crate, at the top level.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __WasmgateExport;

            impl $crate::bindings::exports::wasmgate::plugin::handler::Guest for __WasmgateExport {
                fn handle(
                    req: $crate::bindings::wasmgate::plugin::types::Request,
                ) -> $crate::bindings::wasmgate::plugin::types::Response {
                    $crate::__private::dispatch(req, <$plugin as $crate::Plugin>::handle)
                }
            }

            impl $crate::bindings::exports::wasmgate::plugin::admin::Guest for __WasmgateExport {
                fn handle(
                    req: $crate::bindings::wasmgate::plugin::types::Request,
                ) -> $crate::bindings::wasmgate::plugin::types::Response {
                    $crate::__private::dispatch(req, <$plugin as $crate::Plugin>::admin)
                }
            }

            impl $crate::bindings::exports::wasmgate::plugin::job_handler::Guest
                for __WasmgateExport
            {
                fn run(
                    name: ::std::string::String,
                    payload: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$plugin as $crate::Plugin>::job(&name, &payload)
                }
            }

            $crate::bindings::export!(__WasmgateExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::wasmgate::plugin::types;
    use crate::{Error, Request, Response};

    /// Runs one handler and turns its `Err` into the JSON error response.
    pub fn dispatch(
        req: types::Request,
        handler: fn(&Request) -> Result<Response, Error>,
    ) -> types::Response {
        let req = Request::from(req);
        crate::stream::settle(handler(&req))
            .unwrap_or_else(Response::from)
            .into()
    }
}
