//! What the command line needs besides serving: `wasmgate call`'s request and prefix, and `wasmgate check`'s table.

#[allow(unused_imports)]
use super::*;

/// The prefix of the plugin's mount that a request for `path` reaches (the
/// longest that matches, as the router picks), or `None` if no mount does.
pub fn prefix_for(plugin: &Plugin, path: &str) -> Option<String> {
    plugin
        .config
        .mounts
        .iter()
        .filter(|m| {
            let mut r = Router::default();
            r.add(&m.prefix, 0);
            r.route(path).is_some()
        })
        .max_by_key(|m| m.prefix.len())
        .map(|m| m.prefix.clone())
}

/// A request for `wasmgate call` and `bench-instantiate`.
pub fn local_request(
    method: &str,
    path_and_query: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    prefix: String,
) -> Request {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        client_addr: "127.0.0.1:0".to_string(),
        prefix,
        request_id: crate::util::ids::request_id(),
    }
}

/// One plugin as `wasmgate check` reports it: the table's columns, and how
/// its load went (`Ok`: what it loaded from and exports).
pub struct CheckRow {
    pub columns: [String; 4],
    pub status: anyhow::Result<String>,
}

/// Loads and links every plugin of `config` as `serve` would, without
/// binding anything; `Err` when the host itself cannot be set up.
pub fn check_rows(config: &Config) -> anyhow::Result<Vec<CheckRow>> {
    let host = Host::empty(config.clone(), Db::in_memory()?)?;
    let cache = Cache::open(&config.data_dir)?;
    cache.trust_compilers(&config.trust.compilers);
    let mut rows = Vec::new();
    for p in &config.plugins {
        let mounts = p
            .mounts
            .iter()
            .map(|m| format!("{}{}", m.listen, m.prefix))
            .collect::<Vec<_>>()
            .join(" ");
        let grants = match p.grants.names() {
            names if names.is_empty() => "-".to_string(),
            names => names.join(","),
        };
        let status = host
            .runtime
            .load(p, host.shared.clone(), &cache)
            .map(|loaded| {
                format!(
                    "ok ({}; exports {})",
                    match loaded.origin {
                        crate::runtime::Origin::Compiled => "compiled",
                        crate::runtime::Origin::Cache => "cached",
                        crate::runtime::Origin::Artefact => "precompiled",
                    },
                    loaded.exports().join(", ")
                )
            });
        rows.push(CheckRow {
            columns: [p.name.clone(), p.wasm.display().to_string(), mounts, grants],
            status,
        });
    }
    Ok(rows)
}

/// One request to a running server's admin surface at `addr` with the
/// bearer `token`: the answer's status and JSON body.
pub async fn admin_call(
    addr: &str,
    token: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("cannot reach the admin listener at {addr}: is the server running?")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("admin listener: HTTP handshake failed")?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let response = sender
        .send_request(req)
        .await
        .context("admin listener: no answer")?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or_else(
        |_| serde_json::json!({"error": String::from_utf8_lossy(&body).into_owned()}),
    );
    Ok((status, value))
}
