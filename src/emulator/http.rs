//! Plain request/response values for the socket-free handler, and the MDS's response conventions.
//!
//! Every MDS response carries `Metadata-Flavor: Google`, `Server: Metadata Server for VM`,
//! `X-XSS-Protection: 0` and `X-Frame-Options: SAMEORIGIN` (metadata-api.md §2.2, real 2019
//! captures); values and listings are `application/text`, JSON is `application/json`, redirects and
//! errors are HTML. The HTTP layer adds `Date` and `Content-Length`.

use hyper::Method;

pub(crate) const TEXT: &str = "application/text";
pub(crate) const JSON: &str = "application/json";
pub(crate) const HTML: &str = "text/html; charset=UTF-8";

/// A request as the handler sees it: header names lowercase, query decoded.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// The path exactly as sent (the MDS does not decode `%xx` in paths, §1.1).
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl Request {
    /// Builds a request from a target like `/a/b?x=1&y=2`.
    pub(crate) fn new(method: Method, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method,
            path: path.to_string(),
            query: parse_query(query),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn get(target: &str) -> Request {
        Request::new(Method::GET, target)
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub(crate) fn method(mut self, method: Method) -> Request {
        self.method = method;
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub(crate) fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The last value of a query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `true|on|yes|1`, case-insensitive, as the MDS accepts them (§3.3); anything else is false.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.param(name).is_some_and(truthy)
    }
}

pub(crate) fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A response with the MDS's standard headers.
    pub(crate) fn mds(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![
                ("metadata-flavor", "Google".into()),
                ("server", "Metadata Server for VM".into()),
                ("content-type", content_type.into()),
                ("x-xss-protection", "0".into()),
                ("x-frame-options", "SAMEORIGIN".into()),
            ],
            body: body.into(),
        }
    }

    /// A control-endpoint response (not part of the MDS API, so no MDS headers).
    pub(crate) fn plain(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("content-type", content_type.into())], body: body.into() }
    }

    pub(crate) fn with(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    #[cfg(test)]
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain-text MDS error (400s and the guest-attribute 403 carry short text bodies).
pub(crate) fn error_text(status: u16, message: &str) -> Response {
    Response::mds(status, HTML, message.to_string())
}

/// Google's HTML error page, the shape the real front end serves (§2.1, §2.4).
pub(crate) fn error_page(status: u16, detail: &str) -> Response {
    let reason = reason(status);
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
         <title>Error {status} ({reason})!!1</title>\n  \
         <p><b>{status}.</b> <ins>That\u{2019}s an error.</ins>\n  \
         <p>{detail}  <ins>That\u{2019}s all we know.</ins>\n"
    );
    Response::mds(status, HTML, body)
}

pub(crate) fn not_found(path: &str) -> Response {
    error_page(
        404,
        &format!("The requested URL <code>{}</code> was not found on this server.", escape(path)),
    )
}

pub(crate) fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); invalid escapes stay literal.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let r = Request::get("/x?audience=https%3A%2F%2Fa.b&scopes=a,b&e=&flag&s=a+b&bad=%zz%4");
        assert_eq!(r.param("audience"), Some("https://a.b"));
        assert_eq!(r.param("scopes"), Some("a,b"));
        assert_eq!(r.param("e"), Some(""));
        assert_eq!(r.param("flag"), Some(""));
        assert_eq!(r.param("s"), Some("a b"));
        assert_eq!(r.param("bad"), Some("%zz%4"));
        assert_eq!(r.path, "/x");
    }
}
