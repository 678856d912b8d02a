//! vpnpanel under concurrent writes to one user (plugins/vpnpanel/src/domain/users.rs,
//! traffic.rs): an edit (`PUT /users/<name>`) racing a revoke, a toggle, a
//! traffic report or another edit. Every round starts the requests together
//! behind a barrier, then checks that the user and its sub-admin's counters
//! are what some serial order of the acknowledged requests gives: an edit
//! that read the user before another request's write and wrote its stale
//! copy back afterwards would show up as a revived subscription link, an
//! undone toggle, lost traffic or quota counters that no longer add up.
//!
//! Then sub-admins (sub_admins.rs): creations and edits racing for one
//! port, which only one of them may get.
//!
//! Then custom ports (ports.rs): a port put on a server while its last
//! assignment is deleted (the port must stay, on that server), and a port
//! put on a node while the node is deleted (it must go with the node).

use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::eventually;
use crate::e2e::http::Response;
use crate::e2e::vpnpanel::{Panel, assert_fail, assert_ok};

/// Rounds per test: the races these tests pin were lost in most rounds, so
/// 30 rounds make a pass by luck practically impossible.
const ROUNDS: usize = 30;
/// Concurrent edits in each round.
const EDITORS: usize = 3;
const GIB: u64 = 1 << 30;

/// One editor's edit: `notes` says which editor, `max_clients` repeats it,
/// so a user holding half of one edit and half of another is caught.
fn edit_body(round: usize, editor: usize) -> Value {
    json!({ "notes": format!("{round}-{editor}"), "max_clients": editor + 1 })
}

/// The user holds exactly one of the round's edits, whole.
#[track_caller]
fn assert_one_whole_edit(p: &Panel, name: &str, round: usize) {
    let u = p.user(name);
    let notes = u["notes"].as_str().unwrap_or_default().to_string();
    let editor: usize = notes
        .strip_prefix(&format!("{round}-"))
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| {
            panic!("round {round}: notes {notes:?} come from no edit of this round")
        });
    assert_eq!(
        u["max_clients"],
        json!(editor + 1),
        "round {round}: half of edit {notes}: {u}"
    );
}

/// Runs `EDITORS` edits of `name` (with `key`) and `other` at once; returns
/// what `other` returned.
fn race<T: Send>(
    p: &Panel,
    key: &str,
    name: &str,
    round: usize,
    other: impl FnOnce() -> T + Send,
) -> T {
    let barrier = Barrier::new(EDITORS + 1);
    thread::scope(|s| {
        for editor in 0..EDITORS {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let r = p.call(
                    Some(key),
                    "PUT",
                    &format!("/users/{name}"),
                    &edit_body(round, editor),
                );
                assert_ok(&r, 200, "User updated successfully.");
            });
        }
        let other = s.spawn(|| {
            barrier.wait();
            other()
        });
        other.join().expect("the racing request")
    })
}

fn sub_admin_view(p: &Panel, id: u64) -> Value {
    let v = p.main("GET", "/sub_admins", &Value::Null).json();
    v["sub_admins"]
        .as_array()
        .and_then(|all| all.iter().find(|sa| sa["id"] == id).cloned())
        .unwrap_or_else(|| panic!("sub-admin {id} not listed: {v}"))
}

#[test]
fn an_edit_racing_a_revoke_never_brings_the_revoked_link_back() {
    let p = Panel::start();
    p.create_user(&p.main, json!({ "username": "revoked" }))
        .expect(201);
    for round in 0..ROUNDS {
        let old = p.token_of("revoked");
        let new = race(&p, &p.main, "revoked", round, || {
            let r = p.main("POST", "/users/revoked/revoke", &Value::Null);
            let v = assert_ok(
                &r,
                200,
                "Token revoked instantly. Certificate generation running in background.",
            );
            let url = v["new_subscription_url"]
                .as_str()
                .expect("new_subscription_url");
            url.split("token=").nth(1).expect("token").to_string()
        });
        assert_eq!(
            p.token_of("revoked"),
            new,
            "round {round}: the revoke's token was overwritten"
        );
        let sub = |token: &str| {
            p.server
                .send("GET", &format!("/sub/revoked?token={token}"), &[], b"")
                .status
        };
        assert_eq!(
            sub(&old),
            403,
            "round {round}: the revoked link still works"
        );
        assert_eq!(
            sub(&new),
            200,
            "round {round}: the link the revoke returned does not work"
        );
        assert_one_whole_edit(&p, "revoked", round);
    }
}

#[test]
fn an_edit_racing_a_toggle_never_undoes_the_toggle() {
    let p = Panel::start();
    p.create_user(&p.main, json!({ "username": "toggled" }))
        .expect(201);
    for round in 0..ROUNDS {
        let before = p.user("toggled")["is_active"].as_bool().expect("is_active");
        let enabled = race(&p, &p.main, "toggled", round, || {
            let r = p.main("POST", "/users/toggled/toggle", &Value::Null);
            assert_ok(&r, 200, "User toggled")["enabled"]
                .as_bool()
                .expect("enabled")
        });
        assert_eq!(
            enabled, !before,
            "round {round}: the toggle did not flip the user"
        );
        let u = p.user("toggled");
        assert_eq!(
            u["is_active"], enabled,
            "round {round}: the toggle was undone: {u}"
        );
        assert_eq!(
            u["status"],
            if enabled { "active" } else { "disabled" },
            "round {round}"
        );
        assert_one_whole_edit(&p, "toggled", round);
    }
}

#[test]
fn traffic_reported_during_edits_is_all_counted_for_the_user_and_its_sub_admin() {
    const REPORTS: u64 = 3;
    let p = Panel::start();
    let (id, key) = p.sub_admin("meter", json!({}));
    p.create_user(&key, json!({ "username": "metered" }))
        .expect(201);
    let mut acknowledged = 0u64;
    for round in 0..ROUNDS {
        let barrier = Barrier::new(EDITORS + REPORTS as usize);
        let reported: u64 = thread::scope(|s| {
            for editor in 0..EDITORS {
                let (barrier, key) = (&barrier, &key);
                let p = &p;
                s.spawn(move || {
                    barrier.wait();
                    let r = p.call(
                        Some(key),
                        "PUT",
                        "/users/metered",
                        &edit_body(round, editor),
                    );
                    assert_ok(&r, 200, "User updated successfully.");
                });
            }
            let reports: Vec<_> = (0..REPORTS)
                .map(|i| {
                    let (barrier, p) = (&barrier, &p);
                    s.spawn(move || {
                        let bytes = 1_000 + i;
                        barrier.wait();
                        let body = json!({ "users": [{ "username": "metered", "bytes": bytes, "connections": 1 }] });
                        let r = p.main("POST", "/traffic/report", &body);
                        assert_eq!(assert_ok(&r, 200, "Traffic recorded.")["accepted"], 1);
                        bytes
                    })
                })
                .collect();
            reports.into_iter().map(|h| h.join().expect("report")).sum()
        });
        acknowledged += reported;
        let used = p.user("metered")["total_traffic_bytes"]
            .as_u64()
            .expect("total_traffic_bytes");
        assert_eq!(
            used,
            acknowledged,
            "round {round}: the user lost {} acknowledged bytes",
            acknowledged - used.min(acknowledged)
        );
        let sa = sub_admin_view(&p, id);
        assert_eq!(
            sa["used_bytes"], acknowledged,
            "round {round}: the sub-admin's usage is off: {sa}"
        );
        assert_one_whole_edit(&p, "metered", round);
    }
}

#[test]
fn concurrent_limit_changes_never_leave_a_sub_admin_over_its_quota() {
    const QUOTA_GB: u64 = 20;
    const USERS: usize = 3;
    let p = Panel::start();
    let (id, key) = p.sub_admin("reseller", json!({ "total_usage_quota_gb": QUOTA_GB }));
    let names: Vec<String> = (0..USERS).map(|i| format!("limited{i}")).collect();
    for name in &names {
        p.create_user(&key, json!({ "username": name, "data_limit": 2 }))
            .expect(201);
    }
    let mut refused = 0;
    for round in 0..ROUNDS {
        // Two edits per user, limits from 1 to 12 GB: together often more
        // than the quota, so some must be refused.
        let barrier = Barrier::new(2 * USERS);
        refused += thread::scope(|s| {
            let edits: Vec<_> = (0..2 * USERS)
                .map(|t| {
                    let (barrier, key, p, name) = (&barrier, &key, &p, &names[t % USERS]);
                    s.spawn(move || {
                        let limit = 1 + (round * 7 + t * 5) % 12;
                        barrier.wait();
                        let r = p.call(
                            Some(key),
                            "PUT",
                            &format!("/users/{name}"),
                            &json!({ "data_limit": limit }),
                        );
                        match r.status {
                            200 => 0,
                            403 => {
                                assert_eq!(
                                    r.json()["message"],
                                    "Traffic quota exceeded for this sub-admin."
                                );
                                1
                            }
                            other => panic!("round {round}: {other} {}", r.text()),
                        }
                    })
                })
                .collect();
            edits
                .into_iter()
                .map(|h| h.join().expect("edit"))
                .sum::<usize>()
        });
        let limits: u64 = names
            .iter()
            .map(|n| {
                p.user(n)["data_limit_bytes"]
                    .as_u64()
                    .expect("data_limit_bytes")
            })
            .sum();
        let sa = sub_admin_view(&p, id);
        assert!(
            limits <= QUOTA_GB * GIB,
            "round {round}: {} GB of limits on a {QUOTA_GB} GB quota",
            limits as f64 / GIB as f64
        );
        assert_eq!(
            sa["allocated_bytes"], limits,
            "round {round}: the allocation no longer matches the users' limits: {sa}"
        );
    }
    assert!(
        refused > 0,
        "no edit was ever refused: the test did not reach the quota"
    );
}

#[test]
fn a_usage_reset_racing_the_report_that_used_up_the_quota_never_leaves_users_suspended() {
    const MB: u64 = 1 << 20;
    let p = Panel::start();
    let (id, key) = p.sub_admin("capped", json!({ "total_usage_quota_gb": 1 }));
    p.create_user(&key, json!({ "username": "capped_user", "data_limit": 1 }))
        .expect(201);
    let reset_usage = || {
        let r = p.main(
            "POST",
            &format!("/sub_admins/{id}/reset_usage"),
            &Value::Null,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    // This race's window is narrower than the others': twice the rounds.
    for round in 0..2 * ROUNDS {
        // 600 MB used of the 1 GB quota, the user's own traffic back at 0.
        reset_usage();
        p.report("capped_user", 600 * MB);
        p.main("POST", "/users/capped_user/reset_traffic", &Value::Null)
            .expect(200);
        // Another 600 MB uses the quota up; the reset zeroes it. Either
        // order ends under the quota with the user active.
        let barrier = Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                p.report("capped_user", 600 * MB);
            });
            barrier.wait();
            reset_usage();
        });
        let used = sub_admin_view(&p, id)["used_bytes"]
            .as_u64()
            .expect("used_bytes");
        let u = p.user("capped_user");
        assert!(
            used < GIB,
            "round {round}: {used} bytes used after the reset"
        );
        assert_eq!(
            u["status"], "active",
            "round {round}: {used} bytes used of 1 GB, yet the user is {}",
            u["status"]
        );
    }
}

#[test]
fn two_edits_of_one_node_racing_each_other_both_stand() {
    let p = Panel::start();
    let body = json!({ "name": "racing", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 });
    p.main("POST", "/nodes", &body).expect(202);
    for round in 0..ROUNDS {
        let name = format!("Node {round}");
        let protocol = if round % 2 == 0 { "tcp" } else { "udp" };
        let barrier = Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                p.main("PUT", "/nodes/1", &json!({ "name": name }))
                    .expect(200);
            });
            barrier.wait();
            p.main("PUT", "/nodes/1", &json!({ "protocol": protocol }))
                .expect(200);
        });
        let node = p.main("GET", "/nodes/1", &Value::Null).json()["node"].clone();
        assert_eq!(
            (node["name"].as_str(), node["protocol"].as_str()),
            (Some(name.as_str()), Some(protocol)),
            "round {round}: an edit was lost: {node}"
        );
    }
}

// ---- Sub-admin ports (plugins/vpnpanel/src/domain/sub_admins.rs) ----------------

/// Whether a sub-admin create or edit was accepted (`status`) or refused
/// because another sub-admin has the port; anything else fails the test.
#[track_caller]
fn port_taken_or(r: &Response, status: u16, round: usize) -> bool {
    match r.status {
        s if s == status => true,
        409 => {
            assert_fail(r, 409, "A port is already used by another sub-admin.");
            false
        }
        other => panic!("round {round}: {other} {}", r.text()),
    }
}

/// The sub-admins that have `port` as either of their ports.
fn holders_of(p: &Panel, port: u64) -> Vec<Value> {
    let v = p.main("GET", "/sub_admins", &Value::Null).json();
    v["sub_admins"]
        .as_array()
        .expect("sub_admins")
        .iter()
        .filter(|sa| sa["subscription_port"] == port || sa["panel_port"] == port)
        .cloned()
        .collect()
}

#[test]
fn sub_admins_created_at_once_with_the_same_port_get_it_once() {
    const CREATORS: usize = 4;
    let p = Panel::start();
    for round in 0..ROUNDS {
        let port = 10_000 + round as u64;
        let barrier = Barrier::new(CREATORS);
        let created = thread::scope(|s| {
            let creators: Vec<_> = (0..CREATORS)
                .map(|i| {
                    let (barrier, p) = (&barrier, &p);
                    s.spawn(move || {
                        let body = json!({
                            "username": format!("sa{round}_{i}"), "password": "pass",
                            "subscription_port": port, "panel_port": 20_000 + round * CREATORS + i,
                        });
                        barrier.wait();
                        let r = p.main("POST", "/sub_admins", &body);
                        port_taken_or(&r, 201, round)
                    })
                })
                .collect();
            creators
                .into_iter()
                .map(|h| h.join().expect("create"))
                .filter(|ok| *ok)
                .count()
        });
        let holders = holders_of(&p, port);
        assert_eq!(
            (created, holders.len()),
            (1, 1),
            "round {round}: port {port} was given {created} times: {holders:?}"
        );
    }
}

#[test]
fn two_sub_admins_moved_to_one_port_at_once_do_not_both_get_it() {
    let p = Panel::start();
    let (a, _) = p.sub_admin("sa_a", json!({}));
    let (b, _) = p.sub_admin("sa_b", json!({}));
    for round in 0..ROUNDS {
        let port = 30_000 + round as u64;
        let barrier = Barrier::new(2);
        let moved = thread::scope(|s| {
            let edits: Vec<_> = [a, b]
                .into_iter()
                .map(|id| {
                    let (barrier, p) = (&barrier, &p);
                    s.spawn(move || {
                        // subscription_port for one, panel_port for the other.
                        let field = if id == a {
                            "subscription_port"
                        } else {
                            "panel_port"
                        };
                        barrier.wait();
                        let r =
                            p.main("PUT", &format!("/sub_admins/{id}"), &json!({ field: port }));
                        port_taken_or(&r, 200, round)
                    })
                })
                .collect();
            edits
                .into_iter()
                .map(|h| h.join().expect("edit"))
                .filter(|ok| *ok)
                .count()
        });
        let holders = holders_of(&p, port);
        assert_eq!(
            (moved, holders.len()),
            (1, 1),
            "round {round}: port {port} was given {moved} times: {holders:?}"
        );
    }
}

// ---- Custom ports (plugins/vpnpanel/src/domain/ports.rs) ------------------------

/// The custom ports listed for `public_port`, as (port_id, server).
fn custom_ports(p: &Panel, public_port: u64) -> Vec<(u64, String)> {
    let v = p.main("GET", "/public/ports", &Value::Null).json();
    v["custom_ports"]
        .as_array()
        .expect("custom_ports")
        .iter()
        .filter(|c| c["public_port"] == public_port)
        .map(|c| {
            (
                c["port_id"].as_u64().expect("port_id"),
                c["server_identifier"]
                    .as_str()
                    .expect("server_identifier")
                    .to_string(),
            )
        })
        .collect()
}

#[track_caller]
fn add_port(p: &Panel, public_port: u64, servers: &[&str]) -> Response {
    p.main(
        "POST",
        "/public/ports",
        &json!({ "public_port": public_port, "protocol": "tcp", "server_ids": servers }),
    )
}

#[test]
fn a_port_put_on_a_server_while_its_last_assignment_goes_is_kept() {
    let p = Panel::start();
    let node = json!({ "name": "Ports", "ip_address": "127.0.0.1", "ssh_password": "pass", "api_port": 9 });
    p.main("POST", "/nodes", &node).expect(202);
    for round in 0..ROUNDS {
        let public_port = 40_000 + round as u64;
        assert_ok(
            &add_port(&p, public_port, &["main"]),
            200,
            "Port configured on selected servers.",
        );
        let [(port_id, _)] = custom_ports(&p, public_port)[..] else {
            panic!("round {round}: {:?}", custom_ports(&p, public_port));
        };
        // Either order leaves the port on node_1 alone: deleted first, the
        // port is made again for node_1; added first, main goes and
        // node_1 stays.
        let barrier = Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                let body = json!({ "port_id": port_id, "server_identifier": "main" });
                let r = p.main("DELETE", "/public/ports/assignment", &body);
                assert_ok(&r, 200, "Port assignment deleted.");
            });
            barrier.wait();
            let r = add_port(&p, public_port, &["node_1"]);
            assert_ok(&r, 200, "Port configured on selected servers.");
        });
        let now = custom_ports(&p, public_port);
        assert!(
            matches!(&now[..], [(_, server)] if server == "node_1"),
            "round {round}: port {public_port} on node_1 was lost: {now:?}"
        );
    }
}

/// The node `id` in the main admin's list, if listed.
fn node_view(p: &Panel, id: u64) -> Option<Value> {
    let v = p.main("GET", "/nodes", &Value::Null).json();
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
}

#[track_caller]
fn wait_node(p: &Panel, id: u64, what: &str, done: impl Fn(Option<&Value>) -> bool) {
    eventually(Duration::from_secs(20), || {
        done(node_view(p, id).as_ref()).then_some(())
    })
    .unwrap_or_else(|| panic!("node {id} never became {what}: {:?}", node_view(p, id)));
}

#[test]
fn a_port_put_on_a_node_as_it_is_deleted_does_not_outlive_it() {
    let p = Panel::start();
    for round in 0..ROUNDS {
        // An address the outbound grant does not allow: every call to the
        // node fails at once, so its first deletion fails and the second
        // removes it by force.
        let body = json!({ "name": format!("Doomed {round}"), "ip_address": "192.0.2.1",
                           "ssh_password": "pass", "api_port": 1000 + round });
        let r = p.main("POST", "/nodes", &body);
        let id = r.json()["node_id"].as_u64().expect("node_id");
        let server = format!("node_{id}");
        wait_node(&p, id, "failed", |n| {
            n.is_some_and(|n| n["status"] == "failed")
        });
        p.main("DELETE", &format!("/nodes/{id}"), &Value::Null)
            .expect(200);
        wait_node(&p, id, "delete_failed", |n| {
            n.is_some_and(|n| n["status"] == "delete_failed")
        });
        let public_port = 50_000 + round as u64;
        let barrier = Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                p.main("DELETE", &format!("/nodes/{id}"), &Value::Null)
                    .expect(200);
            });
            barrier.wait();
            let r = add_port(&p, public_port, &[&server]);
            match r.status {
                200 => {}
                400 => assert_fail(&r, 400, &format!("Unknown server: {server}")),
                other => panic!("round {round}: {other} {}", r.text()),
            }
        });
        wait_node(&p, id, "gone", |n| n.is_none());
        let left = custom_ports(&p, public_port);
        assert!(
            left.is_empty(),
            "round {round}: a port outlived {server}: {left:?}"
        );
    }
}
