//! The hotspot plugin (plugins/hotspot) through the real server: the
//! original API's documented calls field by field, the captive-portal
//! calls that feed it, the admin surface, and the guest hosts read from a
//! real network namespace's neighbour table.
//!
//! Expiry is made testable without waiting an hour through the admin's
//! documented voucher correction `PATCH /plugins/hotspot/admin/vouchers/<u>`
//! `{"first_login": ...}`: an operator's knob (restart or move a voucher's
//! countdown), used here to put the first login two hours back. The contract's
//! `valid_for` list is not bent for tests.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, quote, wasm};
use crate::e2e::http::{self, Response};

const SEED_VOUCHER: &str = r#"{"api-key":"KEY","action":"create_voucher","username":"user123","passcode":"pass123","fullname":"John Doe","valid_for":"1 day","valid_from":"2025-01-17 10:00:00","download_limit":1024,"upload_limit":512}"#;

/// The hotspot on one listener with `/api/` and `/portal/`, every grant it
/// uses, `net` as given (a YAML flow mapping).
fn yaml(net: &str, settings: &str) -> String {
    yaml_capped(net, settings, 16_777_216)
}

/// [`yaml`] with the host's response cap at `max_response_bytes`.
fn yaml_capped(net: &str, settings: &str, max_response_bytes: usize) -> String {
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: hotspot\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/\n      - listen: \"127.0.0.1:0\"\n        prefix: /portal/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, net: {net} }}\n    limits: {{ memory_mb: 64, timeout_ms: 20000, max_body_bytes: 1048576, max_response_bytes: {max_response_bytes} }}\n    settings: {settings}\n",
        wasm = quote(&wasm("hotspot").to_string_lossy()),
    )
}

const DEFAULT_NET: &str = "{ links: [\"br-guest*\", \"guest*\"] }";
const DEFAULT_SETTINGS: &str = "{ default_valid_for: \"2 hours\", guest_links: [br-guest0] }";

/// A running hotspot with its API and gateway keys.
struct Hotspot {
    server: Server,
    key: String,
    gateway: String,
}

impl Hotspot {
    /// API on with both methods, a fresh API key and gateway key.
    fn start() -> Hotspot {
        Hotspot::with(DEFAULT_NET, DEFAULT_SETTINGS)
    }

    fn with(net: &str, settings: &str) -> Hotspot {
        Hotspot::from_yaml(&yaml(net, settings))
    }

    fn from_yaml(yaml: &str) -> Hotspot {
        let server = Setup::with_yaml(yaml).serve();
        admin(
            &server,
            "PUT",
            "/settings",
            &json!({ "api_enabled": true, "get_enabled": true, "post_enabled": true }),
        )
        .expect(200);
        let key = rotate(&server, "/api-key");
        let gateway = rotate(&server, "/gateway-key");
        Hotspot {
            server,
            key,
            gateway,
        }
    }

    /// A POST of `body` (JSON) with `"api-key"` filled in.
    #[track_caller]
    fn post(&self, mut body: Value) -> Value {
        body["api-key"] = json!(self.key);
        let r = self.server.post_json("/api/", &body);
        r.expect(200);
        r.json()
    }

    /// A GET with `query` (already encoded) and the key in the query.
    #[track_caller]
    fn get(&self, query: &str) -> Value {
        let r = self
            .server
            .get(&format!("/api/?api-key={}&{query}", self.key));
        r.expect(200);
        r.json()
    }

    #[track_caller]
    fn action(&self, action: &str) -> Value {
        self.get(&format!("action={action}"))
    }

    #[track_caller]
    fn portal(&self, path: &str, body: &Value) -> Response {
        self.server.send(
            "POST",
            &format!("/portal{path}"),
            &[
                ("content-type", "application/json"),
                ("x-gateway-key", &self.gateway),
            ],
            body.to_string().as_bytes(),
        )
    }

    #[track_caller]
    fn login(&self, username: &str, passcode: &str, mac: &str, ip: &str) -> Value {
        let r = self.portal(
            "/login",
            &json!({ "username": username, "passcode": passcode, "mac": mac, "ip": ip }),
        );
        r.expect(200);
        r.json()
    }

    #[track_caller]
    fn account(&self, sessions: Value) -> Value {
        let r = self.portal("/accounting", &json!({ "sessions": sessions }));
        r.expect(200);
        r.json()
    }

    #[track_caller]
    fn admin(&self, method: &str, path: &str, body: &Value) -> Response {
        admin(&self.server, method, path, body)
    }
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    server.plugin_admin("hotspot", method, path, body)
}

#[track_caller]
fn rotate(server: &Server, path: &str) -> String {
    let r = admin(server, "POST", path, &Value::Null);
    r.expect(201);
    r.json()["key"]
        .as_str()
        .expect("key in the rotation answer")
        .to_string()
}

fn err(message: &str) -> Value {
    json!({ "error": true, "message": message })
}

/// "Y-m-d H:i:s" within a minute of now (UTC).
#[track_caller]
fn assert_about_now(v: &Value) {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let out = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .expect("date");
    let ts: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad timestamp {text:?}"));
    let now = crate::e2e::harness::now_secs();
    assert!(ts + 60 >= now && ts <= now + 60, "{text} is not about now");
}

fn utc(offset_secs: i64) -> String {
    let ts = crate::e2e::harness::now_secs() as i64 + offset_secs;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{ts}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------
// Toggles, keys and the order of checks
// ---------------------------------------------------------------------------

#[test]
fn the_api_is_off_by_default_and_says_api_is_not_enabled() {
    let server = Setup::with_yaml(&yaml(DEFAULT_NET, DEFAULT_SETTINGS)).serve();
    let key = rotate(&server, "/api-key");
    let settings = admin(&server, "GET", "/settings", &Value::Null);
    settings.expect(200);
    let s = settings.json();
    assert_eq!(
        (
            s["api_enabled"].clone(),
            s["get_enabled"].clone(),
            s["post_enabled"].clone()
        ),
        (json!(false), json!(false), json!(true))
    );
    assert!(s["api_key"]["id"].is_string(), "{s}");
    assert!(
        s["api_key"].get("key").is_none() && !settings.text().contains(&key),
        "the secret is never shown again"
    );
    assert_eq!(s["default_valid_for"], "2 hours");
    assert_eq!(s["guest_links"], json!(["br-guest0"]));

    let get = server.get(&format!("/api/?api-key={key}&action=get_voucher_users"));
    get.expect(200);
    assert_eq!(get.json(), err("API is not enabled"));
    let post = server.post_json(
        "/api/",
        &json!({ "api-key": key, "action": "get_voucher_users" }),
    );
    assert_eq!(post.json(), err("API is not enabled"));

    // Enabled, but with both methods off, it is still not enabled.
    admin(
        &server,
        "PUT",
        "/settings",
        &json!({ "api_enabled": true, "post_enabled": false }),
    )
    .expect(200);
    let post = server.post_json(
        "/api/",
        &json!({ "api-key": key, "action": "get_voucher_users" }),
    );
    assert_eq!(post.json(), err("API is not enabled"));
    admin(
        &server,
        "PUT",
        "/settings",
        &json!({ "post_enabled": true }),
    )
    .expect(200);
    let post = server.post_json(
        "/api/",
        &json!({ "api-key": key, "action": "get_voucher_users" }),
    );
    assert_eq!(post.json(), json!({ "users": [] }));

    let bad = admin(&server, "PUT", "/settings", &json!({ "api_key": "mine" }));
    bad.expect(400);
    let bad = admin(
        &server,
        "PUT",
        "/settings",
        &json!({ "get_enabled": "yes" }),
    );
    bad.expect(400);
}

#[test]
fn get_with_the_get_toggle_off_is_not_allowed() {
    let h = Hotspot::start();
    admin(
        &h.server,
        "PUT",
        "/settings",
        &json!({ "get_enabled": false }),
    )
    .expect(200);
    let r = h
        .server
        .get(&format!("/api/?api-key={}&action=get_voucher_users", h.key));
    r.expect(200);
    assert_eq!(r.json(), err("API Key not set or method not allowed"));
    // Even with the key in the header.
    let r = h.server.send(
        "GET",
        "/api/?action=get_voucher_users",
        &[("x-api-key", &h.key)],
        b"",
    );
    assert_eq!(r.json(), err("API Key not set or method not allowed"));
    // POST still works; then POST off and GET on.
    assert_eq!(
        h.post(json!({ "action": "get_voucher_users" })),
        json!({ "users": [] })
    );
    admin(
        &h.server,
        "PUT",
        "/settings",
        &json!({ "get_enabled": true, "post_enabled": false }),
    )
    .expect(200);
    let r = h.server.post_json(
        "/api/",
        &json!({ "api-key": h.key, "action": "get_voucher_users" }),
    );
    assert_eq!(r.json(), err("API Key not set or method not allowed"));
    assert_eq!(h.action("get_voucher_users"), json!({ "users": [] }));
}

#[test]
fn the_key_must_be_in_the_requests_own_method_or_the_header() {
    let h = Hotspot::start();
    // POST with the key only in the query string.
    let r = h.server.post_json(
        &format!("/api/?api-key={}", h.key),
        &json!({ "action": "get_voucher_users" }),
    );
    r.expect(200);
    assert_eq!(r.json(), err("API Key not set or method not allowed"));
    // POST and GET without any key.
    assert_eq!(
        h.server
            .post_json("/api/", &json!({ "action": "get_voucher_users" }))
            .json(),
        err("API Key not set or method not allowed")
    );
    assert_eq!(
        h.server.get("/api/?action=get_voucher_users").json(),
        err("API Key not set or method not allowed")
    );
    assert_eq!(
        h.server
            .get("/api/?api-key=&action=get_voucher_users")
            .json(),
        err("API Key not set or method not allowed")
    );
    // Other methods are not allowed.
    for method in ["PUT", "DELETE", "PATCH"] {
        let r = h
            .server
            .send(method, "/api/", &[("x-api-key", &h.key)], b"");
        r.expect(200);
        assert_eq!(
            r.json(),
            err("API Key not set or method not allowed"),
            "{method}"
        );
    }
    // The header works for both methods, with the action in the body or query.
    let r = h.server.send(
        "GET",
        "/api/?action=get_voucher_users",
        &[("x-api-key", &h.key)],
        b"",
    );
    assert_eq!(r.json(), json!({ "users": [] }));
    let r = h.server.send(
        "POST",
        "/api/",
        &[("x-api-key", &h.key), ("content-type", "application/json")],
        br#"{"action":"get_voucher_users"}"#,
    );
    assert_eq!(r.json(), json!({ "users": [] }));
    // JSON sent as form-encoded (what `curl -d` does) is still JSON.
    let body = json!({ "api-key": h.key, "action": "get_voucher_users" }).to_string();
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_eq!(r.json(), json!({ "users": [] }));
    // Form-encoded POST bodies carry the key too.
    let form = format!("api-key={}&action=get_voucher_users", h.key);
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.json(), json!({ "users": [] }));
}

#[test]
fn a_wrong_key_is_incorrect_and_a_rotated_key_revokes_the_old_one() {
    let h = Hotspot::start();
    let wrong = h.server.post_json(
        "/api/",
        &json!({ "api-key": "not-the-key", "action": "get_voucher_users" }),
    );
    wrong.expect(200);
    assert_eq!(wrong.json(), err("API Key is incorrect"));
    let wrong = h
        .server
        .get("/api/?api-key=not-the-key&action=get_voucher_users");
    assert_eq!(wrong.json(), err("API Key is incorrect"));
    let header = h.server.send(
        "GET",
        "/api/?action=get_voucher_users",
        &[("x-api-key", "nope")],
        b"",
    );
    assert_eq!(header.json(), err("API Key is incorrect"));
    // The gateway key is not an API key.
    let gw = h.server.post_json(
        "/api/",
        &json!({ "api-key": h.gateway, "action": "get_voucher_users" }),
    );
    assert_eq!(gw.json(), err("API Key is incorrect"));
    // A huge key is just incorrect.
    let huge = "k".repeat(100_000);
    let r = h.server.post_json(
        "/api/",
        &json!({ "api-key": huge, "action": "get_voucher_users" }),
    );
    assert_eq!(r.json(), err("API Key is incorrect"));

    let rotated = admin(&h.server, "POST", "/api-key", &Value::Null);
    rotated.expect(201);
    let rotated = rotated.json();
    assert_eq!(rotated["revoked"], 1);
    let new_key = rotated["key"].as_str().unwrap();
    assert_ne!(new_key, h.key);
    let old = h.server.post_json(
        "/api/",
        &json!({ "api-key": h.key, "action": "get_voucher_users" }),
    );
    assert_eq!(old.json(), err("API Key is incorrect"));
    let new = h.server.post_json(
        "/api/",
        &json!({ "api-key": new_key, "action": "get_voucher_users" }),
    );
    assert_eq!(new.json(), json!({ "users": [] }));
    // Never logged.
    assert!(
        !h.server.logs().contains(new_key) && !h.server.logs().contains(&h.key),
        "a key reached the log"
    );
}

#[test]
fn unknown_missing_and_malformed_requests_get_clear_messages() {
    let h = Hotspot::start();
    assert!(
        h.post(json!({ "action": "drop_tables" }))["message"]
            .as_str()
            .unwrap()
            .starts_with("Unknown action")
    );
    assert_eq!(h.post(json!({ "action": "drop_tables" }))["error"], true);
    assert_eq!(h.post(json!({})), err("No action set"));
    assert_eq!(h.get("action="), err("No action set"));
    assert_eq!(
        h.post(json!({ "action": ["create_voucher"] })),
        err("Invalid action: expected a string or a number")
    );
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/json")],
        b"{\"api-key\": ",
    );
    r.expect(200);
    assert_eq!(r.json(), err("Request body is not valid JSON"));
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/json")],
        b"[1,2]",
    );
    assert_eq!(r.json(), err("Request body must be a JSON object"));
    let r = h.server.get("/api/other");
    r.expect(404);
    assert_eq!(r.json()["error"], true);
}

// ---------------------------------------------------------------------------
// Vouchers: the seed's examples
// ---------------------------------------------------------------------------

const SEED_ANSWER: &str = r#"{"message":"User added successfully","user":{"id":1,"username":"user123","passcode":"pass123","fullname":"John Doe","valid_for":"1 day","valid_from":"2025-01-17 10:00:00","download_limit":"1024","upload_limit":"512"},"error":false}"#;

#[test]
fn create_voucher_by_post_json_answers_the_seed_example() {
    let h = Hotspot::start();
    let body = SEED_VOUCHER.replace("KEY", &h.key);
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    r.expect(200);
    assert_eq!(
        r.text(),
        SEED_ANSWER,
        "byte for byte, in the seed's field order"
    );
    let v = r.json();
    assert!(v["user"]["id"].is_u64(), "id is an integer");
    assert!(v["user"]["download_limit"].is_string() && v["user"]["upload_limit"].is_string());
}

#[test]
fn create_voucher_by_get_query_answers_the_seed_example() {
    let h = Hotspot::start();
    let r = h.server.get(&format!(
        "/api/?api-key={}&action=create_voucher&username=user123&passcode=pass123&fullname=John%20Doe&valid_for=1%20day&valid_from=2025-01-17%2010:00:00&download_limit=1024&upload_limit=512",
        h.key
    ));
    r.expect(200);
    assert_eq!(r.text(), SEED_ANSWER);
    // The same username again.
    assert_eq!(
        h.post(serde_json::from_str(SEED_VOUCHER).unwrap()),
        err("Username already exists")
    );
}

#[test]
fn create_voucher_by_form_post_is_the_same() {
    let h = Hotspot::start();
    let form = format!(
        "api-key={}&action=create_voucher&username=user123&passcode=pass123&fullname=John+Doe&valid_for=1+day&valid_from=2025-01-17+10%3A00%3A00&download_limit=1024&upload_limit=512",
        h.key
    );
    let r = h.server.send(
        "POST",
        "/api/",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    r.expect(200);
    assert_eq!(r.text(), SEED_ANSWER);
}

#[test]
fn get_voucher_users_lists_the_seed_example_field_by_field() {
    let h = Hotspot::start();
    h.post(json!({ "action": "create_voucher", "username": "user1234", "passcode": "pass1234", "fullname": "John Doe2", "valid_for": "1 day", "valid_from": "2025-01-17 10:00:00", "download_limit": 1024, "upload_limit": 512 }));
    h.post(json!({ "action": "create_voucher", "username": "user12345", "passcode": "pass12345", "fullname": "John Doe3", "valid_for": "5 days", "valid_from": "2025-01-18 10:00:00" }));
    let r = h
        .server
        .get(&format!("/api/?api-key={}&action=get_voucher_users", h.key));
    r.expect(200);
    let text = r.text();
    let list = r.json();
    assert_eq!(list.as_object().unwrap().len(), 1, "only `users`: {list}");
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    for u in users {
        assert_about_now(&u["created_at"]);
        assert_eq!(u["created_at"], u["last_modified"]);
    }
    let expect = |id: u64, u: &Value, rest: Value| {
        let mut want = json!({
            "id": id, "created_at": u["created_at"], "last_modified": u["last_modified"],
            "first_login": null, "last_login": null, "MAC": null,
        });
        for (k, v) in rest.as_object().unwrap() {
            want[k] = v.clone();
        }
        assert_eq!(*u, want);
    };
    expect(
        1,
        &users[0],
        json!({ "username": "user1234", "password": "pass1234", "fullname": "John Doe2", "valid_for": "1 day", "valid_from": "2025-01-17 10:00:00", "download_limit": 1024, "upload_limit": 512 }),
    );
    expect(
        2,
        &users[1],
        json!({ "username": "user12345", "password": "pass12345", "fullname": "John Doe3", "valid_for": "5 days", "valid_from": "2025-01-18 10:00:00", "download_limit": 0, "upload_limit": 0 }),
    );
    // The seed's field order, limits as numbers here.
    let created = users[0]["created_at"].as_str().unwrap();
    assert!(text.starts_with(&format!(
        r#"{{"users":[{{"id":1,"username":"user1234","password":"pass1234","fullname":"John Doe2","created_at":"{created}","last_modified":"{created}","first_login":null,"last_login":null,"valid_for":"1 day","valid_from":"2025-01-17 10:00:00","MAC":null,"download_limit":1024,"upload_limit":512}}"#
    )), "{text}");
}

#[test]
fn remove_voucher_answers_each_seed_message() {
    let h = Hotspot::start();
    assert_eq!(
        h.post(json!({ "action": "remove_voucher" })),
        err("No username set")
    );
    assert_eq!(
        h.post(json!({ "action": "remove_voucher", "username": "" })),
        err("No username set")
    );
    assert_eq!(
        h.post(json!({ "action": "remove_voucher", "username": "user123" })),
        err("Username doesn't exist")
    );
    h.post(serde_json::from_str(SEED_VOUCHER).unwrap());
    let removed = h.server.post_json(
        "/api/",
        &json!({ "api-key": h.key, "action": "remove_voucher", "username": "user123" }),
    );
    assert_eq!(
        removed.text(),
        r#"{"message":"User removed successfully","error":false}"#
    );
    assert_eq!(h.action("get_voucher_users"), json!({ "users": [] }));
    // By GET, as the seed shows, and the username is free again.
    h.post(serde_json::from_str(SEED_VOUCHER).unwrap());
    assert_eq!(
        h.get("action=remove_voucher&username=user123"),
        json!({ "message": "User removed successfully", "error": false })
    );
    assert_eq!(
        h.get("action=remove_voucher&username=user123"),
        err("Username doesn't exist")
    );
    assert_eq!(h.get("action=remove_voucher"), err("No username set"));
    let again = h.post(serde_json::from_str(SEED_VOUCHER).unwrap());
    assert_eq!(again["user"]["id"], 3, "ids are never reused");
}

#[test]
fn omitted_fields_are_random_and_valid_for_comes_from_settings() {
    let h = Hotspot::start();
    let a = h.post(json!({ "action": "create_voucher" }));
    let b = h.post(json!({ "action": "create_voucher", "valid_for": "" }));
    for v in [&a, &b] {
        assert_eq!(v["message"], "User added successfully");
        assert_eq!(v["error"], false);
        let u = &v["user"];
        assert!(u["username"].as_str().unwrap().len() >= 6, "{u}");
        assert!(u["passcode"].as_str().unwrap().len() >= 6, "{u}");
        assert!(!u["fullname"].as_str().unwrap().is_empty(), "{u}");
        assert_eq!(u["valid_for"], "2 hours", "the default_valid_for setting");
        assert_eq!(u["valid_from"], Value::Null, "available immediately");
        assert_eq!(
            (u["download_limit"].clone(), u["upload_limit"].clone()),
            (json!("0"), json!("0"))
        );
    }
    assert_ne!(a["user"]["username"], b["user"]["username"]);
    assert_ne!(a["user"]["passcode"], b["user"]["passcode"]);
    assert_eq!(
        (a["user"]["id"].clone(), b["user"]["id"].clone()),
        (json!(1), json!(2))
    );
}

#[test]
fn a_bad_default_valid_for_setting_is_reported() {
    let h = Hotspot::with(DEFAULT_NET, "{ default_valid_for: \"1 fortnight\" }");
    let r = h.post(json!({ "action": "create_voucher" }));
    assert_eq!(r["error"], true);
    assert!(
        r["message"].as_str().unwrap().contains("default_valid_for"),
        "{r}"
    );
    // An explicit value still works.
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "valid_for": "always" }))["user"]["valid_for"],
        "always"
    );
}

#[test]
fn every_valid_for_of_the_seed_is_accepted_and_nothing_else() {
    let h = Hotspot::start();
    let mut ok = vec!["always".to_string(), "1 hour".into(), "1 day".into()];
    ok.extend((2..=23).map(|n| format!("{n} hours")));
    ok.extend((2..=30).map(|n| format!("{n} days")));
    ok.extend([35, 40, 45, 50, 55, 60, 90, 120, 150, 180, 365].map(|n| format!("{n} days")));
    for v in &ok {
        let r = h.post(json!({ "action": "create_voucher", "valid_for": v }));
        assert_eq!(r["user"]["valid_for"], json!(v), "{r}");
    }
    for bad in [
        "1 hours", "24 hours", "31 days", "1 week", "forever", "0 days", "1 Day", "366 days",
        "-1 day", "2  days",
    ] {
        let r = h.post(json!({ "action": "create_voucher", "valid_for": bad }));
        assert_eq!(r["error"], true, "{bad}: {r}");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid valid_for: must be one of 'always', '1 hour'"),
            "{bad}: {r}"
        );
    }
    assert_eq!(
        h.action("get_voucher_users")["users"]
            .as_array()
            .unwrap()
            .len(),
        ok.len(),
        "nothing stored for the bad ones"
    );
}

#[test]
fn huge_and_invalid_values_are_refused_or_unlimited_as_the_seed_says() {
    let h = Hotspot::start();
    // Dates.
    for bad in [
        "2025-02-30 10:00:00",
        "2025-01-17T10:00:00",
        "2025-01-17",
        "yesterday",
        "2025-13-01 00:00:00",
        "2025-01-17 24:00:00",
        "1969-12-31 23:59:59",
        "2025-01-17 10:00:00; DROP",
    ] {
        let r = h.post(json!({ "action": "create_voucher", "valid_from": bad }));
        assert_eq!(
            r,
            err("Invalid valid_from: use the format Y-m-d H:i:s, e.g. 2018-08-24 00:00:00"),
            "{bad}"
        );
    }
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "valid_from": "2024-02-29 23:59:59" }))["user"]
            ["valid_from"],
        "2024-02-29 23:59:59"
    );
    // Limits: whole MB from 1 to 9437184, anything else unlimited.
    let limit = |v: Value| {
        h.post(json!({ "action": "create_voucher", "download_limit": v, "upload_limit": v }))["user"].clone()
    };
    for (given, stored) in [
        (json!(1), "1"),
        (json!(9_437_184), "9437184"),
        (json!("9437184"), "9437184"),
        (json!(0), "0"),
        (json!(9_437_185), "0"),
        (json!(-1), "0"),
        (json!("-5"), "0"),
        (json!("abc"), "0"),
        (json!(1.5), "0"),
        (json!("99999999999999999999999999"), "0"),
        (json!([1]), "0"),
    ] {
        let u = limit(given.clone());
        assert_eq!(
            (u["download_limit"].clone(), u["upload_limit"].clone()),
            (json!(stored), json!(stored)),
            "{given}"
        );
    }
    let r = h.get("action=create_voucher&download_limit=9437185&upload_limit=-1");
    assert_eq!(
        (
            r["user"]["download_limit"].clone(),
            r["user"]["upload_limit"].clone()
        ),
        (json!("0"), json!("0"))
    );
    // Long strings.
    let u64c = "u".repeat(64);
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": u64c }))["user"]["username"],
        json!(u64c)
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": "u".repeat(65) })),
        err("Username must be at most 64 characters")
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": "é".repeat(64) }))["error"],
        false,
        "characters, not bytes"
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "passcode": "p".repeat(65) })),
        err("Passcode must be at most 64 characters")
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "fullname": "f".repeat(129) })),
        err("Fullname must be at most 128 characters")
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": "x".repeat(500_000) })),
        err("Username must be at most 64 characters")
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": "a\nb" })),
        err("Username must not contain control characters")
    );
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": { "a": 1 } })),
        err("Invalid username: expected a string or a number")
    );
    // Numbers as usernames are text.
    assert_eq!(
        h.post(json!({ "action": "create_voucher", "username": 12345 }))["user"]["username"],
        "12345"
    );
}

#[test]
fn a_thousand_vouchers_are_created_and_listed() {
    let h = Hotspot::start();
    let mut conn = h.server.connect();
    let mut names = std::collections::HashSet::new();
    for i in 0..1000 {
        let body = json!({ "api-key": h.key, "action": "create_voucher", "download_limit": i % 7 });
        let r = conn
            .send(
                "POST",
                "/api/",
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
            .expect("create");
        r.expect(200);
        let v = r.json();
        assert_eq!(v["user"]["id"], i + 1, "{v}");
        assert!(
            names.insert(v["user"]["username"].as_str().unwrap().to_string()),
            "unique usernames"
        );
    }
    // Over 256 KiB, the whole list is streamed (chunked) as it is read;
    // the same entries as one page of 1,000.
    let r = h
        .server
        .get(&format!("/api/?api-key={}&action=get_voucher_users", h.key));
    r.expect(200);
    assert!(r.body.len() > 256 * 1024, "{} bytes", r.body.len());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    let page = h.get("action=get_voucher_users&limit=1000");
    assert_eq!(page["users"], list["users"]);
    assert_eq!(page["next"], Value::Null);
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), 1000);
    for (i, u) in users.iter().enumerate() {
        assert_eq!(u["id"], i as u64 + 1, "in id order");
        assert!(names.contains(u["username"].as_str().unwrap()));
        assert_eq!(u["download_limit"], json!(i as u64 % 7));
    }
    let stats = h.admin("GET", "/stats", &Value::Null);
    assert_eq!(stats.json()["vouchers"], 1000);
}

#[test]
fn concurrent_creates_of_one_username_make_one_voucher() {
    let h = Hotspot::start();
    let addr = h.server.addr();
    let body = SEED_VOUCHER.replace("KEY", &h.key);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    http::send(
                        addr,
                        "POST",
                        "/api/",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    )
                    .unwrap()
                    .json()
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|a| a["error"] == false).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|a| **a == err("Username already exists"))
            .count(),
        7,
        "{answers:?}"
    );
    assert_eq!(
        h.action("get_voucher_users")["users"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn concurrent_key_rotations_leave_a_working_api_key() {
    let h = Hotspot::start();
    let mut before = h.key.clone();
    for round in 0..12 {
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| rotate(&h.server, "/api-key")))
                .collect();
            handles.into_iter().map(|t| t.join().unwrap()).collect()
        });
        // Serially, the last rotation's key would work; concurrently, at least one must.
        let working: Vec<&String> = keys
            .iter()
            .filter(|k| {
                h.server
                    .get(&format!("/api/?api-key={k}&action=get_free_users"))
                    .json()
                    == json!({ "users": [] })
            })
            .collect();
        assert!(
            !working.is_empty(),
            "round {round}: every rotated key was revoked by another rotation"
        );
        assert_eq!(
            h.server
                .get(&format!("/api/?api-key={before}&action=get_free_users"))
                .json(),
            err("API Key is incorrect"),
            "the key before them is revoked"
        );
        before = working[0].clone();
    }
}

// ---------------------------------------------------------------------------
// Lists past the response cap: paging
// ---------------------------------------------------------------------------

/// The host's response cap and the plugin's matching setting, small so that
/// a few hundred entries outgrow it.
const CAP: usize = 16_384;

fn capped(net: &str, settings: &str) -> Hotspot {
    Hotspot::from_yaml(&yaml_capped(net, settings, CAP))
}

/// Every entry of `action`'s list `field`, page by page (`limit` each),
/// checking that every page fits the cap and hands on a cursor until the end.
#[track_caller]
fn all_pages(h: &Hotspot, action: &str, field: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    for _ in 0..10_000 {
        let r = h.server.get(&format!(
            "/api/?api-key={}&action={action}&limit={limit}{after}",
            h.key
        ));
        r.expect(200);
        assert!(
            r.body.len() <= CAP,
            "a page of {action} is {} bytes",
            r.body.len()
        );
        let page = r.json();
        let entries = page[field]
            .as_array()
            .unwrap_or_else(|| panic!("{action}: {page}"));
        assert!(
            !entries.is_empty() && entries.len() <= limit,
            "{action}: {page}"
        );
        all.extend(entries.iter().cloned());
        match &page["next"] {
            Value::Null => return all,
            Value::Number(n) => after = format!("&after={n}"),
            Value::String(c) => after = format!("&after={c}"),
            other => panic!("{action}: next is {other}"),
        }
    }
    panic!("{action}: paging never ended");
}

#[test]
fn every_list_past_the_response_cap_says_how_to_page_and_its_pages_hold_every_entry() {
    let h = capped(
        DEFAULT_NET,
        "{ max_response_bytes: 16384, default_valid_for: \"2 hours\" }",
    );
    for _ in 0..2 {
        h.admin("POST", "/vouchers", &json!({ "count": 50 }))
            .expect(201);
    }
    let mut conn = h.server.connect();
    const EACH: usize = 150;
    for (k, kind) in ["email", "facebook", "mobile", "free"].iter().enumerate() {
        for i in 0..EACH {
            let mac = format!("02:00:00:00:{k:02X}:{i:02X}");
            let body = match *kind {
                "email" => json!({ "type": "email", "email": format!("guest{i}@example.com") }),
                "facebook" => {
                    json!({ "type": "facebook", "facebook_id": format!("fb{i}"), "name": format!("Guest {i}") })
                }
                "mobile" => json!({ "type": "mobile", "mobile": format!("+1555{i:06}") }),
                _ => json!({ "type": "free" }),
            };
            let mut body = body;
            body["mac"] = json!(mac);
            body["ip"] = json!(format!("192.168.{k}.{i}"));
            let r = conn
                .send(
                    "POST",
                    "/portal/signin",
                    &[
                        ("content-type", "application/json"),
                        ("x-gateway-key", &h.gateway),
                    ],
                    body.to_string().as_bytes(),
                )
                .expect("sign in");
            assert_eq!(r.json()["error"], false, "{r:?}");
        }
    }
    for (action, field, count) in [
        ("get_voucher_users", "users", 100),
        ("get_email_users", "users", EACH),
        ("get_fb_users", "users", EACH),
        ("get_mobile_users", "users", EACH),
        ("get_free_users", "users", EACH),
        ("get_logins", "logins", 4 * EACH),
        ("get_active_guests", "data", 4 * EACH),
    ] {
        let r = h
            .server
            .get(&format!("/api/?api-key={}&action={action}", h.key));
        r.expect(200);
        let message = r.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{action}: {r:?}"))
            .to_string();
        assert_eq!(
            r.json(),
            err(&format!(
                "The list is too large for one answer ({count} entries, over the {CAP}-byte response limit): page it with limit (1 to 1000) and after (the next of the previous page), e.g. action={action}&limit=1000"
            )),
            "{message}"
        );
        // Pages of at most 1000 entries stop early at the cap; small ones at their limit.
        for limit in [1000, 7] {
            let all = all_pages(&h, action, field, limit);
            assert_eq!(all.len(), count, "{action} with limit {limit}");
            let distinct: std::collections::HashSet<String> =
                all.iter().map(Value::to_string).collect();
            assert_eq!(distinct.len(), count, "{action}: an entry listed twice");
        }
    }
    let ids: Vec<u64> = all_pages(&h, "get_voucher_users", "users", 30)
        .iter()
        .map(|u| u["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=100).collect::<Vec<u64>>(),
        "vouchers in id order across pages"
    );
    let first = h.get("action=get_voucher_users&limit=3");
    assert_eq!(first["users"].as_array().unwrap().len(), 3);
    assert_eq!(first["next"], 3, "{first}");
    let rest = h.get("action=get_voucher_users&after=98");
    assert_eq!(
        rest["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(99), json!(100)]
    );
    assert_eq!(rest["next"], Value::Null);
    let macs: Vec<String> = all_pages(&h, "get_active_guests", "data", 100)
        .iter()
        .map(|g| g["mac-address"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = macs.clone();
    sorted.sort();
    assert_eq!(macs, sorted, "sessions in MAC order across pages");
    // A list that fits is still answered whole, in the original's shape.
    let small = capped(DEFAULT_NET, "{ max_response_bytes: 16384 }");
    small
        .admin("POST", "/vouchers", &json!({ "count": 3 }))
        .expect(201);
    let whole = small.action("get_voucher_users");
    assert_eq!(
        whole.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["users"],
        "{whole}"
    );
    assert_eq!(whole["users"].as_array().unwrap().len(), 3);
}

#[test]
fn paging_parameters_that_are_not_understood_get_clear_errors() {
    let h = Hotspot::start();
    h.admin("POST", "/vouchers", &json!({ "count": 2 }))
        .expect(201);
    let limit = err("Invalid limit: a whole number from 1 to 1000");
    let after = err("Invalid after: pass the next of the previous page");
    for (query, answer) in [
        ("action=get_voucher_users&limit=0", &limit),
        ("action=get_voucher_users&limit=1001", &limit),
        ("action=get_voucher_users&limit=ten", &limit),
        ("action=get_logins&limit=-1", &limit),
        ("action=get_voucher_users&after=abc", &after),
        ("action=get_logins&after=12", &after),
        ("action=get_active_guests&after=not-a-mac", &after),
    ] {
        assert_eq!(&h.get(query), answer, "{query}");
    }
    assert_eq!(
        h.post(json!({ "action": "get_voucher_users", "limit": [1] })),
        err("Invalid limit: expected a string or a number")
    );
    assert_eq!(
        h.action("get_voucher_users")["users"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing changed"
    );
}

#[test]
fn a_portal_login_with_an_overlong_username_is_refused_and_never_logged() {
    let h = Hotspot::start();
    for username in ["u".repeat(65), "x".repeat(1024), "bad\nname".to_string()] {
        let r = h.portal(
            "/login",
            &json!({ "username": username, "passcode": "p", "mac": MAC_A, "ip": "192.168.0.200" }),
        );
        r.expect(400);
        assert_eq!(
            r.json(),
            err("Invalid username: at most 64 characters, no control characters")
        );
    }
    assert_eq!(h.action("get_logins"), json!({ "logins": [] }));
    // The longest username a voucher can have is still a refusal logged as such.
    let longest = "u".repeat(64);
    assert_eq!(
        h.login(&longest, "p", MAC_A, "192.168.0.200"),
        err("Wrong user name.")
    );
    let logins = h.action("get_logins");
    assert_eq!(logins["logins"][0]["login"], json!(longest), "{logins}");
}

// ---------------------------------------------------------------------------
// The portal: voucher lifecycle, quotas, sign-ins, sessions
// ---------------------------------------------------------------------------

const MAC_A: &str = "A1:B2:C3:D4:E5:F6";
const MAC_B: &str = "F6:E5:D4:C3:B2:A1";

#[test]
fn the_portal_needs_the_gateway_key() {
    let h = Hotspot::start();
    let body = json!({ "username": "x", "passcode": "y", "mac": MAC_A, "ip": "192.168.0.200" })
        .to_string();
    for headers in [
        vec![],
        vec![("x-gateway-key", h.key.as_str())],
        vec![("x-gateway-key", "nope")],
    ] {
        let r = h
            .server
            .send("POST", "/portal/login", &headers, body.as_bytes());
        r.expect(401);
        assert_eq!(r.json(), err("Gateway key missing or incorrect"));
    }
    let bearer = format!("Bearer {}", h.gateway);
    let r = h.server.send(
        "POST",
        "/portal/login",
        &[("authorization", &bearer)],
        body.as_bytes(),
    );
    r.expect(200);
    assert_eq!(r.json(), err("Wrong user name."));
    let r = h.server.send(
        "GET",
        "/portal/login",
        &[("x-gateway-key", &h.gateway)],
        b"",
    );
    r.expect(405);
    let r = h.portal("/nowhere", &json!({}));
    r.expect(404);
    let r = h.portal(
        "/login",
        &json!({ "username": "x", "mac": "nope", "ip": "1.2.3.4" }),
    );
    r.expect(400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid mac")
    );
    let r = h.portal(
        "/login",
        &json!({ "username": "x", "mac": MAC_A, "ip": "999.1.1.1" }),
    );
    r.expect(400);
}

#[test]
fn a_voucher_lives_from_its_first_login_until_it_expires() {
    let h = Hotspot::start();
    h.post(json!({ "action": "create_voucher", "username": "guest1", "passcode": "secret", "valid_for": "1 hour" }));

    assert_eq!(
        h.login("nobody", "secret", MAC_A, "192.168.0.200"),
        err("Wrong user name.")
    );
    assert_eq!(
        h.login("guest1", "wrong", MAC_A, "192.168.0.200"),
        err("Wrong password.")
    );
    assert_eq!(
        h.login("guest1", "", MAC_A, "192.168.0.200"),
        err("Wrong password.")
    );
    let before = h.action("get_voucher_users")["users"][0].clone();
    assert_eq!(
        before["first_login"],
        Value::Null,
        "failed logins do not start the clock"
    );

    let ok = h.login("guest1", "secret", "a1-b2-c3-d4-e5-f6", "192.168.0.200");
    assert_eq!(ok["error"], false, "{ok}");
    assert_eq!(ok["message"], "Login successful");
    assert_eq!(
        ok["user"],
        json!({ "type": "voucher", "id": 1, "login": "guest1", "MAC": MAC_A, "IP": "192.168.0.200" })
    );
    let timeout = ok["session_timeout"].as_u64().unwrap();
    assert!(
        (3590..=3600).contains(&timeout),
        "the hour starts now: {timeout}"
    );
    assert_eq!(ok["download_remaining"], Value::Null);

    let v = h.action("get_voucher_users")["users"][0].clone();
    assert_about_now(&v["first_login"]);
    assert_eq!(v["last_login"], v["first_login"]);
    assert_eq!(v["MAC"], MAC_A, "bound at first login");

    // Another device is refused, the bound one may log in again.
    assert_eq!(
        h.login("guest1", "secret", MAC_B, "192.168.0.201"),
        err("The user is bound to another device.")
    );
    assert_eq!(
        h.login("guest1", "secret", MAC_A, "192.168.0.200")["error"],
        false
    );
    let again = h.action("get_voucher_users")["users"][0].clone();
    assert_eq!(
        again["first_login"], v["first_login"],
        "the clock starts once"
    );

    // Active, with accounting.
    let acc = h.account(json!([{ "mac": MAC_A, "bytes_in": 87456321u64, "bytes_out": 1056738924u64, "idle_time": 5 }]));
    assert_eq!(acc, json!({ "error": false, "updated": 1, "ended": [] }));
    let active = h.action("get_active_guests");
    let data = active["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let g = &data[0];
    assert_eq!(g["logins"], "guest1");
    assert_eq!(g["address"], "192.168.0.200");
    assert_eq!(g["mac-address"], MAC_A);
    assert_eq!(g["bytes-out"], "1056738924");
    assert_eq!(g["bytes-in"], "87456321");
    let uptime = g["uptime"].as_str().unwrap();
    assert!(
        uptime.starts_with("0h00m0") || uptime.starts_with("0h00m1"),
        "{uptime}"
    );
    assert!(
        g["idle-time"].as_str().unwrap().starts_with("0h00m0"),
        "{g}"
    );
    assert_eq!(
        g.as_object().unwrap().len(),
        7,
        "the seed's seven fields: {g}"
    );
    let text = h
        .server
        .get(&format!("/api/?api-key={}&action=get_active_guests", h.key))
        .text();
    assert!(text.starts_with(r#"{"data":[{"logins":"guest1","address":"192.168.0.200","mac-address":"A1:B2:C3:D4:E5:F6","uptime":""#), "{text}");

    // Two hours later (the operator's first_login correction stands in for
    // the wait): accounting ends the session and the login is refused.
    let moved = h.admin(
        "PATCH",
        "/vouchers/guest1",
        &json!({ "first_login": utc(-7200) }),
    );
    moved.expect(200);
    assert_eq!(moved.json()["first_login"], json!(utc(-7200)));
    let acc =
        h.account(json!([{ "mac": MAC_A, "bytes_in": 87456400u64, "bytes_out": 1056739000u64 }]));
    assert_eq!(
        acc,
        json!({ "error": false, "updated": 0, "ended": [{ "mac-address": MAC_A, "address": "192.168.0.200", "logins": "guest1", "reason": "expired", "message": "The user has expired or not valid." }] })
    );
    assert_eq!(h.action("get_active_guests"), json!({ "data": [] }));
    assert_eq!(
        h.login("guest1", "secret", MAC_A, "192.168.0.200"),
        err("The user has expired or not valid.")
    );
    // A session that is gone is reported as such.
    let acc = h.account(json!([{ "mac": MAC_A, "bytes_in": 1, "bytes_out": 1 }]));
    assert_eq!(acc["ended"][0]["reason"], "no_session");

    // Every attempt is in the login log, in order.
    let logins = h.action("get_logins")["logins"].as_array().unwrap().clone();
    let summary: Vec<(String, u64, String)> = logins
        .iter()
        .map(|l| {
            (
                l["login"].as_str().unwrap().to_string(),
                l["success"].as_u64().unwrap(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("nobody", 0, "Wrong user name."),
        ("guest1", 0, "Wrong password."),
        ("guest1", 0, "Wrong password."),
        ("guest1", 1, "Login successful"),
        ("guest1", 0, "The user is bound to another device."),
        ("guest1", 1, "Login successful"),
        ("guest1", 0, "The user has expired or not valid."),
    ];
    assert_eq!(
        summary,
        want.map(|(a, b, c)| (a.to_string(), b, c.to_string()))
            .to_vec()
    );
    let first = &logins[0];
    assert_eq!(first["type"], "voucher");
    assert_eq!(first["MAC"], MAC_A);
    assert_eq!(first["IP"], "192.168.0.200");
    assert_about_now(&first["time"]);
    assert_eq!(logins[4]["MAC"], MAC_B);
}

#[test]
fn valid_from_is_a_hard_start_and_first_login_can_be_reset() {
    let h = Hotspot::start();
    h.post(json!({ "action": "create_voucher", "username": "later", "passcode": "p", "valid_from": utc(3600) }));
    assert_eq!(
        h.login("later", "p", MAC_A, "10.0.0.2"),
        err("The user has expired or not valid.")
    );
    h.post(json!({ "action": "create_voucher", "username": "now", "passcode": "p", "valid_from": utc(-60), "valid_for": "always" }));
    let ok = h.login("now", "p", MAC_A, "10.0.0.2");
    assert_eq!(ok["error"], false);
    assert_eq!(ok["session_timeout"], Value::Null, "always");
    // The operator unbinds the device: another one may use it.
    h.admin("PATCH", "/vouchers/now", &json!({ "MAC": null }))
        .expect(200);
    assert_eq!(h.login("now", "p", MAC_B, "10.0.0.3")["error"], false);
    assert_eq!(h.action("get_voucher_users")["users"][1]["MAC"], MAC_B);
    let r = h.admin("PATCH", "/vouchers/ghost", &json!({ "first_login": null }));
    r.expect(404);
    let r = h.admin("PATCH", "/vouchers/now", &json!({ "first_login": "soon" }));
    r.expect(400);
    let r = h.admin("PATCH", "/vouchers/now", &json!({ "password": "x" }));
    r.expect(400);
}

#[test]
fn accounting_ends_a_session_over_its_quota() {
    let h = Hotspot::start();
    h.post(json!({ "action": "create_voucher", "username": "small", "passcode": "p", "download_limit": 1, "upload_limit": 2 }));
    let ok = h.login("small", "p", MAC_A, "10.0.0.2");
    assert_eq!(
        (
            ok["download_remaining"].clone(),
            ok["upload_remaining"].clone()
        ),
        (json!(1_048_576), json!(2_097_152))
    );
    let acc = h.account(json!([{ "mac": MAC_A, "bytes_in": 1000, "bytes_out": 1_048_575 }]));
    assert_eq!(acc["updated"], 1, "one byte left");
    let acc = h.account(json!([{ "mac": MAC_A, "bytes_in": 1000, "bytes_out": 1_048_576 }]));
    assert_eq!(
        acc,
        json!({ "error": false, "updated": 0, "ended": [{ "mac-address": MAC_A, "address": "10.0.0.2", "logins": "small", "reason": "quota", "message": "The user has used up its data limit." }] })
    );
    assert_eq!(
        h.login("small", "p", MAC_A, "10.0.0.2"),
        err("The user has used up its data limit.")
    );

    // Upload counts too, and usage adds up across sessions (logout folds in the last counters).
    h.post(
        json!({ "action": "create_voucher", "username": "up", "passcode": "p", "upload_limit": 1 }),
    );
    h.login("up", "p", MAC_B, "10.0.0.3");
    let out = h.portal(
        "/logout",
        &json!({ "mac": MAC_B, "bytes_in": 600_000, "bytes_out": 5 }),
    );
    assert_eq!(
        out.json(),
        json!({ "error": false, "message": "Logged out" })
    );
    assert_eq!(
        h.portal("/logout", &json!({ "mac": MAC_B })).json(),
        err("No active session")
    );
    h.login("up", "p", MAC_B, "10.0.0.3");
    let acc = h.account(json!([{ "mac": MAC_B, "bytes_in": 500_000, "bytes_out": 0 }]));
    assert_eq!(
        acc["ended"][0]["reason"], "quota",
        "600,000 + 500,000 bytes is over 1 MiB: {acc}"
    );

    // A removed voucher's session is ended at the next accounting.
    h.post(json!({ "action": "create_voucher", "username": "gone", "passcode": "p" }));
    let mac_c = "02:00:00:00:00:0C";
    h.login("gone", "p", mac_c, "10.0.0.4");
    h.post(json!({ "action": "remove_voucher", "username": "gone" }));
    let acc = h.account(json!([{ "mac": mac_c, "bytes_in": 1, "bytes_out": 1 }]));
    assert_eq!(acc["ended"][0]["reason"], "removed");
    let bad = h.portal("/accounting", &json!({ "sessions": "all" }));
    bad.expect(400);
}

#[test]
fn sign_ins_are_recorded_as_their_user_kinds() {
    let h = Hotspot::start();
    for (kind, list) in [
        ("email", "get_email_users"),
        ("fb", "get_fb_users"),
        ("mobile", "get_mobile_users"),
        ("free", "get_free_users"),
    ] {
        assert_eq!(h.action(list), json!({ "users": [] }), "{kind}");
    }
    let signin = |body: Value| {
        let r = h.portal("/signin", &body);
        r.expect(200);
        r.json()
    };
    let r = signin(
        json!({ "type": "email", "email": "John.Doe@gmail.com", "mac": "98:01:a7:cb:bb:00", "ip": "192.168.0.10", "comments": "John", "comments1": "New York", "comments2": "Male", "verified": 1 }),
    );
    assert_eq!(
        r,
        json!({ "error": false, "message": "Login successful", "user": { "type": "email", "id": 1, "login": "john.doe@gmail.com", "MAC": "98:01:A7:CB:BB:00", "IP": "192.168.0.10" } })
    );
    signin(
        json!({ "type": "email", "email": "john.doe@gmail.com", "mac": "98:01:A7:CB:BB:00", "ip": "192.168.0.10" }),
    );
    signin(
        json!({ "type": "email", "email": "jane.smith@yahoo.com", "mac": "74:D2:46:AC:EE:11", "ip": "192.168.0.11", "comments": "Jane", "comments1": "Los Angeles", "comments2": "Female", "marketing": 1 }),
    );
    let emails = h
        .server
        .get(&format!("/api/?api-key={}&action=get_email_users", h.key));
    let users = emails.json()["users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 2);
    let john = &users[0];
    assert_about_now(&john["created_at"]);
    assert_eq!(john["last_login"], john["last_modified"]);
    assert_eq!(
        *john,
        json!({ "id": 1, "email": "john.doe@gmail.com", "created_at": john["created_at"], "last_login": john["last_login"], "MAC": "98:01:A7:CB:BB:00", "visits": 2, "comments": "John", "comments1": "New York", "comments2": "Male", "last_modified": john["last_modified"], "marketing": 0, "verified": 1 })
    );
    assert_eq!(
        (
            users[1]["visits"].clone(),
            users[1]["marketing"].clone(),
            users[1]["verified"].clone()
        ),
        (json!(1), json!(1), json!(0))
    );
    assert!(
        emails
            .text()
            .starts_with(r#"{"users":[{"id":1,"email":"john.doe@gmail.com","created_at":""#),
        "the seed's order"
    );
    let order = [
        "\"id\"",
        "\"email\"",
        "\"created_at\"",
        "\"last_login\"",
        "\"MAC\"",
        "\"visits\"",
        "\"comments\"",
        "\"comments1\"",
        "\"comments2\"",
        "\"last_modified\"",
        "\"marketing\"",
        "\"verified\"",
    ];
    let text = emails.text();
    let first = &text[..text.find('}').unwrap()];
    let positions: Vec<usize> = order.iter().map(|k| first.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{first}");

    signin(
        json!({ "type": "facebook", "facebook_id": "1000123", "name": "Ann Lee", "email": "ann@example.com", "mac": "02:00:00:00:00:01", "ip": "192.168.0.12" }),
    );
    let fb = h.action("get_fb_users")["users"][0].clone();
    assert_eq!(
        fb,
        json!({ "id": 1, "facebook_id": "1000123", "name": "Ann Lee", "email": "ann@example.com", "created_at": fb["created_at"], "last_login": fb["last_login"], "MAC": "02:00:00:00:00:01", "visits": 1, "comments": "", "comments1": "", "comments2": "", "last_modified": fb["last_modified"], "marketing": 0 })
    );
    signin(
        json!({ "type": "mobile", "mobile": "15559876543", "mac": "02:00:00:00:00:02", "ip": "192.168.0.201", "verified": true }),
    );
    let mobile = h.action("get_mobile_users")["users"][0].clone();
    assert_eq!(
        mobile,
        json!({ "id": 1, "mobile": "15559876543", "created_at": mobile["created_at"], "last_login": mobile["last_login"], "MAC": "02:00:00:00:00:02", "visits": 1, "comments": "", "comments1": "", "comments2": "", "last_modified": mobile["last_modified"], "marketing": 0, "verified": 1 })
    );
    signin(json!({ "type": "free", "mac": "02:00:00:00:00:03", "ip": "192.168.0.13" }));
    signin(json!({ "type": "free", "mac": "02-00-00-00-00-03", "ip": "192.168.0.13" }));
    let free = h.action("get_free_users")["users"].clone();
    assert_eq!(
        free,
        json!([{ "id": 1, "MAC": "02:00:00:00:00:03", "created_at": free[0]["created_at"], "last_login": free[0]["last_login"], "visits": 2, "last_modified": free[0]["last_modified"] }])
    );

    // Sessions of every kind are active guests, logins as the seed shows them.
    let active = h.action("get_active_guests")["data"]
        .as_array()
        .unwrap()
        .clone();
    let logins: Vec<&str> = active
        .iter()
        .map(|g| g["logins"].as_str().unwrap())
        .collect();
    assert_eq!(
        logins,
        [
            "Ann Lee",
            "15559876543",
            "02:00:00:00:00:03",
            "jane.smith@yahoo.com",
            "john.doe@gmail.com"
        ],
        "in MAC order"
    );
    let log = h.action("get_logins")["logins"].as_array().unwrap().clone();
    let kinds: Vec<&str> = log.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["email", "email", "email", "fb", "mobile", "free", "free"]
    );

    for (body, needle) in [
        (
            json!({ "type": "email", "email": "not-an-address", "mac": MAC_A, "ip": "10.0.0.1" }),
            "Invalid email",
        ),
        (
            json!({ "type": "mobile", "mobile": "12ab", "mac": MAC_A, "ip": "10.0.0.1" }),
            "Invalid mobile",
        ),
        (
            json!({ "type": "voucher", "mac": MAC_A, "ip": "10.0.0.1" }),
            "Invalid type",
        ),
        (
            json!({ "type": "email", "email": "a@b.co", "comments": "c".repeat(256), "mac": MAC_A, "ip": "10.0.0.1" }),
            "Invalid comments",
        ),
        (
            json!({ "type": "email", "email": "a@b.co", "marketing": 7, "mac": MAC_A, "ip": "10.0.0.1" }),
            "Invalid marketing",
        ),
    ] {
        let r = h.portal("/signin", &body);
        r.expect(400);
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(needle),
            "{body}: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Guest hosts from a real network namespace
// ---------------------------------------------------------------------------

/// A network namespace made for one test, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hs-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn run(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// guest0 (granted) with two permanent neighbours; other0 (not granted) with one.
fn guest_namespace() -> Netns {
    let ns = Netns::new();
    ns.run(&[
        "link", "add", "guest0", "type", "veth", "peer", "name", "peer0",
    ]);
    ns.run(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "peer1",
    ]);
    for link in ["guest0", "peer0", "other0", "peer1"] {
        ns.run(&["link", "set", link, "up"]);
    }
    ns.run(&[
        "neigh",
        "add",
        "192.168.0.200",
        "lladdr",
        "a1:b2:c3:d4:e5:f6",
        "dev",
        "guest0",
        "nud",
        "permanent",
    ]);
    ns.run(&[
        "neigh",
        "add",
        "192.168.0.201",
        "lladdr",
        "f6:e5:d4:c3:b2:a1",
        "dev",
        "guest0",
        "nud",
        "permanent",
    ]);
    ns.run(&[
        "neigh",
        "add",
        "10.9.9.9",
        "lladdr",
        "02:00:00:00:99:99",
        "dev",
        "other0",
        "nud",
        "permanent",
    ]);
    ns
}

#[test]
fn get_guest_hosts_reads_the_neighbour_table_of_the_guest_links() {
    let ns = guest_namespace();
    let net = format!(
        "{{ links: [\"br-guest*\", \"guest*\"], netns: {} }}",
        quote(&ns.0)
    );
    let h = Hotspot::with(&net, "{ guest_links: [guest0, br-guest9] }");
    let r = h.action("get_guest_hosts");
    let hosts = r["hosts"].as_array().unwrap_or_else(|| panic!("{r}"));
    let mut got: Vec<Value> = hosts
        .iter()
        .filter(|h| h["state"] == "permanent")
        .cloned()
        .collect();
    got.sort_by_key(|h| h["IP"].as_str().unwrap().to_string());
    assert_eq!(
        got,
        json!([
            { "IP": "192.168.0.200", "MAC": "A1:B2:C3:D4:E5:F6", "link": "guest0", "state": "permanent" },
            { "IP": "192.168.0.201", "MAC": "F6:E5:D4:C3:B2:A1", "link": "guest0", "state": "permanent" },
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    assert!(
        hosts.iter().all(|h| h["link"] == "guest0"),
        "only the guest link: {r}"
    );

    // The table is live.
    ns.run(&["neigh", "del", "192.168.0.201", "dev", "guest0"]);
    let r = h.action("get_guest_hosts");
    assert!(!r.to_string().contains("192.168.0.201"), "{r}");
    assert!(r.to_string().contains("192.168.0.200"), "{r}");
}

#[test]
fn get_guest_hosts_past_the_response_cap_says_how_to_page_and_pages_by_link_and_ip() {
    let ns = guest_namespace();
    let batch: String = (0..300)
        .map(|i| {
            format!(
                "neigh add 10.1.{}.{} lladdr 02:00:00:00:{:02x}:{:02x} dev guest0 nud permanent\n",
                i / 250,
                i % 250 + 1,
                i / 256,
                i % 256
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("{}.neigh", ns.0));
    std::fs::write(&file, batch).expect("write the batch");
    ns.run(&["-batch", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    let net = format!("{{ links: [\"guest*\"], netns: {} }}", quote(&ns.0));
    let h = capped(&net, "{ guest_links: [guest0], max_response_bytes: 16384 }");
    let r = h.action("get_guest_hosts");
    let message = r["message"].as_str().unwrap_or_else(|| panic!("{r}"));
    // The kernel adds neighbours of its own (IPv6 ones) besides the 302 permanent ones.
    let count: usize = message
        .strip_prefix("The list is too large for one answer (")
        .and_then(|m| {
            m.split_once(" entries, over the 16384-byte response limit): page it with limit")
        })
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    let hosts = all_pages(&h, "get_guest_hosts", "hosts", 1000);
    assert_eq!(hosts.len(), count);
    assert_eq!(
        hosts.iter().filter(|h| h["state"] == "permanent").count(),
        302
    );
    let keys: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{}/{}",
                h["link"].as_str().unwrap(),
                h["IP"].as_str().unwrap()
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "pages in link/IP order, each host once");
    assert_eq!(all_pages(&h, "get_guest_hosts", "hosts", 50).len(), count);
}

#[test]
fn a_guest_link_outside_the_net_grant_is_a_clear_error() {
    let ns = guest_namespace();
    let net = format!("{{ links: [\"guest*\"], netns: {} }}", quote(&ns.0));
    let h = Hotspot::with(&net, "{ guest_links: [guest0, other0] }");
    let r = h.action("get_guest_hosts");
    assert_eq!(r["error"], true, "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("Guest link \"other0\" is not allowed by the plugin's net grant"),
        "{message}"
    );
    assert!(!r.to_string().contains("10.9.9.9"));

    let h = Hotspot::with(&net, "{ default_valid_for: \"1 day\" }");
    assert_eq!(
        h.action("get_guest_hosts"),
        err("No guest links configured (setting guest_links)")
    );
}

/// Group commit under load, then kill -9, five times over: every voucher
/// acknowledged by any of 32 concurrent clients is there after the restart,
/// with the id it was answered with, and no id was handed out twice.
#[test]
fn every_voucher_acknowledged_before_a_kill_survives_it() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const CLIENTS: usize = 32;
    const ROUNDS: usize = 5;
    let mut h = Hotspot::start();
    // username -> id, as answered.
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let addr = h.server.addr();
        let acks = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (acks, key) = (acks.clone(), h.key.clone());
                std::thread::spawn(move || {
                    let Ok(mut conn) = http::Conn::open(addr) else {
                        return;
                    };
                    for i in 0.. {
                        let username = format!("r{round}c{c}n{i}");
                        let body = json!({ "api-key": key, "action": "create_voucher", "username": username });
                        let sent = conn.send(
                            "POST",
                            "/api/",
                            &[("content-type", "application/json")],
                            body.to_string().as_bytes(),
                        );
                        // The server was killed: what was not answered was
                        // never acknowledged.
                        let Ok(r) = sent else { return };
                        assert_eq!(r.status, 200, "{}", r.text());
                        let v = r.json();
                        assert_eq!(v["error"], false, "{v}");
                        let id = v["user"]["id"].as_u64().expect("an id");
                        acks.lock().unwrap().push((username, id));
                    }
                })
            })
            .collect();
        // Kill once a few hundred creates were acknowledged in this round.
        let started = Instant::now();
        while acks.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.server.signal("KILL");
        h.server
            .wait_exit(Duration::from_secs(10))
            .expect("exited after SIGKILL");
        for c in clients {
            c.join().expect("a client thread");
        }
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        assert!(acks.len() >= 300, "round {round}: only {} acks", acks.len());
        for (username, id) in acks {
            assert!(acknowledged.insert(username, id).is_none());
        }
        h.server.restart();

        let stored: BTreeMap<String, u64> = h.action("get_voucher_users")["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["username"].as_str().unwrap().to_string(),
                    u["id"].as_u64().unwrap(),
                )
            })
            .collect();
        for (username, id) in &acknowledged {
            assert_eq!(
                stored.get(username),
                Some(id),
                "round {round}: acknowledged voucher {username} (id {id}) lost"
            );
        }
        let ids: std::collections::BTreeSet<u64> = stored.values().copied().collect();
        assert_eq!(ids.len(), stored.len(), "an id was handed out twice");
    }
}
