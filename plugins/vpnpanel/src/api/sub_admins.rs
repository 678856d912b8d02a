//! `/sub_admins...` (main admin only, "Permission denied" otherwise):
//! routing, the path's id, and the answers; the rules are
//! [`crate::domain::sub_admins`].

use serde_json::{Map, Value, json};
use wasmgate_sdk::Request;

use crate::api::auth;
use crate::api::envelope::{self, Reply};
use crate::domain::caller::Caller;
use crate::domain::sub_admins;
use crate::fail::{Fail, refuse};
use crate::store::{self, users::SubAdmin};

pub fn route(req: &Request, caller: &Caller, rest: &[&str]) -> Reply {
    auth::require_main_short(caller)?;
    match (req.method(), rest) {
        ("GET", []) => list(req),
        ("POST", []) => create(req),
        ("PUT", [id]) => edit(req, id),
        ("DELETE", [id]) => delete(id),
        ("POST", [id, "reset_usage"]) => reset_usage(id),
        ("POST", [id, "rotate_key"]) => rotate_key(id),
        _ => Ok(envelope::not_found_route()),
    }
}

fn view(sa: &SubAdmin) -> Value {
    json!({
        "id": sa.id,
        "username": sa.username,
        "subscription_port": sa.subscription_port,
        "panel_port": sa.panel_port,
        "max_users_limit": sa.max_users_limit,
        "total_usage_quota_gb": sa.total_usage_quota_gb,
        "is_active": sa.is_active,
        "notes": sa.notes,
        "allowed_servers": sa.allowed_servers,
        "users_count": sa.users_count,
        "allocated_bytes": sa.allocated_bytes,
        "used_bytes": sa.used_bytes,
    })
}

fn list(req: &Request) -> Reply {
    let page = envelope::paging(req)?;
    let subs: Vec<Value> = store::users::all_sub_admins()?.iter().map(view).collect();
    envelope::list_answer(page.as_ref(), "sub_admins", subs, Map::new())
}

fn create(req: &Request) -> Reply {
    let body = envelope::json_object_or_empty(req)?;
    let created = sub_admins::create(&body)?;
    Ok(envelope::ok_with(
        201,
        json!({
            "message": "Sub-admin created successfully and ports configured.",
            "sub_admin": { "id": created.id, "username": created.username },
            "api_key": created.api_key,
        }),
    ))
}

fn parse_id(id: &str, message: &str) -> Result<u64, Fail> {
    id.parse::<u64>().map_err(|_| refuse(404, message))
}

fn edit(req: &Request, id: &str) -> Reply {
    let id = parse_id(id, "Sub-admin not found")?;
    let body = envelope::json_object(req)?;
    let updated = sub_admins::edit(id, &body)?;
    Ok(envelope::ok_with(
        200,
        json!({ "message": "Sub-admin updated successfully.", "sub_admin": { "id": updated.id } }),
    ))
}

fn delete(id: &str) -> Reply {
    let id = parse_id(id, "Sub-admin not found")?;
    sub_admins::delete(id)?;
    Ok(envelope::ok("Sub-admin deleted successfully."))
}

fn reset_usage(id: &str) -> Reply {
    let id = parse_id(id, "Sub-admin not found.")?;
    let re_enabled = sub_admins::reset_usage(id)?;
    Ok(envelope::ok(&format!(
        "Total data usage reset successfully. {re_enabled} user(s) were re-enabled."
    )))
}

fn rotate_key(id: &str) -> Reply {
    let id = parse_id(id, "Sub-admin not found")?;
    let api_key = sub_admins::rotate_key(id)?;
    Ok(envelope::ok_with(
        200,
        json!({ "message": "API key rotated.", "api_key": api_key }),
    ))
}
