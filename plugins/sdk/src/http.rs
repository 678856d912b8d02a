use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::wasmgate::plugin::types;

/// One HTTP request, fully read by the host.
#[derive(Debug, Clone)]
pub struct Request {
    inner: types::Request,
    /// Byte offset in `inner.path` where the path relative to the mount starts.
    relative_start: usize,
}

impl From<types::Request> for Request {
    fn from(inner: types::Request) -> Self {
        let relative_start = relative_start(&inner.path, &inner.prefix);
        Request {
            inner,
            relative_start,
        }
    }
}

/// Where the part of `path` below the mount `prefix` starts, keeping its
/// leading '/'. Both "/api" and "/api/" under the prefix "/api/" are "/".
fn relative_start(path: &str, prefix: &str) -> usize {
    let base = prefix.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => base.len(),
        _ => 0,
    }
}

impl Request {
    /// "GET", "POST", ... as the client sent it.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// The path below the mount prefix, always starting with '/': "/notes/7"
    /// for "/hello/notes/7" under "/hello/". Not percent-decoded.
    pub fn path(&self) -> &str {
        match &self.inner.path[self.relative_start..] {
            "" => "/",
            rest => rest,
        }
    }

    /// The full path as the client sent it, without the query string.
    pub fn full_path(&self) -> &str {
        &self.inner.path
    }

    /// The mount prefix that routed this request here, e.g. "/hello/".
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The raw query string without the leading '?', "" when absent.
    pub fn query_string(&self) -> &str {
        &self.inner.query
    }

    /// Every query parameter, percent- and '+'-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.inner.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The first value of the query parameter `name`, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.inner.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The query parameter `name` parsed as `T`; a value that does not parse
    /// is a 400 naming the parameter.
    pub fn query_as<T: FromStr>(&self, name: &str) -> Result<Option<T>, Error> {
        match self.query(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::bad_request(format!("invalid query parameter {name:?}"))),
        }
    }

    /// The first value of the header `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header pair; names are lower-case and may repeat.
    pub fn headers(&self) -> &[(String, String)] {
        &self.inner.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// The body as UTF-8 text, or a 400.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.inner.body)
            .map_err(|_| Error::bad_request("request body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`, or a 400 that says what is wrong
    /// (invalid UTF-8, malformed JSON, a missing or mistyped field).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.text()?)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }

    /// The peer's socket address, "ip:port".
    pub fn client_addr(&self) -> &str {
        &self.inner.client_addr
    }

    /// The host's id for this request, also sent to the client as `x-request-id`.
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The raw request the host sent.
    pub fn raw(&self) -> &types::Request {
        &self.inner
    }
}

/// The answer to a request. The host adds `content-length` and `x-request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `value` as JSON with `content-type: application/json`. A value that
    /// cannot be serialised (a map with non-string keys) becomes a 500.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes(status, "application/json", body),
            Err(e) => Response::bytes(
                500,
                "application/json",
                serde_json::json!({ "error": format!("response not serialisable: {e}") })
                    .to_string()
                    .into_bytes(),
            ),
        }
    }

    /// Plain UTF-8 text.
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            text.into().into_bytes(),
        )
    }

    /// A body of any type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: body.into(),
        }
    }

    /// No body and no headers, e.g. a 204.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header; names should be lower-case.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<Response> for types::Response {
    fn from(r: Response) -> Self {
        types::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

#[cfg(test)]
pub(crate) fn test_request(method: &str, path: &str, query: &str, body: &[u8]) -> Request {
    Request::from(types::Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
        client_addr: "127.0.0.1:1".into(),
        prefix: "/api/".into(),
        request_id: "r1".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_strips_the_mount_prefix() {
        assert_eq!(
            test_request("GET", "/api/notes/7", "", b"").path(),
            "/notes/7"
        );
        assert_eq!(test_request("GET", "/api/", "", b"").path(), "/");
        assert_eq!(test_request("GET", "/api", "", b"").path(), "/");
        assert_eq!(test_request("GET", "/apix", "", b"").path(), "/apix");
    }

    #[test]
    fn relative_path_under_the_root_prefix_is_the_full_path() {
        let mut req = test_request("GET", "/notes", "", b"").inner;
        req.prefix = "/".into();
        assert_eq!(Request::from(req).path(), "/notes");
    }

    #[test]
    fn query_parameters_are_decoded() {
        let req = test_request("GET", "/api/", "a=1&b=x%20y+z&a=2&n=x", b"");
        assert_eq!(req.query("a").as_deref(), Some("1"));
        assert_eq!(req.query("b").as_deref(), Some("x y z"));
        assert_eq!(req.query("c"), None);
        assert_eq!(req.query_as::<u32>("a"), Ok(Some(1)));
        assert_eq!(req.query_as::<u32>("n").unwrap_err().status, 400);
        assert_eq!(req.query_pairs().len(), 4);
    }

    #[test]
    fn headers_are_found_whatever_the_case() {
        let req = test_request("GET", "/api/", "", b"");
        assert_eq!(req.header("Content-Type"), Some("application/json"));
        assert_eq!(req.header("accept"), None);
    }

    #[test]
    fn bad_bodies_are_400() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code, reason = "only parsed")]
        struct T {
            title: String,
        }
        for body in [&b"\xff\xfe"[..], b"{", b"{}", b"{\"title\": 1}"] {
            let err = test_request("POST", "/api/", "", body)
                .json::<T>()
                .unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
        }
        assert!(
            test_request("POST", "/api/", "", b"{\"title\":\"x\"}")
                .json::<T>()
                .is_ok()
        );
    }

    #[test]
    fn errors_become_json_bodies() {
        let r = Response::from(crate::Error::conflict("too many notes"));
        assert_eq!(r.status, 409);
        assert_eq!(r.body, br#"{"error":"too many notes"}"#);
    }
}
