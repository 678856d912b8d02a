//! The plugin's `settings:` from config.yaml (grant `config`).

use std::str::FromStr;

use crate::Error;
use crate::bindings::wasmgate::plugin::config as raw;

/// A top-level setting: scalars as their text, lists and maps as JSON.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// [`get`], or `default` when the setting is absent.
pub fn get_or(key: &str, default: &str) -> String {
    raw::get(key).unwrap_or_else(|| default.to_string())
}

/// A setting parsed as `T`, or `default` when absent. A value that does not
/// parse is a 500 naming the setting: the operator's config is wrong, and
/// silently using the default would hide it.
pub fn parse_or<T: FromStr>(key: &str, default: T) -> Result<T, Error> {
    match raw::get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| Error::internal(format!("setting {key:?} has an invalid value"))),
    }
}

/// Every setting as one JSON object, parsed into `T`.
pub fn all<T: serde::de::DeserializeOwned>() -> Result<T, Error> {
    serde_json::from_str(&raw::all())
        .map_err(|e| Error::internal(format!("settings do not have the expected shape: {e}")))
}
