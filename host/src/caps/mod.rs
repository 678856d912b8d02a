//! Host capabilities: one self-contained unit per WIT interface a plugin may
//! import. The runtime only composes them.
//!
//! Every unit (a module here) has the same parts:
//! 1. A type implementing [`Capability`]: its grant (the value under
//!    `grants.<name>` in config.yaml, with its validation), its host-wide
//!    state, its per-plugin state, and how it links its WIT interface.
//! 2. Its per-call view, `View<'a>`, made from a [`Call`] (what the store
//!    hands out through [`CapsHost`]); the WIT host traits are implemented on
//!    the view, never on the runtime's store type, the way wasmtime-wasi
//!    implements its interfaces on `WasiCtxView`.
//! 3. Its host functions. Each re-checks the grant; a call without it traps
//!    (the one denial rule: such a call can only come from a component the
//!    load-time check let through by mistake). Refusals of an argument (a
//!    link outside the grant) are the interface's own typed errors.
//!
//! [`capabilities!`] below is the one registry: from its list come the
//! [`Grants`] type and its validation, the host-wide and per-plugin states,
//! the linking, the grant names and the load-time import check.
//!
//! Adding a capability: a WIT file in `wit/` and its line in the world, a
//! module here with its `Capability` type and its view, one line in the
//! registry below, an SDK module, tests (docs/capabilities.md lists the
//! steps).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Linker, ResourceTable};

use crate::db::Db;

pub mod config;
pub mod crypto;
pub mod jobs;
pub mod keys;
pub mod kv;
pub mod log;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "outbound")]
pub mod outbound;
pub mod ratelimit;
#[cfg(feature = "wireguard")]
pub mod wireguard;
pub mod wit;

pub mod absent;

/// Declares a capability left out of this build: its grant module (which
/// every build has) and an [`absent::Absent`] in place of its implementation.
#[allow(unused_macros)]
macro_rules! omitted {
    ($module:ident, $cap:ident, $grant:ty, $feature:literal, $example:literal) => {
        pub mod $module {
            #[allow(dead_code)]
            pub mod grant;

            pub struct Marker;

            impl super::absent::Omitted for Marker {
                const NAME: &'static str = stringify!($module);
                const EXAMPLE: &'static str = $example;
                const FEATURE: &'static str = $feature;
                type Grant = Option<$grant>;
            }

            pub type $cap = super::absent::Absent<Marker>;
        }
    };
}

#[cfg(not(feature = "net"))]
omitted!(net, Net, grant::NetGrant, "net", "{ links: [\"guest*\"] }");
#[cfg(not(feature = "wireguard"))]
omitted!(
    wireguard,
    Wireguard,
    grant::WireguardGrant,
    "wireguard",
    "{ devices: [\"wg*\"] }"
);
#[cfg(not(feature = "outbound"))]
omitted!(
    outbound,
    Outbound,
    grant::OutboundGrant,
    "outbound",
    "{ hosts: [\"api.example.com\"] }"
);

/// What the host gives capabilities to build their host-wide state.
pub struct HostEnv {
    pub db: Db,
    /// Threads for expensive host calls (password hashing), across plugins.
    pub blocking_threads: usize,
}

/// What the host gives capabilities to build one plugin's state.
pub struct PluginEnv<'a> {
    pub name: &'a str,
    pub settings: &'a std::collections::BTreeMap<String, serde_json::Value>,
    pub blocking_threads: usize,
}

/// Whether a grant as written gives its capability: `true`, or a grant
/// section that is present.
pub trait Given {
    fn given(&self) -> bool;
}

impl Given for bool {
    fn given(&self) -> bool {
        *self
    }
}

impl<T> Given for Option<T> {
    fn given(&self) -> bool {
        self.is_some()
    }
}

/// Whether a grant asks for nothing beyond another: what an operator
/// approved covers a later request that stays inside it (a plugin package
/// whose new version asks for more is refused until the operator approves
/// the new grants).
pub trait Within {
    fn within(&self, approved: &Self) -> bool;
}

impl Within for bool {
    fn within(&self, approved: &bool) -> bool {
        !*self || *approved
    }
}

impl<T: Within> Within for Option<T> {
    fn within(&self, approved: &Option<T>) -> bool {
        match (self, approved) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(asked), Some(approved)) => asked.within(approved),
        }
    }
}

/// One capability: its grant, its states, its linking.
pub trait Capability {
    /// Its WIT interface in `wasmgate:plugin`, and its key under `grants:`.
    const NAME: &'static str;
    /// A grant as written in config.yaml, for messages that tell what to add.
    const EXAMPLE: &'static str;
    /// `grants.<NAME>` in config.yaml; the default withholds it.
    type Grant: Given
        + Within
        + Clone
        + Default
        + fmt::Debug
        + PartialEq
        + Serialize
        + for<'de> Deserialize<'de>
        + Send
        + Sync
        + 'static;
    /// Host-wide state, made once.
    type State: Send + Sync + 'static;
    /// Per-plugin state, made when the plugin loads.
    type PluginState: Send + Sync + 'static;

    /// Whether `grant` gives the capability at all.
    fn granted(grant: &Self::Grant) -> bool {
        grant.given()
    }
    /// What serde cannot check: `(key under grants.<NAME>, message)`.
    fn validate(_grant: &Self::Grant) -> Result<(), (String, String)> {
        Ok(())
    }
    fn state(env: &HostEnv) -> Self::State;
    fn plugin_state(env: &PluginEnv<'_>, grant: &Self::Grant) -> Self::PluginState;
    /// Links its WIT interface, its host functions reached through `T`'s views.
    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()>;
}

/// What a host function sees of the call it serves.
pub struct Call<'a> {
    pub plugin: &'a PluginCaps,
    pub host: &'a HostCaps,
    pub request_id: &'a str,
    /// When the call's `timeout_ms` runs out: a host function that waits
    /// bounds its wait by it ([`crate::util::deadline`]).
    pub deadline: Instant,
    pub table: &'a mut ResourceTable,
    /// The newest storage commit the call may have read: its answer waits
    /// until that is durable ([`crate::db::Db::settled`]).
    pub storage_seen: &'a mut u64,
}

/// The store data of a call: it hands out the [`Call`] every view is made of.
pub trait CapsHost: Send + 'static {
    fn call(&mut self) -> Call<'_>;
}

/// One plugin's capabilities: its name, its grants and each capability's
/// state for it.
pub struct PluginCaps {
    pub name: String,
    pub grants: Grants,
    pub states: PluginStates,
}

impl PluginCaps {
    pub fn new(env: &PluginEnv<'_>, grants: Grants) -> PluginCaps {
        PluginCaps {
            name: env.name.to_string(),
            states: PluginStates::new(env, &grants),
            grants,
        }
    }

    /// The trap for a host function called without its grant.
    pub fn not_granted(&self, cap: &str) -> wasmtime::Error {
        wasmtime::format_err!(
            "plugin `{}` called `{cap}` without the `{cap}` grant",
            self.name
        )
    }
}

/// A WIT error or a trap, so that host functions use `?` for both
/// (`trappable_error_type` in [`wit`]).
pub struct Trappable<E> {
    err: wasmtime::Error,
    _error: PhantomData<E>,
}

impl<E> Trappable<E> {
    pub fn trap(err: impl Into<wasmtime::Error>) -> Trappable<E> {
        Trappable {
            err: err.into(),
            _error: PhantomData,
        }
    }

    /// The WIT error for the guest, or the trap.
    pub fn into_wit(self) -> wasmtime::Result<E>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.err.downcast()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Trappable<E> {
    fn from(e: E) -> Self {
        Trappable::trap(e)
    }
}

impl<E> fmt::Debug for Trappable<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.err.fmt(f)
    }
}

impl<E> fmt::Display for Trappable<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.err.fmt(f)
    }
}

impl<E> std::error::Error for Trappable<E> {}

/// `?` on a trap inside a host function that returns a [`Trappable`].
pub trait OrTrap<T> {
    fn or_trap<E>(self) -> Result<T, Trappable<E>>;
}

impl<T, X: Into<wasmtime::Error>> OrTrap<T> for Result<T, X> {
    fn or_trap<E>(self) -> Result<T, Trappable<E>> {
        self.map_err(Trappable::trap)
    }
}

/// What the runtime knows of a capability by name.
pub struct Descriptor {
    pub name: &'static str,
    pub example: &'static str,
    /// Whether `grants` gives it.
    pub granted: fn(&Grants) -> bool,
}

/// The registry: every capability the host offers, in WIT order.
macro_rules! capabilities {
    ($($name:ident: $cap:ty),* $(,)?) => {
        /// Capability grants, one per capability; each is withheld by default.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct Grants {
            $(
                #[serde(default)]
                pub $name: <$cap as Capability>::Grant,
            )*
        }

        impl Grants {
            /// The granted capability names, in WIT order.
            pub fn names(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(
                    if <$cap as Capability>::granted(&self.$name) {
                        out.push(<$cap as Capability>::NAME);
                    }
                )*
                out
            }

            /// The capabilities whose grant here asks for more than
            /// `approved` gives, in WIT order; empty when every one is within.
            pub fn beyond(&self, approved: &Grants) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(
                    if !Within::within(&self.$name, &approved.$name) {
                        out.push(<$cap as Capability>::NAME);
                    }
                )*
                out
            }

            /// What serde cannot check: `(key under grants, message)`.
            pub fn validate(&self) -> Result<(), (String, String)> {
                $(
                    <$cap as Capability>::validate(&self.$name).map_err(|(key, message)| {
                        let name = <$cap as Capability>::NAME;
                        let key = if key.is_empty() { name.to_string() } else { format!("{name}.{key}") };
                        (key, message)
                    })?;
                )*
                Ok(())
            }
        }

        /// Every capability's host-wide state.
        pub struct HostCaps {
            $(pub $name: <$cap as Capability>::State,)*
        }

        impl HostCaps {
            pub fn new(env: &HostEnv) -> Arc<HostCaps> {
                Arc::new(HostCaps {
                    $($name: <$cap as Capability>::state(env),)*
                })
            }
        }

        /// Every capability's state for one plugin.
        pub struct PluginStates {
            $(pub $name: <$cap as Capability>::PluginState,)*
        }

        impl PluginStates {
            fn new(env: &PluginEnv<'_>, grants: &Grants) -> PluginStates {
                PluginStates {
                    $($name: <$cap as Capability>::plugin_state(env, &grants.$name),)*
                }
            }
        }

        /// Links the capabilities `grants` gives, and no other.
        pub fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>, grants: &Grants) -> wasmtime::Result<()> {
            $(
                if <$cap as Capability>::granted(&grants.$name) {
                    <$cap as Capability>::add_to_linker(linker)?;
                }
            )*
            Ok(())
        }

        /// Every capability, in WIT order.
        pub fn all() -> &'static [Descriptor] {
            &[
                $(Descriptor {
                    name: <$cap as Capability>::NAME,
                    example: <$cap as Capability>::EXAMPLE,
                    granted: |g| <$cap as Capability>::granted(&g.$name),
                },)*
            ]
        }
    };
}

capabilities! {
    kv: kv::Kv,
    keys: keys::Keys,
    crypto: crypto::Crypto,
    config: config::Config,
    log: log::Log,
    jobs: jobs::Jobs,
    ratelimit: ratelimit::RateLimit,
    net: net::Net,
    wireguard: wireguard::Wireguard,
    outbound: outbound::Outbound,
}

/// A call outside any store, for capability unit tests: each builds its
/// view from [`Fixture::call`] without the runtime.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub struct Fixture {
        pub host: Arc<HostCaps>,
        pub plugin: PluginCaps,
        pub table: ResourceTable,
        pub deadline: Instant,
        pub storage_seen: u64,
    }

    impl Fixture {
        /// A plugin `name` with `grants` over a database in memory.
        pub fn new(name: &str, grants: Grants) -> Fixture {
            Fixture::on(&Fixture::host(), name, grants)
        }

        /// Host-wide state over a database in memory, to share between fixtures.
        pub fn host() -> Arc<HostCaps> {
            HostCaps::new(&HostEnv {
                db: Db::in_memory().expect("in-memory redb"),
                blocking_threads: 2,
            })
        }

        /// A plugin `name` with `grants` on `host`.
        pub fn on(host: &Arc<HostCaps>, name: &str, grants: Grants) -> Fixture {
            let settings = Default::default();
            let env = PluginEnv {
                name,
                settings: &settings,
                blocking_threads: 2,
            };
            Fixture {
                host: host.clone(),
                plugin: PluginCaps::new(&env, grants),
                table: ResourceTable::new(),
                deadline: Instant::now() + std::time::Duration::from_secs(60),
                storage_seen: 0,
            }
        }

        pub fn call(&mut self) -> Call<'_> {
            Call {
                plugin: &self.plugin,
                host: &self.host,
                request_id: "test",
                deadline: self.deadline,
                table: &mut self.table,
                storage_seen: &mut self.storage_seen,
            }
        }
    }
}

/// Deletes everything plugin `plugin` stored through its capabilities (kv
/// values and sequences, API keys, queued jobs), in one transaction; how
/// many records.
pub fn purge_plugin(db: &crate::db::Db, plugin: &str) -> Result<u64, crate::db::DbError> {
    use redb::{ReadableTable as _, ReadableTableMetadata as _};
    let purged = db.write(|tx| -> Result<u64, crate::db::DbError> {
        let mut n = 0u64;
        for def in [crate::db::KV, crate::db::KEYS] {
            let mut t = tx.open_table(def)?;
            let keys: Vec<String> = t
                .range((plugin, "")..)?
                .map_while(|item| {
                    item.ok()
                        .filter(|(k, _)| k.value().0 == plugin)
                        .map(|(k, _)| k.value().1.to_string())
                })
                .collect();
            for k in &keys {
                t.remove((plugin, k.as_str()))?;
            }
            n += keys.len() as u64;
        }
        let mut digests = tx.open_table(crate::db::KEY_DIGESTS)?;
        digests.retain(|_, owner| owner.0 != plugin)?;
        let mut jobs = tx.open_table(crate::db::JOBS)?;
        let before = jobs.len()?;
        jobs.retain(|_, v| {
            serde_json::from_slice::<jobs::JobRecord>(v).map_or(true, |j| j.plugin != plugin)
        })?;
        n += before - jobs.len()?;
        let mut sequences = tx.open_table(crate::db::SEQ)?;
        let before = sequences.len()?;
        sequences.retain(|k, _| k.0 != plugin)?;
        n += before - sequences.len()?;
        Ok(n)
    });
    db.forget_sequences(plugin);
    purged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(yaml: &str) -> Grants {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn a_grant_is_within_an_approval_that_gives_at_least_as_much() {
        let approved = grants(
            "{ kv: true, log: true, net: { links: [\"guest*\", wg0], write: true }, outbound: { hosts: [API.example.com, \"[::1]:8080\"], timeout_ms: 9000 } }",
        );
        for asked in [
            "{}",
            "{ kv: true }",
            "{ kv: true, log: true }",
            "{ net: { links: [wg0] } }",
            "{ net: { links: [\"guest*\", wg0], write: true } }",
            "{ outbound: { hosts: [api.example.com], timeout_ms: 9000 } }",
            "{ outbound: { hosts: [\"[::1]:8080\"], max_response_bytes: 1 } }",
        ] {
            assert_eq!(
                grants(asked).beyond(&approved),
                Vec::<&str>::new(),
                "{asked}"
            );
        }
    }

    #[test]
    fn a_grant_beyond_the_approval_names_each_capability_in_wit_order() {
        let approved = grants(
            "{ kv: true, net: { links: [\"guest*\"] }, wireguard: { devices: [\"wg*\"] }, outbound: { hosts: [a.example] } }",
        );
        for (asked, beyond) in [
            ("{ log: true, kv: true, keys: true }", vec!["keys", "log"]),
            ("{ net: { links: [guest0] } }", vec!["net"]),
            ("{ net: { links: [\"guest*\"], write: true } }", vec!["net"]),
            (
                "{ net: { links: [\"guest*\"], netns: other } }",
                vec!["net"],
            ),
            (
                "{ wireguard: { devices: [\"wg*\"], backend: kernel } }",
                vec!["wireguard"],
            ),
            (
                "{ wireguard: { devices: [\"wg*\"], userspace_binary: /tmp/wg } }",
                vec!["wireguard"],
            ),
            ("{ outbound: { hosts: [b.example] } }", vec!["outbound"]),
            (
                "{ outbound: { hosts: [\"a.example:8443\"] } }",
                vec!["outbound"],
            ),
            (
                "{ outbound: { hosts: [a.example], timeout_ms: 5001 } }",
                vec!["outbound"],
            ),
            (
                "{ outbound: { hosts: [a.example], max_response_bytes: 1048577 } }",
                vec!["outbound"],
            ),
            (
                "{ kv: true, jobs: true, ratelimit: true }",
                vec!["jobs", "ratelimit"],
            ),
        ] {
            assert_eq!(grants(asked).beyond(&approved), beyond, "{asked}");
        }
        let nothing = Grants::default();
        assert_eq!(
            grants("{ net: { links: [a] }, crypto: true }").beyond(&nothing),
            ["crypto", "net"]
        );
    }
}
