//! Records and the key layout of the plugin's kv namespace.
//!
//! Every user kind (`voucher`, `email`, `fb`, `mobile`, `free`) has:
//! - `rec/<kind>/<id as 16 digits>`: the record as JSON, already in the exact
//!   shape the API lists, so a list is one prefix scan whose values are
//!   joined without parsing;
//! - `idx/<kind>/<identity>`: its id (the identity is the voucher's username,
//!   the lower-cased e-mail address, the Facebook id, the mobile number or
//!   the free user's MAC), which makes identities unique when it is read and
//!   written in the same transaction as the record;
//! - ids from the host's sequence `id/<kind>` (`kv::next_id`), so that
//!   concurrent creations never conflict on a shared counter; above
//!   `next/<kind>`, the counter earlier versions of the plugin bumped in each
//!   transaction, which is only read now.
//!
//! Besides:
//! - `use/<voucher id as 16 digits>`: bytes a voucher has used, summed over
//!   its sessions by accounting (kept apart so the list stays the seed's shape);
//! - `sess/<MAC>`: the active session of a device (one per MAC);
//! - `log/<unix ns as 20 digits>-<random hex>`: the login log, in time order,
//!   without a shared counter so that logins never conflict on it;
//! - `toggles`: the admin's API toggles.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{Error, crypto, kv};

pub const MIB: u64 = 1024 * 1024;

/// The user kinds, as they appear in keys and in the login log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Voucher,
    Email,
    Fb,
    Mobile,
    Free,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Voucher => "voucher",
            Kind::Email => "email",
            Kind::Fb => "fb",
            Kind::Mobile => "mobile",
            Kind::Free => "free",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "voucher" => Some(Kind::Voucher),
            "email" => Some(Kind::Email),
            "fb" | "facebook" => Some(Kind::Fb),
            "mobile" | "sms" => Some(Kind::Mobile),
            "free" => Some(Kind::Free),
            _ => None,
        }
    }
}

pub fn rec_prefix(kind: Kind) -> String {
    format!("rec/{}/", kind.as_str())
}

pub fn rec_key(kind: Kind, id: u64) -> String {
    format!("rec/{}/{id:016}", kind.as_str())
}

pub fn idx_key(kind: Kind, identity: &str) -> String {
    format!("idx/{}/{identity}", kind.as_str())
}

pub fn next_key(kind: Kind) -> String {
    format!("next/{}", kind.as_str())
}

/// A new id for a record of `kind`, above every id the earlier counter
/// handed out. Read in `txn`, that counter never changes any more, so it
/// makes no transaction conflict.
pub fn new_id(txn: &kv::Txn, kind: Kind) -> Result<u64, Error> {
    let counted: u64 = txn.get_json(&next_key(kind))?.unwrap_or(1);
    kv::next_id(&format!("id/{}", kind.as_str()), counted)
}

pub fn use_key(voucher_id: u64) -> String {
    format!("use/{voucher_id:016}")
}

pub const SESSION_PREFIX: &str = "sess/";

pub fn session_key(mac: &str) -> String {
    format!("{SESSION_PREFIX}{mac}")
}

pub const LOG_PREFIX: &str = "log/";
pub const TOGGLES: &str = "toggles";

/// A voucher, in the field order and types of the seed's `get_voucher_users`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Voucher {
    pub id: u64,
    pub username: String,
    pub password: String,
    pub fullname: String,
    pub created_at: String,
    pub last_modified: String,
    pub first_login: Option<String>,
    pub last_login: Option<String>,
    pub valid_for: String,
    pub valid_from: Option<String>,
    #[serde(rename = "MAC")]
    pub mac: Option<String>,
    /// Whole MiB; 0 is unlimited.
    pub download_limit: u64,
    pub upload_limit: u64,
}

/// Bytes a voucher has used over all its sessions. "out" is towards the
/// guest (its download), "in" is from the guest (its upload), as the
/// gateway's counters and the seed's `bytes-out`/`bytes-in` count them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// An e-mail sign-in user, in the seed's `get_email_users` shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmailUser {
    pub id: u64,
    pub email: String,
    pub created_at: String,
    pub last_login: String,
    #[serde(rename = "MAC")]
    pub mac: String,
    pub visits: u64,
    pub comments: String,
    pub comments1: String,
    pub comments2: String,
    pub last_modified: String,
    pub marketing: u8,
    pub verified: u8,
}

/// A Facebook sign-in user: the e-mail user's shape with the Facebook id and
/// name in front (Facebook vouches for the address, so no `verified`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FbUser {
    pub id: u64,
    pub facebook_id: String,
    pub name: String,
    pub email: String,
    pub created_at: String,
    pub last_login: String,
    #[serde(rename = "MAC")]
    pub mac: String,
    pub visits: u64,
    pub comments: String,
    pub comments1: String,
    pub comments2: String,
    pub last_modified: String,
    pub marketing: u8,
}

/// A mobile (SMS) sign-in user: the e-mail user's shape keyed by the number.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MobileUser {
    pub id: u64,
    pub mobile: String,
    pub created_at: String,
    pub last_login: String,
    #[serde(rename = "MAC")]
    pub mac: String,
    pub visits: u64,
    pub comments: String,
    pub comments1: String,
    pub comments2: String,
    pub last_modified: String,
    pub marketing: u8,
    pub verified: u8,
}

/// A free-access user: only a device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FreeUser {
    pub id: u64,
    #[serde(rename = "MAC")]
    pub mac: String,
    pub created_at: String,
    pub last_login: String,
    pub visits: u64,
    pub last_modified: String,
}

/// The active session of one device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The device's MAC, upper case with colons.
    pub mac: String,
    /// Its IP address as the gateway reported it.
    pub address: String,
    pub kind: Kind,
    /// What the seed's `logins` shows: the voucher's username, the e-mail
    /// address, the mobile number, the Facebook name, or the MAC.
    pub login: String,
    /// The id of the user record of `kind`.
    pub user_id: u64,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds of the last traffic the gateway reported.
    pub last_activity: u64,
    /// The session's counters as last reported by the gateway.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One line of the login log (`get_logins`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginEntry {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub login: String,
    #[serde(rename = "MAC")]
    pub mac: String,
    #[serde(rename = "IP")]
    pub ip: String,
    /// 1 for a login that opened a session, 0 for a refused one.
    pub success: u8,
    pub message: String,
}

/// The admin's switches. The API is off until an operator turns it on.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Toggles {
    pub api_enabled: bool,
    pub get_enabled: bool,
    pub post_enabled: bool,
}

impl Default for Toggles {
    fn default() -> Self {
        Toggles {
            api_enabled: false,
            get_enabled: false,
            post_enabled: true,
        }
    }
}

pub fn toggles() -> Result<Toggles, Error> {
    Ok(kv::get_json(TOGGLES)?.unwrap_or_default())
}

/// Lower-case hex of `n` random bytes.
pub fn random_hex(n: u32) -> String {
    crypto::hex(&crypto::random_bytes(n))
}

/// A login-log key: ordered by the time in nanoseconds (entries a
/// millisecond apart must keep their order), unique without a counter.
pub fn log_key(now_ns: u128) -> String {
    format!("{LOG_PREFIX}{now_ns:020}-{}", random_hex(4))
}

/// Whether `text` is a login-log key without its prefix: the form
/// [`log_key`] makes.
pub fn is_log_suffix(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 29
        && b[..20].iter().all(u8::is_ascii_digit)
        && b[20] == b'-'
        && b[21..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// "AA:BB:CC:DD:EE:FF" from six hex pairs separated by ':' or '-', any case.
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_suffixes_are_what_log_key_makes() {
        assert!(is_log_suffix("01733218223123456789-0a1b2c3d"));
        for bad in [
            "",
            "12",
            "0173321822312345678-0a1b2c3d",
            "01733218223123456789-0A1B2C3D",
            "01733218223123456789_0a1b2c3d",
            "0173321822312345678x-0a1b2c3d",
        ] {
            assert!(!is_log_suffix(bad), "{bad}");
        }
    }

    #[test]
    fn macs_are_normalised() {
        assert_eq!(
            normalize_mac("a1-b2-c3-d4-e5-f6").as_deref(),
            Some("A1:B2:C3:D4:E5:F6")
        );
        assert_eq!(
            normalize_mac("A1:B2:C3:D4:E5:F6").as_deref(),
            Some("A1:B2:C3:D4:E5:F6")
        );
        assert_eq!(normalize_mac("A1:B2:C3:D4:E5"), None);
        assert_eq!(normalize_mac("A1:B2:C3:D4:E5:G6"), None);
        assert_eq!(normalize_mac("A1:B2:C3:D4:E5:F66"), None);
    }
}
