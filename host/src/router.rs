//! (listener, path prefix) -> plugin. Pure: no I/O, unit-tested on its own.
//!
//! A prefix `/api/` matches `/api`, `/api/` and everything below `/api/`, but
//! not `/apiary`. The longest matching prefix wins; duplicates are refused
//! when the config is validated, and again here.

use crate::config::{Config, PluginConfig, normalize_prefix};
use std::collections::BTreeMap;

/// One routing table per listener.
#[derive(Debug, Default, Clone)]
pub struct Router {
    /// Sorted longest prefix first, so the first match is the best one.
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    /// Always ends with `/`.
    prefix: String,
    plugin: usize,
    /// The prefix as written in the config, handed to the plugin.
    configured: String,
}

/// What a path resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    /// Index into the config's plugin list.
    pub plugin: usize,
    /// The mount prefix as configured.
    pub prefix: &'a str,
}

impl Router {
    /// Adds a route; false when the prefix is already taken.
    pub fn add(&mut self, prefix: &str, plugin: usize) -> bool {
        let normalized = normalize_prefix(prefix);
        if self.routes.iter().any(|r| r.prefix == normalized) {
            return false;
        }
        self.routes.push(Route {
            prefix: normalized,
            plugin,
            configured: prefix.to_string(),
        });
        self.routes
            .sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        true
    }

    /// The plugin serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<Match<'_>> {
        self.routes
            .iter()
            .find(|r| path.starts_with(&r.prefix) || r.prefix.strip_suffix('/') == Some(path))
            .map(|r| Match {
                plugin: r.plugin,
                prefix: &r.configured,
            })
    }

    /// Every listener's table from a validated config, keyed by the `listen` string.
    pub fn from_config(config: &Config) -> BTreeMap<String, Router> {
        Router::from_plugins(config.plugins.iter())
    }

    /// Every listener's table for `plugins` (whose mounts a config validated),
    /// routing to their positions in `plugins`, keyed by the `listen` string.
    pub fn from_plugins<'a>(
        plugins: impl Iterator<Item = &'a PluginConfig>,
    ) -> BTreeMap<String, Router> {
        let mut tables: BTreeMap<String, Router> = BTreeMap::new();
        for (i, plugin) in plugins.enumerate() {
            for mount in &plugin.mounts {
                let added = tables
                    .entry(mount.listen.clone())
                    .or_default()
                    .add(&mount.prefix, i);
                debug_assert!(added, "config validation lets no duplicate route through");
            }
        }
        tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::default();
        assert!(r.add("/api/", 0));
        assert!(r.add("/api/v1", 1));
        assert!(r.add("/", 2));
        r
    }

    #[test]
    fn the_longest_prefix_wins() {
        let r = router();
        assert_eq!(r.route("/api/v1/users").unwrap().plugin, 1);
        assert_eq!(r.route("/api/v2/users").unwrap().plugin, 0);
        assert_eq!(r.route("/other").unwrap().plugin, 2);
    }

    #[test]
    fn a_prefix_matches_with_or_without_its_trailing_slash_but_not_a_longer_word() {
        let r = router();
        assert_eq!(r.route("/api/v1").unwrap().plugin, 1);
        assert_eq!(r.route("/api").unwrap().plugin, 0);
        assert_eq!(r.route("/api/v1x").unwrap().plugin, 0);
        assert_eq!(r.route("/apiary").unwrap().plugin, 2);
    }

    #[test]
    fn the_configured_prefix_is_reported() {
        let r = router();
        assert_eq!(r.route("/api/v1/x").unwrap().prefix, "/api/v1");
    }

    #[test]
    fn no_match_is_none() {
        let mut r = Router::default();
        r.add("/hello/", 0);
        assert!(r.route("/").is_none());
        assert!(r.route("/hell").is_none());
    }

    #[test]
    fn a_duplicate_prefix_is_refused() {
        let mut r = router();
        assert!(!r.add("/api", 5));
        assert!(!r.add("/api/", 5));
    }
}
