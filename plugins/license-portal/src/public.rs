//! What panels call, under the public mount (default `/portal/`).

use serde::Serialize;
use serde_json::{Value, json};
use wasmgate_sdk::{Error, Params, Request, Response, Router, kv};

use std::cmp::Reverse;

use crate::fail;
use crate::paging;
use crate::signing::{self, ALG, Active};
use crate::store::{self, LicenseKey, Limits, Release};

pub fn handle(req: &Request) -> Result<Response, Error> {
    Router::new()
        .get("/keys", keys)
        .post("/license/activate", activate)
        .post("/license/refresh", refresh)
        .post("/license/verify", verify)
        .get("/releases/latest", latest)
        .get("/releases", releases)
        .get("/download/:channel/:version", download)
        .handle(req)
}

fn keys(req: &Request, _: &Params) -> Result<Response, Error> {
    signing::list(req)
}

/// The signed license payload; field order is the order of the bytes.
#[derive(Serialize)]
struct LicensePayload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    license_id: String,
    key_id: &'a str,
    alg: &'static str,
    key: &'a str,
    key_masked: String,
    tier: &'a str,
    limits: Limits,
    issued_at: u64,
    not_before: u64,
    expires_at: Option<u64>,
    valid_until: u64,
    grace_days: u64,
    instance_id: &'a str,
}

#[derive(PartialEq, Clone, Copy)]
enum Mode {
    Activate,
    Refresh,
    Verify,
}

fn activate(req: &Request, _: &Params) -> Result<Response, Error> {
    license(req, Mode::Activate)
}

fn refresh(req: &Request, _: &Params) -> Result<Response, Error> {
    license(req, Mode::Refresh)
}

fn verify(req: &Request, _: &Params) -> Result<Response, Error> {
    license(req, Mode::Verify)
}

/// The checks every license call shares, then the call's own work.
fn license(req: &Request, mode: Mode) -> Result<Response, Error> {
    // An empty or non-JSON body reads as no fields, as the seed's 400 shows.
    let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
    let key = body.get("key").and_then(Value::as_str).unwrap_or("").trim();
    if key.is_empty() {
        return Ok(fail(400, "VALIDATION_ERROR", "License key is required"));
    }
    let Some(key) = store::normalise_key(key) else {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "License key format is invalid",
        ));
    };
    let instance = body
        .get("instance_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if instance.is_empty() {
        return Ok(fail(400, "VALIDATION_ERROR", "instance_id is required"));
    }
    if !store::valid_instance_id(instance) {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "instance_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let signer = if mode == Mode::Verify {
        None
    } else {
        match Active::load()? {
            Some(s) => Some(s),
            None => return Ok(fail(503, "NO_SIGNING_KEY", "The portal has no signing key")),
        }
    };
    let refresh_days = store::setting_u64("refresh_days", 14)?;
    let grace_days = store::setting_u64("grace_days", 7)?;
    let license_id = format!(
        "lic_{}",
        wasmgate_sdk::crypto::hex(&wasmgate_sdk::crypto::random_bytes(8))
    );

    // One transaction: two panels activating an unbound key at once cannot
    // both bind it.
    let outcome = kv::transaction(|t| {
        let now = store::now();
        let Some(mut record) = t.get_json::<LicenseKey>(&store::license_kv(&key))? else {
            return Ok(Err(fail(404, "LICENSE_NOT_FOUND", "Unknown license key")));
        };
        if record.revoked {
            return Ok(Err(fail(
                403,
                "LICENSE_REVOKED",
                "License key has been revoked",
            )));
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Ok(Err(fail(403, "LICENSE_EXPIRED", "License key has expired")));
        }
        match (&record.instance_id, mode) {
            (Some(bound), _) if bound != instance => {
                return Ok(Err(fail(
                    409,
                    "INSTANCE_MISMATCH",
                    "License key is activated on another instance",
                )));
            }
            (None, Mode::Refresh | Mode::Verify) => {
                return Ok(Err(fail(
                    409,
                    "NOT_ACTIVATED",
                    "License key is not activated",
                )));
            }
            _ => {}
        }
        let Some(signer) = &signer else {
            return Ok(Ok(Response::json(
                200,
                &json!({
                    "success": true,
                    "status": "active",
                    "key_masked": store::mask(&record.key),
                    "tier": record.tier,
                    "limits": record.limits,
                    "expires_at": record.expires_at,
                    "revoked": false,
                }),
            )));
        };
        let refresh_at = now.saturating_add(refresh_days.saturating_mul(86_400));
        let valid_until = record.expires_at.map_or(refresh_at, |e| e.min(refresh_at));
        let payload = LicensePayload {
            kind: "license",
            license_id: license_id.clone(),
            key_id: &signer.key_id,
            alg: ALG,
            key: &record.key,
            key_masked: store::mask(&record.key),
            tier: &record.tier,
            limits: record.limits,
            issued_at: now,
            not_before: now,
            expires_at: record.expires_at,
            valid_until,
            grace_days,
            instance_id: instance,
        };
        let envelope = signer.seal(&payload)?;
        if record.instance_id.is_none() {
            record.instance_id = Some(instance.to_string());
            record.activated_at = Some(now);
        }
        record.last_issued_at = Some(now);
        record.issued_count += 1;
        t.set_json(&store::license_kv(&key), &record)?;
        Ok(Ok(Response::json(
            200,
            &json!({
                "success": true,
                "license": envelope,
                "key_masked": store::mask(&record.key),
                "tier": record.tier,
                "expires_at": record.expires_at,
                "valid_until": valid_until,
            }),
        )))
    })?;
    Ok(outcome.unwrap_or_else(|refused| refused))
}

/// Where a release is in its channel's list: highest version first
/// (numerically), then by the version's text.
pub type Order = (Reverse<(u64, u64, u64)>, String);

pub fn order(version: &str) -> Option<Order> {
    Some((Reverse(store::parse_version(version)?), version.to_string()))
}

/// The releases of `channel` in their order, as (order, version), from
/// their kv keys: a release's value (its changelog and manifest) is read
/// only when it is listed.
pub fn channel_versions(channel: &str) -> Result<Vec<(Order, String)>, Error> {
    let prefix = format!("{}{channel}/", store::RELEASE_PREFIX);
    let mut all = Vec::new();
    paging::walk(&prefix, store::RELEASE_PAGE, |key, _| {
        let version = &key[prefix.len()..];
        if let Some(o) = order(version) {
            all.push((o, version.to_string()));
        }
        Ok(())
    })?;
    all.sort();
    Ok(all)
}

fn channel_of(req: &Request) -> Result<String, Response> {
    let channel = req.query("channel").unwrap_or_else(|| "stable".into());
    if store::valid_channel(&channel) {
        Ok(channel)
    } else {
        Err(fail(
            400,
            "VALIDATION_ERROR",
            "channel must be 1 to 32 characters of a-z 0-9 -",
        ))
    }
}

fn latest(req: &Request, _: &Params) -> Result<Response, Error> {
    let channel = match channel_of(req) {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    let highest = match channel_versions(&channel)?.first() {
        Some((_, version)) => kv::get_json::<Release>(&store::release_kv(&channel, version))?,
        None => None,
    };
    match highest {
        Some(r) => Ok(Response::json(
            200,
            &json!({ "success": true, "release": r.view(true) }),
        )),
        None => Ok(fail(
            404,
            "NO_RELEASE",
            &format!("No release on channel {channel}"),
        )),
    }
}

/// `GET releases?channel=`: `{"releases":[...],"success":true}`, highest
/// version first, without manifests; pages with `limit` and `cursor` (a
/// version: the page lists the releases below it).
fn releases(req: &Request, _: &Params) -> Result<Response, Error> {
    let channel = match channel_of(req) {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    let paging = match paging::paging(req) {
        Ok(p) => p,
        Err(refused) => return Ok(refused),
    };
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) => match order(c) {
            Some(o) => Some(o),
            None => return Ok(paging::bad_cursor()),
        },
        None => None,
    };
    paging::sorted(
        "releases",
        paging.as_ref(),
        channel_versions(&channel)?,
        after,
        |_, version| version.to_string(),
        |version| {
            Ok(
                kv::get_json::<Release>(&store::release_kv(&channel, version))?
                    .map(|r| r.view(false)),
            )
        },
    )
}

fn download(_: &Request, p: &Params) -> Result<Response, Error> {
    let (channel, version) = (&p["channel"], &p["version"]);
    if !store::valid_channel(channel) || store::parse_version(version).is_none() {
        return Ok(fail(404, "NO_RELEASE", "No such release"));
    }
    let Some(release) = kv::get_json::<Release>(&store::release_kv(channel, version))? else {
        return Ok(fail(404, "NO_RELEASE", "No such release"));
    };
    let mut bytes = Vec::with_capacity(release.size as usize);
    for n in 0..release.chunks {
        let chunk = kv::get(&store::chunk_kv(channel, version, n))?
            .ok_or_else(|| Error::internal("a piece of the artefact is missing"))?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(Response::bytes(200, "application/octet-stream", bytes)
        .with_header("x-artefact-sha256", release.sha256.clone())
        .with_header(
            "content-disposition",
            format!(
                "attachment; filename=\"wispanel-{}-{}.bin\"",
                release.channel, release.version
            ),
        ))
}
