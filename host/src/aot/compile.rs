//! `wasmgate compile`: a config's plugins precompiled for a target and
//! signed, one artefact per plugin (`<name>.aot`), for hosts that list the
//! key under `trust.compilers`. The engine is configured from the same
//! config's `runtime` section and memory caps as the host that will load
//! the artefacts, so compile with the config the target will run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Header, code_target, engine_config, settings};
use crate::config::{AllocatorKind, Config};
use crate::package::keys::SigningKey;

/// `wasmgate compile`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config whose plugins to compile (its `runtime` section and memory
    /// caps must be those of the host that will load the artefacts).
    #[arg(long)]
    pub config: PathBuf,
    /// What the artefacts run on: a target triple
    /// (`aarch64-unknown-linux-musl`, `armv7-unknown-linux-gnueabihf`,
    /// `x86_64-unknown-linux-musl`, …) or `pulley32`/`pulley64`. Triples of
    /// architectures without a Cranelift backend (32-bit ARM, MIPS) get
    /// Pulley bytecode. Default: this machine, with its CPU's features.
    #[arg(long)]
    pub target: Option<String>,
    /// The signing key (`wasmgate package keygen`); its public key goes
    /// under `trust.compilers` of the hosts that load the artefacts.
    #[arg(long)]
    pub key: PathBuf,
    /// The directory to write `<plugin>.aot` files into (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Only these plugins (repeatable). Default: every plugin in the config.
    #[arg(long = "plugin")]
    pub plugins: Vec<String>,
}

/// One artefact written.
#[derive(Debug)]
pub struct Compiled {
    pub plugin: String,
    /// The code it holds: an architecture or a Pulley flavour.
    pub arch: String,
    pub path: PathBuf,
    pub bytes: usize,
    pub took: Duration,
}

impl Args {
    pub fn run(&self) -> anyhow::Result<()> {
        let config = Config::load(&self.config)?;
        let key = SigningKey::read(&self.key)?;
        let out = compile(
            &config,
            self.target.as_deref(),
            &key,
            &self.out,
            &self.plugins,
            &Default::default(),
        )?;
        for c in &out {
            println!(
                "{}: {} ({:.1} MB, {} code, {:.2} s)",
                c.plugin,
                c.path.display(),
                c.bytes as f64 / 1e6,
                c.arch,
                c.took.as_secs_f64()
            );
        }
        let public = key.public_key();
        if !config.trust.compilers.iter().any(|k| k.key == public) {
            println!(
                "the host that loads these needs the key in its config.yaml:\ntrust:\n  compilers:\n    - name: <a name>\n      key: \"{public}\""
            );
        }
        Ok(())
    }
}

/// Compiles `config`'s plugins (or those named in `only`) for `target`
/// (`None`: this machine), signs them with `key` and writes them to `out`.
/// A plugin's component is `given`'s entry for its name (a bundle's
/// package, already in memory), else the file its `wasm` names.
pub fn compile(
    config: &Config,
    target: Option<&str>,
    key: &SigningKey,
    out: &Path,
    only: &[String],
    given: &std::collections::BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<Vec<Compiled>> {
    for name in only {
        if !config.plugins.iter().any(|p| &p.name == name) {
            anyhow::bail!("no plugin named `{name}` in the config");
        }
    }
    let (arch, wasmtime_target) = match target {
        Some(t) => code_target(t).map_err(anyhow::Error::msg)?,
        None => (
            super::host_code_target(config.runtime.pulley),
            String::new(),
        ),
    };
    let pooling = config.runtime.allocator == AllocatorKind::Pooling;
    let max_memory = config.max_memory_bytes();
    let engine_target = target.map(|_| wasmtime_target.as_str());
    let engine = wasmtime::Engine::new(&engine_config(
        &config.runtime,
        max_memory,
        pooling,
        engine_target,
        true,
    )?)
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut done = Vec::new();
    for p in &config.plugins {
        if !only.is_empty() && !only.contains(&p.name) {
            continue;
        }
        let read;
        let bytes = match given.get(&p.name) {
            Some(bytes) => bytes,
            None => {
                read = std::fs::read(&p.wasm).with_context(|| {
                    format!("plugin `{}`: cannot read {}", p.name, p.wasm.display())
                })?;
                &read
            }
        };
        if super::is_artefact(bytes) {
            anyhow::bail!(
                "plugin `{}`: {} is already precompiled; compile from the component",
                p.name,
                p.wasm.display()
            );
        }
        let started = Instant::now();
        let code = engine.precompile_component(bytes).map_err(|e| {
            anyhow::anyhow!("{e:#}").context(format!(
                "plugin `{}`: {} is not a component this host can compile",
                p.name,
                p.wasm.display()
            ))
        })?;
        let header = Header {
            plugin: p.name.clone(),
            component_sha256: crate::util::ids::sha256_hex(bytes),
            code_sha256: String::new(),
            arch: arch.clone(),
            target: target.map_or_else(|| arch.clone(), str::to_string),
            wasmtime: super::WASMTIME_VERSION.to_string(),
            wasmgate: env!("CARGO_PKG_VERSION").to_string(),
            engine: settings(max_memory, pooling),
        };
        let sealed = super::seal(header, &code, key);
        let path = out.join(super::file_name(&p.name));
        crate::util::fs::write_replacing(&path, &sealed)
            .with_context(|| format!("cannot write {}", path.display()))?;
        done.push(Compiled {
            plugin: p.name.clone(),
            arch: arch.clone(),
            path,
            bytes: sealed.len(),
            took: started.elapsed(),
        });
    }
    Ok(done)
}
