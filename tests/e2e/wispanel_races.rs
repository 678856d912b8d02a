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

use std::sync::Barrier;
use std::thread;

use serde_json::{Value, json};

use crate::e2e::http::Response;
use crate::e2e::wispanel::{INSTANCE, Panel, Portal, SEED_KEY, Signer, admin, expect_error};

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
