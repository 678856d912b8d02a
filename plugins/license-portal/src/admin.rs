//! The operator's surface, on the host's admin listener at
//! `/plugins/license-portal/admin` (behind the admin token): signing keys,
//! license keys, releases.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wasmgate_sdk::{Error, Params, Request, Response, Router, crypto, kv};

use crate::fail;
use crate::paging;
use crate::public::order;
use crate::signing::{self, ALG, Active};
use crate::store::{self, CHUNK, LicenseKey, Limits, MAX_CHANGELOG, Release};

pub fn handle(req: &Request) -> Result<Response, Error> {
    Router::new()
        .post("/signing-keys", new_signing_key)
        .get("/signing-keys", signing_keys)
        .post("/keys", create_key)
        .get("/keys", list_keys)
        .get("/keys/:key", show_key)
        .post("/keys/:key/revoke", revoke_key)
        .post("/keys/:key/release", release_key)
        .post("/releases", publish)
        .get("/releases", all_releases)
        .handle(req)
}

fn new_signing_key(_: &Request, _: &Params) -> Result<Response, Error> {
    Ok(Response::json(
        201,
        &json!({ "success": true, "key": signing::generate()? }),
    ))
}

fn signing_keys(req: &Request, _: &Params) -> Result<Response, Error> {
    signing::list(req)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    tier: String,
    #[serde(default = "unlimited")]
    max_users: i64,
    #[serde(default = "unlimited")]
    max_domains: i64,
    #[serde(default = "unlimited")]
    max_databases: i64,
    /// Unix seconds; absent with no `valid_days`: never expires.
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    valid_days: Option<u64>,
    /// A key of the operator's choosing instead of a generated one.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    note: String,
}

fn unlimited() -> i64 {
    -1
}

fn create_key(req: &Request, _: &Params) -> Result<Response, Error> {
    let new: NewKey = match serde_json::from_slice(req.body()) {
        Ok(n) => n,
        Err(e) => return Ok(fail(400, "VALIDATION_ERROR", &format!("invalid body: {e}"))),
    };
    if !store::valid_tier(&new.tier) {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "tier must be 1 to 32 characters of a-z 0-9 - _",
        ));
    }
    if [new.max_users, new.max_domains, new.max_databases]
        .iter()
        .any(|n| *n < -1)
    {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "limits are -1 (unlimited) or at least 0",
        ));
    }
    if new.note.len() > 1024 {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "note is longer than 1024 bytes",
        ));
    }
    let now = store::now();
    let expires_at = match (new.expires_at, new.valid_days) {
        (Some(_), Some(_)) => {
            return Ok(fail(
                400,
                "VALIDATION_ERROR",
                "give expires_at or valid_days, not both",
            ));
        }
        (Some(e), None) => Some(e),
        (None, Some(d)) if d > 0 && d <= 36_500 => Some(now + d * 86_400),
        (None, Some(_)) => {
            return Ok(fail(
                400,
                "VALIDATION_ERROR",
                "valid_days must be 1 to 36500",
            ));
        }
        (None, None) => None,
    };
    let key = match &new.key {
        Some(k) => match store::normalise_key(k) {
            Some(k) => k,
            None => {
                return Ok(fail(
                    400,
                    "VALIDATION_ERROR",
                    "key must be 8 to 64 characters of A-Z 0-9 -",
                ));
            }
        },
        None => store::new_key(&crypto::random_bytes(12)),
    };
    let record = LicenseKey {
        key: key.clone(),
        tier: new.tier,
        limits: Limits {
            max_users: new.max_users,
            max_domains: new.max_domains,
            max_databases: new.max_databases,
        },
        expires_at,
        created_at: now,
        revoked: false,
        revoked_at: None,
        instance_id: None,
        activated_at: None,
        last_issued_at: None,
        issued_count: 0,
        note: new.note,
    };
    let created = kv::transaction(|t| {
        if t.get(&store::license_kv(&key))?.is_some() {
            return Ok(false);
        }
        t.set_json(&store::license_kv(&key), &record)?;
        Ok(true)
    })?;
    if !created {
        return Ok(fail(409, "KEY_EXISTS", "That license key exists"));
    }
    Ok(Response::json(
        201,
        &json!({ "success": true, "key": record.view() }),
    ))
}

/// `GET /keys`: `{"keys":[...],"success":true}`, oldest first, then by
/// key; pages with `limit` and `cursor` (a key).
fn list_keys(req: &Request, _: &Params) -> Result<Response, Error> {
    let paging = match paging::paging(req) {
        Ok(p) => p,
        Err(refused) => return Ok(refused),
    };
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) => match kv::get_json::<LicenseKey>(&store::license_kv(c))? {
            Some(k) => Some((k.created_at, k.key)),
            None => return Ok(paging::bad_cursor()),
        },
        None => None,
    };
    let mut items = Vec::new();
    paging::walk(
        store::LICENSE_PREFIX,
        paging::MAX_LIMIT as u32,
        |key, value| {
            let k: LicenseKey = serde_json::from_slice(value)
                .map_err(|e| Error::internal(format!("{key}: {e}")))?;
            items.push(((k.created_at, k.key.clone()), k.key));
            Ok(())
        },
    )?;
    paging::sorted(
        "keys",
        paging.as_ref(),
        items,
        after,
        |_, key| key.to_string(),
        |key| Ok(kv::get_json::<LicenseKey>(&store::license_kv(key))?.map(|k| k.view())),
    )
}

fn show_key(_: &Request, p: &Params) -> Result<Response, Error> {
    let Some(key) = store::normalise_key(&p["key"]) else {
        return Ok(fail(404, "LICENSE_NOT_FOUND", "Unknown license key"));
    };
    match kv::get_json::<LicenseKey>(&store::license_kv(&key))? {
        Some(k) => Ok(Response::json(
            200,
            &json!({ "success": true, "key": k.view() }),
        )),
        None => Ok(fail(404, "LICENSE_NOT_FOUND", "Unknown license key")),
    }
}

/// Changes one key record in a transaction.
fn update_key(p: &Params, change: impl Fn(&mut LicenseKey)) -> Result<Response, Error> {
    let Some(key) = store::normalise_key(&p["key"]) else {
        return Ok(fail(404, "LICENSE_NOT_FOUND", "Unknown license key"));
    };
    let updated = kv::transaction(|t| {
        let Some(mut record) = t.get_json::<LicenseKey>(&store::license_kv(&key))? else {
            return Ok(None);
        };
        change(&mut record);
        t.set_json(&store::license_kv(&key), &record)?;
        Ok(Some(record))
    })?;
    match updated {
        Some(k) => Ok(Response::json(
            200,
            &json!({ "success": true, "key": k.view() }),
        )),
        None => Ok(fail(404, "LICENSE_NOT_FOUND", "Unknown license key")),
    }
}

fn revoke_key(_: &Request, p: &Params) -> Result<Response, Error> {
    let now = store::now();
    update_key(p, |k| {
        if !k.revoked {
            k.revoked = true;
            k.revoked_at = Some(now);
        }
    })
}

fn release_key(_: &Request, p: &Params) -> Result<Response, Error> {
    update_key(p, |k| {
        k.instance_id = None;
        k.activated_at = None;
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRelease {
    version: String,
    #[serde(default = "stable")]
    channel: String,
    #[serde(default)]
    changelog: String,
    /// Standard base64 of the artefact.
    artefact: String,
}

fn stable() -> String {
    "stable".into()
}

/// The signed release manifest; field order is the order of the bytes.
#[derive(Serialize)]
struct ReleasePayload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    key_id: &'a str,
    alg: &'static str,
    version: &'a str,
    channel: &'a str,
    sha256: &'a str,
    size: u64,
    published_at: u64,
}

fn publish(req: &Request, _: &Params) -> Result<Response, Error> {
    let new: NewRelease = match serde_json::from_slice(req.body()) {
        Ok(n) => n,
        Err(e) => return Ok(fail(400, "VALIDATION_ERROR", &format!("invalid body: {e}"))),
    };
    if store::parse_version(&new.version).is_none() {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "version must be MAJOR.MINOR.PATCH, digits only",
        ));
    }
    if !store::valid_channel(&new.channel) {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "channel must be 1 to 32 characters of a-z 0-9 -",
        ));
    }
    if new.changelog.len() > MAX_CHANGELOG {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            &format!("changelog is longer than {MAX_CHANGELOG} bytes"),
        ));
    }
    let Ok(artefact) = B64.decode(new.artefact.as_bytes()) else {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            "artefact is not standard base64",
        ));
    };
    // A download answers the artefact as its body: one that would not fit
    // in the response cap could be published but never fetched.
    let max = store::setting_u64("max_artefact_bytes", 8 << 20)?
        .min(crate::paging::max_response_bytes()? as u64);
    if artefact.is_empty() || artefact.len() as u64 > max {
        return Ok(fail(
            400,
            "VALIDATION_ERROR",
            &format!("artefact must be 1 to {max} bytes"),
        ));
    }
    let Some(signer) = Active::load()? else {
        return Ok(fail(503, "NO_SIGNING_KEY", "The portal has no signing key"));
    };
    let sha256 = crypto::hex(&crypto::sha256(&artefact));
    let now = store::now();
    let payload = ReleasePayload {
        kind: "release",
        key_id: &signer.key_id,
        alg: ALG,
        version: &new.version,
        channel: &new.channel,
        sha256: &sha256,
        size: artefact.len() as u64,
        published_at: now,
    };
    let release = Release {
        version: new.version.clone(),
        channel: new.channel.clone(),
        changelog: new.changelog.clone(),
        published_at: now,
        size: artefact.len() as u64,
        sha256: sha256.clone(),
        chunks: artefact.chunks(CHUNK).count() as u32,
        manifest: signer.seal(&payload)?,
    };
    let published = kv::transaction(|t| {
        let meta = store::release_kv(&release.channel, &release.version);
        if t.get(&meta)?.is_some() {
            return Ok(false);
        }
        for (n, chunk) in artefact.chunks(CHUNK).enumerate() {
            t.set(
                &store::chunk_kv(&release.channel, &release.version, n as u32),
                chunk,
            )?;
        }
        t.set_json(&meta, &release)?;
        Ok(true)
    })?;
    if !published {
        return Ok(fail(
            409,
            "RELEASE_EXISTS",
            "That version is already published on that channel",
        ));
    }
    Ok(Response::json(
        201,
        &json!({ "success": true, "release": release.view(true) }),
    ))
}

/// `GET /releases`: `{"releases":[...],"success":true}`, channel by
/// channel, each highest version first, without manifests; pages with
/// `limit` and `cursor` (`<channel>/<version>`).
fn all_releases(req: &Request, _: &Params) -> Result<Response, Error> {
    let paging = match paging::paging(req) {
        Ok(p) => p,
        Err(refused) => return Ok(refused),
    };
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) => match c.split_once('/').and_then(|(channel, version)| {
            let o = store::valid_channel(channel).then(|| order(version))??;
            Some((channel.to_string(), o))
        }) {
            Some(a) => Some(a),
            None => return Ok(paging::bad_cursor()),
        },
        None => None,
    };
    let mut items = Vec::new();
    paging::walk(store::RELEASE_PREFIX, store::RELEASE_PAGE, |key, _| {
        let rest = &key[store::RELEASE_PREFIX.len()..];
        if let Some((channel, version)) = rest.split_once('/')
            && let Some(o) = order(version)
        {
            items.push(((channel.to_string(), o), rest.to_string()));
        }
        Ok(())
    })?;
    paging::sorted(
        "releases",
        paging.as_ref(),
        items,
        after,
        |_, id| id.to_string(),
        |id| {
            let Some((channel, version)) = id.split_once('/') else {
                return Ok(None);
            };
            Ok(
                kv::get_json::<Release>(&store::release_kv(channel, version))?
                    .map(|r| r.view(false)),
            )
        },
    )
}
