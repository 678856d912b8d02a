//! End-to-end tests of vpnpanel nodes, ports and node mode
//! (plugins/vpnpanel/src/{nodes,ports,node_mode}.rs): every cURL example of
//! the seed's Node Management, Port Management and `all_selectable_servers`
//! sections, both roles on every endpoint, and node provisioning between two
//! wasmgate hosts on loopback: the node host (this plugin with `mode: node`)
//! starts first on port 0, then the panel, whose `outbound` grant lists the
//! node's address.
//!
//! A main-admin key comes from the admin surface
//! (`POST /plugins/vpnpanel/admin/keys`), a sub-admin key from creating a
//! sub-admin with that main key.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, eventually, quote, wasm};
use crate::e2e::http::{self, Response};

const NODE_TOKEN: &str = "node-token-0123456789abcdef";
const MAIN_REQUIRED: &str = "Permission denied: Main admin API key required.";
/// How long provisioning or deletion may take on a busy machine.
const SETTLE: Duration = Duration::from_secs(40);

/// A config.yaml serving vpnpanel at /api/v1 with `settings` (a YAML flow
/// mapping's inside) and `outbound` to `hosts`.
fn yaml(hosts: &[String], settings: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| quote(h)).collect();
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: vpnpanel\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/v1/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, wireguard: {{ devices: [\"vpnwg*\"] }}, net: {{ links: [\"vpnwg*\"], write: true }}, outbound: {{ hosts: [{hosts}], timeout_ms: 10000, max_response_bytes: 1048576 }} }}\n    limits: {{ memory_mb: 128, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: 4194304 }}\n    settings: {{ {settings} }}\n",
        wasm = quote(&wasm("vpnpanel").to_string_lossy()),
        hosts = hosts.join(", "),
    )
}

/// The panel, allowed to reach `hosts`.
fn panel(hosts: &[String]) -> Server {
    Setup::with_yaml(&yaml(
        hosts,
        "public_url: \"http://127.0.0.1:8000\", openvpn_port: 1194, openvpn_protocol: udp",
    ))
    .serve()
}

/// A node host: the same plugin with `mode: node` and the node token.
fn node_host() -> Server {
    Setup::with_yaml(&yaml(
        &["127.0.0.1:9".to_string()],
        &format!("mode: node, node_token: {}", quote(NODE_TOKEN)),
    ))
    .serve()
}

/// An address on loopback where nothing listens.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

#[track_caller]
pub(crate) fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(k) = key {
        headers.push(("x-api-key", k));
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    server.send(method, path, &headers, &bytes)
}

/// Asserts the status and the whole `{success, message}` envelope.
#[track_caller]
fn expect_envelope(r: &Response, status: u16, success: bool, message: &str) -> Value {
    let v = r.json();
    assert_eq!(r.status, status, "{v}");
    assert_eq!(v["success"], json!(success), "{v}");
    assert_eq!(v["message"], json!(message), "{v}");
    v
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    let auth = format!("Bearer {}", server.admin_token());
    http::send(
        server.admin_addr(),
        method,
        &format!("/plugins/vpnpanel/admin{path}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("admin {method} {path}: {e}\n{}", server.logs()))
}

/// A main-admin key from the admin surface.
#[track_caller]
fn main_key(server: &Server) -> String {
    let r = admin(server, "POST", "/keys", &json!({ "label": "tests" }));
    assert!(
        r.status == 200 || r.status == 201,
        "{r:?}\n{}",
        server.logs()
    );
    let v = r.json();
    find_secret(&v).unwrap_or_else(|| panic!("no key in {v}"))
}

/// A sub-admin key: the one returned when a sub-admin is created.
#[track_caller]
fn sub_key(server: &Server, main: &str) -> String {
    let r = call(
        server,
        "POST",
        "/api/v1/sub_admins",
        Some(main),
        Some(&json!({ "username": "sa1", "password": "pass", "max_users_limit": 10 })),
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let v = r.json();
    find_secret(&v).unwrap_or_else(|| panic!("no key in {v}"))
}

/// The first string under a key named like an API key or secret.
fn find_secret(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => {
            for name in ["api_key", "secret", "key"] {
                if let Some(Value::String(s)) = m.get(name) {
                    return Some(s.clone());
                }
            }
            m.values().find_map(find_secret)
        }
        _ => None,
    }
}

fn nodes(server: &Server, key: &str) -> Vec<Value> {
    let r = call(server, "GET", "/api/v1/nodes", Some(key), None);
    r.expect(200);
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    v["nodes"].as_array().cloned().unwrap_or_default()
}

fn node(server: &Server, key: &str, id: u64) -> Option<Value> {
    nodes(server, key).into_iter().find(|n| n["id"] == id)
}

/// Polls the list until node `id` has `status`; returns it.
#[track_caller]
fn wait_status(server: &Server, key: &str, id: u64, status: &str) -> Value {
    eventually(SETTLE, || {
        node(server, key, id).filter(|n| n["status"] == status)
    })
    .unwrap_or_else(|| {
        panic!(
            "node {id} never became {status}: {:?}\n{}",
            node(server, key, id),
            server.logs()
        )
    })
}

#[track_caller]
fn wait_gone(server: &Server, key: &str, id: u64) {
    eventually(SETTLE, || node(server, key, id).is_none().then_some(())).unwrap_or_else(|| {
        panic!(
            "node {id} never went away: {:?}\n{}",
            node(server, key, id),
            server.logs()
        )
    });
}

/// The node host's own view, with the node token.
fn health(node: &Server, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    node.send("GET", "/api/v1/node/health", &headers, b"")
}

/// A TCP proxy to `target` that holds new connections while its gate is
/// shut, so a test can see a deletion while it runs.
struct Proxy {
    addr: SocketAddr,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let g = gate.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let g = g.clone();
                thread::spawn(move || {
                    let (lock, cv) = &*g;
                    let mut open = lock.lock().expect("gate");
                    while !*open {
                        open = cv.wait(open).expect("gate");
                    }
                    drop(open);
                    let Ok(upstream) = TcpStream::connect(target) else {
                        return;
                    };
                    pipe(client, upstream);
                });
            }
        });
        Proxy { addr, gate }
    }

    fn set_open(&self, open: bool) {
        let (lock, cv) = &*self.gate;
        *lock.lock().expect("gate") = open;
        cv.notify_all();
    }
}

fn pipe(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let t = thread::spawn(move || {
        copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut u, mut c) = (upstream, client);
    copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = t.join();
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn node_endpoints_answer_as_the_seed_shows_for_both_roles() {
    let dead = closed_port();
    let server = panel(&[dead.to_string()]);
    let main = main_key(&server);
    let sub = sub_key(&server, &main);

    // No key, a wrong key.
    expect_envelope(
        &call(&server, "GET", "/api/v1/nodes", None, None),
        401,
        false,
        "API key is missing",
    );
    expect_envelope(
        &call(&server, "GET", "/api/v1/nodes", Some("INVALID_KEY"), None),
        401,
        false,
        "Invalid or inactive API key",
    );

    // The seed's create example: 202 with node_id. 1.2.3.4 is outside the
    // outbound grant, so its provisioning ends failed.
    let seed_node = json!({
        "name": "Node A", "ip_address": "1.2.3.4", "ssh_password": "pass",
        "openvpn_port": 1194, "protocol": "udp", "sync_all_users": false, "communication_method": "wireguard"
    });
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(&seed_node),
    );
    let v = expect_envelope(
        &r,
        202,
        true,
        "Node created and installation started in background.",
    );
    assert_eq!(v["node_id"], 1);

    // One node per address.
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(&seed_node),
    );
    expect_envelope(
        &r,
        409,
        false,
        "A node with this ip_address and api_port already exists.",
    );

    // A sub-admin may not create; missing fields are named.
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&sub),
        Some(&json!({ "name": "Node B", "ip_address": "2.3.4.5", "ssh_password": "pass" })),
    );
    expect_envelope(&r, 403, false, MAIN_REQUIRED);
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(&json!({ "name": "Node C" })),
    );
    expect_envelope(
        &r,
        400,
        false,
        "Missing required fields: name, ip_address, ssh_password",
    );

    // The list: everything for the main admin, id/name/status for a sub-admin.
    let n = wait_status(&server, &main, 1, "failed");
    assert_eq!(n["name"], "Node A");
    assert_eq!(n["ip_address"], "1.2.3.4");
    assert_eq!(n["total_traffic_bytes"], 0);
    assert!(
        n["status_message"]
            .as_str()
            .unwrap_or_default()
            .contains("outbound grant"),
        "{n}"
    );
    assert!(
        n.get("ssh_password").is_none()
            && n.get("node_token").is_none()
            && n.get("report_token").is_none()
    );
    let sub_view = nodes(&server, &sub);
    assert_eq!(
        sub_view,
        vec![json!({ "id": 1, "name": "Node A", "status": "failed" })]
    );
    // A sub-admin limited to the main server sees no node at all.
    let r = call(
        &server,
        "POST",
        "/api/v1/sub_admins",
        Some(&main),
        Some(
            &json!({ "username": "sa_main_only", "password": "pass", "allowed_servers": ["main"] }),
        ),
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let main_only = find_secret(&r.json()).expect("api_key");
    assert_eq!(nodes(&server, &main_only), Vec::<Value>::new());

    // A node whose address is unreachable (allowed, nothing listening) ends failed.
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(
            &json!({ "name": "Dead", "ip_address": "127.0.0.1", "api_port": dead.port(), "ssh_password": NODE_TOKEN }),
        ),
    );
    let v = expect_envelope(
        &r,
        202,
        true,
        "Node created and installation started in background.",
    );
    let dead_id = v["node_id"].as_u64().expect("node_id");
    let n = wait_status(&server, &main, dead_id, "failed");
    assert!(
        n["status_message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Cannot reach the node"),
        "{n}"
    );

    // PUT: the seed's three examples, then the roles.
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&main),
        Some(&json!({ "openvpn_port": 443, "protocol": "tcp" })),
    );
    expect_envelope(
        &r,
        200,
        true,
        "Node updated. Sync triggered only for changed services.",
    );
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&main),
        Some(&json!({ "name": "Node A (EU)", "ip_address": "5.6.7.8" })),
    );
    expect_envelope(
        &r,
        200,
        true,
        "Node updated. Sync triggered only for changed services.",
    );
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/999999",
        Some(&main),
        Some(&json!({ "protocol": "udp" })),
    );
    expect_envelope(&r, 404, false, "Node not found");
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&main),
        Some(&json!({})),
    );
    expect_envelope(&r, 400, false, "Request body must be JSON and not empty");
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&main),
        Some(&json!({ "ip_address": "127.0.0.1", "api_port": dead.port() })),
    );
    expect_envelope(
        &r,
        409,
        false,
        "A node with this ip_address and api_port already exists.",
    );
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&main),
        Some(&json!({ "protocol": "icmp" })),
    );
    assert_eq!(r.status, 400);
    // The original let any key PUT and DELETE a node.
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        Some(&sub),
        Some(&json!({ "name": "mine" })),
    );
    expect_envelope(&r, 403, false, MAIN_REQUIRED);
    let r = call(&server, "DELETE", "/api/v1/nodes/1", Some(&sub), None);
    expect_envelope(&r, 403, false, MAIN_REQUIRED);
    let r = call(
        &server,
        "PUT",
        "/api/v1/nodes/1",
        None,
        Some(&json!({ "name": "x" })),
    );
    expect_envelope(&r, 401, false, "API key is missing");
    let r = call(
        &server,
        "DELETE",
        "/api/v1/nodes/1",
        Some("INVALID_KEY"),
        None,
    );
    expect_envelope(&r, 401, false, "Invalid or inactive API key");

    let n = wait_status(&server, &main, 1, "failed");
    assert_eq!(n["name"], "Node A (EU)");
    assert_eq!(n["ip_address"], "5.6.7.8");
    assert_eq!(n["openvpn_port"], 443);
    assert_eq!(n["protocol"], "tcp");

    // A missing node's DELETE is 404 with success false (the original said true).
    let r = call(&server, "DELETE", "/api/v1/nodes/999999", Some(&main), None);
    expect_envelope(&r, 404, false, "Node not found");

    // Deleting a node the panel cannot reach fails once (delete_failed);
    // the next DELETE forces it.
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{dead_id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 200, true, "Deletion started");
    wait_status(&server, &main, dead_id, "delete_failed");
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{dead_id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 200, true, "Deletion started");
    wait_gone(&server, &main, dead_id);
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{dead_id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 404, false, "Node not found");
    // Its address is free again, under a new id.
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(
            &json!({ "name": "Again", "ip_address": "127.0.0.1", "api_port": dead.port(), "ssh_password": NODE_TOKEN }),
        ),
    );
    let v = expect_envelope(
        &r,
        202,
        true,
        "Node created and installation started in background.",
    );
    assert!(v["node_id"].as_u64() > Some(dead_id), "{v}");
}

#[test]
fn a_node_is_provisioned_and_deleted_end_to_end_between_two_hosts() {
    let node_server = node_host();
    let node_addr = node_server.addr();

    // The node agent never answers without its token.
    expect_envelope(
        &health(&node_server, None),
        401,
        false,
        "Node token is missing",
    );
    expect_envelope(
        &health(&node_server, Some("wrong-token-0123456789")),
        401,
        false,
        "Invalid node token",
    );
    let r = node_server.send(
        "POST",
        "/api/v1/node/provision",
        &[("content-type", "application/json")],
        b"{\"node_id\":1}",
    );
    expect_envelope(&r, 401, false, "Node token is missing");
    let r = health(&node_server, Some(NODE_TOKEN));
    let v = expect_envelope(&r, 200, true, "Node is online");
    assert_eq!(v["provisioned"], false);

    // The panel reaches the node through a proxy whose gate the test holds.
    let proxy = Proxy::start(node_addr);
    let server = panel(&[proxy.addr.to_string(), node_addr.to_string()]);
    let main = main_key(&server);

    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(&json!({
            "name": "Node A", "ip_address": "127.0.0.1", "api_port": proxy.addr.port(),
            "ssh_password": NODE_TOKEN, "openvpn_port": 1195, "protocol": "udp"
        })),
    );
    let v = expect_envelope(
        &r,
        202,
        true,
        "Node created and installation started in background.",
    );
    let id = v["node_id"].as_u64().expect("node_id");
    let n = wait_status(&server, &main, id, "active");
    assert_eq!(n["status_message"], "");
    assert_eq!(
        n["protocols"],
        json!(["openvpn", "l2tp", "cisco", "wireguard"])
    );
    assert_eq!(
        n["ports"],
        json!([{ "public_port": 1195, "protocol": "udp", "is_default": true }])
    );

    // The node holds the panel's config.
    let v = health(&node_server, Some(NODE_TOKEN)).json();
    assert_eq!(v["provisioned"], true, "{v}");
    assert_eq!(v["node_id"], id);
    assert_eq!(v["name"], "Node A");

    // A custom port on the node re-provisions it with that port.
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(
            &json!({ "public_port": 443, "protocol": "tcp", "server_ids": ["main", format!("node_{id}")] }),
        ),
    );
    expect_envelope(&r, 200, true, "Port configured on selected servers.");
    let n = eventually(SETTLE, || {
        node(&server, &main, id).filter(|n| {
            n["status"] == "active" && n["ports"].as_array().is_some_and(|p| p.len() == 2)
        })
    })
    .unwrap_or_else(|| panic!("node not re-provisioned: {:?}", node(&server, &main, id)));
    assert_eq!(
        n["ports"][1],
        json!({ "public_port": 443, "protocol": "tcp", "is_default": false })
    );
    let v = health(&node_server, Some(NODE_TOKEN)).json();
    assert_eq!(v["ports"][1]["public_port"], 443, "{v}");

    // A node with the wrong token ends failed with the node's answer.
    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(&json!({
            "name": "Wrong token", "ip_address": "127.0.0.1", "api_port": node_addr.port(),
            "ssh_password": "not-the-node-token-0123"
        })),
    );
    let bad = r.json()["node_id"].as_u64().expect("node_id");
    let n = wait_status(&server, &main, bad, "failed");
    assert_eq!(
        n["status_message"],
        "The node answered HTTP 401: Invalid node token"
    );

    // Deletion runs in the background: 423 while it runs, then 404.
    proxy.set_open(false);
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 200, true, "Deletion started");
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 423, false, "Deletion in progress...");
    let r = call(
        &server,
        "PUT",
        &format!("/api/v1/nodes/{id}"),
        Some(&main),
        Some(&json!({ "name": "x" })),
    );
    expect_envelope(&r, 423, false, "Deletion in progress...");
    assert_eq!(
        node(&server, &main, id).expect("still listed")["status"],
        "deleting"
    );
    proxy.set_open(true);
    wait_gone(&server, &main, id);
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{id}"),
        Some(&main),
        None,
    );
    expect_envelope(&r, 404, false, "Node not found");

    // The node forgot its config; the node's port assignment went with it.
    let v = health(&node_server, Some(NODE_TOKEN)).json();
    assert_eq!(v["provisioned"], false, "{v}");
    let v = call(&server, "GET", "/api/v1/public/ports", Some(&main), None).json();
    let custom = v["custom_ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(custom.len(), 1, "{v}");
    assert_eq!(custom[0]["server_identifier"], "main");
}

#[test]
fn ports_and_server_lists_answer_as_the_seed_shows_for_both_roles() {
    let server = panel(&["127.0.0.1:9".to_string()]);
    let main = main_key(&server);
    let sub = sub_key(&server, &main);

    let r = call(
        &server,
        "POST",
        "/api/v1/nodes",
        Some(&main),
        Some(
            &json!({ "name": "Node A", "ip_address": "1.2.3.4", "ssh_password": "pass-0123456789abcdef" }),
        ),
    );
    assert_eq!(r.status, 202);

    // servers_for_ports and all_selectable_servers.
    for path in [
        "/api/v1/public/servers_for_ports",
        "/api/v1/public/all_selectable_servers",
    ] {
        let r = call(&server, "GET", path, Some(&main), None);
        r.expect(200);
        let v = r.json();
        assert_eq!(v["success"], true);
        let servers = v["servers"].as_array().expect("servers");
        assert_eq!(servers.len(), 2, "{v}");
        assert_eq!(servers[0], json!({ "id": "main", "name": "Main Server" }));
        assert_eq!(servers[1]["id"], "node_1");
        assert_eq!(servers[1]["name"], "Node: Node A");
        expect_envelope(
            &call(&server, "GET", path, Some(&sub), None),
            403,
            false,
            MAIN_REQUIRED,
        );
        expect_envelope(
            &call(&server, "GET", path, Some("INVALID_KEY"), None),
            401,
            false,
            "Invalid or inactive API key",
        );
        expect_envelope(
            &call(&server, "GET", path, None, None),
            401,
            false,
            "API key is missing",
        );
    }

    // Create: the seed's examples.
    let seed_port =
        json!({ "public_port": 443, "protocol": "tcp", "server_ids": ["main", "node_1"] });
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(&seed_port),
    );
    expect_envelope(&r, 200, true, "Port configured on selected servers.");
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(&json!({ "public_port": 443, "protocol": "tcp", "server_ids": [] })),
    );
    expect_envelope(&r, 400, false, "Missing info.");
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&sub),
        Some(&json!({ "public_port": 443, "protocol": "tcp", "server_ids": ["main"] })),
    );
    expect_envelope(&r, 403, false, "Permission denied");
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(&json!({ "public_port": 443, "protocol": "tcp", "server_ids": ["node_42"] })),
    );
    expect_envelope(&r, 400, false, "Unknown server: node_42");
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(&json!({ "public_port": 70000, "protocol": "tcp", "server_ids": ["main"] })),
    );
    assert_eq!(r.status, 400);
    // The same port again only adds what is missing.
    let r = call(
        &server,
        "POST",
        "/api/v1/public/ports",
        Some(&main),
        Some(&seed_port),
    );
    expect_envelope(&r, 200, true, "Port configured on selected servers.");

    // List.
    let r = call(&server, "GET", "/api/v1/public/ports", Some(&main), None);
    r.expect(200);
    let v = r.json();
    assert_eq!(v["success"], true);
    let d = &v["default_ports"][0];
    assert_eq!(
        (
            &d["is_default"],
            &d["name"],
            &d["public_port"],
            &d["protocol"]
        ),
        (
            &json!(true),
            &json!("Main Server"),
            &json!(1194),
            &json!("udp")
        ),
        "{v}"
    );
    assert_eq!(v["default_ports"][1]["name"], "Node: Node A");
    let custom = v["custom_ports"].as_array().expect("custom_ports");
    assert_eq!(custom.len(), 2, "{v}");
    let on_node = custom
        .iter()
        .find(|c| c["server_identifier"] == "node_1")
        .expect("node_1 assignment");
    assert_eq!(on_node["public_port"], 443);
    assert_eq!(on_node["protocol"], "tcp");
    assert_eq!(on_node["server_name"], "Node: Node A");
    let port_id = on_node["port_id"].as_u64().expect("port_id");
    assert_eq!(custom.iter().filter(|c| c["port_id"] == port_id).count(), 2);
    expect_envelope(
        &call(&server, "GET", "/api/v1/public/ports", Some(&sub), None),
        403,
        false,
        MAIN_REQUIRED,
    );
    expect_envelope(
        &call(
            &server,
            "GET",
            "/api/v1/public/ports",
            Some("INVALID_KEY"),
            None,
        ),
        401,
        false,
        "Invalid or inactive API key",
    );

    // Delete an assignment: the seed's examples.
    let path = "/api/v1/public/ports/assignment";
    let r = call(
        &server,
        "DELETE",
        path,
        Some(&main),
        Some(&json!({ "port_id": port_id, "server_identifier": "node_1" })),
    );
    expect_envelope(&r, 200, true, "Port assignment deleted.");
    let r = call(
        &server,
        "DELETE",
        path,
        Some(&main),
        Some(&json!({ "port_id": port_id })),
    );
    expect_envelope(&r, 400, false, "Missing info.");
    let r = call(
        &server,
        "DELETE",
        path,
        Some(&sub),
        Some(&json!({ "port_id": port_id, "server_identifier": "main" })),
    );
    expect_envelope(&r, 403, false, "Permission denied");
    let r = call(
        &server,
        "DELETE",
        path,
        Some(&main),
        Some(&json!({ "port_id": port_id, "server_identifier": "node_1" })),
    );
    expect_envelope(&r, 404, false, "Port assignment not found.");
    let v = call(&server, "GET", "/api/v1/public/ports", Some(&main), None).json();
    assert_eq!(v["custom_ports"].as_array().map(Vec::len), Some(1), "{v}");
    // The last assignment takes the port with it.
    let r = call(
        &server,
        "DELETE",
        path,
        Some(&main),
        Some(&json!({ "port_id": port_id, "server_identifier": "main" })),
    );
    expect_envelope(&r, 200, true, "Port assignment deleted.");
    let v = call(&server, "GET", "/api/v1/public/ports", Some(&main), None).json();
    assert_eq!(v["custom_ports"], json!([]), "{v}");
}

#[test]
fn a_node_without_a_strong_token_setting_refuses_everything() {
    // The original's node agent answered anyone; ours needs a token of 16
    // characters or more in its settings, else it answers nobody.
    let weak = Setup::with_yaml(&yaml(
        &["127.0.0.1:9".to_string()],
        "mode: node, node_token: pass",
    ))
    .serve();
    expect_envelope(
        &health(&weak, Some("pass")),
        503,
        false,
        "Node token is not configured.",
    );
    let r = weak.send(
        "DELETE",
        "/api/v1/node/provision",
        &[("authorization", "Bearer pass")],
        b"",
    );
    expect_envelope(&r, 503, false, "Node token is not configured.");
    let none = Setup::with_yaml(&yaml(&["127.0.0.1:9".to_string()], "mode: node")).serve();
    expect_envelope(
        &health(&none, None),
        503,
        false,
        "Node token is not configured.",
    );
    // In node mode the panel's API is not there.
    let r = none.send("GET", "/api/v1/nodes", &[("x-api-key", "anything")], b"");
    assert_eq!(r.status, 503);
}
