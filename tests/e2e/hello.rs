//! The hello example over HTTP: the greeting and the notes API, in each
//! language it is written in (examples/hello, hello-py, hello-js): every
//! test runs once per language, with the same assertions.

use serde_json::json;

use crate::e2e::harness::{Lang, Plugin, Server, now_secs};

fn hello_server(lang: Lang) -> Server {
    Server::start(&[Plugin::hello_in(lang, "hello")])
}

/// One `#[test]` per language for each test function, in modules `rust`,
/// `python` and `js`.
macro_rules! in_every_language {
    ($($name:ident),* $(,)?) => {
        mod rust {
            $(#[test] fn $name() { super::$name(super::Lang::Rust) })*
        }
        mod python {
            $(#[test] fn $name() { super::$name(super::Lang::Python) })*
        }
        mod js {
            $(#[test] fn $name() { super::$name(super::Lang::Js) })*
        }
    };
}

in_every_language!(
    greeting_defaults_to_hello,
    greeting_comes_from_settings,
    notes_can_be_created_listed_fetched_and_deleted,
    notes_survive_a_restart,
    unknown_note_is_404,
    unknown_path_inside_the_plugin_is_404_json,
    wrong_method_on_a_known_path_is_405,
    invalid_utf8_body_is_400,
    malformed_json_body_is_400,
    title_is_required_and_at_most_200_chars,
    max_notes_setting_refuses_more_with_409,
    admin_stats_counts_the_notes,
);

fn greeting_defaults_to_hello(lang: Lang) {
    let server = hello_server(lang);
    let r = server.get("/hello/");
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "hello" }));
}

fn greeting_comes_from_settings(lang: Lang) {
    let server =
        Server::start(&[Plugin::hello_in(lang, "hello").settings("{ greeting: bonjour }")]);
    let r = server.get("/hello/");
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "bonjour" }));
}

fn notes_can_be_created_listed_fetched_and_deleted(lang: Lang) {
    let server = hello_server(lang);
    let before = now_secs();

    let first = server.post_json("/hello/notes", &json!({ "title": "first", "body": "one" }));
    first.expect(201);
    let first = first.json();
    let first_id = first["id"].as_str().expect("id is a string").to_string();
    assert!(!first_id.is_empty());
    assert_eq!(first["title"], "first");
    assert_eq!(first["body"], "one");
    let created_at = first["created_at"]
        .as_u64()
        .expect("created_at is a number");
    assert!(
        created_at + 5 >= before && created_at <= now_secs() + 5,
        "created_at {created_at} is not about now ({before})"
    );

    let second = server.post_json("/hello/notes", &json!({ "title": "second" }));
    second.expect(201);
    let second = second.json();
    assert_eq!(second["body"], "", "body defaults to the empty string");
    let second_id = second["id"].as_str().expect("id is a string").to_string();
    assert_ne!(first_id, second_id);

    let list = server.get("/hello/notes");
    list.expect(200);
    assert_eq!(
        list.json(),
        json!({ "notes": [first, second] }),
        "creation order"
    );

    let got = server.get(&format!("/hello/notes/{first_id}"));
    got.expect(200);
    assert_eq!(got.json(), first);

    let deleted = server.delete(&format!("/hello/notes/{first_id}"));
    deleted.expect(204);
    assert!(deleted.body.is_empty(), "204 has no body: {deleted:?}");

    let gone = server.get(&format!("/hello/notes/{first_id}"));
    gone.expect(404);
    assert_eq!(gone.json(), json!({ "error": "note not found" }));
    let again = server.delete(&format!("/hello/notes/{first_id}"));
    again.expect(404);
    assert_eq!(again.json(), json!({ "error": "note not found" }));

    let list = server.get("/hello/notes");
    list.expect(200);
    assert_eq!(list.json(), json!({ "notes": [second] }));
}

fn notes_survive_a_restart(lang: Lang) {
    let mut server = hello_server(lang);
    let a = server.post_json(
        "/hello/notes",
        &json!({ "title": "kept", "body": "across restarts" }),
    );
    a.expect(201);
    let b = server.post_json("/hello/notes", &json!({ "title": "deleted" }));
    b.expect(201);
    let b_id = b.json()["id"].as_str().expect("id").to_string();
    server.delete(&format!("/hello/notes/{b_id}")).expect(204);
    let before = server.get("/hello/notes");
    before.expect(200);

    server.restart();

    let after = server.get("/hello/notes");
    after.expect(200);
    assert_eq!(after.json(), before.json());
    assert_eq!(after.json(), json!({ "notes": [a.json()] }));
    // New ids keep counting after the restart instead of reusing old ones.
    let c = server.post_json("/hello/notes", &json!({ "title": "after" }));
    c.expect(201);
    let c_id = c.json()["id"].as_str().expect("id").to_string();
    assert_ne!(c_id, a.json()["id"].as_str().expect("id"));
    assert_ne!(c_id, b_id);
}

fn unknown_note_is_404(lang: Lang) {
    let server = hello_server(lang);
    for path in ["/hello/notes/1", "/hello/notes/nope", "/hello/notes/007"] {
        let r = server.get(path);
        r.expect(404);
        assert_eq!(r.json(), json!({ "error": "note not found" }), "{path}");
    }
}

fn unknown_path_inside_the_plugin_is_404_json(lang: Lang) {
    let server = hello_server(lang);
    let r = server.get("/hello/nope");
    r.expect(404);
    assert_eq!(r.json(), json!({ "error": "not found" }));
}

fn wrong_method_on_a_known_path_is_405(lang: Lang) {
    let server = hello_server(lang);
    let r = server.put("/hello/notes", b"{}");
    r.expect(405);
    assert_eq!(r.json(), json!({ "error": "method not allowed" }));
}

fn invalid_utf8_body_is_400(lang: Lang) {
    let server = hello_server(lang);
    let r = server.post("/hello/notes", b"{\"title\": \"\xff\xfe\"}");
    r.expect(400);
    assert!(r.json()["error"].is_string(), "{r:?}");
    assert_eq!(server.get("/hello/notes").json(), json!({ "notes": [] }));
}

fn malformed_json_body_is_400(lang: Lang) {
    let server = hello_server(lang);
    for body in [
        &b"{\"title\": "[..],
        b"not json",
        b"",
        b"[1,2]",
        b"{\"title\": 5}",
    ] {
        let r = server.post("/hello/notes", body);
        r.expect(400);
        assert!(r.json()["error"].is_string(), "{r:?}");
    }
    assert_eq!(server.get("/hello/notes").json(), json!({ "notes": [] }));
}

fn title_is_required_and_at_most_200_chars(lang: Lang) {
    let server = hello_server(lang);
    for body in [
        json!({}),
        json!({ "body": "no title" }),
        json!({ "title": "" }),
        json!({ "title": "é".repeat(201) }),
    ] {
        let r = server.post_json("/hello/notes", &body);
        r.expect(400);
        assert!(r.json()["error"].is_string(), "{body}: {r:?}");
    }
    // 200 characters (400 bytes) is still fine: the limit counts characters.
    let r = server.post_json("/hello/notes", &json!({ "title": "é".repeat(200) }));
    r.expect(201);
}

fn max_notes_setting_refuses_more_with_409(lang: Lang) {
    let server = Server::start(&[Plugin::hello_in(lang, "hello").settings("{ max_notes: 2 }")]);
    server
        .post_json("/hello/notes", &json!({ "title": "1" }))
        .expect(201);
    server
        .post_json("/hello/notes", &json!({ "title": "2" }))
        .expect(201);
    let r = server.post_json("/hello/notes", &json!({ "title": "3" }));
    r.expect(409);
    assert_eq!(r.json(), json!({ "error": "too many notes" }));
    // Deleting one makes room again.
    let id = server.get("/hello/notes").json()["notes"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    server.delete(&format!("/hello/notes/{id}")).expect(204);
    server
        .post_json("/hello/notes", &json!({ "title": "3" }))
        .expect(201);
}

fn admin_stats_counts_the_notes(lang: Lang) {
    let server = hello_server(lang);
    let r = server.plugin_admin("hello", "GET", "/stats", &serde_json::Value::Null);
    r.expect(200);
    assert_eq!(r.json(), json!({ "notes": 0 }));
    for title in ["a", "b"] {
        server
            .post_json("/hello/notes", &json!({ "title": title }))
            .expect(201);
    }
    let r = server.plugin_admin("hello", "GET", "/stats", &serde_json::Value::Null);
    r.expect(200);
    assert_eq!(r.json(), json!({ "notes": 2 }));
    let r = server.plugin_admin("hello", "GET", "/nope", &serde_json::Value::Null);
    r.expect(404);
    assert_eq!(r.json(), json!({ "error": "not found" }));
}
