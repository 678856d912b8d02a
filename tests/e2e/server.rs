//! The HTTP surface the host itself owns: routing, request ids, body
//! limits, keep-alive.

use std::collections::HashSet;

use serde_json::json;

use crate::e2e::harness::{Plugin, Server, Setup};
use crate::e2e::http::Conn;

#[test]
fn unknown_route_is_404_json_naming_the_path() {
    let server = Server::start(&[Plugin::hello("hello")]);
    // (`/hello` without its slash is left out: the host serves it from the `/hello/` mount.)
    for path in ["/nowhere", "/", "/hellox/", "/hell/", "/HELLO/"] {
        let r = server.get(path);
        r.expect(404);
        assert_eq!(
            r.json(),
            json!({ "error": "no route", "path": path }),
            "{path}"
        );
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{r:?}"
        );
    }
}

#[test]
fn every_response_has_a_distinct_request_id() {
    let server = Server::start(&[Plugin::fixture("fx").max_body_bytes(16)]);
    let responses = [
        server.get("/fx/ok"),
        server.get("/fx/ok"),
        server.get("/nowhere"),
        server.get("/fx/kv/missing"),
        server.get("/fx/stack"),
        server.put("/fx/kv/k", &[b'x'; 64]),
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 404, 404, 500, 413]);
    let ids: HashSet<String> = responses.iter().map(|r| r.request_id()).collect();
    assert_eq!(ids.len(), responses.len(), "request ids repeat: {ids:?}");
}

#[test]
fn body_over_max_body_bytes_is_413() {
    const LIMIT: usize = 1024;
    let server = Server::start(&[Plugin::fixture("fx").max_body_bytes(LIMIT as u64)]);
    server.put("/fx/kv/at-limit", &[b'a'; LIMIT]).expect(204);
    let stored = server.get("/fx/kv/at-limit");
    stored.expect(200);
    assert_eq!(stored.body.len(), LIMIT);

    let r = server.put("/fx/kv/over-limit", &[b'b'; LIMIT + 1]);
    r.expect(413);
    r.request_id();
    server.get("/fx/kv/over-limit").expect(404);
}

#[test]
fn chunked_body_over_max_body_bytes_is_413() {
    // Without a content-length the host only learns the size while reading.
    const LIMIT: usize = 1024;
    let server = Server::start(&[Plugin::fixture("fx").max_body_bytes(LIMIT as u64)]);
    let mut conn = server.connect();
    let chunk = vec![b'c'; 600];
    let mut raw =
        b"PUT /fx/kv/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..2 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    // The host may answer before it has read everything; a failed write is fine.
    let _ = conn.write_raw(&raw);
    let r = conn
        .read_response(false)
        .expect("a response to the oversize chunked body");
    r.expect(413);
    server.get("/fx/kv/chunked").expect(404);
}

#[test]
fn invalid_utf8_or_malformed_json_reaches_the_plugin_and_the_sdk_answers_400() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    // The fixture's /json is a GET that reads its body.
    let valid = server.send("GET", "/fx/json", &[], br#"{"valid": true}"#);
    valid.expect(200);
    assert_eq!(valid.json(), json!({ "valid": true }));
    for body in [
        &b"\xff\xfe\xfd"[..],
        b"{\"a\": \"\xc3\x28\"}",
        b"{\"a\": ",
        b"nope",
        b"{\"a\" 1}",
    ] {
        let r = server.send("GET", "/fx/json", &[], body);
        r.expect(400);
        assert!(r.json()["error"].is_string(), "{r:?}");
    }
}

#[test]
fn two_requests_share_one_keep_alive_connection() {
    let server = Server::start(&[Plugin::hello("hello")]);
    let mut conn = server.connect();
    let first = conn
        .send("GET", "/hello/", &[], b"")
        .expect("first request");
    first.expect(200);
    assert_ne!(first.header("connection"), Some("close"), "{first:?}");
    let created = conn
        .send(
            "POST",
            "/hello/notes",
            &[("content-type", "application/json")],
            br#"{"title":"k"}"#,
        )
        .expect("second request on the same connection");
    created.expect(201);
    let third = conn
        .send("GET", "/hello/notes", &[], b"")
        .expect("third request");
    third.expect(200);
    assert_eq!(third.json()["notes"][0]["title"], "k");
    // Also after a host-generated error.
    conn.send("GET", "/nowhere", &[], b"")
        .expect("404 on the same connection")
        .expect(404);
    conn.send("GET", "/hello/", &[], b"")
        .expect("after the 404")
        .expect(200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[Plugin::hello("hello")]);
    let mut conn = server.connect();
    conn.write_raw(
        b"GET /hello/ HTTP/1.1\r\nhost: x\r\n\r\nGET /hello/nope HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .expect("write two requests");
    conn.read_response(false).expect("first").expect(200);
    conn.read_response(false).expect("second").expect(404);
}

#[test]
fn the_longest_prefix_wins() {
    let server = Server::start(&[
        Plugin::hello("root").prefix("/"),
        Plugin::fixture("fx").prefix("/api/fx/"),
        Plugin::hello("api").prefix("/api/"),
    ]);
    assert_eq!(server.get("/").json(), json!({ "message": "hello" }));
    assert_eq!(server.get("/api/").json(), json!({ "message": "hello" }));
    let ok = server.get("/api/fx/ok");
    ok.expect(200);
    assert_eq!(ok.text(), "ok");
    // A note made under /api/ belongs to `api`, not to `root`.
    server
        .post_json("/api/notes", &json!({ "title": "api" }))
        .expect(201);
    assert_eq!(server.get("/notes").json(), json!({ "notes": [] }));
    assert_eq!(server.get("/api/notes").json()["notes"][0]["title"], "api");
}

#[test]
fn plugins_on_different_listeners_are_reached_only_on_their_own() {
    let mut hello = Plugin::hello("hello");
    hello.listen = "127.0.0.1:0".to_string();
    let mut fx = Plugin::fixture("fx");
    fx.listen = "127.0.0.2:0".to_string();
    let server = Server::start(&[hello, fx]);
    assert_eq!(
        server.plugin_listeners().len(),
        2,
        "{:?}",
        server.plugin_listeners()
    );
    let hello_addr = server.addr_of("127.0.0.1:0");
    let fx_addr = server.addr_of("127.0.0.2:0");
    assert_ne!(hello_addr, fx_addr);
    let mut h = Conn::open(hello_addr).expect("connect hello listener");
    h.send("GET", "/hello/", &[], b"")
        .expect("hello")
        .expect(200);
    h.send("GET", "/fx/ok", &[], b"")
        .expect("fx on hello's listener")
        .expect(404);
    let mut f = Conn::open(fx_addr).expect("connect fx listener");
    f.send("GET", "/fx/ok", &[], b"").expect("fx").expect(200);
    f.send("GET", "/hello/", &[], b"")
        .expect("hello on fx's listener")
        .expect(404);
}

#[test]
fn a_pool_that_cannot_be_reserved_falls_back_to_on_demand_allocation() {
    // 8 GiB of address space: far less than the pool's reservation, as on a
    // router with a 39-bit address space.
    let server = Setup::new(&[Plugin::hello("hello"), Plugin::fixture("fx")])
        .limit_address_space(8 * 1024 * 1024)
        .serve();
    assert!(
        server.logs().contains("using on-demand allocation"),
        "{}",
        server.logs()
    );
    server.get("/hello/").expect(200);
    // Caps still hold without the pool.
    server.get("/fx/bomb").expect(500);
    server.get("/fx/stack").expect(500);
    for _ in 0..20 {
        server.get("/hello/").expect(200);
    }
    let plugins = server
        .admin_get("/plugins", Some(&server.admin_token()))
        .json();
    assert_eq!(plugins["allocator"], json!("on_demand"), "{plugins}");
}

#[test]
fn an_internal_error_text_stays_in_the_log_and_the_client_gets_a_generic_one() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let long_key = "k".repeat(1025);
    let r = server.put(&format!("/fx/kv/{long_key}"), b"v");
    r.expect(413);
    assert_eq!(
        r.json(),
        json!({"error": "a value in the request is too large"})
    );
    let id = r.request_id();
    assert!(
        server.wait_for_log(
            &["key longer than 1024 bytes", &id],
            std::time::Duration::from_secs(5)
        ),
        "the detail is logged with the request id: {}",
        server.logs()
    );
    // A plugin's own internal error: generic outside, detailed inside.
    let r = server.post_json("/fx/txn", &json!({"set": {"a": "1"}, "fail_after": true}));
    r.expect(500);
    assert_eq!(r.json(), json!({"error": "internal error"}));
    let id = r.request_id();
    assert!(
        server.wait_for_log(&["asked to fail", &id], std::time::Duration::from_secs(5)),
        "{}",
        server.logs()
    );
}
