//! The wispanel plugin (plugins/wispanel) through the real server: the
//! API document's examples field by field, bearer
//! tokens and roles, the per-token rate limit, signed licenses (forged,
//! tampered, expired, another instance's, a clock set back), enforcement of
//! a license's limits, and the panel with the license-portal plugin end to
//! end on loopback.
//!
//! Two kinds of licenses are used. Most tests upload a license file signed
//! by a key of the test's own (offline activation, `POST /license/activate
//! {key, license}`), trusted through the panel's `license_public_keys`
//! setting: that is how a test makes an expired or a foreign license without
//! waiting. The portal tests run a second server with the license-portal
//! plugin, whose signing key never leaves it, and point the panel's
//! `outbound` grant and `portal_url` at it.
//!
//! The rate-limit test sets `rate_limit_window_seconds: 15` (documented)
//! so that "a later one passes again" does not wait a minute; the limit is
//! the contract's 60.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, now_secs, quote, wasm};
use crate::e2e::http::Response;

pub(crate) const INSTANCE: &str = "panel-test-1";
pub(crate) const SEED_KEY: &str = "WISP-AB2C-DE3F-SA6T";
/// The seed's expires_at, "2036-05-11T06:10:02+07:00".
const SEED_EXPIRES: i64 = 2_094_073_802;

/// A signing key of the test's own.
pub(crate) struct Signer {
    pair: Ed25519KeyPair,
    pub(crate) key_id: String,
}

impl Signer {
    pub(crate) fn new(seed: u8) -> Signer {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed");
        let key_id = key_id(pair.public_key().as_ref());
        Signer { pair, key_id }
    }

    pub(crate) fn public_b64(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The portal's envelope over `payload`, claiming `key_id`.
    fn envelope_as(&self, payload: &Value, key_id: &str) -> Value {
        let bytes = payload.to_string().into_bytes();
        json!({
            "alg": "ed25519",
            "key_id": key_id,
            "payload": B64.encode(&bytes),
            "signature": B64.encode(self.pair.sign(&bytes).as_ref()),
        })
    }

    pub(crate) fn envelope(&self, payload: &Value) -> Value {
        self.envelope_as(payload, &self.key_id)
    }

    /// A license payload as the portal writes it, for this signer.
    pub(crate) fn license(&self, key: &str, instance: &str) -> Value {
        let now = now_secs() as i64;
        json!({
            "type": "license", "license_id": format!("lic_{now}"), "key_id": self.key_id, "alg": "ed25519",
            "key": key, "key_masked": "WISP-****SA6T", "tier": "free",
            "limits": { "max_users": 30, "max_domains": 100, "max_databases": -1 },
            "issued_at": now - 60, "not_before": now - 60, "expires_at": SEED_EXPIRES,
            "valid_until": now + 14 * 86_400, "grace_days": 7, "instance_id": instance,
        })
    }
}

/// The portal's key id: hex of the first 8 bytes of SHA-256(public key).
fn key_id(public: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The panel's config: mounted at /api/v1, `outbound` to `portal` (an
/// address; a closed port when the test has no portal), `settings` a YAML
/// flow mapping's inside.
fn panel_yaml(portal: &str, settings: &str) -> String {
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: wispanel\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/v1\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, ratelimit: true, outbound: {{ hosts: [{host}], timeout_ms: 10000, max_response_bytes: 16777216 }} }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: 4194304 }}\n    settings: {{ portal_url: {url}, instance_id: {INSTANCE}, {settings} }}\n",
        wasm = quote(&wasm("wispanel").to_string_lossy()),
        host = quote(portal),
        url = quote(&format!("http://{portal}/portal")),
    )
}

/// A running panel with an admin and a viewer token.
pub(crate) struct Panel {
    pub(crate) server: Server,
    admin: String,
    viewer: String,
}

impl Panel {
    /// No portal; trusts `signer` (and nothing else).
    pub(crate) fn offline(signer: &Signer, extra: &str) -> Panel {
        let settings = format!(
            "license_public_keys: {{ {}: {} }}, utc_offset: \"+07:00\"{extra}",
            quote(&signer.key_id),
            quote(&signer.public_b64())
        );
        Panel::start(&panel_yaml("127.0.0.1:9", &settings))
    }

    fn start(yaml: &str) -> Panel {
        let server = Setup::with_yaml(yaml).serve();
        let admin = issue(&server, "admin");
        let viewer = issue(&server, "viewer");
        Panel {
            server,
            admin,
            viewer,
        }
    }

    #[track_caller]
    fn call(&self, token: Option<&str>, method: &str, path: &str, body: &Value) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.server
            .send(method, &format!("/api/v1{path}"), &headers, &body)
    }

    #[track_caller]
    pub(crate) fn get(&self, path: &str) -> Response {
        self.call(Some(&self.viewer), "GET", path, &Value::Null)
    }

    #[track_caller]
    pub(crate) fn post(&self, path: &str, body: &Value) -> Response {
        self.call(Some(&self.admin), "POST", path, body)
    }

    #[track_caller]
    pub(crate) fn admin(&self, method: &str, path: &str, body: &Value) -> Response {
        admin(&self.server, "wispanel", method, path, body)
    }

    /// Offline activation of `file` for `key`.
    #[track_caller]
    pub(crate) fn upload(&self, key: &str, file: &Value) -> Response {
        self.post("/license/activate", &json!({ "key": key, "license": file }))
    }
}

#[track_caller]
pub(crate) fn admin(
    server: &Server,
    plugin: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Response {
    server.plugin_admin(plugin, method, path, body)
}

#[track_caller]
fn issue(server: &Server, role: &str) -> String {
    let r = admin(
        server,
        "wispanel",
        "POST",
        "/tokens",
        &json!({ "role": role, "label": role }),
    );
    r.expect(201);
    let v = r.json();
    assert_eq!(v["token"]["role"], role);
    v["secret"].as_str().expect("secret").to_string()
}

/// The envelope `{success:false, code, error, message, status}` with `code`.
#[track_caller]
pub(crate) fn expect_error(r: &Response, status: u16, code: &str) -> Value {
    r.expect(status);
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert!(v["error"].is_string() && v["error"] == v["message"], "{v}");
    assert_eq!(v.as_object().map(|m| m.len()), Some(5), "{v}");
    v
}

#[track_caller]
fn rate_headers(r: &Response) -> (u64, u64, u64) {
    let h = |n: &str| -> u64 {
        r.header(n)
            .unwrap_or_else(|| panic!("no {n}: {r:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{n} not a number: {r:?}"))
    };
    (
        h("x-ratelimit-limit"),
        h("x-ratelimit-remaining"),
        h("x-ratelimit-reset"),
    )
}

#[test]
fn version_info_is_the_seeds_and_every_answer_needs_a_bearer_token() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");

    let r = p.get("/version/info");
    r.expect(200);
    // Field by field, in the seed's order.
    assert_eq!(
        r.text(),
        r#"{"version":"1.4.2","channel":"stable","build_time":"unknown","git_commit":"unknown","info":"WisPanel v1.4.2"}"#
    );
    rate_headers(&r);

    // No token, a wrong one, another scheme: 401 in the envelope, still with the rate headers.
    for auth in [None, Some("Bearer nope"), Some("Basic YWRtaW46YWRtaW4=")] {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = p.server.send("GET", "/api/v1/version/info", &headers, b"");
        expect_error(&r, 401, "UNAUTHORIZED");
        rate_headers(&r);
    }

    // A viewer reads but does not write.
    let r = p.call(Some(&p.viewer), "POST", "/license/enforce", &Value::Null);
    expect_error(&r, 403, "FORBIDDEN");
    expect_error(&p.get("/nope"), 404, "NOT_FOUND");
    expect_error(
        &p.call(Some(&p.viewer), "DELETE", "/license/summary", &Value::Null),
        405,
        "METHOD_NOT_ALLOWED",
    );

    // A revoked token is refused at once.
    let tokens = p.admin("GET", "/tokens", &Value::Null).json();
    let viewer_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.admin("DELETE", &format!("/tokens/{viewer_id}"), &Value::Null)
        .expect(200);
    expect_error(&p.get("/version/info"), 401, "UNAUTHORIZED");
}

#[test]
fn activate_without_a_key_is_the_seeds_400_envelope() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");
    for body in [
        Value::Null,
        json!({}),
        json!({ "key": "" }),
        json!({ "key": "   " }),
    ] {
        let r = p.post("/license/activate", &body);
        r.expect(400);
        assert_eq!(
            r.text(),
            r#"{"success":false,"code":"VALIDATION_ERROR","error":"License key is required","message":"License key is required","status":400}"#
        );
        assert_eq!(
            r.json(),
            json!({ "success": false, "code": "VALIDATION_ERROR", "error": "License key is required",
                    "message": "License key is required", "status": 400 }),
            "{body}"
        );
    }
    expect_error(
        &p.post("/license/activate", &json!({ "key": 7 })),
        400,
        "VALIDATION_ERROR",
    );
    let r = p.server.send(
        "POST",
        "/api/v1/license/activate",
        &[("authorization", &format!("Bearer {}", p.admin))],
        b"{not json",
    );
    expect_error(&r, 400, "VALIDATION_ERROR");
}

#[test]
fn the_license_is_shown_as_the_seed_shows_it() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");

    // Before any activation.
    let v = p.get("/license/").json();
    assert_eq!(v["license"]["has_license_file"], false);
    assert_eq!(v["license"]["is_valid"], false);
    assert_eq!(v["license"]["key"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({ "accounts": 0, "databases": 0, "domains": 0 })
    );
    expect_error(
        &p.post("/license/verify", &Value::Null),
        404,
        "LICENSE_NOT_FOUND",
    );

    let file = signer.envelope(&signer.license(SEED_KEY, INSTANCE));
    let r = p.upload("wisp-ab2c-de3f-sa6t", &file);
    r.expect(200);
    assert_eq!(r.json()["success"], true);
    p.admin(
        "PUT",
        "/usage",
        &json!({ "accounts": 10, "databases": 2, "domains": 7 }),
    )
    .expect(200);

    for path in ["/license/", "/license"] {
        let r = p.get(path);
        r.expect(200);
        let v = r.json();
        let lic = &v["license"];
        let keys: Vec<&str> = lic
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "key",
            "tier",
            "is_valid",
            "has_license_file",
            "needs_refresh",
            "max_users",
            "max_domains",
            "max_databases",
            "expires_at",
            "valid_until",
            "last_checked",
        ];
        want.sort_unstable();
        let mut keys = keys.clone();
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(lic["key"], "WISP-****SA6T");
        assert_eq!(lic["tier"], "free");
        assert_eq!(lic["is_valid"], true);
        assert_eq!(lic["has_license_file"], true);
        assert_eq!(lic["needs_refresh"], false);
        assert_eq!(
            (
                lic["max_users"].clone(),
                lic["max_domains"].clone(),
                lic["max_databases"].clone()
            ),
            (json!(30), json!(100), json!(-1))
        );
        assert_eq!(lic["expires_at"], "2036-05-11T06:10:02+07:00");
        let valid_until = lic["valid_until"].as_str().unwrap();
        assert!(
            valid_until.ends_with("+07:00") && valid_until.len() == 25,
            "{valid_until}"
        );
        assert_eq!(lic["last_checked"], Value::Null);
        assert_eq!(
            v["usage"],
            json!({ "accounts": 10, "databases": 2, "domains": 7 })
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
        // The seed's order of fields.
        let text = r.text();
        let at = |k: &str| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {text}"))
        };
        let order = [
            "license",
            "key",
            "tier",
            "is_valid",
            "has_license_file",
            "needs_refresh",
            "max_users",
            "max_domains",
            "max_databases",
            "expires_at",
            "valid_until",
            "last_checked",
            "usage",
            "accounts",
            "databases",
            "domains",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
    }

    let s = p.get("/license/summary").json();
    assert_eq!(
        (
            s["status"].clone(),
            s["code"].clone(),
            s["instance_id"].clone()
        ),
        (json!("active"), Value::Null, json!(INSTANCE))
    );
    let l = p.get("/license/limits").json();
    assert_eq!(
        l["limits"],
        json!({ "max_users": 30, "max_domains": 100, "max_databases": -1 })
    );
    assert_eq!(
        l["remaining"],
        json!({ "accounts": 20, "domains": 93, "databases": -1 })
    );
    assert_eq!(l["within_limits"], true);
    // Offline: valid without asking the portal, which is not reachable.
    let v = p.post("/license/verify", &Value::Null);
    v.expect(200);
    assert_eq!(v.json()["portal"]["reachable"], false);

    // Past valid_until but inside the grace period: valid, needs a refresh.
    let mut late = signer.license(SEED_KEY, INSTANCE);
    late["valid_until"] = json!(now_secs() as i64 - 86_400);
    p.upload(SEED_KEY, &signer.envelope(&late)).expect(200);
    let v = p.get("/license").json();
    assert_eq!(
        (
            v["license"]["is_valid"].clone(),
            v["license"]["needs_refresh"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(p.get("/license/summary").json()["status"], "grace");
}

#[test]
fn forged_tampered_expired_and_foreign_licenses_are_refused_with_clear_codes() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");
    let now = now_secs() as i64;
    let good = signer.license(SEED_KEY, INSTANCE);

    // Forged: claims the trusted key id, signed with another key.
    let forger = Signer::new(2);
    let r = p.upload(SEED_KEY, &forger.envelope_as(&good, &signer.key_id));
    expect_error(&r, 422, "LICENSE_SIGNATURE_INVALID");
    // Signed by a key nobody trusts.
    expect_error(
        &p.upload(SEED_KEY, &forger.envelope(&good)),
        422,
        "LICENSE_KEY_UNKNOWN",
    );

    // Tampered: the payload changed after signing (a bigger tier).
    let mut file = signer.envelope(&good);
    let mut more = good.clone();
    more["limits"]["max_users"] = json!(100_000);
    file["payload"] = json!(B64.encode(more.to_string()));
    expect_error(&p.upload(SEED_KEY, &file), 422, "LICENSE_SIGNATURE_INVALID");
    // The same signature moved onto an envelope naming another algorithm.
    let mut file = signer.envelope(&good);
    file["alg"] = json!("rsa-sha256");
    expect_error(
        &p.upload(SEED_KEY, &file),
        422,
        "LICENSE_ALGORITHM_UNSUPPORTED",
    );
    expect_error(
        &p.upload(SEED_KEY, &json!({ "alg": "ed25519" })),
        422,
        "LICENSE_MALFORMED",
    );
    expect_error(
        &p.upload(SEED_KEY, &json!("not a license")),
        422,
        "LICENSE_MALFORMED",
    );

    // Expired.
    let mut expired = good.clone();
    expired["expires_at"] = json!(now - 10);
    expired["valid_until"] = json!(now - 10);
    expect_error(
        &p.upload(SEED_KEY, &signer.envelope(&expired)),
        403,
        "LICENSE_EXPIRED",
    );

    // Another instance's.
    let foreign = signer.license(SEED_KEY, "someone-else");
    let v = expect_error(
        &p.upload(SEED_KEY, &signer.envelope(&foreign)),
        409,
        "LICENSE_INSTANCE_MISMATCH",
    );
    assert!(
        v["message"].as_str().unwrap().contains("someone-else"),
        "{v}"
    );

    // Not valid yet.
    let mut early = good.clone();
    early["not_before"] = json!(now + 86_400);
    expect_error(
        &p.upload(SEED_KEY, &signer.envelope(&early)),
        403,
        "LICENSE_NOT_YET_VALID",
    );

    // Past valid_until and its grace period.
    let mut stale = good.clone();
    stale["valid_until"] = json!(now - 8 * 86_400);
    expect_error(
        &p.upload(SEED_KEY, &signer.envelope(&stale)),
        403,
        "LICENSE_REFRESH_REQUIRED",
    );

    // A release manifest is not a license, even signed by the trusted key.
    let release = json!({ "type": "release", "key_id": signer.key_id, "alg": "ed25519", "version": "9.9.9",
                          "channel": "stable", "sha256": "00", "size": 1, "published_at": now });
    expect_error(
        &p.upload(SEED_KEY, &signer.envelope(&release)),
        422,
        "LICENSE_WRONG_TYPE",
    );

    // A good file for another key than the one given.
    expect_error(
        &p.upload("WISP-ZZZZ-ZZZZ-ZZZZ", &signer.envelope(&good)),
        422,
        "LICENSE_KEY_MISMATCH",
    );

    // None of them was stored.
    assert_eq!(
        p.get("/license").json()["license"]["has_license_file"],
        false
    );
    p.upload(SEED_KEY, &signer.envelope(&good)).expect(200);
    assert_eq!(p.get("/license").json()["license"]["is_valid"], true);
}

#[test]
fn a_clock_set_back_is_noticed() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");
    p.upload(
        SEED_KEY,
        &signer.envelope(&signer.license(SEED_KEY, INSTANCE)),
    )
    .expect(200);
    let clock = p.admin("GET", "/clock", &Value::Null).json();
    assert!(clock["last_seen"].as_i64().is_some(), "{clock}");

    // The panel has seen a time a day later than the clock now reads.
    let later = now_secs() as i64 + 86_400;
    p.admin("PUT", "/clock", &json!({ "last_seen": later }))
        .expect(200);
    let v = p.get("/license").json();
    assert_eq!(v["license"]["is_valid"], false);
    assert_eq!(p.get("/license/summary").json()["code"], "CLOCK_ROLLBACK");
    expect_error(
        &p.post("/license/verify", &Value::Null),
        409,
        "CLOCK_ROLLBACK",
    );
    // An upload cannot get around it.
    expect_error(
        &p.upload(
            SEED_KEY,
            &signer.envelope(&signer.license(SEED_KEY, INSTANCE)),
        ),
        409,
        "CLOCK_ROLLBACK",
    );
    // The mark never moves back by itself.
    assert_eq!(
        p.admin("GET", "/clock", &Value::Null).json()["last_seen"],
        later
    );

    // An operator who knows the clock is right clears the mark.
    p.admin("DELETE", "/clock", &Value::Null).expect(200);
    assert_eq!(p.get("/license").json()["license"]["is_valid"], true);
}

#[test]
fn enforce_disables_the_newest_over_the_limit_and_re_enable_restores_them() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");
    let mut small = signer.license(SEED_KEY, INSTANCE);
    small["limits"] = json!({ "max_users": 3, "max_domains": 100, "max_databases": -1 });
    p.upload(SEED_KEY, &signer.envelope(&small)).expect(200);
    p.admin(
        "PUT",
        "/usage",
        &json!({ "accounts": 5, "domains": 2, "databases": 4 }),
    )
    .expect(200);
    let r = p.admin(
        "POST",
        "/resources",
        &json!({ "kind": "databases", "name": "shop" }),
    );
    r.expect(201);
    assert_eq!(r.json()["resource"]["id"], 5);

    let l = p.get("/license/limits").json();
    assert_eq!(l["over_limit"]["accounts"], true);
    assert_eq!(l["within_limits"], false);

    let r = p.post("/license/enforce", &Value::Null);
    r.expect(200);
    let v = r.json();
    let ids: Vec<(Value, Value)> = v["disabled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].clone(), d["id"].clone()))
        .collect();
    assert_eq!(
        ids,
        vec![(json!("accounts"), json!(4)), (json!("accounts"), json!(5))],
        "{v}"
    );
    // Enforcing again changes nothing.
    assert_eq!(
        p.post("/license/enforce", &Value::Null).json()["disabled"],
        json!([])
    );

    let d = p.get("/license/disabled-resources").json();
    assert_eq!(d["count"], 2);
    assert_eq!(d["disabled_resources"][0]["name"], "accounts-4");
    assert!(
        d["disabled_resources"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("free"),
        "{d}"
    );
    let l = p.get("/license/limits").json();
    assert_eq!(l["within_limits"], true);
    assert_eq!(l["usage"]["accounts"], 5);
    assert_eq!(l["active"]["accounts"], 3);

    // The same limits: nothing comes back.
    let v = p.post("/license/re-enable", &Value::Null).json();
    assert_eq!(v["re_enabled"], json!([]));
    // One more seat: the oldest disabled account comes back.
    small["limits"]["max_users"] = json!(4);
    p.upload(SEED_KEY, &signer.envelope(&small)).expect(200);
    let v = p.post("/license/re-enable", &Value::Null).json();
    assert_eq!(v["re_enabled"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["re_enabled"][0]["id"], 4);
    assert_eq!(v["still_disabled"][0]["id"], 5);
    let d = p.get("/license/disabled-resources").json();
    assert_eq!(d["count"], 1);
    assert_eq!(p.get("/license/summary").json()["disabled_resources"], 1);
}

/// `PUT /usage` makes every change of a request in one kv transaction, and
/// the host lets one transaction write at most 100000 keys: a resource
/// added or removed is one key (a disabled one removed two), and each kind
/// added to one more (its id sequence). Up to the limit the request
/// passes; one key over it is refused before anything is written.
#[test]
fn usage_changes_up_to_the_hosts_key_limit_at_once_and_refuses_one_key_more() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, "");
    let put = |body: Value| p.admin("PUT", "/usage", &body);
    let usage = || p.admin("GET", "/usage", &Value::Null).json()["usage"].clone();
    let refused = |r: &Response, keys: u64| {
        let v = expect_error(r, 400, "VALIDATION_ERROR");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("{keys} keys")) && msg.contains("at most 100000"),
            "{v}"
        );
    };

    // From none, 100000 accounts are 100000 records and the sequence.
    refused(&put(json!({ "accounts": 100_000 })), 100_001);
    assert_eq!(
        usage(),
        json!({ "accounts": 0, "databases": 0, "domains": 0 })
    );
    let r = put(json!({ "accounts": 99_999 }));
    r.expect(200);
    assert_eq!(r.json()["usage"]["accounts"], 99_999);
    // The maximum count, in a second step.
    put(json!({ "accounts": 100_000 })).expect(200);
    assert_eq!(usage()["accounts"], 100_000);
    expect_error(
        &put(json!({ "accounts": 100_001 })),
        400,
        "VALIDATION_ERROR",
    );

    // Two disabled: removing all is 100002 keys, down to 2 is 100000.
    let mut lic = signer.license(SEED_KEY, INSTANCE);
    lic["limits"] = json!({ "max_users": 99_998, "max_domains": -1, "max_databases": -1 });
    p.upload(SEED_KEY, &signer.envelope(&lic)).expect(200);
    let r = p.post("/license/enforce", &Value::Null);
    r.expect(200);
    assert_eq!(r.json()["disabled_total"], 2, "{}", r.text());
    refused(&put(json!({ "accounts": 0 })), 100_002);
    assert_eq!(usage()["accounts"], 100_000);
    assert_eq!(p.get("/license/disabled-resources").json()["count"], 2);
    put(json!({ "accounts": 2 })).expect(200);
    assert_eq!(usage()["accounts"], 2);
    assert_eq!(p.get("/license/disabled-resources").json()["count"], 0);

    // The kinds of one request add up.
    refused(
        &put(json!({ "domains": 50_000, "databases": 50_000 })),
        100_002,
    );
    assert_eq!(
        usage(),
        json!({ "accounts": 2, "databases": 0, "domains": 0 })
    );
    put(json!({ "domains": 49_999, "databases": 49_999 })).expect(200);
    assert_eq!(
        usage(),
        json!({ "accounts": 2, "databases": 49_999, "domains": 49_999 })
    );
}

#[test]
fn the_61st_request_in_a_window_is_429_with_the_headers_and_a_later_one_passes() {
    let signer = Signer::new(1);
    let p = Panel::offline(
        &signer,
        ", rate_limit_per_minute: 60, rate_limit_window_seconds: 15",
    );
    let token = issue(&p.server, "viewer");
    let started = now_secs();
    let mut reset = 0;
    for i in 1..=60u64 {
        let r = p.call(Some(&token), "GET", "/version/info", &Value::Null);
        r.expect(200);
        let (limit, remaining, at) = rate_headers(&r);
        assert_eq!((limit, remaining), (60, 60 - i), "request {i}");
        if i == 1 {
            reset = at;
            assert!(
                reset > started && reset <= started + 16,
                "reset {reset}, started {started}"
            );
        }
        assert_eq!(at, reset);
    }
    let r = p.call(Some(&token), "GET", "/version/info", &Value::Null);
    assert!(
        now_secs() < reset,
        "the 60 requests took longer than the window; the test is inconclusive"
    );
    expect_error(&r, 429, "RATE_LIMITED");
    assert_eq!(rate_headers(&r), (60, 0, reset));
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    // Whole seconds, rounded up: at most the window plus one.
    assert!((1..=16).contains(&retry), "retry-after {retry}");

    // Another token has its own count.
    p.call(Some(&p.viewer), "GET", "/version/info", &Value::Null)
        .expect(200);

    // After the reset time the token passes again, with a fresh window.
    while now_secs() < reset {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = p.call(Some(&token), "GET", "/version/info", &Value::Null);
    r.expect(200);
    let (limit, remaining, at) = rate_headers(&r);
    assert_eq!((limit, remaining), (60, 59));
    assert!(at > reset);
}

// ---- With the license portal -------------------------------------------

/// A license portal on its own server, with a signing key, a license key and
/// a release 1.4.3 on the stable channel.
pub(crate) struct Portal {
    pub(crate) server: Server,
    key_id: String,
    public_key: String,
    pub(crate) license_key: String,
    pub(crate) artefact: Vec<u8>,
}

impl Portal {
    pub(crate) fn start() -> Portal {
        let yaml = format!(
            "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: license-portal\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /portal/\n    grants: {{ kv: true, crypto: true, config: true, log: true }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 16777216, max_response_bytes: 16777216 }}\n",
            wasm = quote(&wasm("license_portal").to_string_lossy()),
        );
        let server = Setup::with_yaml(&yaml).serve();
        let r = admin(
            &server,
            "license-portal",
            "POST",
            "/signing-keys",
            &Value::Null,
        );
        r.expect(201);
        let k = r.json()["key"].clone();
        let public_key = k["public_key"].as_str().expect("public_key").to_string();
        let kid = k["key_id"].as_str().expect("key_id").to_string();
        assert_eq!(kid, key_id(&B64.decode(&public_key).unwrap()));
        let license_key = Portal::new_key(
            &server,
            json!({ "tier": "pro", "max_users": 30, "max_domains": 100, "max_databases": -1, "valid_days": 365 }),
        );
        let artefact: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let r = admin(
            &server,
            "license-portal",
            "POST",
            "/releases",
            &json!({ "version": "1.4.3", "channel": "stable", "changelog": "## WisPanel 1.4.3\n- faster backups", "artefact": B64.encode(&artefact) }),
        );
        r.expect(201);
        Portal {
            server,
            key_id: kid,
            public_key,
            license_key,
            artefact,
        }
    }

    pub(crate) fn new_key(server: &Server, body: Value) -> String {
        let r = admin(server, "license-portal", "POST", "/keys", &body);
        r.expect(201);
        r.json()["key"]["key"].as_str().expect("key").to_string()
    }

    pub(crate) fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// A panel that trusts this portal's key and may reach it.
    pub(crate) fn panel(&self) -> Panel {
        self.panel_with("")
    }

    /// With more settings, e.g. `, license_public_keys: {...}`.
    pub(crate) fn panel_with(&self, extra: &str) -> Panel {
        let settings = format!(
            "license_public_key: {}, license_key_id: {}{extra}",
            quote(&self.public_key),
            quote(&self.key_id)
        );
        Panel::start(&panel_yaml(&self.addr(), &settings))
    }

    #[track_caller]
    pub(crate) fn public(&self, method: &str, path: &str, body: &Value) -> Response {
        self.server.send(
            method,
            &format!("/portal{path}"),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }
}

#[test]
fn panel_and_portal_activate_verify_refresh_check_and_stage_an_update() {
    let portal = Portal::start();
    // Also trusts a key of the test's own, to sign manifests that lie about the artefact.
    let signer = Signer::new(3);
    let p = portal.panel_with(&format!(
        ", license_public_keys: {{ {}: {} }}",
        quote(&signer.key_id),
        quote(&signer.public_b64())
    ));

    // An unknown key: the portal's answer, in the envelope.
    expect_error(
        &p.post(
            "/license/activate",
            &json!({ "key": "WISP-2222-3333-4444" }),
        ),
        404,
        "LICENSE_NOT_FOUND",
    );

    let r = p.post("/license/activate", &json!({ "key": portal.license_key }));
    r.expect(200);
    let v = r.json();
    assert_eq!(v["success"], true);
    let lic = &v["license"];
    let key = &portal.license_key;
    assert_eq!(
        lic["key"],
        format!(
            "{}-****{}",
            key.split('-').next().unwrap(),
            &key[key.len() - 4..]
        )
    );
    assert_eq!(
        (
            lic["tier"].clone(),
            lic["is_valid"].clone(),
            lic["max_databases"].clone()
        ),
        (json!("pro"), json!(true), json!(-1))
    );
    assert!(lic["last_checked"].is_string(), "{v}");
    assert!(lic["expires_at"].as_str().unwrap().ends_with("+00:00"));

    let r = p.post("/license/verify", &Value::Null);
    r.expect(200);
    assert_eq!(r.json()["portal"]["reachable"], true);
    let before = p.get("/license/summary").json()["license_id"].clone();
    p.post("/license/refresh", &Value::Null).expect(200);
    assert_ne!(p.get("/license/summary").json()["license_id"], before);

    // Versions.
    let v = p.get("/version/check");
    v.expect(200);
    assert_eq!(
        v.text(),
        r###"{"update_available":true,"current_version":"1.4.2","latest_version":"1.4.3","changelog":"## WisPanel 1.4.3\n- faster backups"}"###
    );
    let c = p.get("/version/changelog").json();
    assert_eq!(c["releases"][0]["version"], "1.4.3");
    assert_eq!(p.get("/version/update/status").json()["state"], "idle");
    expect_error(
        &p.admin("GET", "/update/staged", &Value::Null),
        404,
        "NOT_FOUND",
    );

    let r = p.post("/version/update", &Value::Null);
    r.expect(200);
    let v = r.json();
    assert_eq!(v["staged"]["version"], "1.4.3");
    assert_eq!(v["staged"]["size"], portal.artefact.len());
    assert_eq!(v["staged"]["sha256"], sha256_hex(&portal.artefact));
    let s = p.get("/version/update/status").json();
    assert_eq!(
        (s["state"].clone(), s["progress"].clone()),
        (json!("staged"), json!(100))
    );
    assert_eq!(s["staged"]["sha256"], sha256_hex(&portal.artefact));
    // The bytes kept in kv are the artefact.
    let c = p.admin("GET", "/update/staged", &Value::Null).json();
    assert_eq!(c["intact"], true, "{c}");
    assert_eq!(
        c["stored"],
        json!({ "chunks": 1, "size": portal.artefact.len(), "sha256": sha256_hex(&portal.artefact) })
    );
    assert_eq!(c["staged"]["version"], "1.4.3");
    // Asking again does not download it again.
    let again = p.post("/version/update", &Value::Null).json();
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already staged"),
        "{again}"
    );

    // Direct update: a URL the grant allows with the signed manifest; a URL it does not.
    let latest = portal
        .public("GET", "/releases/latest?channel=stable", &Value::Null)
        .json();
    let manifest = latest["release"]["manifest"].clone();
    let url = format!(
        "http://{}{}",
        portal.addr(),
        latest["release"]["download_url"].as_str().unwrap()
    );
    p.post(
        "/version/direct-update",
        &json!({ "url": url, "manifest": manifest }),
    )
    .expect(200);
    expect_error(
        &p.post(
            "/version/direct-update",
            &json!({ "url": "http://127.0.0.1:9/x.bin", "manifest": manifest }),
        ),
        403,
        "URL_NOT_ALLOWED",
    );
    expect_error(
        &p.post("/version/direct-update", &json!({ "url": url })),
        400,
        "VALIDATION_ERROR",
    );
    // A manifest whose signature is not the portal's.
    let mut forged_manifest = manifest.clone();
    forged_manifest["signature"] = json!(B64.encode([0u8; 64]));
    expect_error(
        &p.post(
            "/version/direct-update",
            &json!({ "url": url, "manifest": forged_manifest }),
        ),
        422,
        "UPDATE_SIGNATURE_INVALID",
    );
    // Validly signed manifests whose size or SHA-256 is not the artefact's.
    let lying = |size: usize, sha256: &str| {
        signer.envelope(
            &json!({ "type": "release", "key_id": signer.key_id, "alg": "ed25519", "version": "1.4.4",
                                 "channel": "stable", "sha256": sha256, "size": size, "published_at": now_secs() }),
        )
    };
    let right = sha256_hex(&portal.artefact);
    let r = p.post(
        "/version/direct-update",
        &json!({ "url": url, "manifest": lying(portal.artefact.len(), &sha256_hex(b"other")) }),
    );
    expect_error(&r, 422, "UPDATE_CHECKSUM_MISMATCH");
    let s = p.get("/version/update/status").json();
    assert_eq!(
        (s["state"].clone(), s["error"]["code"].clone()),
        (json!("failed"), json!("UPDATE_CHECKSUM_MISMATCH"))
    );
    // What was staged before stays staged.
    assert_eq!(s["staged"]["version"], "1.4.3");
    let r = p.post(
        "/version/direct-update",
        &json!({ "url": url, "manifest": lying(portal.artefact.len() + 1, &right) }),
    );
    expect_error(&r, 422, "UPDATE_SIZE_MISMATCH");
    p.post(
        "/version/direct-update",
        &json!({ "url": url, "manifest": lying(portal.artefact.len(), &right) }),
    )
    .expect(200);
    assert_eq!(
        p.get("/version/update/status").json()["staged"]["version"],
        "1.4.4"
    );

    // A license is not a release manifest.
    let file = portal
        .public(
            "POST",
            "/license/refresh",
            &json!({ "key": portal.license_key, "instance_id": INSTANCE }),
        )
        .json()["license"]
        .clone();
    expect_error(
        &p.post(
            "/version/direct-update",
            &json!({ "url": url, "manifest": file }),
        ),
        422,
        "UPDATE_WRONG_TYPE",
    );

    // Revoked at the portal: verify says so and the license stops counting.
    admin(
        &portal.server,
        "license-portal",
        "POST",
        &format!("/keys/{}/revoke", portal.license_key),
        &Value::Null,
    )
    .expect(200);
    expect_error(
        &p.post("/license/verify", &Value::Null),
        403,
        "LICENSE_REVOKED",
    );
    assert_eq!(p.get("/license").json()["license"]["is_valid"], false);
}

#[test]
fn portal_issued_licenses_tampered_or_for_another_instance_are_refused() {
    let portal = Portal::start();
    let p = portal.panel();

    // A file the portal issued to another instance, uploaded here.
    let other_key = Portal::new_key(
        &portal.server,
        json!({ "tier": "pro", "max_users": 5, "max_domains": 5, "max_databases": 5, "valid_days": 30 }),
    );
    let r = portal.public(
        "POST",
        "/license/activate",
        &json!({ "key": other_key, "instance_id": "another-panel" }),
    );
    r.expect(200);
    let file = r.json()["license"].clone();
    expect_error(
        &p.upload(&other_key, &file),
        409,
        "LICENSE_INSTANCE_MISMATCH",
    );
    // And the portal itself refuses to activate that key here.
    expect_error(
        &p.post("/license/activate", &json!({ "key": other_key })),
        409,
        "LICENSE_INSTANCE_MISMATCH",
    );

    // The same file with this instance written into its payload.
    let payload = B64.decode(file["payload"].as_str().unwrap()).unwrap();
    let mut payload: Value = serde_json::from_slice(&payload).unwrap();
    payload["instance_id"] = json!(INSTANCE);
    let mut tampered = file.clone();
    tampered["payload"] = json!(B64.encode(payload.to_string()));
    expect_error(
        &p.upload(&other_key, &tampered),
        422,
        "LICENSE_SIGNATURE_INVALID",
    );

    // A license that expires while the panel holds it (a few seconds of
    // slack for a loaded machine between creating and activating it).
    let expires = now_secs() + 6;
    let short = Portal::new_key(
        &portal.server,
        json!({ "tier": "pro", "max_users": 5, "max_domains": 5, "max_databases": 5, "expires_at": expires }),
    );
    p.post("/license/activate", &json!({ "key": short }))
        .expect(200);
    assert_eq!(p.get("/license").json()["license"]["is_valid"], true);
    while now_secs() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.get("/license").json()["license"]["is_valid"], false);
    expect_error(
        &p.post("/license/verify", &Value::Null),
        403,
        "LICENSE_EXPIRED",
    );
    assert_eq!(p.get("/license/summary").json()["status"], "expired");
}
