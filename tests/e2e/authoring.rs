//! A plugin author's path: `wasmgate new`, its printed steps followed
//! literally outside the repository, and `wasmgate dev` swapping rebuilt
//! plugins under load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::harness::{BIN, Setup, describe, parse_call_output, run_with_timeout, wasm};
use crate::e2e::http::Conn;

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

/// Follows `steps` as a shell user would, from `cwd`, with `wasmgate` being
/// the binary under test; returns each command's output.
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
            .env("NO_COLOR", "1");
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

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    match conn.send("GET", "/app/", &[], b"") {
                        Ok(r) if r.status == 200 && r.json()["message"] == "hello" => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text())),
                        Err(e) => {
                            failed.lock().unwrap().push(e.to_string());
                            conn = Conn::open(addr).expect("reconnect");
                        }
                    }
                }
            })
        })
        .collect();

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
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "only {} requests",
        ok.load(Ordering::Relaxed)
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
