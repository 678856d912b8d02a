//! vpnpanel's lists past the response cap (plugins/vpnpanel/src/api/envelope.rs
//! `paging`, users.rs `list_all`): the panel runs with a small
//! `limits.max_response_bytes` (and the same `max_response_bytes` setting,
//! since a plugin cannot read its limits), and gets more users, sub-admins,
//! nodes and ports than fit in one answer. A caller that sends no paging
//! parameters gets a 400 in the envelope that says to page, never the
//! host's 500; one that pages with `limit` and `cursor` walks the whole
//! list, each entry once, every page within the cap.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::e2e::vpnpanel::{Panel, assert_fail, panel_yaml};

/// A panel whose answers may be at most `cap` bytes.
fn capped_panel(cap: usize) -> Panel {
    let yaml = panel_yaml(&format!(", max_response_bytes: {cap}"));
    assert!(
        yaml.contains("max_response_bytes: 33554432"),
        "the test config changed: {yaml}"
    );
    Panel::from_yaml(&yaml.replace(
        "max_response_bytes: 33554432",
        &format!("max_response_bytes: {cap}"),
    ))
}

#[track_caller]
fn too_large(p: &Panel, key: &str, path: &str, cap: usize) {
    let r = p.call(Some(key), "GET", path, &Value::Null);
    assert_fail(
        &r,
        400,
        &format!(
            "The answer is larger than this server's {cap}-byte response limit: \
             ask for it in pages with the query parameters limit and cursor."
        ),
    );
}

/// Every page of `path` (which has no query yet) with `limit`, in order;
/// each is within `cap`.
#[track_caller]
fn pages(p: &Panel, key: &str, path: &str, limit: usize, cap: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}?limit={limit}"),
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
        };
        let r = p.call(Some(key), "GET", &url, &Value::Null);
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert!(
            r.body.len() <= cap,
            "{url}: a page of {} bytes",
            r.body.len()
        );
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        let next = v["next_cursor"].as_str().map(str::to_string);
        out.push(v);
        match next {
            Some(n) => {
                assert!(out.len() < 10_000, "{path}: the pages never end");
                cursor = Some(n);
            }
            None => return out,
        }
    }
}

/// Each sub-admin's `(username, users)` by id.
type SubAdmins = BTreeMap<u64, (String, Vec<String>)>;
/// The entries of a list, from its pages.
type Entries = fn(&[Value]) -> Vec<Value>;

fn names(users: &Value) -> Vec<String> {
    users
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("username").to_string())
        .collect()
}

/// The main admin's list_all pages joined: main users, and each
/// sub-admin's `(username, users)` by id. Every user is on one page only.
fn join_main(pages: &[Value]) -> (Vec<String>, SubAdmins) {
    let mut main = Vec::new();
    let mut subs = SubAdmins::new();
    for page in pages {
        main.extend(names(&page["main_admin"]["users"]));
        for sa in page["sub_admins"].as_array().expect("sub_admins") {
            let id = sa["id"].as_u64().expect("id");
            let entry = subs.entry(id).or_insert_with(|| {
                (
                    sa["username"].as_str().expect("username").to_string(),
                    Vec::new(),
                )
            });
            assert_eq!(sa["username"], entry.0.as_str());
            entry.1.extend(names(&sa["users"]));
        }
    }
    (main, subs)
}

#[test]
fn list_all_past_the_response_cap_asks_to_page_and_its_pages_hold_every_user_once() {
    const CAP: usize = 64 * 1024;
    let p = capped_panel(CAP);
    // About 150 bytes a user: 1,000 of them are more than twice the cap.
    let r = p.create_user(&p.main, json!({ "bulk_count": 1000 }));
    r.expect(201);
    let mut main: Vec<String> = names(&json!(
        r.json()["created_users"]
            .as_array()
            .expect("created")
            .iter()
            .map(|n| json!({ "username": n }))
            .collect::<Vec<_>>()
    ));
    main.sort();
    let (big, big_key) = p.sub_admin("big", json!({}));
    let r = p.create_user(&big_key, json!({ "bulk_count": 600 }));
    r.expect(201);
    let mut big_users: Vec<String> = r.json()["created_users"]
        .as_array()
        .expect("created")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect();
    big_users.sort();
    let (empty, _) = p.sub_admin("empty", json!({}));
    let (small, small_key) = p.sub_admin("small", json!({}));
    for name in ["s_one", "s_two"] {
        p.create_user(&small_key, json!({ "username": name }))
            .expect(201);
    }

    // The original's clients, which send no paging parameters: a clear
    // answer instead of the host's 500, for both roles.
    too_large(&p, &p.main, "/users/list_all", CAP);
    too_large(&p, &big_key, "/users/list_all", CAP);
    // A list that fits is answered whole as before, without a cursor.
    let v = p
        .call(Some(&small_key), "GET", "/users/list_all", &Value::Null)
        .json();
    assert_eq!(v, json!({ "success": true, "users": v["users"].clone() }));
    assert_eq!(names(&v["users"]), ["s_one", "s_two"]);

    for limit in [1000, 137] {
        let (got_main, subs) = join_main(&pages(&p, &p.main, "/users/list_all", limit, CAP));
        assert_eq!(got_main, main, "limit {limit}");
        let want: SubAdmins = [
            (big, ("big".to_string(), big_users.clone())),
            (empty, ("empty".to_string(), Vec::new())),
            (
                small,
                (
                    "small".to_string(),
                    vec!["s_one".to_string(), "s_two".to_string()],
                ),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(subs, want, "limit {limit}");
    }
    let mine: Vec<String> = pages(&p, &big_key, "/users/list_all", 250, CAP)
        .iter()
        .flat_map(|page| names(&page["users"]))
        .collect();
    assert_eq!(mine, big_users);

    // Bad paging parameters are refused in the envelope.
    for (query, message) in [
        (
            "limit=0",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "limit=1001",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "limit=ten",
            "Invalid limit: expected a whole number from 1 to 1000.",
        ),
        (
            "cursor=../../etc",
            "Invalid cursor: pass the next_cursor of the page before.",
        ),
    ] {
        assert_fail(
            &p.main("GET", &format!("/users/list_all?{query}"), &Value::Null),
            400,
            message,
        );
    }
    // A sub-admin's cursor cannot reach into another owner's users.
    assert_fail(
        &p.call(
            Some(&big_key),
            "GET",
            "/users/list_all?cursor=main/user0001",
            &Value::Null,
        ),
        400,
        "Invalid cursor: pass the next_cursor of the page before.",
    );
}

#[test]
fn list_all_pages_of_one_entry_give_the_same_list_as_one_answer() {
    let p = Panel::start();
    for name in ["m_a", "m_b"] {
        p.create_user(&p.main, json!({ "username": name }))
            .expect(201);
    }
    p.sub_admin("no_users", json!({}));
    let (_, key) = p.sub_admin("two_users", json!({}));
    for name in ["t_a", "t_b"] {
        p.create_user(&key, json!({ "username": name })).expect(201);
    }
    p.sub_admin("last_empty", json!({}));
    let whole = p.main("GET", "/users/list_all", &Value::Null).json();
    let want = join_main(std::slice::from_ref(&whole));
    // Seven entries: two main users, three sub-admins, two of their users.
    for limit in [1, 2, 3] {
        let pages = pages(&p, &p.main, "/users/list_all", limit, usize::MAX);
        assert_eq!(
            pages.len(),
            7usize.div_ceil(limit),
            "limit {limit}: {pages:?}"
        );
        assert_eq!(join_main(&pages), want, "limit {limit}");
        // The summaries are the same bytes as in the whole answer.
        let mut users: Vec<Value> = pages
            .iter()
            .flat_map(|pg| {
                pg["main_admin"]["users"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        users.extend(
            pages
                .iter()
                .flat_map(|pg| pg["sub_admins"].as_array().cloned().unwrap_or_default())
                .flat_map(|sa| sa["users"].as_array().cloned().unwrap_or_default()),
        );
        let mut whole_users: Vec<Value> = whole["main_admin"]["users"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        whole_users.extend(
            whole["sub_admins"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .flat_map(|sa| sa["users"].as_array().cloned().unwrap_or_default()),
        );
        assert_eq!(users, whole_users, "limit {limit}");
    }
}

#[test]
fn every_other_list_past_the_response_cap_asks_to_page_and_pages_through_it_all() {
    const CAP: usize = 2048;
    let p = capped_panel(CAP);
    // About 300 bytes a sub-admin, 600 a node, 150 a custom port, 200 a
    // profile link: each list below is several times the cap.
    for i in 0..40 {
        p.sub_admin(&format!("reseller{i:02}"), json!({}));
    }
    for i in 0..40 {
        let body = json!({ "name": format!("Node {i}"), "ip_address": format!("192.0.2.{}", i + 1), "ssh_password": "pass" });
        p.main("POST", "/nodes", &body).expect(202);
    }
    for port in 0..40 {
        p.main(
            "POST",
            "/public/ports",
            &json!({ "public_port": 2000 + port, "protocol": "tcp", "server_ids": ["main"] }),
        )
        .expect(200);
    }
    p.create_user(&p.main, json!({ "username": "linked" }))
        .expect(201);
    for i in 0..40 {
        p.create_user(&p.main, json!({ "username": format!("served{i:02}"), "l2tp_password": "secret-password-long-enough", "enable_l2tp": true })).expect(201);
    }

    let lists: [(&str, Entries, usize); 6] = [
        ("/sub_admins", |pgs| field(pgs, "sub_admins"), 40),
        ("/nodes", |pgs| field(pgs, "nodes"), 40),
        (
            "/public/ports",
            |pgs| [field(pgs, "default_ports"), field(pgs, "custom_ports")].concat(),
            41 + 40,
        ),
        ("/public/servers_for_ports", |pgs| field(pgs, "servers"), 41),
        (
            "/users/linked/all_ovpn_links",
            |pgs| field(pgs, "links"),
            41,
        ),
        ("/traffic/users", |pgs| field(pgs, "users"), 41),
    ];
    for (path, entries, count) in lists {
        too_large(&p, &p.main, path, CAP);
        let all = entries(&pages(&p, &p.main, path, 7, CAP));
        assert_eq!(all.len(), count, "{path}");
        let distinct: BTreeSet<String> = all.iter().map(Value::to_string).collect();
        assert_eq!(distinct.len(), count, "{path}: an entry came twice");
    }
    // all_selectable_servers is the same list as servers_for_ports.
    too_large(&p, &p.main, "/public/all_selectable_servers", CAP);
    assert_fail(
        &p.main("GET", "/sub_admins?cursor=x", &Value::Null),
        400,
        "Invalid cursor: pass the next_cursor of the page before.",
    );
}

fn field(pages: &[Value], name: &str) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| {
            p[name]
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("{name} in {p}"))
        })
        .collect()
}
