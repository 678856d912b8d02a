//! The one `bindgen!` over `wit/`: host-side types and traits for the
//! `wasmgate:plugin` package. Only what the host uses is re-exported.

use super::Trappable;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Exports run on fibres so that the epoch callback can yield to tokio and
    // a looping plugin never pins an executor thread.
    exports: { default: async },
    imports: {
        // Netlink is async I/O: its host functions await rtnetlink on the
        // request's fibre instead of blocking an executor thread.
        "wasmgate:plugin/net": async | trappable,
        // UAPI sockets, netlink and starting wireguard-go: awaited on the fibre.
        "wasmgate:plugin/wireguard": async | trappable,
        // HTTP to another host: awaited on the fibre like netlink.
        "wasmgate:plugin/outbound": async | trappable,
        // Password hashing runs for a quarter second: off the executor, on
        // the bounded blocking pool, while the fibre waits.
        "wasmgate:plugin/crypto": async | trappable,
        // Writes wait for their batch's fsync (group commit) on the fibre.
        "wasmgate:plugin/kv": async | trappable,
        // A streamed answer's pieces wait on the fibre while the client is behind.
        "wasmgate:plugin/streaming": async | trappable,
        default: trappable,
    },
    // Host functions return `Result<T, Trappable<Error>>`: `?` works for the
    // interface's own errors and for traps alike.
    trappable_error_type: {
        "wasmgate:plugin/kv.error" => Trappable<wasmgate::plugin::kv::Error>,
        "wasmgate:plugin/keys.error" => Trappable<wasmgate::plugin::keys::Error>,
        "wasmgate:plugin/jobs.error" => Trappable<wasmgate::plugin::jobs::Error>,
        "wasmgate:plugin/net.error" => Trappable<wasmgate::plugin::net::Error>,
        "wasmgate:plugin/wireguard.error" => Trappable<wasmgate::plugin::wireguard::Error>,
        "wasmgate:plugin/outbound.error" => Trappable<wasmgate::plugin::outbound::Error>,
    },
    with: {
        "wasmgate:plugin/kv.txn": crate::caps::kv::Txn,
    },
});

pub use self::exports::wasmgate::plugin::{admin, handler, job_handler};
pub use self::wasmgate::plugin::types::{Request, Response};
pub use self::wasmgate::plugin::{
    config, crypto, jobs, keys, kv, log, net, outbound, ratelimit, streaming, wireguard,
};

/// The version of the `wasmgate:plugin` package these bindings implement
/// (`package wasmgate:plugin@X;` in `wit/world.wit`): what a component
/// built for this host imports and exports.
pub fn version() -> &'static str {
    include_str!("../../../wit/world.wit")
        .lines()
        .find_map(|l| l.trim().strip_prefix("package wasmgate:plugin@"))
        .map_or("unknown", |v| v.trim_end_matches(';'))
}
