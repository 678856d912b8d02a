//! vpnpanel's OpenVPN PKI (plugins/vpnpanel/src/domain/pki.rs) against a real
//! OpenVPN: a server in a network namespace of the test's own, run with the
//! server certificate, CA and CRL from the panel's admin surface, and
//! clients in a second namespace run with the profiles users download. A
//! profile connects and carries traffic; revoke makes the old profile fail
//! at the server (CRL) and the new one work; a disabled user's certificate
//! is on hold until it is enabled again.
//!
//! Needs root, `ip`, `openvpn` and `ping`; without them the test prints a
//! `SKIP` line saying why and passes. CI installs them and runs as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, eventually, quote, wasm};
use crate::e2e::http::Response;
use crate::e2e::net::Netns;
use crate::e2e::wireguard::{skip, underlay};

/// How long a connection may take on a busy machine.
const CONNECT: Duration = Duration::from_secs(30);

/// An `openvpn` process, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, config: &Path, log: PathBuf) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "openvpn", "--config"])
            .arg(config)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openvpn");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the log.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.log().contains(needle).then_some(())).is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools(test: &str) -> bool {
    for (tool, arg, package) in [
        ("openvpn", "--version", "openvpn"),
        ("ping", "-V", "iputils-ping"),
    ] {
        if Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            skip(
                test,
                &format!("needs `{tool}`, which is not installed (apt-get install {package})"),
            );
            return false;
        }
    }
    true
}

fn panel() -> Server {
    let yaml = format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: vpnpanel\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/v1/\n      - listen: \"127.0.0.1:0\"\n        prefix: /download/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, wireguard: {{ devices: [\"vpnwg*\"] }}, net: {{ links: [\"vpnwg*\"], write: true }}, outbound: {{ hosts: [\"127.0.0.1:9\"] }} }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: 4194304 }}\n    settings: {{ public_url: \"http://panel.example\", server_address: 10.82.0.1, openvpn_port: 1194, openvpn_protocol: udp }}\n",
        wasm = quote(&wasm("vpnpanel").to_string_lossy()),
    );
    Setup::with_yaml(&yaml).serve()
}

#[track_caller]
fn call(server: &Server, method: &str, path: &str, key: &str, body: Option<&Value>) -> Response {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    server.send(
        method,
        path,
        &[("x-api-key", key), ("content-type", "application/json")],
        &bytes,
    )
}

/// The user's subscription token.
fn token(server: &Server, key: &str, name: &str) -> String {
    let r = call(
        server,
        "GET",
        &format!("/api/v1/users/{name}/sub"),
        key,
        None,
    );
    r.expect(200);
    let url = r.json()["sub_url"].as_str().expect("sub_url").to_string();
    url.rsplit_once("token=").expect("token").1.to_string()
}

/// The user's profile for the main server, written to `dir`.
fn profile(server: &Server, name: &str, token: &str, dir: &Path, file: &str) -> PathBuf {
    let r = server.send(
        "GET",
        &format!("/download/{name}/main_udp.ovpn?token={token}"),
        &[],
        b"",
    );
    r.expect(200);
    let path = dir.join(file);
    // The log goes to a file of the test's; nothing else in the profile changes.
    std::fs::write(&path, r.text() + "connect-retry-max 2\nconnect-retry 1\n")
        .expect("write the profile");
    path
}

/// The server's CRL file, fetched again from the admin surface.
fn refresh_crl(server: &Server, path: &Path) {
    let r = server.plugin_admin("vpnpanel", "GET", "/openvpn/crl", &Value::Null);
    r.expect(200);
    assert!(
        r.text().starts_with("-----BEGIN X509 CRL-----"),
        "{}",
        r.text()
    );
    std::fs::write(path, r.text()).expect("write the CRL");
}

#[track_caller]
fn expect_connects(ns: &Netns, config: &Path, log: PathBuf, server: &Server) -> Daemon {
    let client = Daemon::start(ns, config, log);
    assert!(
        client.wait_for("Initialization Sequence Completed", CONNECT),
        "the client did not connect:\n{}\n{}",
        client.log(),
        server.logs()
    );
    client
}

#[track_caller]
fn expect_refused(ns: &Netns, config: &Path, log: PathBuf, server_daemon: &Daemon, why: &str) {
    let before = server_daemon.log().len();
    let client = Daemon::start(ns, config, log);
    let refused = eventually(CONNECT, || {
        server_daemon.log()[before..].contains(why).then_some(())
    });
    assert!(
        refused.is_some(),
        "the server did not refuse ({why}):\n{}",
        server_daemon.log()
    );
    assert!(
        !client.log().contains("Initialization Sequence Completed"),
        "{}",
        client.log()
    );
}

#[test]
fn profiles_connect_to_a_real_openvpn_server_and_the_crl_stops_revoked_and_disabled_users() {
    let test =
        "profiles_connect_to_a_real_openvpn_server_and_the_crl_stops_revoked_and_disabled_users";
    if !tools(test) {
        return;
    }
    let Some(server_ns) = Netns::new(test) else {
        return;
    };
    let Some(client_ns) = Netns::new(test) else {
        return;
    };
    underlay(&server_ns, &client_ns, ("ovs0", "ovc0"), "10.82.0");
    let panel = panel();
    let r = panel.plugin_admin("vpnpanel", "POST", "/keys", &json!({ "label": "tests" }));
    r.expect(201);
    let key = r.json()["api_key"].as_str().expect("api_key").to_string();
    for name in ["alice", "bob"] {
        call(
            &panel,
            "POST",
            "/api/v1/users",
            &key,
            Some(&json!({ "username": name })),
        )
        .expect(201);
    }

    // The main server's material from the admin surface.
    let dir = tempfile::tempdir().expect("temp dir");
    let r = panel.plugin_admin(
        "vpnpanel",
        "POST",
        "/openvpn/server-cert",
        &json!({ "name": "main" }),
    );
    r.expect(201);
    let material = r.json();
    let ca = panel.plugin_admin("vpnpanel", "GET", "/openvpn/ca", &Value::Null);
    ca.expect(200);
    assert_eq!(material["ca"].as_str(), Some(ca.text().as_str()));
    for (file, field) in [
        ("ca.pem", "ca"),
        ("server.pem", "cert"),
        ("server.key", "key"),
    ] {
        std::fs::write(
            dir.path().join(file),
            material[field].as_str().expect("PEM"),
        )
        .expect("write");
    }
    let crl = dir.path().join("crl.pem");
    refresh_crl(&panel, &crl);
    let server_conf = dir.path().join("server.conf");
    std::fs::write(
        &server_conf,
        format!(
            "dev tun\nproto udp\nport 1194\ntopology subnet\nserver 10.83.0.0 255.255.255.0\nca {d}/ca.pem\ncert {d}/server.pem\nkey {d}/server.key\ndh none\ncrl-verify {d}/crl.pem\ndata-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nverb 3\n",
            d = dir.path().display()
        ),
    )
    .expect("write the server config");
    let server = Daemon::start(&server_ns, &server_conf, dir.path().join("server.log"));
    assert!(
        server.wait_for("Initialization Sequence Completed", CONNECT),
        "the OpenVPN server did not start:\n{}",
        server.log()
    );

    // alice's profile connects and carries traffic.
    let old_token = token(&panel, &key, "alice");
    let old = profile(&panel, "alice", &old_token, dir.path(), "alice-old.ovpn");
    let client = expect_connects(&client_ns, &old, dir.path().join("alice-1.log"), &panel);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client_ns.name,
            "ping",
            "-c",
            "3",
            "-W",
            "2",
            "10.83.0.1",
        ])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "no ping through the tunnel: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        server.log().contains("alice"),
        "the server saw alice's certificate:\n{}",
        server.log()
    );
    drop(client);

    // Revoke: the old link is dead at once; the new profile comes once the
    // background job made the new certificate.
    let r = call(&panel, "POST", "/api/v1/users/alice/revoke", &key, None);
    r.expect(200);
    panel
        .send(
            "GET",
            &format!("/download/alice/main_udp.ovpn?token={old_token}"),
            &[],
            b"",
        )
        .expect(403);
    let new_token = token(&panel, &key, "alice");
    let ready = eventually(CONNECT, || {
        let r = panel.send(
            "GET",
            &format!("/download/alice/main_udp.ovpn?token={new_token}"),
            &[],
            b"",
        );
        match r.status {
            200 => Some(()),
            503 => {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                None
            }
            other => panic!("download answered {other}: {}", r.text()),
        }
    });
    assert!(
        ready.is_some(),
        "the new certificate never came\n{}",
        panel.logs()
    );
    let new = profile(&panel, "alice", &new_token, dir.path(), "alice-new.ovpn");
    assert_ne!(
        std::fs::read_to_string(&old).unwrap(),
        std::fs::read_to_string(&new).unwrap()
    );

    // With the CRL refreshed, the old certificate is refused, the new one works.
    refresh_crl(&panel, &crl);
    expect_refused(
        &client_ns,
        &old,
        dir.path().join("alice-2.log"),
        &server,
        "certificate revoked",
    );
    drop(expect_connects(
        &client_ns,
        &new,
        dir.path().join("alice-3.log"),
        &panel,
    ));

    // A disabled user is on hold: refused until it is enabled again.
    let bob = profile(
        &panel,
        "bob",
        &token(&panel, &key, "bob"),
        dir.path(),
        "bob.ovpn",
    );
    call(&panel, "POST", "/api/v1/users/bob/toggle", &key, None).expect(200);
    refresh_crl(&panel, &crl);
    expect_refused(
        &client_ns,
        &bob,
        dir.path().join("bob-1.log"),
        &server,
        "certificate revoked",
    );
    call(&panel, "POST", "/api/v1/users/bob/toggle", &key, None).expect(200);
    refresh_crl(&panel, &crl);
    drop(expect_connects(
        &client_ns,
        &bob,
        dir.path().join("bob-2.log"),
        &panel,
    ));
}
