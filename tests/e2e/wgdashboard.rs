//! The wgdashboard plugin (plugins/wgdashboard) through the real server: the
//! API document's examples byte for byte, the auth
//! rules (API keys with expiry, sessions, TOTP with a ±1 step window and no
//! reuse, rate-limited logins, signout), the endpoints beyond the seed, and a
//! configuration toggled on as a real WireGuard device: `wireguard-go` in a
//! network namespace of the test's own, a second namespace playing the peer
//! with the `.conf` downloadPeer gave it, a real handshake and ping.
//!
//! The device test needs root, `ip`, `wireguard-go`, `wg` and `ping`;
//! without them it prints a `SKIP` line and passes. The TOTP codes are
//! computed here with ring's HMAC-SHA1 (a dependency of the host already).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::e2e::harness::{Server, Setup, eventually, now_secs, quote, wasm};
use crate::e2e::http::{self, Conn, Response};
use crate::e2e::net::Netns;
use crate::e2e::wireguard::{PeerSide, device_name, exec, link_exists, tools, underlay, wg_dump};

const USER: &str = "admin";
const PASSWORD: &str = "correct horse battery";
/// RFC 6238's test secret, "12345678901234567890", in base32.
const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The seed's addWireguardConfiguration example; its Address (empty in the
/// seed, which this plugin refuses) is a real one.
const SEED_PRIVATE: &str = "eJuuamCgakVs2xUZGHh/g7C6Oy89JGh7eE2jjEGbbFc=";
const SEED_PUBLIC: &str = "3Ruirgw9qNRwNpBepkiVjjSe82tY+lDZr6WaFC4wO2g=";
const SEED_POST_UP: &str = "iptables -A FORWARD -i wg0 -j ACCEPT; iptables -A FORWARD -o wg0 -j ACCEPT; iptables -t nat -A POSTROUTING -o enp0s1 -j MASQUERADE;";
const SEED_PRE_DOWN: &str = "iptables -D FORWARD -i wg0 -j ACCEPT; iptables -D FORWARD -o wg0 -j ACCEPT; iptables -t nat -D POSTROUTING -o enp0s1 -j MASQUERADE;";

/// The plugin on `/api/` with every grant it uses; `wireguard` and `net`
/// as given (YAML flow mappings), settings as given.
fn yaml(wireguard: &str, net: &str, settings: &str) -> String {
    yaml_capped(wireguard, net, settings, 16_777_216)
}

/// [`yaml`] with the host's response cap at `max_response_bytes`.
fn yaml_capped(wireguard: &str, net: &str, settings: &str, max_response_bytes: usize) -> String {
    format!(
        "data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\nplugins:\n  - name: wgdashboard\n    wasm: {wasm}\n    mounts:\n      - listen: \"127.0.0.1:0\"\n        prefix: /api/\n    grants: {{ kv: true, keys: true, crypto: true, config: true, log: true, ratelimit: true, wireguard: {wireguard}, net: {net} }}\n    limits: {{ memory_mb: 64, timeout_ms: 30000, max_body_bytes: 1048576, max_response_bytes: {max_response_bytes} }}\n    settings: {settings}\n",
        wasm = quote(&wasm("wgdashboard").to_string_lossy()),
    )
}

/// A server whose grants match no device or link: for everything but
/// toggling. Logins are limited to `logins` a minute.
fn serve_with(logins: u32) -> Server {
    Setup::with_yaml(&yaml(
        "{ devices: [\"wgdnone*\"] }",
        "{ links: [\"wgdnone*\"], write: true }",
        &format!("{{ remote_endpoint: 203.0.113.7, login_attempts_per_minute: {logins} }}"),
    ))
    .serve()
}

fn serve() -> Server {
    serve_with(100)
}

#[track_caller]
fn admin(server: &Server, method: &str, path: &str, body: &Value) -> Response {
    server.plugin_admin("wgdashboard", method, path, body)
}

fn set_account(server: &Server) {
    admin(
        server,
        "PUT",
        "/account",
        &json!({ "username": USER, "password": PASSWORD }),
    )
    .expect(200);
}

/// The envelope the original answers.
fn envelope(data: Value, message: Value, status: bool) -> Value {
    json!({ "data": data, "message": message, "status": status })
}

fn failure(message: &str) -> Value {
    envelope(Value::Null, json!(message), false)
}

/// Calls with `wg-dashboard-apikey` or a cookie, or neither.
#[derive(Clone, Copy)]
enum As<'a> {
    Key(&'a str),
    Cookie(&'a str),
    Nobody,
}

#[track_caller]
fn call(server: &Server, who: As, method: &str, path: &str, body: Option<&Value>) -> Response {
    let cookie;
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    match who {
        As::Key(k) => headers.push(("wg-dashboard-apikey", k)),
        As::Cookie(c) => {
            cookie = format!("authToken={c}");
            headers.push(("cookie", &cookie));
        }
        As::Nobody => {}
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    server.send(method, &format!("/api/{path}"), &headers, &body)
}

/// A GET or POST answered HTTP 200; its JSON.
#[track_caller]
fn get(server: &Server, who: As, path: &str) -> Value {
    let r = call(server, who, "GET", path, None);
    r.expect(200);
    r.json()
}

#[track_caller]
fn post(server: &Server, who: As, path: &str, body: Value) -> Value {
    let r = call(server, who, "POST", path, Some(&body));
    r.expect(200);
    r.json()
}

/// POST /api/authenticate; the response.
fn login(server: &Server, username: &str, password: &str, totp: &str) -> Response {
    call(
        server,
        As::Nobody,
        "POST",
        "authenticate",
        Some(&json!({ "username": username, "password": password, "totp": totp })),
    )
}

/// The `authToken` value a successful login set.
#[track_caller]
fn session_cookie(r: &Response) -> String {
    r.expect(200);
    let set = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no set-cookie: {r:?}"));
    set.split(';')
        .next()
        .and_then(|c| c.strip_prefix("authToken="))
        .unwrap_or_else(|| panic!("not an authToken cookie: {set}"))
        .to_string()
}

/// An account, a session and an API key that never expires.
fn logged_in(server: &Server) -> (String, String) {
    set_account(server);
    let cookie = session_cookie(&login(server, USER, PASSWORD, ""));
    let r = post(
        server,
        As::Cookie(&cookie),
        "newDashboardAPIKey",
        json!({ "NeverExpire": true, "ExpiredAt": null }),
    );
    assert_eq!(r["status"], true, "{r}");
    let key = r["data"][0]["Key"]
        .as_str()
        .expect("the new key")
        .to_string();
    (cookie, key)
}

/// RFC 6238 with HMAC-SHA1 and TOTP_SECRET, for the step of `unix`.
fn totp_at(unix: u64) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"12345678901234567890",
    );
    let mac = ring::hmac::sign(&key, &(unix / 30).to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[19] & 0x0f);
    let bin = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

/// "YYYY-MM-DD HH:MM:SS" (UTC) of `offset` seconds from now.
fn utc(offset: i64) -> String {
    let ts = now_secs() as i64 + offset;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{ts}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn seed_configuration(name: &str, address: &str, port: u64) -> Value {
    json!({
        "ConfigurationName": name,
        "Address": address,
        "ListenPort": port,
        "PrivateKey": SEED_PRIVATE,
        "PublicKey": SEED_PUBLIC,
        "PresharedKey": "GMMLKWdJlgsKVoR26BJPsNbDXyfILL+x1Nd6Ecmn4lg=",
        "PreUp": "",
        "PreDown": SEED_PRE_DOWN,
        "PostUp": SEED_POST_UP,
        "PostDown": ""
    })
}

/// A fresh key pair from `wg genkey` / `wg pubkey`.
fn wg_keypair() -> (String, String) {
    let private = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    let private = String::from_utf8_lossy(&private.stdout).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    writeln!(child.stdin.take().expect("stdin"), "{private}").expect("write the key");
    let public = child.wait_with_output().expect("wg pubkey");
    (
        private,
        String::from_utf8_lossy(&public.stdout).trim().to_string(),
    )
}

// ---------------------------------------------------------------------------
// The seed's auth examples
// ---------------------------------------------------------------------------

#[test]
fn every_endpoint_but_the_public_ones_answers_the_seeds_401_without_auth() {
    let server = serve();
    for (method, path) in [
        ("GET", "handshake"),
        ("GET", "signout"),
        ("GET", "getWireguardConfigurations"),
        ("POST", "addWireguardConfiguration"),
        ("GET", "toggleWireguardConfiguration/?configurationName=wg0"),
        ("GET", "getWireguardConfigurationInfo?configurationName=wg0"),
        ("POST", "addPeers/wg0"),
        ("GET", "downloadPeer/wg0?id=x"),
        ("GET", "getDashboardAPIKeys"),
        ("POST", "newDashboardAPIKey"),
        ("GET", "no-such-endpoint"),
    ] {
        let r = call(&server, As::Nobody, method, path, Some(&json!({})));
        r.expect(401);
        // Byte for byte: sorted keys, as the original serialises them.
        assert_eq!(
            r.text(),
            r#"{"data":null,"message":"Unauthorized access.","status":false}"#,
            "{method} {path}"
        );
        let r = call(
            &server,
            As::Cookie("not-a-session"),
            method,
            path,
            Some(&json!({})),
        );
        r.expect(401);
        assert_eq!(r.json(), failure("Unauthorized access."), "{method} {path}");
        let r = call(
            &server,
            As::Key("not-a-key"),
            method,
            path,
            Some(&json!({})),
        );
        r.expect(401);
        assert_eq!(
            r.text(),
            r#"{"data":null,"message":"API Key does not exist","status":false}"#,
            "{method} {path}"
        );
    }
    // The public ones.
    assert_eq!(
        get(&server, As::Nobody, "validateAuthentication"),
        failure("Invalid authentication.")
    );
    assert_eq!(
        get(&server, As::Nobody, "isTotpEnabled"),
        envelope(json!(false), Value::Null, true)
    );
    // Even a public endpoint refuses a bad key, as in the original.
    call(&server, As::Key("not-a-key"), "GET", "isTotpEnabled", None).expect(401);
}

#[test]
fn a_session_from_authenticate_answers_handshake_validate_and_signout_as_the_seed() {
    let mut server = serve();
    // No account yet: nothing logs in (there is no default admin/admin).
    let r = login(&server, "admin", "admin", "");
    r.expect(200);
    assert_eq!(
        r.json(),
        failure("Sorry, your username or password is incorrect.")
    );
    assert!(r.header("set-cookie").is_none());

    set_account(&server);
    let state = admin(&server, "GET", "/state", &Value::Null);
    assert_eq!(state.json()["welcome_session"], true, "{state:?}");
    for (user, pass) in [(USER, "wrong password"), ("root", PASSWORD), ("", "")] {
        let r = login(&server, user, pass, "");
        assert_eq!(
            r.json(),
            failure("Sorry, your username or password is incorrect."),
            "{user} {pass}"
        );
        assert!(r.header("set-cookie").is_none());
    }
    // Success: the message is the first-run ("welcome session") flag.
    let r = login(&server, USER, PASSWORD, "");
    assert_eq!(r.json(), envelope(Value::Null, json!(true), true));
    let set_cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = session_cookie(&r);
    assert!(cookie.len() >= 43, "{cookie}");

    // The seed's examples, byte for byte.
    let r = call(&server, As::Cookie(&cookie), "GET", "handshake", None);
    r.expect(200);
    assert_eq!(r.text(), r#"{"data":null,"message":null,"status":true}"#);
    assert_eq!(
        get(&server, As::Cookie(&cookie), "validateAuthentication"),
        envelope(Value::Null, Value::Null, true)
    );
    assert_eq!(
        get(&server, As::Nobody, "validateAuthentication"),
        failure("Invalid authentication.")
    );

    // The first-run flag, cleared by the operator.
    admin(
        &server,
        "PUT",
        "/account",
        &json!({ "welcome_session": false }),
    )
    .expect(200);
    let r = login(&server, USER, PASSWORD, "");
    assert_eq!(r.json(), envelope(Value::Null, json!(false), true));
    let second = session_cookie(&r);

    // Sessions live in kv: a restart keeps them.
    server.restart();
    assert_eq!(
        get(&server, As::Cookie(&cookie), "validateAuthentication"),
        envelope(Value::Null, Value::Null, true)
    );
    get(&server, As::Cookie(&cookie), "handshake");

    // Signout ends that session on the server, not only in the browser.
    let r = call(&server, As::Cookie(&cookie), "GET", "signout", None);
    r.expect(200);
    assert_eq!(r.text(), r#"{"data":null,"message":null,"status":true}"#);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("authToken=;") && c.contains("Max-Age=0")),
        "{r:?}"
    );
    assert_eq!(
        get(&server, As::Cookie(&cookie), "validateAuthentication"),
        failure("Invalid authentication.")
    );
    call(&server, As::Cookie(&cookie), "GET", "handshake", None).expect(401);
    // The other session is untouched; a new password ends it.
    get(&server, As::Cookie(&second), "handshake");
    admin(
        &server,
        "PUT",
        "/account",
        &json!({ "password": "another long password" }),
    )
    .expect(200);
    call(&server, As::Cookie(&second), "GET", "handshake", None).expect(401);
}

#[test]
fn totp_accepts_one_step_either_side_and_never_the_same_code_twice() {
    let server = serve();
    set_account(&server);
    let r = admin(&server, "POST", "/totp", &json!({ "secret": TOTP_SECRET }));
    r.expect(201);
    let uri = r.json()["uri"].as_str().unwrap().to_string();
    assert!(uri.starts_with("otpauth://totp/WGDashboard:admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=WGDashboard"), "{uri}");
    assert_eq!(
        get(&server, As::Nobody, "isTotpEnabled"),
        envelope(json!(true), Value::Null, true)
    );

    let otp_refused = failure("Sorry, your username, password or OTP is incorrect.");
    let now = now_secs();
    let window: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|t| totp_at(*t))
        .collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c) && *c != totp_at(now + 60))
        .unwrap();
    for code in [wrong.as_str(), "", "12345", "1234567", "abcdef"] {
        assert_eq!(
            login(&server, USER, PASSWORD, code).json(),
            otp_refused,
            "{code:?}"
        );
    }
    // Two steps away is outside the window.
    assert_eq!(
        login(&server, USER, PASSWORD, &totp_at(now - 90)).json(),
        otp_refused
    );
    // The right password with the previous step's code (clock skew) logs in...
    let now = now_secs();
    let r = login(&server, USER, PASSWORD, &totp_at(now - 30));
    assert_eq!(r.json()["status"], true, "{r:?}");
    session_cookie(&r);
    // ... and that code, or any of an earlier step, never again.
    assert_eq!(
        login(&server, USER, PASSWORD, &totp_at(now - 30)).json(),
        otp_refused
    );
    // The current step is still new.
    let now = now_secs();
    let current = totp_at(now);
    let r = login(&server, USER, PASSWORD, &current);
    assert_eq!(r.json()["status"], true, "{r:?}");
    assert_eq!(
        login(&server, USER, PASSWORD, &current).json(),
        otp_refused,
        "a reused code"
    );
    // A good code with a wrong password is still refused.
    assert_eq!(
        login(&server, USER, "wrong password", &totp_at(now + 30)).json(),
        otp_refused
    );

    // Off again: the message without OTP.
    admin(&server, "DELETE", "/totp", &Value::Null).expect(200);
    assert_eq!(
        get(&server, As::Nobody, "isTotpEnabled"),
        envelope(json!(false), Value::Null, true)
    );
    assert_eq!(
        login(&server, USER, "nope nope", "").json(),
        failure("Sorry, your username or password is incorrect.")
    );
}

#[test]
fn login_attempts_are_rate_limited() {
    let server = serve_with(10);
    // Fixed one-minute windows: at least ten attempts pass, and at most one
    // window boundary can fall inside this loop.
    let mut refused_at = None;
    for attempt in 1..=21 {
        let r = login(&server, "someone", "guess", "");
        if r.status == 429 {
            assert_eq!(
                r.json(),
                failure("Too many login attempts, try again later.")
            );
            assert!(
                r.header("retry-after")
                    .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n))),
                "{r:?}"
            );
            refused_at = Some(attempt);
            break;
        }
        r.expect(200);
        assert_eq!(
            r.json(),
            failure("Sorry, your username or password is incorrect.")
        );
    }
    let refused_at = refused_at.expect("no attempt was refused");
    assert!(
        refused_at >= 11,
        "refused after {} attempts",
        refused_at - 1
    );
}

/// POST /api/authenticate over a connection from the loopback address
/// `local` (127.0.0.2, ...): the plugin sees that as the client's address.
fn login_from(server: &Server, local: &str, username: &str, password: &str) -> Response {
    let body = json!({ "username": username, "password": password, "totp": "" });
    http::send_from(
        local.parse().expect("a loopback address"),
        server.addr(),
        "POST",
        "/api/authenticate",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("login from {local}: {e}\n{}", server.logs()))
}

#[test]
fn wrong_passwords_for_admin_from_one_address_do_not_lock_admin_out_of_another() {
    let server = serve_with(10);
    set_account(&server);
    let attacker = "127.0.0.2";
    let mut limited = false;
    for _ in 0..15 {
        let r = login_from(&server, attacker, USER, "a wrong guess");
        if r.status == 429 {
            assert_eq!(
                r.json(),
                failure("Too many login attempts, try again later.")
            );
            limited = true;
            break;
        }
        assert_eq!(
            r.json(),
            failure("Sorry, your username or password is incorrect.")
        );
    }
    assert!(
        limited,
        "fifteen wrong passwords from one address were never limited"
    );

    let r = login_from(&server, "127.0.0.3", USER, PASSWORD);
    assert_eq!(r.json()["status"], true, "the admin was locked out: {r:?}");
    session_cookie(&r);
    // The attacking address stays limited, even with the right password.
    let r = login_from(&server, attacker, USER, PASSWORD);
    r.expect(429);
    assert_eq!(
        r.json(),
        failure("Too many login attempts, try again later.")
    );
}

#[test]
fn refused_logins_with_made_up_usernames_do_not_mint_rate_limit_buckets() {
    // Two attempts a minute per address: every later attempt is refused
    // before a password is checked, whatever its username.
    let server = Setup::with_yaml(&yaml(
        "{ devices: [\"wgdnone*\"] }",
        "{ links: [\"wgdnone*\"], write: true }",
        "{ login_attempts_per_minute: 2, login_attempts_per_address_per_minute: 2 }",
    ))
    .serve();
    set_account(&server);
    let attempt = |conn: &mut Conn, n: usize| {
        let body = format!(r#"{{"username":"made-up-{n}","password":"x","totp":""}}"#);
        conn.send(
            "POST",
            "/api/authenticate",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .expect("an attempt")
    };
    let local: std::net::IpAddr = "127.0.0.4".parse().unwrap();
    let mut conn = Conn::open_from(server.addr(), local).expect("connect");
    for n in 0..2_000 {
        attempt(&mut conn, n);
    }
    let r = attempt(&mut conn, 2_000);
    r.expect(429);
    let baseline = server.rss_kib();
    // The host keeps a bucket as long as its window (a minute): 100,000
    // buckets of one username each would hold well over 10 MiB.
    const ATTEMPTS: usize = 100_000;
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let attempt = &attempt;
            let server = &server;
            scope.spawn(move || {
                let mut conn = Conn::open_from(server.addr(), local).expect("connect");
                for n in (worker..ATTEMPTS).step_by(2) {
                    let r = attempt(&mut conn, 10_000 + n);
                    assert_eq!(r.status, 429, "attempt {n} was not refused: {r:?}");
                }
            });
        }
    });
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("host RSS grew by {grown} KiB over {ATTEMPTS} refused attempts");
    assert!(
        grown < 6 * 1024,
        "host RSS grew by {grown} KiB over {ATTEMPTS} refused attempts with distinct usernames"
    );
}

#[test]
fn api_keys_are_listed_by_id_shown_once_checked_for_expiry_and_deleted() {
    let server = serve();
    let (cookie, key) = logged_in(&server);
    // The key works in the header the seed names.
    let r = call(&server, As::Key(&key), "GET", "handshake", None);
    r.expect(200);
    assert_eq!(r.text(), r#"{"data":null,"message":null,"status":true}"#);

    // The list never has a secret: Key is the id.
    let r = get(&server, As::Key(&key), "getDashboardAPIKeys");
    assert_eq!(r["status"], true, "{r}");
    let list = r["data"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{r}");
    assert_ne!(list[0]["Key"], key.as_str());
    assert_eq!(list[0]["ExpiredAt"], Value::Null);
    assert_eq!(
        list[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["CreatedAt", "ExpiredAt", "Key"]
    );
    assert!(!r.to_string().contains(&key));

    // A key that expires in a few seconds works, then does not.
    let expires = utc(4);
    let r = post(
        &server,
        As::Cookie(&cookie),
        "newDashboardAPIKey",
        json!({ "NeverExpire": false, "ExpiredAt": expires }),
    );
    assert_eq!(r["status"], true, "{r}");
    let entries = r["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{r}");
    assert_eq!(entries[1]["ExpiredAt"], expires.as_str());
    let short = entries[1]["Key"].as_str().unwrap().to_string();
    get(&server, As::Key(&short), "handshake");
    std::thread::sleep(Duration::from_secs(5));
    let r = call(&server, As::Key(&short), "GET", "handshake", None);
    r.expect(401);
    assert_eq!(r.json(), failure("API Key does not exist"));

    // An unknown endpoint and a wrong method, in the envelope.
    let r = call(&server, As::Key(&key), "GET", "nope", None);
    r.expect(404);
    assert_eq!(r.json(), failure("Not found"));
    let r = call(
        &server,
        As::Key(&key),
        "GET",
        "addWireguardConfiguration",
        None,
    );
    r.expect(405);
    assert_eq!(r.json(), failure("Method not allowed"));

    // Bad expiries.
    for body in [
        json!({ "NeverExpire": false, "ExpiredAt": "tomorrow" }),
        json!({ "NeverExpire": false, "ExpiredAt": utc(-60) }),
    ] {
        let r = post(&server, As::Key(&key), "newDashboardAPIKey", body);
        assert_eq!(r["status"], false, "{r}");
    }

    // Delete by the listed id; an unknown key is the original's message.
    let id = get(&server, As::Key(&key), "getDashboardAPIKeys")["data"][0]["Key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post(
            &server,
            As::Key(&key),
            "deleteDashboardAPIKey",
            json!({ "Key": "nope" })
        ),
        failure("API Key does not exist")
    );
    let r = post(
        &server,
        As::Cookie(&cookie),
        "deleteDashboardAPIKey",
        json!({ "Key": id }),
    );
    assert_eq!(r["status"], true, "{r}");
    let r = call(&server, As::Key(&key), "GET", "handshake", None);
    r.expect(401);
    assert_eq!(r.json(), failure("API Key does not exist"));
}

// ---------------------------------------------------------------------------
// Configurations and peers (no device)
// ---------------------------------------------------------------------------

#[test]
fn add_wireguard_configuration_answers_each_seed_message_and_validates_strictly() {
    let mut server = serve();
    let (_, key) = logged_in(&server);
    let k = As::Key(&key);
    let r = call(
        &server,
        k,
        "POST",
        "addWireguardConfiguration",
        Some(&seed_configuration("wg0", "10.0.0.1/24", 51820)),
    );
    r.expect(200);
    assert_eq!(r.text(), r#"{"data":null,"message":null,"status":true}"#);
    assert_eq!(
        post(
            &server,
            k,
            "addWireguardConfiguration",
            seed_configuration("wg0", "10.1.0.1/24", 51821)
        ),
        failure("Already have a configuration with the name \"wg0\"")
    );
    assert_eq!(
        post(
            &server,
            k,
            "addWireguardConfiguration",
            seed_configuration("wg1", "10.1.0.1/24", 51820)
        ),
        failure("Already have a configuration with the port  \"51820\"")
    );
    assert_eq!(
        post(
            &server,
            k,
            "addWireguardConfiguration",
            seed_configuration("wg1", "10.0.0.1/24", 51821)
        ),
        failure("Already have a configuration with the address  \"10.0.0.1/24\"")
    );

    // The seed's getWireguardConfigurations example, field by field, except
    // the server's PrivateKey, which is never answered.
    let r = call(&server, k, "GET", "getWireguardConfigurations", None);
    r.expect(200);
    assert!(!r.text().contains(SEED_PRIVATE), "{}", r.text());
    assert_eq!(
        r.json(),
        envelope(
            json!([{
                "Address": "10.0.0.1/24",
                "ConnectedPeers": 0,
                "DataUsage": { "Receive": 0.0, "Sent": 0.0, "Total": 0.0 },
                "ListenPort": "51820",
                "Name": "wg0",
                "PostDown": "",
                "PostUp": SEED_POST_UP,
                "PreDown": SEED_PRE_DOWN,
                "PreUp": "",
                "PrivateKey": "",
                "PublicKey": SEED_PUBLIC,
                "SaveConfig": true,
                "Status": false
            }]),
            Value::Null,
            true
        )
    );
    // Sorted keys on the wire.
    let text = r.text();
    let order = [
        "\"Address\"",
        "\"ConnectedPeers\"",
        "\"DataUsage\"",
        "\"ListenPort\"",
        "\"Name\"",
        "\"PostDown\"",
        "\"PostUp\"",
        "\"PreDown\"",
        "\"PreUp\"",
        "\"PrivateKey\"",
        "\"PublicKey\"",
        "\"SaveConfig\"",
        "\"Status\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");

    // Strict validation; nothing is stored.
    let bad = |patch: Value, message: &str| {
        let mut body = seed_configuration("wg9", "10.9.0.1/24", 51829);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = post(&server, k, "addWireguardConfiguration", body.clone());
        assert_eq!(r["status"], false, "{body}: {r}");
        assert!(
            r["message"].as_str().unwrap().contains(message),
            "{body}: {r}"
        );
    };
    bad(
        json!({ "ConfigurationName": "" }),
        "Please provide all required parameters.",
    );
    bad(
        json!({ "ListenPort": null }),
        "Please provide all required parameters.",
    );
    bad(
        json!({ "Address": "" }),
        "Please provide all required parameters.",
    );
    bad(
        json!({ "ConfigurationName": "wg0; reboot" }),
        "Configuration name",
    );
    bad(
        json!({ "ConfigurationName": "a-name-too-long-for-linux" }),
        "Configuration name",
    );
    bad(
        json!({ "ConfigurationName": "../../etc" }),
        "Configuration name",
    );
    bad(json!({ "ListenPort": 0 }), "Listen port");
    bad(json!({ "ListenPort": 65536 }), "Listen port");
    bad(json!({ "ListenPort": "51820; x" }), "Listen port");
    bad(json!({ "Address": "10.0.0.1" }), "Address");
    bad(
        json!({ "Address": "10.0.0.1/24\nPostUp = rm -rf /" }),
        "Address",
    );
    bad(json!({ "PrivateKey": "AAAA" }), "PrivateKey");
    bad(
        json!({ "PrivateKey": format!("{SEED_PRIVATE}\n") }),
        "PrivateKey",
    );
    bad(
        json!({ "PublicKey": "GQlGi8QJ93hWY7L2xlJyh+7S6+ekER9xP11T92T0O0Q=" }),
        "PublicKey does not match",
    );
    bad(json!({ "PostUp": "a\nb" }), "PostUp");
    let r = get(&server, k, "getWireguardConfigurations");
    assert_eq!(r["data"].as_array().map(Vec::len), Some(1), "{r}");

    // Configurations live in kv: a restart keeps them.
    server.restart();
    let r = get(&server, k, "getWireguardConfigurations");
    assert_eq!(r["data"][0]["Name"], "wg0", "{r}");

    // Toggle: the seed's message for a name that does not exist.
    for q in [
        "",
        "?configurationName=",
        "?configurationName=nope",
        "?configurationName=..%2F",
    ] {
        assert_eq!(
            get(&server, k, &format!("toggleWireguardConfiguration/{q}")),
            failure("Please provide a valid configuration name"),
            "{q}"
        );
    }
}

#[test]
fn peers_are_added_single_and_in_bulk_on_free_addresses_and_managed() {
    let server = serve();
    let (_, key) = logged_in(&server);
    let k = As::Key(&key);
    post(
        &server,
        k,
        "addWireguardConfiguration",
        seed_configuration("wg0", "10.0.0.1/29", 51820),
    );

    assert_eq!(
        post(&server, k, "addPeers/nope", json!({})),
        failure("Configuration does not exist")
    );
    // One peer with generated keys on the first free address.
    let r = post(&server, k, "addPeers/wg0", json!({ "name": "My Phone" }));
    assert_eq!(r["status"], true, "{r}");
    let phone = r["data"][0].clone();
    assert_eq!(phone["allowed_ip"], "10.0.0.2/32", "{r}");
    assert_eq!(phone["name"], "My Phone");
    assert_eq!(phone["DNS"], "1.1.1.1");
    assert_eq!(phone["endpoint_allowed_ip"], "0.0.0.0/0");
    assert_eq!(phone["mtu"], 1420);
    assert_eq!(phone["keepalive"], 21);
    assert_eq!(phone["status"], "stopped");
    assert_eq!(phone["latest_handshake"], "No Handshake");
    assert_eq!(phone["remote_endpoint"], "203.0.113.7");
    let phone_id = phone["id"].as_str().unwrap().to_string();
    let phone_private = phone["private_key"].as_str().unwrap().to_string();
    assert_eq!(phone_id.len(), 44);
    assert_ne!(phone_private, SEED_PRIVATE);
    assert_eq!(
        phone.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "DNS",
            "ShareLink",
            "allowed_ip",
            "cumu_data",
            "cumu_receive",
            "cumu_sent",
            "endpoint",
            "endpoint_allowed_ip",
            "id",
            "jobs",
            "keepalive",
            "latest_handshake",
            "mtu",
            "name",
            "preshared_key",
            "private_key",
            "remote_endpoint",
            "status",
            "total_data",
            "total_receive",
            "total_sent"
        ]
    );
    assert_eq!(
        post(
            &server,
            k,
            "addPeers/wg0",
            json!({ "public_key": phone_id })
        ),
        failure("This peer already exist")
    );

    // Validation, the original's messages.
    for (body, message) in [
        (json!({ "mtu": 1461 }), "MTU format is not correct."),
        (json!({ "mtu": -1 }), "MTU format is not correct."),
        (
            json!({ "keepalive": -1 }),
            "Persistent Keepalive format is not correct.",
        ),
        (
            json!({ "keepalive": "x" }),
            "Persistent Keepalive format is not correct.",
        ),
        (
            json!({ "DNS": "1.1.1.1\nPostUp = x" }),
            "DNS format is incorrect.",
        ),
        (
            json!({ "endpoint_allowed_ip": "everything" }),
            "Endpoint Allowed IPs format is incorrect.",
        ),
        (
            json!({ "allowed_ips": ["10.0.0.2/32"] }),
            "This IP is not available: 10.0.0.2/32",
        ),
        (
            json!({ "allowed_ips": ["192.168.1.1/32"] }),
            "This IP is not available: 192.168.1.1/32",
        ),
        (
            json!({ "public_key": "AAAA" }),
            "Public key format is incorrect.",
        ),
        (
            json!({ "bulkAdd": true, "bulkAddAmount": 0 }),
            "Please specify amount of peers you want to add",
        ),
        (
            json!({ "bulkAdd": true, "bulkAddAmount": 9 }),
            "The maximum number of peers can add is 4",
        ),
    ] {
        assert_eq!(
            post(&server, k, "addPeers/wg0", body.clone()),
            failure(message),
            "{body}"
        );
    }
    let (private, public) = wg_keypair();
    let (_, other_public) = wg_keypair();
    assert_eq!(
        post(
            &server,
            k,
            "addPeers/wg0",
            json!({ "public_key": other_public, "private_key": private })
        ),
        failure("Provided Public Key does not match provided Private Key")
    );
    // Its own public key, a chosen address, mtu 0 and keepalive 0 allowed.
    let r = post(
        &server,
        k,
        "addPeers/wg0",
        json!({ "public_key": public, "allowed_ips": ["10.0.0.5/32"], "mtu": 0, "keepalive": 0 }),
    );
    assert_eq!(r["status"], true, "{r}");
    assert_eq!(r["data"][0]["private_key"], "");

    // Bulk: the free addresses in order, named as the original names them.
    let r = post(
        &server,
        k,
        "addPeers/wg0",
        json!({ "bulkAdd": true, "bulkAddAmount": 3 }),
    );
    assert_eq!(r["status"], true, "{r}");
    let bulk = r["data"].as_array().unwrap();
    let ips: Vec<&str> = bulk
        .iter()
        .map(|p| p["allowed_ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.0.0.3/32", "10.0.0.4/32", "10.0.0.6/32"]);
    assert!(
        bulk[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("BulkPeer #1_"),
        "{r}"
    );
    assert_eq!(
        post(&server, k, "addPeers/wg0", json!({})),
        failure("No more available IP can assign")
    );
    let r = get(&server, k, "getAvailableIPs/wg0");
    assert_eq!(r, envelope(json!([]), Value::Null, false));

    // Info: peers and restricted peers.
    let info = get(
        &server,
        k,
        "getWireguardConfigurationInfo?configurationName=wg0",
    );
    assert_eq!(
        info["data"]["configurationPeers"].as_array().map(Vec::len),
        Some(5),
        "{info}"
    );
    assert_eq!(info["data"]["configurationInfo"]["PrivateKey"], "");
    assert!(!info.to_string().contains(SEED_PRIVATE));
    assert_eq!(
        get(
            &server,
            k,
            "getWireguardConfigurationInfo?configurationName=nope"
        ),
        failure("Please provide configuration name")
    );

    // Restrict and allow.
    assert_eq!(
        post(&server, k, "restrictPeers/wg0", json!({ "peers": [] })),
        failure("Please specify one or more peers")
    );
    assert_eq!(
        post(&server, k, "allowAccessPeers/wg0", json!({ "peers": [] })),
        failure("Please specify one or more peers")
    );
    assert_eq!(
        post(
            &server,
            k,
            "restrictPeers/nope",
            json!({ "peers": [phone_id] })
        ),
        failure("Configuration does not exist")
    );
    assert_eq!(
        post(
            &server,
            k,
            "restrictPeers/wg0",
            json!({ "peers": [phone_id] })
        ),
        envelope(Value::Null, json!("Restricted 1 peer(s)"), true)
    );
    let info = get(
        &server,
        k,
        "getWireguardConfigurationInfo?configurationName=wg0",
    );
    assert_eq!(
        info["data"]["configurationPeers"].as_array().map(Vec::len),
        Some(4),
        "{info}"
    );
    assert_eq!(
        info["data"]["configurationRestrictedPeers"][0]["id"],
        phone_id.as_str(),
        "{info}"
    );
    assert_eq!(
        post(
            &server,
            k,
            "allowAccessPeers/wg0",
            json!({ "peers": [public] })
        ),
        failure(&format!("Failed to allow access of peer {public}"))
    );
    assert_eq!(
        post(
            &server,
            k,
            "allowAccessPeers/wg0",
            json!({ "peers": [phone_id] })
        ),
        envelope(Value::Null, json!("Allow access successfully"), true)
    );

    // Update: the original's messages, then a real change.
    let upd = |body: Value| post(&server, k, "updatePeerSettings/wg0", body);
    assert_eq!(upd(json!({ "id": "nope" })), failure("Peer does not exist"));
    assert_eq!(
        upd(json!({ "id": phone_id, "allowed_ip": "10.0.0.5/32" })),
        failure("Allowed IP already taken by another peer.")
    );
    assert_eq!(
        upd(json!({ "id": phone_id, "mtu": 9000 })),
        failure("MTU format is not correct.")
    );
    assert_eq!(
        upd(json!({ "id": phone_id, "private_key": private })),
        failure("Private key does not match with the public key.")
    );
    assert_eq!(
        upd(json!({ "id": phone_id, "name": "Laptop", "DNS": "9.9.9.9", "keepalive": 25 })),
        envelope(Value::Null, Value::Null, true)
    );

    // Download: the client's .conf, with its key and the server's public key only.
    let r = get(
        &server,
        k,
        &format!(
            "downloadPeer/wg0?id={}",
            phone_id.replace('+', "%2B").replace('/', "%2F")
        ),
    );
    assert_eq!(r["status"], true, "{r}");
    assert_eq!(r["data"]["fileName"], "Laptop_wg0");
    let file = r["data"]["file"].as_str().unwrap();
    assert_eq!(
        file,
        format!(
            "[Interface]\nPrivateKey = {phone_private}\nAddress = 10.0.0.2/32\nMTU = 1420\n\nDNS = 9.9.9.9\n\n[Peer]\nPublicKey = {SEED_PUBLIC}\nAllowedIPs = 0.0.0.0/0\nEndpoint = 203.0.113.7:51820\nPersistentKeepalive = 25\n"
        )
    );
    // The query form, with an unescaped '+' as clients send it.
    let r = get(
        &server,
        k,
        &format!(
            "downloadPeer?configurationName=wg0&id={}",
            phone_id.replace('/', "%2F")
        ),
    );
    assert_eq!(r["data"]["file"], file, "{r}");
    assert_eq!(
        get(&server, k, "downloadPeer/wg0?id=nope"),
        failure("Peer does not exist")
    );
    assert_eq!(
        get(&server, k, "downloadPeer/nope?id=nope"),
        failure("Configuration does not exist")
    );

    // Reset and delete.
    let reset = |body: Value| post(&server, k, "resetPeerData/wg0", body);
    assert_eq!(
        reset(json!({ "id": phone_id, "type": "total" })),
        envelope(Value::Null, Value::Null, true)
    );
    assert_eq!(
        reset(json!({ "id": phone_id, "type": "receive" }))["status"],
        true
    );
    assert_eq!(
        reset(json!({ "id": phone_id, "type": "sent" }))["status"],
        true
    );
    assert_eq!(
        reset(json!({ "id": phone_id, "type": "all" }))["status"],
        false
    );
    assert_eq!(
        reset(json!({ "id": "nope", "type": "total" })),
        failure("Configuration/Peer does not exist")
    );
    assert_eq!(
        post(
            &server,
            k,
            "deletePeers/wg0",
            json!({ "peers": [phone_id, "nope"] })
        ),
        failure("Deleted 1 peer(s) successfully. Failed to delete 1 peer(s)")
    );
    assert_eq!(
        post(&server, k, "deletePeers/wg0", json!({ "peers": [public] })),
        envelope(Value::Null, json!("Deleted 1 peer(s)"), true)
    );
    let r = get(&server, k, "getAvailableIPs/wg0");
    assert_eq!(
        r,
        envelope(json!(["10.0.0.2/32", "10.0.0.5/32"]), Value::Null, true)
    );

    // Delete the configuration: name, port and address are free again.
    assert_eq!(
        post(
            &server,
            k,
            "deleteWireguardConfiguration",
            json!({ "Name": "nope" })
        ),
        failure("Please provide the configuration name you want to delete")
    );
    assert_eq!(
        post(
            &server,
            k,
            "deleteWireguardConfiguration",
            json!({ "Name": "wg0" })
        ),
        envelope(Value::Null, Value::Null, true)
    );
    assert_eq!(
        get(&server, k, "getWireguardConfigurations"),
        envelope(json!([]), Value::Null, true)
    );
    assert_eq!(
        post(
            &server,
            k,
            "addWireguardConfiguration",
            seed_configuration("wg0", "10.0.0.1/29", 51820)
        )["status"],
        true
    );
    let info = get(
        &server,
        k,
        "getWireguardConfigurationInfo?configurationName=wg0",
    );
    assert_eq!(info["data"]["configurationPeers"], json!([]), "{info}");
}

// ---------------------------------------------------------------------------
// On real WireGuard
// ---------------------------------------------------------------------------

/// `key = value` of a `.conf` text.
fn conf_value(file: &str, key: &str) -> String {
    file.lines()
        .find_map(|l| {
            l.split_once(" = ")
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in\n{file}"))
}

fn dashboard_of(r: &Value, name: &str) -> Value {
    r["data"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name}: {r}"))
}

#[test]
fn a_configuration_toggled_on_is_a_real_device_that_handshakes_counts_traffic_and_restricts() {
    let test =
        "a_configuration_toggled_on_is_a_real_device_that_handshakes_counts_traffic_and_restricts";
    if !tools(test) {
        return;
    }
    let Some(host_ns) = Netns::new(test) else {
        return;
    };
    let Some(peer_ns) = Netns::new(test) else {
        return;
    };
    underlay(&host_ns, &peer_ns, ("wgdv0", "wgdv1"), "10.78.0");
    let dev = device_name("wgd");
    let hook_file = format!("/tmp/wgdashboard-hook-{dev}");
    let _ = std::fs::remove_file(&hook_file);
    let mut server = Setup::with_yaml(&yaml(
        &format!(
            "{{ devices: [\"wgd*\"], backend: userspace, netns: {} }}",
            host_ns.name
        ),
        &format!(
            "{{ links: [\"wgd*\"], write: true, netns: {} }}",
            host_ns.name
        ),
        "{ remote_endpoint: 10.78.0.1, peer_keepalive: 5 }",
    ))
    .serve();
    let (_, key) = logged_in(&server);
    let k = As::Key(&key);

    let (server_private, server_public) = wg_keypair();
    let r = post(
        &server,
        k,
        "addWireguardConfiguration",
        json!({
            "ConfigurationName": dev, "Address": "10.66.0.1/24", "ListenPort": 51820,
            "PrivateKey": server_private, "PublicKey": "", "PresharedKey": "",
            "PreUp": format!("touch {hook_file}"), "PostUp": format!("touch {hook_file}"),
            "PreDown": "", "PostDown": ""
        }),
    );
    assert_eq!(r, envelope(Value::Null, Value::Null, true));
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["Status"], false, "{conf}");
    assert_eq!(conf["PublicKey"], server_public.as_str());

    // Toggle on: a real interface with the key, the port and the address.
    let r = get(
        &server,
        k,
        &format!("toggleWireguardConfiguration/?configurationName={dev}"),
    );
    assert_eq!(
        r,
        envelope(json!(true), Value::Null, true),
        "{}",
        server.logs()
    );
    let (interface, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(interface[0], server_private, "private key");
    assert_eq!(interface[1], server_public, "public key");
    assert_eq!(interface[2], "51820", "listen port");
    assert!(peers.is_empty(), "{peers:?}");
    assert!(host_ns.is_up(&dev));
    assert!(
        host_ns
            .addresses(&dev)
            .contains(&("10.66.0.1".to_string(), 24)),
        "{:?}",
        host_ns.addresses(&dev)
    );
    assert!(
        !Path::new(&hook_file).exists(),
        "PreUp/PostUp were executed"
    );
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["Status"], true, "{conf}");
    assert_eq!(conf["PostUp"], format!("touch {hook_file}"));

    // A peer, straight onto the running device.
    let r = post(
        &server,
        k,
        &format!("addPeers/{dev}"),
        json!({ "name": "laptop", "preshared_key": "" }),
    );
    assert_eq!(r["status"], true, "{r}");
    let peer_id = r["data"][0]["id"].as_str().unwrap().to_string();
    let (_, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], peer_id);
    assert_eq!(peers[0][3], "10.66.0.2/32");

    // The peer's side, from the .conf downloadPeer gives.
    let r = get(
        &server,
        k,
        &format!(
            "downloadPeer/{dev}?id={}",
            peer_id.replace('+', "%2B").replace('/', "%2F")
        ),
    );
    let file = r["data"]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(conf_value(&file, "PublicKey"), server_public);
    assert_eq!(conf_value(&file, "Endpoint"), "10.78.0.1:51820");
    let peer_dev = device_name("wgq");
    let peer = PeerSide::start(&peer_ns, &peer_dev, &conf_value(&file, "PrivateKey"));
    exec(
        &peer_ns,
        "wg",
        &[
            "set",
            &peer_dev,
            "private-key",
            &peer.keyfile.path().to_string_lossy(),
            "peer",
            &server_public,
            "endpoint",
            &conf_value(&file, "Endpoint"),
            "allowed-ips",
            "10.66.0.0/24",
            "persistent-keepalive",
            &conf_value(&file, "PersistentKeepalive"),
        ],
    );
    let address = conf_value(&file, "Address");
    assert_eq!(address, "10.66.0.2/32");
    peer_ns.ip(&["addr", "add", "10.66.0.2/24", "dev", &peer_dev]);
    peer_ns.ip(&["link", "set", &peer_dev, "up"]);
    let pinged = eventually(Duration::from_secs(20), || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer_ns.name,
                "ping",
                "-c",
                "3",
                "-W",
                "1",
                "10.66.0.1",
            ])
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    assert!(
        pinged.is_some(),
        "no ping through the tunnel\n{}",
        server.logs()
    );

    // Status, ConnectedPeers and DataUsage from the live device.
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["Status"], true, "{conf}");
    assert_eq!(conf["ConnectedPeers"], 1, "{conf}");
    let usage = &conf["DataUsage"];
    let (rx, tx, total) = (
        usage["Receive"].as_f64().unwrap(),
        usage["Sent"].as_f64().unwrap(),
        usage["Total"].as_f64().unwrap(),
    );
    assert!(rx > 0.0 && tx > 0.0, "{conf}");
    assert!((total - (rx + tx)).abs() < 1e-12, "{conf}");
    let (_, peers) = wg_dump(&host_ns, &dev);
    let device_rx: f64 = peers[0][5].parse().unwrap();
    assert!(rx <= device_rx / 1073741824.0 + 1e-9, "{conf} vs {peers:?}");
    let info = get(
        &server,
        k,
        &format!("getWireguardConfigurationInfo?configurationName={dev}"),
    );
    let p = &info["data"]["configurationPeers"][0];
    assert_eq!(p["status"], "running", "{info}");
    assert_ne!(p["latest_handshake"], "No Handshake", "{info}");
    assert!(
        p["endpoint"].as_str().unwrap().starts_with("10.78.0.2:"),
        "{info}"
    );
    assert!(!info.to_string().contains(&server_private));
    assert!(
        !get(&server, k, "getWireguardConfigurations")
            .to_string()
            .contains(&server_private)
    );

    // Restrict: off the device and out of DataUsage.
    assert_eq!(
        post(
            &server,
            k,
            &format!("restrictPeers/{dev}"),
            json!({ "peers": [peer_id] })
        ),
        envelope(Value::Null, json!("Restricted 1 peer(s)"), true)
    );
    let (_, peers) = wg_dump(&host_ns, &dev);
    assert!(peers.is_empty(), "{peers:?}");
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["ConnectedPeers"], 0, "{conf}");
    assert_eq!(
        conf["DataUsage"],
        json!({ "Receive": 0.0, "Sent": 0.0, "Total": 0.0 }),
        "{conf}"
    );

    // Allowed again: back on the device, with its counted usage.
    assert_eq!(
        post(
            &server,
            k,
            &format!("allowAccessPeers/{dev}"),
            json!({ "peers": [peer_id] })
        ),
        envelope(Value::Null, json!("Allow access successfully"), true)
    );
    assert_eq!(wg_dump(&host_ns, &dev).1.len(), 1);
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert!(
        conf["DataUsage"]["Total"].as_f64().unwrap() >= total,
        "{conf}"
    );

    // Toggle off: the device is gone, the usage is kept.
    let r = get(
        &server,
        k,
        &format!("toggleWireguardConfiguration/?configurationName={dev}"),
    );
    assert_eq!(r, envelope(json!(false), Value::Null, true));
    assert!(!link_exists(&host_ns, &dev), "{dev} still exists");
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["Status"], false, "{conf}");
    let kept = conf["DataUsage"]["Total"].as_f64().unwrap();
    assert!(kept >= total, "{conf}");
    // While off, DataUsage (a sum cached in kv) follows restrict and allow.
    assert_eq!(
        post(
            &server,
            k,
            &format!("restrictPeers/{dev}"),
            json!({ "peers": [peer_id] })
        )["status"],
        true
    );
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["DataUsage"]["Total"], 0.0, "{conf}");
    assert_eq!(
        post(
            &server,
            k,
            &format!("allowAccessPeers/{dev}"),
            json!({ "peers": [peer_id] })
        )["status"],
        true
    );
    assert!(
        !link_exists(&host_ns, &dev),
        "allowing a peer toggled the configuration on"
    );
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["DataUsage"]["Total"].as_f64().unwrap(), kept, "{conf}");

    // On again: the peer is back from kv and the usage carried over.
    let r = get(
        &server,
        k,
        &format!("toggleWireguardConfiguration/?configurationName={dev}"),
    );
    assert_eq!(
        r,
        envelope(json!(true), Value::Null, true),
        "{}",
        server.logs()
    );
    assert_eq!(wg_dump(&host_ns, &dev).1.len(), 1);
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert!(
        conf["DataUsage"]["Total"].as_f64().unwrap() >= kept,
        "{conf}"
    );

    // A host restart: the host stops the wireguard-go it started, so the
    // configuration is off until toggled on again; everything else is kept.
    server.restart();
    let gone = eventually(Duration::from_secs(10), || {
        (!link_exists(&host_ns, &dev)).then_some(())
    });
    assert!(gone.is_some(), "{dev} outlived the host");
    let conf = dashboard_of(&get(&server, k, "getWireguardConfigurations"), &dev);
    assert_eq!(conf["Status"], false, "{conf}");
    assert_eq!(conf["ConnectedPeers"], 0, "{conf}");
    assert!(
        conf["DataUsage"]["Total"].as_f64().unwrap() >= kept,
        "{conf}"
    );
    let r = get(
        &server,
        k,
        &format!("toggleWireguardConfiguration/?configurationName={dev}"),
    );
    assert_eq!(
        r,
        envelope(json!(true), Value::Null, true),
        "{}",
        server.logs()
    );
    let (interface, peers) = wg_dump(&host_ns, &dev);
    assert_eq!(
        (interface[1].as_str(), peers.len()),
        (server_public.as_str(), 1)
    );
    let r = get(
        &server,
        k,
        &format!("toggleWireguardConfiguration/?configurationName={dev}"),
    );
    assert_eq!(r["data"], false, "{r}");
    assert!(
        !Path::new(&hook_file).exists(),
        "PreDown/PostDown were executed"
    );
    drop(peer);
}

// ---------------------------------------------------------------------------
// Lists past the response cap: paging
// ---------------------------------------------------------------------------

/// The host's response cap and the plugin's matching setting, small so that
/// a few dozen entries outgrow it.
const CAP: usize = 16_384;

/// Every page of `path` (`limit` entries each), checking that each fits the
/// cap and hands on a cursor until the end; the pages' envelopes.
#[track_caller]
fn all_pages(server: &Server, key: &str, path: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut after = String::new();
    for _ in 0..10_000 {
        let r = call(
            server,
            As::Key(key),
            "GET",
            &format!("{path}{sep}limit={limit}{after}"),
            None,
        );
        r.expect(200);
        assert!(
            r.body.len() <= CAP,
            "a page of {path} is {} bytes",
            r.body.len()
        );
        let page = r.json();
        assert_eq!(page["status"], true, "{path}: {page}");
        match &page["next"] {
            Value::Null => {
                pages.push(page);
                return pages;
            }
            Value::String(c) => {
                let c: String = c
                    .bytes()
                    .map(|b| match b {
                        b'+' => "%2B".to_string(),
                        b'/' => "%2F".to_string(),
                        b'=' => "%3D".to_string(),
                        _ => (b as char).to_string(),
                    })
                    .collect();
                after = format!("&after={c}");
            }
            other => panic!("{path}: next is {other}"),
        }
        pages.push(page);
    }
    panic!("{path}: paging never ended");
}

#[track_caller]
fn assert_too_large(r: &Response, entries: usize) {
    r.expect(200);
    assert_eq!(
        r.json(),
        failure(&format!(
            "The list is too large for one answer ({entries} entries, over the {CAP}-byte response limit): page it with ?limit= (1 to 1000) and &after= (the next of the previous page)"
        ))
    );
}

#[test]
fn every_list_past_the_response_cap_says_how_to_page_and_its_pages_hold_every_entry() {
    let server = Setup::with_yaml(&yaml_capped(
        "{ devices: [\"wgdnone*\"] }",
        "{ links: [\"wgdnone*\"], write: true }",
        "{ login_attempts_per_minute: 100, max_response_bytes: 16384 }",
        CAP,
    ))
    .serve();
    let (_, key) = logged_in(&server);

    // Configurations, each a few KiB with its hooks.
    let hook = "echo ".repeat(200);
    for i in 0..30u64 {
        let mut c = seed_configuration(&format!("wg{i:02}"), &format!("10.{i}.0.1/16"), 51000 + i);
        c["PostUp"] = json!(hook);
        c["PreDown"] = json!(hook);
        assert_eq!(
            post(&server, As::Key(&key), "addWireguardConfiguration", c)["status"],
            true
        );
    }
    assert_too_large(
        &call(
            &server,
            As::Key(&key),
            "GET",
            "getWireguardConfigurations",
            None,
        ),
        30,
    );
    for limit in [1000, 4] {
        let names: Vec<String> = all_pages(&server, &key, "getWireguardConfigurations", limit)
            .iter()
            .flat_map(|p| p["data"].as_array().unwrap().clone())
            .map(|c| c["Name"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("wg{i:02}")).collect();
        assert_eq!(names, want, "limit {limit}");
    }

    // Peers of one configuration, some restricted.
    for _ in 0..3 {
        let r = post(
            &server,
            As::Key(&key),
            "addPeers/wg00",
            json!({ "bulkAdd": true, "bulkAddAmount": 15 }),
        );
        assert_eq!(r["status"], true, "{r}");
    }
    let info = |q: &str| {
        call(
            &server,
            As::Key(&key),
            "GET",
            &format!("getWireguardConfigurationInfo?configurationName=wg00{q}"),
            None,
        )
    };
    let first = info("&limit=1000").json();
    let ids: Vec<String> = first["data"]["configurationPeers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let restricted: Vec<String> = ids.iter().take(10).cloned().collect();
    let r = post(
        &server,
        As::Key(&key),
        "restrictPeers/wg00",
        json!({ "peers": restricted }),
    );
    assert_eq!(r["status"], true, "{r}");
    assert_too_large(&info(""), 45);
    for limit in [1000, 6] {
        let pages = all_pages(
            &server,
            &key,
            "getWireguardConfigurationInfo?configurationName=wg00",
            limit,
        );
        let mut on = Vec::new();
        let mut off = Vec::new();
        for p in &pages {
            assert_eq!(p["data"]["configurationInfo"]["Name"], "wg00", "{p}");
            on.extend(
                p["data"]["configurationPeers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_string()),
            );
            off.extend(
                p["data"]["configurationRestrictedPeers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_string()),
            );
        }
        assert_eq!((on.len(), off.len()), (35, 10), "limit {limit}");
        let mut all: Vec<String> = on.iter().chain(&off).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 45, "a peer listed twice");
        let mut want = restricted.clone();
        want.sort();
        off.sort();
        assert_eq!(off, want);
    }

    // API keys: the new key's secret gets out even when the list does not fit.
    let mut last_secret = String::new();
    let mut cut = false;
    for _ in 0..250 {
        let r = post(
            &server,
            As::Key(&key),
            "newDashboardAPIKey",
            json!({ "NeverExpire": true }),
        );
        assert_eq!(r["status"], true, "{r}");
        let data = r["data"].as_array().unwrap();
        if data.len() == 1 && r["message"].is_string() {
            assert_eq!(
                r["message"],
                "The key list is too large for one answer, so only the new key is listed: page getDashboardAPIKeys with ?limit= and &after="
            );
            last_secret = data[0]["Key"].as_str().unwrap().to_string();
            cut = true;
        }
    }
    assert!(cut, "250 keys never outgrew the cap");
    assert_eq!(
        get(&server, As::Key(&last_secret), "handshake")["status"],
        true,
        "the secret shown works"
    );
    assert_too_large(
        &call(&server, As::Key(&key), "GET", "getDashboardAPIKeys", None),
        251,
    );
    let keys: Vec<String> = all_pages(&server, &key, "getDashboardAPIKeys", 1000)
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().clone())
        .map(|k| k["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 251);
    assert_eq!(
        all_pages(&server, &key, "getDashboardAPIKeys", 100).len(),
        3
    );
    let r = post(
        &server,
        As::Key(&key),
        "deleteDashboardAPIKey",
        json!({ "Key": last_secret }),
    );
    assert_eq!(
        r,
        envelope(
            Value::Null,
            json!(
                "API key deleted; the key list is too large for one answer: page getDashboardAPIKeys with ?limit= and &after="
            ),
            true
        )
    );

    for (query, message) in [
        (
            "getDashboardAPIKeys?limit=0",
            "limit must be a whole number from 1 to 1000",
        ),
        (
            "getDashboardAPIKeys?limit=1001",
            "limit must be a whole number from 1 to 1000",
        ),
        (
            "getWireguardConfigurations?limit=x",
            "limit must be a whole number from 1 to 1000",
        ),
        (
            "getWireguardConfigurations?after=%01",
            "after must be the next of the previous page",
        ),
    ] {
        assert_eq!(
            get(&server, As::Key(&key), query),
            failure(message),
            "{query}"
        );
    }
}

// ---------------------------------------------------------------------------
// Concurrent changes: the final state is one of the serial orders
// ---------------------------------------------------------------------------

#[test]
fn concurrent_updates_of_one_peer_keep_both_changes() {
    let server = serve();
    let (_, key) = logged_in(&server);
    post(
        &server,
        As::Key(&key),
        "addWireguardConfiguration",
        seed_configuration("wg0", "10.0.0.1/24", 51820),
    );
    let r = post(&server, As::Key(&key), "addPeers/wg0", json!({}));
    let id = r["data"][0]["id"]
        .as_str()
        .expect("the new peer")
        .to_string();
    for round in 0..20 {
        let name = format!("name {round}");
        let dns = format!("1.1.1.{round}");
        std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                post(
                    &server,
                    As::Key(&key),
                    "updatePeerSettings/wg0",
                    json!({ "id": id, "name": name }),
                )
            });
            let b = scope.spawn(|| {
                post(
                    &server,
                    As::Key(&key),
                    "updatePeerSettings/wg0",
                    json!({ "id": id, "DNS": dns }),
                )
            });
            for w in [a, b] {
                let r = w.join().expect("an update");
                assert_eq!(r["status"], true, "{r}");
            }
        });
        let info = get(
            &server,
            As::Key(&key),
            "getWireguardConfigurationInfo?configurationName=wg0",
        );
        let peer = &info["data"]["configurationPeers"][0];
        assert_eq!(
            (peer["name"].as_str(), peer["DNS"].as_str()),
            (Some(name.as_str()), Some(dns.as_str())),
            "round {round}: one update overwrote the other"
        );
    }
}

#[test]
fn a_configuration_deleted_while_peers_are_added_leaves_no_peer_behind() {
    let server = serve();
    let (_, key) = logged_in(&server);
    // A bulk add of 1000 is long enough for the delete to land inside it.
    for round in 0..15u64 {
        let r = post(
            &server,
            As::Key(&key),
            "addWireguardConfiguration",
            seed_configuration("wg0", "10.0.0.1/16", 51820),
        );
        assert_eq!(r["status"], true, "{r}");
        std::thread::scope(|scope| {
            let add = scope.spawn(|| {
                call(
                    &server,
                    As::Key(&key),
                    "POST",
                    "addPeers/wg0",
                    Some(&json!({ "bulkAdd": true, "bulkAddAmount": 1000 })),
                )
            });
            std::thread::sleep(Duration::from_millis(3 * round));
            let r = post(
                &server,
                As::Key(&key),
                "deleteWireguardConfiguration",
                json!({ "Name": "wg0" }),
            );
            assert_eq!(r["status"], true, "{r}");
            let r = add.join().expect("the add");
            r.expect(200);
            let r = r.json();
            // Added before the delete, or refused after it.
            assert!(
                r["status"] == true || r == failure("Configuration does not exist"),
                "{r}"
            );
        });
        // A new configuration of that name starts without peers.
        let r = post(
            &server,
            As::Key(&key),
            "addWireguardConfiguration",
            seed_configuration("wg0", "10.0.0.1/16", 51820),
        );
        assert_eq!(r["status"], true, "{r}");
        let info = get(
            &server,
            As::Key(&key),
            "getWireguardConfigurationInfo?configurationName=wg0",
        );
        assert_eq!(
            info["data"]["configurationPeers"].as_array().map(Vec::len),
            Some(0),
            "round {round}: peers of the deleted configuration came back"
        );
        let r = post(
            &server,
            As::Key(&key),
            "deleteWireguardConfiguration",
            json!({ "Name": "wg0" }),
        );
        assert_eq!(r["status"], true, "{r}");
    }
}

#[test]
fn an_account_change_while_totp_is_turned_on_keeps_totp_on() {
    let server = serve();
    set_account(&server);
    for (round, delay) in [10u64, 50, 150].into_iter().enumerate() {
        std::thread::scope(|scope| {
            let change = scope.spawn(|| {
                admin(
                    &server,
                    "PUT",
                    "/account",
                    &json!({ "password": format!("a new password {round}") }),
                )
            });
            std::thread::sleep(Duration::from_millis(delay));
            admin(&server, "POST", "/totp", &json!({ "secret": TOTP_SECRET })).expect(201);
            change.join().expect("the change").expect(200);
        });
        let state = admin(&server, "GET", "/state", &Value::Null);
        assert_eq!(
            state.json()["totp_enabled"],
            true,
            "round {round}: TOTP was turned off: {state:?}"
        );
        admin(&server, "DELETE", "/totp", &Value::Null).expect(200);
    }
}

#[test]
fn a_login_racing_a_password_change_keeps_no_session() {
    let server = serve();
    set_account(&server);
    let mut old = PASSWORD.to_string();
    for (round, delay) in [10u64, 50, 150].into_iter().enumerate() {
        let new = format!("a new password {round}");
        let r = std::thread::scope(|scope| {
            let change =
                scope.spawn(|| admin(&server, "PUT", "/account", &json!({ "password": new })));
            std::thread::sleep(Duration::from_millis(delay));
            let r = login(&server, USER, &old, "");
            change.join().expect("the change").expect(200);
            r
        });
        // Logged in before the change (whose end of every session ends
        // this one too), or refused after it.
        if r.json()["status"] == true {
            let cookie = session_cookie(&r);
            call(&server, As::Cookie(&cookie), "GET", "handshake", None).expect(401);
        } else {
            assert_eq!(
                r.json(),
                failure("Sorry, your username or password is incorrect.")
            );
        }
        assert_eq!(login(&server, USER, &new, "").json()["status"], true);
        old = new;
    }
}

#[test]
fn concurrent_bulk_adds_never_give_out_one_address_twice() {
    let server = serve();
    let (_, key) = logged_in(&server);
    post(
        &server,
        As::Key(&key),
        "addWireguardConfiguration",
        seed_configuration("wg0", "10.0.0.1/24", 51820),
    );
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    post(
                        &server,
                        As::Key(&key),
                        "addPeers/wg0",
                        json!({ "bulkAdd": true, "bulkAddAmount": 20 }),
                    )
                })
            })
            .collect();
        for w in workers {
            let r = w.join().expect("a worker");
            assert_eq!(r["status"], true, "{r}");
        }
    });
    let info = get(
        &server,
        As::Key(&key),
        "getWireguardConfigurationInfo?configurationName=wg0",
    );
    let peers = info["data"]["configurationPeers"].as_array().unwrap();
    assert_eq!(peers.len(), 80, "{info}");
    let ips: std::collections::BTreeSet<&str> = peers
        .iter()
        .map(|p| p["allowed_ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 80, "an address was given out twice");
    assert!(
        ips.contains("10.0.0.2/32") && ips.contains("10.0.0.81/32"),
        "{ips:?}"
    );
}
