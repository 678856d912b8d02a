//! What serves now, and changing it while serving.
//!
//! [`Live`] is every configured plugin's current version (or why it failed
//! to load) and the routes of every listener. The host swaps it as one
//! value: a request takes the table once and runs on the version it found,
//! to its end, whatever replaces it meanwhile; the next request finds the
//! new table. [`Host::prepare`] builds the next table completely (compiling
//! or loading from the cache, linking against the grants) before anything
//! changes, so a reload that cannot load a new or changed plugin changes
//! nothing. [`Bound::serve`](super::Bound::serve) then binds the listeners
//! the new routes need, switches, and closes the listeners no route uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, PluginConfig};
use crate::router::Router;
use crate::runtime::Plugin;

use super::Host;
use super::state::PluginState;

/// Every configured plugin's state and every listener's routes.
pub struct Live {
    /// The config this table was made from (the file as of the last start
    /// or reload that applied).
    pub config: Config,
    /// In config order; routes point into it.
    pub plugins: Vec<Entry>,
    /// By configured `listen` address.
    pub routers: BTreeMap<String, Arc<Router>>,
}

/// One configured plugin.
pub enum Entry {
    /// Loaded; `config` is the configuration it serves under now (its
    /// mounts may have changed without a new version).
    Serving {
        config: PluginConfig,
        plugin: Arc<Plugin>,
    },
    /// Did not load: its routes answer 503, and `/plugins` says why.
    Failed {
        config: PluginConfig,
        reason: String,
    },
    /// Switched off through the admin API: its routes answer 503.
    Disabled { config: PluginConfig },
}

impl Entry {
    pub fn config(&self) -> &PluginConfig {
        match self {
            Entry::Serving { config, .. }
            | Entry::Failed { config, .. }
            | Entry::Disabled { config } => config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config().name
    }

    /// The loaded version, if there is one.
    pub fn plugin(&self) -> Option<&Arc<Plugin>> {
        match self {
            Entry::Serving { plugin, .. } => Some(plugin),
            Entry::Failed { .. } | Entry::Disabled { .. } => None,
        }
    }
}

impl Live {
    /// The table for `plugins` (made from `config`), with their routes.
    pub fn new(config: Config, plugins: Vec<Entry>) -> Live {
        let routers = Router::from_plugins(plugins.iter().map(Entry::config))
            .into_iter()
            .map(|(listen, r)| (listen, Arc::new(r)))
            .collect();
        Live {
            config,
            plugins,
            routers,
        }
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.plugins.iter().find(|e| e.name() == name)
    }
}

/// What a reload changed, for the log, `wasmgate reload` and `POST /reload`.
#[derive(Debug, Default, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Each plugin that changed, with what: `code` (the component file's
    /// bytes), `wasm` (its path), `grants`, `limits`, `settings`, `mounts`.
    pub changed: BTreeMap<String, Vec<&'static str>>,
    /// Plugins that had failed to load and now serve.
    pub recovered: Vec<String>,
    /// Plugins switched off, and switched on again.
    pub disabled: Vec<String>,
    pub enabled: Vec<String>,
    /// Plugins that had failed to load and still do, with why.
    pub still_failed: BTreeMap<String, String>,
    /// Listeners opened (configured address, bound address).
    pub opened: Vec<(String, String)>,
    /// Listeners closed (configured address).
    pub closed: Vec<String>,
    /// Sections whose changes take effect at the next start only.
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.recovered.is_empty()
            && self.disabled.is_empty()
            && self.enabled.is_empty()
            && self.opened.is_empty()
            && self.closed.is_empty()
    }

    /// One line per change, as `serve` prints them.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in &self.added {
            out.push(format!("added plugin {name}"));
        }
        for name in &self.removed {
            out.push(format!("removed plugin {name}"));
        }
        for (name, what) in &self.changed {
            out.push(format!("changed plugin {name}: {}", what.join(", ")));
        }
        for name in &self.recovered {
            out.push(format!("plugin {name} loads now"));
        }
        for name in &self.disabled {
            out.push(format!("disabled plugin {name}"));
        }
        for name in &self.enabled {
            out.push(format!("enabled plugin {name}"));
        }
        for (name, why) in &self.still_failed {
            out.push(format!("plugin {name} still fails to load: {why}"));
        }
        for (listen, actual) in &self.opened {
            if listen == actual {
                out.push(format!("listening plugins {actual}"));
            } else {
                out.push(format!("listening plugins {actual} {listen}"));
            }
        }
        for listen in &self.closed {
            out.push(format!("closed {listen}"));
        }
        for section in &self.need_restart {
            out.push(format!(
                "`{section}` changed: takes effect at the next start"
            ));
        }
        if out.is_empty() {
            out.push("nothing changed".into());
        }
        out
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file cannot be read or the host refuses it.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// A new or changed plugin does not load.
    #[error("plugin `{plugin}` does not load: {error:#}")]
    Load {
        plugin: String,
        error: anyhow::Error,
    },
    /// A listener the new routes need cannot be bound.
    #[error("cannot listen on {listen}: {error:#}")]
    Listen {
        listen: String,
        error: anyhow::Error,
    },
    /// The host is not serving (a reload needs the listeners).
    #[error("the host is not serving")]
    NotServing,
    /// No configured plugin has this name.
    #[error("no plugin named `{0}`")]
    NoSuchPlugin(String),
    /// The plugin state file cannot be written.
    #[error("{0:#}")]
    State(anyhow::Error),
    /// An install, rollback or removal the host refuses.
    #[error("{0}")]
    Refused(String),
}

/// The next table and what it changes, ready to switch to.
pub struct Prepared {
    pub live: Live,
    pub changes: Changes,
}

/// The config file's plugins plus those installed from packages that it
/// does not define (the file takes precedence), checked as a whole.
pub fn effective(file: &Config, state: &PluginState) -> Result<Config, ReloadError> {
    let mut config = file.clone();
    for (name, installed) in &state.installed {
        let Some(v) = installed.current() else {
            continue;
        };
        if config.plugins.iter().any(|p| p.name == *name) {
            tracing::warn!(plugin = %name, "defined in the config file and installed from a package: the config file's serves");
            continue;
        }
        let [_, wasm] = super::state::version_files(&file.data_dir, name, &v.version);
        config.plugins.push(PluginConfig {
            name: name.clone(),
            wasm,
            mounts: v.mounts.clone(),
            grants: v.grants.clone(),
            limits: v.limits.clone().unwrap_or_default(),
            settings: v.settings.clone(),
        });
    }
    if !state.installed.is_empty() {
        config
            .revalidate("the config file with the installed plugins")
            .map_err(|e| ReloadError::Config(e.into()))?;
    }
    Ok(config)
}

/// The fields of a plugin's config that differ between `a` and `b`.
fn differences(a: &PluginConfig, b: &PluginConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.wasm != b.wasm {
        out.push("wasm");
    }
    if a.grants != b.grants {
        out.push("grants");
    }
    if a.limits != b.limits {
        out.push("limits");
    }
    if a.settings != b.settings {
        out.push("settings");
    }
    if a.mounts != b.mounts {
        out.push("mounts");
    }
    out
}

impl Host {
    /// The table that serves now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Loads whatever `new` adds or changes, and retries the plugins that
    /// had failed, without changing what serves: the table to switch to and
    /// what it changes. A new or changed plugin that does not load is an
    /// error (nothing changes); one that had failed and still fails stays
    /// failed. Compiling blocks: call from a blocking context.
    pub fn prepare(&self, new: &Config, state: &PluginState) -> Result<Prepared, ReloadError> {
        // Artefacts load under the new config's trust; a refused config
        // leaves the current one's in force.
        let current_trust = self.live().config.trust.compilers.clone();
        self.cache.trust_compilers(&new.trust.compilers);
        let prepared = self.prepare_with(new, state);
        if prepared.is_err() {
            self.cache.trust_compilers(&current_trust);
        }
        prepared
    }

    fn prepare_with(&self, new: &Config, state: &PluginState) -> Result<Prepared, ReloadError> {
        let current = self.live();
        let mut changes = Changes::default();
        let mut entries = Vec::with_capacity(new.plugins.len());
        let load_error = |name: &str, error: anyhow::Error| ReloadError::Load {
            plugin: name.to_string(),
            error,
        };
        for pc in &new.plugins {
            let name = pc.name.as_str();
            let old = current.entry(name);
            if state.disabled.contains(name) {
                if old.is_some_and(|e| !matches!(e, Entry::Disabled { .. })) {
                    changes.disabled.push(name.to_string());
                }
                entries.push(Entry::Disabled { config: pc.clone() });
                continue;
            }
            let entry = match old {
                Some(Entry::Disabled { .. }) => {
                    let plugin = self
                        .runtime
                        .load(pc, self.shared.clone(), &self.cache)
                        .map_err(|e| load_error(name, e))?;
                    changes.enabled.push(name.to_string());
                    Entry::Serving {
                        config: pc.clone(),
                        plugin: Arc::new(plugin),
                    }
                }
                None => {
                    let plugin = self
                        .runtime
                        .load(pc, self.shared.clone(), &self.cache)
                        .map_err(|e| load_error(name, e))?;
                    changes.added.push(name.to_string());
                    Entry::Serving {
                        config: pc.clone(),
                        plugin: Arc::new(plugin),
                    }
                }
                Some(Entry::Failed { .. }) => {
                    match self.runtime.load(pc, self.shared.clone(), &self.cache) {
                        Ok(plugin) => {
                            changes.recovered.push(name.to_string());
                            Entry::Serving {
                                config: pc.clone(),
                                plugin: Arc::new(plugin),
                            }
                        }
                        Err(e) => {
                            let reason = format!("{e:#}");
                            changes
                                .still_failed
                                .insert(name.to_string(), reason.clone());
                            Entry::Failed {
                                config: pc.clone(),
                                reason,
                            }
                        }
                    }
                }
                Some(Entry::Serving {
                    config: old_config,
                    plugin: old,
                }) => {
                    let mut what = differences(old_config, pc);
                    let code_changed = crate::util::fs::sha256_file(&pc.wasm)
                        .map_or(true, |sha| sha != old.sha256);
                    let reload = what.iter().any(|w| *w != "mounts");
                    if code_changed {
                        what.insert(0, "code");
                    }
                    let plugin = if reload {
                        // A new configuration: new capability state and
                        // instance slot; the counters go on.
                        let stats = old.shared.stats.clone();
                        Arc::new(
                            self.runtime
                                .load_version(pc, self.shared.clone(), &self.cache, stats)
                                .map_err(|e| load_error(name, e))?,
                        )
                    } else if code_changed {
                        // New code under the same configuration: the same
                        // capability state, slot and counters.
                        Arc::new(
                            self.runtime
                                .reload(old, &self.cache)
                                .map_err(|e| load_error(name, e))?,
                        )
                    } else {
                        old.clone()
                    };
                    if !what.is_empty() {
                        changes.changed.insert(name.to_string(), what);
                    }
                    Entry::Serving {
                        config: pc.clone(),
                        plugin,
                    }
                }
            };
            entries.push(entry);
        }
        for e in &current.plugins {
            if !new.plugins.iter().any(|p| p.name == e.name()) {
                changes.removed.push(e.name().to_string());
            }
        }
        changes.need_restart = self.sections_changed(new);
        Ok(Prepared {
            live: Live::new(new.clone(), entries),
            changes,
        })
    }

    /// The config sections other than `plugins` that differ from the ones the
    /// host started with (they are read once, at start).
    fn sections_changed(&self, new: &Config) -> Vec<&'static str> {
        let old = &self.config;
        let mut out = Vec::new();
        // `data_dir` is not compared: a reload keeps the one the host
        // started with (the file's or `--data-dir`).
        if old.admin != new.admin {
            out.push("admin");
        }
        if old.runtime != new.runtime {
            out.push("runtime");
        }
        if old.http != new.http {
            out.push("http");
        }
        out
    }

    /// Makes `live` what serves.
    pub(super) fn switch(&self, live: Live) {
        self.live.store(Arc::new(live));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(yaml: &str) -> PluginConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn differences_name_each_changed_field() {
        let a = plugin("{name: a, wasm: a.wasm, mounts: [{listen: '127.0.0.1:1', prefix: /}]}");
        assert!(differences(&a, &a).is_empty());
        let b = plugin(
            "{name: a, wasm: b.wasm, grants: {kv: true}, settings: {x: 1}, limits: {memory_mb: 8}}",
        );
        assert_eq!(
            differences(&a, &b),
            ["wasm", "grants", "limits", "settings", "mounts"]
        );
    }

    #[test]
    fn no_change_reads_as_such() {
        let c = Changes::default();
        assert!(c.is_empty());
        assert_eq!(c.lines(), ["nothing changed"]);
    }
}
