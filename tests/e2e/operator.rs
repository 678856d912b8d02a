//! What an operator reads: the start-up table, the compile lines, one log
//! line per request, the log format, and quiet engine internals.

use std::time::Duration;

use serde_json::Value;

use crate::e2e::harness::{Plugin, Setup, config_yaml, config_yaml_with, describe};

#[test]
fn start_up_prints_which_plugin_answers_where() {
    let server = Setup::new(&[
        Plugin::hello("hello"),
        Plugin::hello("other").prefix("/other/"),
    ])
    .serve();
    let logs = server.logs();
    let addr = server.addr();
    let admin = server.admin_addr();
    let table: Vec<&str> = logs
        .lines()
        .skip_while(|l| *l != "routes:")
        .take_while(|l| *l != "ready")
        .collect();
    let row = |url: &str, what: &str| {
        table
            .iter()
            .any(|l| l.starts_with("  ") && l.contains(url) && l.trim_end().ends_with(what))
    };
    assert!(row(&format!("http://{addr}/hello/"), "hello"), "{logs}");
    assert!(row(&format!("http://{addr}/other/"), "other"), "{logs}");
    assert!(
        table
            .iter()
            .any(|l| l.contains(&format!("http://{admin}/")) && l.contains("admin")),
        "{logs}"
    );
}

#[test]
fn each_request_gets_one_log_line_without_its_query() {
    let server = Setup::new(&[Plugin::hello("hello")]).serve();
    let r = server.get("/hello/notes?token=s3cret-in-the-query");
    r.expect(200);
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert!(
        server.wait_for_log(&[&format!("request_id={id}")], Duration::from_secs(5)),
        "{}",
        server.logs()
    );
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("request_id={id}")))
        .unwrap();
    for field in [
        "wasmgate::request",
        "plugin=hello",
        "method=GET",
        "path=/hello/notes",
        "status=200",
        "ms=",
        "bytes=",
    ] {
        assert!(line.contains(field), "no {field} in {line}");
    }
    assert!(!logs.contains("s3cret-in-the-query"), "{logs}");
    // A request no plugin answers is logged too, with no plugin.
    server.get("/nowhere").expect(404);
    assert!(
        server.wait_for_log(
            &["plugin=- method=GET path=/nowhere status=404"],
            Duration::from_secs(5)
        ),
        "{}",
        server.logs()
    );
}

/// With `log_requests: false`, and in a control run without it: two
/// requests in turn, the second printing a line of its own. A request's line
/// is written before its answer is sent, so once the second one's printed
/// line is in the log, the first one's request line would be too.
fn request_lines_with(sections: &str) -> String {
    let yaml = config_yaml_with(sections, &[Plugin::fixture("fx")]);
    let server = Setup::with_yaml(&yaml).serve();
    server.get("/fx/ok").expect(200);
    server.get("/fx/print?bytes=40").expect(200);
    assert!(
        server.wait_for_log(&[&"x".repeat(40)], Duration::from_secs(5)),
        "{}",
        server.logs()
    );
    server.logs()
}

#[test]
fn request_lines_can_be_turned_off() {
    let on = request_lines_with("");
    assert!(on.contains("path=/fx/ok status=200"), "{on}");
    let off = request_lines_with("http:\n  log_requests: false\n");
    assert!(!off.contains("wasmgate::request"), "{off}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Setup::new(&[Plugin::hello("hello")])
        .serve_arg("--log-format")
        .serve_arg("json")
        .serve();
    let r = server.get("/hello/");
    r.expect(200);
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(
        server.wait_for_log(&[&id], Duration::from_secs(5)),
        "{}",
        server.logs()
    );
    let logs = server.logs();
    let line = logs.lines().find(|l| l.contains(&id)).unwrap();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["target"], "wasmgate::request", "{line}");
    assert_eq!(v["plugin"], "hello");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/hello/");
    assert_eq!(v["request_id"], id.as_str());
    // Every stderr line is JSON (stdout has the listening lines).
    for l in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let setup = Setup::new(&[Plugin::hello("hello")]).env("NO_COLOR", None);
    let out = setup.check();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("compiling"), "{}", describe(&out));
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a pipe:\n{stderr}"
    );
}

#[test]
fn compiling_is_announced_with_its_time_and_the_cache_is_quiet() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let first = setup.check();
    assert!(first.status.success(), "{}", describe(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    let compiling = stderr
        .lines()
        .find(|l| l.contains("compiling"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        compiling.contains("plugin=hello")
            && compiling.contains("hello.wasm")
            && compiling.contains("MB"),
        "{compiling}"
    );
    let compiled = stderr
        .lines()
        .find(|l| l.contains("compiled in"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(compiled.contains(" s"), "{compiled}");
    let second = setup.check();
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("compiling"),
        "{}",
        describe(&second)
    );
}

#[test]
fn debug_logs_leave_the_compiler_internals_out() {
    let setup = Setup::new(&[Plugin::hello("hello")]).env("RUST_LOG", Some("debug"));
    let out = setup.check();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let internal = stderr
        .lines()
        .filter(|l| {
            ["cranelift", "regalloc", "wasmtime"]
                .iter()
                .any(|c| l.contains(c))
        })
        .count();
    assert_eq!(internal, 0, "{stderr}");
    assert!(stderr.contains("compiling"), "{stderr}");
    // Named explicitly, they come back.
    let setup =
        Setup::new(&[Plugin::hello("hello")]).env("RUST_LOG", Some("info,cranelift_codegen=debug"));
    let out = setup.check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("cranelift_codegen")),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_plugin_listener_on_the_admin_address_is_caught_by_check() {
    let mut p = Plugin::hello("hello");
    p.listen = "127.0.0.1:39090".into();
    let yaml = config_yaml(&[p]).replace("listen: \"127.0.0.1:0\"", "listen: \"127.0.0.1:39090\"");
    let out = Setup::with_yaml(&yaml).check();
    assert_eq!(out.status.code(), Some(2), "{yaml}\n{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.listen") && stderr.contains("39090"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_wildcard_and_a_specific_address_on_one_port_are_caught_by_check() {
    let mut one = Plugin::hello("one").prefix("/one/");
    one.listen = "0.0.0.0:39091".into();
    let mut two = Plugin::hello("two").prefix("/two/");
    two.listen = "127.0.0.1:39091".into();
    let out = Setup::new(&[one, two]).check();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0:39091")
            && stderr.contains("127.0.0.1:39091")
            && stderr.contains("same listen string"),
        "{}",
        describe(&out)
    );
    // The same listen string is one shared listener, not a clash.
    let mut one = Plugin::hello("one").prefix("/one/");
    one.listen = "127.0.0.1:39092".into();
    let mut two = Plugin::hello("two").prefix("/two/");
    two.listen = "127.0.0.1:39092".into();
    let out = Setup::new(&[one, two]).check();
    assert!(out.status.success(), "{}", describe(&out));
}
