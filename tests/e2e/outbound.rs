//! The `outbound` capability through the real server: the probe plugin
//! (tests/plugins/outbound-probe) sends HTTP requests to small std::net
//! servers on loopback started by each test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e::harness::{Limits, Plugin, Server, Setup, config_yaml, describe, wasm};

/// What the test server saw of one request.
#[derive(Debug)]
struct Seen {
    request_line: String,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A loopback server answering every connection with `answer` after `delay`,
/// reporting each request it read on the returned channel.
fn upstream(answer: Vec<u8>, delay: Duration) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let port = listener.local_addr().expect("upstream address").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (tx, answer) = (tx.clone(), answer.clone());
            thread::spawn(move || serve_one(stream, &answer, delay, &tx));
        }
    });
    (port, rx)
}

fn serve_one(stream: TcpStream, answer: &[u8], delay: Duration, tx: &mpsc::Sender<Seen>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let _ = tx.send(Seen {
        request_line: request_line.trim_end().to_string(),
        headers,
        body,
    });
    thread::sleep(delay);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(answer);
    let _ = stream.flush();
}

fn probe(grants: &str) -> Plugin {
    Plugin {
        name: "probe".into(),
        wasm: wasm("outbound_probe"),
        listen: "127.0.0.1:0".into(),
        prefix: "/probe/".into(),
        grants: grants.into(),
        limits: Limits::default(),
        settings: String::new(),
    }
}

fn start(outbound: &str) -> Server {
    Server::start(&[probe(&format!("{{ log: true, outbound: {outbound} }}")).timeout_ms(20_000)])
}

#[track_caller]
fn send(server: &Server, request: Value) -> Value {
    let r = server.post_json("/probe/send", &request);
    r.expect(200);
    r.json()
}

fn ok_answer(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_plugin_reaches_an_allowed_loopback_server_without_hop_by_hop_headers() {
    let (port, seen) = upstream(
        ok_answer(
            "{\"hello\":\"world\"}",
            "connection: close\r\nkeep-alive: timeout=5\r\nx-upstream: yes\r\n",
        ),
        Duration::ZERO,
    );
    let server = start(&format!("{{ hosts: [\"127.0.0.1:{port}\"] }}"));
    let answer = send(
        &server,
        json!({
            "method": "POST",
            "url": format!("http://127.0.0.1:{port}/path?q=1"),
            "headers": [["authorization", "Bearer secret-token"], ["connection", "keep-alive"], ["te", "trailers"],
                        ["host", "elsewhere.example"], ["x-custom", "1"]],
            "body": "ping",
        }),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "{\"hello\":\"world\"}");
    let headers: Vec<(String, String)> = serde_json::from_value(answer["headers"].clone()).unwrap();
    assert!(
        headers.iter().any(|(k, v)| k == "x-upstream" && v == "yes"),
        "{headers:?}"
    );
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k == "connection" || k == "keep-alive"),
        "{headers:?}"
    );

    let got = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream saw the request");
    assert_eq!(got.request_line, "POST /path?q=1 HTTP/1.1");
    assert_eq!(got.body, b"ping");
    let h = |name: &str| {
        got.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        h("host"),
        Some(format!("127.0.0.1:{port}").as_str()),
        "the URL's host, not the plugin's"
    );
    assert_eq!(h("authorization"), Some("Bearer secret-token"));
    assert_eq!(h("x-custom"), Some("1"));
    assert_eq!(h("te"), None);
    assert_ne!(h("connection"), Some("keep-alive"));

    // Neither the body nor the authorization header reaches the log.
    let logs = server.logs();
    assert!(
        !logs.contains("secret-token") && !logs.contains("ping"),
        "{logs}"
    );
}

#[test]
fn the_sdk_json_helper_posts_and_parses() {
    let (port, seen) = upstream(ok_answer("{\"n\":42}", ""), Duration::ZERO);
    let server = start(&format!("{{ hosts: [\"127.0.0.1:{port}\"] }}"));
    let r = server.post_json(
        "/probe/json",
        &json!({ "url": format!("http://127.0.0.1:{port}/j"), "body": { "a": 1 } }),
    );
    r.expect(200);
    assert_eq!(r.json(), json!({ "status": 200, "body": { "n": 42 } }));
    let got = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&got.body).unwrap(),
        json!({ "a": 1 })
    );
}

#[test]
fn a_host_or_port_outside_the_grant_is_denied_before_connecting() {
    let (port, seen) = upstream(ok_answer("{}", ""), Duration::ZERO);
    let (other, other_seen) = upstream(ok_answer("{}", ""), Duration::ZERO);
    let server = start(&format!("{{ hosts: [\"127.0.0.1:{port}\"] }}"));
    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        "ftp://127.0.0.1/".to_string(),
    ] {
        let answer = send(&server, json!({ "url": url }));
        assert_eq!(answer["error"]["kind"], "denied", "{url}: {answer}");
    }
    let answer = send(
        &server,
        json!({ "url": format!("http://user:pw@127.0.0.1:{port}/") }),
    );
    assert_eq!(answer["error"]["kind"], "invalid", "{answer}");
    thread::sleep(Duration::from_millis(200));
    assert!(
        seen.try_recv().is_err() && other_seen.try_recv().is_err(),
        "no request left the host"
    );
}

#[test]
fn a_slow_upstream_times_out_at_the_request_timeout() {
    let (port, _seen) = upstream(ok_answer("{}", ""), Duration::from_secs(10));
    let server = start(&format!(
        "{{ hosts: [\"127.0.0.1:{port}\"], timeout_ms: 5000 }}"
    ));
    let started = Instant::now();
    let answer = send(
        &server,
        json!({ "url": format!("http://127.0.0.1:{port}/"), "timeout_ms": 300 }),
    );
    assert_eq!(answer["error"]["kind"], "timeout", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The grant's timeout caps a larger request timeout.
    let server = start(&format!(
        "{{ hosts: [\"127.0.0.1:{port}\"], timeout_ms: 300 }}"
    ));
    let started = Instant::now();
    let answer = send(
        &server,
        json!({ "url": format!("http://127.0.0.1:{port}/"), "timeout_ms": 60000 }),
    );
    assert_eq!(answer["error"]["kind"], "timeout", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_oversize_response_is_refused_not_buffered() {
    let big = "x".repeat(2 << 20);
    let (port, _seen) = upstream(ok_answer(&big, ""), Duration::ZERO);
    let server = start(&format!(
        "{{ hosts: [\"127.0.0.1:{port}\"], max_response_bytes: 4096 }}"
    ));
    let answer = send(
        &server,
        json!({ "url": format!("http://127.0.0.1:{port}/") }),
    );
    assert_eq!(
        answer["error"],
        json!({ "kind": "too-large", "message": "4096" }),
        "{answer}"
    );

    // Without a content-length, the cap is enforced while streaming.
    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'y'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (port, _seen) = upstream(chunked, Duration::ZERO);
    let server = start(&format!(
        "{{ hosts: [\"127.0.0.1:{port}\"], max_response_bytes: 4096 }}"
    ));
    let answer = send(
        &server,
        json!({ "url": format!("http://127.0.0.1:{port}/") }),
    );
    assert_eq!(answer["error"]["kind"], "too-large", "{answer}");
}

#[test]
fn a_redirect_comes_back_as_it_is() {
    let (port, seen) = upstream(
        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n".to_vec(),
        Duration::ZERO,
    );
    let server = start(&format!("{{ hosts: [\"127.0.0.1:{port}\"] }}"));
    let answer = send(
        &server,
        json!({ "url": format!("http://127.0.0.1:{port}/") }),
    );
    assert_eq!(answer["status"], 302, "{answer}");
    seen.recv_timeout(Duration::from_secs(10)).unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(seen.try_recv().is_err(), "followed nothing");
}

#[test]
fn a_bad_outbound_grant_is_refused_at_config_load_naming_the_key() {
    for (grant, key, needle) in [
        (
            "{ hosts: [\"*.example.com\"] }",
            "plugins[0].grants.outbound.hosts[0]",
            "wildcards",
        ),
        (
            "{ hosts: [] }",
            "plugins[0].grants.outbound.hosts",
            "at least one",
        ),
        (
            "{ hosts: [\"a.example:0\"] }",
            "plugins[0].grants.outbound.hosts[0]",
            "port",
        ),
        (
            "{ hosts: [a.example], timeout_ms: 0 }",
            "plugins[0].grants.outbound.timeout_ms",
            "out of range",
        ),
        (
            "{ hosts: [a.example], follow: true }",
            "follow",
            "unknown field",
        ),
    ] {
        let setup = Setup::with_yaml(&config_yaml(&[probe(&format!(
            "{{ log: true, outbound: {grant} }}"
        ))]));
        let out = setup.check();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{grant}: {}", describe(&out));
        assert!(
            text.contains(key) && text.contains(needle),
            "{grant}: {}",
            describe(&out)
        );
    }
}

#[test]
fn a_plugin_importing_outbound_without_the_grant_does_not_load() {
    let setup = Setup::with_yaml(&config_yaml(&[probe("{ log: true }")]));
    let out = setup.check();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && text.contains("outbound"),
        "{}",
        describe(&out)
    );
}
