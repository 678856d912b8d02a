//! The plugin's settings (`settings:` in config.yaml), each with its default.
//! A setting with a value that does not parse is a 500 naming it, so a
//! mistake in the config is seen rather than silently replaced.

use serde_json::Value;
use wasmgate_sdk::{config, crypto};

use crate::api::ApiError;
use crate::license::Limits;
use crate::signed::{self, TrustedKey};

pub const DEFAULT_VERSION: &str = "1.4.2";

fn bad(key: &str) -> ApiError {
    ApiError::internal(format!("setting {key:?} has an invalid value"))
}

pub fn string(key: &str, default: &str) -> String {
    config::get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn number<T: std::str::FromStr>(key: &str, default: T) -> Result<T, ApiError> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| bad(key)),
    }
}

/// The panel's own version, as `version/info` reports it.
pub fn version() -> String {
    string("version", DEFAULT_VERSION)
}

pub fn channel() -> String {
    string("channel", "stable")
}

/// The portal's base URL, e.g. `http://127.0.0.1:2084/portal`, without a
/// trailing '/'.
pub fn portal_url() -> Result<String, ApiError> {
    let url = string("portal_url", "");
    if url.is_empty() {
        return Err(ApiError::new(
            503,
            "PORTAL_NOT_CONFIGURED",
            "No license portal is configured (setting portal_url)",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Seconds east of UTC for the timestamps the API shows (`utc_offset`,
/// e.g. "+07:00"; default "+00:00").
pub fn utc_offset() -> Result<i64, ApiError> {
    match config::get("utc_offset") {
        None => Ok(0),
        Some(v) => crate::time::parse_offset(v.trim()).ok_or_else(|| bad("utc_offset")),
    }
}

/// How far the clock may step back (NTP corrections) before it counts as
/// set back: `clock_tolerance_seconds`, default 300.
pub fn clock_tolerance() -> Result<i64, ApiError> {
    number("clock_tolerance_seconds", 300)
}

/// Requests per window per API token: `rate_limit_per_minute`, default 60.
pub fn rate_limit() -> Result<u32, ApiError> {
    number("rate_limit_per_minute", 60)
}

/// The window's length: `rate_limit_window_seconds`, default 60. Only
/// tests and unusual deployments change it.
pub fn rate_window_seconds() -> Result<u64, ApiError> {
    let s: u64 = number("rate_limit_window_seconds", 60)?;
    if s == 0 {
        return Err(bad("rate_limit_window_seconds"));
    }
    Ok(s)
}

/// Limits that apply without a valid license (`unlicensed_limits`, a map
/// like the license's `limits`; default 5 of each).
pub fn unlicensed_limits() -> Result<Limits, ApiError> {
    match config::get("unlicensed_limits") {
        None => Ok(Limits {
            max_users: 5,
            max_domains: 5,
            max_databases: 5,
        }),
        Some(v) => serde_json::from_str(&v).map_err(|_| bad("unlicensed_limits")),
    }
}

/// The keys whose signatures the panel accepts on licenses and release
/// manifests: `license_public_key` (base64 of 32 bytes) with
/// `license_key_id` (default: derived from the key as the portal does), and
/// any number more in `license_public_keys: { <key_id>: <base64> }`.
pub fn trusted_keys() -> Result<Vec<TrustedKey>, ApiError> {
    let mut keys = Vec::new();
    if let Some(b64) = config::get("license_public_key").filter(|v| !v.trim().is_empty()) {
        let public_key = signed::decode_b64(&b64)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| bad("license_public_key"))?;
        let key_id = match config::get("license_key_id").filter(|v| !v.trim().is_empty()) {
            Some(id) => id.trim().to_string(),
            None => signed::key_id(&crypto::sha256(&public_key)),
        };
        keys.push(TrustedKey { key_id, public_key });
    }
    if let Some(map) = config::get("license_public_keys") {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&map) else {
            return Err(bad("license_public_keys"));
        };
        for (key_id, b64) in map {
            let public_key = b64
                .as_str()
                .and_then(signed::decode_b64)
                .filter(|k| k.len() == 32)
                .ok_or_else(|| bad("license_public_keys"))?;
            keys.push(TrustedKey { key_id, public_key });
        }
    }
    Ok(keys)
}
