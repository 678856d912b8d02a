//! `outbound`: HTTP/1.1 requests from a plugin to the hosts its grant lists,
//! over http:// or https:// (rustls on ring, Mozilla's roots compiled in).
//!
//! Steps of every call, in order:
//! 1. Re-check the grant: withheld is a typed `denied`.
//! 2. Check the request before any I/O: method, absolute http(s) URL without
//!    user info, headers; the URL's host and port must match a grant entry
//!    exactly (a bare host in the grant means the scheme's default port).
//! 3. Resolve the host once and pin the connection to those addresses: the
//!    connector's resolver answers only them, so nothing resolved later (DNS
//!    rebinding) can steer the connection elsewhere.
//! 4. Send with hop-by-hop headers (and `host`, `content-length`) stripped;
//!    no redirect is followed, a 3xx comes back as it is.
//! 5. Stream the answer, refusing it as `too-large` as soon as it passes the
//!    grant's cap (a declared `content-length` over the cap is refused before
//!    reading), all within the timeout: the least of the grant's, the
//!    request's and what is left of the plugin's own deadline. Running into
//!    the plugin's deadline traps the call as a deadline, like net's calls.
//!
//! Nothing here logs a body, a query string or a header value.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use wasmtime::component::{HasData, Linker};

use super::wit::outbound::{Error, Host, IncomingResponse, OutgoingRequest};
use super::{Call, Capability, CapsHost, HostEnv, PluginCaps, PluginEnv, Trappable};

type OutboundError = Trappable<Error>;

pub struct Outbound;

impl Capability for Outbound {
    const NAME: &'static str = "outbound";
    const EXAMPLE: &'static str = "{ hosts: [\"api.example.com\"] }";
    type Grant = Option<OutboundGrant>;
    type State = ();
    type PluginState = ();

    fn validate(grant: &Option<OutboundGrant>) -> Result<(), (String, String)> {
        grant.as_ref().map_or(Ok(()), OutboundGrant::validate)
    }

    fn state(_: &HostEnv) {}

    fn plugin_state(_: &PluginEnv<'_>, _: &Option<OutboundGrant>) {}

    fn add_to_linker<T: CapsHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        super::wit::outbound::add_to_linker::<T, HasView>(linker, |t| View::new(t.call()))
    }
}

/// One call's view: the plugin's grant and the call's deadline.
pub struct View<'a> {
    plugin: &'a PluginCaps,
    deadline: Instant,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

impl<'a> View<'a> {
    pub fn new(call: Call<'a>) -> View<'a> {
        View {
            plugin: call.plugin,
            deadline: call.deadline,
        }
    }
}

pub mod grant;

pub use grant::OutboundGrant;
use grant::*;

/// The most request headers a plugin may send.
const MAX_HEADERS: usize = 100;
/// How much of a refused URL's host an error message repeats.
const MAX_HOST_IN_MESSAGE: usize = 100;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus those the client computes itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A request checked against the grant, ready to send.
struct Checked {
    request: http::Request<Full<Bytes>>,
    host: String,
    port: u16,
}

fn shown(host: &str) -> String {
    crate::util::text::shown(host, MAX_HOST_IN_MESSAGE)
}

/// Step 2: everything about the request that needs no I/O.
fn check(grant: &OutboundGrant, req: OutgoingRequest) -> Result<Checked, Error> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Error::Invalid(format!("`{}` is not an HTTP method", shown(&req.method))))?;
    if method == http::Method::CONNECT {
        return Err(Error::Invalid("CONNECT is not allowed".into()));
    }
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|e| Error::Invalid(format!("the URL does not parse: {e}")))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        Some(other) => {
            return Err(Error::Denied(format!(
                "the scheme `{}` is not allowed",
                shown(other)
            )));
        }
        None => {
            return Err(Error::Invalid(
                "the URL must be absolute (http:// or https://)".into(),
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| Error::Invalid("the URL has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(Error::Invalid("user info in the URL is not allowed".into()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(default_port);
    if host.is_empty() {
        return Err(Error::Invalid("the URL has no host".into()));
    }
    if !grant.allows(&host, port, default_port) {
        return Err(Error::Denied(format!(
            "`{}:{port}` is not in this plugin's `outbound.hosts`",
            shown(&host)
        )));
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(Error::Invalid(format!("more than {MAX_HEADERS} headers")));
    }
    if req.body.len() > MAX_REQUEST_BODY {
        return Err(Error::Invalid(format!(
            "the body is over {MAX_REQUEST_BODY} bytes"
        )));
    }
    // Also the headers the plugin's own `connection` header names.
    let named: Vec<String> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Invalid(format!("`{}` is not a header name", shown(name))))?;
        // The value is never repeated: it may be a credential.
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::Invalid(format!("the value of `{name}` is not a valid header value"))
        })?;
        if is_hop_by_hop(&name)
            || name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
            || named.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| Error::Invalid(format!("the request is malformed: {e}")))?;
    Ok(Checked {
        request,
        host,
        port,
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// A resolver that answers only the addresses resolved at step 3.
#[derive(Clone)]
struct Pinned(Arc<Vec<SocketAddr>>);

impl tower_service::Service<Name> for Pinned {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(self.0.as_ref().clone().into_iter()))
    }
}

/// The TLS client configuration, built once: ring, TLS 1.2 and 1.3, the
/// webpki roots, no client certificate.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::Connect(format!("TLS is unavailable: {e}")))
}

/// Steps 3 to 5, without the timeout.
async fn exchange(checked: Checked, cap: u64) -> Result<IncomingResponse, Error> {
    let Checked {
        request,
        host,
        port,
    } = checked;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Error::Connect(format!("cannot resolve `{}`: {e}", shown(&host))))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Connect(format!(
            "`{}` resolves to no address",
            shown(&host)
        )));
    }
    let mut http = HttpConnector::new_with_resolver(Pinned(Arc::new(addrs)));
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?.as_ref().clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let response = client.request(request).await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error::Connect(text)
    })?;
    let (parts, mut body) = response.into_parts();
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > cap
    {
        return Err(Error::TooLarge(cap));
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Connect(format!("reading the response: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > cap {
                return Err(Error::TooLarge(cap));
            }
            bytes.extend_from_slice(&data);
        }
    }
    // Also the headers the server's `connection` header names.
    let named: Vec<String> = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && !named.iter().any(|n| n == name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(IncomingResponse {
        status: parts.status.as_u16(),
        headers,
        body: bytes,
    })
}

/// One call: steps 1 to 5 under the timeout.
async fn send(
    plugin: &PluginCaps,
    deadline: Instant,
    req: OutgoingRequest,
) -> Result<IncomingResponse, OutboundError> {
    let Some(grant) = plugin.grants.outbound.as_ref() else {
        return Err(Trappable::trap(plugin.not_granted(Outbound::NAME)));
    };
    let method = req.method.clone();
    let asked = req.timeout_ms.map(u64::from).unwrap_or(grant.timeout_ms);
    let timeout = Duration::from_millis(asked.min(grant.timeout_ms));
    let checked = match check(grant, req) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(plugin = %plugin.name, method = %shown(&method), "outbound refused before connecting");
            return Err(e.into());
        }
    };
    let (host, port) = (checked.host.clone(), checked.port);
    let started = Instant::now();
    let result = crate::util::deadline::bound(
        deadline,
        timeout,
        exchange(checked, grant.max_response_bytes),
    )
    .await
    .map_err(Trappable::trap)?
    .unwrap_or(Err(Error::Timeout));
    let ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(r) => {
            tracing::debug!(plugin = %plugin.name, %method, host = %shown(&host), port, status = r.status, bytes = r.body.len(), ms, "outbound")
        }
        Err(e) => {
            tracing::info!(plugin = %plugin.name, %method, host = %shown(&host), port, error = ?e, ms, "outbound failed")
        }
    }
    Ok(result?)
}

impl Host for View<'_> {
    fn convert_error(&mut self, err: OutboundError) -> wasmtime::Result<Error> {
        err.into_wit()
    }

    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, OutboundError> {
        send(self.plugin, self.deadline, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Grants;
    use crate::caps::testing::Fixture;
    use crate::util::deadline::DeadlineExceeded;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn grant(hosts: &[&str]) -> OutboundGrant {
        OutboundGrant {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            timeout_ms: 5000,
            max_response_bytes: 1 << 20,
        }
    }

    fn get(url: &str) -> OutgoingRequest {
        OutgoingRequest {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        }
    }

    #[test]
    fn grant_entries_parse_or_say_why_not() {
        assert_eq!(
            parse_entry("Example.com").unwrap(),
            Allowed {
                host: "example.com".into(),
                port: None
            }
        );
        assert_eq!(
            parse_entry("127.0.0.1:2084").unwrap(),
            Allowed {
                host: "127.0.0.1".into(),
                port: Some(2084)
            }
        );
        assert_eq!(
            parse_entry("[::1]:8080").unwrap(),
            Allowed {
                host: "::1".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            parse_entry("[::1]").unwrap(),
            Allowed {
                host: "::1".into(),
                port: None
            }
        );
        for (bad, needle) in [
            ("", "empty"),
            ("*.example.com", "wildcards"),
            ("http://example.com", "not a URL"),
            ("example.com:0", "1..=65535"),
            ("example.com:99999", "1..=65535"),
            ("::1", "brackets"),
            ("[nope]:80", "not an IPv6"),
            ("exa mple.com", "not a host name"),
            ("example..com", "not a host name"),
        ] {
            let err = parse_entry(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_grant_validates_its_numbers() {
        assert!(grant(&["a.example"]).validate().is_ok());
        assert_eq!(grant(&[]).validate().unwrap_err().0, "hosts");
        assert_eq!(grant(&["a", "*"]).validate().unwrap_err().0, "hosts[1]");
        let mut g = grant(&["a"]);
        g.timeout_ms = 0;
        assert_eq!(g.validate().unwrap_err().0, "timeout_ms");
        let mut g = grant(&["a"]);
        g.max_response_bytes = MAX_RESPONSE_CAP + 1;
        assert_eq!(g.validate().unwrap_err().0, "max_response_bytes");
    }

    #[test]
    fn urls_are_checked_against_the_grant_exactly() {
        let g = grant(&["api.example.com", "127.0.0.1:2084", "[::1]:9"]);
        let ok = |url: &str| check(&g, get(url)).is_ok();
        assert!(ok("http://api.example.com/x"));
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com:80/x"));
        assert!(ok("http://127.0.0.1:2084/portal/keys?x=1"));
        assert!(ok("http://[::1]:9/"));
        for (url, denied) in [
            ("http://api.example.com:8080/", true),
            ("http://evil.api.example.com/", true),
            ("http://api.example.com.evil.net/", true),
            ("http://127.0.0.1:2085/", true),
            ("http://127.0.0.1/", true),
            ("http://localhost:2084/", true),
            ("ftp://api.example.com/", true),
            ("file:///etc/passwd", false),
            ("/relative", false),
            ("http://user:pw@api.example.com/", false),
        ] {
            match check(&g, get(url)) {
                Err(Error::Denied(_)) if denied => {}
                Err(Error::Invalid(_)) if !denied => {}
                Err(e) => panic!("{url}: {e:?}"),
                Ok(_) => panic!("{url}: allowed"),
            }
        }
    }

    #[test]
    fn hop_by_hop_and_host_headers_are_not_sent() {
        let g = grant(&["a.example"]);
        let mut req = get("http://a.example/");
        req.headers = vec![
            ("Connection".into(), "close, x-hop".into()),
            ("x-hop".into(), "1".into()),
            ("transfer-encoding".into(), "chunked".into()),
            ("host".into(), "evil.example".into()),
            ("content-length".into(), "99".into()),
            ("authorization".into(), "Bearer x".into()),
        ];
        let c = check(&g, req).unwrap();
        let names: Vec<_> = c.request.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization"]);
        let mut req = get("http://a.example/");
        req.headers = vec![("x".into(), "bad\nvalue".into())];
        assert!(matches!(check(&g, req), Err(Error::Invalid(m)) if !m.contains("bad")));
    }

    /// A one-shot HTTP server that reads a request and writes `answer` after `delay`.
    async fn serve_once(answer: Vec<u8>, delay: Duration) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        });
        port
    }

    /// The interface as a plugin sees it, its error as the WIT error (or a trap).
    struct P(Fixture);

    impl P {
        async fn send(
            &mut self,
            r: OutgoingRequest,
        ) -> wasmtime::Result<Result<IncomingResponse, Error>> {
            match Host::send(&mut View::new(self.0.call()), r).await {
                Ok(v) => Ok(Ok(v)),
                Err(e) => e.into_wit().map(Err),
            }
        }
    }

    fn ctx_with(grant: OutboundGrant) -> P {
        let mut f = Fixture::new(
            "a",
            Grants {
                outbound: Some(grant),
                ..Grants::default()
            },
        );
        f.deadline = Instant::now() + Duration::from_secs(30);
        P(f)
    }

    #[tokio::test]
    async fn a_response_comes_back_without_hop_by_hop_headers() {
        let port = serve_once(
            b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nConnection: close, x-private\r\nX-Private: 1\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
            Duration::ZERO,
        )
        .await;
        let mut ctx = ctx_with(grant(&[&format!("127.0.0.1:{port}")]));
        let r = ctx
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 302, "redirects are not followed");
        assert_eq!(r.body, b"hi");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "location" && v == "http://elsewhere/")
        );
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k == "connection" || k == "x-private"),
            "{:?}",
            r.headers
        );
    }

    #[tokio::test]
    async fn an_oversize_response_is_refused_streamed_or_declared() {
        let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            body.extend_from_slice(b"400\r\n");
            body.extend_from_slice(&[b'x'; 0x400]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let port = serve_once(body, Duration::ZERO).await;
        let mut g = grant(&[&format!("127.0.0.1:{port}")]);
        g.max_response_bytes = 4096;
        let mut ctx = ctx_with(g.clone());
        let r = ctx
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::TooLarge(4096))), "{r:?}");

        let port = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n".to_vec(),
            Duration::ZERO,
        )
        .await;
        g.hosts = vec![format!("127.0.0.1:{port}")];
        let mut ctx = ctx_with(g);
        let r = ctx
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::TooLarge(4096))), "{r:?}");
    }

    #[tokio::test]
    async fn a_slow_server_times_out_at_the_least_timeout() {
        let port = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Duration::from_secs(5),
        )
        .await;
        let mut ctx = ctx_with(grant(&[&format!("127.0.0.1:{port}")]));
        let mut req = get(&format!("http://127.0.0.1:{port}/"));
        req.timeout_ms = Some(200);
        let started = Instant::now();
        let r = ctx.send(req).await.unwrap();
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_request_deadline_bounds_the_wait_and_traps() {
        let port = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Duration::from_secs(5),
        )
        .await;
        let mut ctx = ctx_with(grant(&[&format!("127.0.0.1:{port}")]));
        ctx.0.deadline = Instant::now() + Duration::from_millis(200);
        let trap = ctx
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(
            trap.downcast_ref::<DeadlineExceeded>().is_some(),
            "{trap:?}"
        );
    }

    #[tokio::test]
    async fn without_the_grant_a_call_traps() {
        let mut ctx = P(Fixture::new("a", Grants::default()));
        assert!(ctx.send(get("http://127.0.0.1:1/")).await.is_err());
    }

    #[tokio::test]
    async fn https_speaks_tls_and_a_server_that_does_not_is_a_connect_error() {
        // A plain-HTTP server on an https:// URL: rustls's handshake fails,
        // which shows https is attempted (not refused) and not downgraded.
        let port = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Duration::ZERO,
        )
        .await;
        let mut ctx = ctx_with(grant(&[&format!("127.0.0.1:{port}")]));
        let r = ctx
            .send(get(&format!("https://127.0.0.1:{port}/")))
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::Connect(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut ctx = ctx_with(grant(&[&format!("127.0.0.1:{port}")]));
        let r = ctx
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
        assert!(matches!(r, Err(Error::Connect(_))), "{r:?}");
    }
}
