//! The `wireguard` capability through the fixture plugin, on real WireGuard:
//! the host starts `wireguard-go` in a network namespace of the test's own,
//! a second namespace plays the peer with its own `wireguard-go` and `wg`,
//! and the two complete a handshake over a veth pair and ping through the
//! tunnel. `wg show` (wireguard-tools) checks what the host configured.
//!
//! These need root, `ip`, `wireguard-go`, `wg` and `ping`; without them a
//! test prints a `SKIP` line saying why and passes. CI installs them and runs
//! as root. The kernel backend's own test needs the kernel's WireGuard (its
//! generic netlink family `wireguard`); where the kernel has none it prints
//! a `SKIP` line saying so, and the test of the missing-module error runs
//! instead.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Plugin, Server, Setup, config_yaml, describe, eventually};
use crate::e2e::net::Netns;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The host's tunnel port and the peer's.
const HOST_PORT: u16 = 51820;
const PEER_PORT: u16 = 51821;

/// Written past the test harness's output capture, so that it is seen.
pub(crate) fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** SKIP {test}: {why} ***\n");
}

/// Whether the tools the test needs are installed; a `SKIP` line if not.
pub(crate) fn tools(test: &str) -> bool {
    for (tool, arg, package) in [
        ("wireguard-go", "--version", "wireguard-go"),
        ("wg", "--version", "wireguard-tools"),
        ("ping", "-V", "iputils-ping"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            skip(
                test,
                &format!("needs `{tool}`, which is not installed (apt-get install {package})"),
            );
            return false;
        }
    }
    true
}

/// A device name of this test run's own: UAPI sockets share one directory
/// across namespaces, and tests run in parallel.
pub(crate) fn device_name(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn socket(name: &str) -> String {
    format!("/var/run/wireguard/{name}.sock")
}

/// The fixture with `wireguard` granted as the flow mapping `grant`, and
/// every other grant as the harness gives it.
fn serve(grant: &str) -> Server {
    let fixture = Plugin::fixture("fx").timeout_ms(15_000);
    let grants = fixture.grants.replace(
        "wireguard: { devices: [fx-no-device] }",
        &format!("wireguard: {grant}"),
    );
    assert!(
        grants.contains(grant),
        "the harness's fixture grants changed: {grants}"
    );
    Server::start(&[fixture.grants(&grants)])
}

/// `ip netns exec <ns> <program> args...`, which must succeed; its stdout.
pub(crate) fn exec(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip netns exec {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wg show <dev> dump` in `ns`: the interface line and one line per peer,
/// split on tabs.
pub(crate) fn wg_dump(ns: &Netns, dev: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let text = exec(ns, "wg", &["show", dev, "dump"]);
    let mut lines = text
        .lines()
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>());
    let interface = lines
        .next()
        .unwrap_or_else(|| panic!("wg show {dev} dump printed nothing"));
    (interface, lines.collect())
}

/// A veth pair `links` between `host` and `peer`, `<net>.1/24` on the host's
/// end and `<net>.2/24` on the peer's, both ends and both loopbacks up.
pub(crate) fn underlay(host: &Netns, peer: &Netns, links: (&str, &str), net: &str) {
    let (host_link, peer_link) = links;
    host.ip(&[
        "link", "add", host_link, "type", "veth", "peer", "name", peer_link, "netns", &peer.name,
    ]);
    host.ip(&["addr", "add", &format!("{net}.1/24"), "dev", host_link]);
    peer.ip(&["addr", "add", &format!("{net}.2/24"), "dev", peer_link]);
    for (ns, link) in [
        (host, host_link),
        (peer, peer_link),
        (host, "lo"),
        (peer, "lo"),
    ] {
        ns.ip(&["link", "set", link, "up"]);
    }
}

pub(crate) fn link_exists(ns: &Netns, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", &ns.name, "link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[track_caller]
fn expect_error(r: &crate::e2e::http::Response, status: u16, message: &str) {
    r.expect(status);
    let body = r.json();
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "expected an error containing {message:?}: {body}"
    );
}

/// The peer's side: its own `wireguard-go`, configured with `wg`, stopped on drop.
pub(crate) struct PeerSide {
    name: String,
    child: Child,
    pub(crate) keyfile: tempfile::NamedTempFile,
}

impl PeerSide {
    pub(crate) fn start(ns: &Netns, name: &str, private_key: &str) -> PeerSide {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the peer's wireguard-go");
        let mut keyfile = tempfile::NamedTempFile::new().expect("temp key file");
        writeln!(keyfile, "{private_key}").expect("write the key file");
        let side = PeerSide {
            name: name.to_string(),
            child,
            keyfile,
        };
        eventually(Duration::from_secs(10), || {
            Path::new(&socket(name)).exists().then_some(())
        })
        .unwrap_or_else(|| panic!("the peer's wireguard-go did not open {}", socket(name)));
        side
    }
}

impl Drop for PeerSide {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(socket(&self.name));
    }
}

/// The peer's end of a tunnel to the host's device: [`PeerSide`] with the
/// peer's key on port [`PEER_PORT`], the host's key and preshared key at
/// `endpoint`, 10.99.0.2/24 on its side and 10.99.0.1 through the tunnel.
pub(crate) struct PeerTunnel {
    _side: PeerSide,
    _psk: tempfile::NamedTempFile,
}

impl PeerTunnel {
    fn start(
        ns: &Netns,
        private_key: &str,
        host_public: &str,
        preshared_key: &str,
        endpoint: &str,
    ) -> PeerTunnel {
        let dev = device_name("wgp");
        let side = PeerSide::start(ns, &dev, private_key);
        let mut psk = tempfile::NamedTempFile::new().unwrap();
        writeln!(psk, "{preshared_key}").unwrap();
        exec(
            ns,
            "wg",
            &[
                "set",
                &dev,
                "private-key",
                &side.keyfile.path().to_string_lossy(),
                "listen-port",
                &PEER_PORT.to_string(),
                "peer",
                host_public,
                "preshared-key",
                &psk.path().to_string_lossy(),
                "endpoint",
                endpoint,
                "allowed-ips",
                "10.99.0.1/32",
            ],
        );
        ns.ip(&["addr", "add", "10.99.0.2/24", "dev", &dev]);
        ns.ip(&["link", "set", &dev, "up"]);
        PeerTunnel {
            _side: side,
            _psk: psk,
        }
    }
}

/// Whether `ip` answers pings from `ns` within 20 s.
fn pings(ns: &Netns, ip: &str) -> Option<()> {
    eventually(Duration::from_secs(20), || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ping", "-c", "2", "-W", "1", ip])
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
}

/// The pid of the `wireguard-go -f <name>` process, if one runs.
fn wireguard_go_pid(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is = args.len() >= 3
            && args[0].ends_with(b"wireguard-go")
            && args[1] == b"-f"
            && args[2] == name.as_bytes();
        is.then_some(pid)
    })
}

#[test]
fn a_device_the_host_creates_completes_a_real_handshake_and_carries_traffic() {
    let test = "a_device_the_host_creates_completes_a_real_handshake_and_carries_traffic";
    if !tools(test) {
        return;
    }
    let Some(host_ns) = Netns::new(test) else {
        return;
    };
    let Some(peer_ns) = Netns::new(test) else {
        return;
    };
    // The underlay: a veth pair between the two namespaces.
    underlay(&host_ns, &peer_ns, ("wgv0", "wgv1"), "10.77.0");

    let dev = device_name("wga");
    let server = serve(&format!(
        "{{ devices: [\"wga*\"], backend: userspace, netns: {} }}",
        host_ns.name
    ));

    // Keys from the host.
    let r = server.get("/fx/wg/keypair");
    r.expect(200);
    let host_keys = r.json();
    let r = server.get("/fx/wg/keypair");
    r.expect(200);
    let peer_keys = r.json();
    let host_public = host_keys["public_key"].as_str().unwrap().to_string();
    let peer_public = peer_keys["public_key"].as_str().unwrap().to_string();
    assert_ne!(host_public, peer_public);
    let r = server.post_json(
        "/fx/wg/public-key",
        &json!({ "private_key": host_keys["private_key"] }),
    );
    r.expect(200);
    assert_eq!(r.json()["public_key"], host_public.as_str());
    // `wg pubkey` agrees with the host's X25519.
    let mut pubkey = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    writeln!(
        pubkey.stdin.take().unwrap(),
        "{}",
        host_keys["private_key"].as_str().unwrap()
    )
    .unwrap();
    let out = pubkey.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host_public);

    // The host's device.
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    assert!(
        link_exists(&host_ns, &dev),
        "no link {dev} in the namespace"
    );
    assert!(!link_exists(&peer_ns, &dev));
    assert!(wireguard_go_pid(&dev).is_some(), "no wireguard-go -f {dev}");
    expect_error(
        &server.post(&format!("/fx/wg/devices/{dev}"), b""),
        409,
        "already exists",
    );
    let r = server.get("/fx/wg/devices");
    r.expect(200);
    assert_eq!(r.json()["devices"], json!([dev]));
    let r = server.get(&format!("/fx/wg/devices/{dev}"));
    r.expect(200);
    let fresh = r.json();
    // Unconfigured and down; wireguard-go has bound a random port already.
    assert_eq!(fresh["name"], dev.as_str(), "{fresh}");
    assert_eq!(fresh["public_key"], Value::Null, "{fresh}");
    assert!(fresh["listen_port"].is_u64(), "{fresh}");
    assert_eq!(fresh["up"], false, "{fresh}");
    assert_eq!(fresh["peers"], json!([]), "{fresh}");

    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/configure"),
            &json!({ "private_key": host_keys["private_key"], "listen_port": HOST_PORT }),
        )
        .expect(204);
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers"),
            &json!({
                "public_key": peer_public,
                "preshared_key": host_keys["preshared_key"],
                "endpoint": format!("10.77.0.2:{PEER_PORT}"),
                "allowed_ips": ["10.99.0.2/32"],
                "persistent_keepalive": 5,
            }),
        )
        .expect(204);
    let (interface, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(
        interface[0],
        host_keys["private_key"].as_str().unwrap(),
        "private key"
    );
    assert_eq!(interface[1], host_public, "public key");
    assert_eq!(interface[2], HOST_PORT.to_string(), "listen port");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], peer_public);
    assert_eq!(peers[0][1], host_keys["preshared_key"].as_str().unwrap());
    assert_eq!(peers[0][2], format!("10.77.0.2:{PEER_PORT}"));
    assert_eq!(peers[0][3], "10.99.0.2/32");
    assert_eq!(peers[0][7], "5");

    // Bring it up through the capability; the tunnel address is the test's.
    server
        .post(&format!("/fx/wg/devices/{dev}/up?up=true"), b"")
        .expect(204);
    assert!(host_ns.is_up(&dev));
    host_ns.ip(&["addr", "add", "10.99.0.1/24", "dev", &dev]);

    // The peer's side, configured with wg; traffic through the tunnel, both ways.
    let peer = PeerTunnel::start(
        &peer_ns,
        peer_keys["private_key"].as_str().unwrap(),
        &host_public,
        host_keys["preshared_key"].as_str().unwrap(),
        &format!("10.77.0.1:{HOST_PORT}"),
    );
    let pinged = pings(&peer_ns, "10.99.0.1");
    assert!(
        pinged.is_some(),
        "no ping through the tunnel\n{}",
        server.logs()
    );
    exec(&host_ns, "ping", &["-c", "2", "-W", "2", "10.99.0.2"]);

    let r = server.get(&format!("/fx/wg/devices/{dev}"));
    r.expect(200);
    let device = r.json();
    assert_eq!(device["public_key"], host_public.as_str(), "{device}");
    assert_eq!(device["listen_port"], HOST_PORT, "{device}");
    assert_eq!(device["up"], true, "{device}");
    let p = &device["peers"][0];
    assert_eq!(
        device["peers"].as_array().map(Vec::len),
        Some(1),
        "{device}"
    );
    assert_eq!(p["public_key"], peer_public.as_str(), "{device}");
    assert_eq!(p["has_preshared_key"], true, "{device}");
    assert_eq!(p["endpoint"], format!("10.77.0.2:{PEER_PORT}"), "{device}");
    assert_eq!(p["allowed_ips"], json!(["10.99.0.2/32"]), "{device}");
    assert_eq!(p["persistent_keepalive"], 5, "{device}");
    let handshake = p["latest_handshake"].as_u64().expect("a handshake");
    let now = crate::e2e::harness::now_secs();
    assert!(
        handshake <= now + 1 && handshake + 60 >= now,
        "handshake {handshake}, now {now}"
    );
    assert!(p["rx_bytes"].as_u64().unwrap() > 0, "{device}");
    assert!(p["tx_bytes"].as_u64().unwrap() > 0, "{device}");
    // Never a secret.
    let text = r.text();
    for secret in [&host_keys["private_key"], &host_keys["preshared_key"]] {
        assert!(!text.contains(secret.as_str().unwrap()), "{text}");
    }

    // Updating the peer keeps one peer and replaces its allowed IPs; no
    // preshared key removes it.
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers"),
            &json!({ "public_key": peer_public, "allowed_ips": ["10.99.0.2/32", "10.98.0.0/16"] }),
        )
        .expect(204);
    let (_, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][1], "(none)");
    assert_eq!(peers[0][3], "10.99.0.2/32,10.98.0.0/16");
    assert_eq!(peers[0][7], "off");

    // Down and up again.
    server
        .post(&format!("/fx/wg/devices/{dev}/up?up=false"), b"")
        .expect(204);
    assert!(!host_ns.is_up(&dev));
    let r = server.get(&format!("/fx/wg/devices/{dev}"));
    assert_eq!(r.json()["up"], false, "{}", r.text());
    server
        .post(&format!("/fx/wg/devices/{dev}/up?up=true"), b"")
        .expect(204);
    assert!(host_ns.is_up(&dev));

    // Removing the peer really removes it.
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers/remove"),
            &json!({ "public_key": peer_public }),
        )
        .expect(204);
    let (_, peers) = wg_dump(&host_ns, &dev);
    assert!(peers.is_empty(), "{peers:?}");
    let r = server.get(&format!("/fx/wg/devices/{dev}"));
    assert_eq!(r.json()["peers"], json!([]), "{}", r.text());
    expect_error(
        &server.post_json(
            &format!("/fx/wg/devices/{dev}/peers/remove"),
            &json!({ "public_key": peer_public }),
        ),
        404,
        "has no peer",
    );

    // Deleting the device stops its wireguard-go and removes the interface.
    server.delete(&format!("/fx/wg/devices/{dev}")).expect(204);
    assert!(!link_exists(&host_ns, &dev), "{dev} is still there");
    assert!(
        !Path::new(&socket(&dev)).exists(),
        "the socket is still there"
    );
    assert_eq!(wireguard_go_pid(&dev), None, "wireguard-go still runs");
    let r = server.get("/fx/wg/devices");
    assert_eq!(r.json()["devices"], json!([]), "{}", r.text());
    expect_error(
        &server.get(&format!("/fx/wg/devices/{dev}")),
        404,
        "no WireGuard device",
    );
    expect_error(
        &server.delete(&format!("/fx/wg/devices/{dev}")),
        404,
        "no WireGuard device",
    );
    drop(peer);
}

#[test]
fn devices_outside_the_grant_are_denied_and_bad_arguments_change_nothing() {
    let test = "devices_outside_the_grant_are_denied_and_bad_arguments_change_nothing";
    if !tools(test) {
        return;
    }
    let Some(ns) = Netns::new(test) else {
        return;
    };
    let server = serve(&format!(
        "{{ devices: [\"wgc*\"], netns: \"{}\" }}",
        ns.path()
    ));
    let outside = device_name("wgz");
    for r in [
        server.post(&format!("/fx/wg/devices/{outside}"), b""),
        server.get(&format!("/fx/wg/devices/{outside}")),
        server.delete(&format!("/fx/wg/devices/{outside}")),
        server.post(&format!("/fx/wg/devices/{outside}/up?up=true"), b""),
        server.post_json(
            &format!("/fx/wg/devices/{outside}/configure"),
            &json!({ "listen_port": 1 }),
        ),
        server.get("/fx/wg/devices/lo"),
    ] {
        expect_error(&r, 403, "is outside the grant");
    }
    assert!(!link_exists(&ns, &outside));
    assert_eq!(wireguard_go_pid(&outside), None);
    // The namespace's own links are no WireGuard devices, even when granted.
    let server_lo = serve(&format!("{{ devices: [\"*\"], netns: {} }}", ns.name));
    expect_error(
        &server_lo.get("/fx/wg/devices/lo"),
        404,
        "no WireGuard device `lo`",
    );
    let r = server_lo.get("/fx/wg/devices");
    r.expect(200);
    assert_eq!(r.json()["devices"], json!([]));
    drop(server_lo);

    let dev = device_name("wgc");
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    let (before, _) = wg_dump(&ns, &dev);
    let peer = |body: Value| server.post_json(&format!("/fx/wg/devices/{dev}/peers"), &body);
    let key = server.get("/fx/wg/keypair").json()["public_key"].clone();
    expect_error(&peer(json!({ "public_key": "AAAA" })), 400, "public-key");
    expect_error(
        &peer(json!({ "public_key": key, "endpoint": "example.com:51820" })),
        400,
        "not ip:port",
    );
    expect_error(
        &peer(json!({ "public_key": key, "allowed_ips": ["10.0.0.1/33"] })),
        400,
        "over 32",
    );
    expect_error(
        &peer(json!({ "public_key": key, "allowed_ips": ["10.0.0.1/32\nremove=true"] })),
        400,
        "not a CIDR",
    );
    expect_error(
        &server.post_json(
            &format!("/fx/wg/devices/{dev}/configure"),
            &json!({ "private_key": "not a key\nlisten_port=1" }),
        ),
        400,
        "private-key",
    );
    let (after, peers) = wg_dump(&ns, &dev);
    assert_eq!(before, after);
    assert!(peers.is_empty(), "{peers:?}");
    server.delete(&format!("/fx/wg/devices/{dev}")).expect(204);
    assert!(!link_exists(&ns, &dev));
}

#[test]
fn the_host_stops_its_wireguard_go_children_when_it_shuts_down() {
    let test = "the_host_stops_its_wireguard_go_children_when_it_shuts_down";
    if !tools(test) {
        return;
    }
    let Some(ns) = Netns::new(test) else {
        return;
    };
    let mut server = serve(&format!("{{ devices: [\"wgs*\"], netns: {} }}", ns.name));
    let dev = device_name("wgs");
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    let pid = wireguard_go_pid(&dev).expect("wireguard-go runs");
    assert!(link_exists(&ns, &dev));
    assert!(
        server.stop().is_some_and(|s| s.success()),
        "{}",
        server.logs()
    );
    assert_eq!(
        wireguard_go_pid(&dev),
        None,
        "wireguard-go {pid} outlived the host"
    );
    assert!(!link_exists(&ns, &dev));
    assert!(!Path::new(&socket(&dev)).exists());
}

#[test]
fn the_host_dying_takes_its_wireguard_go_children_with_it() {
    let test = "the_host_dying_takes_its_wireguard_go_children_with_it";
    if !tools(test) {
        return;
    }
    let Some(ns) = Netns::new(test) else {
        return;
    };
    let server = serve(&format!("{{ devices: [\"wgk*\"], netns: {} }}", ns.name));
    let dev = device_name("wgk");
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    assert!(wireguard_go_pid(&dev).is_some());
    crate::e2e::harness::send_signal(server.pid(), "KILL");
    let gone = eventually(Duration::from_secs(10), || {
        wireguard_go_pid(&dev).is_none().then_some(())
    });
    assert!(gone.is_some(), "wireguard-go outlived a killed host");
    let _ = std::fs::remove_file(socket(&dev));
}

#[test]
fn a_wireguard_grant_without_patterns_or_with_bad_values_is_a_config_error() {
    let base = Plugin::fixture("fx");
    for (grant, key, message) in [
        (
            "{ devices: [] }",
            "plugins[0].grants.wireguard.devices",
            "at least one pattern",
        ),
        (
            "{ devices: [wg0, \"wg/1\"] }",
            "plugins[0].grants.wireguard.devices[1]",
            "`wg/1`",
        ),
        (
            "{ devices: [wg0], backend: both }",
            "unknown variant `both`",
            "kernel",
        ),
        (
            "{ devices: [wg0], userspace_binary: \"bin/wireguard-go\" }",
            "plugins[0].grants.wireguard.userspace_binary",
            "absolute path",
        ),
        (
            "{ devices: [wg0], netns: \"../x\" }",
            "plugins[0].grants.wireguard.netns",
            "`../x`",
        ),
        (
            "{ devices: [wg0], colour: blue }",
            "unknown field `colour`",
            "devices",
        ),
        (
            "{ backend: userspace }",
            "missing field `devices`",
            "wireguard",
        ),
    ] {
        let grants = base.grants.replace(
            "wireguard: { devices: [fx-no-device] }",
            &format!("wireguard: {grant}"),
        );
        let setup = Setup::with_yaml(&config_yaml(&[base.clone().grants(&grants)]));
        let out = setup.check();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{grant}\n{}", describe(&out));
        assert!(
            all.contains(key) && all.contains(message),
            "{grant}: wanted {key:?} and {message:?}\n{}",
            describe(&out)
        );
    }
}

/// Whether this kernel has WireGuard: its generic netlink family
/// `wireguard` resolves, as the host's own probe asks (which loads the
/// module where it can be loaded, so `/sys/module` alone would not do).
fn kernel_has_wireguard() -> bool {
    wasmgate::caps::wireguard::kernel::Kernel::open(None)
        .expect("a generic netlink socket")
        .is_some()
}

#[test]
fn auto_uses_the_kernel_where_it_has_wireguard_else_wireguard_go_and_both_answer_alike() {
    let test =
        "auto_uses_the_kernel_where_it_has_wireguard_else_wireguard_go_and_both_answer_alike";
    if !tools(test) {
        return;
    }
    let Some(ns) = Netns::new(test) else {
        return;
    };
    let dev = device_name("wgk");
    let server = serve(&format!(
        "{{ devices: [\"wgk*\"], backend: auto, netns: {} }}",
        ns.name
    ));
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    // Which backend auto took: the link's kind says.
    let kind = exec(&ns, "ip", &["-d", "-j", "link", "show", "dev", &dev]);
    if kernel_has_wireguard() {
        assert!(kind.contains("\"info_kind\":\"wireguard\""), "{kind}");
        assert!(wireguard_go_pid(&dev).is_none());
    } else {
        assert!(kind.contains("\"info_kind\":\"tun\""), "{kind}");
        assert!(
            wireguard_go_pid(&dev).is_some(),
            "auto started no wireguard-go on a kernel without WireGuard"
        );
    }

    // The same calls and answers either way, checked with `wg show`.
    let keys = server.get("/fx/wg/keypair").json();
    let peer = server.get("/fx/wg/keypair").json();
    let peer_public = peer["public_key"].as_str().unwrap();
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/configure"),
            &json!({ "private_key": keys["private_key"], "listen_port": HOST_PORT }),
        )
        .expect(204);
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers"),
            &json!({
                "public_key": peer_public,
                "preshared_key": keys["preshared_key"],
                "endpoint": "192.0.2.7:51000",
                "allowed_ips": ["10.99.0.2/32", "fd00:99::2/128"],
                "persistent_keepalive": 15,
            }),
        )
        .expect(204);
    let (interface, peers) = wg_dump(&ns, &dev);
    assert_eq!(interface[1], keys["public_key"].as_str().unwrap());
    assert_eq!(interface[2], HOST_PORT.to_string());
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], peer_public);
    assert_eq!(peers[0][2], "192.0.2.7:51000");
    assert_eq!(peers[0][3], "10.99.0.2/32,fd00:99::2/128");
    assert_eq!(peers[0][7], "15");
    let device = server.get(&format!("/fx/wg/devices/{dev}")).json();
    assert_eq!(device["public_key"], keys["public_key"], "{device}");
    assert_eq!(device["listen_port"], HOST_PORT, "{device}");
    let p = &device["peers"][0];
    assert_eq!(p["has_preshared_key"], true, "{p}");
    assert_eq!(p["endpoint"], "192.0.2.7:51000", "{p}");
    assert_eq!(
        p["allowed_ips"],
        json!(["10.99.0.2/32", "fd00:99::2/128"]),
        "{p}"
    );
    assert_eq!(p["latest_handshake"], Value::Null, "{p}");
    assert!(
        !device
            .to_string()
            .contains(keys["private_key"].as_str().unwrap())
    );

    let remove = |key: &str| {
        server.post_json(
            &format!("/fx/wg/devices/{dev}/peers/remove"),
            &json!({ "public_key": key }),
        )
    };
    remove(peer_public).expect(204);
    assert_eq!(wg_dump(&ns, &dev).1.len(), 0);
    expect_error(&remove(peer_public), 404, "has no peer");
    server.delete(&format!("/fx/wg/devices/{dev}")).expect(204);
    assert!(!link_exists(&ns, &dev));
}

#[test]
fn the_kernel_backend_on_a_kernel_without_wireguard_says_so() {
    let test = "the_kernel_backend_on_a_kernel_without_wireguard_says_so";
    if kernel_has_wireguard() {
        // The auto test above drives the kernel's WireGuard on this machine.
        skip(
            test,
            "this kernel has WireGuard, so its absence cannot be shown",
        );
        return;
    }
    let Some(ns) = Netns::new(test) else {
        return;
    };
    let server = serve(&format!(
        "{{ devices: [\"wgk*\"], backend: kernel, netns: {} }}",
        ns.name
    ));
    let dev = device_name("wgk");
    expect_error(
        &server.post(&format!("/fx/wg/devices/{dev}"), b""),
        500,
        "this kernel has no WireGuard",
    );
    assert!(!link_exists(&ns, &dev));
}

#[test]
fn the_kernel_backend_completes_a_handshake_and_carries_peer_sets_larger_than_one_message() {
    let test =
        "the_kernel_backend_completes_a_handshake_and_carries_peer_sets_larger_than_one_message";
    if !kernel_has_wireguard() {
        skip(
            test,
            "this kernel has no generic netlink family `wireguard` (no WireGuard module), so the kernel backend cannot run here",
        );
        return;
    }
    if !tools(test) {
        return;
    }
    let Some(host_ns) = Netns::new(test) else {
        return;
    };
    let Some(peer_ns) = Netns::new(test) else {
        return;
    };
    underlay(&host_ns, &peer_ns, ("wgkv0", "wgkv1"), "10.78.0");
    let dev = device_name("wgk");
    let server = serve(&format!(
        "{{ devices: [\"wgk*\"], backend: kernel, netns: {} }}",
        host_ns.name
    ));
    server
        .post(&format!("/fx/wg/devices/{dev}"), b"")
        .expect(201);
    let kind = exec(&host_ns, "ip", &["-d", "-j", "link", "show", "dev", &dev]);
    assert!(kind.contains("\"info_kind\":\"wireguard\""), "{kind}");
    assert!(
        wireguard_go_pid(&dev).is_none(),
        "backend: kernel started wireguard-go"
    );
    expect_error(
        &server.post(&format!("/fx/wg/devices/{dev}"), b""),
        409,
        "already exists",
    );
    assert_eq!(server.get("/fx/wg/devices").json()["devices"], json!([dev]));

    let host_keys = server.get("/fx/wg/keypair").json();
    let peer_keys = server.get("/fx/wg/keypair").json();
    let host_public = host_keys["public_key"].as_str().unwrap().to_string();
    let peer_public = peer_keys["public_key"].as_str().unwrap().to_string();
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/configure"),
            &json!({ "private_key": host_keys["private_key"], "listen_port": HOST_PORT }),
        )
        .expect(204);
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers"),
            &json!({
                "public_key": peer_public,
                "preshared_key": host_keys["preshared_key"],
                "endpoint": format!("10.78.0.2:{PEER_PORT}"),
                "allowed_ips": ["10.99.0.2/32"],
                "persistent_keepalive": 5,
            }),
        )
        .expect(204);
    let (interface, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(interface[0], host_keys["private_key"].as_str().unwrap());
    assert_eq!(interface[2], HOST_PORT.to_string());
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][1], host_keys["preshared_key"].as_str().unwrap());
    assert_eq!(peers[0][2], format!("10.78.0.2:{PEER_PORT}"));
    assert_eq!(peers[0][3], "10.99.0.2/32");
    assert_eq!(peers[0][7], "5");

    server
        .post(&format!("/fx/wg/devices/{dev}/up?up=true"), b"")
        .expect(204);
    assert!(host_ns.is_up(&dev));
    host_ns.ip(&["addr", "add", "10.99.0.1/24", "dev", &dev]);
    let peer = PeerTunnel::start(
        &peer_ns,
        peer_keys["private_key"].as_str().unwrap(),
        &host_public,
        host_keys["preshared_key"].as_str().unwrap(),
        &format!("10.78.0.1:{HOST_PORT}"),
    );
    let pinged = pings(&peer_ns, "10.99.0.1");
    assert!(
        pinged.is_some(),
        "no ping through the kernel's tunnel\n{}",
        server.logs()
    );
    let r = server.get(&format!("/fx/wg/devices/{dev}"));
    r.expect(200);
    let device = r.json();
    assert_eq!(device["public_key"], host_public.as_str(), "{device}");
    assert_eq!(device["listen_port"], HOST_PORT, "{device}");
    assert_eq!(device["up"], true, "{device}");
    let p = &device["peers"][0];
    assert_eq!(p["public_key"], peer_public.as_str(), "{device}");
    assert_eq!(p["has_preshared_key"], true, "{device}");
    assert_eq!(p["endpoint"], format!("10.78.0.2:{PEER_PORT}"), "{device}");
    assert_eq!(p["persistent_keepalive"], 5, "{device}");
    let handshake = p["latest_handshake"].as_u64().expect("a handshake");
    let now = crate::e2e::harness::now_secs();
    assert!(
        handshake <= now + 1 && handshake + 60 >= now,
        "handshake {handshake}, now {now}"
    );
    assert!(
        p["rx_bytes"].as_u64().unwrap() > 0 && p["tx_bytes"].as_u64().unwrap() > 0,
        "{device}"
    );
    for secret in [&host_keys["private_key"], &host_keys["preshared_key"]] {
        assert!(!r.text().contains(secret.as_str().unwrap()));
    }

    // More than one message each way: 1,000 allowed IPs on the peer (the
    // set is split, and so is the kernel's dump), then 200 more peers.
    let many: Vec<String> = (0..1000)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/peers"),
            &json!({ "public_key": peer_public, "endpoint": format!("10.78.0.2:{PEER_PORT}"), "allowed_ips": many }),
        )
        .expect(204);
    let (_, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(peers[0][3].split(',').count(), 1000, "{:?}", peers[0][3]);
    assert_eq!(peers[0][1], "(none)");
    let device = server.get(&format!("/fx/wg/devices/{dev}")).json();
    let listed: Vec<String> = device["peers"][0]["allowed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let (mut want, mut got) = (many.clone(), listed);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let others: Vec<String> = (1..=200u32)
        .map(|i| {
            use base64::Engine as _;
            let mut key = [7u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            base64::engine::general_purpose::STANDARD.encode(key)
        })
        .collect();
    for (i, key) in others.iter().enumerate() {
        server
            .post_json(
                &format!("/fx/wg/devices/{dev}/peers"),
                &json!({ "public_key": key, "allowed_ips": [format!("10.120.{}.{}/32", i / 256, i % 256)] }),
            )
            .expect(204);
    }
    assert_eq!(wg_dump(&host_ns, &dev).1.len(), 201);
    let device = server.get(&format!("/fx/wg/devices/{dev}")).json();
    let read = device["peers"].as_array().unwrap();
    assert_eq!(read.len(), 201, "{} peers read back", read.len());
    for key in &others {
        assert_eq!(
            read.iter()
                .filter(|p| p["public_key"] == key.as_str())
                .count(),
            1,
            "{key}"
        );
    }
    let long = read
        .iter()
        .find(|p| p["public_key"] == peer_public.as_str())
        .unwrap();
    assert_eq!(long["allowed_ips"].as_array().unwrap().len(), 1000);

    // Removing one peer, then replacing them all with none.
    let remove = |key: &str| {
        server.post_json(
            &format!("/fx/wg/devices/{dev}/peers/remove"),
            &json!({ "public_key": key }),
        )
    };
    remove(&others[0]).expect(204);
    assert_eq!(wg_dump(&host_ns, &dev).1.len(), 200);
    expect_error(&remove(&others[0]), 404, "has no peer");
    server
        .post_json(
            &format!("/fx/wg/devices/{dev}/configure"),
            &json!({ "replace_peers": true }),
        )
        .expect(204);
    assert!(wg_dump(&host_ns, &dev).1.is_empty());
    assert_eq!(
        server.get(&format!("/fx/wg/devices/{dev}")).json()["peers"],
        json!([])
    );

    server.delete(&format!("/fx/wg/devices/{dev}")).expect(204);
    assert!(!link_exists(&host_ns, &dev));
    expect_error(
        &server.get(&format!("/fx/wg/devices/{dev}")),
        404,
        "no WireGuard device",
    );
    drop(peer);
}
