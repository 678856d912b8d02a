//! Request parameters of the public API: from the query string (GET) or from
//! a JSON or form-encoded body (POST).

use serde_json::Value;
use wasmgate_sdk::Request;

/// One parameter: text, or a JSON array or object where text was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    NotText,
}

/// The parameters of one request. `primary` comes from the request's own
/// method (the query for GET, the body for POST); a POST may carry the
/// other parameters in its query too (`fallback`), but never the key.
#[derive(Debug, Default)]
pub struct Params {
    primary: Vec<(String, Param)>,
    fallback: Vec<(String, String)>,
}

/// Why a POST body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    NotJson,
    NotObject,
    NotUtf8,
}

impl BodyError {
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::NotJson => "Request body is not valid JSON",
            BodyError::NotObject => "Request body must be a JSON object",
            BodyError::NotUtf8 => "Request body is not valid UTF-8",
        }
    }
}

impl Params {
    pub fn from_query(req: &Request) -> Params {
        Params {
            primary: req
                .query_pairs()
                .into_iter()
                .map(|(k, v)| (k, Param::Text(v)))
                .collect(),
            fallback: Vec::new(),
        }
    }

    /// A JSON body when the content type says JSON or the body starts with
    /// '{'; otherwise form-encoded.
    pub fn from_body(req: &Request) -> Result<Params, BodyError> {
        let body = req.body();
        let content_type = req
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        // curl -d sends JSON as form-encoded: a body that opens with '{'
        // is JSON whatever the content type says.
        let json = content_type.contains("json") || first == Some(&b'{');
        let primary = if body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else if json {
            let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
            let value: Value = serde_json::from_str(text).map_err(|_| BodyError::NotJson)?;
            let Value::Object(map) = value else {
                return Err(BodyError::NotObject);
            };
            map.into_iter()
                .filter_map(|(k, v)| {
                    let p = match v {
                        Value::Null => return None,
                        Value::String(s) => Param::Text(s),
                        Value::Number(n) => Param::Text(n.to_string()),
                        Value::Bool(b) => Param::Text(b.to_string()),
                        Value::Array(_) | Value::Object(_) => Param::NotText,
                    };
                    Some((k, p))
                })
                .collect()
        } else {
            form_urlencoded::parse(body)
                .into_owned()
                .map(|(k, v)| (k, Param::Text(v)))
                .collect()
        };
        Ok(Params {
            primary,
            fallback: req.query_pairs(),
        })
    }

    /// A parameter from the request's own method only (for the key).
    pub fn own(&self, name: &str) -> Option<&Param> {
        self.primary.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A parameter, from the method's own place first.
    pub fn get(&self, name: &str) -> Option<Param> {
        self.own(name).cloned().or_else(|| {
            self.fallback
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Param::Text(v.clone()))
        })
    }

    /// A parameter as text; empty text counts as absent. `Err` for a JSON
    /// array or object.
    pub fn text(&self, name: &str) -> Result<Option<String>, ()> {
        match self.get(name) {
            None => Ok(None),
            Some(Param::NotText) => Err(()),
            Some(Param::Text(t)) if t.is_empty() => Ok(None),
            Some(Param::Text(t)) => Ok(Some(t)),
        }
    }
}
