//! `wasmgate package`: keygen, build, sign, inspect, verify. Input the
//! host refuses (a bad manifest, a damaged or untrusted package, a key file
//! that is no key) comes back as a [`PackageError`], [`Refusal`] or
//! [`KeyError`], which `main` turns into exit code 2.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::keys::{self, KeyError, SigningKey};
use super::manifest::{self, Manifest};
use super::{Package, PackageError, PublicKey, Refusal};
use crate::config::{TrustConfig, TrustedKey};

/// `wasmgate package`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new Ed25519 signing key (PKCS#8, mode 0600; an existing file
    /// is never replaced) and print its public key, `ed25519:<base64>`,
    /// for the `trust.keys` of the hosts that install your packages.
    Keygen {
        /// The private key file to create. Keep it secret.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make an unsigned package from a component and a manifest: checks
    /// the manifest with the config's rules, and that the component is one
    /// it describes (its WIT version, a grant for every capability it
    /// imports), and writes the component's SHA-256 into it.
    Build {
        /// The component (e.g. target/wasm32-wasip2/release/NAME.wasm).
        #[arg(long)]
        wasm: PathBuf,
        /// The manifest, YAML: name, version, vendor, wit_version,
        /// min_host_version, grants, settings, mounts, limits
        /// (docs/package.md).
        #[arg(long)]
        manifest: PathBuf,
        /// The package file to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a package in place with a key from `keygen`, replacing any
    /// signature it has.
    Sign {
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
        /// The package file.
        package: PathBuf,
    },
    /// Print a package's manifest (its grants as a config says them), its
    /// component's SHA-256 and its signer's key, and whether the signature
    /// and the hash hold. Exits 2 when one does not.
    Inspect {
        /// The package file.
        package: PathBuf,
    },
    /// Check that this host would take the package: integrity, then the
    /// keys to trust (--trust, or a config's `trust:` section with
    /// --config; without either, any signer), then its WIT and host versions.
    Verify {
        /// The package file.
        package: PathBuf,
        /// A key whose signature to require, `ed25519:<base64>`; repeatable.
        #[arg(long, value_name = "KEY", conflicts_with = "config")]
        trust: Vec<PublicKey>,
        /// A config whose `trust:` section to apply.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The largest manifest file `build` reads.
const MAX_MANIFEST_SOURCE: u64 = 64 << 10;

impl Args {
    pub fn run(&self) -> anyhow::Result<()> {
        match &self.command {
            Command::Keygen { out } => {
                let key = keys::keygen(out)?;
                eprintln!("wrote {} (mode 0600); its public key:", out.display());
                println!("{key}");
                Ok(())
            }
            Command::Build {
                wasm,
                manifest,
                out,
            } => build(wasm, manifest, out),
            Command::Sign { key, package } => sign(key, package),
            Command::Inspect { package } => inspect(package),
            Command::Verify {
                package,
                trust,
                config,
            } => verify(package, trust, config.as_deref()),
        }
    }
}

/// Reads at most `max` bytes of `path`; refuses a larger file.
fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("{}: a {what} may be at most {max} bytes", path.display());
    }
    Ok(bytes)
}

fn build(wasm: &Path, manifest_path: &Path, out: &Path) -> anyhow::Result<()> {
    let text = read_bounded(manifest_path, MAX_MANIFEST_SOURCE, "manifest")?;
    let text = String::from_utf8(text)
        .map_err(|_| PackageError::Manifest("is not UTF-8".into()))
        .with_context(|| manifest_path.display().to_string())?;
    let manifest: Manifest = serde_norway::from_str(&text)
        .map_err(|e| PackageError::Manifest(e.to_string()))
        .with_context(|| manifest_path.display().to_string())?;
    let component = read_bounded(wasm, super::MAX_COMPONENT_BYTES, "component")?;
    let package = Package::build(manifest, component).with_context(|| {
        format!(
            "cannot package {} with {}",
            wasm.display(),
            manifest_path.display()
        )
    })?;
    package
        .write_file(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let m = package.manifest();
    println!(
        "{}: {} {} (unsigned), component sha256 {}",
        out.display(),
        m.name,
        m.version,
        m.component_sha256
    );
    Ok(())
}

fn sign(key_path: &Path, path: &Path) -> anyhow::Result<()> {
    let key = SigningKey::read(key_path)?;
    let mut package = super::load(path)?;
    // A package changed since it was built or signed is not signed (again):
    // the signature would vouch for a manifest or a component its vendor
    // never made. A valid signature is replaced (a new key, say).
    package
        .check_integrity()
        .with_context(|| format!("{}: not signed", path.display()))?;
    let replaced = package.sign(&key);
    package
        .write_file(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let m = package.manifest();
    match replaced {
        Some(old) => println!(
            "{}: {} {} signed by {} (replacing the signature by {old})",
            path.display(),
            m.name,
            m.version,
            key.public_key()
        ),
        None => println!(
            "{}: {} {} signed by {}",
            path.display(),
            m.name,
            m.version,
            key.public_key()
        ),
    }
    Ok(())
}

fn inspect(path: &Path) -> anyhow::Result<()> {
    let package = super::load(path)?;
    let m = package.manifest();
    let host_wit = manifest::host_wit_version();
    let host = manifest::host_version();
    let integrity = package.check_integrity();
    println!("package: {}", path.display());
    println!("name: {}", m.name);
    println!("version: {}", m.version);
    println!("vendor: {}", m.vendor);
    println!(
        "wit_version: {} (this host implements {host_wit}: {})",
        m.wit_version,
        if manifest::wit_supported(&m.wit_version, &host_wit) {
            "supported"
        } else {
            "NOT supported"
        }
    );
    println!(
        "min_host_version: {} (this host is {host})",
        m.min_host_version
    );
    let actual = package.component_sha256();
    println!(
        "component: {} bytes, sha256 {actual} ({})",
        package.component().len(),
        if actual == m.component_sha256 {
            "the manifest's".to_string()
        } else {
            format!("NOT the manifest's {}", m.component_sha256)
        }
    );
    let imports = super::component::interfaces(package.component())
        .map(|i| i.capabilities().join(", "))
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    println!(
        "capabilities imported: {}",
        if imports.is_empty() { "none" } else { &imports }
    );
    match package.signature() {
        None => println!("signature: none"),
        Some(sig) => println!(
            "signature: {} ({})",
            sig.key,
            if matches!(integrity, Err(Refusal::BadSignature { .. })) {
                "does NOT verify"
            } else {
                "verifies"
            }
        ),
    }
    print_yaml("grants", &m.grants_yaml());
    print_yaml(
        "settings",
        &serde_norway::to_string(&m.settings).unwrap_or_default(),
    );
    if m.mounts.is_empty() {
        println!("mounts: []");
    } else {
        print_yaml(
            "mounts",
            &serde_norway::to_string(&m.mounts).unwrap_or_default(),
        );
    }
    match &m.limits {
        None => println!("limits: null"),
        Some(l) => print_yaml("limits", &serde_norway::to_string(l).unwrap_or_default()),
    }
    integrity.with_context(|| path.display().to_string())?;
    Ok(())
}

/// `key: {}` for an empty mapping (or `[]`), else `key:` and the YAML
/// indented under it.
fn print_yaml(key: &str, yaml: &str) {
    let yaml = yaml.trim_end();
    if yaml == "{}" || yaml == "[]" {
        println!("{key}: {yaml}");
        return;
    }
    println!("{key}:");
    for line in yaml.lines() {
        println!("  {line}");
    }
}

fn verify(path: &Path, keys: &[PublicKey], config: Option<&Path>) -> anyhow::Result<()> {
    let package = super::load(path)?;
    let (trust, against) = match config {
        Some(config) => {
            let c = crate::config::Config::load(config)?;
            (
                c.trust,
                format!("the trust section of {}", config.display()),
            )
        }
        None if !keys.is_empty() => (
            TrustConfig {
                require_signature: Some(true),
                keys: keys
                    .iter()
                    .map(|k| TrustedKey {
                        name: k.to_string(),
                        key: *k,
                        plugins: Vec::new(),
                    })
                    .collect(),
                ..TrustConfig::default()
            },
            "--trust".to_string(),
        ),
        None => (
            TrustConfig::default(),
            "no trusted key (any signer, or none, is taken: give --trust or --config)".to_string(),
        ),
    };
    let verified = package
        .verify(&trust, None, None, false)
        .with_context(|| format!("{}: refused", path.display()))?;
    let m = package.manifest();
    let by = match (&verified.signer, &verified.key) {
        (Some(name), Some(key)) if name == &key.to_string() => format!("signed by {key}"),
        (Some(name), Some(key)) => format!("signed by `{name}` ({key})"),
        (_, Some(key)) => format!("signed by {key}, which is not a trusted key"),
        (_, None) => "unsigned".to_string(),
    };
    println!(
        "{}: ok: {} {}, {by}; checked against {against}",
        path.display(),
        m.name,
        m.version
    );
    Ok(())
}

/// Whether `e` is input the host refuses (exit code 2 in `main`).
pub fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<PackageError>() || c.is::<Refusal>() || c.is::<KeyError>())
}
