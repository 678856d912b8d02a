//! Graceful shutdown on SIGTERM/SIGINT: in-flight requests finish, the
//! process exits 0, committed data is there on the next start.

use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::e2e::harness::{Plugin, Server};
use crate::e2e::http;

#[test]
fn sigterm_exits_zero_and_committed_data_survives() {
    let mut server = Server::start(&[Plugin::hello("hello")]);
    let note = server.post_json("/hello/notes", &json!({ "title": "durable" }));
    note.expect(201);

    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exited within 10 s of SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}\n{}",
        server.logs()
    );

    server.restart();
    assert_eq!(
        server.get("/hello/notes").json(),
        json!({ "notes": [note.json()] })
    );
}

#[test]
fn sigint_exits_zero() {
    let mut server = Server::start(&[Plugin::hello("hello")]);
    server.get("/hello/").expect(200);
    server.signal("INT");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exited within 10 s of SIGINT");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGINT: {status:?}\n{}",
        server.logs()
    );
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    // The only slow endpoint is the loop, which ends in a 504 at its
    // deadline: the client must get that response, not a reset connection.
    const TIMEOUT_MS: u64 = 1500;
    let mut server = Server::start(&[Plugin::fixture("fx").timeout_ms(TIMEOUT_MS)]);
    let addr = server.addr();
    let in_flight = thread::spawn(move || http::send(addr, "GET", "/fx/loop", &[], b""));
    thread::sleep(Duration::from_millis(400));
    server.signal("TERM");

    let r = in_flight.join().expect("request thread");
    let r = r.unwrap_or_else(|e| {
        panic!(
            "in-flight request cut off by SIGTERM: {e}\n{}",
            server.logs()
        )
    });
    r.expect(504);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exited after the in-flight request");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigterm_does_not_wait_for_idle_keep_alive_connections() {
    let mut server = Server::start(&[Plugin::hello("hello")]);
    let mut conn = server.connect();
    conn.send("GET", "/hello/", &[], b"")
        .expect("request")
        .expect(200);
    // The connection stays open and idle while the server shuts down.
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "an idle keep-alive connection held the server open"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    drop(conn);
}

#[test]
fn a_write_acknowledged_before_sigkill_survives() {
    // Durable before the response leaves: no graceful shutdown to rely on.
    let mut server = Server::start(&[Plugin::hello("hello"), Plugin::fixture("fx")]);
    let note = server.post_json("/hello/notes", &json!({ "title": "acknowledged" }));
    note.expect(201);
    server.put("/fx/kv/k", b"v").expect(204);
    server.signal("KILL");
    server
        .wait_exit(Duration::from_secs(10))
        .expect("exited after SIGKILL");

    server.restart();
    assert_eq!(
        server.get("/hello/notes").json(),
        json!({ "notes": [note.json()] })
    );
    assert_eq!(server.get("/fx/kv/k").text(), "v");
}
