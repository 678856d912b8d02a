//! The version endpoints: `GET version/info`, `check`, `changelog`,
//! `update/status`; `POST version/update`, `direct-update`.
//!
//! An update is staged, never installed: the release manifest (signed by the
//! portal, the same envelope as a license, `type: "release"`) is verified,
//! the artefact downloaded, its size and SHA-256 compared with the
//! manifest's, and the bytes kept in kv with the state `staged`. Replacing
//! the running binary is someone else's job.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmgate_sdk::{Request, crypto, kv, log};

use crate::api::{ApiError, ApiResult, body_object, ok, opt_str};
use crate::paging;
use crate::portal;
use crate::settings;
use crate::signed::{self, Refusal};
use crate::time;

/// The staged artefact is kept in kv values of this many bytes.
pub const CHUNK: usize = 512 * 1024;
const STATE: &str = "update/state";

/// What `update/status` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateState {
    /// idle, downloading, verifying, staged or failed.
    pub state: String,
    /// 0..=100.
    pub progress: u8,
    pub message: String,
    pub target_version: Option<String>,
    pub error: Option<ErrorInfo>,
    pub staged: Option<Staged>,
    /// Unix seconds.
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// A verified artefact waiting to be installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    pub version: String,
    pub channel: String,
    pub size: u64,
    pub sha256: String,
    pub source: String,
    /// Unix seconds.
    pub staged_at: i64,
    pub chunks: u32,
    /// The chunks are at `update/blob/<blob>/<n:04>`; None: at
    /// `update/blob/<n:04>`, where releases before this one put them.
    #[serde(default)]
    pub blob: Option<String>,
}

fn idle() -> UpdateState {
    UpdateState {
        state: "idle".into(),
        message: "No update has been staged".into(),
        ..UpdateState::default()
    }
}

fn load_state() -> Result<UpdateState, ApiError> {
    Ok(kv::get_json(STATE)?.unwrap_or_else(idle))
}

/// Changes `update/state` with `f`, read and written in one transaction, so
/// a change never writes back fields another request changed meanwhile.
fn set_state(f: impl Fn(&mut UpdateState)) -> Result<UpdateState, ApiError> {
    Ok(kv::transaction(|txn| {
        let mut s = txn.get_json(STATE)?.unwrap_or_else(idle);
        f(&mut s);
        s.updated_at = Some(time::now());
        txn.set_json(STATE, &s)?;
        Ok(s)
    })?)
}

/// `a > b` as versions: semver when both parse, else numeric dotted parts.
pub fn newer(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => {
            let parts = |v: &str| {
                v.split('.')
                    .map(|p| p.parse::<u64>().unwrap_or(0))
                    .collect::<Vec<_>>()
            };
            parts(a) > parts(b)
        }
    }
}

/// `GET /version/info`: the seed's shape.
pub fn info(_req: &Request) -> ApiResult {
    let version = settings::version();
    ok(&VersionInfo {
        info: format!("WisPanel v{version}"),
        version,
        channel: settings::channel(),
        build_time: settings::string("build_time", "unknown"),
        git_commit: settings::string("git_commit", "unknown"),
    })
}

/// `version/info`, its fields in the seed's order.
#[derive(Serialize)]
struct VersionInfo {
    version: String,
    channel: String,
    build_time: String,
    git_commit: String,
    info: String,
}

/// `version/check`, its fields in the seed's order.
#[derive(Serialize)]
struct VersionCheck {
    update_available: bool,
    current_version: String,
    latest_version: String,
    /// The latest release's changelog (markdown); "" when there is none.
    changelog: String,
}

/// The latest release of our channel from the portal; None when it has none.
fn latest() -> Result<Option<Value>, ApiError> {
    let a = portal::call(
        "GET",
        &format!("/releases/latest?channel={}", settings::channel()),
        None,
    )?;
    match a.status {
        200 => {
            let v = a
                .json()
                .ok_or_else(|| ApiError::portal("The license portal's answer is not JSON"))?;
            Ok(Some(v.get("release").cloned().ok_or_else(|| {
                ApiError::portal("The portal's answer has no release")
            })?))
        }
        404 => Ok(None),
        _ => Err(a.error()),
    }
}

/// `GET /version/check`: the seed's shape.
pub fn check(_req: &Request) -> ApiResult {
    let current = settings::version();
    let release = latest()?;
    let latest_version = release
        .as_ref()
        .and_then(|r| r.get("version").and_then(Value::as_str))
        .unwrap_or(&current)
        .to_string();
    ok(&VersionCheck {
        update_available: newer(&latest_version, &current),
        changelog: release
            .as_ref()
            .and_then(|r| r.get("changelog"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        current_version: current,
        latest_version,
    })
}

/// A version as the portal publishes them, `MAJOR.MINOR.PATCH` in digits:
/// what a changelog cursor is.
fn is_release_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The releases of a channel as the portal lists them (highest version
/// first), fetched a page of the portal's `GET /releases` at a time, from
/// the first release below `after`.
struct PortalReleases {
    channel: String,
    page: usize,
    /// The page's cursor: only releases below it are listed, even from a
    /// portal that does not page and answers them all.
    below: Option<String>,
    after: Option<String>,
    buffer: std::collections::VecDeque<Value>,
    done: bool,
}

impl PortalReleases {
    fn new(channel: String, after: Option<String>, page: usize) -> PortalReleases {
        PortalReleases {
            channel,
            page: page.clamp(1, paging::MAX_LIMIT),
            below: after.clone(),
            after,
            buffer: Default::default(),
            done: false,
        }
    }

    fn fetch(&mut self) -> Result<(), ApiError> {
        let mut path = format!("/releases?channel={}&limit={}", self.channel, self.page);
        if let Some(after) = &self.after {
            path.push_str(&format!("&cursor={after}"));
        }
        let a = portal::call("GET", &path, None)?;
        if a.status != 200 {
            return Err(a.error());
        }
        let v = a
            .json()
            .ok_or_else(|| ApiError::portal("The license portal's answer is not JSON"))?;
        let list = v
            .get("releases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // A portal that does not page answers every release at once,
        // without next_cursor.
        let next = v
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.done = list.is_empty() || next.is_none() || next == self.after;
        self.after = next;
        self.buffer.extend(list);
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Value>, ApiError> {
        loop {
            if self.buffer.is_empty() && !self.done {
                self.fetch()?;
            }
            let Some(r) = self.buffer.pop_front() else {
                return Ok(None);
            };
            let v = r.get("version").and_then(Value::as_str).unwrap_or("");
            if self.below.as_deref().is_none_or(|b| newer(b, v)) {
                return Ok(Some(r));
            }
        }
    }
}

/// `GET /version/changelog`: the releases of our channel newer than this
/// panel, newest first, and their changelogs joined; with none newer, the
/// current version's own entry. Pages with `limit` and `cursor` (a
/// version): a page's `changelog` joins its own entries.
pub fn changelog(req: &Request) -> ApiResult {
    let paging = paging::paging(req)?;
    let after = match paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        Some(c) if is_release_version(c) => Some(c.to_string()),
        Some(_) => return Err(paging::bad_cursor()),
        None => None,
    };
    let cap = paging::max_response_bytes()?;
    let current = settings::version();
    let channel = settings::channel();
    let offset = settings::utc_offset()?;
    let version = |r: &Value| {
        r.get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    // One more than a page holds, to know whether more follow.
    let portal_page = paging.as_ref().map_or(paging::MAX_LIMIT, |p| p.limit + 1);
    let mut releases = PortalReleases::new(channel.clone(), after.clone(), portal_page);
    let first = releases.next()?;
    let highest = match (&after, &first) {
        (None, Some(r)) => Some(version(r)),
        (None, None) => None,
        // The highest is before the cursor: the portal's latest.
        (Some(_), _) => latest()?.as_ref().map(version),
    };
    let latest_version = highest
        .filter(|v| newer(v, &current))
        .unwrap_or_else(|| current.clone());

    let answer = |entries: Vec<Value>, text: String, next: Option<Option<&str>>| {
        let mut v = json!({
            "current_version": current,
            "latest_version": latest_version,
            "channel": channel,
            "changelog": text,
            "releases": entries,
        });
        if let Some(next) = next {
            v["next_cursor"] = json!(next);
        }
        v
    };
    // Every byte but the entries and their changelogs (and a page's
    // next_cursor, whose room each entry keeps free).
    let mut size = paging::to_json(&answer(Vec::new(), String::new(), None))?.len();
    let cursor_key = ",\"next_cursor\":".len();
    let mut entries: Vec<Value> = Vec::new();
    let mut text = String::new();
    let mut more = false;
    let mut next = first;
    while let Some(r) = next.take() {
        let v = version(&r);
        let own = after.is_none() && entries.is_empty() && v == current;
        if !newer(&v, &current) && !own {
            break;
        }
        if paging.as_ref().is_some_and(|p| entries.len() == p.limit) {
            more = true;
            break;
        }
        let log = r.get("changelog").and_then(Value::as_str).unwrap_or("");
        let entry = json!({
            "version": v,
            "published_at": r.get("published_at").and_then(Value::as_i64).map(|t| time::format(t, offset)),
            "changelog": log,
        });
        let sep = if entries.is_empty() { 0 } else { 1 + 4 };
        let grows = paging::to_json(&entry)?.len() + paging::to_json(log)?.len() - 2 + sep;
        let room = match &paging {
            Some(_) => cursor_key + paging::to_json(&v)?.len().max(4),
            None => 0,
        };
        if size + grows + room > cap {
            if paging.is_none() {
                return Err(paging::too_large(cap));
            }
            if entries.is_empty() {
                return Err(paging::entry_too_large(cap));
            }
            more = true;
            break;
        }
        size += grows;
        if !entries.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(log);
        entries.push(entry);
        if own {
            break;
        }
        next = releases.next()?;
    }
    let last = entries
        .last()
        .and_then(|e| e["version"].as_str())
        .map(str::to_string);
    let next = paging
        .as_ref()
        .map(|_| if more { last.as_deref() } else { None });
    let body = paging::to_json(&answer(entries, text, next))?;
    if body.len() > cap {
        return Err(paging::too_large(cap));
    }
    Ok(wasmgate_sdk::Response::bytes(200, "application/json", body))
}

fn staged_json(st: &Staged, offset: i64) -> Value {
    json!({
        "version": st.version,
        "channel": st.channel,
        "size": st.size,
        "sha256": st.sha256,
        "source": st.source,
        "staged_at": time::format(st.staged_at, offset),
    })
}

const BLOB_PREFIX: &str = "update/blob/";

/// The kv key of chunk `n` of the artefact kept under `blob` (None: the
/// layout before blob ids).
fn blob_key(blob: Option<&str>, n: u32) -> String {
    match blob {
        Some(id) => format!("{BLOB_PREFIX}{id}/{n:04}"),
        None => format!("{BLOB_PREFIX}{n:04}"),
    }
}

/// A new blob id: the Unix time it was made, then random hex, so that a
/// blob left behind by a staging that never finished can be told from one
/// still being written.
fn new_blob_id(now: i64) -> String {
    format!("{now:011}-{}", crypto::hex(&crypto::random_bytes(8)))
}

/// How long a staging may run before its unreferenced chunks count as left
/// behind (far longer than any request may take).
const ABANDONED_AFTER_SECS: i64 = 3600;

/// Deletes the chunks of `blob`.
fn delete_blob(blob: Option<&str>, chunks: u32) -> Result<(), ApiError> {
    for n in 0..chunks {
        kv::delete(&blob_key(blob, n))?;
    }
    Ok(())
}

/// Whether the chunk at `update/blob/<rest>` is left behind: of the layout
/// before blob ids, or of a blob that is not `keep` and was begun more than
/// [`ABANDONED_AFTER_SECS`] before `now`.
fn is_abandoned(rest: &str, keep: &str, now: i64) -> bool {
    match rest.split_once('/') {
        None => true,
        Some((id, _)) => {
            id != keep
                && id
                    .split('-')
                    .next()
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_none_or(|t| t + ABANDONED_AFTER_SECS < now)
        }
    }
}

/// Deletes chunks nothing refers to: those of the previous layout and
/// those of a staging that began more than [`ABANDONED_AFTER_SECS`] ago and
/// is not `keep` (the one staged now). A staging in progress is younger and
/// keeps its chunks. Pages of two entries, to hold few chunks in memory.
fn delete_abandoned(keep: &str, now: i64) -> Result<(), ApiError> {
    use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
    let mut cursor: Option<String> = None;
    loop {
        let page =
            raw::list(BLOB_PREFIX, cursor.as_deref(), 2).map_err(wasmgate_sdk::Error::from)?;
        for (key, _) in &page.entries {
            let abandoned = is_abandoned(&key[BLOB_PREFIX.len()..], keep, now);
            if abandoned {
                kv::delete(key)?;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// `GET /update/staged` on the admin surface: the staged artefact as kv
/// holds it, checked against what `update/state` says was staged, so an
/// operator (or the installer) can tell that the bytes are whole before
/// installing them. The state and every chunk are read in one transaction.
pub fn check_staged() -> ApiResult {
    let found = kv::transaction(|txn| {
        let Some(staged) = txn.get_json::<UpdateState>(STATE)?.and_then(|s| s.staged) else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(staged.size).unwrap_or(0));
        let mut chunks = 0u32;
        for n in 0..staged.chunks {
            let Some(chunk) = txn.get(&blob_key(staged.blob.as_deref(), n))? else {
                break;
            };
            bytes.extend_from_slice(&chunk);
            chunks += 1;
        }
        Ok(Some((staged, chunks, bytes)))
    })?;
    let Some((staged, chunks, bytes)) = found else {
        return Err(ApiError::not_found("No update is staged"));
    };
    let sha256 = crypto::hex(&crypto::sha256(&bytes));
    let intact = chunks == staged.chunks
        && bytes.len() as u64 == staged.size
        && crypto::constant_time_eq(sha256.as_bytes(), staged.sha256.as_bytes());
    let offset = settings::utc_offset()?;
    ok(&json!({
        "success": true,
        "staged": staged_json(&staged, offset),
        "stored": { "chunks": chunks, "size": bytes.len(), "sha256": sha256 },
        "intact": intact,
    }))
}

/// `GET /version/update/status`.
pub fn status(_req: &Request) -> ApiResult {
    let s = load_state()?;
    let offset = settings::utc_offset()?;
    ok(&json!({
        "state": s.state,
        "progress": s.progress,
        "message": s.message,
        "current_version": settings::version(),
        "target_version": s.target_version,
        "error": s.error,
        "staged": s.staged.as_ref().map(|st| staged_json(st, offset)),
        "updated_at": s.updated_at.map(|t| time::format(t, offset)),
    }))
}

/// The verified release manifest.
struct Manifest {
    version: String,
    channel: String,
    sha256: String,
    size: u64,
}

fn open_manifest(doc: &Value) -> Result<Manifest, ApiError> {
    let bytes = match doc {
        Value::String(s) => s.clone().into_bytes(),
        Value::Object(_) => doc.to_string().into_bytes(),
        _ => {
            return Err(ApiError::new(
                422,
                "UPDATE_MALFORMED",
                "The release manifest is missing",
            ));
        }
    };
    let trusted = settings::trusted_keys()?;
    let opened =
        signed::open(&bytes, &trusted, "release", crypto::ed25519_verify).map_err(|r| {
            let code = match r {
                Refusal::Malformed(_) => "UPDATE_MALFORMED",
                Refusal::UnsupportedAlgorithm(_) => "UPDATE_ALGORITHM_UNSUPPORTED",
                Refusal::UnknownKey(_) => "UPDATE_KEY_UNKNOWN",
                Refusal::BadSignature => "UPDATE_SIGNATURE_INVALID",
                Refusal::BadPayload(_) => "UPDATE_PAYLOAD_INVALID",
                Refusal::WrongType(_) => "UPDATE_WRONG_TYPE",
            };
            ApiError::new(422, code, r.message("release manifest"))
        })?;
    let p = &opened.payload;
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    match (
        s("version"),
        s("channel"),
        s("sha256"),
        p.get("size").and_then(Value::as_u64),
    ) {
        (Some(version), Some(channel), Some(sha256), Some(size)) => Ok(Manifest {
            version,
            channel,
            sha256: sha256.to_ascii_lowercase(),
            size,
        }),
        _ => Err(ApiError::new(
            422,
            "UPDATE_PAYLOAD_INVALID",
            "The release manifest lacks version, channel, sha256 or size",
        )),
    }
}

/// Downloads `url`, checks it against `m` and stages it. Records progress
/// and the outcome in `update/state`.
fn stage(m: &Manifest, url: &str) -> ApiResult {
    let fail = |e: ApiError| -> ApiError {
        let _ = set_state(|s| {
            s.state = "failed".into();
            s.progress = 0;
            s.message = format!("Update {} failed", m.version);
            s.target_version = Some(m.version.clone());
            s.error = Some(ErrorInfo {
                code: e.code.to_string(),
                message: e.message.clone(),
            });
        });
        e
    };
    set_state(|s| {
        s.state = "downloading".into();
        s.progress = 10;
        s.message = format!("Downloading {}", m.version);
        s.target_version = Some(m.version.clone());
        s.error = None;
    })?;
    let a = portal::send("GET", url, None).map_err(fail)?;
    if a.status != 200 {
        return Err(fail(ApiError::portal(format!(
            "The download answered HTTP {}",
            a.status
        ))));
    }
    set_state(|s| {
        s.state = "verifying".into();
        s.progress = 70;
        s.message = format!("Verifying {}", m.version);
    })?;
    if a.body.len() as u64 != m.size {
        return Err(fail(ApiError::new(
            422,
            "UPDATE_SIZE_MISMATCH",
            format!(
                "The artefact is {} bytes; the signed manifest says {}",
                a.body.len(),
                m.size
            ),
        )));
    }
    let digest = crypto::hex(&crypto::sha256(&a.body));
    if !crypto::constant_time_eq(digest.as_bytes(), m.sha256.as_bytes()) {
        return Err(fail(ApiError::new(
            422,
            "UPDATE_CHECKSUM_MISMATCH",
            "The artefact's SHA-256 differs from the signed manifest's",
        )));
    }
    // The chunks go under a blob id of their own, so no other staging
    // writes over them; then one transaction makes the state name them, and
    // only then are the chunks it named before deleted. The state never
    // names bytes that are not all there, or are another artefact's.
    let now = time::now();
    let blob = new_blob_id(now);
    let mut chunks = 0u32;
    for (n, chunk) in a.body.chunks(CHUNK).enumerate() {
        if let Err(e) = kv::set(&blob_key(Some(&blob), n as u32), chunk) {
            let _ = delete_blob(Some(&blob), chunks + 1);
            return Err(fail(e.into()));
        }
        chunks += 1;
    }
    let staged = Staged {
        version: m.version.clone(),
        channel: m.channel.clone(),
        size: m.size,
        sha256: digest,
        source: url.to_string(),
        staged_at: now,
        chunks,
        blob: Some(blob.clone()),
    };
    let swapped = kv::transaction(|txn| {
        let mut s: UpdateState = txn.get_json(STATE)?.unwrap_or_else(idle);
        let replaced = s.staged.take();
        s.state = "staged".into();
        s.progress = 100;
        s.message = format!(
            "WisPanel {} is downloaded, verified and staged; restart to install",
            m.version
        );
        s.target_version = Some(m.version.clone());
        s.staged = Some(staged.clone());
        s.error = None;
        s.updated_at = Some(time::now());
        txn.set_json(STATE, &s)?;
        Ok((s, replaced))
    });
    let (s, replaced) = match swapped {
        Ok(done) => done,
        Err(e) => {
            let _ = delete_blob(Some(&blob), chunks);
            return Err(fail(e.into()));
        }
    };
    if let Some(old) = replaced.filter(|old| old.blob.as_deref() != Some(blob.as_str())) {
        delete_blob(old.blob.as_deref(), old.chunks)?;
    }
    delete_abandoned(&blob, now)?;
    log::info!(
        "staged WisPanel {} ({} bytes, sha256 {})",
        staged.version,
        staged.size,
        staged.sha256
    );
    let offset = settings::utc_offset()?;
    ok(&json!({
        "success": true,
        "message": s.message,
        "staged": staged_json(&staged, offset),
    }))
}

/// `POST /version/update` (no body): stages the latest release of our
/// channel from the portal; 200 with `update_available: false` when there is
/// nothing newer.
pub fn update(_req: &Request) -> ApiResult {
    let current = settings::version();
    let Some(release) = latest()? else {
        return ok(
            &json!({ "success": true, "update_available": false, "message": "No release is published on this channel" }),
        );
    };
    let m = open_manifest(release.get("manifest").unwrap_or(&Value::Null))?;
    if release.get("version").and_then(Value::as_str) != Some(m.version.as_str()) {
        return Err(ApiError::new(
            422,
            "UPDATE_PAYLOAD_INVALID",
            "The release's version differs from its signed manifest's",
        ));
    }
    if m.channel != settings::channel() {
        return Err(ApiError::new(
            422,
            "UPDATE_PAYLOAD_INVALID",
            "The signed manifest is for another channel",
        ));
    }
    if !newer(&m.version, &current) {
        return ok(&json!({
            "success": true,
            "update_available": false,
            "message": format!("WisPanel {current} is up to date"),
        }));
    }
    if let Some(st) = load_state()?
        .staged
        .filter(|st| st.version == m.version && st.sha256 == m.sha256)
    {
        return ok(&json!({
            "success": true,
            "message": format!("WisPanel {} is already staged", st.version),
            "staged": staged_json(&st, settings::utc_offset()?),
        }));
    }
    let path = release
        .get("download_url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::portal("The release has no download_url"))?;
    let url = if path.contains("://") {
        path.to_string()
    } else {
        format!("{}{path}", portal::origin()?)
    };
    stage(&m, &url)
}

/// `POST /version/direct-update {url, manifest}`: stages an artefact from
/// `url` (which the outbound grant must allow), checked against `manifest`,
/// a release manifest signed by a trusted key. An unsigned artefact is never
/// staged.
pub fn direct_update(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let Some(url) = opt_str(&body, "url")? else {
        return Err(ApiError::validation("url is required"));
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::validation(
            "url must be an absolute http:// or https:// URL",
        ));
    }
    let Some(manifest) = body.get("manifest").filter(|v| !v.is_null()) else {
        return Err(ApiError::validation(
            "manifest is required: a direct update must be signed",
        ));
    };
    let m = open_manifest(manifest)?;
    stage(&m, &url)
}

#[cfg(test)]
mod tests {
    use super::{is_abandoned, newer};

    #[test]
    fn versions_compare_numerically() {
        assert!(newer("1.4.10", "1.4.9"));
        assert!(!newer("1.4.2", "1.4.2"));
        assert!(!newer("1.4.1", "1.4.2"));
        assert!(newer("2.0", "1.9.9"));
    }

    #[test]
    fn only_chunks_nobody_can_still_be_writing_are_left_behind() {
        let now = 1_800_000_000;
        let keep = "01799999990-00112233aabbccdd";
        // The layout before blob ids.
        assert!(is_abandoned("0000", keep, now));
        // The staged blob, however old; a young one being written.
        assert!(!is_abandoned(&format!("{keep}/0001"), keep, now));
        assert!(!is_abandoned("01799999000-aa/0000", keep, now));
        // One begun more than an hour ago that nothing names.
        assert!(is_abandoned("01799990000-aa/0000", keep, now));
        assert!(is_abandoned("junk/0000", keep, now));
    }
}
