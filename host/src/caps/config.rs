//! `config`: the plugin's own `settings:` from config.yaml, read-only.

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

use super::wit::config::Host;
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv};

pub struct Config;

/// A plugin's settings, and all of them as one JSON object, rendered once.
pub struct Settings {
    values: BTreeMap<String, serde_json::Value>,
    json: String,
}

impl Capability for Config {
    const NAME: &'static str = "config";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = ();
    type PluginState = Settings;

    fn state(_: &HostEnv) {}

    fn plugin_state(env: &PluginEnv<'_>, _: &bool) -> Settings {
        Settings {
            values: env.settings.clone(),
            json: serde_json::to_string(env.settings).unwrap_or_else(|_| "{}".into()),
        }
    }

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::config::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's settings.
pub struct View<'a> {
    plugin: &'a PluginCaps,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
        }
    }

    fn settings(&self) -> wasmtime::Result<&'a Settings> {
        if !self.plugin.grants.config {
            return Err(self.plugin.not_granted(Config::NAME));
        }
        Ok(&self.plugin.states.config)
    }
}

/// A setting as the guest sees it: strings bare, everything else as JSON.
pub fn render(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Host for View<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.settings()?.values.get(&key).map(render))
    }

    fn all(&mut self) -> wasmtime::Result<String> {
        Ok(self.settings()?.json.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;

    #[test]
    fn without_the_grant_a_call_traps() {
        let mut f = Fixture::new("p", Grants::default());
        assert!(Host::get(&mut View::new(f.call()), "k".into()).is_err());
        assert!(Host::all(&mut View::new(f.call())).is_err());
        let mut f = Fixture::new(
            "p",
            Grants {
                config: true,
                ..Grants::default()
            },
        );
        assert_eq!(
            Host::get(&mut View::new(f.call()), "k".into()).unwrap(),
            None
        );
        assert_eq!(Host::all(&mut View::new(f.call())).unwrap(), "{}");
    }
}
