//! What a verified license says and whether it holds now: the pure part of
//! license checking, tested natively. [`crate::signed::open`] has already
//! verified the signature; [`License::from_payload`] reads the payload and
//! [`evaluate`] checks it against the instance, the clock and the clock's
//! high-water mark.

use serde_json::{Map, Value};

/// The limits of a tier; -1 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_users: i64,
    pub max_domains: i64,
    pub max_databases: i64,
}

/// A verified license payload.
#[derive(Debug, Clone, PartialEq)]
pub struct License {
    pub license_id: String,
    pub key: String,
    pub tier: String,
    pub limits: Limits,
    pub issued_at: i64,
    pub not_before: i64,
    /// None: never expires.
    pub expires_at: Option<i64>,
    pub valid_until: i64,
    pub grace_days: i64,
    pub instance_id: String,
}

impl License {
    /// Reads a verified payload; a missing or mistyped field is an error text.
    pub fn from_payload(p: &Map<String, Value>) -> Result<License, String> {
        let s = |name: &str| -> Result<String, String> {
            p.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{name} is missing or not a string"))
        };
        let i = |v: Option<&Value>, name: &str| -> Result<i64, String> {
            v.and_then(Value::as_i64)
                .ok_or_else(|| format!("{name} is missing or not an integer"))
        };
        let limits = p
            .get("limits")
            .and_then(Value::as_object)
            .ok_or("limits is missing")?;
        let limit = |name: &str| -> Result<i64, String> {
            let n = i(limits.get(name), name)?;
            if n < -1 {
                return Err(format!("{name} is below -1"));
            }
            Ok(n)
        };
        let expires_at = match p.get("expires_at") {
            None | Some(Value::Null) => None,
            v => Some(i(v, "expires_at")?),
        };
        let issued_at = i(p.get("issued_at"), "issued_at")?;
        Ok(License {
            license_id: s("license_id").unwrap_or_default(),
            key: s("key")?,
            tier: s("tier")?,
            limits: Limits {
                max_users: limit("max_users")?,
                max_domains: limit("max_domains")?,
                max_databases: limit("max_databases")?,
            },
            issued_at,
            not_before: match p.get("not_before") {
                None | Some(Value::Null) => issued_at,
                v => i(v, "not_before")?,
            },
            expires_at,
            valid_until: i(p.get("valid_until"), "valid_until")?,
            grace_days: match p.get("grace_days") {
                None | Some(Value::Null) => 0,
                v => i(v, "grace_days")?.max(0),
            },
            instance_id: s("instance_id")?,
        })
    }

    /// The last moment the file may be honoured without a refresh:
    /// `valid_until` plus the grace period, never past `expires_at`.
    pub fn grace_end(&self) -> i64 {
        let end = self
            .valid_until
            .saturating_add(self.grace_days.saturating_mul(86_400));
        match self.expires_at {
            Some(exp) => end.min(exp),
            None => end,
        }
    }
}

/// Why a verified license does not hold now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Issued for another instance.
    InstanceMismatch { license: String, ours: String },
    /// Now is before `not_before`.
    NotYetValid { not_before: i64 },
    /// Now is past `expires_at`.
    Expired { expires_at: i64 },
    /// Now is past `valid_until` and its grace period.
    RefreshRequired { valid_until: i64 },
    /// The clock reads earlier than a time this panel has already seen.
    ClockRollback { now: i64, last_seen: i64 },
}

impl Invalid {
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::InstanceMismatch { .. } => "LICENSE_INSTANCE_MISMATCH",
            Invalid::NotYetValid { .. } => "LICENSE_NOT_YET_VALID",
            Invalid::Expired { .. } => "LICENSE_EXPIRED",
            Invalid::RefreshRequired { .. } => "LICENSE_REFRESH_REQUIRED",
            Invalid::ClockRollback { .. } => "CLOCK_ROLLBACK",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            // Bound elsewhere, as the portal answers it; a clock set back.
            Invalid::InstanceMismatch { .. } | Invalid::ClockRollback { .. } => 409,
            _ => 403,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Invalid::InstanceMismatch { license, ours } => {
                format!(
                    "The license was issued for instance {license:?}, not this instance ({ours:?})"
                )
            }
            Invalid::NotYetValid { .. } => "The license is not valid yet".into(),
            Invalid::Expired { .. } => "The license has expired".into(),
            Invalid::RefreshRequired { .. } => {
                "The license file is past its refresh date and grace period; refresh it".into()
            }
            Invalid::ClockRollback { .. } => {
                "The system clock is earlier than a time this panel has already seen; fix the clock"
                    .into()
            }
        }
    }
}

/// How a license stands at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub invalid: Option<Invalid>,
    /// Past `valid_until`: the file should be refreshed from the portal.
    pub needs_refresh: bool,
    /// Past `valid_until` but still inside the grace period.
    pub in_grace: bool,
}

/// Checks `lic` for `instance_id` at `now`, given the latest time seen so
/// far and how far back the clock may step (NTP corrections) before it
/// counts as set back. Checked in this order: clock, instance, not-before,
/// expiry, refresh.
pub fn evaluate(
    lic: &License,
    instance_id: &str,
    now: i64,
    last_seen: Option<i64>,
    tolerance: i64,
) -> Verdict {
    let needs_refresh = now > lic.valid_until;
    let invalid = if let Some(seen) = last_seen.filter(|seen| now.saturating_add(tolerance) < *seen)
    {
        Some(Invalid::ClockRollback {
            now,
            last_seen: seen,
        })
    } else if lic.instance_id != instance_id {
        Some(Invalid::InstanceMismatch {
            license: lic.instance_id.clone(),
            ours: instance_id.to_string(),
        })
    } else if now.saturating_add(tolerance) < lic.not_before {
        Some(Invalid::NotYetValid {
            not_before: lic.not_before,
        })
    } else if lic.expires_at.is_some_and(|exp| now >= exp) {
        Some(Invalid::Expired {
            expires_at: lic.expires_at.unwrap_or_default(),
        })
    } else if now > lic.grace_end() {
        Some(Invalid::RefreshRequired {
            valid_until: lic.valid_until,
        })
    } else {
        None
    };
    Verdict {
        in_grace: invalid.is_none() && needs_refresh,
        invalid,
        needs_refresh,
    }
}

/// "WISP-****SA6T": the part before the first '-', then "-****", then the
/// last four characters.
pub fn mask(key: &str) -> String {
    let head = key.split('-').next().unwrap_or("");
    let chars: Vec<char> = key.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{head}-****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lic() -> License {
        let p = json!({
            "type": "license", "license_id": "lic_1", "key_id": "k1", "alg": "ed25519",
            "key": "WISP-AB2C-DE3F-SA6T", "key_masked": "WISP-****SA6T", "tier": "pro",
            "limits": { "max_users": 30, "max_domains": 100, "max_databases": -1 },
            "issued_at": 1000, "not_before": 1000, "expires_at": 100_000_000,
            "valid_until": 2000, "grace_days": 1, "instance_id": "me"
        });
        License::from_payload(p.as_object().unwrap()).unwrap()
    }

    #[test]
    fn reads_the_portals_payload() {
        let l = lic();
        assert_eq!(l.limits.max_databases, -1);
        assert_eq!(l.grace_end(), 2000 + 86_400);
        let mut p = json!({ "key": "K", "tier": "t", "limits": {"max_users":1,"max_domains":1,"max_databases":1},
                            "issued_at": 5, "valid_until": 9, "instance_id": "i", "expires_at": null });
        let l = License::from_payload(p.as_object().unwrap()).unwrap();
        assert_eq!((l.expires_at, l.not_before, l.grace_days), (None, 5, 0));
        p["limits"]["max_users"] = json!(-2);
        assert!(License::from_payload(p.as_object().unwrap()).is_err());
        p["limits"]["max_users"] = json!("30");
        assert!(License::from_payload(p.as_object().unwrap()).is_err());
    }

    #[test]
    fn verdicts() {
        let l = lic();
        let v = |now, seen| evaluate(&l, "me", now, seen, 300);
        assert_eq!(
            v(1500, None),
            Verdict {
                invalid: None,
                needs_refresh: false,
                in_grace: false
            }
        );
        assert_eq!(
            v(3000, Some(2900)),
            Verdict {
                invalid: None,
                needs_refresh: true,
                in_grace: true
            }
        );
        assert_eq!(
            v(2000 + 86_401, None).invalid.unwrap().code(),
            "LICENSE_REFRESH_REQUIRED"
        );
        assert_eq!(
            v(100_000_000, None).invalid.unwrap().code(),
            "LICENSE_EXPIRED"
        );
        assert_eq!(
            v(600, None).invalid.unwrap().code(),
            "LICENSE_NOT_YET_VALID"
        );
        // Within the tolerance: an NTP step, not a rollback.
        assert_eq!(v(1500, Some(1700)).invalid, None);
        let r = v(1500, Some(1900)).invalid.unwrap();
        assert_eq!((r.code(), r.status()), ("CLOCK_ROLLBACK", 409));
        assert_eq!(
            evaluate(&l, "other", 1500, None, 300)
                .invalid
                .unwrap()
                .code(),
            "LICENSE_INSTANCE_MISMATCH"
        );
    }

    #[test]
    fn grace_never_passes_expiry() {
        let mut l = lic();
        l.expires_at = Some(2500);
        assert_eq!(l.grace_end(), 2500);
        assert_eq!(
            evaluate(&l, "me", 2600, None, 300).invalid.unwrap().code(),
            "LICENSE_EXPIRED"
        );
    }

    #[test]
    fn masks_like_the_seed() {
        assert_eq!(mask("WISP-AB2C-DE3F-SA6T"), "WISP-****SA6T");
        assert_eq!(mask("ABC"), "ABC-****ABC");
    }
}
