//! wispanel under concurrent requests (plugins/wispanel): every round
//! starts the requests together behind a barrier, then checks that what is
//! stored is what some serial order of the acknowledged requests gives.
//!
//! - License (license_api.rs): a verify that saved the record it read
//!   before its portal call undid a refresh finished meanwhile (the old
//!   file came back); a revocation the portal reported for the old key was
//!   written over a key activated meanwhile.
//! - Enforcement (enforce.rs): re-enables at once each restored the same
//!   resources and each said so.
//! - Usage (admin.rs): two `PUT /usage` at once each added or removed what
//!   the counts it had read called for, so together they overshot (or
//!   undershot) both counts asked for, and named two resources alike.
//! - Updates (update.rs): two stagings at once left the state naming one
//!   artefact and the chunks holding another, or half of each; a staging
//!   that failed wrote back the state it read before another one staged.

use std::sync::Barrier;
use std::thread;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::e2e::harness::now_secs;
use crate::e2e::http::Response;
use crate::e2e::wispanel::{
    INSTANCE, Panel, Portal, SEED_KEY, Signer, admin, expect_error, sha256_hex,
};

/// Rounds per test: the races these tests pin were lost in most rounds.
const ROUNDS: usize = 20;
/// The tests send many requests per token; the limit is not under test.
const NO_RATE_LIMIT: &str = ", rate_limit_per_minute: 1000000";

/// Runs `a` and `b` at once; returns what they returned.
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let barrier = Barrier::new(2);
    let barrier = &barrier;
    thread::scope(|s| {
        let a = s.spawn(move || {
            barrier.wait();
            a()
        });
        barrier.wait();
        let b = b();
        (a.join().expect("the first request"), b)
    })
}

/// Runs `f(0)` .. `f(n - 1)` at once; returns what they returned.
fn at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    let (barrier, f) = (&barrier, &f);
    thread::scope(|s| {
        let all: Vec<_> = (0..n)
            .map(|i| {
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        all.into_iter()
            .map(|h| h.join().expect("request"))
            .collect()
    })
}

fn mask(key: &str) -> String {
    format!(
        "{}-****{}",
        key.split('-').next().unwrap(),
        &key[key.len() - 4..]
    )
}

// ---- License -------------------------------------------------------------

#[test]
fn a_verify_racing_a_refresh_never_puts_the_old_license_file_back() {
    let portal = Portal::start();
    let p = portal.panel_with(NO_RATE_LIMIT);
    p.post("/license/activate", &json!({ "key": portal.license_key }))
        .expect(200);
    for round in 0..ROUNDS {
        let before = p.get("/license/summary").json()["license_id"].clone();
        let (verified, refreshed) = both(
            || p.post("/license/verify", &Value::Null),
            || p.post("/license/refresh", &Value::Null),
        );
        verified.expect(200);
        refreshed.expect(200);
        let after = p.get("/license/summary").json();
        assert_ne!(
            after["license_id"], before,
            "round {round}: the refreshed file was replaced by the one verify had read: {after}"
        );
        assert_eq!(
            (after["is_valid"].clone(), after["last_checked"].is_string()),
            (json!(true), true),
            "round {round}: {after}"
        );
    }
}

#[test]
fn a_revocation_reported_while_another_key_is_activated_does_not_touch_that_key() {
    let portal = Portal::start();
    let p = portal.panel_with(NO_RATE_LIMIT);
    let new_key = || {
        Portal::new_key(
            &portal.server,
            json!({ "tier": "pro", "max_users": 30, "max_domains": 100, "max_databases": -1, "valid_days": 365 }),
        )
    };
    for round in 0..ROUNDS {
        let old = new_key();
        p.post("/license/activate", &json!({ "key": old }))
            .expect(200);
        admin(
            &portal.server,
            "license-portal",
            "POST",
            &format!("/keys/{old}/revoke"),
            &Value::Null,
        )
        .expect(200);
        let new = new_key();
        // Verify and refresh both learn of a revocation from the portal.
        let check = ["/license/verify", "/license/refresh"][round % 2];
        let (checked, activated) = both(
            || p.post(check, &Value::Null),
            || p.post("/license/activate", &json!({ "key": new })),
        );
        activated.expect(200);
        // Before the activation it finds the old key revoked; after it,
        // it checks the new key.
        if checked.status != 200 {
            expect_error(&checked, 403, "LICENSE_REVOKED");
        }
        let lic = p.get("/license").json()["license"].clone();
        assert_eq!(
            (lic["key"].clone(), lic["is_valid"].clone()),
            (json!(mask(&new)), json!(true)),
            "round {round} ({check}): the key activated is not the one stored, or is marked revoked: {lic}"
        );
    }
}

// ---- Enforcement ---------------------------------------------------------

#[test]
fn enforcing_and_re_enabling_at_once_disable_and_restore_each_resource_once() {
    const AT_ONCE: usize = 3;
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, NO_RATE_LIMIT);
    let mut lic = signer.license(SEED_KEY, INSTANCE);
    let mut limit_to = |n: u64| {
        lic["limits"]["max_users"] = json!(n);
        p.upload(SEED_KEY, &signer.envelope(&lic)).expect(200);
    };
    p.admin("PUT", "/usage", &json!({ "accounts": 6 }))
        .expect(200);
    let count = |r: Response, field: &str| {
        r.expect(200);
        let v = r.json();
        v[field]
            .as_array()
            .unwrap_or_else(|| panic!("no {field}: {v}"))
            .len()
    };
    for round in 0..ROUNDS {
        limit_to(3);
        let disabled: usize = at_once(AT_ONCE, |_| {
            count(p.post("/license/enforce", &Value::Null), "disabled")
        })
        .into_iter()
        .sum();
        assert_eq!(
            disabled, 3,
            "round {round}: enforce said it disabled {disabled}"
        );
        limit_to(6);
        let restored: usize = at_once(AT_ONCE, |_| {
            count(p.post("/license/re-enable", &Value::Null), "re_enabled")
        })
        .into_iter()
        .sum();
        assert_eq!(
            restored, 3,
            "round {round}: re-enable said it restored {restored}"
        );
        let l = p.get("/license/limits").json();
        assert_eq!(
            (
                l["active"]["accounts"].clone(),
                p.get("/license/disabled-resources").json()["count"].clone()
            ),
            (json!(6), json!(0)),
            "round {round}: {l}"
        );
    }
}

// ---- Usage ---------------------------------------------------------------

/// The kinds the usage rounds set.
const USAGE_KINDS: [&str; 2] = ["accounts", "domains"];

/// The counts of [`USAGE_KINDS`] after `puts` in this order, from `start`.
fn counts_after(start: &Value, puts: [&Value; 2]) -> Vec<u64> {
    USAGE_KINDS
        .iter()
        .map(|k| {
            puts.iter()
                .rev()
                .find_map(|p| p[*k].as_u64())
                .or(start[*k].as_u64())
                .expect("start sets every kind")
        })
        .collect()
}

#[test]
fn usage_set_at_once_ends_at_the_counts_of_one_order_of_the_requests() {
    let signer = Signer::new(1);
    let p = Panel::offline(&signer, NO_RATE_LIMIT);
    // (start, a, b): both add, both remove, one adds while the other
    // removes, and each sets two kinds, one up and one down.
    let cases = [
        (
            json!({ "accounts": 2, "domains": 2 }),
            json!({ "accounts": 5 }),
            json!({ "accounts": 4 }),
        ),
        (
            json!({ "accounts": 6, "domains": 2 }),
            json!({ "accounts": 3 }),
            json!({ "accounts": 1 }),
        ),
        (
            json!({ "accounts": 3, "domains": 2 }),
            json!({ "accounts": 6 }),
            json!({ "accounts": 1 }),
        ),
        (
            json!({ "accounts": 2, "domains": 2 }),
            json!({ "accounts": 5, "domains": 1 }),
            json!({ "accounts": 1, "domains": 5 }),
        ),
    ];
    for round in 0..2 * ROUNDS {
        let (start, a, b) = &cases[round % cases.len()];
        p.admin("PUT", "/usage", start).expect(200);
        let (ra, rb) = both(
            || p.admin("PUT", "/usage", a),
            || p.admin("PUT", "/usage", b),
        );
        ra.expect(200);
        rb.expect(200);
        let usage = p.admin("GET", "/usage", &Value::Null).json()["usage"].clone();
        let got: Vec<u64> = USAGE_KINDS
            .iter()
            .map(|k| usage[*k].as_u64().expect("a count"))
            .collect();
        let (ab, ba) = (counts_after(start, [a, b]), counts_after(start, [b, a]));
        assert!(
            got == ab || got == ba,
            "round {round}: from {start}, {a} and {b} at once left {usage}; \
             one after the other they leave {ab:?} or {ba:?}"
        );
        // A serial order leaves `<kind>-1` .. `<kind>-<n>`, oldest first.
        for (kind, n) in USAGE_KINDS.iter().zip(&got) {
            let list = p
                .admin("GET", &format!("/resources?kind={kind}"), &Value::Null)
                .json();
            let names: Vec<&str> = list["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .map(|r| r["name"].as_str().expect("name"))
                .collect();
            let want: Vec<String> = (1..=*n).map(|i| format!("{kind}-{i}")).collect();
            assert_eq!(names, want, "round {round}: {kind}");
        }
    }
}

// ---- Updates ---------------------------------------------------------------

/// A release as the panel is told of it: its signed manifest and URL.
struct Release {
    version: String,
    sha256: String,
    size: u64,
    url: String,
    manifest: Value,
}

/// The latest stable release of `portal`.
fn latest(portal: &Portal) -> Release {
    let v = portal
        .public("GET", "/releases/latest?channel=stable", &Value::Null)
        .json();
    let r = &v["release"];
    Release {
        version: r["version"].as_str().expect("version").to_string(),
        sha256: r["sha256"].as_str().expect("sha256").to_string(),
        size: r["size"].as_u64().expect("size"),
        url: format!(
            "http://{}{}",
            portal.addr(),
            r["download_url"].as_str().expect("download_url")
        ),
        manifest: r["manifest"].clone(),
    }
}

/// A portal with two releases, 1.4.3 (one chunk) and 1.4.4 (three
/// chunks, other bytes); returns them in that order.
fn two_releases(portal: &Portal) -> (Release, Release) {
    let first = latest(portal);
    let artefact: Vec<u8> = (0..1_300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    admin(
        &portal.server,
        "license-portal",
        "POST",
        "/releases",
        &json!({ "version": "1.4.4", "channel": "stable", "changelog": "## WisPanel 1.4.4", "artefact": B64.encode(&artefact) }),
    )
    .expect(201);
    let second = latest(portal);
    assert_eq!(
        (first.version.as_str(), second.version.as_str()),
        ("1.4.3", "1.4.4")
    );
    assert_eq!(second.sha256, sha256_hex(&artefact));
    (first, second)
}

#[track_caller]
fn direct_update(p: &Panel, release: &Release) -> Response {
    p.post(
        "/version/direct-update",
        &json!({ "url": release.url, "manifest": release.manifest }),
    )
}

/// What is staged is `release`, and kv holds its bytes whole.
#[track_caller]
fn assert_staged_whole(p: &Panel, release: &Release, round: usize) {
    let s = p.get("/version/update/status").json();
    assert_eq!(
        (
            s["staged"]["version"].as_str(),
            s["staged"]["sha256"].as_str()
        ),
        (
            Some(release.version.as_str()),
            Some(release.sha256.as_str())
        ),
        "round {round}: {s}"
    );
    let c = p.admin("GET", "/update/staged", &Value::Null).json();
    assert_eq!(
        (
            c["intact"].clone(),
            c["stored"]["sha256"].clone(),
            c["staged"]["version"].clone()
        ),
        (json!(true), json!(release.sha256), json!(release.version)),
        "round {round}: the state names one artefact and kv holds other bytes: {c}"
    );
}

#[test]
fn two_updates_staged_at_once_leave_one_of_them_staged_whole() {
    let portal = Portal::start();
    let p = portal.panel_with(NO_RATE_LIMIT);
    let (first, second) = two_releases(&portal);
    for round in 0..ROUNDS {
        let (a, b) = both(|| direct_update(&p, &first), || direct_update(&p, &second));
        a.expect(200);
        b.expect(200);
        let s = p.get("/version/update/status").json();
        assert_eq!(
            (
                s["state"].clone(),
                s["progress"].clone(),
                s["error"].clone()
            ),
            (json!("staged"), json!(100), Value::Null),
            "round {round}: {s}"
        );
        assert_eq!(
            s["target_version"], s["staged"]["version"],
            "round {round}: the target is not what was staged: {s}"
        );
        let staged = if s["staged"]["version"] == first.version.as_str() {
            &first
        } else {
            &second
        };
        assert_staged_whole(&p, staged, round);
    }
}

#[test]
fn an_update_that_fails_while_another_is_staged_does_not_unstage_it() {
    let portal = Portal::start();
    // Also trusts a key of the test's own, to sign a manifest that lies.
    let signer = Signer::new(3);
    let p = portal.panel_with(&format!(
        "{NO_RATE_LIMIT}, license_public_keys: {{ {}: {} }}",
        crate::e2e::harness::quote(&signer.key_id),
        crate::e2e::harness::quote(&signer.public_b64())
    ));
    let (first, second) = two_releases(&portal);
    // Twice the rounds: the window of this race is narrower.
    for round in 0..2 * ROUNDS {
        // A different release each round, so a state written back from
        // before the round names the other one.
        let good = if round % 2 == 0 { &first } else { &second };
        let lying = signer.envelope(&json!({
            "type": "release", "key_id": signer.key_id, "alg": "ed25519", "version": "9.9.9",
            "channel": "stable", "sha256": sha256_hex(b"other"), "size": good.size,
            "published_at": now_secs(),
        }));
        let (staged, failed) = both(
            || direct_update(&p, good),
            || {
                p.post(
                    "/version/direct-update",
                    &json!({ "url": good.url, "manifest": lying }),
                )
            },
        );
        staged.expect(200);
        expect_error(&failed, 422, "UPDATE_CHECKSUM_MISMATCH");
        let s = p.get("/version/update/status").json();
        // Staged last: staged, aiming at it; failed last: failed, aiming
        // at 9.9.9. Either way the good one is staged.
        let (state, target) = (s["state"].as_str(), s["target_version"].as_str());
        assert!(
            (state, target) == (Some("staged"), Some(good.version.as_str()))
                || (state, target) == (Some("failed"), Some("9.9.9")),
            "round {round}: {s}"
        );
        assert_staged_whole(&p, good, round);
    }
}
