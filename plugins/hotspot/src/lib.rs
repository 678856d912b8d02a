#![doc = include_str!("../README.md")]
//!
//! ## The code
//!
//! hotspot: hotspot vouchers, guest sign-ins and a captive-portal backend,
//! re-implementing the WAVER OS "API Access" API as a wasmgate
//! plugin.
//!
//! Reading order:
//! 1. [`api`]: the public `/api/` endpoint (toggles, key, actions);
//! 2. [`vouchers`]: create_voucher's rules and the validity checks;
//! 3. [`portal`]: the gateway's `/portal/` calls (login, sign-ins,
//!    accounting, logout) that produce the data the API lists;
//! 4. [`guests`]: the live lists (neighbour table through `net`, sessions);
//! 5. [`admin`]: toggles and keys on the host's admin listener;
//! 6. [`store`]: records and key layout; [`time`]: UTC timestamps.
//!
//! The mount whose prefix is the `portal_prefix` setting (default
//! "/portal/") gets the portal; every other mount gets the API.

mod admin;
mod api;
mod guests;
mod paging;
mod params;
mod portal;
mod store;
mod time;
mod vouchers;

use wasmgate_sdk::{Error, Plugin, Request, Response, config};

struct Hotspot;

impl Plugin for Hotspot {
    fn handle(req: &Request) -> Result<Response, Error> {
        let portal_prefix = config::get_or("portal_prefix", "/portal/");
        if req.prefix() == portal_prefix {
            Ok(portal::handle(req))
        } else {
            Ok(api::handle(req))
        }
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        admin::handle(req)
    }
}

wasmgate_sdk::export_plugin!(Hotspot);
