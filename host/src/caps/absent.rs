//! A capability left out of this build (a cargo feature turned off, for a
//! router that does not need it): its grant still parses, so that a config
//! naming it is refused with a clear message instead of an unknown key, and
//! nothing of it is linked.

use std::marker::PhantomData;

use wasmtime::component::Linker;

use super::{Capability, CapsHost, Given, HostEnv, PluginEnv, Within};

/// What a left-out capability keeps: its name, grant type and feature.
pub trait Omitted: 'static {
    const NAME: &'static str;
    const EXAMPLE: &'static str;
    /// The cargo feature that builds it in.
    const FEATURE: &'static str;
    type Grant: Given
        + Within
        + Clone
        + Default
        + std::fmt::Debug
        + PartialEq
        + serde::Serialize
        + for<'de> serde::Deserialize<'de>
        + Send
        + Sync
        + 'static;
}

/// The [`Capability`] of a left-out one: granting it is a config error.
pub struct Absent<O>(PhantomData<O>);

impl<O: Omitted> Capability for Absent<O> {
    const NAME: &'static str = O::NAME;
    const EXAMPLE: &'static str = O::EXAMPLE;
    type Grant = O::Grant;
    type State = ();
    type PluginState = ();

    fn validate(grant: &O::Grant) -> Result<(), (String, String)> {
        if grant.given() {
            return Err((
                String::new(),
                format!(
                    "this wasmgate was built without the `{}` capability (cargo feature `{}`); use a build that has it, or remove the grant",
                    O::NAME,
                    O::FEATURE
                ),
            ));
        }
        Ok(())
    }

    fn state(_: &HostEnv) {}

    fn plugin_state(_: &PluginEnv<'_>, _: &O::Grant) {}

    fn add_to_linker<T: CapsHost>(_: &mut Linker<T>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Whether this build has capability `name` (false for a left-out one).
pub fn built_in(name: &str) -> bool {
    !OMITTED.contains(&name)
}

/// The capabilities this build leaves out.
pub const OMITTED: &[&str] = &[
    #[cfg(not(feature = "net"))]
    "net",
    #[cfg(not(feature = "wireguard"))]
    "wireguard",
    #[cfg(not(feature = "outbound"))]
    "outbound",
];
