//! Records and keys: the kv layout, the record types and their
//! (de)serialisation, and low-level kv access. This layer imports nothing
//! of the crate but the base ([`crate::fail`], [`crate::util`],
//! [`crate::validate`]); what the panel decides from these records is in
//! [`crate::domain`].
//!
//! The layout:
//! - [`users`]: `u/<owner>/<username>` (a [`users::User`]; `<owner>` is
//!   `main` or `sa<id:010>`, so one prefix lists one owner's users),
//!   `uname/<username>` (the owner segment of that user: names are unique
//!   across the panel), `ls/<owner>/<username>` (the user's list_all
//!   summary, [`users::put_user`]), `sa/<id:010>` (a [`users::SubAdmin`]
//!   with its counters: users, allocated and used bytes; every user
//!   creation, deletion and traffic report of its users updates it in the
//!   same transaction, so quotas hold under races), `saname/<username>`
//!   (the id of that sub-admin), `meta/next_sa_id`.
//! - [`nodes`]: `infra/seq/node` (the last id), `node/<id:010>` (a
//!   [`nodes::Node`]), `infra/node_addr/<ip>:<api_port>` (the id of the
//!   node at that address).
//! - [`ports`]: `infra/seq/port`, `port/<port_id:010>` (a [`ports::Port`]),
//!   `infra/port_by/<protocol>/<public_port:05>` (the port id),
//!   `assign/<port_id:010>/<server_identifier>` (an [`ports::Assignment`]),
//!   `infra/port_rev/<port_id:010>`.
//! - [`pki`]: `meta/ca`, `cert/<username>`, `crl/<serial>`,
//!   `srvcert/<server>`.
//! - [`wg`]: `wg/server`, `wg/seen`, `wg/lock`, `meta/wg_next`,
//!   `wgaddr/<ip>`.
//! - [`meta`]: `meta/ipsec_psk`, `meta/sync_queued`, `meta/enforce_next`.
//! - [`node_mode`] (a node's own): `infra/self`, `infra/ipsec_psk`,
//!   `infra/last_sync`, `infra/sync_next`.

pub mod meta;
pub mod node_mode;
pub mod nodes;
pub mod pki;
pub mod ports;
pub mod users;
pub mod wg;

use wasmgate_sdk::{Error, kv};

use crate::fail::Fail;

/// The entries under `prefix` after key `after` (exclusive), in key order,
/// a host page at a time, while `f` returns true.
pub fn scan(
    prefix: &str,
    after: Option<&str>,
    mut f: impl FnMut(String, Vec<u8>) -> Result<bool, Fail>,
) -> Result<(), Fail> {
    use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
    let mut cursor = after.map(str::to_string);
    loop {
        let page = raw::list(prefix, cursor.as_deref(), 1000).map_err(wasmgate_sdk::Error::from)?;
        for (key, bytes) in page.entries {
            if !f(key, bytes)? {
                return Ok(());
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// [`kv::transaction`] whose `f` may refuse with a [`Fail`], answered as
/// is, so a check that depends on what the transaction read happens inside
/// it, against the same data the write is based on. `f` runs again on a
/// conflict, like [`kv::transaction`].
pub fn transaction<R>(mut f: impl FnMut(&kv::Txn) -> Result<R, Fail>) -> Result<R, Fail> {
    let mut refused: Option<Fail> = None;
    kv::transaction(|txn| {
        f(txn).map_err(|fail| {
            let status = fail.status;
            refused = Some(fail);
            // Only carries the refusal out; `refused` is what is answered.
            Error::new(status, "refused")
        })
    })
    .map_err(|e| refused.take().unwrap_or_else(|| Fail::from(e)))
}
