//! Misbehaving plugins (the fixture) are stopped by the host's limits and do
//! not take the host or other plugins down with them.

use std::thread;
use std::time::{Duration, Instant};

use crate::e2e::harness::{Plugin, Server};
use crate::e2e::http::{self, Response};

const TIMEOUT_MS: u64 = 1000;
/// Slack on top of a deadline before the test calls it missed: the epoch
/// ticker, a loaded two-core machine, and a second test running alongside.
const DEADLINE_SLACK_MS: u64 = 1500;

#[track_caller]
fn assert_plugin_failed(r: &Response) {
    r.expect(500);
    let body = r.json();
    assert_eq!(body["error"], "plugin failed", "{r:?}");
    assert_eq!(
        body["request_id"].as_str(),
        Some(r.request_id().as_str()),
        "{r:?}"
    );
}

#[track_caller]
fn assert_deadline_exceeded(r: &Response) {
    r.expect(504);
    let body = r.json();
    assert_eq!(body["error"], "deadline exceeded", "{r:?}");
    assert_eq!(
        body["request_id"].as_str(),
        Some(r.request_id().as_str()),
        "{r:?}"
    );
}

/// The fixture still answers after misbehaving: every request gets a fresh instance.
#[track_caller]
fn assert_fixture_recovers(server: &Server) {
    let r = server.get("/fx/ok");
    r.expect(200);
    assert_eq!(r.text(), "ok");
}

#[test]
fn a_request_deadline_interrupts_a_looping_plugin_while_others_are_served() {
    let server = Server::start(&[
        Plugin::fixture("fx").timeout_ms(TIMEOUT_MS),
        Plugin::hello("hello"),
    ]);
    let addr = server.addr();
    let looping = thread::spawn(move || {
        let started = Instant::now();
        let r = http::send(addr, "GET", "/fx/loop", &[], b"").expect("loop request");
        (r, started.elapsed())
    });

    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = server.get("/hello/");
    let hello_took = started.elapsed();
    r.expect(200);
    assert!(
        hello_took < Duration::from_millis(1000),
        "another plugin took {hello_took:?} while the fixture looped"
    );
    assert!(
        !looping.is_finished(),
        "the loop answered before the concurrent request"
    );

    let (r, took) = looping.join().expect("loop thread");
    eprintln!("the other plugin answered in {hello_took:?}; the loop got its 504 after {took:?}");
    assert_deadline_exceeded(&r);
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS - 100),
        "504 after {took:?}, before the {TIMEOUT_MS} ms deadline"
    );
    assert!(
        took <= Duration::from_millis(TIMEOUT_MS + DEADLINE_SLACK_MS),
        "504 only after {took:?} for a {TIMEOUT_MS} ms deadline"
    );
    assert_fixture_recovers(&server);
}

#[test]
fn several_looping_requests_all_hit_their_deadline() {
    let server = Server::start(&[Plugin::fixture("fx").timeout_ms(TIMEOUT_MS)]);
    let addr = server.addr();
    let started = Instant::now();
    let loops: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || http::send(addr, "GET", "/fx/loop", &[], b"").expect("loop"))
        })
        .collect();
    for l in loops {
        assert_deadline_exceeded(&l.join().expect("loop thread"));
    }
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(TIMEOUT_MS + DEADLINE_SLACK_MS),
        "four concurrent loops took {took:?} to be stopped"
    );
    assert_fixture_recovers(&server);
}

#[test]
fn a_plugin_calling_kv_in_a_tight_loop_is_stopped_by_its_deadline() {
    let server = Server::start(&[Plugin::fixture("fx").timeout_ms(TIMEOUT_MS)]);
    let started = Instant::now();
    let r = server.get("/fx/kvloop");
    let took = started.elapsed();
    assert_deadline_exceeded(&r);
    // A host call in flight when the deadline passes finishes first, hence
    // a little more slack than for a pure wasm loop.
    assert!(
        took <= Duration::from_millis(TIMEOUT_MS + DEADLINE_SLACK_MS + 500),
        "kvloop stopped only after {took:?}"
    );
    assert_fixture_recovers(&server);
}

#[test]
fn a_memory_bomb_is_trapped_at_its_cap_and_host_rss_stays_bounded() {
    const MEMORY_MB: u64 = 32;
    let server = Server::start(&[Plugin::fixture("fx")
        .memory_mb(MEMORY_MB)
        .timeout_ms(10_000)]);
    let baseline = server.rss_kib();
    for _ in 0..3 {
        assert_plugin_failed(&server.get("/fx/bomb"));
        let rss = server.rss_kib();
        eprintln!("RSS after a bomb: {rss} KiB (baseline {baseline} KiB)");
        assert!(
            rss < (MEMORY_MB + 200) * 1024,
            "host RSS {rss} KiB after a bomb (baseline {baseline} KiB, cap {MEMORY_MB} MiB)"
        );
    }
    // Concurrent bombs are each held to their own cap.
    let addr = server.addr();
    let bombs: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || http::send(addr, "GET", "/fx/bomb", &[], b"").expect("bomb"))
        })
        .collect();
    for b in bombs {
        assert_plugin_failed(&b.join().expect("bomb thread"));
    }
    let rss = server.rss_kib();
    assert!(
        rss < (3 * MEMORY_MB + 200) * 1024,
        "host RSS {rss} KiB after three concurrent bombs (baseline {baseline} KiB)"
    );
    assert_fixture_recovers(&server);
}

#[test]
fn a_stack_overflow_is_a_500_with_the_request_id_in_the_log() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let r = server.get("/fx/stack");
    assert_plugin_failed(&r);
    let id = r.request_id();
    assert!(
        server.wait_for_log(&[&id], Duration::from_secs(3)),
        "no log line carries the request id {id}; log:\n{}",
        server.logs()
    );
    assert_fixture_recovers(&server);
}

#[test]
fn a_response_at_the_cap_is_sent_whole() {
    const CAP: usize = 65_536;
    let server = Server::start(&[Plugin::fixture("fx").max_response_bytes(CAP as u64)]);
    for n in [0, 1, 1000, CAP] {
        let r = server.get(&format!("/fx/big?bytes={n}"));
        r.expect(200);
        assert_eq!(r.body.len(), n);
        assert!(
            r.body.iter().all(|b| *b == b'x'),
            "body of {n} bytes is not all 'x'"
        );
        assert_eq!(
            r.header("content-length"),
            Some(n.to_string().as_str()),
            "{r:?}"
        );
    }
}

#[test]
fn a_response_over_the_cap_is_a_500_not_an_oom() {
    const CAP: u64 = 65_536;
    let server = Server::start(&[Plugin::fixture("fx").max_response_bytes(CAP).memory_mb(64)]);
    let r = server.get(&format!("/fx/big?bytes={}", CAP + 1));
    r.expect(500);
    assert!(r.json()["error"].is_string(), "{r:?}");
    assert_eq!(
        r.json()["request_id"].as_str(),
        Some(r.request_id().as_str()),
        "{r:?}"
    );
    // Far over the cap, and over what fits the plugin's memory.
    for n in [10_000_000, 100_000_000] {
        let r = server.get(&format!("/fx/big?bytes={n}"));
        r.expect(500);
        assert!(
            r.body.len() < 1000,
            "an error, not the body: {} bytes",
            r.body.len()
        );
    }
    let rss = server.rss_kib();
    assert!(
        rss < (64 + 200) * 1024,
        "host RSS {rss} KiB after oversize responses"
    );
    assert_fixture_recovers(&server);
}

#[test]
fn plugin_stdout_and_stderr_reach_the_host_log_tagged_with_the_plugin() {
    let server = Server::start(&[Plugin::fixture("printer").prefix("/fx/")]);
    // 160 bytes: two lines of 79 'x' and a newline, on stdout and on stderr.
    let r = server.get("/fx/print?bytes=160");
    r.expect(200);
    assert_eq!(r.text(), "printed");
    let line = "x".repeat(79);
    let tagged = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("printer") && l.contains(line.as_str()))
            .count()
    };
    let found = crate::e2e::harness::eventually(Duration::from_secs(3), || {
        (tagged(&server.logs()) >= 2).then_some(())
    });
    assert!(
        found.is_some(),
        "expected the printed lines in the log, each tagged with `printer`; log:\n{}",
        server.logs()
    );
}

#[test]
fn a_huge_print_puts_only_a_bounded_amount_in_the_host_log() {
    const PRINTED: usize = 4_000_000;
    let server = Server::start(&[Plugin::fixture("fx").memory_mb(64).timeout_ms(10_000)]);
    // Let start-up logging settle before measuring.
    thread::sleep(Duration::from_millis(300));
    let before = server.log_len();
    let r = server.get(&format!("/fx/print?bytes={PRINTED}"));
    r.expect(200);
    thread::sleep(Duration::from_millis(1000));
    let grew = server.log_len() - before;
    eprintln!("the host log grew by {grew} bytes for {PRINTED} bytes printed twice");
    assert!(
        grew < 1_000_000,
        "a print of {PRINTED} bytes to stdout and stderr put {grew} bytes in the host log"
    );
    assert_fixture_recovers(&server);
}
