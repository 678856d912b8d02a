//! Records and their kv keys. Everything lives in the plugin's own kv
//! namespace:
//!
//! | key | value |
//! |---|---|
//! | `signing/active` | the key id that signs |
//! | `signing/key/<key_id>` | [`SigningRecord`] (with the private seed) |
//! | `lk/<LICENSE-KEY>` | [`LicenseKey`] |
//! | `rel/<channel>/<version>` | [`Release`] |
//! | `art/<channel>/<version>/<n>` | the n-th [`CHUNK`]-sized piece of the artefact |

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{Error, config};

pub const ACTIVE_KEY: &str = "signing/active";
pub const SIGNING_PREFIX: &str = "signing/key/";
pub const LICENSE_PREFIX: &str = "lk/";
pub const RELEASE_PREFIX: &str = "rel/";
/// kv values are capped at 1 MiB by the host.
pub const CHUNK: usize = 512 * 1024;
/// Releases are listed this many kv entries at a time: each value holds a
/// changelog of up to [`MAX_CHANGELOG`] bytes.
pub const RELEASE_PAGE: u32 = 64;
/// The longest changelog accepted, in bytes.
pub const MAX_CHANGELOG: usize = 64 * 1024;

/// A signing key. `seed` is the Ed25519 private key; it is never returned.
#[derive(Serialize, Deserialize, Clone)]
pub struct SigningRecord {
    pub key_id: String,
    /// Standard base64 of the 32-byte public key.
    pub public_key: String,
    /// Standard base64 of the 32-byte seed.
    pub seed: String,
    pub created_at: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    pub max_users: i64,
    pub max_domains: i64,
    pub max_databases: i64,
}

/// A license key the portal knows.
#[derive(Serialize, Deserialize, Clone)]
pub struct LicenseKey {
    pub key: String,
    pub tier: String,
    pub limits: Limits,
    /// `None`: never expires.
    pub expires_at: Option<u64>,
    pub created_at: u64,
    pub revoked: bool,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// The instance it is activated on.
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub activated_at: Option<u64>,
    #[serde(default)]
    pub last_issued_at: Option<u64>,
    #[serde(default)]
    pub issued_count: u64,
    #[serde(default)]
    pub note: String,
}

impl LicenseKey {
    /// What the admin surface shows.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "key": self.key,
            "key_masked": mask(&self.key),
            "tier": self.tier,
            "limits": self.limits,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "instance_id": self.instance_id,
            "activated_at": self.activated_at,
            "last_issued_at": self.last_issued_at,
            "issued_count": self.issued_count,
            "note": self.note,
        })
    }
}

/// A published release; the artefact is in `art/...` chunks.
#[derive(Serialize, Deserialize, Clone)]
pub struct Release {
    pub version: String,
    pub channel: String,
    pub changelog: String,
    pub published_at: u64,
    pub size: u64,
    pub sha256: String,
    pub chunks: u32,
    /// The signed manifest envelope.
    pub manifest: serde_json::Value,
}

impl Release {
    pub fn view(&self, with_manifest: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "version": self.version,
            "channel": self.channel,
            "changelog": self.changelog,
            "published_at": self.published_at,
            "size": self.size,
            "sha256": self.sha256,
            "download_url": format!("{}download/{}/{}", public_prefix(), self.channel, self.version),
        });
        if with_manifest {
            v["manifest"] = self.manifest.clone();
        }
        v
    }
}

/// The public mount's prefix, for download URLs.
pub fn public_prefix() -> String {
    config::get_or("public_prefix", "/portal/")
}

pub fn license_kv(key: &str) -> String {
    format!("{LICENSE_PREFIX}{key}")
}

pub fn release_kv(channel: &str, version: &str) -> String {
    format!("{RELEASE_PREFIX}{channel}/{version}")
}

pub fn chunk_kv(channel: &str, version: &str, n: u32) -> String {
    format!("art/{channel}/{version}/{n:06}")
}

/// Unix seconds.
pub use wasmgate_sdk::time::now_secs as now;

/// `WISP-****SA6T`: the part before the first `-`, then `-****`, then the last 4 characters.
pub fn mask(key: &str) -> String {
    let head = key.split('-').next().unwrap_or("");
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}-****{tail}")
}

/// A key as the client typed it, normalised; `None` if it cannot be one.
pub fn normalise_key(key: &str) -> Option<String> {
    let k = key.trim().to_ascii_uppercase();
    let ok =
        (8..=64).contains(&k.len()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then_some(k)
}

pub fn valid_instance_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

pub fn valid_channel(c: &str) -> bool {
    (1..=32).contains(&c.len())
        && c.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn valid_tier(t: &str) -> bool {
    (1..=32).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `MAJOR.MINOR.PATCH`, digits only.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.');
    let mut next = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 9 || !p.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let out = (next()?, next()?, next()?);
    parts.next().is_none().then_some(out)
}

/// A setting as a number, or its default.
pub fn setting_u64(name: &str, default: u64) -> Result<u64, Error> {
    config::parse_or(name, default)
}

/// A fresh key like `WISP-7KQ2-M9XD-SA6T` (no 0, O, 1, I).
pub fn new_key(random: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let prefix = config::get_or("key_prefix", "WISP");
    let chars: Vec<char> = random
        .iter()
        .take(12)
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect();
    let groups: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    format!("{prefix}-{}", groups.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_mask_like_the_seed() {
        assert_eq!(mask("WISP-AB2C-DE3F-SA6T"), "WISP-****SA6T");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.10.0") > parse_version("1.9.9"));
        assert_eq!(parse_version("1.4"), None);
        assert_eq!(parse_version("1.4.2-rc1"), None);
        assert_eq!(parse_version("1.4.2.1"), None);
    }
}
