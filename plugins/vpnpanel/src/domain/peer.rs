//! Calls between a panel and its nodes over `outbound`.

use serde_json::Value;

/// One JSON call to another wasmgate running this plugin (a node, or a
/// node's panel) over `outbound`: the parsed answer of a 2xx with
/// `success: true`, or why not in words that name `peer` ("node",
/// "panel"), e.g. "Cannot reach the node: ...".
pub fn call_peer(
    peer: &str,
    method: &str,
    url: &str,
    auth: (&str, &str),
    body: Option<&Value>,
    timeout_ms: u32,
) -> Result<Value, String> {
    use wasmgate_sdk::outbound::{self, OutboundError};
    let mut headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        (auth.0.to_string(), auth.1.to_string()),
    ];
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let answer = outbound::send(&outbound::Request {
        method: method.into(),
        url: url.to_string(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        timeout_ms: Some(timeout_ms),
    })
    .map_err(|e| match e {
        OutboundError::Denied(why) => {
            format!("The {peer}'s address is not allowed by the outbound grant: {why}")
        }
        OutboundError::Invalid(why) => format!("Invalid {peer} address: {why}"),
        OutboundError::Timeout => format!("The {peer} did not answer in time."),
        OutboundError::TooLarge(cap) => format!("The {peer}'s answer is over {cap} bytes."),
        OutboundError::Connect(why) => format!("Cannot reach the {peer}: {why}"),
    })?;
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if (200..300).contains(&answer.status)
        && value.get("success").and_then(Value::as_bool) == Some(true)
    {
        return Ok(value);
    }
    let said = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(format!(
        "The {peer} answered HTTP {}: {said}",
        answer.status
    ))
}
