//! Plugins installed from signed packages on a running server: `wasmgate
//! plugin install|upgrade|rollback|remove|list` and the admin API under
//! them. Upgrades and rollbacks swap versions under load without failing a
//! request; every refusal says why and leaves the serving version serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::harness::{
    BIN, Load, Plugin, Server, Setup, config_yaml_with, describe, free_port, message_of,
    run_with_timeout, wasm,
};
use crate::e2e::http;

/// A vendor's directory: its keys and packages of the hello component.
struct Vendor {
    dir: tempfile::TempDir,
    /// The plugin's listener, which the packages' mounts name.
    port: u16,
}

impl Vendor {
    fn new() -> Vendor {
        Vendor {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        run_with_timeout(cmd, Duration::from_secs(60))
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new key; its public form.
    fn keygen(&self, file: &str) -> String {
        self.ok(&["package", "keygen", "--out", file])
            .trim()
            .to_string()
    }

    /// hello `version` greeting `greeting`, with `grants`, signed with `key`
    /// (unsigned without); the package's path.
    fn package(&self, version: &str, greeting: &str, grants: &str, key: Option<&str>) -> PathBuf {
        let manifest = format!(
            "name: hello\nversion: {version}\nvendor: Acme Widgets\nwit_version: 0.2.2\nmin_host_version: 0.1.0\ngrants: {grants}\nsettings: {{ greeting: {greeting}, max_notes: 1000 }}\nmounts: [{{ listen: \"127.0.0.1:{port}\", prefix: /hello/ }}]\n",
            port = self.port
        );
        let stem = format!("hello-{version}-{greeting}-{}", key.unwrap_or("unsigned"));
        let manifest_path = self.path(&format!("{stem}.yaml"));
        std::fs::write(&manifest_path, manifest).unwrap();
        let out = self.path(&format!("{stem}.wgpkg"));
        let hello = wasm("hello");
        self.ok(&[
            "package",
            "build",
            "--wasm",
            hello.to_str().unwrap(),
            "--manifest",
            manifest_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        if let Some(key) = key {
            self.ok(&["package", "sign", "--key", key, out.to_str().unwrap()]);
        }
        out
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

const GRANTS: &str = "{ kv: true, config: true, log: true }";

/// The `trust:` section that trusts `key` (named acme) for plugin hello.
fn trusting(key: &str) -> String {
    format!("trust:\n  keys:\n    - name: acme\n      key: \"{key}\"\n      plugins: [hello]\n")
}

/// A server that trusts `key` for plugin hello and serves plugin `other`
/// from its config file.
fn server_trusting(key: &str) -> Server {
    Setup::with_yaml(&config_yaml_with(&trusting(key), &[Plugin::hello("other")])).serve()
}

/// `wasmgate plugin ARGS...` against `server`.
fn plugin_cli(server: &Server, args: &[&str]) -> Output {
    let mut all = vec!["plugin"];
    all.extend_from_slice(args);
    server.admin_cli(&all)
}

#[track_caller]
fn plugin_ok(server: &Server, args: &[&str]) -> String {
    let out = plugin_cli(server, args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn plugin_refused(server: &Server, args: &[&str], needle: &str) {
    let out = plugin_cli(server, args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{args:?}: no {needle:?} in {}",
        describe(&out)
    );
}

fn greeting(addr: SocketAddr) -> String {
    let r = http::send(addr, "GET", "/hello/", &[], b"").expect("GET /hello/");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["message"].as_str().unwrap().to_string()
}

/// `addr` answers `want` (waiting for a listener that was just opened).
fn wait_for_greeting(addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http::send(addr, "GET", "/hello/", &[], b"")
            && r.status == 200
            && r.json()["message"] == want
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} does not answer {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn install_upgrade_rollback_and_remove_a_signed_plugin() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    let v1 = v.package("1.0.0", "v1", GRANTS, Some("acme.key"));
    let v2 = v.package("2.0.0", "v2", GRANTS, Some("acme.key"));
    let mut server = server_trusting(&key);

    let out = plugin_ok(&server, &["install", v1.to_str().unwrap(), "--yes"]);
    assert!(
        out.contains("plugin hello 1.0.0 by Acme Widgets")
            && out.contains("kv: true")
            && out.contains("added plugin hello")
            && out.contains(&format!("listening plugins 127.0.0.1:{}", v.port)),
        "{out}"
    );
    wait_for_greeting(v.addr(), "v1");
    let note = http::send(
        v.addr(),
        "POST",
        "/hello/notes",
        &[("content-type", "application/json")],
        br#"{"title":"kept"}"#,
    )
    .unwrap();
    assert_eq!(note.status, 201);
    // Installing again is refused: that is an upgrade.
    plugin_refused(
        &server,
        &["install", v2.to_str().unwrap(), "--yes"],
        "use `wasmgate plugin upgrade`",
    );

    let out = plugin_ok(&server, &["upgrade", v2.to_str().unwrap(), "--yes"]);
    assert!(
        out.contains("changed plugin hello: wasm, settings"),
        "{out}"
    );
    assert_eq!(greeting(v.addr()), "v2");
    // Data written by v1 is read by v2.
    let notes = http::send(v.addr(), "GET", "/hello/notes", &[], b"").unwrap();
    assert_eq!(notes.json()["notes"][0]["title"], "kept");

    let versions = server
        .admin_get("/plugins/hello/versions", Some(&server.admin_token()))
        .json();
    assert_eq!(versions["source"], "package");
    assert_eq!(versions["current"], "2.0.0");
    assert_eq!(versions["versions"][1]["signer"], "acme");
    let list = plugin_ok(&server, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("hello ") && l.contains("package") && l.contains("2.0.0")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("other ") && l.contains("config")),
        "{list}"
    );

    // A restart keeps the installed version.
    server.restart();
    wait_for_greeting(v.addr(), "v2");

    let out = plugin_ok(&server, &["rollback", "hello"]);
    assert!(
        out.contains("changed plugin hello: wasm, settings"),
        "{out}"
    );
    assert_eq!(greeting(v.addr()), "v1");
    plugin_refused(&server, &["rollback", "hello"], "no earlier version");

    // Removed with its data: the listener closes, and a new install starts empty.
    let out = plugin_ok(&server, &["remove", "hello"]);
    assert!(out.contains("removed plugin hello"), "{out}");
    assert!(!server.setup().data_dir.join("packages/hello").exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(v.addr()).is_ok() {
        assert!(Instant::now() < deadline, "{} still accepts", v.addr());
        std::thread::sleep(Duration::from_millis(20));
    }
    plugin_ok(&server, &["install", v1.to_str().unwrap(), "--yes"]);
    wait_for_greeting(v.addr(), "v1");
    let notes = http::send(v.addr(), "GET", "/hello/notes", &[], b"").unwrap();
    assert_eq!(notes.json(), json!({ "notes": [] }));
    // Removed keeping its data: a new install finds it.
    http::send(
        v.addr(),
        "POST",
        "/hello/notes",
        &[("content-type", "application/json")],
        br#"{"title":"again"}"#,
    )
    .unwrap();
    plugin_ok(&server, &["remove", "hello", "--keep-data"]);
    plugin_ok(&server, &["install", v1.to_str().unwrap(), "--yes"]);
    wait_for_greeting(v.addr(), "v1");
    let notes = http::send(v.addr(), "GET", "/hello/notes", &[], b"").unwrap();
    assert_eq!(notes.json()["notes"][0]["title"], "again");
}

#[test]
fn refused_packages_change_nothing_and_say_why() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    v.keygen("other.key");
    let v1 = v.package("1.0.0", "v1", GRANTS, Some("acme.key"));
    let server = server_trusting(&key);
    plugin_ok(&server, &["install", v1.to_str().unwrap(), "--yes"]);
    wait_for_greeting(v.addr(), "v1");

    let unsigned = v.package("2.0.0", "unsigned", GRANTS, None);
    plugin_refused(
        &server,
        &["upgrade", unsigned.to_str().unwrap(), "--yes"],
        "not signed",
    );
    let other = v.package("2.0.0", "other", GRANTS, Some("other.key"));
    plugin_refused(
        &server,
        &["upgrade", other.to_str().unwrap(), "--yes"],
        "acme",
    );
    let tampered = v.package("2.0.0", "tampered", GRANTS, Some("acme.key"));
    let mut bytes = std::fs::read(&tampered).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"\0asm")
        .expect("the component")
        + 100;
    bytes[at] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    plugin_refused(
        &server,
        &["upgrade", tampered.to_str().unwrap(), "--yes"],
        "changed after packaging",
    );
    let older = v.package("0.9.0", "older", GRANTS, Some("acme.key"));
    plugin_refused(
        &server,
        &["upgrade", older.to_str().unwrap(), "--yes"],
        "0.9.0",
    );

    // A grant the operator did not approve, through the admin API.
    let v2 = v.package("2.0.0", "v2", GRANTS, Some("acme.key"));
    let auth = format!("Bearer {}", server.admin_token());
    let r = http::send(
        server.admin_addr(),
        "PUT",
        "/plugins/hello",
        &[
            ("authorization", &auth),
            (
                "x-wasmgate-approve-grants",
                r#"{"config": true, "log": true}"#,
            ),
        ],
        &std::fs::read(&v2).unwrap(),
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("kv"), "{}", r.text());
    // No approval at all.
    let r = http::send(
        server.admin_addr(),
        "PUT",
        "/plugins/hello",
        &[("authorization", &auth)],
        &std::fs::read(&v2).unwrap(),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("x-wasmgate-approve-grants"),
        "{}",
        r.text()
    );

    // A plugin of the config file cannot be replaced by a package.
    let manifest = std::fs::read_to_string(v.path("hello-1.0.0-v1-acme.key.yaml"))
        .unwrap()
        .replace("name: hello", "name: other")
        .replace("/hello/", "/other2/");
    std::fs::write(v.path("other.yaml"), manifest).unwrap();
    let hello = wasm("hello");
    v.ok(&[
        "package",
        "build",
        "--wasm",
        hello.to_str().unwrap(),
        "--manifest",
        "other.yaml",
        "--out",
        "other.wgpkg",
    ]);
    let other_pkg = v.path("other.wgpkg");
    plugin_refused(
        &server,
        &["install", other_pkg.to_str().unwrap(), "--yes"],
        "config file",
    );

    assert_eq!(greeting(v.addr()), "v1");
    let versions = server
        .admin_get("/plugins/hello/versions", Some(&server.admin_token()))
        .json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    let files: Vec<_> = std::fs::read_dir(server.setup().data_dir.join("packages/hello"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn twenty_upgrades_and_a_rollback_under_load_fail_no_request_and_switch_cleanly() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    let packages: Vec<(PathBuf, String)> = (0..=20)
        .map(|i| {
            let greeting = format!("g{i}");
            (
                v.package(&format!("1.0.{i}"), &greeting, GRANTS, Some("acme.key")),
                greeting,
            )
        })
        .collect();
    let server = server_trusting(&key);
    plugin_ok(
        &server,
        &["install", packages[0].0.to_str().unwrap(), "--yes"],
    );
    wait_for_greeting(v.addr(), "g0");

    let addr = v.addr();
    // Every answer, labelled with the version (gN) it came from.
    let load = Load::start(addr, "/hello/", 32, |r| {
        let m = message_of(r)?;
        match m.strip_prefix('g').map(str::parse::<usize>) {
            Some(Ok(_)) => Ok(m),
            _ => Err(format!("answer {m:?}")),
        }
    });
    // (when the command returned, the version every later request must get)
    let mut switched: Vec<(Instant, usize)> = Vec::new();
    let mut to_first = Vec::new();
    for (i, (package, greeting)) in packages.iter().enumerate().skip(1) {
        let started = Instant::now();
        plugin_ok(&server, &["upgrade", package.to_str().unwrap(), "--yes"]);
        switched.push((Instant::now(), i));
        wait_for_greeting(addr, greeting);
        to_first.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    // And back one version, under the same load.
    plugin_ok(&server, &["rollback", "hello"]);
    switched.push((Instant::now(), 19));
    wait_for_greeting(addr, "g19");
    std::thread::sleep(Duration::from_millis(100));
    let seen = load.stop();
    seen.assert_none_failed();
    // A request sent after a switch returned gets the version it installed
    // or one a later switch installed, never an earlier one.
    for (sent, m) in &seen.answers {
        let n: usize = m[1..].parse().expect("a checked label");
        if let Some(k) = switched.iter().rposition(|(at, _)| at < sent) {
            let allowed: Vec<usize> = switched[k..].iter().map(|(_, v)| *v).collect();
            assert!(
                allowed.contains(&n),
                "a request sent after the switch to g{} got g{n}",
                switched[k].1
            );
        }
    }
    to_first.sort();
    eprintln!(
        "20 upgrades and a rollback under 32 connections: {} requests, 0 failed; upgrade command to the first answer of the new version: median {:.0} ms, max {:.0} ms",
        seen.answers.len(),
        to_first[to_first.len() / 2].as_secs_f64() * 1e3,
        to_first[to_first.len() - 1].as_secs_f64() * 1e3
    );
    // Only the last five versions stay on disk, less the one rolled back.
    let kept = std::fs::read_dir(server.setup().data_dir.join("packages/hello"))
        .unwrap()
        .count();
    assert_eq!(kept, 2 * 4);
}

/// A config file edited while the server was down so that an installed
/// plugin's route clashes with one of its own: the server still starts,
/// serving the file's plugins, and says why the installed one sits out.
#[test]
fn an_installed_plugin_that_clashes_with_the_config_file_sits_out_at_start() {
    let v = Vendor::new();
    let key = v.keygen("acme.key");
    let v1 = v.package("1.0.0", "v1", GRANTS, Some("acme.key"));
    let mut server = server_trusting(&key);
    plugin_ok(&server, &["install", v1.to_str().unwrap(), "--yes"]);
    wait_for_greeting(v.addr(), "v1");
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(10)).expect("exited");

    let mut mine = Plugin::hello("mine").settings("{ greeting: mine }");
    mine.listen = format!("127.0.0.1:{}", v.port);
    mine.prefix = "/hello/".into();
    std::fs::write(
        &server.setup().config,
        config_yaml_with(&trusting(&key), &[Plugin::hello("other"), mine]),
    )
    .unwrap();
    server.restart();
    assert!(
        server
            .logs()
            .contains("the installed plugins do not fit the config file"),
        "{}",
        server.logs()
    );
    assert_eq!(greeting(v.addr()), "mine");
}
