//! Streamed answers (`wasmgate:plugin/streaming`): a plugin sends its status
//! and headers, then its body in pieces, while the call still runs.
//!
//! The server hands each HTTP call a [`Sink`]; `start` sends a [`Head`]
//! through it, whose [`Streamed`] body the server gives hyper at once while
//! the call goes on in its own task. Pieces travel through a channel of
//! [`PIECES`], so a slow client makes `write` wait (bounded by the call's
//! deadline) instead of the host holding the whole body. The body ends
//! cleanly only when the call finished well ([`Stream::finish`]); any other
//! end (a trap, a deadline, a body over the cap, a host panic) cuts the
//! connection, so no client takes a partial body for a whole one.
//!
//! A caller that takes whole answers (`wasmgate call`) passes no sink: the
//! pieces are then kept and joined into one response, under the same cap.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use crate::caps::wit::Response;
use crate::caps::wit::streaming::{Error, Host};
use crate::util::deadline::DeadlineExceeded;

use super::Ctx;

/// Pieces in flight between a call and its client: with the plugin's own
/// piece size (the SDK's is 64 KiB), what the host holds per streamed answer.
pub const PIECES: usize = 4;

/// The status and headers a call started, and its body.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Streamed,
}

/// Where `start` sends the [`Head`]: made by the caller for one call.
pub struct Sink(oneshot::Sender<Head>);

/// A sink and the receiver of its head.
pub fn sink() -> (Sink, oneshot::Receiver<Head>) {
    let (tx, rx) = oneshot::channel();
    (Sink(tx), rx)
}

/// A streamed body cut short: hyper ends the connection without the body's
/// end, so the client sees it incomplete.
#[derive(Debug, thiserror::Error)]
#[error("the plugin's streamed answer was cut short")]
pub struct Cut;

/// The body of a streamed answer, as hyper reads it.
pub struct Streamed {
    pieces: mpsc::Receiver<Bytes>,
    /// Set only when the call finished well and every piece was sent.
    whole: Arc<AtomicBool>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(piece)) => Poll::Ready(Some(Ok(Frame::data(piece)))),
            // Every sender is gone: the end, or a cut.
            Poll::Ready(None) if self.whole.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(Cut))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A call's side of its answer.
#[derive(Default)]
pub enum Stream {
    /// No client (a job): both functions refuse.
    #[default]
    None,
    /// A caller that takes whole answers: the head and pieces kept.
    Buffer {
        head: Option<(u16, Vec<(String, String)>)>,
        body: Vec<u8>,
    },
    /// Waiting for `start`.
    Ready(Sink),
    /// Started: the pieces go to the client.
    Sending {
        pieces: mpsc::Sender<Bytes>,
        whole: Arc<AtomicBool>,
        sent: usize,
        /// Over the cap once: the body is cut whatever the call does next.
        over: bool,
    },
    /// The client went away.
    Closed,
}

impl Stream {
    /// For a call whose caller gives `sink` (none: whole answers).
    pub fn new(sink: Option<Sink>) -> Stream {
        match sink {
            Some(sink) => Stream::Ready(sink),
            None => Stream::Buffer {
                head: None,
                body: Vec::new(),
            },
        }
    }

    /// Whether `start` sent the head to the client.
    pub fn started(&self) -> bool {
        matches!(self, Stream::Sending { .. } | Stream::Closed)
    }

    /// A buffered answer's head and pieces joined with what `handle`
    /// returned; `response` itself when nothing was started.
    pub fn join(self, response: Response) -> Response {
        match self {
            Stream::Buffer {
                head: Some((status, headers)),
                mut body,
            } => {
                body.extend_from_slice(&response.body);
                Response {
                    status,
                    headers,
                    body,
                }
            }
            _ => response,
        }
    }

    /// Ends a started answer after a call that finished well: `last` (the
    /// body `handle` returned) as its last piece, then the body's end. Any
    /// failure here (over `cap`, the client gone, `deadline`) leaves the
    /// body cut.
    pub async fn finish(self, last: Vec<u8>, cap: usize, deadline: Instant) {
        let Stream::Sending {
            pieces,
            whole,
            sent,
            over,
        } = self
        else {
            return;
        };
        if over || sent.saturating_add(last.len()) > cap {
            return;
        }
        if !last.is_empty() {
            let send = pieces.send(Bytes::from(last));
            match tokio::time::timeout_at(deadline.into(), send).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        whole.store(true, Ordering::Release);
    }
}

/// What a status and headers must be to be sent: the rules of a whole
/// answer ([`super::Plugin`]'s `check_response`).
pub fn check_head(status: u16, headers: &[(String, String)]) -> Result<(), String> {
    if !(100..=999).contains(&status) {
        return Err(format!("status {status}"));
    }
    if headers.len() > super::MAX_RESPONSE_HEADERS {
        return Err(format!("more than {} headers", super::MAX_RESPONSE_HEADERS));
    }
    for (k, v) in headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            return Err(format!("header `{k}`"));
        }
    }
    Ok(())
}

fn misuse(what: &str) -> wasmtime::Result<Result<(), Error>> {
    Ok(Err(Error::Misuse(what.to_string())))
}

impl Host for Ctx {
    async fn start(
        &mut self,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        match &self.stream {
            Stream::None => return misuse("no client to stream to: streaming is for HTTP calls"),
            Stream::Buffer { head: Some(_), .. } | Stream::Sending { .. } | Stream::Closed => {
                return misuse("the answer was already started");
            }
            Stream::Buffer { head: None, .. } | Stream::Ready(_) => {}
        }
        if let Err(e) = check_head(status, &headers) {
            return Ok(Err(Error::Invalid(e)));
        }
        if let Some((k, _)) = headers.iter().find(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        }) {
            return Ok(Err(Error::Invalid(format!(
                "header `{k}`: the host frames a streamed body"
            ))));
        }
        match std::mem::take(&mut self.stream) {
            Stream::Buffer { body, .. } => {
                self.stream = Stream::Buffer {
                    head: Some((status, headers)),
                    body,
                };
            }
            Stream::Ready(Sink(sink)) => {
                self.settle().await?;
                let (tx, rx) = mpsc::channel(PIECES);
                let whole = Arc::new(AtomicBool::new(false));
                let head = Head {
                    status,
                    headers,
                    body: Streamed {
                        pieces: rx,
                        whole: whole.clone(),
                    },
                };
                if sink.send(head).is_err() {
                    self.stream = Stream::Closed;
                    return Ok(Err(Error::Closed));
                }
                self.stream = Stream::Sending {
                    pieces: tx,
                    whole,
                    sent: 0,
                    over: false,
                };
            }
            _ => unreachable!("checked above"),
        }
        Ok(Ok(()))
    }

    async fn write(&mut self, chunk: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        let cap = self.plugin.limits.max_response_bytes;
        match &mut self.stream {
            Stream::None => misuse("no client to stream to: streaming is for HTTP calls"),
            Stream::Ready(_) | Stream::Buffer { head: None, .. } => {
                misuse("`write` before `start`")
            }
            Stream::Closed => Ok(Err(Error::Closed)),
            Stream::Buffer { body, .. } => {
                if body.len().saturating_add(chunk.len()) > cap {
                    return Ok(Err(Error::TooLarge(cap as u64)));
                }
                body.extend_from_slice(&chunk);
                Ok(Ok(()))
            }
            Stream::Sending { sent, over, .. } => {
                if *over || sent.saturating_add(chunk.len()) > cap {
                    *over = true;
                    tracing::error!(plugin = %self.plugin.name, request_id = %self.request_id, cap, "streamed answer over max_response_bytes; its connection is cut");
                    return Ok(Err(Error::TooLarge(cap as u64)));
                }
                *sent += chunk.len();
                if chunk.is_empty() {
                    return Ok(Ok(()));
                }
                self.settle().await?;
                let Stream::Sending { pieces, .. } = &self.stream else {
                    unreachable!("matched above");
                };
                match tokio::time::timeout_at(self.deadline.into(), pieces.send(chunk.into())).await
                {
                    Ok(Ok(())) => Ok(Ok(())),
                    Ok(Err(_)) => {
                        self.stream = Stream::Closed;
                        Ok(Err(Error::Closed))
                    }
                    Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
                }
            }
        }
    }
}

impl Ctx {
    /// Waits until what the call read is durable: nothing it read reaches
    /// the client before that.
    async fn settle(&mut self) -> wasmtime::Result<()> {
        let seen = self.storage_seen;
        self.plugin
            .host
            .db
            .settled(seen)
            .await
            .map_err(|e| wasmtime::Error::new(StorageFailed(e.to_string())))
    }
}

/// The database failed before what a streamed answer read was durable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageFailed(pub String);
