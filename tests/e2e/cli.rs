//! `wasmgate call` and `wasmgate check`: the plugin author's loop, no ports.

use serde_json::json;

use crate::e2e::harness::{Plugin, Setup, describe, parse_call_output};

#[test]
fn call_get_prints_status_headers_and_body() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call("hello", "GET", "/hello/", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = parse_call_output(&out);
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "hello" }));
    assert!(
        r.header("content-type").is_some_and(|c| c.contains("json")),
        "no content-type header line: {}",
        describe(&out)
    );
}

#[test]
fn call_post_creates_a_note_that_the_server_then_serves() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call(
        "hello",
        "POST",
        "/hello/notes",
        &["--body", r#"{"title":"x"}"#],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let created = parse_call_output(&out);
    created.expect(201);
    let note = created.json();
    assert_eq!(note["title"], "x");

    let out = setup.call("hello", "GET", "/hello/notes", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse_call_output(&out).json(), json!({ "notes": [note] }));

    let server = setup.serve();
    let list = server.get("/hello/notes");
    list.expect(200);
    assert_eq!(list.json(), json!({ "notes": [note] }));
}

#[test]
fn call_reads_the_body_from_a_file_with_at() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let file = setup.dir().join("note.json");
    std::fs::write(&file, r#"{"title":"from a file","body":"b"}"#).expect("write body file");
    let arg = format!("@{}", file.display());
    let out = setup.call("hello", "POST", "/hello/notes", &["--body", &arg]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = parse_call_output(&out);
    r.expect(201);
    assert_eq!(r.json()["title"], "from a file");
    assert_eq!(r.json()["body"], "b");
}

#[test]
fn call_passes_headers_and_reports_plugin_errors_as_responses() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call(
        "hello",
        "POST",
        "/hello/notes",
        &[
            "-H",
            "content-type: application/json",
            "--body",
            "{not json",
        ],
    );
    // The plugin answered, with a 400: printed, and exit code 3.
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    parse_call_output(&out).expect(400);
}

#[test]
fn call_exits_3_for_every_status_of_400_and_more() {
    let setup = Setup::new(&[Plugin::fixture("fx").timeout_ms(500)]);
    for (path, status) in [("/fx/nope-not-a-route", 404), ("/fx/loop", 504)] {
        let out = setup.call("fx", "GET", path, &[]);
        assert_eq!(out.status.code(), Some(3), "{path}: {}", describe(&out));
        parse_call_output(&out).expect(status);
    }
    let out = setup.call("fx", "GET", "/fx/ok", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn call_refuses_a_method_or_path_no_client_could_send() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    for (method, path, needle) in [
        ("GE T", "/hello/", "is not an HTTP method"),
        ("", "/hello/", "is not an HTTP method"),
        ("get", "/hello/", "did you mean GET?"),
        ("GET", "hello/notes", "does not start with `/`"),
        ("GET", "/hello/my notes", "percent-encode"),
    ] {
        let out = setup.call("hello", method, path, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{method:?} {path:?}: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{method:?} {path:?}: {}",
            describe(&out)
        );
        assert!(out.stdout.is_empty(), "{}", describe(&out));
    }
}

#[test]
fn call_says_that_the_path_includes_the_mount_prefix() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call("hello", "GET", "/notes", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/notes")
            && stderr.contains("/hello/")
            && stderr.contains("mount prefix included"),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn call_with_admin_takes_the_path_below_the_admin_surface() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call("hello", "GET", "/stats", &["--admin"]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = parse_call_output(&out);
    r.expect(200);
    assert_eq!(r.json()["notes"], 0, "{}", describe(&out));
}

#[test]
fn call_to_an_unknown_plugin_fails() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let out = setup.call("nobody", "GET", "/", &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody"),
        "{}",
        describe(&out)
    );
}

#[test]
fn call_runs_the_fixture_with_its_limits() {
    let setup = Setup::new(&[Plugin::fixture("fx").timeout_ms(500)]);
    let out = setup.call("fx", "GET", "/fx/ok", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = parse_call_output(&out);
    r.expect(200);
    assert_eq!(r.text(), "ok");
    // The deadline applies too: a 504 like `serve` gives, or a failed command.
    let out = setup.call("fx", "GET", "/fx/loop", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.starts_with("HTTP ") {
        assert!(stdout.starts_with("HTTP 504"), "{}", describe(&out));
    } else {
        assert!(!out.status.success(), "{}", describe(&out));
    }
}

#[test]
fn check_accepts_a_good_config_and_prints_every_plugin() {
    let setup = Setup::new(&[Plugin::hello("hello"), Plugin::fixture("fx")]);
    let out = setup.check();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello") && stdout.contains("fx"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_second_start_loads_the_compiled_component_from_the_cache_and_a_tampered_one_is_recompiled() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let first = setup.check();
    assert!(first.status.success(), "{}", describe(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("ok (compiled"),
        "{}",
        describe(&first)
    );
    let second = setup.check();
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("ok (cached"),
        "{}",
        describe(&second)
    );

    // Flip one byte of every cached artefact: the host must refuse to
    // deserialize what it cannot prove it wrote, and compile afresh.
    let cache = setup.dir().join("data").join("cache");
    let mut tampered = 0;
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read artefact");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).expect("write artefact");
        tampered += 1;
    }
    assert!(tampered > 0, "no artefact in {}", cache.display());
    let third = setup.check();
    assert!(third.status.success(), "{}", describe(&third));
    assert!(
        String::from_utf8_lossy(&third.stdout).contains("ok (compiled"),
        "{}",
        describe(&third)
    );
    assert!(
        String::from_utf8_lossy(&third.stderr).contains("ignoring an invalid cached component"),
        "{}",
        describe(&third)
    );
}
