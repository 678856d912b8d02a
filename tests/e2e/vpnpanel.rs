//! The vpnpanel plugin's core (plugins/vpnpanel: users, sub-admins, keys,
//! settings, traffic reports, subscriptions) through the real server: the
//! API document's examples field by field, both roles
//! on every endpoint, quota races, a bulk of 10,000, flexible activation,
//! the limited/expired/disabled rules and OpenVPN profiles.
//!
//! `public_url` is the seed's `http://YOUR_PANEL_DOMAIN`, so links compare
//! with the seed's text; requests go to the test server by path. The main
//! server reports traffic with a main-admin key; a node reports with the
//! token it was given at provisioning (a stand-in node agent in the test
//! records it). When `openvpn` is installed, a downloaded profile is also
//! fed to it (it must parse and reach for the remote); otherwise SKIP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, eventually, quote, wasm};
use crate::e2e::http::{self, Response};

const MISSING: &str = "API key is missing";
const INVALID: &str = "Invalid or inactive API key";
const MAIN_REQUIRED: &str = "Permission denied: Main admin API key required.";
const NOT_FOUND: &str = "User not found or permission denied";

pub(crate) fn panel_yaml(settings: &str) -> String {
    panel_yaml_to("127.0.0.1:9", settings)
}

/// The panel's config with `outbound` allowed to `node` only.
pub(crate) fn panel_yaml_to(node: &str, settings: &str) -> String {
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: vpnpanel\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/v1/\n      - listen: \"127.0.0.1:0\"\n        prefix: /sub/\n      - listen: \"127.0.0.1:0\"\n        prefix: /download/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, wireguard: {{ devices: [\"vpnwg*\"] }}, net: {{ links: [\"vpnwg*\"], write: true }}, outbound: {{ hosts: [{node}], timeout_ms: 5000, max_response_bytes: 1048576 }} }}\n    limits: {{ memory_mb: 256, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: 33554432 }}\n    settings: {{ public_url: \"http://YOUR_PANEL_DOMAIN\", server_address: 203.0.113.7, openvpn_port: 1194, openvpn_protocol: udp{settings} }}\n",
        wasm = quote(&wasm("vpnpanel").to_string_lossy()),
        node = quote(node),
    )
}

/// A running panel with a main-admin key.
pub(crate) struct Panel {
    pub(crate) server: Server,
    pub(crate) main: String,
}

impl Panel {
    pub(crate) fn start() -> Panel {
        Panel::with_settings("")
    }

    /// `settings`: more entries of the settings mapping, each starting ", ".
    pub(crate) fn with_settings(settings: &str) -> Panel {
        Panel::from_yaml(&panel_yaml(settings))
    }

    pub(crate) fn from_yaml(yaml: &str) -> Panel {
        let server = Setup::with_yaml(yaml).serve();
        let r = admin(&server, "POST", "/keys", &json!({ "label": "tests" }));
        r.expect(201);
        let main = r.json()["api_key"].as_str().expect("api_key").to_string();
        Panel { server, main }
    }

    #[track_caller]
    pub(crate) fn call(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Response {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("x-api-key", k));
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
    pub(crate) fn main(&self, method: &str, path: &str, body: &Value) -> Response {
        self.call(Some(&self.main), method, path, body)
    }

    /// Creates a sub-admin; returns (id, key).
    #[track_caller]
    pub(crate) fn sub_admin(&self, username: &str, extra: Value) -> (u64, String) {
        let mut body = json!({ "username": username, "password": "pass" });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let r = self.main("POST", "/sub_admins", &body);
        r.expect(201);
        let v = r.json();
        (
            v["sub_admin"]["id"].as_u64().expect("id"),
            v["api_key"].as_str().expect("api_key").to_string(),
        )
    }

    #[track_caller]
    pub(crate) fn create_user(&self, key: &str, body: Value) -> Response {
        self.call(Some(key), "POST", "/users", &body)
    }

    #[track_caller]
    pub(crate) fn user(&self, name: &str) -> Value {
        let r = self.main("GET", &format!("/users/{name}"), &Value::Null);
        r.expect(200);
        r.json()
    }

    /// The main server reports `bytes` for `name`.
    #[track_caller]
    pub(crate) fn report(&self, name: &str, bytes: u64) {
        self.main(
            "POST",
            "/traffic/report",
            &json!({ "users": [{ "username": name, "bytes": bytes, "connections": 1 }] }),
        )
        .expect(200);
    }

    #[track_caller]
    pub(crate) fn token_of(&self, name: &str) -> String {
        let v = self
            .main("GET", &format!("/users/{name}/sub"), &Value::Null)
            .json();
        let url = v["sub_url"].as_str().expect("sub_url");
        url.split("token=").nth(1).expect("token").to_string()
    }
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    server.plugin_admin("vpnpanel", method, path, body)
}

/// `{"success": false, "message": message}` with `status`, nothing else.
#[track_caller]
pub(crate) fn assert_fail(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json(), json!({ "success": false, "message": message }));
}

#[track_caller]
pub(crate) fn assert_ok(r: &Response, status: u16, message: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["message"], message, "{v}");
    v
}

fn today() -> String {
    let secs = crate::e2e::harness::now_secs();
    date_of(secs)
}

fn date_of(secs: u64) -> String {
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn status_answers_panel_is_online_with_a_timestamp_without_a_key() {
    let p = Panel::start();
    let r = p.call(None, "GET", "/status", &Value::Null);
    let v = assert_ok(&r, 200, "Panel is online");
    let ts = v["timestamp"].as_str().expect("timestamp");
    // 2024-01-01T12:00:00.000000
    assert_eq!(ts.len(), 26, "{ts}");
    assert!(ts.starts_with(&today()), "{ts}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(3));
}

#[test]
fn seed_user_examples_answer_as_documented() {
    let p = Panel::start();
    let (_, sa_key) = p.sub_admin("sa1", json!({}));

    // POST /users, three examples.
    let r = p.create_user(
        &p.main,
        json!({ "username": "test_user", "max_clients": 2, "activation_type": "fixed_date",
                "expiry_date_str": "2026-12-31", "data_limit": 50, "data_limit_unit": "GB", "enable_wg1": true }),
    );
    let v = assert_ok(&r, 201, "Users created successfully.");
    assert_eq!(v["created_users"], json!(["test_user"]));
    let r = p.create_user(
        &p.main,
        json!({ "bulk_count": 3, "activation_type": "flexible_days", "pending_activation_days": 30,
                "enable_l2tp": true, "l2tp_password": "P@ss1234" }),
    );
    let v = assert_ok(&r, 201, "Users created successfully.");
    let bulk = v["created_users"]
        .as_array()
        .expect("created_users")
        .clone();
    assert_eq!(bulk.len(), 3);
    for name in &bulk {
        let name = name.as_str().expect("name");
        assert!(
            name.starts_with("user")
                && name[4..].chars().all(|c| c.is_ascii_digit())
                && name.len() >= 8,
            "{name}"
        );
        let u = p.user(name);
        assert_eq!(u["activation_type"], "flexible_days");
        assert_eq!(u["status"], "pending_activation");
        assert_eq!(u["l2tp"]["password"], "P@ss1234");
    }
    assert_fail(
        &p.create_user(&p.main, json!({ "max_clients": 1 })),
        400,
        "Username is required.",
    );

    // GET /users/<name>, three examples.
    p.report("test_user", 123_456);
    let v = p.user("test_user");
    assert_eq!(v["success"], true);
    assert_eq!(v["username"], "test_user");
    assert_eq!(v["is_active"], true);
    assert_eq!(v["data_limit"], 50.0);
    assert_eq!(v["data_limit_unit"], "GB");
    assert_eq!(v["total_traffic_bytes"], 123_456);
    assert_eq!(v["max_clients"], 2);
    assert_eq!(v["expiry_date"], "2026-12-31");
    assert_eq!(v["protocols"]["wg1"], true);
    assert_eq!(v["openvpn_servers"][0]["name"], "Main Server");
    assert_eq!(v["openvpn_servers"][0]["is_tunnel"], false);
    // The main server just reported one connection.
    assert_eq!(v["is_online"], true);
    assert_eq!(v["active_connections"], 1);
    assert_fail(
        &p.call(Some(&sa_key), "GET", "/users/unknown_user", &Value::Null),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(None, "GET", "/users/test_user", &Value::Null),
        401,
        MISSING,
    );

    // PUT /users/<name>, three examples.
    let r = p.main("PUT", "/users/test_user", &json!({ "max_clients": 3, "data_limit": 100, "data_limit_unit": "GB", "notes": "VIP user" }));
    assert_ok(&r, 200, "User updated successfully.");
    let v = p.user("test_user");
    assert_eq!(
        (
            v["max_clients"].clone(),
            v["data_limit"].clone(),
            v["notes"].clone()
        ),
        (json!(3), json!(100.0), json!("VIP user"))
    );
    // The seed's node_1 (provisioning it fails here; it exists all the same).
    p.main("POST", "/nodes", &json!({ "name": "Node A", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 }))
        .expect(202);
    let r = p.main(
        "PUT",
        "/users/test_user",
        &json!({ "enable_wg1": true, "nodes": ["main", "node_1"] }),
    );
    assert_ok(&r, 200, "User updated successfully.");
    assert_eq!(p.user("test_user")["nodes"], json!(["main", "node_1"]));
    // The legacy names.
    let r = p.main(
        "PUT",
        "/users/test_user",
        &json!({ "allowed_nodes": ["main"], "expiry_date_str": "2027-01-15" }),
    );
    assert_ok(&r, 200, "User updated successfully.");
    let v = p.user("test_user");
    assert_eq!(
        (v["nodes"].clone(), v["expiry_date"].clone()),
        (json!(["main"]), json!("2027-01-15"))
    );
    assert_fail(
        &p.main("PUT", "/users/test_user", &json!({})),
        400,
        "Request body must be JSON and not empty",
    );

    // POST toggle, three examples.
    assert_ok(
        &p.main("POST", "/users/test_user/toggle", &Value::Null),
        200,
        "User toggled",
    );
    assert_eq!(p.user("test_user")["is_active"], false);
    assert_ok(
        &p.main("POST", "/users/test_user/toggle", &Value::Null),
        200,
        "User toggled",
    );
    assert_eq!(p.user("test_user")["is_active"], true);
    assert_fail(
        &p.call(
            Some(&sa_key),
            "POST",
            "/users/unknown_user/toggle",
            &Value::Null,
        ),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(None, "POST", "/users/test_user/toggle", &Value::Null),
        401,
        MISSING,
    );

    // GET sub, three examples.
    let v = p.main("GET", "/users/test_user/sub", &Value::Null).json();
    assert_eq!(v["success"], true);
    let url = v["sub_url"].as_str().expect("sub_url");
    assert!(
        url.starts_with("http://YOUR_PANEL_DOMAIN/sub/test_user?token="),
        "{url}"
    );
    assert_fail(
        &p.call(
            Some(&sa_key),
            "GET",
            "/users/unknown_user/sub",
            &Value::Null,
        ),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(None, "GET", "/users/test_user/sub", &Value::Null),
        401,
        MISSING,
    );

    // POST revoke, three examples: the old token is dead at once.
    let old = p.token_of("test_user");
    p.server
        .send("GET", &format!("/sub/test_user?token={old}"), &[], b"")
        .expect(200);
    let r = p.main("POST", "/users/test_user/revoke", &Value::Null);
    let v = assert_ok(
        &r,
        200,
        "Token revoked instantly. Certificate generation running in background.",
    );
    let new_url = v["new_subscription_url"]
        .as_str()
        .expect("new_subscription_url");
    assert!(
        new_url.starts_with("http://YOUR_PANEL_DOMAIN/sub/test_user?token="),
        "{new_url}"
    );
    let new = new_url.split("token=").nth(1).expect("token");
    assert_ne!(new, old);
    p.server
        .send("GET", &format!("/sub/test_user?token={old}"), &[], b"")
        .expect(403);
    p.server
        .send("GET", &format!("/sub/test_user?token={new}"), &[], b"")
        .expect(200);
    let other = json!({ "username": "other_user" });
    p.create_user(&p.main, other).expect(201);
    assert_fail(
        &p.call(
            Some(&sa_key),
            "POST",
            "/users/other_user/revoke",
            &Value::Null,
        ),
        404,
        "User not found or permission denied.",
    );
    assert_fail(
        &p.main("POST", "/users/unknown_user/revoke", &Value::Null),
        404,
        "User not found or permission denied.",
    );

    // POST reset_traffic.
    let r = p.main("POST", "/users/test_user/reset_traffic", &Value::Null);
    let v = assert_ok(&r, 200, "Traffic reset for 'test_user'.");
    assert_eq!(v["user_re_enabled"], false);
    assert_eq!(p.user("test_user")["total_traffic_bytes"], 0);
    assert_fail(
        &p.call(
            Some(&sa_key),
            "POST",
            "/users/unknown_user/reset_traffic",
            &Value::Null,
        ),
        404,
        NOT_FOUND,
    );

    // GET all_ovpn_links, three examples.
    let v = p
        .main("GET", "/users/test_user/all_ovpn_links", &Value::Null)
        .json();
    assert_eq!(v["success"], true);
    assert_eq!(v["username"], "test_user");
    assert_eq!(v["links"][0]["name"], "main_udp");
    let link = v["links"][0]["url"].as_str().expect("url");
    assert!(
        link.starts_with("http://YOUR_PANEL_DOMAIN/download/test_user/main_udp.ovpn"),
        "{link}"
    );
    assert_fail(
        &p.call(
            Some(&sa_key),
            "GET",
            "/users/other_user/all_ovpn_links",
            &Value::Null,
        ),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(
            Some("INVALID_KEY"),
            "GET",
            "/users/test_user/all_ovpn_links",
            &Value::Null,
        ),
        401,
        INVALID,
    );

    // GET list_all, three examples.
    p.create_user(&sa_key, json!({ "username": "sa_user1" }))
        .expect(201);
    p.create_user(&sa_key, json!({ "username": "sa_user2" }))
        .expect(201);
    let v = p.main("GET", "/users/list_all", &Value::Null).json();
    assert_eq!(v["success"], true);
    let main_users: Vec<&str> = v["main_admin"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert!(
        main_users.contains(&"test_user")
            && main_users.contains(&"other_user")
            && main_users.len() == 5,
        "{main_users:?}"
    );
    assert_eq!(v["sub_admins"][0]["id"], 1);
    assert_eq!(v["sub_admins"][0]["username"], "sa1");
    let names: Vec<&str> = v["sub_admins"][0]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["sa_user1", "sa_user2"]);
    let v = p
        .call(Some(&sa_key), "GET", "/users/list_all", &Value::Null)
        .json();
    assert_eq!(v["success"], true);
    assert!(v.get("sub_admins").is_none() && v.get("main_admin").is_none());
    let names: Vec<&str> = v["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["sa_user1", "sa_user2"]);
    assert_fail(
        &p.call(None, "GET", "/users/list_all", &Value::Null),
        401,
        MISSING,
    );

    // DELETE, three examples.
    assert_ok(
        &p.main("DELETE", "/users/test_user", &Value::Null),
        200,
        "User 'test_user' deleted successfully.",
    );
    assert_fail(
        &p.main("GET", "/users/test_user", &Value::Null),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(Some(&sa_key), "DELETE", "/users/unknown_user", &Value::Null),
        404,
        NOT_FOUND,
    );
    assert_fail(
        &p.call(
            Some("INVALID_KEY"),
            "DELETE",
            "/users/other_user",
            &Value::Null,
        ),
        401,
        INVALID,
    );
}

#[test]
fn a_sub_admin_never_sees_or_touches_another_sub_admins_or_the_main_admins_users() {
    let p = Panel::start();
    let (_, a) = p.sub_admin("sa_a", json!({}));
    let (_, b) = p.sub_admin("sa_b", json!({}));
    p.create_user(&a, json!({ "username": "a_user" }))
        .expect(201);
    p.create_user(&p.main, json!({ "username": "m_user" }))
        .expect(201);
    for victim in ["a_user", "m_user"] {
        for (method, path, body) in [
            ("GET", format!("/users/{victim}"), Value::Null),
            ("PUT", format!("/users/{victim}"), json!({ "notes": "x" })),
            ("DELETE", format!("/users/{victim}"), Value::Null),
            ("POST", format!("/users/{victim}/toggle"), Value::Null),
            (
                "POST",
                format!("/users/{victim}/reset_traffic"),
                Value::Null,
            ),
            ("GET", format!("/users/{victim}/sub"), Value::Null),
            (
                "GET",
                format!("/users/{victim}/all_ovpn_links"),
                Value::Null,
            ),
        ] {
            assert_fail(&p.call(Some(&b), method, &path, &body), 404, NOT_FOUND);
        }
        assert_fail(
            &p.call(
                Some(&b),
                "POST",
                &format!("/users/{victim}/revoke"),
                &Value::Null,
            ),
            404,
            "User not found or permission denied.",
        );
    }
    // Nothing changed.
    assert_eq!(p.user("a_user")["is_active"], true);
    // A sub-admin's users get only its allowed servers.
    p.main("POST", "/nodes", &json!({ "name": "Node A", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 }))
        .expect(202);
    let (_, c) = p.sub_admin("sa_c", json!({ "allowed_servers": ["node_1"] }));
    p.create_user(&c, json!({ "username": "c_user" }))
        .expect(201);
    assert_eq!(p.user("c_user")["nodes"], json!(["node_1"]));
    let r = p.create_user(&c, json!({ "username": "c_user2", "nodes": ["main"] }));
    assert_eq!((r.status, r.json()["success"].clone()), (403, json!(false)));
    assert_eq!(
        p.call(
            Some(&c),
            "PUT",
            "/users/c_user",
            &json!({ "nodes": ["main"] })
        )
        .status,
        403
    );
    assert_eq!(p.user("m_user")["notes"], "");
    // A sub_admin_id in the body is ignored for a sub-admin key.
    p.create_user(&b, json!({ "username": "b_user", "sub_admin_id": 1 }))
        .expect(201);
    let v = p
        .call(Some(&a), "GET", "/users/list_all", &Value::Null)
        .json();
    assert_eq!(
        v["users"],
        json!([{ "username": "a_user", "is_active": true, "status": "active", "total_traffic_bytes": 0, "data_limit_bytes": null, "expiry_date": null }])
    );
    // Its own users: every action works.
    p.call(
        Some(&a),
        "PUT",
        "/users/a_user",
        &json!({ "notes": "mine" }),
    )
    .expect(200);
    p.call(Some(&a), "POST", "/users/a_user/toggle", &Value::Null)
        .expect(200);
    p.call(Some(&a), "GET", "/users/a_user/sub", &Value::Null)
        .expect(200);
    p.call(Some(&a), "DELETE", "/users/a_user", &Value::Null)
        .expect(200);
    // Infrastructure and management are main-admin only.
    for (method, path, message) in [
        ("GET", "/sub_admins", "Permission denied"),
        ("POST", "/sub_admins/1/reset_usage", "Permission denied"),
        ("DELETE", "/sub_admins/1", "Permission denied"),
        ("PUT", "/sub_admins/1", "Permission denied"),
        ("GET", "/server_settings", MAIN_REQUIRED),
        ("POST", "/update_ipsec_psk", MAIN_REQUIRED),
    ] {
        assert_fail(
            &p.call(
                Some(&b),
                method,
                path,
                &json!({ "notes": "x", "new_psk": "X" }),
            ),
            403,
            message,
        );
    }
    // A sub-admin key cannot report traffic.
    assert_fail(
        &p.call(Some(&b), "POST", "/traffic/report", &json!({ "users": [] })),
        403,
        MAIN_REQUIRED,
    );
}

#[test]
fn sub_admin_examples_answer_as_documented_and_delete_cascades() {
    let p = Panel::start();
    // The seed's node_1 (provisioning it fails here; it exists all the same).
    p.main("POST", "/nodes", &json!({ "name": "Node A", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 }))
        .expect(202);
    let r = p.main(
        "POST",
        "/sub_admins",
        &json!({ "username": "sa1", "password": "pass", "subscription_port": 2096, "panel_port": 8888,
                 "max_users_limit": 100, "total_usage_quota_gb": 500, "is_active": true, "notes": "Reseller A",
                 "allowed_servers": ["main", "node_1"] }),
    );
    let v = assert_ok(
        &r,
        201,
        "Sub-admin created successfully and ports configured.",
    );
    assert_eq!(v["sub_admin"], json!({ "id": 1, "username": "sa1" }));
    let key = v["api_key"].as_str().expect("api_key").to_string();
    assert_fail(
        &p.main(
            "POST",
            "/sub_admins",
            &json!({ "username": "sa1", "password": "pass" }),
        ),
        409,
        "A sub-admin with this username already exists.",
    );
    assert_fail(
        &p.main("POST", "/sub_admins", &json!({ "username": "sa2" })),
        400,
        "Username and password are required.",
    );

    let v = p.main("GET", "/sub_admins", &Value::Null).json();
    assert_eq!(v["success"], true);
    let sa = &v["sub_admins"][0];
    for (field, want) in [
        ("id", json!(1)),
        ("username", json!("sa1")),
        ("subscription_port", json!(2096)),
        ("panel_port", json!(8888)),
        ("max_users_limit", json!(100)),
        ("total_usage_quota_gb", json!(500.0)),
    ] {
        assert_eq!(sa[field], want, "{field}");
    }
    assert_fail(
        &p.call(Some(&key), "GET", "/sub_admins", &Value::Null),
        403,
        "Permission denied",
    );
    assert_fail(
        &p.call(Some("INVALID_KEY"), "GET", "/sub_admins", &Value::Null),
        401,
        INVALID,
    );

    let r = p.main(
        "PUT",
        "/sub_admins/1",
        &json!({ "max_users_limit": 200, "total_usage_quota_gb": 1000, "notes": "Upgraded" }),
    );
    let v = assert_ok(&r, 200, "Sub-admin updated successfully.");
    assert_eq!(v["sub_admin"], json!({ "id": 1 }));
    let r = p.main(
        "PUT",
        "/sub_admins/1",
        &json!({ "subscription_port": 2097, "panel_port": 8890 }),
    );
    assert_ok(&r, 200, "Sub-admin updated successfully.");
    let sa = &p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][0];
    assert_eq!(
        (
            sa["max_users_limit"].clone(),
            sa["subscription_port"].clone(),
            sa["notes"].clone()
        ),
        (json!(200), json!(2097), json!("Upgraded"))
    );
    assert_fail(
        &p.main("PUT", "/sub_admins/999999", &json!({ "notes": "x" })),
        404,
        "Sub-admin not found",
    );

    let r = p.main("POST", "/sub_admins/1/reset_usage", &Value::Null);
    assert_ok(
        &r,
        200,
        "Total data usage reset successfully. 0 user(s) were re-enabled.",
    );
    assert_fail(
        &p.main("POST", "/sub_admins/999999/reset_usage", &Value::Null),
        404,
        "Sub-admin not found.",
    );
    assert_fail(
        &p.call(
            Some(&key),
            "POST",
            "/sub_admins/1/reset_usage",
            &Value::Null,
        ),
        403,
        "Permission denied",
    );

    // Deactivating the sub-admin makes its key inactive.
    p.main("PUT", "/sub_admins/1", &json!({ "is_active": false }))
        .expect(200);
    assert_fail(
        &p.call(Some(&key), "GET", "/users/list_all", &Value::Null),
        401,
        INVALID,
    );
    p.main("PUT", "/sub_admins/1", &json!({ "is_active": true }))
        .expect(200);

    // Delete cascades to its users and kills its key.
    p.create_user(&key, json!({ "bulk_count": 5, "data_limit": 1 }))
        .expect(201);
    assert_fail(
        &p.call(Some(&key), "DELETE", "/sub_admins/1", &Value::Null),
        403,
        "Permission denied",
    );
    assert_ok(
        &p.main("DELETE", "/sub_admins/1", &Value::Null),
        200,
        "Sub-admin deleted successfully.",
    );
    assert_fail(
        &p.main("DELETE", "/sub_admins/999999", &Value::Null),
        404,
        "Sub-admin not found",
    );
    assert_fail(
        &p.call(Some(&key), "GET", "/users/list_all", &Value::Null),
        401,
        INVALID,
    );
    let v = p.main("GET", "/users/list_all", &Value::Null).json();
    assert_eq!(v["sub_admins"], json!([]));
    assert_eq!(v["main_admin"]["users"], json!([]));
    // Its username is free again.
    p.sub_admin("sa1", json!({}));
}

#[test]
fn user_parameters_are_validated() {
    let p = Panel::start();
    for body in [
        json!({ "username": "a b" }),
        json!({ "username": "ab" }),
        json!({ "username": "x/../y" }),
        json!({ "username": "okname", "max_clients": 0 }),
        json!({ "username": "okname", "max_clients": "many" }),
        json!({ "username": "okname", "data_limit": -1 }),
        json!({ "username": "okname", "data_limit_unit": "PB" }),
        json!({ "username": "okname", "activation_type": "forever" }),
        json!({ "username": "okname", "expiry_date_str": "2026-02-30" }),
        json!({ "username": "okname", "expiry_date_str": "31/12/2026" }),
        json!({ "username": "okname", "expiry_days": -3 }),
        json!({ "username": "okname", "activation_type": "flexible_days" }),
        json!({ "username": "okname", "enable_l2tp": true }),
        json!({ "username": "okname", "enable_l2tp": true, "l2tp_password": "a\"b" }),
        json!({ "username": "okname", "enable_cisco": true, "cisco_password": "a\nb" }),
        json!({ "username": "okname", "enable_wg1": "yes" }),
        json!({ "username": "okname", "nodes": ["main", "elsewhere"] }),
        json!({ "username": "okname", "nodes": "main" }),
        json!({ "bulk_count": 0 }),
        json!({ "bulk_count": 10_001 }),
        json!({ "username": "okname", "sub_admin_id": 42 }),
    ] {
        let r = p.create_user(&p.main, body.clone());
        assert!(r.status == 400 || r.status == 404, "{body}: {}", r.text());
        assert_eq!(r.json()["success"], false, "{body}");
    }
    assert_eq!(p.main("GET", "/users/okname", &Value::Null).status, 404);
    // Non-numeric data_limit is unlimited; expiry_days counts from today.
    p.create_user(&p.main, json!({ "username": "okname", "data_limit": "unlimited", "expiry_days": 10, "data_limit_unit": "mb" })).expect(201);
    let v = p.user("okname");
    assert_eq!(
        (
            v["data_limit"].clone(),
            v["data_limit_bytes"].clone(),
            v["data_limit_unit"].clone()
        ),
        (Value::Null, Value::Null, json!("MB"))
    );
    assert_eq!(
        v["expiry_date"],
        date_of(crate::e2e::harness::now_secs() + 10 * 86_400)
    );
    assert_eq!(v["max_clients"], 1);
    assert_fail(
        &p.create_user(&p.main, json!({ "username": "okname" })),
        409,
        "User already exists.",
    );
    // Edits are validated the same way and change nothing when refused.
    let r = p.main(
        "PUT",
        "/users/okname",
        &json!({ "max_clients": 5, "data_limit_unit": "XB" }),
    );
    assert_eq!(r.status, 400);
    assert_eq!(p.user("okname")["max_clients"], 1);
}

#[test]
fn a_sub_admin_refused_a_taken_name_is_not_told_that_someone_else_has_a_user_by_it() {
    let p = Panel::start();
    let (_, a) = p.sub_admin("sa_a", json!({}));
    let (b_id, b) = p.sub_admin("sa_b", json!({}));
    p.create_user(&a, json!({ "username": "a_user" }))
        .expect(201);
    p.create_user(&p.main, json!({ "username": "m_user" }))
        .expect(201);
    // Another sub-admin's user and the main admin's get the same answer,
    // which names no user.
    for taken in ["a_user", "m_user"] {
        assert_fail(
            &p.create_user(&b, json!({ "username": taken })),
            409,
            "Username is not available.",
        );
    }
    // The caller's own user, and the main admin, who sees every user.
    assert_fail(
        &p.create_user(&a, json!({ "username": "a_user" })),
        409,
        "User already exists.",
    );
    assert_fail(
        &p.create_user(&p.main, json!({ "username": "a_user" })),
        409,
        "User already exists.",
    );
    // Nothing changed.
    assert_eq!(p.user("a_user")["sub_admin_id"], 1);
    assert_eq!(
        p.call(Some(&b), "GET", "/users/list_all", &Value::Null)
            .json()["users"],
        json!([])
    );
    let sa = p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][1].clone();
    assert_eq!(
        (sa["id"].as_u64(), sa["users_count"].as_u64()),
        (Some(b_id), Some(0))
    );
}

#[test]
fn a_sub_admin_limited_to_a_server_that_does_not_exist_is_refused_and_nothing_changes() {
    let p = Panel::start();
    let unknown = "Invalid allowed_servers: there is no server node_7.";
    let body = json!({ "username": "sa_nowhere", "password": "pass", "allowed_servers": ["main", "node_7"] });
    assert_fail(&p.main("POST", "/sub_admins", &body), 400, unknown);
    assert_eq!(
        p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"],
        json!([])
    );
    // Nothing was kept of it: not even its name.
    let (id, key) = p.sub_admin(
        "sa_nowhere",
        json!({ "allowed_servers": ["main"], "notes": "before" }),
    );

    // An edit onto it is refused whole: the other fields do not change
    // either, and the sub-admin's users are not given it.
    let r = p.main(
        "PUT",
        &format!("/sub_admins/{id}"),
        &json!({ "allowed_servers": ["node_7"], "notes": "after" }),
    );
    assert_fail(&r, 400, unknown);
    let sa = p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][0].clone();
    assert_eq!(
        (sa["allowed_servers"].clone(), sa["notes"].clone()),
        (json!(["main"]), json!("before"))
    );
    p.create_user(&key, json!({ "username": "sa_user" }))
        .expect(201);
    assert_eq!(p.user("sa_user")["nodes"], json!(["main"]));

    // A node that exists is accepted, whatever its provisioning did; one
    // being deleted is not.
    p.main("POST", "/nodes", &json!({ "name": "Node A", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 }))
        .expect(202);
    p.main(
        "PUT",
        &format!("/sub_admins/{id}"),
        &json!({ "allowed_servers": ["main", "node_1"] }),
    )
    .expect(200);
    p.create_user(&key, json!({ "username": "sa_user2" }))
        .expect(201);
    assert_eq!(p.user("sa_user2")["nodes"], json!(["main", "node_1"]));
    p.main("DELETE", "/nodes/1", &Value::Null).expect(200);
    let late = json!({ "username": "sa_late", "password": "pass", "allowed_servers": ["node_1"] });
    assert_fail(
        &p.main("POST", "/sub_admins", &late),
        400,
        "Invalid allowed_servers: there is no server node_1.",
    );
    // A sub-admin already limited to it keeps it through edits that do not
    // name servers.
    p.main(
        "PUT",
        &format!("/sub_admins/{id}"),
        &json!({ "notes": "still here" }),
    )
    .expect(200);
    let sa = p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][0].clone();
    assert_eq!(
        (sa["allowed_servers"].clone(), sa["notes"].clone()),
        (json!(["main", "node_1"]), json!("still here"))
    );
}

#[test]
fn a_user_on_a_server_that_does_not_exist_is_refused_and_nothing_changes() {
    let p = Panel::start();
    let (_, sa) = p.sub_admin("sa_nodes", json!({ "total_usage_quota_gb": 100 }));
    let unknown = "Invalid nodes: there is no server node_7.";
    assert_fail(
        &p.create_user(
            &p.main,
            json!({ "username": "nowhere", "nodes": ["main", "node_7"] }),
        ),
        400,
        unknown,
    );
    assert_fail(
        &p.create_user(
            &p.main,
            json!({ "username": "nowhere", "allowed_nodes": ["node_7"] }),
        ),
        400,
        unknown,
    );
    assert_fail(
        &p.create_user(&p.main, json!({ "bulk_count": 3, "nodes": ["node_7"] })),
        400,
        unknown,
    );
    assert_fail(
        &p.create_user(
            &sa,
            json!({ "username": "nowhere", "nodes": ["node_7"], "data_limit": 5 }),
        ),
        400,
        unknown,
    );
    assert_eq!(p.main("GET", "/users/nowhere", &Value::Null).status, 404);
    let v = p.main("GET", "/users/list_all", &Value::Null).json();
    assert_eq!(
        (
            v["main_admin"]["users"].clone(),
            v["sub_admins"][0]["users"].clone()
        ),
        (json!([]), json!([]))
    );
    let counters = p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][0].clone();
    assert_eq!(
        (
            counters["users_count"].clone(),
            counters["allocated_bytes"].clone()
        ),
        (json!(0), json!(0))
    );

    // An edit onto it is refused whole: the other fields do not change either.
    p.create_user(
        &p.main,
        json!({ "username": "somewhere", "nodes": ["main"] }),
    )
    .expect(201);
    assert_fail(
        &p.main(
            "PUT",
            "/users/somewhere",
            &json!({ "nodes": ["node_7"], "notes": "moved" }),
        ),
        400,
        unknown,
    );
    let u = p.user("somewhere");
    assert_eq!(
        (u["nodes"].clone(), u["notes"].clone()),
        (json!(["main"]), json!(""))
    );

    // A node that exists is accepted, whatever its provisioning did; one
    // being deleted is not.
    p.main("POST", "/nodes", &json!({ "name": "Node A", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 }))
        .expect(202);
    p.main(
        "PUT",
        "/users/somewhere",
        &json!({ "nodes": ["main", "node_1"] }),
    )
    .expect(200);
    p.create_user(
        &sa,
        json!({ "username": "onnode", "nodes": ["node_1"], "data_limit": 5 }),
    )
    .expect(201);
    p.main("DELETE", "/nodes/1", &Value::Null).expect(200);
    assert_fail(
        &p.create_user(&p.main, json!({ "username": "late", "nodes": ["node_1"] })),
        400,
        "Invalid nodes: there is no server node_1.",
    );
    // A user already on it keeps it through edits that do not name servers.
    p.main("PUT", "/users/somewhere", &json!({ "notes": "still here" }))
        .expect(200);
    assert_eq!(p.user("somewhere")["nodes"], json!(["main", "node_1"]));
}

#[test]
fn a_bulk_of_10000_is_one_transaction_under_a_second_or_fails_whole() {
    let p = Panel::start();
    let (_, key) = p.sub_admin("big", json!({ "max_users_limit": 9_999 }));
    // Over the limit by one: nothing is created.
    let r = p.create_user(&key, json!({ "bulk_count": 10_000 }));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["success"], false);
    assert_eq!(
        p.call(Some(&key), "GET", "/users/list_all", &Value::Null)
            .json()["users"],
        json!([])
    );

    let started = Instant::now();
    let r = p.create_user(&p.main, json!({ "bulk_count": 10_000, "data_limit": 10 }));
    let took = started.elapsed();
    r.expect(201);
    let names = r.json()["created_users"]
        .as_array()
        .expect("created_users")
        .len();
    assert_eq!(names, 10_000);
    let v = p.main("GET", "/users/list_all", &Value::Null).json();
    assert_eq!(
        v["main_admin"]["users"].as_array().map(Vec::len),
        Some(10_000)
    );
    eprintln!("bulk of 10,000 took {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "bulk of 10,000 took {took:?}"
    );
}

#[test]
fn concurrent_bulk_creations_never_exceed_a_sub_admins_quota() {
    let p = Panel::start();
    let (id, key) = p.sub_admin(
        "racer",
        json!({ "max_users_limit": 100, "total_usage_quota_gb": 1000 }),
    );
    // 8 creations of 30 users at once: at most 3 fit in 100.
    let created: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let r = p.create_user(&key, json!({ "bulk_count": 30, "data_limit": 1 }));
                    match r.status {
                        201 => r.json()["created_users"].as_array().map_or(0, Vec::len),
                        403 => 0,
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let total: usize = created.iter().sum();
    assert_eq!(total, 90, "{created:?}");
    let listed = p
        .call(Some(&key), "GET", "/users/list_all", &Value::Null)
        .json()["users"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(listed, 90);
    let sa = p.main("GET", "/sub_admins", &Value::Null).json()["sub_admins"][0].clone();
    assert_eq!(
        (sa["id"].as_u64(), sa["users_count"].as_u64()),
        (Some(id), Some(90))
    );

    // The traffic quota: 1000 GB, 90 GB allocated; 6 concurrent bulks of
    // 5 users at 100 GB each: at most one fits (500 GB), none when two would.
    let (_, key2) = p.sub_admin("racer2", json!({ "total_usage_quota_gb": 1000 }));
    let created: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let r = p.create_user(&key2, json!({ "bulk_count": 3, "data_limit": 100 }));
                    if r.status == 201 {
                        3
                    } else {
                        assert_eq!(r.status, 403, "{}", r.text());
                        0
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(created.iter().sum::<usize>(), 9, "{created:?}");
    // Unlimited users are refused under a traffic quota.
    assert_eq!(
        p.create_user(&key2, json!({ "username": "nolimit" }))
            .status,
        403
    );
}

#[test]
fn flexible_days_start_at_the_first_reported_traffic() {
    let p = Panel::start();
    p.create_user(&p.main, json!({ "username": "flex", "activation_type": "flexible_days", "pending_activation_days": 30 })).expect(201);
    let v = p.user("flex");
    assert_eq!(
        (
            v["status"].clone(),
            v["expiry_date"].clone(),
            v["is_active"].clone()
        ),
        (json!("pending_activation"), Value::Null, json!(true))
    );
    // A report without bytes (a connection that moved nothing) does not start it.
    p.report("flex", 0);
    assert_eq!(p.user("flex")["expiry_date"], Value::Null);
    p.report("flex", 1000);
    let v = p.user("flex");
    assert_eq!(v["status"], "active");
    assert_eq!(
        v["expiry_date"],
        date_of(crate::e2e::harness::now_secs() + 30 * 86_400)
    );
    let activated = v["activated_at"].as_u64().expect("activated_at");
    // Later traffic does not move it.
    p.report("flex", 1000);
    assert_eq!(p.user("flex")["activated_at"].as_u64(), Some(activated));
    assert_eq!(p.user("flex")["total_traffic_bytes"], 2000);
}

#[test]
fn reset_traffic_re_enables_only_a_user_limited_by_traffic() {
    let p = Panel::start();
    for name in ["limited", "disabled", "expired"] {
        p.create_user(
            &p.main,
            json!({ "username": name, "data_limit": 1, "data_limit_unit": "MB" }),
        )
        .expect(201);
    }
    p.main(
        "PUT",
        "/users/expired",
        &json!({ "expiry_date_str": "2020-01-01" }),
    )
    .expect(200);
    p.main("POST", "/users/disabled/toggle", &Value::Null)
        .expect(200);
    for name in ["limited", "disabled", "expired"] {
        p.report(name, 2 << 20);
        assert_eq!(p.user(name)["is_active"], false, "{name}");
    }
    assert_eq!(p.user("limited")["status"], "limited");
    assert_eq!(p.user("expired")["status"], "expired");
    for (name, want) in [("limited", true), ("disabled", false), ("expired", false)] {
        let v = p
            .main(
                "POST",
                &format!("/users/{name}/reset_traffic"),
                &Value::Null,
            )
            .json();
        assert_eq!(v["user_re_enabled"], want, "{name}: {v}");
    }
    assert_eq!(p.user("limited")["is_active"], true);
    assert_eq!(p.user("disabled")["is_active"], false);
    assert_eq!(p.user("expired")["is_active"], false);

    // A sub-admin's traffic quota: used up, its users stop; reset_usage
    // brings back those that nothing else stops and counts them.
    let (_, key) = p.sub_admin("qsa", json!({ "total_usage_quota_gb": 1 }));
    for name in ["qu1", "qu2", "qu3"] {
        p.create_user(
            &key,
            json!({ "username": name, "data_limit": 300, "data_limit_unit": "MB" }),
        )
        .expect(201);
    }
    p.main("POST", "/users/qu3/toggle", &Value::Null)
        .expect(200);
    p.report("qu1", 1 << 30);
    for name in ["qu1", "qu2"] {
        assert_eq!(p.user(name)["is_active"], false, "{name}");
    }
    assert_eq!(p.user("qu2")["status"], "suspended");
    // qu1 is also over its own limit: it stays off.
    let r = p.main("POST", "/sub_admins/1/reset_usage", &Value::Null);
    assert_ok(
        &r,
        200,
        "Total data usage reset successfully. 1 user(s) were re-enabled.",
    );
    assert_eq!(p.user("qu2")["is_active"], true);
    assert_eq!(p.user("qu1")["is_active"], false);
}

#[test]
fn subscription_and_ovpn_profiles_check_the_token() {
    let p = Panel::start();
    p.create_user(
        &p.main,
        json!({ "username": "subuser", "enable_cisco": true, "cisco_password": "c1sco" }),
    )
    .expect(201);
    let token = p.token_of("subuser");
    let r = p
        .server
        .send("GET", &format!("/sub/subuser?token={token}"), &[], b"");
    r.expect(200);
    let v = r.json();
    assert_eq!(v["username"], "subuser");
    assert_eq!(v["cisco"]["password"], "c1sco");
    assert_eq!(v["openvpn"][0]["host"], "203.0.113.7");
    let url = v["openvpn"][0]["url"].as_str().expect("url");
    let path = url
        .strip_prefix("http://YOUR_PANEL_DOMAIN")
        .expect("panel url");
    let r = p.server.send("GET", path, &[], b"");
    r.expect(200);
    let profile = r.text();
    for line in [
        "client",
        "dev tun",
        "proto udp",
        "remote 203.0.113.7 1194",
        "remote-cert-tls server",
        "<ca>",
        "</ca>",
        "<cert>",
        "</cert>",
        "<key>",
        "</key>",
    ] {
        assert!(
            profile.lines().any(|l| l == line),
            "{line:?} missing in\n{profile}"
        );
    }
    // The panel's own CA, the one the admin surface hands to servers.
    let ca = p
        .server
        .plugin_admin("vpnpanel", "GET", "/openvpn/ca", &Value::Null);
    ca.expect(200);
    assert!(
        profile.contains(ca.text().trim()),
        "the profile carries the panel's CA"
    );
    assert!(
        !profile.contains("auth-user-pass"),
        "certificates, not passwords"
    );
    openvpn_accepts(&profile);
    // Wrong, missing and other users' tokens; unknown users alike.
    for path in [
        "/sub/subuser?token=nope".to_string(),
        "/sub/subuser".to_string(),
        format!("/sub/nobody?token={token}"),
        "/download/subuser/main_udp.ovpn?token=nope".to_string(),
        format!("/download/nobody/main_udp.ovpn?token={token}"),
    ] {
        assert_fail(
            &p.server.send("GET", &path, &[], b""),
            403,
            "Invalid or revoked subscription link",
        );
    }
    assert_eq!(
        p.server
            .send(
                "GET",
                &format!("/download/subuser/node_9_udp.ovpn?token={token}"),
                &[],
                b""
            )
            .status,
        404
    );
    // Revoke: the old token stops working for downloads too.
    p.main("POST", "/users/subuser/revoke", &Value::Null)
        .expect(200);
    assert_eq!(p.server.send("GET", path, &[], b"").status, 403);
}

#[test]
fn settings_psk_is_generated_per_install_and_validated() {
    let p = Panel::start();
    let v = p.main("GET", "/server_settings", &Value::Null).json();
    assert_eq!(v["success"], true);
    let psk = v["settings"]["ipsec_psk"]
        .as_str()
        .expect("psk")
        .to_string();
    assert!(psk.len() >= 32 && psk != "EylanPanelKey123", "{psk}");
    // Stable across reads; another install gets another one.
    assert_eq!(
        p.main("GET", "/server_settings", &Value::Null).json()["settings"]["ipsec_psk"],
        psk
    );
    let other = Panel::start();
    assert_ne!(
        other.main("GET", "/server_settings", &Value::Null).json()["settings"]["ipsec_psk"],
        psk
    );
    drop(other);

    assert_ok(
        &p.main(
            "POST",
            "/update_ipsec_psk",
            &json!({ "new_psk": "MyNewSecurePSK_2026" }),
        ),
        200,
        "IPsec PSK updated locally and on 0 nodes.",
    );
    assert_eq!(
        p.main("GET", "/server_settings", &Value::Null).json()["settings"]["ipsec_psk"],
        "MyNewSecurePSK_2026"
    );
    for bad in [
        "",
        "a\"b",
        "line\nbreak",
        "cr\rhere",
        "tab\there",
        "nul\u{0}",
        "back\\slash",
    ] {
        assert_fail(
            &p.main("POST", "/update_ipsec_psk", &json!({ "new_psk": bad })),
            400,
            "Invalid PSK. Cannot be empty or contain double quotes.",
        );
    }
    assert_fail(
        &p.main("POST", "/update_ipsec_psk", &json!({})),
        400,
        "Invalid PSK. Cannot be empty or contain double quotes.",
    );
    let (_, key) = p.sub_admin("sa_s", json!({}));
    assert_fail(
        &p.call(
            Some(&key),
            "POST",
            "/update_ipsec_psk",
            &json!({ "new_psk": "X" }),
        ),
        403,
        MAIN_REQUIRED,
    );
    assert_fail(
        &p.call(Some(&key), "GET", "/server_settings", &Value::Null),
        403,
        MAIN_REQUIRED,
    );
    assert_fail(
        &p.call(Some("INVALID_KEY"), "GET", "/server_settings", &Value::Null),
        401,
        INVALID,
    );
    assert_eq!(
        p.main("GET", "/server_settings", &Value::Null).json()["settings"]["ipsec_psk"],
        "MyNewSecurePSK_2026"
    );
}

#[test]
fn main_admin_keys_come_from_the_admin_surface_and_can_be_revoked() {
    let p = Panel::start();
    let r = admin(&p.server, "POST", "/keys", &json!({ "label": "second" }));
    r.expect(201);
    let v = r.json();
    let (id, key) = (
        v["id"].as_str().expect("id").to_string(),
        v["api_key"].as_str().expect("key").to_string(),
    );
    p.call(Some(&key), "GET", "/sub_admins", &Value::Null)
        .expect(200);
    let list = admin(&p.server, "GET", "/keys", &Value::Null).json();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(2));
    assert!(
        list.to_string().find(&key).is_none(),
        "secrets are never listed"
    );
    admin(&p.server, "DELETE", &format!("/keys/{id}"), &Value::Null).expect(200);
    assert_fail(
        &p.call(Some(&key), "GET", "/sub_admins", &Value::Null),
        401,
        INVALID,
    );
    // Without the admin token the surface is closed.
    let r = http::send(
        p.server.admin_addr(),
        "POST",
        "/plugins/vpnpanel/admin/keys",
        &[],
        b"{}",
    )
    .expect("send");
    assert_eq!(r.status, 401);
    // A sub-admin's key can be rotated by the main admin: the old one dies.
    let (id, old) = p.sub_admin("rot", json!({}));
    let new = p
        .main(
            "POST",
            &format!("/sub_admins/{id}/rotate_key"),
            &Value::Null,
        )
        .json()["api_key"]
        .as_str()
        .expect("key")
        .to_string();
    assert_fail(
        &p.call(Some(&old), "GET", "/users/list_all", &Value::Null),
        401,
        INVALID,
    );
    p.call(Some(&new), "GET", "/users/list_all", &Value::Null)
        .expect(200);
}

#[test]
fn the_enforcement_job_runs_periodically_and_revoke_reissues_in_the_background() {
    let p = Panel::with_settings(", enforce_interval_secs: 1");
    p.create_user(&p.main, json!({ "username": "jobuser" }))
        .expect(201);
    assert!(
        p.server
            .wait_for_log(&["enforce pass"], Duration::from_secs(20)),
        "no enforcement pass:\n{}",
        p.server.logs()
    );
    let before = p.server.logs().matches("enforce pass").count();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        p.server.logs().matches("enforce pass").count() > before,
        "the job re-queues itself"
    );
    p.main("POST", "/users/jobuser/revoke", &Value::Null)
        .expect(200);
    let done = eventually(Duration::from_secs(20), || {
        let v = p.user("jobuser");
        (v["certificate_pending"] == false).then_some(v["certificate_generation"].clone())
    });
    assert_eq!(done, Some(json!(1)), "{}", p.server.logs());
}

/// A stand-in node agent: answers every request with success and keeps the
/// bodies it was sent (the provisioning request carries the report token).
fn fake_node() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                keep.lock().expect("lock").push(v);
            }
            let answer = r#"{"success":true,"message":"ok","protocols":["openvpn"],"ports":[]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn a_node_reports_traffic_with_its_token_and_its_endpoints_reach_profiles() {
    let (node_addr, seen) = fake_node();
    let port: u16 = node_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let p = Panel::from_yaml(&panel_yaml_to(&node_addr, ""));
    let r = p.main(
        "POST",
        "/nodes",
        &json!({ "name": "Node A", "ip_address": "127.0.0.1", "api_port": port, "ssh_password": "node-token-0123456789abcdef",
                 "openvpn_port": 1195, "protocol": "tcp" }),
    );
    r.expect(202);
    let id = r.json()["node_id"].as_u64().expect("node_id");
    eventually(Duration::from_secs(40), || {
        let v = p.main("GET", "/nodes", &Value::Null).json();
        (v["nodes"][0]["status"] == "active").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "node not active: {}",
            p.main("GET", "/nodes", &Value::Null).text()
        )
    });
    let report_token = seen
        .lock()
        .expect("lock")
        .iter()
        .find_map(|b| b["report_token"].as_str().map(str::to_string))
        .expect("the provisioning request carries the report token");

    // A user on that node only: its profile points at the node.
    p.create_user(
        &p.main,
        json!({ "username": "nodeuser", "nodes": [format!("node_{id}")] }),
    )
    .expect(201);
    let v = p
        .main("GET", "/users/nodeuser/all_ovpn_links", &Value::Null)
        .json();
    let names: Vec<&str> = v["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, [format!("node_{id}_tcp")]);
    let token = p.token_of("nodeuser");
    let r = p.server.send(
        "GET",
        &format!("/download/nodeuser/node_{id}_tcp.ovpn?token={token}"),
        &[],
        b"",
    );
    r.expect(200);
    let profile = r.text();
    assert!(
        profile.lines().any(|l| l == "remote 127.0.0.1 1195"),
        "{profile}"
    );
    assert!(
        profile.lines().any(|l| l == "proto tcp-client"),
        "{profile}"
    );
    assert_eq!(
        p.user("nodeuser")["openvpn_servers"][0]["name"],
        "Node: Node A"
    );

    // Reports: the node's token, not a guess, and not a sub-admin's key.
    let report = json!({ "users": [{ "username": "nodeuser", "bytes": 5000, "connections": 2 }, { "username": "ghost", "bytes": 1 }] });
    let send = |token: &str| {
        p.server.send(
            "POST",
            "/api/v1/traffic/report",
            &[
                ("x-node-token", token),
                ("content-type", "application/json"),
            ],
            report.to_string().as_bytes(),
        )
    };
    assert_fail(&send("wrong-token"), 401, "Invalid node token");
    let r = send(&report_token);
    let v = assert_ok(&r, 200, "Traffic recorded.");
    assert_eq!(v["accepted"], 1);
    let u = p.user("nodeuser");
    assert_eq!(
        (
            u["total_traffic_bytes"].clone(),
            u["active_connections"].clone(),
            u["is_online"].clone()
        ),
        (json!(5000), json!(2), json!(true))
    );
    assert_eq!(
        p.main("GET", "/nodes", &Value::Null).json()["nodes"][0]["total_traffic_bytes"],
        5000
    );
    // What the node serves.
    let r = p.server.send(
        "GET",
        "/api/v1/traffic/users",
        &[("x-node-token", &report_token)],
        b"",
    );
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    let served: Vec<&str> = v["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(served, ["nodeuser"]);
    assert_eq!(v["ipsec_psk"].as_str().map(str::len), Some(48));
    assert_fail(
        &p.server.send("GET", "/api/v1/traffic/users", &[], b""),
        401,
        MISSING,
    );
    // The node's OpenVPN material: the panel's CA, a server certificate of
    // its own (the same on every call) and the CRL.
    let material = || {
        let r = p.server.send(
            "GET",
            "/api/v1/traffic/openvpn",
            &[("x-node-token", &report_token)],
            b"",
        );
        let v = r.json();
        assert_eq!(r.status, 200, "{v}");
        v
    };
    let (first, second) = (material(), material());
    assert!(
        first["server"]
            .as_str()
            .is_some_and(|s| s.starts_with("node_")),
        "{first}"
    );
    assert!(
        first["cert"]
            .as_str()
            .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----")),
        "{first}"
    );
    assert!(
        first["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("-----BEGIN PRIVATE KEY-----")),
        "{first}"
    );
    assert!(
        first["crl"]
            .as_str()
            .is_some_and(|c| c.starts_with("-----BEGIN X509 CRL-----")),
        "{first}"
    );
    assert_eq!(first["cert"], second["cert"]);
    let ca = p
        .server
        .plugin_admin("vpnpanel", "GET", "/openvpn/ca", &Value::Null);
    assert_eq!(first["ca"].as_str(), Some(ca.text().as_str()));
    assert_fail(
        &p.server.send(
            "GET",
            "/api/v1/traffic/openvpn",
            &[("x-node-token", "wrong")],
            b"",
        ),
        401,
        "Invalid node token",
    );
}

/// When `openvpn` is installed: it reads the profile without an options
/// error and goes on to contact the remote (nothing answers there). Without
/// it, a SKIP line.
fn openvpn_accepts(profile: &str) {
    use std::process::{Command, Stdio};
    if Command::new("openvpn")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIP vpnpanel: openvpn not installed, profile not parsed by it ***\n"
        );
        return;
    }
    // The profile's remote is a documentation address: openvpn runs in a
    // namespace of its own with no route anywhere, so nothing leaves the machine.
    let Some(ns) = crate::e2e::net::Netns::new("vpnpanel_openvpn") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (conf, log) = (dir.path().join("p.ovpn"), dir.path().join("log"));
    std::fs::write(&conf, profile).expect("write profile");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "openvpn"])
        .arg("--config")
        .arg(&conf)
        .arg("--log")
        .arg(&log)
        .args(["--verb", "4", "--connect-retry-max", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openvpn");
    let out = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("Options error")
            || text.contains("link local")
            || text.contains("Attempting to establish"))
        .then_some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let out = out.unwrap_or_else(|| std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        !out.contains("Options error"),
        "openvpn refused the profile:\n{out}\n{profile}"
    );
    assert!(
        out.contains("link local") || out.contains("Attempting to establish"),
        "openvpn did not get to the remote:\n{out}"
    );
}
