//! `log`: plugin lines into the host's tracing log, tagged with the plugin
//! and the request id, truncated and rate-bounded per plugin. The same
//! bounding applies to a plugin's stdout and stderr (see [`Output`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::wit::log::{Host, Level};
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv};
use crate::util::time::unix_now;

/// The longest line kept, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Lines per plugin per second; the rest are counted and reported.
pub const LINES_PER_SECOND: u64 = 200;
/// Bytes of stdout or stderr kept per request or job.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// A plugin's line budget: a one-second window and what it dropped.
#[derive(Default)]
pub struct LogBudget {
    second: AtomicU64,
    used: AtomicU64,
    dropped: AtomicU64,
}

impl LogBudget {
    /// Whether one more line may be written now; reports lines dropped in
    /// the previous second when a new second starts.
    fn take(&self, plugin: &str) -> bool {
        let now = unix_now();
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    plugin,
                    dropped,
                    "plugin log lines dropped by the rate limit"
                );
            }
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Cuts `text` at [`MAX_LINE_BYTES`] on a character boundary and escapes
/// control characters so a plugin cannot forge log lines.
pub fn sanitize(text: &str) -> String {
    let mut end = text.len().min(MAX_LINE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    if end < text.len() {
        out.push_str(" [truncated]");
    }
    out
}

pub struct Log;

impl Capability for Log {
    const NAME: &'static str = "log";
    const EXAMPLE: &'static str = "true";
    type Grant = bool;
    type State = ();
    /// The plugin's line budget; its stdout and stderr draw on it too.
    type PluginState = LogBudget;

    fn state(_: &HostEnv) {}

    fn plugin_state(_: &PluginEnv<'_>, _: &bool) -> LogBudget {
        LogBudget::default()
    }

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::log::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// Writes one plugin line, if the plugin's budget allows.
pub fn emit(plugin: &PluginCaps, request_id: &str, level: Level, stream: &str, text: &str) {
    if !plugin.states.log.take(&plugin.name) {
        return;
    }
    let plugin = plugin.name.as_str();
    let text = sanitize(text);
    match level {
        Level::Trace => tracing::trace!(plugin, request_id, stream, "{text}"),
        Level::Debug => tracing::debug!(plugin, request_id, stream, "{text}"),
        Level::Info => tracing::info!(plugin, request_id, stream, "{text}"),
        Level::Warn => tracing::warn!(plugin, request_id, stream, "{text}"),
        Level::Error => tracing::error!(plugin, request_id, stream, "{text}"),
    }
}

/// Sends what the plugin printed to the log, a line at a time.
pub fn flush_output(plugin: &PluginCaps, request_id: &str, stdout: &Output, stderr: &Output) {
    for (name, out) in [("stdout", stdout), ("stderr", stderr)] {
        let (bytes, dropped) = out.take();
        if bytes.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            emit(plugin, request_id, Level::Info, name, line);
        }
        if dropped > 0 {
            emit(
                plugin,
                request_id,
                Level::Warn,
                name,
                &format!("{dropped} more bytes of {name} were discarded"),
            );
        }
    }
}

/// One call's view: the plugin and the request it logs for.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    request_id: &'a str,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            request_id: call.request_id,
        }
    }
}

impl Host for View<'_> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.plugin.grants.log {
            return Err(self.plugin.not_granted(Log::NAME));
        }
        emit(self.plugin, self.request_id, level, "log", &message);
        Ok(())
    }
}

/// A plugin's stdout or stderr: keeps the first [`MAX_OUTPUT_BYTES`] and
/// counts the rest, which it accepts and discards, so a chatty plugin neither
/// fails its writes nor grows host memory.
#[derive(Clone, Default)]
pub struct Output {
    inner: Arc<Mutex<(Vec<u8>, usize)>>,
}

impl Output {
    /// Takes what was kept and how many bytes were discarded.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *g)
    }

    fn push(&self, buf: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT_BYTES.saturating_sub(g.0.len());
        let kept = room.min(buf.len());
        g.0.extend_from_slice(&buf[..kept]);
        g.1 += buf.len() - kept;
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_cuts_long_lines_and_escapes_newlines() {
        assert_eq!(sanitize("a\nb"), "a b");
        let long = "é".repeat(MAX_LINE_BYTES);
        let s = sanitize(&long);
        assert!(s.ends_with(" [truncated]"));
        assert!(s.len() <= MAX_LINE_BYTES + 12);
    }

    #[test]
    fn without_the_grant_a_line_traps() {
        use crate::caps::Grants;
        use crate::caps::testing::Fixture;
        let mut f = Fixture::new("p", Grants::default());
        assert!(Host::log(&mut View::new(f.call()), Level::Info, "x".into()).is_err());
        let mut f = Fixture::new(
            "p",
            Grants {
                log: true,
                ..Grants::default()
            },
        );
        assert!(Host::log(&mut View::new(f.call()), Level::Info, "x".into()).is_ok());
    }

    #[test]
    fn output_keeps_a_bounded_prefix_and_counts_the_rest() {
        let o = Output::default();
        o.push(&vec![b'x'; MAX_OUTPUT_BYTES - 1]);
        o.push(b"yz");
        let (kept, dropped) = o.take();
        assert_eq!(kept.len(), MAX_OUTPUT_BYTES);
        assert_eq!(dropped, 1);
    }
}
