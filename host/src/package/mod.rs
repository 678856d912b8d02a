//! Plugin packages: one file holding a plugin's manifest, its component and
//! at most one vendor signature, and `wasmgate package`, the command line
//! that makes, signs and checks them. docs/package.md is the format's
//! specification.
//!
//! Reading order:
//! 1. [`manifest`]: what a package says of itself, checked with the
//!    config's own rules (name, grants, mounts, limits);
//! 2. [`Package`] (here): the container, a ustar archive of exactly
//!    `manifest.json`, `component.wasm` and an optional `signature.json`,
//!    read with every size bounded and accepted only in its one canonical
//!    byte form;
//! 3. [`keys`]: vendor keys, and what a signature signs (the manifest's
//!    bytes, which pin the component's SHA-256);
//! 4. [`verify`]: whether this host takes a package, given its `trust:`
//!    section, the grants the operator approved and the version installed:
//!    [`Package::verify`] gives [`Verified`] or one [`Refusal`];
//! 5. [`component`]: what `build` reads of the component (imports, exports);
//! 6. [`cli`]: `wasmgate package keygen | build | sign | inspect | verify`.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

pub mod cli;
pub mod component;
pub mod keys;
pub mod manifest;
pub mod verify;

pub use self::keys::SigningKey;
pub use self::manifest::Manifest;
pub use self::verify::{Refusal, Verified};
pub use crate::config::TrustConfig as Trust;
pub use crate::util::ed25519::PublicKey;
use crate::util::ids::sha256_hex;
pub use semver::Version;

/// The manifest's entry, first in the archive.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// The component's entry, second.
pub const COMPONENT_ENTRY: &str = "component.wasm";
/// The signature's entry, third when present.
pub const SIGNATURE_ENTRY: &str = "signature.json";

/// The largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// The largest component read.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;
/// The largest signature entry read.
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 10;
/// The largest package read: the three entries, their headers and the
/// archive's end.
pub const MAX_PACKAGE_BYTES: u64 =
    MAX_MANIFEST_BYTES + MAX_COMPONENT_BYTES + MAX_SIGNATURE_BYTES + 8 * 512;

/// Why bytes are not a package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The file is larger than any package may be.
    #[error("{size} bytes is more than a package may hold ({MAX_PACKAGE_BYTES})")]
    TooLarge { size: u64 },
    /// Not a ustar archive, or a damaged one.
    #[error("not a wasmgate package (a tar archive): {0}")]
    Container(String),
    /// An entry no package has (a path trick included: names are compared
    /// byte for byte).
    #[error(
        "unknown entry {name:?} (a package holds {MANIFEST_ENTRY}, {COMPONENT_ENTRY} and optionally {SIGNATURE_ENTRY})"
    )]
    UnknownEntry { name: String },
    /// An entry present twice.
    #[error("entry {name} is there twice")]
    DuplicateEntry { name: &'static str },
    /// Entries out of their order.
    #[error(
        "entry {name} comes before {expected}: a package holds {MANIFEST_ENTRY}, {COMPONENT_ENTRY}, then optionally {SIGNATURE_ENTRY}, in that order"
    )]
    OutOfOrder {
        name: &'static str,
        expected: &'static str,
    },
    /// A required entry is missing.
    #[error("no {name} in the package")]
    MissingEntry { name: &'static str },
    /// An entry that is not a regular file (a link, a directory, an
    /// extended header).
    #[error("entry {name} is not a regular file")]
    NotAFile { name: String },
    /// An entry larger than its bound.
    #[error("entry {name} is {size} bytes, more than the {max} it may have")]
    EntryTooLarge {
        name: &'static str,
        size: u64,
        max: u64,
    },
    /// The manifest does not parse or does not match the schema.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The manifest parses but a value is not acceptable.
    #[error("manifest: {key}: {message}")]
    InvalidManifest { key: String, message: String },
    /// The signature entry is malformed (not whether it verifies: that is
    /// [`Refusal::BadSignature`]).
    #[error("{SIGNATURE_ENTRY}: {0}")]
    Signature(String),
    /// The component is not one the manifest describes (build only).
    #[error("component: {0}")]
    Component(String),
    /// Every part is readable but the bytes are not the package's one
    /// canonical form (extra fields in a header, trailing bytes, a manifest
    /// written differently): a package has exactly one byte sequence.
    #[error("not in canonical form: {0}")]
    NotCanonical(&'static str),
}

impl From<manifest::Invalid> for PackageError {
    fn from(e: manifest::Invalid) -> PackageError {
        PackageError::InvalidManifest {
            key: e.key,
            message: e.message,
        }
    }
}

/// A package's signature: who signed (the key the signature names; whether
/// it is trusted is [`Package::verify`]'s question) and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key: PublicKey,
    pub signature: [u8; 64],
}

/// `signature.json`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    key: PublicKey,
    /// Base64 (standard, padded) of the 64-byte Ed25519 signature.
    signature: String,
}

impl Signature {
    fn from_json(bytes: &[u8]) -> Result<Signature, PackageError> {
        let file: SignatureFile =
            serde_json::from_slice(bytes).map_err(|e| PackageError::Signature(e.to_string()))?;
        let signature = STANDARD
            .decode(&file.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| {
                PackageError::Signature(
                    "`signature` is not the base64 of a 64-byte Ed25519 signature".into(),
                )
            })?;
        Ok(Signature {
            key: file.key,
            signature,
        })
    }

    fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&SignatureFile {
            key: self.key,
            signature: STANDARD.encode(self.signature),
        })
        .unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A plugin package: the manifest (parsed, and its exact bytes), the
/// component and the signature if any. Reading one checks its form only;
/// whether the host takes it is [`Package::verify`].
#[derive(Debug, Clone)]
pub struct Package {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    component: Vec<u8>,
    signature: Option<Signature>,
}

impl Package {
    /// A new, unsigned package of `component` described by `manifest`
    /// (`wasmgate package build`): the component's SHA-256 goes into the
    /// manifest (which must not carry one), the manifest is checked, and
    /// the component must be one it describes ([`component`]).
    pub fn build(mut manifest: Manifest, component: Vec<u8>) -> Result<Package, PackageError> {
        if !manifest.component_sha256.is_empty() {
            return Err(PackageError::InvalidManifest {
                key: "component_sha256".into(),
                message: "is written by build: leave it out".into(),
            });
        }
        if component.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(PackageError::EntryTooLarge {
                name: COMPONENT_ENTRY,
                size: component.len() as u64,
                max: MAX_COMPONENT_BYTES,
            });
        }
        manifest.component_sha256 = sha256_hex(&component);
        manifest.validate()?;
        let ifaces = component::interfaces(&component).map_err(PackageError::Component)?;
        ifaces.check(&manifest).map_err(PackageError::Component)?;
        let manifest_bytes = manifest.to_canonical();
        if manifest_bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(PackageError::EntryTooLarge {
                name: MANIFEST_ENTRY,
                size: manifest_bytes.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        Ok(Package {
            manifest,
            manifest_bytes,
            component,
            signature: None,
        })
    }

    /// Reads a package from its bytes: a ustar archive of exactly
    /// `manifest.json`, `component.wasm` and optionally `signature.json`,
    /// in that order, regular files within their bounds, a valid manifest,
    /// all in the one canonical form [`Package::to_bytes`] writes. Nothing
    /// is verified yet: see [`Package::verify`].
    pub fn read(bytes: &[u8]) -> Result<Package, PackageError> {
        if bytes.len() as u64 > MAX_PACKAGE_BYTES {
            return Err(PackageError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        let container = |e: std::io::Error| PackageError::Container(e.to_string());
        let mut archive = tar::Archive::new(bytes);
        // Raw: every header is an entry of its own, so a long-name or
        // extended header is refused rather than interpreted.
        let entries = archive.entries().map_err(container)?.raw(true);
        let order = [
            (MANIFEST_ENTRY, MAX_MANIFEST_BYTES),
            (COMPONENT_ENTRY, MAX_COMPONENT_BYTES),
            (SIGNATURE_ENTRY, MAX_SIGNATURE_BYTES),
        ];
        let mut found: Vec<Vec<u8>> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(container)?;
            let raw_name = entry.path_bytes();
            let shown = crate::util::text::shown(&String::from_utf8_lossy(&raw_name), 120);
            let Some(index) = order.iter().position(|(n, _)| n.as_bytes() == &*raw_name) else {
                return Err(PackageError::UnknownEntry { name: shown });
            };
            let (name, max) = order[index];
            if index < found.len() {
                return Err(PackageError::DuplicateEntry { name });
            }
            if index > found.len() {
                return Err(PackageError::OutOfOrder {
                    name,
                    expected: order[found.len()].0,
                });
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(PackageError::NotAFile { name: shown });
            }
            let size = entry.header().size().map_err(container)?;
            if size > max {
                return Err(PackageError::EntryTooLarge { name, size, max });
            }
            // No more room than the input could hold: a header claiming the
            // largest entry in a small file reserves nothing much.
            let mut data = Vec::with_capacity(size.min(bytes.len() as u64) as usize);
            entry
                .take(max + 1)
                .read_to_end(&mut data)
                .map_err(container)?;
            if data.len() as u64 != size {
                return Err(PackageError::Container(format!(
                    "entry {name} is cut short ({} of its {size} bytes): the file is truncated",
                    data.len()
                )));
            }
            found.push(data);
        }
        let mut found = found.into_iter();
        let manifest_bytes = found.next().ok_or(PackageError::MissingEntry {
            name: MANIFEST_ENTRY,
        })?;
        let component = found.next().ok_or(PackageError::MissingEntry {
            name: COMPONENT_ENTRY,
        })?;
        let signature = found.next().map(|s| Signature::from_json(&s)).transpose()?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| PackageError::Manifest(e.to_string()))?;
        manifest.validate()?;
        if manifest.to_canonical() != manifest_bytes {
            return Err(PackageError::NotCanonical(
                "the manifest is not written the way wasmgate package build writes it",
            ));
        }
        let package = Package {
            manifest,
            manifest_bytes,
            component,
            signature,
        };
        let mut same = SameAs {
            rest: bytes,
            same: true,
        };
        package.write_to(&mut same).map_err(container)?;
        if !same.same || !same.rest.is_empty() {
            return Err(PackageError::NotCanonical(
                "the archive's headers, padding or end are not the ones wasmgate writes",
            ));
        }
        Ok(package)
    }

    /// The package's bytes: its one canonical form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.component.len() + self.manifest_bytes.len() + 4096);
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Writes the archive: each entry a ustar header (mode 0644, owner 0,
    /// time 0, no user or group name), its bytes, zeros to the next 512;
    /// then two zero blocks.
    fn write_to<W: std::io::Write>(&self, w: W) -> std::io::Result<()> {
        let mut builder = tar::Builder::new(w);
        let signature = self.signature.as_ref().map(Signature::to_json);
        let entries = [
            Some((MANIFEST_ENTRY, &self.manifest_bytes[..])),
            Some((COMPONENT_ENTRY, &self.component[..])),
            signature.as_deref().map(|s| (SIGNATURE_ENTRY, s)),
        ];
        for (name, data) in entries.into_iter().flatten() {
            let mut header = tar::Header::new_ustar();
            header.set_path(name)?;
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, data)?;
        }
        builder.into_inner()?.flush()
    }

    /// Writes the package to `path` through a temporary file in the same
    /// directory, renamed over it: a reader sees the old file or the new
    /// one, never a part. An existing file keeps its mode.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            if let Some(mode) = mode {
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            self.write_to(&mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's exact bytes, as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The component's bytes. Only [`Package::verify`] says they are the
    /// ones the manifest names.
    pub fn component(&self) -> &[u8] {
        &self.component
    }

    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// The SHA-256 of the component as it is, in lower-case hex.
    pub fn component_sha256(&self) -> String {
        sha256_hex(&self.component)
    }

    /// Signs the manifest with `key`, replacing any signature; returns the
    /// key of the signature replaced.
    pub fn sign(&mut self, key: &SigningKey) -> Option<PublicKey> {
        let old = self.signature.take().map(|s| s.key);
        self.signature = Some(Signature {
            key: key.public_key(),
            signature: key.sign_manifest(&self.manifest_bytes),
        });
        old
    }
}

/// Reads the package file `path`, refusing one larger than any package
/// before reading it whole.
pub fn load(path: &Path) -> anyhow::Result<Package> {
    let read = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    if size > MAX_PACKAGE_BYTES {
        return Err(
            anyhow::Error::new(PackageError::TooLarge { size }).context(path.display().to_string())
        );
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_PACKAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    Package::read(&bytes).map_err(|e| anyhow::Error::new(e).context(path.display().to_string()))
}

/// A writer that compares what it is given with `rest`, consuming it.
struct SameAs<'a> {
    rest: &'a [u8],
    same: bool,
}

impl std::io::Write for SameAs<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.same && self.rest.starts_with(buf) {
            self.rest = &self.rest[buf.len()..];
        } else {
            self.same = false;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
