//! wispanel under concurrent requests (plugins/wispanel): every round
//! starts the requests together behind a barrier, then checks that what is
//! stored is what some serial order of the acknowledged requests gives.
//!
//! - License (license_api.rs): a verify that saved the record it read
//!   before its portal call undid a refresh finished meanwhile (the old
//!   file came back); a revocation the portal reported for the old key was
//!   written over a key activated meanwhile.

use std::sync::Barrier;
use std::thread;

use serde_json::{Value, json};

use crate::e2e::wispanel::{Portal, admin, expect_error};

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
