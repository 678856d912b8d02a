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
