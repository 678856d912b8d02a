#![doc = include_str!("../README.md")]
//!
//! ## The code
//!
//! wgdashboard: the WGDashboard v4 API as a
//! wasmgate plugin, on real WireGuard devices through the host's
//! `wireguard` capability and their addresses through `net`.
//!
//! Reading order:
//! 1. [`api`]: the endpoints under the mount (`/api/`), one line each in a
//!    table, and the checks every request passes before its handler;
//! 2. the handlers: [`configurations`]; [`peers`] (and the free addresses);
//!    [`download`] (a peer's `.conf`); [`auth`]: API keys, sessions, login
//!    with TOTP, the key list;
//! 3. [`envelope`]: `{data, message, status}`; [`json`]: configuration and
//!    peer shapes;
//! 4. [`device`]: toggling a configuration on and off, live counters;
//! 5. [`store`]: records and kv layout; [`validate`], [`ipalloc`],
//!    [`totp`]: pure helpers with unit tests; clock and "YYYY-MM-DD
//!    HH:MM:SS" (UTC) times come from [`wasmgate_sdk::time`];
//! 6. [`admin`]: account, TOTP and first-run state for the operator.

mod admin;
mod api;
mod auth;
mod configurations;
mod device;
mod download;
mod envelope;
mod ipalloc;
mod json;
mod paging;
mod peers;
mod store;
mod totp;
mod validate;

use wasmgate_sdk::time;
use wasmgate_sdk::{Error, Plugin, Request, Response};

struct WgDashboard;

impl Plugin for WgDashboard {
    fn handle(req: &Request) -> Result<Response, Error> {
        Ok(api::handle(req))
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        admin::handle(req)
    }
}

wasmgate_sdk::export_plugin!(WgDashboard);
