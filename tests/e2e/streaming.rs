//! Streamed answers (`wasmgate:plugin/streaming`, docs/capabilities.md
//! "Streamed answers"): the status and headers reach the client at once, the
//! body in pieces while the call runs, in bounded memory; a call that fails
//! after its start leaves the client a cut connection, never a body that
//! looks whole; a client that goes away stops the plugin.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::e2e::harness::{Plugin, Server, Setup, parse_call_output};
use crate::e2e::http::Conn;

/// Piece `i` of the fixture's `/stream`: `size` bytes of one letter.
fn pieces(n: usize, size: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| std::iter::repeat_n(b'a' + (i % 26) as u8, size))
        .collect()
}

/// Everything the server sends for `GET path` until it closes the
/// connection.
fn raw_get(server: &Server, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("read until the server closes");
    out
}

/// `raw` is a 200 whose chunked body was cut: its head and some pieces
/// arrived, but not the last chunk that ends a whole body.
#[track_caller]
fn assert_cut(raw: &[u8], what: &str) {
    let text = String::from_utf8_lossy(raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text:.200}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{what}: {text:.300}"
    );
    assert!(
        text.contains("aaaaaaaaaa"),
        "{what}: the first piece arrived"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "{what}: the body must not end as if whole: {:?}",
        &text[text.len().saturating_sub(40)..]
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server's status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_streamed_answer_arrives_whole_and_chunked_fresh_or_warm_and_the_cli_joins_it() {
    let fresh = Plugin::fixture("fx").max_response_bytes(512 << 20);
    let warm = Plugin::fixture("warm")
        .max_response_bytes(512 << 20)
        .limits_extra("reuse: { max_requests: 100 }");
    let setup = Setup::new(&[fresh.clone(), warm]);
    // `wasmgate call` takes whole answers: the pieces and the tail joined,
    // under the status `start` sent.
    let r =
        parse_call_output(&setup.call("fx", "GET", "/fx/stream?pieces=3&size=2&then=tail", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(String::from_utf8_lossy(&r.body), "aabbcc<tail>");
    let server = setup.serve();

    for name in ["fx", "warm"] {
        // Twice on one connection: a warm instance streams again.
        let mut conn = Conn::open(server.addr()).expect("connect");
        for round in 0..2 {
            let r = conn
                .send(
                    "GET",
                    &format!("/{name}/stream?pieces=40&size=65536"),
                    &[],
                    b"",
                )
                .expect("a whole streamed answer");
            assert_eq!(r.status, 200, "{name} round {round}");
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
            assert_eq!(r.header("content-length"), None);
            assert_eq!(r.header("content-type"), Some("text/plain"));
            assert!(r.header("x-request-id").is_some());
            assert!(
                r.body == pieces(40, 65536),
                "{name} round {round}: the body differs"
            );
        }
        let r = conn
            .send(
                "GET",
                &format!("/{name}/stream?pieces=2&size=3&then=tail"),
                &[],
                b"",
            )
            .expect("with a tail");
        assert_eq!(r.status, 200, "the status `handle` returned is ignored");
        assert_eq!(String::from_utf8_lossy(&r.body), "aaabbb<tail>");
        // A whole answer on the same connection after streamed ones.
        let r = conn
            .send("GET", &format!("/{name}/ok"), &[], b"")
            .expect("ok");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }

    // 256 MiB streamed to a client that reads it all: neither the plugin
    // nor the host holds it, so the server's peak memory stays far below.
    let before = vm_hwm_kib(server.pid());
    let raw = raw_get(&server, "/fx/stream?pieces=4096&size=65536");
    let body_bytes = 4096 * 65536;
    assert!(raw.len() > body_bytes, "got {} bytes", raw.len());
    assert!(
        String::from_utf8_lossy(&raw[raw.len() - 5..]) == "0\r\n\r\n",
        "ends whole"
    );
    let after = vm_hwm_kib(server.pid());
    assert!(
        after < before + 64 * 1024,
        "the server's peak RSS grew from {before} KiB to {after} KiB for a 256 MiB answer"
    );
}

#[test]
fn a_call_that_fails_after_its_start_cuts_the_connection() {
    let server = Server::start(&[Plugin::fixture("fx")
        .max_response_bytes(100_000)
        .timeout_ms(500)]);
    // An `Err` after the start (the SDK traps), a panic, a deadline.
    for then in ["err", "trap", "loop"] {
        let raw = raw_get(&server, &format!("/fx/stream?pieces=2&size=10&then={then}"));
        assert_cut(&raw, then);
    }
    // Over max_response_bytes: the third piece of 40,000 bytes.
    let raw = raw_get(&server, "/fx/stream?pieces=4&size=40000");
    assert_cut(&raw, "over the cap");
    assert!(raw.len() < 100_000 + 1000, "nothing past the cap was sent");
    let logs = server.logs();
    assert!(
        logs.contains("a streamed answer failed after it started"),
        "{logs}"
    );
    assert!(logs.contains("trapped after the start"), "{logs}");
    assert!(logs.contains("deadline exceeded"), "{logs}");
    assert!(logs.contains("over max_response_bytes"), "{logs}");
    // The server is fine, and the same answer within the cap is whole.
    let r = server.get("/fx/stream?pieces=2&size=40000");
    assert_eq!(r.status, 200);
    assert!(r.body == pieces(2, 40000));
}

#[test]
fn streaming_misused_is_refused_with_typed_errors() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let r = server.get("/fx/stream/misuse");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let seen: Vec<String> = serde_json::from_slice(&r.body).expect("a JSON list");
    assert_eq!(
        seen,
        [
            "misuse: `write` before `start`",
            "invalid: header `content-length`: the host frames a streamed body",
            "invalid: header `transfer-encoding`: the host frames a streamed body",
            "invalid: status 1000",
            "ok",
            "misuse: the answer was already started",
        ]
    );
}

#[test]
fn a_client_that_goes_away_stops_the_plugin() {
    let server = Server::start(&[Plugin::fixture("fx")
        .max_response_bytes(1 << 30)
        .timeout_ms(60_000)]);
    // 2,000 pieces of 64 KiB; the client reads the head and a little, then
    // leaves.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    write!(
        s,
        "GET /fx/stream?pieces=2000&size=65536&mark=gone HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 100_000];
    s.read_exact(&mut buf).expect("the first pieces");
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    drop(s);
    let started = Instant::now();
    loop {
        let r = server.get("/fx/kv/gone");
        if r.status == 200 {
            assert_eq!(r.text(), "closed", "the plugin saw the client go");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the plugin never saw the client go: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
