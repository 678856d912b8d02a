//! Paging of the lists, an extension of the seed's API.
//!
//! A list endpoint called without `limit` or `cursor` (query parameters)
//! answers the whole list as before, as long as the answer fits in the
//! response cap: the `max_response_bytes` setting, which mirrors the host's
//! limit of the same name (a plugin cannot read its limits). When it would
//! not fit, the answer is the envelope's 400 `PAGING_REQUIRED` saying how to
//! page, never the host's 500 for an oversized body.
//!
//! With `limit` (1 to [`MAX_LIMIT`]; [`MAX_LIMIT`] when only `cursor` is
//! sent) and/or `cursor` (the `next_cursor` of the page before), the answer
//! is one page: the same object plus `"next_cursor"`, the cursor of the last
//! entry when more follow, else null. A page holds at most `limit` entries
//! and stops early rather than outgrow the cap.

use serde::Serialize;
use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
use wasmgate_sdk::{Request, Response};

use crate::api::{ApiError, ApiResult};

use wasmgate_sdk::paging::PageError;
pub use wasmgate_sdk::paging::{MAX_LIMIT, Paging};

/// The page the request asks for (`limit` and `cursor`); None when it sends
/// neither parameter (the original's clients), which gets the whole list as
/// before.
pub fn paging(req: &Request) -> Result<Option<Paging>, ApiError> {
    let cursor = req.query("cursor").filter(|c| !c.is_empty());
    wasmgate_sdk::paging::parse(req.query("limit").as_deref(), cursor).map_err(|e| match e {
        PageError::Limit => ApiError::validation(format!(
            "Invalid limit: expected a whole number from 1 to {MAX_LIMIT}."
        )),
        PageError::Cursor => bad_cursor(),
    })
}

/// The refusal of a cursor this list never handed out.
pub fn bad_cursor() -> ApiError {
    ApiError::validation("Invalid cursor: pass the next_cursor of the page before.")
}

/// The response cap this plugin keeps to (setting `max_response_bytes`).
pub fn max_response_bytes() -> Result<usize, ApiError> {
    Ok(wasmgate_sdk::paging::max_response_bytes()?)
}

/// The answer for a whole list that does not fit.
pub fn too_large(cap: usize) -> ApiError {
    ApiError::new(
        400,
        "PAGING_REQUIRED",
        format!(
            "The list is larger than this server's {cap}-byte response limit: ask for it in pages with the query parameters limit (1 to {MAX_LIMIT}) and cursor (the next_cursor of the page before)."
        ),
    )
}

/// One entry that does not fit in an answer at all: the setting is too small.
pub fn entry_too_large(cap: usize) -> ApiError {
    wasmgate_sdk::paging::entry_too_large(cap).into()
}

pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))
}

/// `value` as a 200 when it fits in the cap; None when it does not.
pub fn fitting<T: Serialize + ?Sized>(value: &T) -> Result<Option<Response>, ApiError> {
    let body = to_json(value)?;
    Ok((body.len() <= max_response_bytes()?)
        .then(|| Response::bytes(200, "application/json", body)))
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

/// What to keep free for a page's `next_cursor` when `cursor` may be it
/// (or null, when nothing follows).
fn cursor_room(cursor: &str) -> usize {
    cursor_field(Some(cursor))
        .len()
        .max(cursor_field(None).len())
}

/// The entries of one JSON array, grown entry by entry while the answer
/// they go into stays within the cap.
pub struct Entries {
    body: Vec<u8>,
    cap: usize,
    /// Every other byte of the answer, except a page's `next_cursor`.
    frame: usize,
    pub count: usize,
}

impl Entries {
    /// For an answer of `frame` bytes around the array's entries.
    pub fn new(cap: usize, frame: usize) -> Entries {
        Entries {
            body: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            frame,
            count: 0,
        }
    }

    /// Appends `item` if it fits with `extra` more bytes (a page's cursor).
    pub fn push(&mut self, item: &[u8], extra: usize) -> bool {
        let sep = usize::from(self.count > 0);
        if self.frame + self.body.len() + sep + item.len() + extra > self.cap {
            return false;
        }
        if sep == 1 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(item);
        self.count += 1;
        true
    }
}

/// A list answer `{<head>"<field>":[...]}`: `head` is the fields before
/// the list, each with its trailing comma (serde_json's sorted order puts
/// them there).
pub struct Shape<'a> {
    pub head: &'a [u8],
    pub field: &'a str,
}

impl Shape<'_> {
    /// Every byte of the answer but the entries and a page's cursor.
    fn frame(&self) -> usize {
        // {  "field":[  ]}
        1 + self.head.len() + self.field.len() + 4 + 2
    }

    fn finish(&self, entries: Entries, cursor: Option<Option<&str>>) -> Response {
        let mut out = Vec::with_capacity(self.frame() + entries.body.len() + 32);
        out.push(b'{');
        out.extend_from_slice(self.head);
        out.push(b'"');
        out.extend_from_slice(self.field.as_bytes());
        out.extend_from_slice(b"\":[");
        out.extend_from_slice(&entries.body);
        out.push(b']');
        if let Some(c) = cursor {
            out.extend_from_slice(&cursor_field(c));
        }
        out.push(b'}');
        Response::bytes(200, "application/json", out)
    }
}

/// One entry of a list: its cursor and its JSON.
pub type Entry = Result<(String, Vec<u8>), ApiError>;

/// Answers a list whole or one page of it. `entries` yields the list in
/// its order, from the first entry after the page's cursor (the whole list
/// when there is no paging).
pub fn answer(
    shape: &Shape,
    paging: Option<&Paging>,
    entries: impl Iterator<Item = Entry>,
) -> ApiResult {
    let cap = max_response_bytes()?;
    let mut list = Entries::new(cap, shape.frame());
    let Some(paging) = paging else {
        for entry in entries {
            let (_, item) = entry?;
            if !list.push(&item, 0) {
                return Err(too_large(cap));
            }
        }
        return Ok(shape.finish(list, None));
    };
    let mut last: Option<String> = None;
    let mut more = false;
    for entry in entries {
        let (cursor, item) = entry?;
        if list.count == paging.limit || !list.push(&item, cursor_room(&cursor)) {
            if list.count == 0 {
                return Err(entry_too_large(cap));
            }
            more = true;
            break;
        }
        last = Some(cursor);
    }
    let next = if more { last.as_deref() } else { None };
    Ok(shape.finish(list, Some(next)))
}

/// The kv entries under `prefix` after the key `after`, in key order,
/// fetched a host page (of `page` entries) at a time.
pub struct KvIter {
    prefix: String,
    after: Option<String>,
    page: u32,
    buffer: std::vec::IntoIter<(String, Vec<u8>)>,
    done: bool,
}

impl KvIter {
    pub fn new(prefix: String, after: Option<String>, page: usize) -> KvIter {
        KvIter {
            prefix,
            after,
            page: page.clamp(1, MAX_LIMIT) as u32,
            buffer: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for KvIter {
    type Item = Result<(String, Vec<u8>), ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buffer.next() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let page = match raw::list(&self.prefix, self.after.as_deref(), self.page) {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some(Err(wasmgate_sdk::Error::from(e).into()));
                }
            };
            self.done = page.next.is_none();
            self.after = page.next;
            self.buffer = page.entries.into_iter();
        }
    }
}

/// The host page to fetch for a list answer: one more than a page holds
/// (to know whether more follow), or the most for a whole list.
pub fn kv_page(paging: Option<&Paging>) -> usize {
    paging.map_or(MAX_LIMIT, |p| p.limit + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_answer_never_outgrows_the_cap() {
        let shape = Shape {
            head: b"\"count\":2,",
            field: "list",
        };
        // {"count":2,"list":[]} is 21 bytes.
        assert_eq!(shape.frame(), 21);
        let mut e = Entries::new(26, shape.frame());
        assert!(e.push(b"11", 0));
        assert!(e.push(b"22", 0));
        assert!(!e.push(b"3", 0), "the comma and the entry would pass 26");
        let r = shape.finish(e, None);
        assert_eq!(r.body, br#"{"count":2,"list":[11,22]}"#);

        let cursor = cursor_field(Some("a/1"));
        assert_eq!(cursor, br#","next_cursor":"a/1""#);
        let mut e = Entries::new(21 + 2 + cursor.len(), shape.frame());
        assert!(e.push(b"11", cursor.len()));
        assert!(!e.push(b"2", cursor.len()));
        let r = shape.finish(e, Some(Some("a/1")));
        assert_eq!(r.body, br#"{"count":2,"list":[11],"next_cursor":"a/1"}"#);
        assert_eq!(r.body.len(), 21 + 2 + cursor.len());
        let r = shape.finish(Entries::new(100, 21), Some(None));
        assert_eq!(r.body, br#"{"count":2,"list":[],"next_cursor":null}"#);
    }
}
