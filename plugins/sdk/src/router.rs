use std::ops::Index;

use crate::{Error, Request, Response};

/// A route handler.
pub type Handler = fn(&Request, &Params) -> Result<Response, Error>;

/// Method-and-path routing over [`Request::path`] (the path below the mount).
///
/// Patterns are '/'-separated segments; a segment `:name` matches any one
/// non-empty segment and binds it (percent-decoded) in [`Params`]. Routes are
/// tried in the order they were added. No matching path answers 404
/// `{"error":"not found"}`; a matching path without the method answers 405
/// `{"error":"method not allowed"}` with an `allow` header.
///
/// ```no_run
/// # use wasmgate_sdk::{Error, Params, Request, Response, Router};
/// # fn list(_: &Request, _: &Params) -> Result<Response, Error> { Ok(Response::empty(200)) }
/// # use list as create;
/// # use list as show;
/// # use list as remove;
/// # fn handle(req: &Request) -> Result<Response, Error> {
/// Router::new()
///     .get("/notes", list)
///     .post("/notes", create)
///     .get("/notes/:id", show)
///     .delete("/notes/:id", remove)
///     .handle(req)
/// # }
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

struct Route {
    method: &'static str,
    pattern: &'static str,
    handler: Handler,
}

impl Router {
    pub fn new() -> Self {
        Router { routes: Vec::new() }
    }

    /// Adds a route for any method, e.g. "PATCH".
    pub fn route(mut self, method: &'static str, pattern: &'static str, handler: Handler) -> Self {
        self.routes.push(Route {
            method,
            pattern,
            handler,
        });
        self
    }

    pub fn get(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("GET", pattern, handler)
    }

    pub fn post(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("POST", pattern, handler)
    }

    pub fn put(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("PUT", pattern, handler)
    }

    pub fn patch(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("PATCH", pattern, handler)
    }

    pub fn delete(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("DELETE", pattern, handler)
    }

    /// Runs the first route that matches the request's method and path.
    pub fn handle(&self, req: &Request) -> Result<Response, Error> {
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = match_path(route.pattern, req.path()) else {
                continue;
            };
            if route.method == req.method() {
                return (route.handler)(req, &params);
            }
            if !allowed.contains(&route.method) {
                allowed.push(route.method);
            }
        }
        if allowed.is_empty() {
            Err(Error::not_found("not found"))
        } else {
            Ok(
                Response::from(Error::method_not_allowed())
                    .with_header("allow", allowed.join(", ")),
            )
        }
    }
}

fn match_path(pattern: &str, path: &str) -> Option<Params> {
    let mut params = Params::default();
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => {
                if let Some(name) = w.strip_prefix(':') {
                    if g.is_empty() {
                        return None;
                    }
                    let value = percent_encoding::percent_decode_str(g).decode_utf8_lossy();
                    params.0.push((name.to_string(), value.into_owned()));
                } else if w != g {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// The `:name` segments a route bound, percent-decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `params["id"]`, for a name the route's pattern binds.
///
/// # Panics
///
/// When the pattern has no `:name` segment of that name: a bug in the plugin,
/// never something a request can cause.
impl Index<&str> for Params {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        match self.get(name) {
            Some(v) => v,
            None => panic!("route pattern binds no parameter {name:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_request;

    fn show(_: &Request, p: &Params) -> Result<Response, Error> {
        Ok(Response::text(200, format!("show {}", &p["id"])))
    }

    fn list(_: &Request, _: &Params) -> Result<Response, Error> {
        Ok(Response::text(200, "list"))
    }

    fn root(_: &Request, _: &Params) -> Result<Response, Error> {
        Ok(Response::text(200, "root"))
    }

    fn router() -> Router {
        Router::new()
            .get("/", root)
            .get("/notes", list)
            .get("/notes/:id", show)
            .delete("/notes/:id", show)
    }

    fn call(method: &str, path: &str) -> Response {
        router()
            .handle(&test_request(method, path, "", b""))
            .unwrap_or_else(Response::from)
    }

    #[test]
    fn routes_match_method_and_path() {
        assert_eq!(call("GET", "/api/").body, b"root");
        assert_eq!(call("GET", "/api").body, b"root");
        assert_eq!(call("GET", "/api/notes").body, b"list");
        assert_eq!(call("GET", "/api/notes/a%20b").body, b"show a b");
        assert_eq!(call("DELETE", "/api/notes/7").body, b"show 7");
    }

    #[test]
    fn no_matching_path_is_404_json() {
        for path in ["/api/nope", "/api/notes/", "/api/notes/1/x", "/api//notes"] {
            let r = call("GET", path);
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body, br#"{"error":"not found"}"#);
        }
    }

    #[test]
    fn wrong_method_on_a_known_path_is_405_json() {
        let r = call("POST", "/api/notes/7");
        assert_eq!(r.status, 405);
        assert_eq!(r.body, br#"{"error":"method not allowed"}"#);
        assert!(r.headers.contains(&("allow".into(), "GET, DELETE".into())));
    }
}
