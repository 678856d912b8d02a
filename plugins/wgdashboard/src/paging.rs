//! Paging of the lists, an extension of the original's API.
//!
//! A list endpoint called without `limit` or `after` (query parameters)
//! answers the whole list as the original does, as long as the answer fits
//! in the response cap: the `max_response_bytes` setting, which mirrors the
//! host's limit of the same name (the plugin cannot read the host's). When
//! it would not fit, the answer is `status: false` with a message telling
//! how to page, never a host 500 for an oversized body.
//!
//! With `limit` (1 to [`MAX_LIMIT`]) and/or `after` (the previous page's
//! `next`), the answer is one page: the envelope gains `"next"`, the cursor
//! of the last entry when more follow, else null. A page holds at most
//! `limit` entries and stops early rather than outgrow the cap.

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::{Error, Request, Response};

use crate::envelope::fail;

pub use wasmgate_sdk::paging::{MAX_LIMIT, Paging, max_response_bytes};
use wasmgate_sdk::paging::{PageError, entry_too_large};

/// The request's paging parameters (`limit`, and the cursor `after`):
/// `Ok(None)` for a whole list, `Err` the answer for parameters that are not
/// understood.
pub fn paging(req: &Request) -> Result<Option<Paging>, Response> {
    let limit = req.query("limit").filter(|l| !l.is_empty());
    // Form decoding turns an unescaped '+' of a base64 public key into a
    // space, which no cursor has.
    let after = req
        .query("after")
        .filter(|a| !a.is_empty())
        .map(|a| a.replace(' ', "+"));
    wasmgate_sdk::paging::parse(limit.as_deref(), after).map_err(|e| match e {
        PageError::Limit => fail(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}"
        )),
        PageError::Cursor => fail("after must be the next of the previous page"),
    })
}

/// The answer for a whole list that does not fit.
pub fn too_large(entries: usize, cap: usize) -> Response {
    fail(format!(
        "The list is too large for one answer ({entries} entries, over the {cap}-byte response limit): page it with ?limit= (1 to {MAX_LIMIT}) and &after= (the next of the previous page)"
    ))
}

pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))
}

/// An envelope `{"data":<head>[a,b][c,d]...<close>,"message":null,...}` grown
/// entry by entry into one or more arrays, never past `cap` once finished.
pub struct Builder {
    out: Vec<u8>,
    cap: usize,
    /// Bytes still to come after the current array: the other arrays' frames.
    frames: usize,
    in_array: usize,
    pub entries: usize,
}

/// What ends a whole answer: `,"message":null,"status":true}`.
const WHOLE_TAIL: usize = 30;

/// What ends a page: `,"message":null,"next":<cursor>,"status":true}`.
fn page_tail(cursor: &Value) -> usize {
    WHOLE_TAIL + 8 + cursor.to_string().len()
}

impl Builder {
    /// `head` opens the data and its first array (`[` or `{"a":[`); `frames`
    /// counts every byte of the data's frame still to come (`]` or
    /// `],"b":[]}`).
    pub fn new(head: &[u8], frames: usize, cap: usize) -> Builder {
        let mut out = Vec::with_capacity(cap.min(64 * 1024));
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(head);
        Builder {
            out,
            cap,
            frames,
            in_array: 0,
            entries: 0,
        }
    }

    /// Appends `item` to the current array if it fits with `tail` bytes of
    /// envelope after the frames.
    pub fn push(&mut self, item: &[u8], tail: usize) -> bool {
        let sep = usize::from(self.in_array > 0);
        if self.out.len() + sep + item.len() + self.frames + tail > self.cap {
            return false;
        }
        if sep == 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(item);
        self.in_array += 1;
        self.entries += 1;
        true
    }

    /// Closes the current array and opens the next with `between` (counted
    /// in `frames` when the builder was made).
    pub fn next_array(&mut self, between: &[u8]) {
        self.out.extend_from_slice(between);
        self.frames -= between.len();
        self.in_array = 0;
    }

    fn finish(mut self, close: &[u8], next: Option<&Value>) -> Response {
        self.out.extend_from_slice(close);
        self.out.extend_from_slice(b",\"message\":null,");
        if let Some(next) = next {
            self.out.extend_from_slice(b"\"next\":");
            self.out.extend_from_slice(next.to_string().as_bytes());
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"\"status\":true}");
        Response::bytes(200, "application/json", self.out)
    }

    pub fn whole(self, close: &[u8]) -> Response {
        self.finish(close, None)
    }

    pub fn page(self, close: &[u8], next: &Value) -> Response {
        self.finish(close, Some(next))
    }
}

/// `data` as one array of all `entries`; `None` when it would not fit.
pub fn whole<T>(
    entries: &[T],
    mut render: impl FnMut(&T) -> Result<Vec<u8>, Error>,
) -> Result<Option<Response>, Error> {
    let mut b = Builder::new(b"[", 1, max_response_bytes()?);
    for e in entries {
        if !b.push(&render(e)?, WHOLE_TAIL) {
            return Ok(None);
        }
    }
    Ok(Some(b.whole(b"]")))
}

/// `data` as one array of `entries` (in cursor order), whole or one page.
pub fn list<T>(
    entries: &[T],
    cursor: impl Fn(&T) -> &str,
    mut render: impl FnMut(&T) -> Result<Vec<u8>, Error>,
    paging: Option<Paging>,
) -> Result<Response, Error> {
    let cap = max_response_bytes()?;
    let Some(paging) = paging else {
        return Ok(whole(entries, render)?.unwrap_or_else(|| too_large(entries.len(), cap)));
    };
    let mut b = Builder::new(b"[", 1, cap);
    let start = paging
        .cursor
        .as_deref()
        .map_or(0, |a| entries.partition_point(|e| cursor(e) <= a));
    let mut last = Value::Null;
    let mut more = false;
    for e in &entries[start..] {
        let c = Value::String(cursor(e).to_string());
        if b.entries == paging.limit || !b.push(&render(e)?, page_tail(&c)) {
            if b.entries == 0 {
                return Err(entry_too_large(cap));
            }
            more = true;
            break;
        }
        last = c;
    }
    Ok(b.page(b"]", if more { &last } else { &Value::Null }))
}

/// A page's cursor tail, for builders outside [`list`].
pub fn tail_for(cursor: Option<&Value>) -> usize {
    cursor.map_or(WHOLE_TAIL, page_tail)
}

pub fn entry_error(cap: usize) -> Error {
    entry_too_large(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tails_are_what_finish_writes() {
        assert_eq!(",\"message\":null,\"status\":true}".len(), WHOLE_TAIL);
        let next = Value::String("wg0".into());
        assert_eq!(
            format!(",\"message\":null,\"next\":{next},\"status\":true}}").len(),
            page_tail(&next)
        );
    }
}
