//! The answer of every endpoint: the `{success, message, ...}` envelope and
//! the seed's messages, JSON bodies, and lists that page under the host's
//! response cap.
//!
//! Handlers return [`Reply`] and use `?` on anything that can fail;
//! [`reply`] turns a refusal ([`Fail`]) into `{"success": false, "message"}`
//! with its status.

use serde::Serialize;
use serde_json::{Map, Value};
use wasmgate_sdk::{Request, Response, log};

use crate::fail::{Fail, refuse};

/// The original panel's messages, word for word: its clients match on them.
pub const MSG_KEY_MISSING: &str = "API key is missing";

pub const MSG_MAIN_REQUIRED: &str = "Permission denied: Main admin API key required.";

pub const MSG_PERMISSION_DENIED: &str = "Permission denied";

pub const MSG_EMPTY_BODY: &str = "Request body must be JSON and not empty";

pub const MSG_NOT_FOUND: &str = "Not found";

impl From<Fail> for Response {
    fn from(f: Fail) -> Response {
        fail(f.status, &f.message)
    }
}

pub type Reply = Result<Response, Fail>;

/// The response of a handler's result.
pub fn reply(r: Reply) -> Response {
    r.unwrap_or_else(Response::from)
}

/// `{"success": true, "message": message}` with status 200.
pub fn ok(message: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({ "success": true, "message": message }),
    )
}

/// `{"success": true, ...fields}` with `status`. `fields` must be a JSON
/// object (anything else is sent as `{"success": true}`); its own `success`
/// is overwritten.
pub fn ok_with(status: u16, fields: Value) -> Response {
    let mut map = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("success".into(), Value::Bool(true));
    Response::json(status, &Value::Object(map))
}

/// `{"success": false, "message": message}` with `status`.
pub fn fail(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &serde_json::json!({ "success": false, "message": message }),
    )
}

/// 404 `{"success": false, "message": "Not found"}` for a path no route has.
pub fn not_found_route() -> Response {
    fail(404, MSG_NOT_FOUND)
}

/// The body as a JSON object. An empty body, `{}`, or anything that is not a
/// JSON object is 400 "Request body must be JSON and not empty".
pub fn json_object(req: &Request) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) if !m.is_empty() => Ok(m),
        _ => Err(refuse(400, MSG_EMPTY_BODY)),
    }
}

/// The body as a JSON object, `{}` when the body is empty; a body that is
/// not a JSON object is 400 "Request body must be JSON and not empty".
pub fn json_object_or_empty(req: &Request) -> Result<Map<String, Value>, Fail> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(refuse(400, MSG_EMPTY_BODY)),
    }
}

/// Serialises `value` for a response field.
pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The public base URL for links (`sub_url`, downloads): setting
/// `public_url` (e.g. `https://panel.example.com:2096`), else the request's
/// `Host` header over http.
pub fn public_base(req: &Request) -> String {
    if let Some(url) = wasmgate_sdk::config::get("public_url").filter(|u| !u.trim().is_empty()) {
        return url.trim().trim_end_matches('/').to_string();
    }
    let host = req.header("host").unwrap_or("localhost");
    format!("http://{host}")
}

/// The largest answer the host lets through: setting `max_response_bytes`,
/// which must equal the plugin's `limits.max_response_bytes` (a plugin
/// cannot read its limits). The host turns a larger answer into a bare
/// 500, so lists check against this first and ask the caller to page. A
/// value that is not a positive number counts as the host's default.
pub fn response_cap() -> usize {
    wasmgate_sdk::config::get("max_response_bytes")
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(wasmgate_sdk::paging::DEFAULT_MAX_RESPONSE_BYTES)
}

/// The most entries one page holds.
pub use wasmgate_sdk::paging::MAX_LIMIT as MAX_PAGE;
use wasmgate_sdk::paging::PageError;

pub use wasmgate_sdk::paging::Paging;

/// The page the request asks for with the query parameters `limit` (1 to
/// [`MAX_PAGE`], default [`MAX_PAGE`]) and `cursor` (the `next_cursor` of
/// the page before); None when it sends neither parameter (the original's
/// clients), which gets the whole list as before.
pub fn paging(req: &Request) -> Result<Option<Paging>, Fail> {
    let cursor = req.query("cursor").filter(|c| !c.is_empty());
    wasmgate_sdk::paging::parse(req.query("limit").as_deref(), cursor).map_err(|e| match e {
        PageError::Limit => refuse(
            400,
            &format!("Invalid limit: expected a whole number from 1 to {MAX_PAGE}."),
        ),
        PageError::Cursor => bad_cursor(),
    })
}

/// The refusal of a cursor this list never handed out.
pub fn bad_cursor() -> Fail {
    refuse(
        400,
        "Invalid cursor: pass the next_cursor of the page before.",
    )
}

/// One page of a list built in memory: its entries from the cursor on,
/// at most `page.limit` of them, and the offset where the rest starts (the
/// cursor is that offset).
pub fn window<T>(mut items: Vec<T>, page: &Paging) -> Result<(Vec<T>, usize), Fail> {
    let start = match &page.cursor {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| bad_cursor())?,
    };
    let end = start.saturating_add(page.limit).min(items.len());
    let items = if start < items.len() {
        items.truncate(end);
        items.split_off(start)
    } else {
        Vec::new()
    };
    Ok((items, start))
}

/// A page of `n` entries or fewer that fits in [`response_cap`]: the
/// bytes `render(k)` makes of the first `k` entries, for the largest `k`
/// tried (`n`, then halving) that fits. A page asked for with a `limit`
/// too large for the cap is cut short rather than refused; its
/// `next_cursor` then starts at the first entry left out. When not even
/// one entry fits, the one-entry rendering, which [`within_cap`] refuses.
pub fn fitting(n: usize, mut render: impl FnMut(usize) -> Vec<u8>) -> Vec<u8> {
    let cap = response_cap();
    let mut k = n;
    loop {
        let bytes = render(k);
        if bytes.len() <= cap || k <= 1 {
            return bytes;
        }
        k = k.div_ceil(2);
    }
}

/// Routes whose answer is a list that pages.
pub fn pages(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["users", "list_all"]
            | ["users", _, "all_ovpn_links"]
            | ["sub_admins"]
            | ["nodes"]
            | ["public", "ports"]
            | ["public", "servers_for_ports"]
            | ["public", "all_selectable_servers"]
            | ["traffic", "users"]
    )
}

/// `answer`, or when it is larger than [`response_cap`], a 400 in the
/// envelope that tells the caller what to do instead of the host's bare
/// 500: ask for pages on a list (a smaller `limit` when it already pages).
pub fn within_cap(req: &Request, segs: &[&str], answer: Response) -> Response {
    let cap = response_cap();
    if answer.body.len() <= cap {
        return answer;
    }
    let paged = req.query("limit").is_some() || req.query("cursor").is_some();
    let what = match (pages(segs), paged) {
        (true, false) => "ask for it in pages with the query parameters limit and cursor",
        (true, true) => "ask for a smaller limit",
        (false, _) => "this answer cannot be made smaller",
    };
    log::write(
        log::Level::Warn,
        &format!(
            "vpnpanel: an answer of {} bytes is over the {cap}-byte cap",
            answer.body.len()
        ),
    );
    fail(400, &over_cap_message(cap, what))
}

fn over_cap_message(cap: usize, what: &str) -> String {
    format!("The answer is larger than this server's {cap}-byte response limit: {what}.")
}

/// The refusal of an answer over `cap`, decided before it is made
/// (a streamed one): the 400 of [`within_cap`].
pub fn over_cap(cap: usize, what: &str) -> Fail {
    refuse(400, &over_cap_message(cap, what))
}

/// `{"success": true, ...fields, field: items}`; with `page`, one page of
/// `items` ([`window`], [`fitting`]) and `next_cursor` (null on the last
/// page).
pub fn list_answer(
    page: Option<&Paging>,
    field: &str,
    items: Vec<Value>,
    mut fields: Map<String, Value>,
) -> Reply {
    let Some(p) = page else {
        fields.insert(field.into(), Value::Array(items));
        return Ok(ok_with(200, Value::Object(fields)));
    };
    let total = items.len();
    let (items, start) = window(items, p)?;
    let body = fitting(items.len(), |k| {
        let mut f = fields.clone();
        f.insert(field.into(), Value::Array(items[..k].to_vec()));
        let next = (start + k < total).then(|| (start + k).to_string());
        f.insert("next_cursor".into(), serde_json::json!(next));
        f.insert("success".into(), Value::Bool(true));
        serde_json::to_vec(&Value::Object(f)).unwrap_or_default()
    });
    Ok(Response::bytes(200, "application/json", body))
}
