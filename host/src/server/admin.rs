//! The admin surface: health, plugins, metrics, backups and each plugin's `admin` export, behind the bearer token.

#[allow(unused_imports)]
use super::*;

/// Admin requests that are not for a plugin may carry at most this much body.
pub(super) const ADMIN_BODY_BYTES: usize = 1 << 20;

/// How long an admin request that is not for a plugin waits for body budget.
pub(super) const ADMIN_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `<data_dir>/admin.token`, creating it (mode 0600) on first start.
pub(super) fn admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let token = crate::util::ids::hex(&crate::util::ids::random(32)?);
            crate::util::fs::write_private(&path, format!("{token}\n").as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
    }
}

pub(super) fn authorized(token: &str, req: &hyper::Request<Incoming>) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::caps::crypto::constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

pub(super) async fn admin_request<'l>(
    host: &Host,
    live: &'l Live,
    token: &str,
    peer: SocketAddr,
    id: &str,
    req: hyper::Request<Incoming>,
) -> (Option<&'l str>, HttpResponse) {
    let path = req.uri().path().to_string();
    if path == "/health" && req.method() == Method::GET {
        return (
            None,
            match host.shared.db.down_reason() {
                None => json_response(StatusCode::OK, json!({"status": "ok"})),
                Some(why) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "degraded", "storage": format!("unavailable: {why}")}),
                ),
            },
        );
    }
    if !authorized(token, &req) {
        let mut r = json_response(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return (None, r);
    }
    if let Some(rest) = path.strip_prefix("/plugins/")
        && let Some((name, tail)) = rest.split_once('/')
        && (tail == "admin" || tail.starts_with("admin/"))
    {
        let Some(entry) = live.entry(name) else {
            return (
                None,
                json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such plugin", "plugin": name}),
                ),
            );
        };
        let Some(plugin) = entry.plugin() else {
            return (Some(entry.name()), plugin_unavailable(entry));
        };
        let prefix = format!("/plugins/{name}/admin");
        let response = call_plugin(host, plugin, req, peer, &prefix, id, true).await;
        return (Some(entry.name()), response);
    }
    if path == "/backup" && req.method() == Method::POST {
        return (None, backup(host));
    }
    let what = match path
        .strip_prefix("/plugins/")
        .and_then(|r| r.split_once('/'))
    {
        _ if path == "/reload" => Some(Reload::File),
        Some((name, "enable")) => Some(Reload::Enable(name.to_string(), true)),
        Some((name, "disable")) => Some(Reload::Enable(name.to_string(), false)),
        _ => None,
    };
    if let Some(what) = what
        && req.method() == Method::POST
    {
        if let Err(r) = read_body(host, req, ADMIN_BODY_BYTES, ADMIN_QUEUE_TIMEOUT).await {
            return (None, r);
        }
        return (
            None,
            match host.reload(what).await {
                Ok(changes) => json_response(
                    StatusCode::OK,
                    json!({"reloaded": true, "changes": changes, "summary": changes.lines()}),
                ),
                Err(e) => {
                    let status = match e {
                        ReloadError::NotServing => StatusCode::SERVICE_UNAVAILABLE,
                        ReloadError::NoSuchPlugin(_) => StatusCode::NOT_FOUND,
                        ReloadError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    };
                    json_response(status, json!({"reloaded": false, "error": e.to_string()}))
                }
            },
        );
    }
    if req.method() != Method::GET {
        return (
            None,
            json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            ),
        );
    }
    if let Err(r) = read_body(host, req, ADMIN_BODY_BYTES, ADMIN_QUEUE_TIMEOUT).await {
        return (None, r);
    }
    match path.as_str() {
        "/plugins" => (
            None,
            json_response(StatusCode::OK, plugins_json(host, live)),
        ),
        "/metrics" => {
            let db = &host.shared.db;
            host.shared
                .metrics
                .storage(db.down_reason().is_none(), db.failures());
            let mut r = hyper::Response::new(Full::new(Bytes::from(host.shared.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            (None, r)
        }
        _ => (
            None,
            json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "no route", "path": path}),
            ),
        ),
    }
}

/// `POST /backup`: a consistent copy of the database, taken while serving,
/// into `<data_dir>/backups/wasmgate-<unix ms>.redb`.
pub(super) fn backup(host: &Host) -> HttpResponse {
    let dir = host.config.data_dir.join("backups");
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let path = dir.join(format!("wasmgate-{ms}.redb"));
    let made =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| host.shared.db.backup(&path).map_err(|e| e.to_string()));
    match made {
        Ok(()) => {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            tracing::info!(path = %path.display(), bytes, "database backed up");
            json_response(StatusCode::OK, json!({"path": path, "bytes": bytes}))
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("backup failed: {e}")}),
            )
        }
    }
}

pub(super) fn plugins_json(host: &Host, live: &Live) -> serde_json::Value {
    let plugins: Vec<_> = live
        .plugins
        .iter()
        .map(|e| {
            let c = e.config();
            match e {
                Entry::Serving { plugin: p, .. } => json!({
                    "name": c.name,
                    "wasm": c.wasm,
                    "mounts": c.mounts,
                    "grants": c.grants.names(),
                    "limits": c.limits,
                    "exports": p.exports(),
                    "state": "running",
                    "sha256": p.sha256,
                    "loaded_at_ms": p.loaded_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    "requests": p.shared.stats.requests.load(Ordering::Relaxed),
                    "traps": p.shared.stats.traps.load(Ordering::Relaxed),
                    "deadline_hits": p.shared.stats.deadlines.load(Ordering::Relaxed),
                }),
                Entry::Failed { reason, .. } => json!({
                    "name": c.name,
                    "wasm": c.wasm,
                    "mounts": c.mounts,
                    "grants": c.grants.names(),
                    "limits": c.limits,
                    "state": "failed",
                    "reason": reason,
                }),
                Entry::Disabled { .. } => json!({
                    "name": c.name,
                    "wasm": c.wasm,
                    "mounts": c.mounts,
                    "grants": c.grants.names(),
                    "limits": c.limits,
                    "state": "disabled",
                }),
            }
        })
        .collect();
    json!({
        "plugins": plugins,
        "allocator": if host.runtime.pooling { "pooling" } else { "on_demand" },
    })
}
