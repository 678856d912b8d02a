//! Paging of the API's lists, an extension of the original's API.
//!
//! A list action without `limit` or `after` answers the whole list in the
//! original's shape, as long as it fits in the response cap (the
//! `max_response_bytes` setting, which mirrors the host's limit of the same
//! name: the plugin cannot read the host's). When it would not fit, the
//! answer is the API's error envelope telling the caller how to page, never
//! a host 500 for an oversized body.
//!
//! A whole answer over 256 KiB is streamed as it is read (after a first
//! pass that measures it against the cap), so neither the plugin nor the
//! host holds it whole.
//!
//! With `limit` (1 to [`MAX_LIMIT`]) and/or `after` (the previous page's
//! `next`), the answer is one page: the same shape plus `"next"`, the cursor
//! of the last entry when more follow, else null. A page holds at most
//! `limit` entries and stops early rather than outgrow the cap.

use serde_json::Value;
use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
use wasmgate_sdk::stream::Stream;
use wasmgate_sdk::{Error, Response, kv};

use crate::api::failure;
use crate::params::Params;

pub use wasmgate_sdk::paging::{MAX_LIMIT, Paging, max_response_bytes};
use wasmgate_sdk::paging::{PageError, entry_too_large};

fn param(params: &Params, name: &str) -> Result<Option<String>, Error> {
    params
        .text(name)
        .map_err(|()| Error::bad_request(format!("Invalid {name}: expected a string or a number")))
}

/// The request's paging parameters (`limit`, and the cursor `after`);
/// `None` when it sent neither.
pub fn paging(params: &Params) -> Result<Option<Paging>, Error> {
    let limit = param(params, "limit")?;
    let after = param(params, "after")?;
    wasmgate_sdk::paging::parse(limit.as_deref(), after).map_err(|e| match e {
        PageError::Limit => Error::bad_request(format!(
            "Invalid limit: a whole number from 1 to {MAX_LIMIT}"
        )),
        PageError::Cursor => bad_after(),
    })
}

pub fn bad_after() -> Error {
    Error::bad_request("Invalid after: pass the next of the previous page")
}

/// The error for a whole list that does not fit in one answer.
fn too_large(action: &str, count: u64, cap: usize) -> Response {
    failure(&format!(
        "The list is too large for one answer ({count} entries, over the {cap}-byte response limit): page it with limit (1 to {MAX_LIMIT}) and after (the next of the previous page), e.g. action={action}&limit={MAX_LIMIT}"
    ))
}

/// `{"<field>":[...]` grown entry by entry, never past `cap` once closed.
struct Builder {
    out: Vec<u8>,
    cap: usize,
    entries: usize,
}

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

    /// Appends `item` if it fits with `tail` more bytes after it.
    fn push(&mut self, item: &[u8], tail: usize) -> bool {
        let sep = usize::from(self.entries > 0);
        if self.out.len() + sep + item.len() + tail > self.cap {
            return false;
        }
        if sep == 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(item);
        self.entries += 1;
        true
    }

    fn whole(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}");
        self.out
    }

    fn page(mut self, next: &Value) -> Vec<u8> {
        self.out.extend_from_slice(b"],\"next\":");
        self.out.extend_from_slice(next.to_string().as_bytes());
        self.out.push(b'}');
        self.out
    }
}

/// The bytes `],"next":<cursor>}` take.
fn page_tail(cursor: &Value) -> usize {
    10 + cursor.to_string().len()
}

fn json(body: Vec<u8>) -> Response {
    Response::bytes(200, "application/json", body)
}

/// A list kept in kv under `prefix`, one entry per key, in key order.
pub struct KvList<'a> {
    pub action: &'a str,
    pub field: &'a str,
    pub prefix: &'a str,
    /// The cursor of the entry at this key (`next` in a page's answer).
    pub cursor: fn(&str) -> Value,
    /// The key (without the prefix) a page after the cursor `after` starts
    /// behind; an error for what no page ever handed out.
    pub start: fn(&str) -> Result<String, Error>,
}

/// Answers `list` whole or one page of it; each stored value becomes an
/// entry through `render`. Memory stays within the cap and one kv page,
/// however long the list is.
pub fn kv_list(
    list: &KvList,
    paging: Option<Paging>,
    mut render: impl FnMut(&[u8]) -> Result<Vec<u8>, Error>,
) -> Result<Response, Error> {
    let cap = max_response_bytes()?;
    let mut b = Builder::new(list.field, cap);
    let Some(paging) = paging else {
        // Small lists are answered whole, in one pass.
        let head = b.out.clone();
        if kv::each_value::<Error>(list.prefix, |value| {
            Ok(b.out.len() <= STREAM_FROM && b.push(&render(value)?, 2))
        })? {
            return Ok(json(b.whole()));
        }
        drop(b);
        let mut size = head.len() + 2;
        let mut entries = 0usize;
        let fits = kv::each_value::<Error>(list.prefix, |value| {
            size += render(value)?.len() + usize::from(entries > 0);
            entries += 1;
            Ok(size <= cap)
        })?;
        if !fits {
            return Ok(too_large(list.action, kv::count(list.prefix)?, cap));
        }
        return stream_whole(list, head, render);
    };
    let start = match paging.cursor.as_deref() {
        Some(after) => Some(format!("{}{}", list.prefix, (list.start)(after)?)),
        None => None,
    };
    let page = raw::list(list.prefix, start.as_deref(), paging.limit as u32)?;
    let mut more = page.next.is_some();
    let mut last = Value::Null;
    for (key, value) in &page.entries {
        let cursor = (list.cursor)(key.strip_prefix(list.prefix).unwrap_or(key));
        if !b.push(&render(value)?, page_tail(&cursor)) {
            if b.entries == 0 {
                return Err(entry_too_large(cap));
            }
            more = true;
            break;
        }
        last = cursor;
    }
    Ok(json(b.page(if more { &last } else { &Value::Null })))
}

/// Whole answers above this size are streamed (measured first, so that
/// one over the cap is still the envelope that asks to page).
const STREAM_FROM: usize = 256 * 1024;

/// The whole of `list` streamed (see [`wasmgate_sdk::stream`]): `head`,
/// the entries as they are read, the close. After the start no envelope
/// can follow: a failure traps and the host cuts the client's connection.
fn stream_whole(
    list: &KvList,
    head: Vec<u8>,
    mut render: impl FnMut(&[u8]) -> Result<Vec<u8>, Error>,
) -> Result<Response, Error> {
    let mut out = Stream::start(200, "application/json")?;
    out.write(&head)?;
    let mut first = true;
    kv::each_value::<Error>(list.prefix, |value| {
        if !first {
            out.write(b",")?;
        }
        first = false;
        out.write(&render(value)?)?;
        Ok(true)
    })?;
    out.write(b"]}")?;
    out.finish()
}

/// Answers a list computed in memory, whole or one page of it. `items` are
/// (cursor, entry) in the order a whole answer lists them; a page takes them
/// in cursor order, after `after`.
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub fn memory_list(
    action: &str,
    field: &str,
    mut items: Vec<(String, Vec<u8>)>,
    paging: Option<Paging>,
) -> Result<Response, Error> {
    let cap = max_response_bytes()?;
    let mut b = Builder::new(field, cap);
    let Some(paging) = paging else {
        for (_, item) in &items {
            if !b.push(item, 2) {
                return Ok(too_large(action, items.len() as u64, cap));
            }
        }
        return Ok(json(b.whole()));
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut more = false;
    let mut last = Value::Null;
    let rest = items
        .into_iter()
        .filter(|(c, _)| paging.cursor.as_ref().is_none_or(|a| c > a));
    for (cursor, item) in rest {
        if b.entries == paging.limit {
            more = true;
            break;
        }
        let cursor = Value::String(cursor);
        if !b.push(&item, page_tail(&cursor)) {
            if b.entries == 0 {
                return Err(entry_too_large(cap));
            }
            more = true;
            break;
        }
        last = cursor;
    }
    Ok(json(b.page(if more { &last } else { &Value::Null })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_answer_never_outgrows_the_cap() {
        let mut b = Builder::new("users", 20);
        // {"users":[ is 10 bytes; ]} closes it.
        assert!(b.push(b"111", 2));
        assert!(b.push(b"2222", 2));
        assert!(
            !b.push(b"3", 2),
            "the separator and the close would pass 20"
        );
        assert_eq!(b.whole(), br#"{"users":[111,2222]}"#);

        let mut b = Builder::new("users", 23);
        let next = Value::from(7);
        assert!(b.push(b"1", page_tail(&next)));
        assert!(!b.push(b"2", page_tail(&next)));
        let page = b.page(&Value::from(1));
        assert_eq!(page, br#"{"users":[1],"next":1}"#);
        assert!(page.len() <= 23);
    }
}
