//! `wasmgate wit`: the repository's WIT package (embedded at build time) with
//! the world `plugin` rewritten to import exactly the named capabilities and
//! export exactly the named exports.
//!
//! A Rust plugin imports only the interfaces it calls, whatever its world
//! says. componentize-py and componentize-js import every interface of the
//! world they are built against, and componentize-js also wants every export
//! implemented, so a Python or JavaScript plugin built against the full world
//! asks for every grant. Built against the world this writes, it imports
//! only what its config grants.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The WIT files of package `wasmgate:plugin`, as in `wit/`.
pub const FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("caps.wit", include_str!("../../../wit/caps.wit")),
    ("kv.wit", include_str!("../../../wit/kv.wit")),
    ("net.wit", include_str!("../../../wit/net.wit")),
    ("outbound.wit", include_str!("../../../wit/outbound.wit")),
    ("wireguard.wit", include_str!("../../../wit/wireguard.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

/// The interfaces a plugin may export, in WIT order; `handler` is required.
pub const EXPORTS: &[&str] = &["handler", "admin", "job-handler"];

/// `wasmgate wit`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write the package into (made if missing; files of
    /// the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Capabilities the world imports, comma-separated, e.g. kv,config,log.
    #[arg(long, value_delimiter = ',', conflicts_with = "config")]
    pub grants: Vec<String>,
    /// Interfaces the world exports, comma-separated: handler, admin, job-handler.
    #[arg(long, value_delimiter = ',', default_value = "handler")]
    pub exports: Vec<String>,
    /// Take the grants from this config's plugin `--plugin`.
    #[arg(long, requires = "plugin")]
    pub config: Option<PathBuf>,
    /// The plugin's name in `--config`.
    #[arg(long, requires = "config")]
    pub plugin: Option<String>,
}

impl Args {
    /// Writes the package and prints what the world imports and exports.
    pub fn run(&self) -> anyhow::Result<()> {
        let grants = match (&self.config, &self.plugin) {
            (Some(config), Some(plugin)) => grants_of(config, plugin)?,
            _ => self.grants.iter().map(String::as_str).collect(),
        };
        let exports: Vec<&str> = self.exports.iter().map(String::as_str).collect();
        let world = World::new(&grants, &exports)?;
        write(&self.out, &world)?;
        println!(
            "{}: world `plugin` imports {} and exports {}",
            self.out.display(),
            list_or_none(&world.imports),
            world.exports.join(", ")
        );
        Ok(())
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "no capability".to_string()
    } else {
        names.join(", ")
    }
}

/// The names of the capabilities `plugin` is granted in the config at `path`.
pub fn grants_of(path: &Path, plugin: &str) -> anyhow::Result<Vec<&'static str>> {
    let config = crate::config::Config::load(path)?;
    let p = config
        .plugins
        .iter()
        .find(|p| p.name == plugin)
        .with_context(|| {
            let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
            format!(
                "{} has no plugin `{plugin}` (it has: {})",
                path.display(),
                names.join(", ")
            )
        })?;
    Ok(p.grants.names())
}

/// A world `plugin`'s imports and exports, checked and in WIT order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub imports: Vec<&'static str>,
    pub exports: Vec<&'static str>,
}

impl World {
    /// Refuses a name that is no capability or no export, and a world
    /// without `handler`; repeats and empty names are ignored.
    pub fn new(grants: &[&str], exports: &[&str]) -> anyhow::Result<World> {
        let caps: Vec<&'static str> = crate::caps::all().iter().map(|c| c.name).collect();
        let imports = pick(grants, &caps, "capability")?;
        let exports = pick(exports, EXPORTS, "export")?;
        anyhow::ensure!(
            exports.contains(&"handler"),
            "a plugin exports `handler`: add it to --exports"
        );
        Ok(World { imports, exports })
    }

    /// The `world plugin { ... }` block.
    pub fn block(&self) -> String {
        let mut out = String::from("world plugin {\n");
        for name in &self.imports {
            out.push_str(&format!("    import {name};\n"));
        }
        // Not a capability: every plugin may stream its own answer.
        out.push_str("    import streaming;\n\n");
        for name in &self.exports {
            out.push_str(&format!("    export {name};\n"));
        }
        out.push('}');
        out
    }

    /// Every file of the package, `world.wit` with this world in place of
    /// the full one.
    pub fn files(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        FILES
            .iter()
            .map(|(name, text)| {
                let text = if *name == "world.wit" {
                    self.world_wit(text)?
                } else {
                    text.to_string()
                };
                Ok((*name, text))
            })
            .collect()
    }

    fn world_wit(&self, text: &str) -> anyhow::Result<String> {
        let start = text
            .find("world plugin {")
            .context("world.wit has no `world plugin`")?;
        let len = text[start..]
            .find('}')
            .context("world.wit: `world plugin` is not closed")?;
        Ok(format!(
            "// Written by `wasmgate wit`: the world `plugin` cut to imports {} and exports {}.\n{}{}{}",
            list_or_none(&self.imports),
            self.exports.join(", "),
            &text[..start],
            self.block(),
            &text[start + len + 1..]
        ))
    }
}

/// `wanted` as names from `known` (so `'static`), in `known`'s order.
fn pick(wanted: &[&str], known: &[&'static str], what: &str) -> anyhow::Result<Vec<&'static str>> {
    let wanted: Vec<&str> = wanted
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !known.contains(w)) {
        anyhow::bail!("no {what} `{bad}` (one of: {})", known.join(", "));
    }
    Ok(known
        .iter()
        .copied()
        .filter(|k| wanted.contains(k))
        .collect())
}

/// Writes `world`'s package into `dir`.
pub fn write(dir: &Path, world: &World) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in world.files()? {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_imports_and_exports_exactly_what_is_named_in_wit_order() {
        let w = World::new(&["log", "kv", "log", ""], &["admin", "handler"]).unwrap();
        assert_eq!(w.imports, ["kv", "log"]);
        assert_eq!(w.exports, ["handler", "admin"]);
        let files = w.files().unwrap();
        let world = &files.iter().find(|(n, _)| *n == "world.wit").unwrap().1;
        let block = &world[world.find("world plugin {").unwrap()..];
        let block = &block[..block.find('}').unwrap()];
        let lines: Vec<&str> = block
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            lines,
            [
                "import kv;",
                "import log;",
                "import streaming;",
                "export handler;",
                "export admin;"
            ]
        );
        assert!(world.contains("world minimal {"), "{world}");
        assert_eq!(files.len(), FILES.len());
    }

    #[test]
    fn every_capability_has_its_interface_in_the_package() {
        let all: Vec<&str> = crate::caps::all().iter().map(|c| c.name).collect();
        let w = World::new(&all, EXPORTS).unwrap();
        let text: String = w.files().unwrap().into_iter().map(|(_, t)| t).collect();
        for name in all {
            assert!(
                text.contains(&format!("interface {name} {{")),
                "no interface {name}"
            );
        }
        // The full world is what wit/world.wit says.
        let original = FILES.iter().find(|(n, _)| *n == "world.wit").unwrap().1;
        let mine = &w
            .files()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == "world.wit")
            .unwrap()
            .1;
        let normalise = |t: &str| -> Vec<String> {
            let start = t.find("world plugin {").unwrap();
            t[start..t[start..].find('}').unwrap() + start]
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        assert_eq!(normalise(original), normalise(mine));
    }

    #[test]
    fn the_package_has_every_file_of_wit() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn unknown_names_and_a_world_without_handler_are_refused() {
        let e = World::new(&["kv", "disk"], &["handler"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no capability `disk`") && e.contains("kv, keys"),
            "{e}"
        );
        let e = World::new(&[], &["handler", "cron"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no export `cron`"), "{e}");
        let e = World::new(&["kv"], &["admin"]).unwrap_err().to_string();
        assert!(e.contains("`handler`"), "{e}");
    }
}
