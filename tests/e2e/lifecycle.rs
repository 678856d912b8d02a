//! A running server's plugins change without a restart: a plugin that fails
//! to load is reported and the others serve; SIGHUP and `wasmgate reload`
//! re-read the config and apply what changed (plugins added, removed,
//! changed; listeners opened and closed), all or nothing, while requests
//! keep being answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::harness::{
    BIN, Load, Plugin, Server, Setup, config_yaml, describe, free_port, message_of,
    run_with_timeout,
};
use crate::e2e::http;

/// The hello example with `greeting` as its greeting.
fn hello_saying(name: &str, greeting: &str) -> Plugin {
    Plugin::hello(name).settings(&format!("{{ greeting: {greeting}, max_notes: 1000 }}"))
}

/// Rewrites the server's config.yaml to serve `plugins`.
fn write_config(server: &Server, plugins: &[Plugin]) {
    std::fs::write(&server.setup().config, config_yaml(plugins)).unwrap();
}

/// Waits until the server printed `needle` `count` times in all.
fn wait_for_count(server: &Server, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.logs().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{count}) in:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wasmgate reload` against `server`.
fn reload_cli(server: &Server) -> std::process::Output {
    server.admin_cli(&["reload"])
}

#[test]
fn a_plugin_that_fails_to_load_does_not_stop_the_others() {
    let mut broken = Plugin::hello("broken");
    broken.wasm = "/nonexistent/broken.wasm".into();
    let plugins = [Plugin::hello("hello"), broken];
    let server = Setup::new(&plugins).serve();
    assert!(
        server.logs().contains("broken (failed to load: 503)"),
        "{}",
        server.logs()
    );
    server.get("/hello/").expect(200);
    let r = server.get("/broken/notes");
    r.expect(503);
    assert_eq!(
        r.json(),
        json!({"error": "plugin unavailable", "plugin": "broken"})
    );

    let token = server.admin_token();
    let plugins = server.admin_get("/plugins", Some(&token)).json();
    let states: Vec<(String, String)> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("hello".to_string(), "running".to_string()),
            ("broken".to_string(), "failed".to_string())
        ]
    );
    let reason = plugins["plugins"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/broken.wasm") && reason.contains("no such file"),
        "{reason}"
    );
    let metrics = server.admin_get("/metrics", Some(&token)).text();
    assert!(
        metrics.contains("wasmgate_plugin_up{plugin=\"broken\"} 0")
            && metrics.contains("wasmgate_plugin_up{plugin=\"hello\"} 1"),
        "{metrics}"
    );

    // --strict (and check) keep failing fast (once the server is gone, as
    // the database is one process's).
    let mut server = server;
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(10)).expect("exited");
    let setup = server.setup();
    let strict = setup.serve_expecting_failure();
    assert_eq!(strict.status.code(), Some(2), "{}", describe(&strict));
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("/nonexistent/broken.wasm"),
        "{}",
        describe(&strict)
    );
    let check = setup.check();
    assert_eq!(check.status.code(), Some(2), "{}", describe(&check));
}

#[test]
fn sighup_applies_an_edited_config_and_data_carries_over() {
    let mut server = Server::start(&[hello_saying("hello", "hello")]);
    let note = server.post_json("/hello/notes", &json!({ "title": "kept" }));
    note.expect(201);

    // Changed settings, a plugin added on a listener of its own.
    let port = free_port();
    let mut extra = Plugin::hello("extra");
    extra.listen = format!("127.0.0.1:{port}");
    write_config(&server, &[hello_saying("hello", "bonjour"), extra.clone()]);
    server.signal("HUP");
    wait_for_count(&server, "reload: ", 3);
    let logs = server.logs();
    assert!(
        logs.contains("reload: added plugin extra")
            && logs.contains("reload: changed plugin hello: settings")
            && logs.contains(&format!("reload: listening plugins 127.0.0.1:{port}")),
        "{logs}"
    );
    assert_eq!(server.get("/hello/").json(), json!({"message": "bonjour"}));
    // The new version reads what the old one wrote.
    assert_eq!(
        server.get("/hello/notes").json(),
        json!({ "notes": [note.json()] })
    );
    let extra_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = http::send(extra_addr, "GET", "/extra/", &[], b"").unwrap();
    assert_eq!(r.status, 200);

    // Removed again: its listener closes.
    write_config(&server, &[hello_saying("hello", "bonjour")]);
    let before = server.logs().matches("reload: ").count();
    server.signal("HUP");
    wait_for_count(&server, "reload: ", before + 2);
    let logs = server.logs();
    assert!(
        logs.contains("reload: removed plugin extra")
            && logs.contains(&format!("reload: closed 127.0.0.1:{port}")),
        "{logs}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(extra_addr).is_ok() {
        assert!(Instant::now() < deadline, "127.0.0.1:{port} still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.get("/hello/").expect(200);
    assert_eq!(server.get("/extra/").status, 404);

    // Still the same process, and SIGTERM still ends it cleanly.
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", server.logs());
}

#[test]
fn a_refused_reload_changes_nothing_and_says_why() {
    let server = Server::start(&[hello_saying("hello", "hello")]);
    let token = server.admin_token();
    let before = server.admin_get("/plugins", Some(&token)).json();

    // A plugin that does not load, next to a change that would.
    let mut broken = Plugin::hello("broken");
    broken.wasm = "/nonexistent/broken.wasm".into();
    write_config(&server, &[hello_saying("hello", "changed"), broken]);
    let out = reload_cli(&server);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing changed")
            && stderr.contains("plugin `broken` does not load")
            && stderr.contains("/nonexistent/broken.wasm"),
        "{}",
        describe(&out)
    );
    // A config the host refuses.
    std::fs::write(&server.setup().config, "plugins: [ {name: x\n").unwrap();
    let out = reload_cli(&server);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    assert_eq!(server.get("/hello/").json(), json!({"message": "hello"}));
    assert_eq!(server.get("/broken/").status, 404);
    let after = server.admin_get("/plugins", Some(&token)).json();
    assert_eq!(
        before["plugins"][0]["sha256"],
        after["plugins"][0]["sha256"]
    );
    assert_eq!(after["plugins"].as_array().unwrap().len(), 1);

    // Fixed, it applies; `reload` prints what changed.
    write_config(&server, &[hello_saying("hello", "changed")]);
    let out = reload_cli(&server);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "changed plugin hello: settings"
    );
    assert_eq!(server.get("/hello/").json(), json!({"message": "changed"}));
    // Nothing to do is said as such.
    let out = reload_cli(&server);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nothing changed"
    );
}

#[test]
fn a_request_in_flight_finishes_on_the_version_it_started_on() {
    let fixture = || Plugin::fixture("fx").timeout_ms(5000);
    let server = Server::start(&[fixture()]);
    let addr = server.addr();
    let slow = std::thread::spawn(move || {
        http::send(addr, "GET", "/fx/sleep?ms=800", &[], b"").expect("the slow request")
    });
    std::thread::sleep(Duration::from_millis(200));
    // A new version (new settings) whose mount moved: new requests find it
    // at /moved/ only.
    write_config(&server, &[fixture().prefix("/moved/").settings("{ x: 1 }")]);
    let out = reload_cli(&server);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(server.get("/fx/ok").status, 404);
    assert_eq!(server.get("/moved/ok").text(), "ok");
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.text()), (200, "slept".to_string()));
}

#[test]
fn reloads_under_load_fail_no_request() {
    let server = Server::start(&[hello_saying("hello", "v1")]);
    let load = Load::start(server.addr(), "/hello/", 32, |r| match message_of(r) {
        Ok(m) if m == "v1" || m == "v2" => Ok(m),
        Ok(m) => Err(format!("answer {m:?}")),
        Err(e) => Err(e),
    });
    let rounds = 10;
    let started = Instant::now();
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(100));
        let greeting = if round % 2 == 0 { "v2" } else { "v1" };
        write_config(&server, &[hello_saying("hello", greeting)]);
        let out = reload_cli(&server);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let reload_time = started.elapsed();
    let last_switch = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let seen = load.stop();
    seen.assert_none_failed();
    // After the last switch, only the last version answers.
    let after: Vec<&str> = seen
        .answers
        .iter()
        .filter(|(sent, _)| *sent > last_switch)
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(!after.is_empty(), "no request after the last reload");
    assert!(
        after.iter().all(|m| *m == "v1"),
        "after the last reload: {:?}",
        after
            .iter()
            .filter(|m| **m != "v1")
            .take(5)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{rounds} reloads in {:.2} s under 32 connections: {} requests, none failed",
        reload_time.as_secs_f64(),
        seen.answers.len()
    );
}

#[test]
fn reload_without_a_running_server_says_so() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let port = free_port();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "reload",
        "--config",
        setup.config.to_str().unwrap(),
        "--admin",
        &format!("127.0.0.1:{port}"),
    ]);
    std::fs::create_dir_all(&setup.data_dir).unwrap();
    std::fs::write(setup.data_dir.join("admin.token"), "t\n").unwrap();
    cmd.env("NO_COLOR", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the server running?"),
        "{}",
        describe(&out)
    );
}

/// `POST path` on the admin surface with the server's token.
fn admin_post(server: &Server, path: &str) -> http::Response {
    let auth = format!("Bearer {}", server.admin_token());
    http::send(
        server.admin_addr(),
        "POST",
        path,
        &[("authorization", &auth)],
        b"",
    )
    .unwrap()
}

#[test]
fn a_disabled_plugin_answers_503_across_restarts_until_enabled() {
    let mut server = Server::start(&[Plugin::hello("hello"), Plugin::hello("other")]);
    let note = server.post_json("/hello/notes", &json!({ "title": "kept" }));
    note.expect(201);
    let r = admin_post(&server, "/plugins/hello/disable");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["summary"], json!(["disabled plugin hello"]));
    let r = server.get("/hello/notes");
    r.expect(503);
    assert_eq!(
        r.json(),
        json!({"error": "plugin disabled", "plugin": "hello"})
    );
    server.get("/other/").expect(200);
    let token = server.admin_token();
    let plugins = server.admin_get("/plugins", Some(&token)).json();
    assert_eq!(plugins["plugins"][0]["state"], "disabled");
    // Unknown names and a second disable.
    assert_eq!(admin_post(&server, "/plugins/nobody/disable").status, 404);
    let r = admin_post(&server, "/plugins/hello/disable");
    assert_eq!(r.json()["summary"], json!(["nothing changed"]));

    // Kept across a restart and a reload of the file.
    server.restart();
    server.get("/hello/").expect(503);
    assert!(server.logs().contains("hello (disabled: 503)"));
    let out = reload_cli(&server);
    assert!(out.status.success(), "{}", describe(&out));
    server.get("/hello/").expect(503);

    let r = admin_post(&server, "/plugins/hello/enable");
    assert_eq!(r.json()["summary"], json!(["enabled plugin hello"]));
    assert_eq!(
        server.get("/hello/notes").json(),
        json!({ "notes": [note.json()] })
    );
    server.restart();
    server.get("/hello/").expect(200);
}

#[test]
fn jobs_queued_by_one_version_run_under_the_next_and_wait_for_a_removed_plugin() {
    let fixture = |settings: &str| Plugin::fixture("fx").settings(settings);
    let server = Server::start(&[fixture("{ v: 1 }")]);
    server
        .post("/fx/job?key=across&delay_ms=1500", b"")
        .expect(202);
    write_config(&server, &[fixture("{ v: 2 }")]);
    let out = reload_cli(&server);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed plugin fx: settings"),
        "{}",
        describe(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/fx/kv/across").status != 200 {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.get("/fx/kv/across").text(), "done");

    // Removed, its job waits; added back, the job runs.
    server
        .post("/fx/job?key=later&delay_ms=300", b"")
        .expect(202);
    write_config(&server, &[Plugin::hello("hello")]);
    assert!(reload_cli(&server).status.success());
    std::thread::sleep(Duration::from_millis(1500));
    write_config(&server, &[Plugin::hello("hello"), fixture("{ v: 3 }")]);
    assert!(reload_cli(&server).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/fx/kv/later").status != 200 {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}
