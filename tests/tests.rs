//! End-to-end tests of wasmgate: every test starts the real `wasmgate`
//! binary (on port 0, in a temp dir of its own) and talks to it over HTTP or
//! through its CLI.
//!
//! The plugins come from `target/wasm32-wasip2/release/{hello,fixture}.wasm`
//! and `target/{hello-py,hello-js}.wasm`;
//! `make test` builds them before running this target.
//!
//! They test the full build (every capability, the compiler); a router
//! build (`--no-default-features`) is tested by `tests/routers/smoke.sh`
//! through its binary.
#![cfg(all(
    feature = "compiler",
    feature = "net",
    feature = "wireguard",
    feature = "outbound"
))]

mod e2e {
    pub mod harness;
    pub mod http;

    mod admin;
    mod aot;
    mod authoring;
    mod caps;
    mod cli;
    mod config;
    mod hello;
    mod hostile;
    mod hotspot;
    mod imports;
    mod install;
    mod isolation;
    mod jobs;
    mod layers;
    mod license_portal;
    mod license_portal_lists;
    mod lifecycle;
    mod limits;
    mod net;
    mod operator;
    mod outbound;
    mod package;
    mod server;
    mod shutdown;
    mod storage;
    mod streaming;
    mod vpnpanel;
    mod vpnpanel_lists;
    mod vpnpanel_nodes;
    mod vpnpanel_openvpn;
    mod vpnpanel_races;
    mod vpnpanel_wg;
    mod wgdashboard;
    mod wireguard;
    mod wispanel;
    mod wispanel_lists;
    mod wispanel_races;
}
