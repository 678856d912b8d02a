//! Paging of the portal's lists, an extension of its API.
//!
//! A list route called without `limit` or `cursor` (query parameters)
//! answers the whole list as before, `{"<list>":[...],"success":true}`, as
//! long as the answer fits in the response cap: the `max_response_bytes`
//! setting, which mirrors the host's limit of the same name (a plugin cannot
//! read its limits). When it would not fit, the answer is the envelope's 400
//! `PAGING_REQUIRED` saying how to page, never the host's 500 for an
//! oversized body.
//!
//! With `limit` (1 to [`MAX_LIMIT`]; [`MAX_LIMIT`] when only `cursor` is
//! sent) and/or `cursor` (the `next_cursor` of the page before), the answer
//! is one page: the same object plus `"next_cursor"`, the cursor of the last
//! entry when more follow, else null. A page holds at most `limit` entries
//! and stops early rather than outgrow the cap.

use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
use wasmgate_sdk::{Error, Request, Response};

use crate::fail;

pub use wasmgate_sdk::paging::{MAX_LIMIT, Paging, max_response_bytes};
use wasmgate_sdk::paging::{PageError, entry_too_large};

/// The page the request asks for (`limit` and `cursor`); None when it sends
/// neither, which gets the whole list as before. `Err` is the answer to give.
pub fn paging(req: &Request) -> Result<Option<Paging>, Response> {
    let cursor = req.query("cursor").filter(|c| !c.is_empty());
    wasmgate_sdk::paging::parse(req.query("limit").as_deref(), cursor).map_err(|e| match e {
        PageError::Limit => fail(
            400,
            "VALIDATION_ERROR",
            &format!("Invalid limit: expected a whole number from 1 to {MAX_LIMIT}."),
        ),
        PageError::Cursor => bad_cursor(),
    })
}

/// The refusal of a cursor this list never handed out.
pub fn bad_cursor() -> Response {
    fail(
        400,
        "VALIDATION_ERROR",
        "Invalid cursor: pass the next_cursor of the page before.",
    )
}

/// The answer for a whole list that does not fit.
pub fn too_large(cap: usize) -> Response {
    fail(
        400,
        "PAGING_REQUIRED",
        &format!(
            "The list is larger than this server's {cap}-byte response limit: ask for it in pages with the query parameters limit (1 to {MAX_LIMIT}) and cursor (the next_cursor of the page before)."
        ),
    )
}

pub fn to_json(value: &serde_json::Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))
}

/// `,"next_cursor":<cursor>`.
fn cursor_field(cursor: Option<&str>) -> Vec<u8> {
    let mut out = b",\"next_cursor\":".to_vec();
    match cursor {
        Some(c) => out.extend_from_slice(&serde_json::to_vec(c).unwrap_or_default()),
        None => out.extend_from_slice(b"null"),
    }
    out
}

/// What a page keeps free for its `next_cursor` when `cursor` may be it
/// (or null, when nothing follows).
fn cursor_room(cursor: &str) -> usize {
    cursor_field(Some(cursor))
        .len()
        .max(cursor_field(None).len())
}

/// `{"<field>":[...]` grown entry by entry, never past the cap once closed
/// with `]` (a page's `,"next_cursor":...`) and `,"success":true}`.
struct Builder {
    out: Vec<u8>,
    cap: usize,
    entries: usize,
}

/// What ends every answer after the list (and a page's cursor).
const CLOSE: &[u8] = b",\"success\":true}";

impl Builder {
    fn new(field: &str, cap: usize) -> Builder {
        let mut out = Vec::with_capacity(cap.min(64 * 1024));
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":[");
        Builder {
            out,
            cap,
            entries: 0,
        }
    }

    /// Appends `item` if it fits with `extra` more bytes (a page's cursor).
    fn push(&mut self, item: &[u8], extra: usize) -> bool {
        let sep = usize::from(self.entries > 0);
        if self.out.len() + sep + item.len() + 1 + extra + CLOSE.len() > self.cap {
            return false;
        }
        if sep == 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(item);
        self.entries += 1;
        true
    }

    fn finish(mut self, cursor: Option<Option<&str>>) -> Response {
        self.out.push(b']');
        if let Some(c) = cursor {
            self.out.extend_from_slice(&cursor_field(c));
        }
        self.out.extend_from_slice(CLOSE);
        Response::bytes(200, "application/json", self.out)
    }
}

/// One entry of a list: its cursor and its JSON.
pub type Entry = Result<(String, Vec<u8>), Error>;

/// Answers `{"<field>":[...],"success":true}` whole, or one page of it.
/// `entries` yields the list in its order, from the first entry after the
/// page's cursor (the whole list when there is no paging).
pub fn answer(
    field: &str,
    paging: Option<&Paging>,
    entries: impl Iterator<Item = Entry>,
) -> Result<Response, Error> {
    let cap = max_response_bytes()?;
    let mut b = Builder::new(field, cap);
    let Some(paging) = paging else {
        for entry in entries {
            let (_, item) = entry?;
            if !b.push(&item, 0) {
                return Ok(too_large(cap));
            }
        }
        return Ok(b.finish(None));
    };
    let mut last: Option<String> = None;
    let mut more = false;
    for entry in entries {
        let (cursor, item) = entry?;
        if b.entries == paging.limit || !b.push(&item, cursor_room(&cursor)) {
            if b.entries == 0 {
                return Err(entry_too_large(cap));
            }
            more = true;
            break;
        }
        last = Some(cursor);
    }
    Ok(b.finish(Some(if more { last.as_deref() } else { None })))
}

/// A list in the order of its sort keys `K`: `items` are (sort key, id),
/// `after` the sort key of the page's cursor; each entry is rendered from
/// its id when it is listed (None: gone since).
pub fn sorted<K: Ord>(
    field: &str,
    paging: Option<&Paging>,
    mut items: Vec<(K, String)>,
    after: Option<K>,
    cursor: impl Fn(&K, &str) -> String,
    mut render: impl FnMut(&str) -> Result<Option<serde_json::Value>, Error>,
) -> Result<Response, Error> {
    items.sort();
    let from = after.map_or(0, |a| items.partition_point(|(k, _)| *k <= a));
    let entries = items[from..].iter().filter_map(|(k, id)| match render(id) {
        Ok(Some(v)) => Some(to_json(&v).map(|bytes| (cursor(k, id), bytes))),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    });
    answer(field, paging, entries)
}

/// Calls `f` with every kv entry under `prefix`, in key order, fetched
/// `page` entries at a time (fewer for large values keeps memory down).
pub fn walk(
    prefix: &str,
    page: u32,
    mut f: impl FnMut(&str, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut cursor: Option<String> = None;
    loop {
        let p = raw::list(prefix, cursor.as_deref(), page)?;
        for (key, value) in &p.entries {
            f(key, value)?;
        }
        match p.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_answer_never_outgrows_the_cap() {
        // {"keys":[],"success":true} is 26 bytes.
        let mut b = Builder::new("keys", 31);
        assert!(b.push(b"11", 0));
        assert!(b.push(b"22", 0));
        assert!(!b.push(b"3", 0), "the comma and the entry would pass 31");
        assert_eq!(b.finish(None).body, br#"{"keys":[11,22],"success":true}"#);

        let room = cursor_room("abc");
        assert_eq!(room, r#","next_cursor":"abc""#.len());
        assert_eq!(cursor_room(""), r#","next_cursor":null"#.len());
        let mut b = Builder::new("keys", 26 + 2 + room);
        assert!(b.push(b"11", room));
        assert!(!b.push(b"2", room));
        let r = b.finish(Some(Some("abc")));
        assert_eq!(
            r.body,
            br#"{"keys":[11],"next_cursor":"abc","success":true}"#
        );
        assert_eq!(r.body.len(), 26 + 2 + room);
    }
}
