//! Host capabilities as the fixture plugin sees them: kv, keys, crypto,
//! config, ratelimit.

use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Plugin, Server, now_secs};

fn fixture() -> Server {
    Server::start(&[Plugin::fixture("fx").settings("{ colour: blue, answer: 42, tags: [a, b] }")])
}

#[test]
fn kv_values_round_trip_as_bytes() {
    let server = fixture();
    server.get("/fx/kv/greeting").expect(404);
    server.put("/fx/kv/greeting", b"hi there").expect(204);
    let r = server.get("/fx/kv/greeting");
    r.expect(200);
    assert_eq!(r.text(), "hi there");
    // Values are bytes, not text.
    let binary: Vec<u8> = (0..=255).collect();
    server.put("/fx/kv/binary", &binary).expect(204);
    assert_eq!(server.get("/fx/kv/binary").body, binary);
    // Overwrite.
    server.put("/fx/kv/greeting", b"bye").expect(204);
    assert_eq!(server.get("/fx/kv/greeting").text(), "bye");
}

#[test]
fn list_values_pages_values_packed_in_key_order_within_a_byte_budget() {
    let server = Server::start(&[Plugin::fixture("fx").max_body_bytes(2 << 20)]);
    for (k, v) in [
        ("l.c", "3"),
        ("l.a", "1"),
        ("m.x", "other"),
        ("l.b", ""),
        ("l.d", "four"),
    ] {
        server.put(&format!("/fx/kv/{k}"), v.as_bytes()).expect(204);
    }
    let v = server.get("/fx/kv-values?prefix=l.&limit=2").json();
    assert_eq!(v["values"], json!(["1", "", "3", "four"]), "{v}");
    assert_eq!(v["pages"], json!([[1, 0], [1, 4]]), "{v}");
    assert_eq!(v["walked"], 4);
    let v = server.get("/fx/kv-values?prefix=l.&limit=3").json();
    assert_eq!(v["pages"], json!([[1, 0, 1], [4]]), "{v}");
    let v = server.get("/fx/kv-values?prefix=none.").json();
    assert_eq!(v, json!({ "pages": [[]], "values": [], "walked": 0 }));
    // A page ends once it holds 1 MiB: three values of 700 KB are three
    // pages however large the limit.
    for k in ["big.1", "big.2", "big.3"] {
        server
            .put(&format!("/fx/kv/{k}"), &vec![b'x'; 700_000])
            .expect(204);
    }
    let v = server.get("/fx/kv-values?prefix=big.&limit=1000").json();
    assert_eq!(
        v["pages"],
        json!([[700_000, 700_000], [700_000]]),
        "the second value passes 1 MiB: the page ends after it"
    );
    assert_eq!(v["walked"], 3);
}

#[test]
fn a_dropped_transaction_writes_nothing() {
    let server = fixture();
    server.put("/fx/kv/existing", b"before").expect(204);
    let r = server.post_json(
        "/fx/txn",
        &json!({ "set": { "t1": "1", "t2": "2", "existing": "after" }, "fail_after": true }),
    );
    r.expect(500);
    server.get("/fx/kv/t1").expect(404);
    server.get("/fx/kv/t2").expect(404);
    assert_eq!(server.get("/fx/kv/existing").text(), "before");
}

#[test]
fn a_committed_transaction_writes_everything() {
    let server = fixture();
    server.put("/fx/kv/existing", b"before").expect(204);
    let r = server.post_json(
        "/fx/txn",
        &json!({ "set": { "t1": "1", "t2": "2", "existing": "after" }, "fail_after": false }),
    );
    r.expect(200);
    assert_eq!(server.get("/fx/kv/t1").text(), "1");
    assert_eq!(server.get("/fx/kv/t2").text(), "2");
    assert_eq!(server.get("/fx/kv/existing").text(), "after");
}

#[test]
fn crypto_selftest_matches_the_published_test_vectors() {
    let server = fixture();
    let r = server.get("/fx/crypto/selftest");
    r.expect(200);
    let v = r.json();
    // FIPS 180-2 appendix B.1.
    assert_eq!(
        v["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "{v}"
    );
    // The well-known HMAC-SHA1 example (Wikipedia, RFC 2104 style).
    assert_eq!(
        v["hmac_sha1"], "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        "{v}"
    );
    assert_eq!(v["pbkdf2_ok"], true, "the right password verifies: {v}");
    assert_eq!(
        v["pbkdf2_bad"], false,
        "a wrong password does not verify: {v}"
    );
    assert_eq!(v["ct_eq"], true, "{v}");
}

#[test]
fn config_exposes_the_plugins_settings() {
    let server = fixture();
    let colour = server.get("/fx/config/colour");
    colour.expect(200);
    assert_eq!(colour.text(), "blue");
    let answer = server.get("/fx/config/answer");
    answer.expect(200);
    assert_eq!(answer.text(), "42");
    let tags = server.get("/fx/config/tags");
    tags.expect(200);
    let tags: Value = serde_json::from_slice(&tags.body).expect("a list setting is JSON");
    assert_eq!(tags, json!(["a", "b"]));
    server.get("/fx/config/missing").expect(404);
}

#[test]
fn ratelimit_allows_the_limit_then_denies_with_remaining_counting_down() {
    let server = fixture();
    let check = |bucket: &str| {
        let r = server.get(&format!(
            "/fx/ratelimit?bucket={bucket}&limit=3&window_ms=60000"
        ));
        r.expect(200);
        r.json()
    };
    let now = now_secs();
    for remaining in [2, 1, 0] {
        let d = check("b1");
        assert_eq!(d["allowed"], true, "{d}");
        assert_eq!(d["limit"], 3, "{d}");
        assert_eq!(d["remaining"], remaining, "{d}");
        let reset = d["reset_at"].as_u64().expect("reset_at");
        assert!(
            reset >= now && reset <= now_secs() + 61,
            "reset_at {reset} not within the window"
        );
    }
    for _ in 0..2 {
        let d = check("b1");
        assert_eq!(d["allowed"], false, "{d}");
        assert_eq!(d["remaining"], 0, "{d}");
    }
    // Another bucket counts separately.
    let d = check("b2");
    assert_eq!(d["allowed"], true, "{d}");
    assert_eq!(d["remaining"], 2, "{d}");
}

#[test]
fn ratelimit_window_resets() {
    let server = fixture();
    let check = || {
        let r = server.get("/fx/ratelimit?bucket=short&limit=1&window_ms=1000");
        r.expect(200);
        r.json()
    };
    assert_eq!(check()["allowed"], true);
    assert_eq!(check()["allowed"], false);
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(check()["allowed"], true, "a new window allows again");
}

#[test]
fn ratelimit_buckets_are_per_plugin() {
    let server = Server::start(&[Plugin::fixture("fa"), Plugin::fixture("fb")]);
    let r = server.get("/fa/ratelimit?bucket=same&limit=1&window_ms=60000");
    assert_eq!(r.json()["allowed"], true, "{r:?}");
    let r = server.get("/fa/ratelimit?bucket=same&limit=1&window_ms=60000");
    assert_eq!(r.json()["allowed"], false, "{r:?}");
    let r = server.get("/fb/ratelimit?bucket=same&limit=1&window_ms=60000");
    assert_eq!(
        r.json()["allowed"],
        true,
        "fa's use of the bucket counted against fb: {r:?}"
    );
}

fn issue(
    server: &Server,
    role: &str,
    label: &str,
    expires_at: Option<u64>,
) -> crate::e2e::http::Response {
    let mut body = json!({ "role": role, "label": label });
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    server.post_json("/fx/keys/issue", &body)
}

fn verify(server: &Server, secret: &str) -> crate::e2e::http::Response {
    server.post_json("/fx/keys/verify", &json!({ "secret": secret }))
}

#[test]
fn keys_can_be_issued_verified_and_revoked() {
    let server = fixture();
    let r = issue(&server, "admin", "ci", None);
    r.expect(200);
    let issued = r.json();
    let id = issued["id"].as_str().expect("id").to_string();
    let secret = issued["secret"].as_str().expect("secret").to_string();
    assert_eq!(issued["role"], "admin");
    assert_eq!(issued["label"], "ci");
    assert!(issued["expires_at"].is_null(), "{issued}");
    // 256 bits in base64 is at least 43 characters.
    assert!(secret.len() >= 43, "secret too short: {secret:?}");

    let v = verify(&server, &secret);
    v.expect(200);
    assert_eq!(
        v.json(),
        json!({ "id": id, "role": "admin", "label": "ci" })
    );

    let wrong = verify(&server, &format!("{secret}x"));
    wrong.expect(401);
    assert_eq!(wrong.json(), json!({ "error": "invalid key" }));
    assert_ne!(verify(&server, "").status, 200);

    let revoked = server.post_json("/fx/keys/revoke", &json!({ "id": id }));
    revoked.expect(200);
    assert_eq!(revoked.json(), json!({ "revoked": true }));
    verify(&server, &secret).expect(401);
    let again = server.post_json("/fx/keys/revoke", &json!({ "id": id }));
    again.expect(200);
    assert_eq!(again.json(), json!({ "revoked": false }));
}

#[test]
fn two_keys_get_different_secrets_and_ids() {
    let server = fixture();
    let a = issue(&server, "r", "a", None).json();
    let b = issue(&server, "r", "b", None).json();
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["secret"], b["secret"]);
    assert_eq!(
        verify(&server, a["secret"].as_str().expect("secret")).json()["label"],
        "a"
    );
    assert_eq!(
        verify(&server, b["secret"].as_str().expect("secret")).json()["label"],
        "b"
    );
}

#[test]
fn key_list_never_shows_secrets() {
    let server = fixture();
    let a = issue(&server, "reader", "first", None).json();
    let b = issue(&server, "writer", "second", Some(now_secs() + 3600)).json();
    let r = server.get("/fx/keys");
    r.expect(200);
    let text = r.text();
    for issued in [&a, &b] {
        let secret = issued["secret"].as_str().expect("secret");
        assert!(!text.contains(secret), "the list shows a secret: {text}");
    }
    let list = r.json();
    let keys = list["keys"].as_array().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(keys.len(), 2, "{list}");
    for k in keys {
        assert!(k.get("secret").is_none(), "{k}");
        for field in ["id", "role", "label", "created_at"] {
            assert!(!k[field].is_null(), "{field} missing in {k}");
        }
    }
    // Oldest first; both were issued within a second or so, so only the
    // creation seconds are ordered, not the two keys.
    let created: Vec<u64> = keys
        .iter()
        .filter_map(|k| k["created_at"].as_u64())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "not oldest first: {list}"
    );
    let find = |id: &Value| {
        keys.iter()
            .find(|k| k["id"] == *id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
    };
    let ka = find(&a["id"]);
    assert_eq!(ka["role"], "reader");
    assert_eq!(ka["label"], "first");
    assert!(ka["expires_at"].is_null(), "{list}");
    let kb = find(&b["id"]);
    assert_eq!(kb["role"], "writer");
    assert_eq!(kb["expires_at"], b["expires_at"]);
}

#[test]
fn an_expired_key_is_refused() {
    let server = fixture();
    let expires_at = now_secs() + 2;
    let issued = issue(&server, "temp", "short-lived", Some(expires_at));
    issued.expect(200);
    let issued = issued.json();
    assert_eq!(issued["expires_at"], expires_at);
    let secret = issued["secret"].as_str().expect("secret").to_string();
    verify(&server, &secret).expect(200);

    while now_secs() <= expires_at {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(200));
    verify(&server, &secret).expect(401);
}

#[test]
fn a_key_issued_already_expired_never_verifies() {
    let server = fixture();
    let r = issue(&server, "temp", "past", Some(now_secs() - 10));
    if r.status == 200 {
        let secret = r.json()["secret"].as_str().expect("secret").to_string();
        verify(&server, &secret).expect(401);
    } else {
        // Refusing to issue it is fine too, as long as it is a client error.
        assert!((400..500).contains(&r.status), "{r:?}");
    }
}

#[test]
fn keys_are_per_plugin() {
    let server = Server::start(&[Plugin::fixture("fa"), Plugin::fixture("fb")]);
    let issued = server.post_json("/fa/keys/issue", &json!({ "role": "r", "label": "l" }));
    issued.expect(200);
    let issued = issued.json();
    let secret = issued["secret"].as_str().expect("secret");
    server
        .post_json("/fb/keys/verify", &json!({ "secret": secret }))
        .expect(401);
    let revoked = server.post_json("/fb/keys/revoke", &json!({ "id": issued["id"] }));
    assert_eq!(revoked.json(), json!({ "revoked": false }));
    assert_eq!(server.get("/fb/keys").json(), json!({ "keys": [] }));
    server
        .post_json("/fa/keys/verify", &json!({ "secret": secret }))
        .expect(200);
}

#[test]
fn keys_survive_a_restart() {
    let mut server = fixture();
    let issued = issue(&server, "r", "kept", None).json();
    let secret = issued["secret"].as_str().expect("secret").to_string();
    server.restart();
    let v = verify(&server, &secret);
    v.expect(200);
    assert_eq!(v.json()["id"], issued["id"]);
}
