//! `config`: the plugin's own `settings:` from config.yaml, read-only.

use wasmtime::component::{HasSelf, Linker};

use super::Capability;
use crate::bindings::config::Host;
use crate::runtime::Ctx;

pub const CAP: Capability = Capability {
    name: "config",
    granted: |g| g.config,
    add_to_linker: |l: &mut Linker<Ctx>| {
        crate::bindings::config::add_to_linker::<Ctx, HasSelf<Ctx>>(l, |c| c)
    },
};

/// A setting as the guest sees it: strings bare, everything else as JSON.
pub fn render(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Host for Ctx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        if !self.plugin.grants.config {
            return Ok(None);
        }
        Ok(self.plugin.settings.get(&key).map(render))
    }

    fn all(&mut self) -> wasmtime::Result<String> {
        if !self.plugin.grants.config {
            return Ok("{}".into());
        }
        Ok(self.plugin.settings_json.clone())
    }
}
