//! What a package says of itself: the manifest, checked with the config's
//! own rules for the parts a config also has (the name, grants, mounts and
//! limits), so that the host refuses in a manifest exactly what it refuses
//! in config.yaml.

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::config::{Grants, Limits, Mount};

/// The package format this host reads and writes.
pub const FORMAT: u32 = 1;
/// The longest `vendor`, in characters.
const MAX_VENDOR: usize = 128;

/// A package's manifest: `manifest.json` in the package, and the YAML file
/// `wasmgate package build --manifest` reads (without `format` and
/// `component_sha256`, which build writes).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Manifest {
    /// The package format, [`FORMAT`].
    #[serde(default = "format")]
    pub format: u32,
    /// The plugin's name, with the rules of a plugin name in config.yaml.
    pub name: String,
    /// The plugin's version (semver); an older one than installed is a
    /// downgrade.
    pub version: Version,
    /// Who makes it, as shown to the operator.
    pub vendor: String,
    /// The version of the WIT package `wasmgate:plugin` the component was
    /// built against.
    pub wit_version: Version,
    /// The oldest wasmgate that can run it.
    pub min_host_version: Version,
    /// The capabilities it asks for, in the shape of a plugin's `grants:`.
    #[serde(default)]
    pub grants: Grants,
    /// Default `settings:`.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Default `mounts:`; none is allowed.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Default `limits:`; absent: the host's defaults.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// The component's SHA-256, 64 lower-case hex digits.
    #[serde(default)]
    pub component_sha256: String,
}

fn format() -> u32 {
    FORMAT
}

/// Why a manifest was refused: the key (`grants.net.links[0]`) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Manifest {
    /// What serde cannot check. `component_sha256` is checked only for
    /// its form; whether it is the component's is [`super::Package::verify`]'s.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                format!(
                    "{} is not a package format this host reads (it reads {FORMAT})",
                    self.format
                ),
            ));
        }
        if !crate::config::valid_plugin_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "`{}` is not a valid name: use 1 to 32 of a-z, 0-9, _ and -",
                    crate::util::text::shown(&self.name, 64)
                ),
            ));
        }
        if self.vendor.trim().is_empty()
            || self.vendor.chars().count() > MAX_VENDOR
            || self.vendor.chars().any(char::is_control)
        {
            return Err(invalid(
                "vendor",
                format!("must be 1 to {MAX_VENDOR} characters, none of them control characters"),
            ));
        }
        self.grants
            .validate()
            .map_err(|(key, message)| invalid(format!("grants.{key}"), message))?;
        let mut routes = Vec::new();
        for (j, m) in self.mounts.iter().enumerate() {
            m.validate()
                .map_err(|(field, message)| invalid(format!("mounts[{j}].{field}"), message))?;
            let route = (
                m.listen.as_str(),
                crate::config::normalize_prefix(&m.prefix),
            );
            if routes.contains(&route) {
                return Err(invalid(
                    format!("mounts[{j}]"),
                    format!("duplicate route: {} {}", m.listen, m.prefix),
                ));
            }
            routes.push(route);
        }
        if let Some(limits) = &self.limits {
            limits
                .validate()
                .map_err(|(field, message)| invalid(format!("limits.{field}"), message))?;
        }
        if self.component_sha256.len() != 64
            || !self
                .component_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "component_sha256",
                "must be 64 lower-case hex digits (wasmgate package build writes it)",
            ));
        }
        Ok(())
    }

    /// The manifest's bytes in a package: pretty JSON and a newline. The
    /// one form a package holds, so that a manifest has exactly one byte
    /// sequence to sign.
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// `grants:` as a config would say it, only the capabilities given,
    /// in WIT order: `{}` when none is.
    pub fn grants_yaml(&self) -> String {
        granted_yaml(&self.grants)
    }
}

/// The capabilities `grants` gives, as the YAML mapping a config's
/// `grants:` holds, each section's keys in the config's order.
pub fn granted_yaml(grants: &Grants) -> String {
    let all = serde_norway::to_value(grants).unwrap_or_default();
    let mut given = serde_norway::Mapping::new();
    for cap in crate::caps::all().iter().filter(|c| (c.granted)(grants)) {
        if let Some(value) = all.get(cap.name) {
            given.insert(cap.name.into(), value.clone());
        }
    }
    if given.is_empty() {
        return "{}".to_string();
    }
    serde_norway::to_string(&given).unwrap_or_default()
}

/// This binary's version: what a manifest's `min_host_version` is
/// compared with.
pub fn host_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or_else(|_| Version::new(0, 0, 0))
}

/// The `wasmgate:plugin` version this host implements.
pub fn host_wit_version() -> Version {
    Version::parse(crate::caps::wit::version()).unwrap_or_else(|_| Version::new(0, 0, 0))
}

/// Whether a component built against `wit` links with a host implementing
/// `host`: the same release line (the same major version, and for 0.x the
/// same minor), and not newer than the host's.
pub fn wit_supported(wit: &Version, host: &Version) -> bool {
    wit.major == host.major && (wit.major > 0 || wit.minor == host.minor) && wit <= host
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest(yaml: &str) -> Manifest {
        serde_norway::from_str(yaml).unwrap()
    }

    const BASE: &str = "
name: hello
version: 1.2.3
vendor: Acme
wit_version: 0.2.0
min_host_version: 0.1.0
component_sha256: 0000000000000000000000000000000000000000000000000000000000000000
";

    #[test]
    fn a_manifest_parses_with_its_defaults_and_round_trips_in_its_canonical_form() {
        let m = manifest(BASE);
        m.validate().unwrap();
        assert_eq!(m.format, FORMAT);
        assert_eq!(m.grants, Grants::default());
        assert!(m.settings.is_empty() && m.mounts.is_empty() && m.limits.is_none());
        let bytes = m.to_canonical();
        let back: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_canonical(), bytes);
        assert_eq!(m.grants_yaml(), "{}");
    }

    #[test]
    fn the_config_rules_apply_to_name_grants_mounts_and_limits() {
        for (extra, key, needle) in [
            ("format: 2", "format", "not a package format"),
            (
                "grants: { net: { links: [] } }",
                "grants.net.links",
                "at least one pattern",
            ),
            (
                "grants: { outbound: { hosts: [\"*.example.com\"] } }",
                "grants.outbound.hosts[0]",
                "wildcards",
            ),
            (
                "mounts: [{ listen: localhost, prefix: / }]",
                "mounts[0].listen",
                "not a socket address",
            ),
            (
                "mounts: [{ listen: \"127.0.0.1:1\", prefix: api }]",
                "mounts[0].prefix",
                "must start with `/`",
            ),
            (
                "mounts: [{ listen: \"127.0.0.1:1\", prefix: /a }, { listen: \"127.0.0.1:1\", prefix: /a/ }]",
                "mounts[1]",
                "duplicate route",
            ),
            (
                "limits: { memory_mb: 0 }",
                "limits.memory_mb",
                "out of range",
            ),
            (
                "limits: { queue_timeout_ms: 0 }",
                "limits.queue_timeout_ms",
                "out of range",
            ),
            (
                "limits: { max_concurrency: 0 }",
                "limits.max_concurrency",
                "at least 1",
            ),
        ] {
            let e = manifest(&format!("{BASE}{extra}\n"))
                .validate()
                .unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e:?}");
            assert!(e.message.contains(needle), "{extra}: {e:?}");
        }
        for (from, to, key) in [
            ("name: hello", "name: Hello", "name"),
            ("vendor: Acme", "vendor: \"\"", "vendor"),
            ("vendor: Acme", "vendor: \"a\\u0007\"", "vendor"),
            (
                "vendor: Acme",
                &format!("vendor: {}", "a".repeat(129)),
                "vendor",
            ),
        ] {
            let e = manifest(&BASE.replace(from, to)).validate().unwrap_err();
            assert_eq!(e.key, key, "{to}: {e:?}");
        }
        for bad in ["\"\"", "00AB", &"A".repeat(64)] {
            let e = manifest(&BASE.replace(
                "0000000000000000000000000000000000000000000000000000000000000000",
                bad,
            ))
            .validate()
            .unwrap_err();
            assert_eq!(e.key, "component_sha256", "{bad}");
        }
    }

    #[test]
    fn serde_refuses_unknown_keys_and_bad_versions() {
        for (extra, needle) in [
            ("colour: blue", "unknown field `colour`"),
            ("grants: { teleport: true }", "unknown field `teleport`"),
            ("limits: { memory: 1 }", "unknown field `memory`"),
        ] {
            let e = serde_norway::from_str::<Manifest>(&format!("{BASE}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = serde_norway::from_str::<Manifest>(&BASE.replace("1.2.3", "1.2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("version"), "{e}");
    }

    #[test]
    fn grants_read_as_a_config_says_them() {
        let m = manifest(&format!(
            "{BASE}grants: {{ log: true, kv: true, net: {{ links: [\"wg*\"] }} }}\n"
        ));
        let yaml = m.grants_yaml();
        assert_eq!(
            yaml,
            "kv: true\nlog: true\nnet:\n  links:\n  - wg*\n  write: false\n  netns: null\n"
        );
        let back: Grants = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, m.grants);
    }

    #[test]
    fn a_wit_version_is_supported_on_its_release_line_up_to_the_hosts() {
        let v = |s: &str| Version::parse(s).unwrap();
        let host = v("0.2.3");
        for (wit, ok) in [
            ("0.2.0", true),
            ("0.2.3", true),
            ("0.2.4", false),
            ("0.1.9", false),
            ("0.3.0", false),
            ("1.0.0", false),
        ] {
            assert_eq!(wit_supported(&v(wit), &host), ok, "{wit}");
        }
        assert!(wit_supported(&v("1.0.0"), &v("1.4.0")));
        assert!(!wit_supported(&v("2.0.0"), &v("1.4.0")));
        assert!(wit_supported(&host_wit_version(), &host_wit_version()));
        assert_eq!(
            host_wit_version().to_string(),
            crate::authoring::new::wit_version()
        );
    }
}
