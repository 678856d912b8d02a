//! Whether this host takes a package. In order, the first failing check
//! refuses it:
//! 1. integrity: a signature present verifies under the key it names (else
//!    [`Refusal::BadSignature`]), and the component is the one the manifest
//!    pins by SHA-256 (else [`Refusal::TamperedComponent`]);
//! 2. trust (`trust:` in config.yaml): a name pinned to a key needs that
//!    key's signature ([`Refusal::MissingSignature`],
//!    [`Refusal::PinnedToAnotherKey`]); a key listed for some names signs
//!    only those ([`Refusal::KeyNotForPlugin`]); when signatures are
//!    required, an unsigned package or one signed by an unlisted key is
//!    refused ([`Refusal::MissingSignature`], [`Refusal::UntrustedKey`]);
//! 3. compatibility: the WIT version is one this host implements
//!    ([`Refusal::WitUnsupported`]), and the host is at least
//!    `min_host_version` ([`Refusal::HostTooOld`]);
//! 4. the operator's say: no grant beyond those approved
//!    ([`Refusal::GrantsBeyondApproved`]), no older version than the one
//!    installed unless forced ([`Refusal::Downgrade`]).

use semver::Version;

use super::manifest::{host_version, host_wit_version, wit_supported};
use super::{Package, PublicKey};
use crate::config::{Grants, TrustConfig};

/// Why the host does not take a package. Each variant is one rule; its
/// message names the plugin and what would change the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Unsigned, and `trust.require_signature` holds (`pinned_to: None`)
    /// or the name is pinned to a key (`Some(key name)`).
    #[error("plugin `{plugin}`: the package is not signed, and {}", match pinned_to {
        Some(key) => format!("its name is pinned to key `{key}` in trust.keys"),
        None => "trust.require_signature is on".to_string(),
    })]
    MissingSignature {
        plugin: String,
        pinned_to: Option<String>,
    },
    /// The signature does not verify under the key it names: the manifest
    /// (or the signature) changed after signing.
    #[error(
        "plugin `{plugin}`: the signature by {key} does not verify: the manifest or the signature was changed after signing"
    )]
    BadSignature { plugin: String, key: PublicKey },
    /// The component is not the one the manifest names.
    #[error(
        "plugin `{plugin}`: the component is not the one the manifest names (sha256 {actual}, the manifest says {expected}): it was changed after packaging"
    )]
    TamperedComponent {
        plugin: String,
        expected: String,
        actual: String,
    },
    /// Signed by a key not in `trust.keys`, and signatures are required.
    #[error("plugin `{plugin}`: signed by {key}, which is not a trusted key (trust.keys)")]
    UntrustedKey { plugin: String, key: PublicKey },
    /// The name is pinned to another key than the one that signed it.
    #[error(
        "plugin `{plugin}`: the name is pinned to key `{pinned_to}`, but the package is signed by {signed_by}"
    )]
    PinnedToAnotherKey {
        plugin: String,
        pinned_to: String,
        /// The signing key's name in `trust.keys`, or the key itself when
        /// it is not listed.
        signed_by: String,
    },
    /// Signed by a listed key whose `plugins` do not include the name.
    #[error("plugin `{plugin}`: key `{key}` may sign only {}", plugins.join(", "))]
    KeyNotForPlugin {
        plugin: String,
        key: String,
        plugins: Vec<String>,
    },
    /// Built against a WIT version this host does not implement.
    #[error(
        "plugin `{plugin}`: built against wasmgate:plugin@{wit}, which this host (wasmgate:plugin@{host}) does not implement: rebuild it against {host}"
    )]
    WitUnsupported {
        plugin: String,
        wit: Version,
        host: Version,
    },
    /// Needs a newer host.
    #[error("plugin `{plugin}`: needs wasmgate {needs} or later, this is {host}")]
    HostTooOld {
        plugin: String,
        needs: Version,
        host: Version,
    },
    /// Asks for capabilities beyond those the operator approved.
    #[error("plugin `{plugin}`: the package asks for more than the approved grants in {}: approve its grants first", capabilities.join(", "))]
    GrantsBeyondApproved {
        plugin: String,
        capabilities: Vec<&'static str>,
    },
    /// Older than the version installed, and not forced.
    #[error(
        "plugin `{plugin}`: {package} is older than the installed {installed}: force it to downgrade"
    )]
    Downgrade {
        plugin: String,
        installed: Version,
        package: Version,
    },
}

/// A package the host takes, and on whose word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The name in `trust.keys` of the key that signed it; `None` when it
    /// is unsigned or signed by an unlisted key, which the trust section
    /// allowed.
    pub signer: Option<String>,
    /// The key that signed it, listed or not.
    pub key: Option<PublicKey>,
    /// Whether it is older than the version installed, let through by
    /// `force`.
    pub downgrade: bool,
}

impl Package {
    /// Integrity alone: a signature present verifies under the key it
    /// names, and the component is the one the manifest pins. What
    /// `inspect` reports; the first step of [`Package::verify`].
    pub fn check_integrity(&self) -> Result<(), Refusal> {
        let plugin = &self.manifest.name;
        if let Some(sig) = &self.signature
            && !sig.key.verifies(
                &super::keys::signed_message(&self.manifest_bytes),
                &sig.signature,
            )
        {
            return Err(Refusal::BadSignature {
                plugin: plugin.clone(),
                key: sig.key,
            });
        }
        let actual = self.component_sha256();
        if actual != self.manifest.component_sha256 {
            return Err(Refusal::TamperedComponent {
                plugin: plugin.clone(),
                expected: self.manifest.component_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Whether this host takes the package, under `trust`, with
    /// `approved_grants` (the grants the operator approved for this plugin;
    /// `None`: not checked, e.g. a first install whose grants the operator
    /// approves from the manifest) and `installed_version` (`None`: not
    /// installed). `force` lets an older version through. See the module
    /// documentation for the order of the checks.
    pub fn verify(
        &self,
        trust: &TrustConfig,
        approved_grants: Option<&Grants>,
        installed_version: Option<&Version>,
        force: bool,
    ) -> Result<Verified, Refusal> {
        self.check_integrity()?;
        let m = &self.manifest;
        let plugin = || m.name.clone();
        let key = self.signature.as_ref().map(|s| s.key);
        let listed = key.and_then(|k| trust.key(&k));
        let pinned = trust.pinned(&m.name);
        match (key, listed, pinned) {
            (None, _, Some(pin)) => {
                return Err(Refusal::MissingSignature {
                    plugin: plugin(),
                    pinned_to: Some(pin.name.clone()),
                });
            }
            (Some(k), _, Some(pin)) if pin.key != k => {
                return Err(Refusal::PinnedToAnotherKey {
                    plugin: plugin(),
                    pinned_to: pin.name.clone(),
                    signed_by: listed.map_or_else(|| k.to_string(), |l| format!("`{}`", l.name)),
                });
            }
            (_, Some(l), _) if !l.plugins.is_empty() && !l.plugins.contains(&m.name) => {
                return Err(Refusal::KeyNotForPlugin {
                    plugin: plugin(),
                    key: l.name.clone(),
                    plugins: l.plugins.clone(),
                });
            }
            (None, _, None) if trust.signature_required() => {
                return Err(Refusal::MissingSignature {
                    plugin: plugin(),
                    pinned_to: None,
                });
            }
            (Some(k), None, _) if trust.signature_required() => {
                return Err(Refusal::UntrustedKey {
                    plugin: plugin(),
                    key: k,
                });
            }
            _ => {}
        }
        let host_wit = host_wit_version();
        if !wit_supported(&m.wit_version, &host_wit) {
            return Err(Refusal::WitUnsupported {
                plugin: plugin(),
                wit: m.wit_version.clone(),
                host: host_wit,
            });
        }
        let host = host_version();
        if m.min_host_version > host {
            return Err(Refusal::HostTooOld {
                plugin: plugin(),
                needs: m.min_host_version.clone(),
                host,
            });
        }
        if let Some(approved) = approved_grants {
            let beyond = m.grants.beyond(approved);
            if !beyond.is_empty() {
                return Err(Refusal::GrantsBeyondApproved {
                    plugin: plugin(),
                    capabilities: beyond,
                });
            }
        }
        let older = installed_version.is_some_and(|v| m.version < *v);
        if let Some(installed) = installed_version
            && older
            && !force
        {
            return Err(Refusal::Downgrade {
                plugin: plugin(),
                installed: installed.clone(),
                package: m.version.clone(),
            });
        }
        Ok(Verified {
            signer: listed.map(|l| l.name.clone()),
            key,
            downgrade: older,
        })
    }
}
