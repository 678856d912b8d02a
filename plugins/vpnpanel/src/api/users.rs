//! `/users...`: routing, the request's fields, and the answers: get, sub
//! URL, OpenVPN links and list_all (read here, paging through the stored
//! summaries); every change is [`crate::domain::users`].

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use wasmgate_sdk::stream::Stream;
use wasmgate_sdk::{Request, Response};

use crate::api::envelope::{self, Reply};
use crate::api::sub;
use crate::domain::caller::Caller;
use crate::domain::servers;
use crate::domain::settings;
use crate::domain::users::{self, MSG_USER_NOT_FOUND, find};
use crate::fail::{self, Fail};
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;
use crate::validate;

pub fn route(req: &Request, caller: &Caller, rest: &[&str]) -> Reply {
    match (req.method(), rest) {
        ("GET", ["list_all"]) => list_all(req, caller),
        ("POST", []) => create(req, caller),
        ("GET", [name]) => get(caller, name),
        ("PUT", [name]) => edit(req, caller, name),
        ("DELETE", [name]) => delete(caller, name),
        ("POST", [name, "toggle"]) => toggle(caller, name),
        ("POST", [name, "revoke"]) => revoke(req, caller, name),
        ("POST", [name, "reset_traffic"]) => reset_traffic(caller, name),
        ("GET", [name, "sub"]) => sub_url(req, caller, name),
        ("GET", [name, "all_ovpn_links"]) => ovpn_links(req, caller, name),
        _ => Ok(envelope::not_found_route()),
    }
}

fn create(req: &Request, caller: &Caller) -> Reply {
    let body = envelope::json_object_or_empty(req)?;
    let created = users::create(caller, &body)?;
    Ok(envelope::ok_with(
        201,
        json!({ "message": "Users created successfully.", "created_users": created }),
    ))
}

fn get(caller: &Caller, name: &str) -> Reply {
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    let now = util::now_secs();
    let endpoints = servers::endpoints(&u)?;
    let servers = servers::servers()?;
    let usable: Vec<&servers::Server> = servers.iter().filter(|s| u.may_use(&s.id)).collect();
    let openvpn: Vec<Value> = if u.enable_openvpn {
        usable
            .iter()
            .map(|s| json!({ "id": s.id, "name": s.name, "is_tunnel": false, "address": s.host }))
            .collect()
    } else {
        Vec::new()
    };
    let active = u.active_connections(now);
    let psk = settings::psk()?;
    Ok(envelope::ok_with(
        200,
        json!({
            "username": u.username,
            "is_active": u.is_active(),
            "status": u.status(),
            "is_online": active > 0,
            "active_connections": active,
            "max_clients": u.max_clients,
            "data_limit": u.data_limit,
            "data_limit_unit": u.data_limit_unit,
            "data_limit_bytes": u.data_limit_bytes,
            "total_traffic_bytes": u.traffic_bytes,
            "activation_type": u.activation_type,
            "pending_activation_days": u.pending_activation_days,
            "activated_at": u.activated_at,
            "expiry_date": u.expiry_at.map(validate::format_date),
            "sub_admin_id": u.sub_admin_id,
            "nodes": u.nodes,
            "notes": u.notes,
            "protocols": {
                "openvpn": u.enable_openvpn,
                "l2tp": u.enable_l2tp,
                "cisco": u.enable_cisco,
                "wg1": u.enable_wg1,
            },
            "wireguard": sub::wg_user_view(&u),
            "openvpn_servers": openvpn,
            "openvpn_profiles": endpoints.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            "l2tp": u.enable_l2tp.then(|| json!({
                "servers": usable.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
                "username": u.username, "password": u.l2tp_password, "psk": psk,
            })),
            "cisco": u.enable_cisco.then(|| json!({
                "servers": usable.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
                "username": u.username, "password": u.cisco_password,
            })),
            "certificate_generation": u.cert_generation,
            "certificate_pending": u.cert_issued < u.cert_generation,
            "created_at": u.created_at,
        }),
    ))
}

fn edit(req: &Request, caller: &Caller, name: &str) -> Reply {
    let body = envelope::json_object(req);
    users::edit(caller, name, body.as_ref())?;
    Ok(envelope::ok("User updated successfully."))
}

fn toggle(caller: &Caller, name: &str) -> Reply {
    let (enabled, active) = users::toggle(caller, name)?;
    Ok(envelope::ok_with(
        200,
        json!({ "message": "User toggled", "enabled": enabled, "is_active": active }),
    ))
}

fn sub_link(req: &Request, u: &User) -> String {
    format!(
        "{}/sub/{}?token={}",
        envelope::public_base(req),
        u.username,
        u.token
    )
}

fn revoke(req: &Request, caller: &Caller, name: &str) -> Reply {
    let u = users::revoke(caller, name)?;
    Ok(envelope::ok_with(
        200,
        json!({
            "message": "Token revoked instantly. Certificate generation running in background.",
            "new_subscription_url": sub_link(req, &u),
        }),
    ))
}

fn reset_traffic(caller: &Caller, name: &str) -> Reply {
    let re_enabled = users::reset_traffic(caller, name)?;
    Ok(envelope::ok_with(
        200,
        json!({ "message": format!("Traffic reset for '{name}'."), "user_re_enabled": re_enabled }),
    ))
}

fn delete(caller: &Caller, name: &str) -> Reply {
    users::delete(caller, name)?;
    Ok(envelope::ok(&format!(
        "User '{name}' deleted successfully."
    )))
}

fn sub_url(req: &Request, caller: &Caller, name: &str) -> Reply {
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    Ok(envelope::ok_with(
        200,
        json!({ "sub_url": sub_link(req, &u) }),
    ))
}

fn ovpn_links(req: &Request, caller: &Caller, name: &str) -> Reply {
    let page = envelope::paging(req)?;
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    let base = envelope::public_base(req);
    let links: Vec<Value> = if u.enable_openvpn {
        servers::endpoints(&u)?
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "server": e.server,
                    "protocol": e.protocol,
                    "port": e.port,
                    "url": format!("{base}/download/{}/{}.ovpn?token={}", u.username, e.name, u.token),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut fields = Map::new();
    fields.insert("username".into(), json!(u.username));
    envelope::list_answer(page.as_ref(), "links", links, fields)
}

/// One entry of list_all, in the order of the whole list: the main admin's
/// users, then each sub-admin followed by its users. `at` is the entry's
/// place in that order (a summary's kv key without `ls/`; a sub-admin's is
/// its owner segment and `/`, which sorts before its users), and the
/// cursor of the page that ends with it.
enum Entry {
    User { at: String, summary: Vec<u8> },
    Head { at: String },
}

impl Entry {
    fn at(&self) -> &str {
        match self {
            Entry::User { at, .. } | Entry::Head { at, .. } => at,
        }
    }
}

/// Summaries under `ls/<owner>/` after place `after`, until `out` holds `want`.
fn summaries(
    owner: &str,
    after: Option<&str>,
    want: usize,
    out: &mut Vec<Entry>,
) -> Result<(), Fail> {
    if out.len() >= want {
        return Ok(());
    }
    let after = after.map(|a| format!("ls/{a}"));
    store::scan(&format!("ls/{owner}/"), after.as_deref(), |key, summary| {
        let at = key.strip_prefix("ls/").unwrap_or(&key).to_string();
        out.push(Entry::User { at, summary });
        Ok(out.len() < want)
    })
}

/// The main admin's list_all entries after place `after`, until `want`, and
/// the `{id, username}` of each sub-admin (by owner segment) they reach.
fn main_entries(
    after: Option<&str>,
    want: usize,
) -> Result<(Vec<Entry>, BTreeMap<String, Value>), Fail> {
    let mut out = Vec::new();
    summaries("main", after, want, &mut out)?;
    // Only the sub-admins from the cursor's on: a page never reads the
    // records of the sub-admins before it.
    let first_sa = after
        .and_then(|a| a.strip_prefix("sa"))
        .and_then(|a| a.get(..10))
        .and_then(|id| id.parse::<u64>().ok())
        .map(|id| store::users::sa_key(id.saturating_sub(1)));
    let mut heads = Vec::new();
    store::scan("sa/", first_sa.as_deref(), |_, bytes| {
        if out.len() + heads.len() >= want {
            return Ok(false);
        }
        let sa: SubAdmin = serde_json::from_slice(&bytes)
            .map_err(|e| fail::internal(format!("sub-admin record: {e}")))?;
        heads.push(sa);
        Ok(true)
    })?;
    let mut names = BTreeMap::new();
    for sa in heads {
        if out.len() >= want {
            break;
        }
        let owner = store::users::sub_owner(sa.id);
        let head = format!("{owner}/");
        // Entirely before the cursor: this sub-admin and its users were on
        // earlier pages.
        if after.is_some_and(|a| a > head.as_str() && !a.starts_with(&head)) {
            continue;
        }
        names.insert(
            owner.clone(),
            json!({ "id": sa.id, "username": sa.username }),
        );
        // A sub-admin whose users continue from the page before is not an
        // entry again; its block still opens this page.
        if after.is_none_or(|a| a < head.as_str()) {
            out.push(Entry::Head { at: head.clone() });
        }
        summaries(
            &owner,
            after.filter(|a| a.starts_with(&head)),
            want,
            &mut out,
        )?;
    }
    Ok((out, names))
}

/// A JSON array of the stored summaries among `entries`, joined without
/// parsing.
fn join_users<'a>(entries: impl Iterator<Item = &'a Entry>, out: &mut Vec<u8>) {
    out.push(b'[');
    let mut first = true;
    for e in entries {
        if let Entry::User { summary, .. } = e {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(summary);
        }
    }
    out.push(b']');
}

/// The owner segment of a list_all place.
fn owner_of(at: &str) -> &str {
    at.split('/').next().unwrap_or_default()
}

/// `{id, username, users}` of the sub-admin whose entries `block` are.
fn sub_admin_block(block: &[&Entry], names: &BTreeMap<String, Value>, out: &mut Vec<u8>) {
    let owner = block.first().map(|e| owner_of(e.at())).unwrap_or_default();
    let head = names
        .get(owner)
        .map(Value::to_string)
        .unwrap_or_else(|| "{}".into());
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    if head.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(br#""users":"#);
    join_users(block.iter().copied(), out);
    out.push(b'}');
}

/// `GET /users/list_all`: every user the caller may see, or one page of
/// them ([`envelope::paging`]). The cursor is the place of the page's last
/// entry, so pages stay right while users come and go.
fn list_all(req: &Request, caller: &Caller) -> Reply {
    let page = envelope::paging(req)?;
    let after = page.as_ref().and_then(|p| p.cursor.clone());
    if let Some(a) = &after {
        let valid = match caller {
            Caller::Sub { .. } => a
                .strip_prefix(&format!("{}/", caller.owner()))
                .is_some_and(validate::is_valid_name),
            Caller::Main => a.split_once('/').is_some_and(|(owner, name)| {
                (owner == "main" || owner.len() == 12 && owner.starts_with("sa"))
                    && (name.is_empty() || validate::is_valid_name(name))
            }),
        };
        if !valid {
            return Err(envelope::bad_cursor());
        }
    }
    if page.is_none() {
        return whole_list_all(caller);
    }
    // One more than the page: whether there is a next page.
    let want = page.as_ref().map_or(usize::MAX, |p| p.limit + 1);
    let (entries, names) = match caller {
        Caller::Sub { .. } => {
            let mut out = Vec::new();
            summaries(&caller.owner(), after.as_deref(), want, &mut out)?;
            (out, BTreeMap::new())
        }
        Caller::Main => main_entries(after.as_deref(), want)?,
    };
    let all = entries.len();
    let render = |k: usize| {
        let entries = &entries[..k];
        let mut out = Vec::with_capacity(4096);
        match caller {
            Caller::Sub { .. } => {
                out.extend_from_slice(br#"{"success":true,"users":"#);
                join_users(entries.iter(), &mut out);
            }
            Caller::Main => {
                out.extend_from_slice(br#"{"success":true,"main_admin":{"users":"#);
                join_users(
                    entries.iter().take_while(|e| e.at().starts_with("main/")),
                    &mut out,
                );
                out.extend_from_slice(br#"},"sub_admins":["#);
                // One block per sub-admin: its head, or its users continued from
                // the page before, and the users that follow on this page.
                let rest: Vec<&Entry> = entries
                    .iter()
                    .skip_while(|e| e.at().starts_with("main/"))
                    .collect();
                let mut blocks = rest.chunk_by(|a, b| {
                    matches!(b, Entry::User { .. }) && owner_of(a.at()) == owner_of(b.at())
                });
                if let Some(block) = blocks.next() {
                    sub_admin_block(block, &names, &mut out);
                    for block in blocks {
                        out.push(b',');
                        sub_admin_block(block, &names, &mut out);
                    }
                }
                out.push(b']');
            }
        }
        if page.is_some() {
            // The place of the page's last entry, when entries follow it.
            let next = (k < all)
                .then(|| k.checked_sub(1).map(|i| entries[i].at()))
                .flatten();
            out.extend_from_slice(br#","next_cursor":"#);
            out.extend_from_slice(json!(next).to_string().as_bytes());
        }
        out.push(b'}');
        out
    };
    let body = match &page {
        None => render(all),
        Some(p) => envelope::fitting(all.min(p.limit), render),
    };
    Ok(Response::bytes(200, "application/json", body))
}

/// The most bytes one stored summary takes in list_all, its comma
/// included: a 32-byte name, the longest status, two 20-digit numbers and
/// a date, with room to spare.
const MAX_SUMMARY_BYTES: u64 = 256;
/// The same for a sub-admin's block around its users.
const MAX_HEAD_BYTES: u64 = 128;

/// The status of the [`Fail`] a client that went away gives: never sent.
const GONE: u16 = 499;

/// `GET /users/list_all` without paging: the original's whole answer,
/// streamed as it is read, so that neither the plugin nor the host ever
/// holds it whole. An answer that would be over the response cap is the
/// 400 that asks for pages, decided before the first byte: at once when
/// the stored counts bound it below the cap, else by measuring it first.
fn whole_list_all(caller: &Caller) -> Reply {
    let heads = match caller {
        Caller::Sub { .. } => Vec::new(),
        Caller::Main => {
            let mut heads = Vec::new();
            store::scan("sa/", None, |_, bytes| {
                let sa: SubAdmin = serde_json::from_slice(&bytes)
                    .map_err(|e| fail::internal(format!("sub-admin record: {e}")))?;
                heads.push(sa);
                Ok(true)
            })?;
            heads
        }
    };
    let cap = envelope::response_cap() as u64;
    // Each sub-admin's record keeps its users' count (in the transactions
    // that add or remove them); the main admin's and a sub-admin caller's
    // own are counted.
    let own = match caller {
        Caller::Sub { .. } => caller.owner(),
        Caller::Main => "main".to_string(),
    };
    let users = wasmgate_sdk::kv::count(&format!("ls/{own}/"))?
        + heads.iter().map(|sa| sa.users_count).sum::<u64>();
    let bound = 64 + MAX_HEAD_BYTES * heads.len() as u64 + MAX_SUMMARY_BYTES * users;
    if bound > cap {
        let mut size = 0u64;
        write_list_all(caller, &heads, &mut |bytes| {
            size += bytes.len() as u64;
            Ok(())
        })?;
        if size > cap {
            return Err(envelope::over_cap(
                cap as usize,
                "ask for it in pages with the query parameters limit and cursor",
            ));
        }
    }
    let mut out = Stream::start(200, "application/json")?;
    let written = write_list_all(caller, &heads, &mut |bytes| {
        out.write(bytes).map_err(|e| {
            if Stream::is_closed(&e) {
                fail::refuse(GONE, "the client went away")
            } else {
                Fail::from(e)
            }
        })
    })
    .and_then(|()| out.finish().map_err(Fail::from));
    match written {
        Ok(done) => Ok(done),
        Err(f) if f.status == GONE => Ok(Response::empty(200)),
        // Started: no envelope can follow any more; the host cuts the
        // client's connection so that it sees the answer incomplete.
        Err(f) => panic!("list_all failed while streaming: {}", f.message),
    }
}

/// The whole list_all answer, piece by piece into `out`: the same bytes as
/// one page holding every entry, without `next_cursor`.
fn write_list_all(
    caller: &Caller,
    heads: &[SubAdmin],
    out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let users = |owner: &str, out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>| {
        out(b"[")?;
        let mut first = true;
        wasmgate_sdk::kv::each_value(&format!("ls/{owner}/"), |summary| {
            if !first {
                out(b",")?;
            }
            first = false;
            out(summary)?;
            Ok::<_, Fail>(true)
        })?;
        out(b"]")
    };
    match caller {
        Caller::Sub { .. } => {
            out(br#"{"success":true,"users":"#)?;
            users(&caller.owner(), out)?;
        }
        Caller::Main => {
            out(br#"{"success":true,"main_admin":{"users":"#)?;
            users("main", out)?;
            out(br#"},"sub_admins":["#)?;
            for (i, sa) in heads.iter().enumerate() {
                if i > 0 {
                    out(b",")?;
                }
                let head = json!({ "id": sa.id, "username": sa.username }).to_string();
                out(&head.as_bytes()[..head.len() - 1])?;
                out(br#","users":"#)?;
                users(&store::users::sub_owner(sa.id), out)?;
                out(b"}")?;
            }
            out(b"]")?;
        }
    }
    out(b"}")
}
