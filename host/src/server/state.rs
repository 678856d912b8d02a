//! What the admin API changed about the configured plugins, kept across
//! restarts in `<data_dir>/plugin-state.json` (mode 0600): which plugins
//! are disabled. The config file says which plugins exist; this file only
//! says which of them are switched off, so editing the config never fights
//! it (a disabled plugin removed from the config is simply gone, and comes
//! back disabled if it is added again).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "plugin-state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginState {
    /// Plugins that answer 503 until enabled again.
    #[serde(default)]
    pub disabled: BTreeSet<String>,
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
