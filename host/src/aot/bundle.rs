//! `wasmgate bundle`: what a router image needs to serve its plugins
//! without compiling anything at first boot: a config, each plugin
//! precompiled and signed for the target, and the signed packages they came
//! from.
//!
//! ```text
//! DIR/config.yaml            the input config, plugins pointing at plugins/*.aot,
//!                            the compile key under trust.compilers, data_dir set
//! DIR/plugins/<name>.aot     one artefact per plugin (`wasmgate compile`)
//! DIR/packages/<name>-<version>.wgpkg   the packages given with --package
//! ```
//!
//! A package is verified (signature, trust policy, the grants it asks) with
//! the input config's `trust:` before it is compiled; its manifest's
//! mounts, grants, settings and limits become its entry in the config.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{Config, PluginConfig, TrustedKey};
use crate::package::keys::SigningKey;

/// `wasmgate bundle`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config to bundle: its plugins, `runtime` section and trust policy.
    #[arg(long)]
    pub config: PathBuf,
    /// Signed plugin packages to add (repeatable); a config plugin of the
    /// same name is replaced.
    #[arg(long = "package")]
    pub packages: Vec<PathBuf>,
    /// The target (as for `wasmgate compile`). Default: this machine.
    #[arg(long)]
    pub target: Option<String>,
    /// The compile key (`wasmgate package keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The directory to write (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// `data_dir` in the bundled config, as the router sees it.
    #[arg(long, default_value = "/var/lib/wasmgate")]
    pub data_dir: PathBuf,
    /// Where the router finds the bundle's `plugins/` directory; relative
    /// paths are read from the bundled config file's directory.
    #[arg(long, default_value = "plugins")]
    pub plugins_dir: PathBuf,
    /// Switch the bundled config to the router memory profile: its values
    /// replace the config's for the knobs it sets (docs/routers.md).
    #[arg(long)]
    pub router_profile: bool,
}

impl Args {
    pub fn run(&self) -> anyhow::Result<()> {
        let mut config = Config::load(&self.config)?;
        if self.router_profile {
            config.use_router_profile();
        }
        let key = SigningKey::read(&self.key)?;
        let written = bundle(
            config,
            &self.packages,
            self.target.as_deref(),
            &key,
            &self.out,
            &self.data_dir,
            &self.plugins_dir,
        )?;
        for line in written {
            println!("{line}");
        }
        Ok(())
    }
}

/// Writes the bundle; returns a line per file written.
pub fn bundle(
    mut config: Config,
    packages: &[PathBuf],
    target: Option<&str>,
    key: &SigningKey,
    out: &Path,
    data_dir: &Path,
    plugins_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut components = std::collections::BTreeMap::new();
    let staging = out.join("packages");
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    for path in packages {
        let package = crate::package::load(path)?;
        // The operator approves the grants by bundling: they are listed.
        let verified = package.verify(&config.trust, None, None, false)?;
        let signer = match (&verified.signer, &verified.key) {
            (Some(name), _) => format!("signed by {name}"),
            (None, Some(key)) => format!("signed by an unlisted key {key}"),
            (None, None) => "unsigned".to_string(),
        };
        let m = package.manifest();
        let file = staging.join(format!("{}-{}.wgpkg", m.name, m.version));
        std::fs::copy(path, &file).with_context(|| format!("cannot write {}", file.display()))?;
        components.insert(m.name.clone(), package.component().to_vec());
        let entry = PluginConfig {
            name: m.name.clone(),
            // Where the bundled config will find its artefact.
            wasm: plugins_dir.join(super::file_name(&m.name)),
            mounts: m.mounts.clone(),
            grants: m.grants.clone(),
            limits: m.limits.clone().unwrap_or_default(),
            settings: m.settings.clone(),
        };
        config.plugins.retain(|p| p.name != m.name);
        config.plugins.push(entry);
        let grants = match m.grants.names() {
            n if n.is_empty() => "no grants".to_string(),
            n => format!("grants {}", n.join(", ")),
        };
        lines.push(format!(
            "{}: package {} {} ({signer}; {grants})",
            m.name,
            m.version,
            file.display(),
        ));
    }
    config
        .revalidate("the bundled config")
        .map_err(anyhow::Error::from)?;
    let compiled =
        super::compile::compile(&config, target, key, &out.join("plugins"), &[], &components)?;
    for c in &compiled {
        lines.push(format!(
            "{}: {} ({:.1} MB)",
            c.plugin,
            c.path.display(),
            c.bytes as f64 / 1e6
        ));
    }
    for p in &mut config.plugins {
        p.wasm = plugins_dir.join(super::file_name(&p.name));
    }
    config.data_dir = data_dir.to_path_buf();
    let public = key.public_key();
    if !config.trust.compilers.iter().any(|k| k.key == public) {
        config.trust.compilers.push(TrustedKey {
            name: "bundle".to_string(),
            key: public,
            plugins: Vec::new(),
        });
    }
    config.dev = None;
    let yaml = format!(
        "# Written by `wasmgate bundle` (wasmgate {}) for {}: every plugin is\n# precompiled in plugins/, signed by the key under trust.compilers.\n{}",
        env!("CARGO_PKG_VERSION"),
        target.unwrap_or("this machine"),
        serde_norway::to_string(&config).context("cannot write the config")?
    );
    let path = out.join("config.yaml");
    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    lines.push(format!("config: {}", path.display()));
    Ok(lines)
}
