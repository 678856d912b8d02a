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
    if let Some(name) = path.strip_prefix("/plugins/")
        && !name.contains('/')
        && (req.method() == Method::PUT || req.method() == Method::DELETE)
    {
        let name = name.to_string();
        return (None, lifecycle_request(host, name, req).await);
    }
    if let Some(name) = path
        .strip_prefix("/plugins/")
        .and_then(|r| r.strip_suffix("/versions"))
        && req.method() == Method::GET
    {
        return (None, versions(host, live, name));
    }
    let what = match path
        .strip_prefix("/plugins/")
        .and_then(|r| r.split_once('/'))
    {
        _ if path == "/reload" => Some(Reload::File),
        Some((name, "enable")) => Some(Reload::Enable(name.to_string(), true)),
        Some((name, "disable")) => Some(Reload::Enable(name.to_string(), false)),
        Some((name, "rollback")) => Some(Reload::Rollback(name.to_string())),
        _ => None,
    };
    if let Some(what) = what
        && req.method() == Method::POST
    {
        if let Err(r) = read_body(host, req, ADMIN_BODY_BYTES, ADMIN_QUEUE_TIMEOUT).await {
            return (None, r);
        }
        return (None, reload_response(host.reload(what).await));
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
            let mut r = hyper::Response::new(full(host.shared.metrics.render()));
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
            // A plugin the config file does not define was installed.
            let installed = live
                .config
                .plugins
                .iter()
                .all(|p| p.name != c.name)
                .then(|| host.installed(&c.name))
                .flatten();
            let mut v = json!({
                "name": c.name,
                "wasm": c.wasm,
                "mounts": c.mounts,
                "grants": c.grants.names(),
                "limits": c.limits,
                "source": if installed.is_some() { "package" } else { "config" },
                "version": installed.as_ref().and_then(|i| i.current()).map(|v| &v.version),
            });
            let more = match e {
                Entry::Serving { plugin: p, .. } => json!({
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
                Entry::Failed { reason, .. } => json!({"state": "failed", "reason": reason}),
                Entry::Disabled { .. } => json!({"state": "disabled"}),
            };
            if let (Some(v), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
                v.extend(more);
            }
            v
        })
        .collect();
    json!({
        "plugins": plugins,
        "allocator": if host.runtime.pooling { "pooling" } else { "on_demand" },
    })
}

/// The answer to a reload, install, rollback, removal, enable or disable.
fn reload_response(result: Result<Changes, ReloadError>) -> HttpResponse {
    match result {
        Ok(changes) => json_response(
            StatusCode::OK,
            json!({"reloaded": true, "changes": changes, "summary": changes.lines()}),
        ),
        Err(e) => {
            let status = match e {
                ReloadError::NotServing => StatusCode::SERVICE_UNAVAILABLE,
                ReloadError::NoSuchPlugin(_) => StatusCode::NOT_FOUND,
                ReloadError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ReloadError::Refused(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json_response(status, json!({"reloaded": false, "error": e.to_string()}))
        }
    }
}

/// Whether the query has `key=true` (or `key=1`).
fn query_flag(req: &hyper::Request<Incoming>, key: &str) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == format!("{key}=true") || kv == format!("{key}=1"))
    })
}

/// The header naming the grants an operator approves for a package.
pub const APPROVE_HEADER: &str = "x-wasmgate-approve-grants";

/// `PUT /plugins/<name>` (install or upgrade from the package in the body)
/// and `DELETE /plugins/<name>` (remove an installed plugin).
async fn lifecycle_request(
    host: &Host,
    name: String,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let bad = |message: String| json_response(StatusCode::BAD_REQUEST, json!({"error": message}));
    let what = if req.method() == Method::DELETE {
        let keep_data = query_flag(&req, "keep_data");
        if let Err(r) = read_body(host, req, ADMIN_BODY_BYTES, ADMIN_QUEUE_TIMEOUT).await {
            return r;
        }
        Reload::Remove { name, keep_data }
    } else {
        let force = query_flag(&req, "force");
        let approved = req
            .headers()
            .get(APPROVE_HEADER)
            .map(|v| v.to_str().map(str::to_string));
        let limit = crate::package::MAX_PACKAGE_BYTES
            .min(host.config.runtime.max_buffered_body_bytes) as usize;
        let body = match read_body(host, req, limit, ADMIN_QUEUE_TIMEOUT).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let approved: crate::caps::Grants = match approved {
            None => {
                return bad(format!(
                    "approve the grants the package requests in the {APPROVE_HEADER} header, as JSON in the config's grants shape (`wasmgate package inspect` shows them)"
                ));
            }
            Some(Err(_)) => return bad(format!("{APPROVE_HEADER} is not text")),
            Some(Ok(text)) => match serde_json::from_str(&text) {
                Ok(g) => g,
                Err(e) => return bad(format!("{APPROVE_HEADER}: {e}")),
            },
        };
        if let Err((key, message)) = approved.validate() {
            return bad(format!("{APPROVE_HEADER}: {key}: {message}"));
        }
        let package = match crate::package::Package::read(&body.bytes) {
            Ok(p) => p,
            Err(e) => return bad(format!("not a wasmgate package: {e}")),
        };
        if package.manifest().name != name {
            return bad(format!(
                "the package is plugin `{}`, not `{name}`",
                package.manifest().name
            ));
        }
        Reload::Install {
            package: Box::new(package),
            approved,
            force,
        }
    };
    reload_response(host.reload(what).await)
}

/// `GET /plugins/<name>/versions`: an installed plugin's versions on disk
/// (the last serves); for a plugin of the config file, the component it runs.
fn versions(host: &Host, live: &Live, name: &str) -> HttpResponse {
    if let Some(installed) = host.installed(name)
        && live.config.plugins.iter().all(|p| p.name != name)
    {
        let current = installed.current().map(|v| v.version.clone());
        return json_response(
            StatusCode::OK,
            json!({"name": name, "source": "package", "current": current, "versions": installed.versions}),
        );
    }
    match live.entry(name) {
        Some(e) => json_response(
            StatusCode::OK,
            json!({"name": name, "source": "config", "sha256": e.plugin().map(|p| p.sha256.clone())}),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "no such plugin", "plugin": name}),
        ),
    }
}
