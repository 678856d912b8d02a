//! The domain layer: what the panel decides. It reads and writes through
//! [`crate::store`] and never sees a request or builds an answer: a
//! function takes the caller, ids and the body's JSON object (whose fields
//! it checks, refusing with the message the API answers) and returns what
//! happened, or a [`crate::fail::Fail`].
//!
//! Within the layer, a module uses only the ones listed before it:
//! 1. [`caller`] (who is calling, from a key), [`peer`] (calls between a
//!    panel and its nodes), [`periodic`] (self-renewing job chains);
//! 2. [`wg`] (WireGuard keys, addresses and devices), [`servers`] (the
//!    servers users connect to, their OpenVPN endpoints), [`pki`] (the
//!    OpenVPN CA, certificates, CRL), [`settings`] (the IPsec PSK),
//!    [`sync`] (a change queues a sync);
//! 3. [`nodes`] (provisioning and deletion jobs), [`ports`] (custom ports
//!    on servers);
//! 4. [`traffic`] (reports, limits, quotas, the enforcement chain),
//!    [`panel_jobs`] (the panel's sync job and enforcement pass);
//! 5. [`users`], [`sub_admins`];
//! 6. [`node_mode`] (what a node does with the panel's config).

pub mod caller;
pub mod node_mode;
pub mod nodes;
pub mod panel_jobs;
pub mod peer;
pub mod periodic;
pub mod pki;
pub mod ports;
pub mod servers;
pub mod settings;
pub mod sub_admins;
pub mod sync;
pub mod traffic;
pub mod users;
pub mod wg;
