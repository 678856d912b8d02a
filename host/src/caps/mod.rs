//! Host capabilities: one module per WIT interface a plugin may import.
//!
//! Every module has the same parts, in this order:
//! 1. `CAP`: its name, how to read its grant from the config, and how to link
//!    its WIT interface. The runtime links an interface only for plugins whose
//!    grant allows it, so a component importing an interface it was not
//!    granted fails to load with a message naming the plugin and the grant.
//! 2. Per-request state, if any, kept in [`crate::runtime::Ctx`].
//! 3. The host functions, implemented on `Ctx`; each re-checks the grant and
//!    answers a typed `denied` error (never a panic) when it is missing.
//!
//! Adding a capability: a WIT interface in `wit/`, a grant field in
//! [`crate::config::Grants`], a module here, and one line in [`ALL`].

use wasmtime::component::Linker;

use crate::config::Grants;
use crate::runtime::Ctx;

pub mod config;
pub mod crypto;
pub mod jobs;
pub mod keys;
pub mod kv;
pub mod log;
pub mod net;
pub mod outbound;
pub mod ratelimit;
pub mod wireguard;
pub mod wireguard_kernel;

/// How the runtime knows a capability.
pub struct Capability {
    /// The WIT interface name within `wasmgate:plugin`, also the grant's key.
    pub name: &'static str,
    /// Whether `grants` allows it.
    pub granted: fn(&Grants) -> bool,
    /// Links its host functions.
    pub add_to_linker: fn(&mut Linker<Ctx>) -> wasmtime::Result<()>,
}

/// Every capability the host offers.
pub const ALL: &[Capability] = &[
    kv::CAP,
    keys::CAP,
    crypto::CAP,
    config::CAP,
    log::CAP,
    jobs::CAP,
    ratelimit::CAP,
    net::CAP,
    wireguard::CAP,
    outbound::CAP,
];
