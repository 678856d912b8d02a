//! Voucher rules: validation of create_voucher's parameters, creation and
//! removal in kv transactions, and the validity checks the portal applies.

use serde::Serialize;
use wasmgate_sdk::{Error, config, crypto, kv};

use crate::store::{self, Kind, MIB, Usage, Voucher};
use crate::time;

/// Download and upload limits are whole MiB from 1 to this (9 TiB); anything
/// else is unlimited, stored as 0.
pub const MAX_LIMIT_MB: u64 = 9_437_184;
pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_PASSCODE_CHARS: usize = 64;
pub const MAX_FULLNAME_CHARS: usize = 128;
/// Used when the `default_valid_for` setting is absent.
pub const DEFAULT_VALID_FOR: &str = "1 day";

pub const VALID_FOR_HELP: &str = "'always', '1 hour', '2 hours' to '23 hours', '1 day', '2 days' to '30 days', '35 days', '40 days', '45 days', '50 days', '55 days', '60 days', '90 days', '120 days', '150 days', '180 days', '365 days'";

/// The seconds a `valid_for` value grants, `None` for "always"; `Err` for a
/// value outside the seed's list. Exact spelling only ("1 day", not "1 days").
pub fn valid_for_seconds(value: &str) -> Result<Option<u64>, ()> {
    if value == "always" {
        return Ok(None);
    }
    let (n, unit) = value.split_once(' ').ok_or(())?;
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) || n.starts_with('0') {
        return Err(());
    }
    let n: u64 = n.parse().map_err(|_| ())?;
    match unit {
        "hour" if n == 1 => Ok(Some(3600)),
        "hours" if (2..=23).contains(&n) => Ok(Some(n * 3600)),
        "day" if n == 1 => Ok(Some(86_400)),
        "days"
            if (2..=30).contains(&n)
                || [35, 40, 45, 50, 55, 60, 90, 120, 150, 180, 365].contains(&n) =>
        {
            Ok(Some(n * 86_400))
        }
        _ => Err(()),
    }
}

/// A limit parameter in whole MiB: 1..=9437184, else 0 (unlimited), as the
/// seed says ("If unset or out of bounds, the user traffic will be unlimited").
pub fn parse_limit(value: Option<&str>) -> u64 {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| (1..=MAX_LIMIT_MB).contains(n))
        .unwrap_or(0)
}

/// What create_voucher was asked for, before validation.
#[derive(Default, Clone)]
pub struct NewVoucher {
    pub username: Option<String>,
    pub passcode: Option<String>,
    pub fullname: Option<String>,
    pub valid_for: Option<String>,
    pub valid_from: Option<String>,
    pub download_limit: Option<String>,
    pub upload_limit: Option<String>,
}

/// The seed's create_voucher answer `user`: limits as strings.
#[derive(Serialize)]
pub struct CreatedUser {
    pub id: u64,
    pub username: String,
    pub passcode: String,
    pub fullname: String,
    pub valid_for: String,
    pub valid_from: Option<String>,
    pub download_limit: String,
    pub upload_limit: String,
}

impl From<&Voucher> for CreatedUser {
    fn from(v: &Voucher) -> Self {
        CreatedUser {
            id: v.id,
            username: v.username.clone(),
            passcode: v.password.clone(),
            fullname: v.fullname.clone(),
            valid_for: v.valid_for.clone(),
            valid_from: v.valid_from.clone(),
            download_limit: v.download_limit.to_string(),
            upload_limit: v.upload_limit.to_string(),
        }
    }
}

/// A message for the client (the API's envelope carries it as is).
fn refuse(message: impl Into<String>) -> Error {
    Error::bad_request(message)
}

fn check_text(what: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max {
        return Err(refuse(format!("{what} must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// The preset for an empty valid_for.
pub fn default_valid_for() -> Result<String, Error> {
    let value = config::get_or("default_valid_for", DEFAULT_VALID_FOR);
    if valid_for_seconds(&value).is_err() {
        return Err(refuse(format!(
            "The default_valid_for setting ({value:?}) is not one of {VALID_FOR_HELP}"
        )));
    }
    Ok(value)
}

/// Random text from an alphabet without look-alikes (no 0/o, 1/l/i).
fn random_word(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in crypto::random_bytes(len as u32 * 2) {
            // 248 = 8 * 31: bytes above it would bias the pick.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    out
}

fn random_fullname() -> String {
    const FIRST: &[&str] = &[
        "Alex", "Sam", "Robin", "Jamie", "Taylor", "Jordan", "Casey", "Morgan", "Riley", "Avery",
        "Quinn", "Harper", "Rowan", "Sky", "Noel", "Eden",
    ];
    const LAST: &[&str] = &[
        "Guest",
        "Visitor",
        "Traveller",
        "Wanderer",
        "Rider",
        "Walker",
        "Reader",
        "Sailor",
    ];
    let b = crypto::random_bytes(4);
    format!(
        "{} {} {}",
        FIRST[usize::from(b[0]) % FIRST.len()],
        LAST[usize::from(b[1]) % LAST.len()],
        u16::from_le_bytes([b[2], b[3]]) % 10_000
    )
}

/// Validates `new` and stores the voucher; the username is unique inside
/// one transaction, and the id comes from the host's sequence.
pub fn create(new: &NewVoucher) -> Result<Voucher, Error> {
    if let Some(u) = &new.username {
        check_text("Username", u, MAX_USERNAME_CHARS)?;
    }
    if let Some(p) = &new.passcode {
        check_text("Passcode", p, MAX_PASSCODE_CHARS)?;
    }
    if let Some(f) = &new.fullname {
        check_text("Fullname", f, MAX_FULLNAME_CHARS)?;
    }
    let valid_for = match &new.valid_for {
        None => default_valid_for()?,
        Some(v) => {
            if valid_for_seconds(v).is_err() {
                return Err(refuse(format!(
                    "Invalid valid_for: must be one of {VALID_FOR_HELP}"
                )));
            }
            v.clone()
        }
    };
    let valid_from = match &new.valid_from {
        None => None,
        Some(v) => {
            let ts = time::parse_datetime(v).ok_or_else(|| {
                refuse("Invalid valid_from: use the format Y-m-d H:i:s, e.g. 2018-08-24 00:00:00")
            })?;
            Some(time::format_datetime(ts))
        }
    };
    let download_limit = parse_limit(new.download_limit.as_deref());
    let upload_limit = parse_limit(new.upload_limit.as_deref());
    let password = new.passcode.clone().unwrap_or_else(|| random_word(8));
    let fullname = new.fullname.clone().unwrap_or_else(random_fullname);
    let now = time::format_datetime(time::now_secs());

    kv::transaction(|txn| {
        let username = match &new.username {
            Some(u) => {
                if txn.get(&store::idx_key(Kind::Voucher, u))?.is_some() {
                    return Err(Error::conflict("Username already exists"));
                }
                u.clone()
            }
            None => {
                let mut found = None;
                for _ in 0..8 {
                    let candidate = random_word(8);
                    if txn
                        .get(&store::idx_key(Kind::Voucher, &candidate))?
                        .is_none()
                    {
                        found = Some(candidate);
                        break;
                    }
                }
                found.ok_or_else(|| Error::internal("no free random username"))?
            }
        };
        let id = store::new_id(txn, Kind::Voucher)?;
        let voucher = Voucher {
            id,
            username: username.clone(),
            password: password.clone(),
            fullname: fullname.clone(),
            created_at: now.clone(),
            last_modified: now.clone(),
            first_login: None,
            last_login: None,
            valid_for: valid_for.clone(),
            valid_from: valid_from.clone(),
            mac: None,
            download_limit,
            upload_limit,
        };
        txn.set_json(&store::idx_key(Kind::Voucher, &username), &id)?;
        txn.set_json(&store::rec_key(Kind::Voucher, id), &voucher)?;
        Ok(voucher)
    })
}

/// Removes the voucher `username`; `Ok(false)` when there is none.
pub fn remove(username: &str) -> Result<bool, Error> {
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Ok(false);
    }
    kv::transaction(|txn| {
        let idx = store::idx_key(Kind::Voucher, username);
        let Some(id) = txn.get_json::<u64>(&idx)? else {
            return Ok(false);
        };
        txn.delete(&idx)?;
        txn.delete(&store::rec_key(Kind::Voucher, id))?;
        txn.delete(&store::use_key(id))?;
        Ok(true)
    })
}

/// Why a voucher may not be used now; each is the message a guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Before valid_from, or past first_login + valid_for.
    Expired,
    /// Bound at first login to another device.
    OtherDevice,
    /// The download or upload limit is used up.
    Quota,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Expired => "The user has expired or not valid.",
            Refusal::OtherDevice => "The user is bound to another device.",
            Refusal::Quota => "The user has used up its data limit.",
        }
    }

    /// The `reason` accounting reports for an ended session.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::OtherDevice => "other_device",
            Refusal::Quota => "quota",
        }
    }
}

/// Unix seconds when the voucher stops being valid: `None` while it never
/// will (valid_for "always", or no first login yet).
pub fn expires_at(v: &Voucher) -> Option<u64> {
    let first = time::parse_datetime(v.first_login.as_deref()?)?;
    let secs = valid_for_seconds(&v.valid_for).ok()??;
    Some(first + secs)
}

/// Whether the voucher may be used at `now` (the MAC is checked at login only).
pub fn check_validity(v: &Voucher, usage: &Usage, now: u64) -> Result<(), Refusal> {
    if let Some(from) = v.valid_from.as_deref().and_then(time::parse_datetime)
        && now < from
    {
        return Err(Refusal::Expired);
    }
    if let Some(end) = expires_at(v)
        && now >= end
    {
        return Err(Refusal::Expired);
    }
    if (v.download_limit > 0 && usage.bytes_out >= v.download_limit * MIB)
        || (v.upload_limit > 0 && usage.bytes_in >= v.upload_limit * MIB)
    {
        return Err(Refusal::Quota);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_for_accepts_exactly_the_seed_list() {
        let mut ok = vec!["always".to_string(), "1 hour".into(), "1 day".into()];
        ok.extend((2..=23).map(|n| format!("{n} hours")));
        ok.extend((2..=30).map(|n| format!("{n} days")));
        ok.extend([35, 40, 45, 50, 55, 60, 90, 120, 150, 180, 365].map(|n| format!("{n} days")));
        assert_eq!(ok.len(), 1 + 1 + 1 + 22 + 29 + 11);
        for v in &ok {
            assert!(valid_for_seconds(v).is_ok(), "{v}");
        }
        for bad in [
            "", "1 hours", "1 days", "24 hours", "31 days", "0 days", "02 days", "366 days",
            "forever", "1  day", " 1 day", "1 Day", "-1 day", "1 week",
        ] {
            assert!(valid_for_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(valid_for_seconds("2 hours"), Ok(Some(7200)));
        assert_eq!(valid_for_seconds("always"), Ok(None));
    }

    #[test]
    fn limits_outside_the_range_are_unlimited() {
        assert_eq!(parse_limit(Some("1024")), 1024);
        assert_eq!(parse_limit(Some("1")), 1);
        assert_eq!(parse_limit(Some("9437184")), 9_437_184);
        for bad in [
            "0",
            "9437185",
            "-1",
            "abc",
            "1.5",
            "",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_limit(Some(bad)), 0, "{bad}");
        }
        assert_eq!(parse_limit(None), 0);
    }
}
