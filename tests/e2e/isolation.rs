//! Each plugin's kv namespace is its own, even for two plugins built from the
//! same wasm file.

use serde_json::json;

use crate::e2e::harness::{Plugin, Server};

#[test]
fn a_plugin_cannot_see_another_plugins_notes() {
    let server = Server::start(&[Plugin::hello("alpha"), Plugin::hello("beta")]);
    let note = server.post_json("/alpha/notes", &json!({ "title": "alpha's secret" }));
    note.expect(201);
    let id = note.json()["id"].as_str().expect("id").to_string();

    let list = server.get("/beta/notes");
    list.expect(200);
    assert_eq!(
        list.json(),
        json!({ "notes": [] }),
        "beta lists alpha's notes"
    );
    server.get(&format!("/beta/notes/{id}")).expect(404);
    server.delete(&format!("/beta/notes/{id}")).expect(404);

    let token = server.admin_token();
    let stats = server.admin_get("/plugins/beta/admin/stats", Some(&token));
    stats.expect(200);
    assert_eq!(stats.json(), json!({ "notes": 0 }));

    // beta's own note gets its own id space and leaves alpha's untouched.
    server
        .post_json("/beta/notes", &json!({ "title": "beta's" }))
        .expect(201);
    let alpha = server.get("/alpha/notes").json();
    assert_eq!(alpha["notes"].as_array().map(Vec::len), Some(1), "{alpha}");
    assert_eq!(alpha["notes"][0]["title"], "alpha's secret");
    server.get(&format!("/alpha/notes/{id}")).expect(200);
}

#[test]
fn a_plugin_cannot_read_another_plugins_keys() {
    let server = Server::start(&[Plugin::fixture("fa"), Plugin::fixture("fb")]);
    server.put("/fa/kv/shared-name", b"from a").expect(204);

    server.get("/fb/kv/shared-name").expect(404);

    server.put("/fb/kv/shared-name", b"from b").expect(204);
    let a = server.get("/fa/kv/shared-name");
    a.expect(200);
    assert_eq!(a.text(), "from a");
    let b = server.get("/fb/kv/shared-name");
    b.expect(200);
    assert_eq!(b.text(), "from b");
}

#[test]
fn a_key_that_looks_like_another_namespace_stays_in_its_own() {
    // Keys that try to climb out of the namespace are just odd names.
    let server = Server::start(&[Plugin::fixture("fa"), Plugin::fixture("fb")]);
    server.put("/fa/kv/secret", b"a's").expect(204);
    for forged in [
        "..%2Ffa%2Fsecret",
        "fa%2Fsecret",
        "fa:secret",
        "%00fa%00secret",
        "fa%00secret",
    ] {
        let r = server.get(&format!("/fb/kv/{forged}"));
        assert_ne!(
            r.text(),
            "a's",
            "fb read fa's key through {forged:?}: {r:?}"
        );
    }
}

/// A fresh instance per request keeps nothing between requests; with
/// `limits.reuse` an instance serves requests one after another (state
/// kept), and is dropped after a trap, after `max_requests`, or once idle
/// for `max_idle_ms`. Another plugin never gets it.
#[test]
fn warm_instances_are_opt_in_and_dropped_after_a_trap_max_requests_or_idle_time() {
    let server = Server::start(&[
        Plugin::fixture("fresh"),
        Plugin::fixture("warm")
            .timeout_ms(300)
            .limits_extra("reuse: { max_requests: 5, max_idle_ms: 400 }"),
    ]);
    let count = |plugin: &str| server.get(&format!("/{plugin}/count")).text();
    for _ in 0..3 {
        assert_eq!(count("fresh"), "1", "a fresh instance per request");
    }
    // One request at a time: always the same warm instance.
    assert_eq!(
        (1..=5).map(|_| count("warm")).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    // The fifth was its last.
    assert_eq!(count("warm"), "1", "dropped after max_requests");
    assert_eq!(count("warm"), "2");
    // A trap drops it.
    server.get("/warm/stack").expect(500);
    assert_eq!(count("warm"), "1", "dropped after a trap");
    // So does a deadline.
    assert_eq!(count("warm"), "2");
    server.get("/warm/loop").expect(504);
    assert_eq!(count("warm"), "1", "dropped after a deadline");
    // Idle past max_idle_ms: dropped.
    std::thread::sleep(std::time::Duration::from_millis(900));
    assert_eq!(count("warm"), "1", "dropped after idling");
    // The other plugin from the same file never saw any of it.
    assert_eq!(count("fresh"), "1");
}

#[test]
fn reuse_settings_out_of_range_are_refused_by_name() {
    for (reuse, needle) in [
        ("{ max_requests: 0 }", "reuse.max_requests"),
        ("{ max_idle_ms: 0 }", "reuse.max_idle_ms"),
        ("{ max_memory_mb: 9999 }", "reuse.max_memory_mb"),
        ("{ max_requets: 3 }", "unknown field `max_requets`"),
    ] {
        let setup = crate::e2e::harness::Setup::new(&[
            Plugin::fixture("warm").limits_extra(&format!("reuse: {reuse}"))
        ]);
        let out = setup.check();
        let text = crate::e2e::harness::describe(&out);
        assert!(!out.status.success(), "{reuse}: {text}");
        assert!(text.contains(needle), "{reuse}: {text}");
    }
}
