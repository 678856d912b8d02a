//! Slow and greedy clients, and plugins that wait: the host's timeouts,
//! connection caps, instance slots and body budget (README, "Limits and
//! timeouts"). Every test here was written against the defect it pins: a
//! slowloris held connections forever, 1,100 silent connections took every
//! file descriptor, a plugin waiting on another one held every instance,
//! and queued bodies grew memory without bound.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::harness::{Plugin, Server, Setup, config_yaml_with, wasm};
use crate::e2e::http::{self, Conn, Response, connect_from};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

fn serve(sections: &str, plugins: &[Plugin]) -> Server {
    Setup::with_yaml(&config_yaml_with(sections, plugins)).serve()
}

/// Whether the server has closed `s` (non-blocking): EOF, a reset, or an
/// answer it sent before closing.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn slowloris_connections_are_closed_at_the_header_timeout_while_others_are_served() {
    let server = serve(
        "http: { header_timeout_ms: 1000, idle_timeout_ms: 20000, max_connections_per_client: 1000 }\n",
        &[Plugin::fixture("fx")],
    );
    let addr = server.addr();
    let mut slow: Vec<(TcpStream, Option<Duration>)> = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from(addr, ip("127.0.0.2")).expect("connect");
        s.write_all(b"GET /fx/ok HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .expect("first bytes");
        s.set_nonblocking(true).unwrap();
        slow.push((s, None));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) && slow.iter().any(|(_, c)| c.is_none()) {
        for (s, closed) in slow.iter_mut().filter(|(_, c)| c.is_none()) {
            // One more header byte: never enough to finish the head.
            let gone = matches!(s.write(b"a"), Err(e) if e.kind() != ErrorKind::WouldBlock);
            if gone || closed_by_server(s) {
                *closed = Some(started.elapsed());
            }
        }
        let t = Instant::now();
        http::send(addr, "GET", "/fx/ok", &[], b"")
            .expect("an ordinary client")
            .expect(200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "an ordinary request took {:?}",
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(250));
    }
    let open = slow.iter().filter(|(_, c)| c.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} slow connections still open after 6 s with a 1 s header timeout"
    );
    let latest = slow.iter().filter_map(|(_, c)| *c).max().unwrap();
    assert!(
        latest < Duration::from_secs(3),
        "the last slow connection closed after {latest:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let server = serve(
        "http: { header_timeout_ms: 500, idle_timeout_ms: 2000 }\n",
        &[Plugin::fixture("fx")],
    );
    let mut conn = server.connect();
    conn.send("GET", "/fx/ok", &[], b"").unwrap().expect(200);
    // Longer than the header timeout: an idle connection is not a slow head.
    thread::sleep(Duration::from_millis(1200));
    conn.send("GET", "/fx/ok", &[], b"").unwrap().expect(200);
    let after = Instant::now();
    let mut s = conn.into_stream();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let waited = after.elapsed();
    assert_eq!(
        n, 0,
        "the server closed the connection without sending anything"
    );
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_millis(4000),
        "closed {waited:?} after the last response, with a 2 s idle timeout"
    );
}

#[test]
fn a_half_sent_body_is_answered_408_at_the_body_timeout_and_nothing_is_stored() {
    let server = serve(
        "http: { body_timeout_ms: 1000 }\n",
        &[Plugin::fixture("fx")],
    );
    let mut conn = server.connect();
    let started = Instant::now();
    conn.write_raw(b"PUT /fx/kv/half HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .unwrap();
    let r = conn.read_response(false).expect("an answer, not a hang");
    let waited = started.elapsed();
    r.expect(408);
    assert_eq!(r.json()["error"], "the request body did not arrive in time");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    server.get("/fx/kv/half").expect(404);
}

#[test]
fn with_few_file_descriptors_a_flood_of_silent_connections_leaves_health_and_other_clients_answered()
 {
    let setup = Setup::with_yaml(&config_yaml_with(
        "http: { header_timeout_ms: 3000, idle_timeout_ms: 3000 }\n",
        &[Plugin::hello("hello")],
    ))
    .limit_open_files(256);
    let server = setup.serve();
    let addr = server.addr();
    // 1,100 silent connections from one address, more than the server has
    // descriptors; the ones over its caps are answered 503 and closed.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match connect_from(addr, ip("127.0.0.3")) {
            Ok(s) => flood.push(s),
            Err(_) => refused += 1,
        }
    }
    let t = Instant::now();
    let health =
        http::send(server.admin_addr(), "GET", "/health", &[], b"").expect("health answers");
    health.expect(200);
    let r = http::send(addr, "GET", "/hello/", &[], b"").expect("another client is answered");
    r.expect(200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "answers took {:?}",
        t.elapsed()
    );
    // A connection over the per-client cap got a clear answer, not silence.
    let mut over = connect_from(addr, ip("127.0.0.3")).expect("connect");
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    let _ = over.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 503"), "over the cap: {text:?}");
    let logs = server.logs();
    assert!(
        !logs.contains("Too many open files"),
        "the server ran out of descriptors (refused by the kernel: {refused})"
    );
    drop(flood);
}

/// A port free now, for a listener whose address must be known before the
/// server starts (an `outbound` grant naming the host itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_plugin_waiting_on_another_plugin_cannot_starve_it_of_instances() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let probe = Plugin {
        name: "probe".into(),
        wasm: wasm("outbound_probe"),
        listen: listen.clone(),
        prefix: "/probe/".into(),
        grants: format!("{{ outbound: {{ hosts: [\"{listen}\"] }} }}"),
        limits: Default::default(),
        settings: String::new(),
    }
    .timeout_ms(20_000);
    let mut fx = Plugin::fixture("fx");
    fx.listen = listen.clone();
    let server = serve(
        "runtime: { max_instances: 2 }\n",
        &[probe, fx, Plugin::hello("hello")],
    );
    let addr: SocketAddr = listen.parse().unwrap();
    let hello = server.addr_of("127.0.0.1:0");
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let results = results.clone();
            let body = json!({"url": format!("http://{listen}/fx/sleep?ms=100")}).to_string();
            thread::spawn(move || {
                let r = http::send(
                    addr,
                    "POST",
                    "/probe/send",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                )
                .expect("probe answers");
                results.lock().unwrap().push(r);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    http::send(hello, "GET", "/hello/", &[], b"")
        .unwrap()
        .expect(200);
    let hello_took = t.elapsed();
    for w in workers {
        w.join().unwrap();
    }
    for r in results.lock().unwrap().iter() {
        r.expect(200);
        assert_eq!(
            r.json()["status"],
            200,
            "the call through to fx: {}",
            r.text()
        );
    }
    assert!(
        hello_took < Duration::from_secs(2),
        "an unrelated plugin waited {hello_took:?}"
    );
}

#[test]
fn a_full_queue_and_a_queue_timeout_are_answered_503_with_retry_after() {
    let fx = Plugin::fixture("fx")
        .limits_extra("max_concurrency: 1, max_queue: 1, queue_timeout_ms: 400");
    let server = serve("", &[fx, Plugin::hello("hello")]);
    let addr = server.addr();
    let spawn = |delay_ms: u64| {
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(delay_ms));
            let t = Instant::now();
            let r = http::send(addr, "GET", "/fx/sleep?ms=1500", &[], b"").unwrap();
            (r, t.elapsed())
        })
    };
    let running = spawn(0);
    let queued = spawn(200);
    let refused = spawn(400);
    let (refused, refused_took) = refused.join().unwrap();
    let (queued, queued_took) = queued.join().unwrap();
    let (running, _) = running.join().unwrap();
    running.expect(200);
    for (r, what) in [
        (&queued, "timed out in the queue"),
        (&refused, "over the queue"),
    ] {
        r.expect(503);
        assert_eq!(r.header("retry-after"), Some("1"), "{what}");
        assert!(
            r.json()["error"].as_str().unwrap().starts_with("busy: "),
            "{what}: {}",
            r.text()
        );
        r.request_id();
    }
    assert!(
        refused_took < Duration::from_millis(300),
        "a full queue answers at once: {refused_took:?}"
    );
    assert!(
        queued_took >= Duration::from_millis(350) && queued_took < Duration::from_millis(1400),
        "the queue timeout: {queued_took:?}"
    );
    // The other plugin was never in that queue.
    server.get("/hello/").expect(200);
}

#[test]
fn request_bodies_waiting_for_an_instance_are_bounded_in_memory() {
    let fx = Plugin::fixture("fx")
        .timeout_ms(10_000)
        .limits_extra("max_concurrency: 2, max_queue: 1000, queue_timeout_ms: 4000");
    let server = serve(
        "runtime: { max_buffered_body_bytes: 16777216 }\nhttp: { max_connections_per_client: 1000 }\n",
        &[fx],
    );
    let addr = server.addr();
    let before = server.rss_kib();
    let peak = Arc::new(Mutex::new(before));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), server.pid());
        thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kib) = rss_of(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kib);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let body = Arc::new(vec![b'x'; 1 << 20]);
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let body = body.clone();
            thread::spawn(move || {
                http::send(addr, "POST", "/fx/sleep?ms=200", &[], &body).map(|r| r.status)
            })
        })
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .map(|c| c.join().unwrap().unwrap_or(0))
        .collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let grown_mib = (*peak.lock().unwrap() - before) / 1024;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    assert!(
        grown_mib < 80,
        "200 one-MiB bodies grew the server by {grown_mib} MiB with a 16 MiB budget"
    );
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[test]
fn an_http11_request_without_host_is_400_and_one_with_host_is_served() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let mut conn = server.connect();
    conn.write_raw(b"GET /fx/ok HTTP/1.1\r\n\r\n").unwrap();
    let r = conn.read_response(false).unwrap();
    r.expect(400);
    assert_eq!(r.json()["error"], "an HTTP/1.1 request needs a Host header");
    let mut conn = server.connect();
    conn.write_raw(b"GET /fx/ok HTTP/1.0\r\n\r\n").unwrap();
    conn.read_response(false).unwrap().expect(200);
}

#[test]
fn a_transfer_encoding_other_than_chunked_is_refused_and_stores_nothing() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    for (te, extra, status) in [
        ("identity, chunked", "", 501),
        ("gzip, chunked", "", 501),
        ("chunked, identity", "", 400),
    ] {
        let mut conn = server.connect();
        let raw = format!(
            "PUT /fx/kv/te HTTP/1.1\r\nhost: x\r\ntransfer-encoding: {te}\r\n{extra}\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        conn.write_raw(raw.as_bytes()).unwrap();
        let r: Response = match conn.read_response(false) {
            Ok(r) => r,
            Err(e) => panic!("{te}: no answer: {e}"),
        };
        assert_eq!(r.status, status, "{te} {extra:?}: {}", r.text());
        server.get("/fx/kv/te").expect(404);
    }
    // Beside a Content-Length, chunked is read alone (RFC 9112) and the
    // connection is closed after the answer.
    let mut conn = server.connect();
    conn.write_raw(b"PUT /fx/kv/te HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    conn.read_response(false).unwrap().expect(204);
    assert_eq!(server.get("/fx/kv/te").expect(200).text(), "hello");
    let mut rest = Vec::new();
    let _ = conn.into_stream().read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after the answer: the connection is closed"
    );
    // Plain chunked still works.
    let mut conn: Conn = server.connect();
    conn.write_raw(b"PUT /fx/kv/te HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    conn.read_response(false).unwrap().expect(204);
}

#[test]
fn password_hashing_in_one_plugin_does_not_stall_requests_to_others() {
    let server = serve(
        "",
        &[
            Plugin::fixture("fx").timeout_ms(60_000),
            Plugin::hello("hello"),
        ],
    );
    let addr = server.addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Sixteen clients hashing passwords without pause (three PBKDF2 runs of
    // 600,000 iterations per request).
    let hashers: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut done = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    http::send(addr, "GET", "/fx/crypto/selftest", &[], b"")
                        .unwrap()
                        .expect(200);
                    done += 1;
                }
                done
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        http::send(addr, "GET", "/hello/", &[], b"")
            .unwrap()
            .expect(200);
        slowest = slowest.max(t.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let hashed: u32 = hashers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(hashed > 0);
    // Hashing on the executor made these take seconds (p50 2 s on 2 cores).
    assert!(
        slowest < Duration::from_millis(1000),
        "a hello request took {slowest:?} beside the hashing"
    );
}
