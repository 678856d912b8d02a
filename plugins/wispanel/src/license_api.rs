//! The license endpoints: `GET /license/`, `summary`, `limits`,
//! `disabled-resources`; `POST activate`, `verify`, `refresh`, `enforce`,
//! `re-enable`.
//!
//! Every answer starts from [`State::load`]: the stored file is verified
//! again (signature first, then the payload) and evaluated against this
//! instance, the clock and the clock's high-water mark, so a file changed in
//! storage or a clock set back is noticed on the next request.

use serde::Serialize;
use serde_json::{Value, json};
use wasmgate_sdk::{Request, crypto, log};

use crate::api::{ApiError, ApiResult, body_object, ok, opt_str};
use crate::enforce;
use crate::license::{self, Invalid, License, Limits, Verdict};
use crate::paging;
use crate::portal;
use crate::settings;
use crate::signed::{self, Refusal};
use crate::store::{self, Kind, StoredLicense};
use crate::time;

/// The code for a refused license file.
fn refusal(r: &Refusal) -> ApiError {
    let code = match r {
        Refusal::Malformed(_) => "LICENSE_MALFORMED",
        Refusal::UnsupportedAlgorithm(_) => "LICENSE_ALGORITHM_UNSUPPORTED",
        Refusal::UnknownKey(_) => "LICENSE_KEY_UNKNOWN",
        Refusal::BadSignature => "LICENSE_SIGNATURE_INVALID",
        Refusal::BadPayload(_) => "LICENSE_PAYLOAD_INVALID",
        Refusal::WrongType(_) => "LICENSE_WRONG_TYPE",
    };
    ApiError::new(422, code, r.message("license"))
}

fn invalid(i: &Invalid) -> ApiError {
    ApiError::new(i.status(), i.code(), i.message())
}

/// Verifies a license file and reads it; nothing is parsed before the
/// signature is checked.
pub fn open(file: &[u8]) -> Result<License, ApiError> {
    let trusted = trusted_keys()?;
    let opened =
        signed::open(file, &trusted, "license", crypto::ed25519_verify).map_err(|r| refusal(&r))?;
    License::from_payload(&opened.payload).map_err(|why| {
        ApiError::new(
            422,
            "LICENSE_PAYLOAD_INVALID",
            format!("The license's payload is invalid: {why}"),
        )
    })
}

/// The keys licenses may be signed with; none configured is a 503, checked
/// before the portal is asked for anything.
fn trusted_keys() -> Result<Vec<signed::TrustedKey>, ApiError> {
    let trusted = settings::trusted_keys()?;
    if trusted.is_empty() {
        return Err(ApiError::new(
            503,
            "LICENSE_KEY_NOT_CONFIGURED",
            "No license public key is configured (setting license_public_key)",
        ));
    }
    Ok(trusted)
}

/// The license as it stands now.
pub struct State {
    pub now: i64,
    pub offset: i64,
    pub instance_id: String,
    pub stored: Option<StoredLicense>,
    /// The verified license and its verdict; an Err when the stored file is refused.
    pub checked: Option<Result<(License, Verdict), ApiError>>,
}

impl State {
    pub fn load() -> Result<State, ApiError> {
        let now = time::now();
        let last_seen = store::observe_clock(now)?;
        let tolerance = settings::clock_tolerance()?;
        let instance_id = store::instance_id()?;
        let stored = store::license()?;
        let checked = stored.as_ref().map(|s| {
            open(s.file.as_bytes()).map(|lic| {
                let verdict = license::evaluate(&lic, &instance_id, now, last_seen, tolerance);
                (lic, verdict)
            })
        });
        Ok(State {
            now,
            offset: settings::utc_offset()?,
            instance_id,
            stored,
            checked,
        })
    }

    /// The verified license, valid or not.
    pub fn license(&self) -> Option<&License> {
        match &self.checked {
            Some(Ok((lic, _))) => Some(lic),
            _ => None,
        }
    }

    /// Why the license does not hold now; None when it does.
    pub fn problem(&self) -> Option<ApiError> {
        match &self.checked {
            None => Some(ApiError::new(
                404,
                "LICENSE_NOT_FOUND",
                "No license is activated",
            )),
            Some(Err(e)) => Some(e.clone()),
            Some(Ok((_, verdict))) => match &verdict.invalid {
                Some(i) => Some(invalid(i)),
                None if self.stored.as_ref().is_some_and(|s| s.revoked) => Some(ApiError::new(
                    403,
                    "LICENSE_REVOKED",
                    "License key has been revoked",
                )),
                None => None,
            },
        }
    }

    pub fn is_valid(&self) -> bool {
        self.problem().is_none()
    }

    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.checked {
            Some(Ok((_, v))) => Some(v),
            _ => None,
        }
    }

    /// The limits that apply: the license's while it is valid, else the
    /// `unlicensed_limits` setting.
    pub fn effective_limits(&self) -> Result<(Limits, &'static str), ApiError> {
        match self.license() {
            Some(lic) if self.is_valid() => Ok((lic.limits, "license")),
            _ => Ok((settings::unlicensed_limits()?, "unlicensed")),
        }
    }

    fn ts(&self, t: Option<i64>) -> Value {
        t.map_or(Value::Null, |t| json!(time::format(t, self.offset)))
    }

    fn ts_text(&self, t: Option<i64>) -> Option<String> {
        t.map(|t| time::format(t, self.offset))
    }

    /// The seed's `license` object.
    pub fn view(&self) -> Result<LicenseView, ApiError> {
        let lic = self.license();
        let limits = match lic {
            Some(l) => l.limits,
            None => settings::unlicensed_limits()?,
        };
        Ok(LicenseView {
            key: self.stored.as_ref().map(|s| license::mask(&s.key)),
            tier: lic.map_or("unlicensed", |l| l.tier.as_str()).to_string(),
            is_valid: self.is_valid(),
            has_license_file: self.stored.is_some(),
            needs_refresh: self.verdict().is_some_and(|v| v.needs_refresh),
            max_users: limits.max_users,
            max_domains: limits.max_domains,
            max_databases: limits.max_databases,
            expires_at: self.ts_text(lic.and_then(|l| l.expires_at)),
            valid_until: self.ts_text(lic.map(|l| l.valid_until)),
            last_checked: self.ts_text(self.stored.as_ref().and_then(|s| s.last_checked)),
        })
    }
}

/// The seed's `license` object, its fields in the seed's order.
#[derive(Serialize)]
pub struct LicenseView {
    /// Masked, "WISP-****SA6T"; null without a license.
    key: Option<String>,
    tier: String,
    is_valid: bool,
    has_license_file: bool,
    needs_refresh: bool,
    /// -1: unlimited.
    max_users: i64,
    max_domains: i64,
    max_databases: i64,
    /// RFC 3339; null: never (or no license).
    expires_at: Option<String>,
    valid_until: Option<String>,
    last_checked: Option<String>,
}

/// The seed's `usage`: how many of each kind exist, disabled or not.
#[derive(Serialize)]
pub struct Usage {
    accounts: u64,
    databases: u64,
    domains: u64,
}

pub fn usage() -> Result<Usage, ApiError> {
    Ok(Usage {
        accounts: store::count(Kind::Accounts)?,
        databases: store::count(Kind::Databases)?,
        domains: store::count(Kind::Domains)?,
    })
}

#[derive(Serialize)]
struct LicenseAnswer {
    license: LicenseView,
    usage: Usage,
}

/// `GET /license/`: the seed's shape, exactly.
pub fn get(_req: &Request) -> ApiResult {
    let s = State::load()?;
    ok(&LicenseAnswer {
        license: s.view()?,
        usage: usage()?,
    })
}

/// `GET /license/summary`: one object for a dashboard: state in words, the
/// code of what is wrong, dates, limits and usage.
pub fn summary(_req: &Request) -> ApiResult {
    let s = State::load()?;
    let problem = s.problem();
    let lic = s.license();
    let status = match (&s.checked, &problem) {
        (None, _) => "unlicensed",
        (_, None) if s.verdict().is_some_and(|v| v.in_grace) => "grace",
        (_, None) => "active",
        (_, Some(e)) => match e.code {
            "LICENSE_EXPIRED" => "expired",
            "LICENSE_REVOKED" => "revoked",
            "LICENSE_NOT_YET_VALID" => "not_yet_valid",
            "LICENSE_REFRESH_REQUIRED" => "refresh_required",
            "LICENSE_INSTANCE_MISMATCH" => "instance_mismatch",
            "CLOCK_ROLLBACK" => "clock_rollback",
            _ => "invalid",
        },
    };
    let (limits, source) = s.effective_limits()?;
    let over = over_limit(&limits)?;
    ok(&json!({
        "key": s.stored.as_ref().map(|l| license::mask(&l.key)),
        "tier": lic.map_or("unlicensed", |l| l.tier.as_str()),
        "status": status,
        "is_valid": problem.is_none(),
        "code": problem.as_ref().map(|e| e.code),
        "message": problem.as_ref().map_or_else(|| "License is valid".to_string(), |e| e.message.clone()),
        "needs_refresh": s.verdict().is_some_and(|v| v.needs_refresh),
        "in_grace": s.verdict().is_some_and(|v| v.in_grace),
        "license_id": lic.map(|l| l.license_id.clone()),
        "instance_id": s.instance_id,
        "issued_at": s.ts(lic.map(|l| l.issued_at)),
        "expires_at": s.ts(lic.and_then(|l| l.expires_at)),
        "valid_until": s.ts(lic.map(|l| l.valid_until)),
        "grace_until": s.ts(lic.map(License::grace_end)),
        "days_remaining": lic.and_then(|l| l.expires_at).map(|e| ((e - s.now) / 86_400).max(0)),
        "last_checked": s.ts(s.stored.as_ref().and_then(|l| l.last_checked)),
        "limits_source": source,
        "limits": limits,
        "usage": usage()?,
        "over_limit": over.values().any(|v| v.as_bool() == Some(true)),
        "disabled_resources": store::disabled_count()?,
    }))
}

fn over_limit(limits: &Limits) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut over = serde_json::Map::new();
    for kind in Kind::ALL {
        let active = store::resources(kind)?
            .iter()
            .filter(|r| !r.disabled)
            .count() as i64;
        let limit = kind.limit(limits);
        over.insert(kind.as_str().into(), json!(limit >= 0 && active > limit));
    }
    Ok(over)
}

/// `GET /license/limits`: the limits that apply now and how much is used.
pub fn limits(_req: &Request) -> ApiResult {
    let s = State::load()?;
    let (limits, source) = s.effective_limits()?;
    let mut active = serde_json::Map::new();
    let mut remaining = serde_json::Map::new();
    let mut over = serde_json::Map::new();
    for kind in Kind::ALL {
        let n = store::resources(kind)?
            .iter()
            .filter(|r| !r.disabled)
            .count() as i64;
        let limit = kind.limit(&limits);
        active.insert(kind.as_str().into(), json!(n));
        remaining.insert(
            kind.as_str().into(),
            json!(if limit < 0 { -1 } else { (limit - n).max(0) }),
        );
        over.insert(kind.as_str().into(), json!(limit >= 0 && n > limit));
    }
    let within = over.values().all(|v| v.as_bool() == Some(false));
    ok(&json!({
        "tier": s.license().map_or("unlicensed", |l| l.tier.as_str()),
        "is_valid": s.is_valid(),
        "source": source,
        "limits": limits,
        "usage": usage()?,
        "active": active,
        "remaining": remaining,
        "over_limit": over,
        "within_limits": within,
    }))
}

pub fn resource_json(r: &store::Resource, offset: i64) -> Value {
    json!({
        "kind": r.kind,
        "id": r.id,
        "name": r.name,
        "created_at": time::format(r.created_at, offset),
        "disabled": r.disabled,
        "disabled_at": r.disabled_at.map(|t| time::format(t, offset)),
        "reason": r.disabled_reason,
    })
}

/// A resource's cursor in a list: `<kind>/<id>`.
pub fn resource_cursor(r: &store::Resource) -> String {
    format!("{}/{}", r.kind.as_str(), r.id)
}

/// The kind and id of a cursor [`resource_cursor`] handed out.
pub fn parse_resource_cursor(cursor: &str) -> Result<(Kind, u64), ApiError> {
    let (kind, id) = cursor.split_once('/').ok_or_else(paging::bad_cursor)?;
    let kind = Kind::parse(kind).ok_or_else(paging::bad_cursor)?;
    if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(paging::bad_cursor());
    }
    Ok((kind, id.parse().map_err(|_| paging::bad_cursor())?))
}

/// The list entries of stored resources (`res/...` or `disabled/...`
/// records) as `(cursor, JSON)`.
pub fn resource_entries(
    records: impl Iterator<Item = Result<(String, Vec<u8>), ApiError>>,
    offset: i64,
) -> impl Iterator<Item = paging::Entry> {
    records.map(move |record| {
        let (key, bytes) = record?;
        let r: store::Resource = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("{key}: {e}")))?;
        Ok((
            resource_cursor(&r),
            paging::to_json(&resource_json(&r, offset))?,
        ))
    })
}

/// `GET /license/disabled-resources`: `{count, disabled_resources}`, by
/// kind (accounts, databases, domains) then id; pages with `limit` and
/// `cursor` (`count` is then the total).
pub fn disabled_resources(req: &Request) -> ApiResult {
    let paging = paging::paging(req)?;
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) => {
            let (kind, id) = parse_resource_cursor(c)?;
            Some(store::disabled_key(kind, id))
        }
        None => None,
    };
    let offset = settings::utc_offset()?;
    let count = store::disabled_count()?;
    let head = format!("\"count\":{count},");
    let records = paging::KvIter::new(
        store::DISABLED_PREFIX.to_string(),
        after,
        paging::kv_page(paging.as_ref()),
    );
    paging::answer(
        &paging::Shape {
            head: head.as_bytes(),
            field: "disabled_resources",
        },
        paging.as_ref(),
        resource_entries(records, offset),
    )
}

/// Stores a verified file for `key` after checking it holds here and now.
fn install(key: &str, file: &[u8], checked_with_portal: bool) -> Result<State, ApiError> {
    let lic = open(file)?;
    if !lic.key.eq_ignore_ascii_case(key) {
        return Err(ApiError::new(
            422,
            "LICENSE_KEY_MISMATCH",
            "The license file is for another license key",
        ));
    }
    let now = time::now();
    let last_seen = store::observe_clock(now)?;
    let verdict = license::evaluate(
        &lic,
        &store::instance_id()?,
        now,
        last_seen,
        settings::clock_tolerance()?,
    );
    if let Some(i) = &verdict.invalid {
        return Err(invalid(i));
    }
    store::install_license(
        &lic.key,
        &String::from_utf8_lossy(file),
        now,
        checked_with_portal,
    )?;
    log::info!(
        "license {} for {} activated: tier {}, instance {}",
        lic.license_id,
        license::mask(&lic.key),
        lic.tier,
        lic.instance_id
    );
    State::load()
}

/// The signed file from a portal answer (`license` field), as bytes.
fn file_of(answer: &Value) -> Result<Vec<u8>, ApiError> {
    match answer.get("license") {
        Some(Value::Object(_)) => Ok(answer["license"].to_string().into_bytes()),
        Some(Value::String(s)) => Ok(s.clone().into_bytes()),
        _ => Err(ApiError::portal(
            "The license portal's answer has no license file",
        )),
    }
}

/// The answer of activate and refresh: the seed's `license` and `usage`
/// after `success` and `message`.
#[derive(Serialize)]
struct Changed<'a> {
    success: bool,
    message: &'a str,
    license: LicenseView,
    usage: Usage,
}

fn answer(s: &State, message: &str) -> ApiResult {
    ok(&Changed {
        success: true,
        message,
        license: s.view()?,
        usage: usage()?,
    })
}

/// `POST /license/activate {key}`: asks the portal for a license file for
/// this instance, verifies it and stores it. With `license` (the signed
/// file, an object or its JSON text) it activates offline instead, without
/// the portal.
pub fn activate(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let Some(key) = opt_str(&body, "key")? else {
        return Err(ApiError::validation("License key is required"));
    };
    let key = key.to_ascii_uppercase();
    let offline = match body.get("license") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(v @ Value::Object(_)) => Some(v.to_string().into_bytes()),
        Some(_) => {
            return Err(ApiError::validation(
                "license must be the signed license file",
            ));
        }
    };
    if let Some(file) = offline {
        let s = install(&key, &file, false)?;
        return answer(&s, "License activated from the uploaded file");
    }
    trusted_keys()?;
    let instance_id = store::instance_id()?;
    let a = portal::call(
        "POST",
        "/license/activate",
        Some(&json!({ "key": key, "instance_id": instance_id })),
    )?;
    if a.status != 200 {
        return Err(a.error());
    }
    let v = a
        .json()
        .ok_or_else(|| ApiError::portal("The license portal's answer is not JSON"))?;
    let s = install(&key, &file_of(&v)?, true)?;
    answer(&s, "License activated")
}

/// `POST /license/refresh`: a new file from the portal for the activated key.
pub fn refresh(_req: &Request) -> ApiResult {
    let stored = store::license()?
        .ok_or_else(|| ApiError::new(404, "LICENSE_NOT_FOUND", "No license is activated"))?;
    let instance_id = store::instance_id()?;
    let a = portal::call(
        "POST",
        "/license/refresh",
        Some(&json!({ "key": stored.key, "instance_id": instance_id })),
    )?;
    if a.status != 200 {
        let e = a.error();
        mark_revoked(&e, &stored.key)?;
        return Err(e);
    }
    let v = a
        .json()
        .ok_or_else(|| ApiError::portal("The license portal's answer is not JSON"))?;
    let s = install(&stored.key, &file_of(&v)?, true)?;
    answer(&s, "License refreshed")
}

/// Remembers a revocation the portal reported for `key`, so the license
/// stops counting as valid without another round trip. Only a stored
/// license of that key is marked: one activated while the portal was asked
/// is another license.
fn mark_revoked(e: &ApiError, key: &str) -> Result<(), ApiError> {
    if e.code == "LICENSE_REVOKED" {
        store::change_license(key, |s| s.revoked = true)?;
    }
    Ok(())
}

/// `POST /license/verify`: checks the stored file here (signature, instance,
/// dates, clock), then asks the portal whether the key is still good. An
/// unreachable portal does not fail the check (the file's own dates and
/// grace period govern offline use); the answer says it was not reached.
pub fn verify(_req: &Request) -> ApiResult {
    let s = State::load()?;
    if let Some(e) = s.problem() {
        return Err(e);
    }
    let Some(stored) = s.stored.clone() else {
        return Err(ApiError::new(
            404,
            "LICENSE_NOT_FOUND",
            "No license is activated",
        ));
    };
    let body = json!({ "key": stored.key, "instance_id": s.instance_id });
    let portal = match portal::call("POST", "/license/verify", Some(&body)) {
        Ok(a) if a.status == 200 => {
            // The portal was asked outside any transaction; what it said
            // is merged into the record as it is now. A refresh that
            // stored a new file meanwhile keeps it.
            store::change_license(&stored.key, |l| {
                l.last_checked = l.last_checked.max(Some(s.now));
            })?;
            let v = a.json().unwrap_or(Value::Null);
            json!({ "reachable": true, "status": v.get("status"), "revoked": v.get("revoked") })
        }
        Ok(a) => {
            let e = a.error();
            if e.status < 500 {
                mark_revoked(&e, &stored.key)?;
                return Err(e);
            }
            json!({ "reachable": false, "error": e.message })
        }
        Err(e) => json!({ "reachable": false, "error": e.message }),
    };
    let s = State::load()?;
    ok(&json!({
        "success": true,
        "message": "License is valid",
        "is_valid": true,
        "license": s.view()?,
        "usage": usage()?,
        "portal": portal,
    }))
}

/// `POST /license/enforce`: disables the newest resources over the limits
/// that apply now (the license's, or `unlicensed_limits` without a valid
/// license).
pub fn enforce(_req: &Request) -> ApiResult {
    let s = State::load()?;
    let (limits, source) = s.effective_limits()?;
    let reason = match s.problem() {
        None => format!(
            "over the {} tier's limit",
            s.license().map_or("", |l| l.tier.as_str())
        ),
        Some(e) => format!("over the unlicensed limit ({})", e.code),
    };
    let newly = enforce::enforce(&limits, &reason, s.now)?;
    if !newly.is_empty() {
        log::warn!("enforce disabled {} resources {reason}", newly.len());
    }
    let message = if newly.is_empty() {
        "Usage is within the limits".to_string()
    } else {
        format!("Disabled {} resources over the limits", newly.len())
    };
    let mut answer = json!({
        "success": true,
        "message": message,
        "limits_source": source,
        "limits": limits,
        "disabled": newly.iter().map(|r| resource_json(r, s.offset)).collect::<Vec<_>>(),
        "disabled_count": newly.len(),
        "disabled_total": store::disabled_count()?,
        "usage": usage()?,
    });
    if let Some(r) = paging::fitting(&answer)? {
        return Ok(r);
    }
    // The resources are disabled already: say so, and where to list them.
    answer["disabled"] = Value::Null;
    answer["message"] = json!(format!(
        "{message}; the list is too large for one answer: page GET /license/disabled-resources with limit and cursor"
    ));
    ok(&answer)
}

/// `POST /license/re-enable`: restores disabled resources, oldest first, as
/// far as the limits that apply now allow.
pub fn re_enable(_req: &Request) -> ApiResult {
    let s = State::load()?;
    let (limits, source) = s.effective_limits()?;
    let (restored, still) = enforce::re_enable(&limits)?;
    let message = format!("Re-enabled {} resources", restored.len());
    let mut answer = json!({
        "success": true,
        "message": message,
        "limits_source": source,
        "limits": limits,
        "re_enabled": restored.iter().map(|r| resource_json(r, s.offset)).collect::<Vec<_>>(),
        "re_enabled_count": restored.len(),
        "still_disabled": still.iter().map(|r| resource_json(r, s.offset)).collect::<Vec<_>>(),
        "still_disabled_count": still.len(),
        "usage": usage()?,
    });
    if let Some(r) = paging::fitting(&answer)? {
        return Ok(r);
    }
    // The resources are restored already: say so with the counts, and
    // where to list what is still disabled.
    answer["re_enabled"] = Value::Null;
    answer["still_disabled"] = Value::Null;
    answer["message"] = json!(format!(
        "{message}; the lists are too large for one answer: page GET /license/disabled-resources with limit and cursor for those still disabled"
    ));
    ok(&answer)
}
