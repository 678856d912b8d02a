//! The public API under the mount prefix (`/api/`): every endpoint is one
//! line of [`ENDPOINTS`]; [`handle`] authenticates the caller
//! ([`auth::caller`]), finds the endpoint, checks its method and runs its
//! handler with the [`Call`]. Endpoints that name a configuration take it
//! from the path (`addPeers/wg0`) or, where the original used the query,
//! from `configurationName`.

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use wasmgate_sdk::{Error, Request, Response};

use crate::auth::{self, Caller};
use crate::envelope::{self, answer, done};
use crate::{configurations, download, peers};

use Access::{Authenticated, Public};

/// Every endpoint under the mount, one line each: its path, its method, who
/// may call it, its handler. The path is the endpoint's name, plus
/// `/<configuration>` when the configuration may be named in the path
/// (`addPeers/wg0`) instead of in `?configurationName=`; any other path
/// below a name is 404.
#[rustfmt::skip]
const ENDPOINTS: &[Endpoint] = &[
    //       path                                  method  access         handler
    Endpoint("handshake",                          "GET",  Authenticated, handshake),
    Endpoint("validateAuthentication",             "GET",  Public,        auth::validate),
    Endpoint("isTotpEnabled",                      "GET",  Public,        auth::totp_enabled),
    Endpoint("authenticate",                       "POST", Public,        auth::authenticate),
    Endpoint("signout",                            "GET",  Authenticated, auth::signout),
    Endpoint("getWireguardConfigurations",         "GET",  Authenticated, configurations::list),
    Endpoint("addWireguardConfiguration",          "POST", Authenticated, configurations::add),
    Endpoint("toggleWireguardConfiguration",       "GET",  Authenticated, configurations::toggle),
    Endpoint("getWireguardConfigurationInfo",      "GET",  Authenticated, configurations::info),
    Endpoint("deleteWireguardConfiguration",       "POST", Authenticated, configurations::delete),
    Endpoint("addPeers/<configuration>",           "POST", Authenticated, peers::add),
    Endpoint("deletePeers/<configuration>",        "POST", Authenticated, peers::delete),
    Endpoint("restrictPeers/<configuration>",      "POST", Authenticated, peers::restrict),
    Endpoint("allowAccessPeers/<configuration>",   "POST", Authenticated, peers::allow_access),
    Endpoint("updatePeerSettings/<configuration>", "POST", Authenticated, peers::update),
    Endpoint("resetPeerData/<configuration>",      "POST", Authenticated, peers::reset_data),
    Endpoint("downloadPeer/<configuration>",       "GET",  Authenticated, download::peer),
    Endpoint("getAvailableIPs/<configuration>",    "GET",  Authenticated, peers::available_ips),
    Endpoint("getDashboardAPIKeys",                "GET",  Authenticated, auth::get_keys),
    Endpoint("newDashboardAPIKey",                 "POST", Authenticated, auth::new_key),
    Endpoint("deleteDashboardAPIKey",              "POST", Authenticated, auth::delete_key),
];

/// The suffix of an endpoint's path that names its configuration.
const CONFIGURATION_SEGMENT: &str = "/<configuration>";

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone, even without an API key or a session.
    Public,
    /// A live API key or session only; anyone else gets 401.
    Authenticated,
}

/// An endpoint's handler: runs after authentication, path and method are
/// checked.
type Handler = fn(&Call) -> Result<Response, Error>;

/// One line of [`ENDPOINTS`]: path, method, access, handler.
struct Endpoint(&'static str, &'static str, Access, Handler);

impl Endpoint {
    /// The first segment of the path, as requested.
    fn name(&self) -> &'static str {
        self.0.strip_suffix(CONFIGURATION_SEGMENT).unwrap_or(self.0)
    }

    /// Whether the path may carry a configuration after the name.
    fn takes_configuration(&self) -> bool {
        self.0.ends_with(CONFIGURATION_SEGMENT)
    }
}

/// One request, as an endpoint's handler sees it.
pub struct Call<'a> {
    pub req: &'a Request,
    pub caller: &'a Caller,
    /// The configuration named in the path (percent-decoded), or "".
    path_configuration: &'a str,
}

impl Call<'_> {
    /// The configuration the request names: in the path, else in
    /// `?configurationName=` (else "").
    pub fn configuration(&self) -> String {
        if self.path_configuration.is_empty() {
            self.req.query("configurationName").unwrap_or_default()
        } else {
            self.path_configuration.to_string()
        }
    }

    /// The JSON object body; anything else is a 400.
    pub fn body(&self) -> Result<Map<String, Value>, Error> {
        self.req
            .json::<Map<String, Value>>()
            .map_err(|_| Error::bad_request("Request body must be a JSON object"))
    }

    /// A key from the query: form decoding turns an unescaped '+' of base64
    /// into a space, which a key never has.
    pub fn query_key(&self, name: &str) -> String {
        self.req.query(name).unwrap_or_default().replace(' ', "+")
    }
}

/// Every request, in the original's order: the caller (a bad API key is 401
/// whatever the path; nobody is 401 unless the endpoint is public), then
/// the endpoint (404), its method (405), then its handler.
pub fn handle(req: &Request) -> Response {
    let path = req.path().trim_start_matches('/');
    let (name, arg) = match path.split_once('/') {
        Some((e, rest)) => (e, rest.trim_end_matches('/')),
        None => (path, ""),
    };
    let endpoint = ENDPOINTS.iter().find(|e| e.name() == name);
    let public = endpoint.is_some_and(|&Endpoint(_, _, access, _)| access == Public);
    let caller = match auth::caller(req) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    if matches!(caller, Caller::Anonymous) && !public {
        return envelope::unauthorized(auth::UNAUTHORIZED);
    }
    let arg = percent_decode_str(arg).decode_utf8_lossy().into_owned();
    let Some(&Endpoint(_, method, _, handler)) =
        endpoint.filter(|e| (arg.is_empty() || e.takes_configuration()) && !arg.contains('/'))
    else {
        return not_found();
    };
    if req.method() != method {
        return answer(
            405,
            false,
            &Value::String("Method not allowed".into()),
            &Value::Null,
        )
        .with_header("allow", method);
    }
    let call = Call {
        req,
        caller: &caller,
        path_configuration: &arg,
    };
    handler(&call).unwrap_or_else(|e| envelope::from_error(&e))
}

fn not_found() -> Response {
    answer(404, false, &Value::String("Not found".into()), &Value::Null)
}

/// GET /api/handshake.
fn handshake(_: &Call) -> Result<Response, Error> {
    Ok(done())
}

pub fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// A whole number from a JSON number or a numeric string.
pub fn int_field(body: &Map<String, Value>, name: &str) -> Option<Result<i64, ()>> {
    match body.get(name)? {
        Value::Number(n) => Some(n.as_i64().ok_or(())),
        Value::String(s) => Some(s.trim().parse().map_err(|_| ())),
        Value::Null => None,
        _ => Some(Err(())),
    }
}

pub fn bool_field(body: &Map<String, Value>, name: &str, default: bool) -> bool {
    body.get(name).and_then(Value::as_bool).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_endpoint_is_one_well_formed_line() {
        let mut names = HashSet::new();
        for e in ENDPOINTS {
            let name = e.name();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}: a path is a name, plus {CONFIGURATION_SEGMENT} or nothing",
                e.0
            );
            assert!(names.insert(name), "{name} is listed twice");
            assert!(
                !e.1.is_empty() && e.1.chars().all(|c| c.is_ascii_uppercase()),
                "{name}: method {:?}",
                e.1
            );
        }
    }
}
