//! The captive-portal backend under the `/portal/` mount, called by the
//! gateway (the box that sees the guest's MAC and IP on the wire and cuts
//! its traffic), never by the guest's browser directly: every call needs the
//! gateway key (`X-Gateway-Key: <key>` or `Authorization: Bearer <key>`),
//! a key of its own role, separate from the API key.
//!
//! - `POST /portal/login` voucher login `{username, passcode, mac, ip}`;
//! - `POST /portal/signin` records a free, e-mail, Facebook or mobile sign-in;
//! - `POST /portal/accounting` reports session counters, answers which
//!   sessions are over (quota, validity, removed voucher) so the gateway cuts them;
//! - `POST /portal/logout` ends a session.
//!
//! Answers use the API's envelope (`error`, `message`). A refused login is
//! HTTP 200 with `error: true` (the gateway relays the message to the
//! guest); a malformed call is 400, a missing or wrong gateway key 401.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wasmgate_sdk::{Error, Request, Response, crypto, keys, kv, log};

use crate::params::Params;
use crate::store::{
    self, EmailUser, FbUser, FreeUser, Kind, LoginEntry, MobileUser, Session, Usage, Voucher,
};
use crate::time;
use crate::vouchers::{self, Refusal};

/// The role of the gateway key in the `keys` capability.
pub const GATEWAY_ROLE: &str = "gateway";
/// Sessions one accounting call may report.
pub const MAX_ACCOUNTING_BATCH: usize = 1000;
const MAX_COMMENT_CHARS: usize = 255;

fn answer(status: u16, error: bool, message: &str) -> Response {
    Response::json(status, &json!({ "error": error, "message": message }))
}

pub fn handle(req: &Request) -> Response {
    let route: fn(&Request) -> Result<Response, Error> = match req.path() {
        "/login" => login,
        "/signin" => signin,
        "/accounting" => accounting,
        "/logout" => logout,
        _ => return answer(404, true, "Not found"),
    };
    if req.method() != "POST" {
        return answer(405, true, "Method not allowed: use POST").with_header("allow", "POST");
    }
    if let Err(resp) = authenticate(req) {
        return resp;
    }
    route(req).unwrap_or_else(|e| {
        if e.status < 500 {
            answer(e.status, true, &e.message)
        } else {
            log::error!("hotspot portal: {}", e.message);
            answer(500, true, "An error occurred")
        }
    })
}

fn authenticate(req: &Request) -> Result<(), Response> {
    let key = req
        .header("x-gateway-key")
        .or_else(|| {
            req.header("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        })
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let denied = || answer(401, true, "Gateway key missing or incorrect");
    let key = key.ok_or_else(denied)?;
    match keys::verify(key) {
        Ok(Some(info)) if info.role == GATEWAY_ROLE => Ok(()),
        Ok(_) => Err(denied()),
        Err(e) => {
            log::error!("hotspot portal: keys: {e:?}");
            Err(answer(500, true, "An error occurred"))
        }
    }
}

fn params(req: &Request) -> Result<Params, Error> {
    Params::from_body(req).map_err(|e| Error::bad_request(e.message()))
}

fn required(p: &Params, name: &str) -> Result<String, Error> {
    optional(p, name)?.ok_or_else(|| Error::bad_request(format!("Missing {name}")))
}

fn optional(p: &Params, name: &str) -> Result<Option<String>, Error> {
    p.text(name)
        .map_err(|()| Error::bad_request(format!("Invalid {name}: expected a string")))
}

fn client(p: &Params) -> Result<(String, String), Error> {
    let mac = store::normalize_mac(&required(p, "mac")?).ok_or_else(|| {
        Error::bad_request("Invalid mac: expected six hex pairs like A1:B2:C3:D4:E5:F6")
    })?;
    let ip = required(p, "ip")?;
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::bad_request(
            "Invalid ip: expected an IPv4 or IPv6 address",
        ));
    }
    Ok((mac, ip))
}

fn log_entry(
    kind: Kind,
    login: &str,
    mac: &str,
    ip: &str,
    success: bool,
    message: &str,
) -> LoginEntry {
    LoginEntry {
        time: time::format_datetime(time::now_secs()),
        kind,
        login: login.to_string(),
        mac: mac.to_string(),
        ip: ip.to_string(),
        success: u8::from(success),
        message: message.to_string(),
    }
}

/// Keeps the login log at `login_log_max` entries (default 100,000) by
/// dropping the oldest.
fn trim_log() -> Result<(), Error> {
    let max: u64 = wasmgate_sdk::config::parse_or("login_log_max", 100_000)?;
    let count = kv::count(store::LOG_PREFIX)?;
    if count <= max {
        return Ok(());
    }
    let excess = (count - max).min(1000) as u32;
    let page = wasmgate_sdk::bindings::wasmgate::plugin::kv::list(store::LOG_PREFIX, None, excess)
        .map_err(Error::from)?;
    for (key, _) in page.entries {
        kv::delete(&key)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct LoginOk {
    error: bool,
    message: &'static str,
    user: LoginUser,
    /// Seconds until the voucher expires; null when it does not.
    session_timeout: Option<u64>,
    /// Bytes left before the limit; null when unlimited.
    download_remaining: Option<u64>,
    upload_remaining: Option<u64>,
}

#[derive(Serialize)]
struct LoginUser {
    #[serde(rename = "type")]
    kind: Kind,
    id: u64,
    login: String,
    #[serde(rename = "MAC")]
    mac: String,
    #[serde(rename = "IP")]
    ip: String,
}

enum Outcome {
    Refused(&'static str),
    Accepted(Box<LoginOk>),
}

/// Voucher login. Checks in order: the username, the passcode, valid_from and
/// the validity counted from the first login, the device bound at first
/// login, the data limits. The first login sets first_login and binds the
/// MAC; every attempt is written to the login log in the same transaction.
fn login(req: &Request) -> Result<Response, Error> {
    let p = params(req)?;
    let username = required(&p, "username")?;
    // Every attempt is logged with its username, and no voucher has a longer
    // one: refusing it here keeps a guest from filling the log with junk.
    if username.chars().count() > vouchers::MAX_USERNAME_CHARS
        || username.chars().any(char::is_control)
    {
        return Err(Error::bad_request(format!(
            "Invalid username: at most {} characters, no control characters",
            vouchers::MAX_USERNAME_CHARS
        )));
    }
    let passcode = optional(&p, "passcode")?.unwrap_or_default();
    let (mac, ip) = client(&p)?;
    let now = time::now_secs();
    let now_text = time::format_datetime(now);

    let outcome = kv::transaction(|txn| {
        let log_it = |ok: bool, msg: &str| {
            txn.set_json(
                &store::log_key(time::now_ns()),
                &log_entry(Kind::Voucher, &username, &mac, &ip, ok, msg),
            )
        };
        let refuse = |msg: &'static str| -> Result<Outcome, Error> {
            log_it(false, msg)?;
            Ok(Outcome::Refused(msg))
        };
        let voucher = match txn.get_json::<u64>(&store::idx_key(Kind::Voucher, &username))? {
            Some(id) => txn.get_json::<Voucher>(&store::rec_key(Kind::Voucher, id))?,
            None => None,
        };
        let Some(mut v) = voucher else {
            return refuse("Wrong user name.");
        };
        if !crypto::constant_time_eq(v.password.as_bytes(), passcode.as_bytes()) {
            return refuse("Wrong password.");
        }
        let usage: Usage = txn.get_json(&store::use_key(v.id))?.unwrap_or_default();
        let validity = vouchers::check_validity(&v, &usage, now);
        if validity == Err(Refusal::Expired) {
            return refuse(Refusal::Expired.message());
        }
        if v.mac.as_deref().is_some_and(|bound| bound != mac) {
            return refuse(Refusal::OtherDevice.message());
        }
        if let Err(r) = validity {
            return refuse(r.message());
        }
        v.first_login.get_or_insert_with(|| now_text.clone());
        v.last_login = Some(now_text.clone());
        v.mac.get_or_insert_with(|| mac.clone());
        txn.set_json(&store::rec_key(Kind::Voucher, v.id), &v)?;
        txn.set_json(
            &store::session_key(&mac),
            &Session {
                mac: mac.clone(),
                address: ip.clone(),
                kind: Kind::Voucher,
                login: v.username.clone(),
                user_id: v.id,
                started_at: now,
                last_activity: now,
                bytes_in: 0,
                bytes_out: 0,
            },
        )?;
        log_it(true, "Login successful")?;
        let remaining = |limit_mb: u64, used: u64| {
            (limit_mb > 0).then(|| (limit_mb * store::MIB).saturating_sub(used))
        };
        Ok(Outcome::Accepted(Box::new(LoginOk {
            error: false,
            message: "Login successful",
            user: LoginUser {
                kind: Kind::Voucher,
                id: v.id,
                login: v.username.clone(),
                mac: mac.clone(),
                ip: ip.clone(),
            },
            session_timeout: vouchers::expires_at(&v).map(|end| end.saturating_sub(now)),
            download_remaining: remaining(v.download_limit, usage.bytes_out),
            upload_remaining: remaining(v.upload_limit, usage.bytes_in),
        })))
    })?;
    trim_log()?;
    Ok(match outcome {
        Outcome::Refused(msg) => answer(200, true, msg),
        Outcome::Accepted(ok) => Response::json(200, &ok),
    })
}

fn check_comment(name: &str, value: Option<String>) -> Result<Option<String>, Error> {
    if let Some(v) = &value
        && (v.chars().count() > MAX_COMMENT_CHARS || v.chars().any(char::is_control))
    {
        return Err(Error::bad_request(format!(
            "Invalid {name}: at most {MAX_COMMENT_CHARS} characters, no control characters"
        )));
    }
    Ok(value)
}

fn flag(p: &Params, name: &str) -> Result<Option<u8>, Error> {
    match optional(p, name)?.as_deref() {
        None => Ok(None),
        Some("1" | "true") => Ok(Some(1)),
        Some("0" | "false") => Ok(Some(0)),
        Some(_) => Err(Error::bad_request(format!(
            "Invalid {name}: expected 0 or 1"
        ))),
    }
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Comments shared by the e-mail, Facebook and mobile kinds.
struct Extra {
    comments: Option<String>,
    comments1: Option<String>,
    comments2: Option<String>,
    marketing: Option<u8>,
    verified: Option<u8>,
}

fn extra(p: &Params) -> Result<Extra, Error> {
    Ok(Extra {
        comments: check_comment("comments", optional(p, "comments")?)?,
        comments1: check_comment("comments1", optional(p, "comments1")?)?,
        comments2: check_comment("comments2", optional(p, "comments2")?)?,
        marketing: flag(p, "marketing")?,
        verified: flag(p, "verified")?,
    })
}

fn set_if(target: &mut String, value: &Option<String>) {
    if let Some(v) = value {
        target.clone_from(v);
    }
}

/// Creates or updates the user of `kind` known by `identity` and opens its
/// session, in one transaction: the identity index makes identities unique,
/// ids come from the host's sequence.
fn upsert<T: Serialize + DeserializeOwned>(
    kind: Kind,
    identity: &str,
    create: impl Fn(u64) -> T,
    update: impl Fn(&mut T),
    login: impl Fn(&T) -> String,
    mac: &str,
    ip: &str,
) -> Result<(u64, String), Error> {
    let now = time::now_secs();
    kv::transaction(|txn| {
        let idx = store::idx_key(kind, identity);
        let (id, record) = match txn.get_json::<u64>(&idx)? {
            Some(id) => {
                let mut rec: T = txn.get_json(&store::rec_key(kind, id))?.ok_or_else(|| {
                    Error::internal(format!("index {idx} points at a missing record"))
                })?;
                update(&mut rec);
                (id, rec)
            }
            None => {
                let id = store::new_id(txn, kind)?;
                txn.set_json(&idx, &id)?;
                (id, create(id))
            }
        };
        txn.set_json(&store::rec_key(kind, id), &record)?;
        let shown = login(&record);
        txn.set_json(
            &store::session_key(mac),
            &Session {
                mac: mac.to_string(),
                address: ip.to_string(),
                kind,
                login: shown.clone(),
                user_id: id,
                started_at: now,
                last_activity: now,
                bytes_in: 0,
                bytes_out: 0,
            },
        )?;
        txn.set_json(
            &store::log_key(time::now_ns()),
            &log_entry(kind, &shown, mac, ip, true, "Login successful"),
        )?;
        Ok((id, shown))
    })
}

/// Records a sign-in of `type` free, email, facebook or mobile (the sign-in
/// pages that collect these are the gateway's business) and opens a session.
fn signin(req: &Request) -> Result<Response, Error> {
    let p = params(req)?;
    let kind = optional(&p, "type")?
        .as_deref()
        .and_then(Kind::parse)
        .filter(|k| *k != Kind::Voucher)
        .ok_or_else(|| Error::bad_request("Invalid type: use free, email, facebook or mobile"))?;
    let (mac, ip) = client(&p)?;
    let now = time::format_datetime(time::now_secs());
    let (id, login) = match kind {
        Kind::Free => upsert(
            kind,
            &mac,
            |id| FreeUser {
                id,
                mac: mac.clone(),
                created_at: now.clone(),
                last_login: now.clone(),
                visits: 1,
                last_modified: now.clone(),
            },
            |u: &mut FreeUser| {
                u.visits += 1;
                u.last_login.clone_from(&now);
                u.last_modified.clone_from(&now);
            },
            |u| u.mac.clone(),
            &mac,
            &ip,
        )?,
        Kind::Email => {
            let email = required(&p, "email")?.to_ascii_lowercase();
            if !valid_email(&email) {
                return Err(Error::bad_request("Invalid email"));
            }
            let x = extra(&p)?;
            upsert(
                kind,
                &email,
                |id| EmailUser {
                    id,
                    email: email.clone(),
                    created_at: now.clone(),
                    last_login: now.clone(),
                    mac: mac.clone(),
                    visits: 1,
                    comments: x.comments.clone().unwrap_or_default(),
                    comments1: x.comments1.clone().unwrap_or_default(),
                    comments2: x.comments2.clone().unwrap_or_default(),
                    last_modified: now.clone(),
                    marketing: x.marketing.unwrap_or(0),
                    verified: x.verified.unwrap_or(0),
                },
                |u: &mut EmailUser| {
                    u.visits += 1;
                    u.last_login.clone_from(&now);
                    u.last_modified.clone_from(&now);
                    u.mac.clone_from(&mac);
                    set_if(&mut u.comments, &x.comments);
                    set_if(&mut u.comments1, &x.comments1);
                    set_if(&mut u.comments2, &x.comments2);
                    u.marketing = x.marketing.unwrap_or(u.marketing);
                    u.verified = x.verified.unwrap_or(u.verified);
                },
                |u| u.email.clone(),
                &mac,
                &ip,
            )?
        }
        Kind::Fb => {
            let fb_id = required(&p, "facebook_id")?;
            if fb_id.len() > 64
                || !fb_id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Err(Error::bad_request("Invalid facebook_id"));
            }
            let name = check_comment("name", optional(&p, "name")?)?;
            let email = optional(&p, "email")?.map(|e| e.to_ascii_lowercase());
            if email.as_deref().is_some_and(|e| !valid_email(e)) {
                return Err(Error::bad_request("Invalid email"));
            }
            let x = extra(&p)?;
            upsert(
                kind,
                &fb_id,
                |id| FbUser {
                    id,
                    facebook_id: fb_id.clone(),
                    name: name.clone().unwrap_or_default(),
                    email: email.clone().unwrap_or_default(),
                    created_at: now.clone(),
                    last_login: now.clone(),
                    mac: mac.clone(),
                    visits: 1,
                    comments: x.comments.clone().unwrap_or_default(),
                    comments1: x.comments1.clone().unwrap_or_default(),
                    comments2: x.comments2.clone().unwrap_or_default(),
                    last_modified: now.clone(),
                    marketing: x.marketing.unwrap_or(0),
                },
                |u: &mut FbUser| {
                    u.visits += 1;
                    u.last_login.clone_from(&now);
                    u.last_modified.clone_from(&now);
                    u.mac.clone_from(&mac);
                    set_if(&mut u.name, &name);
                    set_if(&mut u.email, &email);
                    set_if(&mut u.comments, &x.comments);
                    set_if(&mut u.comments1, &x.comments1);
                    set_if(&mut u.comments2, &x.comments2);
                    u.marketing = x.marketing.unwrap_or(u.marketing);
                },
                |u| {
                    if u.name.is_empty() {
                        u.facebook_id.clone()
                    } else {
                        u.name.clone()
                    }
                },
                &mac,
                &ip,
            )?
        }
        Kind::Mobile => {
            let mobile = required(&p, "mobile")?;
            let digits = mobile.strip_prefix('+').unwrap_or(&mobile);
            if !(4..=20).contains(&digits.len()) || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(Error::bad_request(
                    "Invalid mobile: 4 to 20 digits, optionally after '+'",
                ));
            }
            let x = extra(&p)?;
            upsert(
                kind,
                &mobile,
                |id| MobileUser {
                    id,
                    mobile: mobile.clone(),
                    created_at: now.clone(),
                    last_login: now.clone(),
                    mac: mac.clone(),
                    visits: 1,
                    comments: x.comments.clone().unwrap_or_default(),
                    comments1: x.comments1.clone().unwrap_or_default(),
                    comments2: x.comments2.clone().unwrap_or_default(),
                    last_modified: now.clone(),
                    marketing: x.marketing.unwrap_or(0),
                    verified: x.verified.unwrap_or(0),
                },
                |u: &mut MobileUser| {
                    u.visits += 1;
                    u.last_login.clone_from(&now);
                    u.last_modified.clone_from(&now);
                    u.mac.clone_from(&mac);
                    set_if(&mut u.comments, &x.comments);
                    set_if(&mut u.comments1, &x.comments1);
                    set_if(&mut u.comments2, &x.comments2);
                    u.marketing = x.marketing.unwrap_or(u.marketing);
                    u.verified = x.verified.unwrap_or(u.verified);
                },
                |u| u.mobile.clone(),
                &mac,
                &ip,
            )?
        }
        Kind::Voucher => unreachable!("filtered above"),
    };
    trim_log()?;
    Ok(Response::json(
        200,
        &json!({
            "error": false,
            "message": "Login successful",
            "user": { "type": kind, "id": id, "login": login, "MAC": mac, "IP": ip },
        }),
    ))
}

/// One session's counters as the gateway reports them: totals since the
/// session's login; `idle_time` in seconds since its last traffic.
#[derive(Deserialize)]
struct Report {
    mac: String,
    #[serde(default)]
    bytes_in: u64,
    #[serde(default)]
    bytes_out: u64,
    #[serde(default)]
    idle_time: Option<u64>,
}

#[derive(Deserialize)]
struct Accounting {
    sessions: Vec<Report>,
}

#[derive(Serialize)]
struct Ended {
    #[serde(rename = "mac-address")]
    mac_address: String,
    address: String,
    logins: String,
    reason: &'static str,
    message: &'static str,
}

enum Applied {
    Updated,
    Ended(Ended),
}

/// Applies one report: the counters' growth since the last report is added
/// to the voucher's usage, then a voucher session past its validity or data
/// limit (or whose voucher was removed) is ended and reported.
fn apply(report: &Report, mac: &str, now: u64) -> Result<Applied, Error> {
    kv::transaction(|txn| {
        let key = store::session_key(mac);
        let Some(mut s) = txn.get_json::<Session>(&key)? else {
            return Ok(Applied::Ended(Ended {
                mac_address: mac.to_string(),
                address: String::new(),
                logins: String::new(),
                reason: "no_session",
                message: "No active session",
            }));
        };
        // A counter below the last report was reset by the gateway: all of it is new.
        let grow = |new: u64, old: u64| if new >= old { new - old } else { new };
        let (d_in, d_out) = (
            grow(report.bytes_in, s.bytes_in),
            grow(report.bytes_out, s.bytes_out),
        );
        s.bytes_in = report.bytes_in;
        s.bytes_out = report.bytes_out;
        match report.idle_time {
            Some(idle) => s.last_activity = now.saturating_sub(idle).max(s.started_at),
            None if d_in + d_out > 0 => s.last_activity = now,
            None => {}
        }
        let mut end = None;
        if s.kind == Kind::Voucher {
            match txn.get_json::<Voucher>(&store::rec_key(Kind::Voucher, s.user_id))? {
                None => end = Some(("removed", "The user no longer exists.")),
                Some(v) => {
                    let ukey = store::use_key(v.id);
                    let mut usage: Usage = txn.get_json(&ukey)?.unwrap_or_default();
                    usage.bytes_in = usage.bytes_in.saturating_add(d_in);
                    usage.bytes_out = usage.bytes_out.saturating_add(d_out);
                    txn.set_json(&ukey, &usage)?;
                    if let Err(r) = vouchers::check_validity(&v, &usage, now) {
                        end = Some((r.reason(), r.message()));
                    }
                }
            }
        }
        match end {
            Some((reason, message)) => {
                txn.delete(&key)?;
                Ok(Applied::Ended(Ended {
                    mac_address: s.mac,
                    address: s.address,
                    logins: s.login,
                    reason,
                    message,
                }))
            }
            None => {
                txn.set_json(&key, &s)?;
                Ok(Applied::Updated)
            }
        }
    })
}

fn accounting(req: &Request) -> Result<Response, Error> {
    let body: Accounting = serde_json::from_slice(req.body()).map_err(|e| {
        Error::bad_request(format!(
            "Invalid accounting body: expected {{\"sessions\":[{{\"mac\",\"bytes_in\",\"bytes_out\",\"idle_time\"}}]}}: {e}"
        ))
    })?;
    if body.sessions.len() > MAX_ACCOUNTING_BATCH {
        return Err(Error::bad_request(format!(
            "At most {MAX_ACCOUNTING_BATCH} sessions per accounting call"
        )));
    }
    let now = time::now_secs();
    let mut updated = 0u64;
    let mut ended = Vec::new();
    for report in &body.sessions {
        let mac = store::normalize_mac(&report.mac)
            .ok_or_else(|| Error::bad_request(format!("Invalid mac {:?}", report.mac)))?;
        match apply(report, &mac, now)? {
            Applied::Updated => updated += 1,
            Applied::Ended(e) => ended.push(e),
        }
    }
    Ok(Response::json(
        200,
        &json!({ "error": false, "updated": updated, "ended": ended }),
    ))
}

/// Ends the device's session; final counters, when given, are accounted first.
fn logout(req: &Request) -> Result<Response, Error> {
    let p = params(req)?;
    let mac = store::normalize_mac(&required(&p, "mac")?).ok_or_else(|| {
        Error::bad_request("Invalid mac: expected six hex pairs like A1:B2:C3:D4:E5:F6")
    })?;
    let counter = |name: &str| -> Result<Option<u64>, Error> {
        optional(&p, name)?
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::bad_request(format!("Invalid {name}")))
            })
            .transpose()
    };
    let (bytes_in, bytes_out) = (counter("bytes_in")?, counter("bytes_out")?);
    let existed = kv::transaction(|txn| {
        let key = store::session_key(&mac);
        let Some(s) = txn.get_json::<Session>(&key)? else {
            return Ok(false);
        };
        if s.kind == Kind::Voucher {
            let grow = |new: Option<u64>, old: u64| match new {
                Some(n) if n >= old => n - old,
                Some(n) => n,
                None => 0,
            };
            let ukey = store::use_key(s.user_id);
            if txn
                .get(&store::rec_key(Kind::Voucher, s.user_id))?
                .is_some()
            {
                let mut usage: Usage = txn.get_json(&ukey)?.unwrap_or_default();
                usage.bytes_in = usage.bytes_in.saturating_add(grow(bytes_in, s.bytes_in));
                usage.bytes_out = usage.bytes_out.saturating_add(grow(bytes_out, s.bytes_out));
                txn.set_json(&ukey, &usage)?;
            }
        }
        txn.delete(&key)?;
        Ok(true)
    })?;
    Ok(if existed {
        answer(200, false, "Logged out")
    } else {
        answer(200, true, "No active session")
    })
}
