//! The `wireguard` grant: which devices a plugin may see, create and change,
//! and how the host drives them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::caps;

/// The `wireguard` grant: which devices a plugin may see, create and change,
/// and how the host drives them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct WireguardGrant {
    /// Glob patterns over device names (`*` any run, `?` one character); at
    /// least one. A device matching none is invisible to the plugin.
    pub devices: Vec<String>,
    /// Which WireGuard drives the devices the plugin creates.
    #[serde(default)]
    pub backend: WireguardBackend,
    /// The userspace implementation the host starts per device, as
    /// `<binary> -f <name>`: an absolute path, or a name looked up in the
    /// host's `PATH`.
    #[serde(default = "default_userspace_binary")]
    pub userspace_binary: String,
    /// The network namespace of the devices, as for `net.netns`. Absent: the
    /// host's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
}

fn default_userspace_binary() -> String {
    "wireguard-go".to_string()
}

/// See [`WireguardGrant::backend`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireguardBackend {
    /// The kernel's where its generic netlink family `wireguard` resolves
    /// (probed once per namespace while the host runs), else userspace.
    #[default]
    Auto,
    /// The kernel's WireGuard over generic netlink; a clear error where the
    /// kernel has none.
    Kernel,
    /// A userspace implementation (`userspace_binary`) and its UAPI socket.
    Userspace,
}

impl caps::Within for WireguardGrant {
    /// Each device pattern is one the approval lists, word for word; the
    /// backend, the userspace binary and the namespace are the same.
    fn within(&self, approved: &WireguardGrant) -> bool {
        caps::net::grant::patterns_within(&self.devices, &approved.devices)
            && self.backend == approved.backend
            && self.userspace_binary == approved.userspace_binary
            && self.netns == approved.netns
    }
}

impl WireguardGrant {
    /// The namespace file to open, or `None` for the host's own namespace.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_deref().map(caps::net::grant::netns_file)
    }

    /// What serde cannot check: `(key under grants.wireguard, message)` on failure.
    pub fn validate(&self) -> Result<(), (String, String)> {
        caps::net::grant::validate_patterns("devices", &self.devices, "wg*")?;
        let b = &self.userspace_binary;
        if b.is_empty() || b.contains('\0') || (!b.starts_with('/') && b.contains('/')) {
            return Err((
                "userspace_binary".into(),
                format!("`{b}` is neither a program name (no `/`) nor an absolute path"),
            ));
        }
        caps::net::grant::validate_netns(self.netns.as_deref())
    }
}
