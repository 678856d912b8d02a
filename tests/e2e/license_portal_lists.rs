//! The license portal's lists past the response cap
//! (plugins/license-portal/src/paging.rs): the portal runs with a small
//! `limits.max_response_bytes` and the same `max_response_bytes` setting,
//! and holds more signing keys, license keys and releases than fit in one
//! answer. A caller that sends no paging parameters gets a 400
//! `PAGING_REQUIRED` in the WisPanel envelope saying how to page, never the
//! host's 500; one that pages with `limit` and `cursor` walks the whole
//! list, each entry once, every page within the cap.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, quote, wasm};
use crate::e2e::http::Response;

const CAP: usize = 4096;

fn start() -> Server {
    let yaml = format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: license-portal\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /portal/\n    grants: {{ kv: true, crypto: true, config: true, log: true }}\n    limits: {{ memory_mb: 128, timeout_ms: 20000, max_body_bytes: 1048576, max_response_bytes: {CAP} }}\n    settings: {{ max_response_bytes: {CAP} }}\n",
        wasm = quote(&wasm("license_portal").to_string_lossy()),
    );
    Setup::with_yaml(&yaml).serve()
}

/// GET `path`: `/portal/...` on the public mount, else on the admin surface.
#[track_caller]
fn get(server: &Server, path: &str) -> Response {
    if path.starts_with("/portal/") {
        server.get(path)
    } else {
        server.plugin_admin("license-portal", "GET", path, &Value::Null)
    }
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    server.plugin_admin("license-portal", method, path, body)
}

#[track_caller]
fn expect_error(r: &Response, status: u16, code: &str, message: &str) {
    r.expect(status);
    assert_eq!(
        r.json(),
        json!({ "success": false, "code": code, "error": message, "message": message, "status": status })
    );
}

#[track_caller]
fn too_large(server: &Server, path: &str) {
    expect_error(
        &get(server, path),
        400,
        "PAGING_REQUIRED",
        &format!(
            "The list is larger than this server's {CAP}-byte response limit: ask for it in pages with the query parameters limit (1 to 1000) and cursor (the next_cursor of the page before)."
        ),
    );
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

/// The entries of `field` on every page of `path` with `limit`, in order;
/// every page is within the cap and holds at most `limit`.
#[track_caller]
fn walk(server: &Server, path: &str, field: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&cursor={}", encode(c)),
        };
        let r = get(server, &url);
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert!(
            r.body.len() <= CAP,
            "{url}: a page of {} bytes",
            r.body.len()
        );
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        let entries = v[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} in {v}"));
        assert!(entries.len() <= limit, "{url}: {} entries", entries.len());
        out.extend(entries.iter().cloned());
        match &v["next_cursor"] {
            Value::Null => return out,
            Value::String(n) => {
                assert!(!entries.is_empty(), "{url}: an empty page before the end");
                cursor = Some(n.clone());
            }
            other => panic!("{url}: next_cursor {other}"),
        }
    }
    panic!("{path}: the pages never end")
}

#[track_caller]
fn strings(list: &[Value], field: &str) -> Vec<String> {
    list.iter()
        .map(|e| {
            e[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} in {e}"))
                .to_string()
        })
        .collect()
}

#[track_caller]
fn all_distinct(list: &[String], what: &str) {
    let distinct: BTreeSet<&String> = list.iter().collect();
    assert_eq!(distinct.len(), list.len(), "{what}: an entry came twice");
}

fn changelog_of(version: &str) -> String {
    format!("## WisPanel {version}\n{}", "- a fix\n".repeat(40))
}

#[test]
fn every_list_past_the_response_cap_asks_to_page_and_its_pages_hold_every_entry_once() {
    let server = start();

    // Lists that fit are answered whole, as before: no next_cursor.
    let r = admin(&server, "POST", "/signing-keys", &Value::Null);
    r.expect(201);
    let first_key = r.json()["key"]["key_id"].as_str().unwrap().to_string();
    let v = get(&server, "/portal/keys").json();
    assert_eq!(v, json!({ "success": true, "keys": v["keys"].clone() }));
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        get(&server, "/keys").json(),
        json!({ "success": true, "keys": [] })
    );
    assert_eq!(
        get(&server, "/portal/releases?channel=stable").json(),
        json!({ "success": true, "releases": [] })
    );

    // Signing keys (rotations): about 150 bytes each.
    for _ in 0..39 {
        admin(&server, "POST", "/signing-keys", &Value::Null).expect(201);
    }
    for path in ["/portal/keys", "/signing-keys"] {
        too_large(&server, path);
        for limit in [1000, 6] {
            let keys = walk(&server, path, "keys", limit);
            let ids = strings(&keys, "key_id");
            assert_eq!(ids.len(), 40, "{path} limit {limit}");
            all_distinct(&ids, path);
            assert!(ids.contains(&first_key));
            let created: Vec<u64> = keys
                .iter()
                .map(|k| k["created_at"].as_u64().unwrap())
                .collect();
            assert!(
                created.windows(2).all(|w| w[0] >= w[1]),
                "newest first: {created:?}"
            );
            assert_eq!(
                keys.iter().filter(|k| k["active"] == true).count(),
                1,
                "{path}: one active key"
            );
        }
    }

    // License keys: about 400 bytes each with a note.
    let mut sold = Vec::new();
    for i in 0..30 {
        let r = admin(
            &server,
            "POST",
            "/keys",
            &json!({ "tier": "pro", "valid_days": 365, "note": format!("customer {i} {}", "n".repeat(100)) }),
        );
        r.expect(201);
        sold.push(r.json()["key"]["key"].as_str().unwrap().to_string());
    }
    too_large(&server, "/keys");
    for limit in [1000, 7] {
        let keys = walk(&server, "/keys", "keys", limit);
        let listed = strings(&keys, "key");
        all_distinct(&listed, "keys");
        let (mut a, mut b) = (listed.clone(), sold.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "limit {limit}");
        let order: Vec<(u64, String)> = keys
            .iter()
            .map(|k| {
                (
                    k["created_at"].as_u64().unwrap(),
                    k["key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "oldest first, then by key"
        );
    }

    // Releases on two channels: about 500 bytes each without manifests.
    let stable: Vec<String> = (0..12)
        .map(|i| format!("2.{}.0", i % 4 * 3 + i / 4))
        .collect();
    let beta: Vec<String> = (0..12).map(|i| format!("3.0.{i}")).collect();
    for (channel, versions) in [("stable", &stable), ("beta", &beta)] {
        for v in versions {
            admin(
                &server,
                "POST",
                "/releases",
                &json!({ "version": v, "channel": channel, "changelog": changelog_of(v), "artefact": B64.encode(b"x") }),
            )
            .expect(201);
        }
    }
    let numeric_desc = |versions: &[String]| {
        let mut v = versions.to_vec();
        v.sort_by_key(|s| {
            std::cmp::Reverse(
                s.split('.')
                    .map(|p| p.parse::<u64>().unwrap())
                    .collect::<Vec<_>>(),
            )
        });
        v
    };
    too_large(&server, "/portal/releases?channel=stable");
    too_large(&server, "/portal/releases");
    too_large(&server, "/releases");
    for limit in [1000, 5, 1] {
        let list = walk(
            &server,
            "/portal/releases?channel=stable",
            "releases",
            limit,
        );
        assert_eq!(
            strings(&list, "version"),
            numeric_desc(&stable),
            "limit {limit}"
        );
        assert!(
            list.iter()
                .all(|r| r["manifest"].is_null() && r["channel"] == "stable")
        );
        let list = walk(&server, "/portal/releases?channel=beta", "releases", limit);
        assert_eq!(
            strings(&list, "version"),
            numeric_desc(&beta),
            "limit {limit}"
        );
        // The admin list: channel by channel, each highest first.
        let all = walk(&server, "/releases", "releases", limit);
        let got: Vec<(String, String)> = all
            .iter()
            .map(|r| {
                (
                    r["channel"].as_str().unwrap().to_string(),
                    r["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = numeric_desc(&beta)
            .into_iter()
            .map(|v| ("beta".to_string(), v))
            .chain(
                numeric_desc(&stable)
                    .into_iter()
                    .map(|v| ("stable".to_string(), v)),
            )
            .collect();
        assert_eq!(got, want, "limit {limit}");
    }
    // The latest release is still the highest version.
    let r = get(&server, "/portal/releases/latest?channel=stable");
    r.expect(200);
    assert_eq!(r.json()["release"]["version"], "2.11.0");

    // Bad paging input is refused in the envelope.
    for path in [
        "/portal/keys?limit=0",
        "/portal/releases?limit=1001",
        "/keys?limit=x",
        "/releases?limit=",
    ] {
        expect_error(
            &get(&server, path),
            400,
            "VALIDATION_ERROR",
            "Invalid limit: expected a whole number from 1 to 1000.",
        );
    }
    for path in [
        "/portal/keys?cursor=ffffffffffffffff",
        "/signing-keys?cursor=..%2F",
        "/keys?cursor=WISP-NOT-SOLD",
        "/portal/releases?channel=stable&cursor=2.x.0",
        "/releases?cursor=stable",
        "/releases?cursor=Stable%2F1.0.0",
    ] {
        expect_error(
            &get(&server, path),
            400,
            "VALIDATION_ERROR",
            "Invalid cursor: pass the next_cursor of the page before.",
        );
    }
}

#[test]
fn an_artefact_that_could_not_be_downloaded_whole_is_refused_at_publication() {
    let server = start();
    admin(&server, "POST", "/signing-keys", &Value::Null).expect(201);
    let r = admin(
        &server,
        "POST",
        "/releases",
        &json!({ "version": "1.0.0", "channel": "stable", "artefact": B64.encode(vec![7u8; CAP + 1]) }),
    );
    expect_error(
        &r,
        400,
        "VALIDATION_ERROR",
        &format!("artefact must be 1 to {CAP} bytes"),
    );
    assert_eq!(
        server.get("/portal/releases/latest?channel=stable").status,
        404,
        "nothing was published"
    );
    admin(
        &server,
        "POST",
        "/releases",
        &json!({ "version": "1.0.0", "channel": "stable", "artefact": B64.encode(vec![7u8; CAP]) }),
    )
    .expect(201);
    let d = server.get("/portal/download/stable/1.0.0");
    d.expect(200);
    assert_eq!(d.body.len(), CAP);
}
