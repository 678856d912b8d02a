//! The `net` capability through the fixture plugin, against a real network
//! namespace: each test makes its own (`wg-test-<pid>-<n>`) with veth pairs,
//! addresses and neighbour entries, and deletes it on drop.
//!
//! Making a namespace needs root and iproute2's `ip`; without them a test
//! prints a `SKIP` line saying why (on the real stderr, past the test
//! harness's capture) and passes. CI runs as root, so there they run.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::e2e::harness::{Plugin, Server, Setup, config_yaml, describe};

/// Every grant the fixture imports besides `net`.
const OTHER_GRANTS: &str = "kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, wireguard: { devices: [fx-no-device] }";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of the test's own, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh, empty namespace; `None` (after a `SKIP` line naming `test`
    /// and the reason) where this machine cannot make one.
    pub fn new(test: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            skip(
                test,
                &format!("needs root to create a network namespace (running as uid {uid})"),
            );
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            skip(
                test,
                "needs `ip` from iproute2, which is not installed (apt-get install iproute2)",
            );
            return None;
        }
        let name = format!(
            "wg-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name]);
        Some(Netns { name })
    }

    /// The namespace file, as an absolute path.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n <ns> args...`; panics with ip's stderr when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run_ip(&all);
    }

    /// `ip -n <ns> -j args...`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-n", &self.name, "-j"];
        all.extend_from_slice(args);
        let out = run_ip(&all);
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "ip {all:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        })
    }

    /// The link as `ip -j link show` describes it.
    pub fn link(&self, name: &str) -> Value {
        self.ip_json(&["link", "show", "dev", name])[0].clone()
    }

    /// `(address, prefix length)` of every address on the link.
    pub fn addresses(&self, link: &str) -> BTreeSet<(String, u64)> {
        let v = self.ip_json(&["addr", "show", "dev", link]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["local"].as_str().unwrap_or_default().to_string(),
                            i["prefixlen"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the link is administratively up.
    pub fn is_up(&self, link: &str) -> bool {
        let flags = self.link(link)["flags"].clone();
        flags
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_ip(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        describe(&out)
    );
    out.stdout
}

/// Written past the test harness's output capture, so that it is seen.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** SKIP net::{test}: {why} ***\n");
}

/// The guest network every test starts from: `guest0` (veth, peer
/// `uplink0`) with 10.9.0.1/24 and 2001:db8:9::1/64, and `other0` (veth,
/// peer `other1`) with 10.8.0.1/24 and the alternative name `guestalt`,
/// which matches `guest*` though the link does not; every link down.
fn guest_network(test: &str) -> Option<Netns> {
    let ns = Netns::new(test)?;
    ns.ip(&[
        "link", "add", "guest0", "type", "veth", "peer", "name", "uplink0",
    ]);
    ns.ip(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "guest0"]);
    ns.ip(&["addr", "add", "2001:db8:9::1/64", "dev", "guest0"]);
    ns.ip(&["addr", "add", "10.8.0.1/24", "dev", "other0"]);
    ns.ip(&[
        "link", "property", "add", "dev", "other0", "altname", "guestalt",
    ]);
    Some(ns)
}

/// The fixture at `/fx/` with `net` granted as the YAML flow mapping `net`.
fn serve(net: &str) -> Server {
    Server::start(&[Plugin::fixture("fx").grants(&format!("{{ {OTHER_GRANTS}, net: {net} }}"))])
}

fn names(links: &Value) -> BTreeSet<String> {
    links["links"]
        .as_array()
        .unwrap_or_else(|| panic!("no links list: {links}"))
        .iter()
        .map(|l| l["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn has_address(link: &Value, address: &str, prefix_len: u64) -> bool {
    link["addresses"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x["address"] == address && x["prefix_len"] == prefix_len)
    })
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

#[test]
fn only_links_matching_the_grant_are_listed_and_naming_another_is_denied() {
    let Some(ns) =
        guest_network("only_links_matching_the_grant_are_listed_and_naming_another_is_denied")
    else {
        return;
    };
    let server = serve(&format!(
        "{{ links: [\"guest*\", \"uplink?\"], netns: {} }}",
        ns.name
    ));

    let r = server.get("/fx/net/links");
    r.expect(200);
    let body = r.json();
    assert_eq!(
        names(&body),
        BTreeSet::from(["guest0".to_string(), "uplink0".to_string()]),
        "{body}"
    );

    let guest = body["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "guest0")
        .unwrap()
        .clone();
    let kernel = ns.link("guest0");
    assert_eq!(guest["index"], kernel["ifindex"], "{guest}");
    assert_eq!(guest["mac"], kernel["address"], "{guest}");
    assert_eq!(guest["mtu"], 1500, "{guest}");
    assert_eq!(guest["admin_up"], false, "{guest}");
    assert_eq!(guest["oper_state"], "down", "{guest}");
    assert!(has_address(&guest, "10.9.0.1", 24), "{guest}");
    assert!(has_address(&guest, "2001:db8:9::1", 64), "{guest}");
    assert!(
        !has_address(&guest, "10.8.0.1", 24),
        "other0's address on guest0: {guest}"
    );

    let r = server.get("/fx/net/links/guest0");
    r.expect(200);
    assert_eq!(r.json(), guest);

    // A link in the same namespace outside the patterns, an existing one
    // and a missing one alike: denied, never "not found".
    for name in ["other0", "other1", "lo", "eth0"] {
        expect_error(
            &server.get(&format!("/fx/net/links/{name}")),
            403,
            &format!("link `{name}` is outside the grant"),
        );
        expect_error(
            &server.get(&format!("/fx/net/neighbours?link={name}")),
            403,
            "outside the grant",
        );
    }
    // Inside the patterns but absent: not found.
    expect_error(&server.get("/fx/net/links/guest9"), 404, "no link `guest9`");
    expect_error(
        &server.get("/fx/net/links/uplink10"),
        403,
        "outside the grant",
    );
    // The kernel finds other0 by its alternative name; the grant does not.
    expect_error(
        &server.get("/fx/net/links/guestalt"),
        404,
        "no link `guestalt`",
    );
    expect_error(
        &server.get("/fx/net/neighbours?link=guestalt"),
        404,
        "no link `guestalt`",
    );
}

#[test]
fn neighbours_of_granted_links_come_from_the_namespace_with_their_mac_and_state() {
    let Some(ns) = guest_network(
        "neighbours_of_granted_links_come_from_the_namespace_with_their_mac_and_state",
    ) else {
        return;
    };
    // Neighbour entries need the links up (going down flushes them).
    for link in ["guest0", "uplink0", "other0", "other1"] {
        ns.ip(&["link", "set", link, "up"]);
    }
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.5",
        "lladdr",
        "02:00:00:00:00:05",
        "dev",
        "guest0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.7",
        "lladdr",
        "02:00:00:00:00:07",
        "dev",
        "guest0",
        "nud",
        "stale",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "2001:db8:9::5",
        "lladdr",
        "02:00:00:00:00:06",
        "dev",
        "guest0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "10.8.0.5",
        "lladdr",
        "02:00:00:00:08:05",
        "dev",
        "other0",
        "nud",
        "permanent",
    ]);
    // The namespace by absolute path this time.
    let server = serve(&format!(
        "{{ links: [\"guest*\"], netns: \"{}\" }}",
        ns.path()
    ));

    let entries = |r: &crate::e2e::http::Response| -> BTreeSet<String> {
        r.expect(200);
        r.json()["neighbours"]
            .as_array()
            .unwrap_or_else(|| panic!("no neighbours list: {}", r.text()))
            .iter()
            .map(|n| {
                format!(
                    "{} {} {} {}",
                    n["link"].as_str().unwrap(),
                    n["address"].as_str().unwrap(),
                    n["mac"],
                    n["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expected: BTreeSet<String> = [
        "guest0 10.9.0.5 \"02:00:00:00:00:05\" permanent",
        "guest0 10.9.0.7 \"02:00:00:00:00:07\" stale",
        "guest0 2001:db8:9::5 \"02:00:00:00:00:06\" permanent",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // Every granted link: other0's entry is not among them.
    let all = entries(&server.get("/fx/net/neighbours"));
    let on_guest0: BTreeSet<String> = all
        .iter()
        .filter(|e| e.starts_with("guest0 "))
        .cloned()
        .collect();
    assert!(all.iter().all(|e| e.starts_with("guest0 ")), "{all:?}");
    // The kernel may add entries of its own (IPv6 multicast routers...);
    // ours must be there exactly as made.
    assert!(expected.is_subset(&on_guest0), "{all:?}");
    assert!(!all.iter().any(|e| e.contains("10.8.0.5")), "{all:?}");
    // One link.
    let one = entries(&server.get("/fx/net/neighbours?link=guest0"));
    assert!(expected.is_subset(&one), "{one:?}");
    assert_eq!(one, on_guest0);

    expect_error(
        &server.get("/fx/net/neighbours?link=other0"),
        403,
        "link `other0` is outside the grant",
    );
    expect_error(
        &server.get("/fx/net/neighbours?link=guest7"),
        404,
        "no link `guest7`",
    );
}

#[test]
fn a_write_grant_really_sets_links_up_and_down_and_adds_and_removes_addresses() {
    let Some(ns) =
        guest_network("a_write_grant_really_sets_links_up_and_down_and_adds_and_removes_addresses")
    else {
        return;
    };
    let server = serve(&format!(
        "{{ links: [\"guest*\"], write: true, netns: {} }}",
        ns.name
    ));

    assert!(!ns.is_up("guest0"));
    server
        .post("/fx/net/up?link=guest0&up=true", b"")
        .expect(204);
    assert!(ns.is_up("guest0"), "{}", ns.link("guest0"));
    let r = server.get("/fx/net/links/guest0");
    assert_eq!(r.json()["admin_up"], true, "{}", r.text());
    server
        .post("/fx/net/up?link=guest0&up=false", b"")
        .expect(204);
    assert!(!ns.is_up("guest0"), "{}", ns.link("guest0"));
    expect_error(
        &server.post("/fx/net/up?link=guest9&up=true", b""),
        404,
        "no link `guest9`",
    );

    let addr = |address: &str, prefix_len: u64, remove: bool| json!({ "link": "guest0", "address": address, "prefix_len": prefix_len, "remove": remove });
    server
        .post_json("/fx/net/addr", &addr("10.9.1.1", 24, false))
        .expect(204);
    server
        .post_json("/fx/net/addr", &addr("2001:db8:1::1", 64, false))
        .expect(204);
    let now = ns.addresses("guest0");
    assert!(
        now.contains(&("10.9.1.1".into(), 24)) && now.contains(&("2001:db8:1::1".into(), 64)),
        "{now:?}"
    );
    let r = server.get("/fx/net/links/guest0");
    assert!(has_address(&r.json(), "10.9.1.1", 24), "{}", r.text());
    expect_error(
        &server.post_json("/fx/net/addr", &addr("10.9.1.1", 24, false)),
        500,
        "already on link `guest0`",
    );

    server
        .post_json("/fx/net/addr", &addr("10.9.1.1", 24, true))
        .expect(204);
    server
        .post_json("/fx/net/addr", &addr("2001:db8:1::1", 64, true))
        .expect(204);
    let now = ns.addresses("guest0");
    assert!(
        !now.contains(&("10.9.1.1".into(), 24)) && !now.contains(&("2001:db8:1::1".into(), 64)),
        "{now:?}"
    );
    assert!(
        now.contains(&("10.9.0.1".into(), 24)),
        "only the asked-for address goes: {now:?}"
    );
    expect_error(
        &server.post_json("/fx/net/addr", &addr("10.9.1.1", 24, true)),
        404,
        "not on link `guest0`",
    );

    // Refused before the kernel sees them.
    expect_error(
        &server.post_json("/fx/net/addr", &addr("10.9.1.300", 24, false)),
        400,
        "not an IPv4 or IPv6 address",
    );
    expect_error(
        &server.post_json("/fx/net/addr", &addr("10.9.1.1", 33, false)),
        400,
        "prefix length 33",
    );
    expect_error(
        &server.post_json("/fx/net/addr", &addr("2001:db8::1", 129, false)),
        400,
        "prefix length 129",
    );

    // Write access covers only the granted links.
    let before = ns.addresses("other0");
    expect_error(
        &server.post("/fx/net/up?link=other0&up=true", b""),
        403,
        "link `other0` is outside the grant",
    );
    let other = json!({ "link": "other0", "address": "10.8.1.1", "prefix_len": 24 });
    expect_error(
        &server.post_json("/fx/net/addr", &other),
        403,
        "link `other0` is outside the grant",
    );
    let other =
        json!({ "link": "other0", "address": "10.8.0.1", "prefix_len": 24, "remove": true });
    expect_error(
        &server.post_json("/fx/net/addr", &other),
        403,
        "link `other0` is outside the grant",
    );
    // Nor through other0's alternative name, which matches the patterns.
    expect_error(
        &server.post("/fx/net/up?link=guestalt&up=true", b""),
        404,
        "no link `guestalt`",
    );
    let other = json!({ "link": "guestalt", "address": "10.8.1.1", "prefix_len": 24 });
    expect_error(
        &server.post_json("/fx/net/addr", &other),
        404,
        "no link `guestalt`",
    );
    assert!(!ns.is_up("other0"));
    assert_eq!(ns.addresses("other0"), before);
}

#[test]
fn without_write_in_the_grant_changes_are_refused_and_nothing_changes() {
    let Some(ns) =
        guest_network("without_write_in_the_grant_changes_are_refused_and_nothing_changes")
    else {
        return;
    };
    let server = serve(&format!("{{ links: [\"guest*\"], netns: {} }}", ns.name));
    let before = ns.addresses("guest0");

    expect_error(
        &server.post("/fx/net/up?link=guest0&up=true", b""),
        403,
        "net.write",
    );
    assert!(!ns.is_up("guest0"));
    let add = json!({ "link": "guest0", "address": "10.9.1.1", "prefix_len": 24 });
    expect_error(&server.post_json("/fx/net/addr", &add), 403, "net.write");
    let remove =
        json!({ "link": "guest0", "address": "10.9.0.1", "prefix_len": 24, "remove": true });
    expect_error(&server.post_json("/fx/net/addr", &remove), 403, "net.write");
    assert_eq!(ns.addresses("guest0"), before);

    // Reading is still allowed.
    let r = server.get("/fx/net/links");
    r.expect(200);
    assert_eq!(names(&r.json()), BTreeSet::from(["guest0".to_string()]));
}

#[test]
fn a_namespace_deleted_and_made_again_under_its_name_is_followed() {
    let Some(ns) = guest_network("a_namespace_deleted_and_made_again_under_its_name_is_followed")
    else {
        return;
    };
    let server = serve(&format!("{{ links: [\"guest*\"], netns: {} }}", ns.name));
    let r = server.get("/fx/net/links");
    r.expect(200);
    assert_eq!(names(&r.json()), BTreeSet::from(["guest0".to_string()]));

    run_ip(&["netns", "del", &ns.name]);
    expect_error(
        &server.get("/fx/net/links"),
        500,
        &format!("network namespace {}", ns.path()),
    );

    run_ip(&["netns", "add", &ns.name]);
    ns.ip(&[
        "link", "add", "guest1", "type", "veth", "peer", "name", "uplink1",
    ]);
    let r = server.get("/fx/net/links");
    r.expect(200);
    assert_eq!(
        names(&r.json()),
        BTreeSet::from(["guest1".to_string()]),
        "the new namespace, not the old one"
    );
}

/// `check` refuses the config (exit 2) with a message naming `key`.
#[track_caller]
fn assert_config_error(grants: &str, key: &str, message: &str) {
    let setup = Setup::with_yaml(&config_yaml(&[Plugin::fixture("fx").grants(grants)]));
    let out = setup.check();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{grants}\n{}", describe(&out));
    assert!(
        all.contains(key) && all.contains(message),
        "{grants}: wanted {key:?} and {message:?}\n{}",
        describe(&out)
    );
}

#[test]
fn a_net_grant_without_patterns_or_with_bad_ones_is_a_config_error() {
    for (net, key, message) in [
        (
            "{ links: [] }",
            "plugins[0].grants.net.links",
            "at least one pattern",
        ),
        (
            "{ links: [guest0, \"eth/0\"] }",
            "plugins[0].grants.net.links[1]",
            "`eth/0`",
        ),
        (
            "{ links: [\"[a-z]*\"] }",
            "plugins[0].grants.net.links[0]",
            "wildcards * and ?",
        ),
        (
            "{ links: [guest0], netns: \"../../proc/1/ns/net\" }",
            "plugins[0].grants.net.netns",
            "`../../proc/1/ns/net`",
        ),
        (
            "{ links: [guest0], netns: \"a/b\" }",
            "plugins[0].grants.net.netns",
            "absolute path",
        ),
        (
            "{ links: [guest0], rw: true }",
            "unknown field `rw`",
            "links",
        ),
        ("{ write: true }", "missing field `links`", "net"),
    ] {
        assert_config_error(&format!("{{ {OTHER_GRANTS}, net: {net} }}"), key, message);
    }
}

#[test]
fn a_plugin_importing_net_without_the_grant_is_refused_at_load() {
    let setup = Setup::with_yaml(&config_yaml(&[
        Plugin::fixture("fx").grants(&format!("{{ {OTHER_GRANTS} }}"))
    ]));
    let out = setup.check();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        all.contains("wasmgate:plugin/net") && all.contains("`fx`"),
        "{}",
        describe(&out)
    );
}
