//! A plugin author's path: `wasmgate new`, its printed steps followed
//! literally outside the repository, and `wasmgate dev` swapping rebuilt
//! plugins under load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::harness::{
    BIN, Load, Setup, describe, message_of, parse_call_output, run_with_timeout, wasm,
};

/// The commands of the README's "Writing a plugin" block.
fn readme_steps() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let section = readme
        .split("## Writing a plugin")
        .nth(1)
        .expect("a Writing a plugin section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in Writing a plugin");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `PATH` as a plugin author has it after `make install` and the toolchain
/// setup: the binary under test's directory, then the componentize-py and
/// componentize-js that `make build` installed under target/tools, then the
/// inherited `PATH`.
fn author_path() -> std::ffi::OsString {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![
        Path::new(BIN)
            .parent()
            .expect("BIN's directory")
            .to_path_buf(),
        root.join("target/tools/py/bin"),
        root.join("target/tools/js/node_modules/.bin"),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("a PATH")
}

/// Follows `steps` as a shell user would, from `cwd`, with `wasmgate` being
/// the binary under test (also first on `PATH`, for build scripts that call
/// it); returns each command's output.
fn follow(mut cwd: PathBuf, steps: &[String]) -> Vec<(String, std::process::Output)> {
    let mut outputs = Vec::new();
    for step in steps {
        if let Some(dir) = step.strip_prefix("cd ") {
            cwd = cwd.join(dir);
            continue;
        }
        let line = match step.strip_prefix("wasmgate ") {
            Some(rest) => format!("'{BIN}' {rest}"),
            None => step.clone(),
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&line)
            .current_dir(&cwd)
            .env("NO_COLOR", "1")
            .env("PATH", author_path());
        let out = run_with_timeout(cmd, Duration::from_secs(900));
        assert!(out.status.success(), "`{step}`: {}", describe(&out));
        outputs.push((step.clone(), out));
    }
    outputs
}

#[test]
fn the_readme_steps_make_a_rust_plugin_outside_the_repository_that_answers() {
    let steps = readme_steps();
    assert!(
        steps[0].starts_with("wasmgate new demo --lang rust"),
        "{steps:?}"
    );
    // `wasmgate dev` serves until stopped: the dev tests below cover it.
    let until_dev: Vec<String> = steps
        .iter()
        .take_while(|s| !s.starts_with("wasmgate dev"))
        .cloned()
        .collect();
    assert!(
        until_dev.len() < steps.len(),
        "no `wasmgate dev` step: {steps:?}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let outputs = follow(dir.path().to_path_buf(), &until_dev);

    // What `new` printed as next steps is what the README says (less the
    // rustup line, printed only where the target is missing).
    let printed: Vec<String> = String::from_utf8_lossy(&outputs[0].1.stdout)
        .lines()
        .skip_while(|l| !l.ends_with("next:"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.starts_with("rustup "))
        .collect();
    for p in &printed {
        assert!(
            steps.contains(p),
            "`new` printed {p:?}, the README does not say it: {steps:?}"
        );
    }
    let answer = |step: &str| {
        let (_, out) = outputs
            .iter()
            .find(|(s, _)| s == step)
            .unwrap_or_else(|| panic!("no step {step:?} in {steps:?}"));
        parse_call_output(out)
    };
    let r = answer("wasmgate call demo GET /");
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "hello" }));
    let r = answer("wasmgate call demo POST /count/apples");
    r.expect(200);
    assert_eq!(r.json(), json!({ "name": "apples", "count": 1 }));

    // The project's own unit tests pass natively, and nothing in it points
    // back into this repository.
    let project = dir.path().join("demo");
    follow(project.clone(), &["cargo test --quiet".to_string()]);
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(".."), "{manifest}");
}

/// The steps `wasmgate new demo --lang LANG` printed after `next:`.
fn printed_steps(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.ends_with("next:"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect()
}

/// `wasmgate new demo --lang LANG` from an empty directory outside the
/// repository, then exactly the steps it printed (up to `wasmgate dev`),
/// then the project's own tests, which call the plugin through the host.
fn a_new_script_project_builds_and_answers(lang: &str, test: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let outputs = follow(
        dir.path().to_path_buf(),
        &[format!("wasmgate new demo --lang {lang}")],
    );
    let printed = printed_steps(&outputs[0].1);
    // The toolchain is on PATH, so no setup step is printed.
    assert_eq!(
        printed,
        [
            "cd demo",
            "sh build.sh",
            "wasmgate call demo GET /",
            "wasmgate dev"
        ],
        "{}",
        describe(&outputs[0].1)
    );
    let outputs = follow(dir.path().to_path_buf(), &printed[..3]);
    let r = parse_call_output(&outputs[1].1);
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "hello" }));

    let project = dir.path().join("demo");
    let outputs = follow(
        project.clone(),
        &[
            "wasmgate call demo POST /count/apples".to_string(),
            "wasmgate call demo POST /count/apples".to_string(),
        ],
    );
    let r = parse_call_output(&outputs[1].1);
    r.expect(200);
    assert_eq!(r.json(), json!({ "name": "apples", "count": 2 }));
    follow(project.clone(), &[test.to_string()]);
    // Only what the config grants is imported: the world build.sh wrote.
    let world = std::fs::read_to_string(project.join("build/wit/world.wit")).unwrap();
    for cap in ["kv", "config", "log"] {
        assert!(world.contains(&format!("import {cap};")), "{world}");
    }
    assert!(!world.contains("import keys;"), "{world}");
    for (path, text) in walk_texts(&project) {
        assert!(
            !text.contains(env!("CARGO_MANIFEST_DIR")),
            "{} points into the repository",
            path.display()
        );
    }
}

/// The text files a project was made with (not what its build wrote).
fn walk_texts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ["build", "data", "node_modules", ".venv", "__pycache__"].contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            out.extend(walk_texts(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path, text));
        }
    }
    out
}

#[test]
fn a_new_python_project_builds_and_answers_outside_the_repository() {
    a_new_script_project_builds_and_answers("python", "python3 -m unittest");
}

#[test]
fn a_new_js_project_builds_and_answers_outside_the_repository() {
    a_new_script_project_builds_and_answers("js", "node --test test.mjs");
}

/// Without the toolchain on PATH, `new` prints the setup step first.
#[test]
fn new_prints_the_toolchain_setup_when_it_is_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (lang, setup) in [
        (
            "python",
            "python3 -m venv .venv && .venv/bin/pip install componentize-py==",
        ),
        ("js", "npm install"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["new", &format!("demo-{lang}"), "--lang", lang])
            .current_dir(dir.path())
            .env("PATH", "/usr/bin:/bin");
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "{}", describe(&out));
        let printed = printed_steps(&out);
        assert!(printed[1].starts_with(setup), "{printed:?}");
        assert_eq!(printed[2], "sh build.sh", "{printed:?}");
    }
}

#[test]
fn new_refuses_a_bad_name_and_a_directory_in_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(BIN);
    cmd.args(["new", "Bad Name", "--lang", "rust"])
        .current_dir(dir.path());
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot name a plugin"),
        "{}",
        describe(&out)
    );
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/keep.txt"), "mine").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["new", "taken", "--lang", "rust"])
        .current_dir(dir.path());
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
}

/// A component with the same code as `wasm` and different bytes: a custom
/// section appended (what a rebuild with a changed comment could give).
fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![tag.len() as u8];
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"rebuilt");
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8); // fits one LEB128 byte
    out.extend_from_slice(&payload);
    out
}

/// A project whose "build" copies `src/plugin.wasm` to `out.wasm` through
/// `build.sh`, mounted as plugin `app` at `/app/`, with the grants of both
/// the hello example and the test fixture.
fn dev_project() -> Setup {
    // No request lines: thousands a second would fill the test's pipe.
    let yaml = "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nhttp:\n  log_requests: false\nplugins:\n  - name: app\n    wasm: out.wasm\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /app/\n    grants: { kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, net: { links: [fx-no-link] }, wireguard: { devices: [fx-no-device] } }\n    settings: { greeting: hello }\ndev:\n  build: sh build.sh\n  watch: [src, build.sh]\n";
    let setup = Setup::with_yaml(yaml);
    let dir = setup.dir();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::copy(wasm("hello"), dir.join("src/plugin.wasm")).unwrap();
    std::fs::write(dir.join("build.sh"), "cp src/plugin.wasm out.wasm\n").unwrap();
    setup
}

#[test]
fn dev_swaps_a_rebuilt_plugin_under_load_without_failing_a_request() {
    let server = dev_project().dev();
    let addr = server.addr();
    server.get("/app/").expect(200);

    let load = Load::start(addr, "/app/", 4, |r| match message_of(r) {
        Ok(m) if m == "hello" => Ok(m),
        Ok(m) => Err(format!("answer {m:?}")),
        Err(e) => Err(e),
    });

    // Two rebuilds while the load runs, each a different component.
    let original = std::fs::read(wasm("hello")).unwrap();
    for (round, tag) in ["one", "two"].iter().enumerate() {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(
            server.setup().dir().join("src/plugin.wasm"),
            with_custom_section(&original, tag),
        )
        .unwrap();
        let swaps = || server.logs().matches("plugin `app` swapped").count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while swaps() <= round {
            assert!(Instant::now() < deadline, "no swap:\n{}", server.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    seen.assert_none_failed();
    assert!(
        seen.answers.len() > 100,
        "only {} requests",
        seen.answers.len()
    );

    // A rebuild into different code: the new code answers.
    server.get("/app/ok").expect(404);
    std::fs::copy(
        wasm("fixture"),
        server.setup().dir().join("src/plugin.wasm"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.logs().matches("plugin `app` swapped").count() < 3 {
        assert!(Instant::now() < deadline, "no swap:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = server.get("/app/ok");
    r.expect(200);
    assert_eq!(r.text(), "ok");
}

#[test]
fn dev_keeps_the_last_good_version_when_a_build_fails_or_does_not_load() {
    let server = dev_project().dev();
    server.get("/app/").expect(200);
    let dir = server.setup().dir().to_path_buf();

    // A build that fails: its error is shown, the old version serves.
    std::fs::write(
        dir.join("build.sh"),
        "echo 'error[E0425]: cannot find value `greting` in this scope' >&2\nexit 1\n",
    )
    .unwrap();
    assert!(
        server.wait_for_log(
            &[
                "cannot find value `greting`",
                "build failed; the last good version keeps serving"
            ],
            Duration::from_secs(30)
        ),
        "{}",
        server.logs()
    );
    server.get("/app/").expect(200);

    // A build that succeeds with something that is not a component.
    std::fs::write(dir.join("build.sh"), "cp src/plugin.wasm out.wasm\n").unwrap();
    std::fs::write(dir.join("src/plugin.wasm"), b"not wasm at all").unwrap();
    assert!(
        server.wait_for_log(
            &[
                "plugin `app` did not load; the last good version keeps serving",
                "not a WebAssembly file"
            ],
            Duration::from_secs(30)
        ),
        "{}",
        server.logs()
    );
    let r = server.get("/app/");
    r.expect(200);
    assert_eq!(r.json(), json!({ "message": "hello" }));
}

#[test]
fn dev_without_a_dev_section_says_what_to_add() {
    let setup = Setup::new(&[crate::e2e::harness::Plugin::hello("hello")]);
    let out = setup.run(&["dev", "--config", &setup.config.to_string_lossy()]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no `dev:` section") && stderr.contains("build:"),
        "{}",
        describe(&out)
    );
}

/// A loopback listener that counts the connections it accepts, for proving
/// that a plugin's attempt to reach it went nowhere.
struct Witness {
    port: u16,
    accepted: Arc<AtomicU64>,
}

impl Witness {
    fn new() -> Witness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Witness { port, accepted }
    }
}

/// `wasmgate new demo --lang LANG`, with `extra` appended to its source file,
/// built; the project's directory.
fn new_project_with(dir: &Path, lang: &str, source: &str, extra: &str) -> PathBuf {
    follow(
        dir.to_path_buf(),
        &[format!("wasmgate new demo --lang {lang}")],
    );
    let project = dir.join("demo");
    let path = project.join(source);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    follow(project.clone(), &["sh build.sh".to_string()]);
    project
}

/// A call through `wasmgate call` in `project`, whatever its status.
fn call_in(project: &Path, path: &str) -> (crate::e2e::http::Response, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["call", "demo", "GET", path])
        .current_dir(project)
        .env("NO_COLOR", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    (
        parse_call_output(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Python's socket module is there (componentize-py imports wasi:sockets),
/// but the host gives plugins no network: a connection is refused inside the
/// plugin as a PermissionError it can catch, and nothing reaches the
/// listener.
#[test]
fn a_python_plugin_cannot_open_a_socket() {
    let witness = Witness::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let project = new_project_with(
        dir.path(),
        "python",
        "app.py",
        r#"

import socket


@router.get("/dial/:port")
def dial(req, params):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.connect(("127.0.0.1", int(params["port"])))
        return Response.json(200, {"connected": True})
    except OSError as e:
        return Response.json(200, {"connected": False, "error": f"{type(e).__name__}: {e}"})
"#,
    );
    let (r, log) = call_in(&project, &format!("/dial/{}", witness.port));
    r.expect(200);
    let body = r.json();
    assert_eq!(body["connected"], json!(false), "{body} {log}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("PermissionError")),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(witness.accepted.load(Ordering::SeqCst), 0);
}

/// componentize-js imports wasi:http for its `fetch`; the host links it as
/// stubs that trap, so a plugin calling `fetch` fails that request (500,
/// with the trap in the log), reaches nothing, and the next request is
/// served.
#[test]
fn a_javascript_plugin_calling_fetch_fails_that_request_only() {
    let witness = Witness::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let project = new_project_with(
        dir.path(),
        "js",
        "app.js",
        r#"
router.get('/fetch/:port', (req, params) => {
  fetch(`http://127.0.0.1:${params.port}/`);
  return Response.json(200, { fetched: true });
});
"#,
    );
    let (r, log) = call_in(&project, &format!("/fetch/{}", witness.port));
    assert_eq!(r.status, 500, "{log}");
    assert!(
        log.contains("wasi:http") && log.contains("is not available to plugins"),
        "{log}"
    );
    let (r, _) = call_in(&project, "/");
    r.expect(200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(witness.accepted.load(Ordering::SeqCst), 0);
}
