//! vpnpanel's WireGuard (`enable_wg1`, plugins/vpnpanel/src/domain/wg.rs) on real
//! WireGuard: the panel's own device, and a node's, each in a network
//! namespace of the test's own where the host runs `wireguard-go`; a second
//! namespace plays the user's device (its own `wireguard-go`, set with `wg`
//! from the config the panel hands out), and pings through the tunnel. The
//! peers the servers keep, the traffic they count and the PSK a node gets
//! are read back through the API and with `wg show`.
//!
//! These need root, `ip`, `wireguard-go`, `wg` and `ping`; without them a
//! test prints a `SKIP` line saying why and passes. CI installs them and runs
//! as root.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, eventually, quote, wasm};
use crate::e2e::http;
use crate::e2e::net::Netns;
use crate::e2e::vpnpanel_nodes::call;
use crate::e2e::wireguard::{PeerSide, device_name, exec, tools, underlay, wg_dump};

const NODE_TOKEN: &str = "node-token-0123456789abcdef";
const WG_PORT: u16 = 51830;
/// How long a sync may take to show on a busy machine.
const SETTLE: Duration = Duration::from_secs(30);

/// A vpnpanel config at `listen` (all three mounts) with `wireguard` and
/// `net` granted for `device` in namespace `netns`, `outbound` to `hosts`,
/// and `settings` (a YAML flow mapping's inside).
fn yaml(listen: &str, device: &str, netns: &str, hosts: &[String], settings: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| quote(h)).collect();
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: vpnpanel\n    wasm: {wasm}\n    mounts:\n      - listen: {listen}\n        prefix: /api/v1/\n      - listen: {listen}\n        prefix: /sub/\n      - listen: {listen}\n        prefix: /download/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, wireguard: {{ devices: [{device}], backend: userspace, netns: {netns} }}, net: {{ links: [{device}], write: true, netns: {netns} }}, outbound: {{ hosts: [{hosts}], timeout_ms: 10000, max_response_bytes: 1048576 }} }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: 4194304 }}\n    settings: {{ {settings} }}\n",
        wasm = quote(&wasm("vpnpanel").to_string_lossy()),
        listen = quote(listen),
        device = quote(device),
        netns = quote(netns),
        hosts = hosts.join(", "),
    )
}

#[track_caller]
fn main_key(server: &Server) -> String {
    let r = server.plugin_admin("vpnpanel", "POST", "/keys", &json!({ "label": "tests" }));
    r.expect(201);
    r.json()["api_key"].as_str().expect("api_key").to_string()
}

fn user(server: &Server, key: &str, name: &str) -> Value {
    let r = call(
        server,
        "GET",
        &format!("/api/v1/users/{name}"),
        Some(key),
        None,
    );
    r.expect(200);
    r.json()
}

/// The allowed IPs of the peer with `public_key` on `dev` in `ns`, if the
/// device exists and has it.
fn peer_ips(ns: &Netns, dev: &str, public_key: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "wg", "show", dev, "dump"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>())
        .find(|p| p[0] == public_key)
        .map(|p| p[3].clone())
}

/// Waits until the peer is on the device (`present`) or gone.
#[track_caller]
fn expect_peer(server: &Server, ns: &Netns, dev: &str, public_key: &str, present: bool) {
    let settled = eventually(SETTLE, || {
        (peer_ips(ns, dev, public_key).is_some() == present).then_some(())
    });
    assert!(
        settled.is_some(),
        "peer {public_key} should {}be on {dev}\n{}",
        if present { "" } else { "not " },
        server.logs()
    );
}

/// The value of `Key = value` in a wg-quick config.
fn conf_value(conf: &str, key: &str) -> String {
    conf.lines()
        .find_map(|l| {
            l.split_once('=')
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in\n{conf}"))
}

/// The user's side: a `wireguard-go` device in `ns` with the config's
/// private key and address, talking to `server_key` at `endpoint`.
fn client(
    ns: &Netns,
    conf: &str,
    server_key: &str,
    endpoint: &str,
    server_ip: &str,
) -> (PeerSide, String) {
    let dev = device_name("vpc");
    let side = PeerSide::start(ns, &dev, &conf_value(conf, "PrivateKey"));
    exec(
        ns,
        "wg",
        &[
            "set",
            &dev,
            "private-key",
            &side.keyfile.path().to_string_lossy(),
            "peer",
            server_key,
            "endpoint",
            endpoint,
            "allowed-ips",
            &format!("{server_ip}/32"),
        ],
    );
    ns.ip(&["addr", "add", &conf_value(conf, "Address"), "dev", &dev]);
    ns.ip(&["link", "set", &dev, "up"]);
    ns.ip(&["route", "add", &format!("{server_ip}/32"), "dev", &dev]);
    (side, dev)
}

/// Pings `ip` from `ns` until it answers; `count` pings of `size` bytes then.
#[track_caller]
fn ping(server: &Server, ns: &Netns, ip: &str, count: u32, size: u32) {
    let ok = eventually(SETTLE, || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "1", ip])
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    assert!(
        ok.is_some(),
        "no ping to {ip} through the tunnel\n{}",
        server.logs()
    );
    if count > 0 {
        exec(
            ns,
            "ping",
            &[
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.002",
                "-s",
                &size.to_string(),
                "-W",
                "1",
                ip,
            ],
        );
    }
}

#[test]
fn the_panels_device_follows_wg1_users_and_counts_their_traffic() {
    let test = "the_panels_device_follows_wg1_users_and_counts_their_traffic";
    if !tools(test) {
        return;
    }
    let Some(server_ns) = Netns::new(test) else {
        return;
    };
    let Some(user_ns) = Netns::new(test) else {
        return;
    };
    underlay(&server_ns, &user_ns, ("vpv0", "vpv1"), "10.78.0");
    let dev = device_name("vpw");
    let server = Setup::with_yaml(&yaml(
        "127.0.0.1:0",
        &dev,
        &server_ns.name,
        &["127.0.0.1:9".to_string()],
        &format!(
            "public_url: \"http://panel.example\", server_address: 10.78.0.1, wg_device: {dev}, wg_port: {WG_PORT}, wg_subnet: 10.79.0.0/24, wg_dns: 10.79.0.1, enforce_interval_secs: 1"
        ),
    ))
    .serve();
    let key = main_key(&server);

    // A user with wg1 and a 1 MB limit gets keys, the first client address
    // and a peer on the panel's device, which the panel created.
    let r = call(
        &server,
        "POST",
        "/api/v1/users",
        Some(&key),
        Some(
            &json!({ "username": "alice", "enable_wg1": true, "data_limit": 1, "data_limit_unit": "MB" }),
        ),
    );
    r.expect(201);
    let alice = user(&server, &key, "alice");
    assert_eq!(alice["wireguard"]["address"], "10.79.0.2", "{alice}");
    let alice_key = alice["wireguard"]["public_key"]
        .as_str()
        .expect("public key")
        .to_string();
    // One without wg1 has none, and no peer.
    call(
        &server,
        "POST",
        "/api/v1/users",
        Some(&key),
        Some(&json!({ "username": "bob" })),
    )
    .expect(201);
    assert_eq!(user(&server, &key, "bob")["wireguard"], Value::Null);
    expect_peer(&server, &server_ns, &dev, &alice_key, true);
    let (interface, peers) = wg_dump(&server_ns, &dev);
    assert_eq!(interface[2], WG_PORT.to_string(), "listen port");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][3], "10.79.0.2/32");
    assert!(
        server_ns
            .addresses(&dev)
            .contains(&("10.79.0.1".to_string(), 24)),
        "{:?}",
        server_ns.addresses(&dev)
    );
    assert!(server_ns.is_up(&dev));

    // The subscription page and the client config.
    let token = alice_token(&server, &key);
    let r = server.send("GET", &format!("/sub/alice?token={token}"), &[], b"");
    r.expect(200);
    let sub = r.json();
    let servers = &sub["wireguard"]["servers"];
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "{sub}");
    assert_eq!(servers[0]["server"], "main");
    assert_eq!(servers[0]["endpoint"], format!("10.78.0.1:{WG_PORT}"));
    let server_key = servers[0]["public_key"]
        .as_str()
        .expect("server key")
        .to_string();
    assert_eq!(
        interface[1], server_key,
        "the device has the key the panel hands out"
    );
    assert_eq!(
        servers[0]["url"],
        format!("http://panel.example/download/alice/main.conf?token={token}")
    );
    let r = server.send(
        "GET",
        &format!("/download/alice/main.conf?token={token}"),
        &[],
        b"",
    );
    r.expect(200);
    let conf = r.text();
    assert_eq!(conf_value(&conf, "Address"), "10.79.0.2/32");
    assert_eq!(conf_value(&conf, "PublicKey"), server_key);
    assert_eq!(
        conf_value(&conf, "Endpoint"),
        format!("10.78.0.1:{WG_PORT}")
    );
    assert_eq!(conf_value(&conf, "DNS"), "10.79.0.1");
    assert_eq!(conf_value(&conf, "AllowedIPs"), "0.0.0.0/0, ::/0");
    server
        .send("GET", "/download/alice/main.conf?token=wrong", &[], b"")
        .expect(403);
    server
        .send(
            "GET",
            &format!("/download/alice/node_9.conf?token={token}"),
            &[],
            b"",
        )
        .expect(404);

    // The user's device completes a handshake and sends traffic; the
    // panel counts it and shows the user online.
    let (_side, _) = client(
        &user_ns,
        &conf,
        &server_key,
        &format!("10.78.0.1:{WG_PORT}"),
        "10.79.0.1",
    );
    ping(&server, &user_ns, "10.79.0.1", 5, 56);
    let counted = eventually(SETTLE, || {
        let u = user(&server, &key, "alice");
        (u["total_traffic_bytes"].as_u64() > Some(0) && u["is_online"] == true).then_some(u)
    });
    assert!(
        counted.is_some(),
        "no traffic counted: {}\n{}",
        user(&server, &key, "alice"),
        server.logs()
    );

    // Over its 1 MB limit, it is limited and loses its peer.
    ping(&server, &user_ns, "10.79.0.1", 500, 1400);
    let limited = eventually(SETTLE, || {
        let u = user(&server, &key, "alice");
        (u["status"] == "limited").then_some(u)
    });
    assert!(
        limited.is_some(),
        "not limited: {}\n{}",
        user(&server, &key, "alice"),
        server.logs()
    );
    expect_peer(&server, &server_ns, &dev, &alice_key, false);

    // reset_traffic brings the user, and its peer, back.
    let r = call(
        &server,
        "POST",
        "/api/v1/users/alice/reset_traffic",
        Some(&key),
        None,
    );
    r.expect(200);
    assert_eq!(r.json()["user_re_enabled"], true);
    expect_peer(&server, &server_ns, &dev, &alice_key, true);

    // Disabled by hand: gone; enabled: back.
    call(
        &server,
        "POST",
        "/api/v1/users/alice/toggle",
        Some(&key),
        None,
    )
    .expect(200);
    expect_peer(&server, &server_ns, &dev, &alice_key, false);
    call(
        &server,
        "POST",
        "/api/v1/users/alice/toggle",
        Some(&key),
        None,
    )
    .expect(200);
    expect_peer(&server, &server_ns, &dev, &alice_key, true);

    // Revoke replaces the key: the old peer goes, the new one comes.
    call(
        &server,
        "POST",
        "/api/v1/users/alice/revoke",
        Some(&key),
        None,
    )
    .expect(200);
    let rotated = user(&server, &key, "alice")["wireguard"]["public_key"]
        .as_str()
        .expect("key")
        .to_string();
    assert_ne!(rotated, alice_key);
    expect_peer(&server, &server_ns, &dev, &alice_key, false);
    expect_peer(&server, &server_ns, &dev, &rotated, true);

    // Turning wg1 on for bob by an edit gives him the next address.
    call(
        &server,
        "PUT",
        "/api/v1/users/bob",
        Some(&key),
        Some(&json!({ "enable_wg1": true })),
    )
    .expect(200);
    let bob = user(&server, &key, "bob");
    assert_eq!(bob["wireguard"]["address"], "10.79.0.3", "{bob}");
    let bob_key = bob["wireguard"]["public_key"]
        .as_str()
        .expect("key")
        .to_string();
    expect_peer(&server, &server_ns, &dev, &bob_key, true);

    // Deleted: the peer goes and the address is free again.
    call(&server, "DELETE", "/api/v1/users/alice", Some(&key), None).expect(200);
    expect_peer(&server, &server_ns, &dev, &rotated, false);
    call(
        &server,
        "POST",
        "/api/v1/users",
        Some(&key),
        Some(&json!({ "username": "carol", "enable_wg1": true })),
    )
    .expect(201);
    assert_eq!(
        user(&server, &key, "carol")["wireguard"]["address"],
        "10.79.0.4",
        "addresses go on in order"
    );
}

fn alice_token(server: &Server, key: &str) -> String {
    let r = call(server, "GET", "/api/v1/users/alice/sub", Some(key), None);
    r.expect(200);
    let url = r.json()["sub_url"].as_str().expect("sub_url").to_string();
    url.rsplit_once("token=").expect("token").1.to_string()
}

/// A free port on loopback, for a host whose address another host's grant
/// must list before it starts.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn sha256_hex(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_node_serves_wg1_users_reports_their_traffic_and_gets_the_new_psk() {
    let test = "a_node_serves_wg1_users_reports_their_traffic_and_gets_the_new_psk";
    if !tools(test) {
        return;
    }
    let Some(node_ns) = Netns::new(test) else {
        return;
    };
    let Some(user_ns) = Netns::new(test) else {
        return;
    };
    underlay(&node_ns, &user_ns, ("vnv0", "vnv1"), "10.80.0");
    let node_dev = device_name("vnw");
    let panel_port = free_port();
    let node = Setup::with_yaml(&yaml(
        "127.0.0.1:0",
        &node_dev,
        &node_ns.name,
        &[format!("127.0.0.1:{panel_port}")],
        &format!(
            "mode: node, node_token: {}, wg_device: {node_dev}, wg_port: {WG_PORT}, wg_subnet: 10.81.0.0/24, sync_interval_secs: 1",
            quote(NODE_TOKEN)
        ),
    ))
    .serve();
    // The panel runs no WireGuard of its own (no wg_device).
    let panel_dev = device_name("vpn");
    let panel = Setup::with_yaml(&yaml(
        &format!("127.0.0.1:{panel_port}"),
        &panel_dev,
        &node_ns.name,
        &[node.addr().to_string()],
        &format!("public_url: \"http://127.0.0.1:{panel_port}\", wg_subnet: 10.81.0.0/24"),
    ))
    .serve();
    let key = main_key(&panel);

    let r = call(
        &panel,
        "POST",
        "/api/v1/nodes",
        Some(&key),
        Some(
            &json!({ "name": "Node A", "ip_address": "127.0.0.1", "api_port": node.addr().port(), "ssh_password": NODE_TOKEN }),
        ),
    );
    r.expect(202);
    let node_id = r.json()["node_id"].as_u64().expect("node_id");
    let active = eventually(SETTLE, || {
        let r = call(
            &panel,
            "GET",
            &format!("/api/v1/nodes/{node_id}"),
            Some(&key),
            None,
        );
        let v = r.json();
        let n = if v["node"].is_object() {
            v["node"].clone()
        } else {
            v
        };
        (n["status"] == "active").then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "the node did not become active\n{}\n{}",
            panel.logs(),
            node.logs()
        )
    });
    let node_key = active["wireguard"]["public_key"]
        .as_str()
        .unwrap_or_else(|| panic!("{active}"))
        .to_string();
    assert_eq!(active["wireguard"]["port"], WG_PORT, "{active}");

    // A user on that node only: a peer on the node's device, none anywhere else.
    let r = call(
        &panel,
        "POST",
        "/api/v1/users",
        Some(&key),
        Some(
            &json!({ "username": "nadia", "enable_wg1": true, "nodes": [format!("node_{node_id}")] }),
        ),
    );
    r.expect(201);
    let nadia = user(&panel, &key, "nadia");
    let nadia_key = nadia["wireguard"]["public_key"]
        .as_str()
        .expect("key")
        .to_string();
    expect_peer(&node, &node_ns, &node_dev, &nadia_key, true);
    let (interface, _) = wg_dump(&node_ns, &node_dev);
    assert_eq!(interface[1], node_key);

    // The client config names the node.
    let r = call(&panel, "GET", "/api/v1/users/nadia/sub", Some(&key), None);
    let sub_url = r.json()["sub_url"].as_str().expect("sub_url").to_string();
    let token = sub_url.rsplit_once("token=").expect("token").1.to_string();
    let r = panel.send(
        "GET",
        &format!("/download/nadia/node_{node_id}.conf?token={token}"),
        &[],
        b"",
    );
    r.expect(200);
    let conf = r.text();
    assert_eq!(conf_value(&conf, "PublicKey"), node_key);
    assert_eq!(
        conf_value(&conf, "Endpoint"),
        format!("127.0.0.1:{WG_PORT}")
    );
    panel
        .send(
            "GET",
            &format!("/download/nadia/main.conf?token={token}"),
            &[],
            b"",
        )
        .expect(404);

    // Traffic through the node reaches the panel: the user's and the node's.
    let (_side, _) = client(
        &user_ns,
        &conf,
        &node_key,
        &format!("10.80.0.1:{WG_PORT}"),
        "10.81.0.1",
    );
    ping(&panel, &user_ns, "10.81.0.1", 5, 56);
    let counted = eventually(SETTLE, || {
        let u = user(&panel, &key, "nadia");
        (u["total_traffic_bytes"].as_u64() > Some(0) && u["is_online"] == true).then_some(u)
    });
    assert!(
        counted.is_some(),
        "no traffic from the node: {}\n{}\n{}",
        user(&panel, &key, "nadia"),
        panel.logs(),
        node.logs()
    );
    let r = call(&panel, "GET", "/api/v1/nodes", Some(&key), None);
    let nodes = r.json()["nodes"].clone();
    assert!(
        nodes[0]["total_traffic_bytes"].as_u64() > Some(0),
        "{nodes}"
    );

    // A new PSK reaches the node without waiting for anything else.
    let psk = "a-new-shared-secret-42";
    call(
        &panel,
        "POST",
        "/api/v1/update_ipsec_psk",
        Some(&key),
        Some(&json!({ "new_psk": psk })),
    )
    .expect(200);
    let want = sha256_hex(psk);
    let health = || {
        let r = http::send(
            node.addr(),
            "GET",
            "/api/v1/node/health",
            &[("authorization", &format!("Bearer {NODE_TOKEN}"))],
            b"",
        )
        .expect("node health");
        r.json()
    };
    let got = eventually(SETTLE, || {
        (health()["ipsec_psk_sha256"] == want.as_str()).then_some(())
    });
    assert!(
        got.is_some(),
        "the node has not the new PSK: {}\n{}",
        health(),
        node.logs()
    );
    assert!(
        !health().to_string().contains(psk),
        "the PSK itself is never shown"
    );
    assert_eq!(health()["last_sync"]["ok"], true);

    // Disabled on the panel: gone from the node.
    call(
        &panel,
        "POST",
        "/api/v1/users/nadia/toggle",
        Some(&key),
        None,
    )
    .expect(200);
    expect_peer(&node, &node_ns, &node_dev, &nadia_key, false);
}
