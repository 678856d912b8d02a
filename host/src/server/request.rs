//! The request path: framing checks, the body (its timeout and its share of the host-wide budget), the call into the plugin, and what the host answers on its own.

#[allow(unused_imports)]
use super::*;

pub(super) async fn dispatch(
    host: Arc<Host>,
    kind: Kind,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let id = crate::util::ids::request_id();
    // Only what the log line needs; the query is never logged (it may hold
    // tokens), nor is anything of the admin surface.
    let logged = (matches!(kind, Kind::Plugins(_)) && host.config.http.log_requests)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    // The table this request runs on, to its end, whatever a reload does.
    let live = host.live();
    let (plugin_name, mut response) = match protocol_error(&req) {
        Some(r) => (None, r),
        None => match kind {
            Kind::Plugins(listen) => plugin_request(&host, &live, &listen, peer, &id, req).await,
            Kind::Admin(token) => admin_request(&host, &live, &token, peer, &id, req).await,
            #[cfg(feature = "bench")]
            Kind::Native => native_request(&host, req).await,
        },
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    host.shared
        .metrics
        .request(plugin_name.unwrap_or("-"), status, elapsed);
    if let Some((method, path)) = logged {
        tracing::info!(
            target: "wasmgate::request",
            plugin = %plugin_name.unwrap_or("-"),
            %method,
            path = %crate::util::text::shown(&path, 200),
            status,
            ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1e3),
            request_id = %id,
            bytes = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0),
            "request"
        );
    }
    Ok(response)
}

/// A response after which the connection is closed: what follows a request
/// the host could not read to its end cannot be trusted to be a request.
pub(super) fn closing(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Requests refused before routing because their framing is ambiguous: an
/// HTTP/1.1 request without `Host`, and a `Transfer-Encoding` other than
/// plain `chunked`, which proxies in front of the host might read
/// differently (request smuggling). (hyper itself refuses one that does not
/// end in `chunked`, and reads one that also has a `Content-Length` by its
/// `Transfer-Encoding` alone, closing the connection after the answer.)
pub(super) fn protocol_error(req: &hyper::Request<Incoming>) -> Option<HttpResponse> {
    let h = req.headers();
    if req.version() == http::Version::HTTP_11 && !h.contains_key(header::HOST) {
        return Some(closing(json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "an HTTP/1.1 request needs a Host header"}),
        )));
    }
    let te = h.get_all(header::TRANSFER_ENCODING);
    // No Transfer-Encoding: nothing more to check.
    te.iter().next()?;
    let codings: Vec<String> = te
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let error = if codings.last().map(String::as_str) != Some("chunked") {
        Some((
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding must end with chunked",
        ))
    } else if codings.len() != 1 {
        Some((
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is supported",
        ))
    } else if h.contains_key(header::CONTENT_LENGTH) {
        Some((
            StatusCode::BAD_REQUEST,
            "a request may not have both Transfer-Encoding and Content-Length",
        ))
    } else {
        None
    };
    error.map(|(status, message)| closing(json_response(status, json!({"error": message}))))
}

/// A request body in memory, holding its share of the host's body budget
/// until it is dropped.
pub(super) struct ReadBody {
    pub(super) parts: http::request::Parts,
    pub(super) bytes: Bytes,
    budget: Option<OwnedSemaphorePermit>,
}

/// Takes `n` bytes of the body budget, waiting until `until`.
pub(super) async fn take_budget(
    budget: &Arc<Semaphore>,
    n: usize,
    until: tokio::time::Instant,
) -> Result<OwnedSemaphorePermit, HttpResponse> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(until, budget.clone().acquire_many_owned(n)).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(unavailable(
            "too many request bodies in memory; retry later",
        )),
    }
}

pub(super) fn unavailable(message: &str) -> HttpResponse {
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Reads the body up to `limit` bytes within `http.body_timeout_ms`, holding
/// as many bytes of the host's body budget (waiting up to `queue_timeout`
/// for them); `Err` is the response to send.
pub(super) async fn read_body(
    host: &Host,
    req: hyper::Request<Incoming>,
    limit: usize,
    queue_timeout: Duration,
) -> Result<ReadBody, HttpResponse> {
    let too_large = || {
        closing(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "request body too large", "limit": limit}),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let budget = &host.shared.body_budget;
    let queue_until = tokio::time::Instant::now() + queue_timeout;
    let mut permit = match declared {
        Some(n) if n > 0 => Some(take_budget(budget, n as usize, queue_until).await?),
        _ => None,
    };
    let (parts, mut body) = req.into_parts();
    let body_timeout = Duration::from_millis(host.config.http.body_timeout_ms);
    let read = async {
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                closing(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("cannot read the request body: {e}")}),
                ))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            if declared.is_none() && !data.is_empty() {
                let more = take_budget(budget, data.len(), queue_until).await?;
                match &mut permit {
                    Some(p) => p.merge(more),
                    None => permit = Some(more),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf)
    };
    match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(buf)) => Ok(ReadBody {
            parts,
            bytes: Bytes::from(buf),
            budget: permit,
        }),
        Ok(Err(r)) => Err(r),
        Err(_) => Err(closing(json_response(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "the request body did not arrive in time", "timeout_ms": body_timeout.as_millis() as u64}),
        ))),
    }
}

pub(super) fn to_wit_request(
    parts: &http::request::Parts,
    body: Bytes,
    peer: SocketAddr,
    prefix: &str,
    id: &str,
) -> Request {
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body: body.into(),
        client_addr: peer.to_string(),
        prefix: prefix.to_string(),
        request_id: id.to_string(),
    }
}

/// Turns a plugin's answer or failure into the HTTP response.
pub(super) fn plugin_response(
    result: Result<crate::caps::wit::Response, CallError>,
    id: &str,
) -> HttpResponse {
    match result {
        Ok(r) => with_head(full(r.body), r.status, r.headers),
        Err(e) => {
            let (status, body) = call_error_body(&e, id);
            let mut r = json_response(status, body);
            if matches!(e, CallError::Busy(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}

/// A response of `body` with a plugin's status and headers, which the
/// runtime already validated.
fn with_head(body: Body, status: u16, headers: Vec<(String, String)>) -> HttpResponse {
    let mut out = hyper::Response::new(body);
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    out
}

/// The response of a streamed answer: its body comes as the call sends it.
fn streamed(head: crate::runtime::Head) -> HttpResponse {
    with_head(
        http_body_util::Either::Right(head.body),
        head.status,
        head.headers,
    )
}

/// What the client gets when a call produced no usable response.
pub fn call_error_body(e: &CallError, id: &str) -> (StatusCode, serde_json::Value) {
    match e {
        CallError::Deadline => (
            StatusCode::GATEWAY_TIMEOUT,
            json!({"error": "deadline exceeded", "request_id": id}),
        ),
        CallError::NoExport(what) => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("the plugin has no `{what}` export"), "request_id": id}),
        ),
        CallError::HostPanic(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "internal error", "request_id": id}),
        ),
        CallError::Busy(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("busy: {why}; retry later"), "request_id": id}),
        ),
        CallError::Storage(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("{why}; retry later"), "request_id": id}),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "plugin failed", "request_id": id}),
        ),
    }
}

/// Whether `plugin` may touch the database (so cannot work while it is down).
pub(super) fn uses_storage(plugin: &Plugin) -> bool {
    let g = &plugin.shared.caps.grants;
    g.kv || g.keys || g.jobs
}

/// 503 while the database is down, the same for every plugin.
pub(super) fn storage_unavailable(why: &str, id: &str) -> HttpResponse {
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": format!("storage unavailable: {why}; retry later"), "request_id": id}),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Reads the body and calls the plugin's `handler` (or `admin`). While the
/// database is down, a plugin that uses it is not called: 503. One whose
/// call failed (5xx) because the database went down meanwhile gets the same
/// 503 rather than its own error text; a success is never replaced.
pub(super) async fn call_plugin(
    host: &Host,
    plugin: &Arc<Plugin>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    prefix: &str,
    id: &str,
    admin: bool,
) -> HttpResponse {
    let storage = uses_storage(plugin);
    if storage && let Some(why) = host.shared.db.down_reason() {
        return storage_unavailable(&why, id);
    }
    let limits = &plugin.shared.limits;
    let queue_timeout = Duration::from_millis(limits.queue_timeout_ms);
    let ReadBody {
        parts,
        bytes,
        budget,
    } = match read_body(host, req, limits.max_body_bytes, queue_timeout).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let wit = to_wit_request(&parts, bytes, peer, prefix, id);
    let (sink, mut head) = crate::runtime::sink();
    let call = {
        let plugin = plugin.clone();
        async move {
            let result = plugin.call(wit, admin, sink).await;
            // The body lived in the call's memory until now.
            drop(budget);
            result
        }
    };
    // Boxed: a started call moves to a task of its own.
    let mut call = Box::pin(call);
    // A streamed answer's head arrives while the call runs: the client
    // gets it at once, and the call goes on in a task of its own.
    let result = tokio::select! {
        biased;
        started = &mut head => match started {
            Ok(head) => {
                tokio::spawn(call);
                return streamed(head);
            }
            Err(_) => call.await,
        },
        result = &mut call => result,
    };
    if let Ok(head) = head.try_recv() {
        // Started and finished at once: the whole body is in the channel.
        return streamed(head);
    }
    let response = plugin_response(result, id);
    if storage
        && response.status().is_server_error()
        && let Some(why) = host.shared.db.down_reason()
    {
        return storage_unavailable(&why, id);
    }
    response
}

pub(super) async fn plugin_request<'l>(
    host: &Host,
    live: &'l Live,
    listen: &str,
    peer: SocketAddr,
    id: &str,
    req: hyper::Request<Incoming>,
) -> (Option<&'l str>, HttpResponse) {
    let path = req.uri().path().to_string();
    let no_route = |path: String| {
        json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "no route", "path": path}),
        )
    };
    let Some(router) = live.routers.get(listen) else {
        // A listener a reload closed: its open connections end here.
        return (None, closing(no_route(path)));
    };
    let Some(m) = router.route(&path) else {
        return (None, no_route(path));
    };
    let entry = &live.plugins[m.plugin];
    let Some(plugin) = entry.plugin() else {
        return (Some(entry.name()), plugin_unavailable(entry));
    };
    plugin.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = call_plugin(host, plugin, req, peer, m.prefix, id, false).await;
    (Some(entry.name()), response)
}

/// The answer on the routes of a plugin that failed to load (the reason is
/// the operator's, on the admin surface's `/plugins`) or is disabled.
pub(super) fn plugin_unavailable(entry: &Entry) -> HttpResponse {
    let error = match entry {
        Entry::Disabled { .. } => "plugin disabled",
        _ => "plugin unavailable",
    };
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": error, "plugin": entry.name()}),
    )
}

#[cfg(feature = "bench")]
pub(super) async fn native_request(
    host: &Host,
    req: hyper::Request<Incoming>,
) -> (Option<&str>, HttpResponse) {
    let limit = host
        .serving()
        .first()
        .map_or(ADMIN_BODY_BYTES, |p| p.shared.limits.max_body_bytes);
    if let Err(r) = read_body(host, req, limit, ADMIN_QUEUE_TIMEOUT).await {
        return (Some("native"), r);
    }
    (
        Some("native"),
        json_response(StatusCode::OK, json!({"message": "hello"})),
    )
}

pub(super) fn json_response(status: StatusCode, value: serde_json::Value) -> HttpResponse {
    let mut r = hyper::Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
