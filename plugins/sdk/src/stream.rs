//! Streamed answers: the status and headers first, then the body in pieces
//! while the handler still makes it, so that a big answer (a list of every
//! record) never has to sit whole in the plugin's memory or the host's.
//! No grant is needed.
//!
//! ```no_run
//! use std::io::Write as _;
//! use wasmgate_sdk::{stream::Stream, Error, Request, Response};
//!
//! fn numbers(_req: &Request) -> Result<Response, Error> {
//!     let mut out = Stream::start(200, "application/json")?;
//!     out.write_all(b"[")?;
//!     for i in 0..100_000 {
//!         if i > 0 {
//!             out.write_all(b",")?;
//!         }
//!         write!(out, "{i}")?;
//!     }
//!     out.write_all(b"]")?;
//!     out.finish()
//! }
//! ```
//!
//! Once started, the answer cannot become an error answer any more: a
//! handler that returns `Err` after [`Stream::start`] ends the call with a
//! trap, and the host cuts the client's connection before the body's end,
//! so that the client never takes a partial body for a whole one (the host
//! does the same after a deadline or a body over `max_response_bytes`). A
//! client that went away is not an error: [`Stream::write`] fails with
//! [`closed`](Stream::is_closed) and the handler may return whatever it
//! likes.

use std::cell::Cell;

use crate::bindings::wasmgate::plugin::streaming::{self, Error as WitError};
use crate::{Error, Response};

/// Bytes gathered before one `write` to the host: big enough that the
/// host call costs nothing next to the bytes, small enough to bound memory.
pub const PIECE: usize = 64 * 1024;

/// Where this call's answer stands (one call at a time per instance).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    Whole,
    Started,
    Closed,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Whole) };
}

pub(crate) fn state() -> State {
    STATE.with(Cell::get)
}

pub(crate) fn set_state(s: State) {
    STATE.with(|c| c.set(s));
}

/// A started answer: `write` (or [`std::io::Write`]) the body, then
/// [`finish`](Stream::finish) and return what it returns.
#[derive(Debug)]
pub struct Stream {
    status: u16,
    buf: Vec<u8>,
}

impl Stream {
    /// Sends `status` with `content-type: content_type`.
    pub fn start(status: u16, content_type: &str) -> Result<Stream, Error> {
        Stream::start_with_headers(
            status,
            vec![("content-type".to_string(), content_type.to_string())],
        )
    }

    /// Sends `status` and `headers` (names lower-case; `content-length` and
    /// `transfer-encoding` are the host's).
    pub fn start_with_headers(
        status: u16,
        headers: Vec<(String, String)>,
    ) -> Result<Stream, Error> {
        streaming::start(status, &headers).map_err(wit_error)?;
        set_state(State::Started);
        Ok(Stream {
            status,
            buf: Vec::with_capacity(PIECE),
        })
    }

    /// Adds `bytes` to the body; sends a piece to the client whenever
    /// [`PIECE`] bytes are gathered.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is gathered now.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let sent = streaming::write(&self.buf).map_err(wit_error);
        self.buf.clear();
        sent
    }

    /// Sends the rest; its result is what the handler returns (the host
    /// ignores its status, the body has been sent).
    pub fn finish(mut self) -> Result<Response, Error> {
        self.flush()?;
        Ok(Response::empty(self.status))
    }

    /// Whether `e` (from `write`, `flush` or `finish`) says the client went
    /// away: nothing more will reach it, and that is not a failure.
    pub fn is_closed(e: &Error) -> bool {
        e.status == CLOSED
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Stream::write(self, bytes).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Stream::flush(self).map_err(std::io::Error::other)
    }
}

impl From<std::io::Error> for Error {
    /// An error from [`Stream`]'s `std::io::Write` (or any I/O error) back
    /// into the [`Error`] it carried; other I/O errors are 500s.
    fn from(e: std::io::Error) -> Error {
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(e)) => *e,
            Some(Err(inner)) => Error::internal(inner),
            None => Error::internal("I/O error"),
        }
    }
}

/// The status of the [`Error`] a write to a client that went away gives.
/// Never sent: the client is gone.
const CLOSED: u16 = 499;

fn wit_error(e: WitError) -> Error {
    match e {
        WitError::Closed => {
            set_state(State::Closed);
            Error::new(CLOSED, "the client went away")
        }
        WitError::TooLarge(cap) => Error::internal(format!(
            "streamed answer over the plugin's max_response_bytes ({cap})"
        )),
        WitError::Invalid(what) => Error::internal(format!("streamed answer refused: {what}")),
        WitError::Misuse(what) => Error::internal(format!("streaming misused: {what}")),
    }
}

/// What a handler's result becomes once the dispatch knows whether it
/// started a stream: a started answer that ends in `Err` traps (the host
/// then cuts the connection), unless the client went away.
pub(crate) fn settle(result: Result<Response, Error>) -> Result<Response, Error> {
    let state = state();
    set_state(State::Whole);
    match (state, result) {
        (State::Whole, r) => r,
        (_, Ok(r)) => Ok(r),
        (State::Closed, Err(_)) => Ok(Response::empty(200)),
        (State::Started, Err(e)) => panic!("a streamed answer failed after it started: {e}"),
    }
}
