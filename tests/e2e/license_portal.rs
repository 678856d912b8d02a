//! The license-portal plugin (plugins/license-portal) through the real
//! server: signing keys, license keys, activate/refresh/verify with the
//! signature checked here against the published public key (ring, as a
//! panel would through the crypto capability), releases with signed
//! manifests, downloads, and revocation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, signature};
use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, quote, wasm};
use crate::e2e::http::Response;

fn start() -> Server {
    let yaml = format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: license-portal\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /portal/\n    grants: {{ kv: true, crypto: true, config: true, log: true }}\n    limits: {{ memory_mb: 128, timeout_ms: 20000, max_body_bytes: 16777216, max_response_bytes: 16777216 }}\n    settings: {{ refresh_days: 14, grace_days: 7 }}\n",
        wasm = quote(&wasm("license_portal").to_string_lossy()),
    );
    Setup::with_yaml(&yaml).serve()
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    server.plugin_admin("license-portal", method, path, body)
}

fn envelope(status: u16, code: &str, message: &str) -> Value {
    json!({ "success": false, "code": code, "error": message, "message": message, "status": status })
}

/// Verifies an envelope the way the panel must (algorithm, key id,
/// signature over the exact payload bytes, only then parse) and returns the
/// payload.
#[track_caller]
fn open(envelope: &Value, public_key: &[u8], kind: &str) -> Value {
    assert_eq!(envelope["alg"], "ed25519");
    let key_id: String = digest::digest(&digest::SHA256, public_key).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(envelope["key_id"], key_id.as_str());
    let payload = B64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let sig = B64.decode(envelope["signature"].as_str().unwrap()).unwrap();
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&payload, &sig)
        .expect("the signature verifies with the published key");
    let mut tampered = payload.clone();
    tampered[10] ^= 1;
    assert!(
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&tampered, &sig)
            .is_err(),
        "a changed byte breaks the signature"
    );
    let parsed: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(parsed["type"], kind);
    assert_eq!(parsed["key_id"], key_id.as_str());
    assert_eq!(parsed["alg"], "ed25519");
    parsed
}

/// A signing key, made on the admin surface; its public key bytes.
fn signing_key(server: &Server) -> Vec<u8> {
    let r = admin(server, "POST", "/signing-keys", &Value::Null);
    r.expect(201);
    let key = &r.json()["key"];
    assert_eq!(key["active"], true);
    assert!(
        key.get("seed").is_none(),
        "the private key is never returned: {key}"
    );
    let public = B64.decode(key["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(public.len(), 32);
    // The same key is on the public listing.
    let listed = server.get("/portal/keys");
    listed.expect(200);
    assert_eq!(listed.json()["keys"][0]["public_key"], key["public_key"]);
    public
}

#[test]
fn an_issued_license_verifies_with_the_published_key_and_is_bound_to_its_instance() {
    let server = start();
    let public = signing_key(&server);
    let created = admin(
        &server,
        "POST",
        "/keys",
        &json!({ "tier": "pro", "max_users": 30, "max_domains": 100, "max_databases": -1, "valid_days": 365 }),
    );
    created.expect(201);
    let key = created.json()["key"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("WISP-") && key.len() == 19, "{key}");

    // The seed's 400 for a missing key, field by field.
    let r = server.post("/portal/license/activate", b"");
    r.expect(400);
    assert_eq!(
        r.json(),
        envelope(400, "VALIDATION_ERROR", "License key is required")
    );

    let r = server.post_json(
        "/portal/license/activate",
        &json!({ "key": key, "instance_id": "inst-1" }),
    );
    r.expect(200);
    let answer = r.json();
    assert_eq!(answer["success"], true);
    let payload = open(&answer["license"], &public, "license");
    assert_eq!(payload["key"], key.as_str());
    assert_eq!(
        payload["key_masked"],
        format!("WISP-****{}", &key[key.len() - 4..])
    );
    assert_eq!(payload["tier"], "pro");
    assert_eq!(
        payload["limits"],
        json!({ "max_users": 30, "max_domains": 100, "max_databases": -1 })
    );
    assert_eq!(payload["instance_id"], "inst-1");
    assert_eq!(payload["grace_days"], 7);
    let issued = payload["issued_at"].as_u64().unwrap();
    assert_eq!(payload["not_before"].as_u64(), Some(issued));
    assert_eq!(payload["valid_until"].as_u64(), Some(issued + 14 * 86_400));
    assert!(payload["expires_at"].as_u64().unwrap() > payload["valid_until"].as_u64().unwrap());
    assert!(payload["license_id"].as_str().unwrap().starts_with("lic_"));

    // Another instance is refused; the bound one refreshes with a new file.
    let r = server.post_json(
        "/portal/license/activate",
        &json!({ "key": key, "instance_id": "inst-2" }),
    );
    r.expect(409);
    assert_eq!(r.json()["code"], "INSTANCE_MISMATCH");
    let r = server.post_json(
        "/portal/license/refresh",
        &json!({ "key": key.to_lowercase(), "instance_id": "inst-1" }),
    );
    r.expect(200);
    let again = open(&r.json()["license"], &public, "license");
    assert_ne!(again["license_id"], payload["license_id"]);
    let r = server.post_json(
        "/portal/license/verify",
        &json!({ "key": key, "instance_id": "inst-1" }),
    );
    r.expect(200);
    assert_eq!(r.json()["status"], "active");

    // Unknown keys and keys never activated.
    let r = server.post_json(
        "/portal/license/activate",
        &json!({ "key": "WISP-AAAA-BBBB-CCCC", "instance_id": "i" }),
    );
    r.expect(404);
    assert_eq!(
        r.json(),
        envelope(404, "LICENSE_NOT_FOUND", "Unknown license key")
    );
    let other = admin(
        &server,
        "POST",
        "/keys",
        &json!({ "tier": "free", "key": "WISP-TEST-0000-0001" }),
    );
    other.expect(201);
    let r = server.post_json(
        "/portal/license/refresh",
        &json!({ "key": "WISP-TEST-0000-0001", "instance_id": "i" }),
    );
    r.expect(409);
    assert_eq!(r.json()["code"], "NOT_ACTIVATED");
}

#[test]
fn a_revoked_key_is_refused_everywhere() {
    let server = start();
    signing_key(&server);
    let key = "WISP-REVO-KEDK-EY01";
    admin(
        &server,
        "POST",
        "/keys",
        &json!({ "tier": "free", "key": key }),
    )
    .expect(201);
    server
        .post_json(
            "/portal/license/activate",
            &json!({ "key": key, "instance_id": "inst-1" }),
        )
        .expect(200);
    let r = admin(
        &server,
        "POST",
        &format!("/keys/{key}/revoke"),
        &Value::Null,
    );
    r.expect(200);
    assert_eq!(r.json()["key"]["revoked"], true);
    for path in [
        "/portal/license/activate",
        "/portal/license/refresh",
        "/portal/license/verify",
    ] {
        let r = server.post_json(path, &json!({ "key": key, "instance_id": "inst-1" }));
        r.expect(403);
        assert_eq!(
            r.json(),
            envelope(403, "LICENSE_REVOKED", "License key has been revoked"),
            "{path}"
        );
    }
    // An expired key too.
    admin(
        &server,
        "POST",
        "/keys",
        &json!({ "tier": "free", "key": "WISP-EXPI-REDK-EY01", "expires_at": 1000 }),
    )
    .expect(201);
    let r = server.post_json(
        "/portal/license/activate",
        &json!({ "key": "WISP-EXPI-REDK-EY01", "instance_id": "x" }),
    );
    r.expect(403);
    assert_eq!(r.json()["code"], "LICENSE_EXPIRED");
}

#[test]
fn without_a_signing_key_nothing_is_issued() {
    let server = start();
    admin(
        &server,
        "POST",
        "/keys",
        &json!({ "tier": "free", "key": "WISP-NOSI-GNIN-GKEY" }),
    )
    .expect(201);
    let r = server.post_json(
        "/portal/license/activate",
        &json!({ "key": "WISP-NOSI-GNIN-GKEY", "instance_id": "x" }),
    );
    r.expect(503);
    assert_eq!(r.json()["code"], "NO_SIGNING_KEY");
}

#[test]
fn a_published_release_is_latest_with_a_signed_manifest_and_downloads_intact() {
    let server = start();
    let public = signing_key(&server);
    let r = server.get("/portal/releases/latest");
    r.expect(404);
    assert_eq!(
        r.json(),
        envelope(404, "NO_RELEASE", "No release on channel stable")
    );

    // Over one kv chunk, so the artefact is stored in pieces.
    let artefact: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for (version, changelog) in [
        ("1.9.0", "## 1.9.0\n- old"),
        ("1.10.0", "## WisPanel 1.10.0\n- new"),
        ("1.4.2", "## 1.4.2"),
    ] {
        let r = admin(
            &server,
            "POST",
            "/releases",
            &json!({ "version": version, "channel": "stable", "changelog": changelog, "artefact": B64.encode(&artefact) }),
        );
        r.expect(201);
    }
    let r = admin(
        &server,
        "POST",
        "/releases",
        &json!({ "version": "1.9.0", "channel": "stable", "artefact": B64.encode(b"x") }),
    );
    r.expect(409);
    assert_eq!(r.json()["code"], "RELEASE_EXISTS");

    let r = server.get("/portal/releases/latest?channel=stable");
    r.expect(200);
    let release = r.json()["release"].clone();
    assert_eq!(
        release["version"], "1.10.0",
        "numeric, not lexical or by time"
    );
    assert_eq!(release["changelog"], "## WisPanel 1.10.0\n- new");
    let manifest = open(&release["manifest"], &public, "release");
    let sha: String = digest::digest(&digest::SHA256, &artefact)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest["sha256"], sha.as_str());
    assert_eq!(manifest["size"], artefact.len());
    assert_eq!(manifest["version"], "1.10.0");
    assert_eq!(manifest["channel"], "stable");

    let url = release["download_url"].as_str().unwrap();
    assert_eq!(url, "/portal/download/stable/1.10.0");
    let r = server.get(url);
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-artefact-sha256"), Some(sha.as_str()));
    assert!(r.body == artefact, "the artefact comes back byte for byte");

    let list = server.get("/portal/releases?channel=stable");
    list.expect(200);
    let versions: Vec<&str> = list.json()["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_string().leak() as &str)
        .collect();
    assert_eq!(versions, ["1.10.0", "1.9.0", "1.4.2"]);
    server.get("/portal/download/stable/9.9.9").expect(404);
    server
        .get("/portal/releases/latest?channel=beta")
        .expect(404);
}
