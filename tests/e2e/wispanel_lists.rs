//! wispanel's lists past the response cap (plugins/wispanel/src/paging.rs):
//! the panel runs with a small `limits.max_response_bytes` and the same
//! `max_response_bytes` setting (a plugin cannot read its limits), and holds
//! more tokens, resources, disabled resources and newer releases than fit
//! in one answer. A caller that sends no paging parameters gets a 400
//! `PAGING_REQUIRED` in the seed's envelope saying how to page, never the
//! host's 500; one that pages with `limit` and `cursor` walks the whole list,
//! each entry once, every page within the cap. `enforce` and `re-enable`,
//! which act before they answer, say what they did with counts instead of
//! lists that would not fit.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, quote, wasm};
use crate::e2e::http::Response;
use crate::e2e::wispanel::{INSTANCE, SEED_KEY, Signer, expect_error};

/// The panel's config with answers of at most `cap` bytes, `outbound` to
/// `portal` and `settings` a YAML flow mapping's inside.
fn panel_yaml(portal: &str, cap: usize, settings: &str) -> String {
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: wispanel\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/v1\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, ratelimit: true, outbound: {{ hosts: [{host}], timeout_ms: 10000, max_response_bytes: 16777216 }} }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: {cap} }}\n    settings: {{ portal_url: {url}, instance_id: {INSTANCE}, rate_limit_per_minute: 100000, max_response_bytes: {cap}, {settings} }}\n",
        wasm = quote(&wasm("wispanel").to_string_lossy()),
        host = quote(portal),
        url = quote(&format!("http://{portal}/portal")),
    )
}

/// A panel whose answers may be at most `cap` bytes, with an admin token.
struct Capped {
    server: Server,
    token: String,
    cap: usize,
}

impl Capped {
    fn start(portal: &str, cap: usize, settings: &str) -> Capped {
        let server = Setup::with_yaml(&panel_yaml(portal, cap, settings)).serve();
        let r = server.plugin_admin(
            "wispanel",
            "POST",
            "/tokens",
            &json!({ "role": "admin", "label": "admin" }),
        );
        r.expect(201);
        let token = r.json()["secret"].as_str().expect("secret").to_string();
        Capped { server, token, cap }
    }

    #[track_caller]
    fn call(&self, method: &str, path: &str, body: &Value) -> Response {
        let auth = format!("Bearer {}", self.token);
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.server.send(
            method,
            &format!("/api/v1{path}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        )
    }

    #[track_caller]
    fn admin(&self, method: &str, path: &str, body: &Value) -> Response {
        self.server.plugin_admin("wispanel", method, path, body)
    }

    /// GET `path` on the API (`admin: false`) or the admin surface.
    #[track_caller]
    fn get(&self, admin: bool, path: &str) -> Response {
        if admin {
            self.admin("GET", path, &Value::Null)
        } else {
            self.call("GET", path, &Value::Null)
        }
    }

    /// Every page of `path` with `limit`, in order; each is within the cap.
    #[track_caller]
    fn pages(&self, admin: bool, path: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                None => format!("{path}{sep}limit={limit}"),
                Some(c) => format!("{path}{sep}limit={limit}&cursor={}", encode(c)),
            };
            let r = self.get(admin, &url);
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            assert!(
                r.body.len() <= self.cap,
                "{url}: a page of {} bytes",
                r.body.len()
            );
            let v = r.json();
            let next = match &v["next_cursor"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => panic!("{url}: next_cursor {other}"),
            };
            out.push(v);
            match next {
                Some(n) => {
                    assert!(out.len() < 10_000, "{path}: the pages never end");
                    assert_ne!(cursor.as_deref(), Some(n.as_str()), "{url}: no progress");
                    cursor = Some(n);
                }
                None => return out,
            }
        }
    }

    /// The entries of `field` on every page of `path`, in order.
    #[track_caller]
    fn walk(&self, admin: bool, path: &str, field: &str, limit: usize) -> Vec<Value> {
        let pages = self.pages(admin, path, limit);
        let all: Vec<Value> = pages
            .iter()
            .flat_map(|p| {
                p[field]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| panic!("{field} in {p}"))
            })
            .collect();
        if limit < all.len() {
            assert!(
                pages
                    .iter()
                    .all(|p| p[field].as_array().unwrap().len() <= limit),
                "{path}: a page over limit {limit}"
            );
        }
        all
    }

    /// The whole list is refused with the 400 that says how to page.
    #[track_caller]
    fn too_large(&self, admin: bool, path: &str) {
        let r = self.get(admin, path);
        let v = expect_error(&r, 400, "PAGING_REQUIRED");
        assert_eq!(
            v["message"],
            format!(
                "The list is larger than this server's {}-byte response limit: ask for it in pages with the query parameters limit (1 to 1000) and cursor (the next_cursor of the page before).",
                self.cap
            ),
            "{path}"
        );
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `(kind, id)` of each resource.
fn kind_ids(list: &[Value]) -> Vec<(String, u64)> {
    list.iter()
        .map(|r| {
            (
                r["kind"].as_str().expect("kind").to_string(),
                r["id"].as_u64().expect("id"),
            )
        })
        .collect()
}

#[track_caller]
fn all_distinct(list: &[Value], what: &str) {
    let distinct: BTreeSet<String> = list.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), list.len(), "{what}: an entry came twice");
}

#[test]
fn every_list_past_the_response_cap_asks_to_page_and_its_pages_hold_every_entry_once() {
    const CAP: usize = 4096;
    let signer = Signer::new(1);
    let p = Capped::start(
        "127.0.0.1:9",
        CAP,
        &format!(
            "license_public_keys: {{ {}: {} }}",
            quote(&signer.key_id),
            quote(&signer.public_b64())
        ),
    );

    // A list that fits is answered whole, as before: no next_cursor.
    let v = p.admin("GET", "/tokens", &Value::Null).json();
    assert_eq!(v, json!({ "tokens": v["tokens"].clone() }));
    assert_eq!(v["tokens"].as_array().map(Vec::len), Some(1));

    // Tokens: about 170 bytes each with these labels.
    for i in 0..40 {
        p.admin(
            "POST",
            "/tokens",
            &json!({ "role": "viewer", "label": format!("token {i:02} {}", "x".repeat(60)) }),
        )
        .expect(201);
    }
    p.too_large(true, "/tokens");
    for limit in [1000, 7] {
        let tokens = p.walk(true, "/tokens", "tokens", limit);
        assert_eq!(tokens.len(), 41, "limit {limit}");
        all_distinct(&tokens, "tokens");
        let ids: Vec<&str> = tokens.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
    }

    // Resources: about 140 bytes each, 40 of each kind.
    p.admin(
        "PUT",
        "/usage",
        &json!({ "accounts": 40, "domains": 40, "databases": 40 }),
    )
    .expect(200);
    p.too_large(true, "/resources");
    p.too_large(true, "/resources?kind=domains");
    for limit in [1000, 9] {
        let all = kind_ids(&p.walk(true, "/resources", "resources", limit));
        let want: Vec<(String, u64)> = ["accounts", "domains", "databases"]
            .iter()
            .flat_map(|k| (1..=40).map(move |i| (k.to_string(), i)))
            .collect();
        assert_eq!(all, want, "limit {limit}");
        let domains = kind_ids(&p.walk(true, "/resources?kind=domains", "resources", limit));
        assert_eq!(
            domains,
            (1..=40)
                .map(|i| ("domains".to_string(), i))
                .collect::<Vec<_>>()
        );
    }

    // Enforce without a license: the unlicensed limits (5 of each) leave 35
    // of each kind disabled, more than one answer holds.
    let r = p.call("POST", "/license/enforce", &Value::Null);
    r.expect(200);
    assert!(r.body.len() <= CAP);
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["disabled"], Value::Null, "{v}");
    assert_eq!(v["disabled_count"], 105, "{v}");
    assert_eq!(v["disabled_total"], 105, "{v}");
    assert_eq!(
        v["message"],
        "Disabled 105 resources over the limits; the list is too large for one answer: page GET /license/disabled-resources with limit and cursor",
    );

    p.too_large(false, "/license/disabled-resources");
    for limit in [1000, 8] {
        let pages = p.pages(false, "/license/disabled-resources", limit);
        assert!(
            pages.iter().all(|pg| pg["count"] == 105),
            "the total on every page"
        );
        let all: Vec<Value> = pages
            .iter()
            .flat_map(|pg| pg["disabled_resources"].as_array().unwrap().clone())
            .collect();
        all_distinct(&all, "disabled resources");
        let want: Vec<(String, u64)> = ["accounts", "databases", "domains"]
            .iter()
            .flat_map(|k| (6..=40).map(move |i| (k.to_string(), i)))
            .collect();
        assert_eq!(kind_ids(&all), want, "limit {limit}");
        assert!(all.iter().all(|r| r["disabled"] == true));
    }

    // Re-enable under the same limits restores nothing; what stays disabled
    // is too long to list.
    let r = p.call("POST", "/license/re-enable", &Value::Null);
    r.expect(200);
    assert!(r.body.len() <= CAP);
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(
        (
            v["re_enabled"].clone(),
            v["re_enabled_count"].clone(),
            v["still_disabled"].clone(),
            v["still_disabled_count"].clone()
        ),
        (Value::Null, json!(0), Value::Null, json!(105)),
        "{v}"
    );
    // A license for 30 accounts, 100 domains and unlimited databases brings
    // 25 + 35 + 35 back.
    let file = signer.envelope(&signer.license(SEED_KEY, INSTANCE));
    p.call(
        "POST",
        "/license/activate",
        &json!({ "key": SEED_KEY, "license": file }),
    )
    .expect(200);
    let v = p.call("POST", "/license/re-enable", &Value::Null).json();
    assert_eq!(
        (
            v["re_enabled_count"].clone(),
            v["still_disabled_count"].clone()
        ),
        (json!(95), json!(10)),
        "{v}"
    );
    let left = p.get(false, "/license/disabled-resources").json();
    assert_eq!(left["count"], 10, "{left}");
    assert_eq!(
        left.get("next_cursor"),
        None,
        "a whole answer has no cursor"
    );
    let ids = kind_ids(&p.walk(
        false,
        "/license/disabled-resources",
        "disabled_resources",
        3,
    ));
    assert_eq!(
        ids,
        (31..=40)
            .map(|i| ("accounts".to_string(), i))
            .collect::<Vec<_>>()
    );

    // Bad paging input is refused in the envelope.
    for (path, message) in [
        (
            "/license/disabled-resources?limit=0",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "/license/disabled-resources?limit=1001",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "/license/disabled-resources?limit=ten",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "/license/disabled-resources?cursor=../../etc",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
        (
            "/license/disabled-resources?cursor=accounts/x",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
    ] {
        let v = expect_error(&p.get(false, path), 400, "VALIDATION_ERROR");
        assert_eq!(v["message"], message, "{path}");
    }
    for (path, message) in [
        (
            "/resources?limit=-1",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "/resources?cursor=nope/1",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
        (
            "/resources?kind=domains&cursor=accounts/3",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
        (
            "/tokens?limit=",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "/tokens?cursor=%01",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
    ] {
        let v = expect_error(&p.get(true, path), 400, "VALIDATION_ERROR");
        assert_eq!(v["message"], message, "{path}");
    }
}

/// A portal on its own server that keeps its answers within `setting`
/// bytes (its `max_response_bytes` setting; its host limit is 16 MiB), with
/// a signing key; its public key and key id.
fn portal(setting: usize) -> (Server, String, String) {
    let yaml = format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: license-portal\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /portal/\n    grants: {{ kv: true, crypto: true, config: true, log: true }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 16777216, max_response_bytes: 16777216 }}\n    settings: {{ max_response_bytes: {setting} }}\n",
        wasm = quote(&wasm("license_portal").to_string_lossy()),
    );
    let server = Setup::with_yaml(&yaml).serve();
    let r = server.plugin_admin("license-portal", "POST", "/signing-keys", &Value::Null);
    r.expect(201);
    let k = r.json()["key"].clone();
    (
        server,
        k["public_key"].as_str().unwrap().to_string(),
        k["key_id"].as_str().unwrap().to_string(),
    )
}

fn changelog_of(version: &str) -> String {
    format!(
        "## WisPanel {version}\n{}",
        "- a fix with a \"quoted\" word\n".repeat(10)
    )
}

#[test]
fn the_changelog_past_the_response_cap_asks_to_page_and_pages_through_the_portal() {
    const CAP: usize = 4096;
    // The portal keeps its own answers within 4 KiB too, so the panel pages
    // through the portal's pages as well.
    let (portal, public_key, key_id) = portal(CAP);
    let mut versions = vec!["1.4.0".to_string(), "1.4.2".to_string()];
    versions.extend((0..25).map(|i| format!("1.5.{i}")));
    for v in &versions {
        let r = portal.plugin_admin(
            "license-portal",
            "POST",
            "/releases",
            &json!({ "version": v, "channel": "stable", "changelog": changelog_of(v), "artefact": B64.encode(b"x") }),
        );
        r.expect(201);
    }
    let addr = portal.addr().to_string();
    let p = Capped::start(
        &addr,
        CAP,
        &format!(
            "license_public_key: {}, license_key_id: {}",
            quote(&public_key),
            quote(&key_id)
        ),
    );

    // Each newer release is in the answer twice (its entry and the joined
    // changelog): 25 of them are several times the cap.
    p.too_large(false, "/version/changelog");
    let want: Vec<String> = (0..25).rev().map(|i| format!("1.5.{i}")).collect();
    for limit in [1000, 4, 1] {
        let pages = p.pages(false, "/version/changelog", limit);
        let mut got = Vec::new();
        for page in &pages {
            assert_eq!(page["current_version"], "1.4.2");
            assert_eq!(page["latest_version"], "1.5.24", "{page}");
            assert_eq!(page["channel"], "stable");
            let entries = page["releases"].as_array().unwrap();
            assert!(!entries.is_empty() && entries.len() <= limit, "{page}");
            let joined: Vec<String> = entries
                .iter()
                .map(|e| {
                    let v = e["version"].as_str().unwrap();
                    assert_eq!(e["changelog"], changelog_of(v));
                    assert!(e["published_at"].is_string(), "{e}");
                    got.push(v.to_string());
                    changelog_of(v)
                })
                .collect();
            assert_eq!(page["changelog"], joined.join("\n\n"), "limit {limit}");
        }
        assert_eq!(got, want, "limit {limit}");
    }
    let v = expect_error(
        &p.get(false, "/version/changelog?cursor=latest"),
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        v["message"],
        "Invalid cursor: pass the next_cursor of the page before."
    );

    // A panel with nothing newer shows its own version's entry, whole or paged.
    let newest = Capped::start(
        &addr,
        CAP,
        &format!(
            "version: 1.5.24, license_public_key: {}, license_key_id: {}",
            quote(&public_key),
            quote(&key_id)
        ),
    );
    let whole = newest.get(false, "/version/changelog");
    whole.expect(200);
    let whole = whole.json();
    assert_eq!(whole["releases"].as_array().unwrap().len(), 1, "{whole}");
    assert_eq!(whole["releases"][0]["version"], "1.5.24");
    assert_eq!(whole["changelog"], changelog_of("1.5.24"));
    assert_eq!(whole.get("next_cursor"), None);
    let pages = newest.pages(false, "/version/changelog", 1);
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["releases"], whole["releases"]);
}
