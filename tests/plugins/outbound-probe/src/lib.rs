//! Probes `outbound` for the end-to-end tests (tests/e2e/outbound.rs). Its
//! own crate rather than a fixture endpoint: the fixture is granted a fixed
//! set of capabilities that other tests spell out, and importing `outbound`
//! there would make every one of them name a grant they do not test.

use serde::Deserialize;
use serde_json::{Value, json};
use wasmgate_sdk::outbound::{self, OutboundError};
use wasmgate_sdk::{Error, Params, Plugin, Request, Response, Router};

struct Probe;

impl Plugin for Probe {
    fn handle(req: &Request) -> Result<Response, Error> {
        Router::new()
            .post("/send", send)
            .post("/json", json_helper)
            .handle(req)
    }
}

wasmgate_sdk::export_plugin!(Probe);

#[derive(Deserialize)]
struct Send {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

fn get() -> String {
    "GET".into()
}

/// Sends the described request; answers 200 with what came back or with
/// `{"error": {"kind", "message"}}`.
fn send(req: &Request, _: &Params) -> Result<Response, Error> {
    let s: Send = req.json()?;
    let result = outbound::send(&outbound::Request {
        method: s.method,
        url: s.url,
        headers: s.headers,
        body: s.body.into_bytes(),
        timeout_ms: s.timeout_ms,
    });
    let out = match result {
        Ok(r) => json!({
            "status": r.status,
            "headers": r.headers,
            "body": String::from_utf8_lossy(&r.body),
        }),
        Err(e) => {
            let (kind, message) = match e {
                OutboundError::Denied(m) => ("denied", m),
                OutboundError::Invalid(m) => ("invalid", m),
                OutboundError::Timeout => ("timeout", String::new()),
                OutboundError::TooLarge(cap) => ("too-large", cap.to_string()),
                OutboundError::Connect(m) => ("connect", m),
            };
            json!({ "error": { "kind": kind, "message": message } })
        }
    };
    Ok(Response::json(200, &out))
}

/// `post_json(url, body)` through the SDK helper; errors map to statuses.
fn json_helper(req: &Request, _: &Params) -> Result<Response, Error> {
    let v: Value = req.json()?;
    let url = v["url"].as_str().unwrap_or_default();
    let (status, body) = outbound::post_json(url, &v["body"])?;
    Ok(Response::json(
        200,
        &json!({ "status": status, "body": body }),
    ))
}
