//! What the admin API changed, kept across restarts in
//! `<data_dir>/plugin-state.json` (mode 0600): which plugins are disabled,
//! and the plugins installed from packages, each with the versions kept on
//! disk under `<data_dir>/packages/<name>/` (`<version>.wgpkg`, the package
//! as uploaded, and `<version>.wasm`, its component). The config file takes
//! precedence: a plugin it defines cannot be installed, and a disabled
//! plugin removed from the config is simply gone (it comes back disabled if
//! added again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "plugin-state.json";

/// How many versions of an installed plugin stay on disk for rollback.
pub const KEEP_VERSIONS: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginState {
    /// Plugins that answer 503 until enabled again.
    #[serde(default)]
    pub disabled: BTreeSet<String>,
    /// Plugins installed from packages, by name.
    #[serde(default)]
    pub installed: BTreeMap<String, Installed>,
}

/// A plugin installed from packages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    /// Oldest first; the last one serves. At most [`KEEP_VERSIONS`].
    pub versions: Vec<InstalledVersion>,
}

/// One installed version, as its package's manifest gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledVersion {
    pub version: String,
    pub vendor: String,
    /// The component's SHA-256, hex.
    pub sha256: String,
    /// The trusted key's name that signed it, if any.
    pub signer: Option<String>,
    pub installed_at_ms: u64,
    pub grants: crate::caps::Grants,
    pub mounts: Vec<crate::config::Mount>,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub limits: Option<crate::config::Limits>,
}

impl Installed {
    /// The version that serves.
    pub fn current(&self) -> Option<&InstalledVersion> {
        self.versions.last()
    }

    /// Makes `v` the current version (replacing one of the same version);
    /// returns the versions dropped to keep [`KEEP_VERSIONS`].
    pub fn push(&mut self, v: InstalledVersion) -> Vec<InstalledVersion> {
        self.versions.retain(|old| old.version != v.version);
        self.versions.push(v);
        let extra = self.versions.len().saturating_sub(KEEP_VERSIONS);
        self.versions.drain(..extra).collect()
    }
}

/// Where plugin `name`'s packages are kept.
pub fn packages_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("packages").join(name)
}

/// The package and the component file of version `version` of installed
/// plugin `name`.
pub fn version_files(data_dir: &Path, name: &str, version: &str) -> [PathBuf; 2] {
    let dir = packages_dir(data_dir, name);
    [
        dir.join(format!("{version}.wgpkg")),
        dir.join(format!("{version}.wasm")),
    ]
}

impl PluginState {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// The state in `data_dir`; none yet is the default (nothing disabled).
    /// A file that cannot be read or parsed is an error: starting as if
    /// nothing were disabled would switch on what the operator switched off.
    pub fn load(data_dir: &Path) -> anyhow::Result<PluginState> {
        let path = PluginState::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged (fix or remove it: it lists the disabled plugins)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PluginState::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state to `data_dir`, replacing the file as one step.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = PluginState::path(data_dir);
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::util::fs::write_private(&tmp, &bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_privately() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            PluginState::load(dir.path()).unwrap(),
            PluginState::default()
        );
        let mut s = PluginState::default();
        s.disabled.insert("hello".into());
        s.save(dir.path()).unwrap();
        assert_eq!(PluginState::load(dir.path()).unwrap(), s);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = PluginState::load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("is damaged"), "{e:#}");
    }
}
